//! Reads SQL text as psql does: a plain-format dump (what `pg_dump` writes without `-F`) or a
//! script, as a stream of items: SQL statements, `COPY ... FROM stdin` blocks with their rows, and
//! psql meta-commands. One splitter for restore-db's dumps and run-sql's scripts.
//!
//! Statements end at a `;` outside string literals, quoted identifiers, dollar-quoted bodies and
//! comments, as psql splits them (function bodies with `;` in them stay whole). COPY rows are
//! handed on in chunks of whole rows without being parsed: in COPY's text format a raw newline
//! always ends a row (a newline inside a value is written `\n`), and the block ends at a line
//! holding `\.`. Memory holds one chunk and the statement being read, whatever the text's size.

use bytes::{Bytes, BytesMut};
use memchr::memmem;
use tokio::io::{AsyncRead, AsyncReadExt};

/// One piece of the text, in its order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// A statement, from its first token to its `;` (comments before it left out).
    Sql {
        text: String,
        line: u64,
    },
    /// `COPY <table> (...) FROM stdin;`: its rows follow as [`Item::CopyData`] until
    /// [`Item::CopyEnd`]. `table` is the statement's target as written, for logs.
    CopyStart {
        statement: String,
        table: String,
        line: u64,
    },
    /// Whole rows of the current COPY, each ending in `\n`.
    CopyData(Bytes),
    CopyEnd,
    /// A psql meta-command line (`\restrict KEY`, `\connect db`), without the backslash.
    Meta {
        command: String,
        line: u64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The input stream failed (the download or the decompression); `transient` when a retry
    /// may get further (the network), not when the data is bad.
    Read { message: String, transient: bool },
    /// The text is not SQL this reader can split: say where.
    Syntax { line: u64, message: String },
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Read { message, .. } => write!(f, "reading failed: {message}"),
            Error::Syntax { line, message } => write!(f, "line {line}: {message}"),
        }
    }
}

/// Statements longer than this are refused: a dump's longest are function bodies and views, far
/// below; only a broken file (an unterminated quote) gets here, and memory stays bounded.
const MAX_STATEMENT: usize = 64 << 20;

/// How much is asked of the input at once.
const READ_SIZE: usize = 256 << 10;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Lex {
    Normal,
    /// In '...'; `backslash`: backslash escapes the next character (E'...' strings, or every
    /// string when standard_conforming_strings is off).
    Single {
        backslash: bool,
    },
    Double,
    /// In a dollar-quoted body; the closing tag (e.g. `$fn$`) is `Reader::tag`.
    Dollar,
    BlockComment {
        depth: u32,
    },
}

pub struct Reader<R> {
    input: R,
    /// Read but not yet consumed.
    pending: BytesMut,
    eof: bool,
    /// The line number of `pending`'s first byte.
    line: u64,
    chunk_size: usize,
    in_copy: Option<String>,
    /// How far `pending` was searched for the COPY end without finding it.
    searched: usize,
    lex: Lex,
    tag: Vec<u8>,
    /// A backslash escape is pending at the start of the next line (E'a\<newline>').
    escape_next: bool,
    statement: Vec<u8>,
    statement_line: u64,
    /// Whether strings without E treat backslash as an escape (`SET standard_conforming_strings
    /// = off` in old dumps).
    backslash_strings: bool,
}

impl<R: AsyncRead + Unpin> Reader<R> {
    /// `chunk_size`: about how many bytes of rows each [`Item::CopyData`] carries.
    pub fn new(input: R, chunk_size: usize) -> Self {
        Reader {
            input,
            pending: BytesMut::with_capacity(READ_SIZE * 2),
            eof: false,
            line: 1,
            chunk_size: chunk_size.max(1),
            in_copy: None,
            searched: 0,
            lex: Lex::Normal,
            tag: Vec::new(),
            escape_next: false,
            statement: Vec::new(),
            statement_line: 0,
            backslash_strings: false,
        }
    }

    /// Reads more input into `pending`; false at the end of the input.
    async fn fill(&mut self) -> Result<bool, Error> {
        if self.eof {
            return Ok(false);
        }
        self.pending.reserve(READ_SIZE);
        let n = self
            .input
            .read_buf(&mut self.pending)
            .await
            .map_err(|e| Error::Read {
                message: e.to_string(),
                transient: is_transient(&e),
            })?;
        if n == 0 {
            self.eof = true;
        }
        Ok(n > 0)
    }

