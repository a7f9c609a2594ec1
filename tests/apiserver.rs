//! The library on the real Kubernetes API server (testkit::KubeApiServer: etcd, kube-apiserver and
//! kube-controller-manager of the versions cluster/ pins): Argo's CRDs of the pinned versions
//! installed, every manifest of workflow-templates/ really created with server-side apply, then
//! what each service account may do as the API server's own RBAC decides it, the admission policy
//! as the API server enforces it, the agent's token as the token controller fills it in, and the
//! Sensors' submissions as the Argo CLI inside a Sensor makes them.

use std::process::Command;
use std::sync::OnceLock;

use serde_json::{json, Value};
use testkit::{cluster_tool, KubeApiServer};
use workspace_tests::{manifests, prepare_for_the_library, sensor_workflows, submit_as_sensor};

/// One API server for the tests of this file, with the CRDs and the library installed.
fn cluster() -> &'static KubeApiServer {
    static CLUSTER: OnceLock<KubeApiServer> = OnceLock::new();
    CLUSTER.get_or_init(|| {
        let server = KubeApiServer::start();
        // A static is never dropped: the servers are stopped when the test process exits.
        server.stop_at_exit();
        eprintln!(
            "etcd, kube-apiserver and kube-controller-manager up in {:.1} s",
            server.startup().as_secs_f64()
        );
        // What installing Argo Workflows and Argo Events makes (the library's README asks for both).
        prepare_for_the_library(&server);
        for (file, doc) in manifests() {
            let (status, body) = server.apply(&doc, None);
            assert!(
                status == 200 || status == 201,
                "{} {}: {status} {body}",
                file.display(),
                doc["metadata"]["name"]
            );
        }
        server
    })
}

const WORKFLOWS_SA: &str = "system:serviceaccount:argo:sandbox-steps";
const SENSOR_SA: &str = "system:serviceaccount:argo-events:sandbox-steps-sensor";

fn sa_groups(namespace: &str) -> Vec<String> {
    vec![
        "system:serviceaccounts".into(),
        format!("system:serviceaccounts:{namespace}"),
        "system:authenticated".into(),
    ]
}

/// Asserts each (verb, group, resource, namespace, allowed) for `user` of `namespace`.
fn assert_access(user: &str, namespace: &str, cases: &[(&str, &str, &str, &str, bool)]) {
    let groups = sa_groups(namespace);
    let groups: Vec<&str> = groups.iter().map(String::as_str).collect();
    let mut wrong = Vec::new();
    for &(verb, group, resource, ns, allowed) in cases {
        if cluster().can(user, &groups, verb, group, resource, ns) != allowed {
            wrong.push(format!(
                "{verb} {group}/{resource} in {ns:?}: expected {}",
                if allowed { "allowed" } else { "denied" }
            ));
        }
    }
    assert!(wrong.is_empty(), "{user}:\n{}", wrong.join("\n"));
}

#[test]
fn every_manifest_is_created_on_the_real_api_server() {
    let server = cluster();
    for (file, doc) in manifests() {
        let (status, body) = server.get(&server.path_of(&doc));
        assert_eq!(status, 200, "{}: {body}", file.display());
    }
}

/// The Argo CLI in the Sensor's pod reads the ClusterWorkflowTemplates only with get, list and
/// watch at cluster scope (util/rbac.HasAccessToClusterWorkflowTemplates), and creates the Workflow
/// in `argo`. Nothing else.
#[test]
fn the_sensor_account_may_submit_and_nothing_more() {
    const ARGO: &str = "argoproj.io";
    assert_access(
        SENSOR_SA,
        "argo-events",
        &[
            ("get", ARGO, "clusterworkflowtemplates", "", true),
            ("list", ARGO, "clusterworkflowtemplates", "", true),
            ("watch", ARGO, "clusterworkflowtemplates", "", true),
            ("create", ARGO, "workflows", "argo", true),
            ("get", ARGO, "workflows", "argo", true),
            ("list", ARGO, "workflows", "argo", true),
            ("create", ARGO, "workflows", "default", false),
            ("create", ARGO, "workflows", "apps-sbx-pr-1", false),
            ("delete", ARGO, "workflows", "argo", false),
            ("update", ARGO, "workflows", "argo", false),
            ("create", ARGO, "clusterworkflowtemplates", "", false),
            ("update", ARGO, "clusterworkflowtemplates", "", false),
            ("get", "", "secrets", "argo", false),
            ("get", "", "secrets", "argo-events", false),
            ("create", "", "pods", "argo", false),
        ],
    );
}

