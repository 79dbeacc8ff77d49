//! master.cf: only its `smtpd` services' `-o` overrides matter to an import.

use std::path::Path;

use super::{ImportError, Imported};

/// master.cf's `-o` overrides: postern has one SMTP listener, whose settings are main.cf's;
/// an override is named so that nothing changes silently.
pub(super) fn master(dir: &Path, out: &mut Imported) -> Result<(), ImportError> {
    let path = dir.join("master.cf");
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(());
    };
    let services = crate::postfix::conf::master_cf(&text)
        .map_err(|e| ImportError(format!("{}: {e}", path.display())))?;
    for s in services.iter().filter(|s| s.command == "smtpd") {
        for (k, v) in &s.overrides {
            let security = k.starts_with("smtpd_tls_")
                || k.starts_with("smtpd_sasl_")
                || k.ends_with("_restrictions");
            out.dropped(
                &format!("master.cf {} -o {k}", s.name),
                format!("{v:?}: postern has one SMTP listener, configured by main.cf's values"),
                security,
            );
        }
    }
    Ok(())
}
