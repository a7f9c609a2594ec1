use super::*;
use proptest::prelude::*;

#[test]
fn short_hash_is_the_sha256_prefix() {
    // printf %s 'feature/JIRA-123_Ünïcode' | sha256sum | cut -c1-8
    assert_eq!(short_hash(""), "e3b0c442");
    assert_eq!(short_hash("abc"), "ba7816bf");
}

#[test]
fn slugs_of_typical_head_refs() {
    assert_eq!(slug("sbx-main", 63), "sbx-main");
    assert_eq!(slug("feature-login", 63), "feature-login");
    let h = |s: &str| short_hash(s);
    assert_eq!(
        slug("feature/login", 63),
        format!("feature-login-{}", h("feature/login"))
    );
    assert_eq!(
        slug("feature/JIRA-123_Ünïcode", 63),
        format!("feature-jira-123-unicode-{}", h("feature/JIRA-123_Ünïcode"))
    );
    assert_eq!(slug("🦄🦄", 63), h("🦄🦄"));
    assert_eq!(slug("фича", 63), h("фича"));
    assert_eq!(slug("../x", 63), format!("x-{}", h("../x")));
    assert_eq!(slug(";rm -rf /", 63), format!("rm-rf-{}", h(";rm -rf /")));
    assert_eq!(slug("$(id)", 63), format!("id-{}", h("$(id)")));
    // A name that looks like it already carries a hash gets its own.
    assert_eq!(
        slug("x-0123abcd", 63),
        format!("x-0123abcd-{}", h("x-0123abcd"))
    );
}

#[test]
fn long_names_are_cut_and_hashed() {
    let long = "a".repeat(200);
    let s = slug(&long, 40);
    assert_eq!(s.len(), 40);
    assert_eq!(s, format!("{}-{}", "a".repeat(31), short_hash(&long)));
    let other = format!("{}b", "a".repeat(199));
    assert_ne!(slug(&other, 40), s);
}

#[test]
fn dns_labels() {
    for ok in ["a", "sbx-pr-42", "0abc", &"a".repeat(63)] {
        assert_eq!(check_dns_label(ok), Ok(()), "{ok}");
    }
    for bad in ["", "-a", "a-", "A", "a_b", "a.b", "é", &"a".repeat(64)] {
        assert!(check_dns_label(bad).is_err(), "{bad}");
    }
}

#[test]
fn dns_subdomains() {
    for ok in ["sbx-pr-42-data", "a.b-c", "x"] {
        assert_eq!(check_dns_subdomain(ok), Ok(()), "{ok}");
    }
    for bad in ["", "A", "a..b", "-a", "a/b", "a_b", &"a".repeat(254)] {
        assert!(check_dns_subdomain(bad).is_err(), "{bad}");
    }
}

#[test]
fn hostnames() {
    assert_eq!(check_hostname("sbx-pr-42.sandbox.acme.dev"), Ok(()));
    for bad in [
        "a..b",
        "a.",
        ".a",
        "a_b.dev",
        &format!("{}.dev", vec!["a".repeat(63); 4].join(".")),
    ] {
        assert!(check_hostname(bad).is_err(), "{bad}");
    }
}

#[test]
fn pg_identifiers() {
    for ok in ["sbx_pr_42", "_x", &"a".repeat(63)] {
        assert_eq!(check_pg_identifier(ok), Ok(()), "{ok}");
    }
    for bad in ["", "1a", "a-b", "A", "a b", "ü", &"a".repeat(64)] {
        assert!(check_pg_identifier(bad).is_err(), "{bad}");
    }
}

#[test]
fn bucket_names() {
    for ok in ["acme-sbx-pr-42", "abc", "a_b-c", "a.b.c"] {
        assert_eq!(check_bucket_name(ok), Ok(()), "{ok}");
    }
    for bad in [
        "ab",
        "-abc",
        "abc-",
        "Abc",
        "goog-x",
        "my-google-bucket",
        "my-g00gle",
        "192.168.1.1",
        "a..b",
        "a.-b",
        &"a".repeat(64),
    ] {
        assert!(check_bucket_name(bad).is_err(), "{bad}");
    }
}

