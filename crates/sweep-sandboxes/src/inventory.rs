//! What each backend holds of the sandboxes, found by the naming scheme: one listing per backend
//! (paged where the backend pages), names only, joined by pull request number. A name that
//! starts like a sandbox's but is not one is kept aside, to be reported and left alone.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, ListParams};
use step_kit::{vault_error, Context, StepError};

use crate::decide::Resource;
use crate::names::Scheme;
use crate::Args;

/// Every sandbox found, by pull request number, with what was found of it.
#[derive(Debug, Default)]
pub struct Inventory {
    pub sandboxes: BTreeMap<u64, BTreeSet<Resource>>,
    /// Names in a backend that start like a sandbox's but are not one (`sbx-pr-42-old`): left
    /// alone, listed in the log.
    pub lookalikes: Vec<String>,
    /// Backends read, with how many of their names were a sandbox's.
    pub counts: Vec<(&'static str, usize)>,
}

impl Inventory {
    /// Files `names` (the backend's names under its prefix) as `resource`, by `pr_of`.
    fn add(
        &mut self,
        backend: &'static str,
        resource: Resource,
        names: impl IntoIterator<Item = String>,
        pr_of: impl Fn(&str) -> Option<u64>,
    ) {
        let mut count = 0;
        for name in names {
            match pr_of(&name) {
                Some(pr) => {
                    self.sandboxes.entry(pr).or_default().insert(resource);
                    count += 1;
                }
                None => self.lookalikes.push(format!("{backend} {name}")),
            }
        }
        self.counts.push((backend, count));
    }
}

/// The environment branches of the infrastructure repository (one ref listing).
pub async fn branches(
    inventory: &mut Inventory,
    args: &Args,
    repo: &str,
    scheme: &Scheme,
    ctx: &Context,
) -> Result<(), StepError> {
    let remote =
        git_remote::Transport::open(repo, &args.git, ctx.retry_policy(), ctx.cancel.clone())
            .await?;
    let refs = remote.advertised_refs().await?;
    let names = refs
        .refs
        .keys()
        .filter_map(|r| r.strip_prefix("refs/heads/"))
        .filter(|b| b.starts_with(&scheme.environment_prefix))
        .map(str::to_owned);
    inventory.add("branch", Resource::Branch, names, |n| {
        scheme.pr_of_environment(n)
    });
    Ok(())
}

/// The Application files (`<environment>.yaml`) in the app-of-apps repository's directory.
pub async fn applications(
    inventory: &mut Inventory,
    args: &Args,
    repo: &str,
    scheme: &Scheme,
    ctx: &Context,
) -> Result<(), StepError> {
    let files =
        git_remote::list_branch_dir(repo, &args.apps_branch, &args.apps_path, &args.git, ctx)
            .await?;
    let names = files
        .into_iter()
        .filter(|f| f.starts_with(&scheme.environment_prefix))
        .collect::<Vec<_>>();
    inventory.add("application", Resource::Application, names, |file| {
        scheme.pr_of_environment(file.strip_suffix(".yaml")?)
    });
    Ok(())
}

/// The sandboxes' namespaces (`<namespace-prefix><environment>`), listed 500 at a time.
pub async fn namespaces(
    inventory: &mut Inventory,
    args: &Args,
    scheme: &Scheme,
) -> Result<(), StepError> {
    let client = args.kube.client().await?;
    let api: Api<Namespace> = Api::all(client);
    let prefix = format!("{}{}", scheme.namespace_prefix, scheme.environment_prefix);
    let mut names = Vec::new();
    let mut params = ListParams::default().limit(500);
    loop {
        let page = api.list_metadata(&params).await.map_err(|e| {
            kube_access::api_error(
                e,
                "listing namespaces",
                "grant list on namespaces (rbac/workflows.yaml's sandbox-steps-orchestrator does)",
            )
        })?;
        names.extend(
            page.items
                .into_iter()
                .filter_map(|n| n.metadata.name)
                .filter(|n| n.starts_with(&prefix)),
        );
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => break,
        }
    }
    inventory.add("namespace", Resource::Namespace, names, |n| {
        scheme.pr_of_namespace(n)
    });
    Ok(())
}

