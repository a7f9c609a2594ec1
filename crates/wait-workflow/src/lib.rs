//! wait-workflow: waits for an Argo Workflow to finish, within a deadline, logging its progress,
//! and says why it failed.
//!
//! It watches the Workflow (from the resource version of the list it read; after 410 Gone it reads it again),
//! falls back to polling when watching fails, keeps waiting while the Workflow does not exist yet
//! (the parent may create it a moment later), and stops when it is deleted.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::time::Duration;

use clap::Parser;
use futures_util::StreamExt;
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, WatchEvent, WatchParams,
};
use serde_json::{json, Value};
use step_kit::{escape_untrusted, CommonArgs, Context, StepArgs, StepError};

pub const NAME: &str = "wait-workflow";

/// The files this step writes in `--outputs-dir`.
pub const OUTPUTS: &[&str] = &["phase", "message", "progress", "failed-nodes"];

const EXAMPLE: &str = "\
Example:
  wait-workflow --name sbx-pr-42-data --namespace apps-sbx-pr-42 --timeout 45m
  # outputs: phase=Succeeded message= progress=7/7 failed-nodes=[]

Exit codes: 0 Succeeded; 2 invalid flags; 3 Failed or Error (the message and each failed node
logged), deleted while waiting, or access refused (401/403, with the RBAC needed); 4 the deadline.";

/// Wait for an Argo Workflow to finish.
///
/// Watches Workflow NAME in NAMESPACE until it succeeds (exit 0) or fails (exit 3, with its
/// message and each failed node's name, message and exit code). A Workflow not created yet is
/// waited for; one deleted while waiting is a failure. Each change logs the phase, the progress
/// (`3/7`) and the nodes running, and writes the progress to `$ARGO_PROGRESS_FILE`.
#[derive(Debug, Parser)]
#[command(name = NAME, version, after_help = EXAMPLE)]
pub struct Args {
    /// The Workflow's name.
    #[arg(long, value_name = "NAME")]
    pub name: String,

    /// Its namespace.
    #[arg(long, value_name = "NS")]
    pub namespace: String,

    /// How often to read the Workflow when it does not exist yet or watching fails: at most one
    /// API request per interval then.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = step_kit::parse_duration)]
    pub poll_interval: Duration,

    #[command(flatten)]
    pub kube: kube_access::KubeFlags,

    #[command(flatten)]
    pub common: CommonArgs,
}

impl StepArgs for Args {
    const DEFAULT_TIMEOUT: Duration = Duration::from_secs(45 * 60);
    fn common(&self) -> &CommonArgs {
        &self.common
    }
}

/// Runs the step with `argv` (the first item is the program name); returns the exit code.
pub fn run(argv: impl IntoIterator<Item = OsString>) -> u8 {
    step_kit::run_from(NAME, argv, wait_workflow)
}

/// What the step tells about a Workflow when it changes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Seen {
    phase: String,
    progress: String,
    running: BTreeSet<String>,
}

/// Where the wait stands after an update.
enum Verdict {
    Waiting,
    Done(Result<(), StepError>),
}

struct Waiter {
    name: String,
    namespace: String,
    last: Option<Seen>,
}

