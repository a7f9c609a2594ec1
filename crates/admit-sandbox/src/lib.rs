//! admit-sandbox: a cap on live sandboxes with a fair queue. A sandbox is live from its admission
//! (first in create-sandbox) until delete-sandbox releases it (`--release`, last). At the cap a
//! request waits in a queue ordered by when its pull request asked (first asked, first served),
//! or is refused (`--when-full refuse`). The count and the queue live in one ConfigMap in the
//! workflows' namespace, read and replaced as a whole with compare-and-swap on its
//! `resourceVersion`: two requests racing for the last slot never both get it (the loser's write
//! is refused with 409 and it decides again). A waiting request renews its place; one whose run
//! crashed stops renewing and loses it after `--lease`. A sandbox put to sleep frees its slot
//! (`--sleep`); waking it is a request like a creation's.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::time::{Duration, SystemTime};

use clap::{Parser, ValueEnum};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ObjectMeta, PostParams};
use step_kit::{escape_untrusted, CommonArgs, Context, StepArgs, StepError};

pub use admission::{Admission, Admitted, Asleep, Decision, Queued};

pub const NAME: &str = "admit-sandbox";

/// The files this step writes in `--outputs-dir`.
pub const OUTPUTS: &[&str] = &[
    "admitted",
    "live",
    "position",
    "queued",
    "released",
    "asleep",
    "put-to-sleep",
    "put-to-sleep-pr",
];

const EXAMPLE: &str = "\
Example:
  admit-sandbox --environment sbx-pr-42 --pr-number 42 --requested-at 2026-12-01T09:00:00Z \\
    --namespace argo --max-sandboxes 10
  # queued, position 2 of 3 (10 of 10 live sandboxes) ... admitted: 10 of 10 live
  # outputs: admitted=true live=10 position=0 queued=2 released=false
  admit-sandbox --environment sbx-pr-42 --namespace argo --release   # delete-sandbox, last
  admit-sandbox --environment sbx-pr-42 --namespace argo --sleep     # sleep-sandbox: frees the slot

With --when-full sleep-idlest, first in line at the cap: the idlest live sandbox (the oldest last
push or wake) is recorded asleep and its slot taken; put-to-sleep names it for sleep-sandbox.

Exit codes: 0 admitted (now or before), released, or recorded asleep; 2 invalid flags; 3 the cap reached with
--when-full refuse, or access to the ConfigMap refused (with the RBAC needed); 4 the Kubernetes
API unreachable, or the deadline while queued (a retry keeps the place in the queue).";

/// What a request does at the cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum WhenFull {
    /// Wait in the queue until a slot is free.
    Wait,
    /// Exit 3 with the reason.
    Refuse,
    /// First in line, put the idlest live sandbox to sleep (the outputs name it: the workflow
    /// starts its sleep-sandbox) and take its slot; behind others, wait like `wait`.
    SleepIdlest,
}

/// Admit a sandbox under a cap on live sandboxes, or queue it; or release its slot.
///
/// Counts the admitted sandboxes in ConfigMap --configmap of --namespace (the workflows'); under
/// --max-sandboxes the sandbox is admitted at once, at it the request waits (first asked, first
/// served: --requested-at, the time its pull request was opened or labelled) or is refused.
/// Admitted before (a re-run): nothing changes. --release frees the slot (delete-sandbox, last).
/// Every change is a compare-and-swap on the ConfigMap's resourceVersion. With --report-position
/// a waiting request ends whenever its position changes (the workflow shows it and calls again).
#[derive(Debug, Parser)]
#[command(name = NAME, version, after_help = EXAMPLE)]
pub struct Args {
    /// The sandbox (validate-params' `environment`).
    #[arg(long, value_name = "NAME")]
    pub environment: String,

    /// Its pull request (shown in the ConfigMap and the log).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub pr_number: u64,

    /// When the pull request asked for the sandbox (RFC 3339: the webhook's
    /// `pull_request.updated_at`, its open or label time); the queue's order. Default: now.
    #[arg(long, value_name = "TIME")]
    pub requested_at: Option<String>,

    /// The cap on live sandboxes; 0: no cap (admissions are still counted).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub max_sandboxes: usize,

    /// At the cap: wait in the queue, or refuse (exit 3).
    #[arg(long, value_enum, default_value = "wait")]
    pub when_full: WhenFull,

