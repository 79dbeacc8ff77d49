//! The chain of `chain.rs` as the shared database keeps it: the head read and judged in every
//! read, locked and judged in every write, the rows and audit entries checked against it, the
//! head this node holds kept in its copy of the settings, and the upgrade of a database sealed
//! before the chain. What is refused is said once in the log and shown on every page
//! (`Health`) until the database holds what this node expects again.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use super::Settings;
use super::chain::{self, AuditRecord, Head, Trusted, Verdict, digest, hex};
use super::sealer::Sealer;
use super::store::{AuditEntry, StoreError};

/// The head's associated data. Not `settings`, which sealed the bare document before the
/// chain: an old head cannot pass for a new one.
const HEAD_AAD: &str = "settings-head";
pub(super) const ADMINS: &str = "postern_admin_users";
pub(super) const CERTS: &str = "postern_certificates";

/// Why a job failed: the connection or SQL (the database is away), or the store's own answer.
pub(super) enum Fail {
    Pg(postgres::Error),
    Store(StoreError),
}

impl From<postgres::Error> for Fail {
    fn from(e: postgres::Error) -> Fail {
        Fail::Pg(e)
    }
}

impl From<StoreError> for Fail {
    fn from(e: StoreError) -> Fail {
        Fail::Store(e)
    }
}

impl From<serde_json::Error> for Fail {
    fn from(e: serde_json::Error) -> Fail {
        Fail::Store(e.into())
    }
}

/// A node's view of the shared store, for its pages and metrics.
#[derive(Debug, Default)]
pub struct Health {
    /// Why the database cannot be reached now; `None` while it can.
    pub down: Mutex<Option<String>>,
    /// What this node refuses of what the database holds, by what it is (`head`, a table,
    /// `audit`): each said once when it starts and when it ends.
    refused: Mutex<BTreeMap<&'static str, String>>,
}

impl Health {
    /// Everything refused now, in one line; `None` when nothing is.
    pub fn refused(&self) -> Option<String> {
        let refused = self.refused.lock().unwrap_or_else(|e| e.into_inner());
        (!refused.is_empty()).then(|| refused.values().cloned().collect::<Vec<_>>().join("; "))
    }

    pub(super) fn refuse(&self, what: &'static str, why: Option<String>) {
        let mut refused = self.refused.lock().unwrap_or_else(|e| e.into_inner());
        match why {
            Some(why) if refused.get(what) != Some(&why) => {
                let then = match what {
                    "head" => {
                        "relaying on the settings in force; changes are refused until the database holds a version that follows them"
                    }
                    "audit" => "the audit log is shown down to there",
                    _ => "that row is not used",
                };
                tracing::warn!(target: "postern/master", "warning: settings database: {why}: refused (written without the settings key?); {then}");
                refused.insert(what, why);
            }
            None if refused.remove(what).is_some() => {
                let label = if what == "head" {
                    "the settings row"
                } else {
                    what
                };
                tracing::info!(target: "postern/master", "settings database: {label} as this node expects again: no longer refused");
            }
            _ => {}
        }
    }
}

/// What every job of the settings store needs besides its connection; jobs run one at a
/// time on the store's connection thread, so the head held changes in one order.
#[derive(Clone)]
pub(super) struct Ctx {
    pub sealer: Arc<Sealer>,
    held: Arc<Mutex<Option<Arc<Trusted>>>>,
    pub health: Arc<Health>,
    /// This node's copy of the settings it last applied (0600), with the head it holds.
    pub cache: PathBuf,
}

/// The copy as written: what `remembered` needs to start on, and the head held.
#[derive(serde::Serialize, serde::Deserialize)]
struct Copy {
    version: u64,
    settings: Settings,
    /// Absent in a copy written before the chain.
    #[serde(default)]
    held: Option<(chain::Links, String)>,
}

