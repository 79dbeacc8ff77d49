pub mod config;
pub mod fsutil;
pub mod proto;
pub mod settings;
pub mod spool;
pub mod tls;
