//! copy-bucket: copies the objects under a prefix of one GCS bucket to another, server side
//! (the rewrite API: the data never passes through the pod), concurrently, and resumably.
//!
//! How it stays bounded on millions of objects: both listings (source and destination) are
//! streamed page by page, and since GCS lists names in lexicographic order, the two are walked
//! side by side (a merge join on the name relative to each prefix). Each name is then either only
//! in the source (copy), in both (skip when size and CRC32C match, MD5 when CRC32C is missing;
//! copy otherwise), or only in the destination (delete with `--delete-extraneous`). Memory holds
//! a couple of pages of each listing and the objects in flight, never a whole listing; copies
//! start while the listings go on. A re-run after a crash compares again and copies only what is
//! missing or different.

use std::ffi::OsString;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use clap::Parser;
use futures_util::TryStreamExt;
use gcs::{Entry, ErrorClass, Gcs, GcsUrl};
use step_kit::{escape_untrusted, CommonArgs, Context, Progress, RetryPolicy, StepArgs, StepError};
use tokio::sync::mpsc;

pub const NAME: &str = "copy-bucket";

/// The files this step writes in `--outputs-dir`.
pub const OUTPUTS: &[&str] = &["copied", "skipped", "deleted", "bytes"];

/// Names of failed objects kept for the final error (the count is always exact).
const FAILURES_SHOWN: usize = 20;

const EXAMPLE: &str = "\
Example:
  copy-bucket --source gs://acme-integration/documents --dest gs://acme-sbx-pr-42/documents \\
    --exclude '*.tmp' --delete-extraneous
  # outputs: copied=1200 skipped=0 deleted=0 bytes=73400320 (a re-run: copied=0 skipped=1200)

Credentials: Application Default Credentials (Workload Identity in a pod); STORAGE_EMULATOR_HOST
(e.g. http://127.0.0.1:4443) selects an emulator, anonymously.

Exit codes: 0 copied (or nothing to do); 2 not a gs:// URL, an invalid bucket name, source and
destination overlapping, bad flags; 3 a bucket missing, access refused, an object the service
refused; 4 objects still failing after retries (listed; everything else copied), a listing
failing, or the deadline: a re-run copies only what is missing.";

/// Copy the objects under a prefix from one GCS bucket to another.
///
/// Server-side copies (the rewrite API), up to `--concurrency` at once, starting while the source
/// is still being listed. Objects already at the destination with the same size and CRC32C (MD5
/// when there is no CRC32C) are skipped, so a re-run after a crash resumes where it stopped.
/// Content type, cache control, content encoding and custom metadata are copied with the data.
/// The source is never written; a destination overlapping the source is refused.
#[derive(Debug, Parser)]
#[command(name = NAME, version, after_help = EXAMPLE)]
pub struct Args {
    /// Where to copy from: `gs://BUCKET` or `gs://BUCKET/PREFIX` (a folder: `gs://b/docs` is the
    /// objects under `docs/`).
    #[arg(long, value_name = "URL", value_parser = parse_url)]
    pub source: GcsUrl,

    /// Where to copy to: `gs://BUCKET` or `gs://BUCKET/PREFIX`; each object keeps its name relative
    /// to the source prefix. The bucket must exist.
    #[arg(long, value_name = "URL", value_parser = parse_url)]
    pub dest: GcsUrl,

    /// Objects copied (or compared) at once.
    #[arg(long, value_name = "N", default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub concurrency: u16,

    /// Copy only objects whose name (relative to the source prefix) matches one of these globs
    /// (`*` any run of characters, `/` included; `?` one character). Repeat the flag, or separate
    /// globs with commas.
    #[arg(long, value_name = "GLOB", value_delimiter = ',')]
    pub include: Vec<String>,

    /// Leave out objects whose relative name matches one of these globs (applied after
    /// `--include`; also protects matching destination objects from `--delete-extraneous`).
    #[arg(long, value_name = "GLOB", value_delimiter = ',')]
    pub exclude: Vec<String>,

    /// Delete destination objects (under the destination prefix, matching the filters) that are
    /// not in the source.
    #[arg(long)]
    pub delete_extraneous: bool,

    /// List what would be copied and deleted, write nothing (the outputs count what would be
    /// done).
    #[arg(long)]
    pub dry_run: bool,

    /// A GCS emulator's endpoint (`http://127.0.0.1:4443`, or `host:port`), used with anonymous
    /// credentials; without it, Google's endpoint with Application Default Credentials (Workload
    /// Identity in a pod).
    #[arg(long, value_name = "URL", env = gcs::EMULATOR_ENV)]
    pub storage_emulator_host: Option<String>,

    #[command(flatten)]
    pub common: CommonArgs,
}

impl StepArgs for Args {
    const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30 * 60);
    fn common(&self) -> &CommonArgs {
        &self.common
    }
}

