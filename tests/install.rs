//! The install overlay (install/example): rendered by kubectl's own kustomize, it is the library
//! with the organisation's settings copied everywhere they are used; with another organisation's
//! settings nothing of the example's is left, the result is created on the real API server, and the
//! Sensors fire (Argo Events' own filter code) for the new repository only.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use testkit::{cluster_tool, split_yaml, KubeApiServer};
use workspace_tests::{
    manifests, prepare_for_the_library, pull_request_events, repo_root, sensor_check_file,
};

/// `kubectl kustomize DIR` with the pinned Kubernetes' kubectl (its kustomize), as documents.
fn kustomize(dir: &Path) -> Vec<Value> {
    let out = Command::new(cluster_tool("kube"))
        .args(["kubectl", "kustomize"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "kubectl kustomize {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    split_yaml(&String::from_utf8(out.stdout).unwrap())
}

fn by_kind_and_name(docs: Vec<Value>) -> BTreeMap<String, Value> {
    docs.into_iter()
        .map(|doc| {
            let key = format!(
                "{} {}/{}",
                doc["kind"].as_str().unwrap(),
                doc["metadata"]["namespace"].as_str().unwrap_or(""),
                doc["metadata"]["name"].as_str().unwrap()
            );
            (key, doc)
        })
        .collect()
}

/// `to` relative to `from` (both absolute): kustomize refuses absolute paths to bases.
fn relative(from: &Path, to: &Path) -> PathBuf {
    let from: Vec<Component> = from.components().collect();
    let to: Vec<Component> = to.components().collect();
    let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
    let mut path = PathBuf::new();
    for _ in common..from.len() {
        path.push("..");
    }
    for part in &to[common..] {
        path.push(part);
    }
    path
}

#[test]
fn the_example_overlay_is_the_library_with_its_settings() {
    let rendered = by_kind_and_name(kustomize(&repo_root().join("install/example")));
    let library = by_kind_and_name(manifests().into_iter().map(|(_, doc)| doc).collect());
    // Every manifest of the library, nothing else (the settings ConfigMap is local to kustomize),
    // and unchanged: the example's settings are the library's defaults.
    assert_eq!(
        rendered.keys().collect::<Vec<_>>(),
        library.keys().collect::<Vec<_>>()
    );
    for (key, doc) in &library {
        assert_eq!(&rendered[key], doc, "{key}");
    }
}

const SETTINGS: &[(&str, &str)] = &[
    ("repository", "initech/billing-api"),
    (
        "infra-repo",
        "https://git.initech.example/platform/infra.git",
    ),
    (
        "apps-repo",
        "https://git.initech.example/platform/gitops.git",
    ),
    ("bucket-prefix", "initech-"),
    ("gcs-project", "initech-previews"),
    ("base-domain", "preview.initech.example"),
    ("vault-addr", "https://vault.initech.example:8200"),
    ("integration-bucket", "initech-integration"),
    (
        "database-backups",
        "gs://initech-integration-backups/nightly/",
    ),
    ("argo-ui-url", "https://workflows.initech.example"),
    ("argocd-ui-url", "https://cd.initech.example"),
    ("argocd-namespace", "gitops"),
    (
        "pr-images",
        "billing-api=registry.initech.example/billing/api:sha-{short}",
    ),
    ("ttl", "120h"),
    ("keep-label", "preview-keep"),
    ("max-sandboxes", "25"),
    ("sleep-after", "6h"),
    ("night-schedule", "30 19 * * 1-5"),
    ("night-timezone", "America/Chicago"),
    ("sql-scripts", "db/preview"),
    ("mask-data", "true"),
];

#[test]
fn another_organisations_settings_reach_every_place_and_install() {
    // A copy of the example with other settings, next to the build (kustomize needs a relative
    // path to the library).
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let example = repo_root().join("install/example");
    let library = relative(dir.path(), &repo_root().join("workflow-templates"));
    let kustomization = std::fs::read_to_string(example.join("kustomization.yaml"))
        .unwrap()
        .replace("../../workflow-templates", library.to_str().unwrap())
        .replace(
            "newName: ghcr.io/sandbox-steps/sandbox-steps",
            "newName: registry.initech.example/platform/sandbox-steps",
        );
    std::fs::write(dir.path().join("kustomization.yaml"), kustomization).unwrap();
    std::fs::copy(
        example.join("kustomizeconfig.yaml"),
        dir.path().join("kustomizeconfig.yaml"),
    )
    .unwrap();
    let mut settings: Value =
        serde_yaml::from_str(&std::fs::read_to_string(example.join("settings.yaml")).unwrap())
            .unwrap();
    let keys: Vec<String> = settings["data"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    assert_eq!(
        keys.len(),
        SETTINGS.len(),
        "every setting is tested: {keys:?}"
    );
    for (key, value) in SETTINGS {
        assert!(keys.contains(&key.to_string()), "{key}");
        settings["data"][key] = (*value).into();
    }
    std::fs::write(
        dir.path().join("settings.yaml"),
        serde_yaml::to_string(&settings).unwrap(),
    )
    .unwrap();

    let docs = kustomize(dir.path());
    let text = serde_json::to_string(&docs).unwrap();
    assert!(!text.contains("acme"), "the example's settings are left");
    assert!(!text.contains("ghcr.io"), "the example's image is left");
    let rendered = by_kind_and_name(docs.clone());
    let param = |template: &str, name: &str| {
        rendered[&format!("ClusterWorkflowTemplate /{template}")]["spec"]["arguments"]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("{template}: no parameter {name}"))["value"]
            .clone()
    };
    let setting = |key: &str| SETTINGS.iter().find(|(k, _)| *k == key).unwrap().1;
    for template in ["create-sandbox", "delete-sandbox"] {
        assert_eq!(param(template, "repositories"), setting("repository"));
        for key in [
            "infra-repo",
            "apps-repo",
            "bucket-prefix",
            "base-domain",
            "vault-addr",
        ] {
            assert_eq!(param(template, key), setting(key), "{template} {key}");
        }
    }
    assert_eq!(param("sweep", "repository"), setting("repository"));
    assert_eq!(param("sweep", "repository-name"), "billing-api");
    for key in [
        "infra-repo",
        "apps-repo",
        "bucket-prefix",
        "vault-addr",
        "gcs-project",
        "base-domain",
    ] {
        assert_eq!(param("sweep", key), setting(key), "sweep {key}");
    }
    for template in ["create-sandbox", "delete-sandbox"] {
        for key in ["argo-ui-url", "argocd-ui-url"] {
            assert_eq!(param(template, key), setting(key), "{template} {key}");
        }
    }
    for template in ["create-sandbox", "update-sandbox"] {
        for key in [
            "argocd-namespace",
            "pr-images",
            "infra-repo",
            "bucket-prefix",
            "base-domain",
        ] {
            assert_eq!(param(template, key), setting(key), "{template} {key}");
        }
        assert_eq!(param(template, "repositories"), setting("repository"));
    }
    assert_eq!(
        param("update-sandbox", "argo-ui-url"),
        setting("argo-ui-url")
    );
    for template in [
        "create-sandbox",
        "update-sandbox",
        "extend-sandbox",
        "sleep-sandbox",
        "wake-sandbox",
        "sweep",
    ] {
        for key in ["ttl", "keep-label"] {
            assert_eq!(param(template, key), setting(key), "{template} {key}");
        }
    }
    // Sleep and wake run with the same settings as the rest of the lifecycle.
    for template in ["sleep-sandbox", "wake-sandbox"] {
        assert_eq!(param(template, "repositories"), setting("repository"));
        for key in [
            "infra-repo",
            "bucket-prefix",
            "base-domain",
            "argo-ui-url",
            "argocd-ui-url",
            "argocd-namespace",
        ] {
            assert_eq!(param(template, key), setting(key), "{template} {key}");
        }
    }
    for template in ["create-sandbox", "update-sandbox", "wake-sandbox"] {
        assert_eq!(param(template, "max-sandboxes"), setting("max-sandboxes"));
    }
    assert_eq!(param("sweep", "sleep-after"), setting("sleep-after"));
    let night = &rendered["CronWorkflow argo/sandbox-night"]["spec"];
    assert_eq!(night["schedules"][0], setting("night-schedule"));
    assert_eq!(night["timezone"], setting("night-timezone"));
    for kind in ["Role", "RoleBinding"] {
        let key = format!("{kind} gitops/sandbox-steps-argocd-apps");
        assert!(rendered.contains_key(&key), "no {key}");
    }
    for key in ["sql-scripts", "mask-data"] {
        assert_eq!(
            param("sandbox-infra", key),
            setting(key),
            "sandbox-infra {key}"
        );
    }
    for template in ["create-sandbox", "sandbox-infra"] {
        for key in ["integration-bucket", "database-backups"] {
            assert_eq!(param(template, key), setting(key), "{template} {key}");
        }
    }
    // The image, in every step template (Terraform's is HashiCorp's).
    let mut steps = 0;
    for (key, doc) in &rendered {
        for template in doc["spec"]["templates"].as_array().into_iter().flatten() {
            let image = template["container"]["image"].as_str().unwrap_or("");
            if image.contains("sandbox-steps") {
                assert!(
                    image.starts_with("registry.initech.example/platform/sandbox-steps:"),
                    "{key}: {image}"
                );
                steps += 1;
            }
        }
    }
    assert!(steps >= 10, "{steps} step templates");
    let github = &rendered["EventSource argo-events/github"]["spec"]["github"]["pull-requests"]
        ["repositories"][0];
    assert_eq!(github["owner"], "initech");
    assert_eq!(github["names"], serde_json::json!(["billing-api"]));

    // Created on the real API server, as `kubectl apply -k` would (strict field validation).
    let server = KubeApiServer::start();
    prepare_for_the_library(&server);
    // Their Argo CD's namespace, which their Argo CD install made.
    server.create_namespace(setting("argocd-namespace"));
    for (key, doc) in &rendered {
        let (status, body) = server.apply(doc, None);
        assert!(status == 200 || status == 201, "{key}: {status} {body}");
    }

    // The Sensors fire for the new repository's pull requests, and no longer for acme's.
    let events = pull_request_events();
    let retarget = |repository: &str| -> Vec<Value> {
        events
            .iter()
            .map(|event| {
                let mut event = event.clone();
                event["body"]["repository"]["full_name"] = repository.into();
                event
            })
            .collect()
    };
    for sensor in ["create-sandbox", "delete-sandbox"] {
        let file = dir.path().join(format!("{sensor}-sensor.yaml"));
        let doc = &rendered[&format!("Sensor argo-events/{sensor}")];
        std::fs::write(&file, serde_yaml::to_string(doc).unwrap()).unwrap();
        let theirs = sensor_check_file(&file, &retarget(setting("repository")));
        assert!(
            theirs.iter().any(|(fired, _)| *fired),
            "{sensor}: never fires"
        );
        let acme = sensor_check_file(&file, &retarget("acme/platform"));
        assert!(
            acme.iter().all(|(fired, _)| !fired),
            "{sensor}: fires for acme"
        );
    }
}
