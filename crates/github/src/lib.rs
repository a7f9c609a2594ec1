//! The GitHub REST calls of the steps: the open pull requests whose head is a branch
//! (cleanup-branch) and one pull request by number (sweep-sandboxes), following `Link`
//! pagination and waiting out rate limits (primary: `x-ratelimit-reset`; secondary:
//! `retry-after`) within the step's deadline; 5xx and network errors retried, then exit 4;
//! 401/403 exit 3 with a hint; the token never shown. The flags naming the repository, the token
//! and the API are defined here once ([`GitHubFlags`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::de::DeserializeOwned;
use serde::Deserialize;
use step_kit::{
    error_chain, redact_url, retry, ErrorKind, RetryPolicy, Secret, SecretRef, StepError,
    VaultFlags,
};
use tokio::time::Instant;

/// The GitHub flags of a step.
#[derive(Debug, Clone, clap::Args)]
pub struct GitHubFlags {
    /// The GitHub repository (owner/name) of the pull requests.
    #[arg(long, value_name = "OWNER/NAME")]
    pub github_repo: Option<String>,

    /// The GitHub API token, as a reference: env:NAME, file:/path or vault:<mount>/<path>#<key>
    /// (needed with --github-repo; read access to pull requests is enough).
    #[arg(long, value_name = "SECRET_REF")]
    pub github_token: Option<SecretRef>,

    /// The GitHub REST API (GitHub Enterprise: https://HOST/api/v3).
    #[arg(long, value_name = "URL", default_value = "https://api.github.com")]
    pub github_api_url: String,
}

impl GitHubFlags {
    /// Checks the flags without a network call: `--github-repo` needs `--github-token`.
    pub fn check(&self) -> Result<(), StepError> {
        if self.github_repo.is_some() && self.github_token.is_none() {
            return Err(StepError::invalid("--github-repo needs --github-token"));
        }
        if let Some(repo) = &self.github_repo {
            split_repository(repo)?;
        }
        check_api_url(&self.github_api_url)
    }

    /// The client, when `--github-repo` is given (the token resolved, Vault references through
    /// `vault`).
    pub async fn connect(
        &self,
        vault: &VaultFlags,
        policy: RetryPolicy,
        deadline: Instant,
    ) -> Result<Option<GitHub>, StepError> {
        self.check()?;
        let (Some(repo), Some(token)) = (&self.github_repo, &self.github_token) else {
            return Ok(None);
        };
        let token = token.resolve("--github-token", vault).await?;
        GitHub::new(&self.github_api_url, repo, token, policy, deadline).map(Some)
    }
}

pub struct GitHub {
    api: String,
    owner: String,
    name: String,
    token: Secret,
    client: reqwest::Client,
    policy: RetryPolicy,
    deadline: Instant,
    requests: AtomicU64,
}

/// A pull request, as the sweep reads it (its head branch is never needed: the sweep names
/// sandboxes by number).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullRequest {
    pub number: u64,
    pub open: bool,
    pub labels: Vec<String>,
    /// GitHub moves it on pushes, comments, labels and reviews: the last activity.
    pub updated_at: SystemTime,
}

#[derive(Deserialize)]
struct PullJson {
    number: u64,
    state: String,
    #[serde(default)]
    labels: Vec<LabelJson>,
    updated_at: String,
}

#[derive(Deserialize)]
struct LabelJson {
    name: String,
}

#[derive(Deserialize)]
struct NumberJson {
    number: u64,
}

/// One answer: the body and the next page's URL, "not found", or "rate limited, wait this long".
enum Answer<T> {
    Found(T, Option<String>),
    NotFound,
    RateLimited(Duration),
}

/// GitHub asks for at least a minute when a secondary limit gives no `retry-after`.
const DEFAULT_RATE_LIMIT_WAIT: Duration = Duration::from_secs(60);

fn split_repository(repository: &str) -> Result<(&str, &str), StepError> {
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
    Ok((owner, name))
}

