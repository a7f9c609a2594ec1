//! The step contract, tested through a small step run by the real runner: flags from the
//! environment, exit codes, literal secrets refused, outputs and the summary, deadline, SIGTERM.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use step_kit::clap::{CommandFactory, Parser};
use step_kit::{
    command_with_env, run_from, CommonArgs, Context, SecretRef, StepArgs, StepError, VaultFlags,
};

/// A step for tests. Example: `probe --mode ok --git-token env:TOKEN`
#[derive(Debug, Parser)]
#[command(name = "probe", version)]
struct Probe {
    /// What the step does: ok, invalid, precondition, transient, unexpected, hang.
    #[arg(long, default_value = "ok")]
    mode: String,
    /// A secret-valued flag.
    #[arg(long)]
    git_token: Option<SecretRef>,
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    vault: VaultFlags,
    #[command(flatten)]
    common: CommonArgs,
}

impl StepArgs for Probe {
    fn common(&self) -> &CommonArgs {
        &self.common
    }
}

async fn probe(args: Probe, ctx: Context) -> Result<(), StepError> {
    if let Some(token) = &args.git_token {
        let secret = token.resolve("--git-token", &args.vault).await?;
        ctx.outputs
            .set("token-length", &secret.expose().len().to_string())?;
    }
    ctx.outputs.set("dry-run", &args.dry_run.to_string())?;
    match args.mode.as_str() {
        "ok" => ctx.outputs.set("result", "done"),
        "invalid" => Err(StepError::invalid("bad --mode")),
        "precondition" => Err(StepError::precondition("branch is protected")),
        "transient" => Err(StepError::transient("503 from the server")),
        "unexpected" => Err(StepError::unexpected("bug")),
        "hang" => {
            std::future::pending::<()>().await;
            Ok(())
        }
        // Blocking work that never looks at the cancellation (a transfer deep in a C library).
        "blocking-hang" => {
            step_kit::doing("fetching sbx-pr-42 from https://git.example.com/acme/infra.git");
            tokio::task::spawn_blocking(|| std::thread::sleep(Duration::from_secs(30)))
                .await
                .ok();
            Ok(())
        }
        other => Err(StepError::invalid(format!("unknown mode {other}"))),
    }
}

fn run(outputs: &Path, extra: &[&str]) -> u8 {
    let mut argv = vec![
        "probe",
        "--outputs-dir",
        outputs.to_str().unwrap(),
        "--log-format",
        "json",
    ];
    argv.extend_from_slice(extra);
    run_from("probe", argv, probe)
}

