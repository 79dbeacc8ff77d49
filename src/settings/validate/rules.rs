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
    }
    Ok(rules.to_vec())
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
}
