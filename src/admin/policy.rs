//! The TLS policy table one row at a time (`/api/v1/policy/rows`) and the Test of a row
//! before it is saved (`/api/v1/policy/test`), a new one or one in the table (tested with
//! what was typed in its place). The admin page's TLS Policy Domains calls the
//! same functions; every change goes through `apply_settings`, validated whole.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::{AdminState, ApiError, apply_settings};
use crate::events::StarttlsSeen;
use crate::outbound::check_tls::RowTest;
use crate::settings::{Apply, PolicyRow, Settings, SettingsDoc};

/// How far back the Test looks in the delivery records for a host's STARTTLS.
pub const HISTORY_DAYS: u64 = 30;

/// One edit of the table.
#[derive(Debug, Clone)]
pub enum RowChange {
    /// New rows (the add form, the bulk box); a pattern already there is a duplicate.
    Add(Vec<PolicyRow>),
    /// The row stored as `original` becomes `row` (its pattern may change).
    Replace {
        original: String,
        row: PolicyRow,
    },
    Delete(String),
}

/// The document with `change` made: what `apply_settings` validates.
fn changed_doc(current: &Settings, change: RowChange) -> Result<SettingsDoc, ApiError> {
    let mut doc = current.to_doc();
    let find = |rows: &[PolicyRow], pattern: &str| {
        let wanted = pattern.trim().trim_end_matches('.').to_ascii_lowercase();
        rows.iter()
            .position(|r| r.pattern == wanted)
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::NOT_FOUND,
                    format!("no policy row for {pattern:?}"),
                    Some("pattern".into()),
                )
            })
    };
    match change {
        RowChange::Add(rows) => doc.policy.extend(rows),
        RowChange::Replace { original, row } => {
            let i = find(&doc.policy, &original)?;
            doc.policy[i] = row;
        }
        RowChange::Delete(pattern) => {
            let i = find(&doc.policy, &pattern)?;
            doc.policy.remove(i);
        }
    }
    Ok(doc)
}

/// Make `change` (or with `Apply::No` only check it), audited as `actor`.
pub(crate) async fn change_rows(
    state: &AdminState,
    actor: String,
    apply: Apply,
    change: RowChange,
) -> Result<crate::settings::Changed, ApiError> {
    apply_settings(state, actor, apply, move |current| {
        changed_doc(current, change)
    })
    .await
}

pub async fn add(
    State(state): State<AdminState>,
    Json(rows): Json<Vec<PolicyRow>>,
) -> Result<Json<Vec<PolicyRow>>, ApiError> {
    let result = change_rows(&state, "api".into(), Apply::Yes, RowChange::Add(rows)).await?;
    Ok(Json(result.snapshot.settings.policy.clone()))
}

pub async fn replace(
    State(state): State<AdminState>,
    Path(original): Path<String>,
    Json(row): Json<PolicyRow>,
) -> Result<Json<Vec<PolicyRow>>, ApiError> {
    let change = RowChange::Replace { original, row };
    let result = change_rows(&state, "api".into(), Apply::Yes, change).await?;
    Ok(Json(result.snapshot.settings.policy.clone()))
}

