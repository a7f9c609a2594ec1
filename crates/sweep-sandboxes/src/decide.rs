//! What the sweep does with one sandbox, and why: a pure function of what was found of it, its
//! pull request as GitHub reports it, the policy and the time.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

/// The kinds of resource a sandbox has, one per backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Resource {
    Branch,
    Application,
    Namespace,
    Database,
    Role,
    Bucket,
    Secrets,
    /// A slot under the cap on live sandboxes (admit-sandbox).
    Admission,
    /// Recorded asleep (admit-sandbox --sleep): scaled to zero, holding no slot.
    Asleep,
}

impl Resource {
    pub const ALL: [Resource; 9] = [
        Resource::Branch,
        Resource::Application,
        Resource::Namespace,
        Resource::Database,
        Resource::Role,
        Resource::Bucket,
        Resource::Secrets,
        Resource::Admission,
        Resource::Asleep,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Resource::Branch => "branch",
            Resource::Application => "application",
            Resource::Namespace => "namespace",
            Resource::Database => "database",
            Resource::Role => "role",
            Resource::Bucket => "bucket",
            Resource::Secrets => "secrets",
            Resource::Admission => "admission",
            Resource::Asleep => "asleep",
        }
    }
}

/// A pull request as the sweep needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pull {
    /// GitHub answers 404: no such pull request (or an issue's number).
    Missing,
    Found {
        open: bool,
        labels: Vec<String>,
        /// The last activity ([`github::GitHub::activity`]: pushes, labels, comments and reviews
        /// by people with write access, `/extend`).
        last_activity: SystemTime,
    },
}

/// The expiry policy.
#[derive(Debug, Clone)]
pub struct Policy {
    /// A sandbox inactive this long expires.
    pub ttl: Duration,
    /// A warning is due this long before it expires.
    pub warn_before: Duration,
    /// A pull request with this label never expires.
    pub keep_label: String,
    /// Only pull requests with this label have a sandbox (the create Sensor's label); without
    /// it, the sandbox is an orphan. `None`: every open pull request may have one.
    pub require_label: Option<String>,
    /// A sandbox inactive this long is put to sleep (zero: every one, the night schedule);
    /// `None`: the sweep puts none to sleep.
    pub sleep_after: Option<Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Keep,
    /// Keep, and put to sleep: inactive past --sleep-after.
    Sleep,
    /// Post the warning: it expires at the given time unless someone acts.
    Warn,
    /// Delete: inactive past the TTL.
    Expire,
    /// Delete: its pull request is closed, unlabelled or missing.
    Orphan,
}

impl Action {
    pub fn name(self) -> &'static str {
        match self {
            Action::Keep => "keep",
            Action::Sleep => "sleep",
            Action::Warn => "warn",
            Action::Expire => "expire",
            Action::Orphan => "orphan",
        }
    }

    /// Whether delete-sandbox runs for it.
    pub fn deletes(self) -> bool {
        matches!(self, Action::Expire | Action::Orphan)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub action: Action,
    pub reason: String,
    /// When an open, unkept sandbox expires (or expired).
    pub expires_at: Option<SystemTime>,
    /// Put it to sleep (a Sleep, or a Warn past --sleep-after too).
    pub sleep: bool,
}

impl Policy {
    /// Whether the decision depends on the pull request's activity (open, labelled, not kept):
    /// only then is its timeline read.
    pub fn needs_activity(&self, open: bool, labels: &[String]) -> bool {
        open && self
            .require_label
            .as_ref()
            .is_none_or(|required| labels.contains(required))
            && !labels.contains(&self.keep_label)
    }
}

