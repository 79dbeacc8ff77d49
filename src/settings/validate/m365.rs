//! `m365`: the Microsoft 365 connector's tenants, certificate names and address ranges.

use crate::next_hop::is_domain_name;
use crate::settings::M365Settings;

use super::{FieldError, field_error};

/// A tenant ID is a GUID: `72f988bf-86f1-41af-91ab-2d7cd011db47`.
fn is_guid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The connector's settings as stored (trimmed, lower case), or the first bad field.
pub fn check_m365(m: &M365Settings) -> Result<M365Settings, FieldError> {
    let tenants = check_tenants(&m.tenants)?;
    let names = check_certificate_names(&m.certificate_names)?;
    if m.enabled && names.is_empty() {
        return Err(field_error(
            "m365.certificate_names",
            "required while the connector is enabled (Exchange Online presents mail.protection.outlook.com)",
        ));
    }
    if m.enabled && tenants.is_empty() {
        return Err(field_error(
            "m365.tenants",
            "required while the connector is enabled: the tenant IDs whose mail may relay",
        ));
    }
    check_ranges(&m.ranges)?;
    check_originator_domains(&m.originator_domains)?;
    Ok(M365Settings {
        enabled: m.enabled,
        tenants,
        certificate_names: names,
        ranges: m.ranges.iter().map(|r| r.trim().to_string()).collect(),
        originator_domains: m
            .originator_domains
            .iter()
            .map(|d| d.trim().to_ascii_lowercase())
            .collect(),
    })
}

/// Tenant IDs, lower case: Microsoft writes GUIDs in either case.
fn check_tenants(tenants: &[String]) -> Result<Vec<String>, FieldError> {
    let mut out = Vec::with_capacity(tenants.len());
    for (i, t) in tenants.iter().enumerate() {
        let t = t.trim().to_ascii_lowercase();
        if !is_guid(&t) {
            return Err(field_error(
                format!("m365.tenants[{i}]"),
                format!(
                    "{t:?} is not a tenant ID (a GUID such as 72f988bf-86f1-41af-91ab-2d7cd011db47)"
                ),
            ));
        }
        out.push(t);
    }
    Ok(out)
}

/// The names Exchange Online's certificate must carry, lower case, `*.` allowed.
fn check_certificate_names(names: &[String]) -> Result<Vec<String>, FieldError> {
    let mut out = Vec::with_capacity(names.len());
    for (i, n) in names.iter().enumerate() {
        let n = n.trim().to_ascii_lowercase();
        if !is_domain_name(n.trim_start_matches("*.")) {
            return Err(field_error(
                format!("m365.certificate_names[{i}]"),
                format!("{n:?} is not a host name"),
            ));
        }
        out.push(n);
    }
    Ok(out)
}

/// The addresses the connector must connect from: networks (CIDR) or single addresses.
fn check_ranges(ranges: &[String]) -> Result<(), FieldError> {
    for (i, r) in ranges.iter().enumerate() {
        if r.trim().parse::<ipnet::IpNet>().is_err()
            && r.trim().parse::<std::net::IpAddr>().is_err()
        {
            return Err(field_error(
                format!("m365.ranges[{i}]"),
                format!("{:?} is not a network (CIDR) or an address", r.trim()),
            ));
        }
    }
    Ok(())
}

/// The organisation's accepted domains, matched against `X-OriginatorOrg`.
fn check_originator_domains(domains: &[String]) -> Result<(), FieldError> {
    for (i, d) in domains.iter().enumerate() {
        if !is_domain_name(d.trim()) {
            return Err(field_error(
                format!("m365.originator_domains[{i}]"),
                format!("{:?} is not a domain", d.trim()),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenants_are_guids_and_enabled_needs_one() {
        let mut m = M365Settings {
            enabled: true,
            tenants: vec!["72F988BF-86f1-41af-91ab-2d7cd011db47".into()],
            ..M365Settings::default()
        };
        let ok = check_m365(&m).unwrap();
        assert_eq!(ok.tenants, ["72f988bf-86f1-41af-91ab-2d7cd011db47"]);
        m.tenants.push("contoso".into());
        assert_eq!(check_m365(&m).unwrap_err().field, "m365.tenants[1]");
        m.tenants.clear();
        assert_eq!(check_m365(&m).unwrap_err().field, "m365.tenants");
        m.tenants = ok.tenants.clone();
        m.ranges = vec!["40.92.0.0/15".into(), "not a range".into()];
        assert_eq!(check_m365(&m).unwrap_err().field, "m365.ranges[1]");
    }
}
