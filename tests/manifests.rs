//! Each step template against the binary it runs: its environment variables are the step's flags,
//! its outputs the step's files, and it retries exit code 4 only. (That every manifest is what its
//! kind allows, a misspelled field refused, is checked by the upstream software itself: `argo lint`
//! in argo_lint.rs, the API server's strict field validation in apiserver.rs, Argo Events' strict
//! decoding in sensors.rs.)

use std::collections::BTreeSet;

use workspace_tests::manifests;

/// What a step binary accepts and writes, from its own code.
struct StepInterface {
    envs: BTreeSet<String>,
    required_envs: BTreeSet<String>,
    outputs: BTreeSet<String>,
}

fn step_interface(name: &str) -> Option<StepInterface> {
    let step = workspace_tests::steps()
        .into_iter()
        .find(|s| s.name == name)?;
    let mut envs = BTreeSet::new();
    let mut required_envs = BTreeSet::new();
    for arg in step.command.get_arguments() {
        if let Some(env) = arg.get_env() {
            let env = env.to_string_lossy().into_owned();
            if arg.is_required_set() {
                required_envs.insert(env.clone());
            }
            envs.insert(env);
        }
    }
    Some(StepInterface {
        envs,
        required_envs,
        outputs: step.outputs.iter().map(|s| s.to_string()).collect(),
    })
}

#[test]
fn step_templates_match_their_binaries() {
    let mut checked = 0;
    for (file, doc) in manifests() {
        if doc["kind"] != "ClusterWorkflowTemplate" {
            continue;
        }
        for template in doc["spec"]["templates"].as_array().into_iter().flatten() {
            let Some(command) = template["container"]["command"][0].as_str() else {
                continue;
            };
            let Some(step) = command.strip_prefix("/usr/local/bin/") else {
                continue;
            };
            let at = format!("{} template {}", file.display(), template["name"]);
            let interface =
                step_interface(step).unwrap_or_else(|| panic!("{at}: no step named {step}"));
            checked += 1;

            // Variables filled from a Kubernetes Secret are where secret references point
            // (`env:NAME`), not flags.
            let env: BTreeSet<String> = template["container"]["env"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|e| e["valueFrom"]["secretKeyRef"].is_null())
                .map(|e| e["name"].as_str().unwrap().to_owned())
                .collect();
            let unknown: Vec<_> = env.difference(&interface.envs).collect();
            assert!(
                unknown.is_empty(),
                "{at}: env vars that are no flag of {step}: {unknown:?}"
            );
            let missing: Vec<_> = interface.required_envs.difference(&env).collect();
            assert!(
                missing.is_empty(),
                "{at}: required flags not passed: {missing:?}"
            );

            // Every input parameter reaches the step.
            // Used by the container or its volumes (e.g. a ConfigMap named by an input).
            let mut used = template.clone();
            used.as_object_mut().unwrap().remove("inputs");
            let container = used.to_string();
            for input in template["inputs"]["parameters"]
                .as_array()
                .into_iter()
                .flatten()
            {
                let name = input["name"].as_str().unwrap();
                assert!(
                    container.contains(&format!("{{{{inputs.parameters.{name}}}}}")),
                    "{at}: input {name} is not passed to the step"
                );
            }

            let outputs: BTreeSet<String> = template["outputs"]["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|o| {
                    let name = o["name"].as_str().unwrap();
                    let path = o["valueFrom"]["path"].as_str().unwrap();
                    assert_eq!(path, format!("/tmp/outputs/{name}"), "{at}: output {name}");
                    name.to_owned()
                })
                .collect();
            assert_eq!(
                outputs, interface.outputs,
                "{at}: outputs differ from the step's"
            );

            let retry = &template["retryStrategy"];
            assert_eq!(
                retry["expression"], "asInt(lastRetry.exitCode) == 4",
                "{at}: retry only exit 4"
            );
            let security = &template["container"]["securityContext"];
            assert_eq!(security["runAsNonRoot"], true, "{at}");
            assert_eq!(security["readOnlyRootFilesystem"], true, "{at}");
            assert_eq!(security["capabilities"]["drop"][0], "ALL", "{at}");
            assert!(
                template["container"]["resources"]["requests"].is_object(),
                "{at}: resource requests"
            );
        }
    }
    assert!(checked >= 1, "no step template found");
}
