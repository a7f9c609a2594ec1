//! The library on real Argo: the Kubernetes API server, a one-node cluster (containerd, runc,
//! kubelet, kube-scheduler) and Argo Workflows' own controller and executor, all built from their
//! pinned modules (cluster/build.sh), run the step templates as pods of our image (`make image`).
//! Needs root; `make e2e` runs it (it is ignored by a plain `cargo test`).

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use testkit::{
    build_image, cluster_tool, ApiClient, FakeGcs, GitHubDouble, GitServer, HttpResponse,
    HttpServer, KubeApiServer, NatsServer, Node, OciRegistry, OpenBao, Postgres, RegistryAuth,
    ServerProcess,
};
use workspace_tests::{
    comment_event, manifests, prepare_for_the_library, repo_root, sensor_event, sensor_workflows,
    submit_as_sensor, TERRAFORM_DOUBLE,
};

/// The image the step templates name (they all name the same one; tests/image.rs checks it).
fn steps_image() -> String {
    manifests()
        .into_iter()
        .find(|(_, doc)| doc["metadata"]["name"] == "validate-params")
        .map(|(_, doc)| doc["spec"]["templates"][0]["container"]["image"].clone())
        .and_then(|image| image.as_str().map(str::to_owned))
        .expect("validate-params' image")
}

/// The cluster with the library installed, Argo's controller running, our image and the executor
/// image on the node.
struct Cluster {
    api: KubeApiServer,
    node: Node,
    _controller: ServerProcess,
    /// From the API server's start to the controller's start (the images imported).
    startup: Duration,
}

impl Cluster {
    fn start() -> Cluster {
        let archive = repo_root().join("target/image/sandbox-steps.oci.tar");
        assert!(
            archive.is_file(),
            "{} not found: run `make image` first (make e2e does)",
            archive.display()
        );
        let started = Instant::now();
        let api = KubeApiServer::start();
        prepare_for_the_library(&api);
        for (file, doc) in manifests() {
            let (status, body) = api.apply(&doc, None);
            assert!(
                status == 200 || status == 201,
                "{}: {status} {body}",
                file.display()
            );
        }
        let (status, body) = api.request(
            "POST",
            "/api/v1/namespaces/argo/configmaps",
            Some(json!({"metadata": {"name": "workflow-controller-configmap"}})),
            None,
        );
        assert_eq!(status, 201, "{body}");
        // The sweep's schedule is not the tests': they run the sweep themselves.
        let (status, body) = api.request(
            "PATCH",
            "/apis/argoproj.io/v1alpha1/namespaces/argo/cronworkflows/sandbox-sweep",
            Some(json!({"spec": {"suspend": true}})),
            None,
        );
        assert_eq!(status, 200, "{body}");

        let node = Node::start(&api);
        node.import_image(&archive, &steps_image());
        let argo_workflows = std::fs::canonicalize(cluster_tool("argo-workflows")).unwrap();
        let executor = "sandbox-steps.local/argoexec:e2e";
        let executor_archive = build_image(
            node.dir(),
            executor,
            &[(&argo_workflows, "/bin/argoexec")],
            "/bin/argoexec",
        );
        node.import_image(&executor_archive, executor);
        let (terraform_archive, terraform) = terraform_image(&node);
        node.import_image(&terraform_archive, &terraform);

        let mut cmd = Command::new(&argo_workflows);
        cmd.arg("workflow-controller")
            .arg(format!("--kubeconfig={}", api.admin_kubeconfig().display()))
            .args(["--namespace=argo", "--executor-image-pull-policy=Never"])
            .arg(format!("--executor-image={executor}"));
        let controller = ServerProcess::spawn(
            "workflow-controller",
            cmd,
            &node.dir().join("workflow-controller.log"),
        );
        let startup = started.elapsed();
        eprintln!("cluster up in {:.1} s", startup.as_secs_f64());
        Cluster {
            api,
            node,
            _controller: controller,
            startup,
        }
    }

    /// Submits `workflow` in `argo` and waits until it has finished; the finished Workflow.
    fn run(&self, workflow: Value) -> Value {
        let (status, created) = self.api.request(
            "POST",
            "/apis/argoproj.io/v1alpha1/namespaces/argo/workflows",
            Some(workflow),
            None,
        );
        assert_eq!(status, 201, "{created}");
        let name = created["metadata"]["name"].as_str().unwrap().to_owned();
        self.wait("argo", &name, Duration::from_secs(180))
    }

