//! Retries of transient failures: exponential backoff with jitter, bounded by a number of
//! attempts and by a deadline, so a step never retries past its own `--timeout`.

use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use tokio::time::Instant;

#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub min_delay: Duration,
    pub max_delay: Duration,
    /// Retries after the first attempt.
    pub max_retries: usize,
    /// No retry is started when its delay would end after this instant.
    pub deadline: Option<Instant>,
}

impl RetryPolicy {
    /// For a network call: 200 ms doubling to 10 s, 6 retries (about 30 s in all).
    pub fn network() -> Self {
        RetryPolicy {
            min_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(10),
            max_retries: 6,
            deadline: None,
        }
    }

    pub fn with_deadline(mut self, deadline: Instant) -> Self {
        self.deadline = Some(deadline);
        self
    }

    pub fn with_max_retries(mut self, n: usize) -> Self {
        self.max_retries = n;
        self
    }

    pub fn with_delays(mut self, min: Duration, max: Duration) -> Self {
        self.min_delay = min;
        self.max_delay = max;
        self
    }

    fn backoff(&self) -> ExponentialBuilder {
        let total = self
            .deadline
            .map(|d| d.saturating_duration_since(Instant::now()));
        ExponentialBuilder::default()
            .with_min_delay(self.min_delay)
            .with_max_delay(self.max_delay)
            .with_max_times(self.max_retries)
            .with_total_delay(total)
            .with_jitter()
    }
}

/// Runs `op` until it succeeds, fails with an error `is_transient` rejects, or the policy is spent;
/// each retry is logged with the error and the delay.
pub async fn retry<T, E, F, Fut>(
    policy: &RetryPolicy,
    what: &str,
    is_transient: impl Fn(&E) -> bool,
    op: F,
) -> Result<T, E>
where
    E: Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    crate::doing(what);
    op.retry(policy.backoff())
        .sleep(tokio::time::sleep)
        .when(is_transient)
        .notify(|err: &E, delay: Duration| {
            tracing::warn!(
                "{what} failed, retrying in {}ms: {}",
                delay.as_millis(),
                crate::redact_text(&err.to_string())
            );
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn quick() -> RetryPolicy {
        RetryPolicy::network().with_delays(Duration::from_millis(1), Duration::from_millis(5))
    }

    #[tokio::test]
    async fn transient_errors_are_retried_until_success() {
        let calls = AtomicUsize::new(0);
        let r: Result<u32, String> = retry(
            &quick(),
            "op",
            |_| true,
            || async {
                match calls.fetch_add(1, Ordering::SeqCst) {
                    0 | 1 => Err("503".to_string()),
                    _ => Ok(7),
                }
            },
        )
        .await;
        assert_eq!(r, Ok(7));
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn permanent_errors_are_not_retried() {
        let calls = AtomicUsize::new(0);
        let r: Result<(), String> = retry(
            &quick(),
            "op",
            |e: &String| e != "401",
            || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err("401".to_string())
            },
        )
        .await;
        assert_eq!(r, Err("401".into()));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn retries_stop_at_the_limit_and_at_the_deadline() {
        let calls = AtomicUsize::new(0);
        let _: Result<(), String> = retry(
            &quick().with_max_retries(3),
            "op",
            |_| true,
            || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err("503".to_string())
            },
        )
        .await;
        assert_eq!(calls.load(Ordering::SeqCst), 4);

        let calls = AtomicUsize::new(0);
        let slow = RetryPolicy::network()
            .with_delays(Duration::from_millis(100), Duration::from_millis(100))
            .with_max_retries(1000)
            .with_deadline(Instant::now() + Duration::from_millis(350));
        let started = Instant::now();
        let _: Result<(), String> = retry(
            &slow,
            "op",
            |_| true,
            || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err("503".to_string())
            },
        )
        .await;
        assert!(started.elapsed() < Duration::from_secs(1));
        assert!(calls.load(Ordering::SeqCst) <= 5, "{calls:?}");
    }
}
