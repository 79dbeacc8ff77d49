//! `rule_data` and `rules`: named domain lists, and the ordered message rules that use them.

use crate::next_hop::is_domain_name;
use crate::settings::{MessageRule, RuleData};

use super::{FieldError, field_error};

pub fn check_rule_data(lists: &[RuleData]) -> Result<Vec<RuleData>, FieldError> {
    let mut out: Vec<RuleData> = Vec::with_capacity(lists.len());
    for (i, list) in lists.iter().enumerate() {
        let name = list.name.trim();
        if name.is_empty() {
            return Err(field_error(
                format!("rule_data[{i}].name"),
                "must not be empty",
            ));
        }
        if out.iter().any(|o| o.name == name) {
            return Err(field_error(
                format!("rule_data[{i}].name"),
                format!("duplicate list {name:?}"),
            ));
        }
        let mut domains = Vec::with_capacity(list.domains.len());
        for (k, d) in list.domains.iter().enumerate() {
            let d = d.trim().trim_end_matches('.').to_ascii_lowercase();
            if !is_domain_name(&d) {
                return Err(field_error(
                    format!("rule_data[{i}].domains[{k}]"),
                    format!("{d:?} is not a domain name"),
                ));
            }
            domains.push(d);
        }
        out.push(RuleData {
            name: name.to_string(),
            domains,
        });
    }
    Ok(out)
}

pub fn check_rules(
    rules: &[MessageRule],
    lists: &[RuleData],
) -> Result<Vec<MessageRule>, FieldError> {
    for (i, rule) in rules.iter().enumerate() {
        if rule.name.trim().is_empty() {
            return Err(field_error(format!("rules[{i}].name"), "must not be empty"));
        }
        // Rules are moved, edited and named in delivery records by their name.
        if rules[..i].iter().any(|r| r.name.trim() == rule.name.trim()) {
            return Err(field_error(
                format!("rules[{i}].name"),
                format!("duplicate rule {:?}", rule.name.trim()),
            ));
        }
        for (field, list) in [
            ("recipient_matches", &rule.recipient_matches),
            ("recipient_not_matches", &rule.recipient_not_matches),
            ("sender_matches", &rule.sender_matches),
            ("sender_not_matches", &rule.sender_not_matches),
        ] {
            if let Some(name) = list
                && !lists.iter().any(|l| l.name.trim() == name.trim())
            {
                return Err(field_error(
                    format!("rules[{i}].{field}"),
                    format!("no rule data named {name:?}"),
                ));
            }
        }
        check_reach(i, rule)?;
    }
    Ok(rules.to_vec())
}

/// A rule needs a condition, or the explicit choice of every recipient: a rule saved with
/// none used to apply to all mail of its direction without anyone having asked for that.
fn check_reach(i: usize, rule: &MessageRule) -> Result<(), FieldError> {
    let name = rule.name.trim();
    let error = match (rule.has_condition(), rule.every_recipient) {
        (false, false) => format!(
            "rule {name:?} has no condition, so it would apply to every recipient: give it a \
             condition (recipient_matches, recipient_not_matches, sender_matches or \
             sender_not_matches), or set every_recipient to true to apply it to every recipient"
        ),
        (true, true) => format!(
            "rule {name:?} has conditions and every_recipient set: remove the conditions, or \
             set every_recipient to false to apply it only where they hold"
        ),
        _ => return Ok(()),
    };
    Err(field_error(format!("rules[{i}].every_recipient"), error))
}

#[cfg(test)]
mod tests {
    use super::super::support::{FakeHasher, doc};
    use crate::settings::*;

    #[test]
    fn rules_reference_existing_lists() {
        let bad = doc(
            "[[rules]]\nname = \"r\"\nrecipient_matches = \"missing\"\ntls_level = \"require\"",
        );
        assert_eq!(
            Settings::default()
                .apply(&bad, &FakeHasher)
                .unwrap_err()
                .field,
            "rules[0].recipient_matches"
        );
        let bad = doc("[[rule_data]]\nname = \"l\"\ndomains = [\"ok.example\", \"bad domain\"]");
        assert_eq!(
            Settings::default()
                .apply(&bad, &FakeHasher)
                .unwrap_err()
                .field,
            "rule_data[0].domains[1]"
        );
        let ok = doc(
            "[[rule_data]]\nname = \"l\"\ndomains = [\"OK.example\"]\n[[rules]]\nname = \"r\"\nsender_not_matches = \"l\"\ntls_level = \"try\"",
        );
        let s = Settings::default().apply(&ok, &FakeHasher).unwrap();
        assert_eq!(s.rule_data[0].domains, vec!["ok.example"]);
    }

    #[test]
    fn a_rule_needs_a_condition_or_every_recipient_chosen() {
        let apply = |text: &str| Settings::default().apply(&doc(text), &FakeHasher);
        let none = apply("[[rules]]\nname = \"r\"\ntls_level = \"require\"").unwrap_err();
        assert_eq!(none.field, "rules[0].every_recipient");
        assert!(none.error.contains("has no condition"), "{none}");
        let every = apply("[[rules]]\nname = \"r\"\nevery_recipient = true\ntls_level = \"try\"");
        assert!(every.unwrap().rules[0].every_recipient);
        let both = apply(
            "[[rule_data]]\nname = \"l\"\ndomains = [\"a.example\"]\n[[rules]]\nname = \"r\"\nrecipient_matches = \"l\"\nevery_recipient = true\ntls_level = \"try\"",
        )
        .unwrap_err();
        assert_eq!(both.field, "rules[0].every_recipient");
        assert!(both.error.contains("has conditions"), "{both}");
    }

    #[test]
    fn a_stored_rule_without_conditions_is_read_as_every_recipient() {
        // As a version stored before `every_recipient` existed keeps it.
        let mut stored = serde_json::to_value(Settings::default()).unwrap();
        stored["rules"] = serde_json::json!([{"name": "old", "tls_level": "require"}]);
        let s: Settings = serde_json::from_value(stored).unwrap();
        assert!(s.rules[0].every_recipient);
        // So any later change, which validates the whole document, still goes through.
        assert!(s.apply(&s.to_doc(), &FakeHasher).is_ok());
    }
}
