//! The sandbox database's owner role, and its credentials in Vault.
//!
//! With `--owner-secret`, the credentials are written to the KV v2 secret once (check-and-set
//! 0) before the role gets the password, so a crash in between leaves a secret a re-run reuses;
//! a re-run never changes an existing secret nor the role's password.

use std::collections::BTreeMap;

use base64::Engine;
use serde_json::Value;
use step_kit::{escape_untrusted, retry, vault_error, Context, Secret, StepError, VaultFlags};

use crate::restore::Login;
use pg_admin::{literal, quoted, Admin, ROLE_MARKER};

/// `vault:<mount>/<path>`: where the owner's credentials are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretPath {
    pub mount: String,
    pub path: String,
}

impl std::str::FromStr for SecretPath {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let usage = "expected vault:<mount>/<path> (a KV v2 secret; no #key: restore-db writes \
                     username, password, host, port, database and url), e.g. \
                     vault:secret/sandboxes/sbx-pr-42/db";
        let rest = s
            .strip_prefix("vault:")
            .ok_or_else(|| format!("{}: {usage}", escape_untrusted(s)))?;
        if rest.contains('#') {
            return Err(format!("{}: {usage}", escape_untrusted(s)));
        }
        let (mount, path) = rest
            .split_once('/')
            .ok_or_else(|| format!("{}: {usage}", escape_untrusted(s)))?;
        if !vault::is_valid_mount(mount) || !vault::is_valid_path(path) {
            return Err(format!(
                "{}: the mount must be one segment of [A-Za-z0-9_-] and each path segment \
                 [A-Za-z0-9._-], without . or .. ({usage})",
                escape_untrusted(s)
            ));
        }
        Ok(SecretPath {
            mount: mount.to_owned(),
            path: path.to_owned(),
        })
    }
}

impl std::fmt::Display for SecretPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "vault:{}/{}", self.mount, self.path)
    }
}

/// A new password: 32 random bytes, base64url (43 characters, safe in URLs and SQL literals).
fn generate_password() -> Result<Secret, StepError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)
        .map_err(|e| StepError::unexpected(format!("no randomness for a password: {e}")))?;
    Ok(Secret::new(
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes),
    ))
}

/// The SCRAM-SHA-256 verifier PostgreSQL stores for `password` (RFC 5802 and 7677, the form
/// `psql \password` sends): `CREATE ROLE ... PASSWORD '<verifier>'` then never carries the password
/// itself, so a server logging DDL (log_statement, pgaudit) does not log it. Our passwords are
/// ASCII, which SASLprep leaves as they are.
fn scram_verifier(password: &Secret) -> Result<String, StepError> {
    use hmac::{Hmac, KeyInit, Mac};
    use sha2::{Digest, Sha256};
    const ITERATIONS: u32 = 4096;
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt)
        .map_err(|e| StepError::unexpected(format!("no randomness for a salt: {e}")))?;
    let salted =
        pbkdf2::pbkdf2_hmac_array::<Sha256, 32>(password.expose().as_bytes(), &salt, ITERATIONS);
    let hmac = |message: &[u8]| {
        let mut mac = Hmac::<Sha256>::new_from_slice(&salted).expect("HMAC takes any key length");
        mac.update(message);
        mac.finalize().into_bytes()
    };
    let stored_key = Sha256::digest(hmac(b"Client Key"));
    let server_key = hmac(b"Server Key");
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    Ok(format!(
        "SCRAM-SHA-256${ITERATIONS}:{}${}:{}",
        b64(&salt),
        b64(&stored_key),
        b64(&server_key)
    ))
}

/// Where the sandbox's applications reach the server (the admin URL's host and port).
pub struct Endpoint {
    pub host: String,
    pub port: u16,
}

