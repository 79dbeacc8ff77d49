//! A real PostgreSQL for multi-node tests: Debian's server binaries (`initdb`, `pg_ctl`,
//! installed by `.ci/run`), a cluster in a temporary directory, listening on a loopback port
//! only, trust authentication for the `postgres` user. Run as the `postgres` system user
//! when the tests run as root (PostgreSQL refuses to run as root). Stopped when dropped.

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Postgres {
    pub port: u16,
    dir: tempfile::TempDir,
    bin: PathBuf,
    /// Serving TLS with this certificate and key (PEM), for 127.0.0.1.
    tls: bool,
}

fn bin_dir() -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("initdb").exists())
        .collect();
    found.sort();
    found.pop()
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// `program args` as the postgres user when we are root.
fn run(bin: &Path, program: &str, args: &[&str]) -> std::process::Output {
    let exe = bin.join(program);
    let out = if is_root() {
        Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(&exe)
            .args(args)
            .output()
    } else {
        Command::new(&exe).args(args).output()
    };
    out.unwrap_or_else(|e| panic!("{}: {e}", exe.display()))
}

impl Postgres {
    /// `None` (said) where PostgreSQL is not installed; CI installs it, so there its absence
    /// fails instead.
    pub fn start() -> Option<Postgres> {
        Postgres::start_with(None)
    }

    /// The same, serving TLS with `cert` (certificate and PKCS#8 key, DER) for 127.0.0.1.
    pub fn start_tls(cert: &(Vec<u8>, Vec<u8>)) -> Option<Postgres> {
        Postgres::start_with(Some(cert))
    }

    fn start_with(cert: Option<&(Vec<u8>, Vec<u8>)>) -> Option<Postgres> {
        let Some(bin) = bin_dir() else {
            assert!(
                std::env::var_os("CI").is_none(),
                "PostgreSQL server binaries missing (.ci/run installs postgresql)"
            );
            eprintln!("skipped: no PostgreSQL server binaries (apt-get install postgresql)");
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        if is_root() {
            let _ = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status();
        }
        let data = dir.path().join("data");
        let data_s = data.display().to_string();
        let out = run(
            &bin,
            "initdb",
            &[
                "-D",
                &data_s,
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
            ],
        );
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if let Some((der, key)) = cert {
            use postern::certs::check::pem;
            std::fs::write(data.join("server.crt"), pem("CERTIFICATE", der)).unwrap();
            std::fs::write(data.join("server.key"), pem("PRIVATE KEY", key)).unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(
                data.join("server.key"),
                std::fs::Permissions::from_mode(0o600),
            )
            .unwrap();
            if is_root() {
                let _ = Command::new("chown")
                    .args(["postgres:postgres"])
                    .arg(data.join("server.crt"))
                    .arg(data.join("server.key"))
                    .status();
            }
        }
        let pg = Postgres {
            port,
            dir,
            bin,
            tls: cert.is_some(),
        };
        pg.up();
        Some(pg)
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    /// Start (again) on the same port and data; returns once it accepts connections.
    pub fn up(&self) {
        let mut opts = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {}",
            self.port,
            self.dir.path().display()
        );
        if self.tls {
            opts.push_str(" -c ssl=on");
        }
        let log = self.dir.path().join("log").display().to_string();
        let out = run(
            &self.bin,
            "pg_ctl",
            &["-D", &self.data(), "-o", &opts, "-l", &log, "-w", "start"],
        );
        assert!(
            out.status.success(),
            "pg_ctl start: {}{}",
            String::from_utf8_lossy(&out.stdout),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    /// Stop at once (clients see the connection drop).
    pub fn down(&self) {
        let _ = run(
            &self.bin,
            "pg_ctl",
            &["-D", &self.data(), "-m", "immediate", "-w", "stop"],
        );
    }

    /// Plaintext, said in the URL (postern requires TLS otherwise).
    pub fn url(&self) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/postgres?sslmode=disable",
            self.port
        )
    }

    /// With TLS required (postern's default for a URL without `sslmode`).
    pub fn url_tls(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.down();
    }
}
