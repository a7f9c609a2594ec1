//! Waiting on one object of the API (a Workflow, an Argo CD Application): read it, then watch it
//! from the list's resource version, and hand every version of it to the caller's `decide` until
//! that says the wait is over. Shared by wait-workflow and wait-argocd-app.
//!
//! - A list by name, not a get, starts each watch: the watch starts from the list's resource
//!   version, the server's current one. The object's own version can be older than anything a
//!   freshly started API server's watch cache holds, and a watch from there answers 410 Gone until
//!   the object changes (seen against kube-apiserver 1.36 after a restart).
//! - 410 Gone, a watch that ends (the server closes them after `timeoutSeconds`) or breaks: read
//!   again and watch again; never in a tight loop.
//! - A server that answers but serves no watches (a proxy in between): poll every interval.
//! - Without a change for a poll interval, `decide` sees the object again (a decision may depend on
//!   how long a state has lasted).
//! - 401/403 on the first request ends the wait (exit 3 with the RBAC hint); once access was
//!   granted, refusals are ridden out for [`ACCESS_GRACE`] (an API server restarting refuses
//!   requests for a moment while its authorizer's caches fill).

use std::time::Duration;

use futures_util::StreamExt;
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, WatchEvent, WatchParams,
};
use step_kit::{ErrorKind, StepError};

/// What the watch saw of the object.
pub enum Seen<'a> {
    /// It does not exist (yet): the caller decides whether to keep waiting.
    Absent,
    /// A version of it.
    Present(&'a DynamicObject),
    /// It existed and is gone.
    Deleted,
}

/// How long a 401 or 403 is ridden out once the API has let the step read the object.
pub const ACCESS_GRACE: Duration = Duration::from_secs(60);

/// The object watched, for log lines and errors.
pub struct Watched<'a> {
    pub api: Api<DynamicObject>,
    pub name: &'a str,
    /// e.g. `workflow argo/create-sandbox-x7k2p`.
    pub describe: String,
    /// The RBAC that lets the step read it (the 403 hint).
    pub grant: String,
    /// How often to read it when it does not exist yet or watching fails.
    pub poll_interval: Duration,
}

impl<'a> Watched<'a> {
    /// Object `name` of kind `kind` (group `group`, version `version`, resource `plural`) in
    /// `namespace`, reached with `kube`, with the log wording and the RBAC hint made from them.
    /// Checks `--name` (a DNS subdomain) and `--namespace` (a DNS label) before anything: exit 2
    /// on a bad one.
    pub async fn new(
        kube: &crate::KubeFlags,
        (group, version, kind, plural): (&str, &str, &str, &str),
        namespace: &str,
        name: &'a str,
        poll_interval: Duration,
    ) -> Result<Watched<'a>, StepError> {
        for (flag, value, result) in [
            ("--name", name, naming::check_dns_subdomain(name)),
            ("--namespace", namespace, naming::check_dns_label(namespace)),
        ] {
            result.map_err(|rule| {
                StepError::invalid(format!(
                    "{flag} {}: {rule}",
                    step_kit::escape_untrusted(value)
                ))
            })?;
        }
        let client = kube.client().await?;
        let resource =
            ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural);
        Ok(Watched {
            api: Api::namespaced_with(client, namespace, &resource),
            name,
            describe: format!("{} {namespace}/{name}", kind.to_lowercase()),
            grant: format!(
                "grant get, list and watch on {plural}.{group} in namespace {namespace}"
            ),
            poll_interval,
        })
    }
}

/// Whether an access refusal ends the wait: always before the first successful request, and once
/// refusals have lasted [`ACCESS_GRACE`] since then.
struct AccessRefusals {
    granted_once: bool,
    refused_since: Option<tokio::time::Instant>,
}

impl AccessRefusals {
    fn granted(&mut self) {
        self.granted_once = true;
        self.refused_since = None;
    }

    /// Ok to retry (the refusal is logged), or the error that ends the wait.
    fn refused(&mut self, err: StepError) -> Result<(), StepError> {
        if !self.granted_once {
            return Err(err);
        }
        let since = *self
            .refused_since
            .get_or_insert_with(tokio::time::Instant::now);
        if since.elapsed() >= ACCESS_GRACE {
            return Err(err);
        }
        tracing::warn!(
            "{err}; access was granted before, retrying (the API server may be restarting)"
        );
        Ok(())
    }
}

