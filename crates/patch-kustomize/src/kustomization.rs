//! The lossless edit of one kustomization file: only the values that change are rewritten;
//! comments, key order, quoting, indentation, anchors and line endings stay as they are.
//!
//! Each edit is applied twice: to the text through `yaml-edit` (how it is written) and to a
//! `serde_yaml` model of the file (what it means). The edited text must parse to the edited
//! model, or nothing is written: a formatting surprise in an odd file becomes an error instead of
//! a wrong commit.

use std::str::FromStr;

use serde_yaml::{Mapping as Model, Value};
use yaml_edit::{Mapping, ScalarValue, Sequence, YamlFile, YamlNode};

use crate::image::ImageSet;

/// `KEY=VALUE` in the literals of the `configMapGenerator` named `generator`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Literal {
    pub generator: String,
    pub key: String,
    pub value: String,
}

/// Everything one run sets in the file.
#[derive(Debug, Clone, Default)]
pub struct Patch {
    pub namespace: Option<String>,
    pub images: Vec<ImageSet>,
    pub literals: Vec<Literal>,
    pub labels: Vec<(String, String)>,
}

/// Why a file cannot be patched.
#[derive(Debug, PartialEq, Eq)]
pub enum PatchError {
    /// Not YAML, or not a kustomization's shape (exit 2).
    Invalid(String),
    /// The edited text does not mean what the edit asked for (a bug; exit 1, nothing written).
    Unfaithful(String),
}

impl Patch {
    /// The file's new text (equal to `text` when every value is already set).
    pub fn apply(&self, text: &str) -> Result<String, PatchError> {
        let mut model = parse_model(text)?;
        let file = YamlFile::from_str(text)
            .map_err(|e| PatchError::Invalid(format!("not YAML the editor can keep: {e}")))?;
        let root = file
            .document()
            .and_then(|doc| doc.as_mapping())
            .ok_or_else(|| PatchError::Invalid("the file is not a mapping".into()))?;
        let model_root = model
            .as_mapping_mut()
            .ok_or_else(|| PatchError::Invalid("the file is not a mapping".into()))?;

        if let Some(namespace) = &self.namespace {
            set_namespace(&root, namespace);
            model_root.insert("namespace".into(), namespace.as_str().into());
        }
        for image in &self.images {
            set_image(&root, image)?;
            set_image_model(model_root, image)?;
        }
        for literal in &self.literals {
            set_literal(&root, literal)?;
            set_literal_model(model_root, literal)?;
        }
        for (key, value) in &self.labels {
            set_label(&root, key, value)?;
            set_label_model(model_root, key, value)?;
        }

        let edited = file.to_string();
        if edited == text {
            return Ok(edited);
        }
        let reparsed = parse_model(&edited).map_err(|e| {
            PatchError::Unfaithful(format!("the edited file does not parse: {e:?}"))
        })?;
        if reparsed != model {
            return Err(PatchError::Unfaithful(format!(
                "the edited file means something else than the edit asked for; refusing to \
                 write it. Edited text:\n{edited}"
            )));
        }
        Ok(edited)
    }
}

/// The file's meaning, with the parser's line and column on errors.
fn parse_model(text: &str) -> Result<Value, PatchError> {
    let value: Value = serde_yaml::from_str(text).map_err(|e| {
        let at = e
            .location()
            .map(|l| format!("line {}, column {}: ", l.line(), l.column()))
            .unwrap_or_default();
        PatchError::Invalid(format!("malformed YAML at {at}{e}"))
    })?;
    if !value.is_mapping() {
        return Err(PatchError::Invalid(
            "the file is not a mapping (a kustomization has keys like resources:, images:)".into(),
        ));
    }
    if let Some(kind) = value.get("kind") {
        if kind.as_str() != Some("Kustomization") {
            return Err(PatchError::Invalid(format!(
                "kind is {kind:?}, not Kustomization"
            )));
        }
    }
    Ok(value)
}

fn set_namespace(root: &Mapping, namespace: &str) {
    let value = scalar_like(namespace, root.get("namespace").as_ref());
    if root.contains_key("namespace") {
        root.set("namespace", value);
    } else if let Some(after) = ["kind", "apiVersion"]
        .into_iter()
        .find(|k| root.contains_key(*k))
    {
        root.insert_after(after, "namespace", value);
    } else {
        root.insert_at_index(0, "namespace", value);
    }
}

