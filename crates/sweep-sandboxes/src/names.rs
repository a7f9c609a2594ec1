//! From a resource's name back to its sandbox: the naming scheme of validate-params with
//! `--name-from pr` (environment = prefix + the pull request's number), read backwards. A name
//! that only looks like a sandbox's (`sbx-pr-42-old`, `sbx-pr-042`, `sbx-pr-main`) is none.

/// The prefixes a sandbox's names are made of (validate-params' and the templates' settings).
#[derive(Debug, Clone)]
pub struct Scheme {
    /// The environment's prefix (`sbx-pr-`): branch, Application and Vault folder are named
    /// after the environment.
    pub environment_prefix: String,
    pub namespace_prefix: String,
    pub bucket_prefix: String,
}

impl Scheme {
    pub fn environment(&self, pr: u64) -> String {
        format!("{}{pr}", self.environment_prefix)
    }

    /// The pull request of an environment name (a branch, an Application's file stem, a Vault
    /// folder), or None.
    pub fn pr_of_environment(&self, name: &str) -> Option<u64> {
        number(name.strip_prefix(self.environment_prefix.as_str())?)
    }

    pub fn pr_of_namespace(&self, name: &str) -> Option<u64> {
        self.pr_of_environment(name.strip_prefix(self.namespace_prefix.as_str())?)
    }

    pub fn pr_of_bucket(&self, name: &str) -> Option<u64> {
        self.pr_of_environment(name.strip_prefix(self.bucket_prefix.as_str())?)
    }

    /// The database (and its owner role) of an environment: `-` becomes `_`.
    pub fn database_prefix(&self) -> String {
        self.environment_prefix.replace('-', "_")
    }

    pub fn pr_of_database(&self, name: &str) -> Option<u64> {
        number(name.strip_prefix(self.database_prefix().as_str())?)
    }
}

/// A pull request's number as the names hold it: decimal digits, no leading zero, at most 10.
fn number(digits: &str) -> Option<u64> {
    let canonical = !digits.is_empty()
        && digits.len() <= 10
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0');
    canonical.then(|| digits.parse().ok()).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_read_back_to_their_pull_request_and_lookalikes_to_none() {
        let scheme = Scheme {
            environment_prefix: "sbx-pr-".into(),
            namespace_prefix: "apps-".into(),
            bucket_prefix: "acme-".into(),
        };
        assert_eq!(scheme.environment(42), "sbx-pr-42");
        assert_eq!(scheme.pr_of_environment("sbx-pr-42"), Some(42));
        assert_eq!(scheme.pr_of_namespace("apps-sbx-pr-42"), Some(42));
        assert_eq!(scheme.pr_of_bucket("acme-sbx-pr-42"), Some(42));
        assert_eq!(scheme.database_prefix(), "sbx_pr_");
        assert_eq!(scheme.pr_of_database("sbx_pr_42"), Some(42));
        for lookalike in [
            "sbx-pr-42-old",
            "sbx-pr-042",
            "sbx-pr-main",
            "sbx-pr-",
            "sbx-pr-4 2",
            "sbx-pr-99999999999",
            "sbx-pr-+42",
            "sbx-pr-٤٢",
        ] {
            assert_eq!(scheme.pr_of_environment(lookalike), None, "{lookalike}");
        }
        assert_eq!(scheme.pr_of_namespace("sbx-pr-42"), None);
        assert_eq!(scheme.pr_of_namespace("apps-sbx-pr-42x"), None);
        assert_eq!(scheme.pr_of_database("sbx_pr_42_restoring"), None);
        assert_eq!(scheme.pr_of_bucket("acme-sbx-pr-42.backup"), None);
    }
}
