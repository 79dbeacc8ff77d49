//! A DNSSEC-signed DNS server on loopback for DANE tests, built on hickory-server: a test
//! root zone "." signed here (its key is the trust anchor postern is given, as a file of
//! DNSKEY records), holding the signed names; child zones delegated from it that are
//! unsigned (no DS in the root: provably insecure) or whose DS names another key (bogus).
//! DS questions are answered by the parent, as the DNS does.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::dnssec::crypto::EcdsaSigningKey;
use hickory_proto::dnssec::rdata::{DNSKEY, DNSSECRData, DS};
use hickory_proto::dnssec::{Algorithm, DigestType, DnssecSigner, SigningKey};
use hickory_proto::rr::rdata::tlsa::{CertUsage, Matching, Selector};
use hickory_proto::rr::rdata::{A, MX, NS, SOA, TLSA};
use hickory_proto::rr::{LowerName, Name, RData, Record, RecordType};
use hickory_server::dnssec::NxProofKind;
use hickory_server::net::runtime::{Time, TokioRuntimeProvider};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{AxfrPolicy, Catalog, ZoneHandler, ZoneType};

/// The records of one zone, added by the test.
#[derive(Default, Clone)]
pub struct Records(Vec<Record>);

fn name(n: &str) -> Name {
    Name::from_ascii(format!("{}.", n.trim_end_matches('.'))).unwrap()
}

impl Records {
    pub fn mx(mut self, owner: &str, preference: u16, exchange: &str) -> Records {
        let rdata = RData::MX(MX::new(preference, name(exchange)));
        self.0.push(Record::from_rdata(name(owner), 300, rdata));
        self
    }

    pub fn a(mut self, owner: &str, ip: Ipv4Addr) -> Records {
        self.0
            .push(Record::from_rdata(name(owner), 300, RData::A(A(ip))));
        self
    }

    pub fn txt(mut self, owner: &str, text: &str) -> Records {
        let txt = hickory_proto::rr::rdata::TXT::new(vec![text.to_string()]);
        self.0
            .push(Record::from_rdata(name(owner), 300, RData::TXT(txt)));
        self
    }

    /// `usage selector matching` and the data, as in `3 1 1 <sha-256 of the SPKI>`.
    pub fn tlsa(mut self, owner: &str, (u, s, m): (u8, u8, u8), data: Vec<u8>) -> Records {
        let tlsa = TLSA::new(
            CertUsage::from(u),
            Selector::from(s),
            Matching::from(m),
            data,
        );
        self.0
            .push(Record::from_rdata(name(owner), 300, RData::TLSA(tlsa)));
        self
    }
}

/// What the server serves.
#[derive(Default)]
pub struct Zones {
    pub signed: Records,
    /// Child zones delegated without a DS record: insecure.
    pub unsigned: Vec<(String, Records)>,
    /// Child zones signed with one key while the root's DS names another: bogus.
    pub bogus: Vec<(String, Records)>,
}

/// A running server and the trust anchor to give postern.
pub struct SignedDns {
    pub addr: SocketAddr,
    pub anchor_file: tempfile::NamedTempFile,
}

fn key() -> (Box<dyn SigningKey>, DNSKEY) {
    let alg = Algorithm::ECDSAP256SHA256;
    let pkcs8 = EcdsaSigningKey::generate_pkcs8(alg).unwrap();
    let key = EcdsaSigningKey::from_pkcs8(&pkcs8, alg).unwrap();
    let dnskey = DNSKEY::from_key(&key.to_public_key().unwrap());
    (Box::new(key), dnskey)
}

fn zone(origin: &Name, records: &Records, nsec: bool) -> InMemoryZoneHandler<TokioRuntimeProvider> {
    let mut z = InMemoryZoneHandler::<TokioRuntimeProvider>::empty(
        origin.clone(),
        ZoneType::Primary,
        AxfrPolicy::Deny,
        nsec.then_some(NxProofKind::Nsec),
    );
    let ns = name("ns.test");
    let soa = SOA::new(ns.clone(), name("hostmaster.test"), 1, 3600, 600, 86400, 0);
    z.upsert_mut(Record::from_rdata(origin.clone(), 300, RData::SOA(soa)), 1);
    z.upsert_mut(
        Record::from_rdata(origin.clone(), 300, RData::NS(NS(ns))),
        1,
    );
    for r in &records.0 {
        z.upsert_mut(r.clone(), 1);
    }
    z
}

