//! The card: the one comment on a pull request that says where its sandbox is and what state it
//! is in. It starts with a hidden marker naming the pull request, the environment and when the
//! report was made (so a run finds the card again, and an older report never overwrites a newer
//! one); the rest is Markdown in which every untrusted text (branch names, failure messages) is
//! quoted so that it renders as text: no link, no mention, no HTML, no table cell it leaves.

use std::time::SystemTime;

use clap::ValueEnum;

/// A sandbox's state, as the card shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum State {
    /// Waiting for room (admission).
    Queued,
    /// create-sandbox is running.
    Creating,
    /// Argo CD reports the application Synced and Healthy.
    Ready,
    /// A run failed (the failed step and its message on the card).
    Failed,
    /// A new commit is being deployed.
    Updating,
    /// Scaled to zero; woken by the pull request.
    Sleeping,
    /// Inactive: it expires at --expires-at unless extended.
    Expiring,
    /// delete-sandbox is running.
    Deleting,
    /// Removed.
    Deleted,
}

impl State {
    pub fn name(self) -> &'static str {
        match self {
            State::Queued => "queued",
            State::Creating => "creating",
            State::Ready => "ready",
            State::Failed => "failed",
            State::Updating => "updating",
            State::Sleeping => "sleeping",
            State::Expiring => "expiring",
            State::Deleting => "deleting",
            State::Deleted => "deleted",
        }
    }

    fn emoji(self) -> &'static str {
        match self {
            State::Queued => ":hourglass_flowing_sand:",
            State::Creating => ":construction:",
            State::Ready => ":white_check_mark:",
            State::Failed => ":x:",
            State::Updating => ":arrows_counterclockwise:",
            State::Sleeping => ":zzz:",
            State::Expiring => ":hourglass:",
            State::Deleting => ":broom:",
            State::Deleted => ":wastebasket:",
        }
    }

    /// Whether the sandbox can be opened in this state (its URL is a link then).
    pub fn reachable(self) -> bool {
        matches!(
            self,
            State::Ready | State::Updating | State::Expiring | State::Failed
        )
    }
}

/// One failed step, from Argo's `workflow.failures` or from --message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub step: String,
    pub message: String,
}

/// What the card shows.
#[derive(Debug, Clone, Default)]
pub struct Card {
    pub pr_number: u64,
    pub environment: Option<String>,
    pub state: Option<State>,
    pub environment_url: Option<url::Url>,
    pub log_url: Option<url::Url>,
    pub app_url: Option<url::Url>,
    pub deployed_commit: Option<String>,
    pub head_commit: String,
    pub head_ref: String,
    pub failures: Vec<Failure>,
    pub expires_at: Option<SystemTime>,
    /// The pull request has the keep label: the sandbox never expires.
    pub kept: bool,
    /// Queued: (position, of) in admit-sandbox's queue.
    pub queue: Option<(usize, usize)>,
    pub keep_label: String,
    /// Sleeping: since when, and why (patch-kustomize's record).
    pub asleep: Option<(SystemTime, String)>,
}

/// The marker's fixed start: `<!-- sandbox-steps:card pr=N `.
fn marker_start(pr_number: u64) -> String {
    format!("{}pr={pr_number} ", github::CARD_MARKER)
}

/// What a card's marker says: the report's time, and what the card links to, so that a report
/// that does not know them (an `/extend`, the sweep's warning) keeps them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Marker {
    pub environment: Option<String>,
    pub reported_at: SystemTime,
    pub environment_url: Option<url::Url>,
    pub log_url: Option<url::Url>,
    pub app_url: Option<url::Url>,
    pub deployed_commit: Option<String>,
    /// Sleeping since, and why.
    pub asleep: Option<(SystemTime, String)>,
}