    /// Free the sandbox's slot (or take its request out of the queue) instead.
    #[arg(long)]
    pub release: bool,

    /// Record the sandbox asleep instead: its slot is freed for the next in line; waking it
    /// later is a request like any other (it queues at the cap).
    #[arg(long)]
    pub sleep: bool,

    /// The queue position the pull request's card shows (0: none yet): a waiting request ends
    /// (exit 0, admitted=false) as soon as its position differs, so that the workflow can show the
    /// new one and call this step again; it keeps its place meanwhile. Without it, the step waits
    /// until admitted.
    #[arg(long, value_name = "N")]
    pub report_position: Option<usize>,

    /// The namespace of the ConfigMap (the workflows': `{{workflow.namespace}}`).
    #[arg(long, value_name = "NS")]
    pub namespace: String,

    /// The ConfigMap holding the admissions and the queue.
    #[arg(long, value_name = "NAME", default_value = admission::CONFIGMAP)]
    pub configmap: String,

    /// A waiting request not renewed this long is dropped (its run is gone).
    #[arg(long, value_name = "DURATION", default_value = "2m", value_parser = step_kit::parse_duration)]
    pub lease: Duration,

    /// How often a waiting request reads the queue.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = step_kit::parse_duration)]
    pub poll_interval: Duration,

    /// Decide and log, change nothing (a queued request is not added).
    #[arg(long)]
    pub dry_run: bool,

    #[command(flatten)]
    pub kube: kube_access::KubeFlags,

    #[command(flatten)]
    pub common: CommonArgs,
}

impl StepArgs for Args {
    // A queue can be long: the template's deadline bounds it too.
    const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60 * 60);
    fn common(&self) -> &CommonArgs {
        &self.common
    }
}

/// Runs the step with `argv` (the first item is the program name); returns the exit code.
pub fn run(argv: impl IntoIterator<Item = OsString>) -> u8 {
    step_kit::run_from(NAME, argv, admit)
}

fn check(args: &Args) -> Result<SystemTime, StepError> {
    if args.release && args.sleep {
        return Err(StepError::invalid(
            "--release and --sleep: one or the other (a deleted sandbox is not asleep)",
        ));
    }
    naming::check_dns_label(&args.environment).map_err(|rule| {
        StepError::invalid(format!(
            "--environment {}: {rule}",
            escape_untrusted(&args.environment)
        ))
    })?;
    naming::check_dns_label(&args.namespace).map_err(|rule| {
        StepError::invalid(format!(
            "--namespace {}: {rule}",
            escape_untrusted(&args.namespace)
        ))
    })?;
    naming::check_dns_subdomain(&args.configmap).map_err(|rule| {
        StepError::invalid(format!(
            "--configmap {}: {rule}",
            escape_untrusted(&args.configmap)
        ))
    })?;
    if args.poll_interval.is_zero() || args.lease < 3 * args.poll_interval {
        return Err(StepError::invalid(
            "--lease must be at least three --poll-interval (a waiting request renews itself \
             while it polls)",
        ));
    }
    match args.requested_at.as_deref().filter(|t| !t.is_empty()) {
        Some(t) => humantime::parse_rfc3339_weak(t).map_err(|e| {
            StepError::invalid(format!("--requested-at {}: {e}", escape_untrusted(t)))
        }),
        None => Ok(SystemTime::now()),
    }
}

const GRANT: &str = "grant get, create and update on configmaps in the workflows' namespace \
                     (rbac/workflows.yaml)";

/// The ConfigMap (None when it does not exist yet) and the state it holds.
async fn read(
    api: &Api<ConfigMap>,
    name: &str,
) -> Result<(Option<ConfigMap>, Admission), StepError> {
    let found = api
        .get_opt(name)
        .await
        .map_err(|e| kube_access::api_error(e, "reading the admission ConfigMap", GRANT))?;
    let admission = found
        .as_ref()
        .and_then(|cm| cm.data.as_ref())
        .map(Admission::from_data)
        .unwrap_or_default();
    Ok((found, admission))
}

