//! TLS-RPT (RFC 8460) aggregate reports as data: each delivery attempt's outcome counted
//! per policy domain and policy type, and the day's report in the RFC's JSON (section 4.4).
//! Pure: the counts come from the delivery records, sending is the caller's (issue 18).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The policy an attempt was made under (section 4.4, `policy-type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PolicyType {
    Sts,
    Tlsa,
    NoPolicyFound,
}

/// Why a session failed (section 4.3), as the RFC spells them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ResultType {
    StarttlsNotSupported,
    CertificateHostMismatch,
    CertificateExpired,
    CertificateNotTrusted,
    ValidationFailure,
    TlsaInvalid,
    DnssecInvalid,
    DaneRequired,
    StsPolicyFetchError,
    StsPolicyInvalid,
    StsWebpkiInvalid,
}

/// What one delivery attempt counts for in TLS-RPT, kept on its delivery record: the day's
/// report is the sum of these.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RptOutcome {
    pub policy_type: PolicyType,
    pub policy_domain: String,
    /// `None`: a successful session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_type: Option<ResultType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receiving_mx_hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receiving_ip: Option<String>,
}

/// One failed session's facts (a `failure-details` entry groups equal ones).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Failure {
    pub result_type: ResultType,
    pub sending_mta_ip: Option<String>,
    pub receiving_mx_hostname: Option<String>,
    pub receiving_ip: Option<String>,
}

#[derive(Debug, Default)]
struct Counts {
    policy_strings: Vec<String>,
    mx_hosts: Vec<String>,
    successful: u64,
    failed: BTreeMap<Failure, u64>,
}

/// A day's counts, per (policy domain, policy type).
#[derive(Debug, Default)]
pub struct Aggregate {
    policies: BTreeMap<(String, PolicyType), Counts>,
}

impl Aggregate {
    /// The policy as published, for the report (the STS policy's lines, or the TLSA records
    /// in presentation form) and its `mx` patterns; the first seen is kept.
    pub fn policy(&mut self, domain: &str, kind: PolicyType, strings: &[String], mx: &[String]) {
        let c = self.counts(domain, kind);
        if c.policy_strings.is_empty() {
            c.policy_strings = strings.to_vec();
        }
        if c.mx_hosts.is_empty() {
            c.mx_hosts = mx.to_vec();
        }
    }

    pub fn success(&mut self, domain: &str, kind: PolicyType) {
        self.counts(domain, kind).successful += 1;
    }

    pub fn failure(&mut self, domain: &str, kind: PolicyType, failure: Failure) {
        *self.counts(domain, kind).failed.entry(failure).or_default() += 1;
    }

    /// `n` attempts with the same outcome, as the day's counters hold them.
    pub fn add(&mut self, o: &RptOutcome, n: u64) {
        let c = self.counts(&o.policy_domain, o.policy_type);
        match o.result_type {
            None => c.successful += n,
            Some(result_type) => {
                let f = Failure {
                    result_type,
                    sending_mta_ip: None,
                    receiving_mx_hostname: o.receiving_mx_hostname.clone(),
                    receiving_ip: o.receiving_ip.clone(),
                };
                *c.failed.entry(f).or_default() += n;
            }
        }
    }

    /// The policy domains counted, each once.
    pub fn domains(&self) -> Vec<String> {
        let mut d: Vec<String> = self.policies.keys().map(|(d, _)| d.clone()).collect();
        d.dedup();
        d
    }

    fn counts(&mut self, domain: &str, kind: PolicyType) -> &mut Counts {
        self.policies
            .entry((domain.to_ascii_lowercase(), kind))
            .or_default()
    }