    /// The next item, or None at the end of the text.
    pub async fn next(&mut self) -> Result<Option<Item>, Error> {
        if self.in_copy.is_some() {
            return self.next_copy().await.map(Some);
        }
        loop {
            let Some(newline) = memchr::memchr(b'\n', &self.pending) else {
                if self.fill().await? {
                    continue;
                }
                if self.pending.is_empty() {
                    return self.finish();
                }
                // The last line has no newline: take it as it is.
                let line = self.pending.split().freeze();
                if let Some(item) = self.scan_line(&line)? {
                    return Ok(Some(item));
                }
                return self.finish();
            };
            let line = self.pending.split_to(newline + 1).freeze();
            if let Some(item) = self.scan_line(&line)? {
                return Ok(Some(item));
            }
        }
    }

    fn finish(&mut self) -> Result<Option<Item>, Error> {
        if self.lex != Lex::Normal || !self.statement.is_empty() {
            let what = match self.lex {
                Lex::Single { .. } => "inside a string literal",
                Lex::Double => "inside a quoted identifier",
                Lex::Dollar => "inside a dollar-quoted body",
                Lex::BlockComment { .. } => "inside a comment",
                Lex::Normal => "inside a statement (no closing ;)",
            };
            return Err(Error::Syntax {
                line: self.statement_line.max(1),
                message: format!("the text ends {what}: it is truncated, or a quote is not closed"),
            });
        }
        Ok(None)
    }

    /// Scans one line (with its `\n`) in SQL mode; returns an item when one completes. A line
    /// holding the end of one statement and the start of the next puts the rest back.
    fn scan_line(&mut self, line: &Bytes) -> Result<Option<Item>, Error> {
        let line_no = self.line;
        self.line += 1;
        let mut i = 0;
        if self.statement.is_empty() && self.lex == Lex::Normal {
            // Between statements: skip blanks and `--` comments; a backslash starts a
            // meta-command, which runs to the end of the line.
            let text = &line[..];
            let start = text
                .iter()
                .position(|b| !b.is_ascii_whitespace())
                .unwrap_or(text.len());
            if start == text.len() || text[start..].starts_with(b"--") {
                return Ok(None);
            }
            if text[start] == b'\\' {
                let command = String::from_utf8_lossy(&text[start + 1..])
                    .trim()
                    .to_owned();
                return Ok(Some(Item::Meta {
                    command,
                    line: line_no,
                }));
            }
            i = start;
            self.statement_line = line_no;
        }
        let bytes = &line[..];
        let begin = i;
        if self.escape_next {
            self.escape_next = false;
            i += 1;
        }
        while i < bytes.len() {
            let b = bytes[i];
            match self.lex {
                Lex::Normal => match b {
                    b';' => {
                        self.statement.extend_from_slice(&bytes[begin..=i]);
                        let rest = line.slice(i + 1..);
                        if rest.iter().any(|b| !b.is_ascii_whitespace()) {
                            // Another statement starts on this line: read it again next time.
                            let mut back = BytesMut::from(&rest[..]);
                            back.extend_from_slice(&self.pending);
                            self.pending = back;
                            self.line -= 1;
                        }
                        return self.complete_statement().map(Some);
                    }
                    b'\'' => {
                        let e_prefix = i >= 1
                            && matches!(bytes[i - 1], b'E' | b'e')
                            && (i < 2 || !is_ident_byte(bytes[i - 2]));
                        self.lex = Lex::Single {
                            backslash: e_prefix || self.backslash_strings,
                        };
                    }
                    b'"' => self.lex = Lex::Double,
                    b'-' if bytes.get(i + 1) == Some(&b'-') => {
                        // A comment to the end of the line (kept: it is inside a statement).
                        i = bytes.len();
                        continue;
                    }
                    b'/' if bytes.get(i + 1) == Some(&b'*') => {
                        self.lex = Lex::BlockComment { depth: 1 };
                        i += 1;
                    }
                    b'$' if i == 0 || !is_ident_byte(bytes[i - 1]) => {
                        if let Some(len) = dollar_tag_len(&bytes[i..]) {
                            self.tag = bytes[i..i + len].to_vec();
                            self.lex = Lex::Dollar;
                            i += len;
                            continue;
                        }
                    }
                    _ => {}
                },
                Lex::Single { backslash } => match b {
                    b'\\' if backslash => {
                        if i + 1 >= bytes.len() {
                            self.escape_next = true;
                        }
                        i += 1;
                    }
                    b'\'' => self.lex = Lex::Normal,
                    _ => {}
                },
                Lex::Double => {
                    if b == b'"' {
                        self.lex = Lex::Normal;
                    }
                }
                Lex::Dollar => match memmem::find(&bytes[i..], &self.tag) {
                    Some(at) => {
                        i += at + self.tag.len();
                        self.lex = Lex::Normal;
                        continue;
                    }
                    None => i = bytes.len(),
                },
                Lex::BlockComment { depth } => {
                    if b == b'*' && bytes.get(i + 1) == Some(&b'/') {
                        self.lex = if depth == 1 {
                            Lex::Normal
                        } else {
                            Lex::BlockComment { depth: depth - 1 }
                        };
                        i += 1;
                    } else if b == b'/' && bytes.get(i + 1) == Some(&b'*') {
                        self.lex = Lex::BlockComment { depth: depth + 1 };
                        i += 1;
                    }
                }
            }
            i += 1;
        }
        self.statement.extend_from_slice(&bytes[begin..]);
        if self.statement.len() > MAX_STATEMENT {
            return Err(Error::Syntax {
                line: self.statement_line,
                message: format!(
                    "a statement longer than {} MiB: a quote that is never closed?",
                    MAX_STATEMENT >> 20
                ),
            });
        }
        Ok(None)
    }

