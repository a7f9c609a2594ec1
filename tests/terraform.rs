//! The terraform template's script, run as its pod runs it: as uid 65532 (the template's
//! securityContext), on a checkout written by another user with directories 0755 (what Argo's
//! init container leaves: argo-workflows#11376, #14114), for two sandboxes from one module.
//!
//! `terraform` is [`TERRAFORM_DOUBLE`], a stand-in that does to the file system what Terraform
//! does. What is tested is the script and the permissions, which are real.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use workspace_tests::{manifests, TERRAFORM_DOUBLE};

/// The template's container: (script, env with the inputs filled in).
fn script(inputs: &[(&str, &str)]) -> (String, Vec<(String, String)>) {
    let (_, doc) = manifests()
        .into_iter()
        .find(|(_, d)| d["metadata"]["name"] == "terraform")
        .unwrap();
    let template = &doc["spec"]["templates"][0];
    let container = &template["container"];
    assert_eq!(container["securityContext"]["runAsUser"], 65532);
    assert_eq!(container["command"], serde_json::json!(["/bin/sh", "-c"]));
    let script = container["args"][0].as_str().unwrap().to_owned();
    let defaults: Vec<(String, String)> = template["inputs"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| {
            Some((
                p["name"].as_str()?.to_owned(),
                p["value"].as_str()?.to_owned(),
            ))
        })
        .collect();
    let env = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e: &Value| {
            let mut value = e["value"].as_str().unwrap().to_owned();
            for (name, given) in inputs
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .chain(defaults.clone())
            {
                value = value.replace(&format!("{{{{inputs.parameters.{name}}}}}"), &given);
            }
            assert!(!value.contains("{{"), "unfilled {value}");
            (e["name"].as_str().unwrap().to_owned(), value)
        })
        .collect();
    (script, env)
}

struct Pod {
    dir: tempfile::TempDir,
}

impl Pod {
    /// A work volume (0777, as an emptyDir) holding a checkout owned by root (or read-only when
    /// the tests do not run as root), directories 0755, with the one sandbox module.
    fn new() -> Pod {
        let dir = tempfile::tempdir().unwrap();
        let work = dir.path().join("work");
        let module = work.join("src/terraform/sandbox");
        std::fs::create_dir_all(&module).unwrap();
        std::fs::write(module.join("main.tf"), "variable \"environment\" {}\n").unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::write(bin.join("terraform"), TERRAFORM_DOUBLE).unwrap();
        for d in [dir.path(), &bin] {
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        std::fs::set_permissions(
            bin.join("terraform"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        std::fs::set_permissions(&work, std::fs::Permissions::from_mode(0o777)).unwrap();
        // The checkout: 0755 directories of another user (root); 0555 when we are not root.
        let mode = if is_root() { 0o755 } else { 0o555 };
        for d in ["src", "src/terraform", "src/terraform/sandbox"] {
            std::fs::set_permissions(work.join(d), std::fs::Permissions::from_mode(mode)).unwrap();
        }
        std::fs::write(dir.path().join("log"), "").unwrap();
        std::fs::set_permissions(
            dir.path().join("log"),
            std::fs::Permissions::from_mode(0o666),
        )
        .unwrap();
        Pod { dir }
    }

    fn work(&self) -> PathBuf {
        self.dir.path().join("work")
    }

    /// Runs the template's script as uid 65532 with `inputs`; (exit code, stderr).
    fn run(&self, inputs: &[(&str, &str)]) -> (i32, String) {
        let (script, env) = script(inputs);
        let mut cmd = if is_root() {
            let mut c = Command::new("setpriv");
            c.args([
                "--reuid=65532",
                "--regid=65532",
                "--clear-groups",
                "/bin/sh",
                "-c",
            ]);
            c
        } else {
            let mut c = Command::new("/bin/sh");
            c.arg("-c");
            c
        };
        cmd.arg(&script).env_clear();
        for (name, value) in env {
            let value = value.replace("/work", &self.work().display().to_string());
            cmd.env(name, value);
        }
        cmd.env(
            "PATH",
            format!("{}:/usr/bin:/bin", self.dir.path().join("bin").display()),
        )
        .env("TERRAFORM_LOG", self.dir.path().join("log"));
        let out = cmd.output().expect("run the script");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap()
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe extern "C" {
        fn geteuid() -> u32;
    }
    unsafe { geteuid() == 0 }
}

fn inputs<'a>(environment: &'a str, action: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("repo", "https://git.example/acme/infra.git"),
        ("revision", environment),
        ("environment", environment),
        ("action", action),
        ("namespace", "apps-ns"),
        ("bucket", "acme-bucket"),
        ("database", "db"),
    ]
}

fn state(work: &Path, environment: &str) -> Option<String> {
    std::fs::read_to_string(work.join(format!(
        "run/terraform/sandbox/terraform.tfstate.d/{environment}/terraform.tfstate"
    )))
    .ok()
}

#[test]
fn terraform_applies_two_sandboxes_from_one_module_as_a_non_root_user() {
    let pod = Pod::new();
    for environment in ["sbx-pr-1", "sbx-pr-2"] {
        let (code, stderr) = pod.run(&inputs(environment, "apply"));
        assert_eq!(code, 0, "{environment}: {stderr}\n{}", pod.log());
        let state = state(&pod.work(), environment).expect("its own state");
        assert!(
            state.starts_with(&format!("apply {environment}")),
            "{state}"
        );
    }
    let log = pod.log();
    assert!(
        log.contains("workspace select -or-create=true sbx-pr-1"),
        "{log}"
    );
    assert!(
        log.contains("workspace select -or-create=true sbx-pr-2"),
        "{log}"
    );
}

#[test]
fn terraform_destroy_removes_the_workspace_and_a_rerun_converges() {
    let pod = Pod::new();
    assert_eq!(pod.run(&inputs("sbx-pr-3", "apply")).0, 0, "{}", pod.log());
    for _ in 0..2 {
        let (code, stderr) = pod.run(&inputs("sbx-pr-3", "destroy"));
        assert_eq!(code, 0, "{stderr}\n{}", pod.log());
        assert!(state(&pod.work(), "sbx-pr-3").is_none());
    }
    assert!(pod.log().contains("workspace delete sbx-pr-3"));
}

#[test]
fn terraform_refuses_bad_input_before_running_anything() {
    for (environment, module_dir, code) in [
        ("../x", "terraform/sandbox", 2),
        ("sbx;rm -rf /", "terraform/sandbox", 2),
        ("", "terraform/sandbox", 2),
        ("default", "terraform/sandbox", 2),
        ("sbx-pr-4", "../../etc", 2),
        ("sbx-pr-4", "/etc", 2),
        ("sbx-pr-4", "terraform/nothing-here", 3),
    ] {
        let pod = Pod::new();
        let mut given = inputs(environment, "apply");
        given.push(("module-dir", module_dir));
        let (got, stderr) = pod.run(&given);
        assert_eq!(got, code, "{environment:?} {module_dir:?}: {stderr}");
        assert_eq!(pod.log(), "", "terraform never ran");
    }
}