/// Decides for one sandbox. `found` is never empty (a sandbox is what was found of it).
pub fn decide(
    found: &BTreeSet<Resource>,
    pull: &Pull,
    policy: &Policy,
    now: SystemTime,
) -> Decision {
    let decision = |action, reason: String, expires_at| Decision {
        action,
        reason,
        expires_at,
        sleep: false,
    };
    let (open, labels, last_activity) = match pull {
        Pull::Missing => return decision(Action::Orphan, "no such pull request".into(), None),
        Pull::Found {
            open,
            labels,
            last_activity,
        } => (*open, labels, *last_activity),
    };
    if !open {
        return decision(Action::Orphan, "pull request closed".into(), None);
    }
    if let Some(required) = &policy.require_label {
        if !labels.iter().any(|l| l == required) {
            return decision(Action::Orphan, format!("label {required} removed"), None);
        }
    }
    let incomplete = if found.contains(&Resource::Application) {
        String::new()
    } else {
        // A create still running, or one that failed: its pull request wants a sandbox, so
        // the sweep leaves it to create-sandbox (a re-run finishes it) and says so.
        "; incomplete (no Application: a create is running or failed, re-run create-sandbox)"
            .to_owned()
    };
    if labels.contains(&policy.keep_label) {
        return decision(
            Action::Keep,
            format!("label {} keeps it{incomplete}", policy.keep_label),
            None,
        );
    }
    let idle = now.duration_since(last_activity).unwrap_or_default();
    let expires_at = last_activity + policy.ttl;
    let asleep = found.contains(&Resource::Asleep);
    // Only a complete, awake sandbox is put to sleep (a create still running finishes first).
    let sleeps =
        !asleep && incomplete.is_empty() && policy.sleep_after.is_some_and(|after| idle >= after);
    if idle >= policy.ttl {
        return decision(
            Action::Expire,
            format!("inactive for {} (ttl {})", human(idle), human(policy.ttl)),
            Some(expires_at),
        );
    }
    if idle + policy.warn_before >= policy.ttl {
        let mut warn = decision(
            Action::Warn,
            format!(
                "inactive for {}: expires in {}{}",
                human(idle),
                human(policy.ttl - idle),
                if sleeps { "; sleeps" } else { "" }
            ),
            Some(expires_at),
        );
        warn.sleep = sleeps;
        return warn;
    }
    if sleeps {
        let after = policy.sleep_after.unwrap_or_default();
        let why = if after.is_zero() {
            "the night schedule".to_owned()
        } else {
            format!("sleep after {}", human(after))
        };
        let mut sleep = decision(
            Action::Sleep,
            format!("active {} ago ({why})", human(idle)),
            Some(expires_at),
        );
        sleep.sleep = true;
        return sleep;
    }
    let asleep = if asleep { "; asleep" } else { "" };
    decision(
        Action::Keep,
        format!("active {} ago{incomplete}{asleep}", human(idle)),
        Some(expires_at),
    )
}

