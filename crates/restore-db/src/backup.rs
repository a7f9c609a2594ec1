//! Which backup to restore: the object named, or the newest under a prefix.

use futures_util::TryStreamExt;
use gcs::{Entry, Gcs, Location};
use step_kit::{escape_untrusted, RetryPolicy, StepError};

/// Object names taken for backups under a prefix (anything else there, a manifest or a log, is
/// not a candidate).
pub const BACKUP_SUFFIXES: &[&str] = &[".sql", ".sql.gz", ".dump", ".pgdump", ".backup"];

/// The chosen backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backup {
    pub bucket: String,
    pub entry: Entry,
    /// Why this one, for the log.
    pub reason: String,
}

impl Backup {
    pub fn url(&self) -> String {
        format!("gs://{}/{}", self.bucket, self.entry.name)
    }
}

/// A sortable timestamp (YYYYMMDDhhmmss) found in an object name: a date `YYYY-MM-DD` (or
/// `YYYYMMDD`, with `_`, `.` or `/` as separators too), optionally followed by a time `hh:mm[:ss]`
/// (or `hhmm[ss]`, `hh-mm-ss`). The last date in the name counts (folders before the file).
pub fn timestamp_in_name(name: &str) -> Option<u64> {
    let b = name.as_bytes();
    let mut found = None;
    let mut i = 0;
    while i < b.len() {
        if let Some((key, end)) = date_time_at(b, i) {
            found = Some(key);
            i = end;
        } else {
            i += 1;
        }
    }
    found
}

/// Reads `count` digits at `*i`, advancing.
fn digits(b: &[u8], i: &mut usize, count: usize) -> Option<u64> {
    let part = b.get(*i..*i + count)?;
    if !part.iter().all(u8::is_ascii_digit) {
        return None;
    }
    *i += count;
    Some(part.iter().fold(0, |n, d| n * 10 + u64::from(d - b'0')))
}

fn separator(b: &[u8], i: &mut usize, allowed: &[u8]) {
    if b.get(*i).is_some_and(|c| allowed.contains(c)) {
        *i += 1;
    }
}

fn date_time_at(b: &[u8], start: usize) -> Option<(u64, usize)> {
    if start > 0 && b[start - 1].is_ascii_digit() {
        return None;
    }
    let mut i = start;
    let year = digits(b, &mut i, 4)?;
    separator(b, &mut i, b"-_./");
    let month = digits(b, &mut i, 2)?;
    separator(b, &mut i, b"-_./");
    let day = digits(b, &mut i, 2)?;
    if !(1970..=2999).contains(&year) || !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    let date_end = i;
    let mut time = 0;
    let mut t = i;
    separator(b, &mut t, b"Tt_-. ");
    if let Some(hour) = digits(b, &mut t, 2) {
        separator(b, &mut t, b":-_.");
        if let Some(minute) = digits(b, &mut t, 2) {
            let mut end = t;
            separator(b, &mut end, b":-_.");
            let second = digits(b, &mut end, 2);
            if hour < 24 && minute < 60 && second.is_none_or(|s| s < 61) {
                time = hour * 10_000 + minute * 100 + second.unwrap_or(0);
                i = if second.is_some() { end } else { t };
            }
        }
    }
    if i == date_end && b.get(i).is_some_and(u8::is_ascii_digit) {
        // More digits after the date without a time we could read: not a date (an id).
        return None;
    }
    Some(((year * 10_000 + month * 100 + day) * 1_000_000 + time, i))
}

fn is_backup_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    BACKUP_SUFFIXES.iter().any(|s| lower.ends_with(s))
}

/// Picks the newest of `candidates`: by the timestamp in their names when every one has one,
/// else by the time each was written.
pub fn newest(candidates: Vec<Entry>) -> Option<(Entry, String)> {
    let all_named = candidates
        .iter()
        .all(|e| timestamp_in_name(&e.name).is_some());
    let count = candidates.len();
    if all_named {
        let best = candidates
            .into_iter()
            .max_by_key(|e| (timestamp_in_name(&e.name), e.updated, e.name.clone()))?;
        Some((
            best,
            format!("the newest of {count} by the timestamp in their names"),
        ))
    } else {
        let best = candidates
            .into_iter()
            .max_by_key(|e| (e.updated, e.name.clone()))?;
        Some((
            best,
            format!("the newest of {count} by update time (not every name carries a timestamp)"),
        ))
    }
}

