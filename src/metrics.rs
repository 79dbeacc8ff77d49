//! Prometheus metrics, served by the control API at `/api/v1/metrics` (bearer token, as the
//! rest of it): certificate days left, queue size. One recorder per process.

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use metrics_util::MetricKindMask;

/// The process's recorder, installed on first use. Gauges not set for two days are dropped,
/// so a deleted certificate's gauge goes with it (the daily expiry check sets the others).
pub fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .idle_timeout(MetricKindMask::GAUGE, Some(Duration::from_secs(2 * 86_400)))
            .build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!(target: "postern/master", "warning: another metrics recorder is installed; /api/v1/metrics will be empty");
        }
        handle
    })
}

/// `postern_certificate_days_left{name,type}`.
pub fn certificate_days_left(name: &str, kind: &str, days: i64) {
    metrics::gauge!("postern_certificate_days_left", "name" => name.to_string(), "type" => kind.to_string())
        .set(days as f64);
}

/// `postern_settings_database_up`: 1 while the shared settings database answers, 0 while
/// this node relays on the settings it last applied.
pub fn settings_database_up(up: bool) {
    metrics::gauge!("postern_settings_database_up").set(f64::from(u8::from(up)));
}

/// `postern_admin_sessions`: admin page sessions held (signed-in ones; bounded).
pub fn admin_sessions(n: usize) {
    metrics::gauge!("postern_admin_sessions").set(n as f64);
}

/// `postern_settings_refused`: 1 while this node refuses something the shared settings
/// database holds (a sealed row written back without the key), 0 otherwise.
pub fn settings_refused(refused: bool) {
    metrics::gauge!("postern_settings_refused").set(f64::from(u8::from(refused)));
}

pub fn queue_messages(n: usize) {
    metrics::gauge!("postern_queue_messages").set(n as f64);
}

/// `postern_spool_damaged_segments`: segments kept in `spool/damaged/` (each needs a look).
pub fn damaged_segments(n: usize) {
    metrics::gauge!("postern_spool_damaged_segments").set(n as f64);
}

/// `postern_inbound_refused_total{reason}`: MAIL FROM refused by an inbound TLS row, by why
/// (`plaintext`, `strength`, `certificate`).
pub fn inbound_refused(reason: &'static str) {
    metrics::counter!("postern_inbound_refused_total", "reason" => reason).increment(1);
}