    fn complete_statement(&mut self) -> Result<Item, Error> {
        let bytes = std::mem::take(&mut self.statement);
        let line = self.statement_line;
        let text = String::from_utf8(bytes).map_err(|_| Error::Syntax {
            line,
            message:
                "a statement that is not UTF-8 (only UTF-8 text is read; dumps: pg_dump -E UTF8)"
                    .into(),
        })?;
        let upper = text.to_ascii_uppercase();
        if upper.starts_with("SET STANDARD_CONFORMING_STRINGS") {
            self.backslash_strings = upper.contains("OFF");
        }
        if upper.starts_with("COPY ") && upper.contains(" FROM STDIN") {
            let Some(table) = copy_from_stdin_target(&text) else {
                return Err(Error::Syntax {
                    line,
                    message: "a COPY FROM stdin with options (pg_dump writes plain COPY ... FROM \
                              stdin; in the text format)"
                        .into(),
                });
            };
            self.in_copy = Some(table.clone());
            self.searched = 0;
            return Ok(Item::CopyStart {
                statement: text,
                table,
                line,
            });
        }
        Ok(Item::Sql { text, line })
    }

    /// COPY mode: the next chunk of rows, or the end of the block.
    async fn next_copy(&mut self) -> Result<Item, Error> {
        loop {
            if let Some(after) = end_marker_at_start(&self.pending) {
                let _ = self.pending.split_to(after);
                self.line += 1;
                self.in_copy = None;
                return Ok(Item::CopyEnd);
            }
            // The end marker after a newline: the rows before it are the block's last.
            let from = self.searched.saturating_sub(1);
            if let Some(at) = memmem::find(&self.pending[from..], b"\n\\.").map(|p| p + from) {
                let marker_line = &self.pending[at + 1..];
                if end_marker_at_start(marker_line).is_some() {
                    let rows = self.pending.split_to(at + 1).freeze();
                    self.line += memchr::memchr_iter(b'\n', &rows).count() as u64;
                    self.searched = 0;
                    return Ok(Item::CopyData(rows));
                }
                if marker_line.len() >= 4 {
                    // `\.` followed by more on the line: data (an escaped value), go on.
                    self.searched = at + 2;
                    continue;
                }
            } else {
                self.searched = self.pending.len();
            }
            if self.pending.len() >= self.chunk_size {
                if let Some(last) = memchr::memrchr(b'\n', &self.pending) {
                    let rows = self.pending.split_to(last + 1).freeze();
                    self.line += memchr::memchr_iter(b'\n', &rows).count() as u64;
                    self.searched = self.searched.saturating_sub(last + 1);
                    return Ok(Item::CopyData(rows));
                }
            }
            if !self.fill().await? {
                let table = self.in_copy.clone().unwrap_or_default();
                return Err(Error::Syntax {
                    line: self.line,
                    message: format!(
                        "the text ends inside the rows of {table} (no closing \\.): it is truncated"
                    ),
                });
            }
        }
    }
}

