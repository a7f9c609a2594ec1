//! Each step runs through a link named after it and as `sandbox-steps <step>`.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_sandbox-steps");

#[test]
fn a_step_runs_through_its_link_and_as_a_subcommand() {
    let dir = tempfile::tempdir().unwrap();
    let status = Command::new(BIN)
        .arg("--install-links")
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(status.success());
    let link = dir.path().join("validate-params");
    let by_link = Command::new(&link).arg("--version").output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&by_link.stdout).trim(),
        format!("validate-params {}", env!("CARGO_PKG_VERSION"))
    );
    let by_arg = Command::new(BIN)
        .args(["validate-params", "--version"])
        .output()
        .unwrap();
    assert_eq!(by_link.stdout, by_arg.stdout);

    let outputs = dir.path().join("out");
    let run = Command::new(&link)
        .args(["--pr-number", "5", "--head-ref", "x", "--repository", "a/b"])
        .env("SBX_OUTPUTS_DIR", &outputs)
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(0));
    assert_eq!(
        std::fs::read_to_string(outputs.join("environment")).unwrap(),
        "sbx-pr-5"
    );
}

#[test]
fn unknown_steps_are_usage_errors() {
    let out = Command::new(BIN).arg("rm-rf").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("validate-params"));
    assert_eq!(Command::new(BIN).output().unwrap().status.code(), Some(2));
    assert_eq!(
        Command::new(BIN)
            .arg("--help")
            .output()
            .unwrap()
            .status
            .code(),
        Some(0)
    );
}

/// Beside the executable (as in the image's /usr/local/bin) the links are relative.
#[test]
fn links_beside_the_executable_are_relative() {
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("sandbox-steps");
    std::fs::copy(BIN, &exe).unwrap();
    let status = Command::new(&exe)
        .arg("--install-links")
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(status.success());
    let target = std::fs::read_link(dir.path().join("validate-params")).unwrap();
    assert_eq!(target, std::path::Path::new("sandbox-steps"));
    let out = Command::new(dir.path().join("validate-params"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success());
}
