//! `vault:` secret references resolved from a real OpenBao, by token and by Kubernetes auth.
//! One test function: the Vault settings come from process-wide environment variables.

use serde_json::json;
use step_kit::clap::Parser;
use step_kit::{SecretRef, VaultFlags};
use testkit::{OpenBao, TokenReviewDouble};

/// A step's Vault flags, parsed as a step parses them (from `argv` and the VAULT_* variables).
#[derive(Parser)]
struct Probe {
    #[command(flatten)]
    vault: VaultFlags,
}

fn resolve_with(
    reference: &SecretRef,
    flag: &str,
    argv: &[&str],
) -> Result<step_kit::Secret, step_kit::StepError> {
    let probe = Probe::parse_from(std::iter::once("probe").chain(argv.iter().copied()));
    // The harness's helpers block (they are sync), so the async resolution runs on its own runtime.
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(reference.resolve(flag, &probe.vault))
}

fn resolve(reference: &SecretRef, flag: &str) -> Result<step_kit::Secret, step_kit::StepError> {
    resolve_with(reference, flag, &[])
}

#[test]
fn vault_references_resolve_by_token_and_by_kubernetes_auth() {
    let bao = OpenBao::start();
    bao.put_kv2(
        "sandboxes/sbx-pr-42/db",
        json!({ "password": "pw-42", "port": 5432 }),
    );
    std::env::set_var("VAULT_ADDR", bao.addr());

    // Token auth (outside a cluster).
    std::env::set_var("VAULT_TOKEN", bao.root_token());
    let reference: SecretRef = "vault:secret/sandboxes/sbx-pr-42/db#password"
        .parse()
        .unwrap();
    assert_eq!(
        resolve(&reference, "--owner-secret").unwrap().expose(),
        "pw-42"
    );
    let port: SecretRef = "vault:secret/sandboxes/sbx-pr-42/db#port".parse().unwrap();
    assert_eq!(resolve(&port, "--x").unwrap().expose(), "5432");

    // The step's flags, not only the variables: --vault-token on the command line is the one used
    // (it used to be ignored for vault: references), and a token from Vault itself is exit 2.
    std::env::remove_var("VAULT_TOKEN");
    std::env::set_var("BAO_TOKEN_FOR_TEST", bao.root_token());
    assert_eq!(
        resolve_with(&port, "--x", &["--vault-token", "env:BAO_TOKEN_FOR_TEST"])
            .unwrap()
            .expose(),
        "5432"
    );
    assert_eq!(resolve(&port, "--x").unwrap_err().exit_code(), 2);
    let from_vault = resolve_with(&port, "--x", &["--vault-token", "vault:secret/x#token"]);
    assert_eq!(from_vault.unwrap_err().exit_code(), 2);
    std::env::set_var("VAULT_TOKEN", bao.root_token());

    // Missing key or path: a precondition (exit 3), naming the path but not any secret.
    let missing_key: SecretRef = "vault:secret/sandboxes/sbx-pr-42/db#nope".parse().unwrap();
    let err = resolve(&missing_key, "--x").unwrap_err();
    assert_eq!(err.exit_code(), 3, "{err}");
    let missing_path: SecretRef = "vault:secret/sandboxes/absent#k".parse().unwrap();
    assert_eq!(resolve(&missing_path, "--x").unwrap_err().exit_code(), 3);

    // A bad token: exit 3 with a hint, and the token never in the message.
    std::env::set_var("VAULT_TOKEN", "not-a-token");
    let err = resolve(&reference, "--owner-secret").unwrap_err();
    assert_eq!(err.exit_code(), 3, "{err}");
    assert!(err.hint.is_some());
    assert!(!err.to_string().contains("not-a-token"), "{err}");

    // Kubernetes auth (inside a pod): the service-account token, reviewed by the API double.
    std::env::remove_var("VAULT_TOKEN");
    let reviewer = TokenReviewDouble::start();
    bao.enable_kubernetes_auth(
        &reviewer,
        "sandbox-steps",
        "argo",
        "sandbox-runner",
        "sandboxes/",
    );
    let jwt_dir = tempfile::tempdir().unwrap();
    let jwt_path = jwt_dir.path().join("token");
    std::fs::write(&jwt_path, reviewer.issue_token("argo", "sandbox-runner")).unwrap();
    std::env::set_var("VAULT_K8S_ROLE", "sandbox-steps");
    std::env::set_var("VAULT_K8S_TOKEN_PATH", &jwt_path);
    assert_eq!(
        resolve(&reference, "--owner-secret").unwrap().expose(),
        "pw-42"
    );

    // The policy of the role limits what it reads.
    bao.put_kv2("platform/ci", json!({ "token": "t" }));
    let outside: SecretRef = "vault:secret/platform/ci#token".parse().unwrap();
    assert_eq!(resolve(&outside, "--x").unwrap_err().exit_code(), 3);

    // A service account the double does not know: login refused, exit 3.
    std::fs::write(&jwt_path, "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln").unwrap();
    assert_eq!(resolve(&reference, "--x").unwrap_err().exit_code(), 3);

    // Vault unreachable: transient (exit 4) after the retries.
    std::env::set_var("VAULT_TOKEN", "t");
    std::env::set_var(
        "VAULT_ADDR",
        format!("http://127.0.0.1:{}", testkit::free_port()),
    );
    let started = std::time::Instant::now();
    let err = resolve(&reference, "--x").unwrap_err();
    assert_eq!(err.exit_code(), 4, "{err}");
    assert!(started.elapsed() < std::time::Duration::from_secs(60));
}
