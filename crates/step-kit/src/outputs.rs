//! Step outputs: one file per output in `--outputs-dir`, each written atomically, so Argo maps it
//! with `valueFrom.path` and never reads a half-written value; all of them again in the JSON
//! summary printed at the end.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde_json::Value;

use crate::StepError;

#[derive(Debug)]
pub struct Outputs {
    dir: PathBuf,
    values: Mutex<BTreeMap<String, Value>>,
}

impl Outputs {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Outputs {
            dir: dir.into(),
            values: Mutex::new(BTreeMap::new()),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes output `name` with a text value (the file holds exactly `value`, no newline added).
    pub fn set(&self, name: &str, value: &str) -> Result<(), StepError> {
        self.write(name, value.as_bytes())?;
        self.remember(name, Value::String(value.to_owned()));
        Ok(())
    }

    /// Writes output `name` as JSON (for structured outputs such as a list of failed nodes).
    pub fn set_json(&self, name: &str, value: &Value) -> Result<(), StepError> {
        self.write(name, value.to_string().as_bytes())?;
        self.remember(name, value.clone());
        Ok(())
    }

    /// Every output written so far, by name.
    pub fn values(&self) -> BTreeMap<String, Value> {
        self.values.lock().expect("outputs lock").clone()
    }

    fn remember(&self, name: &str, value: Value) {
        self.values
            .lock()
            .expect("outputs lock")
            .insert(name.to_owned(), value);
    }

    fn write(&self, name: &str, bytes: &[u8]) -> Result<(), StepError> {
        // Output names are chosen by step code, never by input; a bad one is a bug.
        let valid = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !valid {
            return Err(StepError::unexpected(format!(
                "output name {name:?} is not of the form [a-z0-9-]+"
            )));
        }
        let fail = |what: &str, e: std::io::Error| {
            StepError::unexpected(format!(
                "cannot {what} output {name} in {}: {e}",
                self.dir.display()
            ))
        };
        if !self.dir.is_dir() {
            std::fs::create_dir_all(&self.dir).map_err(|e| fail("create the directory for", e))?;
        }
        // Temp file in the same directory, then rename: readers see the old file or the new one.
        let mut tmp = tempfile::Builder::new()
            .prefix(&format!(".{name}."))
            .tempfile_in(&self.dir)
            .map_err(|e| fail("create a temp file for", e))?;
        // No fsync: the rename is what makes the write atomic for readers, and a crashed pod
        // re-runs the step rather than reading its old outputs (8 fsyncs were most of a run).
        tmp.write_all(bytes).map_err(|e| fail("write", e))?;
        // Readable by others (tempfile makes 0600): Argo's wait container, which reads outputs,
        // runs as another user than the step under a non-root executor (PSA restricted).
        // Outputs never hold secrets.
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644))
            .map_err(|e| fail("set the mode of", e))?;
        tmp.persist(self.dir.join(name))
            .map_err(|e| fail("rename into place", e.error))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_are_readable_by_another_user() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let outputs = Outputs::new(dir.path().to_owned());
        outputs.set("phase", "Succeeded").unwrap();
        let mode = std::fs::metadata(dir.path().join("phase"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o644);
    }

    #[test]
    fn each_output_is_its_own_file_and_in_the_summary() {
        let dir = tempfile::tempdir().unwrap();
        let out = Outputs::new(dir.path().join("nested/outputs"));
        out.set("environment", "sbx-pr-42").unwrap();
        out.set_json("failed-nodes", &serde_json::json!([{"name": "a"}]))
            .unwrap();
        out.set("environment", "sbx-pr-43").unwrap();
        let read = |n: &str| std::fs::read_to_string(out.dir().join(n)).unwrap();
        assert_eq!(read("environment"), "sbx-pr-43");
        assert_eq!(read("failed-nodes"), r#"[{"name":"a"}]"#);
        let values = out.values();
        assert_eq!(values["environment"], "sbx-pr-43");
        assert_eq!(values["failed-nodes"][0]["name"], "a");
        // no temp files left behind
        let names: Vec<_> = std::fs::read_dir(out.dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }

    #[test]
    fn output_names_cannot_escape_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let out = Outputs::new(dir.path());
        for bad in ["../x", "a/b", "", "Upper", ".hidden"] {
            assert_eq!(out.set(bad, "v").unwrap_err().exit_code(), 1, "{bad}");
        }
    }
}
