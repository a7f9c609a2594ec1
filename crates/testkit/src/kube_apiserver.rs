//! The real Kubernetes API: etcd, kube-apiserver and kube-controller-manager, built from their
//! published modules by `cluster/build.sh` (one binary, `kube`, at the versions `cluster/` pins),
//! started on loopback with certificates made by `openssl`, stopped when dropped.
//!
//! - Authentication: static bearer tokens for the administrator and the controller manager, and
//!   real service-account tokens ([`KubeApiServer::service_account_token`], the TokenRequest API).
//! - Authorization: RBAC, as on a real cluster; admission: the API server's default plugins,
//!   ValidatingAdmissionPolicy among them.
//! - The controller manager runs the controllers the library relies on: service-account tokens
//!   (the agent's token Secret), service accounts, namespace deletion, garbage collection, and
//!   for the one-node cluster CA publishing, node lifecycle, Deployments and ReplicaSets.
//! - An audit log of every request at `Metadata` level, for counting API calls.
//!
//! No kubelet or scheduler: pods are never run here (that is `make e2e`'s rig).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::{at_exit, free_port, wait_for_http_ok, ServerProcess};

const BUILD_HINT: &str =
    "build it with `bash cluster/build.sh` (make test does; the first build takes ~25 minutes)";

/// The directory holding the rig's upstream binaries (`kube`, `argo`) and `crds/`:
/// `$SANDBOX_STEPS_CACHE/cluster` (default `~/.cache/sandbox-steps/cluster`), as cluster/build.sh.
pub fn cluster_cache() -> PathBuf {
    let base = std::env::var_os("SANDBOX_STEPS_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME is set"))
                .join(".cache/sandbox-steps")
        });
    base.join("cluster")
}

/// An upstream tool cluster/build.sh built (`kube`, `argo`); panics with the build hint if absent.
pub fn cluster_tool(name: &str) -> PathBuf {
    let path = cluster_cache().join("bin").join(name);
    assert!(path.is_file(), "{} not found: {BUILD_HINT}", path.display());
    path
}

/// Options for [`KubeApiServer::start_with`].
#[derive(Debug, Clone)]
pub struct KubeApiServerOptions {
    /// `--min-request-timeout` in seconds: watches end after a random time between this and twice
    /// it (the server's default is 1800).
    pub min_request_timeout_secs: u32,
    /// Whether to run kube-controller-manager.
    pub controller_manager: bool,
}

impl Default for KubeApiServerOptions {
    fn default() -> Self {
        KubeApiServerOptions {
            min_request_timeout_secs: 1800,
            controller_manager: true,
        }
    }
}

pub struct KubeApiServer {
    port: u16,
    admin_token: String,
    dir: tempfile::TempDir,
    http: reqwest::blocking::Client,
    /// Plural resource names by `apiVersion/kind`, from discovery.
    resources: Mutex<HashMap<String, (String, bool)>>,
    startup: Duration,
    /// kube-apiserver's command line, to start it again ([`KubeApiServer::restart_apiserver`]).
    apiserver_cmd: (PathBuf, Vec<String>),
    restarts: u32,
    // Dropped in this order: the controller manager, then the API server, then etcd.
    _controller_manager: Option<ServerProcess>,
    _apiserver: ServerProcess,
    _etcd: ServerProcess,
}

impl KubeApiServer {
    pub fn start() -> KubeApiServer {
        KubeApiServer::start_with(KubeApiServerOptions::default())
    }