/// The credentials kept in the secret.
fn secret_data(
    owner: &str,
    password: &Secret,
    at: &Endpoint,
    database: &str,
) -> BTreeMap<String, Value> {
    let host = if at.host.contains(':') {
        format!("[{}]", at.host)
    } else {
        at.host.clone()
    };
    let url = format!(
        "postgres://{owner}:{}@{host}:{}/{database}",
        password.expose(),
        at.port
    );
    BTreeMap::from([
        ("username".to_owned(), Value::from(owner)),
        ("password".to_owned(), Value::from(password.expose())),
        ("host".to_owned(), Value::from(at.host.as_str())),
        ("port".to_owned(), Value::from(at.port.to_string())),
        ("database".to_owned(), Value::from(database)),
        ("url".to_owned(), Value::from(url)),
    ])
}

/// The password kept in an existing secret, which must be this owner's.
fn password_of(
    data: &BTreeMap<String, Value>,
    owner: &str,
    at: &SecretPath,
) -> Result<Secret, StepError> {
    let username = data.get("username").and_then(Value::as_str);
    if username != Some(owner) {
        return Err(StepError::precondition(format!(
            "{at} exists but holds another user's credentials ({}), not {owner}'s: refusing to \
             overwrite it (remove it, or give another --owner-secret)",
            username.map_or("no username".to_owned(), escape_untrusted)
        )));
    }
    match data.get("password").and_then(Value::as_str) {
        Some(p) if !p.is_empty() => Ok(Secret::new(p)),
        _ => Err(StepError::precondition(format!(
            "{at} exists but has no password: refusing to overwrite it"
        ))),
    }
}

/// Makes sure the owner role exists, marked, with no rights beyond its own objects, and returns
/// how the restore logs in as it: the secret's password with `--owner-secret` (written once: a
/// re-run keeps it and the role's password), else a password only this run knows (set anew each
/// run). An existing role without [`ROLE_MARKER`] (a production role, a person's), or with
/// server-wide rights or memberships, is refused before Vault is touched.
pub async fn ensure_owner(
    admin: &mut Admin,
    ctx: &Context,
    owner: &str,
    secret: Option<(&SecretPath, &VaultFlags)>,
    at: &Endpoint,
    database: &str,
) -> Result<Login, StepError> {
    let existed = admin.role_exists(owner).await?;
    if existed {
        let comment = admin.role_comment(owner).await?;
        if comment.as_deref() != Some(ROLE_MARKER) {
            return Err(StepError::precondition(format!(
                "--owner {owner}: the role exists and restore-db did not create it (no comment \
                 {ROLE_MARKER:?}): refusing to take it over; a sandbox gets a role of its own"
            )));
        }
        let powers = admin.role_powers(owner).await?;
        if !powers.is_empty() {
            return Err(StepError::precondition(format!(
                "role {owner} has rights beyond its own database ({}): the dump runs as the \
                 sandbox's owner precisely so that it has none; revoke them or drop the role",
                powers.join(", ")
            )));
        }
    }
    let kept = match secret {
        None => None,
        Some((path, flags)) => Some(kept_password(ctx, owner, path, flags, at, database).await?),
    };
    let role = quoted(owner);
    let (password, set_password) = match kept {
        // A secret written by an earlier run: the role has its password already.
        Some((password, false)) if existed => (password, false),
        Some((password, _)) => (password, true),
        None => (generate_password()?, true),
    };
    if !existed {
        // Spelled out, though they are PostgreSQL's defaults: the dump runs as this role.
        admin
            .execute(format!(
                "CREATE ROLE {role} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION \
                 NOBYPASSRLS PASSWORD {}",
                literal(&scram_verifier(&password)?)
            ))
            .await?;
        admin
            .execute(format!(
                "COMMENT ON ROLE {role} IS {}",
                literal(ROLE_MARKER)
            ))
            .await?;
        tracing::info!("created role {owner}");
    } else if set_password {
        admin
            .execute(format!(
                "ALTER ROLE {role} LOGIN PASSWORD {}",
                literal(&scram_verifier(&password)?)
            ))
            .await?;
        if secret.is_some() {
            tracing::info!("role {owner} existed: set the password kept in Vault");
        }
    }
    // A non-superuser admin (a managed server's) must be a member of the owner to create its
    // database and hand it objects; a superuser already may.
    admin
        .execute(format!(
            "DO $$ BEGIN IF NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) \
             AND NOT pg_has_role(current_user, {}, 'MEMBER') THEN EXECUTE 'GRANT {} TO ' || \
             quote_ident(current_user); END IF; END $$",
            literal(owner),
            role.replace('\'', "''")
        ))
        .await?;
    Ok(Login {
        role: owner.to_owned(),
        password,
    })
}

