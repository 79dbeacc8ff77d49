//! A DNS server on loopback for delivery tests: answers A, AAAA, MX and TXT from a zone the
//! test may change while it runs (`serve_live`), NXDOMAIN for names it does not know, an
//! empty answer for known names without that type. Answers have TTL 0, so a changed record
//! (an MTA-STS id, a moved MX host) is seen at the next lookup.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, RwLock};

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::rdata::{A, MX, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tokio::net::UdpSocket;

#[derive(Default, Clone)]
pub struct Zone {
    records: HashMap<String, Vec<RData>>,
}

impl Zone {
    pub fn mx(mut self, name: &str, preference: u16, exchange: &str) -> Zone {
        let exchange = if exchange == "." {
            Name::root()
        } else {
            Name::from_ascii(format!("{exchange}.")).unwrap()
        };
        self.records
            .entry(name.to_string())
            .or_default()
            .push(RData::MX(MX::new(preference, exchange)));
        self
    }

    pub fn txt(mut self, name: &str, text: &str) -> Zone {
        self.records
            .entry(name.to_string())
            .or_default()
            .push(RData::TXT(TXT::new(vec![text.to_string()])));
        self
    }

    pub fn a(mut self, name: &str, ip: Ipv4Addr) -> Zone {
        self.records
            .entry(name.to_string())
            .or_default()
            .push(RData::A(A(ip)));
        self
    }
}

/// Serve `zone` on 127.0.0.1 (UDP) until the test ends; returns the address.
pub async fn serve(zone: Zone) -> SocketAddr {
    serve_live(zone).await.0
}

/// A zone the test changes while postern asks it.
#[derive(Clone)]
pub struct LiveZone(Arc<RwLock<Zone>>);

impl LiveZone {
    pub fn set(&self, zone: Zone) {
        *self.0.write().unwrap() = zone;
    }
}

/// The same, with a handle to change the zone.
pub async fn serve_live(zone: Zone) -> (SocketAddr, LiveZone) {
    let live = LiveZone(Arc::new(RwLock::new(zone)));
    let zone = live.clone();
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        loop {
            let Ok((n, peer)) = socket.recv_from(&mut buf).await else {
                return;
            };
            let Ok(query) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            let reply = answer(&zone.0.read().unwrap(), &query);
            let _ = socket.send_to(&reply.to_vec().unwrap(), peer).await;
        }
    });
    (addr, live)
}

fn answer(zone: &Zone, query: &Message) -> Message {
    let mut reply = Message::response(query.metadata.id, query.metadata.op_code);
    reply.metadata.authoritative = true;
    reply.metadata.recursion_desired = query.metadata.recursion_desired;
    reply.metadata.recursion_available = true;
    for q in &query.queries {
        reply.add_query(q.clone());
        let name = q
            .name()
            .to_ascii()
            .trim_end_matches('.')
            .to_ascii_lowercase();
        let Some(records) = zone.records.get(&name) else {
            reply.metadata.response_code = ResponseCode::NXDomain;
            continue;
        };
        for rdata in records {
            if rdata.record_type() == q.query_type() || (q.query_type() == RecordType::ANY) {
                reply.add_answer(Record::from_rdata(q.name().clone(), 0, rdata.clone()));
            }
        }
    }
    reply
}
