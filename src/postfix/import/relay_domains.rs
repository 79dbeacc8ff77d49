//! The relay domains: `relay_domains` with their routes, their SASL credentials
//! (`smtp_sasl_password_maps`) and their recipients (`relay_recipient_maps`).

use super::routes::{Transports, route_for};
use super::{ImportError, Imported, Tables};
use crate::levels::Level;
use crate::postfix::conf::{MainCf, list};
use crate::postfix::maps::Entry;
use crate::settings::RelayDomain;

/// `mynetworks` and `relay_domains` (a list of names and tables), each relay domain with
/// the route `transport_maps` gives it; routes of other domains go to `outbound.routes`.
pub(super) fn relay_domains(
    cf: &MainCf,
    tables: &mut Tables,
    transport: &Transports,
    out: &mut Imported,
) -> Result<(), ImportError> {
    if let Some(v) = cf.get("mynetworks") {
        let nets: Vec<String> = list(&v)
            .into_iter()
            .map(|n| n.replace(['[', ']'], ""))
            .collect();
        out.carried("mynetworks", format!("trusted_networks = {nets:?}"));
        out.settings.trusted_networks = nets;
    }
    let Some(value) = cf.get("relay_domains") else {
        return Ok(());
    };
    let mut names = Vec::new();
    for item in list(&value) {
        if item.contains(':') {
            match tables.read(&item) {
                Ok(entries) => names.extend(entries.into_iter().map(|e| e.key)),
                Err(why) => out.dropped("relay_domains", why, false),
            }
        } else {
            names.push(item.to_ascii_lowercase());
        }
    }
    for domain in &names {
        let hop = route_for(transport, domain.trim_start_matches('.'));
        out.settings.relay_domains.push(RelayDomain {
            domain: domain.clone(),
            transport: hop.map(str::to_string),
            ..RelayDomain::default()
        });
    }
    // Routes for domains that are not relay domains go to outbound.routes.
    for (key, hop) in transport {
        if !names.contains(key) {
            out.set("outbound.routes", key, toml::Value::String(hop.clone()));
        }
    }
    out.carried(
        "relay_domains",
        format!(
            "{} relay domain(s); Postfix's also cover their subdomains (parent_domain_matches_subdomains), postern's rows are exact: add a .domain row where subdomains must be relayed",
            names.len()
        ),
    );
    Ok(())
}

/// `smtp_sasl_password_maps` (`[host]:port` or domain → `user:password`): credentials of the
/// relay domains whose transport goes to that next hop. postern then keeps an `encrypt` row
/// for each (Hermes' "Auto-added: domain requires authentication"), which takes the place
/// of an imported row of that pattern at `encrypt` or below. Passwords never appear in the
/// report.
pub(super) fn credentials(cf: &MainCf, tables: &mut Tables, out: &mut Imported) {
    const NAME: &str = "smtp_sasl_password_maps";
    let Some(value) = cf.get(NAME).filter(|v| !v.is_empty()) else {
        return;
    };
    let entries = match tables.read(&value) {
        Ok(e) => e,
        Err(why) => return out.dropped(NAME, why, false),
    };
    let mut carried = Vec::new();
    let mut left = Vec::new();
    for e in &entries {
        let Some((user, password)) = e.value.split_once(':') else {
            left.push(format!("{} (no user:password)", e.key));
            continue;
        };
        let domains: Vec<usize> = (0..out.settings.relay_domains.len())
            .filter(|&i| {
                let d = &out.settings.relay_domains[i];
                d.transport.as_deref() == Some(e.key.as_str()) || d.domain == e.key
            })
            .collect();
        if domains.is_empty() {
            left.push(format!("{} (not a relay domain's next hop)", e.key));
        }
        for i in domains {
            let domain = out.settings.relay_domains[i].domain.clone();
            let stricter = out
                .settings
                .policy
                .iter()
                .any(|r| r.pattern == domain && r.level > Level::Encrypt);
            if stricter {
                left.push(format!(
                    "{} for {domain} (its policy row is stricter than the managed encrypt row)",
                    e.key
                ));
                continue;
            }
            out.settings.policy.retain(|r| r.pattern != domain);
            out.settings.relay_domains[i].auth = Some(crate::settings::RelayAuth {
                username: user.to_string(),
                password: Some(crate::settings::Secret::new(password)),
            });
            carried.push(domain);
        }
    }
    let what = format!(
        "credentials for {} relay domain(s) {carried:?}, each with its managed encrypt row",
        carried.len()
    );
    if left.is_empty() {
        out.carried(NAME, what);
    } else {
        out.carried(NAME, format!("{what}; not carried: {}", left.join(", ")));
    }
}

/// `relay_recipient_maps`: the addresses that exist behind each relay domain (`@domain`:
/// every address). A relay domain with no entry accepts nobody, as in Postfix.
pub(super) fn recipients(cf: &MainCf, tables: &mut Tables, out: &mut Imported) {
    const NAME: &str = "relay_recipient_maps";
    let Some(value) = cf.get(NAME).filter(|v| !v.is_empty()) else {
        return;
    };
    let entries = match tables.read(&value) {
        Ok(e) => e,
        Err(why) => return out.dropped(NAME, why, true),
    };
    let mut counts = Vec::new();
    for d in &mut out.settings.relay_domains {
        let domain = d.domain.trim_start_matches('.');
        let mine: Vec<&Entry> = entries
            .iter()
            .filter(|e| e.key.rsplit_once('@').is_some_and(|(_, dom)| dom == domain))
            .collect();
        if mine.iter().any(|e| e.key.starts_with('@')) {
            d.recipients = None;
            counts.push(format!("{domain}: every address"));
        } else {
            d.recipients = Some(mine.iter().map(|e| e.key.clone()).collect());
            counts.push(format!("{domain}: {}", mine.len()));
        }
    }
    out.carried(
        NAME,
        format!("relay_domains[].recipients ({})", counts.join(", ")),
    );
}
