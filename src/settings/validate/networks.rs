//! `trusted_networks`: CIDR blocks, or bare addresses meaning one host (Postfix's mynetworks).

use ipnet::IpNet;

use super::{FieldError, field_error};

pub fn parse_networks(networks: &[String]) -> Result<Vec<IpNet>, FieldError> {
    networks
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let n = n.trim();
            // A bare address means that one host, as in Postfix's mynetworks.
            n.parse::<IpNet>()
                .or_else(|_| n.parse::<std::net::IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    field_error(
                        format!("trusted_networks[{i}]"),
                        format!("{n:?} is not an IP network (expected CIDR such as 192.0.2.0/24)"),
                    )
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::support::{FakeHasher, doc};
    use crate::settings::*;

    #[test]
    fn bad_network_names_the_index() {
        let d = doc("trusted_networks = [\"10.0.0.0/8\", \"10.0.0.0/33\"]");
        let err = Settings::default().apply(&d, &FakeHasher).unwrap_err();
        assert_eq!(err.field, "trusted_networks[1]");
        let d = doc("trusted_networks = [\"192.0.2.7\"]");
        let s = Settings::default().apply(&d, &FakeHasher).unwrap();
        assert_eq!(s.trusted_networks[0].to_string(), "192.0.2.7/32");
    }
}
