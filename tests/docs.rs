//! Each step's docs page lists every flag and every output of its binary, so the docs can't drift
//! from the code.

use std::path::Path;

fn check(step: &str, command: &clap::Command, outputs: &[&str]) {
    let page = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(format!("../workflow-templates/steps/{step}.md"));
    let text = std::fs::read_to_string(&page).unwrap_or_else(|e| panic!("{}: {e}", page.display()));
    for arg in command.get_arguments() {
        let Some(long) = arg.get_long() else { continue };
        if matches!(long, "help" | "version") {
            continue;
        }
        assert!(
            text.contains(&format!("`--{long}")),
            "{step}.md does not document --{long}"
        );
    }
    for output in outputs {
        assert!(
            text.contains(&format!("| `{output}` |")),
            "{step}.md does not document output {output}"
        );
    }
    assert!(
        text.contains("## Exit codes"),
        "{step}.md has no exit codes"
    );
}

#[test]
fn step_docs_list_every_flag_and_output() {
    for step in workspace_tests::steps() {
        check(step.name, &step.command, step.outputs);
    }
}

/// No flag reads a variable the process environment already uses for something else: on a laptop
/// `PATH` or `HOME` would silently become the flag's value.
#[test]
fn no_flag_reads_a_reserved_environment_variable() {
    const RESERVED: &[&str] = &[
        "PATH",
        "HOME",
        "USER",
        "SHELL",
        "PWD",
        "TERM",
        "LANG",
        "HOSTNAME",
        "TMPDIR",
        "TZ",
        "LOGNAME",
        "OLDPWD",
        "IFS",
        "LD_PRELOAD",
        "LD_LIBRARY_PATH",
    ];
    for step in workspace_tests::steps() {
        for arg in step.command.get_arguments() {
            if let Some(env) = arg.get_env() {
                let env = env.to_string_lossy();
                assert!(
                    !RESERVED.contains(&env.as_ref()),
                    "{}: --{} reads ${env}",
                    step.name,
                    arg.get_long().unwrap_or_default()
                );
            }
        }
    }
}

/// Each step's page shows how to call its template from a workflow.
#[test]
fn step_docs_show_a_template_ref_sample() {
    for step in workspace_tests::steps() {
        let page = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(format!("../workflow-templates/steps/{}.md", step.name));
        let text = std::fs::read_to_string(&page).unwrap();
        let sample = format!(
            "templateRef: {{name: {0}, template: {0}, clusterScope: true}}",
            step.name
        );
        assert!(text.contains(&sample), "{}: no `{sample}`", page.display());
    }
}
