//! The cap on live sandboxes, as the ConfigMap [`CONFIGMAP`] in the workflows' namespace holds it: one key per admitted sandbox
//! (`admitted.<environment>`), one per waiting request (`queued.<environment>`) and one per
//! sleeping sandbox (`asleep.<environment>`: it stays, costs nothing, and holds no slot), each a
//! small JSON document. Readable with `kubectl get configmap sandbox-admission -o yaml`, changed only as
//! a whole by compare-and-swap on the ConfigMap's `resourceVersion` (admit-sandbox); the sweep
//! reads it to find sandboxes whose only trace is their slot. Pure: decisions are functions of the
//! state, the request and the time.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

/// The ConfigMap's default name.
pub const CONFIGMAP: &str = "sandbox-admission";

const ADMITTED: &str = "admitted.";
const QUEUED: &str = "queued.";
const ASLEEP: &str = "asleep.";

/// A sandbox counted as live: from its admission until delete-sandbox releases it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Admitted {
    pub pr: u64,
    /// When its pull request asked (the queue's order).
    pub requested: String,
    /// When it was admitted.
    pub since: String,
    /// Its last sign of use seen here: a push (update-sandbox asks again) or a wake. Unset: since
    /// it was admitted. The idlest sandbox is the one whose last sign is oldest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active: Option<String>,
}

/// A request waiting for a slot; its waiter renews it while it waits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Queued {
    pub pr: u64,
    pub requested: String,
    pub renewed: String,
}

/// A sandbox put to sleep: its slot is free; waking asks for one again, like a new request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Asleep {
    pub pr: u64,
    /// Since when.
    pub since: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Admission {
    pub admitted: BTreeMap<String, Admitted>,
    pub queued: BTreeMap<String, Queued>,
    pub asleep: BTreeMap<String, Asleep>,
    /// Keys that are neither (left as they are, and named in the log).
    pub other: BTreeMap<String, String>,
}

/// What a request gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// It was admitted before (a re-run, a retry): nothing changes.
    AlreadyAdmitted,
    /// Admitted now.
    Admit,
    /// Waiting: `position` (1-based) of `of` requests in the queue.
    Queued { position: usize, of: usize },
}

