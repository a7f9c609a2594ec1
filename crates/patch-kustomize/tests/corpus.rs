//! The lossless-edit corpus: each `tests/corpus/<case>/` holds a `kustomization.yaml`, the flags
//! applied to it (`args`, one flag and its value per line) and the golden diff of the result
//! (`expected.diff`). Cases with `resources:` (a `deployment.yaml` the test supplies) are also
//! rendered with a real kustomize (`kubectl kustomize`), and the namespace and images checked in
//! what it renders.
//!
//! `UPDATE_GOLDEN=1 cargo test -p patch-kustomize --test corpus` rewrites the golden diffs; review
//! them: every `-`/`+` line must be a value the flags change.

mod common;

use std::path::{Path, PathBuf};

use clap::Parser;
use patch_kustomize::{Args, Patch};
use serde_yaml::Value;

fn corpus() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("args").exists())
        .collect();
    cases.sort();
    cases
}

fn patch_of(case: &Path) -> Patch {
    let mut argv = vec![
        "patch-kustomize".to_owned(),
        "--repo=https://git.example.com/acme/infra.git".into(),
        "--branch=sbx-pr-42".into(),
        "--file=kustomization.yaml".into(),
    ];
    for line in std::fs::read_to_string(case.join("args")).unwrap().lines() {
        let (flag, value) = line.split_once(' ').unwrap_or((line, ""));
        argv.push(format!("{flag}={value}"));
    }
    let args = Args::try_parse_from(&argv).unwrap_or_else(|e| panic!("{}: {e}", case.display()));
    patch_kustomize::validate(&args)
        .unwrap_or_else(|e| panic!("{}: {e:?}", case.display()))
        .0
}

fn diff(name: &str, old: &str, new: &str) -> String {
    similar::TextDiff::from_lines(old, new)
        .unified_diff()
        .context_radius(1)
        .header(&format!("a/{name}"), &format!("b/{name}"))
        .to_string()
}

#[test]
fn corpus_has_the_variety_the_issue_asks_for() {
    let cases = corpus();
    assert!(cases.len() >= 15, "{} cases", cases.len());
    let texts: Vec<String> = cases
        .iter()
        .map(|c| std::fs::read_to_string(c.join("kustomization.yaml")).unwrap())
        .collect();
    let any = |f: &dyn Fn(&str) -> bool| texts.iter().any(|t| f(t));
    assert!(any(&|t| t.contains("\r\n")), "CRLF");
    assert!(any(&|t| t.contains(" &") && t.contains('*')), "anchors");
    assert!(any(&|t| t.contains("digest: sha256:")), "digests");
    assert!(any(&|t| t.contains("images: [{")), "flow style");
    assert!(any(&|t| t.contains("newTag: \"")), "quoted values");
    assert!(any(
        &|t| t.matches("- name:").count() >= 2 && t.contains("configMapGenerator")
    ));
    assert!(any(&|t| t.matches('#').count() >= 8), "comments everywhere");
}

#[test]
fn every_case_matches_its_golden_diff() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut failures = Vec::new();
    for case in corpus() {
        let name = case.file_name().unwrap().to_string_lossy().into_owned();
        let input = std::fs::read_to_string(case.join("kustomization.yaml")).unwrap();
        let patch = patch_of(&case);
        let output = patch
            .apply(&input)
            .unwrap_or_else(|e| panic!("{name}: {e:?}"));
        let got = diff("kustomization.yaml", &input, &output);
        let golden = case.join("expected.diff");
        if update {
            std::fs::write(&golden, &got).unwrap();
            continue;
        }
        let want = std::fs::read_to_string(&golden).unwrap_or_default();
        if got != want {
            failures.push(format!("{name}:\n--- want\n{want}\n--- got\n{got}"));
        }
        // Applying the same flags again changes nothing.
        assert_eq!(
            patch.apply(&output).unwrap(),
            output,
            "{name}: not idempotent"
        );
        if input.contains("\r\n") {
            assert!(
                !output.replace("\r\n", "").contains('\n'),
                "{name}: a line without CR:\n{output:?}"
            );
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

const BASE_DEPLOYMENT: &str = "\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: shop
spec:
  selector:
    matchLabels: {app: shop}
  template:
    metadata:
      labels: {app: shop}
    spec:
      containers:
      - name: api
        image: registry.example.com/acme/api:1.0.0
      - name: web
        image: registry.example.com/acme/web:1.0.0
      - name: worker
        image: registry.example.com/acme/worker:1.0.0
      - name: local
        image: localhost:5000/acme/api:dev
";

/// The patched overlay still builds, and the namespace and images it sets are in what it renders.
#[test]
fn patched_overlays_render_with_kustomize() {
    let mut rendered_cases = 0;
    for case in corpus() {
        let name = case.file_name().unwrap().to_string_lossy().into_owned();
        let input = std::fs::read_to_string(case.join("kustomization.yaml")).unwrap();
        let model: Value = serde_yaml::from_str(&input).unwrap();
        if model.get("resources").is_none() {
            continue; // a fragment (files it names are not in the corpus)
        }
        let patch = patch_of(&case);
        let output = patch.apply(&input).unwrap();
        // The corpus's overlays list `deployment.yaml` as their resource: a file, which every
        // kustomize takes (Debian's kubectl 1.20 bundles kustomize 2.0.3, which takes directories
        // only under `bases:`).
        let overlay = tempfile::tempdir().unwrap();
        let overlay = overlay.path();
        std::fs::write(overlay.join("deployment.yaml"), BASE_DEPLOYMENT).unwrap();
        std::fs::write(overlay.join("kustomization.yaml"), &output).unwrap();
        let docs = common::kustomize(overlay, &format!("{name}:\n{output}"));
        let patched: Value = serde_yaml::from_str(&output).unwrap();
        for doc in &docs {
            if let Some(ns) = patched.get("namespace") {
                assert_eq!(
                    doc["metadata"].get("namespace"),
                    Some(ns),
                    "{name}: {doc:?}"
                );
            }
        }
        let deployment = docs.iter().find(|d| d["kind"] == "Deployment").unwrap();
        let images: Vec<&str> = deployment["spec"]["template"]["spec"]["containers"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|c| c["image"].as_str().unwrap())
            .collect();
        for set in &patch.images {
            let Some(entry) = patched["images"]
                .as_sequence()
                .and_then(|s| s.iter().find(|e| e["name"].as_str() == Some(&set.name)))
            else {
                panic!("{name}: {} not in images:", set.name)
            };
            let new_name = entry["newName"].as_str().unwrap_or(&set.name);
            let version = entry["digest"]
                .as_str()
                .or(entry["newTag"].as_str())
                .unwrap();
            if BASE_DEPLOYMENT.contains(&format!("image: {}:", set.name)) {
                assert!(
                    images
                        .iter()
                        .any(|i| i.starts_with(new_name) && i.ends_with(version)),
                    "{name}: no container runs {new_name} {version}: {images:?}"
                );
            }
        }
        rendered_cases += 1;
    }
    assert!(rendered_cases >= 8, "only {rendered_cases} cases rendered");
}
