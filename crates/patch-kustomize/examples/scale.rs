//! Times patch-kustomize's edit on large kustomizations: `cargo run --release --example scale`.
use patch_kustomize::{ImageSet, Patch};

fn file(entries: usize) -> String {
    let mut text =
        String::from("apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nimages:\n");
    for i in 0..entries {
        text.push_str(&format!(
            "  - name: registry.example.com/acme/app{i}\n    newTag: v1\n"
        ));
    }
    text
}

fn main() {
    for (entries, edits) in [
        (250, 250),
        (500, 500),
        (1000, 1000),
        (17000, 10),
        (17000, 1000),
    ] {
        let text = file(entries);
        let images = (0..edits)
            .map(|i| ImageSet {
                name: format!("registry.example.com/acme/app{}", i * (entries / edits)),
                new_name: None,
                new_tag: Some("v2".into()),
                digest: None,
            })
            .collect();
        let patch = Patch {
            images,
            ..Default::default()
        };
        let started = std::time::Instant::now();
        let result = patch.apply(&text);
        println!(
            "{entries} entries ({} bytes), {edits} edits: {:?} {}",
            text.len(),
            started.elapsed(),
            match result {
                Ok(_) => "ok".to_owned(),
                Err(e) => format!("{e:?}"),
            }
        );
    }
    let deep = "[".repeat(200_000);
    let started = std::time::Instant::now();
    let result = Patch::default().apply(&deep);
    println!("200,000 deep: {:?} {:?}", started.elapsed(), result.err());
}