/// Writes the state if the ConfigMap is still the version read; false when another request
/// changed it first (409, or 409 AlreadyExists for a first creation): read and decide again.
async fn write(
    api: &Api<ConfigMap>,
    name: &str,
    read: Option<ConfigMap>,
    admission: &Admission,
) -> Result<bool, StepError> {
    let data: BTreeMap<String, String> = admission.to_data();
    let result = match read {
        Some(mut cm) => {
            // The resourceVersion read stays in the metadata: the API server refuses the
            // replacement with 409 Conflict when the ConfigMap changed since.
            cm.data = Some(data);
            api.replace(name, &PostParams::default(), &cm).await
        }
        None => {
            let cm = ConfigMap {
                metadata: ObjectMeta {
                    name: Some(name.to_owned()),
                    labels: Some(BTreeMap::from([(
                        "app.kubernetes.io/managed-by".to_owned(),
                        "sandbox-steps".to_owned(),
                    )])),
                    ..Default::default()
                },
                data: Some(data),
                ..Default::default()
            };
            api.create(&PostParams::default(), &cm).await
        }
    };
    match result {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
        Err(e) => Err(kube_access::api_error(
            e,
            "writing the admission ConfigMap",
            GRANT,
        )),
    }
}

async fn admit(args: Args, ctx: Context) -> Result<(), StepError> {
    let requested = check(&args)?;
    let client = args.kube.client().await?;
    let api: Api<ConfigMap> = Api::namespaced(client, &args.namespace);
    let env = args.environment.as_str();
    let name = args.configmap.as_str();
    let cap = args.max_sandboxes;
    let cap_text = if cap == 0 {
        "no cap".to_owned()
    } else {
        format!("cap {cap}")
    };
    let mut requests = 0u32;
    let mut shown: Option<Decision> = None;
    ctx.outputs.set("released", "false")?;
    ctx.outputs.set("asleep", "false")?;
    ctx.outputs.set("put-to-sleep", "")?;
    ctx.outputs.set("put-to-sleep-pr", "")?;
    loop {
        let (found, mut state) = read(&api, name).await?;
        requests += 1;
        let now = SystemTime::now();
        let stale = state.drop_stale(now, args.lease);
        for env in &stale {
            tracing::info!(
                "dropped the request of {env} from the queue: not renewed for {}",
                humantime::format_duration(args.lease)
            );
        }
        // Dropping a stale request is a change to write, whatever else is decided.
        let dropped = !stale.is_empty();

        // --sleep and --release: one change of the state, written once (nothing to change: the
        // stale requests dropped are still written).
        if args.sleep || args.release {
            let (changed, done, unchanged) = if args.sleep {
                (
                    state.sleep(env, args.pr_number, now),
                    format!("{env} asleep, its slot freed"),
                    "is recorded asleep already",
                )
            } else {
                (
                    state.release(env),
                    format!("released {env}"),
                    "holds no slot, is not queued or asleep: nothing to release",
                )
            };
            if !changed {
                tracing::info!("{env} {unchanged}");
            } else if args.dry_run {
                tracing::info!("dry run, nothing written: {done}");
            }
            if (changed || dropped) && !args.dry_run {
                requests += 1;
                if !write(&api, name, found, &state).await? {
                    continue;
                }
                if changed {
                    tracing::info!(
                        "{done}: {} live, {} queued ({requests} API requests)",
                        state.admitted.len(),
                        state.queued.len()
                    );
                }
            }
            if args.sleep {
                ctx.outputs.set("asleep", "true")?;
            } else {
                ctx.outputs
                    .set("released", if changed { "true" } else { "false" })?;
            }
            return outputs(&ctx, &state, false, 0);
        }

        let mut put_to_sleep = None;
        let (decision, changed) = match args.when_full {
            WhenFull::Wait if !args.dry_run => {
                state.request(env, args.pr_number, requested, cap, now, args.lease / 3)
            }
            WhenFull::SleepIdlest if !args.dry_run => {
                let (decision, slept, changed) = state.request_or_sleep_idlest(
                    env,
                    args.pr_number,
                    requested,
                    cap,
                    now,
                    args.lease / 3,
                );
                put_to_sleep = slept;
                (decision, changed)
            }
            WhenFull::SleepIdlest => {
                // A dry run: decided on a copy, nothing written.
                let mut trial = state.clone();
                let (decision, slept, _) = trial.request_or_sleep_idlest(
                    env,
                    args.pr_number,
                    requested,
                    cap,
                    now,
                    args.lease / 3,
                );
                if let Some((victim, _)) = slept {
                    tracing::info!(
                        "dry run: {victim} would be put to sleep to make room for {env}"
                    );
                }
                (decision, false)
            }
            _ => {
                let decision = state.request_or_refuse(env, args.pr_number, requested, cap, now);
                let changed = decision == Decision::Admit;
                (decision, changed)
            }
        };
        let live = state.admitted.len();
        match &decision {
            Decision::AlreadyAdmitted => {
                // Asked again (a push, a re-run): in use, which the idlest is chosen by;
                // written at most once a third of the lease (a burst of pushes writes once).
                if !args.dry_run && state.touch(env, now, args.lease / 3) {
                    requests += 1;
                    if !write(&api, name, found, &state).await? {
                        continue;
                    }
                }
                tracing::info!("{env} was admitted before: {live} live ({cap_text})");
                return outputs(&ctx, &state, true, 0);
            }
            Decision::Admit if args.dry_run => {
                tracing::info!(
                    "dry run: {env} would be admitted: {} live ({cap_text})",
                    live
                );
                return outputs(&ctx, &state, false, 0);
            }
            Decision::Queued { position, .. }
                if args.when_full == WhenFull::Refuse || args.dry_run =>
            {
                // At most ten names: the message ends up on the pull request's card.
                let mut names: Vec<String> = state.admitted.keys().take(10).cloned().collect();
                if live > names.len() {
                    names.push(format!("and {} more", live - names.len()));
                }
                let verdict = format!(
                    "{live} live sandboxes of {cap} ({}), {} waiting ahead",
                    names.join(", "),
                    position - 1
                );
                if args.dry_run {
                    tracing::info!("dry run: {env} would wait: {verdict}");
                    return outputs(&ctx, &state, false, *position);
                }
                return Err(StepError::precondition(format!(
                    "{env} refused (--when-full refuse): the cap is reached: {verdict}"
                )));
            }
            _ => {}
        }
        if changed || dropped {
            requests += 1;
            if !write(&api, name, found, &state).await? {
                // Another request changed the ConfigMap since it was read: decide again.
                continue;
            }
        }
        if let Some((victim, victim_pr)) = &put_to_sleep {
            tracing::info!(
                "{victim} (#{victim_pr}), the idlest live sandbox, recorded asleep to make room \
                 for {env} (--when-full sleep-idlest): the workflow puts it to sleep"
            );
            ctx.outputs.set("put-to-sleep", victim)?;
            ctx.outputs.set("put-to-sleep-pr", &victim_pr.to_string())?;
        }
        match decision {
            Decision::Admit => {
                tracing::info!(
                    "admitted {env}: {} live ({cap_text}), {} queued ({requests} API requests)",
                    state.admitted.len(),
                    state.queued.len()
                );
                return outputs(&ctx, &state, true, 0);
            }
            Decision::Queued { position, of } => {
                if args.report_position.is_some_and(|shown| shown != position) {
                    tracing::info!(
                        "{env} queued, position {position} of {of} ({live} of {cap} live \
                         sandboxes): ending so that the workflow shows it ({requests} API \
                         requests)"
                    );
                    ctx.outputs.set("admitted", "false")?;
                    ctx.outputs.set("live", &live.to_string())?;
                    ctx.outputs.set("position", &position.to_string())?;
                    return ctx.outputs.set("queued", &of.to_string());
                }
                if shown != Some(decision.clone()) {
                    let text = format!(
                        "queued, position {position} of {of} ({live} of {cap} live sandboxes)"
                    );
                    tracing::info!("{env} {text}");
                    step_kit::report_argo_progress(&format!("{}/{of}", of + 1 - position));
                    ctx.outputs.set("position", &position.to_string())?;
                    shown = Some(decision);
                }
                tokio::time::sleep(args.poll_interval).await;
            }
            Decision::AlreadyAdmitted => unreachable!("returned above"),
        }
    }
}

fn outputs(
    ctx: &Context,
    state: &Admission,
    admitted: bool,
    position: usize,
) -> Result<(), StepError> {
    ctx.outputs
        .set("admitted", if admitted { "true" } else { "false" })?;
    ctx.outputs.set("live", &state.admitted.len().to_string())?;
    ctx.outputs.set("position", &position.to_string())?;
    ctx.outputs.set("queued", &state.queued.len().to_string())
}
