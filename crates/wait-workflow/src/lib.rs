//! wait-workflow: waits for an Argo Workflow to finish, within a deadline, logging its progress,
//! and says why it failed.
//!
//! It watches the Workflow (kube-access's `wait_for`: from the resource version of the list it
//! read, again after 410 Gone, polling when watching fails), keeps waiting while the Workflow does
//! not exist yet (the parent may create it a moment later), and stops when it is deleted.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::time::Duration;

use clap::Parser;
use kube::api::DynamicObject;

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

async fn wait_workflow(args: Args, ctx: Context) -> Result<(), StepError> {
    let watched = kube_access::Watched::new(
        &args.kube,
        ("argoproj.io", "v1alpha1", "Workflow", "workflows"),
        &args.namespace,
        &args.name,
        args.poll_interval,
    )
    .await?;
    let mut waiter = Waiter {
        name: args.name.clone(),
        namespace: args.namespace.clone(),
        last: None,
    };
    kube_access::wait_for(&watched, |seen| match seen {
        kube_access::Seen::Absent => {
            tracing::info!("{} does not exist yet; waiting", watched.describe);
            Ok(None)
        }
        kube_access::Seen::Deleted => Err(StepError::precondition(format!(
            "{} was deleted while waiting",
            watched.describe
        ))),
        kube_access::Seen::Present(workflow) => match waiter.update(&ctx, workflow)? {
            Verdict::Waiting => Ok(None),
            Verdict::Done(result) => result.map(Some),
        },
    })
    .await
}