fn set_image(root: &Mapping, image: &ImageSet) -> Result<(), PatchError> {
    let images = sequence_or_new(root, "images")?;
    let entry = match find_item(&images, |m| {
        scalar_text(m.get("name")).as_deref() == Some(&image.name)
    }) {
        Some(entry) => entry,
        None => push_named(&images, &image.name)?,
    };
    if let Some(new_name) = &image.new_name {
        set_scalar_after(&entry, "newName", new_name, &["name"]);
    }
    if image.sets_version() {
        for (key, value, after) in [
            ("newTag", &image.new_tag, &["newName", "name"][..]),
            ("digest", &image.digest, &["newTag", "newName", "name"][..]),
        ] {
            match value {
                Some(value) => set_scalar_after(&entry, key, value, after),
                None => {
                    entry.remove(key);
                }
            }
        }
    }
    Ok(())
}

fn set_image_model(root: &mut Model, image: &ImageSet) -> Result<(), PatchError> {
    let images = model_sequence(root, "images")?;
    let found = images
        .iter_mut()
        .filter_map(Value::as_mapping_mut)
        .find(|m| m.get("name").and_then(Value::as_str) == Some(image.name.as_str()));
    let entry = match found {
        Some(entry) => entry,
        None => {
            let mut entry = Model::new();
            entry.insert("name".into(), image.name.as_str().into());
            images.push(Value::Mapping(entry));
            images
                .last_mut()
                .and_then(Value::as_mapping_mut)
                .expect("just pushed")
        }
    };
    if let Some(new_name) = &image.new_name {
        entry.insert("newName".into(), new_name.as_str().into());
    }
    if image.sets_version() {
        for (key, value) in [("newTag", &image.new_tag), ("digest", &image.digest)] {
            match value {
                Some(value) => entry.insert(key.into(), value.as_str().into()),
                None => entry.remove(key),
            };
        }
    }
    Ok(())
}

fn set_literal(root: &Mapping, literal: &Literal) -> Result<(), PatchError> {
    let generators = sequence_or_new(root, "configMapGenerator")?;
    let text = format!("{}={}", literal.key, literal.value);
    let prefix = format!("{}=", literal.key);
    let generator = match find_item(&generators, |m| {
        scalar_text(m.get("name")).as_deref() == Some(&literal.generator)
    }) {
        Some(generator) => generator,
        None => push_named(&generators, &literal.generator)?,
    };
    let literals = match generator.get("literals") {
        None => {
            match ["behavior", "name"]
                .into_iter()
                .find(|k| generator.contains_key(*k))
            {
                Some(after) => generator.insert_after(after, "literals", Sequence::new()),
                None => {
                    generator.set("literals", Sequence::new());
                    true
                }
            };
            generator.get_sequence("literals").ok_or_else(|| {
                PatchError::Unfaithful("could not add literals: to the generator".into())
            })?
        }
        Some(YamlNode::Sequence(literals)) => literals,
        Some(_) => {
            return Err(PatchError::Invalid(format!(
                "configMapGenerator {:?}: literals is not a list",
                literal.generator
            )))
        }
    };
    let existing = literals
        .values()
        .position(|item| scalar_text(Some(item)).is_some_and(|s| s.starts_with(&prefix)));
    match existing {
        Some(index) => {
            let old = literals.get(index);
            if scalar_text(old.clone()).as_deref() != Some(text.as_str()) {
                literals.set(index, scalar_like(&text, old.as_ref()));
            }
        }
        None => literals.push(scalar_like(&text, None)),
    }
    Ok(())
}

fn set_literal_model(root: &mut Model, literal: &Literal) -> Result<(), PatchError> {
    let generators = model_sequence(root, "configMapGenerator")?;
    let text = format!("{}={}", literal.key, literal.value);
    let prefix = format!("{}=", literal.key);
    let found = generators
        .iter_mut()
        .filter_map(Value::as_mapping_mut)
        .find(|m| m.get("name").and_then(Value::as_str) == Some(literal.generator.as_str()));
    let generator = match found {
        Some(generator) => generator,
        None => {
            let mut generator = Model::new();
            generator.insert("name".into(), literal.generator.as_str().into());
            generators.push(Value::Mapping(generator));
            generators
                .last_mut()
                .and_then(Value::as_mapping_mut)
                .expect("just pushed")
        }
    };
    let literals = model_sequence(generator, "literals")?;
    match literals
        .iter_mut()
        .find(|item| item.as_str().is_some_and(|s| s.starts_with(&prefix)))
    {
        Some(item) => *item = text.into(),
        None => literals.push(text.into()),
    }
    Ok(())
}

/// Where `kustomize edit set label` puts labels: `commonLabels`, unless the file already uses the
/// newer `labels:` list, whose first entry's `pairs` then take it. (Debian's kubectl 1.20 bundles
/// kustomize 2.0.3, which knows only `commonLabels`.)
fn set_label(root: &Mapping, key: &str, value: &str) -> Result<(), PatchError> {
    if let Some(labels) = root.get_sequence("labels") {
        let pairs = labels
            .get(0)
            .and_then(|first| first.as_mapping().cloned())
            .ok_or_else(|| {
                PatchError::Invalid("labels: its first entry is not a mapping".into())
            })?;
        let map = mapping_or_new(&pairs, "pairs")?;
        set_scalar_after(&map, key, value, &[]);
        return Ok(());
    }
    let map = mapping_or_new(root, "commonLabels")?;
    set_scalar_after(&map, key, value, &[]);
    Ok(())
}

