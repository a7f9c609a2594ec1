//! A local runner for the library's workflows, in the spirit of `act` for GitHub Actions: it reads
//! the ClusterWorkflowTemplates, walks a DAG in dependency order (independent tasks in parallel) or
//! steps group by group (the steps of a group in parallel), substitutes parameters and outputs as Argo does, and runs each container step
//! as a local process of our multicall binary.
//!
//! It is a test and demo tool, not a workflow engine. What it does not do, it says:
//! - containers of other images (Terraform) are skipped, visibly, as succeeded;
//! - resource templates act on a small in-memory cluster (namespaces, service accounts, role
//!   bindings), except a created Workflow, which it runs itself and publishes to the Kubernetes
//!   API double so wait-workflow can watch it;
//! - HTTP templates (the failure report) are logged, not sent;
//! - retries follow the templates' rule (exit 4 only); no pods, deadlines or mutexes; of the
//!   volumes only Secrets, written as files where the step's variables name the mount;
//! - a DAG fails as Argo decides it: from its leaf tasks, an omitted one taking a failed parent's
//!   phase (workflow/controller/dag.go, assessDAGPhase).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// What the "cluster" provides that our binaries need locally.
pub struct Environment {
    /// The multicall `sandbox-steps` binary.
    pub binary: PathBuf,
    /// Kubernetes Secrets by name: key → value (for `secretKeyRef`).
    pub secrets: BTreeMap<String, BTreeMap<String, String>>,
    /// Variables every step process gets besides its template's (a kubeconfig for the API double,
    /// a Vault token where a pod would use Kubernetes auth).
    pub extra_env: Vec<(String, String)>,
    /// The Kubernetes API double, where created Workflows are published.
    pub kube: testkit::KubeApiDouble,
    /// Where each step's outputs directory is made.
    pub scratch: PathBuf,
}

/// One line of the run's log: what ran, how long, what it output.
#[derive(Debug, Clone)]
pub struct StepRecord {
    pub path: String,
    pub status: String,
    pub seconds: f64,
    pub outputs: BTreeMap<String, String>,
}

/// The in-memory cluster and the run log.
#[derive(Default)]
pub struct State {
    /// kind/namespace/name of what resource templates applied.
    pub objects: BTreeSet<String>,
    pub log: Vec<StepRecord>,
    pub skipped: Vec<String>,
    workflows_created: u32,
}

impl State {
    /// The outputs of the first run of step `name` (the last part of its path).
    pub fn first_outputs_of(&self, name: &str) -> BTreeMap<String, String> {
        self.log
            .iter()
            .find(|r| r.path.ends_with(&format!("/{name}")) && !r.outputs.is_empty())
            .map(|r| r.outputs.clone())
            .unwrap_or_default()
    }
}

/// A step's outputs, or why it failed.
type StepResult = Result<BTreeMap<String, String>, String>;

pub struct Runner {
    templates: BTreeMap<String, Value>,
    env: Environment,
    pub state: Mutex<State>,
    pub verbose: bool,
}

/// The values `{{...}}` can take in one template invocation.
#[derive(Clone, Default)]
struct Scope {
    workflow: BTreeMap<String, String>,
    inputs: BTreeMap<String, String>,
    tasks: BTreeMap<String, BTreeMap<String, String>>,
    /// The current item of a `withParam` loop.
    item: BTreeMap<String, String>,
}

impl Scope {
    fn substitute(&self, text: &str) -> Result<String, String> {
        let mut out = String::new();
        let mut rest = text;
        while let Some(start) = rest.find("{{") {
            out.push_str(&rest[..start]);
            let len = rest[start..]
                .find("}}")
                .ok_or_else(|| format!("unclosed {{{{ in {text:?}"))?;
            let expr = rest[start + 2..start + len].trim();
            out.push_str(&self.lookup(expr)?);
            rest = &rest[start + len + 2..];
        }
        out.push_str(rest);
        Ok(out)
    }

    fn lookup(&self, expr: &str) -> Result<String, String> {
        if let Some(expression) = expr.strip_prefix('=') {
            return self.evaluate(expression);
        }
        let parts: Vec<&str> = expr.split('.').collect();
        let found = match parts.as_slice() {
            ["workflow", "parameters", name] => self.workflow.get(*name),
            ["workflow", field] => self.workflow.get(&format!("@{field}")),
            ["inputs", "parameters", name] => self.inputs.get(*name),
            ["tasks" | "steps", task, "outputs", "parameters", name] => {
                self.tasks.get(*task).and_then(|o| o.get(*name))
            }
            ["item", key] => self.item.get(*key),
            _ => None,
        };
        found
            .cloned()
            .ok_or_else(|| format!("{{{{{expr}}}}} has no value here"))
    }
}

