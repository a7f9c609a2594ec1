//! Where the scripts come from: a branch of a git repository (read without a checkout), GCS, or
//! a local path. A source is a file or a directory; a directory's `.sql` files run in name order.

use std::fmt;
use std::path::PathBuf;

use futures_util::{StreamExt, TryStreamExt};
use gcs::{Gcs, Location};
use git_remote::{GitFlags, PathContent};
use step_kit::{escape_untrusted, Context, StepError};

/// Scripts bigger than this are refused: a script is text someone wrote, not a dump (restore-db
/// streams those).
const MAX_SCRIPT: u64 = 64 << 20;

#[derive(Debug, Clone)]
pub enum Source {
    Git {
        repo: String,
        branch: String,
        path: String,
    },
    Gcs(Location),
    Path(PathBuf),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Git { repo, branch, path } => write!(f, "{branch}:{path} of {repo}"),
            Source::Gcs(location) => location.fmt(f),
            Source::Path(path) => write!(f, "{}", path.display()),
        }
    }
}

/// One script: its ledger name (`<directory>/<file>`, or the file's name) and content.
#[derive(Debug, Clone)]
pub struct Script {
    pub name: String,
    pub content: Vec<u8>,
}

impl Script {
    /// Whether the file asks to run outside a transaction: the marker on one of its leading
    /// comment lines.
    pub fn no_transaction(&self) -> bool {
        let text = String::from_utf8_lossy(&self.content[..self.content.len().min(4096)]);
        text.lines()
            .map(str::trim)
            .take_while(|l| l.is_empty() || l.starts_with("--"))
            .filter_map(|l| l.strip_prefix("--"))
            .any(|comment| {
                let words: Vec<&str> = comment.split_whitespace().collect();
                words.join(" ") == crate::NO_TRANSACTION_MARKER.trim_start_matches("-- ")
            })
    }
}

fn is_script(name: &str) -> bool {
    name.ends_with(".sql") && !name.starts_with('.')
}

/// The last component of a directory path, the ledger's prefix of its scripts.
fn set_name(path: &str) -> String {
    path.trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or("")
        .to_owned()
}

fn ledger_name(dir: &str, file: &str) -> String {
    match set_name(dir).as_str() {
        "" | "." => file.to_owned(),
        set => format!("{set}/{file}"),
    }
}

fn too_big(name: &str, size: u64) -> Result<(), StepError> {
    if size > MAX_SCRIPT {
        return Err(StepError::precondition(format!(
            "{}: {size} bytes, more than a script's {} MiB (a dump? restore-db restores those)",
            escape_untrusted(name),
            MAX_SCRIPT >> 20
        )));
    }
    Ok(())
}

impl Source {
    /// `--from`: `gs://...` or a local path.
    pub fn parse_from(text: &str) -> Result<Source, String> {
        if text.starts_with("gs://") {
            return text.parse().map(Source::Gcs);
        }
        if text.contains('\0') {
            return Err("a path without NUL characters".into());
        }
        Ok(Source::Path(PathBuf::from(text)))
    }

    /// The scripts, in the order they run.
    pub async fn read(
        &self,
        git: &GitFlags,
        gcs: &gcs::Settings,
        ctx: &Context,
    ) -> Result<Vec<Script>, StepError> {
        let mut scripts = match self {
            Source::Git { repo, branch, path } => {
                match git_remote::read_branch_path(repo, branch, path, git, ctx).await? {
                    PathContent::Missing => {
                        return Err(StepError::precondition(format!(
                            "{path} is not on branch {branch} of {repo}"
                        )))
                    }
                    PathContent::File(content) => vec![Script {
                        name: set_name(path),
                        content,
                    }],
                    PathContent::Dir(files) => files
                        .into_iter()
                        .filter(|(name, _)| is_script(name))
                        .map(|(name, content)| Script {
                            name: ledger_name(path, &name),
                            content,
                        })
                        .collect(),
                }
            }
            Source::Path(path) => read_path(path)?,
            Source::Gcs(location) => read_gcs(location, gcs, ctx).await?,
        };
        for s in &scripts {
            too_big(&s.name, s.content.len() as u64)?;
        }
        scripts.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(scripts)
    }
}