fn set_label_model(root: &mut Model, key: &str, value: &str) -> Result<(), PatchError> {
    let map = match root.get_mut("labels").and_then(Value::as_sequence_mut) {
        Some(labels) => {
            let first = labels
                .first_mut()
                .and_then(Value::as_mapping_mut)
                .ok_or_else(|| {
                    PatchError::Invalid("labels: its first entry is not a mapping".into())
                })?;
            model_mapping(first, "pairs")?
        }
        None => model_mapping(root, "commonLabels")?,
    };
    map.insert(key.into(), value.into());
    Ok(())
}

// ---- the text side -------------------------------------------------------------------------

/// `key` set to `value` in `map`, keeping the old value's quoting; a new key goes after the first
/// of `after` present, else at the end.
fn set_scalar_after(map: &Mapping, key: &str, value: &str, after: &[&str]) {
    let old = map.get(key);
    if scalar_text(old.clone()).as_deref() == Some(value) {
        return;
    }
    let scalar = scalar_like(value, old.as_ref());
    if old.is_some() {
        map.set(key, scalar);
    } else if let Some(anchor) = after.iter().find(|k| map.contains_key(**k)) {
        map.insert_after(*anchor, key, scalar);
    } else {
        map.set(key, scalar);
    }
}

/// The scalar to write for `value`: in the old value's quote style when it was quoted, plain when
/// plain reads back as the same string, else double-quoted (as kustomize writes `"1.0"`).
fn scalar_like(value: &str, old: Option<&YamlNode>) -> ScalarValue {
    let old_quote = old
        .and_then(YamlNode::as_scalar)
        .and_then(|s| s.value().trim_start().chars().next());
    match old_quote {
        Some('"') => ScalarValue::double_quoted(value),
        Some('\'') => ScalarValue::single_quoted(value),
        _ if plain_is_safe(value) => ScalarValue::plain(value),
        _ => ScalarValue::double_quoted(value),
    }
}

/// Whether `value` written plain reads back as the string `value`, in YAML 1.2 (serde_yaml,
/// go-yaml v3) and in YAML 1.1 (`yes`, `on`, `0755`, `2024-01-01` for older parsers such as the
/// go-yaml v2 under `kubectl`).
fn plain_is_safe(value: &str) -> bool {
    let bytes = value.as_bytes();
    let charset = !value.is_empty()
        && bytes.iter().enumerate().all(|(i, &b)| {
            b.is_ascii_alphanumeric()
                || b"-_./=+@%".contains(&b)
                // `:` only inside a word or before a path (`host:5000/x`, `https://`).
                || (b == b':'
                    && i > 0
                    && bytes.get(i + 1).is_some_and(|n| n.is_ascii_alphanumeric() || *n == b'/'))
        })
        && !value.starts_with(['-', '.', '@', '%', '=', ':']);
    let word = matches!(
        value.to_ascii_lowercase().as_str(),
        "y" | "n" | "yes" | "no" | "on" | "off" | "true" | "false" | "null" | "~"
    );
    // Without a letter or `/` it may be a number, date or time somewhere; a version with two dots
    // (`2.1.0`) is a string everywhere.
    let version = value.split('.').count() >= 3
        && value
            .split('.')
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    let numberish = !version && !bytes.iter().any(|b| b.is_ascii_alphabetic() || *b == b'/');
    charset
        && !word
        && !numberish
        && serde_yaml::from_str::<Value>(value).is_ok_and(|v| v.as_str() == Some(value))
}

/// A scalar's string value (`None` for anything else).
fn scalar_text(node: Option<YamlNode>) -> Option<String> {
    match node? {
        YamlNode::Scalar(s) => Some(s.as_string()),
        _ => None,
    }
}

/// Absent, or `key:` with nothing (or `null`, `~`) after it.
fn is_null(node: Option<&YamlNode>) -> bool {
    match node {
        None => true,
        Some(YamlNode::Scalar(s)) => s.is_null(),
        Some(_) => false,
    }
}

/// The first mapping item of `seq` that `matches`.
fn find_item(seq: &Sequence, matches: impl Fn(&Mapping) -> bool) -> Option<Mapping> {
    seq.values().find_map(|item| match item {
        YamlNode::Mapping(m) if matches(&m) => Some(m),
        _ => None,
    })
}