/// The marker of pull request `pr_number`'s card, if `body` is one.
pub fn parse_marker(body: &str, pr_number: u64) -> Option<Marker> {
    let rest = body.strip_prefix(&marker_start(pr_number))?;
    let fields = rest.lines().next()?.strip_suffix(" -->")?;
    let mut environment = None;
    let mut reported_at = None;
    let (mut environment_url, mut log_url, mut app_url, mut deployed_commit) =
        (None, None, None, None);
    let mut asleep = None;
    // Only what our own rendering writes is taken: http(s) URLs (serialized by the url crate:
    // no spaces, no `>`), a checked commit id.
    let link = |value: &str| {
        url::Url::parse(value)
            .ok()
            .filter(|u| matches!(u.scheme(), "https" | "http"))
    };
    for field in fields.split(' ') {
        match field.split_once('=') {
            Some(("environment", env)) if naming::check_dns_label(env).is_ok() => {
                environment = Some(env.to_owned())
            }
            Some(("at", at)) => reported_at = humantime::parse_rfc3339(at).ok(),
            Some(("url", value)) => environment_url = link(value),
            Some(("log", value)) => log_url = link(value),
            Some(("app", value)) => app_url = link(value),
            Some(("deployed", value)) if naming::check_commit_id(value, false).is_ok() => {
                deployed_commit = Some(value.to_owned())
            }
            Some(("asleep", value)) => {
                asleep = value.split_once(',').and_then(|(at, reason)| {
                    let reason_ok = reason.bytes().all(|b| b.is_ascii_lowercase());
                    Some((humantime::parse_rfc3339(at).ok()?, reason.to_owned()))
                        .filter(|_| reason_ok)
                })
            }
            _ => {}
        }
    }
    Some(Marker {
        environment,
        reported_at: reported_at?,
        environment_url,
        log_url,
        app_url,
        deployed_commit,
        asleep,
    })
}

/// The state a card's body shows (its title line), if it is a card.
pub fn shown_state(body: &str) -> Option<State> {
    let title = body.lines().find(|l| l.starts_with("### "))?;
    let (_, name) = title.rsplit_once(": ")?;
    State::value_variants()
        .iter()
        .copied()
        .find(|s| s.name() == name.trim())
}

/// The card's content without its marker line: two bodies that differ only in when they were
/// reported show the same.
pub fn content(body: &str) -> &str {
    body.split_once('\n').map_or("", |(_, rest)| rest)
}

impl Card {
    /// The comment's body: the marker, then the Markdown.
    pub fn render(&self, reported_at: SystemTime) -> String {
        let environment = self.environment.as_deref().unwrap_or_default();
        // The sleep, while the card says sleeping, or expiring (a sleeping sandbox about to
        // expire still says it sleeps, and how to wake it).
        let asleep = self
            .asleep
            .as_ref()
            .filter(|_| matches!(self.state, Some(State::Sleeping | State::Expiring)));
        let asleep_field = asleep
            .map(|(at, reason)| format!("{},{reason}", humantime::format_rfc3339_seconds(*at)));
        let mut out = format!(
            "{}environment={environment} at={}",
            marker_start(self.pr_number),
            humantime::format_rfc3339_nanos(reported_at)
        );
        for (name, value) in [
            ("url", self.environment_url.as_ref().map(url::Url::as_str)),
            ("log", self.log_url.as_ref().map(url::Url::as_str)),
            ("app", self.app_url.as_ref().map(url::Url::as_str)),
            ("deployed", self.deployed_commit.as_deref()),
            ("asleep", asleep_field.as_deref()),
        ] {
            if let Some(value) = value {
                out.push_str(&format!(" {name}={value}"));
            }
        }
        out.push_str(" -->\n");
        let state = self.state.unwrap_or(State::Queued);
        let title = match &self.environment {
            Some(env) => format!("Sandbox `{env}`"),
            None => "Sandbox".to_owned(),
        };
        out.push_str(&format!(
            "### {} {title}: {}\n\n",
            state.emoji(),
            state.name()
        ));
        let mut rows: Vec<(&str, String)> = Vec::new();
        if let Some(url) = &self.environment_url {
            let shown = if state.reachable() {
                link(url.as_str(), url)
            } else {
                code_span(url.as_str())
            };
            rows.push(("Environment", shown));
        }
        if let Some((position, of)) = self.queue.filter(|_| state == State::Queued) {
            rows.push((
                "Queue",
                format!(
                    "position {position} of {of}: the cap on live sandboxes is reached; it is \
                     created when a slot frees up"
                ),
            ));
        }
        if let Some((since, reason)) = asleep {
            let why = match reason.as_str() {
                "idle" => " (idle)",
                "night" => " (the night schedule)",
                "capacity" => " (to make room for another sandbox)",
                _ => "",
            };
            rows.push((
                "Sleeping",
                format!(
                    "since {} UTC{why}: scaled to zero, its data kept; a push or `{}` (by a \
                     writer) wakes it",
                    shown_time(*since),
                    github::WAKE_COMMAND
                ),
            ));
        }
        let head = short(&self.head_commit);
        rows.push((
            "Pull request head",
            format!("`{head}` on {}", code_span(&self.head_ref)),
        ));
        if let Some(deployed) = &self.deployed_commit {
            let note = if deployed == &self.head_commit {
                " (the head)"
            } else {
                " (not the head yet)"
            };
            rows.push(("Deployed commit", format!("`{}`{note}", short(deployed))));
        }
        if let Some(url) = &self.log_url {
            rows.push(("Workflow", link("Argo Workflows run", url)));
        }
        if let Some(url) = &self.app_url {
            rows.push(("Application", link("Argo CD", url)));
        }
        if self.kept {
            rows.push((
                "Expires",
                format!(
                    "never: the pull request has the `{}` label",
                    self.keep_label
                ),
            ));
        } else if let Some(at) = self.expires_at {
            rows.push((
                "Expires",
                format!(
                    "{} UTC, unless a push or `{}` (by a writer); the `{}` label keeps it",
                    shown_time(at),
                    github::EXTEND_COMMAND,
                    self.keep_label
                ),
            ));
        }
        out.push_str("| | |\n|---|---|\n");
        for (name, value) in rows {
            out.push_str(&format!("| {name} | {value} |\n"));
        }
        for failure in &self.failures {
            out.push_str(&format!(
                "\n**Failed step** {}:\n\n{}",
                code_span(&failure.step),
                fenced(&failure.message)
            ));
        }
        out
    }
}

