//! report-status run for real against the GitHub double, whose every request and answer is
//! validated against GitHub's published OpenAPI description (testkit).

use std::path::Path;
use std::process::Command;

use testkit::{Fault, GitHubDouble, StepRun, TOKEN_USER};

const TOKEN: &str = "gh-report-token-9";
const PR: u64 = 42;

fn github() -> GitHubDouble {
    let github = GitHubDouble::start("acme", "platform", TOKEN);
    github.add_pull(PR, "open", "feature/login");
    github
}

fn step(github: &GitHubDouble, outputs: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_report-status"));
    cmd.env_clear()
        .env("SBX_OUTPUTS_DIR", outputs)
        .env("T_GH", TOKEN)
        .args([
            "--github-repo",
            "acme/platform",
            "--github-token",
            "env:T_GH",
        ])
        .args(["--github-api-url", &github.url(), "--pr-number", "42"])
        .args(args);
    cmd
}

fn run(github: &GitHubDouble, args: &[&str]) -> StepRun {
    let dir = tempfile::tempdir().unwrap();
    let out = step(github, dir.path(), args).output().unwrap();
    StepRun::read(&out, dir.path(), report_status::OUTPUTS).hiding(&[TOKEN])
}

const READY: &[&str] = &[
    "--state",
    "ready",
    "--environment",
    "sbx-pr-42",
    "--environment-url",
    "https://sbx-pr-42.sandbox.acme.dev",
    "--argo-ui-url",
    "https://argo.acme.dev",
    "--workflow",
    "argo/create-sandbox-x7k2p",
    "--app-url",
    "https://argocd.acme.dev/applications/argocd/sbx-pr-42",
];

fn cards(github: &GitHubDouble) -> Vec<testkit::Comment> {
    github
        .comments(PR)
        .into_iter()
        .filter(|c| c.body.contains("sandbox-steps:card"))
        .collect()
}

