//! Secret-valued flags take a reference, never the secret itself:
//! `env:NAME`, `file:/path`, or `vault:<mount>/<path>#<key>` (KV v2).
//!
//! A literal value is accepted only from the flag's environment variable (how a Kubernetes Secret
//! arrives through `secretKeyRef`); on the command line it is refused with exit 2, so secrets never
//! reach argv, `ps` or the Argo UI. See [`crate::runner`] for that check.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use crate::{retry, RetryPolicy, StepError, VaultFlags};

/// A resolved secret. Debug and Display print `***`; only [`Secret::expose`] gives the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    /// The secret's value: hand it to the client that needs it, never to a log or an error.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Where a secret comes from.
#[derive(Clone, PartialEq, Eq)]
pub enum SecretRef {
    /// `env:NAME`: the environment variable NAME.
    Env(String),
    /// `file:/path`: the file's content, without a trailing newline (a mounted Kubernetes Secret).
    File(PathBuf),
    /// `vault:<mount>/<path>#<key>`: field `key` of the KV v2 secret at `path` under `mount`.
    Vault {
        mount: String,
        path: String,
        key: String,
    },
    /// The value itself: allowed only from an environment variable.
    Literal(Secret),
}

impl SecretRef {
    pub fn is_literal(&self) -> bool {
        matches!(self, SecretRef::Literal(_))
    }

    /// Resolves the reference. `flag` names the flag in error messages (e.g. `--git-token`);
    /// `vault` are the step's Vault flags (`--vault-addr`, `--vault-token`, ... or their
    /// variables), which a `vault:` reference logs in with.
    pub async fn resolve(&self, flag: &str, vault: &VaultFlags) -> Result<Secret, StepError> {
        let SecretRef::Vault { mount, path, key } = self else {
            return self.resolve_locally(flag).await;
        };
        let policy = RetryPolicy::network();
        let client = vault.connect_with(&policy).await.map_err(|mut e| {
            e.message = format!("{flag} {self}: {}", e.message);
            e
        })?;
        let value = retry(&policy, "vault read", vault::Error::is_transient, || {
            client.read_kv2_key(mount, path, key)
        })
        .await
        .map_err(|e| crate::vault_flags::vault_error(flag, e))?;
        Ok(Secret(value))
    }

    /// Resolves a reference that needs no Vault (a literal, `env:`, `file:`); a `vault:` one is
    /// exit 2 (the token that opens Vault cannot come from Vault).
    pub(crate) async fn resolve_locally(&self, flag: &str) -> Result<Secret, StepError> {
        match self {
            SecretRef::Literal(secret) => Ok(secret.clone()),
            SecretRef::Env(name) => match std::env::var(name) {
                Ok(v) if !v.is_empty() => Ok(Secret(v)),
                Ok(_) => Err(StepError::precondition(format!(
                    "{flag}: environment variable {name} is empty"
                ))),
                Err(_) => Err(StepError::precondition(format!(
                    "{flag}: environment variable {name} is not set"
                ))),
            },
            SecretRef::File(path) => {
                let text = tokio::fs::read_to_string(path).await.map_err(|e| {
                    StepError::precondition(format!(
                        "{flag}: cannot read secret file {}: {e}",
                        path.display()
                    ))
                })?;
                let value = text.trim_end_matches(['\n', '\r']);
                if value.is_empty() {
                    return Err(StepError::precondition(format!(
                        "{flag}: secret file {} is empty",
                        path.display()
                    )));
                }
                Ok(Secret(value.to_owned()))
            }
            SecretRef::Vault { .. } => Err(StepError::invalid(format!(
                "{flag} {self}: cannot come from Vault (give env:NAME or file:/path)"
            ))),
        }
    }
}

