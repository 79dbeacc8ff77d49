//! What a message rule for every recipient would reach, from the delivery records: the
//! recipient domains of its direction that received mail in the last 30 days, and those of
//! them that took some of it without TLS (the ones a `Require` rule would stop). The same
//! per-domain counters as the dashboard's top destinations.

use serde::Serialize;

use super::{AdminState, ApiError};
use crate::settings::{Direction, Snapshot};

/// The window the confirmation speaks of.
pub const DAYS: u64 = 30;
/// Domains named by way of example.
const EXAMPLES: usize = 5;

#[derive(Debug, Default, Serialize)]
pub struct Reach {
    /// False when this node keeps no delivery records to count from.
    pub recorded: bool,
    pub days: u64,
    /// Recipient domains of the direction with a delivery in the window.
    pub domains: usize,
    /// Of those, the ones with at least one delivery in plaintext.
    pub without_tls: usize,
    /// Some of those, the most mail first.
    pub examples: Vec<String>,
}

/// The reach of a rule of `direction` that applies to every recipient, as the current
/// settings decide inbound (a relay domain) and outbound.
pub(crate) async fn every_recipient(
    state: &AdminState,
    direction: Direction,
) -> Result<Reach, ApiError> {
    let Some(store) = state.engine.as_ref().and_then(|e| e.events().store()) else {
        return Ok(Reach {
            days: DAYS,
            ..Reach::default()
        });
    };
    let since = crate::fsutil::unix_now().saturating_sub(DAYS * 86_400);
    let found = super::blocking(move || store.destinations(since))
        .await?
        .map_err(ApiError::internal)?;
    Ok(count(&state.settings.current(), direction, &found))
}

/// `found`: (domain, deliveries, of which over TLS), the most mail first.
fn count(snapshot: &Snapshot, direction: Direction, found: &[(String, u64, u64)]) -> Reach {
    let reached: Vec<&(String, u64, u64)> = found
        .iter()
        .filter(|(d, _, _)| direction.covers(snapshot.relay_domain(d).is_some()))
        .collect();
    let plain: Vec<&String> = reached
        .iter()
        .filter(|(_, all, tls)| all > tls)
        .map(|(d, _, _)| d)
        .collect();
    Reach {
        recorded: true,
        days: DAYS,
        domains: reached.len(),
        without_tls: plain.len(),
        examples: plain.into_iter().take(EXAMPLES).cloned().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::{RelayDomain, Settings};

    #[test]
    fn counts_the_domains_of_the_direction_and_those_reached_in_plaintext() {
        let mut s = Settings::default();
        s.relay_domains.push(RelayDomain {
            domain: "ours.example".into(),
            ..RelayDomain::default()
        });
        let snap = Snapshot::new(s, 0);
        let found = [
            ("plain.example".to_string(), 5, 2),
            ("ours.example".to_string(), 4, 0),
            ("tls.example".to_string(), 3, 3),
        ];
        let out = count(&snap, Direction::Outbound, &found);
        assert_eq!((out.domains, out.without_tls), (2, 1));
        assert_eq!(out.examples, ["plain.example"]);
        let inbound = count(&snap, Direction::Inbound, &found);
        assert_eq!((inbound.domains, inbound.without_tls), (1, 1));
        let any = count(&snap, Direction::Any, &found);
        assert_eq!((any.domains, any.without_tls), (3, 2));
    }
}
