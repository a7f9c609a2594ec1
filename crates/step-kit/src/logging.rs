//! Logging with `tracing`: text on a terminal, JSON otherwise, always on stderr (stdout carries
//! only the JSON summary). Every line goes through [`crate::redact_text`] on its way out.

use std::io::{self, IsTerminal, Write};
use std::sync::OnceLock;

use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

use crate::LogFormat;

/// `"step":"<name>",` put at the start of every JSON line, so that lines from many pods (Loki,
/// Cloud Logging) say which step wrote them.
static JSON_STEP_FIELD: OnceLock<String> = OnceLock::new();

/// Libraries whose own events are not ours to show: the Vault client logs every non-2xx answer
/// at ERROR (`#[instrument(err)]`), also the 404 of a secret that is simply not there yet, which
/// the steps handle; what matters reaches the log as the step's own message.
const QUIET_TARGETS: &[&str] = &["vaultrs", "rustify"];

pub(crate) fn init(step: &str, format: LogFormat, level: tracing::Level) {
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !io::stderr().is_terminal(),
    };
    let filter = QUIET_TARGETS.iter().fold(
        Targets::new().with_default(LevelFilter::from_level(level)),
        |targets, target| targets.with_target(*target, LevelFilter::OFF),
    );
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(RedactingStderr)
        .with_target(false);
    let layer = if json {
        let _ = JSON_STEP_FIELD.set(format!("\"step\":{},", serde_json::Value::from(step)));
        layer.json().flatten_event(true).with_filter(filter).boxed()
    } else {
        layer
            .with_ansi(io::stderr().is_terminal())
            .compact()
            .with_filter(filter)
            .boxed()
    };
    // A second init (tests running several steps in one process) keeps the first subscriber.
    let _ = tracing_subscriber::registry().with(layer).try_init();
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
        let mut text = crate::redact_text(&text);
        if let Some(field) = JSON_STEP_FIELD.get() {
            if text.starts_with('{') {
                text.insert_str(1, field);
            }
        }
        io::stderr().lock().write_all(text.as_bytes())?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        io::stderr().flush()
    }
}
