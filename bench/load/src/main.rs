//! postern-bench: the project's load generator and counting sink (issue 17).
//!
//! `run`: SESSIONS parallel SMTP sessions send COUNT messages of SIZE body bytes through the
//! relay at `--relay`, N per connection, optionally over STARTTLS (with or without TLS
//! session resumption); the counting sink on `--sink` (in this process, STARTTLS offered
//! with `--sink-starttls`) receives them from the relay. One result line, in relay-bench's
//! key=value form: e2e and submit rates, the "." → 250 latency percentiles (HDR
//! histogram), and, with `--pid`, the relay's CPU, context switches and memory.
//!
//! `hold`: open N sessions to the relay, EHLO on each, and report the relay's RSS with them
//! held and after they are closed (memory per idle connection).
//!
//! It is a benchmark tool, not part of postern: it trusts any certificate the relay shows,
//! as relay-bench's Python driver does.

mod proc;
mod sink;
mod source;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "postern-bench",
    about = "SMTP load through a relay, with a counting sink"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Send COUNT messages through the relay and count them at the sink.
    Run(RunArgs),
    /// Hold N idle sessions (after EHLO) and report the relay's memory.
    Hold(HoldArgs),
}

#[derive(clap::Args, Clone)]
pub struct RunArgs {
    /// The relay's SMTP listener.
    #[arg(long, default_value = "127.0.0.1:10025")]
    relay: SocketAddr,
    /// Where the counting sink listens (the relay's next hop).
    #[arg(long, default_value = "127.0.0.1:10026")]
    sink: SocketAddr,
    /// Parallel sending sessions.
    #[arg(short, long, default_value_t = 20)]
    sessions: usize,
    /// Messages per connection.
    #[arg(long, default_value_t = 1)]
    per_conn: usize,
    /// Body bytes per message (80-byte lines), after 4 header lines.
    #[arg(short = 'l', long, default_value_t = 4096)]
    size: usize,
    /// Messages in all.
    #[arg(short = 'm', long, default_value_t = 20000)]
    count: usize,
    /// The source uses STARTTLS.
    #[arg(long)]
    starttls: bool,
    /// No TLS session resumption on the source side (a full handshake per connection).
    #[arg(long)]
    no_resume: bool,
    /// The sink offers STARTTLS (an ECDSA P-256 certificate made at start).
    #[arg(long)]
    sink_starttls: bool,
    /// The relay's process: its CPU, context switches and memory are reported.
    #[arg(long)]
    pid: Option<u32>,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 600)]
    timeout: u64,
    #[arg(short = 'f', long, default_value = "a@example.org")]
    from: String,
    #[arg(short = 't', long, default_value = "b@example.net")]
    to: String,
    /// Do not wait for the sink (messages to a destination that defers, to fill a queue).
    #[arg(long)]
    submit_only: bool,
    /// Label printed as `relay=` in the result line.
    #[arg(long, default_value = "ours")]
    label: String,
}

