//! A GitHub REST API double for what the steps use: `GET /repos/{owner}/{repo}` (the
//! repository), `GET /repos/{owner}/{repo}/pulls/{number}` (one pull request: state, labels,
//! `updated_at`, head), `GET /repos/{owner}/{repo}/pulls` with `state`, `head`, `per_page` and
//! `page`, the `Link` header for pagination, bearer-token auth
//! (401 `Bad credentials` otherwise), and the rate-limit headers. Faults can be scripted: server
//! errors, and rate limits answered as GitHub does (403 with `x-ratelimit-remaining: 0` and
//! `x-ratelimit-reset`, or 429 with `retry-after`). It is a double: no GitHub can run here.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use crate::{HttpRequest, HttpResponse, HttpServer};

/// A pull request of the double's one repository.
#[derive(Debug, Clone)]
pub struct PullRequest {
    pub number: u64,
    /// `open` or `closed`.
    pub state: String,
    /// The head branch, in the repository itself (`owner:branch` is its label).
    pub head_ref: String,
    pub labels: Vec<String>,
    /// The last activity, seconds since the epoch (GitHub's `updated_at`).
    pub updated_at: u64,
}

/// A scripted answer served before the normal ones.
#[derive(Debug, Clone)]
pub enum Fault {
    /// An HTTP error status with GitHub's error body.
    Status(u16),
    /// 403 with `x-ratelimit-remaining: 0`, reset `seconds` from now.
    PrimaryRateLimit { reset_in_seconds: u64 },
    /// 429 with `retry-after`.
    SecondaryRateLimit { retry_after_seconds: u64 },
}

#[derive(Default)]
struct State {
    pulls: Vec<PullRequest>,
    faults: VecDeque<Fault>,
}

pub struct GitHubDouble {
    http: HttpServer,
    state: Arc<Mutex<State>>,
}

const RATE_LIMIT: u64 = 5000;

impl GitHubDouble {
    /// Serves repository `owner/name`, accepting `token` as a bearer token.
    pub fn start(owner: &str, name: &str, token: &str) -> GitHubDouble {
        let state: Arc<Mutex<State>> = Arc::default();
        let shared = state.clone();
        let (owner, name, token) = (owner.to_owned(), name.to_owned(), token.to_owned());
        let http = HttpServer::start(move |req| {
            let mut state = shared.lock().unwrap();
            serve(&mut state, req, &owner, &name, &token)
        });
        GitHubDouble { http, state }
    }

    /// The API base URL (what `https://api.github.com` is in production).
    pub fn url(&self) -> String {
        self.http.url()
    }

    /// Adds a pull request, updated now, without labels.
    pub fn add_pull(&self, number: u64, state: &str, head_ref: &str) {
        self.add_pull_with(number, state, head_ref, &[], now());
    }

    /// Adds a pull request with its labels and last activity (seconds since the epoch).
    pub fn add_pull_with(
        &self,
        number: u64,
        state: &str,
        head_ref: &str,
        labels: &[&str],
        updated_at: u64,
    ) {
        self.state.lock().unwrap().pulls.push(PullRequest {
            number,
            state: state.to_owned(),
            head_ref: head_ref.to_owned(),
            labels: labels.iter().map(|l| l.to_string()).collect(),
            updated_at,
        });
    }

    /// Changes pull request `number`'s state (`open`, `closed`).
    pub fn set_pull_state(&self, number: u64, state: &str) {
        for pull in &mut self.state.lock().unwrap().pulls {
            if pull.number == number {
                pull.state = state.to_owned();
            }
        }
    }

    /// The next requests get these answers, in order.
    pub fn inject(&self, faults: &[Fault]) {
        self.state
            .lock()
            .unwrap()
            .faults
            .extend(faults.iter().cloned());
    }

