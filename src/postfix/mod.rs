//! Reading a Postfix gateway's configuration (issue 19, `postern import-postfix`): its
//! files as Postfix reads them. `conf`: main.cf and master.cf; `maps`: the lookup tables
//! they name, from their text sources.

pub mod conf;
pub mod import;
pub mod maps;