impl Waiter {
    /// Logs a change, writes progress, and decides whether the wait is over.
    fn update(&mut self, ctx: &Context, workflow: &DynamicObject) -> Result<Verdict, StepError> {
        let status = workflow.data.get("status").cloned().unwrap_or(Value::Null);
        let text = |key: &str| status[key].as_str().unwrap_or_default().to_owned();
        let nodes: Vec<&Value> = status["nodes"]
            .as_object()
            .map(|m| m.values().collect())
            .unwrap_or_default();
        let seen = Seen {
            phase: text("phase"),
            progress: text("progress"),
            running: nodes
                .iter()
                .filter(|n| n["phase"] == "Running" && n["type"] == "Pod")
                .filter_map(|n| n["displayName"].as_str().or(n["name"].as_str()))
                .map(str::to_owned)
                .collect(),
        };
        if self.last.as_ref() != Some(&seen) {
            let running: Vec<&str> = seen.running.iter().map(String::as_str).collect();
            tracing::info!(
                phase = %seen.phase,
                progress = %seen.progress,
                "workflow {}/{}: {} {} running: [{}]",
                self.namespace,
                self.name,
                if seen.phase.is_empty() { "Pending" } else { &seen.phase },
                seen.progress,
                running.join(", ")
            );
            step_kit::report_argo_progress(&seen.progress);
            self.last = Some(seen.clone());
        }
        match seen.phase.as_str() {
            "Succeeded" => {
                write_outputs(ctx, &status, &[])?;
                Ok(Verdict::Done(Ok(())))
            }
            "Failed" | "Error" => {
                let failed: Vec<Value> = nodes
                    .iter()
                    .filter(|n| matches!(n["phase"].as_str(), Some("Failed" | "Error")))
                    .filter(|n| n["type"] == "Pod" || n["message"].is_string())
                    .map(|n| {
                        json!({
                            "name": n["displayName"].as_str().or(n["name"].as_str()).unwrap_or_default(),
                            "message": n["message"].as_str().unwrap_or_default(),
                            "exitCode": n["outputs"]["exitCode"].as_str(),
                        })
                    })
                    .collect();
                for node in &failed {
                    tracing::error!(
                        "node {} failed: {} (exit code {})",
                        escape_untrusted(node["name"].as_str().unwrap_or_default()),
                        escape_untrusted(node["message"].as_str().unwrap_or_default()),
                        node["exitCode"].as_str().unwrap_or("none")
                    );
                }
                write_outputs(ctx, &status, &failed)?;
                Ok(Verdict::Done(Err(StepError::precondition(format!(
                    "workflow {}/{} ended {}: {}",
                    self.namespace,
                    self.name,
                    seen.phase,
                    escape_untrusted(&text("message"))
                )))))
            }
            _ => Ok(Verdict::Waiting),
        }
    }
}

fn write_outputs(ctx: &Context, status: &Value, failed: &[Value]) -> Result<(), StepError> {
    let text = |key: &str| status[key].as_str().unwrap_or_default().to_owned();
    ctx.outputs.set("phase", &text("phase"))?;
    ctx.outputs.set("message", &text("message"))?;
    ctx.outputs.set("progress", &text("progress"))?;
    ctx.outputs
        .set_json("failed-nodes", &Value::Array(failed.to_vec()))
}

/// Maps an API error: 401/403 are preconditions with the RBAC hint; the rest is transient.
fn api_error(args: &Args, e: kube::Error) -> StepError {
    kube_access::api_error(
        e,
        "reading the workflow",
        &format!(
            "grant get, list and watch on workflows.argoproj.io in namespace {}",
            args.namespace
        ),
    )
}

fn is_access_refused(e: &StepError) -> bool {
    e.kind == step_kit::ErrorKind::Precondition
}

/// How long a 401 or 403 is ridden out once the API has let this step read the workflow: a
/// restarting API server refuses requests for a moment while its authorizer's caches fill
/// (measured against kube-apiserver 1.36: a 403 right after /readyz turned ready). A refusal on
/// the first request is reported at once.
const ACCESS_GRACE: Duration = Duration::from_secs(60);

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