#[test]
fn branch_names_follow_git_check_ref_format() {
    for ok in [
        "main",
        "feature/JIRA-123_Ünïcode",
        "a.b",
        "sbx-pr-42",
        "x/y/z",
        "🦄",
        "foo@bar",
    ] {
        assert_eq!(check_branch_name(ok), Ok(()), "{ok}");
    }
    for bad in [
        "",
        "-x",
        "@",
        "a..b",
        "a@{1}",
        "a b",
        "a~1",
        "a^",
        "a:b",
        "a?",
        "a*",
        "a[b",
        "a\\b",
        "/a",
        "a/",
        "a//b",
        "a.",
        ".a",
        "a/.b",
        "a.lock",
        "a/b.lock/c",
        "a\nb",
        "a\u{7f}",
        &"a".repeat(256),
    ] {
        assert!(check_branch_name(bad).is_err(), "{bad:?}");
        assert!(check_git_branch_name(bad).is_err(), "{bad:?}");
    }
    // git accepts these, and so does the check for branches others name; the steps refuse to
    // write them: a right-to-left override or a zero-width space makes one name look like another.
    for invisible in ["main\u{202e}", "sbx-pr-42\u{200b}", "a\u{85}b"] {
        assert_eq!(check_git_branch_name(invisible), Ok(()), "{invisible:?}");
        assert!(check_branch_name(invisible).is_err(), "{invisible:?}");
    }
}

/// The same rules, asked of the real `git check-ref-format --branch` (not for `@`, which that
/// command expands to the current branch; we refuse it as a name).
#[test]
fn branch_rules_agree_with_git() {
    let cases = [
        "main",
        "feature/JIRA-123_Ünïcode",
        "a..b",
        "a@{1}",
        "-x",
        "a.lock",
        "a/.b",
        "a b",
        "🦄",
        "a.",
        "a//b",
        "a\\b",
        "x/y",
    ];
    for case in cases {
        let git = std::process::Command::new("git")
            .args(["check-ref-format", "--branch", case])
            .output()
            .expect("git is installed");
        assert_eq!(
            check_git_branch_name(case).is_ok(),
            git.status.success(),
            "{case:?}"
        );
    }
}

#[test]
fn repo_paths() {
    for ok in [
        "apps/sandboxes/sbx-pr-42.yaml",
        "a",
        "a.b/c..d",
        ".gitignore",
        ".github/x.yaml",
    ] {
        assert_eq!(check_repo_path(ok), Ok(()), "{ok}");
    }
    for bad in [
        "",
        "/etc/passwd",
        "../x",
        "a/../../x",
        "a//b",
        "a/./b",
        "a/",
        "a\\b",
        "a\nb",
        ".git",
        ".git/config",
        "apps/.GIT/x",
    ] {
        assert!(check_repo_path(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn label_keys_and_values() {
    for ok in ["app", "sandbox-steps.io/pr-number", "a.b_c-d"] {
        assert_eq!(check_label_key(ok), Ok(()), "{ok}");
    }
    for bad in [
        "",
        "/x",
        "a/",
        "-a",
        "a b",
        "Ünï",
        "UPPER.example/x",
        &"a".repeat(64),
    ] {
        assert!(check_label_key(bad).is_err(), "{bad:?}");
    }
    assert_eq!(check_label_value(""), Ok(()));
    assert!(check_label_value("a b").is_err());
}

#[test]
fn globs() {
    assert!(glob_match("main", "main"));
    assert!(!glob_match("main", "mainline"));
    assert!(glob_match("release/*", "release/1.2"));
    assert!(glob_match("release/*", "release/a/b"));
    assert!(glob_match("*-prod", "eu-prod"));
    assert!(glob_match("v?", "v1"));
    assert!(!glob_match("v?", "v10"));
    assert!(glob_match("*", ""));
}

proptest! {
    #[test]
    fn every_slug_is_a_dns_label_and_deterministic(input in "\\PC*", max in 10usize..=63) {
        let s = slug(&input, max);
        prop_assert!(s.len() <= max);
        prop_assert_eq!(check_dns_label(&s), Ok(()));
        prop_assert_eq!(slug(&input, max), s);
    }

    #[test]
    fn distinct_inputs_give_distinct_slugs(a in "\\PC{0,300}", b in "\\PC{0,300}") {
        prop_assume!(a != b);
        prop_assert_ne!(slug(&a, 30), slug(&b, 30));
    }

    #[test]
    fn distinct_long_inputs_sharing_a_prefix_give_distinct_slugs(prefix in "[a-z/]{60}", a in "\\PC{1,20}", b in "\\PC{1,20}") {
        prop_assume!(a != b);
        prop_assert_ne!(slug(&format!("{prefix}{a}"), 40), slug(&format!("{prefix}{b}"), 40));
    }

    #[test]
    fn check_functions_never_panic(input in "\\PC*") {
        let _ = check_branch_name(&input);
        let _ = check_bucket_name(&input);
        let _ = check_hostname(&input);
        let _ = check_pg_identifier(&input);
    }
}