/// Whether a read of the dump failed on the way (the download: a reset, a timeout), so a retry
/// may get further, rather than on the data (bad gzip, a truncated file).
pub fn is_transient(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        TimedOut | ConnectionReset | ConnectionAborted | BrokenPipe
    )
}

/// When `pending` starts with the line `\.` (COPY's end marker): the length of that line.
/// Undecided (None) while the line is incomplete.
fn end_marker_at_start(pending: &[u8]) -> Option<usize> {
    if pending.starts_with(b"\\.\n") {
        Some(3)
    } else if pending.starts_with(b"\\.\r\n") {
        Some(4)
    } else {
        None
    }
}

fn is_ident_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80
}

/// At a `$`: the length of a dollar-quote tag (`$$`, `$fn$`) starting there, if it is one.
fn dollar_tag_len(bytes: &[u8]) -> Option<usize> {
    let mut i = 1;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'$' {
            return Some(i + 1);
        }
        let ok = b.is_ascii_alphabetic() || b == b'_' || b >= 0x80 || (i > 1 && b.is_ascii_digit());
        if !ok {
            return None;
        }
        i += 1;
    }
    None
}

/// The target of `COPY <target> [(cols)] FROM stdin;`, or None for any other statement.
fn copy_from_stdin_target(statement: &str) -> Option<String> {
    let trimmed = statement.trim_end().trim_end_matches(';').trim_end();
    let head = trimmed.get(..5)?;
    if !head.eq_ignore_ascii_case("COPY ") {
        return None;
    }
    let upper = trimmed.to_ascii_uppercase();
    if !upper.ends_with(" FROM STDIN") {
        return None;
    }
    let body = &trimmed[5..trimmed.len() - " FROM STDIN".len()];
    let target = body.split(" (").next().unwrap_or(body).trim();
    Some(target.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn items(text: &str, chunk: usize) -> Result<Vec<Item>, Error> {
        let mut reader = Reader::new(text.as_bytes(), chunk);
        let mut out = Vec::new();
        while let Some(item) = reader.next().await? {
            out.push(item);
        }
        Ok(out)
    }

    fn sql(items: &[Item]) -> Vec<&str> {
        items
            .iter()
            .filter_map(|i| match i {
                Item::Sql { text, .. } => Some(text.as_str()),
                _ => None,
            })
            .collect()
    }

    #[tokio::test]
    async fn statements_split_at_top_level_semicolons_only() {
        let dump = "\
--\n-- PostgreSQL database dump\n--\n\n\\restrict abc\n\nSET client_encoding = 'UTF8';\n\
CREATE FUNCTION f() RETURNS text LANGUAGE plpgsql AS $fn$\nBEGIN\n  -- a; comment\n  \
RETURN $$it's; a $ sign$$ || ';';\nEND;\n$fn$;\n\
COMMENT ON TABLE t IS 'a; b ''c;'' d';\nCREATE VIEW \"v;w\" AS SELECT 1 AS \"x;\";\n\
SELECT E'back\\\\slash; \\' quote;' /* block; /* nested; */ still; */ ;\n\
SELECT $1; SELECT a$b$c FROM t;\n\\unrestrict abc\n";
        let got = items(dump, 1024).await.unwrap();
        assert_eq!(
            got[0],
            Item::Meta {
                command: "restrict abc".into(),
                line: 5
            }
        );
        assert_eq!(
            sql(&got),
            vec![
                "SET client_encoding = 'UTF8';",
                "CREATE FUNCTION f() RETURNS text LANGUAGE plpgsql AS $fn$\nBEGIN\n  -- a; comment\n  \
                 RETURN $$it's; a $ sign$$ || ';';\nEND;\n$fn$;",
                "COMMENT ON TABLE t IS 'a; b ''c;'' d';",
                "CREATE VIEW \"v;w\" AS SELECT 1 AS \"x;\";",
                "SELECT E'back\\\\slash; \\' quote;' /* block; /* nested; */ still; */ ;",
                "SELECT $1;",
                "SELECT a$b$c FROM t;",
            ]
        );
        assert!(
            matches!(got.last(), Some(Item::Meta { command, .. }) if command == "unrestrict abc")
        );
        let Item::Sql { line, .. } = &got[2] else {
            panic!()
        };
        assert_eq!(*line, 8);
    }

    #[tokio::test]
    async fn copy_rows_pass_through_whole_and_end_at_the_marker() {
        let rows = "1\tx\\ty\n2\t\\\\.\n3\t\\.\\n\n";
        let dump = format!(
            "COPY public.t (id, v) FROM stdin;\n{rows}\\.\n\nSELECT pg_catalog.setval('s', 3, true);\n"
        );
        for chunk in [1, 5, 1 << 20] {
            let got = items(&dump, chunk).await.unwrap();
            assert!(
                matches!(&got[0], Item::CopyStart { table, line: 1, .. } if table == "public.t")
            );
            let data: Vec<u8> = got
                .iter()
                .filter_map(|i| match i {
                    Item::CopyData(b) => Some(b.to_vec()),
                    _ => None,
                })
                .flatten()
                .collect();
            assert_eq!(String::from_utf8(data).unwrap(), rows, "chunk {chunk}");
            for item in &got {
                if let Item::CopyData(b) = item {
                    assert!(b.ends_with(b"\n"), "whole rows only");
                }
            }
            let end = got.iter().position(|i| *i == Item::CopyEnd).unwrap();
            assert_eq!(
                got[end + 1],
                Item::Sql {
                    text: "SELECT pg_catalog.setval('s', 3, true);".into(),
                    line: 7
                }
            );
        }
    }

    #[tokio::test]
    async fn empty_copy_and_copy_ending_the_file() {
        let got = items(
            "COPY t (a) FROM stdin;\n\\.\nCOPY u FROM stdin;\n1\n\\.\n",
            8,
        )
        .await
        .unwrap();
        assert_eq!(got.len(), 5);
        assert_eq!(got[1], Item::CopyEnd);
        assert_eq!(got[3], Item::CopyData(Bytes::from_static(b"1\n")));
        assert_eq!(got[4], Item::CopyEnd);
    }

    #[tokio::test]
    async fn truncated_dumps_are_errors_with_a_line() {
        let e = items("COPY t FROM stdin;\n1\n2\n", 4).await.unwrap_err();
        assert!(e.to_string().contains("inside the rows of t"), "{e}");
        let e = items("SELECT 1;\nCREATE FUNCTION f() AS $$\nselect 1;\n", 4)
            .await
            .unwrap_err();
        assert_eq!(
            e,
            Error::Syntax {
                line: 2,
                message: "the text ends inside a dollar-quoted body: it is truncated, or a \
                          quote is not closed"
                    .into()
            }
        );
        let e = items("SELECT 'open;\n", 4).await.unwrap_err();
        assert!(e.to_string().contains("string literal"), "{e}");
    }

    #[tokio::test]
    async fn old_dumps_without_standard_conforming_strings() {
        let got = items(
            "SET standard_conforming_strings = off;\nSELECT 'a\\';b';\nSELECT 2;\n",
            8,
        )
        .await
        .unwrap();
        assert_eq!(sql(&got)[1], "SELECT 'a\\';b';");
        assert_eq!(sql(&got)[2], "SELECT 2;");
    }

    #[test]
    fn copy_targets() {
        assert_eq!(
            copy_from_stdin_target("COPY \"Sales\".\"Orders\" (\"OrderId\", a) FROM stdin;"),
            Some("\"Sales\".\"Orders\"".into())
        );
        assert_eq!(
            copy_from_stdin_target("copy t from STDIN ;"),
            Some("t".into())
        );
        assert_eq!(copy_from_stdin_target("COPY t TO stdout;"), None);
        assert_eq!(copy_from_stdin_target("COPY t FROM '/etc/passwd';"), None);
        assert_eq!(copy_from_stdin_target("CREATE TABLE t ();"), None);
    }
}
