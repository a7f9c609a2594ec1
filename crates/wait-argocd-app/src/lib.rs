//! wait-argocd-app: waits until an Argo CD Application is Synced and Healthy at the expected
//! revision (the environment branch's commit), watching the Application resource (kube-access's
//! `wait_for`, as wait-workflow waits on a Workflow), and says why when it will not get there.

use std::ffi::OsString;
use std::time::Duration;

use clap::Parser;
use kube_access::Seen;
use serde_json::Value;
use step_kit::{escape_untrusted, CommonArgs, Context, StepArgs, StepError};

pub const NAME: &str = "wait-argocd-app";

/// The files this step writes in `--outputs-dir`.
pub const OUTPUTS: &[&str] = &["health", "sync", "revision"];

const EXAMPLE: &str = "\
Example:
  wait-argocd-app --name sbx-pr-42 --namespace argocd \\
    --revision 3f2a9c41d8e07b6a5c4f3e2d1c0b9a8f7e6d5c4b --timeout 20m
  # outputs: health=Healthy sync=Synced revision=3f2a9c41d8e07b6a5c4f3e2d1c0b9a8f7e6d5c4b

Exit codes: 0 Synced and Healthy at the revision; 2 invalid flags; 3 Degraded, a failed sync of
the revision, an invalid spec, resources Missing after the sync, deleted while waiting, or access
refused (with the RBAC needed); 4 the deadline.";

/// Wait for an Argo CD Application to be Synced and Healthy at a revision.
///
/// Watches Application NAME in NAMESPACE (Argo CD's, `argocd` by default) until its sync status
/// is Synced at --revision (when given) and its health Healthy: exit 0. A Degraded application,
/// a failed sync operation of the revision or an invalid spec is exit 3 with the resources'
/// messages; resources still Missing --missing-grace after the sync, too. An Application not
/// created yet (the app-of-apps syncs it a moment later) is waited for. Every change logs the
/// sync, the health and the resources healthy (`3/5`, also written to `$ARGO_PROGRESS_FILE`).
#[derive(Debug, Parser)]
#[command(name = NAME, version, after_help = EXAMPLE)]
pub struct Args {
    /// The Application's name (validate-params' `app-name`).
    #[arg(long, value_name = "NAME")]
    pub name: String,

    /// Argo CD's namespace, where its Applications live.
    #[arg(long, value_name = "NS", default_value = "argocd")]
    pub namespace: String,

    /// The commit the Application must be synced to (patch-kustomize's `commit`); without it, any.
    #[arg(long, value_name = "SHA")]
    pub revision: Option<String>,

    /// How long resources may stay Missing once the revision is synced.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = step_kit::parse_duration)]
    pub missing_grace: Duration,

    /// How often to read the Application when it does not exist yet or watching fails.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = step_kit::parse_duration)]
    pub poll_interval: Duration,

    #[command(flatten)]
    pub kube: kube_access::KubeFlags,

    #[command(flatten)]
    pub common: CommonArgs,
}

impl StepArgs for Args {
    const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30 * 60);
    fn common(&self) -> &CommonArgs {
        &self.common
    }
}

/// Runs the step with `argv` (the first item is the program name); returns the exit code.
pub fn run(argv: impl IntoIterator<Item = OsString>) -> u8 {
    step_kit::run_from(NAME, argv, wait_argocd_app)
}

/// What the step reads from an Application's status.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Observed {
    sync: String,
    health: String,
    revision: String,
    operation: String,
    healthy: usize,
    resources: usize,
}

impl Observed {
    fn of(app: &Value) -> Observed {
        let status = &app["status"];
        let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
        let resources = status["resources"].as_array().cloned().unwrap_or_default();
        Observed {
            sync: text(&status["sync"]["status"]),
            health: text(&status["health"]["status"]),
            // One source: `revision`; several: `revisions`, the first being the environment's.
            revision: status["sync"]["revision"]
                .as_str()
                .or(status["sync"]["revisions"][0].as_str())
                .unwrap_or_default()
                .to_owned(),
            operation: text(&status["operationState"]["phase"]),
            healthy: resources
                .iter()
                .filter(|r| r["health"]["status"] == "Healthy")
                .count(),
            resources: resources.len(),
        }
    }

