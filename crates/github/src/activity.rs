//! A pull request's last activity, the clock a sandbox's expiry counts from, read from its
//! timeline (`GET /repos/{owner}/{repo}/issues/{n}/timeline`, page by page).
//!
//! What counts: pushes (`committed`, by the commit's committer date, and `head_ref_force_pushed`),
//! label changes, reopening, ready for review, review requests, and comments and reviews **by
//! people with write access** to the repository (`admin`, `maintain` or `write`), `/extend` being
//! such a comment. What does not: comments and reviews by anyone else (on a public repository a
//! stranger's comment would keep a sandbox alive forever), by bots (a CI bot comments on every
//! push, which counts already), and the sandbox's own card (its reports would restart the clock).
//! GitHub's `updated_at` moves on all of these, which is why it is not used.
//!
//! Write access is asked (`GET .../collaborators/{login}/permission`) only for members and
//! collaborators (the timeline's `author_association`: everyone else has no write access), only
//! for comments newer than the activity found without them, and once per login per run.

use std::time::SystemTime;

use reqwest::Method;
use serde::Deserialize;
use step_kit::{escape_untrusted, StepError};

use crate::{Call, GitHub, PullRequest};

/// How the card comments of report-status start; such comments are not activity.
pub const CARD_MARKER: &str = "<!-- sandbox-steps:card ";

/// The comment that resets the clock, as its first line.
pub const EXTEND_COMMAND: &str = "/extend";

/// The comment that wakes a sleeping sandbox (and, by a writer, resets the clock too).
pub const WAKE_COMMAND: &str = "/wake";

const TIMELINE: Call = Call {
    what: "GitHub pull request timeline",
    permission: "issues: read or pull requests: read",
};
const PERMISSION: Call = Call {
    what: "GitHub collaborator permission",
    permission: "metadata: read",
};

/// The last thing that happened on a pull request that keeps its sandbox alive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Activity {
    pub at: SystemTime,
    /// What it was, for the log: `push`, `label create-sandbox`, `/extend by @alice`, ...
    pub what: String,
}

#[derive(Debug, Default, Deserialize)]
pub struct TimelineEvent {
    #[serde(default)]
    event: Option<String>,
    #[serde(default)]
    created_at: Option<String>,
    /// Reviews.
    #[serde(default)]
    submitted_at: Option<String>,
    /// Commits.
    #[serde(default)]
    committer: Option<GitUser>,
    /// Comments and reviews.
    #[serde(default)]
    user: Option<User>,
    #[serde(default)]
    author_association: Option<String>,
    #[serde(default)]
    body: Option<String>,
    #[serde(default)]
    label: Option<Label>,
}

#[derive(Debug, Deserialize)]
struct GitUser {
    date: Option<String>,
}

#[derive(Debug, Deserialize)]
struct User {
    login: String,
    #[serde(rename = "type", default)]
    kind: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Label {
    name: String,
}

/// A comment or review that counts if its author has write access.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub at: SystemTime,
    pub login: String,
    /// `author_association` OWNER: the repository's owner, write access without asking.
    pub owner: bool,
    /// `/extend` or `/wake`.
    pub command: Option<&'static str>,
    pub review: bool,
}

/// Whether a comment's body is an `/extend` command: its first word is `/extend` (a reason may
/// follow after a space or on the next lines).
pub fn is_extend_command(body: &str) -> bool {
    command_of(body) == Some(EXTEND_COMMAND)
}

/// The command a comment's body is, by its first word: `/extend` or `/wake`.
pub fn command_of(body: &str) -> Option<&'static str> {
    let first = body.split_whitespace().next()?;
    [EXTEND_COMMAND, WAKE_COMMAND]
        .into_iter()
        .find(|command| *command == first)
}

fn time(value: &Option<String>) -> Option<SystemTime> {
    crate::parse_time(value.as_deref()?).ok()
}

