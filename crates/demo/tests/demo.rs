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