/// A new `name: NAME` mapping at the end of `seq`, filled in place afterwards so that what is
/// added to it takes the list's indentation.
fn push_named(seq: &Sequence, name: &str) -> Result<Mapping, PatchError> {
    let entry = Mapping::new();
    entry.set("name", scalar_like(name, None));
    seq.push(&entry);
    match seq.last() {
        Some(YamlNode::Mapping(pushed)) => Ok(pushed),
        _ => Err(PatchError::Unfaithful(format!(
            "could not add an entry named {name}"
        ))),
    }
}

/// The list under `key`, created empty (block style) when absent.
fn sequence_or_new(map: &Mapping, key: &str) -> Result<Sequence, PatchError> {
    match map.get(key) {
        Some(YamlNode::Sequence(seq)) => Ok(seq),
        node if is_null(node.as_ref()) => {
            map.set(key, Sequence::new());
            map.get_sequence(key)
                .ok_or_else(|| PatchError::Unfaithful(format!("could not add {key}:")))
        }
        _ => Err(PatchError::Invalid(format!("{key}: is not a list"))),
    }
}

/// The mapping under `key`, created empty (block style) when absent.
fn mapping_or_new(map: &Mapping, key: &str) -> Result<Mapping, PatchError> {
    match map.get(key) {
        Some(YamlNode::Mapping(m)) => Ok(m),
        node if is_null(node.as_ref()) => {
            map.set(key, Mapping::new());
            map.get_mapping(key)
                .ok_or_else(|| PatchError::Unfaithful(format!("could not add {key}:")))
        }
        _ => Err(PatchError::Invalid(format!("{key}: is not a mapping"))),
    }
}

// ---- the model side ------------------------------------------------------------------------

fn model_sequence<'m>(map: &'m mut Model, key: &str) -> Result<&'m mut Vec<Value>, PatchError> {
    let slot = map.entry(key.into()).or_insert(Value::Null);
    if slot.is_null() {
        *slot = Value::Sequence(Vec::new());
    }
    slot.as_sequence_mut()
        .ok_or_else(|| PatchError::Invalid(format!("{key}: is not a list")))
}

fn model_mapping<'m>(map: &'m mut Model, key: &str) -> Result<&'m mut Model, PatchError> {
    let slot = map.entry(key.into()).or_insert(Value::Null);
    if slot.is_null() {
        *slot = Value::Mapping(Model::new());
    }
    slot.as_mapping_mut()
        .ok_or_else(|| PatchError::Invalid(format!("{key}: is not a mapping")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn namespace(ns: &str) -> Patch {
        Patch {
            namespace: Some(ns.into()),
            ..Patch::default()
        }
    }

    fn invalid(result: Result<String, PatchError>) -> String {
        match result {
            Err(PatchError::Invalid(why)) => why,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn malformed_yaml_names_line_and_column() {
        let why = invalid(namespace("x").apply("resources:\n  - a\n bad: [\n"));
        assert!(why.contains("line 3, column"), "{why}");
    }

    #[test]
    fn refuses_what_is_not_a_kustomization() {
        assert!(invalid(namespace("x").apply("- a\n- b\n")).contains("not a mapping"));
        assert!(invalid(namespace("x").apply("")).contains("not a mapping"));
        assert!(invalid(namespace("x").apply("kind: Deployment\n")).contains("not Kustomization"));
        let images = Patch {
            images: vec![ImageSet::parse("api=:v1").unwrap()],
            ..Patch::default()
        };
        assert!(invalid(images.apply("images: api\n")).contains("images: is not a list"));
        assert!(invalid(namespace("x").apply("a: 1\n---\nb: 2\n")).contains("malformed"));
    }

    #[test]
    fn an_edit_that_would_change_an_aliased_value_elsewhere_is_refused() {
        let text =
            "images:\n  - name: api\n    newTag: &v \"1.0\"\n  - name: web\n    newTag: *v\n";
        let patch = Patch {
            images: vec![ImageSet::parse("api=:2.0.0").unwrap()],
            ..Patch::default()
        };
        match patch.apply(text) {
            Err(PatchError::Unfaithful(why)) => assert!(why.contains("refusing"), "{why}"),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn plain_only_where_it_reads_back_as_the_same_string_everywhere() {
        for plain in [
            "pr-42",
            "2.1.0",
            "v1",
            "localhost:5000/acme/api",
            "https://x.example.com/a",
            "DB=x",
        ] {
            assert!(plain_is_safe(plain), "{plain}");
        }
        for quoted in [
            "1.0",
            "42",
            "1e3",
            "yes",
            "on",
            "No",
            "null",
            "~",
            "2024-01-01",
            "1:20",
            "0755",
            "",
            "a b",
            "a: b",
            "a #b",
            "-x",
            "[x]",
            "{x}",
            "x,y",
            "*x",
            "&x",
            "!x",
            "'x'",
            "\"x\"",
        ] {
            assert!(!plain_is_safe(quoted), "{quoted}");
        }
    }
}
