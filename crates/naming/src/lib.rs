//! The naming rules of sandbox-steps, in one place: every step that takes or derives a name
//! (environment, namespace, database, bucket, branch, host) checks it here.
//!
//! Each `check_*` function returns the rule a value breaks, in words an engineer can act on.
//! [`slug`] derives a readable, safe, stable name from untrusted text; see its docs for the
//! algorithm, which DNS or ingress configuration elsewhere may need to reproduce.

use sha2::{Digest, Sha256};
use unicode_normalization::char::is_combining_mark;
use unicode_normalization::UnicodeNormalization;

/// Length of the hash [`slug`] appends: 8 lowercase hex digits (32 bits of SHA-256).
pub const HASH_LEN: usize = 8;

/// Longest DNS-1123 label (namespace, app name, host label).
pub const DNS_LABEL_MAX: usize = 63;
/// Longest host name.
pub const HOSTNAME_MAX: usize = 253;
/// Longest PostgreSQL identifier, in bytes (NAMEDATALEN - 1).
pub const PG_IDENTIFIER_MAX: usize = 63;

/// The first 8 hex digits of the SHA-256 of `input`'s UTF-8 bytes:
/// `printf %s "$input" | sha256sum | cut -c1-8` in a shell.
pub fn short_hash(input: &str) -> String {
    let digest = Sha256::digest(input.as_bytes());
    digest[..HASH_LEN / 2]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A DNS-label-safe slug of `input`, at most `max_len` bytes (`max_len` ≥ 10).
///
/// 1. Unicode NFKD, combining marks dropped (`Ü` → `U`), ASCII letters lower-cased.
/// 2. Every run of characters other than `a-z` and `0-9` becomes one `-`; `-` trimmed at both ends.
/// 3. When the result equals `input` exactly, fits in `max_len`, and does not itself end in
///    `-` + 8 hex digits, it is the slug (`sbx-main` stays `sbx-main`).
/// 4. Otherwise the slug is the result cut to `max_len - 9` bytes (trailing `-` trimmed), then `-`,
///    then [`short_hash`] of the whole `input`; an empty readable part leaves the hash alone.
///
/// So the same input always gives the same slug, and two different inputs never share one unless
/// their 32-bit hashes collide: a lossy change (case, `/`, unicode) or a cut always adds the hash.
pub fn slug(input: &str, max_len: usize) -> String {
    assert!(
        max_len > HASH_LEN + 1,
        "slug length budget {max_len} too small"
    );
    let mut readable = String::with_capacity(input.len().min(max_len * 2));
    let mut pending_dash = false;
    for c in input.nfkd().filter(|c| !is_combining_mark(*c)) {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            if pending_dash && !readable.is_empty() {
                readable.push('-');
            }
            pending_dash = false;
            readable.push(c);
        } else {
            pending_dash = true;
        }
    }
    if !readable.is_empty()
        && readable == input
        && readable.len() <= max_len
        && !ends_like_a_hash(&readable)
    {
        return readable;
    }
    readable.truncate(max_len - HASH_LEN - 1);
    while readable.ends_with('-') {
        readable.pop();
    }
    let hash = short_hash(input);
    if readable.is_empty() {
        hash
    } else {
        format!("{readable}-{hash}")
    }
}

fn ends_like_a_hash(s: &str) -> bool {
    let bytes = s.as_bytes();
    bytes.len() > HASH_LEN
        && bytes[bytes.len() - HASH_LEN - 1] == b'-'
        && bytes[bytes.len() - HASH_LEN..]
            .iter()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
}

/// DNS-1123 label: `[a-z0-9-]`, alphanumeric at both ends, 1 to 63 characters.
/// A git commit id in hex: all 40 digits, or (`abbreviated`) 7 to 40.
pub fn check_commit_id(s: &str, abbreviated: bool) -> Result<(), String> {
    let lengths = if abbreviated { 7..=40 } else { 40..=40 };
    if lengths.contains(&s.len()) && s.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(())
    } else if abbreviated {
        Err("a commit id (7 to 40 hex digits)".into())
    } else {
        Err("a full commit id (40 hex digits)".into())
    }
}

pub fn check_dns_label(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > DNS_LABEL_MAX {
        return Err(format!(
            "must be 1 to {DNS_LABEL_MAX} characters (DNS-1123 label), has {}",
            s.chars().count()
        ));
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err("may hold only a-z, 0-9 and - (DNS-1123 label)".into());
    }
    if s.starts_with('-') || s.ends_with('-') {
        return Err("must start and end with a letter or digit (DNS-1123 label)".into());
    }
    Ok(())
}

/// A DNS-1123 subdomain (the name of most Kubernetes objects): dot-separated DNS-1123 labels,
/// at most 253 characters.
pub fn check_dns_subdomain(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > HOSTNAME_MAX {
        return Err(format!(
            "must be 1 to {HOSTNAME_MAX} characters (DNS-1123 subdomain)"
        ));
    }
    for label in s.split('.') {
        check_dns_label(label).map_err(|rule| format!("part {label:?}: {rule}"))?;
    }
    Ok(())
}