#[test]
fn the_workflows_account_may_do_each_resource_template_and_nothing_more() {
    const ARGO: &str = "argoproj.io";
    const RBAC: &str = "rbac.authorization.k8s.io";
    let sandbox = "apps-sbx-pr-1";
    assert_access(
        WORKFLOWS_SA,
        "argo",
        &[
            // create-sandbox: namespace, access (service account, bindings), child workflow.
            ("create", "", "namespaces", "", true),
            ("patch", "", "namespaces", "", true),
            ("get", "", "namespaces", "", true),
            ("create", "", "serviceaccounts", sandbox, true),
            ("patch", "", "serviceaccounts", sandbox, true),
            ("create", RBAC, "rolebindings", sandbox, true),
            ("patch", RBAC, "rolebindings", sandbox, true),
            ("create", ARGO, "workflows", sandbox, true),
            ("get", ARGO, "workflows", sandbox, true),
            // wait-workflow, through the binding create-sandbox makes (rbac/wait-workflow.yaml).
            // delete-sandbox: the namespace.
            ("delete", "", "namespaces", "", true),
            ("update", "", "namespaces/finalize", "", false),
            // Argo's executor and agent, as this account in `argo`.
            ("create", ARGO, "workflowtaskresults", "argo", true),
            ("patch", ARGO, "workflowtaskresults", "argo", true),
            ("list", ARGO, "workflowtasksets", "argo", true),
            ("watch", ARGO, "workflowtasksets", "argo", true),
            ("patch", ARGO, "workflowtasksets/status", "argo", true),
            // Nothing else.
            ("get", "", "secrets", sandbox, false),
            ("get", "", "secrets", "argo", false),
            // kubectl delete's wait for the namespace to be gone.
            ("list", "", "namespaces", "", true),
            ("watch", "", "namespaces", "", true),
            ("create", "", "pods", sandbox, false),
            ("create", "", "pods/exec", sandbox, false),
            ("create", "", "serviceaccounts/token", sandbox, false),
            ("delete", "", "serviceaccounts", sandbox, false),
            ("delete", ARGO, "workflows", sandbox, false),
            ("create", RBAC, "roles", sandbox, false),
            ("create", RBAC, "clusterroles", "", false),
            ("create", RBAC, "clusterrolebindings", "", false),
            ("create", ARGO, "clusterworkflowtemplates", "", false),
            ("escalate", RBAC, "clusterroles", "", false),
        ],
    );
    // Binding: only the two roles a sandbox needs.
    assert_access(
        WORKFLOWS_SA,
        "argo",
        &[
            (
                "bind",
                RBAC,
                "clusterroles:sandbox-steps-executor",
                "",
                true,
            ),
            (
                "bind",
                RBAC,
                "clusterroles:sandbox-steps-wait-workflow",
                "",
                true,
            ),
            ("bind", RBAC, "clusterroles:cluster-admin", "", false),
            ("bind", RBAC, "clusterroles:admin", "", false),
            ("bind", RBAC, "clusterroles:edit", "", false),
        ],
    );
}

/// The account a sandbox's child workflow runs as, once create-sandbox's `access` made it: Argo's
/// executor in its own namespace, nothing more.
#[test]
fn the_sandbox_runner_may_report_outputs_and_nothing_more() {
    let server = cluster();
    let sandbox = "apps-sbx-pr-3";
    let token = setup_sandbox(server, sandbox);
    drop(token);
    const ARGO: &str = "argoproj.io";
    assert_access(
        &format!("system:serviceaccount:{sandbox}:sandbox-runner"),
        sandbox,
        &[
            ("create", ARGO, "workflowtaskresults", sandbox, true),
            ("patch", ARGO, "workflowtaskresults", sandbox, true),
            ("create", ARGO, "workflowtaskresults", "argo", false),
            ("create", ARGO, "workflows", sandbox, false),
            ("get", "", "secrets", sandbox, false),
            ("create", "", "pods", sandbox, false),
        ],
    );
    // And the parent workflow may wait for the child there (wait-workflow).
    assert_access(
        WORKFLOWS_SA,
        "argo",
        &[
            ("get", ARGO, "workflows", sandbox, true),
            ("list", ARGO, "workflows", sandbox, true),
            ("watch", ARGO, "workflows", sandbox, true),
            ("watch", ARGO, "workflows", "apps-sbx-pr-99", false),
        ],
    );
}

