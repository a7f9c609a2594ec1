//! Progress of long work: logged (count, bytes, rate) at most every few seconds, and written as
//! `done/total` to `$ARGO_PROGRESS_FILE` when Argo sets it (Argo's self-reported progress).

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct Progress {
    what: String,
    total: AtomicU64,
    done: AtomicU64,
    bytes: AtomicU64,
    started: Instant,
    last_report: Mutex<Instant>,
    interval: Duration,
    file: Option<PathBuf>,
}

impl Progress {
    /// `what` names the unit of work in logs ("objects", "tables"); `total` may grow later.
    pub fn new(what: &str, total: u64) -> Self {
        let now = Instant::now();
        Progress {
            what: what.to_owned(),
            total: AtomicU64::new(total),
            done: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            started: now,
            last_report: Mutex::new(now),
            interval: Duration::from_secs(5),
            file: std::env::var_os("ARGO_PROGRESS_FILE").map(PathBuf::from),
        }
    }

    pub fn with_interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    pub fn with_file(mut self, file: Option<PathBuf>) -> Self {
        self.file = file;
        self
    }

    /// More work discovered (e.g. another page of a streamed listing).
    pub fn add_total(&self, n: u64) {
        self.total.fetch_add(n, Ordering::Relaxed);
    }

    pub fn advance(&self, items: u64, bytes: u64) {
        self.done.fetch_add(items, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        let mut last = self.last_report.lock().expect("progress lock");
        if last.elapsed() >= self.interval {
            *last = Instant::now();
            drop(last);
            self.report();
        }
    }

    /// Final report, whatever the interval.
    pub fn finish(&self) {
        self.report();
    }

    /// (done, total, bytes) so far.
    pub fn snapshot(&self) -> (u64, u64, u64) {
        let done = self.done.load(Ordering::Relaxed);
        // The total is never shown below what is done (a listing may still be running).
        let total = self.total.load(Ordering::Relaxed).max(done);
        (done, total, self.bytes.load(Ordering::Relaxed))
    }

    fn report(&self) {
        let (done, total, bytes) = self.snapshot();
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        tracing::info!(
            done,
            total,
            bytes,
            rate_per_s = (done as f64 / secs).round() as u64,
            bytes_per_s = (bytes as f64 / secs).round() as u64,
            "progress: {done}/{total} {} ({})",
            self.what,
            human_bytes(bytes)
        );
        if let Some(path) = &self.file {
            // Best effort: progress is informational and must never fail the step.
            if let Err(e) = write_atomically(path, format!("{done}/{total}").as_bytes()) {
                tracing::debug!("cannot write {}: {e}", path.display());
            }
        }
    }
}

/// Writes `text` (Argo's `N/M`) to `$ARGO_PROGRESS_FILE` when Argo set it: for steps that learn
/// their progress whole (wait-workflow reads it off the child Workflow) rather than counting it.
pub fn report_argo_progress(text: &str) {
    if let (Some(path), false) = (std::env::var_os("ARGO_PROGRESS_FILE"), text.is_empty()) {
        if let Err(e) = write_atomically(std::path::Path::new(&path), text.as_bytes()) {
            tracing::debug!(
                "cannot write {}: {e}",
                std::path::Path::new(&path).display()
            );
        }
    }
}

fn write_atomically(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(std::path::Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_file_holds_done_of_total() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("progress");
        let p = Progress::new("objects", 10)
            .with_interval(Duration::ZERO)
            .with_file(Some(file.clone()));
        p.advance(3, 300);
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "3/10");
        p.add_total(5);
        p.advance(12, 0);
        p.finish();
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "15/15");
        assert_eq!(p.snapshot(), (15, 15, 300));
    }

    #[test]
    fn reports_are_rate_limited() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("progress");
        let p = Progress::new("objects", 10)
            .with_interval(Duration::from_secs(3600))
            .with_file(Some(file.clone()));
        p.advance(1, 0);
        assert!(!file.exists(), "no report before the interval");
        p.finish();
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "1/10");
    }

    #[test]
    fn bytes_read_well() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 * 1024 * 1024 * 1024), "3.0 GiB");
    }
}
