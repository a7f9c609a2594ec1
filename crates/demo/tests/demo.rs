//! `make demo`'s run as a test: the end state of the whole lifecycle.

#[test]
fn the_whole_lifecycle_runs_locally() {
    let report = demo::run(false).unwrap();
    assert!(report.created_branch);
    assert!(
        report
            .kustomization_diff
            .contains("+namespace: apps-sbx-pr-42   # set per sandbox"),
        "{}",
        report.kustomization_diff
    );
    assert!(
        report.kustomization_diff.contains("+    newTag: 1.42.0"),
        "{}",
        report.kustomization_diff
    );
    let app = report.application.expect("the Application was committed");
    assert!(app.contains("targetRevision: sbx-pr-42"), "{app}");
    assert_eq!(
        report.namespaces_after_create,
        ["apps-sbx-pr-42", "apps-sbx-pr-43"]
    );
    assert_eq!(report.secrets_after_create, 2);
    assert_eq!(
        (report.documents_copied, report.documents_in_integration),
        (25, 25)
    );
    // The newest of three nightly backups, restored; read back as the owner restore-db created,
    // with the credentials it wrote to Vault.
    assert_eq!(
        report.database.get("backup").map(String::as_str),
        Some("gs://acme-integration-backups/nightly/shop-2026-11-22.sql.gz"),
        "{:?}",
        report.database
    );
    assert_eq!(report.database.get("tables").map(String::as_str), Some("2"));
    assert_eq!(
        report.database.get("rows").map(String::as_str),
        Some("1050")
    );
    assert_eq!(report.orders_read_as_owner, "sbx_pr_42 reads 1000 orders");
    // Masked by mask-data; run-sql's fixture added after the masking, as written.
    assert_eq!(
        report.customer_in_integration,
        "1 | customer1@example.com | Grace Hopper"
    );
    let masked: Vec<&str> = report.customer_in_sandbox.split(" | ").collect();
    assert_eq!(masked[0], "1");
    assert!(
        masked[1].starts_with("user-") && masked[1].ends_with("@example.com"),
        "{masked:?}"
    );
    assert!(!report.customer_in_sandbox.contains("Grace"), "{masked:?}");
    assert_eq!(report.fixture_customer, "51 | qa@acme.test | QA Robot");
    let after = report.after_delete;
    assert!(!after.application, "Application removed");
    assert!(
        !after.branch_of_closed_pr,
        "the closed pull request's branch is deleted"
    );
    assert!(
        after.branch_of_open_pr,
        "a branch an open pull request uses is kept"
    );
    assert!(after.namespaces.is_empty(), "{:?}", after.namespaces);
    assert_eq!(after.secrets, 0);
    // drop-db: the sandboxes' databases and their owner roles are gone.
    assert!(after.databases.is_empty(), "{:?}", after.databases);
    assert!(after.roles.is_empty(), "{:?}", after.roles);
    // The sweep: the sandbox whose closed webhook was lost and the expired one are removed; 43's
    // branch, the head of the open #99, is kept.
    let sweep = &report.sweep;
    assert_eq!(sweep.deleted, ["sbx-pr-44", "sbx-pr-45"], "{sweep:?}");
    assert!(sweep.left.is_empty(), "{sweep:?}");
    assert_eq!(sweep.summary, "4 sandboxes: 2 keep, 1 expire, 1 orphan");
    // 46, idle as long as 45, was extended by a maintainer's /extend: its card says until when.
    assert!(
        sweep.extended.starts_with("| Expires | ")
            && sweep
                .extended
                .contains("unless a push or `/extend` (by a writer)"),
        "{sweep:?}"
    );
    // Sleep and wake: #42's sleep is one commit that only zeroes and records; the card says
    // since when and how to wake it; a maintainer's /wake (👍) wakes it byte for byte.
    let capacity = &report.capacity;
    assert!(
        capacity
            .sleep_diff
            .contains("+    sandbox-steps.io/asleep-reason: \"idle\"")
            && capacity.sleep_diff.contains("+      kind: StatefulSet"),
        "{}",
        capacity.sleep_diff
    );
    assert!(
        capacity.sleeping_row.starts_with("| Sleeping | since ")
            && capacity.sleeping_row.contains("(idle)")
            && capacity.sleeping_row.contains("`/wake`"),
        "{}",
        capacity.sleeping_row
    );
    assert_eq!(capacity.wake_reactions, ["+1"]);
    assert!(capacity.woken_as_before);
    // Three requests at a cap of two: #46 waits, its card shows its place; #45's sleep frees a
    // slot and #46 takes it.
    assert_eq!(
        capacity.at_cap,
        [
            "admitted.sbx-pr-44",
            "admitted.sbx-pr-45",
            "queued.sbx-pr-46"
        ]
    );
    assert!(
        capacity.queue_row.starts_with("| Queue | position 1 of 1"),
        "{}",
        capacity.queue_row
    );
    assert_eq!(
        capacity.after_sleep,
        [
            "admitted.sbx-pr-44",
            "admitted.sbx-pr-46",
            "asleep.sbx-pr-45"
        ]
    );
    // Pull request 42's card: one comment from creating to deleted, ready with its URL.
    assert_eq!(
        report.card_states,
        ["creating", "ready", "updating", "ready", "sleeping", "ready", "deleting", "deleted"],
        "{}",
        report.card_at_end
    );
    assert_eq!(report.card_comments, 1);
    assert!(
        report.card_when_ready.contains(
            "[https://sbx-pr-42.sandbox.acme.dev/](<https://sbx-pr-42.sandbox.acme.dev/>)"
        ),
        "{}",
        report.card_when_ready
    );
    assert!(
        report.card_at_end.contains(": deleted"),
        "{}",
        report.card_at_end
    );
    // The Terraform template is named as not run, never pretended.
    assert!(
        report
            .skipped
            .iter()
            .any(|s| s.contains("hashicorp/terraform")),
        "{:?}",
        report.skipped
    );
}

/// What `make demo` prints reads well: lines fit 120 columns, no raw template expressions, objects
/// named as kubectl names them.
#[test]
fn the_demo_prints_readable_lines() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_demo"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("applied Namespace apps-sbx-pr-42"), "{text}");
    for line in text.lines() {
        assert!(
            line.chars().count() <= 120,
            "longer than 120 columns: {line}"
        );
        for raw in ["{{", "Namespace//", "when '", "!= ''"] {
            assert!(!line.contains(raw), "{raw}: {line}");
        }
    }
}
