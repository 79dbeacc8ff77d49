//! `transport_maps`: where Postfix routes a domain, which becomes a relay domain's
//! transport or an `outbound.routes` entry, and decides which policy row Postfix looks up.

use super::{ImportError, Imported, Tables};
use crate::postfix::conf::MainCf;

/// `transport_maps`: domain key (`d` exact, `.d` subdomains) → `[host]:port` next hop.
pub(super) type Transports = Vec<(String, String)>;

pub(super) fn transports(
    cf: &MainCf,
    tables: &mut Tables,
    out: &mut Imported,
) -> Result<Transports, ImportError> {
    let Some(value) = cf.get("transport_maps").filter(|v| !v.is_empty()) else {
        return Ok(Vec::new());
    };
    let entries = match tables.read(&value) {
        Ok(e) => e,
        Err(why) => {
            out.dropped("transport_maps", why, false);
            return Ok(Vec::new());
        }
    };
    let mut routes = Vec::new();
    let mut skipped = Vec::new();
    for e in entries {
        // `smtp:[host]:port`, `relay:[host]`, `:[host]`: the next hop after the transport.
        let hop = e.value.split_once(':').map(|(_, h)| h.trim()).unwrap_or("");
        let transport = e.value.split(':').next().unwrap_or("");
        if matches!(transport, "smtp" | "relay" | "lmtp" | "") && !hop.is_empty() {
            routes.push((e.key, hop.to_string()));
        } else {
            skipped.push(format!("{} {}", e.key, e.value));
        }
    }
    let what = format!(
        "{} route(s) (relay domains' transport, else outbound.routes)",
        routes.len()
    );
    if skipped.is_empty() {
        out.carried("transport_maps", what);
    } else {
        out.carried(
            "transport_maps",
            format!(
                "{what}; not carried: {} (postern delivers by SMTP only)",
                skipped.join(", ")
            ),
        );
    }
    Ok(routes)
}

/// Postfix's transport lookup for `domain`: the exact key, then `.parent` keys.
pub(super) fn route_for<'a>(transport: &'a Transports, domain: &str) -> Option<&'a str> {
    let exact = transport.iter().find(|(k, _)| k == domain);
    exact
        .or_else(|| {
            parents(domain).find_map(|p| transport.iter().find(|(k, _)| *k == format!(".{p}")))
        })
        .map(|(_, hop)| hop.as_str())
}

/// `a.b.c` → `b.c`, `c`.
pub(super) fn parents(domain: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(domain);
    std::iter::from_fn(move || {
        let next = rest?.split_once('.').map(|(_, r)| r);
        rest = next;
        next
    })
}
