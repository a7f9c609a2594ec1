//! The flags every step shares, flattened into each step's own clap `Parser`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};

/// Flags common to every step. Like every other flag, each is also read from the environment
/// variable named after it (`--outputs-dir` ↔ `OUTPUTS_DIR`).
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Common options")]
pub struct CommonArgs {
    /// Directory where each output is written as its own file (for Argo's `valueFrom.path`).
    #[arg(long, value_name = "DIR", default_value = "/tmp/outputs")]
    pub outputs_dir: PathBuf,

    /// Log format: `text` for people, `json` for log collectors; `auto` picks text on a terminal.
    #[arg(long, value_enum, default_value_t = LogFormat::Auto)]
    pub log_format: LogFormat,

    /// Log level: error, warn, info, debug or trace.
    #[arg(long, value_name = "LEVEL", default_value = "info")]
    pub log_level: tracing::Level,

    /// Deadline for the whole step, e.g. `90s`, `10m`, `1h30m` (each step has its own default).
    /// When it passes, in-flight work is cancelled and the step exits 4.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub timeout: Option<Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Auto,
    Text,
    Json,
}

/// Implemented by each step's flags so the runner finds the common ones.
pub trait StepArgs: clap::Parser + Send + 'static {
    /// The deadline when `--timeout` is not given.
    const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10 * 60);

    /// Worker threads of the async runtime: 1 runs everything on the main thread (enough for
    /// steps that wait on the network); more for steps with CPU work to spread (at most the
    /// machine's cores). Blocking work goes to `spawn_blocking` either way.
    const WORKER_THREADS: usize = 1;

    /// Whether the step makes TLS connections (then the rustls provider is installed at start).
    const USES_TLS: bool = true;

    fn common(&self) -> &CommonArgs;

    fn timeout(&self) -> Duration {
        self.common().timeout.unwrap_or(Self::DEFAULT_TIMEOUT)
    }
}

/// Parses durations like `90s`, `10m`, `1h30m`, `250ms` (humantime's syntax); zero is refused.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(text.trim())
        .map_err(|e| format!("{e} (expected a duration such as 90s, 10m or 1h30m)"))?;
    if d.is_zero() {
        return Err("must be longer than zero".into());
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_in_the_documented_forms() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("soon").is_err());
    }
}