fn sign(z: &mut InMemoryZoneHandler<TokioRuntimeProvider>, origin: &Name) -> DNSKEY {
    let (key, dnskey) = key();
    let signer = DnssecSigner::new(
        dnskey.clone(),
        key,
        origin.clone(),
        Duration::from_secs(7 * 86400),
    );
    z.add_zone_signing_key_mut(signer).unwrap();
    dnskey
}

/// Serve `zones` on 127.0.0.1 (UDP and TCP, one port) until the test ends.
pub async fn serve(zones: Zones) -> SignedDns {
    let root = Name::root();
    let mut delegations = zones.signed.clone();
    let mut children = Vec::new();
    for (child, records) in &zones.unsigned {
        delegations.0.push(Record::from_rdata(
            name(child),
            300,
            RData::NS(NS(name("ns.test"))),
        ));
        children.push(zone(&name(child), records, false));
    }
    for (child, records) in &zones.bogus {
        let origin = name(child);
        delegations.0.push(Record::from_rdata(
            origin.clone(),
            300,
            RData::NS(NS(name("ns.test"))),
        ));
        let mut z = zone(&origin, records, true);
        sign(&mut z, &origin);
        z.secure_zone_mut().unwrap();
        // The DS in the root names a key the child does not sign with.
        let (_, other) = key();
        let digest = other.to_digest(&origin, DigestType::SHA256).unwrap();
        let ds = DS::new(
            other.calculate_key_tag().unwrap(),
            hickory_proto::dnssec::PublicKey::algorithm(other.public_key()),
            DigestType::SHA256,
            digest.as_ref().to_vec(),
        );
        delegations.0.push(Record::from_rdata(
            origin.clone(),
            300,
            RData::DNSSEC(DNSSECRData::DS(ds)),
        ));
        children.push(z);
    }
    let mut root_zone = zone(&root, &delegations, true);
    let anchor = sign(&mut root_zone, &root);
    root_zone.secure_zone_mut().unwrap();
    let root_zone: Arc<dyn ZoneHandler> = Arc::new(root_zone);
    let mut all = Catalog::new();
    let mut parents = Catalog::new();
    all.upsert(LowerName::from(&root), vec![root_zone.clone()]);
    parents.upsert(LowerName::from(&root), vec![root_zone]);
    for child in children {
        let origin = child.origin().clone();
        all.upsert(origin, vec![Arc::new(child)]);
    }
    let (udp, tcp) = udp_and_tcp_on_one_port().await;
    let addr = udp.local_addr().unwrap();
    let mut server = hickory_server::Server::new(ParentsAnswerDs { all, parents });
    server.register_socket(udp);
    server.register_listener(tcp, Duration::from_secs(5), 64);
    tokio::spawn(async move {
        let _ = server.block_until_done().await;
    });
    let anchor_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(anchor_file.path(), format!(". 300 IN DNSKEY {anchor}\n")).unwrap();
    SignedDns { addr, anchor_file }
}

/// DS records live in the parent zone (RFC 4034 section 5): a DS question goes to the
/// catalog that holds only the root, everything else to the one that holds every zone.
struct ParentsAnswerDs {
    all: Catalog,
    parents: Catalog,
}

#[async_trait::async_trait]
impl RequestHandler for ParentsAnswerDs {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        response_handle: R,
    ) -> ResponseInfo {
        let ds = request
            .request_info()
            .is_ok_and(|i| i.query.query_type() == RecordType::DS);
        if ds {
            self.parents
                .handle_request::<R, T>(request, response_handle)
                .await
        } else {
            self.all
                .handle_request::<R, T>(request, response_handle)
                .await
        }
    }
}

/// SHA-256 of a certificate's SubjectPublicKeyInfo: the data of a `3 1 1` record.
pub fn spki_sha256(cert_der: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der).unwrap();
    sha2::Sha256::digest(cert.public_key().raw).to_vec()
}

/// A UDP socket and a TCP listener on the same loopback port (a resolver falls back to TCP
/// on the port it was given). The kernel's free UDP port may be taken for TCP by another
/// test running beside: then another port, a bounded number of times.
async fn udp_and_tcp_on_one_port() -> (tokio::net::UdpSocket, tokio::net::TcpListener) {
    for _ in 0..50 {
        let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = udp.local_addr().unwrap();
        match tokio::net::TcpListener::bind(addr).await {
            Ok(tcp) => return (udp, tcp),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => continue,
            Err(e) => panic!("tcp {addr}: {e}"),
        }
    }
    panic!("no loopback port free for both UDP and TCP in 50 tries")
}
