//! The lossless edit of one kustomization file: only the values that change are rewritten;
//! comments, key order, quoting, indentation, anchors and line endings stay as they are.
//!
//! Each edit is applied twice: to the text through `yaml-edit` (how it is written) and to a
//! `serde_yaml` model of the file (what it means). The edited text must parse to the edited
//! model, or nothing is written: a formatting surprise in an odd file becomes an error instead of
//! a wrong commit.

use std::collections::HashMap;
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
    /// `replicas:` entries (NAME, COUNT), added when missing.
    pub replicas: Vec<(String, i32)>,
    /// Put every Deployment and StatefulSet of the environment to sleep.
    pub sleep: Option<Sleep>,
    /// Undo a sleep exactly (before the other edits of the run).
    pub wake: bool,
}

/// A sleep as recorded in the kustomization's own `metadata.annotations` (kustomize never copies
/// those onto the resources it renders).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sleep {
    /// RFC 3339, UTC.
    pub since: String,
    /// Why: requested, idle, night, capacity (shown on the card).
    pub reason: String,
}

/// When the environment went to sleep (the first sleep's time: a repeated sleep keeps it).
pub const ASLEEP_SINCE: &str = "sandbox-steps.io/asleep-since";
/// Why it sleeps.
pub const ASLEEP_REASON: &str = "sandbox-steps.io/asleep-reason";
/// The `replicas:` entries as they were before the sleep set them to 0, `NAME=COUNT,...`: waking
/// restores exactly these; workloads without an entry get theirs back by removing the patches.
pub const REPLICAS_BEFORE_SLEEP: &str = "sandbox-steps.io/replicas-before-sleep";

/// The kinds a sleep scales to 0: by kind, with no names, so a workload added to the environment
/// while it sleeps sleeps too.
pub const SLEEP_KINDS: [&str; 2] = ["Deployment", "StatefulSet"];

/// The JSON 6902 patch a sleep adds per kind. `add` (not `replace`) sets `spec.replicas` whether
/// or not the manifest has it. kustomize applies `replicas:` entries after `patches:`
/// (ReplicaCountTransformer runs after PatchTransformer), so those entries are set to 0 as well.
pub const SLEEP_PATCH: &str = r#"[{"op": "add", "path": "/spec/replicas", "value": 0}]"#;

/// Why a file cannot be patched.
#[derive(Debug, PartialEq, Eq)]
pub enum PatchError {
    /// Not YAML, or not a kustomization's shape (exit 2).
    Invalid(String),
    /// The edited text does not mean what the edit asked for (a bug; exit 1, nothing written).
    Unfaithful(String),
}

pub const BYTE_ORDER_MARK: char = '\u{feff}';

/// The largest kustomization patch-kustomize reads: real ones are a few kB; the lossless editor
/// holds a tree of the file, about 16 bytes per byte, in pods limited to 128 MiB.
pub const MAX_FILE_BYTES: usize = 1 << 20;

/// The deepest nesting of flow collections (`[`, `{`) accepted; kustomizations use a handful.
pub const MAX_FLOW_DEPTH: usize = 64;

/// The deepest block nesting accepted, as a column: a line's indentation plus its leading `- `
/// and `? ` indicators (`- - - x` nests three deep on one line).
pub const MAX_BLOCK_COLUMN: usize = 256;

/// The most images one run sets: each edit of the lossless editor's tree costs time in the
/// length of the list it edits (a tree of shared nodes is rebuilt up to the root), so the number
/// of edits is bounded, not only the file.
pub const MAX_IMAGES: usize = 1000;