/// Runs `child_runs_probe_from_env` (this test binary, one ignored test) with `env` set.
fn child_from_env(env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        "child_runs_probe_from_env",
        "--include-ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env("CONTRACT_CHILD", "1");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

/// The summary line of a child's stdout (the test harness prints its own words before it).
fn summary_of(stdout: &str) -> serde_json::Value {
    let lines: Vec<&str> = stdout
        .lines()
        .filter(|l| l.contains(r#""step":"probe""#))
        .collect();
    assert_eq!(lines.len(), 1, "one summary line: {stdout}");
    let json = &lines[0][lines[0].find('{').unwrap()..];
    serde_json::from_str(json).unwrap()
}

#[test]
fn every_flag_reads_its_sbx_prefixed_environment_variable() {
    let cmd = command_with_env(Probe::command());
    for arg in cmd.get_arguments() {
        let Some(long) = arg.get_long() else { continue };
        if matches!(long, "help" | "version") {
            continue;
        }
        let env = arg
            .get_env()
            .unwrap_or_else(|| panic!("--{long} has no env"));
        // The Vault flags keep the variables Vault's own CLI reads (VAULT_ADDR, VAULT_TOKEN, ...).
        let prefix = if long.starts_with("vault-") {
            ""
        } else {
            "SBX_"
        };
        assert_eq!(
            env.to_str().unwrap(),
            format!("{prefix}{}", long.replace('-', "_").to_uppercase())
        );
    }
    // And the runner reads them.
    let dir = tempfile::tempdir().unwrap();
    let dir_text = dir.path().to_str().unwrap();
    let out = child_from_env(&[
        ("SBX_OUTPUTS_DIR", dir_text),
        ("SBX_MODE", "precondition"),
        ("SBX_DRY_RUN", "true"),
    ]);
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("dry-run")).unwrap(),
        "true"
    );
}

#[test]
#[ignore = "run as a child process by the tests that need a fresh environment"]
fn child_runs_probe_from_env() {
    if std::env::var_os("CONTRACT_CHILD").is_none() {
        return;
    }
    std::process::exit(run_from("probe", ["probe"], probe).into());
}

#[test]
fn an_empty_environment_variable_counts_as_unset() {
    let dir = tempfile::tempdir().unwrap();
    // SBX_MODE="" leaves the default (ok); SBX_DRY_RUN="" leaves false.
    let out = child_from_env(&[
        ("SBX_OUTPUTS_DIR", dir.path().to_str().unwrap()),
        ("SBX_MODE", ""),
        ("SBX_DRY_RUN", ""),
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("dry-run")).unwrap(),
        "false"
    );
}

#[test]
fn each_result_maps_to_its_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    for (mode, code) in [
        ("ok", 0),
        ("invalid", 2),
        ("precondition", 3),
        ("transient", 4),
        ("unexpected", 1),
    ] {
        assert_eq!(run(dir.path(), &["--mode", mode]), code, "--mode {mode}");
    }
}

#[test]
fn usage_errors_exit_2_and_help_and_version_exit_0() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(run(dir.path(), &["--no-such-flag"]), 2);
    assert_eq!(run(dir.path(), &["--timeout", "soon"]), 2);
    assert_eq!(run(dir.path(), &["--log-level", "loud"]), 2);
    assert_eq!(
        run_from("probe", ["probe", "--log-format", "xml"], probe),
        2
    );
    assert_eq!(run_from("probe", ["probe", "--help"], probe), 0);
    assert_eq!(run_from("probe", ["probe", "--version"], probe), 0);
}

#[test]
fn a_literal_secret_on_the_command_line_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(run(dir.path(), &["--git-token", "ghp_literal"]), 2);
    assert!(!dir.path().join("result").exists(), "nothing ran");
    // A reference is fine.
    std::env::set_var("CONTRACT_TEST_TOKEN", "abcd");
    assert_eq!(
        run(dir.path(), &["--git-token", "env:CONTRACT_TEST_TOKEN"]),
        0
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("token-length")).unwrap(),
        "4"
    );
    // A reference to something missing is a precondition, not a retry.
    assert_eq!(
        run(
            dir.path(),
            &["--git-token", "env:CONTRACT_TEST_TOKEN_UNSET"]
        ),
        3
    );
}

#[test]
fn a_literal_secret_from_the_flag_environment_variable_is_accepted_and_never_printed() {
    let dir = tempfile::tempdir().unwrap();
    let out = child_from_env(&[
        ("SBX_OUTPUTS_DIR", dir.path().to_str().unwrap()),
        ("SBX_GIT_TOKEN", "ghp_from_a_kubernetes_secret"),
        ("SBX_LOG_FORMAT", "json"),
        ("SBX_LOG_LEVEL", "trace"),
    ]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("token-length")).unwrap(),
        "28"
    );
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !all.contains("ghp_from_a_kubernetes_secret"),
        "secret printed: {all}"
    );
}

#[test]
fn the_deadline_stops_the_step_with_exit_4() {
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    assert_eq!(
        run(dir.path(), &["--mode", "hang", "--timeout", "300ms"]),
        4
    );
    assert!(started.elapsed() < Duration::from_secs(3));
}