fn time(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

fn parse(t: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339_weak(t).ok()
}

/// One key's JSON into `entries`; false when it does not parse (the key is kept as foreign).
fn read_entry<T: serde::de::DeserializeOwned>(
    entries: &mut BTreeMap<String, T>,
    env: &str,
    json: &str,
) -> bool {
    serde_json::from_str(json)
        .map(|entry| entries.insert(env.to_owned(), entry))
        .is_ok()
}

/// `entries` as keys `<prefix><environment>` of JSON.
fn write_entries<T: Serialize>(
    data: &mut BTreeMap<String, String>,
    prefix: &str,
    entries: &BTreeMap<String, T>,
) {
    for (env, entry) in entries {
        let json = serde_json::to_string(entry).expect("plain data");
        data.insert(format!("{prefix}{env}"), json);
    }
}

impl Admission {
    pub fn from_data(data: &BTreeMap<String, String>) -> Admission {
        let mut admission = Admission::default();
        for (key, value) in data {
            let kept = if let Some(env) = key.strip_prefix(ADMITTED) {
                read_entry(&mut admission.admitted, env, value)
            } else if let Some(env) = key.strip_prefix(QUEUED) {
                read_entry(&mut admission.queued, env, value)
            } else if let Some(env) = key.strip_prefix(ASLEEP) {
                read_entry(&mut admission.asleep, env, value)
            } else {
                false
            };
            if !kept {
                admission.other.insert(key.clone(), value.clone());
            }
        }
        admission
    }

    pub fn to_data(&self) -> BTreeMap<String, String> {
        let mut data = self.other.clone();
        write_entries(&mut data, ADMITTED, &self.admitted);
        write_entries(&mut data, QUEUED, &self.queued);
        write_entries(&mut data, ASLEEP, &self.asleep);
        data
    }

    /// Drops the requests whose waiters stopped renewing them (a crashed or cancelled run);
    /// returns their environments.
    pub fn drop_stale(&mut self, now: SystemTime, lease: Duration) -> Vec<String> {
        let stale: Vec<String> = self
            .queued
            .iter()
            .filter(|(_, q)| parse(&q.renewed).is_none_or(|r| r + lease < now))
            .map(|(env, _)| env.clone())
            .collect();
        for env in &stale {
            self.queued.remove(env);
        }
        stale
    }

    /// The waiting requests in order: first asked, first served (ties by name).
    pub fn queue_order(&self) -> Vec<String> {
        let mut order: Vec<(SystemTime, &String)> = self
            .queued
            .iter()
            .map(|(env, q)| (parse(&q.requested).unwrap_or(SystemTime::UNIX_EPOCH), env))
            .collect();
        order.sort();
        order.into_iter().map(|(_, env)| env.clone()).collect()
    }

    /// Slots free under `cap` (0: no cap).
    fn free(&self, cap: usize) -> usize {
        if cap == 0 {
            usize::MAX
        } else {
            cap.saturating_sub(self.admitted.len())
        }
    }

    /// A request of `env` (pull request `pr`, asked at `requested`) that waits when it cannot be
    /// admitted: it joins the queue (keeping its place when it is there already: a retried run),
    /// is renewed when its last renewal is older than `renew_after`, and is admitted when it is
    /// among the first of the queue that the free slots take. Returns the decision and whether
    /// the state changed (a write is due).
    pub fn request(
        &mut self,
        env: &str,
        pr: u64,
        requested: SystemTime,
        cap: usize,
        now: SystemTime,
        renew_after: Duration,
    ) -> (Decision, bool) {
        if self.admitted.contains_key(env) {
            return (Decision::AlreadyAdmitted, false);
        }
        let mut changed = false;
        match self.queued.get_mut(env) {
            Some(entry) => {
                if parse(&entry.renewed).is_none_or(|r| r + renew_after <= now) {
                    entry.renewed = time(now);
                    changed = true;
                }
            }
            None => {
                self.queued.insert(
                    env.to_owned(),
                    Queued {
                        pr,
                        requested: time(requested),
                        renewed: time(now),
                    },
                );
                changed = true;
            }
        }
        let order = self.queue_order();
        let index = order.iter().position(|e| e == env).expect("queued above");
        if index < self.free(cap) {
            let entry = self.queued.remove(env).expect("queued above");
            // Woken: awake from now on.
            self.asleep.remove(env);
            self.admitted.insert(
                env.to_owned(),
                Admitted {
                    pr: entry.pr,
                    requested: entry.requested,
                    since: time(now),
                    active: None,
                },
            );
            return (Decision::Admit, true);
        }
        (
            Decision::Queued {
                position: index + 1,
                of: order.len(),
            },
            changed,
        )
    }

    /// A request that does not wait: admitted when a slot is free for it behind the requests
    /// already waiting (it never passes them), else refused; the state changes only when admitted.
    pub fn request_or_refuse(
        &mut self,
        env: &str,
        pr: u64,
        requested: SystemTime,
        cap: usize,
        now: SystemTime,
    ) -> Decision {
        if self.admitted.contains_key(env) {
            return Decision::AlreadyAdmitted;
        }
        let mut trial = self.clone();
        match trial.request(env, pr, requested, cap, now, Duration::ZERO) {
            (Decision::Admit, _) => {
                *self = trial;
                Decision::Admit
            }
            (decision, _) => decision,
        }
    }

    /// Frees `env`'s slot, or takes its request out of the queue, and forgets it sleeping; false
    /// when it had none of these.
    pub fn release(&mut self, env: &str) -> bool {
        let admitted = self.admitted.remove(env).is_some();
        let queued = self.queued.remove(env).is_some();
        let asleep = self.asleep.remove(env).is_some();
        admitted || queued || asleep
    }

    /// An admitted sandbox asked again (a push, a re-run): it is in use. Records the time when
    /// the last record is older than `every` (so that a burst of pushes writes once); whether the
    /// state changed.
    pub fn touch(&mut self, env: &str, now: SystemTime, every: Duration) -> bool {
        let Some(entry) = self.admitted.get_mut(env) else {
            return false;
        };
        let last = entry.active.as_deref().unwrap_or(&entry.since);
        if parse(last).is_some_and(|t| t + every > now) {
            return false;
        }
        entry.active = Some(time(now));
        true
    }

    /// The admitted sandbox whose last sign of use is oldest (ties by name), other than `except`.
    pub fn idlest(&self, except: &str) -> Option<(String, u64)> {
        self.admitted
            .iter()
            .filter(|(env, _)| env.as_str() != except)
            .map(|(env, a)| {
                let last = parse(a.active.as_deref().unwrap_or(&a.since));
                (last.unwrap_or(SystemTime::UNIX_EPOCH), env, a.pr)
            })
            .min()
            .map(|(_, env, pr)| (env.clone(), pr))
    }

    /// A request that, first in line at the cap, makes room by putting the idlest admitted
    /// sandbox to sleep: it waits in the queue like [`Admission::request`] while others wait
    /// ahead of it (it never passes them), and once first, with no slot free, the idlest goes to
    /// sleep and it is admitted. Returns the decision, the sandbox put to sleep (environment,
    /// pull request) and whether the state changed.
    pub fn request_or_sleep_idlest(
        &mut self,
        env: &str,
        pr: u64,
        requested: SystemTime,
        cap: usize,
        now: SystemTime,
        renew_after: Duration,
    ) -> (Decision, Option<(String, u64)>, bool) {
        let (decision, changed) = self.request(env, pr, requested, cap, now, renew_after);
        if !matches!(decision, Decision::Queued { position: 1, .. }) {
            return (decision, None, changed);
        }
        let Some((victim, victim_pr)) = self.idlest(env) else {
            return (decision, None, changed);
        };
        self.sleep(&victim, victim_pr, now);
        let (decision, _) = self.request(env, pr, requested, cap, now, renew_after);
        (decision, Some((victim, victim_pr)), true)
    }

    /// `env` goes to sleep: its slot (or its place in the queue) is freed for the next in line,
    /// and it is recorded asleep until a request wakes it. False when it was asleep already.
    pub fn sleep(&mut self, env: &str, pr: u64, now: SystemTime) -> bool {
        if self.asleep.contains_key(env) {
            return false;
        }
        let pr = self
            .admitted
            .remove(env)
            .map(|a| a.pr)
            .or(self.queued.remove(env).map(|q| q.pr))
            .filter(|pr| *pr != 0)
            .unwrap_or(pr);
        self.asleep.insert(
            env.to_owned(),
            Asleep {
                pr,
                since: time(now),
            },
        );
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: Duration = Duration::from_secs(60);

    fn at(minutes: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000) + MINUTE * minutes as u32
    }

    #[test]
    fn first_asked_first_served_under_the_cap() {
        let mut state = Admission::default();
        // Asked in the order 1..=5 though they arrive in another.
        for pr in [3u64, 1, 5, 2, 4] {
            let env = format!("sbx-pr-{pr}");
            state.request(&env, pr, at(pr), 2, at(10), MINUTE);
        }
        // 3 came first and took a slot, 1 the second; the rest wait in the order they asked.
        assert_eq!(
            state.admitted.keys().collect::<Vec<_>>(),
            ["sbx-pr-1", "sbx-pr-3"]
        );
        assert_eq!(state.queue_order(), ["sbx-pr-2", "sbx-pr-4", "sbx-pr-5"]);
        let (decision, changed) = state.request("sbx-pr-5", 5, at(5), 2, at(10), MINUTE);
        assert_eq!(decision, Decision::Queued { position: 3, of: 3 });
        assert!(!changed, "renewed less than a minute ago: nothing to write");
        // A release admits the first in line, not the one asking.
        assert!(state.release("sbx-pr-3"));
        let (decision, _) = state.request("sbx-pr-5", 5, at(5), 2, at(11), MINUTE);
        assert_eq!(decision, Decision::Queued { position: 3, of: 3 });
        let (decision, _) = state.request("sbx-pr-2", 2, at(2), 2, at(11), MINUTE);
        assert_eq!(decision, Decision::Admit);
        assert_eq!(
            state.request("sbx-pr-2", 2, at(2), 2, at(12), MINUTE).0,
            Decision::AlreadyAdmitted
        );
        assert!(!state.release("sbx-pr-9"));
    }

    #[test]
    fn a_request_that_stops_renewing_loses_its_place() {
        let mut state = Admission::default();
        state.request("sbx-pr-1", 1, at(0), 1, at(0), MINUTE);
        state.request("sbx-pr-2", 2, at(1), 1, at(1), MINUTE);
        state.request("sbx-pr-3", 3, at(2), 1, at(2), MINUTE);
        assert_eq!(state.drop_stale(at(3), 2 * MINUTE), Vec::<String>::new());
        // 3 keeps renewing, 2 crashed.
        state.request("sbx-pr-3", 3, at(2), 1, at(3), MINUTE);
        assert_eq!(state.drop_stale(at(4), 2 * MINUTE), ["sbx-pr-2"]);
        state.release("sbx-pr-1");
        assert_eq!(
            state.request("sbx-pr-3", 3, at(2), 1, at(4), MINUTE).0,
            Decision::Admit
        );
    }

    #[test]
    fn refusing_never_passes_the_waiting_and_changes_nothing() {
        let mut state = Admission::default();
        state.request("sbx-pr-1", 1, at(0), 1, at(0), MINUTE);
        state.request("sbx-pr-2", 2, at(1), 1, at(1), MINUTE);
        let before = state.clone();
        assert_eq!(
            state.request_or_refuse("sbx-pr-3", 3, at(2), 1, at(2)),
            Decision::Queued { position: 2, of: 2 }
        );
        assert_eq!(state, before);
        // A free slot, but 2 waits for it: still refused.
        state.release("sbx-pr-1");
        let before = state.clone();
        assert!(matches!(
            state.request_or_refuse("sbx-pr-3", 3, at(2), 1, at(3)),
            Decision::Queued { .. }
        ));
        assert_eq!(state, before);
        // No cap: always admitted.
        assert_eq!(
            state.request_or_refuse("sbx-pr-3", 3, at(2), 0, at(3)),
            Decision::Admit
        );
    }

    #[test]
    fn a_sleeping_sandbox_frees_its_slot_and_waking_asks_again() {
        let mut state = Admission::default();
        state.request("sbx-pr-1", 1, at(0), 1, at(0), MINUTE);
        state.request("sbx-pr-2", 2, at(1), 1, at(1), MINUTE);
        assert!(state.sleep("sbx-pr-1", 0, at(2)));
        assert!(!state.sleep("sbx-pr-1", 0, at(3)), "asleep already");
        assert_eq!(state.asleep["sbx-pr-1"].pr, 1);
        assert!(state.admitted.is_empty());
        // The slot goes to the next in line; the sleeper, waking, queues behind.
        assert_eq!(
            state.request("sbx-pr-2", 2, at(1), 1, at(3), MINUTE).0,
            Decision::Admit
        );
        assert_eq!(
            state.request("sbx-pr-1", 1, at(4), 1, at(4), MINUTE).0,
            Decision::Queued { position: 1, of: 1 }
        );
        assert!(
            state.asleep.contains_key("sbx-pr-1"),
            "asleep until admitted"
        );
        state.release("sbx-pr-2");
        assert_eq!(
            state.request("sbx-pr-1", 1, at(4), 1, at(5), MINUTE).0,
            Decision::Admit
        );
        assert!(state.asleep.is_empty());
        // Deleting a sleeping sandbox forgets it.
        state.sleep("sbx-pr-1", 0, at(6));
        assert!(state.release("sbx-pr-1"));
        assert_eq!(state, Admission::default());
    }

    #[test]
    fn sleep_idlest_makes_room_only_for_the_first_in_line() {
        let mut state = Admission::default();
        state.request("sbx-pr-1", 1, at(0), 2, at(0), MINUTE);
        state.request("sbx-pr-2", 2, at(1), 2, at(1), MINUTE);
        // 1 was pushed to at 30: 2 is the idlest.
        assert!(state.touch("sbx-pr-1", at(30), MINUTE));
        assert!(
            !state.touch("sbx-pr-1", at(30) + MINUTE / 2, MINUTE),
            "written once a minute"
        );
        assert_eq!(state.idlest(""), Some(("sbx-pr-2".into(), 2)));
        // 3 waits in wait mode; 4 asks with sleep-idlest: it does not pass 3.
        state.request("sbx-pr-3", 3, at(40), 2, at(40), MINUTE);
        let (decision, slept, _) =
            state.request_or_sleep_idlest("sbx-pr-4", 4, at(41), 2, at(41), MINUTE);
        assert_eq!(
            (decision, slept),
            (Decision::Queued { position: 2, of: 2 }, None)
        );
        // 3 is admitted by a release; now 4 is first in line: the idlest (2) sleeps for it.
        state.release("sbx-pr-1");
        state.request("sbx-pr-3", 3, at(40), 2, at(42), MINUTE);
        let (decision, slept, changed) =
            state.request_or_sleep_idlest("sbx-pr-4", 4, at(41), 2, at(43), MINUTE);
        assert_eq!(decision, Decision::Admit);
        assert_eq!(slept, Some(("sbx-pr-2".into(), 2)));
        assert!(changed);
        assert_eq!(
            state.admitted.keys().collect::<Vec<_>>(),
            ["sbx-pr-3", "sbx-pr-4"]
        );
        assert!(state.asleep.contains_key("sbx-pr-2"));
        // Under the cap nothing sleeps.
        let mut roomy = Admission::default();
        let (decision, slept, _) =
            roomy.request_or_sleep_idlest("sbx-pr-5", 5, at(0), 2, at(0), MINUTE);
        assert_eq!((decision, slept), (Decision::Admit, None));
    }

    #[test]
    fn the_data_round_trips_and_foreign_keys_stay() {
        let mut state = Admission::default();
        state.request("sbx-pr-1", 1, at(0), 1, at(0), MINUTE);
        state.request("sbx-pr-2", 2, at(1), 1, at(1), MINUTE);
        let mut data = state.to_data();
        data.insert("note".into(), "kept".into());
        data.insert("admitted.broken".into(), "{".into());
        let read = Admission::from_data(&data);
        assert_eq!(read.admitted, state.admitted);
        assert_eq!(read.queued, state.queued);
        assert_eq!(read.other.len(), 2);
        state.sleep("sbx-pr-1", 0, at(2));
        assert_eq!(Admission::from_data(&state.to_data()), state);
        assert_eq!(read.to_data(), data);
    }
}
