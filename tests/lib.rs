//! Workspace-level checks (the tests of this package): every step, as its binary defines it.

use clap::CommandFactory;

/// A step's interface, from its own code.
pub struct Step {
    pub name: &'static str,
    /// Its clap command, with the environment variable of every flag.
    pub command: clap::Command,
    /// The files it writes in `--outputs-dir`.
    pub outputs: &'static [&'static str],
}

/// Every step of the workspace.
pub fn steps() -> Vec<Step> {
    let step = |name, command, outputs| Step {
        name,
        command: step_kit::command_with_env(command),
        outputs,
    };
    vec![
        step(
            validate_params::NAME,
            validate_params::Args::command(),
            validate_params::OUTPUTS,
        ),
        step(
            create_branch::NAME,
            create_branch::Args::command(),
            create_branch::OUTPUTS,
        ),
        step(
            cleanup_branch::NAME,
            cleanup_branch::Args::command(),
            cleanup_branch::OUTPUTS,
        ),
        step(
            wait_workflow::NAME,
            wait_workflow::Args::command(),
            wait_workflow::OUTPUTS,
        ),
        step(
            create_argocd_app::NAME,
            create_argocd_app::Args::command(),
            create_argocd_app::OUTPUTS,
        ),
        step(
            patch_kustomize::NAME,
            patch_kustomize::Args::command(),
            patch_kustomize::OUTPUTS,
        ),
        step(
            purge_secrets::NAME,
            purge_secrets::Args::command(),
            purge_secrets::OUTPUTS,
        ),
        step(
            delete_argocd_app::NAME,
            delete_argocd_app::Args::command(),
            delete_argocd_app::OUTPUTS,
        ),
        step(
            copy_bucket::NAME,
            copy_bucket::Args::command(),
            copy_bucket::OUTPUTS,
        ),
    ]
}
