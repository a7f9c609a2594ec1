//! The GitHub REST calls of the steps: pull requests by head branch and by number (cleanup-branch,
//! sweep-sandboxes), and what report-status keeps on a pull request (its comments, deployments and
//! commit statuses: [`status`]). Every call follows `Link` pagination, waits out rate limits
//! (primary: `x-ratelimit-reset`; secondary: `retry-after`) within the step's deadline, retries 5xx
//! and network errors, then exits 4; 401/403 exit 3 with the permission the call needs; the token
//! never shown. The flags naming the repository and the credentials (a token, or a GitHub App's id
//! and private key: [`app`]) and the API are defined here once ([`GitHubFlags`]).

mod activity;
mod app;
mod status;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::Method;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;
use step_kit::{
    error_chain, escape_untrusted, redact_url, retry, ErrorKind, RetryPolicy, Secret, SecretRef,
    StepError, VaultFlags,
};
use tokio::time::Instant;

pub use activity::{
    command_of, is_extend_command, shown_login, Activity, CARD_MARKER, EXTEND_COMMAND, WAKE_COMMAND,
};
pub use status::{
    Comment, CommitState, CommitStatus, Deployment, DeploymentState, DeploymentStatus,
    NewDeployment,
};

/// The GitHub flags of a step: the repository, and either a token or a GitHub App.
#[derive(Debug, Clone, clap::Args)]
pub struct GitHubFlags {
    /// The GitHub repository (owner/name) of the pull requests.
    #[arg(long, value_name = "OWNER/NAME")]
    pub github_repo: Option<String>,

    /// The GitHub API token, as a reference: env:NAME, file:/path or vault:<mount>/<path>#<key>
    /// (with --github-repo, unless a GitHub App is given).
    #[arg(long, value_name = "SECRET_REF")]
    pub github_token: Option<SecretRef>,

    /// Instead of a token: the GitHub App's id; the step signs in as the App's installation on
    /// --github-repo (needs --github-app-key). With it, --github-token is not used.
    #[arg(long, value_name = "ID")]
    pub github_app_id: Option<u64>,

    /// The GitHub App's private key (PEM), as a secret reference (used with --github-app-id).
    #[arg(long, value_name = "SECRET_REF")]
    pub github_app_key: Option<SecretRef>,

    /// The App's installation id; without it, the installation on --github-repo is looked up.
    #[arg(long, value_name = "ID")]
    pub github_app_installation_id: Option<u64>,

    /// The GitHub REST API (GitHub Enterprise: https://HOST/api/v3).
    #[arg(long, value_name = "URL", default_value = "https://api.github.com")]
    pub github_api_url: String,
}

impl GitHubFlags {
    /// Checks the flags without a network call: `--github-repo` needs a token or an App.
    pub fn check(&self) -> Result<(), StepError> {
        if self.github_app_id.is_some() && self.github_app_key.is_none() {
            return Err(StepError::invalid("--github-app-id needs --github-app-key"));
        }
        if self.github_repo.is_some() && self.github_token.is_none() && self.github_app_id.is_none()
        {
            return Err(StepError::invalid(
                "--github-repo needs --github-token, or --github-app-id and --github-app-key",
            ));
        }
        if let Some(repo) = &self.github_repo {
            split_repository(repo)?;
        }
        check_api_url(&self.github_api_url)
    }

    /// The client, when `--github-repo` is given (the token resolved, Vault references through
    /// `vault`; for an App, an installation token minted).
    pub async fn connect(
        &self,
        vault: &VaultFlags,
        policy: RetryPolicy,
        deadline: Instant,
    ) -> Result<Option<GitHub>, StepError> {
        self.check()?;
        let Some(repo) = &self.github_repo else {
            return Ok(None);
        };
        let mut github = GitHub::new(
            &self.github_api_url,
            repo,
            Secret::new(String::new()),
            policy,
            deadline,
        )?;
        // The App when one is named: a template passes its default token reference along.
        match (self.github_app_id, &self.github_app_key, &self.github_token) {
            (Some(app_id), Some(key), _) => {
                let key = key.resolve("--github-app-key", vault).await?;
                let app = app::App::new(app_id, &key)?;
                github
                    .sign_in_as_installation(app, self.github_app_installation_id)
                    .await?;
            }
            (None, _, Some(token)) => github.token = token.resolve("--github-token", vault).await?,
            _ => unreachable!("checked: a repository comes with a token or an App"),
        }
        Ok(Some(github))
    }
}