fn parse_url(s: &str) -> Result<GcsUrl, String> {
    s.parse()
}

/// Runs the step with `argv` (the first item is the program name); returns the exit code.
pub fn run(argv: impl IntoIterator<Item = OsString>) -> u8 {
    step_kit::run_from(NAME, argv, copy_bucket)
}

async fn copy_bucket(args: Args, ctx: Context) -> Result<(), StepError> {
    if args.source.overlaps(&args.dest) {
        return Err(StepError::invalid(format!(
            "--dest {} overlaps --source {}: refusing to write where the copy reads from (use \
             another bucket, or prefixes neither of which holds the other)",
            escape_untrusted(&args.dest.to_string()),
            escape_untrusted(&args.source.to_string()),
        )));
    }
    for glob in args.include.iter().chain(&args.exclude) {
        if glob.is_empty() {
            return Err(StepError::invalid("--include/--exclude: an empty glob"));
        }
    }
    let mut settings = gcs::Settings::from_env();
    settings.emulator = args
        .storage_emulator_host
        .clone()
        .filter(|h| !h.trim().is_empty());
    settings.max_idle_connections = usize::from(args.concurrency);
    let client = Gcs::connect(&settings).await?;
    let copy = Copy {
        gcs: client,
        policy: ctx.retry_policy(),
        progress: Progress::new("objects", 0),
        tally: Tally::default(),
        args,
    };
    tracing::info!(
        "{} {} to {} ({} at once{}{})",
        if copy.args.dry_run {
            "dry run: comparing"
        } else {
            "copying"
        },
        escape_untrusted(&copy.args.source.to_string()),
        escape_untrusted(&copy.args.dest.to_string()),
        copy.args.concurrency,
        if copy.args.delete_extraneous {
            ", deleting extraneous objects"
        } else {
            ""
        },
        if copy.args.dry_run {
            ", writing nothing"
        } else {
            ""
        },
    );
    let result = copy.run().await;
    copy.progress.finish();
    let t = &copy.tally;
    let (copied, skipped, deleted, bytes) = (
        t.copied.load(Ordering::Relaxed),
        t.skipped.load(Ordering::Relaxed),
        t.deleted.load(Ordering::Relaxed),
        t.bytes.load(Ordering::Relaxed),
    );
    ctx.outputs.set("copied", &copied.to_string())?;
    ctx.outputs.set("skipped", &skipped.to_string())?;
    ctx.outputs.set("deleted", &deleted.to_string())?;
    ctx.outputs.set("bytes", &bytes.to_string())?;
    let verb = if copy.args.dry_run {
        "would copy"
    } else {
        "copied"
    };
    tracing::info!(
        copied,
        skipped,
        deleted,
        bytes,
        "{verb} {copied} objects ({bytes} bytes), skipped {skipped} already there, {} {deleted}",
        if copy.args.dry_run {
            "would delete"
        } else {
            "deleted"
        }
    );
    result?;
    let failures = copy.tally.failures.lock().expect("failures").to_error();
    failures
}

#[derive(Default)]
struct Tally {
    copied: AtomicU64,
    skipped: AtomicU64,
    deleted: AtomicU64,
    bytes: AtomicU64,
    failures: Mutex<Failures>,
}