/// The `resource` template's manifest of `template` in workflows/create-sandbox.yaml, with
/// `{{inputs.parameters.X}}` and `{{workflow.X}}` filled in.
fn resource_manifest(template: &str, inputs: &[(&str, &str)]) -> Value {
    let (_, create) = manifests()
        .into_iter()
        .find(|(_, d)| {
            d["kind"] == "ClusterWorkflowTemplate" && d["metadata"]["name"] == "create-sandbox"
        })
        .unwrap();
    let template = create["spec"]["templates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == template)
        .unwrap_or_else(|| panic!("create-sandbox has no template {template}"));
    let mut text = template["resource"]["manifest"]
        .as_str()
        .unwrap()
        .to_owned();
    for (name, value) in inputs {
        text = text.replace(&format!("{{{{inputs.parameters.{name}}}}}"), value);
    }
    text = text.replace("{{workflow.namespace}}", "argo");
    text = text.replace("{{workflow.name}}", "create-sandbox-pr-8-x7k2p");
    for (name, value) in [
        ("infra-repo", "https://git.example/acme/infra.git"),
        ("vault-addr", "https://vault.example:8200"),
        ("integration-bucket", "acme-integration"),
        ("database-backups", "gs://acme-integration-backups/nightly/"),
        ("storage-emulator-host", ""),
        ("repository", "acme/platform"),
        ("repository-name", "platform"),
    ] {
        text = text.replace(&format!("{{{{workflow.parameters.{name}}}}}"), value);
    }
    assert!(!text.contains("{{"), "unfilled: {text}");
    serde_yaml::from_str(&text).unwrap()
}

/// What create-sandbox's `namespace` and `access` do for `sandbox`, as the workflows' account
/// (its real token); returns that token.
fn setup_sandbox(server: &KubeApiServer, sandbox: &str) -> String {
    let token = server.service_account_token("argo", "sandbox-steps");
    let environment = sandbox.strip_prefix("apps-").unwrap();
    let ns = [("namespace", sandbox), ("environment", environment)];
    for (template, inputs) in [
        ("namespace", &ns[..]),
        ("service-account", &ns[..1]),
        ("executor-binding", &ns[..1]),
        ("wait-binding", &ns[..1]),
    ] {
        let manifest = resource_manifest(template, inputs);
        let (status, body) = server.apply(&manifest, Some(&token));
        assert!(status < 300, "{template} as sandbox-steps: {status} {body}");
    }
    token
}

fn child_workflow(sandbox: &str) -> Value {
    let environment = sandbox.strip_prefix("apps-").unwrap();
    resource_manifest(
        "child-workflow",
        &[
            ("entrypoint", "provision"),
            ("namespace", sandbox),
            ("environment", environment),
            ("branch", environment),
            ("bucket", &format!("acme-{environment}")),
            ("database", &environment.replace('-', "_")),
        ],
    )
}

fn create(server: &KubeApiServer, object: &Value, token: &str) -> (u16, Value) {
    let path = server.path_of(object);
    let collection = if object["metadata"]["name"].is_string() {
        path.rsplit_once('/').unwrap().0.to_owned()
    } else {
        path.trim_end_matches('/').to_owned()
    };
    let strict = format!("{collection}?fieldValidation=Strict");
    server.request("POST", &strict, Some(object.clone()), Some(token))
}

fn denied_by_policy(status: u16, body: &Value) -> bool {
    status == 403
        && body["message"]
            .as_str()
            .is_some_and(|m| m.contains("ValidatingAdmissionPolicy 'sandbox-steps-sandboxes'"))
}

/// RBAC cannot limit by name; the admission policy does, enforced by the API server itself.
#[test]
fn the_admission_policy_confines_the_workflows_account_to_sandboxes() {
    let server = cluster();
    let sandbox = "apps-sbx-pr-7";
    // Allowed: everything create-sandbox does, from its own manifests.
    let token = setup_sandbox(server, sandbox);
    let (status, body) = create(server, &child_workflow(sandbox), &token);
    assert_eq!(status, 201, "the child workflow: {body}");

    let mut refused = Vec::new();
    let mut expect_denied = |what: &str, (status, body): (u16, Value)| {
        if !denied_by_policy(status, &body) {
            refused.push(format!("{what}: {status} {body}"));
        }
    };
    // Namespaces outside the sandboxes.
    let ns =
        |name: &str| json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
    expect_denied("create namespace prod", create(server, &ns("prod"), &token));
    server.create_namespace("team-b");
    expect_denied(
        "delete namespace team-b",
        server.request("DELETE", "/api/v1/namespaces/team-b", None, Some(&token)),
    );
    expect_denied(
        "label namespace kube-system",
        server.request(
            "PATCH",
            "/api/v1/namespaces/kube-system",
            Some(json!({"metadata": {"labels": {"x": "y"}}})),
            Some(&token),
        ),
    );
    // Service accounts: only sandbox-runner, only in sandboxes.
    let sa = |ns: &str, name: &str| json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "namespace": ns}});
    expect_denied(
        "service account in default",
        create(server, &sa("default", "sandbox-runner"), &token),
    );
    expect_denied(
        "service account other",
        create(server, &sa(sandbox, "other"), &token),
    );
    // Role bindings: only of sandbox-runner here and of the workflows' account.
    let mut binding = resource_manifest("executor-binding", &[("namespace", sandbox)]);
    binding["metadata"]["name"] = "to-default".into();
    binding["subjects"] =
        json!([{"kind": "ServiceAccount", "name": "default", "namespace": "kube-system"}]);
    expect_denied(
        "binding of kube-system/default",
        create(server, &binding, &token),
    );
    let mut binding = resource_manifest("executor-binding", &[("namespace", "default")]);
    binding["subjects"][0]["namespace"] = "default".into();
    expect_denied("binding in default", create(server, &binding, &token));
    // Workflows: only sandbox-infra, as sandbox-runner, in a sandbox.
    let mut workflow = child_workflow(sandbox);
    workflow["spec"]["serviceAccountName"] = "default".into();
    expect_denied(
        "child workflow as default",
        create(server, &workflow, &token),
    );
    let mut workflow = child_workflow(sandbox);
    workflow["spec"]
        .as_object_mut()
        .unwrap()
        .remove("serviceAccountName");
    expect_denied(
        "child workflow without an account",
        create(server, &workflow, &token),
    );
    let mut workflow = child_workflow(sandbox);
    workflow["spec"]["workflowTemplateRef"]["name"] = "create-sandbox".into();
    expect_denied(
        "workflow of another template",
        create(server, &workflow, &token),
    );
    let mut workflow = child_workflow(sandbox);
    workflow["spec"]["templates"] = json!([{"name": "x", "serviceAccountName": "default",
        "container": {"image": "busybox", "command": ["true"]}}]);
    expect_denied(
        "workflow with templates of its own",
        create(server, &workflow, &token),
    );
    let mut workflow = child_workflow(sandbox);
    workflow["spec"]["podSpecPatch"] = r#"{"serviceAccountName":"default"}"#.into();
    expect_denied(
        "workflow with a podSpecPatch",
        create(server, &workflow, &token),
    );
    let mut workflow = child_workflow(sandbox);
    workflow["metadata"]["namespace"] = "kube-system".into();
    expect_denied("workflow in kube-system", create(server, &workflow, &token));
    // Outside the sandboxes, only create-sandbox's sleep-sandbox Workflow in argo
    // (--when-full sleep-idlest), run as this same account.
    let sleep = || resource_manifest("sleep-idlest", &[("pr-number", "7")]);
    let mut workflow = sleep();
    workflow["spec"]["workflowTemplateRef"]["name"] = "delete-sandbox".into();
    expect_denied("delete-sandbox in argo", create(server, &workflow, &token));
    let mut workflow = sleep();
    workflow["spec"]["serviceAccountName"] = "sandbox-sweep".into();
    expect_denied(
        "sleep-sandbox as another account",
        create(server, &workflow, &token),
    );
    let mut workflow = sleep();
    workflow["spec"]["templates"] = json!([{"name": "x",
        "container": {"image": "busybox", "command": ["true"]}}]);
    expect_denied(
        "sleep-sandbox with templates of its own",
        create(server, &workflow, &token),
    );
    let mut workflow = sleep();
    workflow["metadata"]["namespace"] = "default".into();
    expect_denied(
        "sleep-sandbox in default",
        create(server, &workflow, &token),
    );
    assert!(
        refused.is_empty(),
        "not denied by the policy:\n{}",
        refused.join("\n")
    );
    let (status, body) = create(server, &sleep(), &token);
    assert_eq!(
        status, 201,
        "create-sandbox's sleep-idlest Workflow: {body}"
    );

    // Others are not blocked: the administrator, and the namespace controller, which empties the
    // sandbox's namespace (its service account, bindings, workflows) after delete-sandbox deletes it.
    let (status, body) = server.request("POST", "/api/v1/namespaces", Some(ns("team-a")), None);
    assert_eq!(status, 201, "{body}");
    let (status, body) = server.request(
        "DELETE",
        &format!("/api/v1/namespaces/{sandbox}"),
        None,
        Some(&token),
    );
    assert!(
        status == 200 || status == 202,
        "delete the sandbox: {status} {body}"
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    while server.get(&format!("/api/v1/namespaces/{sandbox}")).0 != 404 {
        assert!(
            std::time::Instant::now() < deadline,
            "the namespace controller did not remove {sandbox}: {}",
            server.get(&format!("/api/v1/namespaces/{sandbox}")).1
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// The exit handler's `http` template runs in Argo's agent pod, which mounts the Secret
/// `<service account>.service-account-token` (argo-workflows util/secrets.TokenName): it exists,
/// and Kubernetes' token controller fills it in.
#[test]
fn the_agent_token_secret_is_filled_in_by_the_token_controller() {
    let server = cluster();
    for workflow in ["create-sandbox", "delete-sandbox"] {
        let (_, template) = manifests()
            .into_iter()
            .find(|(_, d)| {
                d["kind"] == "ClusterWorkflowTemplate" && d["metadata"]["name"] == workflow
            })
            .unwrap();
        let account = template["spec"]["serviceAccountName"].as_str().unwrap();
        let path = format!("/api/v1/namespaces/argo/secrets/{account}.service-account-token");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let (status, secret) = server.get(&path);
            assert_eq!(status, 200, "{workflow}: {path}: {secret}");
            if secret["data"]["token"]
                .as_str()
                .is_some_and(|t| !t.is_empty())
            {
                assert_eq!(secret["data"]["namespace"], base64("argo"));
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{path} has no token after 60 s: {secret}"
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }
}

fn base64(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(text)
}

/// The Sensors' Workflows pass what their `argoWorkflow` trigger runs (`submit_as_sensor`: the
/// Argo CLI with the Sensor account's token validates them against the ClusterWorkflowTemplates
/// on the server and submits them).
#[test]
fn the_sensors_submissions_pass_the_argo_cli_as_the_sensor_account() {
    let server = cluster();
    for (sensor, workflow) in sensor_workflows(1_000_000) {
        let stdout = submit_as_sensor(server, &workflow);
        let (status, created) = server.get(&format!(
            "/apis/argoproj.io/v1alpha1/namespaces/argo/workflows/{stdout}"
        ));
        assert_eq!(status, 200, "{sensor}: {stdout}: {created}");
        assert!(
            stdout.starts_with(&format!(
                "{}-pr-1000000-",
                sensor.trim_end_matches("-sensor")
            )),
            "{stdout}"
        );
    }
}

/// delete-sandbox's `drop-namespace` returns only once the namespace is gone, so the branch is
/// cleaned up after it: the same kubectl delete Argo's executor runs in-process (kubectl of the
/// pinned Kubernetes, the template's flags), with the workflows' account's token. kubectl waits by
/// watching and silently skips the wait when the account may not watch namespaces.
#[test]
fn dropping_the_namespace_waits_until_it_is_gone() {
    let server = cluster();
    let sandbox = "apps-sbx-pr-11";
    let token = setup_sandbox(server, sandbox);
    // Something in the namespace that takes a moment to go: a ConfigMap with a finalizer, removed
    // 3 s later (as a controller finishing its clean-up would).
    let (status, body) = server.request(
        "POST",
        &format!("/api/v1/namespaces/{sandbox}/configmaps"),
        Some(json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "slow", "finalizers": ["sandbox-steps.io/test"]}})),
        None,
    );
    assert_eq!(status, 201, "{body}");
    let (_, delete) = manifests()
        .into_iter()
        .find(|(_, d)| {
            d["kind"] == "ClusterWorkflowTemplate" && d["metadata"]["name"] == "delete-sandbox"
        })
        .unwrap();
    let template = delete["spec"]["templates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "delete-namespace")
        .unwrap()
        .clone();
    let manifest = template["resource"]["manifest"]
        .as_str()
        .unwrap()
        .replace("{{inputs.parameters.namespace}}", sandbox);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("manifest.yaml"), manifest).unwrap();
    let flags: Vec<String> = template["resource"]["flags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap().to_owned())
        // A regression shows within a minute, not the template's ten.
        .map(|f| {
            if f.starts_with("--timeout=") {
                "--timeout=60s".to_owned()
            } else {
                f
            }
        })
        .collect();
    assert!(flags.iter().any(|f| f == "--wait=true"), "{flags:?}");
    let kubeconfig = server.kubeconfig("drop-namespace", &token);
    let started = std::time::Instant::now();
    // What argoexec runs: kubectl delete --ignore-not-found <flags> -f <manifest> -o name.
    let mut kubectl = Command::new(cluster_tool("kube"));
    kubectl
        .args(["kubectl", "delete", "--ignore-not-found"])
        .args(&flags)
        .arg("-f")
        .arg(dir.path().join("manifest.yaml"))
        .args(["-o", "name", "--kubeconfig"])
        .arg(&kubeconfig)
        .env_remove("KUBECONFIG");
    let child = kubectl
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_secs(3));
    let path = format!("/api/v1/namespaces/{sandbox}/configmaps/slow");
    let (status, body) = server.request(
        "PATCH",
        &path,
        Some(json!({"metadata": {"finalizers": null}})),
        None,
    );
    assert_eq!(status, 200, "{body}");
    let out = child.wait_with_output().unwrap();
    let took = started.elapsed();
    assert!(
        out.status.success(),
        "kubectl delete: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let (status, body) = server.get(&format!("/api/v1/namespaces/{sandbox}"));
    assert_eq!(
        status, 404,
        "kubectl delete returned after {took:?} with the namespace still there: {body}"
    );
    assert!(took >= std::time::Duration::from_secs(3), "{took:?}");
}

/// The API server itself refuses a misspelled field in the library's kinds it has a schema for
/// (Argo's full CRDs, Kubernetes' own types), under the strict field validation every manifest is
/// applied with above.
#[test]
fn a_misspelled_field_is_refused_by_the_api_server() {
    let server = cluster();
    let mut wrong = Vec::new();
    for (file, doc) in manifests() {
        let kind = doc["kind"].as_str().unwrap();
        if matches!(kind, "Sensor" | "EventSource") {
            continue; // schemaless CRDs: checked by Argo Events' own decoding (tests/sensors.rs)
        }
        let mut typo = doc.clone();
        typo["metadata"]["name"] =
            format!("typo-{}", doc["metadata"]["name"].as_str().unwrap()).into();
        let target = if typo["spec"].is_object() {
            &mut typo["spec"]
        } else {
            &mut typo
        };
        target["containr"] = json!({"image": "busybox"});
        let (status, body) = server.apply(&typo, None);
        // (400 from strict field validation; 500 "field not declared in schema" from
        // server-side apply's typed patch of Kubernetes' own kinds.)
        if status < 400 || !body.to_string().contains("containr") {
            wrong.push(format!("{} {kind}: {status} {body}", file.display()));
        }
    }
    assert!(
        wrong.is_empty(),
        "accepted a misspelled field:\n{}",
        wrong.join("\n")
    );
}