/// Waits until `decide` returns `Some` (or an error) for what it is shown of the object.
pub async fn wait_for<T>(
    watched: &Watched<'_>,
    mut decide: impl FnMut(Seen<'_>) -> Result<Option<T>, StepError>,
) -> Result<T, StepError> {
    let api_error = |e| {
        crate::api_error(
            e,
            &format!("reading the {}", watched.describe),
            &watched.grant,
        )
    };
    let is_refusal = |e: &StepError| e.kind == ErrorKind::Precondition;
    let pause = watched.poll_interval;
    let mut access = AccessRefusals {
        granted_once: false,
        refused_since: None,
    };
    let mut existed = false;
    let mut polling = false;
    let by_name = ListParams::default().fields(&format!("metadata.name={}", watched.name));
    loop {
        let (object, listed_at) = match watched.api.list(&by_name).await {
            Ok(list) => {
                access.granted();
                let version = list.metadata.resource_version.clone().unwrap_or_default();
                (list.items.into_iter().next(), version)
            }
            Err(e) => {
                let err = api_error(e);
                if is_refusal(&err) {
                    access.refused(err)?;
                } else {
                    tracing::warn!("{err}; reading again in {pause:?}");
                }
                tokio::time::sleep(pause).await;
                continue;
            }
        };
        let verdict = match &object {
            None if existed => decide(Seen::Deleted)?,
            None => decide(Seen::Absent)?,
            Some(object) => {
                existed = true;
                decide(Seen::Present(object))?
            }
        };
        if let Some(done) = verdict {
            return Ok(done);
        }
        if object.is_none() || polling {
            tokio::time::sleep(pause).await;
            continue;
        }
        let mut version = listed_at;
        let params = WatchParams::default()
            .fields(&format!("metadata.name={}", watched.name))
            .timeout(290);
        let mut stream = match watched.api.watch(&params, &version).await {
            Ok(stream) => stream.boxed(),
            Err(e) => {
                // The server answered, and not with a watch: it does not serve them; poll from
                // now on. A connection that failed (the server away for a moment) is read and
                // watched again after the interval.
                let answered = matches!(e, kube::Error::Api(_));
                let err = api_error(e);
                if is_refusal(&err) {
                    access.refused(err)?;
                } else if answered {
                    tracing::warn!("cannot watch ({err}); polling every {pause:?}");
                    polling = true;
                    continue;
                } else {
                    tracing::warn!("cannot watch ({err}); trying again in {pause:?}");
                }
                tokio::time::sleep(pause).await;
                continue;
            }
        };
        let mut current = object;
        loop {
            // Without a change for a poll interval, `decide` sees the object again: a decision
            // may depend on time (how long a state has lasted).
            let event = match tokio::time::timeout(pause, stream.next()).await {
                Ok(Some(event)) => event,
                Ok(None) => break,
                Err(_) => {
                    if let Some(object) = &current {
                        if let Some(done) = decide(Seen::Present(object))? {
                            return Ok(done);
                        }
                    }
                    continue;
                }
            };
            match event {
                Ok(WatchEvent::Added(object)) | Ok(WatchEvent::Modified(object)) => {
                    version = object.metadata.resource_version.clone().unwrap_or(version);
                    if let Some(done) = decide(Seen::Present(&object))? {
                        return Ok(done);
                    }
                    current = Some(object);
                }
                Ok(WatchEvent::Deleted(_)) => {
                    if let Some(done) = decide(Seen::Deleted)? {
                        return Ok(done);
                    }
                    break;
                }
                Ok(WatchEvent::Bookmark(bookmark)) => version = bookmark.metadata.resource_version,
                Ok(WatchEvent::Error(status)) if status.code == 410 => {
                    tracing::info!(
                        "watch expired (410 Gone: {}); reading the {} again",
                        status.message,
                        watched.describe
                    );
                    break;
                }
                // Not 410: the server is in trouble; read again after a pause.
                Ok(WatchEvent::Error(status)) => {
                    tracing::warn!(
                        "watch error {}: {}; reading the {} again in {pause:?}",
                        status.code,
                        status.message,
                        watched.describe
                    );
                    tokio::time::sleep(pause).await;
                    break;
                }
                Err(e) => {
                    tracing::warn!(
                        "watch interrupted: {}; reading the {} again in {pause:?}",
                        step_kit::error_chain(&e),
                        watched.describe
                    );
                    tokio::time::sleep(pause).await;
                    break;
                }
            }
        }
        tracing::debug!("watch ended at resource version {version}");
    }
}