/// Objects that could not be copied or deleted; the run goes on with the others.
#[derive(Default)]
struct Failures {
    transient: u64,
    permanent: u64,
    shown: Vec<String>,
}

impl Failures {
    fn add(&mut self, err: &gcs::Error) {
        if err.is_transient() {
            self.transient += 1;
        } else {
            self.permanent += 1;
        }
        if self.shown.len() < FAILURES_SHOWN {
            self.shown.push(err.message.clone());
        }
    }

    fn to_error(&self) -> Result<(), StepError> {
        let total = self.transient + self.permanent;
        if total == 0 {
            return Ok(());
        }
        let more = if total > self.shown.len() as u64 {
            format!("; and {} more", total - self.shown.len() as u64)
        } else {
            String::new()
        };
        let message = format!(
            "{total} objects failed ({} still transient after retries, {} refused), everything \
             else was copied: {}{more}",
            self.transient,
            self.permanent,
            self.shown.join("; ")
        );
        // Refusals (400, 412…) come back the same on a retry; throttling and outages may not.
        Err(if self.permanent > 0 {
            StepError::precondition(message)
        } else {
            StepError::transient(message).with_hint("a re-run copies only what is missing")
        })
    }
}

/// One page of a listing, or its end (a closed channel without `End` is a listing that failed).
enum Page {
    Entries(Vec<Entry>),
    End,
}

enum Work {
    /// A source object (relative name) to copy.
    Copy(Entry),
    /// A destination object (relative name) not in the source.
    Delete(Entry),
}

struct Copy {
    gcs: Gcs,
    policy: RetryPolicy,
    progress: Progress,
    tally: Tally,
    args: Args,
}

impl Copy {
    fn included(&self, relative: &str) -> bool {
        included(&self.args.include, &self.args.exclude, relative)
    }

    async fn run(&self) -> Result<(), StepError> {
        // Two pages of each listing ahead at most: the next one is fetched while this one is
        // compared.
        let (source_tx, source_rx) = mpsc::channel(1);
        let (dest_tx, dest_rx) = mpsc::channel(1);
        let workers = usize::from(self.args.concurrency);
        let (work_tx, work_rx) = mpsc::channel(workers * 2);
        let source = Cursor::new(source_rx, &self.args.source, "source");
        let dest = Cursor::new(dest_rx, &self.args.dest, "destination");
        tokio::try_join!(
            self.list(&self.args.source, "source", source_tx),
            self.list(&self.args.dest, "destination", dest_tx),
            self.merge(source, dest, work_tx),
            self.work(work_rx, workers),
        )?;
        Ok(())
    }

    async fn list(
        &self,
        url: &GcsUrl,
        which: &str,
        tx: mpsc::Sender<Page>,
    ) -> Result<(), StepError> {
        let mut pages = std::pin::pin!(self.gcs.list(&url.bucket, &url.prefix, &self.policy));
        loop {
            let page = match pages.try_next().await {
                Ok(Some(page)) => Page::Entries(page),
                Ok(None) => Page::End,
                Err(e) if e.class == ErrorClass::NotFound => {
                    return Err(StepError::precondition(format!(
                        "the {which} bucket gs://{} does not exist",
                        url.bucket
                    ))
                    .with_hint(if which == "source" {
                        "check --source"
                    } else {
                        "create the sandbox's bucket first (the infrastructure step)"
                    }));
                }
                Err(e) => return Err(e.into_step_error()),
            };
            let end = matches!(page, Page::End);
            if tx.send(page).await.is_err() || end {
                return Ok(());
            }
        }
    }