fn check_api_url(api: &str) -> Result<(), StepError> {
    let api_url = url::Url::parse(api)
        .map_err(|e| StepError::invalid(format!("--github-api-url {}: {e}", redact_url(api))))?;
    if !matches!(api_url.scheme(), "https" | "http") {
        return Err(StepError::invalid("--github-api-url must be http(s)"));
    }
    Ok(())
}

impl GitHub {
    pub fn new(
        api: &str,
        repository: &str,
        token: Secret,
        policy: RetryPolicy,
        deadline: Instant,
    ) -> Result<GitHub, StepError> {
        let (owner, name) = split_repository(repository)?;
        check_api_url(api)?;
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
            requests: AtomicU64::new(0),
        })
    }

    /// `owner/name`.
    pub fn repository(&self) -> String {
        format!("{}/{}", self.owner, self.name)
    }

    /// HTTP requests sent so far (retries and rate-limited ones included).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
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
            let Some((page, next)) = self
                .get::<Vec<NumberJson>>(&url, "GitHub pull request listing", false)
                .await?
            else {
                unreachable!("a listing's 404 is an error");
            };
            numbers.extend(page.into_iter().map(|p| p.number));
            match next {
                Some(next) => url = next,
                None => return Ok(numbers),
            }
        }
    }

    /// Whether the repository is visible with the token (GitHub answers 404 for a private one
    /// the token may not read).
    pub async fn repository_visible(&self) -> Result<bool, StepError> {
        #[derive(Deserialize)]
        struct RepositoryJson {
            #[allow(dead_code)]
            full_name: String,
        }
        let url = format!("{}/repos/{}/{}", self.api, self.owner, self.name);
        Ok(self
            .get::<RepositoryJson>(&url, "GitHub repository", true)
            .await?
            .is_some())
    }

    /// Pull request `number`, or None when GitHub has none of that number (404).
    pub async fn pull(&self, number: u64) -> Result<Option<PullRequest>, StepError> {
        let url = format!(
            "{}/repos/{}/{}/pulls/{number}",
            self.api, self.owner, self.name
        );
        let Some((pull, _)) = self
            .get::<PullJson>(&url, "GitHub pull request", true)
            .await?
        else {
            return Ok(None);
        };
        let updated_at = humantime::parse_rfc3339(&pull.updated_at).map_err(|e| {
            StepError::transient(format!(
                "GitHub API: pull request #{number}'s updated_at {:?}: {e}",
                pull.updated_at
            ))
        })?;
        Ok(Some(PullRequest {
            number: pull.number,
            open: pull.state == "open",
            labels: pull.labels.into_iter().map(|l| l.name).collect(),
            updated_at,
        }))
    }

    /// GETs `url`, retrying transient failures and waiting out rate limits; None for a 404 when
    /// `absent_is_none`.
    async fn get<T: DeserializeOwned>(
        &self,
        url: &str,
        what: &str,
        absent_is_none: bool,
    ) -> Result<Option<(T, Option<String>)>, StepError> {
        loop {
            let answer = retry(&self.policy, what, is_transient, || {
                self.get_once::<T>(url, absent_is_none)
            })
            .await?;
            match answer {
                Answer::Found(body, next) => return Ok(Some((body, next))),
                Answer::NotFound => return Ok(None),
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

    async fn get_once<T: DeserializeOwned>(
        &self,
        url: &str,
        absent_is_none: bool,
    ) -> Result<Answer<T>, StepError> {
        self.requests.fetch_add(1, Ordering::Relaxed);
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
            404 if absent_is_none => return Ok(Answer::NotFound),
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
        let body: T = response.json().await.map_err(|e| {
            StepError::transient(format!(
                "GitHub API: unreadable answer: {}",
                error_chain(&e)
            ))
        })?;
        Ok(Answer::Found(body, next))
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

    #[test]
    fn repositories_are_owner_slash_name() {
        assert!(split_repository("acme/platform").is_ok());
        for bad in [
            "acme",
            "acme/",
            "/x",
            "a/b/c",
            "acme/plat form",
            "acme/;rm -rf /",
        ] {
            assert_eq!(split_repository(bad).unwrap_err().exit_code(), 2, "{bad}");
        }
    }
}