    fn at(&self, wanted: Option<&str>) -> bool {
        wanted.is_none_or(|w| !self.revision.is_empty() && self.revision.starts_with(w))
    }
}

/// Where the wait stands after a version of the Application.
enum Verdict {
    Waiting,
    Ready,
    Failed(String),
}

/// The resources of `list` in `state`, with their messages: `Deployment/web: message`.
fn resources_in(list: &Value, pick: impl Fn(&Value) -> Option<String>) -> Vec<String> {
    list.as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| {
            let message = pick(r)?;
            let name = format!(
                "{}/{}",
                r["kind"].as_str().unwrap_or("?"),
                r["name"].as_str().unwrap_or("?")
            );
            Some(if message.is_empty() {
                escape_untrusted(&name)
            } else {
                format!(
                    "{}: {}",
                    escape_untrusted(&name),
                    escape_untrusted(&message)
                )
            })
        })
        .collect()
}

fn judge(app: &Value, seen: &Observed, wanted: Option<&str>, missing_too_long: bool) -> Verdict {
    let status = &app["status"];
    for condition in status["conditions"].as_array().into_iter().flatten() {
        if condition["type"] == "InvalidSpecError" {
            return Verdict::Failed(format!(
                "the Application's spec is invalid: {}",
                escape_untrusted(condition["message"].as_str().unwrap_or_default())
            ));
        }
    }
    let operation = &status["operationState"];
    let operation_revision = operation["syncResult"]["revision"]
        .as_str()
        .or(operation["operation"]["sync"]["revision"].as_str())
        .unwrap_or_default();
    let operation_of_wanted =
        wanted.is_none_or(|w| !operation_revision.is_empty() && operation_revision.starts_with(w));
    if matches!(seen.operation.as_str(), "Failed" | "Error") && operation_of_wanted {
        let failed = resources_in(&operation["syncResult"]["resources"], |r| {
            (r["status"] == "SyncFailed" || r["hookPhase"] == "Failed")
                .then(|| r["message"].as_str().unwrap_or_default().to_owned())
        });
        return Verdict::Failed(format!(
            "the sync of {} {}: {}{}",
            short(operation_revision),
            seen.operation.to_lowercase(),
            escape_untrusted(operation["message"].as_str().unwrap_or_default()),
            if failed.is_empty() {
                String::new()
            } else {
                format!("; {}", failed.join("; "))
            }
        ));
    }
    if !(seen.at(wanted) && seen.sync == "Synced") {
        return Verdict::Waiting;
    }
    match seen.health.as_str() {
        "Healthy" => Verdict::Ready,
        "Degraded" => {
            let degraded = resources_in(&status["resources"], |r| {
                (r["health"]["status"] == "Degraded").then(|| {
                    r["health"]["message"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned()
                })
            });
            Verdict::Failed(format!(
                "Degraded at {}: {}",
                short(&seen.revision),
                if degraded.is_empty() {
                    escape_untrusted(status["health"]["message"].as_str().unwrap_or_default())
                } else {
                    degraded.join("; ")
                }
            ))
        }
        "Missing" if missing_too_long => {
            let missing = resources_in(&status["resources"], |r| {
                (r["health"]["status"] == "Missing" || r["status"] == "Missing").then(String::new)
            });
            Verdict::Failed(format!(
                "resources still Missing after the sync of {}: {}",
                short(&seen.revision),
                missing.join("; ")
            ))
        }
        _ => Verdict::Waiting,
    }
}

fn short(revision: &str) -> &str {
    &revision[..revision.len().min(12)]
}

async fn wait_argocd_app(args: Args, ctx: Context) -> Result<(), StepError> {
    let wanted = args.revision.clone().filter(|r| !r.is_empty());
    if let Some(revision) = &wanted {
        naming::check_commit_id(revision, true).map_err(|rule| {
            StepError::invalid(format!("--revision {}: {rule}", escape_untrusted(revision)))
        })?;
    }
    let watched = kube_access::Watched::new(
        &args.kube,
        ("argoproj.io", "v1alpha1", "Application", "applications"),
        &args.namespace,
        &args.name,
        args.poll_interval,
    )
    .await?;
    let mut last: Option<Observed> = None;
    let mut missing_since: Option<tokio::time::Instant> = None;
    let observed = kube_access::wait_for(&watched, |seen| {
        let app = match seen {
            Seen::Absent => {
                tracing::info!("{} does not exist yet; waiting", watched.describe);
                return Ok(None);
            }
            Seen::Deleted => {
                return Err(StepError::precondition(format!(
                    "{} was deleted while waiting",
                    watched.describe
                )))
            }
            Seen::Present(app) => serde_json::to_value(app).unwrap_or_default(),
        };
        let seen = Observed::of(&app);
        if last.as_ref() != Some(&seen) {
            let want = match (&wanted, seen.at(wanted.as_deref())) {
                (Some(w), false) => format!(" (waiting for {})", short(w)),
                _ => String::new(),
            };
            let progress = format!("{}/{}", seen.healthy, seen.resources);
            tracing::info!(
                sync = %seen.sync,
                health = %seen.health,
                "{}: {} at {}{want}, {}, {progress} resources healthy{}",
                watched.describe,
                or_unknown(&seen.sync),
                or_unknown(short(&seen.revision)),
                or_unknown(&seen.health),
                if seen.operation.is_empty() {
                    String::new()
                } else {
                    format!(", last sync operation {}", seen.operation)
                }
            );
            if seen.resources > 0 {
                step_kit::report_argo_progress(&progress);
            }
            last = Some(seen.clone());
        }
        let synced_missing =
            seen.at(wanted.as_deref()) && seen.sync == "Synced" && seen.health == "Missing";
        if !synced_missing {
            missing_since = None;
        }
        let since = *missing_since.get_or_insert_with(tokio::time::Instant::now);
        let too_long = synced_missing && since.elapsed() >= args.missing_grace;
        match judge(&app, &seen, wanted.as_deref(), too_long) {
            Verdict::Waiting => Ok(None),
            Verdict::Ready => Ok(Some(seen)),
            Verdict::Failed(why) => {
                write_outputs(&ctx, &seen)?;
                Err(StepError::precondition(format!(
                    "{}: {why}",
                    watched.describe
                )))
            }
        }
    })
    .await?;
    tracing::info!(
        "{} is Synced and Healthy at {}",
        watched.describe,
        short(&observed.revision)
    );
    write_outputs(&ctx, &observed)
}

fn or_unknown(s: &str) -> &str {
    if s.is_empty() {
        "(none yet)"
    } else {
        s
    }
}

fn write_outputs(ctx: &Context, seen: &Observed) -> Result<(), StepError> {
    ctx.outputs.set("health", &seen.health)?;
    ctx.outputs.set("sync", &seen.sync)?;
    ctx.outputs.set("revision", &seen.revision)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn app(status: Value) -> Value {
        json!({ "status": status })
    }

    #[test]
    fn ready_only_at_the_revision() {
        let a = app(
            json!({"sync": {"status": "Synced", "revision": "abc1234def"},
                           "health": {"status": "Healthy"}}),
        );
        let seen = Observed::of(&a);
        assert!(matches!(
            judge(&a, &seen, Some("abc1234"), false),
            Verdict::Ready
        ));
        assert!(matches!(
            judge(&a, &seen, Some("fff0000"), false),
            Verdict::Waiting
        ));
        assert!(matches!(judge(&a, &seen, None, false), Verdict::Ready));
    }

    #[test]
    fn a_failed_sync_of_an_older_revision_is_not_this_ones() {
        let a = app(
            json!({"sync": {"status": "OutOfSync", "revision": "0ld0000"},
                           "health": {"status": "Healthy"},
                           "operationState": {"phase": "Failed", "message": "one or more objects failed to apply",
                               "syncResult": {"revision": "0ld0000", "resources": [
                                   {"kind": "Deployment", "name": "web", "status": "SyncFailed", "message": "invalid image"}]}}}),
        );
        let seen = Observed::of(&a);
        assert!(matches!(
            judge(&a, &seen, Some("abc1234"), false),
            Verdict::Waiting
        ));
        match judge(&a, &seen, Some("0ld0000"), false) {
            Verdict::Failed(why) => assert!(
                why.contains("\"Deployment/web\": \"invalid image\""),
                "{why}"
            ),
            _ => panic!("not failed"),
        }
    }
}