    /// Walks both listings in name order and hands out what to copy and delete.
    async fn merge(
        &self,
        mut source: Cursor,
        mut dest: Cursor,
        work: mpsc::Sender<Work>,
    ) -> Result<(), StepError> {
        let mut s = source.next().await?;
        let mut d = dest.next().await?;
        loop {
            let order = match (&s, &d) {
                (None, None) => return Ok(()),
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (Some(a), Some(b)) => a.name.cmp(&b.name),
            };
            let mut item = None;
            match order {
                std::cmp::Ordering::Less => {
                    let entry = s.take().expect("source entry");
                    s = source.next().await?;
                    if self.included(&entry.name) {
                        self.progress.add_total(1);
                        item = Some(Work::Copy(entry));
                    }
                }
                std::cmp::Ordering::Greater => {
                    let entry = d.take().expect("destination entry");
                    d = dest.next().await?;
                    if self.args.delete_extraneous && self.included(&entry.name) {
                        self.progress.add_total(1);
                        item = Some(Work::Delete(entry));
                    }
                }
                std::cmp::Ordering::Equal => {
                    let entry = s.take().expect("source entry");
                    let there = d.take().expect("destination entry");
                    s = source.next().await?;
                    d = dest.next().await?;
                    if self.included(&entry.name) {
                        self.progress.add_total(1);
                        if entry.same_content(&there) {
                            tracing::debug!("{} is already there", escape_untrusted(&entry.name));
                            self.tally.skipped.fetch_add(1, Ordering::Relaxed);
                            self.progress.advance(1, 0);
                        } else {
                            item = Some(Work::Copy(entry));
                        }
                    }
                }
            }
            if let Some(item) = item {
                if work.send(item).await.is_err() {
                    return Ok(()); // the workers stopped: their error is the run's
                }
            }
        }
    }

    async fn work(&self, rx: mpsc::Receiver<Work>, workers: usize) -> Result<(), StepError> {
        futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|work| (Ok(work), rx))
        })
        .try_for_each_concurrent(workers, |work| async move {
            match work {
                Work::Copy(entry) => self.copy(entry).await,
                Work::Delete(entry) => self.delete(entry).await,
            }
        })
        .await
    }

    async fn copy(&self, entry: Entry) -> Result<(), StepError> {
        let (source, dest) = (&self.args.source, &self.args.dest);
        let (from, to) = (source.object(&entry.name), dest.object(&entry.name));
        if self.args.dry_run {
            tracing::info!(
                "dry run: would copy {} ({} bytes)",
                escape_untrusted(&from),
                entry.size
            );
            self.copied(entry.size);
            return Ok(());
        }
        match self
            .gcs
            .rewrite((&source.bucket, &from), (&dest.bucket, &to), &self.policy)
            .await
        {
            Ok(new) => {
                if !new.same_content(&entry) {
                    tracing::warn!(
                        "{}: the copy's checksum differs from the listing's: the source changed \
                         while copying (a re-run compares again)",
                        escape_untrusted(&from)
                    );
                }
                tracing::debug!("copied {}", escape_untrusted(&from));
                self.copied(entry.size);
                Ok(())
            }
            Err(e) if e.class == ErrorClass::NotFound => {
                // Deleted since it was listed (or the destination bucket went away: the next
                // listing says so).
                tracing::warn!(
                    "{} is gone since it was listed: not copied",
                    escape_untrusted(&from)
                );
                self.progress.advance(1, 0);
                Ok(())
            }
            Err(e) => self.failed(e),
        }
    }

    fn copied(&self, size: u64) {
        self.tally.copied.fetch_add(1, Ordering::Relaxed);
        self.tally.bytes.fetch_add(size, Ordering::Relaxed);
        self.progress.advance(1, size);
    }

    async fn delete(&self, entry: Entry) -> Result<(), StepError> {
        let dest = &self.args.dest;
        let name = dest.object(&entry.name);
        if self.args.dry_run {
            tracing::info!(
                "dry run: would delete gs://{}/{} (not in the source)",
                dest.bucket,
                escape_untrusted(&name)
            );
            self.tally.deleted.fetch_add(1, Ordering::Relaxed);
            self.progress.advance(1, 0);
            return Ok(());
        }
        match self.gcs.delete(&dest.bucket, &name, &self.policy).await {
            Ok(_) => {
                tracing::debug!("deleted {}", escape_untrusted(&name));
                self.tally.deleted.fetch_add(1, Ordering::Relaxed);
                self.progress.advance(1, 0);
                Ok(())
            }
            Err(e) => self.failed(e),
        }
    }

    /// An object that failed: the run goes on with the others, unless the credentials are refused
    /// (every other object would fail the same way).
    fn failed(&self, e: gcs::Error) -> Result<(), StepError> {
        if e.class == ErrorClass::Auth {
            return Err(e.into_step_error());
        }
        tracing::warn!("{e}");
        self.tally.failures.lock().expect("failures").add(&e);
        Ok(())
    }
}