/// The owner's password kept at `path`: the existing secret's (which must be this owner's), or a
/// new one written there once (check-and-set 0). Returns whether this run wrote it.
async fn kept_password(
    ctx: &Context,
    owner: &str,
    path: &SecretPath,
    flags: &VaultFlags,
    at: &Endpoint,
    database: &str,
) -> Result<(Secret, bool), StepError> {
    let vault = flags.connect(ctx).await?;
    let policy = ctx.retry_policy();
    let what = path.to_string();
    let existing = retry(&policy, &what, vault::Error::is_transient, || async {
        match vault.read_kv2(&path.mount, &path.path).await {
            Ok(data) => Ok(Some(data)),
            Err(e) if e.class() == vault::ErrorClass::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    })
    .await
    .map_err(|e| vault_error(&what, e))?;
    if let Some(data) = existing {
        tracing::info!("{what} exists: the owner keeps its credentials");
        return Ok((password_of(&data, owner, path)?, false));
    }
    let password = generate_password()?;
    let data = secret_data(owner, &password, at, database);
    let created = retry(&policy, &what, vault::Error::is_transient, || {
        vault.create_kv2(&path.mount, &path.path, &data)
    })
    .await
    .map_err(|e| vault_error(&what, e))?;
    if created {
        tracing::info!("wrote {owner}'s credentials to {what}");
        return Ok((password, true));
    }
    // Another run wrote it between our read and write: use theirs.
    let data = vault
        .read_kv2(&path.mount, &path.path)
        .await
        .map_err(|e| vault_error(&what, e))?;
    Ok((password_of(&data, owner, path)?, false))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_paths() {
        assert_eq!(
            "vault:secret/sandboxes/sbx-pr-42/db".parse::<SecretPath>(),
            Ok(SecretPath {
                mount: "secret".into(),
                path: "sandboxes/sbx-pr-42/db".into()
            })
        );
        for bad in [
            "secret/sandboxes/db",
            "vault:secret/sandboxes/db#password",
            "vault:secret",
            "vault:secret/../x",
            "vault:secret//x",
            "vault:secret/a b",
            "env:DB",
        ] {
            assert!(bad.parse::<SecretPath>().is_err(), "{bad}");
        }
    }

    #[test]
    fn passwords_are_long_and_url_safe() {
        let a = generate_password().unwrap();
        let b = generate_password().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.expose().len(), 43);
        assert!(a
            .expose()
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
        assert_eq!(format!("{a:?}"), "***");
    }

    #[test]
    fn scram_verifiers_have_postgres_form_and_fresh_salts() {
        let password = Secret::new("pencil");
        let a = scram_verifier(&password).unwrap();
        let b = scram_verifier(&password).unwrap();
        assert_ne!(a, b, "a new salt each time");
        assert!(a.starts_with("SCRAM-SHA-256$4096:"), "{a}");
        let keys = a.rsplit('$').next().unwrap();
        assert_eq!(keys.split(':').count(), 2);
        assert!(!a.contains("pencil"));
    }

    #[test]
    fn the_secret_holds_what_a_client_needs() {
        let data = secret_data(
            "sbx_pr_42",
            &Secret::new("pw"),
            &Endpoint {
                host: "db.internal".into(),
                port: 5432,
            },
            "sbx_pr_42",
        );
        assert_eq!(
            data["url"],
            "postgres://sbx_pr_42:pw@db.internal:5432/sbx_pr_42"
        );
        assert_eq!(data["port"], "5432");
        assert_eq!(data.len(), 6);
        let other = BTreeMap::from([("username".to_owned(), Value::from("someone"))]);
        let at = SecretPath {
            mount: "secret".into(),
            path: "x".into(),
        };
        assert_eq!(
            password_of(&other, "sbx_pr_42", &at)
                .unwrap_err()
                .exit_code(),
            3
        );
    }
}
