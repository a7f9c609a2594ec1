//! A Kubernetes API double for Argo Workflows, for what wait-workflow uses: get, list and watch of
//! `argoproj.io/v1alpha1` `workflows` in a namespace. It follows the API: Status objects for
//! errors (reasons NotFound, Unauthorized, Forbidden), `resourceVersion` on every object and list,
//! watches as a chunked stream of JSON events (ADDED, MODIFIED, DELETED, BOOKMARK) from a resource
//! version, and a 410 Gone ERROR event when that version was compacted away. Bearer-token auth.
//! It is a double, kept only where the real API server ([`crate::KubeApiServer`]) cannot show a
//! case on demand: a watch answered with 410 Gone, a watch ended at a moment the test chooses,
//! watches refused altogether (tests/wait.rs of wait-workflow); and `make demo`, which must run on
//! a fresh machine before the Go-built rig exists. Everything else runs on the real server.
//!
//! For `make demo`'s admit-sandbox it also serves core `configmaps` in a namespace: get, create
//! (409 AlreadyExists) and replace, which, as the API server does, refuses a `resourceVersion`
//! that is not the stored one with 409 Conflict. admit-sandbox's own tests run on the real server.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use serde_json::{json, Value};
use tokio::sync::mpsc::UnboundedSender;

use crate::{HttpRequest, HttpResponse, HttpServer};

const PREFIX: &str = "/apis/argoproj.io/v1alpha1/namespaces/";

struct Watcher {
    namespace: String,
    name: Option<String>,
    sender: UnboundedSender<Bytes>,
}

#[derive(Default)]
struct State {
    /// (namespace, name) → the Workflow object.
    workflows: BTreeMap<(String, String), Value>,
    resource_version: u64,
    /// Every change: (resource version, event type, object).
    events: Vec<(u64, &'static str, Value)>,
    /// The next watch gets 410 Gone (its resource version "compacted away").
    expire_next_watch: bool,
    /// Watches answer 500 (a proxy or server that can't stream): clients must poll.
    watches_broken: bool,
    watchers: Vec<Watcher>,
    forbidden: bool,
    /// (namespace, name) → the ConfigMap.
    configmaps: BTreeMap<(String, String), Value>,
}

pub struct KubeApiDouble {
    http: HttpServer,
    token: String,
    state: Arc<Mutex<State>>,
}

fn status(code: u16, reason: &str, message: &str) -> HttpResponse {
    HttpResponse::json(
        code,
        &json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "message": message, "reason": reason, "code": code,
        }),
    )
}

fn event_line(kind: &str, object: &Value) -> Bytes {
    Bytes::from(format!("{}\n", json!({ "type": kind, "object": object })))
}

impl KubeApiDouble {
    /// Serves the API, accepting `token` as the bearer token.
    pub fn start(token: &str) -> KubeApiDouble {
        let state: Arc<Mutex<State>> = Arc::default();
        let shared = state.clone();
        let expected = token.to_owned();
        let http = HttpServer::start(move |req| serve(&mut shared.lock().unwrap(), req, &expected));
        KubeApiDouble {
            http,
            token: token.to_owned(),
            state,
        }
    }

    pub fn url(&self) -> String {
        self.http.url()
    }

