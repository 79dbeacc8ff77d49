//! The admin page's users: names and argon2id hashes in the settings store, never a
//! password. The first start creates `admin` with a generated password written once to a
//! file, which the first sign-in replaces (and the file goes).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{PasswordHasher, SettingsHandle, StoreError};

/// The first user's name.
pub const FIRST_ADMIN: &str = "admin";
/// Where the first user's generated password is written, under the data directory.
pub const INITIAL_PASSWORD_FILE: &str = "initial-admin-password";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminUser {
    pub name: String,
    pub password_hash: String,
    /// Set for a generated password: the next sign-in must choose a new one.
    #[serde(default)]
    pub must_change: bool,
}

impl SettingsHandle {
    pub fn admin_users(&self) -> Result<Vec<AdminUser>, StoreError> {
        self.inner.store.admin_users()
    }

    pub fn admin_user(&self, name: &str) -> Result<Option<AdminUser>, StoreError> {
        Ok(self.admin_users()?.into_iter().find(|u| u.name == name))
    }

    /// A new password for `name` (hashed by the caller), stored durably.
    pub fn set_admin_password(
        &self,
        name: &str,
        password_hash: String,
        must_change: bool,
    ) -> Result<(), StoreError> {
        let _guard = self.inner.write.lock().unwrap_or_else(|e| e.into_inner());
        self.inner.store.put_admin_user(&AdminUser {
            name: name.to_string(),
            password_hash,
            must_change,
        })
    }

    /// First start (no admin user yet): create `admin` with a generated password, written
    /// to `<data_dir>/initial-admin-password` (0600). Returns the file when it created one.
    pub fn ensure_initial_admin(
        &self,
        data_dir: &Path,
        hasher: &dyn PasswordHasher,
    ) -> Result<Option<PathBuf>, StoreError> {
        if !self.admin_users()?.is_empty() {
            return Ok(None);
        }
        let password = generated_password();
        let hash = hasher.hash(&password).map_err(StoreError::Db)?;
        let file = data_dir.join(INITIAL_PASSWORD_FILE);
        // A file left from a store that is gone (reset, restored) holds nobody's password.
        let _ = std::fs::remove_file(&file);
        crate::fsutil::write_secret(&file, format!("{password}\n").as_bytes())
            .map_err(|e| StoreError::Db(format!("{}: {e}", file.display())))?;
        self.set_admin_password(FIRST_ADMIN, hash, true)?;
        Ok(Some(file))
    }
}

/// 20 characters from an alphabet without look-alikes: about 115 bits.
fn generated_password() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut rng = rand::rngs::OsRng;
    (0..20)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Plain;
    impl PasswordHasher for Plain {
        fn hash(&self, password: &str) -> Result<String, String> {
            Ok(format!("plain:{password}"))
        }
    }

    #[test]
    fn first_start_creates_admin_once_with_a_private_file() {
        let dir = tempfile::tempdir().unwrap();
        let settings = SettingsHandle::open(&dir.path().join("s.redb")).unwrap();
        let file = settings
            .ensure_initial_admin(dir.path(), &Plain)
            .unwrap()
            .expect("created");
        let password = std::fs::read_to_string(&file).unwrap();
        assert_eq!(password.trim().len(), 20);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let user = settings.admin_user(FIRST_ADMIN).unwrap().unwrap();
        assert_eq!(user.password_hash, format!("plain:{}", password.trim()));
        assert!(user.must_change);
        assert_eq!(
            settings.ensure_initial_admin(dir.path(), &Plain).unwrap(),
            None
        );
    }
}