/// The sandboxes' databases (a restore's leftover `<database>_restoring` counts as the
/// database) and the owner roles restore-db marked.
pub async fn databases(
    inventory: &mut Inventory,
    admin_url: &str,
    scheme: &Scheme,
) -> Result<(), StepError> {
    let url = pg_admin::AdminUrl::parse(admin_url, crate::NAME)?;
    let mut admin = pg_admin::Admin::connect(&url.options).await?;
    let prefix = scheme.database_prefix();
    let databases = admin.databases_with_prefix(&prefix).await?;
    let roles = admin.marked_roles_with_prefix(&prefix).await?;
    inventory.add("database", Resource::Database, databases, |name| {
        let name = name
            .strip_suffix(pg_admin::RESTORING_SUFFIX)
            .unwrap_or(name);
        scheme.pr_of_database(name)
    });
    inventory.add("role", Resource::Role, roles, |n| scheme.pr_of_database(n));
    Ok(())
}

/// The sandboxes' buckets (`<bucket-prefix><environment>`) in the project, 1,000 at a time.
pub async fn buckets(
    inventory: &mut Inventory,
    args: &Args,
    project: &str,
    scheme: &Scheme,
    ctx: &Context,
) -> Result<(), StepError> {
    let mut settings = gcs::Settings::from_env();
    settings.emulator = args
        .storage_emulator_host
        .clone()
        .filter(|h| !h.trim().is_empty());
    let gcs = gcs::Gcs::connect(&settings).await?;
    let prefix = format!("{}{}", scheme.bucket_prefix, scheme.environment_prefix);
    let names = gcs
        .list_buckets(project, &prefix, &ctx.retry_policy())
        .await?;
    inventory.add("bucket", Resource::Bucket, names, |n| {
        scheme.pr_of_bucket(n)
    });
    Ok(())
}

/// The sandboxes' folders (or secrets) directly under the Vault root (`sandboxes/sbx-pr-42/`).
pub async fn secrets(
    inventory: &mut Inventory,
    args: &Args,
    scheme: &Scheme,
    ctx: &Context,
) -> Result<(), StepError> {
    let vault = args.git.vault.connect(ctx).await?;
    let keys = step_kit::retry(
        &ctx.retry_policy(),
        "vault list",
        vault::Error::is_transient,
        || vault.list_kv2(&args.vault_mount, &args.vault_root),
    )
    .await
    .map_err(|e| vault_error("vault", e))?;
    let names: BTreeSet<String> = keys
        .into_iter()
        .map(|k| k.trim_end_matches('/').to_owned())
        .filter(|k| k.starts_with(&scheme.environment_prefix))
        .collect();
    inventory.add("secrets", Resource::Secrets, names, |n| {
        scheme.pr_of_environment(n)
    });
    Ok(())
}

/// The sandboxes holding a slot under the cap (admit-sandbox's ConfigMap; one read): a sandbox
/// whose create was admitted but left nothing else (a crash, a lost webhook) still holds its slot
/// until delete-sandbox releases it, so the sweep must find it.
pub async fn admissions(
    inventory: &mut Inventory,
    args: &Args,
    namespace: &str,
    scheme: &Scheme,
) -> Result<(), StepError> {
    let client = args.kube.client().await?;
    let api: Api<ConfigMap> = Api::namespaced(client, namespace);
    let found = api.get_opt(&args.admission_configmap).await.map_err(|e| {
        kube_access::api_error(
            e,
            "reading the admission ConfigMap",
            "grant get on configmaps in the workflows' namespace (rbac/sweep.yaml does)",
        )
    })?;
    let state = found
        .and_then(|cm| cm.data)
        .map(|data| admission::Admission::from_data(&data))
        .unwrap_or_default();
    inventory.add(
        "admission",
        Resource::Admission,
        state.admitted.into_keys(),
        |n| scheme.pr_of_environment(n),
    );
    inventory.add("asleep", Resource::Asleep, state.asleep.into_keys(), |n| {
        scheme.pr_of_environment(n)
    });
    Ok(())
}