    /// Writes a kubeconfig for this server with `token` (the right one or not).
    pub fn write_kubeconfig(&self, path: &Path, token: &str) {
        let config = format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: double\n\
             clusters:\n- name: double\n  cluster:\n    server: {}\n\
             users:\n- name: runner\n  user:\n    token: {token}\n\
             contexts:\n- name: double\n  context:\n    cluster: double\n    user: runner\n    namespace: default\n",
            self.url()
        );
        std::fs::write(path, config).unwrap();
    }

    pub fn token(&self) -> &str {
        &self.token
    }

    /// Creates or updates Workflow `namespace/name` with `status` (phase, progress, nodes...).
    pub fn set_workflow(&self, namespace: &str, name: &str, status: Value) {
        let mut state = self.state.lock().unwrap();
        state.resource_version += 1;
        let rv = state.resource_version;
        let key = (namespace.to_owned(), name.to_owned());
        let kind = if state.workflows.contains_key(&key) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        let object = json!({
            "apiVersion": "argoproj.io/v1alpha1",
            "kind": "Workflow",
            "metadata": {
                "name": name, "namespace": namespace, "resourceVersion": rv.to_string(),
                "uid": format!("uid-{namespace}-{name}"), "creationTimestamp": "2026-01-01T00:00:00Z",
            },
            "spec": { "entrypoint": "main" },
            "status": status,
        });
        state.workflows.insert(key, object.clone());
        publish(&mut state, rv, kind, object);
    }

    /// ConfigMap `namespace/name`'s data, when it exists.
    pub fn configmap_data(&self, namespace: &str, name: &str) -> Option<BTreeMap<String, String>> {
        let state = self.state.lock().unwrap();
        let object = state
            .configmaps
            .get(&(namespace.to_owned(), name.to_owned()))?;
        Some(
            object["data"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                .collect(),
        )
    }

    /// Deletes Workflow `namespace/name`.
    pub fn delete_workflow(&self, namespace: &str, name: &str) {
        let mut state = self.state.lock().unwrap();
        state.resource_version += 1;
        let rv = state.resource_version;
        if let Some(mut object) = state
            .workflows
            .remove(&(namespace.to_owned(), name.to_owned()))
        {
            object["metadata"]["resourceVersion"] = json!(rv.to_string());
            publish(&mut state, rv, "DELETED", object);
        }
    }

    /// Ends every open watch, as an API server does at its watch timeout or on restart.
    pub fn close_watches(&self) {
        self.state.lock().unwrap().watchers.clear();
    }

    /// The next watch is answered with a 410 Gone ERROR event, as when its resource version was
    /// compacted away.
    pub fn expire_next_watch(&self) {
        self.state.lock().unwrap().expire_next_watch = true;
    }

    /// Watches answer 500 from now on (a proxy that can't stream): clients must poll.
    pub fn break_watches(&self) {
        self.state.lock().unwrap().watches_broken = true;
    }

    /// Answers 403 Forbidden to everything (missing RBAC).
    pub fn set_forbidden(&self, forbidden: bool) {
        self.state.lock().unwrap().forbidden = forbidden;
    }

    pub fn requests(&self) -> Vec<HttpRequest> {
        self.http.requests()
    }
}

