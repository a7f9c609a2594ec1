//! The real binary, run as Argo runs it: flags or environment variables in, files and a JSON
//! summary out, exit codes per the step contract.

use std::path::Path;
use std::process::{Command, Output};

fn step(outputs: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_validate-params"));
    cmd.env_clear()
        .env("SBX_OUTPUTS_DIR", outputs)
        .env("SBX_LOG_FORMAT", "text");
    cmd
}

fn summary(out: &Output) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.lines().count(), 1, "one summary line: {stdout}");
    serde_json::from_str(stdout.trim()).unwrap()
}

fn read(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn valid_parameters_write_every_output() {
    let dir = tempfile::tempdir().unwrap();
    let out = step(dir.path())
        .args([
            "--pr-number",
            "42",
            "--head-ref",
            "feature/JIRA-123_Ünïcode",
            "--repository",
            "acme/platform",
        ])
        .args([
            "--namespace-prefix",
            "apps-",
            "--bucket-prefix",
            "acme-",
            "--base-domain",
            "sandbox.acme.dev",
        ])
        .args([
            "--labels",
            "team-a,create-sandbox",
            "--require-label",
            "create-sandbox",
        ])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let expected = [
        ("environment", "sbx-pr-42"),
        ("namespace", "apps-sbx-pr-42"),
        ("branch", "sbx-pr-42"),
        ("database", "sbx_pr_42"),
        ("bucket", "acme-sbx-pr-42"),
        ("app-name", "sbx-pr-42"),
        ("hostname", "sbx-pr-42.sandbox.acme.dev"),
    ];
    let s = summary(&out);
    for (name, value) in expected {
        assert_eq!(read(dir.path(), name), value);
        assert_eq!(s["outputs"][name], value);
    }
    assert!(read(dir.path(), "head-ref-slug").starts_with("feature-jira-123-unicode-"));
}

#[test]
fn flags_come_from_environment_variables_as_the_template_passes_them() {
    let dir = tempfile::tempdir().unwrap();
    let out = step(dir.path())
        .env("SBX_PR_NUMBER", "7")
        .env("SBX_HEAD_REF", "fix/login")
        .env("SBX_REPOSITORY", "acme/platform")
        .env("SBX_NAME_FROM", "branch")
        .env("SBX_BASE_DOMAIN", "")
        .env("SBX_LABELS", "")
        .env("SBX_REQUIRE_LABEL", "")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let env = read(dir.path(), "environment");
    assert!(env.starts_with("sbx-pr-fix-login-"), "{env}");
    assert_eq!(read(dir.path(), "hostname"), env);
}

#[test]
fn every_problem_is_one_escaped_line_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let out = step(dir.path())
        .args([
            "--pr-number",
            "4x2",
            "--head-ref",
            "evil\nINFO forged line",
            "--repository",
            ";rm -rf /",
        ])
        .args(["--env-prefix", "../x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let problem_lines: Vec<&str> = stderr.lines().filter(|l| l.contains("ERROR --")).collect();
    assert_eq!(problem_lines.len(), 4, "{stderr}");
    assert!(
        !stderr.lines().any(|l| l.starts_with("INFO forged")),
        "{stderr}"
    );
    assert!(
        stderr.contains(r#"--head-ref "evil\u{000a}INFO forged line""#),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "no output written"
    );
    let s = summary(&out);
    assert_eq!(s["exit_code"], 2);
    assert!(s["error"]
        .as_str()
        .unwrap()
        .starts_with("4 invalid parameter(s)"));
}

#[test]
fn missing_required_label_is_a_precondition() {
    let dir = tempfile::tempdir().unwrap();
    let out = step(dir.path())
        .args([
            "--pr-number",
            "42",
            "--head-ref",
            "x",
            "--repository",
            "acme/platform",
        ])
        .args(["--labels", "bug", "--require-label", "create-sandbox"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "no output written"
    );
}

#[test]
fn missing_flags_are_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    let out = step(dir.path())
        .args(["--pr-number", "42"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let s = summary(&out);
    assert_eq!(s["error_kind"], "invalid");
    assert!(s["error"].as_str().unwrap().contains("--head-ref"), "{s}");
    let out = step(dir.path())
        .args([
            "--pr-number",
            "1",
            "--head-ref",
            "x",
            "--repository",
            "a/b",
            "--name-from",
            "label",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn help_explains_the_step_with_an_example() {
    let dir = tempfile::tempdir().unwrap();
    let out = step(dir.path()).arg("--help").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.contains("Example:") && help.contains("[env: SBX_PR_NUMBER="),
        "{help}"
    );
    let out = step(dir.path()).arg("--version").output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("validate-params {}", env!("CARGO_PKG_VERSION"))
    );
}

/// Sandboxes are named by pull request number: an installation serves the repositories it lists,
/// and another repository's pull request #42 never reaches acme/platform's sandbox #42.
#[test]
fn another_repository_is_refused_when_the_served_ones_are_listed() {
    for (repository, code) in [
        ("acme/platform", 0),
        ("ACME/Platform", 0),
        ("acme/platform-fork", 3),
        ("evil/platform", 3),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let out = step(dir.path())
            .args(["--pr-number", "42", "--head-ref", "feature/x"])
            .args(["--repository", repository])
            .args(["--repositories", "acme/platform,acme/payments"])
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(code),
            "{repository}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        if code == 3 {
            assert!(!dir.path().join("environment").exists(), "nothing written");
        }
    }
}
