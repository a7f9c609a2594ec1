//! Fuzzes the derivation with arbitrary head refs and prefixes: it must never panic, and every
//! name it derives must satisfy its grammar.
#![no_main]

use libfuzzer_sys::fuzz_target;
use validate_params::{derive_names, NameFrom, Params};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    // Split the input into a head ref and three prefixes, so the fuzzer varies all of them.
    let mut parts = text.splitn(4, '\u{0}');
    let head_ref = parts.next().unwrap_or_default();
    let env_prefix = parts.next().unwrap_or("sbx-pr-");
    let namespace_prefix = parts.next().unwrap_or_default();
    let bucket_prefix = parts.next().unwrap_or_default();
    let protected = vec!["main".to_owned(), "release/*".to_owned()];
    for name_from in [NameFrom::Pr, NameFrom::Branch] {
        let params = Params {
            pr_number: "42",
            head_ref,
            repository: "acme/platform",
            env_prefix,
            namespace_prefix,
            bucket_prefix,
            base_domain: Some("sandbox.acme.dev"),
            name_from,
            protected_branches: &protected,
        };
        if let Ok(names) = derive_names(&params) {
            assert!(naming::check_dns_label(&names.environment).is_ok());
            assert!(naming::check_dns_label(&names.namespace).is_ok());
            assert!(naming::check_dns_label(&names.head_ref_slug).is_ok());
            assert!(naming::check_pg_identifier(&names.database).is_ok());
            assert!(naming::check_bucket_name(&names.bucket).is_ok());
            assert!(naming::check_branch_name(&names.branch).is_ok());
            assert!(naming::check_hostname(&names.hostname).is_ok());
        }
    }
    let _ = naming::slug(head_ref, 63);
});
