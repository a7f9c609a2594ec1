//! A step binary's run as a test sees it: its exit code, the outputs it wrote in its
//! `--outputs-dir`, and its stdout and stderr together.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Output;

pub struct StepRun {
    pub code: Option<i32>,
    pub outputs: BTreeMap<String, String>,
    pub text: String,
}

impl StepRun {
    /// Reads the run `out` and the files of `names` (the step's `OUTPUTS`) in `dir`.
    pub fn read(out: &Output, dir: &Path, names: &[&str]) -> StepRun {
        let outputs = names
            .iter()
            .filter_map(|name| {
                let text = std::fs::read_to_string(dir.join(name)).ok()?;
                Some((name.to_string(), text))
            })
            .collect();
        StepRun {
            code: out.status.code(),
            outputs,
            text: format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        }
    }

    /// Fails the test, with what the step said, unless it exited 0.
    pub fn ok(self) -> StepRun {
        assert_eq!(self.code, Some(0), "{}", self.text);
        self
    }

    /// Fails the test when any of `secrets` shows in what the step printed.
    pub fn hiding(self, secrets: &[&str]) -> StepRun {
        for secret in secrets {
            assert!(!self.text.contains(secret), "a secret shown: {}", self.text);
        }
        self
    }

    /// Output `name`; fails the test when the step did not write it.
    pub fn output(&self, name: &str) -> &str {
        self.outputs
            .get(name)
            .unwrap_or_else(|| panic!("no output {name}: {}", self.text))
    }
}
