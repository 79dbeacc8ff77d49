//! The settings' lists one item at a time, for the API and the pages alike: relay domains
//! (`/api/v1/relay-domains`), SMTP AUTH users (`/api/v1/users`), rule data
//! (`/api/v1/rule-data`) and message rules (`/api/v1/rules`, which also move up and down:
//! their order decides). Each edit is one `apply_settings` change, validated whole.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{AdminState, ApiError, apply_settings};
use crate::settings::{Apply, AuthUserDoc, MessageRule, RelayDomain, RuleData, SettingsDoc};

/// A list of the settings document whose items have a key.
pub trait Section: Clone + Serialize + DeserializeOwned + Send + Sync + 'static {
    /// "relay domain", for messages.
    const WHAT: &'static str;
    fn list(doc: &mut SettingsDoc) -> &mut Vec<Self>;
    fn key(&self) -> String;
}

fn normal(key: &str) -> String {
    key.trim().trim_end_matches('.').to_ascii_lowercase()
}

impl Section for RelayDomain {
    const WHAT: &'static str = "relay domain";
    fn list(doc: &mut SettingsDoc) -> &mut Vec<Self> {
        &mut doc.relay_domains
    }
    fn key(&self) -> String {
        normal(&self.domain)
    }
}

impl Section for AuthUserDoc {
    const WHAT: &'static str = "SMTP AUTH user";
    fn list(doc: &mut SettingsDoc) -> &mut Vec<Self> {
        &mut doc.smtp_auth_users
    }
    fn key(&self) -> String {
        self.username.trim().to_string()
    }
}

impl Section for RuleData {
    const WHAT: &'static str = "rule data list";
    fn list(doc: &mut SettingsDoc) -> &mut Vec<Self> {
        &mut doc.rule_data
    }
    fn key(&self) -> String {
        self.name.trim().to_string()
    }
}

impl Section for MessageRule {
    const WHAT: &'static str = "message rule";
    fn list(doc: &mut SettingsDoc) -> &mut Vec<Self> {
        &mut doc.rules
    }
    fn key(&self) -> String {
        self.name.trim().to_string()
    }
}

/// One edit of a list.
#[derive(Debug, Clone)]
pub enum ListChange<T> {
    /// A new item; its key must not be taken.
    Add(T),
    /// The item `key` becomes this one (its key may change).
    Replace {
        key: String,
        item: T,
    },
    Delete(String),
    /// One place towards the top (`up`) or the bottom.
    Move {
        key: String,
        up: bool,
    },
}

fn position<T: Section>(list: &[T], key: &str) -> Result<usize, ApiError> {
    let wanted = if T::WHAT == "relay domain" {
        normal(key)
    } else {
        key.trim().to_string()
    };
    list.iter().position(|i| i.key() == wanted).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no {} {key:?}", T::WHAT),
            None,
        )
    })
}

fn edit<T: Section>(doc: &mut SettingsDoc, change: ListChange<T>) -> Result<(), ApiError> {
    let list = T::list(doc);
    match change {
        // Duplicates are the validator's to refuse, as for every other change.
        ListChange::Add(item) => list.push(item),
        ListChange::Replace { key, item } => {
            let i = position(list, &key)?;
            list[i] = item;
        }
        ListChange::Delete(key) => {
            let i = position(list, &key)?;
            list.remove(i);
        }
        ListChange::Move { key, up } => {
            let i = position(list, &key)?;
            let j = if up { i.checked_sub(1) } else { Some(i + 1) };
            if let Some(j) = j.filter(|j| *j < list.len()) {
                list.swap(i, j);
            }
        }
    }
    Ok(())
}

/// Make `change`, audited as `actor`: the API's and the pages' one path for these lists.
pub(crate) async fn change_list<T: Section>(
    state: &AdminState,
    actor: String,
    change: ListChange<T>,
) -> Result<crate::settings::Changed, ApiError> {
    apply_settings(state, actor, Apply::Yes, move |current| {
        let mut doc = current.to_doc();
        edit(&mut doc, change)?;
        Ok(doc)
    })
    .await
}

/// The list as the document shows it after the change (no secret: the document has none).
fn after<T: Section>(changed: &crate::settings::Changed) -> Vec<T> {
    let mut doc = changed.snapshot.settings.to_doc();
    T::list(&mut doc).clone()
}

pub async fn add<T: Section>(
    State(state): State<AdminState>,
    Json(item): Json<T>,
) -> Result<Json<Vec<T>>, ApiError> {
    let changed = change_list(&state, "api".into(), ListChange::Add(item)).await?;
    Ok(Json(after::<T>(&changed)))
}

pub async fn replace<T: Section>(
    State(state): State<AdminState>,
    Path(key): Path<String>,
    Json(item): Json<T>,
) -> Result<Json<Vec<T>>, ApiError> {
    let changed = change_list(&state, "api".into(), ListChange::Replace { key, item }).await?;
    Ok(Json(after::<T>(&changed)))
}

pub async fn delete<T: Section>(
    State(state): State<AdminState>,
    Path(key): Path<String>,
) -> Result<StatusCode, ApiError> {
    change_list::<T>(&state, "api".into(), ListChange::Delete(key)).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, serde::Deserialize)]
pub struct MoveQuery {
    /// `up` or `down`.
    pub direction: String,
}

pub async fn move_item<T: Section>(
    State(state): State<AdminState>,
    Path(key): Path<String>,
    Query(q): Query<MoveQuery>,
) -> Result<Json<Vec<T>>, ApiError> {
    let up = match q.direction.as_str() {
        "up" => true,
        "down" => false,
        other => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("direction: {other:?}: expected up or down"),
                Some("direction".into()),
            ));
        }
    };
    let changed = change_list::<T>(&state, "api".into(), ListChange::Move { key, up }).await?;
    Ok(Json(after::<T>(&changed)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::{Direction, RuleTls};

    fn rule(name: &str) -> MessageRule {
        MessageRule {
            name: name.into(),
            direction: Direction::Outbound,
            recipient_matches: None,
            recipient_not_matches: None,
            sender_matches: None,
            sender_not_matches: None,
            tls_level: RuleTls::Require,
        }
    }

    #[test]
    fn rules_move_one_place_and_an_unknown_key_is_said() {
        let mut doc = SettingsDoc::default();
        for n in ["a", "b", "c"] {
            edit(&mut doc, ListChange::Add(rule(n))).unwrap();
        }
        edit::<MessageRule>(
            &mut doc,
            ListChange::Move {
                key: "c".into(),
                up: true,
            },
        )
        .unwrap();
        edit::<MessageRule>(
            &mut doc,
            ListChange::Move {
                key: "a".into(),
                up: true,
            },
        )
        .unwrap();
        let names: Vec<&str> = doc.rules.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["a", "c", "b"], "the first cannot go higher");
        edit::<MessageRule>(
            &mut doc,
            ListChange::Move {
                key: "b".into(),
                up: false,
            },
        )
        .unwrap();
        let names: Vec<&str> = doc.rules.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["a", "c", "b"], "nor the last lower");
        let e = edit::<MessageRule>(&mut doc, ListChange::Delete("zz".into())).unwrap_err();
        assert_eq!(e.error, "no message rule \"zz\"");
    }
}