async fn wait_workflow(args: Args, ctx: Context) -> Result<(), StepError> {
    let checks = [
        (
            "--name",
            &args.name,
            naming::check_dns_subdomain(&args.name),
        ),
        (
            "--namespace",
            &args.namespace,
            naming::check_dns_label(&args.namespace),
        ),
    ];
    for (flag, value, result) in checks {
        result.map_err(|rule| {
            StepError::invalid(format!("{flag} {}: {rule}", escape_untrusted(value)))
        })?;
    }
    let client = args.kube.client().await?;
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("argoproj.io", "v1alpha1", "Workflow"),
        "workflows",
    );
    let api: Api<DynamicObject> = Api::namespaced_with(client, &args.namespace, &resource);
    let mut waiter = Waiter {
        name: args.name.clone(),
        namespace: args.namespace.clone(),
        last: None,
    };
    let mut existed = false;
    let mut polling = false;
    let mut access = AccessRefusals {
        granted_once: false,
        refused_since: None,
    };
    let by_name = ListParams::default().fields(&format!("metadata.name={}", args.name));
    loop {
        // Read it (a re-list: at start, after a watch ended, after 410 Gone, and when polling).
        // A list, not a get: the watch starts from the list's resource version, the server's
        // current one. The object's own version can be older than anything a freshly started API
        // server's watch cache holds, and a watch from there answers 410 Gone until the object
        // changes (seen against kube-apiserver 1.36 after a restart).
        let (workflow, listed_at) = match api.list(&by_name).await {
            Ok(list) => {
                access.granted();
                let version = list.metadata.resource_version.clone().unwrap_or_default();
                (list.items.into_iter().next(), version)
            }
            Err(e) => {
                let err = api_error(&args, e);
                if is_access_refused(&err) {
                    access.refused(err)?;
                } else {
                    tracing::warn!("{err}; reading again in {:?}", args.poll_interval);
                }
                tokio::time::sleep(args.poll_interval).await;
                continue;
            }
        };
        let Some(workflow) = workflow else {
            if existed {
                return Err(StepError::precondition(format!(
                    "workflow {}/{} was deleted while waiting",
                    args.namespace, args.name
                )));
            }
            tracing::info!(
                "workflow {}/{} does not exist yet; waiting",
                args.namespace,
                args.name
            );
            tokio::time::sleep(args.poll_interval).await;
            continue;
        };
        existed = true;
        if let Verdict::Done(result) = waiter.update(&ctx, &workflow)? {
            return result;
        }
        if polling {
            tokio::time::sleep(args.poll_interval).await;
            continue;
        }
        let mut version = listed_at;
        let params = WatchParams::default()
            .fields(&format!("metadata.name={}", args.name))
            .timeout(290);
        let mut stream = match api.watch(&params, &version).await {
            Ok(stream) => stream.boxed(),
            Err(e) => {
                // The server answered, and not with a watch: it does not serve them (a proxy in
                // between, say); poll from now on. A connection that failed (the server away for
                // a moment) is read and watched again after the interval.
                let answered = matches!(e, kube::Error::Api(_));
                let err = api_error(&args, e);
                if is_access_refused(&err) {
                    access.refused(err)?;
                } else if answered {
                    tracing::warn!(
                        "cannot watch ({err}); polling every {:?}",
                        args.poll_interval
                    );
                    polling = true;
                    continue;
                } else {
                    tracing::warn!(
                        "cannot watch ({err}); trying again in {:?}",
                        args.poll_interval
                    );
                }
                tokio::time::sleep(args.poll_interval).await;
                continue;
            }
        };
        while let Some(event) = stream.next().await {
            match event {
                Ok(WatchEvent::Added(object)) | Ok(WatchEvent::Modified(object)) => {
                    version = object.metadata.resource_version.clone().unwrap_or(version);
                    if let Verdict::Done(result) = waiter.update(&ctx, &object)? {
                        return result;
                    }
                }
                Ok(WatchEvent::Deleted(_)) => {
                    return Err(StepError::precondition(format!(
                        "workflow {}/{} was deleted while waiting",
                        args.namespace, args.name
                    )));
                }
                Ok(WatchEvent::Bookmark(bookmark)) => version = bookmark.metadata.resource_version,
                Ok(WatchEvent::Error(status)) if status.code == 410 => {
                    tracing::info!(
                        "watch expired (410 Gone: {}); reading the workflow again",
                        status.message
                    );
                    break;
                }
                // Not 410: the server is in trouble; read again after a pause, never in a tight loop.
                Ok(WatchEvent::Error(status)) => {
                    tracing::warn!(
                        "watch error {}: {}; reading the workflow again in {:?}",
                        status.code,
                        status.message,
                        args.poll_interval
                    );
                    tokio::time::sleep(args.poll_interval).await;
                    break;
                }
                Err(e) => {
                    tracing::warn!(
                        "watch interrupted: {}; reading the workflow again in {:?}",
                        step_kit::error_chain(&e),
                        args.poll_interval
                    );
                    tokio::time::sleep(args.poll_interval).await;
                    break;
                }
            }
        }
        tracing::debug!("watch ended at resource version {version}");
    }
}