fn publish(state: &mut State, rv: u64, kind: &'static str, object: Value) {
    let namespace = object["metadata"]["namespace"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let name = object["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let line = event_line(kind, &object);
    state.watchers.retain(|w| {
        if w.namespace != namespace || w.name.as_deref().is_some_and(|n| n != name) {
            return !w.sender.is_closed();
        }
        w.sender.send(line.clone()).is_ok()
    });
    state.events.push((rv, kind, object));
}

fn serve(state: &mut State, req: &HttpRequest, token: &str) -> HttpResponse {
    let bearer = req
        .header("authorization")
        .and_then(|v| v.strip_prefix("Bearer "));
    if bearer != Some(token) {
        return status(401, "Unauthorized", "Unauthorized");
    }
    if let Some(rest) = req.path.strip_prefix("/api/v1/namespaces/") {
        return serve_configmaps(state, req, rest);
    }
    let Some(rest) = req.path.strip_prefix(PREFIX) else {
        return status(
            404,
            "NotFound",
            "the server could not find the requested resource",
        );
    };
    let parts: Vec<&str> = rest.split('/').collect();
    let (namespace, name) = match parts.as_slice() {
        [ns, "workflows"] => (ns.to_string(), None),
        [ns, "workflows", name] => (ns.to_string(), Some(name.to_string())),
        _ => {
            return status(
                404,
                "NotFound",
                "the server could not find the requested resource",
            )
        }
    };
    if state.forbidden {
        return status(
            403,
            "Forbidden",
            &format!(
                "workflows.argoproj.io is forbidden: User \"system:serviceaccount:argo:runner\" cannot \
                 get resource \"workflows\" in API group \"argoproj.io\" in the namespace \"{namespace}\""
            ),
        );
    }
    if req.method != "GET" {
        return status(
            405,
            "MethodNotAllowed",
            "only get, list and watch are served",
        );
    }
    if let Some(name) = name {
        return match state.workflows.get(&(namespace, name.clone())) {
            Some(object) => HttpResponse::json(200, object),
            None => status(
                404,
                "NotFound",
                &format!("workflows.argoproj.io \"{name}\" not found"),
            ),
        };
    }
    // List or watch, optionally narrowed by fieldSelector=metadata.name=<name>.
    let selected = req
        .query_param("fieldSelector")
        .map(|s| s.replace("%3D", "=").replace("%3d", "="))
        .and_then(|s| s.strip_prefix("metadata.name=").map(str::to_owned));
    let matches = |object: &Value| {
        object["metadata"]["namespace"] == namespace.as_str()
            && selected
                .as_deref()
                .is_none_or(|n| object["metadata"]["name"] == n)
    };
    let watch = matches!(req.query_param("watch"), Some("1" | "true"));
    if !watch {
        let items: Vec<&Value> = state.workflows.values().filter(|o| matches(o)).collect();
        return HttpResponse::json(
            200,
            &json!({
                "apiVersion": "argoproj.io/v1alpha1", "kind": "WorkflowList",
                "metadata": { "resourceVersion": state.resource_version.to_string() },
                "items": items,
            }),
        );
    }
    let from: u64 = req
        .query_param("resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
    let response = HttpResponse::new(200)
        .header("content-type", "application/json")
        .streaming(receiver);
    if state.watches_broken {
        return status(500, "InternalError", "an error on the server (\"watch not served\") has prevented the request from succeeding");
    }
    if std::mem::take(&mut state.expire_next_watch) {
        let gone = json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": format!("too old resource version: {from} ({})", state.resource_version),
            "reason": "Expired", "code": 410,
        });
        let _ = sender.send(event_line("ERROR", &gone));
        return response; // the sender is dropped: the stream ends after the error
    }
    if from == 0 {
        // From "now": the current objects as ADDED, then changes.
        for object in state.workflows.values().filter(|o| matches(o)) {
            let _ = sender.send(event_line("ADDED", object));
        }
    } else {
        for (_, kind, object) in state
            .events
            .iter()
            .filter(|(rv, _, o)| *rv > from && matches(o))
        {
            let _ = sender.send(event_line(kind, object));
        }
    }
    if matches!(req.query_param("allowWatchBookmarks"), Some("true" | "1")) {
        let bookmark = json!({
            "apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow",
            "metadata": { "resourceVersion": state.resource_version.to_string() },
        });
        let _ = sender.send(event_line("BOOKMARK", &bookmark));
    }
    state.watchers.push(Watcher {
        namespace,
        name: selected,
        sender,
    });
    response
}

/// `configmaps` of core v1: get, create, replace with the API server's optimistic concurrency.
fn serve_configmaps(state: &mut State, req: &HttpRequest, rest: &str) -> HttpResponse {
    let parts: Vec<&str> = rest.split('/').collect();
    let (namespace, name) = match parts.as_slice() {
        [ns, "configmaps"] => (ns.to_string(), None),
        [ns, "configmaps", name] => (ns.to_string(), Some(name.to_string())),
        _ => {
            return status(
                404,
                "NotFound",
                "the server could not find the requested resource",
            )
        }
    };
    let not_found =
        |name: &str| status(404, "NotFound", &format!("configmaps \"{name}\" not found"));
    let body: Value = serde_json::from_slice(&req.body).unwrap_or_default();
    match (req.method.as_str(), name) {
        ("GET", Some(name)) => match state.configmaps.get(&(namespace, name.clone())) {
            Some(object) => HttpResponse::json(200, object),
            None => not_found(&name),
        },
        ("POST", None) => {
            let name = body["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let key = (namespace.clone(), name.clone());
            if state.configmaps.contains_key(&key) {
                return status(
                    409,
                    "AlreadyExists",
                    &format!("configmaps \"{name}\" already exists"),
                );
            }
            state.resource_version += 1;
            let mut object = body;
            object["apiVersion"] = json!("v1");
            object["kind"] = json!("ConfigMap");
            object["metadata"]["namespace"] = json!(namespace);
            object["metadata"]["uid"] = json!(format!("uid-cm-{namespace}-{name}"));
            object["metadata"]["creationTimestamp"] = json!("2026-01-01T00:00:00Z");
            object["metadata"]["resourceVersion"] = json!(state.resource_version.to_string());
            state.configmaps.insert(key, object.clone());
            HttpResponse::json(201, &object)
        }
        ("PUT", Some(name)) => {
            let key = (namespace, name.clone());
            let Some(stored) = state.configmaps.get(&key) else {
                return not_found(&name);
            };
            if body["metadata"]["resourceVersion"] != stored["metadata"]["resourceVersion"] {
                return status(
                    409,
                    "Conflict",
                    &format!(
                        "Operation cannot be fulfilled on configmaps \"{name}\": the object has \
                         been modified; please apply your changes to the latest version and try again"
                    ),
                );
            }
            state.resource_version += 1;
            let mut object = body;
            object["metadata"]["resourceVersion"] = json!(state.resource_version.to_string());
            state.configmaps.insert(key, object.clone());
            HttpResponse::json(200, &object)
        }
        _ => status(
            405,
            "MethodNotAllowed",
            "only get, create and replace of configmaps are served",
        ),
    }
}
