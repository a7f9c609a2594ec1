use super::*;
use proptest::prelude::*;

fn protected() -> Vec<String> {
    vec!["main".into(), "master".into(), "release/*".into()]
}

fn params<'a>(head_ref: &'a str, protected: &'a [String]) -> Params<'a> {
    Params {
        pr_number: "42",
        head_ref,
        repository: "acme/platform",
        env_prefix: "sbx-pr-",
        namespace_prefix: "apps-",
        bucket_prefix: "acme-",
        base_domain: Some("sandbox.acme.dev"),
        name_from: NameFrom::Pr,
        protected_branches: protected,
    }
}

#[test]
fn names_from_the_pull_request_number() {
    let protected = protected();
    let names = derive_names(&params("feature/JIRA-123_Ünïcode", &protected)).unwrap();
    assert_eq!(names.environment, "sbx-pr-42");
    assert_eq!(names.namespace, "apps-sbx-pr-42");
    assert_eq!(names.branch, "sbx-pr-42");
    assert_eq!(names.database, "sbx_pr_42");
    assert_eq!(names.bucket, "acme-sbx-pr-42");
    assert_eq!(names.app_name, "sbx-pr-42");
    assert_eq!(names.hostname, "sbx-pr-42.sandbox.acme.dev");
    assert_eq!(
        names.head_ref_slug,
        format!(
            "feature-jira-123-unicode-{}",
            naming::short_hash("feature/JIRA-123_Ünïcode")
        )
    );
}

#[test]
fn names_from_the_branch_fit_every_prefix() {
    let protected = protected();
    let long = "feature/".to_owned() + &"x".repeat(200);
    let mut p = params(&long, &protected);
    p.name_from = NameFrom::Branch;
    p.namespace_prefix = "a-very-long-prefix-";
    let names = derive_names(&p).unwrap();
    assert!(names.environment.starts_with("sbx-pr-feature-xxx"));
    assert!(names.environment.ends_with(&naming::short_hash(&long)));
    assert_eq!(names.namespace.len(), 63);
    assert!(names.database.len() <= 63);
    assert!(names.bucket.len() <= 63);
}

#[test]
fn hostile_head_refs_are_refused_or_made_safe() {
    let protected = protected();
    // Not git branch names at all: refused.
    for bad in [
        "../x",
        ";rm -rf /",
        "",
        "a\nb",
        "x.lock",
        "a@{1}",
        "a..b",
        "-x",
        "a b",
        "x\u{7}",
    ] {
        let problems = derive_names(&params(bad, &protected)).unwrap_err();
        assert_eq!(problems.len(), 1, "{bad:?}: {problems:?}");
        assert_eq!(problems[0].parameter, "head-ref");
        let line = problems[0].to_string();
        assert!(!line.contains('\n') && !line.contains('\u{7}'), "{line:?}");
    }
    // Valid git names, however odd: derived from, safely.
    let long = "b".repeat(200);
    for odd in [
        "main",
        "$(id)",
        "🦄/🚀",
        "abc\u{200f}\u{202e}def",
        &long,
        "Feature/UPPER",
        "x/y.z",
    ] {
        let mut p = params(odd, &protected);
        p.name_from = NameFrom::Branch;
        let names = derive_names(&p).unwrap_or_else(|e| panic!("{odd:?}: {e:?}"));
        assert_eq!(naming::check_dns_label(&names.environment), Ok(()));
        assert_eq!(naming::check_pg_identifier(&names.database), Ok(()));
        assert_eq!(naming::check_bucket_name(&names.bucket), Ok(()));
    }
}

#[test]
fn every_problem_is_reported_at_once() {
    let protected = protected();
    let p = Params {
        pr_number: "04x",
        head_ref: "a..b",
        repository: "not a repo",
        env_prefix: "9-",
        namespace_prefix: "Apps_",
        bucket_prefix: "x".repeat(30).leak(),
        base_domain: Some("bad..domain"),
        name_from: NameFrom::Pr,
        protected_branches: &protected,
    };
    let problems = derive_names(&p).unwrap_err();
    let params: Vec<&str> = problems.iter().map(|p| p.parameter).collect();
    assert_eq!(
        params,
        [
            "pr-number",
            "head-ref",
            "repository",
            "env-prefix",
            "namespace-prefix",
            "bucket-prefix",
            "base-domain"
        ]
    );
}