pub struct GitHub {
    api: String,
    owner: String,
    name: String,
    token: Secret,
    /// The App's slug when signed in as an App installation (its comments' author is
    /// `<slug>[bot]`).
    app_slug: Option<String>,
    client: reqwest::Client,
    policy: RetryPolicy,
    deadline: Instant,
    requests: AtomicU64,
    /// Logins asked about, and whether they have write access.
    writers: Mutex<HashMap<String, bool>>,
}

/// A pull request, as the steps read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullRequest {
    pub number: u64,
    pub open: bool,
    pub labels: Vec<String>,
    /// GitHub moves it on pushes, labels, reviews and anyone's comment (see
    /// [`GitHub::activity`] for the activity a sandbox's expiry counts).
    pub updated_at: SystemTime,
    pub created_at: SystemTime,
    /// The head commit.
    pub head_sha: String,
    /// The head branch (untrusted text: escape it wherever it is shown).
    pub head_ref: String,
}

#[derive(Deserialize)]
struct PullJson {
    number: u64,
    state: String,
    #[serde(default)]
    labels: Vec<LabelJson>,
    updated_at: String,
    created_at: String,
    head: HeadJson,
}

#[derive(Deserialize)]
struct HeadJson {
    sha: String,
    #[serde(rename = "ref")]
    ref_name: String,
}

#[derive(Deserialize)]
struct LabelJson {
    name: String,
}

#[derive(Deserialize)]
struct NumberJson {
    number: u64,
}

/// What a call is, for its log lines and errors: its name and the permission it needs.
#[derive(Clone, Copy)]
struct Call {
    what: &'static str,
    permission: &'static str,
}

const READ_PULLS: Call = Call {
    what: "GitHub pull request",
    permission: "pull requests: read",
};

/// One answer: the body and the next page's URL, "not found", or "rate limited, wait this long".
enum Answer<T> {
    Found(T, Option<String>),
    NotFound,
    RateLimited(Duration),
}

/// GitHub asks for at least a minute when a secondary limit gives no `retry-after`.
const DEFAULT_RATE_LIMIT_WAIT: Duration = Duration::from_secs(60);

/// A time as GitHub writes it: RFC 3339, `Z` or an offset (commit dates keep their author's
/// offset, `2014-08-09T08:02:04+12:00`).
pub fn parse_time(value: &str) -> Result<SystemTime, String> {
    let value = value.trim();
    let offset_at = value.len().checked_sub(6).filter(|&i| {
        i > 10 && matches!(value.as_bytes()[i], b'+' | b'-') && value.as_bytes()[i + 3] == b':'
    });
    let Some(i) = offset_at else {
        return humantime::parse_rfc3339_weak(value).map_err(|e| e.to_string());
    };
    let (local, offset) = value.split_at(i);
    let minutes = offset[1..3]
        .parse::<u64>()
        .ok()
        .zip(offset[4..6].parse::<u64>().ok())
        .map(|(h, m)| h * 60 + m)
        .ok_or_else(|| format!("bad offset {offset:?}"))?;
    let local = humantime::parse_rfc3339_weak(local).map_err(|e| e.to_string())?;
    let shift = Duration::from_secs(minutes * 60);
    // 08:02+12:00 is 20:02 the day before in UTC.
    Ok(if offset.starts_with('+') {
        local - shift
    } else {
        local + shift
    })
}

