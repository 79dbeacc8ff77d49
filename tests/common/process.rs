//! postern as a real process (for SIGKILL and resource-limit tests).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

pub struct Proc {
    pub child: Child,
    /// The config file it runs on (`--config` for CLI commands against it).
    pub config: std::path::PathBuf,
    pub smtp: SocketAddr,
    pub log: Arc<std::sync::Mutex<Vec<String>>>,
}

/// Start `postern serve` (optionally through `sh -c` with a prefix such as a ulimit) and wait
/// for its "daemon started" line, which names the bound SMTP address.
pub fn spawn_postern(dir: &Path, shell_prefix: Option<&str>, extra: &str) -> Proc {
    spawn_postern_with(dir, shell_prefix, Keys::default(), extra)
}

/// Keys added to the config's `[server]` and `[smtp]` tables (`extra` cannot reopen them).
#[derive(Default)]
pub struct Keys<'a> {
    pub server: &'a str,
    pub smtp: &'a str,
    /// `server.hostname`; default `mx.test.example`.
    pub hostname: Option<&'a str>,
}

/// As `spawn_postern`, with `keys` added to the config's own tables.
pub fn spawn_postern_with(
    dir: &Path,
    shell_prefix: Option<&str>,
    keys: Keys<'_>,
    extra: &str,
) -> Proc {
    let Keys {
        server: server_keys,
        smtp: smtp_keys,
        hostname,
    } = keys;
    let hostname = hostname.unwrap_or("mx.test.example");
    let config = dir.join("postern.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nhostname = \"{hostname}\"\ndata_dir = \"{}\"\n{server_keys}\n[smtp]\nlisten = \"127.0.0.1:0\"\nshutdown_grace_secs = 5\n{smtp_keys}\n[admin]\nlisten = \"127.0.0.1:0\"\n{extra}\n",
            dir.join("data").display()
        ),
    )
    .unwrap();
    let bin = env!("CARGO_BIN_EXE_postern");
    let mut cmd = match shell_prefix {
        None => Command::new(bin),
        Some(prefix) => {
            let mut c = Command::new("sh");
            c.arg("-c")
                .arg(format!("{prefix}; exec \"$0\" \"$@\""))
                .arg(bin);
            c
        }
    };
    let mut child = cmd
        .args(["serve", "--config"])
        .arg(&config)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let log = Arc::new(std::sync::Mutex::new(Vec::new()));
    let smtp = loop {
        let line = lines
            .next()
            .expect("postern exited before starting")
            .unwrap();
        log.lock().unwrap().push(line.clone());
        if let Some(rest) = line.split("smtp on ").nth(1) {
            break rest.split(',').next().unwrap().parse().unwrap();
        }
    };
    let sink = log.clone();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            sink.lock().unwrap().push(line);
        }
    });
    Proc {
        child,
        smtp,
        log,
        config,
    }
}

impl Proc {
    /// `postern settings import` of `toml` against this server, as an admin would; asserts
    /// it was applied.
    pub fn import_settings(&self, toml: &str) {
        let file = self.config.with_file_name("import.toml");
        std::fs::write(&file, toml).unwrap();
        let out = self.cli(&["settings", "import", file.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A `postern` CLI command against this server (`--config`, `--api` added).
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(env!("CARGO_BIN_EXE_postern"))
            .args(args)
            .arg("--config")
            .arg(&self.config)
            .args(["--api", &self.api().to_string()])
            .output()
            .unwrap()
    }

    /// The control API's address, from the start line.
    pub fn api(&self) -> std::net::SocketAddr {
        let log = self.log.lock().unwrap().join("\n");
        log.split("control API on https://")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|a| a.parse().ok())
            .expect("the start line names the API")
    }

    /// `terminate` from an async test: the wait runs on a blocking thread, so the test's own
    /// runtime keeps serving its sinks (postern QUITs its cached connections to them on the
    /// way out, and would otherwise wait for an answer that cannot come).
    pub async fn stop(self) -> bool {
        tokio::task::spawn_blocking(move || self.terminate())
            .await
            .unwrap()
    }

    /// SIGTERM and wait; true if it exited cleanly.
    pub fn terminate(mut self) -> bool {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        self.child.wait().map(|s| s.success()).unwrap_or(false)
    }
}
