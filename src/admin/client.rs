//! The control API's client, where the command line and the tests have always found it: it
//! lives with the node-to-node client in `crate::cluster::client` (issue 30).

pub use crate::cluster::client::{ApiClient, ClientError, served_cert_path};