impl Ctx {
    /// The head held is the one the copy names, if any: a restart does not forget it.
    pub fn new(sealer: Sealer, cache: PathBuf) -> Ctx {
        let held = read_copy(&cache).and_then(|c| {
            let (links, digest) = c.held?;
            let head = Head {
                version: c.version,
                settings: c.settings,
                links,
            };
            Some(Arc::new(Trusted { head, digest }))
        });
        Ctx {
            sealer: Arc::new(sealer),
            held: Arc::new(Mutex::new(held)),
            health: Arc::new(Health::default()),
            cache,
        }
    }

    pub fn held(&self) -> Option<Arc<Trusted>> {
        self.held.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// `trusted` held from now on, and kept in the copy.
    pub fn adopt(&self, trusted: Trusted) -> Arc<Trusted> {
        let trusted = Arc::new(trusted);
        *self.held.lock().unwrap_or_else(|e| e.into_inner()) = Some(trusted.clone());
        let copy = Copy {
            version: trusted.head.version,
            settings: trusted.head.settings.clone(),
            held: Some((trusted.head.links.clone(), trusted.digest.clone())),
        };
        let written = serde_json::to_vec(&copy)
            .map_err(std::io::Error::other)
            .and_then(|b| crate::fsutil::replace_file(&self.cache, &b));
        if let Err(e) = written {
            tracing::warn!(target: "postern/master", "warning: {}: cannot keep the copy of the settings: {e}", self.cache.display());
        }
        trusted
    }

    /// The settings and version the copy holds, to start on while the database is away.
    pub fn remembered(&self) -> Option<(Settings, u64)> {
        read_copy(&self.cache).map(|c| (c.settings, c.version))
    }

    fn open_head(&self, sealed: &[u8]) -> Result<Head, StoreError> {
        Ok(serde_json::from_slice(
            &self.sealer.open(HEAD_AAD, sealed)?,
        )?)
    }

    /// `sealed` as a head that may replace the one held: the head, or why not. One that does
    /// not open is an error while nothing is held (a wrong key), and refused otherwise.
    fn judged(&self, sealed: &[u8]) -> Result<Result<Trusted, String>, StoreError> {
        let held = self.held();
        let head = match self.open_head(sealed) {
            Ok(head) => head,
            Err(e) if held.is_some() => return Ok(Err(e.to_string())),
            Err(e) => return Err(e),
        };
        let digest = digest(sealed);
        Ok(match chain::judge(held.as_deref(), &head, &digest) {
            Verdict::Same | Verdict::Follows => Ok(Trusted { head, digest }),
            Verdict::Refused(why) => Err(why),
        })
    }

    fn gone(held: &Trusted) -> String {
        format!(
            "the settings row is gone, while this node holds generation {} (settings version {})",
            held.head.links.generation, held.head.version
        )
    }

    /// In a read: the head, judged; one that follows the held one is taken. Returns the head
    /// the other rows are checked against: the one held after this look.
    pub fn look(&self, tx: &mut postgres::Transaction<'_>) -> Result<Option<Arc<Trusted>>, Fail> {
        let held = self.held();
        let row = tx.query_opt("SELECT sha256(sealed) FROM postern_settings_current", &[])?;
        let Some(row) = row else {
            self.health.refuse("head", held.as_deref().map(Ctx::gone));
            return Ok(held);
        };
        if held.as_ref().is_some_and(|h| hex(row.get(0)) == h.digest) {
            self.health.refuse("head", None);
            return Ok(held);
        }
        let sealed: Vec<u8> = tx
            .query_one("SELECT sealed FROM postern_settings_current", &[])?
            .get(0);
        match self.judged(&sealed)? {
            Ok(trusted) => {
                self.health.refuse("head", None);
                Ok(Some(self.adopt(trusted)))
            }
            Err(why) => {
                self.health.refuse("head", Some(why));
                Ok(held)
            }
        }
    }

    /// In a write, under the head row's lock: the head stored, judged. One this node refuses
    /// refuses the write: nothing is written on top of a head put back.
    pub fn lock_head(&self, tx: &mut postgres::Transaction<'_>) -> Result<Option<Trusted>, Fail> {
        let row = tx.query_opt(
            "SELECT sealed FROM postern_settings_current FOR UPDATE",
            &[],
        )?;
        let judged = match row {
            Some(row) => self.judged(row.get(0))?,
            None => match self.held() {
                Some(held) => Err(Ctx::gone(&held)),
                None => return Ok(None),
            },
        };
        judged.map(Some).map_err(|why| {
            self.health.refuse("head", Some(why.clone()));
            Fail::Store(StoreError::Refused(why))
        })
    }

    /// Seal and store `head` in `tx`, with a notification to the other nodes (sent at commit).
    /// The caller adopts what this returns once the commit succeeded.
    pub fn store_head(
        &self,
        tx: &mut postgres::Transaction<'_>,
        head: Head,
    ) -> Result<Trusted, Fail> {
        let sealed = self.sealer.seal(HEAD_AAD, &serde_json::to_vec(&head)?);
        tx.execute(
            "INSERT INTO postern_settings_current (id, seq, sealed) VALUES (1, $1, $2) ON CONFLICT (id) DO UPDATE SET seq = EXCLUDED.seq, sealed = EXCLUDED.sealed",
            &[&(head.version as i64), &sealed],
        )?;
        tx.execute(
            &format!("NOTIFY postern_settings, '{}'", head.links.generation),
            &[],
        )?;
        Ok(Trusted {
            digest: digest(&sealed),
            head,
        })
    }

    /// The rows of `table` as `trusted` names them, (name, sealed bytes; with `fetch` only,
    /// else empty); the others are refused, and said. None without a head to check against.
    pub fn checked(
        &self,
        tx: &mut postgres::Transaction<'_>,
        table: &'static str,
        trusted: Option<&Trusted>,
        fetch: bool,
    ) -> Result<Vec<(String, Vec<u8>)>, Fail> {
        let sql = format!(
            "SELECT name, sha256(sealed), CASE WHEN $1 THEN sealed END FROM {table} ORDER BY name"
        );
        let rows = tx.query(&sql, &[&fetch])?;
        let Some(trusted) = trusted else {
            return Ok(Vec::new());
        };
        let found: Vec<(String, String)> = rows.iter().map(|r| (r.get(0), hex(r.get(1)))).collect();
        let (good, wrong) = chain::check_rows(&trusted.head.links, table, &found);
        self.health
            .refuse(table, (!wrong.is_empty()).then(|| wrong.join("; ")));
        Ok(good
            .into_iter()
            .map(|i| {
                let sealed: Option<Vec<u8>> = rows[i].get(2);
                (found[i].0.clone(), sealed.unwrap_or_default())
            })
            .collect())
    }

    /// The rows of `table` as `trusted` names them, opened.
    pub fn rows<T: serde::de::DeserializeOwned>(
        &self,
        tx: &mut postgres::Transaction<'_>,
        table: &'static str,
        trusted: Option<&Trusted>,
    ) -> Result<Vec<T>, Fail> {
        let rows = self.checked(tx, table, trusted, true)?;
        rows.iter()
            .map(|(name, sealed)| {
                let plain = self.sealer.open(&format!("{table}/{name}"), sealed)?;
                Ok(serde_json::from_slice(&plain)?)
            })
            .collect()
    }

    /// Up to `limit` audit entries, newest first, as far as they chain down from `trusted`.
    pub fn audit(
        &self,
        tx: &mut postgres::Transaction<'_>,
        trusted: Option<&Trusted>,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, Fail> {
        let Some(trusted) = trusted else {
            return Ok(Vec::new());
        };
        let rows = tx.query(
            "SELECT seq, sealed FROM postern_settings_audit WHERE seq <= $1 ORDER BY seq DESC LIMIT $2",
            &[&(trusted.head.version as i64), &(limit.min(i64::MAX as usize) as i64)],
        )?;
        let records: Vec<(String, AuditRecord)> = rows
            .iter()
            .map(|r| {
                let (seq, sealed) = (r.get::<_, i64>(0) as u64, r.get::<_, &[u8]>(1));
                (digest(sealed), self.open_audit(seq, sealed))
            })
            .collect();
        let (good, broken) = chain::check_audit(&trusted.head, &records);
        self.health.refuse("audit", broken);
        Ok(good
            .into_iter()
            .map(|i| records[i].1.entry.clone())
            .collect())
    }

    /// An audit row; one that does not open stands as an empty entry of its number, whose
    /// digest the chain does not name.
    fn open_audit(&self, seq: u64, sealed: &[u8]) -> AuditRecord {
        let opened = self.sealer.open(&format!("audit/{seq}"), sealed).ok();
        opened
            .and_then(|plain| serde_json::from_slice::<AuditRecord>(&plain).ok())
            .unwrap_or_else(|| AuditRecord {
                entry: AuditEntry {
                    seq,
                    unix_time: 0,
                    actor: String::new(),
                    previous: None,
                    new: Settings::default(),
                    certificates: Vec::new(),
                },
                chain: String::new(),
            })
    }
}

impl Ctx {
    /// A database sealed before the chain (by an older postern): its head is the bare
    /// document under `settings`. Re-sealed once, in one transaction, when the key opens it:
    /// the audit rows chained oldest first, the admin-user and certificate rows the key opens
    /// named as they are (one it does not open stays unnamed, so refused). What the database
    /// held then is taken as it was: the chain protects from here on.
    pub fn upgrade(&self, c: &mut postgres::Client) -> Result<(), Fail> {
        let mut tx = c.transaction()?;
        let row = tx.query_opt(
            "SELECT seq, sealed FROM postern_settings_current FOR UPDATE",
            &[],
        )?;
        let Some(row) = row else { return Ok(()) };
        let sealed: Vec<u8> = row.get(1);
        if self.open_head(&sealed).is_ok() {
            return Ok(());
        }
        let settings: Settings = serde_json::from_slice(&self.sealer.open("settings", &sealed)?)?;
        let mut head = chain::next(None, row.get::<_, i64>(0) as u64, settings);
        let (mut before, mut chained) = (String::new(), 0);
        let audit = tx.query(
            "SELECT seq, sealed FROM postern_settings_audit ORDER BY seq",
            &[],
        )?;
        for r in &audit {
            let seq: i64 = r.get(0);
            let what = format!("audit/{seq}");
            let Ok(entry) = self.sealer.open(&what, r.get(1)) else {
                before.clear();
                continue;
            };
            let record = AuditRecord {
                entry: serde_json::from_slice(&entry)?,
                chain: std::mem::take(&mut before),
            };
            let resealed = self.sealer.seal(&what, &serde_json::to_vec(&record)?);
            tx.execute(
                "UPDATE postern_settings_audit SET sealed = $2 WHERE seq = $1",
                &[&seq, &resealed],
            )?;
            before = digest(&resealed);
            chained += 1;
            if seq as u64 == head.version {
                head.links.audit = before.clone();
            }
        }
        for table in [ADMINS, CERTS] {
            for r in tx.query(&format!("SELECT name, sealed FROM {table}"), &[])? {
                let key = format!("{table}/{}", r.get::<_, String>(0));
                if self.sealer.open(&key, r.get(1)).is_ok() {
                    head.links.rows.insert(key, digest(r.get(1)));
                }
            }
        }
        let (version, rows) = (head.version, head.links.rows.len());
        self.store_head(&mut tx, head)?;
        tx.commit()?;
        tracing::info!(target: "postern/master", "settings database: re-sealed in chained form: settings version {version}, {rows} admin-user and certificate row(s) named, {chained} audit entries chained");
        Ok(())
    }
}

fn read_copy(path: &std::path::Path) -> Option<Copy> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}