/// A host name: dot-separated DNS-1123 labels, at most 253 characters, no trailing dot.
pub fn check_hostname(s: &str) -> Result<(), String> {
    if s.len() > HOSTNAME_MAX {
        return Err(format!(
            "must be at most {HOSTNAME_MAX} characters (host name), has {}",
            s.len()
        ));
    }
    for label in s.split('.') {
        check_dns_label(label).map_err(|rule| format!("label {label:?}: {rule}"))?;
    }
    Ok(())
}

/// An unquoted PostgreSQL identifier as sandbox-steps creates them: `[a-z_][a-z0-9_]*`, at most
/// 63 bytes (longer names are silently truncated by PostgreSQL).
pub fn check_pg_identifier(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > PG_IDENTIFIER_MAX {
        return Err(format!(
            "must be 1 to {PG_IDENTIFIER_MAX} bytes (PostgreSQL identifier), has {}",
            s.len()
        ));
    }
    let mut bytes = s.bytes();
    let first_ok = bytes
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b == b'_');
    if !first_ok || !bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_') {
        return Err("must match [a-z_][a-z0-9_]* (PostgreSQL identifier)".into());
    }
    Ok(())
}

/// Google Cloud Storage bucket naming rules (for names without dots, and with them up to 63
/// characters): 3 to 63 of `a-z 0-9 - _ .`, a letter or digit at both ends, not an IP address,
/// no `goog` prefix, no `google` or close misspelling inside.
pub fn check_bucket_name(s: &str) -> Result<(), String> {
    if s.len() < 3 || s.len() > 63 {
        return Err(format!(
            "must be 3 to 63 characters (GCS bucket name), has {}",
            s.chars().count()
        ));
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err("may hold only a-z, 0-9, -, _ and . (GCS bucket name)".into());
    }
    let alnum = |b: Option<u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if !alnum(s.bytes().next()) || !alnum(s.bytes().last()) {
        return Err("must start and end with a letter or digit (GCS bucket name)".into());
    }
    if s.contains("..") || s.contains(".-") || s.contains("-.") {
        return Err("must not hold .., .- or -. (GCS bucket name)".into());
    }
    if s.split('.').count() == 4 && s.split('.').all(|p| p.parse::<u8>().is_ok()) {
        return Err("must not be an IP address (GCS bucket name)".into());
    }
    if s.starts_with("goog") {
        return Err("must not start with \"goog\" (GCS bucket name)".into());
    }
    let folded: String = s.chars().map(|c| if c == '0' { 'o' } else { c }).collect();
    if folded.contains("google") || folded.contains("gogle") || folded.contains("googel") {
        return Err("must not contain \"google\" or a close misspelling (GCS bucket name)".into());
    }
    Ok(())
}

/// Whether `c` is a control or an invisible formatting character (C0/C1 controls, bidi overrides
/// and marks, zero-width characters, line separators): what lets a name look like another one or
/// hide in a log line.
pub fn is_invisible(c: char) -> bool {
    c.is_control()
        || matches!(c as u32,
            0x00AD | 0x034F | 0x061C | 0x115F | 0x1160 | 0x17B4 | 0x17B5 | 0x180E
            | 0x200B..=0x200F   // zero-width space/joiners, LRM, RLM
            | 0x2028..=0x202E   // line/paragraph separators, bidi embeddings and overrides
            | 0x2060..=0x206F   // word joiner, invisible operators, bidi isolates
            | 0x3164 | 0xFE00..=0xFE0F | 0xFEFF | 0xFFA0 | 0xFFF9..=0xFFFB
            | 0xE0000..=0xE007F)
        || (c.is_whitespace() && c != ' ')
}

/// A sandbox prefix (`--sandbox-prefix`, `--dest-namespace-prefix`): what keeps a step away from
/// everything that is not a sandbox, so at least 2 characters and no whitespace (a prefix of `s`
/// or ` ` would match far too much).
pub fn check_sandbox_prefix(s: &str) -> Result<(), String> {
    if s.chars().count() < 2 {
        return Err("must be at least 2 characters: it is what keeps others' objects safe".into());
    }
    if s.chars().any(char::is_whitespace) {
        return Err("must not hold whitespace".into());
    }
    Ok(())
}

/// Longest branch name accepted (GitHub refuses longer refs).
pub const BRANCH_MAX: usize = 255;

/// A branch name the steps create, change or delete: valid for git ([`check_git_branch_name`]),
/// and without control or invisible characters, which git accepts but which make one branch name
/// look like another (a right-to-left override, a zero-width space).
pub fn check_branch_name(s: &str) -> Result<(), String> {
    check_git_branch_name(s)?;
    // What `git check-ref-format --branch` refuses or makes ambiguous: `HEAD` names the checked-out
    // commit, and `refs/heads/main` as a branch name would create refs/heads/refs/heads/main.
    if s == "HEAD" {
        return Err("must not be HEAD (git refuses it as a branch name)".into());
    }
    if s.starts_with("refs/") {
        return Err("must be a branch name, not a full ref (drop the refs/heads/ prefix)".into());
    }
    if let Some(c) = s.chars().find(|c| is_invisible(*c)) {
        return Err(format!(
            "must not hold control or invisible characters such as U+{:04X}",
            c as u32
        ));
    }
    Ok(())
}

