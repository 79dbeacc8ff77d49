//! The admin page's session store: in memory, bounded, expired sessions dropped. Only a
//! sign-in stores a session (the sign-in form's token needs none), so the store holds
//! signed-in admins; the bound still holds whatever happens, evicting expired sessions first,
//! then the unauthenticated ones, then the oldest. tower-sessions' `MemoryStore` keeps every
//! session forever, expired or not.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use time::OffsetDateTime;
use tower_sessions::SessionStore;
use tower_sessions::session::{Id, Record};
use tower_sessions::session_store;

/// Sessions kept at most (a signed-in one is a few hundred bytes).
pub const MAX_SESSIONS: usize = 10_000;

#[derive(Clone, Debug, Default)]
pub struct Sessions {
    map: Arc<Mutex<HashMap<Id, Record>>>,
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Id, Record>> {
        // A map of records: still usable after a panic elsewhere.
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sessions held now (the `postern_admin_sessions` gauge).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The cookie's session is live and signed in: for the listener's reserve, before any
    /// page code runs.
    pub fn signed_in(&self, cookie_value: &str) -> bool {
        let Ok(id) = cookie_value.parse::<Id>() else {
            return false;
        };
        let now = OffsetDateTime::now_utc();
        self.lock()
            .get(&id)
            .is_some_and(|r| r.expiry_date > now && r.data.contains_key(super::AUTH_KEY))
    }

    fn insert(&self, record: &Record) {
        let mut map = self.lock();
        if !map.contains_key(&record.id) && map.len() >= MAX_SESSIONS {
            make_room(&mut map);
        }
        map.insert(record.id, record.clone());
    }
}

/// Drop every expired session; if none was, the oldest unauthenticated one, else the oldest.
fn make_room(map: &mut HashMap<Id, Record>) {
    let now = OffsetDateTime::now_utc();
    map.retain(|_, r| r.expiry_date > now);
    if map.len() < MAX_SESSIONS {
        return;
    }
    let victim = map
        .values()
        .min_by_key(|r| (r.data.contains_key(super::AUTH_KEY), r.expiry_date))
        .map(|r| r.id);
    if let Some(id) = victim {
        map.remove(&id);
    }
}

#[async_trait::async_trait]
impl SessionStore for Sessions {
    async fn create(&self, record: &mut Record) -> session_store::Result<()> {
        while self.lock().contains_key(&record.id) {
            record.id = Id::default();
        }
        self.insert(record);
        Ok(())
    }

    async fn save(&self, record: &Record) -> session_store::Result<()> {
        self.insert(record);
        Ok(())
    }

    async fn load(&self, id: &Id) -> session_store::Result<Option<Record>> {
        let mut map = self.lock();
        let now = OffsetDateTime::now_utc();
        match map.get(id) {
            Some(r) if r.expiry_date > now => Ok(Some(r.clone())),
            Some(_) => {
                map.remove(id);
                Ok(None)
            }
            None => Ok(None),
        }
    }

    async fn delete(&self, id: &Id) -> session_store::Result<()> {
        self.lock().remove(id);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(n: i128, signed_in: bool, expires_in: i64) -> Record {
        let mut data = HashMap::new();
        if signed_in {
            data.insert(super::super::AUTH_KEY.to_string(), serde_json::json!({}));
        }
        Record {
            id: Id(n),
            data,
            expiry_date: OffsetDateTime::now_utc() + time::Duration::seconds(expires_in),
        }
    }

    #[tokio::test]
    async fn bounded_expired_first_then_unauthenticated() {
        let s = Sessions::default();
        s.save(&record(1, true, 60)).await.unwrap();
        s.save(&record(2, false, 3600)).await.unwrap();
        for n in 3..MAX_SESSIONS as i128 + 1 {
            s.save(&record(n, true, 600)).await.unwrap();
        }
        assert_eq!(s.len(), MAX_SESSIONS);
        s.save(&record(-1, true, 600)).await.unwrap();
        assert_eq!(s.len(), MAX_SESSIONS);
        assert!(
            s.load(&Id(2)).await.unwrap().is_none(),
            "unauthenticated first"
        );
        assert!(s.load(&Id(1)).await.unwrap().is_some());
        s.save(&record(-2, true, 600)).await.unwrap();
        assert!(s.load(&Id(1)).await.unwrap().is_none(), "then the oldest");
        assert!(s.signed_in(&Id(3).to_string()));
        assert!(!s.signed_in("not an id"));
    }

    #[tokio::test]
    async fn an_expired_session_is_not_loaded_and_is_dropped() {
        let s = Sessions::default();
        s.save(&record(7, true, -1)).await.unwrap();
        assert!(s.load(&Id(7)).await.unwrap().is_none());
        assert!(s.is_empty());
        assert!(!s.signed_in(&Id(7).to_string()));
    }
}