/// Resolves `--backup` to one object.
pub async fn choose(
    gcs: &Gcs,
    location: &Location,
    policy: &RetryPolicy,
) -> Result<Backup, StepError> {
    match location {
        Location::Object { bucket, name } => {
            let entry = gcs
                .object(bucket, name, policy)
                .await
                .map_err(gcs::Error::into_step_error)?;
            Ok(Backup {
                bucket: bucket.clone(),
                entry,
                reason: "named by --backup".into(),
            })
        }
        Location::Prefix(url) => {
            let mut candidates = Vec::new();
            let mut pages = std::pin::pin!(gcs.list(&url.bucket, &url.prefix, policy));
            while let Some(page) = pages
                .try_next()
                .await
                .map_err(gcs::Error::into_step_error)?
            {
                candidates.extend(
                    page.into_iter()
                        .filter(|e| e.size > 0 && is_backup_name(&e.name)),
                );
            }
            let Some((entry, reason)) = newest(candidates) else {
                return Err(StepError::precondition(format!(
                    "no backup under {}: no object there ends in {} (or all are empty)",
                    escape_untrusted(&url.to_string()),
                    BACKUP_SUFFIXES.join(", ")
                )));
            };
            Ok(Backup {
                bucket: url.bucket.clone(),
                entry,
                reason,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, updated: i64) -> Entry {
        Entry {
            name: name.into(),
            size: 1,
            crc32c: None,
            md5: None,
            generation: 1,
            updated: Some(updated),
        }
    }

    #[test]
    // Grouped as date_time, the way the key is built.
    #[allow(clippy::inconsistent_digit_grouping)]
    fn timestamps_in_the_usual_backup_names() {
        let cases = [
            ("nightly/app-2024-05-01.sql.gz", Some(20240501_000000)),
            (
                "nightly/app-2024-05-01T02:30:00Z.sql.gz",
                Some(20240501_023000),
            ),
            ("nightly/app_20240501_0230.sql", Some(20240501_023000)),
            ("nightly/app-20240501T023059.dump", Some(20240501_023059)),
            ("nightly/2024/05/01/app.sql", Some(20240501_000000)),
            (
                "nightly/2024-04-30/app-2024-05-01-0100.sql",
                Some(20240501_010000),
            ),
            ("nightly/app.sql", None),
            ("nightly/app-v2.sql", None),
            ("nightly/app-123456789012.sql", None),
            ("nightly/app-2024-13-01.sql", None),
        ];
        for (name, want) in cases {
            assert_eq!(timestamp_in_name(name), want, "{name}");
        }
    }

    #[test]
    fn the_newest_by_name_else_by_update_time() {
        // Written in another order than their names say (a re-upload of an older night).
        let named = vec![
            entry("b/app-2024-05-02.sql.gz", 300),
            entry("b/app-2024-05-10.sql.gz", 100),
            entry("b/app-2024-05-09.sql.gz", 200),
        ];
        assert_eq!(newest(named).unwrap().0.name, "b/app-2024-05-10.sql.gz");
        let mixed = vec![
            entry("b/app-2024-05-10.sql.gz", 100),
            entry("b/latest.sql.gz", 500),
        ];
        let (best, reason) = newest(mixed).unwrap();
        assert_eq!(best.name, "b/latest.sql.gz");
        assert!(reason.contains("update time"));
        assert!(newest(Vec::new()).is_none());
        assert!(is_backup_name("x/A.SQL.GZ") && is_backup_name("x/a.dump"));
        assert!(!is_backup_name("x/manifest.json") && !is_backup_name("x/a.sql.gz.tmp"));
    }
}
