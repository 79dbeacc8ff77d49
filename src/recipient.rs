//! Recipient verification by call-ahead (Postfix's reject_unverified_recipient): for a relay
//! domain that asks for it, RCPT is answered only once the domain's next hop has said whether
//! it takes the address. A leaf both sides import downwards: the SMTP session asks through
//! this seam, the delivery engine (outbound/call_ahead.rs) answers it, and lib.rs joins them,
//! so inbound and outbound still meet only in the spool and the records.

use std::future::Future;
use std::pin::Pin;

/// What the next hop said of a recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Exists,
    /// Refused with a 5xx: the reason quotes the next hop.
    Unknown(String),
    /// Could not be asked, or a 4xx: try again later.
    Unverified(String),
}

pub trait RecipientVerifier: Send + Sync {
    fn verify<'a>(&'a self, rcpt: &'a str) -> Pin<Box<dyn Future<Output = Verdict> + Send + 'a>>;
}
