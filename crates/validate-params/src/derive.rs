//! The pure part of the step: parameters in, names or every problem out. No I/O, so it is what
//! the property tests and the fuzz target exercise.

use std::fmt;

use naming::{
    check_branch_name, check_bucket_name, check_dns_label, check_git_branch_name, check_hostname,
    check_pg_identifier, glob_match, slug, DNS_LABEL_MAX,
};
use step_kit::escape_untrusted;

use crate::NameFrom;

/// Longest accepted prefix; keeps at least 23 characters of every name for the environment.
pub const PREFIX_MAX: usize = 20;

#[derive(Debug, Clone, Copy)]
pub struct Params<'a> {
    pub pr_number: &'a str,
    pub head_ref: &'a str,
    pub repository: &'a str,
    pub env_prefix: &'a str,
    pub namespace_prefix: &'a str,
    pub bucket_prefix: &'a str,
    pub base_domain: Option<&'a str>,
    pub name_from: NameFrom,
    pub protected_branches: &'a [String],
}

/// Every name of one sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    pub environment: String,
    pub namespace: String,
    pub branch: String,
    pub database: String,
    pub bucket: String,
    pub app_name: String,
    pub hostname: String,
    pub head_ref_slug: String,
}

impl Names {
    /// (output name, value), in the order the step's docs list them.
    pub fn as_outputs(&self) -> [(&'static str, &str); 8] {
        [
            ("environment", &self.environment),
            ("namespace", &self.namespace),
            ("branch", &self.branch),
            ("database", &self.database),
            ("bucket", &self.bucket),
            ("app-name", &self.app_name),
            ("hostname", &self.hostname),
            ("head-ref-slug", &self.head_ref_slug),
        ]
    }
}

/// One broken rule: which parameter, its value (escaped when shown), and the rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub parameter: &'static str,
    pub value: String,
    pub rule: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "--{} {}: {}",
            self.parameter,
            escape_untrusted(&self.value),
            self.rule
        )
    }
}

#[derive(Default)]
struct Problems(Vec<Problem>);

impl Problems {
    fn check(&mut self, parameter: &'static str, value: &str, result: Result<(), String>) {
        if let Err(rule) = result {
            self.0.push(Problem {
                parameter,
                value: value.to_owned(),
                rule,
            });
        }
    }
}

fn check_pr_number(s: &str) -> Result<(), String> {
    let digits = !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits || s.starts_with('0') || s.len() > 10 {
        return Err("must be a pull request number: 1 to 10 digits, no leading zero".into());
    }
    Ok(())
}

/// `owner/name` as GitHub allows them.
fn check_repository(s: &str) -> Result<(), String> {
    let rule = "must be owner/name (owner: a-z A-Z 0-9 - up to 39, no - at the ends; \
                name: a-z A-Z 0-9 . _ - up to 100, not . or ..)";
    let Some((owner, name)) = s.split_once('/') else {
        return Err(rule.into());
    };
    let owner_ok = (1..=39).contains(&owner.len())
        && owner
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !owner.starts_with('-')
        && !owner.ends_with('-');
    let name_ok = (1..=100).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        && name != "."
        && name != "..";
    if owner_ok && name_ok {
        Ok(())
    } else {
        Err(rule.into())
    }
}

/// A prefix of DNS labels and bucket names: a-z, 0-9, - only, at most [`PREFIX_MAX`].
fn check_prefix(s: &str, must_start_with_letter: bool) -> Result<(), String> {
    if s.len() > PREFIX_MAX {
        return Err(format!(
            "must be at most {PREFIX_MAX} characters, has {}",
            s.chars().count()
        ));
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err("may hold only a-z, 0-9 and -".into());
    }
    match s.bytes().next() {
        None if must_start_with_letter => Err("must not be empty".into()),
        Some(b) if must_start_with_letter && !b.is_ascii_lowercase() => {
            Err("must start with a lowercase letter (it starts the database name too)".into())
        }
        Some(b'-') => Err("must start with a letter or digit".into()),
        _ => Ok(()),
    }
}

