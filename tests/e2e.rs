//! The library on real Argo: the Kubernetes API server, a one-node cluster (containerd, runc,
//! kubelet, kube-scheduler) and Argo Workflows' own controller and executor, all built from their
//! pinned modules (cluster/build.sh), run the step templates as pods of our image (`make image`).
//! Needs root; `make e2e` runs it (it is ignored by a plain `cargo test`).

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use testkit::{build_image, cluster_tool, FakeGcs, GitServer, KubeApiServer, Node, ServerProcess};
use workspace_tests::{manifests, prepare_for_the_library, repo_root};

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
}

impl Cluster {
    fn start() -> Cluster {
        let archive = repo_root().join("target/image/sandbox-steps.oci.tar");
        assert!(
            archive.is_file(),
            "{} not found: run `make image` first (make e2e does)",
            archive.display()
        );
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
        Cluster {
            api,
            node,
            _controller: controller,
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
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            let (_, workflow) = self.api.get(&format!(
                "/apis/argoproj.io/v1alpha1/namespaces/argo/workflows/{name}"
            ));
            let phase = workflow["status"]["phase"].as_str().unwrap_or("");
            if matches!(phase, "Succeeded" | "Failed" | "Error") {
                return workflow;
            }
            assert!(
                Instant::now() < deadline,
                "{name} not finished in 180 s: {}\n{}",
                workflow["status"],
                self.node.logs()
            );
            std::thread::sleep(Duration::from_millis(500));
        }
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