/// Whether the filters keep an object: it matches one `include` glob (or there is none) and no
/// `exclude` glob.
fn included(include: &[String], exclude: &[String], relative: &str) -> bool {
    (include.is_empty() || include.iter().any(|g| naming::glob_match(g, relative)))
        && !exclude.iter().any(|g| naming::glob_match(g, relative))
}

/// One listing, read entry by entry with names relative to its prefix.
struct Cursor {
    rx: mpsc::Receiver<Page>,
    page: std::vec::IntoIter<Entry>,
    prefix: String,
    which: &'static str,
    ended: bool,
    last: Option<String>,
}

impl Cursor {
    fn new(rx: mpsc::Receiver<Page>, url: &GcsUrl, which: &'static str) -> Self {
        Cursor {
            rx,
            page: Vec::new().into_iter(),
            prefix: url.prefix.clone(),
            which,
            ended: false,
            last: None,
        }
    }

    async fn next(&mut self) -> Result<Option<Entry>, StepError> {
        loop {
            if let Some(mut entry) = self.page.next() {
                let Some(relative) = entry.name.strip_prefix(&self.prefix) else {
                    continue;
                };
                // The prefix's own folder placeholder (`docs/`) has no name to copy to.
                if relative.is_empty() {
                    continue;
                }
                entry.name = relative.to_owned();
                // The merge join needs name order; GCS guarantees it, so this only catches a
                // server that does not.
                if self.last.as_ref().is_some_and(|last| *last >= entry.name) {
                    return Err(StepError::unexpected(format!(
                        "the {} listing is not in name order at {}: refusing to compare",
                        self.which,
                        escape_untrusted(&entry.name)
                    )));
                }
                self.last = Some(entry.name.clone());
                return Ok(Some(entry));
            }
            if self.ended {
                return Ok(None);
            }
            match self.rx.recv().await {
                Some(Page::Entries(entries)) => self.page = entries.into_iter(),
                Some(Page::End) => self.ended = true,
                None => {
                    return Err(StepError::transient(format!(
                        "the {} listing stopped",
                        self.which
                    )))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn globs(list: &[&str]) -> Vec<String> {
        list.iter().map(|g| g.to_string()).collect()
    }

    #[test]
    fn filters_match_relative_names() {
        let none = globs(&[]);
        assert!(included(&none, &none, "anything/at/all"));
        let pdf = globs(&["*.pdf"]);
        assert!(included(&pdf, &none, "a.pdf"));
        assert!(included(&pdf, &none, "deep/er/a.pdf"), "* crosses /");
        assert!(!included(&pdf, &none, "a.txt"));
        let tmp = globs(&["tmp/*", "*.tmp"]);
        assert!(!included(&pdf, &tmp, "tmp/a.pdf"), "exclude wins");
        assert!(!included(&none, &tmp, "x.tmp"));
        assert!(included(&none, &tmp, "x.tmpl"));
        assert!(
            included(&globs(&["?.pdf"]), &none, "ü.pdf"),
            "? is one character"
        );
    }

    #[test]
    fn the_step_interface_is_what_the_docs_say() {
        use clap::CommandFactory;
        Args::command().debug_assert();
        let args = Args::try_parse_from([
            NAME,
            "--source",
            "gs://acme-int/docs",
            "--dest",
            "gs://acme-sbx/docs",
            "--include",
            "*.pdf,*.txt",
            "--include",
            "*.json",
        ])
        .unwrap();
        assert_eq!(args.include, ["*.pdf", "*.txt", "*.json"]);
        assert_eq!(args.concurrency, 64);
        assert_eq!(args.timeout(), Duration::from_secs(1800));
        assert_eq!(args.source.prefix, "docs/");
    }
}