/// A time as the card shows it, in UTC to the second: `2026-12-04 10:00:00`.
pub fn shown_time(at: SystemTime) -> String {
    humantime::format_rfc3339_seconds(at)
        .to_string()
        .replace('T', " ")
        .trim_end_matches('Z')
        .to_owned()
}

/// The first 12 characters of a commit id (ids are checked hex: safe in a code span).
fn short(commit: &str) -> &str {
    &commit[..commit.len().min(12)]
}

/// A link whose destination is a parsed http(s) URL: in angle brackets, which a URL's
/// serialization never contains (the url crate percent-encodes `<`, `>`, spaces and controls).
fn link(text: &str, url: &url::Url) -> String {
    format!("[{text}](<{url}>)")
}

/// Invisible characters (bidi overrides, zero-width ones) written as `\u{XXXX}`, as the logs show
/// them (they would reorder or hide the text around them even inside code), controls as spaces
/// (`keep_newlines` keeps line breaks).
fn visible(text: &str, keep_newlines: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\n' if keep_newlines => out.push('\n'),
            c if naming::is_invisible(c) && !c.is_control() => {
                out.push_str(&format!("\\u{{{:04x}}}", c as u32))
            }
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// Untrusted text as a Markdown code span: rendered literally (no emphasis, link, mention or
/// HTML), delimited by one more backtick than its longest run of backticks, on one line, with
/// `|` escaped so that it stays in its table cell (GFM removes that escape inside code spans
/// too), invisible characters shown as escapes.
pub fn code_span(text: &str) -> String {
    let one_line = visible(text, false).replace('|', "\\|");
    let fence = "`".repeat(longest_run(&one_line, '`') + 1);
    format!("{fence} {one_line} {fence}")
}

/// Untrusted text as a fenced code block, its fence longer than any run of backticks in it.
fn fenced(text: &str) -> String {
    let fence = "`".repeat((longest_run(text, '`') + 1).max(3));
    let text = visible(text, true);
    format!("{fence}text\n{}\n{fence}\n", text.trim_end())
}

fn longest_run(text: &str, c: char) -> usize {
    let (mut longest, mut run) = (0, 0);
    for ch in text.chars() {
        run = if ch == c { run + 1 } else { 0 };
        longest = longest.max(run);
    }
    longest
}

/// The failed steps of Argo's `workflow.failures` (a JSON list of the failed nodes, which Argo
/// hands over quoted as a JSON string literal: `strconv.Quote`, argo-workflows v4
/// workflow/controller/operator.go); a text that is not that list is one failure of an unnamed
/// step.
pub fn parse_failures(text: &str) -> Vec<Failure> {
    let text = text.trim();
    if text.is_empty() {
        return Vec::new();
    }
    let parsed = match serde_json::from_str::<serde_json::Value>(text) {
        Ok(serde_json::Value::String(inner)) => serde_json::from_str(&inner).ok(),
        other => other.ok(),
    };
    let Some(serde_json::Value::Array(nodes)) = parsed else {
        return vec![Failure {
            step: "(unnamed)".to_owned(),
            message: text.to_owned(),
        }];
    };
    nodes
        .iter()
        .map(|node| Failure {
            step: node["displayName"]
                .as_str()
                .or(node["templateName"].as_str())
                .unwrap_or("(unnamed)")
                .to_owned(),
            message: node["message"].as_str().unwrap_or_default().to_owned(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn markers_round_trip_and_belong_to_their_pull_request() {
        let at = UNIX_EPOCH + Duration::from_nanos(1_764_000_000_123_456_789);
        let card = Card {
            pr_number: 42,
            environment: Some("sbx-pr-42".into()),
            head_commit: "a".repeat(40),
            ..Card::default()
        };
        let body = card.render(at);
        assert_eq!(
            parse_marker(&body, 42),
            Some(Marker {
                environment: Some("sbx-pr-42".into()),
                reported_at: at,
                environment_url: None,
                log_url: None,
                app_url: None,
                deployed_commit: None,
                asleep: None,
            })
        );
        // What the card links to travels in the marker.
        let url = |u: &str| Some(url::Url::parse(u).unwrap());
        let linked = Card {
            environment_url: url("https://sbx-pr-42.example.dev/"),
            log_url: url("https://argo.example.dev/workflows/argo/create-x?a=%3E"),
            app_url: url("https://cd.example.dev/applications/argocd/sbx-pr-42"),
            deployed_commit: Some("b".repeat(40)),
            ..card.clone()
        };
        let marker = parse_marker(&linked.render(at), 42).unwrap();
        assert_eq!(
            (
                marker.environment_url,
                marker.log_url,
                marker.app_url,
                marker.deployed_commit
            ),
            (
                linked.environment_url.clone(),
                linked.log_url.clone(),
                linked.app_url.clone(),
                linked.deployed_commit.clone()
            )
        );
        // A sleeping card carries since when and why; only while it says sleeping.
        let since = UNIX_EPOCH + Duration::from_secs(1_764_000_000);
        let sleeping = Card {
            state: Some(State::Sleeping),
            asleep: Some((since, "night".into())),
            ..card.clone()
        };
        let body_asleep = sleeping.render(at);
        assert_eq!(
            parse_marker(&body_asleep, 42).unwrap().asleep,
            Some((since, "night".into()))
        );
        assert!(
            body_asleep.contains(
                "| Sleeping | since 2025-11-24 16:00:00 UTC (the night schedule): scaled to zero, \
                 its data kept; a push or `/wake` (by a writer) wakes it |"
            ),
            "{body_asleep}"
        );
        let awake = Card {
            state: Some(State::Ready),
            ..sleeping.clone()
        };
        assert!(!awake.render(at).contains("Sleeping"));
        assert_eq!(parse_marker(&awake.render(at), 42).unwrap().asleep, None);
        // A hand-made marker with something else than a URL or a commit id: ignored.
        let forged = "<!-- sandbox-steps:card pr=42 environment=x at=2026-11-30T10:00:00Z \
                      url=javascript:alert(1) deployed=zz -->\n";
        let marker = parse_marker(forged, 42).unwrap();
        assert_eq!(
            (marker.environment_url, marker.deployed_commit),
            (None, None)
        );
        assert_eq!(parse_marker(&body, 4), None);
        assert_eq!(parse_marker(&format!("quoted:\n{body}"), 42), None);
        assert_eq!(content(&body), content(&card.render(UNIX_EPOCH)));
        assert_eq!(shown_state(&body), Some(State::Queued));
        for state in State::value_variants() {
            let card = Card {
                state: Some(*state),
                ..card.clone()
            };
            assert_eq!(shown_state(&card.render(at)), Some(*state));
            // The names are the flag's values.
            assert_eq!(state.to_possible_value().unwrap().get_name(), state.name());
        }
    }

    #[test]
    fn untrusted_text_renders_as_text() {
        assert_eq!(code_span("feature/x"), "` feature/x `");
        assert_eq!(code_span("a`b"), "`` a`b ``");
        assert_eq!(code_span("x | y\n@team"), "` x \\| y @team `");
        assert_eq!(code_span("a\u{202e}b"), "` a\\u{202e}b `");
        let block = fenced("``` escape\n<script>");
        assert!(block.starts_with("````text\n"), "{block}");
        assert!(block.ends_with("\n````\n"), "{block}");
    }

    #[test]
    fn argo_failures_are_read() {
        let failures = parse_failures(
            r#"[{"displayName":"restore-db","message":"exit code 3","templateName":"restore-db","phase":"Failed"}]"#,
        );
        assert_eq!(
            failures,
            vec![Failure {
                step: "restore-db".into(),
                message: "exit code 3".into()
            }]
        );
        // As Argo hands it over: quoted as a string literal.
        let quoted = serde_json::to_string(
            r#"[{"displayName":"restore-db","message":"exit code 3","phase":"Failed"}]"#,
        )
        .unwrap();
        assert_eq!(parse_failures(&quoted), failures);
        assert_eq!(parse_failures("boom")[0].message, "boom");
        assert!(parse_failures("  ").is_empty());
    }
}