    /// The report for the policy domain `domain` (the one whose `rua` receives it), for the
    /// span `about` names (RFC 3339 times, e.g. a UTC day); `None` when nothing was counted.
    pub fn report(&self, domain: &str, about: &ReportAbout<'_>) -> Option<Report> {
        let domain = domain.to_ascii_lowercase();
        let policies: Vec<PolicyReport> = self
            .policies
            .iter()
            .filter(|((d, _), _)| *d == domain)
            .map(|((d, kind), c)| PolicyReport {
                policy: PolicyDesc {
                    policy_type: *kind,
                    policy_string: c.policy_strings.clone(),
                    policy_domain: d.clone(),
                    mx_host: c.mx_hosts.clone(),
                },
                summary: Summary {
                    total_successful_session_count: c.successful,
                    total_failure_session_count: c.failed.values().sum(),
                },
                failure_details: c
                    .failed
                    .iter()
                    .map(|(f, n)| FailureDetail {
                        result_type: f.result_type,
                        sending_mta_ip: f.sending_mta_ip.clone(),
                        receiving_mx_hostname: f.receiving_mx_hostname.clone(),
                        receiving_ip: f.receiving_ip.clone(),
                        failed_session_count: *n,
                    })
                    .collect(),
            })
            .collect();
        (!policies.is_empty()).then(|| Report {
            organization_name: about.organization.to_string(),
            date_range: DateRange {
                start_datetime: about.start.to_string(),
                end_datetime: about.end.to_string(),
            },
            contact_info: about.contact.to_string(),
            report_id: format!("{}.{domain}@{}", about.start, about.organization),
            policies,
        })
    }
}

/// Where a domain wants its reports (section 3, `rua`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rua {
    Mailto(String),
    Https(String),
}

/// As the record writes it: `mailto:reports@example.com`, `https://...`.
impl std::fmt::Display for Rua {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rua::Mailto(to) => write!(f, "mailto:{to}"),
            Rua::Https(url) => f.write_str(url),
        }
    }
}

/// The `_smtp._tls.<domain>` TXT record (section 3): the one record starting with
/// `v=TLSRPTv1;`, its `rua` URIs, comma-separated; unknown schemes are skipped, as are
/// extension fields. `Ok(None)`: no record (or several: none counts).
pub fn parse_record(txt: &[String]) -> Result<Option<Vec<Rua>>, String> {
    let ours: Vec<&String> = txt
        .iter()
        .filter(|t| {
            t.trim_start()
                .strip_prefix("v=TLSRPTv1")
                .is_some_and(|rest| rest.trim_start().starts_with(';'))
        })
        .collect();
    let [record] = ours.as_slice() else {
        return Ok(None);
    };
    let rua = record
        .split(';')
        .filter_map(|f| f.trim().split_once('='))
        .find(|(k, _)| k.trim() == "rua")
        .map(|(_, v)| v)
        .ok_or("TLS-RPT record without rua")?;
    let uris: Vec<Rua> = rua
        .split(',')
        .map(str::trim)
        .filter_map(|u| {
            if let Some(to) = u.strip_prefix("mailto:") {
                // Section 3: the address may carry %-escapes (a ',' is %2C, ';' is %3B).
                Some(Rua::Mailto(to.replace("%2C", ",").replace("%3B", ";")))
            } else if u.starts_with("https://") {
                Some(Rua::Https(u.to_string()))
            } else {
                None
            }
        })
        .collect();
    if uris.is_empty() {
        return Err(format!("rua {rua:?} names no mailto: or https: address"));
    }
    Ok(Some(uris))
}

/// Who reports, and for which span of time.
pub struct ReportAbout<'a> {
    pub organization: &'a str,
    pub contact: &'a str,
    pub start: &'a str,
    pub end: &'a str,
}