#[test]
fn the_card_goes_through_the_lifecycle_in_one_comment() {
    let github = github();
    let head = github.pull(PR).unwrap().head_sha;
    let creating = run(
        &github,
        &["--state", "creating", "--environment", "sbx-pr-42"],
    )
    .ok();
    assert_eq!(creating.output("changed"), "true");
    let url = creating.output("comment-url").to_owned();
    assert!(
        url.starts_with("https://github.com/acme/platform/pull/42#issuecomment-"),
        "{url}"
    );

    let ready = run(&github, READY).ok();
    assert_eq!(
        ready.output("comment-url"),
        url,
        "edited, not a second comment"
    );
    let card = &cards(&github)[0];
    assert_eq!(card.author, TOKEN_USER);
    for shown in [
        ":white_check_mark: Sandbox `sbx-pr-42`: ready",
        "[https://sbx-pr-42.sandbox.acme.dev/](<https://sbx-pr-42.sandbox.acme.dev/>)",
        "[Argo Workflows run](<https://argo.acme.dev/workflows/argo/create-sandbox-x7k2p>)",
        "[Argo CD](<https://argocd.acme.dev/applications/argocd/sbx-pr-42>)",
        "` feature/login `",
        &format!("`{}`", &head[..12]),
    ] {
        assert!(card.body.contains(shown), "{shown:?} not in\n{}", card.body);
    }
    // The deployment: one, transient, not production, at the head, its latest status success
    // with the environment's URL.
    let deployments = github.deployments();
    assert_eq!(deployments.len(), 1);
    let deployment = &deployments[0];
    assert_eq!(
        (deployment.sha.as_str(), deployment.environment.as_str()),
        (head.as_str(), "sbx-pr-42")
    );
    assert!(deployment.transient && !deployment.production);
    let states: Vec<&str> = deployment
        .statuses
        .iter()
        .map(|s| s["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["in_progress", "success"]);
    assert_eq!(
        deployment.statuses[1]["environment_url"],
        "https://sbx-pr-42.sandbox.acme.dev/"
    );
    let statuses = github.commit_statuses(&head);
    assert_eq!(statuses.last().unwrap()["state"], "success");
    assert_eq!(statuses.last().unwrap()["context"], "sandbox-steps/sandbox");

    // A re-run writes nothing.
    let requests = github.requests().len();
    let again = run(&github, READY).ok();
    assert_eq!(again.output("changed"), "false");
    let writes = github.requests()[requests..]
        .iter()
        .filter(|r| r.method != "GET")
        .count();
    assert_eq!(writes, 0, "a re-run wrote");

    // Deleting, then deleted: the deployment inactive; the exit handler's form (no
    // --environment) finds the environment on the card.
    run(&github, &["--state", "deleting"]).ok();
    let deleted = run(&github, &["--state", "deleted"]).ok();
    assert_eq!(deleted.output("deployment-id"), deployment.id.to_string());
    assert_eq!(
        github.deployments()[0].statuses.last().unwrap()["state"],
        "inactive"
    );
    let cards = cards(&github);
    assert_eq!(cards.len(), 1);
    assert!(cards[0]
        .body
        .contains(":wastebasket: Sandbox `sbx-pr-42`: deleted"));
    assert!(
        !cards[0].body.contains("](<https://sbx-pr-42"),
        "a deleted sandbox's URL is no link:\n{}",
        cards[0].body
    );
}

#[test]
fn a_failure_shows_the_failed_step_and_its_message_as_text() {
    let github = github();
    run(
        &github,
        &["--state", "creating", "--environment", "sbx-pr-42"],
    )
    .ok();
    // Argo's workflow.failures, with a message trying to break out of its block and mention.
    let failures = r#"[{"displayName":"restore-db","message":"``` </details> @acme/everyone [x](javascript:alert(1)) | cell","templateName":"restore-db","phase":"Failed"}]"#;
    run(&github, &["--state", "failed", "--failures", failures]).ok();
    let card = &cards(&github)[0].body;
    assert!(card.contains(":x: Sandbox `sbx-pr-42`: failed"), "{card}");
    assert!(card.contains("**Failed step** ` restore-db `"), "{card}");
    assert!(
        card.contains(
            "````text\n``` </details> @acme/everyone [x](javascript:alert(1)) | cell\n````"
        ),
        "{card}"
    );
    let deployment = &github.deployments()[0];
    assert_eq!(deployment.statuses.last().unwrap()["state"], "failure");
    let head = github.pull(PR).unwrap().head_sha;
    assert_eq!(
        github.commit_statuses(&head).last().unwrap()["state"],
        "failure"
    );
}

#[test]
fn hostile_branch_names_render_as_text() {
    let github = GitHubDouble::start("acme", "platform", TOKEN);
    github.add_pull(PR, "open", "x`|@team<script>**b**\u{202e}");
    run(
        &github,
        &["--state", "creating", "--environment", "sbx-pr-42"],
    )
    .ok();
    let card = &cards(&github)[0].body;
    assert!(
        card.contains("`` x`\\|@team<script>**b**\\u{202e} ``") && !card.contains('\u{202e}'),
        "{card}"
    );
}

#[test]
fn two_runs_at_once_leave_one_card() {
    for round in 0..5 {
        let github = github();
        let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
        let children: Vec<_> = dirs
            .iter()
            .map(|dir| step(&github, dir.path(), READY).spawn().unwrap())
            .collect();
        for child in children {
            let out = child.wait_with_output().unwrap();
            assert!(out.status.success(), "round {round}");
        }
        let cards = cards(&github);
        assert_eq!(cards.len(), 1, "round {round}: {cards:#?}");
        assert!(cards[0].body.contains(": ready"));
        let created = github
            .requests()
            .iter()
            .filter(|r| r.method == "POST" && r.path.ends_with("/comments"))
            .count();
        eprintln!("round {round}: {created} cards created, one kept");
    }
}

#[test]
fn an_older_report_never_overwrites_a_newer_one() {
    let github = github();
    run(&github, READY).ok();
    // A card written "in the future" (a newer report, by clock) stays as it is.
    let card = &cards(&github)[0];
    let future = card
        .body
        .replacen(" at=", " at=2999-01-01T00:00:00Z old=", 1);
    let later = future.replace(": ready", ": updating");
    github.update_comment_body(card.id, &later);
    let stale = run(&github, &["--state", "failed", "--failures", "late"]).ok();
    assert_eq!(stale.output("changed"), "false");
    assert!(
        stale.text.contains("holds a newer report"),
        "{}",
        stale.text
    );
    assert!(cards(&github)[0].body.contains(": updating"));
}

#[test]
fn someone_elses_comment_with_the_marker_is_never_touched() {
    let github = github();
    let forged = "<!-- sandbox-steps:card pr=42 environment=sbx-pr-42 at=2999-01-01T00:00:00Z -->\n### fake: ready";
    github.add_comment(PR, "mallory", forged);
    run(&github, READY).ok();
    let comments = github.comments(PR);
    assert_eq!(comments.len(), 2);
    assert_eq!(comments[0].body, forged);
    assert_eq!(comments[1].author, TOKEN_USER);
    assert!(comments[1].body.contains(": ready"));
}

#[test]
fn many_comments_are_paged_through() {
    let github = github();
    for i in 0..130 {
        github.add_comment(PR, "reviewer", &format!("comment {i}"));
    }
    run(&github, READY).ok();
    run(&github, READY).ok();
    assert_eq!(cards(&github).len(), 1);
    assert!(github
        .requests()
        .iter()
        .any(|r| r.path.ends_with("/comments") && r.query.contains("page=2")));
}

#[test]
fn dry_run_writes_nothing() {
    let github = github();
    let run = run(&github, &[READY, &["--dry-run"]].concat()).ok();
    assert!(
        run.text.contains("dry run: would create the card"),
        "{}",
        run.text
    );
    assert!(github.requests().iter().all(|r| r.method == "GET"));
    assert!(github.comments(PR).is_empty());
}

#[test]
fn bad_flags_are_exit_2_and_change_nothing() {
    let github = github();
    for bad in [
        &["--state", "ready", "--environment", "../x"][..],
        &["--state", "ready", "--environment", ";rm -rf /"],
        &["--state", "ready", "--environment", &"a".repeat(200)],
        &[
            "--state",
            "ready",
            "--environment-url",
            "javascript:alert(1)",
        ],
        &[
            "--state",
            "ready",
            "--log-url",
            "https://user:pw@argo.acme.dev/",
        ],
        &[
            "--state",
            "ready",
            "--argo-ui-url",
            "https://argo.acme.dev",
            "--workflow",
            "../x",
        ],
        &["--state", "ready", "--deployed-commit", "main"],
        &["--state", "ready", "--expires-at", "tomorrow"],
        &["--state", "tidy"],
        &["--state", "queued", "--queue-position", "3"],
        &[
            "--state",
            "queued",
            "--queue-position",
            "3",
            "--queue-length",
            "2",
        ],
        &[
            "--state",
            "queued",
            "--queue-position",
            "0",
            "--queue-length",
            "2",
        ],
    ] {
        let run = run(&github, bad);
        assert_eq!(run.code, Some(2), "{bad:?}: {}", run.text);
    }
    assert!(github.requests().is_empty());
}

#[test]
fn a_missing_pull_request_and_a_wrong_token_are_exit_3() {
    let without_pull = GitHubDouble::start("acme", "platform", TOKEN);
    let missing = run(&without_pull, READY);
    assert_eq!(missing.code, Some(3), "{}", missing.text);
    assert!(
        missing.text.contains("pull request #42 not found"),
        "{}",
        missing.text
    );
    assert!(without_pull.comments(PR).is_empty());

    let github = github();
    let dir = tempfile::tempdir().unwrap();

    let out = step(&github, dir.path(), READY)
        .env("T_GH", "wrong-token-123")
        .output()
        .unwrap();
    let refused =
        StepRun::read(&out, dir.path(), report_status::OUTPUTS).hiding(&["wrong-token-123"]);
    assert_eq!(refused.code, Some(3), "{}", refused.text);
    assert!(refused.text.contains("401"), "{}", refused.text);
}

#[test]
fn server_errors_and_rate_limits_are_waited_out() {
    let github = github();
    github.inject(&[
        Fault::Status(502),
        Fault::SecondaryRateLimit {
            retry_after_seconds: 1,
        },
        Fault::Status(500),
    ]);
    run(&github, READY).ok();
    assert_eq!(cards(&github).len(), 1);
    // Past the deadline: exit 4.
    let github = self::github();
    github.inject(&[Fault::PrimaryRateLimit {
        reset_in_seconds: 3600,
    }]);
    let limited = run(&github, &[READY, &["--timeout", "20s"]].concat());
    assert_eq!(limited.code, Some(4), "{}", limited.text);
}

#[test]
fn as_a_github_app() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("app.pem");
    let public = dir.path().join("app.pub.pem");
    let openssl = |args: &[&str]| {
        let status = Command::new("openssl").args(args).status().unwrap();
        assert!(status.success(), "openssl {args:?}");
    };
    openssl(&["genrsa", "-out", key.to_str().unwrap(), "2048"]);
    openssl(&[
        "rsa",
        "-in",
        key.to_str().unwrap(),
        "-pubout",
        "-out",
        public.to_str().unwrap(),
    ]);
    let github = github();
    github.install_app(
        1234,
        "acme-sandboxes",
        77,
        &std::fs::read_to_string(&public).unwrap(),
    );
    let outputs = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_report-status"))
        .env_clear()
        .env("SBX_OUTPUTS_DIR", outputs.path())
        .args(["--github-repo", "acme/platform", "--github-app-id", "1234"])
        .args(["--github-app-key", &format!("file:{}", key.display())])
        .args(["--github-api-url", &github.url(), "--pr-number", "42"])
        .args(READY)
        .output()
        .unwrap();
    let run = StepRun::read(&out, outputs.path(), report_status::OUTPUTS).ok();
    assert!(run
        .text
        .contains("signed in as GitHub App 1234 (acme-sandboxes), installation 77"));
    let card = &cards(&github)[0];
    assert!(card.body.contains(": ready"));
    // The installation token was minted once; no request used the JWT past the App's endpoints.
    let minted = github
        .requests()
        .iter()
        .filter(|r| r.path == "/app/installations/77/access_tokens")
        .count();
    assert_eq!(minted, 1);
    let key_text = std::fs::read_to_string(&key).unwrap();
    let key_line = key_text.lines().nth(1).unwrap();
    assert!(!run.text.contains(key_line), "the key was printed");

    // A key that is not the App's: exit 3.
    let other = dir.path().join("other.pem");
    openssl(&["genrsa", "-out", other.to_str().unwrap(), "2048"]);
    let out = Command::new(env!("CARGO_BIN_EXE_report-status"))
        .env_clear()
        .env("SBX_OUTPUTS_DIR", outputs.path())
        .args(["--github-repo", "acme/platform", "--github-app-id", "1234"])
        .args(["--github-app-key", &format!("file:{}", other.display())])
        .args(["--github-api-url", &github.url(), "--pr-number", "42"])
        .args(READY)
        .output()
        .unwrap();
    let refused = StepRun::read(&out, outputs.path(), report_status::OUTPUTS);
    assert_eq!(refused.code, Some(3), "{}", refused.text);
}

#[test]
fn a_run_for_an_older_push_is_superseded_and_writes_nothing() {
    let github = github();
    let head = github.pull(PR).unwrap().head_sha;
    run(&github, READY).ok();
    // A newer push moved the head: the update of the older commit says so and writes nothing.
    let older = head.clone();
    github.set_pull_head(PR, &"b".repeat(40));
    let requests = github.requests().len();
    let superseded = run(
        &github,
        &[
            "--state",
            "updating",
            "--environment",
            "sbx-pr-42",
            "--expect-head",
            &older,
        ],
    )
    .ok();
    assert_eq!(superseded.output("superseded"), "true");
    assert_eq!(superseded.output("head"), "b".repeat(40));
    assert_eq!(superseded.output("changed"), "false");
    assert!(github.requests()[requests..]
        .iter()
        .all(|r| r.method == "GET"));
    // The current head's run goes on.
    let current = run(
        &github,
        &[
            "--state",
            "updating",
            "--environment",
            "sbx-pr-42",
            "--expect-head",
            &"b".repeat(40),
        ],
    )
    .ok();
    assert_eq!(current.output("superseded"), "false");
    assert!(cards(&github)[0].body.contains(": updating"));
}

#[test]
fn a_push_gets_a_deployment_of_its_own() {
    let github = github();
    run(&github, READY).ok();
    let pushed = "d".repeat(40);
    github.set_pull_head(PR, &pushed);
    let env = [
        "--environment",
        "sbx-pr-42",
        "--expect-head",
        pushed.as_str(),
    ];
    run(&github, &[&["--state", "updating"][..], &env].concat()).ok();
    run(
        &github,
        &[
            &["--state", "ready", "--deployed-commit", pushed.as_str()][..],
            &env,
        ]
        .concat(),
    )
    .ok();
    let deployments = github.deployments();
    let shas: Vec<&str> = deployments.iter().map(|d| d.sha.as_str()).collect();
    assert_eq!(shas.len(), 2, "{shas:?}");
    assert_eq!(shas[1], pushed);
    assert_eq!(deployments[1].statuses.last().unwrap()["state"], "success");
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// How the card writes a time: `2026-12-01 10:00:00`.
fn shown_time(secs: u64) -> String {
    report_status::shown_time(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
}

const HOUR: u64 = 3600;

#[test]
fn the_card_shows_the_expiry_and_extend_by_a_writer_moves_it() {
    let github = GitHubDouble::start("acme", "platform", TOKEN);
    let t = now_secs();
    // Pushed and labelled 60 h ago; a stranger's comment since moves GitHub's updated_at, not
    // the sandbox's clock.
    github.add_pull_with(
        PR,
        "open",
        "feature/login",
        &["create-sandbox"],
        t - 60 * HOUR,
    );
    github.add_comment_at(PR, "stranger", "any news?", t - HOUR);
    let ready = [READY, &["--ttl", "72h"]].concat();
    run(&github, &ready).ok();
    let card = cards(&github)[0].body.clone();
    let expiry = format!(
        "| Expires | {} UTC, unless a push or `/extend` (by a writer)",
        shown_time(t + 12 * HOUR)
    );
    assert!(card.contains(&expiry), "{expiry:?} not in\n{card}");

    // The sweep's warning knows only the environment and the time: the card keeps its links.
    let at = humantime::format_rfc3339_seconds(
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(t + 12 * HOUR),
    )
    .to_string();
    let expiring = [
        "--state",
        "expiring",
        "--environment",
        "sbx-pr-42",
        "--expires-at",
        &at,
    ];
    run(&github, &expiring).ok();
    let card = cards(&github)[0].body.clone();
    for kept in [
        ":hourglass: Sandbox `sbx-pr-42`: expiring",
        "[Argo CD](<https://argocd.acme.dev/applications/argocd/sbx-pr-42>)",
        "[https://sbx-pr-42.sandbox.acme.dev/](<https://sbx-pr-42.sandbox.acme.dev/>)",
    ] {
        assert!(card.contains(kept), "{kept:?} not in\n{card}");
    }
    let deployment_statuses = github.deployments()[0].statuses.len();
    let head = github.pull(PR).unwrap().head_sha;
    let commit_statuses = github.commit_statuses(&head).len();

    // /extend by someone without write access: 😕, exit 3, the card as it was.
    github.set_permission("reader", "read");
    for login in ["stranger", "reader", "ci[bot]"] {
        let id = github.add_comment(PR, login, "/extend");
        let refused = run(
            &github,
            &["--extend-comment", &id.to_string(), "--ttl", "72h"],
        );
        assert_eq!(refused.code, Some(3), "{login}: {}", refused.text);
        assert!(
            refused.text.contains("needs write access"),
            "{}",
            refused.text
        );
        assert_eq!(github.reactions(id), ["confused"], "{login}");
        assert_eq!(cards(&github)[0].body, card, "{login}");
    }

    // By a writer: 👍, the card ready again with the expiry counted from the comment, its links
    // kept; nothing else written.
    github.set_permission("alice", "write");
    let when = now_secs();
    let id = github.add_comment_at(PR, "alice", "/extend\nstill reviewing", when);
    let extend = ["--extend-comment", &id.to_string(), "--ttl", "72h"];
    let extended = run(&github, &extend).ok();
    assert_eq!(extended.output("changed"), "true");
    assert_eq!(github.reactions(id), ["+1"]);
    let card = cards(&github)[0].body.clone();
    let expiry = format!("| Expires | {} UTC", shown_time(when + 72 * HOUR));
    for shown in [
        ":white_check_mark: Sandbox `sbx-pr-42`: ready",
        expiry.as_str(),
        "[Argo CD](<https://argocd.acme.dev/applications/argocd/sbx-pr-42>)",
        "[Argo Workflows run](<https://argo.acme.dev/workflows/argo/create-sandbox-x7k2p>)",
    ] {
        assert!(card.contains(shown), "{shown:?} not in\n{card}");
    }
    assert_eq!(github.deployments()[0].statuses.len(), deployment_statuses);
    assert_eq!(github.commit_statuses(&head).len(), commit_statuses);
    // Delivered twice (webhooks are retried): nothing more.
    let again = run(&github, &extend).ok();
    assert_eq!(again.output("changed"), "false");
    assert_eq!(github.reactions(id), ["+1"]);

    // Not an /extend, or another pull request's comment: exit 3, no reaction.
    let chat = github.add_comment(PR, "alice", "please /extend");
    github.add_pull(7, "open", "feature/other");
    let elsewhere = github.add_comment(7, "alice", "/extend");
    for (id, says) in [
        (chat, "not an /extend or /wake command"),
        (elsewhere, "not on pull request #42"),
    ] {
        let run = run(
            &github,
            &["--extend-comment", &id.to_string(), "--ttl", "72h"],
        );
        assert_eq!(run.code, Some(3), "{}", run.text);
        assert!(run.text.contains(says), "{}", run.text);
        assert!(github.reactions(id).is_empty());
    }
    // --extend-comment needs --ttl (exit 2 before any request).
    let before = github.requests().len();
    let run_without_ttl = run(&github, &["--extend-comment", &id.to_string()]);
    assert_eq!(run_without_ttl.code, Some(2), "{}", run_without_ttl.text);
    assert_eq!(github.requests().len(), before);

    // Deleted: nothing to extend.
    run(&github, &["--state", "deleted"]).ok();
    let late = github.add_comment(PR, "alice", "/extend");
    let refused = run(
        &github,
        &["--extend-comment", &late.to_string(), "--ttl", "72h"],
    );
    assert_eq!(refused.code, Some(3), "{}", refused.text);
    assert!(
        refused
            .text
            .contains("no sandbox to extend (its card says deleted)"),
        "{}",
        refused.text
    );
    assert_eq!(github.reactions(late), ["confused"]);
}

#[test]
fn a_kept_sandbox_never_expires_on_the_card() {
    let github = GitHubDouble::start("acme", "platform", TOKEN);
    github.add_pull_with(
        PR,
        "open",
        "feature/login",
        &["create-sandbox", "sandbox-keep"],
        now_secs() - 500 * HOUR,
    );
    run(&github, &[READY, &["--ttl", "72h"]].concat()).ok();
    let card = cards(&github)[0].body.clone();
    assert!(
        card.contains("| Expires | never: the pull request has the `sandbox-keep` label |"),
        "{card}"
    );
    // Kept: the timeline is not read.
    assert!(github
        .requests()
        .iter()
        .all(|r| !r.path.ends_with("/timeline")));
}

#[test]
fn a_queued_sandbox_shows_its_place() {
    let github = github();
    let queued = [
        "--state",
        "queued",
        "--environment",
        "sbx-pr-42",
        "--queue-position",
        "3",
        "--queue-length",
        "5",
    ];
    run(&github, &queued).ok();
    let card = cards(&github)[0].body.clone();
    for shown in [
        ":hourglass_flowing_sand: Sandbox `sbx-pr-42`: queued",
        "| Queue | position 3 of 5: the cap on live sandboxes is reached",
    ] {
        assert!(card.contains(shown), "{shown:?} not in\n{card}");
    }
    // The queue moves: the card follows; then creating: no queue row.
    let moved = [&queued[..5], &["3", "--queue-length", "4"]].concat();
    let moved: Vec<&str> = moved
        .iter()
        .enumerate()
        .map(|(i, a)| if i == 5 { "1" } else { a })
        .collect();
    run(&github, &moved).ok();
    assert!(cards(&github)[0].body.contains("| Queue | position 1 of 4"));
    run(
        &github,
        &["--state", "creating", "--environment", "sbx-pr-42"],
    )
    .ok();
    assert!(!cards(&github)[0].body.contains("| Queue |"));
    let deployment = &github.deployments()[0];
    let states: Vec<&str> = deployment
        .statuses
        .iter()
        .map(|s| s["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["queued", "in_progress"]);
}

/// Sleeping: the card says since when, why and how to wake it; the sweep's warning keeps that;
/// a writer's `/extend` or `/wake` then leaves it sleeping (not ready); ready clears it.
#[test]
fn a_sleeping_sandbox_says_so_through_a_warning_and_an_extend() {
    let github = github();
    github.set_permission("maintainer", "write");
    run(&github, READY).ok();
    let sleeping = [
        "--state",
        "sleeping",
        "--environment",
        "sbx-pr-42",
        "--sleeping-since",
        "2026-12-01T20:00:00Z",
        "--sleep-reason",
        "night",
    ];
    run(&github, &sleeping).ok();
    let row = "| Sleeping | since 2026-12-01 20:00:00 UTC (the night schedule): scaled to zero, \
               its data kept; a push or `/wake` (by a writer) wakes it |";
    let card = cards(&github)[0].body.clone();
    assert!(
        card.contains(":zzz: Sandbox `sbx-pr-42`: sleeping"),
        "{card}"
    );
    assert!(card.contains(row), "{card}");
    let head = github.pull(PR).unwrap().head_sha;
    assert_eq!(
        github.commit_statuses(&head).last().unwrap()["description"],
        "sandbox sleeping"
    );
    let warning = [
        "--state",
        "expiring",
        "--environment",
        "sbx-pr-42",
        "--expires-at",
        "2026-12-04T20:00:00Z",
    ];
    run(&github, &warning).ok();
    let card = cards(&github)[0].body.clone();
    assert!(card.contains(": expiring") && card.contains(row), "{card}");
    for command in ["/extend", "/wake"] {
        let id = github.add_comment(PR, "maintainer", command);
        run(
            &github,
            &["--extend-comment", &id.to_string(), "--ttl", "72h"],
        )
        .ok();
        let card = cards(&github)[0].body.clone();
        assert!(
            card.contains(": sleeping") && card.contains(row),
            "{command}: {card}"
        );
        assert_eq!(github.reactions(id), ["+1"]);
    }
    run(&github, READY).ok();
    let card = cards(&github)[0].body.clone();
    assert!(
        card.contains(": ready") && !card.contains("| Sleeping |"),
        "{card}"
    );
    // --sleeping-since goes with --state sleeping, a known reason, a time.
    for bad in [
        &[
            "--state",
            "ready",
            "--sleeping-since",
            "2026-12-01T20:00:00Z",
        ][..],
        &["--state", "sleeping", "--sleeping-since", "tonight"][..],
        &[
            "--state",
            "sleeping",
            "--sleeping-since",
            "2026-12-01T20:00:00Z",
            "--sleep-reason",
            "bored",
        ][..],
    ] {
        let before = github.requests().len();
        let args = [&["--environment", "sbx-pr-42"][..], bad].concat();
        let refused = run(&github, &args);
        assert_eq!(refused.code, Some(2), "{bad:?}: {}", refused.text);
        assert_eq!(github.requests().len(), before, "{bad:?}: no request");
    }
}