/// A branch name valid for `git check-ref-format --branch`, checked as `refs/heads/<name>`: what
/// a branch someone else named (a pull request's head) may be.
pub fn check_git_branch_name(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("must not be empty (git branch name)".into());
    }
    if s.len() > BRANCH_MAX {
        return Err(format!(
            "must be at most {BRANCH_MAX} bytes (git branch name), has {}",
            s.len()
        ));
    }
    if s.starts_with('-') {
        return Err("must not start with - (git branch name)".into());
    }
    if s == "@" {
        return Err("must not be the single character @ (git ref rules)".into());
    }
    if let Some(c) = s.chars().find(|c| c.is_ascii_control()) {
        return Err(format!(
            "must not hold control characters such as U+{:04X} (git ref rules)",
            c as u32
        ));
    }
    if let Some(c) = s
        .chars()
        .find(|c| matches!(c, ' ' | '~' | '^' | ':' | '?' | '*' | '[' | '\\'))
    {
        return Err(format!(
            "must not hold {c:?}: space ~ ^ : ? * [ \\ are not allowed (git ref rules)"
        ));
    }
    if s.contains("..") {
        return Err("must not hold .. (git ref rules)".into());
    }
    if s.contains("@{") {
        return Err("must not hold @{ (git ref rules)".into());
    }
    if s.starts_with('/') || s.ends_with('/') || s.contains("//") {
        return Err("must not start or end with / nor hold // (git ref rules)".into());
    }
    if s.ends_with('.') {
        return Err("must not end with . (git ref rules)".into());
    }
    for component in s.split('/') {
        if component.starts_with('.') {
            return Err(format!(
                "component {component:?} must not start with . (git ref rules)"
            ));
        }
        if component.ends_with(".lock") {
            return Err(format!(
                "component {component:?} must not end with .lock (git ref rules)"
            ));
        }
    }
    Ok(())
}

/// A path inside a repository: relative, `/`-separated, no empty, `.` or `..` segment, no
/// control characters or backslashes (so it can't escape the checkout or hide in a log).
pub fn check_repo_path(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > 4096 {
        return Err("must be 1 to 4096 bytes (repository path)".into());
    }
    if s.starts_with('/') {
        return Err("must be relative to the repository root, not absolute".into());
    }
    if s.chars().any(|c| is_invisible(c) || c == '\\') {
        return Err("must not hold control or invisible characters, or backslashes".into());
    }
    if s.split('/')
        .any(|seg| seg.is_empty() || seg == "." || seg == "..")
    {
        return Err("must not hold empty, . or .. segments (it would leave the repository)".into());
    }
    if s.split('/').any(|seg| seg.eq_ignore_ascii_case(".git")) {
        return Err(
            "must not hold a .git segment (git's own directory, never a tracked file)".into(),
        );
    }
    Ok(())
}

/// A Kubernetes label or annotation key: an optional DNS-subdomain prefix and `/`, then a name of
/// 1 to 63 characters `[A-Za-z0-9._-]`, alphanumeric at both ends.
pub fn check_label_key(s: &str) -> Result<(), String> {
    let (prefix, name) = match s.rsplit_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, s),
    };
    if let Some(prefix) = prefix {
        check_dns_subdomain(prefix).map_err(|rule| format!("prefix {prefix:?}: {rule}"))?;
    }
    check_label_value(name)?;
    if name.is_empty() {
        return Err("the name part must not be empty (label key)".into());
    }
    Ok(())
}

/// A Kubernetes label value: empty, or 1 to 63 characters `[A-Za-z0-9._-]`, alphanumeric at both
/// ends.
pub fn check_label_value(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Ok(());
    }
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    if s.len() > 63
        || !s
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        || !alnum(s.chars().next())
        || !alnum(s.chars().last())
    {
        return Err(
            "must be at most 63 of A-Z a-z 0-9 . _ -, alphanumeric at both ends (label)".into(),
        );
    }
    Ok(())
}

/// Shell-style glob match for branch protection lists: `*` matches any run of characters
/// (slashes included), `?` any one character; everything else matches itself.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let mut backtrack: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            backtrack = Some((pi, ti));
            pi += 1;
        } else if let Some((star, matched)) = backtrack {
            pi = star + 1;
            ti = matched + 1;
            backtrack = Some((star, matched + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests;

/// Why a sandbox sleeps, as patch-kustomize records it and the card shows it: asked for (a
/// person or an operator), idle (the sweep's --sleep-after), night (the night schedule), capacity
/// (put to sleep to make room under the cap).
pub const SLEEP_REASONS: &[&str] = &["requested", "idle", "night", "capacity"];

/// One of [`SLEEP_REASONS`].
pub fn check_sleep_reason(s: &str) -> Result<(), String> {
    if SLEEP_REASONS.contains(&s) {
        Ok(())
    } else {
        Err(format!("must be one of {}", SLEEP_REASONS.join(", ")))
    }
}
