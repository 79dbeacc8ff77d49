//! What the packaged unit relies on, with the real binary and sockets standing for systemd's:
//! `Type=notify` (READY=1 once it listens, STOPPING=1 at SIGTERM, on `NOTIFY_SOCKET`), and
//! logs in the journal when stderr is the journal (`JOURNAL_STREAM` names stderr's device and
//! inode), not when the variable was inherited by a process whose stderr goes elsewhere.

use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `postern serve` on loopback port 0 in `dir`, with `env` added and stderr into `stderr`.
fn serve(dir: &Path, env: &[(&str, &Path)], journal_stream: &str, stderr: &Path) -> Child {
    let config = dir.join("postern.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nhostname = \"mx.test.example\"\ndata_dir = \"{}\"\n[smtp]\nlisten = \"127.0.0.1:0\"\nshutdown_grace_secs = 5\n[admin]\nlisten = \"127.0.0.1:0\"\n",
            dir.join("data").display()
        ),
    )
    .unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_postern"));
    cmd.args(["serve", "--config"])
        .arg(&config)
        .env("JOURNAL_STREAM", journal_stream)
        .env_remove("NOTIFY_SOCKET")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(stderr).unwrap());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().unwrap()
}

/// The next datagram on `socket` within 30 s.
fn next(socket: &UnixDatagram) -> String {
    socket
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut buf = vec![0u8; 1 << 16];
    let n = socket.recv(&mut buf).expect("a datagram within 30 s");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

fn terminate(mut child: Child) -> bool {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    child.wait().map(|s| s.success()).unwrap_or(false)
}

#[test]
fn ready_once_listening_and_stopping_at_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let notify = dir.path().join("notify.socket");
    let socket = UnixDatagram::bind(&notify).unwrap();
    let child = serve(
        dir.path(),
        &[("NOTIFY_SOCKET", &notify)],
        "",
        &dir.path().join("stderr"),
    );
    let ready = next(&socket);
    assert!(ready.contains("READY=1\n"), "{ready}");
    let smtp: std::net::SocketAddr = ready
        .split("STATUS=smtp on ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("{ready}"));
    // Ready means listening: a connection is answered with the greeting.
    let mut conn = std::net::TcpStream::connect(smtp).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut greeting = [0u8; 4];
    std::io::Read::read_exact(&mut conn, &mut greeting).unwrap();
    assert_eq!(&greeting, b"220 ");
    drop(conn);
    let pid = child.id();
    let stopped = std::thread::spawn(move || terminate(child));
    assert_eq!(next(&socket), "STOPPING=1\n", "pid {pid}");
    assert!(stopped.join().unwrap());
}

#[test]
fn plain_lines_go_to_the_journal_only_when_stderr_is_the_journal() {
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("journal.socket");
    let socket = UnixDatagram::bind(&journal).unwrap();
    let stderr = dir.path().join("stderr");
    // Under systemd: JOURNAL_STREAM is stderr itself.
    std::fs::write(&stderr, "").unwrap();
    let meta = std::fs::metadata(&stderr).unwrap();
    let stream = format!("{}:{}", meta.dev(), meta.ino());
    let mut first = serve(
        dir.path(),
        &[("POSTERN_JOURNAL_SOCKET", &journal)],
        &stream,
        &stderr,
    );
    // `serve` truncated the same file: same inode.
    assert_eq!(std::fs::metadata(&stderr).unwrap().ino(), meta.ino());
    let deadline = Instant::now() + Duration::from_secs(30);
    let started = loop {
        let entry = next(&socket);
        if entry.contains("daemon started") {
            break entry;
        }
        assert!(Instant::now() < deadline);
    };
    assert!(
        started.contains("SYSLOG_IDENTIFIER=postern/master\n"),
        "{started}"
    );
    let _ = first.kill();
    let _ = first.wait();
    let written = std::fs::read_to_string(&stderr).unwrap();
    assert!(!written.contains("daemon started"), "{written}");

    // The variable inherited, stderr elsewhere: lines stay on stderr.
    let other = dir.path().join("stderr2");
    let data = dir.path().join("data2");
    std::fs::create_dir(&data).unwrap();
    let child = serve(
        &data,
        &[("POSTERN_JOURNAL_SOCKET", &journal)],
        &stream,
        &other,
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(&other)
        .unwrap()
        .contains("daemon started")
    {
        assert!(Instant::now() < deadline, "no start line on stderr");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(terminate(child));
    socket.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 1 << 12];
    assert!(
        socket.recv(&mut buf).is_err(),
        "nothing sent to the journal"
    );
}
