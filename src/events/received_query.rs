//! The Received view's search made ready to judge records with, the same for both stores:
//! a sender as an address, a `domain` or a `.domain` (`search::Party`), a client address
//! or network, a queue ID, a time range, plaintext only.

use super::received::{
    Received, ReceivedFrom, ReceivedSearch, client_key, client_network, network_keys,
};
use super::search::{Buffers, Judge, Party};

#[derive(Debug, Clone, Default)]
pub struct ReceivedQuery {
    pub sender: Option<Party>,
    pub client: Option<ipnet::IpNet>,
    /// Upper case.
    pub queue_id: Option<String>,
    pub since: Option<u64>,
    pub until: Option<u64>,
    pub plaintext_only: bool,
    /// A field could not be read (a client that is no address or network): nothing matches.
    /// The API refuses such a search before it reaches a store.
    pub impossible: bool,
}

impl ReceivedQuery {
    pub fn of(q: &ReceivedSearch) -> ReceivedQuery {
        let given = |v: &Option<String>| {
            v.as_deref()
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_string)
        };
        let client = given(&q.client);
        let network = client.as_deref().and_then(client_network);
        ReceivedQuery {
            sender: q.sender.as_deref().and_then(Party::parse),
            impossible: client.is_some() && network.is_none(),
            client: network,
            queue_id: given(&q.queue_id).map(|v| v.to_ascii_uppercase()),
            since: q.since,
            until: q.until,
            plaintext_only: q.plaintext_only,
        }
    }

    /// The query of an inbound row's impact preview: who it names, since when.
    pub fn from(from: &ReceivedFrom, since: u64) -> ReceivedQuery {
        let mut q = ReceivedQuery {
            since: Some(since),
            ..ReceivedQuery::default()
        };
        match from {
            ReceivedFrom::Domain { domain, subdomains } => {
                let d = domain.trim().trim_start_matches('.').to_ascii_lowercase();
                q.sender = Some(match subdomains {
                    true => Party::Subdomains(d),
                    false => Party::Domain(d),
                });
            }
            ReceivedFrom::Network(net) => q.client = Some(net.trunc()),
        }
        q
    }

    /// Whether every field the search gives holds for the record.
    pub fn holds(&self, r: &Received) -> bool {
        !self.impossible
            && self.sender.as_ref().is_none_or(|p| p.matches(&r.sender))
            && self.client.as_ref().is_none_or(|net| {
                r.client_addr.parse().is_ok_and(|ip: std::net::IpAddr| {
                    let (first, last) = network_keys(net);
                    (first..=last).contains(&client_key(ip))
                })
            })
            && self
                .queue_id
                .as_deref()
                .is_none_or(|id| r.queue_id.eq_ignore_ascii_case(id))
            && self.since.is_none_or(|s| r.unix_time >= s)
            && self.until.is_none_or(|u| r.unix_time <= u)
            && (!self.plaintext_only || r.tls.is_none())
    }
}

impl Judge for ReceivedQuery {
    type Record = Received;

    /// A record with TLS is skipped unread when only plaintext is asked for.
    fn judge_stored(&self, stored: &[u8], _buffers: &mut Buffers) -> Option<Received> {
        if self.plaintext_only && memchr::memmem::find(stored, b"\"tls\":null").is_none() {
            return None;
        }
        let r: Received = serde_json::from_slice(stored).ok()?;
        self.holds(&r).then_some(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::received::Trust;

    fn record(sender: &str, client: &str, tls: bool) -> Received {
        Received {
            unix_time: 100,
            queue_id: "AB12".into(),
            node: None,
            client_name: "unknown".into(),
            client_addr: client.into(),
            helo: "h".into(),
            sender: sender.into(),
            recipients: 1,
            size: 10,
            trust: Trust::None,
            tls: tls.then(|| crate::tls::TlsInfo {
                protocol: "TLSv1.3".into(),
                cipher: "TLS_AES_128_GCM_SHA256".into(),
                bits: 128,
                trusted: None,
                key_exchange: Some("X25519".into()),
                ..Default::default()
            }),
            client_cert: None,
        }
    }

    fn judge(q: &ReceivedQuery, r: &Received) -> bool {
        let stored = serde_json::to_vec(r).unwrap();
        q.judge_stored(&stored, &mut Buffers::default()).is_some()
    }

    #[test]
    fn each_field_holds_or_not() {
        let search = |f: fn(&mut ReceivedSearch)| {
            let mut s = ReceivedSearch::default();
            f(&mut s);
            ReceivedQuery::of(&s)
        };
        let plain = record("a@eu.partner.example", "192.0.2.7", false);
        let tls = record("a@partner.example", "2001:db8::7", true);
        let q = search(|s| s.sender = Some(".partner.example".into()));
        assert!(judge(&q, &plain) && judge(&q, &tls));
        let q = search(|s| s.sender = Some("partner.example".into()));
        assert!(!judge(&q, &plain) && judge(&q, &tls));
        let q = search(|s| s.client = Some("192.0.2.0/24".into()));
        assert!(judge(&q, &plain) && !judge(&q, &tls));
        let q = search(|s| s.client = Some("2001:db8::/32".into()));
        assert!(!judge(&q, &plain) && judge(&q, &tls));
        let q = search(|s| s.client = Some("not an address".into()));
        assert!(q.impossible && !judge(&q, &plain));
        let q = search(|s| s.plaintext_only = true);
        assert!(judge(&q, &plain) && !judge(&q, &tls));
        let q = search(|s| s.queue_id = Some("ab12".into()));
        assert!(judge(&q, &plain));
        let q = search(|s| s.since = Some(101));
        assert!(!judge(&q, &plain));
        let net = ReceivedFrom::Network("192.0.2.0/28".parse().unwrap());
        assert!(ReceivedQuery::from(&net, 0).holds(&plain));
        let dom = ReceivedFrom::Domain {
            domain: "partner.example".into(),
            subdomains: false,
        };
        assert!(!ReceivedQuery::from(&dom, 0).holds(&plain));
        assert!(ReceivedQuery::from(&dom, 0).holds(&tls));
    }
}
