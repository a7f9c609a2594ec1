//! The libgit2 side over SSH, against a real sshd: key auth, host keys checked against
//! known_hosts, push.

use std::time::{Duration, Instant};

use git_remote::{commit_and_push, Change, Checkout, GitAuth, Identity};
use step_kit::Secret;
use testkit::SshGitServer;
use tokio_util::sync::CancellationToken;

fn ssh_auth(key: String, known_hosts: Option<String>, insecure: bool) -> GitAuth {
    GitAuth::SshKey {
        key: Secret::new(key),
        known_hosts,
        insecure_ignore_host_key: insecure,
    }
}

#[test]
fn fetch_and_push_over_ssh_with_the_host_key_checked() {
    let server = SshGitServer::start();
    let url = server.create_repo("infra", &[("a.txt", "a\n")]);
    let good = || ssh_auth(server.client_key(), Some(server.known_hosts()), false);

    let checkout = Checkout::fetch(&url, "main", good(), None, CancellationToken::new()).unwrap();
    assert_eq!(
        checkout.tip().to_string(),
        server.rev_parse("infra", "refs/heads/main").unwrap()
    );

    let pushed = commit_and_push(
        &url,
        "main",
        good(),
        None,
        &Identity {
            name: "t".into(),
            email: "t@example.invalid".into(),
        },
        "over ssh",
        Instant::now() + Duration::from_secs(30),
        CancellationToken::new(),
        |_| {
            Ok(vec![Change {
                path: "b.txt".into(),
                content: Some(b"b\n".to_vec()),
            }])
        },
    )
    .unwrap()
    .0;
    assert_eq!(
        server.rev_parse("infra", "refs/heads/main"),
        Some(pushed.to_string())
    );

    // A host key that is not the one in known_hosts: refused, a precondition.
    let spoofed = ssh_auth(server.client_key(), Some(server.wrong_known_hosts()), false);
    let err = Checkout::fetch(&url, "main", spoofed, None, CancellationToken::new())
        .err()
        .unwrap();
    assert_eq!(err.exit_code(), 3, "{err}");
    // No known_hosts at all: refused unless explicitly ignored.
    let err = Checkout::fetch(
        &url,
        "main",
        ssh_auth(server.client_key(), None, false),
        None,
        CancellationToken::new(),
    )
    .err()
    .unwrap();
    assert_eq!(err.exit_code(), 3, "{err}");
    assert!(Checkout::fetch(
        &url,
        "main",
        ssh_auth(server.client_key(), None, true),
        None,
        CancellationToken::new()
    )
    .is_ok());
    // A key the server does not accept: a precondition, with the key never printed.
    let other = server.other_key();
    let err = Checkout::fetch(
        &url,
        "main",
        ssh_auth(other.clone(), Some(server.known_hosts()), false),
        None,
        CancellationToken::new(),
    )
    .err()
    .unwrap();
    assert_eq!(err.exit_code(), 3, "{err}");
    assert!(!err.to_string().contains("PRIVATE KEY"));
}
