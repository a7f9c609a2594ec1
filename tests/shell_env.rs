//! No variable that a shell or a CI system sets fills a flag. Every step's command is parsed under
//! an environment full of them (what bash, zsh, GitHub Actions, GitLab CI and Jenkins set, and
//! every flag's own name upper-cased, as `NAME=...` in a shell would be): no flag may take its
//! value from there. One test function: it sets process environment variables, which clap reads.

use clap::parser::ValueSource;

/// Variables shells and CI systems set on their own (or users set for other tools).
const SHELL_AND_CI: &[&str] = &[
    "NAME",
    "NAMESPACE",
    "FILE",
    "SOURCE",
    "DEST",
    "BRANCH",
    "REPO",
    "PATH",
    "HOME",
    "USER",
    "SHELL",
    "PWD",
    "OLDPWD",
    "TERM",
    "LANG",
    "HOSTNAME",
    "HOST",
    "TMPDIR",
    "TZ",
    "LOGNAME",
    "TIMEOUT",
    "DEBUG",
    "DRY_RUN",
    "LABEL",
    "LABELS",
    "PROJECT",
    "MESSAGE",
    "ROOT",
    "OWNER",
    "DATABASE",
    "BACKUP",
    "JOBS",
    "MOUNT",
    "FROM",
    "INCLUDE",
    "EXCLUDE",
    "ENVIRONMENT",
    "CI",
    "GITHUB_TOKEN",
    "GITHUB_REPOSITORY",
    "GITHUB_REF",
    "GITHUB_HEAD_REF",
    "GITHUB_API_URL",
    "GIT_TOKEN",
    "GIT_USERNAME",
    "CI_PROJECT_NAME",
    "CI_COMMIT_BRANCH",
    "BRANCH_NAME",
    "JOB_NAME",
    "BUILD_NUMBER",
    "PR_NUMBER",
    "REPOSITORY",
    "HEAD_REF",
    "LOG_LEVEL",
    "LOG_FORMAT",
    "OUTPUTS_DIR",
    "SSH_KEY",
    "KNOWN_HOSTS",
];

/// The tools' own variables a flag deliberately reads (set on purpose, never by a shell).
const TOOL_CONVENTIONS: &[&str] = &[
    "VAULT_ADDR",
    "VAULT_TOKEN",
    "VAULT_K8S_ROLE",
    "VAULT_K8S_MOUNT",
    "VAULT_K8S_TOKEN_PATH",
    "KUBECONFIG",
    "STORAGE_EMULATOR_HOST",
];

#[test]
fn no_shell_or_ci_variable_fills_a_flag() {
    let steps = workspace_tests::steps();
    let mut names: Vec<String> = SHELL_AND_CI.iter().map(|s| s.to_string()).collect();
    for step in &steps {
        for arg in step.command.get_arguments() {
            if let Some(long) = arg.get_long() {
                names.push(long.replace('-', "_").to_ascii_uppercase());
            }
        }
    }
    names.sort();
    names.dedup();
    names.retain(|n| !TOOL_CONVENTIONS.contains(&n.as_str()) && n != "PATH");
    // A value every flag's parser accepts or refuses without panicking; what matters is its source.
    for name in &names {
        std::env::set_var(name, "from-the-shell");
    }
    let mut filled = Vec::new();
    for step in &steps {
        let command = step_kit::command_with_env(step.command.clone());
        for arg in command.get_arguments() {
            if let Some(env) = arg.get_env() {
                let env = env.to_string_lossy();
                assert!(
                    env.starts_with(step_kit::ENV_PREFIX)
                        || TOOL_CONVENTIONS.contains(&env.as_ref()),
                    "{}: --{} reads ${env}, neither {}* nor a tool's convention",
                    step.name,
                    arg.get_long().unwrap_or_default(),
                    step_kit::ENV_PREFIX
                );
            }
        }
        // Parsing may fail (required flags are missing); a flag filled from the environment shows
        // in a successful parse, and in the error's own words otherwise.
        match command.clone().try_get_matches_from([step.name]) {
            Ok(matches) => {
                for arg in command.get_arguments() {
                    let id = arg.get_id().as_str();
                    if matches.value_source(id) == Some(ValueSource::EnvVariable) {
                        filled.push(format!("{}: --{id}", step.name));
                    }
                }
            }
            Err(e) => assert!(
                !e.to_string().contains("from-the-shell"),
                "{}: a shell variable reached a flag: {e}",
                step.name
            ),
        }
    }
    for name in &names {
        std::env::remove_var(name);
    }
    assert!(
        filled.is_empty(),
        "flags filled from shell variables: {filled:?}"
    );
}
