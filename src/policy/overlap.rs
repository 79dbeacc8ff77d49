//! Message rules that can both match one recipient with different levels: the reference's
//! reason for its "does not match" condition. The first in the order wins; the Rules page
//! warns, so that an admin who meant otherwise sees it before mail does.

use crate::settings::{Direction, MessageRule, RuleData, Settings};

/// Two rules, the earlier one first, and a domain where both match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overlap {
    pub first: String,
    pub second: String,
    /// A recipient domain both accept (`a domain in no list` when that is the witness).
    pub example: String,
}

impl Overlap {
    pub fn describe(&self, settings: &Settings) -> String {
        let level = |name: &str| {
            settings
                .rules
                .iter()
                .find(|r| r.name == name)
                .map_or("?", |r| match r.tls_level {
                    crate::settings::RuleTls::Require => "Require",
                    crate::settings::RuleTls::Try => "Try",
                })
        };
        format!(
            "Rules {:?} ({}) and {:?} ({}) can both match a recipient in {}: the first in the order, {:?}, decides. If that is what you mean, say it with a \"recipient does not match\" condition on {:?}.",
            self.first,
            level(&self.first),
            self.second,
            level(&self.second),
            self.example,
            self.first,
            self.second,
        )
    }
}

/// Lists whose domains cover `domain` (a list entry also covers its subdomains).
fn lists_of<'a>(lists: &'a [RuleData], domain: &str) -> Vec<&'a str> {
    lists
        .iter()
        .filter(|l| {
            l.domains.iter().any(|d| {
                domain == d
                    || domain
                        .strip_suffix(d.as_str())
                        .is_some_and(|p| p.ends_with('.'))
            })
        })
        .map(|l| l.name.as_str())
        .collect()
}

fn accepts(matches: &Option<String>, not_matches: &Option<String>, of: &[&str]) -> bool {
    matches.as_deref().is_none_or(|m| of.contains(&m))
        && not_matches.as_deref().is_none_or(|m| !of.contains(&m))
}

/// A domain (from the lists, or one in no list) that both accept, by `side`'s conditions.
fn witness(
    lists: &[RuleData],
    a: &MessageRule,
    b: &MessageRule,
    side: fn(&MessageRule) -> (&Option<String>, &Option<String>),
) -> Option<String> {
    let candidates = lists
        .iter()
        .flat_map(|l| l.domains.iter().cloned())
        .chain(std::iter::once(String::new()));
    for d in candidates {
        let of = if d.is_empty() {
            Vec::new()
        } else {
            lists_of(lists, &d)
        };
        let (am, an) = side(a);
        let (bm, bn) = side(b);
        if accepts(am, an, &of) && accepts(bm, bn, &of) {
            return Some(if d.is_empty() {
                "a domain in no list".into()
            } else {
                d
            });
        }
    }
    None
}

/// Every pair of rules with different levels that can match the same message.
pub fn overlaps(settings: &Settings) -> Vec<Overlap> {
    let rules = &settings.rules;
    let lists = &settings.rule_data;
    let mut out = Vec::new();
    for (i, a) in rules.iter().enumerate() {
        for b in &rules[i + 1..] {
            let directions = matches!(
                (a.direction, b.direction),
                (Direction::Any, _) | (_, Direction::Any)
            ) || a.direction == b.direction;
            if a.tls_level == b.tls_level || !directions {
                continue;
            }
            let recipient = witness(lists, a, b, |r| {
                (&r.recipient_matches, &r.recipient_not_matches)
            });
            let sender = witness(lists, a, b, |r| (&r.sender_matches, &r.sender_not_matches));
            if let (Some(example), Some(_)) = (recipient, sender) {
                out.push(Overlap {
                    first: a.name.clone(),
                    second: b.name.clone(),
                    example,
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::RuleTls;

    fn rule(name: &str, level: RuleTls, rcpt: Option<&str>, not: Option<&str>) -> MessageRule {
        MessageRule {
            name: name.into(),
            direction: Direction::Outbound,
            recipient_matches: rcpt.map(str::to_string),
            recipient_not_matches: not.map(str::to_string),
            sender_matches: None,
            sender_not_matches: None,
            every_recipient: rcpt.is_none() && not.is_none(),
            tls_level: level,
        }
    }

    fn settings(rules: Vec<MessageRule>) -> Settings {
        let rule_data = vec![
            RuleData {
                name: "partners".into(),
                domains: vec!["partner.example".into()],
            },
            RuleData {
                name: "banks".into(),
                domains: vec!["bank.example".into(), "partner.example".into()],
            },
        ];
        Settings {
            rule_data,
            rules,
            ..Settings::default()
        }
    }

    #[test]
    fn the_reference_case_warns_until_does_not_match_says_it() {
        let s = settings(vec![
            rule("require partners", RuleTls::Require, Some("partners"), None),
            rule("try everyone", RuleTls::Try, None, None),
        ]);
        let o = overlaps(&s);
        assert_eq!(o.len(), 1);
        assert_eq!(o[0].example, "partner.example");
        assert!(o[0].describe(&s).starts_with(
            "Rules \"require partners\" (Require) and \"try everyone\" (Try) can both match a recipient in partner.example"
        ));
        let s = settings(vec![
            rule("require partners", RuleTls::Require, Some("partners"), None),
            rule("try the rest", RuleTls::Try, None, Some("partners")),
        ]);
        assert_eq!(overlaps(&s), Vec::new());
    }

    #[test]
    fn lists_that_share_a_domain_overlap_and_same_levels_never_warn() {
        let s = settings(vec![
            rule("banks try", RuleTls::Try, Some("banks"), None),
            rule("partners require", RuleTls::Require, Some("partners"), None),
        ]);
        assert_eq!(overlaps(&s)[0].example, "partner.example");
        let s = settings(vec![
            rule("a", RuleTls::Require, Some("banks"), None),
            rule("b", RuleTls::Require, None, None),
        ]);
        assert!(overlaps(&s).is_empty());
    }
}