#[test]
fn table_of_parameter_rules() {
    let protected = protected();
    /// (parameter, how to break it, words of the rule it then breaks)
    type Case = (&'static str, fn(&mut Params), &'static str);
    let cases: &[Case] = &[
        ("pr-number", |p| p.pr_number = "0", "leading zero"),
        ("pr-number", |p| p.pr_number = "-1", "digits"),
        ("pr-number", |p| p.pr_number = "12345678901", "digits"),
        ("pr-number", |p| p.pr_number = "４２", "digits"),
        ("repository", |p| p.repository = "acme", "owner/name"),
        ("repository", |p| p.repository = "acme/..", "owner/name"),
        ("repository", |p| p.repository = "-acme/x", "owner/name"),
        ("repository", |p| p.repository = "acme/x/y", "owner/name"),
        ("env-prefix", |p| p.env_prefix = "", "empty"),
        ("env-prefix", |p| p.env_prefix = "1x-", "letter"),
        ("env-prefix", |p| p.env_prefix = "Sbx-", "a-z"),
        ("env-prefix", |p| p.env_prefix = "sbx_", "a-z"),
        (
            "namespace-prefix",
            |p| p.namespace_prefix = "-x",
            "letter or digit",
        ),
        ("bucket-prefix", |p| p.bucket_prefix = "goog-", "goog"),
        (
            "bucket-prefix",
            |p| p.bucket_prefix = "my-google-",
            "google",
        ),
        (
            "base-domain",
            |p| p.base_domain = Some("Sandbox.dev"),
            "a-z",
        ),
        (
            "base-domain",
            |p| p.base_domain = Some("sandbox.dev."),
            "1 to 63",
        ),
        ("protected-branches", |p| p.env_prefix = "main-", "protects"),
    ];
    for (param, mutate, rule) in cases {
        let wide = vec!["main*".to_owned()];
        let mut p = params(
            "feature/x",
            if *param == "protected-branches" {
                &wide
            } else {
                &protected
            },
        );
        mutate(&mut p);
        let problems = derive_names(&p).unwrap_err();
        assert!(
            problems
                .iter()
                .any(|pr| pr.parameter == *param && pr.rule.contains(rule)),
            "{param} / {rule}: {problems:?}"
        );
    }
}

proptest! {
    #[test]
    fn derived_names_satisfy_their_grammars(head_ref in "\\PC{0,300}", pr in 1u32..1_000_000, from_branch: bool) {
        let protected = protected();
        let pr = pr.to_string();
        let mut p = params(&head_ref, &protected);
        p.pr_number = &pr;
        p.name_from = if from_branch { NameFrom::Branch } else { NameFrom::Pr };
        match derive_names(&p) {
            Ok(n) => {
                prop_assert_eq!(naming::check_dns_label(&n.environment), Ok(()));
                prop_assert_eq!(naming::check_dns_label(&n.namespace), Ok(()));
                prop_assert_eq!(naming::check_dns_label(&n.app_name), Ok(()));
                prop_assert_eq!(naming::check_dns_label(&n.head_ref_slug), Ok(()));
                prop_assert_eq!(naming::check_pg_identifier(&n.database), Ok(()));
                prop_assert_eq!(naming::check_bucket_name(&n.bucket), Ok(()));
                prop_assert_eq!(naming::check_branch_name(&n.branch), Ok(()));
                prop_assert_eq!(naming::check_hostname(&n.hostname), Ok(()));
                prop_assert_eq!(derive_names(&p).unwrap(), n);
            }
            Err(problems) => {
                // Only the head ref can be wrong here, and only when git would refuse it.
                prop_assert!(naming::check_git_branch_name(&head_ref).is_err());
                prop_assert!(problems.iter().all(|p| p.parameter == "head-ref"));
            }
        }
    }

    #[test]
    fn different_branches_give_different_environments(a in "[a-zA-Z0-9/_.-]{1,200}", b in "[a-zA-Z0-9/_.-]{1,200}") {
        prop_assume!(a != b);
        let protected = protected();
        let (mut pa, mut pb) = (params(&a, &protected), params(&b, &protected));
        pa.name_from = NameFrom::Branch;
        pb.name_from = NameFrom::Branch;
        if let (Ok(na), Ok(nb)) = (derive_names(&pa), derive_names(&pb)) {
            prop_assert_ne!(na.environment, nb.environment);
        }
    }
}
