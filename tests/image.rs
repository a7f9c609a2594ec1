//! The image, checked cheaply on every `make test` (`make image` builds and verifies the real
//! thing): the step templates all run the one image reference, which is defined once, and the
//! Dockerfile keeps its two ways of building (from source; from binaries built on the host).

use std::path::PathBuf;

use workspace_tests::repo_root;

use serde_json::Value;

/// The reference: images/repository and the workspace version as the tag.
fn image() -> String {
    let repository = std::fs::read_to_string(repo_root().join("images/repository")).unwrap();
    format!("{}:{}", repository.trim(), env!("CARGO_PKG_VERSION"))
}

#[test]
fn every_step_template_runs_the_one_image() {
    let image = image();
    let dir = repo_root().join("workflow-templates/steps");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no step templates in {}", dir.display());
    let mut wrong = Vec::new();
    let mut ours_total = 0;
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let doc: Value = serde::Deserialize::deserialize(doc).unwrap();
            for template in doc["spec"]["templates"].as_array().into_iter().flatten() {
                for kind in ["container", "script"] {
                    let Some(container) = template.get(kind) else {
                        continue;
                    };
                    let ours = container["command"][0]
                        .as_str()
                        .is_some_and(|c| c.starts_with("/usr/local/bin/"));
                    if !ours {
                        // Another tool's image (Terraform): pinned to a version, never `latest`.
                        let other = container["image"].as_str().unwrap_or_default();
                        let tag = other.rsplit_once(':').map(|(_, t)| t).unwrap_or("");
                        if tag.is_empty() || tag == "latest" || tag.contains('/') {
                            wrong.push(format!("{}: {other} is not pinned", file.display()));
                        }
                        continue;
                    }
                    ours_total += 1;
                    if container["image"] != image.as_str() {
                        wrong.push(format!(
                            "{} template {}: image {}",
                            file.display(),
                            template["name"],
                            container["image"]
                        ));
                    }
                }
            }
        }
    }
    assert!(ours_total > 0, "no step template runs our image");
    assert!(
        wrong.is_empty(),
        "step templates must run {image} (images/repository + the workspace version); \
         `make pin-image` writes it:\n{}",
        wrong.join("\n")
    );
}

/// The Makefile builds, and `make pin-image` writes, the same reference as this test expects.
#[test]
fn the_makefile_builds_the_same_reference() {
    let out = std::process::Command::new("make")
        .args(["-s", "--no-print-directory", "print-image"])
        .current_dir(repo_root())
        .output()
        .expect("make");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), image());
}

/// `(stage name, instructions)` of each stage, comments and continuations folded.
fn stages(dockerfile: &str) -> Vec<(String, Vec<String>)> {
    let mut lines = Vec::new();
    let mut current = String::new();
    for line in dockerfile.lines() {
        let line = line.trim();
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(part) => current.push_str(part),
            None => {
                current.push_str(line);
                lines.push(std::mem::take(&mut current));
            }
        }
    }
    let mut stages: Vec<(String, Vec<String>)> = vec![("(global)".into(), Vec::new())];
    for line in lines {
        if line.starts_with("FROM ") {
            let name = line.split(" AS ").nth(1).unwrap_or("(final)").trim();
            stages.push((name.to_owned(), vec![line.clone()]));
        } else {
            stages.last_mut().unwrap().1.push(line);
        }
    }
    stages
}

#[test]
fn the_dockerfile_builds_from_source_or_from_host_binaries() {
    let text = std::fs::read_to_string(repo_root().join("images/Dockerfile")).unwrap();
    let stages = stages(&text);
    let stage = |name: &str| {
        stages
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, lines)| lines.clone())
            .unwrap_or_else(|| panic!("no stage {name} in images/Dockerfile"))
    };
    let has = |lines: &[String], wanted: &str| lines.iter().any(|l| l.contains(wanted));

    assert!(has(&stage("(global)"), "ARG BINARIES=builder"));
    let builder = stage("builder");
    assert!(builder[0].starts_with("FROM docker.io/library/rust:"));
    assert!(
        has(&builder, "images/build.sh /rootfs"),
        "the builder stage lays out the tree with the script `make image` uses"
    );
    let context = stage("context");
    assert_eq!(
        context[0], "FROM scratch AS context",
        "the host mode pulls nothing"
    );
    assert_eq!(
        stage("rootfs"),
        vec!["FROM ${BINARIES} AS rootfs".to_owned()]
    );

    let last = &stages.last().unwrap();
    assert_eq!(last.0, "(final)");
    let last = &last.1;
    assert_eq!(last[0], "FROM scratch");
    assert!(has(last, "COPY --from=rootfs /rootfs/ /"));
    assert!(
        !has(last, "RUN "),
        "the final stage has no shell to RUN anything with"
    );
    assert!(has(last, "USER 65532:65532"));
    assert!(has(
        last,
        "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"
    ));
    for label in ["source", "version", "revision"] {
        assert!(
            has(last, &format!("org.opencontainers.image.{label}=")),
            "OCI label {label}"
        );
    }

    let makefile = std::fs::read_to_string(repo_root().join("Makefile")).unwrap();
    assert!(makefile.contains("--build-arg BINARIES=context"));
    assert!(makefile.contains("bash images/build.sh"));
    assert!(makefile.contains("bash images/verify.sh"));
}
