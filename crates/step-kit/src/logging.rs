//! Logging with `tracing`: text on a terminal, JSON otherwise, always on stderr (stdout carries
//! only the JSON summary). Every line goes through [`crate::redact_text`] on its way out.

use std::io::{self, IsTerminal, Write};

use tracing_subscriber::fmt::MakeWriter;

use crate::LogFormat;

pub(crate) fn init(format: LogFormat, level: tracing::Level) {
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !io::stderr().is_terminal(),
    };
    let builder = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(RedactingStderr)
        .with_target(false);
    // A second init (tests running several steps in one process) keeps the first subscriber.
    let _ = if json {
        builder.json().flatten_event(true).try_init()
    } else {
        builder
            .with_ansi(io::stderr().is_terminal())
            .compact()
            .try_init()
    };
}

/// Stderr with credentials in URLs redacted. The fmt layer writes each event with one
/// `write_all`, so redacting per write sees whole lines.
struct RedactingStderr;

impl<'a> MakeWriter<'a> for RedactingStderr {
    type Writer = RedactingWriter;
    fn make_writer(&'a self) -> Self::Writer {
        RedactingWriter
    }
}

struct RedactingWriter;

impl Write for RedactingWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        io::stderr()
            .lock()
            .write_all(crate::redact_text(&text).as_bytes())?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        io::stderr().flush()
    }
}