fn read_path(path: &PathBuf) -> Result<Vec<Script>, StepError> {
    let io =
        |e: std::io::Error| StepError::precondition(format!("cannot read {}: {e}", path.display()));
    let meta = std::fs::metadata(path).map_err(io)?;
    if meta.is_file() {
        too_big(&path.display().to_string(), meta.len())?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        return Ok(vec![Script {
            name,
            content: std::fs::read(path).map_err(io)?,
        }]);
    }
    let dir = path.to_string_lossy().into_owned();
    let mut scripts = Vec::new();
    for entry in std::fs::read_dir(path).map_err(io)? {
        let entry = entry.map_err(io)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !is_script(&name) || !entry.file_type().map_err(io)?.is_file() {
            continue;
        }
        too_big(&name, entry.metadata().map_err(io)?.len())?;
        scripts.push(Script {
            name: ledger_name(&dir, &name),
            content: std::fs::read(entry.path()).map_err(io)?,
        });
    }
    Ok(scripts)
}

async fn read_gcs(
    location: &Location,
    settings: &gcs::Settings,
    ctx: &Context,
) -> Result<Vec<Script>, StepError> {
    let client = Gcs::connect(settings).await?;
    let policy = ctx.retry_policy();
    let mut objects = Vec::new();
    match location {
        Location::Object { bucket, name } => {
            let entry = client.object(bucket, name, &policy).await?;
            objects.push((bucket.clone(), set_name(name), entry));
        }
        Location::Prefix(url) => {
            let pages = client.list(&url.bucket, &url.prefix, &policy);
            futures_util::pin_mut!(pages);
            while let Some(page) = pages.next().await {
                for entry in page? {
                    let Some(file) = entry.name.strip_prefix(&url.prefix) else {
                        continue;
                    };
                    // Directly under the prefix only, as a directory's files.
                    if file.contains('/') || !is_script(file) {
                        continue;
                    }
                    let name = ledger_name(&url.prefix, file);
                    objects.push((url.bucket.clone(), name, entry));
                }
            }
        }
    }
    let mut scripts = Vec::new();
    for (bucket, name, entry) in objects {
        too_big(&name, entry.size)?;
        let content: Vec<bytes::Bytes> = client
            .read(&bucket, &entry.name, entry.generation, &policy)
            .try_collect()
            .await?;
        scripts.push(Script {
            name,
            content: content.concat(),
        });
    }
    Ok(scripts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ledger_names_keep_the_directory_only() {
        assert_eq!(
            ledger_name("db/migrations", "0001.sql"),
            "migrations/0001.sql"
        );
        assert_eq!(
            ledger_name("db/migrations/", "0001.sql"),
            "migrations/0001.sql"
        );
        assert_eq!(
            ledger_name("nightly/migrations/", "0001.sql"),
            "migrations/0001.sql"
        );
        assert_eq!(ledger_name("", "0001.sql"), "0001.sql");
        assert_eq!(set_name("fixtures/seed.sql"), "seed.sql");
    }

    #[test]
    fn the_marker_is_read_from_the_leading_comments_only() {
        let script = |text: &str| Script {
            name: "x.sql".into(),
            content: text.as_bytes().to_vec(),
        };
        assert!(
            script("-- run-sql: no-transaction\nCREATE INDEX CONCURRENTLY ...;").no_transaction()
        );
        assert!(
            script("\n-- index on orders\n--   run-sql: no-transaction  \nSELECT 1;")
                .no_transaction()
        );
        assert!(!script("SELECT 1;\n-- run-sql: no-transaction\n").no_transaction());
        assert!(!script("-- run-sql: no-transactions\n").no_transaction());
    }
}
