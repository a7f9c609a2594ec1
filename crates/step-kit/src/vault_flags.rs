//! The flags of a step whose target is Vault itself (not a secret read through a `vault:`
//! reference): where it is and how to log in. Their variables are the ones Vault's own CLI and
//! `vault:` references read (`VAULT_ADDR`, `VAULT_TOKEN`, `VAULT_K8S_ROLE`, ...).

use std::path::PathBuf;

use crate::{retry, Context, ErrorKind, RetryPolicy, SecretRef, StepError};

#[derive(Debug, Clone, clap::Args)]
pub struct VaultFlags {
    /// The Vault (or OpenBao) address, e.g. https://vault.example:8200.
    #[arg(long, value_name = "URL", env = "VAULT_ADDR")]
    pub vault_addr: Option<String>,

    /// A token, as a reference (env:NAME, file:/path); outside a cluster. A literal is accepted
    /// only from the VAULT_TOKEN variable.
    #[arg(long, value_name = "SECRET_REF", env = "VAULT_TOKEN")]
    pub vault_token: Option<SecretRef>,

    /// Inside a cluster: the Kubernetes auth role to log in as, with the pod's service account.
    #[arg(long, value_name = "ROLE", env = "VAULT_K8S_ROLE")]
    pub vault_k8s_role: Option<String>,

    /// The mount of the Kubernetes auth method.
    #[arg(
        long,
        value_name = "MOUNT",
        default_value = "kubernetes",
        env = "VAULT_K8S_MOUNT"
    )]
    pub vault_k8s_mount: String,

    /// The service-account token presented to Kubernetes auth.
    #[arg(long, value_name = "PATH", default_value = vault::DEFAULT_K8S_TOKEN_PATH, env = "VAULT_K8S_TOKEN_PATH")]
    pub vault_k8s_token_path: PathBuf,
}

impl Default for VaultFlags {
    /// No Vault: what a step gets when none of the flags nor their variables are set.
    fn default() -> Self {
        VaultFlags {
            vault_addr: None,
            vault_token: None,
            vault_k8s_role: None,
            vault_k8s_mount: "kubernetes".into(),
            vault_k8s_token_path: vault::DEFAULT_K8S_TOKEN_PATH.into(),
        }
    }
}

impl VaultFlags {
    /// Logs in (retrying transient failures within the step's deadline).
    pub async fn connect(&self, ctx: &Context) -> Result<vault::Vault, StepError> {
        self.connect_with(&ctx.retry_policy()).await
    }

    /// Logs in, retrying transient failures by `policy`.
    pub async fn connect_with(&self, policy: &RetryPolicy) -> Result<vault::Vault, StepError> {
        crate::install_tls_provider();
        let Some(addr) = self.vault_addr.clone().filter(|a| !a.trim().is_empty()) else {
            return Err(StepError::invalid(
                "give --vault-addr (VAULT_ADDR): where Vault (or OpenBao) listens",
            ));
        };
        let auth = match (&self.vault_token, &self.vault_k8s_role) {
            (Some(token), _) => vault::VaultAuth::Token(
                token
                    .resolve_locally("--vault-token")
                    .await?
                    .expose()
                    .to_owned(),
            ),
            (None, Some(role)) => vault::VaultAuth::Kubernetes {
                role: role.clone(),
                mount: self.vault_k8s_mount.clone(),
                jwt_path: self.vault_k8s_token_path.clone(),
            },
            (None, None) => {
                return Err(StepError::invalid(
                    "give --vault-token (VAULT_TOKEN) outside a cluster, or --vault-k8s-role \
                     (VAULT_K8S_ROLE) inside one",
                ))
            }
        };
        let settings = vault::VaultSettings {
            addr,
            auth,
            timeout: vault::REQUEST_TIMEOUT,
        };
        retry(policy, "vault login", vault::Error::is_transient, || {
            vault::Vault::connect(&settings)
        })
        .await
        .map_err(|e| vault_error("vault", e))
    }
}

/// A Vault error as a step error: settings → 2, refused or missing → 3, transient → 4.
pub fn vault_error(what: &str, e: vault::Error) -> StepError {
    let kind = match e.class() {
        vault::ErrorClass::Config => ErrorKind::Invalid,
        vault::ErrorClass::Transient => ErrorKind::Transient,
        vault::ErrorClass::Auth | vault::ErrorClass::NotFound | vault::ErrorClass::Other => {
            ErrorKind::Precondition
        }
    };
    let err = StepError::new(kind, format!("{what}: {e}"));
    match e.class() {
        vault::ErrorClass::Auth => err.with_hint(
            "check the token (VAULT_TOKEN), or that the Kubernetes auth role (VAULT_K8S_ROLE) \
             has a policy for this path",
        ),
        _ => err,
    }
}