#[derive(clap::Args)]
struct HoldArgs {
    #[arg(long, default_value = "127.0.0.1:10025")]
    relay: SocketAddr,
    /// Sessions to hold.
    #[arg(short = 'n', long, default_value_t = 10000)]
    sessions: usize,
    /// The relay's process (required: its memory is what is measured).
    #[arg(long)]
    pid: u32,
    /// Seconds to wait after closing them before the last reading.
    #[arg(long, default_value_t = 5)]
    settle: u64,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Command::Run(args) => runtime.block_on(run(args)),
        Command::Hold(args) => runtime.block_on(hold(args)),
    }
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let sink = sink::Sink::start(args.sink, args.count, args.sink_starttls).await?;
    let before = args.pid.map(proc::Usage::of).transpose()?;
    let self_before = proc::Usage::of_self()?;
    let started = Instant::now();
    let deadline = Duration::from_secs(args.timeout);
    let sent = tokio::time::timeout(deadline, source::run(&args))
        .await
        .map_err(|_| anyhow::anyhow!("timeout: sources not done after {}s", args.timeout))??;
    let submit = started.elapsed();
    let e2e = if args.submit_only {
        submit
    } else {
        e2e(&sink, &args, started, deadline.saturating_sub(submit)).await?
    };
    let after = args.pid.map(proc::Usage::of).transpose()?;
    let self_after = proc::Usage::of_self()?;
    let n = args.count as f64;
    let mut line = format!(
        "tool=postern-bench relay={} mode={} resume={} size={} count={} sessions={} per_conn={} submit_s={:.3} e2e_s={:.3} msgs_per_s={:.1} submit_msgs_per_s={:.1}",
        args.label,
        if args.starttls { "tls" } else { "plain" },
        if !args.starttls {
            "n/a"
        } else if args.no_resume {
            "no"
        } else {
            "yes"
        },
        args.size,
        args.count,
        args.sessions,
        args.per_conn,
        submit.as_secs_f64(),
        e2e.as_secs_f64(),
        n / e2e.as_secs_f64(),
        n / submit.as_secs_f64(),
    );
    let h = &sent.latency;
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    line += &format!(
        " lat_p50_ms={:.3} lat_p90_ms={:.3} lat_p99_ms={:.3} lat_p999_ms={:.3} lat_max_ms={:.3} tls_handshakes={} tls_resumed={}",
        ms(0.5),
        ms(0.9),
        ms(0.99),
        ms(0.999),
        h.max() as f64 / 1000.0,
        sent.handshakes,
        sent.resumed,
    );
    if let (Some(b), Some(a)) = (before, after) {
        let cpu = a.cpu_s - b.cpu_s;
        line += &format!(
            " relay_cpu_s={cpu:.2} relay_cpu_ms_per_msg={:.3} relay_ctxsw_per_msg={:.2} relay_threads={} relay_rss_kib={} relay_hwm_kib={}",
            cpu * 1000.0 / n,
            (a.ctx_switches - b.ctx_switches) as f64 / n,
            a.threads,
            a.rss_kib,
            a.hwm_kib,
        );
    }
    line += &format!(
        " bench_cpu_s={:.2} sink_count={}",
        self_after.cpu_s - self_before.cpu_s,
        sink.count()
    );
    println!("{line}");
    Ok(())
}

/// From the start until the sink has every message.
async fn e2e(
    sink: &sink::Sink,
    args: &RunArgs,
    started: Instant,
    left: Duration,
) -> anyhow::Result<Duration> {
    let all = tokio::time::timeout(left, sink.all_received())
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "timeout: the sink has {} of {} after {}s",
                sink.count(),
                args.count,
                args.timeout
            )
        })?;
    Ok(all.duration_since(started))
}

async fn hold(args: HoldArgs) -> anyhow::Result<()> {
    proc::raise_fd_limit(args.sessions as u64 + 64)?;
    // "Idle" is a server that has served: a few sessions first, so that what is made once
    // (thread caches, lazily built tables) is not counted as what the crowd left behind.
    drop(source::hold(args.relay, 100).await?);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle = proc::Usage::of(args.pid)?;
    let held = source::hold(args.relay, args.sessions).await?;
    let with = proc::Usage::of(args.pid)?;
    drop(held);
    tokio::time::sleep(Duration::from_secs(args.settle)).await;
    let after = proc::Usage::of(args.pid)?;
    let per = (with.rss_kib as f64 - idle.rss_kib as f64) / args.sessions as f64;
    println!(
        "tool=postern-bench hold sessions={} rss_idle_kib={} rss_held_kib={} rss_after_close_kib={} kib_per_session={per:.2} after_close_vs_idle={:.3}",
        args.sessions,
        idle.rss_kib,
        with.rss_kib,
        after.rss_kib,
        after.rss_kib as f64 / idle.rss_kib.max(1) as f64,
    );
    Ok(())
}

/// Accept any certificate: a benchmark measures the work, not the trust.
#[derive(Debug)]
struct AnyCert(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &rustls_pki_types::CertificateDer<'_>,
        _: &[rustls_pki_types::CertificateDer<'_>],
        _: &rustls_pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}