/// Folds one page of the timeline into the activity found so far (`best`) and the comments and
/// reviews whose authors' access decides whether they count.
pub fn fold_page(
    events: &[TimelineEvent],
    best: &mut Option<Activity>,
    candidates: &mut Vec<Candidate>,
) {
    let mut consider = |at: Option<SystemTime>, what: String| {
        if let Some(at) = at {
            if best.as_ref().is_none_or(|b| at > b.at) {
                *best = Some(Activity { at, what });
            }
        }
    };
    for event in events {
        let kind = event.event.as_deref().unwrap_or_default();
        match kind {
            "committed" => consider(
                event.committer.as_ref().and_then(|c| time(&c.date)),
                "push".into(),
            ),
            "head_ref_force_pushed" => consider(time(&event.created_at), "force-push".into()),
            "labeled" | "unlabeled" => consider(
                time(&event.created_at),
                format!(
                    "{} {}",
                    if kind == "labeled" {
                        "label"
                    } else {
                        "unlabel"
                    },
                    event.label.as_ref().map_or("", |l| l.name.as_str())
                ),
            ),
            "reopened" | "ready_for_review" | "review_requested" => {
                consider(time(&event.created_at), kind.replace('_', " "))
            }
            "commented" | "reviewed" => {
                let Some(user) = &event.user else { continue };
                let body = event.body.as_deref().unwrap_or_default();
                let association = event.author_association.as_deref().unwrap_or_default();
                let at = if kind == "reviewed" {
                    time(&event.submitted_at)
                } else {
                    time(&event.created_at)
                };
                let may_write = matches!(association, "OWNER" | "MEMBER" | "COLLABORATOR");
                let bot = user.kind.as_deref() == Some("Bot") || user.login.ends_with("[bot]");
                if body.starts_with(CARD_MARKER) || bot || !may_write {
                    continue;
                }
                if let Some(at) = at {
                    candidates.push(Candidate {
                        at,
                        login: user.login.clone(),
                        owner: association == "OWNER",
                        command: command_of(body).filter(|_| kind == "commented"),
                        review: kind == "reviewed",
                    });
                }
            }
            _ => {}
        }
    }
}

impl Candidate {
    fn describe(&self) -> String {
        let what = if let Some(command) = self.command {
            command
        } else if self.review {
            "review"
        } else {
            "comment"
        };
        format!("{what} by @{}", shown_login(&self.login))
    }
}

/// A login as the log shows it: as it is when it is one (`[A-Za-z0-9-]`, `[bot]`), else
/// escaped (it is text from GitHub).
pub fn shown_login(login: &str) -> String {
    let plain = !login.is_empty()
        && login
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_[]".contains(&b));
    if plain {
        login.to_owned()
    } else {
        escape_untrusted(login)
    }
}

impl GitHub {
    /// Whether `login` has write access (admin, maintain or write) to the repository; asked once
    /// per login per run. A login GitHub does not know (404) has none.
    pub async fn can_write(&self, login: &str) -> Result<bool, StepError> {
        if let Some(known) = self.writers.lock().unwrap().get(login) {
            return Ok(*known);
        }
        #[derive(Deserialize)]
        struct PermissionJson {
            permission: String,
        }
        let url = self.repo_url(&format!("/collaborators/{}/permission", url_segment(login)));
        let writes = self
            .send::<PermissionJson>(Method::GET, &url, None, PERMISSION, true)
            .await?
            .is_some_and(|(p, _)| matches!(p.permission.as_str(), "admin" | "write"));
        self.writers
            .lock()
            .unwrap()
            .insert(login.to_owned(), writes);
        Ok(writes)
    }