pub async fn delete(
    State(state): State<AdminState>,
    Path(pattern): Path<String>,
) -> Result<StatusCode, ApiError> {
    change_rows(&state, "api".into(), Apply::Yes, RowChange::Delete(pattern)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A row to test, as it would be added (or replace `replacing`; a row whose pattern is in
/// the table already is tested in that row's place).
#[derive(Debug, Deserialize)]
pub struct TestRequest {
    pub row: PolicyRow,
    #[serde(default)]
    pub replacing: Option<String>,
}

/// What the Test says: the decision delivery would make with the row in place, each host's
/// probe and verdict, and what the delivery records saw of those hosts.
#[derive(Debug, Serialize)]
pub struct PolicyTest {
    /// The address the decision was made for (`postmaster@<domain>` for a domain row).
    pub recipient: String,
    /// Which source decides with the row in place (another may outrank it).
    pub source: String,
    /// Whether that is the row under test.
    pub row_decides: bool,
    /// The stored row the tested one took the place of (the row was in the table already).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replaces: Option<String>,
    pub test: RowTest,
    /// What the domain publishes, as the decision explains it (its MTA-STS and DANE lines).
    pub published: Vec<String>,
    pub history_days: u64,
    pub history: Vec<StarttlsSeen>,
}

pub async fn test(
    State(state): State<AdminState>,
    Json(req): Json<TestRequest>,
) -> Result<Json<PolicyTest>, ApiError> {
    test_row(&state, req).await.map(Json)
}

/// The one Test of the API and the page: validate the row as the change would (nothing is
/// stored), decide for its domain with it in place, probe the hosts delivery would use.
pub(crate) async fn test_row(state: &AdminState, req: TestRequest) -> Result<PolicyTest, ApiError> {
    let normalized = req
        .row
        .pattern
        .trim()
        .trim_end_matches('.')
        .to_ascii_lowercase();
    // A row the table has already is tested with what was typed in its place, not refused
    // as a duplicate: testing a row in use is what an admin does before tightening it.
    let replaces = req.replacing.clone().or_else(|| stored(state, &normalized));
    let change = match replaces.clone() {
        Some(original) => RowChange::Replace {
            original,
            row: req.row.clone(),
        },
        None => RowChange::Add(vec![req.row.clone()]),
    };
    let proposed = change_rows(state, "test".into(), Apply::No, change).await?;
    let (domain, recipient) = tested_domain(&req.row.pattern)?;
    let Some(engine) = state.engine.clone() else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the delivery engine is not running here: nothing to test with",
            None,
        ));
    };
    let facts = engine.published(&proposed.snapshot, &domain).await;
    let decision =
        crate::policy::decide_published(&proposed.snapshot, &recipient, None, None, &facts);
    let published = published_lines(&decision);
    let row_decides = matches!(&decision.source, crate::policy::Source::Row(p) if *p == normalized);
    let test = engine
        .test_row(&domain, &decision)
        .await
        .map_err(|e| not_tested(&engine, e))?;
    let hosts: Vec<String> = test
        .hosts
        .iter()
        .map(|h| h.report.relay.split('[').next().unwrap_or("").to_string())
        .collect();
    let since = crate::fsutil::unix_now().saturating_sub(HISTORY_DAYS * 86_400);
    let history = match engine.events().store() {
        Some(store) => tokio::task::spawn_blocking(move || store.starttls_history(&hosts, since))
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default(),
        None => Vec::new(),
    };
    Ok(PolicyTest {
        recipient,
        source: decision.source.to_string(),
        row_decides,
        replaces: req.replacing.is_none().then_some(replaces).flatten(),
        test,
        published,
        history_days: HISTORY_DAYS,
        history,
    })
}

/// The stored row whose pattern is `normalized`, if the table has one.
fn stored(state: &AdminState, normalized: &str) -> Option<String> {
    let current = state.settings.current();
    current
        .settings
        .policy
        .iter()
        .any(|r| r.pattern == normalized)
        .then(|| normalized.to_string())
}

/// Why the hosts could not be found, and without DNS how to configure it.
fn not_tested(engine: &crate::outbound::Engine, e: String) -> ApiError {
    let e = match engine.asks_dns() {
        true => e,
        false => format!("{e}. {NO_DNS}"),
    };
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e, None)
}

/// What to do when the Test cannot look up a domain's servers because postern asks no DNS.
const NO_DNS: &str = "How to set them: in the config file postern runs with (postern serve --config FILE), under [outbound], write nameservers = [\"system\"] to use this machine's /etc/resolv.conf, or your resolver's address: nameservers = [\"192.0.2.53:53\"]. Then restart postern. Mail to a relay domain whose next hop is an address ([192.0.2.25]:25, on Relay Domains) needs no DNS.";

/// The explanation's lines about what the domain publishes.
fn published_lines(decision: &crate::policy::Decision) -> Vec<String> {
    decision
        .considered
        .iter()
        .zip(&decision.explanation)
        .filter(|(c, _)| {
            use crate::policy::Source;
            matches!(c.source, Source::MtaSts(_) | Source::Dane(_))
        })
        .map(|(_, line)| line.clone())
        .collect()
}

/// The domain whose hosts a row's Test probes, and the address to decide for.
fn tested_domain(pattern: &str) -> Result<(String, String), ApiError> {
    let pattern = pattern.trim().trim_end_matches('.').to_ascii_lowercase();
    if pattern == "*" {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "pattern: * covers every domain; test one domain on a row of its own",
            Some("pattern".into()),
        ));
    }
    Ok(match pattern.rsplit_once('@') {
        Some((_, domain)) => (domain.to_string(), pattern.clone()),
        None => {
            let domain = pattern.trim_start_matches('.').to_string();
            let recipient = format!("postmaster@{domain}");
            (domain, recipient)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tested_domain_is_the_rows_domain() {
        let t = |p: &str| tested_domain(p).unwrap();
        assert_eq!(
            t("Example.NET."),
            ("example.net".into(), "postmaster@example.net".into())
        );
        assert_eq!(
            t(".example.net"),
            ("example.net".into(), "postmaster@example.net".into())
        );
        assert_eq!(
            t("ceo@example.net"),
            ("example.net".into(), "ceo@example.net".into())
        );
        assert_eq!(
            tested_domain("*").unwrap_err().field.as_deref(),
            Some("pattern")
        );
    }
}