impl Scope {
    /// An Argo expression (`{{=...}}`), in the one form the library uses:
    /// `REFERENCE == 'TEXT' ? VALUE : VALUE`, a VALUE a reference or a quoted text
    /// (`tasks['a-b']` spelled with brackets).
    fn evaluate(&self, expression: &str) -> Result<String, String> {
        let unknown = || format!("{{{{={expression}}}}}: not a form this runner evaluates");
        let (condition, branches) = split_outside_quotes(expression, '?').ok_or_else(unknown)?;
        let (then, otherwise) = split_outside_quotes(branches, ':').ok_or_else(unknown)?;
        let (left, right) = condition.split_once("==").ok_or_else(unknown)?;
        let quoted = |text: &str| {
            text.trim()
                .strip_prefix('\'')
                .and_then(|t| t.strip_suffix('\''))
                .map(str::to_owned)
        };
        let value = |reference: &str| match quoted(reference) {
            Some(text) => Ok(text),
            None => self.lookup(&reference.trim().replace("['", ".").replace("']", "")),
        };
        if value(left)? == quoted(right).ok_or_else(unknown)? {
            value(then)
        } else {
            value(otherwise)
        }
    }
}

/// `text` split at the first `separator` outside single quotes.
fn split_outside_quotes(text: &str, separator: char) -> Option<(&str, &str)> {
    let mut in_quotes = false;
    for (i, c) in text.char_indices() {
        match c {
            '\'' => in_quotes = !in_quotes,
            c if c == separator && !in_quotes => return Some((&text[..i], &text[i + 1..])),
            _ => {}
        }
    }
    None
}

impl Runner {
    /// What the runner's "cluster" provides (the Kubernetes API double among it).
    pub fn env(&self) -> &Environment {
        &self.env
    }