/// Refuses, in one linear pass and before any parser sees it, a file too large or nested too
/// deep for a kustomization: parsers of such input use time and memory out of proportion to its
/// size (a 400 kB file nested 200,000 deep, a 50 MB file).
pub fn check_limits(text: &str) -> Result<(), String> {
    if text.len() > MAX_FILE_BYTES {
        return Err(format!(
            "{} bytes: larger than the {} bytes patch-kustomize reads (kustomizations are a few \
             kB)",
            text.len(),
            MAX_FILE_BYTES
        ));
    }
    let mut depth = 0usize;
    let mut quote: Option<char> = None;
    for (number, line) in text.lines().enumerate() {
        let indent = line.len() - line.trim_start_matches([' ', '\t']).len();
        let mut column = indent;
        let mut rest = &line[indent..];
        while let Some(after) = rest.strip_prefix("- ").or_else(|| rest.strip_prefix("? ")) {
            let trimmed = after.trim_start_matches(' ');
            column += rest.len() - trimmed.len();
            rest = trimmed;
        }
        if column > MAX_BLOCK_COLUMN {
            return Err(format!(
                "line {}: nested {column} columns deep; patch-kustomize reads kustomizations \
                 nested at most {MAX_BLOCK_COLUMN} columns",
                number + 1
            ));
        }
        // Flow collections outside quoted scalars and comments. A quote opens a scalar only where
        // a token starts (after a blank or `[`, `{`, `,`), as in YAML, so `it's` opens nothing; an
        // unclosed quote can only make brackets be counted, never hidden.
        let mut previous: Option<char> = None;
        let mut escaped = false;
        let mut chars = line.chars().peekable();
        while let Some(c) = chars.next() {
            match quote {
                Some('"') if escaped => escaped = false,
                Some('"') if c == '\\' => escaped = true,
                // `''` inside single quotes is a quote, not the end.
                Some('\'') if c == '\'' && chars.peek() == Some(&'\'') => {
                    chars.next();
                }
                Some(q) if c == q => quote = None,
                Some(_) => {}
                None => {
                    let token_start =
                        previous.is_none_or(|p| p.is_whitespace() || matches!(p, '[' | '{' | ','));
                    match c {
                        '"' | '\'' if token_start => quote = Some(c),
                        '#' if previous.is_none_or(char::is_whitespace) => break,
                        '[' | '{' => {
                            depth += 1;
                            if depth > MAX_FLOW_DEPTH {
                                return Err(format!(
                                    "line {}: flow collections ([ ], {{ }}) nested more than \
                                     {MAX_FLOW_DEPTH} deep",
                                    number + 1
                                ));
                            }
                        }
                        ']' | '}' => depth = depth.saturating_sub(1),
                        _ => {}
                    }
                }
            }
            previous = Some(c);
        }
    }
    Ok(())
}

