//! The settings' lists one item at a time, for the API and the pages alike: relay domains
//! (`/api/v1/relay-domains`), SMTP AUTH users (`/api/v1/users`), rule data
//! (`/api/v1/rule-data`), message rules (`/api/v1/rules`, which also move up and down:
//! their order decides) and inbound TLS rows (`/api/v1/inbound-tls`). Each edit is one
//! `apply_settings` change, validated whole.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{AdminState, ApiError, apply_settings};
use crate::settings::{
    Apply, AuthUserDoc, InboundTlsRow, MessageRule, RelayDomain, RuleData, SettingsDoc,
};

/// A list of the settings document whose items have a key.
pub trait Section: Clone + Serialize + DeserializeOwned + Send + Sync + 'static {
    /// "relay domain", for messages.
    const WHAT: &'static str;
    fn list(doc: &mut SettingsDoc) -> &mut Vec<Self>;
    fn key(&self) -> String;
    /// A key as a request gives it, in the form `key` returns.
    fn wanted(key: &str) -> String {
        key.trim().to_string()
    }
    /// What else in `doc` uses the item `key`, in words: its delete is refused while any does.
    fn used_by(_doc: &SettingsDoc, _key: &str) -> Vec<String> {
        Vec::new()
    }
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
    fn wanted(key: &str) -> String {
        normal(key)
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
    fn used_by(doc: &SettingsDoc, key: &str) -> Vec<String> {
        rules_using(&doc.rules, key)
            .into_iter()
            .map(|(rule, condition)| format!("rule {:?} ({condition})", rule.name))
            .collect()
    }
}

/// The rules whose conditions name the rule data list `list`, each with the condition that
/// does: a list they use cannot go (the rule would name nothing).
pub fn rules_using<'a>(
    rules: &'a [MessageRule],
    list: &str,
) -> Vec<(&'a MessageRule, &'static str)> {
    let mut out = Vec::new();
    for rule in rules {
        for (condition, named) in [
            ("recipient matches", &rule.recipient_matches),
            ("recipient does not match", &rule.recipient_not_matches),
            ("sender matches", &rule.sender_matches),
            ("sender does not match", &rule.sender_not_matches),
        ] {
            if named.as_deref().map(str::trim) == Some(list.trim()) {
                out.push((rule, condition));
            }
        }
    }
    out
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

impl Section for InboundTlsRow {
    const WHAT: &'static str = "inbound TLS row";
    fn list(doc: &mut SettingsDoc) -> &mut Vec<Self> {
        &mut doc.inbound_tls
    }
    /// As stored: `Partner.Example.` in a URL finds the row `partner.example`.
    fn key(&self) -> String {
        normal(&self.pattern)
    }
    fn wanted(key: &str) -> String {
        normal(key)
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
    let wanted = T::wanted(key);
    list.iter().position(|i| i.key() == wanted).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no {} {key:?}", T::WHAT),
            None,
        )
    })
}

fn edit<T: Section>(doc: &mut SettingsDoc, change: ListChange<T>) -> Result<(), ApiError> {
    if let ListChange::Delete(key) = &change {
        refuse_in_use::<T>(doc, key)?;
    }
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

/// A delete of an item something else uses is refused, naming what (409: the settings'
/// state, not the request, is in the way).
fn refuse_in_use<T: Section>(doc: &mut SettingsDoc, key: &str) -> Result<(), ApiError> {
    let i = position(T::list(doc), key)?;
    let key = T::list(doc)[i].key();
    let users = T::used_by(doc, &key);
    if users.is_empty() {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::CONFLICT,
        format!(
            "{} {key:?} is in use by {}: change or delete {} first",
            T::WHAT,
            users.join(", "),
            if users.len() == 1 { "it" } else { "them" }
        ),
        None,
    ))
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

/// Validate `change` as `change_list` would make it, and make nothing: what a page checks
/// before it asks the admin to confirm.
pub(crate) async fn check_list<T: Section>(
    state: &AdminState,
    actor: String,
    change: ListChange<T>,
) -> Result<(), ApiError> {
    proposed_list(state, actor, change).await.map(|_| ())
}

/// `check_list` with the settings the change would make (validated, normalised, unsaved):
/// what a Test reads its figures from.
pub(crate) async fn proposed_list<T: Section>(
    state: &AdminState,
    actor: String,
    change: ListChange<T>,
) -> Result<crate::settings::Changed, ApiError> {
    apply_settings(state, actor, Apply::No, move |current| {
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
            every_recipient: true,
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

    #[test]
    fn a_list_in_use_is_not_deleted_and_its_rules_are_named() {
        let mut doc = SettingsDoc::default();
        let list = |name: &str| RuleData {
            name: name.into(),
            domains: vec!["partner.example".into()],
        };
        edit(&mut doc, ListChange::Add(list("partners"))).unwrap();
        edit(&mut doc, ListChange::Add(list("spare"))).unwrap();
        for (name, condition) in [("a", 0), ("b", 3)] {
            let mut r = rule(name);
            let slot = [
                &mut r.recipient_matches,
                &mut r.recipient_not_matches,
                &mut r.sender_matches,
                &mut r.sender_not_matches,
            ];
            *slot.into_iter().nth(condition).unwrap() = Some("partners".into());
            edit(&mut doc, ListChange::Add(r)).unwrap();
        }
        let e = edit::<RuleData>(&mut doc, ListChange::Delete("partners".into())).unwrap_err();
        assert_eq!(
            e.error,
            "rule data list \"partners\" is in use by rule \"a\" (recipient matches), rule \"b\" (sender does not match): change or delete them first"
        );
        assert_eq!(doc.rule_data.len(), 2, "nothing deleted");
        edit::<RuleData>(&mut doc, ListChange::Delete("spare".into())).unwrap();
        assert_eq!(doc.rule_data.len(), 1);
    }
}