    /// Loads every ClusterWorkflowTemplate under `dir`.
    pub fn new(dir: &Path, env: Environment) -> Runner {
        let mut templates = BTreeMap::new();
        let mut files = Vec::new();
        for sub in ["steps", "workflows"] {
            for entry in std::fs::read_dir(dir.join(sub)).unwrap() {
                let path = entry.unwrap().path();
                if path.extension().is_some_and(|e| e == "yaml") {
                    files.push(path);
                }
            }
        }
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            // A file may hold several documents (workflows/sweep.yaml: with its CronWorkflow).
            for document in serde_yaml::Deserializer::from_str(&text) {
                let doc: Value = serde::Deserialize::deserialize(document).unwrap();
                if doc["kind"] == "ClusterWorkflowTemplate" {
                    templates.insert(doc["metadata"]["name"].as_str().unwrap().to_owned(), doc);
                }
            }
        }
        Runner {
            templates,
            env,
            state: Mutex::default(),
            verbose: true,
        }
    }

    /// Sets the platform's settings as every ClusterWorkflowTemplate's parameter defaults, as an
    /// installation does (install/example): a Workflow a template creates (the sweep's
    /// delete-sandbox) gets them without passing them.
    pub fn install_settings(&mut self, settings: &BTreeMap<String, String>) {
        for cwt in self.templates.values_mut() {
            for p in cwt["spec"]["arguments"]["parameters"]
                .as_array_mut()
                .into_iter()
                .flatten()
            {
                if let Some(value) = p["name"].as_str().and_then(|n| settings.get(n)) {
                    p["value"] = Value::String(value.clone());
                }
            }
        }
    }

    /// Runs ClusterWorkflowTemplate `name` from `entrypoint` (its own when `None`) with
    /// `parameters` over its defaults, then its exit handler. Returns the workflow's status.
    pub fn run_workflow(
        &self,
        name: &str,
        entrypoint: Option<&str>,
        parameters: &BTreeMap<String, String>,
        namespace: &str,
    ) -> Result<(), String> {
        let cwt = self
            .templates
            .get(name)
            .ok_or_else(|| format!("no ClusterWorkflowTemplate {name}"))?;
        let mut scope = Scope::default();
        for p in cwt["spec"]["arguments"]["parameters"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let key = p["name"].as_str().unwrap().to_owned();
            if let Some(v) = parameters.get(&key) {
                scope.workflow.insert(key, v.clone());
            } else if let Some(v) = p["value"].as_str() {
                scope.workflow.insert(key, v.to_owned());
            } else {
                return Err(format!("{name}: parameter {key} not given"));
            }
        }
        let run_name = {
            let mut state = self.state.lock().unwrap();
            state.workflows_created += 1;
            format!("{name}-{:05}", state.workflows_created)
        };
        scope.workflow.insert("@name".into(), run_name.clone());
        scope.workflow.insert("@namespace".into(), namespace.into());
        let entry = entrypoint
            .map(str::to_owned)
            .or_else(|| cwt["spec"]["entrypoint"].as_str().map(str::to_owned))
            .ok_or_else(|| format!("{name}: no entrypoint"))?;
        let result = self
            .run_template(name, &entry, &scope, &run_name)
            .map(|_| ());
        if let Some(exit) = cwt["spec"]["onExit"].as_str() {
            let mut exit_scope = scope.clone();
            let status = if result.is_ok() {
                "Succeeded"
            } else {
                "Failed"
            };
            exit_scope.workflow.insert("@status".into(), status.into());
            // As Argo sets it: the failed nodes as a JSON list, quoted as a string literal
            // (argo-workflows v4 workflow/controller/operator.go), only when some failed.
            let failures: Vec<Value> = self
                .state
                .lock()
                .unwrap()
                .log
                .iter()
                .filter(|r| r.path.starts_with(&format!("{run_name}/")))
                .filter_map(|r| {
                    let message = r.status.strip_prefix("Failed: ")?;
                    let node = r.path.rsplit('/').next().unwrap_or_default();
                    Some(json!({"displayName": node, "message": message, "phase": "Failed"}))
                })
                .collect();
            if !failures.is_empty() {
                let list = Value::Array(failures).to_string();
                exit_scope
                    .workflow
                    .insert("@failures".into(), serde_json::to_string(&list).unwrap());
            }
            self.run_template(name, exit, &exit_scope, &format!("{run_name}/onExit"))?;
        }
        result
    }

    /// Runs template `template` of ClusterWorkflowTemplate `cwt`; returns its output parameters.
    fn run_template(
        &self,
        cwt: &str,
        template: &str,
        scope: &Scope,
        path: &str,
    ) -> Result<BTreeMap<String, String>, String> {
        let spec = self.templates[cwt]["spec"]["templates"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == template)
            .ok_or_else(|| format!("{cwt} has no template {template}"))?
            .clone();
        if spec["dag"].is_object() {
            self.run_dag(cwt, &spec, scope, path)
        } else if spec["steps"].is_array() {
            self.run_steps(cwt, &spec, scope, path)
        } else if spec["container"].is_object() {
            self.run_container(&spec, scope, path)
        } else if spec["resource"].is_object() {
            self.run_resource(&spec, scope, path)
        } else if spec["http"].is_object() {
            let url = scope.substitute(spec["http"]["url"].as_str().unwrap_or_default())?;
            self.note(path, "logged, not sent", &format!("HTTP {url}"));
            Ok(BTreeMap::new())
        } else {
            Err(format!(
                "{cwt}/{template}: a kind of template the runner does not run"
            ))
        }
    }

    /// The scope of a called template: its inputs from the call's arguments over its defaults.
    fn call_scope(
        &self,
        caller: &Scope,
        call: &Value,
        cwt: &str,
    ) -> Result<(String, String, Scope), String> {
        let (target_cwt, target) = match call["templateRef"].as_object() {
            Some(r) => (
                r["name"].as_str().unwrap().to_owned(),
                r["template"].as_str().unwrap().to_owned(),
            ),
            None => (
                cwt.to_owned(),
                call["template"].as_str().unwrap().to_owned(),
            ),
        };
        let spec = self.templates[&target_cwt]["spec"]["templates"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == target.as_str())
            .ok_or_else(|| format!("{target_cwt} has no template {target}"))?;
        let mut given = BTreeMap::new();
        for p in call["arguments"]["parameters"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let value = caller.substitute(p["value"].as_str().unwrap_or_default())?;
            given.insert(p["name"].as_str().unwrap().to_owned(), value);
        }
        let mut scope = Scope {
            workflow: caller.workflow.clone(),
            ..Scope::default()
        };
        for p in spec["inputs"]["parameters"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let name = p["name"].as_str().unwrap();
            let value = given
                .remove(name)
                .or_else(|| p["value"].as_str().map(str::to_owned))
                .ok_or_else(|| format!("{target_cwt}/{target}: input {name} not given"))?;
            scope.inputs.insert(name.to_owned(), value);
        }
        Ok((target_cwt, target, scope))
    }

    fn run_dag(
        &self,
        cwt: &str,
        spec: &Value,
        scope: &Scope,
        path: &str,
    ) -> Result<BTreeMap<String, String>, String> {
        let tasks: Vec<Value> = spec["dag"]["tasks"].as_array().unwrap().clone();
        // name → Succeeded | Failed | Omitted
        let status: Mutex<BTreeMap<String, &'static str>> = Mutex::default();
        let outputs: Mutex<BTreeMap<String, BTreeMap<String, String>>> = Mutex::default();
        loop {
            let done = status.lock().unwrap().clone();
            let pending: Vec<&Value> = tasks
                .iter()
                .filter(|t| !done.contains_key(t["name"].as_str().unwrap()))
                .collect();
            if pending.is_empty() {
                break;
            }
            let mut ready = Vec::new();
            for task in pending {
                let name = task["name"].as_str().unwrap();
                match eval_depends(task["depends"].as_str().unwrap_or(""), &done) {
                    Some(true) => ready.push(task),
                    Some(false) => {
                        status.lock().unwrap().insert(name.to_owned(), "Omitted");
                    }
                    None => {}
                }
            }
            if ready.is_empty() {
                if status.lock().unwrap().len() == done.len() {
                    return Err(format!("{path}: the DAG is stuck"));
                }
                continue;
            }
            std::thread::scope(|threads| {
                for task in ready {
                    let (status, outputs) = (&status, &outputs);
                    threads.spawn(move || {
                        let name = task["name"].as_str().unwrap().to_owned();
                        let mut task_scope = scope.clone();
                        task_scope.tasks = outputs.lock().unwrap().clone();
                        let skip = task["when"]
                            .as_str()
                            .map(|when| task_scope.substitute(when).and_then(|w| eval_when(&w)));
                        match skip {
                            Some(Ok(false)) => {
                                self.note(
                                    &format!("{path}/{name}"),
                                    "Skipped",
                                    "its condition (when) is false",
                                );
                                status.lock().unwrap().insert(name, "Skipped");
                                return;
                            }
                            Some(Err(e)) => {
                                self.note(&format!("{path}/{name}"), "Failed", &e);
                                status.lock().unwrap().insert(name, "Failed");
                                return;
                            }
                            _ => {}
                        }
                        let result =
                            self.call_scope(&task_scope, task, cwt)
                                .and_then(|(c, t, s)| {
                                    self.run_template(&c, &t, &s, &format!("{path}/{name}"))
                                });
                        match result {
                            Ok(out) => {
                                outputs.lock().unwrap().insert(name.clone(), out);
                                status.lock().unwrap().insert(name, "Succeeded");
                            }
                            Err(e) => {
                                self.note(&format!("{path}/{name}"), "Failed", &e);
                                status.lock().unwrap().insert(name, "Failed");
                            }
                        }
                    });
                }
            });
        }
        // The DAG's phase, as Argo decides it (workflow/controller/dag.go, assessDAGPhase): the
        // phases of its leaf tasks (none depends on them), an omitted task taking its parents'
        // (a failed one first). A failure handled by a task that `depends` on it still fails the
        // DAG when a leaf is omitted below the failure, as in wake-sandbox.
        let done = status.into_inner().unwrap();
        match dag_failure(&tasks, &done) {
            Some((cause, leaf)) => Err(format!("{path}: task {cause} failed (leaf {leaf})")),
            None => Ok(BTreeMap::new()),
        }
    }

    fn run_steps(
        &self,
        cwt: &str,
        spec: &Value,
        scope: &Scope,
        path: &str,
    ) -> Result<BTreeMap<String, String>, String> {
        let mut scope = scope.clone();
        for group in spec["steps"].as_array().unwrap() {
            // The steps of one group run in parallel, as Argo runs them; the next group waits.
            let mut runnable = Vec::new();
            for step in group.as_array().unwrap() {
                let name = step["name"].as_str().unwrap();
                if let Some(when) = step["when"].as_str() {
                    let when = scope.substitute(when)?;
                    if !eval_when(&when)? {
                        // What the condition was made of is in the template; the log says why.
                        self.note(
                            &format!("{path}/{name}"),
                            "Skipped",
                            "its condition (when) is false",
                        );
                        continue;
                    }
                }
                match step["withParam"].as_str() {
                    // One call per item of the JSON list, named as Argo names them: name(0), ...
                    Some(list) => {
                        let list = scope.substitute(list)?;
                        let items: Vec<Value> = serde_json::from_str(&list)
                            .map_err(|e| format!("{path}/{name}: withParam {list:?}: {e}"))?;
                        for (i, item) in items.iter().enumerate() {
                            let mut item_scope = scope.clone();
                            item_scope.item = item
                                .as_object()
                                .into_iter()
                                .flatten()
                                .map(|(k, v)| {
                                    let v = v.as_str().map_or_else(|| v.to_string(), str::to_owned);
                                    (k.clone(), v)
                                })
                                .collect();
                            let call = self.call_scope(&item_scope, step, cwt)?;
                            runnable.push((format!("{name}({i})"), call));
                        }
                    }
                    None => runnable.push((name.to_owned(), self.call_scope(&scope, step, cwt)?)),
                }
            }
            let results: Vec<(&str, StepResult)> = std::thread::scope(|threads| {
                let handles: Vec<_> = runnable
                    .iter()
                    .map(|(name, (c, t, s))| {
                        let step_path = format!("{path}/{name}");
                        (
                            name.as_str(),
                            threads.spawn(move || self.run_template(c, t, s, &step_path)),
                        )
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|(name, h)| (name, h.join().expect("step thread")))
                    .collect()
            });
            for (name, result) in results {
                let may_fail = group
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|st| st["name"] == name && st["continueOn"]["failed"] == true);
                match result {
                    Ok(outputs) => {
                        scope.tasks.insert(name.to_owned(), outputs);
                    }
                    // continueOn: {failed: true}: the failure is logged, the steps go on.
                    Err(e) if may_fail => {
                        self.note(&format!("{path}/{name}"), "Failed (continueOn)", &e);
                        scope.tasks.insert(name.to_owned(), BTreeMap::new());
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(BTreeMap::new())
    }

    fn run_container(
        &self,
        spec: &Value,
        scope: &Scope,
        path: &str,
    ) -> Result<BTreeMap<String, String>, String> {
        let container = &spec["container"];
        let Some(step) = container["command"][0]
            .as_str()
            .and_then(|c| c.strip_prefix("/usr/local/bin/"))
        else {
            let image = container["image"].as_str().unwrap_or("?");
            let why = format!(
                "runs {image}, which this runner cannot run locally (needs its tools and a cloud)"
            );
            self.note(path, "Skipped", &why);
            self.state
                .lock()
                .unwrap()
                .skipped
                .push(format!("{path}: {why}"));
            return Ok(BTreeMap::new());
        };
        let outputs_dir = tempfile::tempdir_in(&self.env.scratch).map_err(|e| e.to_string())?;
        // Secret volumes, as the kubelet mounts them: a file per key (none when the Secret is
        // absent and the volume optional). Paths under the mount are rewritten to the files.
        let mut mounts = Vec::new();
        for volume in spec["volumes"].as_array().into_iter().flatten() {
            let Some(secret) = volume["secret"]["secretName"].as_str() else {
                continue;
            };
            let name = volume["name"].as_str().unwrap_or_default();
            let Some(mount) = container["volumeMounts"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|m| m["name"] == name)
                .and_then(|m| m["mountPath"].as_str())
            else {
                continue;
            };
            let dir = outputs_dir.path().join(format!("volume-{name}"));
            std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
            let secret_name = scope.substitute(secret)?;
            for (key, value) in self.env.secrets.get(&secret_name).into_iter().flatten() {
                std::fs::write(dir.join(key), value).map_err(|e| e.to_string())?;
            }
            mounts.push((mount.to_owned(), dir.display().to_string()));
        }
        let mounted = |value: String| {
            mounts
                .iter()
                .fold(value, |v, (mount, dir)| v.replace(mount.as_str(), dir))
        };
        let mut cmd = Command::new(&self.env.binary);
        cmd.arg(step).env_clear();
        for e in container["env"].as_array().into_iter().flatten() {
            let name = e["name"].as_str().unwrap();
            let value = if let Some(secret) = e["valueFrom"]["secretKeyRef"].as_object() {
                let secret_name = scope.substitute(secret["name"].as_str().unwrap())?;
                match self
                    .env
                    .secrets
                    .get(&secret_name)
                    .and_then(|s| s.get(secret["key"].as_str().unwrap()))
                {
                    Some(v) => v.clone(),
                    None => continue, // optional: true
                }
            } else {
                mounted(scope.substitute(e["value"].as_str().unwrap_or_default())?)
            };
            cmd.env(name, value);
        }
        cmd.env("SBX_OUTPUTS_DIR", outputs_dir.path())
            .env("SBX_LOG_FORMAT", "text")
            .env("NO_COLOR", "1");
        for (k, v) in &self.env.extra_env {
            cmd.env(k, v);
        }
        let limit = spec["retryStrategy"]["limit"].as_u64().unwrap_or(0);
        let started = Instant::now();
        let mut attempt = 0;
        let output = loop {
            let output = cmd.output().map_err(|e| format!("{step}: {e}"))?;
            if output.status.code() == Some(4) && attempt < limit {
                attempt += 1;
                std::thread::sleep(Duration::from_secs(1));
                continue;
            }
            break output;
        };
        let mut outputs = BTreeMap::new();
        for p in spec["outputs"]["parameters"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let file = p["valueFrom"]["path"]
                .as_str()
                .unwrap()
                .trim_start_matches("/tmp/outputs/");
            if let Ok(v) = std::fs::read_to_string(outputs_dir.path().join(file)) {
                outputs.insert(p["name"].as_str().unwrap().to_owned(), v);
            }
        }
        let ok = output.status.success();
        self.record(
            path,
            if ok { "Succeeded" } else { "Failed" },
            started,
            &outputs,
        );
        if !ok || self.verbose && std::env::var_os("DEMO_LOGS").is_some() {
            eprint!("{}", String::from_utf8_lossy(&output.stderr));
        }
        if ok {
            Ok(outputs)
        } else {
            Err(format!("{step} exited with {:?}", output.status.code()))
        }
    }

    fn run_resource(
        &self,
        spec: &Value,
        scope: &Scope,
        path: &str,
    ) -> Result<BTreeMap<String, String>, String> {
        let action = spec["resource"]["action"].as_str().unwrap();
        let manifest: Value = serde_yaml::from_str(
            &scope.substitute(spec["resource"]["manifest"].as_str().unwrap())?,
        )
        .map_err(|e| e.to_string())?;
        let kind = manifest["kind"].as_str().unwrap_or_default();
        let namespace = manifest["metadata"]["namespace"].as_str().unwrap_or("");
        let started = Instant::now();
        if kind == "Workflow" && action == "create" {
            // The child workflow: run it here, then publish its end state for wait-workflow.
            let name = format!(
                "{}{:05}",
                manifest["metadata"]["generateName"]
                    .as_str()
                    .unwrap_or("wf-"),
                self.state.lock().unwrap().workflows_created + 1
            );
            let reference = manifest["spec"]["workflowTemplateRef"]["name"]
                .as_str()
                .unwrap();
            let entrypoint = manifest["spec"]["entrypoint"].as_str();
            let parameters = manifest["spec"]["arguments"]["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| {
                    (
                        p["name"].as_str().unwrap().to_owned(),
                        p["value"].as_str().unwrap_or("").to_owned(),
                    )
                })
                .collect();
            let result = self.run_workflow(reference, entrypoint, &parameters, namespace);
            let (phase, message) = match &result {
                Ok(()) => ("Succeeded", String::new()),
                Err(e) => ("Failed", e.clone()),
            };
            self.env.kube.set_workflow(
                namespace,
                &name,
                json!({"phase": phase, "progress": "1/1", "message": message}),
            );
            let outputs = BTreeMap::from([("name".to_owned(), name.clone())]);
            self.record(
                path,
                &format!("created Workflow {namespace}/{name} ({phase})"),
                started,
                &outputs,
            );
            return Ok(outputs);
        }
        let object_name = manifest["metadata"]["name"].as_str().unwrap_or("");
        let key = format!("{kind}/{namespace}/{object_name}");
        // As kubectl names it: `Namespace apps-sbx-pr-42`, `RoleBinding apps-sbx-pr-42/x`.
        let shown = if namespace.is_empty() {
            format!("{kind} {object_name}")
        } else {
            format!("{kind} {namespace}/{object_name}")
        };
        let mut state = self.state.lock().unwrap();
        let outcome = match action {
            "apply" | "create" => {
                state.objects.insert(key.clone());
                format!("applied {shown}")
            }
            "get" if state.objects.contains(&key) => format!("found {shown}"),
            "get" => {
                drop(state);
                self.record(
                    path,
                    &format!("{shown} not found"),
                    started,
                    &BTreeMap::new(),
                );
                return Err(format!("{shown} not found"));
            }
            "delete" => {
                if kind == "Namespace" {
                    // Deleting a namespace deletes what is in it.
                    let ns = manifest["metadata"]["name"]
                        .as_str()
                        .unwrap_or("")
                        .to_owned();
                    state
                        .objects
                        .retain(|k| k.split('/').nth(1) != Some(ns.as_str()));
                }
                state.objects.remove(&key);
                format!("deleted {shown}")
            }
            other => return Err(format!("resource action {other} is not run by this runner")),
        };
        drop(state);
        self.record(path, &outcome, started, &BTreeMap::new());
        Ok(BTreeMap::new())
    }

    fn record(
        &self,
        path: &str,
        status: &str,
        started: Instant,
        outputs: &BTreeMap<String, String>,
    ) {
        let record = StepRecord {
            path: path.to_owned(),
            status: status.to_owned(),
            seconds: started.elapsed().as_secs_f64(),
            outputs: outputs.clone(),
        };
        if self.verbose {
            let shown: Vec<String> = outputs
                .iter()
                .map(|(k, v)| format!("{k}={}", readable(v.trim())))
                .collect();
            let head = format!("  {:<PATH_WIDTH$} {:>6.2}s ", record.path, record.seconds);
            let mut text = wrap(head, &words(&record.status), " ", INDENT);
            for item in &shown {
                // An output longer than a line (a JSON list) wraps at its own spaces.
                text = if item.chars().count() > WIDTH - INDENT {
                    wrap(text, &words(item), " ", INDENT)
                } else {
                    wrap(text, std::slice::from_ref(item), "  ", INDENT)
                };
            }
            println!("{text}");
        }
        self.state.lock().unwrap().log.push(record);
    }

    fn note(&self, path: &str, status: &str, detail: &str) {
        if self.verbose {
            let head = format!("  {path:<PATH_WIDTH$}          {status}:");
            println!("{}", wrap(head, &words(detail), " ", INDENT));
        }
        self.state.lock().unwrap().log.push(StepRecord {
            path: path.to_owned(),
            status: format!("{status}: {detail}"),
            seconds: 0.0,
            outputs: BTreeMap::new(),
        });
    }
}

/// Argo's `depends` for the forms the library uses: `a`, `a && b`, `a || b`, `a.Succeeded`,
/// `a.Failed`. A bare `a` holds when `a` succeeded or was skipped (its `when` false), as Argo
/// expands it (`a.Succeeded || a.Skipped || a.Daemoned`). `None` while a task it names has not
/// finished.
fn eval_depends(expr: &str, done: &BTreeMap<String, &'static str>) -> Option<bool> {
    if expr.trim().is_empty() {
        return Some(true);
    }
    let any = expr.split("||").map(|alternative| {
        let all = alternative.split("&&").map(|term| {
            let term = term.trim();
            let state = done.get(term.split_once('.').map_or(term, |(task, _)| task))?;
            Some(match term.split_once('.') {
                Some((_, want)) => *state == want,
                None => matches!(*state, "Succeeded" | "Skipped"),
            })
        });
        all.collect::<Option<Vec<bool>>>()
            .map(|v| v.into_iter().all(|b| b))
    });
    let results: Vec<Option<bool>> = any.collect();
    if results.contains(&Some(true)) {
        Some(true)
    } else if results.iter().all(|r| r.is_some()) {
        Some(false)
    } else {
        None
    }
}

/// Whether a finished DAG failed, as Argo decides (assessDAGPhase): a leaf task failed, or was
/// omitted below a failed task; (the failed task, the leaf).
fn dag_failure(tasks: &[Value], done: &BTreeMap<String, &'static str>) -> Option<(String, String)> {
    let parents = |name: &str| -> Vec<String> {
        tasks
            .iter()
            .find(|t| t["name"] == name)
            .map(|t| depends_names(t["depends"].as_str().unwrap_or("")))
            .unwrap_or_default()
    };
    // The failed task a branch inherits, if any.
    fn failed_in(
        name: &str,
        done: &BTreeMap<String, &'static str>,
        parents: &dyn Fn(&str) -> Vec<String>,
    ) -> Option<String> {
        match done.get(name).copied() {
            Some("Failed") => Some(name.to_owned()),
            Some("Omitted") => parents(name)
                .iter()
                .find_map(|p| failed_in(p, done, parents)),
            _ => None,
        }
    }
    tasks
        .iter()
        .map(|t| t["name"].as_str().unwrap_or_default())
        .filter(|name| {
            !tasks.iter().any(|t| {
                parents(t["name"].as_str().unwrap_or_default())
                    .iter()
                    .any(|p| p == name)
            })
        })
        .find_map(|leaf| failed_in(leaf, done, &parents).map(|cause| (cause, leaf.to_owned())))
}

/// The tasks a `depends` expression names.
fn depends_names(expr: &str) -> Vec<String> {
    expr.split(['|', '&', '(', ')', ' ', '!'])
        .filter(|term| !term.is_empty())
        .map(|term| {
            term.split_once('.')
                .map_or(term, |(task, _)| task)
                .to_owned()
        })
        .collect()
}

/// An output as the demo shows it: a JSON list of objects (sweep-sandboxes' `deletes`) as
/// `[{key: value, ...}, ...]` with spaces, so that it wraps; any other value as it is.
fn readable(value: &str) -> String {
    let Ok(Value::Array(items)) = serde_json::from_str::<Value>(value) else {
        return value.to_owned();
    };
    let items: Vec<String> = items
        .iter()
        .map(|item| match item.as_object() {
            Some(fields) => {
                let fields: Vec<String> = fields
                    .iter()
                    .map(|(k, v)| {
                        format!(
                            "{k}: {}",
                            v.as_str().map_or_else(|| v.to_string(), str::to_owned)
                        )
                    })
                    .collect();
                format!("{{{}}}", fields.join(", "))
            }
            None => item.to_string(),
        })
        .collect();
    format!("[{}]", items.join(", "))
}

/// A `when` after substitution, for the forms the library uses: `'a' != 'b' && 'c' != ''`.
fn eval_when(expr: &str) -> Result<bool, String> {
    expr.split("&&")
        .map(|term| {
            let (left, op, right) = if let Some((l, r)) = term.split_once("!=") {
                (l, "!=", r)
            } else if let Some((l, r)) = term.split_once("==") {
                (l, "==", r)
            } else {
                return Err(format!("when {expr:?}: not a comparison"));
            };
            let unquote = |s: &str| s.trim().trim_matches('\'').to_owned();
            Ok((unquote(left) == unquote(right)) == (op == "=="))
        })
        .collect::<Result<Vec<bool>, String>>()
        .map(|v| v.into_iter().all(|b| b))
}

/// The demo's lines fit 120 columns: a step's path, its time, its status, then its outputs
/// (continued on lines indented past the time).
const WIDTH: usize = 120;
const PATH_WIDTH: usize = 44;
const INDENT: usize = 2 + PATH_WIDTH + 1 + 7 + 2;

/// `head`, then `items` separated by `gap`, wrapped at [`WIDTH`]: continuation lines start at
/// column `indent`, or at 4 for an item too long for that.
pub(crate) fn wrap(head: String, items: &[String], gap: &str, indent: usize) -> String {
    let mut out = head;
    for item in items {
        let len = item.chars().count();
        let line_len = out.rsplit('\n').next().unwrap_or("").chars().count();
        if line_len + gap.len() + len > WIDTH && line_len > indent {
            let at = if indent + len > WIDTH { 4 } else { indent };
            out.push('\n');
            out.push_str(&" ".repeat(at));
        } else if !out.is_empty() {
            out.push_str(gap);
        }
        out.push_str(item);
    }
    out
}

fn words(text: &str) -> Vec<String> {
    text.split(' ').map(str::to_owned).collect()
}

/// Text wrapped at [`WIDTH`], each line's continuation indented 4 past its own indentation.
pub(crate) fn wrap_text(text: &str) -> String {
    text.lines()
        .map(|line| {
            let lead = line.len() - line.trim_start().len();
            let first = line[..lead].to_owned();
            let mut items = words(line.trim_start()).into_iter();
            let head = match items.next() {
                Some(word) => first + &word,
                None => first,
            };
            wrap(head, &items.collect::<Vec<_>>(), " ", lead + 4)
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expressions_of_the_library() {
        let scope = Scope {
            workflow: BTreeMap::from([("base-branch".into(), "main".into())]),
            inputs: BTreeMap::new(),
            item: BTreeMap::new(),
            tasks: BTreeMap::from([
                (
                    "module-branch".into(),
                    BTreeMap::from([("existed".into(), "false".into())]),
                ),
                (
                    "validate".into(),
                    BTreeMap::from([("branch".into(), "sbx-pr-42".into())]),
                ),
            ]),
        };
        let text = "{{=tasks['module-branch'].outputs.parameters.existed == 'true' ? \
                    tasks.validate.outputs.parameters.branch : workflow.parameters['base-branch']}}";
        assert_eq!(scope.substitute(text), Ok("main".into()));
        // sandbox-infra's mask-key: quoted texts, with a ':' inside one.
        let masking = "{{=workflow.parameters['base-branch'] == 'main' ? \
                       'file:/etc/sandbox-steps/masking/key' : ''}}";
        assert_eq!(
            scope.substitute(masking),
            Ok("file:/etc/sandbox-steps/masking/key".into())
        );
        let off = masking.replace("== 'main'", "== 'other'");
        assert_eq!(scope.substitute(&off), Ok(String::new()));
        assert!(scope.substitute("{{=1 + 1}}").is_err());
    }

    #[test]
    fn a_dag_fails_as_argo_decides_from_its_leaves() {
        // wake-sandbox's shape: a report of the failure does not make the DAG succeed.
        let tasks: Vec<Value> = serde_json::from_value(json!([
            {"name": "admit"},
            {"name": "kustomize", "depends": "admit"},
            {"name": "ready", "depends": "kustomize"},
            {"name": "report-failed", "depends": "admit.Failed || kustomize.Failed"},
        ]))
        .unwrap();
        let done = |states: [&'static str; 4]| -> BTreeMap<String, &'static str> {
            ["admit", "kustomize", "ready", "report-failed"]
                .into_iter()
                .map(str::to_owned)
                .zip(states)
                .collect()
        };
        assert_eq!(
            dag_failure(
                &tasks,
                &done(["Succeeded", "Failed", "Omitted", "Succeeded"])
            ),
            Some(("kustomize".into(), "ready".into()))
        );
        assert_eq!(
            dag_failure(
                &tasks,
                &done(["Succeeded", "Succeeded", "Succeeded", "Omitted"])
            ),
            None
        );
        assert_eq!(
            dag_failure(
                &tasks,
                &done(["Succeeded", "Succeeded", "Skipped", "Omitted"])
            ),
            None
        );
        // A failure whose only dependent is the leaf that handles it: the DAG succeeds (as Argo).
        let handled: Vec<Value> = serde_json::from_value(json!([
            {"name": "try"},
            {"name": "cleanup", "depends": "try.Failed"},
        ]))
        .unwrap();
        let states = BTreeMap::from([
            ("try".to_owned(), "Failed"),
            ("cleanup".to_owned(), "Succeeded"),
        ]);
        assert_eq!(dag_failure(&handled, &states), None);
        assert_eq!(
            depends_names("admit.Failed || (a && !b)"),
            ["admit", "a", "b"]
        );
    }

    #[test]
    fn depends_forms() {
        let done = BTreeMap::from([("a".to_owned(), "Succeeded"), ("p".to_owned(), "Failed")]);
        assert_eq!(eval_depends("a", &done), Some(true));
        assert_eq!(eval_depends("a && b", &done), None);
        assert_eq!(eval_depends("p.Succeeded", &done), Some(false));
        assert_eq!(eval_depends("b || p.Failed", &done), Some(true));
        assert_eq!(eval_when("'Failed' != 'Succeeded' && 'x' != ''"), Ok(true));
        assert_eq!(
            eval_when("'Succeeded' != 'Succeeded' && 'x' != ''"),
            Ok(false)
        );
    }
}