    /// The pull request's last activity (see the module's documentation); its creation when
    /// nothing else counts.
    pub async fn activity(&self, pull: &PullRequest) -> Result<Activity, StepError> {
        let mut best = Some(Activity {
            at: pull.created_at,
            what: "opened".into(),
        });
        let mut candidates = Vec::new();
        let mut url = self.repo_url(&format!("/issues/{}/timeline?per_page=100", pull.number));
        loop {
            let (page, next) = self
                .send::<Vec<TimelineEvent>>(Method::GET, &url, None, TIMELINE, false)
                .await?
                .expect("a listing's 404 is an error");
            fold_page(&page, &mut best, &mut candidates);
            // Only the comments newer than the best so far can change it.
            let floor = best.as_ref().map(|b| b.at);
            candidates.retain(|c| Some(c.at) > floor);
            match next {
                Some(next) => url = next,
                None => break,
            }
        }
        let mut best = best.expect("starts with the creation");
        candidates.sort_by_key(|c| std::cmp::Reverse(c.at));
        for candidate in candidates {
            if candidate.at <= best.at {
                break;
            }
            if candidate.owner || self.can_write(&candidate.login).await? {
                best = Activity {
                    at: candidate.at,
                    what: candidate.describe(),
                };
                break;
            }
        }
        Ok(best)
    }
}

/// A login as one URL path segment (GitHub logins are `[A-Za-z0-9-]`, bots add `[bot]`).
fn url_segment(login: &str) -> String {
    login
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(json: serde_json::Value) -> Vec<TimelineEvent> {
        serde_json::from_value(json).unwrap()
    }

    fn at(s: &str) -> SystemTime {
        humantime::parse_rfc3339(s).unwrap()
    }

    #[test]
    fn pushes_labels_and_writers_comments_count_strangers_bots_and_cards_do_not() {
        let page = events(serde_json::json!([
            {"event": "committed", "sha": "a", "committer": {"name": "x", "email": "x@y", "date": "2026-11-01T10:00:00Z"}},
            {"event": "labeled", "created_at": "2026-11-02T10:00:00Z", "label": {"name": "create-sandbox", "color": "f"}},
            {"event": "commented", "created_at": "2026-11-05T10:00:00Z", "user": {"login": "stranger", "type": "User"}, "author_association": "NONE", "body": "/extend"},
            {"event": "commented", "created_at": "2026-11-05T11:00:00Z", "user": {"login": "ci[bot]", "type": "Bot"}, "author_association": "NONE", "body": "coverage 80%"},
            {"event": "commented", "created_at": "2026-11-05T12:00:00Z", "user": {"login": "sandbox-bot", "type": "User"}, "author_association": "COLLABORATOR", "body": "<!-- sandbox-steps:card pr=1 environment= at=2026-11-05T12:00:00Z -->\n### ..."},
            {"event": "commented", "created_at": "2026-11-03T10:00:00Z", "user": {"login": "alice", "type": "User"}, "author_association": "MEMBER", "body": "/extend\nstill reviewing"},
            {"event": "reviewed", "submitted_at": "2026-11-04T10:00:00Z", "user": {"login": "bob", "type": "User"}, "author_association": "COLLABORATOR", "body": "", "state": "approved"},
            {"event": "mentioned", "created_at": "2026-11-09T10:00:00Z"}
        ]));
        let mut best = None;
        let mut candidates = Vec::new();
        fold_page(&page, &mut best, &mut candidates);
        assert_eq!(
            best,
            Some(Activity {
                at: at("2026-11-02T10:00:00Z"),
                what: "label create-sandbox".into()
            })
        );
        let logins: Vec<(&str, bool)> = candidates
            .iter()
            .map(|c| (c.login.as_str(), c.command == Some(EXTEND_COMMAND)))
            .collect();
        assert_eq!(logins, [("alice", true), ("bob", false)]);
    }

    #[test]
    fn extend_is_the_first_line() {
        assert!(is_extend_command("/extend"));
        assert!(is_extend_command("  /extend \r\nplease"));
        assert!(is_extend_command("/extend one more day"));
        assert!(is_extend_command("/extend\tplease"));
        assert!(!is_extend_command("/extended"));
        assert!(!is_extend_command("please /extend"));
        assert!(!is_extend_command(""));
        assert_eq!(command_of("/wake up please"), Some(WAKE_COMMAND));
        assert_eq!(command_of("/waken"), None);
    }

    #[test]
    fn logins_are_one_path_segment() {
        assert_eq!(url_segment("alice-1"), "alice-1");
        assert_eq!(url_segment("app[bot]"), "app%5Bbot%5D");
        assert_eq!(url_segment("../x"), "..%2Fx");
    }
}