    pub fn requests(&self) -> Vec<HttpRequest> {
        self.http.requests()
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn error(status: u16, message: &str) -> HttpResponse {
    HttpResponse::json(
        status,
        &json!({ "message": message, "documentation_url": "https://docs.github.com/rest", "status": status.to_string() }),
    )
}

fn with_rate_headers(response: HttpResponse, remaining: u64, reset: u64) -> HttpResponse {
    response
        .header("x-ratelimit-limit", &RATE_LIMIT.to_string())
        .header("x-ratelimit-remaining", &remaining.to_string())
        .header("x-ratelimit-used", &(RATE_LIMIT - remaining).to_string())
        .header("x-ratelimit-reset", &reset.to_string())
        .header("x-ratelimit-resource", "core")
        .header("x-github-api-version-selected", "2022-11-28")
}

/// A pull request as GitHub's REST API shows it (the fields the steps read, and their
/// neighbours).
fn pull_json(p: &PullRequest, owner: &str, name: &str) -> Value {
    let time = |secs: u64| {
        humantime::format_rfc3339_seconds(UNIX_EPOCH + std::time::Duration::from_secs(secs))
            .to_string()
    };
    json!({
        "id": 1_000_000 + p.number,
        "number": p.number,
        "state": p.state,
        "title": format!("Pull request {}", p.number),
        "html_url": format!("https://github.com/{owner}/{name}/pull/{}", p.number),
        "labels": p.labels.iter().enumerate().map(|(i, l)| json!({
            "id": 100 + i,
            "name": l,
            "color": "ededed",
            "default": false,
        })).collect::<Vec<_>>(),
        "created_at": time(p.updated_at.saturating_sub(86_400)),
        "updated_at": time(p.updated_at),
        "closed_at": if p.state == "closed" { Value::String(time(p.updated_at)) } else { Value::Null },
        "head": {
            "label": format!("{owner}:{}", p.head_ref),
            "ref": p.head_ref,
            "sha": "0123456789abcdef0123456789abcdef01234567",
            "repo": { "full_name": format!("{owner}/{name}") },
        },
        "base": { "label": format!("{owner}:main"), "ref": "main" },
    })
}

fn serve(
    state: &mut State,
    req: &HttpRequest,
    owner: &str,
    name: &str,
    token: &str,
) -> HttpResponse {
    let authorized = req
        .header("authorization")
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("token "))
        })
        .is_some_and(|t| t == token);
    if !authorized {
        return error(401, "Bad credentials");
    }
    let reset = now() + 3600;
    match state.faults.pop_front() {
        Some(Fault::Status(status)) => {
            let message = if status >= 500 {
                "Server Error"
            } else {
                "Error"
            };
            return with_rate_headers(error(status, message), 4000, reset);
        }
        Some(Fault::PrimaryRateLimit { reset_in_seconds }) => {
            return with_rate_headers(
                error(
                    403,
                    "API rate limit exceeded for installation. Check the rate limit headers.",
                ),
                0,
                now() + reset_in_seconds,
            );
        }
        Some(Fault::SecondaryRateLimit {
            retry_after_seconds,
        }) => {
            return with_rate_headers(
                error(429, "You have exceeded a secondary rate limit. Please wait a few minutes before you try again."),
                4000,
                reset,
            )
            .header("retry-after", &retry_after_seconds.to_string());
        }
        None => {}
    }
    let repo_path = format!("/repos/{owner}/{name}");
    let pulls_path = format!("{repo_path}/pulls");
    if req.method == "GET" && req.path == repo_path {
        return with_rate_headers(
            HttpResponse::json(
                200,
                &json!({
                    "id": 1,
                    "name": name,
                    "full_name": format!("{owner}/{name}"),
                    "private": true,
                    "default_branch": "main",
                    "html_url": format!("https://github.com/{owner}/{name}"),
                }),
            ),
            4999,
            reset,
        );
    }
    if let Some(number) = req
        .path
        .strip_prefix(&format!("{pulls_path}/"))
        .and_then(|n| n.parse::<u64>().ok())
    {
        if req.method != "GET" {
            return with_rate_headers(error(404, "Not Found"), 4000, reset);
        }
        return match state.pulls.iter().find(|p| p.number == number) {
            Some(pull) => with_rate_headers(
                HttpResponse::json(200, &pull_json(pull, owner, name)),
                4999,
                reset,
            ),
            None => with_rate_headers(error(404, "Not Found"), 4999, reset),
        };
    }
    if req.method != "GET" || req.path != pulls_path {
        return with_rate_headers(error(404, "Not Found"), 4000, reset);
    }
    let wanted_state = req.query_param("state").unwrap_or("open");
    let head = req
        .query_param("head")
        .map(|h| h.replace("%3A", ":").replace("%3a", ":"));
    let per_page: usize = req
        .query_param("per_page")
        .and_then(|p| p.parse().ok())
        .unwrap_or(30)
        .clamp(1, 100);
    let page: usize = req
        .query_param("page")
        .and_then(|p| p.parse().ok())
        .unwrap_or(1)
        .max(1);
    let matching: Vec<&PullRequest> = state
        .pulls
        .iter()
        .filter(|p| wanted_state == "all" || p.state == wanted_state)
        .filter(|p| {
            head.as_deref()
                .is_none_or(|h| h == format!("{owner}:{}", p.head_ref))
        })
        .collect();
    let last_page = matching.len().div_ceil(per_page).max(1);
    let items: Vec<Value> = matching
        .iter()
        .skip((page - 1) * per_page)
        .take(per_page)
        .map(|p| pull_json(p, owner, name))
        .collect();
    let mut response =
        with_rate_headers(HttpResponse::json(200, &Value::Array(items)), 4999, reset);
    // GitHub's Link header: next and last while there are more pages, prev and first after page 1.
    let link_to = |p: usize| {
        let mut query: Vec<String> = req
            .query
            .split('&')
            .filter(|kv| !kv.is_empty() && !kv.starts_with("page="))
            .map(str::to_owned)
            .collect();
        query.push(format!("page={p}"));
        format!(
            "<http://{}{pulls_path}?{}>",
            req.header("host").unwrap_or("localhost"),
            query.join("&")
        )
    };
    let mut links = Vec::new();
    if page < last_page {
        links.push(format!("{}; rel=\"next\"", link_to(page + 1)));
        links.push(format!("{}; rel=\"last\"", link_to(last_page)));
    }
    if page > 1 {
        links.push(format!("{}; rel=\"prev\"", link_to(page - 1)));
        links.push(format!("{}; rel=\"first\"", link_to(1)));
    }
    if !links.is_empty() {
        response = response.header("link", &links.join(", "));
    }
    response
}
