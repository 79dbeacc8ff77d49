//! The main.cf parameters carried over one to one (host name, relayhost, limits, queue
//! lifetime, CA file), the relay restrictions, and every other parameter named as not
//! carried.

use super::Imported;
use super::certificates::{certificate, ec_certificate};
use crate::postfix::conf::{MainCf, list};

/// Parameters carried over one to one, or reported as not carried.
pub(super) fn simple(cf: &MainCf, name: &str, out: &mut Imported) {
    let value = cf.get(name).unwrap_or_default();
    let int = |v: &str| v.parse::<i64>().ok().map(toml::Value::Integer);
    match name {
        "myhostname" => {
            out.set("server", "hostname", toml::Value::String(value.clone()));
            out.carried(name, format!("server.hostname = {value:?}"));
        }
        "relayhost" if value.is_empty() => out.carried(name, "none (delivery by MX)"),
        "relayhost" => {
            out.set("outbound", "relayhost", toml::Value::String(value.clone()));
            out.carried(name, format!("outbound.relayhost = {value:?}"));
        }
        "message_size_limit" => config_int(out, name, &value, "smtp", "max_message_size", int),
        "smtpd_recipient_limit" => config_int(out, name, &value, "smtp", "max_recipients", int),
        "smtpd_client_connection_count_limit" => {
            config_int(out, name, &value, "smtp", "max_connections_per_client", int)
        }
        "maximal_queue_lifetime" => match postfix_time(&value, 'd') {
            Some(secs) => {
                out.set(
                    "outbound",
                    "queue_lifetime_secs",
                    toml::Value::Integer(secs),
                );
                out.carried(name, format!("outbound.queue_lifetime_secs = {secs}"));
            }
            None => out.dropped(name, format!("{value:?}: not a Postfix time"), false),
        },
        "smtp_tls_CAfile" => {
            out.set(
                "tls",
                "extra_roots",
                toml::Value::Array(vec![toml::Value::String(value.clone())]),
            );
            out.carried(name, format!("tls.extra_roots = [{value:?}]"));
        }
        "smtpd_tls_cert_file" | "smtpd_tls_key_file" | "smtpd_tls_chain_files" => {
            certificate(cf, name, out)
        }
        "smtpd_tls_eccert_file" | "smtpd_tls_eckey_file" => ec_certificate(cf, name, out),
        _ if super::inbound_tls::RESTRICTIONS.contains(&name) => restrictions(name, &value, out),
        _ => {
            let security = ["smtpd_tls_", "smtp_tls_", "smtpd_sasl_", "smtp_sasl_"]
                .iter()
                .any(|p| name.starts_with(p))
                || name.ends_with("_restrictions");
            out.dropped(name, "no postern setting for it", security);
        }
    }
}

/// The relay restrictions postern's own relay control already is (trusted networks, SMTP
/// AUTH, relay domains) and the access maps carried as inbound TLS rows; anything else is
/// named as left behind.
fn restrictions(name: &str, value: &str, out: &mut Imported) {
    const SAME: &[&str] = &[
        "permit_mynetworks",
        "permit_sasl_authenticated",
        "reject_unauth_destination",
        "defer_unauth_destination",
        "reject_unlisted_recipient",
    ];
    let items = list(value);
    let mut other = Vec::new();
    let mut rows = Vec::new();
    let mut i = 0;
    while i < items.len() {
        let pair = items
            .get(i + 1)
            .map(|table| format!("{} {table}", items[i].to_ascii_lowercase()));
        if let Some(pair) = pair.filter(|p| out.restrictions_carried.contains(p)) {
            rows.push(pair);
            i += 2;
            continue;
        }
        if !SAME.contains(&items[i].as_str()) {
            other.push(items[i].clone());
        }
        i += 1;
    }
    if !other.is_empty() {
        out.dropped(
            name,
            format!(
                "{}: not postern's relay control (trusted networks, SMTP AUTH, relay domains)",
                other.join(", ")
            ),
            true,
        );
    } else if rows.is_empty() {
        out.carried(
            name,
            "postern's relay control does the same: trusted networks, SMTP AUTH, relay domains",
        );
    } else {
        out.carried(
            name,
            format!(
                "postern's relay control does the rest (trusted networks, SMTP AUTH, relay domains); {}: inbound TLS rows",
                rows.join(", ")
            ),
        );
    }
}

fn config_int(
    out: &mut Imported,
    name: &str,
    value: &str,
    section: &str,
    key: &str,
    int: impl Fn(&str) -> Option<toml::Value>,
) {
    match int(value) {
        Some(v) => {
            out.carried(name, format!("{section}.{key} = {v}"));
            out.set(section, key, v);
        }
        None => out.dropped(name, format!("{value:?}: not a number"), false),
    }
}

/// `5d`, `12h`, `30m`, `90s`, `2w`, or a bare number in `unit`.
fn postfix_time(value: &str, unit: char) -> Option<i64> {
    let (num, u) = match value.chars().last()? {
        c if c.is_ascii_digit() => (value, unit),
        c => (&value[..value.len() - 1], c),
    };
    let n: i64 = num.parse().ok()?;
    let secs = match u {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        'w' => 7 * 86_400,
        _ => return None,
    };
    Some(n * secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postfix_times() {
        assert_eq!(postfix_time("5d", 'd'), Some(5 * 86_400));
        assert_eq!(postfix_time("3", 'd'), Some(3 * 86_400));
        assert_eq!(postfix_time("12h", 'd'), Some(12 * 3600));
        assert_eq!(postfix_time("1y", 'd'), None);
    }
}