/// The deadline holds even when blocking work ignores the cancellation, and the message says what
/// the step was doing.
#[test]
fn the_deadline_holds_and_names_what_it_interrupted() {
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let out = child_from_env(&[
        ("SBX_OUTPUTS_DIR", dir.path().to_str().unwrap()),
        ("SBX_MODE", "blocking-hang"),
        ("SBX_TIMEOUT", "2s"),
        ("SBX_LOG_FORMAT", "json"),
    ]);
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    // The whole process, its test harness's start included, within the 2 s.
    assert!(took < Duration::from_millis(2200), "{took:?}");
    let summary = summary_of(&String::from_utf8_lossy(&out.stdout));
    let error = summary["error"].as_str().unwrap();
    assert!(
        error.contains(
            "timed out after 2s (--timeout) while fetching sbx-pr-42 from https://git.example.com"
        ),
        "{error}"
    );
}

#[test]
fn summary_is_one_json_line_with_the_outputs_and_logs_go_to_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let out = child_from_env(&[
        ("SBX_OUTPUTS_DIR", dir.path().to_str().unwrap()),
        ("SBX_LOG_FORMAT", "json"),
    ]);
    let stdout = String::from_utf8(out.stdout).unwrap();
    let summary = summary_of(&stdout);
    assert_eq!(summary["ok"], true);
    assert_eq!(summary["exit_code"], 0);
    assert_eq!(summary["outputs"]["result"], "done");
    let stderr = String::from_utf8(out.stderr).unwrap();
    let log_line = stderr
        .lines()
        .find(|l| l.contains("probe: done"))
        .expect(&stderr);
    let log: serde_json::Value = serde_json::from_str(log_line).unwrap();
    assert_eq!(log["level"], "INFO");
}

#[test]
fn failures_are_in_the_summary_too() {
    let dir = tempfile::tempdir().unwrap();
    let out = child_from_env(&[
        ("SBX_OUTPUTS_DIR", dir.path().to_str().unwrap()),
        ("SBX_MODE", "transient"),
    ]);
    assert_eq!(out.status.code(), Some(4));
    let summary = summary_of(&String::from_utf8(out.stdout).unwrap());
    assert_eq!(summary["ok"], false);
    assert_eq!(summary["exit_code"], 4);
    assert_eq!(summary["error_kind"], "transient");
    assert_eq!(summary["error"], "503 from the server");
}

#[test]
fn sigterm_stops_the_step_within_5_seconds_with_exit_4() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("started");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_hangs_until_signalled",
            "--include-ignored",
            "--nocapture",
        ])
        .env("CONTRACT_CHILD", "1")
        .env("MARKER", &marker)
        .env("SBX_OUTPUTS_DIR", dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let waiting = Instant::now();
    while !marker.exists() {
        assert!(
            waiting.elapsed() < Duration::from_secs(10),
            "child never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let sent = Instant::now();
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code();
        }
        assert!(
            sent.elapsed() < Duration::from_secs(5),
            "still running 5 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(code, Some(4));
    let mut stdout = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut stdout).unwrap();
    assert!(stdout.contains(r#""error_kind":"transient""#), "{stdout}");
}

#[test]
#[ignore = "run as a child process by sigterm_stops_the_step_within_5_seconds_with_exit_4"]
fn child_hangs_until_signalled() {
    if std::env::var_os("CONTRACT_CHILD").is_none() {
        return;
    }
    let code = run_from(
        "probe",
        ["probe", "--log-format", "text"],
        |_: Probe, _ctx: Context| async {
            // Blocking work that ignores cancellation must not hold the exit beyond the grace period.
            tokio::task::spawn_blocking(|| std::thread::sleep(Duration::from_secs(60)));
            std::fs::write(std::env::var("MARKER").unwrap(), "").unwrap();
            std::future::pending::<()>().await;
            Ok(())
        },
    );
    std::process::exit(code.into());
}
