//! purge-secrets against a real OpenBao (KV v2 at `secret/`).

use std::path::Path;
use std::process::{Command, Output};

use serde_json::json;
use testkit::OpenBao;

fn step(bao: &OpenBao, outputs: &Path, path: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_purge-secrets"));
    cmd.env_clear()
        .env("SBX_OUTPUTS_DIR", outputs)
        .env("VAULT_ADDR", bao.addr())
        .env("VAULT_TOKEN", bao.root_token())
        .args(["--path", path]);
    cmd
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn deleted(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("deleted")).unwrap()
}

/// The secrets of sbx-pr-42 (one of them also a folder, one with two versions), and neighbours
/// that must survive: a sibling whose name starts the same, another sandbox, a path outside root.
fn seed(bao: &OpenBao) {
    for path in [
        "sandboxes/sbx-pr-42",
        "sandboxes/sbx-pr-42/db",
        "sandboxes/sbx-pr-42/app/api-key",
        "sandboxes/sbx-pr-42/app/nested/deep",
        "sandboxes/sbx-pr-420/db",
        "sandboxes/sbx-pr-7/db",
        "platform/db",
    ] {
        bao.put_kv2(path, json!({ "password": format!("pw for {path}") }));
    }
    bao.put_kv2(
        "sandboxes/sbx-pr-42/db",
        json!({ "password": "second version" }),
    );
}

const PURGED: [&str; 4] = [
    "sandboxes/sbx-pr-42",
    "sandboxes/sbx-pr-42/db",
    "sandboxes/sbx-pr-42/app/api-key",
    "sandboxes/sbx-pr-42/app/nested/deep",
];
const KEPT: [&str; 3] = [
    "sandboxes/sbx-pr-420/db",
    "sandboxes/sbx-pr-7/db",
    "platform/db",
];

#[test]
fn purges_data_and_metadata_below_the_path_and_nothing_else() {
    let bao = OpenBao::start();
    seed(&bao);
    let dir = tempfile::tempdir().unwrap();

    // Dry run first: counts, deletes nothing.
    let out = step(&bao, dir.path(), "sandboxes/sbx-pr-42")
        .arg("--dry-run")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(deleted(dir.path()), "4");
    for path in PURGED {
        assert_eq!(
            bao.status("GET", &format!("secret/metadata/{path}")),
            200,
            "{path}"
        );
    }

    let out = step(&bao, dir.path(), "sandboxes/sbx-pr-42")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(deleted(dir.path()), "4");
    for path in PURGED {
        // No data, and no metadata (a soft delete would leave both versions and the metadata).
        assert_eq!(
            bao.status("GET", &format!("secret/metadata/{path}")),
            404,
            "{path}"
        );
        assert_eq!(
            bao.status("GET", &format!("secret/data/{path}")),
            404,
            "{path}"
        );
    }
    assert_eq!(
        bao.status("LIST", "secret/metadata/sandboxes/sbx-pr-42"),
        404
    );
    for path in KEPT {
        assert_eq!(
            bao.status("GET", &format!("secret/data/{path}")),
            200,
            "{path} kept"
        );
    }
    assert!(
        !text(&out).contains("pw for"),
        "no secret value in the logs"
    );

    // Again: nothing left, still success.
    let out = step(&bao, dir.path(), "sandboxes/sbx-pr-42")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(deleted(dir.path()), "0");
    // Every JSON log line names the step (logs of many pods are read together).
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.lines().count() >= 2, "{stderr}");
    for line in stderr.lines() {
        assert!(line.starts_with("{\"step\":\"purge-secrets\","), "{line}");
    }
    // Nothing there is the normal case of a re-run, not an error.
    assert!(
        !text(&out).contains("ERROR") && !text(&out).contains("\"level\":\"ERROR"),
        "{}",
        text(&out)
    );
}

#[test]
fn refuses_paths_outside_the_root_and_bad_input() {
    let bao = OpenBao::start();
    seed(&bao);
    let dir = tempfile::tempdir().unwrap();
    for (path, extra, code) in [
        ("platform/db", &[][..], 3),
        ("sandboxes", &[][..], 3),
        ("sandboxes-x/sbx", &[][..], 3),
        (
            "sandboxes/sbx-pr-42",
            &["--root", "sandboxes/sbx-pr-42"][..],
            3,
        ),
        ("../sandboxes/sbx-pr-42", &[][..], 2),
        ("sandboxes/../platform", &[][..], 2),
        ("/sandboxes/sbx-pr-42", &[][..], 2),
        ("sandboxes/sbx pr;rm -rf /", &[][..], 2),
        ("sandboxes/sbx-pr-42\u{202e}", &[][..], 2),
        ("sandboxes/sbx-pr-42", &["--mount", "secret/../sys"][..], 2),
        ("sandboxes/sbx-pr-42", &["--mount", "sys"][..], 2),
        ("sandboxes/sbx-pr-42", &["--mount", "cubbyhole"][..], 2),
    ] {
        let out = step(&bao, dir.path(), path).args(extra).output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(code),
            "{path:?} {extra:?}: {}",
            text(&out)
        );
    }
    for path in PURGED.iter().chain(&KEPT) {
        assert_eq!(
            bao.status("GET", &format!("secret/metadata/{path}")),
            200,
            "{path}"
        );
    }

    // A literal token on the command line is refused; a wrong one is a precondition, unprinted.
    let out = step(&bao, dir.path(), "sandboxes/sbx-pr-42")
        .args(["--vault-token", "hvs.literal"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let out = step(&bao, dir.path(), "sandboxes/sbx-pr-42")
        .env("VAULT_TOKEN", "not-the-token")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(!text(&out).contains("not-the-token"), "{}", text(&out));

    // No credentials at all: invalid flags.
    let out = step(&bao, dir.path(), "sandboxes/sbx-pr-42")
        .env_remove("VAULT_TOKEN")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));

    // Vault unreachable: transient, within the deadline.
    let port = testkit::free_port();
    let out = step(&bao, dir.path(), "sandboxes/sbx-pr-42")
        .env("VAULT_ADDR", format!("http://127.0.0.1:{port}"))
        .args(["--timeout", "3s"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
}