    pub fn start_with(options: KubeApiServerOptions) -> KubeApiServer {
        let kube = cluster_tool("kube");
        let started = Instant::now();
        let dir = tempfile::tempdir().expect("kube-apiserver dir");
        let d = dir.path();
        make_certificates(d);

        let etcd_port = free_port();
        let peer_port = free_port();
        let mut etcd_cmd = Command::new(&kube);
        etcd_cmd
            .arg("etcd")
            .arg(format!("--data-dir={}", d.join("etcd").display()))
            .arg(format!("--listen-client-urls=http://127.0.0.1:{etcd_port}"))
            .arg(format!(
                "--advertise-client-urls=http://127.0.0.1:{etcd_port}"
            ))
            .arg(format!("--listen-peer-urls=http://127.0.0.1:{peer_port}"))
            .arg(format!(
                "--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}"
            ))
            .arg(format!(
                "--initial-cluster=default=http://127.0.0.1:{peer_port}"
            ))
            // A throwaway store: no fsync (seconds saved per test), little logging.
            .args(["--name=default", "--unsafe-no-fsync", "--log-level=warn"]);
        let mut etcd = ServerProcess::spawn("etcd", etcd_cmd, &d.join("etcd.log"));
        let health = format!("http://127.0.0.1:{etcd_port}/health");
        etcd.wait_ready(Duration::from_secs(30), || wait_for_http_ok(&health));

        let port = free_port();
        let admin_token = format!("admin-{port}");
        std::fs::write(
            d.join("tokens.csv"),
            format!(
                "{admin_token},admin,admin,system:masters\n\
                 controller-manager-{port},system:kube-controller-manager,kcm,system:masters\n"
            ),
        )
        .expect("write tokens");
        std::fs::write(
            d.join("audit-policy.yaml"),
            "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\n\
             rules:\n  - level: Metadata\n",
        )
        .expect("write audit policy");
        let p = |name: &str| d.join(name).display().to_string();
        let api_args: Vec<String> = vec![
            "kube-apiserver".into(),
            format!("--etcd-servers=http://127.0.0.1:{etcd_port}"),
            "--bind-address=127.0.0.1".into(),
            "--advertise-address=127.0.0.1".into(),
            format!("--secure-port={port}"),
            format!("--tls-cert-file={}", p("server.crt")),
            format!("--tls-private-key-file={}", p("server.key")),
            format!("--client-ca-file={}", p("ca.crt")),
            format!("--token-auth-file={}", p("tokens.csv")),
            "--authorization-mode=RBAC".into(),
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
            "--api-audiences=https://kubernetes.default.svc.cluster.local".into(),
            format!("--service-account-key-file={}", p("sa.pub")),
            format!("--service-account-signing-key-file={}", p("sa.key")),
            "--service-cluster-ip-range=10.96.0.0/16".into(),
            format!("--audit-policy-file={}", p("audit-policy.yaml")),
            format!("--audit-log-path={}", p("audit.log")),
            format!("--min-request-timeout={}", options.min_request_timeout_secs),
            "--profiling=false".into(),
            "--v=1".into(),
        ];
        let http = reqwest::blocking::Client::builder()
            .add_root_certificate(
                reqwest::Certificate::from_pem(&std::fs::read(d.join("ca.crt")).unwrap())
                    .expect("CA certificate"),
            )
            .timeout(Duration::from_secs(30))
            .build()
            .expect("HTTP client");
        let apiserver = start_apiserver(
            &kube,
            &api_args,
            &d.join("apiserver.log"),
            &http,
            port,
            &admin_token,
        );

        let controller_manager = options.controller_manager.then(|| {
            let kubeconfig = write_kubeconfig(
                &d.join("controller-manager.kubeconfig"),
                port,
                &d.join("ca.crt"),
                &format!("controller-manager-{port}"),
            );
            let mut cmd = Command::new(&kube);
            cmd.arg("kube-controller-manager")
                .arg(format!("--kubeconfig={}", kubeconfig.display()))
                // What a one-node cluster needs too: each namespace's kube-root-ca.crt (pods'
                // service-account volumes), the node's not-ready taint lifted once Ready, and
                // Deployments' pods (Argo Events runs its EventSources and Sensors as Deployments).
                .arg("--controllers=serviceaccount-token,serviceaccount,namespace,garbage-collector-controller,root-ca-certificate-publisher-controller,node-lifecycle-controller,deployment-controller,replicaset-controller")
                .arg(format!("--service-account-private-key-file={}", p("sa.key")))
                .arg(format!("--root-ca-file={}", p("ca.crt")))
                .args(["--leader-elect=false", "--secure-port=0", "--v=1"]);
            ServerProcess::spawn("kube-controller-manager", cmd, &d.join("controller-manager.log"))
        });

        let server = KubeApiServer {
            port,
            admin_token,
            http,
            resources: Mutex::default(),
            startup: Duration::ZERO,
            apiserver_cmd: (kube.clone(), api_args),
            restarts: 0,
            _controller_manager: controller_manager,
            _apiserver: apiserver,
            _etcd: etcd,
            dir,
        };
        if options.controller_manager {
            // Ready when the service-account controller made `default` in a new namespace.
            server.create_namespace("testkit-ready");
            let deadline = Instant::now() + Duration::from_secs(60);
            while server
                .get("/api/v1/namespaces/testkit-ready/serviceaccounts/default")
                .0
                != 200
            {
                assert!(
                    Instant::now() < deadline,
                    "kube-controller-manager made no service account in 60 s"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        KubeApiServer {
            startup: started.elapsed(),
            ..server
        }
    }

    /// For a server kept in a static (shared by the tests of one binary, never dropped): kill its
    /// processes (SIGKILL; a throwaway store needs no clean stop) and remove its directory when
    /// the test process exits.
    pub fn stop_at_exit(&self) {
        let mut pids = vec![self._etcd.pid(), self._apiserver.pid()];
        pids.extend(self._controller_manager.as_ref().map(ServerProcess::pid));
        let dir = self.dir.path().to_owned();
        at_exit(move || {
            for pid in pids.into_iter().rev() {
                crate::process::signal(pid, 9);
            }
            // Give the kernel a moment to release etcd's files before removing them.
            std::thread::sleep(Duration::from_millis(100));
            let _ = std::fs::remove_dir_all(dir);
        });
    }

    /// Kills kube-apiserver (SIGKILL: a crash, every connection cut) and starts it again on the
    /// same port and store; returns once it is ready. For clients that must ride out an outage.
    pub fn restart_apiserver(&mut self) {
        self._apiserver.kill_now();
        self.restarts += 1;
        let (kube, args) = &self.apiserver_cmd;
        let log = self
            .dir
            .path()
            .join(format!("apiserver-{}.log", self.restarts));
        self._apiserver =
            start_apiserver(kube, args, &log, &self.http, self.port, &self.admin_token);
    }

    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// How long [`KubeApiServer::start`] took, until the controllers answered.
    pub fn startup(&self) -> Duration {
        self.startup
    }

    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    /// The API server's audit log (one JSON event per line).
    pub fn audit_log(&self) -> Vec<Value> {
        std::fs::read_to_string(self.dir.path().join("audit.log"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// The administrator's static bearer token (`system:masters`), e.g. for a TokenReview caller.
    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }

    /// A kubeconfig file for the administrator (`system:masters`).
    pub fn admin_kubeconfig(&self) -> PathBuf {
        self.kubeconfig("admin", &self.admin_token)
    }

    /// A kubeconfig file at `<dir>/<name>.kubeconfig` that authenticates with `token`.
    pub fn kubeconfig(&self, name: &str, token: &str) -> PathBuf {
        write_kubeconfig(
            &self.dir.path().join(format!("{name}.kubeconfig")),
            self.port,
            &self.ca_file(),
            token,
        )
    }

    /// A real token of service account `namespace/name` (TokenRequest), valid for an hour.
    pub fn service_account_token(&self, namespace: &str, name: &str) -> String {
        let (status, body) = self.request(
            "POST",
            &format!("/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token"),
            Some(json!({
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenRequest",
                "spec": {"expirationSeconds": 3600},
            })),
            None,
        );
        assert_eq!(status, 201, "token for {namespace}/{name}: {body}");
        body["status"]["token"].as_str().unwrap().to_owned()
    }

    /// Namespace `namespace` (made when missing) with service account `account`, granted `rules`
    /// (a Role's rules) there by a Role and RoleBinding named `account` when given, else
    /// nothing; a kubeconfig with the account's real token, as a step in a pod would have it.
    pub fn account_kubeconfig(
        &self,
        namespace: &str,
        account: &str,
        rules: Option<Value>,
    ) -> PathBuf {
        self.create_namespace(namespace);
        let create = |path: &str, body: Value| {
            let (status, answer) = self.request("POST", path, Some(body), None);
            assert!(status == 201 || status == 409, "{path}: {status} {answer}");
        };
        create(
            &format!("/api/v1/namespaces/{namespace}/serviceaccounts"),
            json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": account}}),
        );
        if let Some(rules) = rules {
            let rbac = format!("/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}");
            create(
                &format!("{rbac}/roles"),
                json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                       "metadata": {"name": account}, "rules": rules}),
            );
            create(
                &format!("{rbac}/rolebindings"),
                json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                       "metadata": {"name": account},
                       "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": account},
                       "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": namespace}]}),
            );
        }
        let token = self.service_account_token(namespace, account);
        self.kubeconfig(&format!("{account}-{namespace}"), &token)
    }

    /// Calls the API as the administrator, or with `token` when given; (status, JSON body).
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        token: Option<&str>,
    ) -> (u16, Value) {
        self.client(token.unwrap_or(&self.admin_token))
            .request(method, path, body)
    }

    /// A client of this API server that authenticates with `token`, for another thread.
    pub fn client(&self, token: &str) -> ApiClient {
        ApiClient {
            http: self.http.clone(),
            url: self.url(),
            token: token.to_owned(),
        }
    }

    pub fn get(&self, path: &str) -> (u16, Value) {
        self.request("GET", path, None, None)
    }

    pub fn create_namespace(&self, name: &str) {
        let (status, body) = self.request(
            "POST",
            "/api/v1/namespaces",
            Some(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})),
            None,
        );
        assert!(
            status == 201 || status == 409,
            "create namespace {name}: {status} {body}"
        );
    }

    /// The API path of `object` (apiVersion, kind, metadata.name and .namespace), from discovery.
    pub fn path_of(&self, object: &Value) -> String {
        let api_version = object["apiVersion"].as_str().expect("apiVersion");
        let kind = object["kind"].as_str().expect("kind");
        let (plural, namespaced) = self.resource(api_version, kind);
        let prefix = if api_version.contains('/') {
            format!("/apis/{api_version}")
        } else {
            format!("/api/{api_version}")
        };
        let name = object["metadata"]["name"].as_str().unwrap_or_default();
        let namespace = object["metadata"]["namespace"].as_str();
        match (namespaced, namespace) {
            (true, Some(ns)) => format!("{prefix}/namespaces/{ns}/{plural}/{name}"),
            (true, None) => panic!("{kind} {name} is namespaced but names no namespace"),
            (false, _) => format!("{prefix}/{plural}/{name}"),
        }
    }

    fn resource(&self, api_version: &str, kind: &str) -> (String, bool) {
        let key = format!("{api_version}/{kind}");
        if let Some(found) = self.resources.lock().unwrap().get(&key) {
            return found.clone();
        }
        let path = if api_version.contains('/') {
            format!("/apis/{api_version}")
        } else {
            format!("/api/{api_version}")
        };
        let (status, list) = self.get(&path);
        assert_eq!(status, 200, "discovery {path}: {list}");
        let found = list["resources"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| r["kind"] == kind && !r["name"].as_str().unwrap_or("/").contains('/'))
            .map(|r| {
                (
                    r["name"].as_str().unwrap().to_owned(),
                    r["namespaced"].as_bool().unwrap_or(false),
                )
            })
            .unwrap_or_else(|| panic!("the API server serves no {kind} in {api_version}"));
        self.resources.lock().unwrap().insert(key, found.clone());
        found
    }

    /// Server-side apply of `object` as the administrator (or with `token`); (status, body).
    /// Strict field validation: an unknown or duplicated field is refused (400), as `kubectl
    /// apply --validate=strict` asks.
    pub fn apply(&self, object: &Value, token: Option<&str>) -> (u16, Value) {
        let path = format!(
            "{}?fieldManager=sandbox-steps-tests&force=true&fieldValidation=Strict",
            self.path_of(object)
        );
        let response = self
            .http
            .patch(format!("{}{path}", self.url()))
            .bearer_auth(token.unwrap_or(&self.admin_token))
            .header("Content-Type", "application/apply-patch+yaml")
            .body(object.to_string())
            .send()
            .unwrap_or_else(|e| panic!("apply {path}: {e}"));
        let status = response.status().as_u16();
        let text = response.text().unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// Installs CustomResourceDefinitions from YAML files and waits until each is Established and
    /// its kind is in discovery (which lags behind Established: a lookup right after it can get
    /// 404 for the group version).
    pub fn install_crds(&self, files: &[PathBuf]) {
        let mut names = Vec::new();
        let mut discovered = Vec::new();
        for file in files {
            let text =
                std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            for doc in split_yaml(&text) {
                let (status, body) = self.apply(&doc, None);
                assert!(status < 300, "{}: {status} {body}", file.display());
                names.push(doc["metadata"]["name"].as_str().unwrap().to_owned());
                let group = doc["spec"]["group"].as_str().unwrap_or_default();
                let kind = doc["spec"]["names"]["kind"].as_str().unwrap_or_default();
                for version in doc["spec"]["versions"].as_array().into_iter().flatten() {
                    if version["served"] == true {
                        let version = version["name"].as_str().unwrap_or_default();
                        discovered.push((format!("{group}/{version}"), kind.to_owned()));
                    }
                }
            }
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        for name in names {
            loop {
                let (_, crd) = self.get(&format!(
                    "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}"
                ));
                let established = crd["status"]["conditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|c| c["type"] == "Established" && c["status"] == "True");
                if established {
                    break;
                }
                assert!(Instant::now() < deadline, "CRD {name} not established");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        for (group_version, kind) in discovered {
            loop {
                let (status, list) = self.get(&format!("/apis/{group_version}"));
                let listed = status == 200
                    && list["resources"]
                        .as_array()
                        .is_some_and(|r| r.iter().any(|r| r["kind"] == kind.as_str()));
                if listed {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "{kind} not in discovery of {group_version}"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        self.resources.lock().unwrap().clear();
    }

    /// Whether `user` (with `groups`) may `verb` the resource (`resource` or `resource/subresource`;
    /// namespace "" for cluster scope; `resource:name` for one object, e.g. `clusterroles:admin`),
    /// as the API server decides it (SubjectAccessReview).
    pub fn can(
        &self,
        user: &str,
        groups: &[&str],
        verb: &str,
        group: &str,
        resource: &str,
        namespace: &str,
    ) -> bool {
        let (resource, name) = resource.split_once(':').unwrap_or((resource, ""));
        let (subresource, resource) = match resource.split_once('/') {
            Some((r, sub)) => (sub, r),
            None => ("", resource),
        };
        let (status, review) = self.request(
            "POST",
            "/apis/authorization.k8s.io/v1/subjectaccessreviews",
            Some(json!({
                "apiVersion": "authorization.k8s.io/v1",
                "kind": "SubjectAccessReview",
                "spec": {
                    "user": user,
                    "groups": groups,
                    "resourceAttributes": {
                        "verb": verb, "group": group, "resource": resource,
                        "subresource": subresource, "namespace": namespace, "name": name,
                    },
                },
            })),
            None,
        );
        assert_eq!(status, 201, "SubjectAccessReview: {review}");
        review["status"]["allowed"] == true
    }
}

/// Starts kube-apiserver and waits until `/readyz` answers 200.
fn start_apiserver(
    kube: &Path,
    args: &[String],
    log: &Path,
    http: &reqwest::blocking::Client,
    port: u16,
    admin_token: &str,
) -> ServerProcess {
    let mut cmd = Command::new(kube);
    cmd.args(args);
    let mut apiserver = ServerProcess::spawn("kube-apiserver", cmd, log);
    let readyz = format!("https://127.0.0.1:{port}/readyz");
    apiserver.wait_ready(Duration::from_secs(90), || {
        http.get(&readyz)
            .bearer_auth(admin_token)
            .send()
            .is_ok_and(|r| r.status() == 200)
    });
    apiserver
}

/// The documents of a multi-document YAML text, as JSON (empty documents skipped).
pub fn split_yaml(text: &str) -> Vec<Value> {
    text.split("\n---")
        .filter_map(|doc| {
            let value: Value = serde_yaml::from_str(doc).ok()?;
            (!value.is_null()).then_some(value)
        })
        .collect()
}

fn write_kubeconfig(path: &Path, port: u16, ca: &Path, token: &str) -> PathBuf {
    let config = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: testkit\n  cluster:\n    server: https://127.0.0.1:{port}\n    certificate-authority: {}\nusers:\n- name: testkit\n  user:\n    token: {token}\ncontexts:\n- name: testkit\n  context:\n    cluster: testkit\n    user: testkit\ncurrent-context: testkit\n",
        ca.display()
    );
    std::fs::write(path, config).expect("write kubeconfig");
    path.to_owned()
}

/// A CA, the API server's certificate (127.0.0.1, localhost, the `kubernetes` Service names) and
/// the service-account signing key pair, with Debian's openssl.
fn make_certificates(dir: &Path) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap_or_else(|e| panic!("openssl: {e} (install Debian's openssl)"));
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,\
         DNS:kubernetes.default.svc,IP:10.96.0.1\nextendedKeyUsage=serverAuth\n",
    )
    .expect("write server.ext");
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509", "-days", "2", "-subj", "/CN=testkit-kube-ca"];
    ca.extend(ec);
    ca.extend(["-keyout", "ca.key", "-out", "ca.crt"]);
    run(&ca);
    let mut csr = vec!["req", "-subj", "/CN=kube-apiserver"];
    csr.extend(ec);
    csr.extend(["-keyout", "server.key", "-out", "server.csr"]);
    run(&csr);
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "server.ext",
        "-out",
        "server.crt",
    ]);
    run(&[
        "ecparam",
        "-name",
        "prime256v1",
        "-genkey",
        "-noout",
        "-out",
        "sa.key",
    ]);
    run(&["ec", "-in", "sa.key", "-pubout", "-out", "sa.pub"]);
}

/// A client of a [`KubeApiServer`] with one token; cheap to clone and usable from any thread.
#[derive(Clone)]
pub struct ApiClient {
    http: reqwest::blocking::Client,
    url: String,
    token: String,
}

impl ApiClient {
    /// (status, JSON body); a PATCH is a JSON merge patch.
    pub fn request(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self
            .http
            .request(
                reqwest::Method::from_bytes(method.as_bytes()).expect("method"),
                format!("{}{path}", self.url),
            )
            .bearer_auth(&self.token);
        if let Some(body) = body {
            let content_type = if method == "PATCH" {
                "application/merge-patch+json"
            } else {
                "application/json"
            };
            request = request
                .header("Content-Type", content_type)
                .body(body.to_string());
        }
        let response = request
            .send()
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = response.status().as_u16();
        let text = response.text().unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }
}
