//! Vault access through `vaultrs`: login with a token or with Kubernetes auth (the pod's service
//! account token), and the KV v2 calls the steps need. Errors are classified so callers know what
//! to retry; no error message ever holds a token.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;
use vaultrs::client::{VaultClient, VaultClientSettingsBuilder};
use vaultrs::error::ClientError;

/// The service-account token Kubernetes mounts into every pod.
pub const DEFAULT_K8S_TOKEN_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";
/// Timeout of each HTTP request to Vault.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// A KV path the steps accept: relative segments of `[A-Za-z0-9._-]`, none empty, `.` or `..`,
/// at most 512 bytes (so a path from a flag can never climb out of its mount or root).
pub fn is_valid_path(path: &str) -> bool {
    !path.is_empty()
        && path.len() <= 512
        && path.split('/').all(|seg| {
            !seg.is_empty()
                && seg != "."
                && seg != ".."
                && seg
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        })
}

/// Vault's own paths, never a KV secrets engine: `sys/metadata/...` would answer 404 and a purge
/// would report "nothing there" for a mount that cannot hold secrets at all.
pub const SYSTEM_MOUNTS: &[&str] = &["sys", "auth", "identity", "cubbyhole"];

/// A secrets engine's mount: one segment of `[A-Za-z0-9_-]`, not one of [`SYSTEM_MOUNTS`].
pub fn is_valid_mount(mount: &str) -> bool {
    !mount.is_empty()
        && mount
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
        && !SYSTEM_MOUNTS.contains(&mount.to_ascii_lowercase().as_str())
}

/// Whether `path` lies strictly below `root` (both checked with [`is_valid_path`]): the rule that
/// keeps every step that writes or deletes secrets inside the sandboxes' part of the mount.
pub fn is_strictly_below(path: &str, root: &str) -> bool {
    path.strip_prefix(root)
        .is_some_and(|rest| rest.len() > 1 && rest.starts_with('/'))
}

#[derive(Clone)]
pub enum VaultAuth {
    /// A token (outside a cluster: `VAULT_TOKEN`).
    Token(String),
    /// Kubernetes auth: log in to `mount` as `role` with the JWT read from `jwt_path`.
    Kubernetes {
        role: String,
        mount: String,
        jwt_path: PathBuf,
    },
}

/// Where Vault is and how to log in. Debug never shows the token.
#[derive(Clone)]
pub struct VaultSettings {
    pub addr: String,
    pub auth: VaultAuth,
    pub timeout: Duration,
}

impl std::fmt::Debug for VaultSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let auth = match &self.auth {
            VaultAuth::Token(_) => "token".to_owned(),
            VaultAuth::Kubernetes { role, mount, .. } => {
                format!("kubernetes role {role} at {mount}")
            }
        };
        write!(f, "VaultSettings({} with {auth})", self.addr)
    }
}

impl VaultSettings {
    /// From the environment: `VAULT_ADDR`, then `VAULT_TOKEN`, or else Kubernetes auth with
    /// `VAULT_K8S_ROLE` (+ `VAULT_K8S_MOUNT`, default `kubernetes`; `VAULT_K8S_TOKEN_PATH`, default
    /// the pod's service-account token).
    pub fn from_env() -> Result<Self, Error> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let addr = var("VAULT_ADDR").ok_or_else(|| {
            Error::config(
                "VAULT_ADDR is not set (the Vault address, e.g. https://vault.example:8200)",
            )
        })?;
        let auth = if let Some(token) = var("VAULT_TOKEN") {
            VaultAuth::Token(token)
        } else if let Some(role) = var("VAULT_K8S_ROLE") {
            VaultAuth::Kubernetes {
                role,
                mount: var("VAULT_K8S_MOUNT").unwrap_or_else(|| "kubernetes".into()),
                jwt_path: var("VAULT_K8S_TOKEN_PATH")
                    .unwrap_or_else(|| DEFAULT_K8S_TOKEN_PATH.into())
                    .into(),
            }
        } else {
            return Err(Error::config(
                "neither VAULT_TOKEN nor VAULT_K8S_ROLE is set: give a token outside a cluster, \
                 or the Kubernetes auth role inside one",
            ));
        };
        Ok(VaultSettings {
            addr,
            auth,
            timeout: REQUEST_TIMEOUT,
        })
    }
}

/// A logged-in Vault client.
pub struct Vault {
    client: VaultClient,
}

impl Vault {
    /// Builds the client and, for Kubernetes auth, logs in.
    pub async fn connect(settings: &VaultSettings) -> Result<Vault, Error> {
        let token = match &settings.auth {
            VaultAuth::Token(token) => token.clone(),
            VaultAuth::Kubernetes {
                role,
                mount,
                jwt_path,
            } => {
                let jwt = std::fs::read_to_string(jwt_path).map_err(|e| {
                    Error::config(format!(
                        "cannot read the service-account token {}: {e}",
                        jwt_path.display()
                    ))
                })?;
                let anonymous = client(settings, String::new())?;
                let auth = vaultrs::auth::kubernetes::login(&anonymous, mount, role, jwt.trim())
                    .await
                    .map_err(|e| {
                        Error::from_client(&format!("kubernetes login as role {role}"), e)
                    })?;
                auth.client_token
            }
        };
        Ok(Vault {
            client: client(settings, token)?,
        })
    }

    /// The latest version of the KV v2 secret at `path` under `mount`.
    pub async fn read_kv2(
        &self,
        mount: &str,
        path: &str,
    ) -> Result<BTreeMap<String, Value>, Error> {
        vaultrs::kv2::read::<BTreeMap<String, Value>>(&self.client, mount, path)
            .await
            .map_err(|e| Error::from_client(&format!("read {mount}/{path}"), e))
    }