fn split_repository(repository: &str) -> Result<(&str, &str), StepError> {
    let (owner, name) = repository
        .split_once('/')
        .filter(|(o, n)| !o.is_empty() && !n.is_empty() && !n.contains('/'))
        .ok_or_else(|| {
            StepError::invalid(format!(
                "--github-repo {}: expected owner/name",
                escape_untrusted(repository)
            ))
        })?;
    let valid = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    };
    if !valid(owner) || !valid(name) {
        return Err(StepError::invalid(format!(
            "--github-repo {}: owner and name hold only a-z A-Z 0-9 - _ .",
            escape_untrusted(repository)
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
        let client = step_kit::http_client()?;
        Ok(GitHub {
            api: api.trim_end_matches('/').to_owned(),
            owner: owner.to_owned(),
            name: name.to_owned(),
            token,
            app_slug: None,
            client,
            policy,
            deadline,
            requests: AtomicU64::new(0),
            writers: Mutex::new(HashMap::new()),
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

    /// `{api}/repos/{owner}/{name}{rest}`.
    fn repo_url(&self, rest: &str) -> String {
        format!("{}/repos/{}/{}{rest}", self.api, self.owner, self.name)
    }

    /// Numbers of the open pull requests whose head is `branch` of this repository.
    pub async fn open_pulls_with_head(&self, branch: &str) -> Result<Vec<u64>, StepError> {
        let url = reqwest::Url::parse_with_params(
            &self.repo_url("/pulls"),
            &[
                ("state", "open"),
                ("head", &format!("{}:{branch}", self.owner)),
                ("per_page", "100"),
            ],
        )
        .map_err(|e| StepError::invalid(format!("--github-api-url: {e}")))?;
        let pages: Vec<NumberJson> = self.get_all(url.as_str(), READ_PULLS).await?;
        Ok(pages.into_iter().map(|p| p.number).collect())
    }

    /// Whether the repository is visible with the token (GitHub answers 404 for a private one
    /// the token may not read).
    pub async fn repository_visible(&self) -> Result<bool, StepError> {
        #[derive(Deserialize)]
        struct RepositoryJson {
            #[allow(dead_code)]
            full_name: String,
        }
        let call = Call {
            what: "GitHub repository",
            permission: "metadata: read",
        };
        Ok(self
            .get_optional::<RepositoryJson>(&self.repo_url(""), call)
            .await?
            .is_some())
    }

    /// Pull request `number`, or None when GitHub has none of that number (404).
    pub async fn pull(&self, number: u64) -> Result<Option<PullRequest>, StepError> {
        let url = self.repo_url(&format!("/pulls/{number}"));
        let Some(pull) = self.get_optional::<PullJson>(&url, READ_PULLS).await? else {
            return Ok(None);
        };
        let time = |field: &str, value: &str| {
            parse_time(value).map_err(|e| {
                StepError::transient(format!(
                    "GitHub API: pull request #{number}'s {field} {value:?}: {e}"
                ))
            })
        };
        Ok(Some(PullRequest {
            number: pull.number,
            open: pull.state == "open",
            labels: pull.labels.into_iter().map(|l| l.name).collect(),
            updated_at: time("updated_at", &pull.updated_at)?,
            created_at: time("created_at", &pull.created_at)?,
            head_sha: pull.head.sha,
            head_ref: pull.head.ref_name,
        }))
    }

    /// GETs one resource; None for a 404.
    async fn get_optional<T: DeserializeOwned>(
        &self,
        url: &str,
        call: Call,
    ) -> Result<Option<T>, StepError> {
        Ok(self
            .send::<T>(Method::GET, url, None, call, true)
            .await?
            .map(|(body, _)| body))
    }

    /// GETs every page of a listing (a 404 is an error).
    async fn get_all<T: DeserializeOwned>(
        &self,
        first: &str,
        call: Call,
    ) -> Result<Vec<T>, StepError> {
        let mut url = first.to_owned();
        let mut items = Vec::new();
        loop {
            let (page, next) = self
                .send::<Vec<T>>(Method::GET, &url, None, call, false)
                .await?
                .expect("a listing's 404 is an error");
            items.extend(page);
            match next {
                Some(next) => url = next,
                None => return Ok(items),
            }
        }
    }

    /// Sends a request with a JSON body (POST, PATCH) and reads the answer.
    async fn write<T: DeserializeOwned>(
        &self,
        method: Method,
        url: &str,
        body: &Value,
        call: Call,
    ) -> Result<T, StepError> {
        Ok(self
            .send::<T>(method, url, Some(body), call, false)
            .await?
            .expect("a write's 404 is an error")
            .0)
    }

    /// Sends a request with the installation or user token, retrying transient failures and
    /// waiting out rate limits; None for a 404 when `absent_is_none`.
    async fn send<T: DeserializeOwned>(
        &self,
        method: Method,
        url: &str,
        body: Option<&Value>,
        call: Call,
        absent_is_none: bool,
    ) -> Result<Option<(T, Option<String>)>, StepError> {
        self.send_as(&self.token, method, url, body, call, absent_is_none)
            .await
    }

    /// [`Self::send`] with another bearer credential (the App's JWT).
    async fn send_as<T: DeserializeOwned>(
        &self,
        bearer: &Secret,
        method: Method,
        url: &str,
        body: Option<&Value>,
        call: Call,
        absent_is_none: bool,
    ) -> Result<Option<(T, Option<String>)>, StepError> {
        loop {
            let answer = retry(&self.policy, call.what, is_transient, || {
                self.send_once::<T>(bearer, method.clone(), url, body, call, absent_is_none)
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

    async fn send_once<T: DeserializeOwned>(
        &self,
        bearer: &Secret,
        method: Method,
        url: &str,
        body: Option<&Value>,
        call: Call,
        absent_is_none: bool,
    ) -> Result<Answer<T>, StepError> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let mut request = self
            .client
            .request(method, url)
            .bearer_auth(bearer.expose())
            .header("accept", "application/vnd.github+json")
            .header("x-github-api-version", "2022-11-28");
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|e| {
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
        let next = header("link").and_then(|link| next_link(&link));
        let text = response.text().await.map_err(|e| {
            StepError::transient(format!(
                "GitHub API: {}: unreadable answer: {}",
                call.what,
                error_chain(&e)
            ))
        })?;
        let hint = || {
            format!(
                "the token or the GitHub App installation needs `{}` on {}/{}",
                call.permission, self.owner, self.name
            )
        };
        // GitHub's error body: {"message": ..., "errors": [...]}; shown escaped, it is not ours.
        let message = || {
            let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            let mut message = body["message"].as_str().unwrap_or_default().to_owned();
            if let Some(errors) = body["errors"].as_array() {
                for error in errors {
                    let detail = error["message"]
                        .as_str()
                        .map(str::to_owned)
                        .unwrap_or_else(|| error.to_string());
                    message.push_str(&format!("; {detail}"));
                }
            }
            escape_untrusted(&message)
        };
        match status {
            200..=299 => {}
            401 => {
                return Err(StepError::precondition(format!(
                    "GitHub rejected the credentials (HTTP 401) for {}",
                    call.what
                ))
                .with_hint(hint()))
            }
            403 => {
                return Err(StepError::precondition(format!(
                    "GitHub denied {} (HTTP 403): {}",
                    call.what,
                    message()
                ))
                .with_hint(hint()))
            }
            404 if absent_is_none => return Ok(Answer::NotFound),
            404 => {
                return Err(StepError::precondition(format!(
                    "GitHub: {} of {}/{} not found, or not visible with these credentials",
                    call.what, self.owner, self.name
                ))
                .with_hint(hint()))
            }
            500..=599 => {
                return Err(StepError::transient(format!(
                    "GitHub API: {}: HTTP {status}",
                    call.what
                )))
            }
            _ => {
                return Err(StepError::precondition(format!(
                    "GitHub API: {}: HTTP {status}: {}",
                    call.what,
                    message()
                )))
            }
        }
        // 204 No Content (a deletion) reads as JSON null.
        let text = if text.trim().is_empty() {
            "null"
        } else {
            &text
        };
        let body: T = serde_json::from_str(text).map_err(|e| {
            StepError::transient(format!("GitHub API: {}: unexpected answer: {e}", call.what))
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
    fn times_with_an_offset_are_read_in_utc() {
        let utc = |s| humantime::parse_rfc3339(s).unwrap();
        assert_eq!(
            parse_time("2014-08-09T08:02:04+12:00"),
            Ok(utc("2014-08-08T20:02:04Z"))
        );
        assert_eq!(
            parse_time("2014-08-09T08:02:04-05:30"),
            Ok(utc("2014-08-09T13:32:04Z"))
        );
        assert_eq!(
            parse_time("2026-11-30T10:00:00Z"),
            Ok(utc("2026-11-30T10:00:00Z"))
        );
        assert!(parse_time("yesterday").is_err());
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