impl FromStr for SecretRef {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(name) = s.strip_prefix("env:") {
            let valid = name
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                return Err(format!(
                    "env:{name:?} is not an environment variable name ([A-Za-z_][A-Za-z0-9_]*)"
                ));
            }
            return Ok(SecretRef::Env(name.to_owned()));
        }
        if let Some(path) = s.strip_prefix("file:") {
            if path.is_empty() {
                return Err("file: needs a path, e.g. file:/var/run/secrets/git/token".into());
            }
            return Ok(SecretRef::File(PathBuf::from(path)));
        }
        if let Some(rest) = s.strip_prefix("vault:") {
            let usage = "expected vault:<mount>/<path>#<key>, e.g. vault:secret/sandboxes/ci#token";
            let (location, key) = rest.split_once('#').ok_or(usage)?;
            let (mount, path) = location.split_once('/').ok_or(usage)?;
            let path = path.trim_matches('/');
            if mount.is_empty() || path.is_empty() || key.is_empty() {
                return Err(usage.into());
            }
            if path.split('/').any(|seg| seg == ".." || seg == ".") {
                return Err(format!(
                    "vault path {path:?} must not contain . or .. segments"
                ));
            }
            return Ok(SecretRef::Vault {
                mount: mount.to_owned(),
                path: path.to_owned(),
                key: key.to_owned(),
            });
        }
        Ok(SecretRef::Literal(Secret(s.to_owned())))
    }
}

impl fmt::Display for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretRef::Env(name) => write!(f, "env:{name}"),
            SecretRef::File(path) => write!(f, "file:{}", path.display()),
            SecretRef::Vault { mount, path, key } => write!(f, "vault:{mount}/{path}#{key}"),
            SecretRef::Literal(_) => f.write_str("***"),
        }
    }
}

impl fmt::Debug for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretRef({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_parse() {
        assert_eq!(
            "env:GIT_TOKEN".parse(),
            Ok(SecretRef::Env("GIT_TOKEN".into()))
        );
        assert_eq!(
            "file:/var/run/secrets/token".parse(),
            Ok(SecretRef::File("/var/run/secrets/token".into()))
        );
        assert_eq!(
            "vault:secret/sandboxes/sbx-pr-42/db#password".parse(),
            Ok(SecretRef::Vault {
                mount: "secret".into(),
                path: "sandboxes/sbx-pr-42/db".into(),
                key: "password".into()
            })
        );
        for bad in [
            "env:",
            "env:1X",
            "env:A-B",
            "file:",
            "vault:secret#k",
            "vault:secret/p",
            "vault:/p#k",
            "vault:secret/#k",
            "vault:secret/a/../b#k",
        ] {
            assert!(bad.parse::<SecretRef>().is_err(), "{bad}");
        }
        assert!("ghp_literal".parse::<SecretRef>().unwrap().is_literal());
    }

    #[test]
    fn secrets_never_print() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s} {s:?}"), "*** ***");
        let literal: SecretRef = "hunter2".parse().unwrap();
        assert!(!format!("{literal} {literal:?}").contains("hunter2"));
        assert_eq!(s.expose(), "hunter2");
    }

    #[tokio::test]
    async fn env_and_file_references_resolve() {
        std::env::set_var("STEP_KIT_TEST_SECRET", "from-env");
        let r: SecretRef = "env:STEP_KIT_TEST_SECRET".parse().unwrap();
        assert_eq!(
            r.resolve("--t", &VaultFlags::default())
                .await
                .unwrap()
                .expose(),
            "from-env"
        );

        let missing: SecretRef = "env:STEP_KIT_TEST_SECRET_UNSET".parse().unwrap();
        let err = missing
            .resolve("--t", &VaultFlags::default())
            .await
            .unwrap_err();
        assert_eq!(err.exit_code(), 3);

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "from-file\n").unwrap();
        let r: SecretRef = format!("file:{}", path.display()).parse().unwrap();
        assert_eq!(
            r.resolve("--t", &VaultFlags::default())
                .await
                .unwrap()
                .expose(),
            "from-file"
        );

        let absent: SecretRef = "file:/nonexistent/token".parse().unwrap();
        assert_eq!(
            absent
                .resolve("--t", &VaultFlags::default())
                .await
                .unwrap_err()
                .exit_code(),
            3
        );
    }
}