/// Checks every parameter, then derives the names; all problems are returned together.
pub fn derive_names(p: &Params) -> Result<Names, Vec<Problem>> {
    let mut problems = Problems::default();
    problems.check("pr-number", p.pr_number, check_pr_number(p.pr_number));
    problems.check("head-ref", p.head_ref, check_git_branch_name(p.head_ref));
    problems.check("repository", p.repository, check_repository(p.repository));
    problems.check("env-prefix", p.env_prefix, check_prefix(p.env_prefix, true));
    problems.check(
        "namespace-prefix",
        p.namespace_prefix,
        check_prefix(p.namespace_prefix, false),
    );
    problems.check(
        "bucket-prefix",
        p.bucket_prefix,
        check_prefix(p.bucket_prefix, false),
    );
    if let Some(domain) = p.base_domain {
        problems.check("base-domain", domain, check_hostname(domain));
    }
    for pattern in p.protected_branches {
        if pattern.trim().is_empty() {
            problems.check(
                "protected-branches",
                pattern,
                Err("must not hold an empty pattern".into()),
            );
        }
    }
    if !problems.0.is_empty() {
        return Err(problems.0);
    }

    // The environment is the stem of every other name: leave room for the longest prefix.
    let budget = DNS_LABEL_MAX - p.namespace_prefix.len().max(p.bucket_prefix.len());
    let environment = match p.name_from {
        NameFrom::Pr => format!("{}{}", p.env_prefix, p.pr_number),
        NameFrom::Branch => format!(
            "{}{}",
            p.env_prefix,
            slug(p.head_ref, budget - p.env_prefix.len())
        ),
    };
    let names = Names {
        namespace: format!("{}{environment}", p.namespace_prefix),
        branch: environment.clone(),
        database: environment.replace('-', "_"),
        bucket: format!("{}{environment}", p.bucket_prefix),
        app_name: environment.clone(),
        hostname: match p.base_domain {
            Some(domain) => format!("{environment}.{domain}"),
            None => environment.clone(),
        },
        head_ref_slug: slug(p.head_ref, DNS_LABEL_MAX),
        environment,
    };

    // The derived names are checked too: a prefix can still make one invalid (a bucket holding
    // "google", a host name over 253 characters) and the rules live in one place.
    let derived = |what: &str, name: &str, result: Result<(), String>| {
        result.map_err(|rule| format!("gives the {what} {}, which {rule}", escape_untrusted(name)))
    };
    problems.check(
        "env-prefix",
        p.env_prefix,
        derived(
            "environment",
            &names.environment,
            check_dns_label(&names.environment),
        ),
    );
    problems.check(
        "env-prefix",
        p.env_prefix,
        derived(
            "database",
            &names.database,
            check_pg_identifier(&names.database),
        ),
    );
    problems.check(
        "env-prefix",
        p.env_prefix,
        derived("branch", &names.branch, check_branch_name(&names.branch)),
    );
    problems.check(
        "namespace-prefix",
        p.namespace_prefix,
        derived(
            "namespace",
            &names.namespace,
            check_dns_label(&names.namespace),
        ),
    );
    problems.check(
        "bucket-prefix",
        p.bucket_prefix,
        derived("bucket", &names.bucket, check_bucket_name(&names.bucket)),
    );
    if let Some(domain) = p.base_domain {
        problems.check(
            "base-domain",
            domain,
            derived(
                "host name",
                &names.hostname,
                check_hostname(&names.hostname),
            ),
        );
    }
    if let Some(pattern) = p
        .protected_branches
        .iter()
        .find(|pattern| glob_match(pattern.trim(), &names.branch))
    {
        problems.check(
            "protected-branches",
            pattern,
            Err(format!(
                "protects the derived branch {}: choose another --env-prefix",
                escape_untrusted(&names.branch)
            )),
        );
    }
    if problems.0.is_empty() {
        Ok(names)
    } else {
        Err(problems.0)
    }
}

#[cfg(test)]
mod tests;
