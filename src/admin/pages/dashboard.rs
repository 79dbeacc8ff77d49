//! The dashboard, the landing page after sign-in: queue counts, the last 24 hours of
//! deliveries by TLS outcome as a chart drawn here (SVG, no script), the top destinations
//! with their share over TLS, certificates expiring within 30 days, the last 20 errors.

use askama::Template;
use axum::extract::State;
use axum::response::Response;
use tower_sessions::Session;

use super::{Chrome, SignedIn, chrome, render};
use crate::admin::AdminState;
use crate::admin::dashboard::{Dashboard, Hour, gather};

/// The chart's drawing area, in SVG units (it scales to the page's width).
const WIDTH: u64 = 720;
const HEIGHT: u64 = 200;
const BAR: u64 = WIDTH / 24;

pub struct Segment {
    y: u64,
    height: u64,
    class: &'static str,
}

pub struct Bar {
    x: u64,
    segments: Vec<Segment>,
    /// "14:00 UTC: 120 verified, 30 encrypted, 2 plaintext, 0 refused".
    title: String,
    /// Every sixth hour is labelled under the axis.
    label: Option<String>,
}

#[derive(Template)]
#[template(path = "dashboard.html")]
struct DashboardPage {
    chrome: Chrome,
    notice: Option<String>,
    error: Option<String>,
    data: Option<Dashboard>,
    /// The last errors: (when, UTC as on the Logs page; the Postfix line).
    errors: Vec<(String, String)>,
    senders: Vec<SenderRow>,
    refused: Vec<RefusedRow>,
    bars: Vec<Bar>,
    peak: u64,
    total: u64,
    width: u64,
    height: u64,
    bar_width: u64,
}

/// A sender domain of the received mail, with the Received view of its mail.
pub struct SenderRow {
    domain: String,
    /// Its records on the Logs page (none for the null sender).
    link: Option<String>,
    received: u64,
    tls_percent: u64,
}

pub struct RefusedRow {
    day: String,
    client: String,
    sender_domain: String,
    reason: &'static str,
    count: u64,
}

fn sender_rows(d: &Dashboard) -> Vec<SenderRow> {
    d.senders
        .iter()
        .map(|s| SenderRow {
            domain: match s.domain.as_str() {
                "" => "<> (the null sender)".into(),
                d => d.to_string(),
            },
            link: (!s.domain.is_empty()).then(|| {
                let q = form_urlencoded::Serializer::new(String::new())
                    .append_pair("sender", &s.domain)
                    .finish();
                format!("/logs/received?{q}#results")
            }),
            received: s.received,
            tls_percent: s.tls_percent,
        })
        .collect()
}

fn refused_rows(d: &Dashboard) -> Vec<RefusedRow> {
    d.refused
        .iter()
        .map(|r| RefusedRow {
            day: crate::proto::utc_at(r.day)
                .split(' ')
                .next()
                .unwrap_or("")
                .to_string(),
            client: r.client.clone(),
            sender_domain: r.sender_domain.clone(),
            reason: r.reason.describe(),
            count: r.count,
        })
        .collect()
}

fn hh(unix: u64) -> String {
    format!("{:02}:00", unix % 86_400 / 3600)
}

/// Stacked bars, verified at the bottom, scaled to the busiest hour.
pub fn bars(hours: &[Hour]) -> (Vec<Bar>, u64) {
    let total = |h: &Hour| h.verified + h.encrypted + h.plaintext + h.refused;
    let busiest = hours.iter().map(total).max().unwrap_or(0);
    let peak = busiest.max(1);
    let bars = hours
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let mut top = HEIGHT;
            let mut segments = Vec::new();
            for (n, class) in [
                (h.verified, "verified"),
                (h.encrypted, "encrypted"),
                (h.plaintext, "plaintext"),
                (h.refused, "refused"),
            ] {
                let height = n * HEIGHT / peak;
                if height > 0 {
                    top -= height;
                    segments.push(Segment {
                        y: top,
                        height,
                        class,
                    });
                }
            }
            Bar {
                x: i as u64 * BAR,
                segments,
                title: format!(
                    "{} UTC: {} verified, {} encrypted, {} plaintext, {} refused by policy",
                    hh(h.start),
                    h.verified,
                    h.encrypted,
                    h.plaintext,
                    h.refused
                ),
                label: (i % 6 == 0).then(|| hh(h.start)),
            }
        })
        .collect();
    (bars, busiest)
}

pub async fn page(
    State(state): State<AdminState>,
    session: Session,
    axum::Extension(auth): axum::Extension<SignedIn>,
) -> Response {
    let (data, error) = match gather(&state).await {
        Ok(d) => (Some(d), None),
        Err(e) => (None, Some(e.error)),
    };
    let (bars, peak) = data.as_ref().map(|d| bars(&d.hours)).unwrap_or_default();
    let total = data.as_ref().map_or(0, |d| {
        d.hours
            .iter()
            .map(|h| h.verified + h.encrypted + h.plaintext + h.refused)
            .sum()
    });
    let errors = data.as_ref().map_or(Vec::new(), |d| {
        d.errors
            .iter()
            .map(|e| (super::queue::when(e.unix_time), e.line.clone()))
            .collect()
    });
    let senders = data.as_ref().map(sender_rows).unwrap_or_default();
    let refused = data.as_ref().map(refused_rows).unwrap_or_default();
    render(DashboardPage {
        senders,
        refused,
        chrome: chrome(&state, &session, Some(&auth)).await,
        notice: session.remove::<String>("notice").await.ok().flatten(),
        error,
        data,
        errors,
        bars,
        peak,
        total,
        width: WIDTH,
        height: HEIGHT,
        bar_width: BAR - 4,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_stack_from_the_bottom_scaled_to_the_busiest_hour() {
        let hour = |start, verified, plaintext| Hour {
            start,
            verified,
            encrypted: 0,
            plaintext,
            refused: 0,
        };
        let (bars, peak) = bars(&[hour(0, 50, 50), hour(3600, 25, 0)]);
        assert_eq!(peak, 100);
        assert_eq!(bars[0].segments[0].y, 100, "verified fills the lower half");
        assert_eq!(bars[0].segments[1].y, 0);
        assert_eq!(bars[1].segments[0].height, 50);
        assert_eq!(bars[1].x, BAR);
        assert_eq!(bars[0].label.as_deref(), Some("00:00"));
        assert!(bars[1].title.starts_with("01:00 UTC: 25 verified"));
    }
}