/// A duration to the minute, as people read it: `3d 4h`, `5h 12m`, `40m`.
pub fn human(d: Duration) -> String {
    let minutes = d.as_secs() / 60;
    let (days, hours, minutes) = (minutes / 1440, minutes / 60 % 24, minutes % 60);
    match (days, hours, minutes) {
        (0, 0, m) => format!("{m}m"),
        (0, h, 0) => format!("{h}h"),
        (0, h, m) => format!("{h}h {m}m"),
        (d, 0, _) => format!("{d}d"),
        (d, h, _) => format!("{d}d {h}h"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    fn policy() -> Policy {
        Policy {
            ttl: 72 * HOUR,
            warn_before: 24 * HOUR,
            keep_label: "sandbox-keep".into(),
            require_label: Some("create-sandbox".into()),
            sleep_after: None,
        }
    }

    /// Everything of an awake sandbox.
    fn all() -> BTreeSet<Resource> {
        Resource::ALL
            .into_iter()
            .filter(|r| *r != Resource::Asleep)
            .collect()
    }

    fn open(labels: &[&str], idle: Duration, now: SystemTime) -> Pull {
        Pull::Found {
            open: true,
            labels: labels.iter().map(|l| l.to_string()).collect(),
            last_activity: now - idle,
        }
    }

    #[test]
    fn each_state_of_a_pull_request_decides() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let labelled = ["create-sandbox"];
        let kept = ["create-sandbox", "sandbox-keep"];
        for (pull, action, reason) in [
            (
                open(&labelled, 2 * HOUR, now),
                Action::Keep,
                "active 2h ago",
            ),
            (
                open(&labelled, 50 * HOUR, now),
                Action::Warn,
                "inactive for 2d 2h: expires in 22h",
            ),
            (
                open(&labelled, 72 * HOUR, now),
                Action::Expire,
                "inactive for 3d (ttl 3d)",
            ),
            (
                open(&kept, 900 * HOUR, now),
                Action::Keep,
                "label sandbox-keep keeps it",
            ),
            (
                open(&[], HOUR, now),
                Action::Orphan,
                "label create-sandbox removed",
            ),
            (
                open(&["sandbox-keep"], HOUR, now),
                Action::Orphan,
                "label create-sandbox removed",
            ),
            (
                Pull::Found {
                    open: false,
                    labels: vec!["create-sandbox".into()],
                    last_activity: now,
                },
                Action::Orphan,
                "pull request closed",
            ),
            (Pull::Missing, Action::Orphan, "no such pull request"),
        ] {
            let d = decide(&all(), &pull, &policy(), now);
            assert_eq!((d.action, d.reason.as_str()), (action, reason), "{pull:?}");
        }
    }

    #[test]
    fn the_warning_and_the_expiry_are_counted_from_the_last_activity() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let just_before = open(
            &["create-sandbox"],
            48 * HOUR - Duration::from_secs(60),
            now,
        );
        assert_eq!(
            decide(&all(), &just_before, &policy(), now).action,
            Action::Keep
        );
        let at_warning = open(&["create-sandbox"], 48 * HOUR, now);
        let d = decide(&all(), &at_warning, &policy(), now);
        assert_eq!(d.action, Action::Warn);
        assert_eq!(d.expires_at, Some(now + 24 * HOUR));
        // A future activity (clock skew) is activity now.
        let future = open(&["create-sandbox"], Duration::ZERO, now + HOUR);
        assert_eq!(decide(&all(), &future, &policy(), now).action, Action::Keep);
        // Without a required label, any open pull request may have a sandbox.
        let unlabelled = open(&[], HOUR, now);
        let any = Policy {
            require_label: None,
            ..policy()
        };
        assert_eq!(decide(&all(), &unlabelled, &any, now).action, Action::Keep);
    }

    #[test]
    fn an_incomplete_sandbox_of_a_wanted_pull_request_is_kept_and_said_so() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let found: BTreeSet<Resource> = [Resource::Branch, Resource::Database].into();
        let d = decide(
            &found,
            &open(&["create-sandbox"], HOUR, now),
            &policy(),
            now,
        );
        assert_eq!(d.action, Action::Keep);
        assert!(
            d.reason.contains("incomplete (no Application"),
            "{}",
            d.reason
        );
        // Closed: the same leftovers are an orphan.
        let closed = Pull::Found {
            open: false,
            labels: vec![],
            last_activity: now,
        };
        assert_eq!(
            decide(&found, &closed, &policy(), now).action,
            Action::Orphan
        );
    }

    #[test]
    fn idle_awake_sandboxes_are_put_to_sleep() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let sleepy = Policy {
            sleep_after: Some(8 * HOUR),
            ..policy()
        };
        let awake = all();
        let asleep: BTreeSet<Resource> = Resource::ALL.into_iter().collect();
        let d = decide(
            &awake,
            &open(&["create-sandbox"], 9 * HOUR, now),
            &sleepy,
            now,
        );
        assert_eq!((d.action, d.sleep), (Action::Sleep, true), "{d:?}");
        assert_eq!(d.reason, "active 9h ago (sleep after 8h)");
        let d = decide(
            &awake,
            &open(&["create-sandbox"], 7 * HOUR, now),
            &sleepy,
            now,
        );
        assert_eq!((d.action, d.sleep), (Action::Keep, false));
        // Asleep already: kept, and said so.
        let d = decide(
            &asleep,
            &open(&["create-sandbox"], 9 * HOUR, now),
            &sleepy,
            now,
        );
        assert_eq!((d.action, d.sleep), (Action::Keep, false));
        assert!(d.reason.ends_with("; asleep"), "{}", d.reason);
        // About to expire and idle: warned and put to sleep.
        let d = decide(
            &awake,
            &open(&["create-sandbox"], 50 * HOUR, now),
            &sleepy,
            now,
        );
        assert_eq!((d.action, d.sleep), (Action::Warn, true));
        // The keep label keeps it awake; an incomplete one is left to its create.
        let kept = ["create-sandbox", "sandbox-keep"];
        assert!(!decide(&awake, &open(&kept, 9 * HOUR, now), &sleepy, now).sleep);
        let partial: BTreeSet<Resource> = [Resource::Branch].into();
        assert!(
            !decide(
                &partial,
                &open(&["create-sandbox"], 9 * HOUR, now),
                &sleepy,
                now
            )
            .sleep
        );
        // The night schedule: every awake one, however recent.
        let night = Policy {
            sleep_after: Some(Duration::ZERO),
            ..policy()
        };
        let d = decide(
            &awake,
            &open(&["create-sandbox"], Duration::ZERO, now),
            &night,
            now,
        );
        assert_eq!(d.action, Action::Sleep);
        assert_eq!(d.reason, "active 0m ago (the night schedule)");
    }

    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!(human(Duration::from_secs(59)), "0m");
        assert_eq!(human(40 * 60 * Duration::from_secs(1)), "40m");
        assert_eq!(human(5 * HOUR + Duration::from_secs(12 * 60)), "5h 12m");
        assert_eq!(human(72 * HOUR), "3d");
        assert_eq!(human(76 * HOUR + Duration::from_secs(600)), "3d 4h");
    }
}