    /// Workflow `namespace/name` once it has finished.
    fn wait(&self, namespace: &str, name: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let workflow = self.workflow(namespace, name);
            let phase = workflow["status"]["phase"].as_str().unwrap_or("");
            if matches!(phase, "Succeeded" | "Failed" | "Error") {
                return workflow;
            }
            assert!(
                Instant::now() < deadline,
                "{name} not finished in {timeout:?}: {}\n{}",
                workflow["status"],
                self.node.logs()
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    fn workflow(&self, namespace: &str, name: &str) -> Value {
        let (status, workflow) = self.api.get(&format!(
            "/apis/argoproj.io/v1alpha1/namespaces/{namespace}/workflows/{name}"
        ));
        assert_eq!(status, 200, "{namespace}/{name}: {workflow}");
        workflow
    }
}

/// A Workflow calling one step template by templateRef, as the library's workflows do.
fn calling(template: &str, parameters: Value) -> Value {
    json!({
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Workflow",
        "metadata": {"generateName": format!("{template}-"), "namespace": "argo"},
        "spec": {
            "serviceAccountName": "sandbox-steps",
            "entrypoint": "main",
            "templates": [{
                "name": "main",
                "steps": [[{
                    "name": "step",
                    "templateRef": {"name": template, "template": template, "clusterScope": true},
                    "arguments": {"parameters": parameters},
                }]],
            }],
        },
    })
}

/// The nodes of the step's pods (retries included), in start order.
fn pods(workflow: &Value) -> Vec<Value> {
    let mut pods: Vec<Value> = workflow["status"]["nodes"]
        .as_object()
        .unwrap()
        .values()
        .filter(|n| n["type"] == "Pod")
        .cloned()
        .collect();
    pods.sort_by_key(|n| n["startedAt"].as_str().unwrap_or("").to_owned());
    pods
}

#[test]
#[ignore = "make e2e: needs root and make image's archive"]
fn step_templates_run_on_real_argo() {
    let cluster = Cluster::start();

    // validate-params as Argo runs it: as uid 65532 with a read-only root filesystem, its flags
    // from the template's environment, its outputs read from the files it writes.
    let workflow = cluster.run(calling(
        "validate-params",
        json!([
            {"name": "pr-number", "value": "42"},
            {"name": "head-ref", "value": "feature/JIRA-42_Ünïcode"},
            {"name": "repository", "value": "acme/platform"},
        ]),
    ));
    assert_eq!(
        workflow["status"]["phase"], "Succeeded",
        "{}",
        workflow["status"]
    );
    let step = &pods(&workflow)[0];
    let outputs: serde_json::Map<String, Value> = step["outputs"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["name"].as_str().unwrap().to_owned(), p["value"].clone()))
        .collect();
    assert_eq!(outputs["environment"], "sbx-pr-42");
    assert_eq!(outputs["database"], "sbx_pr_42");
    assert_eq!(outputs["namespace"], "sbx-pr-42");
    assert!(
        outputs["head-ref-slug"]
            .as_str()
            .unwrap()
            .starts_with("feature-jira-42-unicode-"),
        "{outputs:?}"
    );

    // wait-workflow in a pod: the in-cluster client (the service account's token and CA) reaches
    // the API server at the `kubernetes` Service and waits for the workflow above, with the
    // ClusterRole rbac/ gives it (bound in the waited-for namespace, as create-sandbox does).
    let (status, body) = cluster.api.request(
        "POST",
        "/apis/rbac.authorization.k8s.io/v1/namespaces/argo/rolebindings",
        Some(json!({
            "metadata": {"name": "sandbox-steps-wait-workflow"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                        "name": "sandbox-steps-wait-workflow"},
            "subjects": [{"kind": "ServiceAccount", "name": "sandbox-steps", "namespace": "argo"}],
        })),
        None,
    );
    assert_eq!(status, 201, "{body}");
    let waited = workflow["metadata"]["name"].as_str().unwrap().to_owned();
    let workflow = cluster.run(calling(
        "wait-workflow",
        json!([
            {"name": "name", "value": waited},
            {"name": "namespace", "value": "argo"},
            {"name": "timeout", "value": "2m"},
        ]),
    ));
    assert_eq!(
        workflow["status"]["phase"], "Succeeded",
        "{}",
        workflow["status"]
    );
    let step = &pods(&workflow)[0];
    let phase = step["outputs"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "phase")
        .map(|p| p["value"].clone());
    assert_eq!(phase, Some(json!("Succeeded")), "{}", step["outputs"]);

    // create-branch in a pod reaches this machine's git server (at the node's gateway) with the
    // token of the Secret the template reads, and pushes the sandbox's branch.
    let git = GitServer::start("e2e-token");
    let repo = git
        .create_repo("infra", &[("kustomize/README.md", "environments\n")])
        .replace("127.0.0.1", Node::GATEWAY);
    let (status, body) = cluster.api.request(
        "POST",
        "/api/v1/namespaces/argo/secrets",
        Some(json!({
            "metadata": {"name": "sandbox-steps-git"},
            "stringData": {"token": "e2e-token"},
        })),
        None,
    );
    assert_eq!(status, 201, "{body}");
    let workflow = cluster.run(calling(
        "create-branch",
        json!([
            {"name": "repo", "value": repo},
            {"name": "branch", "value": "sbx-pr-42"},
        ]),
    ));
    assert_eq!(
        workflow["status"]["phase"], "Succeeded",
        "{}",
        workflow["status"]
    );
    let main = git.rev_parse("infra", "refs/heads/main").unwrap();
    assert_eq!(
        git.rev_parse("infra", "refs/heads/sbx-pr-42").as_deref(),
        Some(main.as_str())
    );

    // copy-bucket in a pod copies a bucket's documents on this machine's fake-gcs-server (the
    // template's storage-emulator-host, at the node's gateway).
    let gcs = FakeGcs::start();
    gcs.create_bucket("acme-integration");
    gcs.create_bucket("acme-sbx-pr-42");
    for i in 0..5 {
        gcs.put_object(
            "acme-integration",
            &format!("documents/{i}.txt"),
            "text/plain",
            format!("document {i}").as_bytes(),
        );
    }
    let workflow = cluster.run(calling(
        "copy-bucket",
        json!([
            {"name": "source", "value": "gs://acme-integration/documents/"},
            {"name": "dest", "value": "gs://acme-sbx-pr-42/documents/"},
            {"name": "storage-emulator-host",
             "value": gcs.endpoint().replace("127.0.0.1", Node::GATEWAY)},
        ]),
    ));
    assert_eq!(
        workflow["status"]["phase"], "Succeeded",
        "{}",
        workflow["status"]
    );
    assert_eq!(gcs.list("acme-sbx-pr-42", "documents/").len(), 5);

    // Invalid input: the step's exit code 2 reaches Argo through the executor, and the template's
    // retryStrategy (exit 4 only) does not retry it.
    let workflow = cluster.run(calling(
        "validate-params",
        json!([
            {"name": "pr-number", "value": "forty-two"},
            {"name": "head-ref", "value": "feature/x"},
            {"name": "repository", "value": "acme/platform"},
        ]),
    ));
    assert_eq!(
        workflow["status"]["phase"], "Failed",
        "{}",
        workflow["status"]
    );
    let attempts = pods(&workflow);
    assert_eq!(attempts.len(), 1, "retried: {}", workflow["status"]);
    assert_eq!(
        attempts[0]["outputs"]["exitCode"], "2",
        "{}",
        workflow["status"]
    );
}

/// The Terraform image the terraform template names, with [`TERRAFORM_DOUBLE`] as `terraform`
/// and busybox (Debian's busybox-static) as its shell and tools.
fn terraform_image(node: &Node) -> (PathBuf, String) {
    let image = manifests()
        .into_iter()
        .find(|(_, doc)| doc["metadata"]["name"] == "terraform")
        .and_then(|(_, doc)| {
            doc["spec"]["templates"][0]["container"]["image"]
                .as_str()
                .map(str::to_owned)
        })
        .expect("the terraform template's image");
    // containerd names images in full; the kubelet asks for docker.io/<name> of a short name.
    let image = if image
        .split('/')
        .next()
        .is_some_and(|host| host.contains('.'))
    {
        image
    } else {
        format!("docker.io/{image}")
    };
    let bin = node.dir().join("terraform-image/bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::copy("/bin/busybox", bin.join("busybox")).expect("busybox-static's /bin/busybox");
    for applet in ["sh", "cp", "rm", "mkdir", "cat", "echo", "ls"] {
        std::os::unix::fs::symlink("busybox", bin.join(applet)).unwrap();
    }
    let terraform = bin.join("terraform");
    std::fs::write(&terraform, TERRAFORM_DOUBLE).unwrap();
    std::fs::set_permissions(&terraform, std::fs::Permissions::from_mode(0o755)).unwrap();
    let archive = build_image(node.dir(), &image, &[(&bin, "/bin")], "/bin/terraform");
    (archive, image)
}

/// What the platform's policy engine does for the library (workflow-templates/README, step 2: a
/// Kyverno `generate` rule or a ClusterExternalSecret): copies the Secrets a sandbox's steps read
/// into every namespace labelled `sandbox-steps.io/environment` as it appears. A stand-in, named
/// so: a thread that polls the namespaces every 200 ms until dropped.
struct SecretCopier {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SecretCopier {
    fn start(api: ApiClient, secrets: Vec<(&'static str, Value)>) -> SecretCopier {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                let (_, namespaces) = api.request(
                    "GET",
                    "/api/v1/namespaces?labelSelector=sandbox-steps.io%2Fenvironment",
                    None,
                );
                for namespace in namespaces["items"].as_array().into_iter().flatten() {
                    let namespace = namespace["metadata"]["name"].as_str().unwrap_or_default();
                    for (name, data) in &secrets {
                        // 409: already there; 403/404: the namespace is going away.
                        api.request(
                            "POST",
                            &format!("/api/v1/namespaces/{namespace}/secrets"),
                            Some(json!({"metadata": {"name": name}, "stringData": data})),
                        );
                    }
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        });
        SecretCopier {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for SecretCopier {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// What Argo CD does for the library, as far as wait-argocd-app sees it: its app-of-apps creates
/// each Application committed under apps/sandboxes/ (and deletes it when the file goes), and its
/// application controller syncs it: first OutOfSync and Missing, a second later Synced at the
/// environment branch's commit and Healthy. A stand-in, named so (no Argo CD runs here): a thread
/// that polls the app-of-apps repository every 300 ms until dropped.
struct ArgoCdStandIn {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ArgoCdStandIn {
    const NAMESPACE: &'static str = "argocd";

    fn start(api: ApiClient, apps_repo: PathBuf, infra_repo: PathBuf) -> ArgoCdStandIn {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let git = |repo: &Path, args: &[&str]| -> Option<String> {
            let out = Command::new("git")
                .arg("--git-dir")
                .arg(repo)
                .args(args)
                .output()
                .ok()?;
            out.status
                .success()
                .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        };
        let collection = format!(
            "/apis/argoproj.io/v1alpha1/namespaces/{}/applications",
            Self::NAMESPACE
        );
        let thread = std::thread::spawn(move || {
            let mut seen_at: BTreeMap<String, Instant> = BTreeMap::new();
            while !stopped.load(Ordering::Relaxed) {
                let files = git(
                    &apps_repo,
                    &["ls-tree", "--name-only", "main", "apps/sandboxes/"],
                )
                .unwrap_or_default();
                let mut committed = BTreeSet::new();
                for file in files.lines().filter(|f| f.ends_with(".yaml")) {
                    let Some(text) = git(&apps_repo, &["show", &format!("main:{file}")]) else {
                        continue;
                    };
                    let Ok(app) = serde_yaml::from_str::<Value>(&text) else {
                        continue;
                    };
                    let Some(name) = app["metadata"]["name"].as_str().map(str::to_owned) else {
                        continue;
                    };
                    committed.insert(name.clone());
                    let first = *seen_at.entry(name.clone()).or_insert_with(Instant::now);
                    let branch = app["spec"]["source"]["targetRevision"]
                        .as_str()
                        .unwrap_or_default();
                    let revision =
                        git(&infra_repo, &["rev-parse", &format!("refs/heads/{branch}")])
                            .unwrap_or_default();
                    let status = if first.elapsed() < Duration::from_secs(1) {
                        json!({"sync": {"status": "OutOfSync"}, "health": {"status": "Missing"}})
                    } else {
                        json!({"sync": {"status": "Synced", "revision": revision},
                               "health": {"status": "Healthy"},
                               "resources": [{"version": "v1", "kind": "ConfigMap", "name": "sandbox-config",
                                              "namespace": app["spec"]["destination"]["namespace"],
                                              "status": "Synced", "health": {"status": "Healthy"}}]})
                    };
                    let path = format!("{collection}/{name}");
                    let (code, _) = api.request("GET", &path, None);
                    if code == 404 {
                        let mut object = app.clone();
                        object["metadata"] = json!({"name": name, "namespace": Self::NAMESPACE});
                        object["status"] = status;
                        api.request("POST", &collection, Some(object));
                    } else {
                        api.request("PATCH", &path, Some(json!({"status": status})));
                    }
                }
                for gone in seen_at
                    .keys()
                    .filter(|n| !committed.contains(*n))
                    .cloned()
                    .collect::<Vec<_>>()
                {
                    api.request("DELETE", &format!("{collection}/{gone}"), None);
                    seen_at.remove(&gone);
                }
                std::thread::sleep(Duration::from_millis(300));
            }
        });
        ArgoCdStandIn {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for ArgoCdStandIn {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// `url` of a server on this machine's loopback as the pods reach it (the node's gateway).
fn from_pods(url: &str) -> String {
    url.replace("127.0.0.1", Node::GATEWAY)
}

/// The text of `path` at `refname` in the bare repository `repo`, or None.
fn git_show(git: &GitServer, repo: &str, refname: &str, path: &str) -> Option<String> {
    let out = Command::new(testkit::git_binary())
        .arg("--git-dir")
        .arg(git.repo_path(repo))
        .args(["show", &format!("{refname}:{path}")])
        .output()
        .unwrap();
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The Pod nodes of a finished workflow as (step name, seconds from pod start to end, exit code).
fn pod_times(workflow: &Value) -> Vec<(String, i64, String)> {
    pods(workflow)
        .iter()
        .map(|n| {
            let seconds = match (
                epoch_seconds(&n["startedAt"]),
                epoch_seconds(&n["finishedAt"]),
            ) {
                (Some(a), Some(b)) => b - a,
                _ => -1,
            };
            let exit = n["outputs"]["exitCode"].as_str().unwrap_or("-").to_owned();
            (
                n["displayName"].as_str().unwrap_or("?").to_owned(),
                seconds,
                exit,
            )
        })
        .collect()
}

const GIT_TOKEN: &str = "e2e-git-token";
const GITHUB_TOKEN: &str = "e2e-github-token";
const ADMIN_URL_PASSWORD: &str = "e2e-admin-password";

const SANDBOX_KUSTOMIZATION: &str = "\
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
namespace: apps-template
resources:
  - ../../base
images:
  - name: acme/web
    newTag: latest
configMapGenerator:
  - name: sandbox-config
    literals:
      - ENVIRONMENT=template
";

const INTEGRATION_KUSTOMIZATION: &str = "\
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - ../../base
images:
  - name: acme/web
    newTag: 2026.11.30-1a2b3c4
";

/// The servers around the cluster a sandbox is made of, on this machine, set up as
/// workflow-templates/README tells a user: the infrastructure and app-of-apps repositories (git
/// smart HTTP), GitHub (a double: no GitHub runs here), GCS (fake-gcs-server), PostgreSQL with
/// the integration database's nightly backup, OpenBao with Kubernetes auth against the cluster's
/// API server, and a receiver of the failure reports.
struct Platform {
    git: GitServer,
    github: GitHubDouble,
    /// Where the pull request's CI pushes its builds (`acme/api:sha-<short>`).
    registry: OciRegistry,
    gcs: FakeGcs,
    postgres: Postgres,
    bao: OpenBao,
    notify: HttpServer,
    backup_bytes: usize,
    _secrets: SecretCopier,
}

impl Platform {
    fn start(cluster: &Cluster) -> Platform {
        let api = &cluster.api;
        let git = GitServer::start(GIT_TOKEN);
        git.create_repo(
            "infra",
            &[
                (
                    "kustomize/environments/sandbox/kustomization.yaml",
                    SANDBOX_KUSTOMIZATION,
                ),
                (
                    "kustomize/environments/integration/kustomization.yaml",
                    INTEGRATION_KUSTOMIZATION,
                ),
                (
                    "terraform/sandbox/main.tf",
                    "variable \"environment\" {}\nvariable \"namespace\" {}\n",
                ),
                // The setting sql-scripts: run-sql runs these on the environment branch.
                ("db/sandbox/0001_qa_logins.sql", QA_LOGINS_SQL),
            ],
        );
        git.create_repo("gitops", &[("apps/sandboxes/README.md", "sandboxes\n")]);
        let github = GitHubDouble::start("acme", "platform", GITHUB_TOKEN);

        // The integration environment's documents and its database's nightly backup.
        let gcs = FakeGcs::start();
        gcs.create_bucket("acme-integration");
        gcs.create_bucket("acme-integration-backups");
        for i in 0..20 {
            gcs.put_object(
                "acme-integration",
                &format!("documents/contract-{i:02}.txt"),
                "text/plain",
                format!("contract {i}\n").repeat(100).as_bytes(),
            );
        }
        let postgres = Postgres::start_with_password("e2e-superuser-password");
        postgres.allow_network("10.88.0.0/16");
        postgres.psql(
            "postgres",
            &format!(
                "CREATE ROLE sandbox_admin LOGIN CREATEDB CREATEROLE PASSWORD '{ADMIN_URL_PASSWORD}'"
            ),
        );
        postgres.psql("postgres", "CREATE DATABASE integration");
        postgres.psql(
            "integration",
            "CREATE TABLE customers (id int PRIMARY KEY, email text NOT NULL UNIQUE);
             INSERT INTO customers SELECT g, 'customer' || g || '@example.com'
               FROM generate_series(1, 1000) g;
             CREATE TABLE orders (id bigint PRIMARY KEY,
               customer_id int NOT NULL REFERENCES customers, amount numeric(10, 2));
             CREATE INDEX orders_customer ON orders (customer_id);
             INSERT INTO orders SELECT g, 1 + g % 1000, g % 997 FROM generate_series(1, 20000) g;",
        );
        let dump = Command::new(postgres.bindir().join("pg_dump"))
            .arg(postgres.url("integration"))
            .output()
            .unwrap();
        assert!(
            dump.status.success(),
            "pg_dump: {}",
            String::from_utf8_lossy(&dump.stderr)
        );
        gcs.put_object(
            "acme-integration-backups",
            "nightly/integration-2026-11-30T02:00:00Z.sql",
            "application/sql",
            &dump.stdout,
        );
        // The sandboxes' buckets are Terraform's to make; its double does not, so they are here.
        for sandbox in ["sbx-pr-42", "sbx-pr-43"] {
            gcs.create_bucket(&format!("acme-{sandbox}"));
        }

        // OpenBao: Kubernetes auth with the cluster's TokenReview, and README's policy and role.
        let bao = OpenBao::start();
        bao.api(
            "POST",
            "sys/auth/kubernetes",
            Some(json!({"type": "kubernetes"})),
        );
        bao.api(
            "POST",
            "auth/kubernetes/config",
            Some(json!({
                "kubernetes_host": api.url(),
                "kubernetes_ca_cert": std::fs::read_to_string(api.ca_file()).unwrap(),
                "token_reviewer_jwt": api.admin_token(),
                "disable_local_ca_jwt": true,
            })),
        );
        for name in ["sandbox-steps", "sandbox-sweep"] {
            let (policy, role) = readme_vault_setup(name);
            bao.api(
                "PUT",
                &format!("sys/policies/acl/{name}"),
                Some(json!({ "policy": policy })),
            );
            bao.api("POST", &format!("auth/kubernetes/role/{name}"), Some(role));
        }

        // README step 2: the Secrets of the workflows' namespace, and those a sandbox's
        // namespace gets from the platform's policy.
        for (name, token) in [
            ("sandbox-steps-git", GIT_TOKEN),
            ("sandbox-steps-github", GITHUB_TOKEN),
        ] {
            let (status, body) = api.request(
                "POST",
                "/api/v1/namespaces/argo/secrets",
                Some(json!({"metadata": {"name": name}, "stringData": {"token": token}})),
                None,
            );
            assert_eq!(status, 201, "{body}");
        }
        let admin_url = format!(
            "postgres://sandbox_admin:{ADMIN_URL_PASSWORD}@{}:{}/postgres",
            Node::GATEWAY,
            postgres.port()
        );
        // README step 2: the sweep lists the sandboxes' databases from the workflows' namespace.
        let (status, body) = api.request(
            "POST",
            "/api/v1/namespaces/argo/secrets",
            Some(json!({"metadata": {"name": "sandbox-steps-db-admin"}, "stringData": {"url": admin_url}})),
            None,
        );
        assert_eq!(status, 201, "{body}");
        let secrets = SecretCopier::start(
            api.client(api.admin_token()),
            vec![
                ("sandbox-steps-git", json!({"token": GIT_TOKEN})),
                ("sandbox-steps-db-admin", json!({"url": admin_url})),
                (
                    "sandbox-steps-masking",
                    json!({"rules.yaml": MASKING_RULES, "key": "e2e-masking-key"}),
                ),
            ],
        );
        let notify = HttpServer::start(|_| HttpResponse::new(200));
        let registry = OciRegistry::start(RegistryAuth::Anonymous);
        Platform {
            git,
            github,
            registry,
            gcs,
            postgres,
            bao,
            notify,
            backup_bytes: dump.stdout.len(),
            _secrets: secrets,
        }
    }

    /// The platform's settings (what install/example's settings.yaml sets as the templates'
    /// defaults), pointed at these servers as the pods reach them.
    fn settings(&self) -> Vec<(&'static str, String)> {
        vec![
            ("infra-repo", from_pods(&self.git.url("infra"))),
            ("apps-repo", from_pods(&self.git.url("gitops"))),
            ("vault-addr", from_pods(&self.bao.addr())),
            ("integration-bucket", "acme-integration".into()),
            (
                "database-backups",
                "gs://acme-integration-backups/nightly/".into(),
            ),
            ("storage-emulator-host", from_pods(&self.gcs.endpoint())),
            ("github-api-url", from_pods(&self.github.url())),
            ("notify-url", from_pods(&self.notify.url())),
            // The pull request's repository builds acme/api; CI tags it with the commit.
            (
                "pr-images",
                format!(
                    "acme/api={}/acme/api:sha-{{short}}",
                    from_pods(&self.registry.host())
                ),
            ),
            ("registry-plain-http", "true".into()),
            // The data settings: the scripts of db/sandbox, and masking (the Secret
            // sandbox-steps-masking copied into each sandbox namespace).
            ("sql-scripts", "db/sandbox".into()),
            ("mask-data", "true".into()),
        ]
    }
}

/// The setting sql-scripts' one script: a table of QA logins every sandbox gets.
const QA_LOGINS_SQL: &str = "CREATE TABLE qa_logins (login text PRIMARY KEY);\n\
                             INSERT INTO qa_logins VALUES ('qa@acme.test');\n";

/// The Secret sandbox-steps-masking's rules (install step 2): the integration database's one
/// personal column.
const MASKING_RULES: &str = "customers:\n  email: email\n";

/// workflow-templates/README step 3, as a user types it: the Vault policy's HCL and the role's
/// settings.
fn readme_vault_setup(name: &str) -> (String, Value) {
    let readme = std::fs::read_to_string(repo_root().join("workflow-templates/README.md")).unwrap();
    let start = readme
        .find(&format!("vault policy write {name} - <<'HCL'\n"))
        .expect("README: the Vault policy");
    let body = &readme[start..];
    let body = &body[body.find('\n').unwrap() + 1..];
    let policy: String = body[..body.find("\n   HCL").expect("README: the policy's end")]
        .lines()
        .map(|l| format!("{}\n", l.trim()))
        .collect();
    let role_start = readme
        .find(&format!("vault write auth/kubernetes/role/{name} "))
        .expect("README: the Vault role");
    let role_text = readme[role_start..]
        .split("```")
        .next()
        .unwrap()
        .replace("\\\n", " ");
    let mut role = json!({});
    for word in role_text.split_whitespace().filter(|w| w.contains('=')) {
        let (key, value) = word.split_once('=').unwrap();
        let value = value.trim_matches('\'');
        role[key] = if key.starts_with("bound_") || key == "token_policies" {
            json!(value.split(',').collect::<Vec<_>>())
        } else {
            json!(value)
        };
    }
    assert!(
        role["bound_service_account_names"].is_array(),
        "README's role: {role_text}"
    );
    (policy, role)
}

/// `workflow` with its arguments `settings` added (or replaced).
fn with_settings(mut workflow: Value, settings: &[(&str, String)], template: &Value) -> Value {
    // Only what the template declares: the Sensors' Workflows name a ClusterWorkflowTemplate.
    let declared: Vec<&str> = template["spec"]["arguments"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    let parameters = workflow["spec"]["arguments"]["parameters"]
        .as_array_mut()
        .unwrap();
    for (name, value) in settings {
        if !declared.contains(name) {
            continue;
        }
        parameters.retain(|p| p["name"] != *name);
        parameters.push(json!({"name": name, "value": value}));
    }
    workflow
}

fn manifest(name: &str) -> Value {
    manifests()
        .into_iter()
        .find(|(_, doc)| doc["metadata"]["name"] == name && doc["kind"] != "Sensor")
        .map(|(_, doc)| doc)
        .unwrap_or_else(|| panic!("no manifest {name}"))
}

fn output(node: &Value, name: &str) -> String {
    node["outputs"]["parameters"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["name"] == name)
        .and_then(|p| p["value"].as_str())
        .unwrap_or_default()
        .to_owned()
}

/// The node of `workflow` whose display name is `name` (a retried step's Retry node, which
/// carries its last attempt's outputs; its attempts are `name(0)`, `name(1)`, ...).
fn node<'a>(workflow: &'a Value, name: &str) -> &'a Value {
    workflow["status"]["nodes"]
        .as_object()
        .unwrap()
        .values()
        .find(|n| n["displayName"] == name)
        .unwrap_or_else(|| panic!("no node {name}: {}", workflow["status"]))
}

/// Pull request `pr`'s card as it is now.
fn card_body(github: &GitHubDouble, pr: u64) -> String {
    github
        .comments(pr)
        .into_iter()
        .find(|c| c.body.contains("sandbox-steps:card"))
        .map(|c| c.body)
        .unwrap_or_default()
}

/// The states pull request `pr`'s card showed, in order (report-status's writes).
fn card_states(github: &GitHubDouble, pr: u64) -> Vec<&'static str> {
    let mut states: Vec<&'static str> = Vec::new();
    for body in github.comment_history(pr) {
        let state = report_status::shown_state(&body).map_or("?", |s| s.name());
        if states.last() != Some(&state) {
            states.push(state);
        }
    }
    states
}

/// The exit codes of the attempts of step `name`, in order.
fn attempts(workflow: &Value, name: &str) -> Vec<String> {
    pods(workflow)
        .iter()
        .filter(|n| {
            let shown = n["displayName"].as_str().unwrap_or_default();
            shown == name || shown.strip_prefix(name).is_some_and(|r| r.starts_with('('))
        })
        .map(|n| n["outputs"]["exitCode"].as_str().unwrap_or("-").to_owned())
        .collect()
}

fn report(title: &str, workflow: &Value) {
    eprintln!("{title}: {}", workflow["status"]["phase"]);
    for (step, seconds, exit) in pod_times(workflow) {
        eprintln!("  {step:<40} {seconds:>4} s  exit {exit}");
    }
}

/// An Argo timestamp (RFC 3339, whole seconds) as seconds since the epoch.
fn epoch_seconds(time: &Value) -> Option<i64> {
    let time = humantime::parse_rfc3339(time.as_str()?).ok()?;
    Some(time.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs() as i64)
}

fn seconds_between(from: &Value, to: &Value) -> i64 {
    let at = |v: &Value| epoch_seconds(v).unwrap_or_else(|| panic!("not a time: {v}"));
    at(to) - at(from)
}

/// The lifecycle on real Argo: real `pull_request` payloads, signed with the webhook secret, POSTed
/// to the library's EventSource; its Sensors submit create-sandbox, which makes a pull request's
/// sandbox from the servers of this machine (git, GCS, PostgreSQL, OpenBao), and delete-sandbox,
/// which removes it; faults: a transient failure retried, a permanent one reported at once, and
/// create and delete of one pull request never overlapping.
#[test]
#[ignore = "make e2e: needs root and make image's archive"]
fn a_pull_request_gets_its_sandbox_and_loses_it_on_real_argo() {
    let cluster = Cluster::start();
    let platform = Platform::start(&cluster);
    install_settings(&cluster.api, &platform.settings());
    let events = ArgoEvents::start(&cluster);
    let _argocd = ArgoCdStandIn::start(
        cluster.api.client(cluster.api.admin_token()),
        platform.git.repo_path("gitops"),
        platform.git.repo_path("infra"),
    );

    // 1. The pull request is opened with the label: GitHub's webhook reaches the EventSource,
    // the create-sandbox Sensor submits create-sandbox.
    let opened = sensor_event("create-sandbox-sensor", "opened", 42);
    let head_ref = opened["body"]["pull_request"]["head"]["ref"]
        .as_str()
        .unwrap()
        .to_owned();
    platform.github.add_pull(42, "open", &head_ref);
    // CI built the pull request's head: its image is in the registry.
    let opened_sha = opened["body"]["pull_request"]["head"]["sha"]
        .as_str()
        .unwrap()
        .to_owned();
    platform.github.set_pull_head(42, &opened_sha);
    let api_digest = platform.registry.push_image(
        "acme/api",
        &format!("sha-{}", &opened_sha[..7]),
        "api, opened",
    );
    let submitted = std::time::SystemTime::now();
    let name = events.deliver(&cluster, "create-sandbox", &opened);
    let created = cluster.wait("argo", &name, Duration::from_secs(600));
    report(&name, &created);
    assert_eq!(
        created["status"]["phase"],
        "Succeeded",
        "{}\n{}",
        created["status"],
        cluster.node.logs()
    );
    let namespace = "apps-sbx-pr-42";
    assert_eq!(output(node(&created, "validate"), "namespace"), namespace);
    // Admitted (no cap is set: counted all the same), in the ConfigMap of the workflows' namespace.
    assert!(
        admitted(&cluster.api).contains(&"sbx-pr-42".to_owned()),
        "{:?}",
        admitted(&cluster.api)
    );
    // At a cap of one, PR 49's request waits behind 42 (create-sandbox's admission loop alone:
    // its entrypoint `admission`): the card says queued, position 1 of 1, until 42's deletion
    // releases the slot (below).
    platform.github.add_pull(49, "open", "feature/queued");
    let queued_name = submit(
        &cluster,
        "admission-pr-49-",
        "create-sandbox",
        Some("admission"),
        &[
            ("pr-number", "49"),
            ("head-ref", "feature/queued"),
            ("repository", "acme/platform"),
            ("repository-name", "platform"),
            ("max-sandboxes", "1"),
            ("environment", "sbx-pr-49"),
            ("shown", "0"),
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(180);
    while card_states(&platform.github, 49) != ["queued"] {
        assert!(
            Instant::now() < deadline,
            "49 never shown queued: {}",
            cluster.workflow("argo", &queued_name)["status"]
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let card = &platform.github.comments(49)[0].body;
    assert!(card.contains("| Queue | position 1 of 1"), "{card}");

    // The environment branch, with the patched kustomization.
    let kustomization = git_show(
        &platform.git,
        "infra",
        "sbx-pr-42",
        "kustomize/environments/sandbox/kustomization.yaml",
    )
    .expect("the branch sbx-pr-42 with the sandbox's kustomization");
    assert!(
        kustomization.contains(&format!("namespace: {namespace}"))
            && kustomization.contains("2026.11.30-1a2b3c4")
            && kustomization.contains("ENVIRONMENT=sbx-pr-42"),
        "{kustomization}"
    );
    // The pull request's own build, pinned by digest, beside the integration's other images.
    assert!(
        kustomization.contains(&format!("newTag: sha-{}", &opened_sha[..7]))
            && kustomization.contains(&format!("digest: {api_digest}")),
        "{kustomization}"
    );
    // The namespace, its service account and bindings.
    let (status, ns) = cluster.api.get(&format!("/api/v1/namespaces/{namespace}"));
    assert_eq!(status, 200, "{ns}");
    assert_eq!(
        ns["metadata"]["labels"]["sandbox-steps.io/environment"],
        "sbx-pr-42"
    );
    for path in [
        format!("/api/v1/namespaces/{namespace}/serviceaccounts/sandbox-runner"),
        format!("/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/rolebindings/sandbox-runner-executor"),
        format!("/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/rolebindings/sandbox-steps-wait-workflow"),
    ] {
        assert_eq!(cluster.api.get(&path).0, 200, "{path}");
    }
    // The child workflow ran Terraform (its double), copy-bucket and restore-db for real.
    let child_name = output(node(&created, "provision"), "name");
    let child = cluster.workflow(namespace, &child_name);
    report(&format!("{namespace}/{child_name}"), &child);
    assert_eq!(child["status"]["phase"], "Succeeded", "{}", child["status"]);
    assert_eq!(
        platform.gcs.list("acme-sbx-pr-42", "documents/").len(),
        20,
        "the sandbox's documents"
    );
    assert_eq!(
        platform.postgres.psql(
            "sbx_pr_42",
            "SELECT count(*) FROM customers, orders WHERE orders.id = 1"
        ),
        "1000"
    );
    assert_eq!(
        platform.postgres.psql(
            "postgres",
            "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'sbx_pr_42'"
        ),
        "sbx_pr_42",
        "the database is its own role's"
    );
    // mask-data: restore-db masked the customers before the database got its name; run-sql ran
    // db/sandbox's script on the environment branch; mask-db found nothing left to mask.
    assert_eq!(
        platform.postgres.psql(
            "sbx_pr_42",
            "SELECT count(*) FILTER (WHERE email ~ '^user-[0-9a-f]{16}@example\\.com$') || ' ' || \
             count(DISTINCT email) FROM customers"
        ),
        "1000 1000",
        "every email masked, still unique"
    );
    assert_eq!(
        platform
            .postgres
            .psql("sbx_pr_42", "SELECT string_agg(login, ',') FROM qa_logins"),
        "qa@acme.test"
    );
    assert_eq!(
        output(node(&child, "mask-database"), "already-masked"),
        "1",
        "the column restore-db masked is not masked twice"
    );
    assert_eq!(output(node(&child, "run-scripts"), "applied"), "1");
    let owner = platform
        .bao
        .api("GET", "secret/data/sandboxes/sbx-pr-42/db", None);
    assert!(
        owner["data"]["data"]
            .as_object()
            .is_some_and(|d| !d.is_empty()),
        "the owner's credentials in OpenBao: {owner}"
    );
    // The Application, in the app-of-apps repository.
    let app_name = output(node(&created, "validate"), "app-name");
    let application = git_show(
        &platform.git,
        "gitops",
        "main",
        &format!("apps/sandboxes/{app_name}.yaml"),
    )
    .expect("the Application file");
    assert!(
        application.contains("targetRevision: sbx-pr-42") && application.contains(namespace),
        "{application}"
    );
    // The committing steps in their pods read and wrote through partial checkouts (protocol v2,
    // objects fetched by id with a filter), not a depth-1 fetch: the harness's server allows
    // filters, as GitHub and GitLab do.
    for repo in ["infra", "gitops"] {
        let partial = platform.git.requests().into_iter().any(|r| {
            r.method == "POST"
                && r.path == format!("/{repo}.git/git-upload-pack")
                && String::from_utf8_lossy(&r.body).contains("filter tree:0")
        });
        assert!(partial, "{repo}: no partial fetch reached the git server");
    }
    let to_app = humantime::parse_rfc3339(node(&created, "app")["finishedAt"].as_str().unwrap())
        .unwrap()
        .duration_since(submitted)
        .unwrap_or_default();
    let app_committed = seconds_between(
        &created["status"]["startedAt"],
        &node(&created, "app")["finishedAt"],
    );
    // Ready only once Argo CD (its stand-in) reports the Application Synced and Healthy at the
    // commit patch-kustomize left on the branch; then the pull request is told: its card, a
    // GitHub Deployment with the sandbox's URL, a commit status.
    assert_eq!(
        output(node(&created, "healthy"), "revision"),
        output(node(&created, "kustomize"), "commit")
    );
    let to_healthy = seconds_between(
        &node(&created, "app")["finishedAt"],
        &node(&created, "healthy")["finishedAt"],
    );
    let head = platform.github.pull(42).unwrap().head_sha;
    let card = card_states(&platform.github, 42);
    assert_eq!(
        card,
        ["creating", "ready"],
        "{:?}",
        platform.github.comments(42)
    );
    let deployment = platform
        .github
        .deployments()
        .into_iter()
        .find(|d| d.environment == "sbx-pr-42")
        .expect("a GitHub Deployment of sbx-pr-42");
    assert_eq!(deployment.sha, head);
    let last = deployment.statuses.last().unwrap();
    assert_eq!(last["state"], "success");
    assert_eq!(
        last["environment_url"],
        "https://sbx-pr-42.sandbox.acme.dev/"
    );
    assert_eq!(
        platform.github.commit_statuses(&head).last().unwrap()["state"],
        "success"
    );
    assert!(
        card_body(&platform.github, 42).contains(&format!("`{}` (the head)", &opened_sha[..12])),
        "{}",
        card_body(&platform.github, 42)
    );

    // 1b. A push to the pull request (GitHub's `synchronize`): CI pushes the new build a moment
    // later; update-sandbox waits for it, checks the commit is still the head, sets the image on
    // the environment branch, waits for Argo CD, and the card says ready at the new commit.
    // GitHub's example payloads all carry one head commit: the push moves it, as a real one does.
    let mut pushed = sensor_event("update-sandbox-sensor", "synchronize", 42);
    let pushed_sha = "5ca1ab1e".repeat(5);
    assert_ne!(pushed_sha, opened_sha);
    pushed["body"]["pull_request"]["head"]["sha"] = json!(pushed_sha);
    platform.github.set_pull_head(42, &pushed_sha);
    let name = events.deliver(&cluster, "update-sandbox", &pushed);
    std::thread::sleep(Duration::from_secs(5));
    let pushed_digest = platform.registry.push_image(
        "acme/api",
        &format!("sha-{}", &pushed_sha[..7]),
        "api, pushed",
    );
    let updated = cluster.wait("argo", &name, Duration::from_secs(600));
    report(&name, &updated);
    assert_eq!(
        updated["status"]["phase"], "Succeeded",
        "{}",
        updated["status"]
    );
    assert_eq!(output(node(&updated, "still-head"), "superseded"), "false");
    let kustomization = git_show(
        &platform.git,
        "infra",
        "sbx-pr-42",
        "kustomize/environments/sandbox/kustomization.yaml",
    )
    .unwrap();
    assert!(
        kustomization.contains(&format!("newTag: sha-{}", &pushed_sha[..7]))
            && kustomization.contains(&format!("digest: {pushed_digest}")),
        "{kustomization}"
    );
    assert_eq!(
        card_states(&platform.github, 42),
        ["creating", "ready", "updating", "ready"]
    );
    assert!(
        card_body(&platform.github, 42).contains(&format!("`{}` (the head)", &pushed_sha[..12])),
        "{}",
        card_body(&platform.github, 42)
    );
    let update_seconds = seconds_between(
        &updated["status"]["startedAt"],
        &updated["status"]["finishedAt"],
    );
    // The same push delivered again after a newer one: superseded, nothing patched.
    let newer = "c0ffee".repeat(6) + "c0ff";
    platform.github.set_pull_head(42, &newer);
    let name = events.deliver(&cluster, "update-sandbox", &pushed);
    let stale = cluster.wait("argo", &name, Duration::from_secs(600));
    report(&name, &stale);
    assert_eq!(stale["status"]["phase"], "Succeeded", "{}", stale["status"]);
    assert_eq!(output(node(&stale, "still-head"), "superseded"), "true");
    assert!(
        stale["status"]["nodes"]
            .as_object()
            .unwrap()
            .values()
            .all(|n| n["displayName"] != "kustomize(0)"),
        "a superseded update patched"
    );
    platform.github.set_pull_head(42, &pushed_sha);
    eprintln!(
        "update-sandbox, from the webhook to ready at the pushed commit (its image pushed 5 s \
         after the webhook): {update_seconds} s"
    );

    // 1c. Sleep and wake. 42 goes to sleep (sleep-sandbox, as the sweep submits it for an idle
    // sandbox): one commit with every Deployment and StatefulSet at 0 that Argo CD (its stand-in)
    // syncs, the slot freed for the next in line (49, waiting at a cap of one: its admission
    // ends), the card says sleeping. `/wake` through the webhook and the wake-sandbox Sensor: by
    // someone without write access, refused (😕, nothing woken, the card as it was); by a writer,
    // 42 is admitted again and woken: the commit undoes the sleep byte for byte, the card is ready.
    let kustomization_path = "kustomize/environments/sandbox/kustomization.yaml";
    let awake = git_show(&platform.git, "infra", "sbx-pr-42", kustomization_path).unwrap();
    let name = submit(
        &cluster,
        "sweep-sleep-pr-42-",
        "sleep-sandbox",
        None,
        &[
            ("pr-number", "42"),
            ("repository", "acme/platform"),
            ("repository-name", "platform"),
            ("reason", "idle"),
        ],
    );
    let slept = cluster.wait("argo", &name, Duration::from_secs(600));
    report(&name, &slept);
    assert_eq!(slept["status"]["phase"], "Succeeded", "{}", slept["status"]);
    let asleep = git_show(&platform.git, "infra", "sbx-pr-42", kustomization_path).unwrap();
    assert!(
        asleep.contains("sandbox-steps.io/asleep-reason: \"idle\"")
            && asleep.contains(patch_kustomize::kustomization::SLEEP_PATCH),
        "{asleep}"
    );
    assert_eq!(output(node(&slept, "kustomize"), "asleep"), "true");
    assert_eq!(
        output(node(&slept, "synced"), "revision"),
        output(node(&slept, "kustomize"), "commit")
    );
    let admission = cluster.wait("argo", &queued_name, Duration::from_secs(180));
    report(&queued_name, &admission);
    assert_eq!(
        admission["status"]["phase"], "Succeeded",
        "49 admitted into the slot 42's sleep freed: {}",
        admission["status"]
    );
    assert_eq!(
        admission_keys(&cluster.api),
        ["admitted.sbx-pr-49", "asleep.sbx-pr-42"]
    );
    assert_eq!(card_states(&platform.github, 49), ["queued"]);
    let card = card_body(&platform.github, 42);
    assert!(
        card.contains(":zzz: Sandbox `sbx-pr-42`: sleeping")
            && card.contains("| Sleeping | since ")
            && card.contains("(idle): scaled to zero"),
        "{card}"
    );
    let wake = |author: &str, text: &str| {
        let id = platform.github.add_comment(42, author, text);
        let name = events.deliver(&cluster, "wake-sandbox", &comment_event(42, id, text));
        let run = cluster.wait("argo", &name, Duration::from_secs(600));
        report(&name, &run);
        (id, run)
    };
    let (refused_id, refused) = wake("passer-by", "/wake");
    assert_eq!(
        refused["status"]["phase"], "Failed",
        "{}",
        refused["status"]
    );
    assert_eq!(attempts(&refused, "authorize"), ["3"]);
    assert_eq!(platform.github.reactions(refused_id), ["confused"]);
    assert_eq!(
        git_show(&platform.git, "infra", "sbx-pr-42", kustomization_path).unwrap(),
        asleep
    );
    assert!(card_body(&platform.github, 42).contains("sleeping"));
    platform.github.set_permission("maintainer", "write");
    let (id, woken) = wake("maintainer", "/wake please");
    assert_eq!(woken["status"]["phase"], "Succeeded", "{}", woken["status"]);
    assert_eq!(platform.github.reactions(id), ["+1"]);
    assert_eq!(
        git_show(&platform.git, "infra", "sbx-pr-42", kustomization_path).unwrap(),
        awake,
        "woken: the kustomization as it was before the sleep"
    );
    assert_eq!(
        admission_keys(&cluster.api),
        ["admitted.sbx-pr-42", "admitted.sbx-pr-49"]
    );
    assert_eq!(
        card_states(&platform.github, 42),
        ["creating", "ready", "updating", "ready", "sleeping", "ready"]
    );
    // 1d. `when-full: sleep-idlest` at a cap of one: PR 50's request makes room. 42, the only
    // live sandbox once 49's slot is given back (49 was only a request), is recorded asleep in
    // the same write that admits 50, and the admission creates 42's sleep-sandbox Workflow
    // (reason capacity) as the workflows' account, under its admission policy.
    let give_back = |env: &str| {
        let (_, mut configmap) = cluster.api.get(ADMISSION);
        configmap["data"]
            .as_object_mut()
            .unwrap()
            .remove(&format!("admitted.{env}"));
        let (status, answer) = cluster.api.request("PUT", ADMISSION, Some(configmap), None);
        assert_eq!(status, 200, "{answer}");
    };
    give_back("sbx-pr-49");
    platform.github.add_pull(50, "open", "feature/room");
    let making_room = submit(
        &cluster,
        "admission-pr-50-",
        "create-sandbox",
        Some("admission"),
        &[
            ("pr-number", "50"),
            ("head-ref", "feature/room"),
            ("repository", "acme/platform"),
            ("repository-name", "platform"),
            ("max-sandboxes", "1"),
            ("when-full", "sleep-idlest"),
            ("environment", "sbx-pr-50"),
            ("shown", "0"),
        ],
    );
    let made_room = cluster.wait("argo", &making_room, Duration::from_secs(300));
    report(&making_room, &made_room);
    assert_eq!(
        made_room["status"]["phase"], "Succeeded",
        "{}",
        made_room["status"]
    );
    assert_eq!(
        output(node(&made_room, "admit"), "put-to-sleep"),
        "sbx-pr-42"
    );
    let sleepers = workflows_labelled(
        &cluster.api,
        &format!("sandbox-steps.io/made-room-for={making_room}"),
    );
    assert_eq!(sleepers.len(), 1, "{sleepers:?}");
    let slept_for_room = cluster.wait("argo", &sleepers[0], Duration::from_secs(600));
    report(&sleepers[0], &slept_for_room);
    assert_eq!(
        slept_for_room["status"]["phase"], "Succeeded",
        "{}",
        slept_for_room["status"]
    );
    assert!(
        git_show(&platform.git, "infra", "sbx-pr-42", kustomization_path)
            .unwrap()
            .contains("sandbox-steps.io/asleep-reason: \"capacity\""),
    );
    assert_eq!(
        admission_keys(&cluster.api),
        ["admitted.sbx-pr-50", "asleep.sbx-pr-42"]
    );
    let card = card_body(&platform.github, 42);
    assert!(
        card.contains("(to make room for another sandbox)"),
        "{card}"
    );
    // 50 was only a request: its slot freed as its deletion would.
    give_back("sbx-pr-50");
    eprintln!(
        "sleep-sandbox: {} s; /wake from the webhook's delivery to ready: {} s (refused: {} s)",
        seconds_between(
            &slept["status"]["startedAt"],
            &slept["status"]["finishedAt"]
        ),
        seconds_between(
            &woken["status"]["startedAt"],
            &woken["status"]["finishedAt"]
        ),
        seconds_between(
            &refused["status"]["startedAt"],
            &refused["status"]["finishedAt"]
        )
    );

    // 2. The pull request is closed: delete-sandbox. GitHub answers 503 to cleanup-branch's
    // first attempt (7 times: its own retries spent, it exits 4) and Argo retries the step.
    platform.github.set_pull_state(42, "closed");
    platform.github.inject_on(
        "/repos/acme/platform/pulls",
        &vec![testkit::Fault::Status(503); 7],
    );
    let closed = sensor_event("delete-sandbox-sensor", "closed", 42);
    let name = events.deliver(&cluster, "delete-sandbox", &closed);
    let deleted = cluster.wait("argo", &name, Duration::from_secs(600));
    report(&name, &deleted);
    assert_eq!(
        deleted["status"]["phase"], "Succeeded",
        "{}",
        deleted["status"]
    );
    // The sleeping sandbox's record went with it.
    assert_eq!(output(node(&deleted, "release"), "released"), "true");
    assert!(admission_keys(&cluster.api).is_empty());
    assert_eq!(card_states(&platform.github, 49), ["queued"]);
    assert_eq!(
        attempts(&deleted, "branch"),
        ["4", "0"],
        "{}",
        deleted["status"]
    );
    assert_eq!(
        git_show(
            &platform.git,
            "gitops",
            "main",
            &format!("apps/sandboxes/{app_name}.yaml")
        ),
        None,
        "the Application is gone"
    );
    assert_eq!(
        cluster
            .api
            .get(&format!("/api/v1/namespaces/{namespace}"))
            .0,
        404,
        "the namespace is gone"
    );
    assert_eq!(
        platform.git.rev_parse("infra", "refs/heads/sbx-pr-42"),
        None,
        "the branch is gone"
    );
    assert_eq!(
        platform
            .bao
            .status("GET", "secret/metadata/sandboxes/sbx-pr-42/db"),
        404,
        "the sandbox's secrets are purged"
    );
    assert_eq!(
        platform.postgres.psql(
            "postgres",
            "SELECT count(*) FROM pg_database WHERE datname LIKE 'sbx\\_pr\\_42%'"
        ),
        "0",
        "drop-db dropped the sandbox's database"
    );
    assert_eq!(
        platform.postgres.psql(
            "postgres",
            "SELECT count(*) FROM pg_roles WHERE rolname = 'sbx_pr_42'"
        ),
        "0",
        "drop-db dropped its owner role"
    );
    // One card from creating to deleted (the push, the sleep, the wake and the sleep to make
    // room in between); the deployments inactive.
    assert_eq!(
        card_states(&platform.github, 42),
        [
            "creating", "ready", "updating", "ready", "sleeping", "ready", "sleeping", "deleting",
            "deleted"
        ]
    );
    let cards = platform
        .github
        .comments(42)
        .iter()
        .filter(|c| c.body.contains("sandbox-steps:card"))
        .count();
    assert_eq!(cards, 1);
    let deployments: Vec<testkit::Deployment> = platform
        .github
        .deployments()
        .into_iter()
        .filter(|d| d.environment == "sbx-pr-42")
        .collect();
    assert_eq!(deployments.len(), 2, "one per deployed commit");
    for deployment in &deployments {
        assert_eq!(deployment.statuses.last().unwrap()["state"], "inactive");
    }

    // 3. A permanent failure: PR 43's backups are missing, so restore-db exits 3; the workflow
    // fails without retrying it, reports to notify-url, and releases the mutex: the delete
    // submitted while the create ran waited for it, then ran.
    // Submitted as the Sensors' trigger does (`argo submit` of the Workflow Argo Events' code
    // builds, with the Sensor's token), with one setting changed for this case.
    let mut built = sensor_workflows(43).into_iter();
    let (_, create) = built.next().unwrap();
    let (_, delete) = built.next().unwrap();
    let create = with_settings(
        create,
        &[(
            "database-backups",
            "gs://acme-integration-backups/missing/".into(),
        )],
        &manifest("create-sandbox"),
    );
    platform
        .github
        .add_pull(43, "open", "feature/broken-backup");
    // Someone opened a pull request from the sandbox's branch: delete keeps the branch.
    platform.github.add_pull(99, "open", "sbx-pr-43");
    let create_name = submit_as_sensor(&cluster.api, &create);
    let deadline = Instant::now() + Duration::from_secs(120);
    while cluster.workflow("argo", &create_name)["status"]["phase"] != "Running" {
        assert!(Instant::now() < deadline, "{create_name} never ran");
        std::thread::sleep(Duration::from_millis(200));
    }
    let delete_name = submit_as_sensor(&cluster.api, &delete);
    let mut delete_waited = false;
    let failed = loop {
        let workflow = cluster.workflow("argo", &create_name);
        let waiting = cluster.workflow("argo", &delete_name);
        if waiting["status"]["phase"] == "Pending"
            && waiting["status"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("lock"))
        {
            delete_waited = true;
        }
        if matches!(
            workflow["status"]["phase"].as_str(),
            Some("Failed" | "Error")
        ) {
            break workflow;
        }
        assert!(
            workflow["status"]["phase"] != "Succeeded",
            "{create_name} succeeded without its backups"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    report(&create_name, &failed);
    let child_name = output(node(&failed, "provision"), "name");
    let child = cluster.workflow("apps-sbx-pr-43", &child_name);
    report(&format!("apps-sbx-pr-43/{child_name}"), &child);
    assert_eq!(
        attempts(&child, "restore-database"),
        ["3"],
        "{}",
        child["status"]
    );
    let reports: Vec<Value> = platform
        .notify
        .requests()
        .iter()
        .filter_map(|r| serde_json::from_slice(&r.body).ok())
        .collect();
    // `failures` is a string holding the JSON list of the failed nodes (Argo quotes
    // workflow.failures as a string literal; create-sandbox.yaml's `notify`).
    let report_of_failure = reports
        .iter()
        .find(|r| {
            r["text"]
                .as_str()
                .is_some_and(|t| t.contains(&create_name) && t.contains("Failed"))
        })
        .unwrap_or_else(|| panic!("no failure report: {reports:?}"));
    let failures: Vec<Value> =
        serde_json::from_str(report_of_failure["failures"].as_str().unwrap()).unwrap();
    assert!(
        failures
            .iter()
            .any(|f| f["displayName"] == "wait(0)" && f["message"] == "main: Error (exit code 3)"),
        "{failures:?}"
    );
    // The card says failed, naming the failed step and its message (Argo's workflow.failures,
    // read by report-status from the exit handler).
    let failed_card = platform
        .github
        .comment_history(43)
        .into_iter()
        .find(|body| report_status::shown_state(body) == Some(report_status::State::Failed))
        .unwrap_or_else(|| panic!("no failed card: {:?}", platform.github.comment_history(43)));
    assert!(
        failed_card.contains("**Failed step** ` wait(0) `")
            && failed_card.contains("main: Error (exit code 3)"),
        "{failed_card}"
    );
    // At once: from restore-db's exit to the create workflow's DAG failed (the child's end,
    // wait-workflow seeing it), no retry and no backoff waited out. The exit handler's report
    // comes after, from Argo's agent pod (it reports at ARGO_AGENT_PATCH_RATE, 10 s by default).
    let restore_end = &pods(&child)
        .into_iter()
        .find(|n| n["displayName"] == "restore-database(0)")
        .unwrap()["finishedAt"];
    let dag = &failed["status"]["nodes"][&create_name];
    let to_failed = seconds_between(restore_end, &dag["finishedAt"]);
    let to_reported = seconds_between(restore_end, &failed["status"]["finishedAt"]);
    eprintln!(
        "restore-db's exit 3 to create-sandbox's DAG Failed: {to_failed} s; to the report sent \
         and the workflow finished: {to_reported} s"
    );
    // Measured 15 s (pods' exits seen by Argo at two levels); with the 30 s first backoffs the
    // templates had before, Argo held each level's failure for 30 s more.
    assert!(
        to_failed <= 30,
        "{to_failed} s from exit 3 to the workflow's failure"
    );
    let deleted = cluster.wait("argo", &delete_name, Duration::from_secs(600));
    report(&delete_name, &deleted);
    assert_eq!(
        deleted["status"]["phase"], "Succeeded",
        "{}",
        deleted["status"]
    );
    assert!(delete_waited, "{delete_name} never waited for the lock");
    let create_end = pods(&failed)
        .iter()
        .filter_map(|n| n["finishedAt"].as_str().map(str::to_owned))
        .max()
        .unwrap();
    let delete_start = pods(&deleted)
        .iter()
        .filter_map(|n| n["startedAt"].as_str().map(str::to_owned))
        .min()
        .unwrap();
    assert!(
        delete_start >= create_end,
        "overlap: delete started {delete_start}, create's last pod ended {create_end}"
    );
    assert_eq!(cluster.api.get("/api/v1/namespaces/apps-sbx-pr-43").0, 404);
    assert!(
        platform
            .git
            .rev_parse("infra", "refs/heads/sbx-pr-43")
            .is_some(),
        "the branch an open pull request uses is kept"
    );

    // 4. What a crash or a lost webhook leaves: PR 44's database and owner role (as restore-db
    // makes them) and its secret, without its branch, namespace or Application. One
    // delete-sandbox removes the rest, Terraform reading its module from main; a second one
    // finds nothing to remove.
    platform.postgres.psql(
        "postgres",
        &format!(
            "CREATE ROLE sbx_pr_44 LOGIN; COMMENT ON ROLE sbx_pr_44 IS '{}'; \
             GRANT sbx_pr_44 TO sandbox_admin",
            pg_admin::ROLE_MARKER
        ),
    );
    platform
        .postgres
        .psql("postgres", "CREATE DATABASE sbx_pr_44 OWNER sbx_pr_44");
    platform.bao.api(
        "POST",
        "secret/data/sandboxes/sbx-pr-44/db",
        Some(json!({"data": {"username": "sbx_pr_44"}})),
    );
    let (_, delete_44) = sensor_workflows(44).into_iter().nth(1).unwrap();
    let mut converge_seconds = Vec::new();
    for run in ["first", "second"] {
        let name = submit_as_sensor(&cluster.api, &delete_44);
        let done = cluster.wait("argo", &name, Duration::from_secs(600));
        report(&name, &done);
        assert_eq!(
            done["status"]["phase"], "Succeeded",
            "{run} delete of the leftovers: {}",
            done["status"]
        );
        assert_eq!(
            output(node(&done, "module-branch"), "existed"),
            "false",
            "{run}"
        );
        // No pull request 44 on GitHub: the card's reports (deleting, deleted) fail with exit 3,
        // never retried, and the deletion goes on regardless (continueOn).
        assert_eq!(attempts(&done, "report-status"), ["3", "3"], "{run}");
        converge_seconds.push(seconds_between(
            &done["status"]["startedAt"],
            &done["status"]["finishedAt"],
        ));
        assert_eq!(
            platform.postgres.psql(
                "postgres",
                "SELECT (SELECT count(*) FROM pg_database WHERE datname = 'sbx_pr_44') + \
                 (SELECT count(*) FROM pg_roles WHERE rolname = 'sbx_pr_44')"
            ),
            "0",
            "{run}: database and role dropped"
        );
        assert_eq!(
            platform
                .bao
                .status("GET", "secret/metadata/sandboxes/sbx-pr-44/db"),
            404,
            "{run}: secret purged"
        );
        assert_eq!(cluster.api.get("/api/v1/namespaces/apps-sbx-pr-44").0, 404);
        assert_eq!(
            platform.git.rev_parse("infra", "refs/heads/sbx-pr-44"),
            None,
            "{run}: no branch made"
        );
    }
    eprintln!(
        "delete-sandbox from leftovers (database, role, secret; no branch, namespace or \
         Application): {} s; again, with nothing left: {} s",
        converge_seconds[0], converge_seconds[1]
    );

    // 5. The sweep, with apply set: PR 45's closed webhook was lost (its sandbox's branch,
    // namespace, database, role and secret are left), PR 46's sandbox has been inactive for 100 h
    // (past the 72 h TTL), PR 47's is active, PR 48's has been inactive for 60 h (within the 24 h
    // before expiry). The sweep deletes the first two through delete-sandbox, keeps the third,
    // tells 48's pull request when its sandbox expires, keeps sandbox 43's branch (the head of
    // the open #99: only it is left), and leaves a name that only looks like a sandbox's.
    // The buckets of 42 and 43 go with Terraform destroy, which its double does not do.
    for pr in [42, 43] {
        platform.gcs.delete_bucket(&format!("acme-sbx-pr-{pr}"));
    }
    let main = platform.git.rev_parse("infra", "refs/heads/main").unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    for pr in [45u64, 46, 47, 48] {
        platform
            .git
            .update_ref("infra", &format!("refs/heads/sbx-pr-{pr}"), &main);
        platform.postgres.psql(
            "postgres",
            &format!(
                "CREATE ROLE sbx_pr_{pr} LOGIN; COMMENT ON ROLE sbx_pr_{pr} IS '{}'; \
                 GRANT sbx_pr_{pr} TO sandbox_admin",
                pg_admin::ROLE_MARKER
            ),
        );
        platform.postgres.psql(
            "postgres",
            &format!("CREATE DATABASE sbx_pr_{pr} OWNER sbx_pr_{pr}"),
        );
        platform.bao.api(
            "POST",
            &format!("secret/data/sandboxes/sbx-pr-{pr}/db"),
            Some(json!({"data": {"username": format!("sbx_pr_{pr}")}})),
        );
    }
    cluster.api.create_namespace("apps-sbx-pr-45");
    platform
        .postgres
        .psql("postgres", "CREATE DATABASE sbx_pr_045");
    let labelled = ["create-sandbox"];
    platform
        .github
        .add_pull_with(45, "closed", "feature/lost-webhook", &labelled, now - 3600);
    platform
        .github
        .add_pull_with(46, "open", "feature/forgotten", &labelled, now - 100 * 3600);
    platform
        .github
        .add_pull_with(47, "open", "feature/active", &labelled, now - 600);
    platform
        .github
        .add_pull_with(48, "open", "feature/quiet", &labelled, now - 60 * 3600);
    let sweep_name = submit(
        &cluster,
        "sweep-",
        "sweep",
        None,
        &[("apply", "true"), ("gcs-project", "e2e")],
    );
    let swept = cluster.wait("argo", &sweep_name, Duration::from_secs(900));
    report(&sweep_name, &swept);
    assert_eq!(swept["status"]["phase"], "Succeeded", "{}", swept["status"]);
    let decide = node(&swept, "decide");
    let summary = output(decide, "summary");
    eprintln!("the sweep decided: {summary}");
    assert_eq!(summary, "5 sandboxes: 2 keep, 1 warn, 1 expire, 1 orphan");
    // 48's card: expiring, when, and how to keep it.
    let warned = card_states(&platform.github, 48);
    assert_eq!(warned, ["expiring"]);
    let card = &platform.github.comments(48)[0].body;
    let expires = report_status::shown_time(
        std::time::UNIX_EPOCH + Duration::from_secs(now - 60 * 3600 + 72 * 3600),
    );
    assert!(
        card.contains(&expires) && card.contains("`sandbox-keep` label"),
        "{expires}: {card}"
    );
    let deletes: Vec<Value> = serde_json::from_str(&output(decide, "deletes")).unwrap();
    let deleted: Vec<&str> = deletes
        .iter()
        .map(|d| d["environment"].as_str().unwrap())
        .collect();
    assert!(
        deleted.contains(&"sbx-pr-45") && deleted.contains(&"sbx-pr-46"),
        "{deletes:?}"
    );
    assert!(
        !deleted.contains(&"sbx-pr-47") && !deleted.contains(&"sbx-pr-48"),
        "{deletes:?}"
    );
    for pr in [45, 46] {
        assert_eq!(
            platform.postgres.psql(
                "postgres",
                &format!(
                    "SELECT (SELECT count(*) FROM pg_database WHERE datname = 'sbx_pr_{pr}') + \
                     (SELECT count(*) FROM pg_roles WHERE rolname = 'sbx_pr_{pr}')"
                )
            ),
            "0",
            "sbx-pr-{pr}: database and role dropped"
        );
        assert_eq!(
            platform
                .bao
                .status("GET", &format!("secret/metadata/sandboxes/sbx-pr-{pr}/db")),
            404
        );
        assert_eq!(
            platform
                .git
                .rev_parse("infra", &format!("refs/heads/sbx-pr-{pr}")),
            None
        );
        assert_eq!(
            cluster
                .api
                .get(&format!("/api/v1/namespaces/apps-sbx-pr-{pr}"))
                .0,
            404
        );
    }
    assert!(platform
        .git
        .rev_parse("infra", "refs/heads/sbx-pr-47")
        .is_some());
    assert_eq!(
        platform.postgres.psql(
            "postgres",
            "SELECT count(*) FROM pg_database WHERE datname IN ('sbx_pr_47', 'sbx_pr_045')"
        ),
        "2",
        "the active sandbox and the lookalike are left alone"
    );
    let delete_workflows = workflows_labelled(
        &cluster.api,
        &format!("sandbox-steps.io/swept-by={sweep_name}"),
    );
    assert_eq!(
        delete_workflows.len(),
        deletes.len(),
        "{delete_workflows:?}"
    );
    eprintln!(
        "the sweep with apply: {} s for {} deletions ({summary})",
        seconds_between(
            &swept["status"]["startedAt"],
            &swept["status"]["finishedAt"]
        ),
        deletes.len()
    );

    // 6. `/extend` on 48, through the webhook, the extend-sandbox Sensor and workflow: by someone
    // without write access (😕, the run fails on exit 3, the card as it was), then by a writer (👍,
    // the card ready again, expiring 72 h after the comment). A sweep after it keeps 48.
    let extend = |author: &str, text: &str| {
        let id = platform.github.add_comment(48, author, text);
        let name = events.deliver(&cluster, "extend-sandbox", &comment_event(48, id, text));
        let run = cluster.wait("argo", &name, Duration::from_secs(300));
        report(&name, &run);
        (id, run)
    };
    let (refused_id, refused) = extend("passer-by", "/extend");
    assert_eq!(
        refused["status"]["phase"], "Failed",
        "{}",
        refused["status"]
    );
    assert_eq!(attempts(&refused, "extend"), ["3"]);
    assert_eq!(platform.github.reactions(refused_id), ["confused"]);
    assert_eq!(card_states(&platform.github, 48), ["expiring"]);
    platform.github.set_permission("maintainer", "write");
    let (id, extended) = extend("maintainer", "/extend\nreviewing it on Monday");
    assert_eq!(
        extended["status"]["phase"], "Succeeded",
        "{}",
        extended["status"]
    );
    assert_eq!(platform.github.reactions(id), ["+1"]);
    assert_eq!(card_states(&platform.github, 48), ["expiring", "ready"]);
    let commented = platform
        .github
        .comments(48)
        .into_iter()
        .find(|c| c.id == id)
        .unwrap()
        .created_at;
    let expires = report_status::shown_time(
        std::time::UNIX_EPOCH + Duration::from_secs(commented + 72 * 3600),
    );
    let card = &platform.github.comments(48)[0].body;
    assert!(
        card.contains(&format!("| Expires | {expires} UTC")),
        "{expires}: {card}"
    );
    eprintln!(
        "/extend from the webhook's delivery to the card: {} s (refused: {} s)",
        seconds_between(
            &extended["status"]["startedAt"],
            &extended["status"]["finishedAt"]
        ),
        seconds_between(
            &refused["status"]["startedAt"],
            &refused["status"]["finishedAt"]
        )
    );
    let name = submit(&cluster, "sweep-", "sweep", None, &[("gcs-project", "e2e")]);
    let swept = cluster.wait("argo", &name, Duration::from_secs(600));
    report(&name, &swept);
    assert_eq!(swept["status"]["phase"], "Succeeded", "{}", swept["status"]);
    let decide = node(&swept, "decide");
    assert_eq!(output(decide, "warnings"), "[]", "48 extended: no warning");
    assert_eq!(output(decide, "deletes"), "[]");

    eprintln!(
        "cluster start-up {:.1} s; PR 42 from the webhook's delivery to the Application \
         committed: {:.1} s (workflow start to commit {app_committed} s), then Healthy seen \
         {to_healthy} s later (Argo CD's stand-in syncs after 1 s), with {} documents and a \
         {} kB database backup (1,000 + 20,000 rows)",
        cluster.startup.as_secs_f64(),
        to_app.as_secs_f64(),
        20,
        platform.backup_bytes / 1024
    );
}

const WEBHOOK_SECRET: &str = "e2e-webhook-secret";

/// Argo Events on the cluster, from its module (cluster/build.sh): its controller as a pod (bound
/// to cluster-admin: the test's controller, not the library's), the EventBus `default` on this
/// machine's NATS (JetStream, TLS), and the library's EventSource and Sensors (installed with the
/// other manifests), whose pods run an image of Argo Events' binary and our `argo` CLI (the
/// Sensor's trigger runs `argo submit`).
struct ArgoEvents {
    _nats: NatsServer,
    /// The github EventSource's pod address (no kube-proxy here: the Service has no endpoint
    /// this machine can reach, the pod has).
    webhook: String,
}

impl ArgoEvents {
    fn start(cluster: &Cluster) -> ArgoEvents {
        let started = Instant::now();
        let api = &cluster.api;
        let image = "sandbox-steps.local/argo-events:e2e";
        let events_bin = std::fs::canonicalize(cluster_tool("argo-events")).unwrap();
        let argo_bin = std::fs::canonicalize(cluster_tool("argo")).unwrap();
        let archive = build_image(
            cluster.node.dir(),
            image,
            &[(&events_bin, "/bin/argo-events"), (&argo_bin, "/bin/argo")],
            "/bin/argo-events",
        );
        cluster.node.import_image(&archive, image);
        let nats = NatsServer::start(&[Node::GATEWAY]);

        let create = |path: &str, object: Value| {
            let (status, body) = api.request("POST", path, Some(object), None);
            assert_eq!(status, 201, "{path}: {body}");
        };
        create(
            "/api/v1/namespaces/argo-events/secrets",
            json!({"metadata": {"name": "sandbox-steps-github-webhook"},
                   "stringData": {"secret": WEBHOOK_SECRET}}),
        );
        create(
            "/apis/argoproj.io/v1alpha1/namespaces/argo-events/eventbus",
            json!({"apiVersion": "argoproj.io/v1alpha1", "kind": "EventBus",
                   "metadata": {"name": "default"},
                   "spec": {"jetstreamExotic": {
                       "url": format!("nats://{}:{}", Node::GATEWAY, nats.port())}}}),
        );
        // The controller's configuration must list the bus versions it could install, even for
        // an exotic bus (argo-events pkg/reconciler/config.go).
        create(
            "/api/v1/namespaces/argo-events/configmaps",
            json!({"metadata": {"name": "argo-events-controller-config"},
                   "data": {"controller-config.yaml":
                       "eventBus:\n  nats:\n    versions:\n      - version: 0.22.1\n  jetstream:\n    versions:\n      - version: latest\n"}}),
        );
        create(
            "/api/v1/namespaces/argo-events/serviceaccounts",
            json!({"metadata": {"name": "argo-events-controller"}}),
        );
        create(
            "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
            json!({"metadata": {"name": "e2e-argo-events-controller"},
                   "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                               "name": "cluster-admin"},
                   "subjects": [{"kind": "ServiceAccount", "name": "argo-events-controller",
                                 "namespace": "argo-events"}]}),
        );
        create(
            "/api/v1/namespaces/argo-events/pods",
            json!({"metadata": {"name": "argo-events-controller"},
            "spec": {
                "serviceAccountName": "argo-events-controller",
                "containers": [{
                    "name": "controller",
                    "image": image,
                    "imagePullPolicy": "Never",
                    "args": ["controller", "--leader-election=false"],
                    "env": [
                        {"name": "ARGO_EVENTS_IMAGE", "value": image},
                        // Pods pull Always unless told (pkg/shared/util/util.go).
                        {"name": "IMAGE_PULL_POLICY", "value": "Never"},
                    ],
                    "volumeMounts": [{"name": "config", "mountPath": "/etc/argo-events"}],
                }],
                "volumes": [{"name": "config", "configMap": {
                    "name": "argo-events-controller-config"}}],
            }}),
        );

        // Ready when the EventSource answers its health check and each Sensor subscribes.
        let deadline = Instant::now() + Duration::from_secs(240);
        let webhook = loop {
            let ready = running_pod_ip(api, "eventsource-name=github").filter(|ip| {
                reqwest::blocking::get(format!("http://{ip}:12000/health"))
                    .is_ok_and(|r| r.status().is_success())
            });
            let subscribed = [
                "create-sandbox",
                "delete-sandbox",
                "update-sandbox",
                "extend-sandbox",
            ]
            .iter()
            .all(|sensor| {
                pod_log(cluster, &format!("sensor-name={sensor}"))
                    .is_some_and(|log| log.contains("Subscribing to subject"))
            });
            if let (Some(ip), true) = (ready, subscribed) {
                break format!("http://{ip}:12000/github");
            }
            assert!(
                Instant::now() < deadline,
                "Argo Events not ready in 240 s: {}\ncontroller: {:?}\n{}",
                api.get("/api/v1/namespaces/argo-events/pods").1,
                pod_log(cluster, "").map(|l| l.chars().rev().take(3000).collect::<String>()),
                cluster.node.logs()
            );
            std::thread::sleep(Duration::from_millis(500));
        };
        eprintln!("Argo Events up in {:.1} s", started.elapsed().as_secs_f64());
        ArgoEvents {
            _nats: nats,
            webhook,
        }
    }

    /// POSTs `event` (`{headers, body}`) as GitHub does, signed with the webhook secret; the
    /// Workflow the Sensor `sensor` then submits.
    fn deliver(&self, cluster: &Cluster, sensor: &str, event: &Value) -> String {
        let selector = format!("events.argoproj.io/sensor={sensor}");
        let before = workflows_labelled(&cluster.api, &selector);
        let body = serde_json::to_vec(&event["body"]).unwrap();
        let response = reqwest::blocking::Client::new()
            .post(&self.webhook)
            .header("Content-Type", "application/json")
            .header(
                "X-GitHub-Event",
                event["headers"]["X-Github-Event"][0]
                    .as_str()
                    .unwrap_or("pull_request"),
            )
            .header("X-GitHub-Delivery", format!("e2e-{}", before.len()))
            .header("X-Hub-Signature-256", signature(WEBHOOK_SECRET, &body))
            .body(body)
            .send()
            .expect("POST the webhook");
        assert_eq!(response.status().as_u16(), 200, "{:?}", response.text());
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let now = workflows_labelled(&cluster.api, &selector);
            if let Some(name) = now.iter().find(|n| !before.contains(n)) {
                return name.clone();
            }
            assert!(
                Instant::now() < deadline,
                "the Sensor {sensor} submitted nothing in 60 s: {:?}",
                pod_log(cluster, &format!("sensor-name={sensor}"))
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

/// `sha256=<hex HMAC-SHA256 of body>`, GitHub's `X-Hub-Signature-256` (openssl computes it).
fn signature(secret: &str, body: &[u8]) -> String {
    use std::io::Write;
    let mut openssl = Command::new("openssl")
        .args(["dgst", "-sha256", "-hmac", secret])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run openssl");
    openssl.stdin.take().unwrap().write_all(body).unwrap();
    let out = openssl.wait_with_output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    format!("sha256={}", text.trim().rsplit(' ').next().unwrap())
}

/// The sandboxes admit-sandbox counts as live (the ConfigMap sandbox-admission in `argo`).
/// Submits a Workflow of the ClusterWorkflowTemplate `template` with these parameters (and
/// another entrypoint when given), as `argo submit --from clusterworkflowtemplate/...` does;
/// its name.
fn submit(
    cluster: &Cluster,
    generate_name: &str,
    template: &str,
    entrypoint: Option<&str>,
    parameters: &[(&str, &str)],
) -> String {
    let parameters: Vec<Value> = parameters
        .iter()
        .map(|(name, value)| json!({"name": name, "value": value}))
        .collect();
    let mut workflow = json!({
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Workflow",
        "metadata": {"generateName": generate_name, "namespace": "argo"},
        "spec": {
            "workflowTemplateRef": {"name": template, "clusterScope": true},
            "arguments": {"parameters": parameters},
        },
    });
    if let Some(entrypoint) = entrypoint {
        workflow["spec"]["entrypoint"] = json!(entrypoint);
    }
    let (status, created) = cluster.api.request(
        "POST",
        "/apis/argoproj.io/v1alpha1/namespaces/argo/workflows",
        Some(workflow),
        None,
    );
    assert_eq!(status, 201, "{created}");
    created["metadata"]["name"].as_str().unwrap().to_owned()
}

/// admit-sandbox's ConfigMap in the workflows' namespace.
const ADMISSION: &str = "/api/v1/namespaces/argo/configmaps/sandbox-admission";

/// The keys of admit-sandbox's ConfigMap.
fn admission_keys(api: &KubeApiServer) -> Vec<String> {
    let (_, cm) = api.get(ADMISSION);
    cm["data"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(key, _)| key.clone())
        .collect()
}

/// The sandboxes holding a slot.
fn admitted(api: &KubeApiServer) -> Vec<String> {
    admission_keys(api)
        .iter()
        .filter_map(|key| key.strip_prefix("admitted.").map(str::to_owned))
        .collect()
}

fn workflows_labelled(api: &KubeApiServer, selector: &str) -> Vec<String> {
    let (_, list) = api.get(&format!(
        "/apis/argoproj.io/v1alpha1/namespaces/argo/workflows?labelSelector={selector}"
    ));
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|w| w["metadata"]["name"].as_str().map(str::to_owned))
        .collect()
}

/// The IP of the Running pod in argo-events matching `selector`.
fn running_pod_ip(api: &KubeApiServer, selector: &str) -> Option<String> {
    let (_, pods) = api.get(&format!(
        "/api/v1/namespaces/argo-events/pods?labelSelector={selector}"
    ));
    pods["items"]
        .as_array()?
        .iter()
        .find(|p| p["status"]["phase"] == "Running")
        .and_then(|p| p["status"]["podIP"].as_str().map(str::to_owned))
}

/// The log of the first container of the pod in argo-events matching `selector` (the controller
/// for an empty one), read from the kubelet's pod log directory.
fn pod_log(cluster: &Cluster, selector: &str) -> Option<String> {
    let (_, pods) = cluster.api.get(&format!(
        "/api/v1/namespaces/argo-events/pods?labelSelector={selector}"
    ));
    let pod = pods["items"]
        .as_array()?
        .iter()
        .find(|p| !selector.is_empty() || p["metadata"]["name"] == "argo-events-controller")?;
    let (name, uid) = (
        pod["metadata"]["name"].as_str()?,
        pod["metadata"]["uid"].as_str()?,
    );
    let dir = cluster
        .node
        .dir()
        .join(format!("pod-logs/argo-events_{name}_{uid}"));
    let container = std::fs::read_dir(&dir).ok()?.flatten().next()?.path();
    let mut text = String::new();
    for file in std::fs::read_dir(container).ok()?.flatten() {
        text.push_str(&std::fs::read_to_string(file.path()).unwrap_or_default());
    }
    Some(text)
}

/// What install/example's settings.yaml does: the platform's settings as the lifecycle
/// templates' parameter defaults (the Sensors' Workflows pass only the pull request's values).
fn install_settings(api: &KubeApiServer, settings: &[(&str, String)]) {
    for template in [
        "create-sandbox",
        "delete-sandbox",
        "update-sandbox",
        "extend-sandbox",
        "sleep-sandbox",
        "wake-sandbox",
        "sweep",
        "sandbox-infra",
    ] {
        let path = format!("/apis/argoproj.io/v1alpha1/clusterworkflowtemplates/{template}");
        let (_, mut object) = api.get(&path);
        for parameter in object["spec"]["arguments"]["parameters"]
            .as_array_mut()
            .unwrap()
        {
            if let Some((_, value)) = settings.iter().find(|(n, _)| parameter["name"] == *n) {
                parameter["value"] = json!(value);
            }
        }
        let (status, body) = api.request("PUT", &path, Some(object), None);
        assert_eq!(status, 200, "{template}: {body}");
    }
}