    /// One field of a KV v2 secret, as text (non-string values as JSON).
    pub async fn read_kv2_key(&self, mount: &str, path: &str, key: &str) -> Result<String, Error> {
        let data = self.read_kv2(mount, path).await?;
        match data.get(key) {
            Some(Value::String(s)) => Ok(s.clone()),
            Some(other) => Ok(other.to_string()),
            None => Err(Error::new(
                ErrorClass::NotFound,
                format!("{mount}/{path} has no key {key:?}"),
            )),
        }
    }

    /// Writes a new version of the KV v2 secret at `path`.
    pub async fn write_kv2(
        &self,
        mount: &str,
        path: &str,
        data: &BTreeMap<String, Value>,
    ) -> Result<(), Error> {
        vaultrs::kv2::set(&self.client, mount, path, data)
            .await
            .map(|_| ())
            .map_err(|e| Error::from_client(&format!("write {mount}/{path}"), e))
    }
}

impl Vault {
    /// Writes the KV v2 secret at `path` only when there is none yet (check-and-set 0), so of two
    /// concurrent writers one wins and the other learns it: `Ok(false)` when one already exists.
    pub async fn create_kv2(
        &self,
        mount: &str,
        path: &str,
        data: &BTreeMap<String, Value>,
    ) -> Result<bool, Error> {
        let options = vaultrs::api::kv2::requests::SetSecretRequestOptions { cas: 0 };
        match vaultrs::kv2::set_with_options(&self.client, mount, path, data, options).await {
            Ok(_) => Ok(true),
            Err(ClientError::APIError { code: 400, errors })
                if errors.iter().any(|e| e.contains("check-and-set")) =>
            {
                Ok(false)
            }
            Err(e) => Err(Error::from_client(&format!("create {mount}/{path}"), e)),
        }
    }

    /// The names under the KV v2 folder `path` (folders end in `/`); none when it does not exist.
    pub async fn list_kv2(&self, mount: &str, path: &str) -> Result<Vec<String>, Error> {
        match vaultrs::kv2::list(&self.client, mount, path).await {
            Ok(keys) => Ok(keys),
            Err(e) => match Error::from_client(&format!("list {mount}/{path}/"), e) {
                e if e.class == ErrorClass::NotFound => Ok(Vec::new()),
                e => Err(e),
            },
        }
    }

    /// Whether a KV v2 secret (any version, even deleted ones) has metadata at `path`.
    pub async fn kv2_exists(&self, mount: &str, path: &str) -> Result<bool, Error> {
        match vaultrs::kv2::read_metadata(&self.client, mount, path).await {
            Ok(_) => Ok(true),
            Err(e) => match Error::from_client(&format!("read metadata {mount}/{path}"), e) {
                e if e.class == ErrorClass::NotFound => Ok(false),
                e => Err(e),
            },
        }
    }

    /// Deletes the KV v2 secret at `path` for good: every version, and its metadata (a soft
    /// delete leaves both behind).
    pub async fn delete_kv2_for_good(&self, mount: &str, path: &str) -> Result<(), Error> {
        vaultrs::kv2::delete_metadata(&self.client, mount, path)
            .await
            .map_err(|e| Error::from_client(&format!("delete metadata {mount}/{path}"), e))
    }
}

fn client(settings: &VaultSettings, token: String) -> Result<VaultClient, Error> {
    let built = VaultClientSettingsBuilder::default()
        .address(&settings.addr)
        .token(token)
        .timeout(Some(settings.timeout))
        .build()
        .map_err(|e| Error::config(format!("invalid Vault settings: {e}")))?;
    VaultClient::new(built).map_err(|e| Error::from_client("create the Vault client", e))
}

/// What went wrong, as far as a caller deciding to retry cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Missing or malformed settings.
    Config,
    /// Permission denied or login refused (401/403).
    Auth,
    /// The secret or the key is not there (404).
    NotFound,
    /// Worth retrying: connection failures, timeouts, 429, 5xx.
    Transient,
    Other,
}

#[derive(Debug, thiserror::Error)]
#[error("vault: {message}")]
pub struct Error {
    class: ErrorClass,
    message: String,
}

impl Error {
    fn new(class: ErrorClass, message: impl Into<String>) -> Self {
        Error {
            class,
            message: message.into(),
        }
    }
    fn config(message: impl Into<String>) -> Self {
        Self::new(ErrorClass::Config, message)
    }

    pub fn class(&self) -> ErrorClass {
        self.class
    }

    pub fn is_transient(&self) -> bool {
        self.class == ErrorClass::Transient
    }

    fn from_client(what: &str, e: ClientError) -> Self {
        match e {
            ClientError::APIError { code, errors } => {
                let class = match code {
                    401 | 403 => ErrorClass::Auth,
                    404 => ErrorClass::NotFound,
                    429 | 500..=599 => ErrorClass::Transient,
                    _ => ErrorClass::Other,
                };
                let detail = if errors.is_empty() {
                    String::new()
                } else {
                    format!(": {}", errors.join("; "))
                };
                Self::new(class, format!("{what}: HTTP {code}{detail}"))
            }
            // Connection refused, reset, timed out: the request never got an answer.
            ClientError::RestClientError { source } => Self::new(
                ErrorClass::Transient,
                format!("{what}: {}", error_chain(&source)),
            ),
            other => Self::new(
                ErrorClass::Other,
                format!("{what}: {}", error_chain(&other)),
            ),
        }
    }
}

/// (step-kit has the same helper, but step-kit depends on this crate, not the other way.)
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
