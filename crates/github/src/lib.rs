//! The one GitHub call cleanup-branch makes: the open pull requests whose head is a branch,
//! following `Link` pagination, waiting out rate limits within the step's deadline.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use step_kit::{error_chain, redact_url, retry, ErrorKind, RetryPolicy, Secret, StepError};
use tokio::time::Instant;

pub struct GitHub {
    api: String,
    owner: String,
    name: String,
    token: Secret,
    client: reqwest::Client,
    policy: RetryPolicy,
    deadline: Instant,
}

#[derive(Deserialize)]
struct Pull {
    number: u64,
}

/// One answer: a page (numbers, next page URL), or "rate limited, wait this long".
enum Answer {
    Page(Vec<u64>, Option<String>),
    RateLimited(Duration),
}

/// GitHub asks for at least a minute when a secondary limit gives no `retry-after`.
const DEFAULT_RATE_LIMIT_WAIT: Duration = Duration::from_secs(60);

impl GitHub {
    pub fn new(
        api: &str,
        repository: &str,
        token: Secret,
        policy: RetryPolicy,
        deadline: Instant,
    ) -> Result<GitHub, StepError> {
        let (owner, name) = repository
            .split_once('/')
            .filter(|(o, n)| !o.is_empty() && !n.is_empty() && !n.contains('/'))
            .ok_or_else(|| {
                StepError::invalid(format!(
                    "--github-repo {}: expected owner/name",
                    step_kit::escape_untrusted(repository)
                ))
            })?;
        let valid = |s: &str| {
            s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        };
        if !valid(owner) || !valid(name) {
            return Err(StepError::invalid(format!(
                "--github-repo {}: owner and name hold only a-z A-Z 0-9 - _ .",
                step_kit::escape_untrusted(repository)
            )));
        }
        let api_url = url::Url::parse(api).map_err(|e| {
            StepError::invalid(format!("--github-api-url {}: {e}", redact_url(api)))
        })?;
        if !matches!(api_url.scheme(), "https" | "http") {
            return Err(StepError::invalid("--github-api-url must be http(s)"));
        }
        step_kit::install_tls_provider();
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(30))
            .user_agent(concat!("sandbox-steps/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| StepError::unexpected(format!("cannot build the HTTP client: {e}")))?;
        Ok(GitHub {
            api: api.trim_end_matches('/').to_owned(),
            owner: owner.to_owned(),
            name: name.to_owned(),
            token,
            client,
            policy,
            deadline,
        })
    }

    /// Numbers of the open pull requests whose head is `branch` of this repository.
    pub async fn open_pulls_with_head(&self, branch: &str) -> Result<Vec<u64>, StepError> {
        let mut url = reqwest::Url::parse_with_params(
            &format!("{}/repos/{}/{}/pulls", self.api, self.owner, self.name),
            &[
                ("state", "open"),
                ("head", &format!("{}:{branch}", self.owner)),
                ("per_page", "100"),
            ],
        )
        .map_err(|e| StepError::invalid(format!("--github-api-url: {e}")))?
        .to_string();
        let mut numbers = Vec::new();
        loop {
            let answer = retry(
                &self.policy,
                "GitHub pull request listing",
                is_transient,
                || self.get(&url),
            )
            .await?;
            match answer {
                Answer::Page(page, next) => {
                    numbers.extend(page);
                    match next {
                        Some(next) => url = next,
                        None => return Ok(numbers),
                    }
                }
                Answer::RateLimited(wait) => {
                    if Instant::now() + wait > self.deadline {
                        return Err(StepError::transient(format!(
                            "GitHub rate limit: it resets in {}s, after this step's deadline",
                            wait.as_secs()
                        )));
                    }
                    tracing::warn!("GitHub rate limit reached; waiting {}s", wait.as_secs());
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    async fn get(&self, url: &str) -> Result<Answer, StepError> {
        let response = self
            .client
            .get(url)
            .bearer_auth(self.token.expose())
            .header("accept", "application/vnd.github+json")
            .header("x-github-api-version", "2022-11-28")
            .send()
            .await
            .map_err(|e| {
                StepError::transient(format!("GitHub API: {}", redact_url(&error_chain(&e))))
            })?;
        let status = response.status().as_u16();
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        if status == 403 || status == 429 {
            let retry_after = header("retry-after").and_then(|v| v.parse::<u64>().ok());
            let exhausted = header("x-ratelimit-remaining").as_deref() == Some("0");
            if let Some(seconds) = retry_after {
                return Ok(Answer::RateLimited(Duration::from_secs(seconds)));
            }
            if exhausted {
                let reset = header("x-ratelimit-reset").and_then(|v| v.parse::<u64>().ok());
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_secs();
                let wait = reset.map_or(DEFAULT_RATE_LIMIT_WAIT, |r| {
                    Duration::from_secs(r.saturating_sub(now) + 1)
                });
                return Ok(Answer::RateLimited(wait));
            }
            if status == 429 {
                return Ok(Answer::RateLimited(DEFAULT_RATE_LIMIT_WAIT));
            }
        }
        let hint = "--github-token needs read access to the repository's pull requests";
        match status {
            200 => {}
            401 => {
                return Err(
                    StepError::precondition("GitHub rejected --github-token (HTTP 401)")
                        .with_hint(hint),
                )
            }
            403 => {
                return Err(
                    StepError::precondition("GitHub denied the request (HTTP 403)").with_hint(hint),
                )
            }
            404 => {
                return Err(StepError::precondition(format!(
                    "GitHub repository {}/{} not found, or not visible with --github-token",
                    self.owner, self.name
                )))
            }
            500..=599 => return Err(StepError::transient(format!("GitHub API: HTTP {status}"))),
            _ => {
                return Err(StepError::precondition(format!(
                    "GitHub API: HTTP {status}"
                )))
            }
        }
        let next = header("link").and_then(|link| next_link(&link));
        let pulls: Vec<Pull> = response.json().await.map_err(|e| {
            StepError::transient(format!(
                "GitHub API: unreadable answer: {}",
                error_chain(&e)
            ))
        })?;
        Ok(Answer::Page(
            pulls.into_iter().map(|p| p.number).collect(),
            next,
        ))
    }
}

fn is_transient(e: &StepError) -> bool {
    e.kind == ErrorKind::Transient
}

/// The `rel="next"` URL of a `Link` header: `<url>; rel="next", <url>; rel="last"`.
fn next_link(link: &str) -> Option<String> {
    link.split(',').find_map(|part| {
        let (target, params) = part.split_once(';')?;
        let is_next = params
            .split(';')
            .any(|p| p.trim().replace(' ', "") == "rel=\"next\"");
        is_next.then(|| {
            target
                .trim()
                .trim_start_matches('<')
                .trim_end_matches('>')
                .to_owned()
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_links() {
        let link = r#"<https://api.github.com/repositories/1/pulls?page=2>; rel="next", <https://api.github.com/repositories/1/pulls?page=5>; rel="last""#;
        assert_eq!(
            next_link(link).as_deref(),
            Some("https://api.github.com/repositories/1/pulls?page=2")
        );
        assert_eq!(next_link(r#"<https://x/?page=1>; rel="prev""#), None);
    }
}