/// Section 4.4's JSON.
#[derive(Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Report {
    pub organization_name: String,
    pub date_range: DateRange,
    pub contact_info: String,
    pub report_id: String,
    pub policies: Vec<PolicyReport>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct DateRange {
    pub start_datetime: String,
    pub end_datetime: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct PolicyReport {
    pub policy: PolicyDesc,
    pub summary: Summary,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub failure_details: Vec<FailureDetail>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct PolicyDesc {
    pub policy_type: PolicyType,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub policy_string: Vec<String>,
    pub policy_domain: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub mx_host: Vec<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Summary {
    pub total_successful_session_count: u64,
    pub total_failure_session_count: u64,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct FailureDetail {
    pub result_type: ResultType,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sending_mta_ip: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub receiving_mx_hostname: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub receiving_ip: Option<String>,
    pub failed_session_count: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rua_record() {
        let txt = |s: &[&str]| s.iter().map(|t| t.to_string()).collect::<Vec<_>>();
        assert_eq!(
            parse_record(&txt(&[
                "v=spf1 -all",
                "v=TLSRPTv1; rua=mailto:reports@example.com, https://reporting.example.com/v1/tlsrpt"
            ]))
            .unwrap(),
            Some(vec![
                Rua::Mailto("reports@example.com".into()),
                Rua::Https("https://reporting.example.com/v1/tlsrpt".into())
            ])
        );
        assert_eq!(parse_record(&txt(&["v=spf1 -all"])).unwrap(), None);
        assert!(parse_record(&txt(&["v=TLSRPTv1;"])).is_err());
        assert!(parse_record(&txt(&["v=TLSRPTv1; rua=ftp://x"])).is_err());
        assert_eq!(
            parse_record(&txt(&["v=TLSRPTv1; rua=mailto:a%2Cb@example.com"])).unwrap(),
            Some(vec![Rua::Mailto("a,b@example.com".into())])
        );
    }

    fn failure(kind: ResultType, mx: &str) -> Failure {
        Failure {
            result_type: kind,
            sending_mta_ip: Some("192.0.2.10".into()),
            receiving_mx_hostname: Some(mx.into()),
            receiving_ip: Some("203.0.113.5".into()),
        }
    }

    /// A day of mixed outcomes: the counts add up and the JSON has the RFC's names.
    #[test]
    fn a_day_of_outcomes_in_the_rfcs_json() {
        let mut day = Aggregate::default();
        let sts = ["version: STSv1".to_string(), "mode: enforce".to_string()];
        day.policy(
            "Company-Y.example",
            PolicyType::Sts,
            &sts,
            &["*.mail.company-y.example".to_string()],
        );
        for _ in 0..5326 {
            day.success("company-y.example", PolicyType::Sts);
        }
        for _ in 0..200 {
            day.failure(
                "company-y.example",
                PolicyType::Sts,
                failure(ResultType::CertificateExpired, "mx1.mail.company-y.example"),
            );
        }
        day.failure(
            "company-y.example",
            PolicyType::Sts,
            failure(
                ResultType::StarttlsNotSupported,
                "mx2.mail.company-y.example",
            ),
        );
        day.success("other.example", PolicyType::NoPolicyFound);
        let about = ReportAbout {
            organization: "mx.sender.example",
            contact: "mailto:postmaster@sender.example",
            start: "2026-12-01T00:00:00Z",
            end: "2026-12-01T23:59:59Z",
        };
        let report = day.report("company-y.example", &about).unwrap();
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["date-range"]["start-datetime"], "2026-12-01T00:00:00Z");
        let policies = json["policies"].as_array().unwrap();
        assert_eq!(policies.len(), 1, "only this domain's policies");
        let p = &policies[0];
        assert_eq!(p["policy"]["policy-type"], "sts");
        assert_eq!(p["policy"]["policy-domain"], "company-y.example");
        assert_eq!(p["policy"]["mx-host"][0], "*.mail.company-y.example");
        assert_eq!(p["summary"]["total-successful-session-count"], 5326);
        assert_eq!(p["summary"]["total-failure-session-count"], 201);
        let details = p["failure-details"].as_array().unwrap();
        assert_eq!(details[0]["result-type"], "starttls-not-supported");
        assert_eq!(details[1]["result-type"], "certificate-expired");
        assert_eq!(details[1]["failed-session-count"], 200);
        assert_eq!(
            details[1]["receiving-mx-hostname"],
            "mx1.mail.company-y.example"
        );
        let other = day.report("other.example", &about).unwrap();
        let other = serde_json::to_value(&other).unwrap();
        assert_eq!(
            other["policies"][0]["policy"]["policy-type"],
            "no-policy-found"
        );
        assert!(other["policies"][0].get("failure-details").is_none());
        assert!(day.report("nobody.example", &about).is_none());
    }
}
