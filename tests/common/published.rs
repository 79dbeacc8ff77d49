//! A lab for what domains publish: `good.example` with an MX on loopback, an MTA-STS
//! record on the tests' DNS server, and a loopback HTTPS server with a certificate from a
//! test CA (`[tls] extra_roots`) that serves the policy (`mta-sts.good.example`) and takes
//! TLS-RPT posts (`rpt.good.example`), both mapped in `outbound.policy_hosts`.

use super::dns::{LiveZone, Zone, serve_live};
use super::https::HttpsServer;
use super::sink::{Sink, SinkOptions, TestCa};

pub fn policy(mode: &str, mx: &str) -> String {
    format!("version: STSv1\r\nmode: {mode}\r\nmx: {mx}\r\nmax_age: 86400\r\n")
}

/// `good.example`: MX mx.good.example at 127.0.0.1, MTA-STS record with `id`.
pub fn zone(id: &str) -> Zone {
    Zone::default()
        .mx("good.example", 10, "mx.good.example")
        .a("mx.good.example", "127.0.0.1".parse().unwrap())
        .txt("_mta-sts.good.example", &format!("v=STSv1; id={id};"))
}

pub struct Lab {
    pub ca: TestCa,
    pub ca_file: tempfile::NamedTempFile,
    pub https: HttpsServer,
    pub zone: LiveZone,
    pub dns: std::net::SocketAddr,
}

impl Lab {
    pub async fn new(policy_text: &str) -> Lab {
        let ca = TestCa::new();
        let ca_file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(ca_file.path(), &ca.pem).unwrap();
        let https = HttpsServer::start(
            ca.leaf(&["mta-sts.good.example", "rpt.good.example"]),
            200,
            policy_text,
        )
        .await;
        let (dns, zone) = serve_live(zone("20261201")).await;
        Lab {
            ca,
            ca_file,
            https,
            zone,
            dns,
        }
    }

    /// A sink offering STARTTLS with a certificate from the lab's CA for `names`.
    pub async fn sink(&self, names: &[&str]) -> Sink {
        Sink::start(SinkOptions {
            starttls: true,
            cert: Some(self.ca.leaf(names)),
            ..SinkOptions::default()
        })
        .await
    }

    pub fn config(&self, sink: &Sink) -> String {
        format!(
            "[outbound]\nport = {}\nnameservers = [\"{}\"]\n[outbound.policy_hosts]\n\"mta-sts.good.example\" = \"{}\"\n\"rpt.good.example\" = \"{}\"\n[tls]\nextra_roots = [\"{}\"]\n",
            sink.addr.port(),
            self.dns,
            self.https.addr,
            self.https.addr,
            self.ca_file.path().display()
        )
    }

    pub fn fetches(&self) -> usize {
        self.https
            .requests()
            .iter()
            .filter(|r| r.path == "/.well-known/mta-sts.txt")
            .count()
    }
}
