//! `smtp_auth_users`: names, and passwords hashed on the way in (write-only).

use crate::settings::{AuthUser, AuthUserDoc};

use super::{FieldError, PasswordHasher, field_error};

/// Users as the document gives them; one without a password keeps the stored hash.
pub fn check_users(
    stored: &[AuthUser],
    users: &[AuthUserDoc],
    hasher: &dyn PasswordHasher,
) -> Result<Vec<AuthUser>, FieldError> {
    let mut out: Vec<AuthUser> = Vec::with_capacity(users.len());
    for (i, user) in users.iter().enumerate() {
        let field = |name: &str| format!("smtp_auth_users[{i}].{name}");
        let name = user.username.trim();
        if name.is_empty() || name.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(field_error(
                field("username"),
                "must be a non-empty name without spaces",
            ));
        }
        if out.iter().any(|u| u.username == name) {
            return Err(field_error(
                field("username"),
                format!("duplicate user {name:?}"),
            ));
        }
        let password_hash = match &user.password {
            Some(p) if p.len() < 8 => {
                return Err(field_error(
                    field("password"),
                    "must be at least 8 characters",
                ));
            }
            Some(p) => hasher
                .hash(p)
                .map_err(|e| field_error(field("password"), e))?,
            None => match stored.iter().find(|u| u.username == name) {
                Some(existing) => existing.password_hash.clone(),
                None => {
                    return Err(field_error(field("password"), "required for a new user"));
                }
            },
        };
        out.push(AuthUser {
            username: name.to_string(),
            password_hash,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::support::{FakeHasher, doc};
    use crate::settings::*;

    #[test]
    fn users_keep_hash_when_password_omitted() {
        let first = Settings::default()
            .apply(
                &doc("[[smtp_auth_users]]\nusername = \"alice\"\npassword = \"correct horse\""),
                &FakeHasher,
            )
            .unwrap();
        assert_eq!(
            first.smtp_auth_users[0].password_hash,
            "hashed:correct horse"
        );
        assert_eq!(first.to_doc().smtp_auth_users[0].password, None);
        let again = first
            .apply(
                &doc("[[smtp_auth_users]]\nusername = \"alice\""),
                &FakeHasher,
            )
            .unwrap();
        assert_eq!(again.smtp_auth_users, first.smtp_auth_users);
        let err = first
            .apply(&doc("[[smtp_auth_users]]\nusername = \"bob\""), &FakeHasher)
            .unwrap_err();
        assert_eq!(err.field, "smtp_auth_users[0].password");
    }
}
