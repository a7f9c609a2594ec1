//! wait-image against a real OCI registry on loopback (Debian's docker-registry), anonymous, with
//! basic auth, and with token auth (the registry verifies the tokens itself); images pushed with
//! skopeo (testkit::OciRegistry).

use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use testkit::{OciRegistry, RegistryAuth, StepRun};

const PASSWORD: &str = "registry-password-7";

fn step(registry: &OciRegistry, image: &str, extra: &[&str]) -> (Command, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wait-image"));
    cmd.env_clear()
        .env("SBX_OUTPUTS_DIR", dir.path())
        .env("REGISTRY_PASSWORD", PASSWORD)
        .args(["--image", &format!("{}/{image}", registry.host())])
        .args(["--plain-http", "--poll-interval", "200ms"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    (cmd, dir)
}

fn finish(child: Child, dir: &tempfile::TempDir) -> StepRun {
    let out: Output = child.wait_with_output().unwrap();
    StepRun::read(&out, dir.path(), wait_image::OUTPUTS).hiding(&[PASSWORD])
}

const CREDENTIALS: &[&str] = &[
    "--registry-username",
    "ci",
    "--registry-password",
    "env:REGISTRY_PASSWORD",
];

/// The tag absent, then pushed while the step waits: exit 0 with the manifest's digest.
fn absent_then_pushed(registry: &OciRegistry, extra: &[&str]) {
    let (mut cmd, dir) = step(
        registry,
        "acme/web:sha-1a2b3c4",
        &[extra, &["--timeout", "60s"]].concat(),
    );
    let child = cmd.spawn().unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let digest = registry.push_image("acme/web", "sha-1a2b3c4", "build of 1a2b3c4");
    let pushed = Instant::now();
    let run = finish(child, &dir).ok();
    eprintln!("pushed to seen: {:?}", pushed.elapsed());
    assert_eq!(run.output("digest"), digest);
    assert_eq!(
        run.output("image"),
        format!("{}/acme/web@{digest}", registry.host())
    );
    assert!(run.text.contains("not in the registry yet"), "{}", run.text);
}

#[test]
fn anonymous_registry() {
    let registry = OciRegistry::start(RegistryAuth::Anonymous);
    absent_then_pushed(&registry, &[]);
}

#[test]
fn basic_auth_registry() {
    let registry = OciRegistry::start(RegistryAuth::Htpasswd {
        user: "ci".into(),
        password: PASSWORD.into(),
    });
    absent_then_pushed(&registry, CREDENTIALS);
    // Without credentials, or with wrong ones: exit 3 at once.
    for extra in [
        &[][..],
        &[
            "--registry-username",
            "ci",
            "--registry-password",
            "env:WRONG",
        ],
    ] {
        let (mut cmd, dir) = step(
            &registry,
            "acme/web:sha-1a2b3c4",
            &[extra, &["--timeout", "60s"]].concat(),
        );
        cmd.env("WRONG", "not-the-password");
        let started = Instant::now();
        let run = finish(cmd.spawn().unwrap(), &dir);
        assert_eq!(run.code, Some(3), "{extra:?}: {}", run.text);
        assert!(started.elapsed() < Duration::from_secs(10));
        assert!(run.text.contains("registry 127.0.0.1:"), "{}", run.text);
    }
}

#[test]
fn token_auth_registry() {
    let registry = OciRegistry::start(RegistryAuth::Token {
        user: "ci".into(),
        password: PASSWORD.into(),
    });
    absent_then_pushed(&registry, CREDENTIALS);
    let (mut cmd, dir) = step(
        &registry,
        "acme/web:sha-1a2b3c4",
        &[
            "--registry-username",
            "ci",
            "--registry-password",
            "env:WRONG",
            "--timeout",
            "60s",
        ],
    );
    cmd.env("WRONG", "not-the-password");
    let run = finish(cmd.spawn().unwrap(), &dir);
    assert_eq!(run.code, Some(3), "{}", run.text);
    assert!(run.text.contains("refused the credentials"), "{}", run.text);
}

#[test]
fn absent_past_the_deadline_is_exit_4() {
    let registry = OciRegistry::start(RegistryAuth::Anonymous);
    let (mut cmd, dir) = step(&registry, "acme/web:never", &["--timeout", "2s"]);
    let run = finish(cmd.spawn().unwrap(), &dir);
    assert_eq!(run.code, Some(4), "{}", run.text);
    assert!(run.text.contains("not in the registry yet"), "{}", run.text);
}

#[test]
fn an_unreachable_registry_is_exit_4_at_the_deadline() {
    let (mut cmd, dir) = {
        let registry = OciRegistry::start(RegistryAuth::Anonymous);
        step(&registry, "acme/web:1", &["--timeout", "2s"])
    };
    let run = finish(cmd.spawn().unwrap(), &dir);
    assert_eq!(run.code, Some(4), "{}", run.text);
}

#[test]
fn bad_references_are_exit_2() {
    for image in [
        "web:1",
        "acme/web",
        "ghcr.io/acme/web:;rm -rf /",
        "ghcr.io/../x:1",
        "ghcr.io/acme/Web:1",
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_wait-image"))
            .env_clear()
            .args(["--image", image])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{image}");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_wait-image"))
        .env_clear()
        .args(["--image", "ghcr.io/acme/web:1", "--registry-username", "ci"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn several_images_of_a_commit_are_waited_for_and_pinned() {
    let registry = OciRegistry::start(RegistryAuth::Anonymous);
    let sha = "1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d";
    let web = registry.push_image("acme/web", "sha-1a2b3c4", "web at 1a2b3c4");
    let images = format!(
        "web={0}/acme/web:sha-{{short}}\napi={0}/acme/api:sha-{{short}}",
        registry.host()
    );
    let dir = tempfile::tempdir().unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_wait-image"))
        .env_clear()
        .env("SBX_OUTPUTS_DIR", dir.path())
        .args(["--images", &images, "--commit", sha])
        .args([
            "--plain-http",
            "--poll-interval",
            "200ms",
            "--timeout",
            "60s",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1000));
    let api = registry.push_image("acme/api", "sha-1a2b3c4", "api at 1a2b3c4");
    let run = finish(child, &dir).ok();
    assert_eq!(
        run.output("set-images"),
        format!(
            "web={0}/acme/web:sha-1a2b3c4@{web}\napi={0}/acme/api:sha-1a2b3c4@{api}",
            registry.host()
        )
    );
    assert_eq!(run.output("commit"), sha);
    // Nothing to wait for: exit 0, set-images empty.
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_wait-image"))
        .env_clear()
        .env("SBX_OUTPUTS_DIR", dir.path())
        .output()
        .unwrap();
    let none = StepRun::read(&out, dir.path(), wait_image::OUTPUTS).ok();
    assert_eq!(none.output("set-images"), "");
    assert_eq!(none.output("commit"), "");
}
