//! The Kubernetes API as the steps reach it: [`KubeFlags`] (a kubeconfig, else the usual one,
//! else the pod's service account), the client, [`api_error`], which maps API errors to the
//! step contract (401/403 exit 3 with a hint, the rest exit 4), and [`wait_for`], which waits on
//! one object by reading and watching it.

mod watch;

use std::path::PathBuf;

use step_kit::StepError;

pub use watch::{wait_for, Seen, Watched, ACCESS_GRACE};

/// How a step reaches the Kubernetes API.
#[derive(Debug, Clone, clap::Args)]
pub struct KubeFlags {
    /// A kubeconfig file; without it, the usual kubeconfig (`~/.kube/config`) when there is one,
    /// else the pod's service account (in a cluster). Its variable is the usual `KUBECONFIG`.
    #[arg(long, value_name = "PATH", env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
}

impl KubeFlags {
    pub async fn client(&self) -> Result<kube::Client, StepError> {
        let config = match &self.kubeconfig {
            Some(path) => {
                let kubeconfig = kube::config::Kubeconfig::read_from(path).map_err(|e| {
                    StepError::invalid(format!("--kubeconfig {}: {e}", path.display()))
                })?;
                kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
                    .await
                    .map_err(|e| {
                        StepError::invalid(format!("--kubeconfig {}: {e}", path.display()))
                    })?
            }
            None => kube::Config::infer().await.map_err(|e| {
                StepError::precondition(format!(
                    "no Kubernetes configuration: not in a cluster and no kubeconfig ({e})"
                ))
            })?,
        };
        kube::Client::try_from(config)
            .map_err(|e| StepError::unexpected(format!("cannot build the Kubernetes client: {e}")))
    }
}

/// Maps an API error: 401 and 403 are preconditions with a hint (`forbidden` says what was
/// refused, `grant` what RBAC allows it); the rest is transient.
pub fn api_error(e: kube::Error, forbidden: &str, grant: &str) -> StepError {
    match &e {
        kube::Error::Api(status) if status.code == 401 => StepError::precondition(format!(
            "the Kubernetes API refused the credentials (401): {}",
            status.message
        ))
        .with_hint("check the kubeconfig or the pod's service-account token"),
        kube::Error::Api(status) if status.code == 403 => StepError::precondition(format!(
            "the Kubernetes API forbade {forbidden} (403): {}",
            status.message
        ))
        .with_hint(grant.to_owned()),
        _ => StepError::transient(format!("Kubernetes API: {}", step_kit::error_chain(&e))),
    }
}