impl Patch {
    /// The file's new text (equal to `text` when every value is already set).
    pub fn apply(&self, text: &str) -> Result<String, PatchError> {
        // A UTF-8 byte-order mark (editors on Windows write one) is kept as it is, outside the
        // YAML: serde_yaml would read it as the start of a second document.
        if let Some(body) = text.strip_prefix(BYTE_ORDER_MARK) {
            return Ok(format!("{BYTE_ORDER_MARK}{}", self.apply(body)?));
        }
        check_limits(text).map_err(PatchError::Invalid)?;
        if self.images.len() > MAX_IMAGES {
            return Err(PatchError::Invalid(format!(
                "{} images to set: more than the {MAX_IMAGES} one run sets",
                self.images.len()
            )));
        }
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
        if !self.images.is_empty() {
            set_images(&root, &self.images)?;
            set_images_model(model_root, &self.images)?;
        }
        for literal in &self.literals {
            set_literal(&root, literal)?;
            set_literal_model(model_root, literal)?;
        }
        for (key, value) in &self.labels {
            set_label(&root, key, value)?;
            set_label_model(model_root, key, value)?;
        }
        if self.wake {
            for edit in wake_edits(model_root)? {
                edit.apply(&root, model_root)?;
            }
        }
        for (name, count) in &self.replicas {
            ReplicaEdit::Count(name.clone(), *count).apply(&root, model_root)?;
        }
        if let Some(sleep) = &self.sleep {
            for edit in sleep_edits(model_root, sleep)? {
                edit.apply(&root, model_root)?;
            }
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

/// Every image of the patch, in one pass over `images:` (an index by name, so that a file with
/// thousands of images is patched in linear time, not one scan of the list per image).
fn set_images(root: &Mapping, patch: &[ImageSet]) -> Result<(), PatchError> {
    let images = sequence_or_new(root, "images")?;
    let mut by_name: HashMap<String, Mapping> = HashMap::new();
    for item in images.values() {
        if let YamlNode::Mapping(entry) = item {
            if let Some(name) = scalar_text(entry.get("name")) {
                // The first entry of a name is the one kustomize uses.
                by_name.entry(name).or_insert(entry);
            }
        }
    }
    for image in patch {
        let entry = match by_name.get(&image.name) {
            Some(entry) => entry.clone(),
            None => {
                let entry = push_named(&images, &image.name)?;
                by_name.insert(image.name.clone(), entry.clone());
                entry
            }
        };
        set_image(&entry, image);
    }
    Ok(())
}

fn set_image(entry: &Mapping, image: &ImageSet) {
    if let Some(new_name) = &image.new_name {
        set_scalar_after(entry, "newName", new_name, &["name"]);
    }
    if image.sets_version() {
        for (key, value, after) in [
            ("newTag", &image.new_tag, &["newName", "name"][..]),
            ("digest", &image.digest, &["newTag", "newName", "name"][..]),
        ] {
            match value {
                Some(value) => set_scalar_after(entry, key, value, after),
                None => {
                    entry.remove(key);
                }
            }
        }
    }
}

fn set_images_model(root: &mut Model, patch: &[ImageSet]) -> Result<(), PatchError> {
    let images = model_sequence(root, "images")?;
    let mut by_name: HashMap<String, usize> = HashMap::new();
    for (at, item) in images.iter().enumerate() {
        if let Some(name) = item.get("name").and_then(Value::as_str) {
            by_name.entry(name.to_owned()).or_insert(at);
        }
    }
    for image in patch {
        let at = match by_name.get(&image.name) {
            Some(at) => *at,
            None => {
                let mut entry = Model::new();
                entry.insert("name".into(), image.name.as_str().into());
                images.push(Value::Mapping(entry));
                by_name.insert(image.name.clone(), images.len() - 1);
                images.len() - 1
            }
        };
        let entry = images[at]
            .as_mapping_mut()
            .ok_or_else(|| PatchError::Invalid("an images: entry is not a mapping".into()))?;
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

// ---- sleep and wake ------------------------------------------------------------------------

/// Whether a kustomization's text records a sleep, and since when and why.
pub fn asleep(text: &str) -> Option<Sleep> {
    let text = text.strip_prefix(BYTE_ORDER_MARK).unwrap_or(text);
    let model: Value = serde_yaml::from_str(text).ok()?;
    let annotations = model.get("metadata")?.get("annotations")?;
    let get = |key: &str| {
        annotations
            .get(key)
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    Some(Sleep {
        since: get(ASLEEP_SINCE)?,
        reason: get(ASLEEP_REASON).unwrap_or_default(),
    })
}

/// One edit of a sleep or a wake, applied alike to the text and to the model.
enum ReplicaEdit {
    /// `metadata.annotations[key]` set, or removed (with `annotations:` and `metadata:` when that
    /// leaves them empty).
    Annotation(&'static str, Option<String>),
    /// The `replicas:` entry of a name set to a count (added when missing).
    Count(String, i32),
    /// The sleep patch of a kind added to `patches:`, or removed (with `patches:` when empty).
    SleepPatch(&'static str, bool),
}

impl ReplicaEdit {
    fn apply(&self, root: &Mapping, model: &mut Model) -> Result<(), PatchError> {
        match self {
            ReplicaEdit::Annotation(key, value) => {
                set_annotation(root, key, value.as_deref())?;
                set_annotation_model(model, key, value.as_deref())
            }
            ReplicaEdit::Count(name, count) => {
                set_replica_count(root, name, *count)?;
                set_replica_count_model(model, name, *count)
            }
            ReplicaEdit::SleepPatch(kind, present) => {
                set_sleep_patch(root, kind, *present)?;
                set_sleep_patch_model(model, kind, *present)
            }
        }
    }
}

/// The annotations of the kustomization (the model's), when there are any.
fn model_annotations(model: &Model) -> Option<&Model> {
    model.get("metadata")?.get("annotations")?.as_mapping()
}

/// `NAME=COUNT,...` read back.
fn parse_record(text: &str) -> Result<Vec<(String, i32)>, PatchError> {
    text.split(',')
        .filter(|item| !item.is_empty())
        .map(|item| {
            item.split_once('=')
                .and_then(|(name, count)| Some((name.to_owned(), count.parse().ok()?)))
                .ok_or_else(|| {
                    PatchError::Invalid(format!(
                        "metadata.annotations[{REPLICAS_BEFORE_SLEEP}]: {item:?} is not \
                         NAME=COUNT"
                    ))
                })
        })
        .collect()
}

/// The `replicas:` entries of the model, (name, count).
fn model_replicas(model: &Model) -> Result<Vec<(String, i32)>, PatchError> {
    let Some(replicas) = model.get("replicas").filter(|v| !v.is_null()) else {
        return Ok(Vec::new());
    };
    let replicas = replicas
        .as_sequence()
        .ok_or_else(|| PatchError::Invalid("replicas: is not a list".into()))?;
    replicas
        .iter()
        .map(|entry| {
            let name = entry.get("name").and_then(Value::as_str);
            let count = entry
                .get("count")
                .and_then(Value::as_i64)
                .and_then(|c| i32::try_from(c).ok());
            match (name, count) {
                (Some(name), Some(count)) => Ok((name.to_owned(), count)),
                _ => Err(PatchError::Invalid(
                    "a replicas: entry without a name and a whole count".into(),
                )),
            }
        })
        .collect()
}

/// A sleep: every `replicas:` entry to 0 (the counts recorded first, once: a repeated sleep
/// keeps the first record and time), the annotations, and the patches by kind.
fn sleep_edits(model: &Model, sleep: &Sleep) -> Result<Vec<ReplicaEdit>, PatchError> {
    let annotations = model_annotations(model);
    let annotation = |key: &str| {
        annotations
            .and_then(|a| a.get(key))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let mut record = match annotation(REPLICAS_BEFORE_SLEEP) {
        Some(text) => parse_record(&text)?,
        None => Vec::new(),
    };
    let recorded = record.len();
    let mut edits = Vec::new();
    for (name, count) in model_replicas(model)? {
        if !record.iter().any(|(n, _)| *n == name) {
            record.push((name.clone(), count));
        }
        if count != 0 {
            edits.push(ReplicaEdit::Count(name, 0));
        }
    }
    if annotation(ASLEEP_SINCE).is_none() {
        edits.push(ReplicaEdit::Annotation(
            ASLEEP_SINCE,
            Some(sleep.since.clone()),
        ));
    }
    if annotation(ASLEEP_REASON).is_none() {
        edits.push(ReplicaEdit::Annotation(
            ASLEEP_REASON,
            Some(sleep.reason.clone()),
        ));
    }
    if record.len() > recorded {
        let text: Vec<String> = record.iter().map(|(n, c)| format!("{n}={c}")).collect();
        edits.push(ReplicaEdit::Annotation(
            REPLICAS_BEFORE_SLEEP,
            Some(text.join(",")),
        ));
    }
    edits.extend(SLEEP_KINDS.map(|kind| ReplicaEdit::SleepPatch(kind, true)));
    Ok(edits)
}

/// A wake: the recorded counts back (entries removed since stay removed), the annotations and
/// the patches gone. Nothing recorded and no patches: nothing to do.
fn wake_edits(model: &Model) -> Result<Vec<ReplicaEdit>, PatchError> {
    let record = model_annotations(model)
        .and_then(|a| a.get(REPLICAS_BEFORE_SLEEP))
        .and_then(Value::as_str)
        .map(parse_record)
        .transpose()?
        .unwrap_or_default();
    let present = model_replicas(model)?;
    let mut edits: Vec<ReplicaEdit> = record
        .into_iter()
        .filter(|(name, _)| present.iter().any(|(n, _)| n == name))
        .map(|(name, count)| ReplicaEdit::Count(name, count))
        .collect();
    edits.extend(
        [REPLICAS_BEFORE_SLEEP, ASLEEP_REASON, ASLEEP_SINCE]
            .map(|key| ReplicaEdit::Annotation(key, None)),
    );
    edits.extend(SLEEP_KINDS.map(|kind| ReplicaEdit::SleepPatch(kind, false)));
    Ok(edits)
}

fn set_annotation(root: &Mapping, key: &str, value: Option<&str>) -> Result<(), PatchError> {
    let metadata = match root.get("metadata") {
        Some(YamlNode::Mapping(m)) => Some(m),
        node if is_null(node.as_ref()) => None,
        _ => return Err(PatchError::Invalid("metadata: is not a mapping".into())),
    };
    let Some(value) = value else {
        let Some(metadata) = metadata else {
            return Ok(());
        };
        let Some(YamlNode::Mapping(annotations)) = metadata.get("annotations") else {
            return Ok(());
        };
        annotations.remove(key);
        if annotations.is_empty() {
            metadata.remove("annotations");
        }
        if metadata.is_empty() {
            root.remove("metadata");
        }
        return Ok(());
    };
    let metadata = match metadata {
        Some(m) => m,
        None => {
            // Where `kustomize create` puts it: after apiVersion and kind.
            match ["kind", "apiVersion"]
                .into_iter()
                .find(|k| root.contains_key(*k))
            {
                Some(after) => {
                    root.insert_after(after, "metadata", Mapping::new());
                }
                None => root.insert_at_index(0, "metadata", Mapping::new()),
            }
            root.get_mapping("metadata")
                .ok_or_else(|| PatchError::Unfaithful("could not add metadata:".into()))?
        }
    };
    let annotations = mapping_or_new(&metadata, "annotations")?;
    // Always quoted: an unquoted time is a timestamp to YAML 1.1 readers, and annotations are
    // strings.
    if scalar_text(annotations.get(key)).as_deref() != Some(value) {
        annotations.set(key, ScalarValue::double_quoted(value));
    }
    Ok(())
}

fn set_annotation_model(
    model: &mut Model,
    key: &str,
    value: Option<&str>,
) -> Result<(), PatchError> {
    match value {
        Some(value) => {
            let metadata = model_mapping(model, "metadata")?;
            model_mapping(metadata, "annotations")?.insert(key.into(), value.into());
        }
        None => {
            let Some(metadata) = model.get_mut("metadata").and_then(Value::as_mapping_mut) else {
                return Ok(());
            };
            if let Some(annotations) = metadata
                .get_mut("annotations")
                .and_then(Value::as_mapping_mut)
            {
                annotations.remove(key);
                if annotations.is_empty() {
                    metadata.remove("annotations");
                }
            }
            if metadata.is_empty() {
                model.remove("metadata");
            }
        }
    }
    Ok(())
}

fn set_replica_count(root: &Mapping, name: &str, count: i32) -> Result<(), PatchError> {
    let replicas = sequence_or_new(root, "replicas")?;
    let entry = match find_item(&replicas, |m| {
        scalar_text(m.get("name")).as_deref() == Some(name)
    }) {
        Some(entry) => entry,
        None => push_named(&replicas, name)?,
    };
    if scalar_text(entry.get("count")) != Some(count.to_string()) {
        entry.set("count", ScalarValue::from(count));
    }
    Ok(())
}

fn set_replica_count_model(model: &mut Model, name: &str, count: i32) -> Result<(), PatchError> {
    let replicas = model_sequence(model, "replicas")?;
    let found = replicas
        .iter_mut()
        .filter_map(Value::as_mapping_mut)
        .find(|m| m.get("name").and_then(Value::as_str) == Some(name));
    match found {
        Some(entry) => {
            entry.insert("count".into(), count.into());
        }
        None => {
            let mut entry = Model::new();
            entry.insert("name".into(), name.into());
            entry.insert("count".into(), count.into());
            replicas.push(Value::Mapping(entry));
        }
    }
    Ok(())
}

/// Whether a `patches:` item is the sleep patch of `kind`, as a sleep writes it.
fn is_sleep_patch_text(item: &Mapping, kind: &str) -> bool {
    let target_is_kind = match item.get("target") {
        Some(YamlNode::Mapping(target)) => {
            target.len() == 1 && scalar_text(target.get("kind")).as_deref() == Some(kind)
        }
        _ => false,
    };
    target_is_kind
        && item.len() == 2
        && scalar_text(item.get("patch")).as_deref() == Some(SLEEP_PATCH)
}

fn is_sleep_patch_model(item: &Value, kind: &str) -> bool {
    let Some(item) = item.as_mapping() else {
        return false;
    };
    let target_is_kind = item
        .get("target")
        .and_then(Value::as_mapping)
        .is_some_and(|t| t.len() == 1 && t.get("kind").and_then(Value::as_str) == Some(kind));
    target_is_kind
        && item.len() == 2
        && item.get("patch").and_then(Value::as_str) == Some(SLEEP_PATCH)
}

fn set_sleep_patch(root: &Mapping, kind: &str, present: bool) -> Result<(), PatchError> {
    if !present {
        let Some(patches) = root.get_sequence("patches") else {
            return Ok(());
        };
        while let Some(at) = patches.values().position(
            |item| matches!(item, YamlNode::Mapping(ref m) if is_sleep_patch_text(m, kind)),
        ) {
            patches.remove(at);
        }
        if patches.is_empty() {
            root.remove("patches");
        }
        return Ok(());
    }
    let patches = sequence_or_new(root, "patches")?;
    if find_item(&patches, |m| is_sleep_patch_text(m, kind)).is_some() {
        return Ok(());
    }
    let entry = Mapping::new();
    let target = Mapping::new();
    target.set("kind", ScalarValue::plain(kind));
    entry.set("target", target);
    entry.set("patch", ScalarValue::single_quoted(SLEEP_PATCH));
    patches.push(&entry);
    Ok(())
}

fn set_sleep_patch_model(model: &mut Model, kind: &str, present: bool) -> Result<(), PatchError> {
    if !present {
        let Some(patches) = model.get_mut("patches").and_then(Value::as_sequence_mut) else {
            return Ok(());
        };
        patches.retain(|item| !is_sleep_patch_model(item, kind));
        if patches.is_empty() {
            model.remove("patches");
        }
        return Ok(());
    }
    let patches = model_sequence(model, "patches")?;
    if !patches.iter().any(|item| is_sleep_patch_model(item, kind)) {
        let mut target = Model::new();
        target.insert("kind".into(), kind.into());
        let mut entry = Model::new();
        entry.insert("target".into(), Value::Mapping(target));
        entry.insert("patch".into(), SLEEP_PATCH.into());
        patches.push(Value::Mapping(entry));
    }
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

    #[test]
    fn files_too_large_or_too_deep_are_refused_before_parsing() {
        let refused = |text: &str| {
            let started = std::time::Instant::now();
            let why = invalid(namespace("apps-sbx-pr-42").apply(text));
            assert!(
                started.elapsed() < std::time::Duration::from_secs(1),
                "{why}"
            );
            why
        };
        let big = format!("kind: Kustomization\n# {}\n", "x".repeat(MAX_FILE_BYTES));
        assert!(refused(&big).contains("larger than"));
        assert!(refused(&"[".repeat(200_000)).contains("nested more than 64"));
        assert!(refused(&format!("a: {}", "{b: ".repeat(100))).contains("nested more than"));
        assert!(refused(&format!("a:\n{}x", "- ".repeat(1000))).contains("columns deep"));
        let indented: String = (0..300)
            .map(|i| format!("{}k{i}:\n", " ".repeat(i)))
            .collect();
        assert!(refused(&indented).contains("columns deep"));

        // Brackets in quoted scalars and comments, quotes inside plain words, escapes: not nesting.
        let mut ordinary = String::from("kind: Kustomization\nnamespace: old\n");
        for i in 0..100 {
            ordinary.push_str(&format!(
                "# [[[[ {i}\ncommonAnnotations{i}: {{note: \"[[[[ \\\" {{{{\", it's: '[[ '' {{'}}\n"
            ));
        }
        check_limits(&ordinary).unwrap();
        assert!(namespace("apps-sbx-pr-42").apply(&ordinary).is_ok());
    }

    #[test]
    fn thousands_of_images_are_set_in_one_pass() {
        let mut text = String::from("kind: Kustomization\nimages:\n");
        for i in 0..MAX_IMAGES {
            text.push_str(&format!("  - name: acme/app{i}\n    newTag: v1\n"));
        }
        // A second entry of a name: kustomize uses the first, and so do we.
        text.push_str("  - name: acme/app0\n    newTag: kept\n");
        let set = |name: String| ImageSet {
            name,
            new_name: None,
            new_tag: Some("v2".into()),
            digest: None,
        };
        let mut images: Vec<ImageSet> = (1..MAX_IMAGES)
            .map(|i| set(format!("acme/app{i}")))
            .collect();
        images.push(set("acme/app0".into()));
        let patch = Patch {
            images,
            ..Patch::default()
        };
        let out = patch.apply(&text).unwrap();
        assert_eq!(out.matches("newTag: v2").count(), MAX_IMAGES);
        assert!(
            out.ends_with("  - name: acme/app0\n    newTag: kept\n"),
            "{out}"
        );
        let mut too_many = patch.clone();
        too_many.images.push(set("acme/new".into()));
        assert!(invalid(too_many.apply(&text)).contains("more than the 1000"));
    }

    #[test]
    fn a_byte_order_mark_is_kept_outside_the_yaml() {
        let out = namespace("apps-sbx-pr-42")
            .apply("\u{feff}kind: Kustomization\nnamespace: old # keep\n")
            .unwrap();
        assert_eq!(
            out,
            "\u{feff}kind: Kustomization\nnamespace: apps-sbx-pr-42 # keep\n"
        );
    }

    fn sleep() -> Patch {
        Patch {
            sleep: Some(Sleep {
                since: "2026-12-01T20:00:00Z".into(),
                reason: "night".into(),
            }),
            ..Patch::default()
        }
    }

    fn wake() -> Patch {
        Patch {
            wake: true,
            ..Patch::default()
        }
    }

    #[test]
    fn a_sleep_is_undone_byte_for_byte_by_a_wake() {
        let files = [
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - ../../base # the base\n",
            "kind: Kustomization\nmetadata:\n  name: sbx\nresources: [a.yaml]\nreplicas:\n  - name: web\n    count: 3 # three\n  - name: worker\n    count: 0\n",
            "resources:\n- a.yaml\nmetadata:\n  annotations:\n    team: shop\npatches:\n- path: p.yaml\n",
            "replicas: []\nnamespace: x\r\n",
        ];
        for text in files {
            let asleep = sleep().apply(text).unwrap();
            assert_ne!(asleep, text);
            assert_eq!(
                sleep().apply(&asleep).unwrap(),
                asleep,
                "a second sleep changes nothing"
            );
            assert!(asleep.contains(SLEEP_PATCH), "{asleep}");
            let state = super::asleep(&asleep).unwrap();
            assert_eq!(state.since, "2026-12-01T20:00:00Z");
            assert_eq!(state.reason, "night");
            let awake = wake().apply(&asleep).unwrap();
            assert_eq!(awake, text, "asleep:\n{asleep}");
            assert_eq!(super::asleep(&awake), None);
            assert_eq!(
                wake().apply(text).unwrap(),
                text,
                "waking an awake file is a no-op"
            );
        }
    }

    #[test]
    fn a_sleep_records_the_counts_once_and_the_wake_restores_them() {
        let text = "kind: Kustomization\nreplicas:\n  - name: web\n    count: 3\n";
        let asleep = sleep().apply(text).unwrap();
        let model: Value = serde_yaml::from_str(&asleep).unwrap();
        assert_eq!(model["replicas"][0]["count"], Value::from(0));
        assert_eq!(
            model["metadata"]["annotations"][REPLICAS_BEFORE_SLEEP],
            Value::from("web=3")
        );
        // An entry added while asleep (a human's commit) is put to sleep and recorded by the next
        // sleep; the first record and time are kept.
        let later = asleep.replace("replicas:\n", "replicas:\n  - name: api\n    count: 2\n");
        let mut again = sleep();
        again.sleep.as_mut().unwrap().since = "2026-12-02T20:00:00Z".into();
        let asleep2 = again.apply(&later).unwrap();
        let model: Value = serde_yaml::from_str(&asleep2).unwrap();
        assert_eq!(
            model["metadata"]["annotations"][REPLICAS_BEFORE_SLEEP],
            Value::from("web=3,api=2")
        );
        assert_eq!(
            super::asleep(&asleep2).unwrap().since,
            "2026-12-01T20:00:00Z"
        );
        let awake: Value = serde_yaml::from_str(&wake().apply(&asleep2).unwrap()).unwrap();
        assert_eq!(
            awake["replicas"][0],
            serde_yaml::from_str::<Value>("{name: api, count: 2}").unwrap()
        );
        assert_eq!(
            awake["replicas"][1],
            serde_yaml::from_str::<Value>("{name: web, count: 3}").unwrap()
        );
        assert!(awake.get("metadata").is_none() && awake.get("patches").is_none());
    }

    #[test]
    fn set_replicas_adds_or_changes_one_entry() {
        let set = |name: &str, count| Patch {
            replicas: vec![(name.into(), count)],
            ..Patch::default()
        };
        let text = "kind: Kustomization\nreplicas:\n  - name: web # front\n    count: 3\n";
        assert_eq!(
            set("web", 5).apply(text).unwrap(),
            "kind: Kustomization\nreplicas:\n  - name: web # front\n    count: 5\n"
        );
        assert_eq!(set("web", 3).apply(text).unwrap(), text);
        let added: Value = serde_yaml::from_str(&set("worker", 0).apply(text).unwrap()).unwrap();
        assert_eq!(
            added["replicas"][1],
            serde_yaml::from_str::<Value>("{name: worker, count: 0}").unwrap()
        );
        let fresh: Value =
            serde_yaml::from_str(&set("web", 1).apply("kind: Kustomization\n").unwrap()).unwrap();
        assert_eq!(fresh["replicas"][0]["count"], Value::from(1));
        assert!(invalid(set("web", 1).apply("replicas: web\n")).contains("not a list"));
    }

    #[test]
    fn a_malformed_record_is_refused_not_guessed() {
        let text = "kind: Kustomization\nmetadata:\n  annotations:\n    sandbox-steps.io/replicas-before-sleep: web\n";
        assert!(invalid(wake().apply(text)).contains("NAME=COUNT"));
    }
}
