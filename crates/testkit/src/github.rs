//! A GitHub REST API double for what the steps use, one repository:
//! - `GET /repos/{owner}/{repo}`, `GET .../pulls` (`state`, `head`, `per_page`, `page`, the `Link`
//!   header), `GET .../pulls/{number}`;
//! - the pull request's comments (`GET`/`POST .../issues/{n}/comments` with `Link` pagination,
//!   `PATCH`/`DELETE .../issues/comments/{id}`), deployments and their statuses
//!   (`GET`/`POST .../deployments`, `.../deployments/{id}/statuses`), commit statuses
//!   (`POST .../statuses/{sha}`, `GET .../commits/{ref}/status`);
//! - the pull request's timeline (`GET .../issues/{n}/timeline`: its pushes as `committed`, its
//!   labels as `labeled`, its comments as `commented` with their authors' `author_association`),
//!   a collaborator's permission (`GET .../collaborators/{login}/permission`), one comment
//!   (`GET .../issues/comments/{id}`) and its reactions (`POST .../reactions`);
//! - who is calling: `GET /user` for a token; for a GitHub App, `GET /app` and
//!   `GET .../installation` with the App's JWT (RS256, checked against the App's public key) and
//!   `POST /app/installations/{id}/access_tokens`, whose token then works like the user token.
//!
//! Bearer-token auth (401 `Bad credentials` otherwise), the rate-limit headers, and scripted
//! faults: server errors, and rate limits answered as GitHub does (403 with
//! `x-ratelimit-remaining: 0` and `x-ratelimit-reset`, or 429 with `retry-after`).
//!
//! Every answer starts from GitHub's own example of it in GitHub's published OpenAPI description
//! (npm `@octokit/openapi`, see [`crate::OpenApi`]), and every request and answer is validated
//! against that description: a request GitHub would refuse gets 422 and is recorded, and
//! [`GitHubDouble::violations`] (checked when the double is dropped) lists what did not conform.
//! It is a double: no GitHub can run here.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use crate::openapi::{description_path, percent_decode, OpenApi};
use crate::{HttpRequest, HttpResponse, HttpServer};

/// A pull request of the double's one repository.
#[derive(Debug, Clone)]
pub struct PullRequest {
    pub number: u64,
    /// `open` or `closed`.
    pub state: String,
    /// The head branch, in the repository itself (`owner:branch` is its label).
    pub head_ref: String,
    /// The head commit.
    pub head_sha: String,
    pub labels: Vec<String>,
    /// Seconds since the epoch; GitHub moves `updated_at` on pushes, labels and any comment.
    pub updated_at: u64,
    pub created_at: u64,
    /// Its pushes: the head commit and when, oldest first (the timeline's `committed` events).
    pub pushes: Vec<(String, u64)>,
}

/// A comment on a pull request.
#[derive(Debug, Clone)]
pub struct Comment {
    pub id: u64,
    pub issue: u64,
    pub author: String,
    pub body: String,
    /// Seconds since the epoch.
    pub created_at: u64,
}

/// A deployment and its statuses, newest status last.
#[derive(Debug, Clone)]
pub struct Deployment {
    pub id: u64,
    pub sha: String,
    pub environment: String,
    pub transient: bool,
    pub production: bool,
    pub statuses: Vec<Value>,
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

/// A GitHub App the double knows.
struct App {
    id: u64,
    slug: String,
    installation: u64,
    key: jsonwebtoken::DecodingKey,
}

struct State {
    pulls: Vec<PullRequest>,
    comments: Vec<Comment>,
    deployments: Vec<Deployment>,
    /// (sha, status as GitHub shows it), oldest first.
    commit_statuses: Vec<(String, Value)>,
    next_id: u64,
    /// Scripted answers, each for the next request whose path ends with its suffix (any when
    /// None).
    faults: VecDeque<(Option<String>, Fault)>,
    /// The token's user.
    user: String,
    app: Option<App>,
    installation_tokens: HashSet<String>,
    /// Every body written to a comment (created or edited), with its issue, in order.
    comment_history: Vec<(u64, String)>,
    /// Collaborators and their permission (`admin`, `maintain`, `write`, `triage`, `read`);
    /// anyone else reads (a public repository) and is no collaborator.
    permissions: std::collections::HashMap<String, String>,
    /// (comment id, reaction content), in order.
    reactions: Vec<(u64, String)>,
    violations: Vec<String>,
}

pub struct GitHubDouble {
    http: HttpServer,
    state: Arc<Mutex<State>>,
}

const RATE_LIMIT: u64 = 5000;

/// The user the double's token belongs to.
pub const TOKEN_USER: &str = "sandbox-steps-bot";

impl GitHubDouble {
    /// Serves repository `owner/name`, accepting `token` as a bearer token (of user
    /// [`TOKEN_USER`]).
    ///
    /// Panics when GitHub's description is not installed (`npm ci --prefix tests`, which
    /// `make test` and `make demo` run).
    pub fn start(owner: &str, name: &str, token: &str) -> GitHubDouble {
        let api = OpenApi::github().unwrap_or_else(|| {
            panic!(
                "GitHub's OpenAPI description is missing ({}): install it with `npm ci --prefix tests`",
                description_path().display()
            )
        });
        let state = Arc::new(Mutex::new(State {
            pulls: Vec::new(),
            comments: Vec::new(),
            deployments: Vec::new(),
            commit_statuses: Vec::new(),
            next_id: 1,
            faults: VecDeque::new(),
            user: TOKEN_USER.to_owned(),
            app: None,
            installation_tokens: HashSet::new(),
            comment_history: Vec::new(),
            permissions: [(TOKEN_USER.to_owned(), "write".to_owned())].into(),
            reactions: Vec::new(),
            violations: Vec::new(),
        }));
        let shared = state.clone();
        let repo = Repo {
            owner: owner.to_owned(),
            name: name.to_owned(),
            token: token.to_owned(),
        };
        let http = HttpServer::start(move |req| {
            let mut state = shared.lock().unwrap();
            serve_checked(&api, &mut state, req, &repo)
        });
        GitHubDouble { http, state }
    }

    /// The API base URL (what `https://api.github.com` is in production).
    pub fn url(&self) -> String {
        self.http.url()
    }

    /// Installs GitHub App `id` (`slug`) on the repository as installation `installation`; its
    /// JWTs are checked with `public_key_pem`.
    pub fn install_app(&self, id: u64, slug: &str, installation: u64, public_key_pem: &str) {
        self.state.lock().unwrap().app = Some(App {
            id,
            slug: slug.to_owned(),
            installation,
            key: jsonwebtoken::DecodingKey::from_rsa_pem(public_key_pem.as_bytes())
                .expect("an RSA public key in PEM"),
        });
    }

    /// Adds a pull request, updated now, without labels.
    pub fn add_pull(&self, number: u64, state: &str, head_ref: &str) {
        self.add_pull_with(number, state, head_ref, &[], now());
    }

    /// Adds a pull request with its labels and last activity (seconds since the epoch): opened a
    /// day before, labelled a minute after, its head pushed at `updated_at`.
    pub fn add_pull_with(
        &self,
        number: u64,
        state: &str,
        head_ref: &str,
        labels: &[&str],
        updated_at: u64,
    ) {
        let head_sha = commit_id(&format!("{head_ref}#{number}"));
        self.state.lock().unwrap().pulls.push(PullRequest {
            number,
            state: state.to_owned(),
            head_ref: head_ref.to_owned(),
            head_sha: head_sha.clone(),
            labels: labels.iter().map(|l| l.to_string()).collect(),
            updated_at,
            created_at: updated_at.saturating_sub(86_400),
            pushes: vec![(head_sha, updated_at)],
        });
    }

    /// Gives `login` a permission on the repository (`admin`, `maintain`, `write`, `triage`,
    /// `read`): a collaborator from then on.
    pub fn set_permission(&self, login: &str, permission: &str) {
        self.state
            .lock()
            .unwrap()
            .permissions
            .insert(login.to_owned(), permission.to_owned());
    }

    /// The reactions to comment `id`, in order.
    pub fn reactions(&self, id: u64) -> Vec<String> {
        let state = self.state.lock().unwrap();
        state
            .reactions
            .iter()
            .filter(|(c, _)| *c == id)
            .map(|(_, r)| r.clone())
            .collect()
    }

    /// Changes pull request `number`'s state (`open`, `closed`).
    pub fn set_pull_state(&self, number: u64, state: &str) {
        self.with_pull(number, |pull| pull.state = state.to_owned());
    }

    /// A push, now: pull request `number`'s head moves to `sha`.
    pub fn set_pull_head(&self, number: u64, sha: &str) {
        let at = now();
        self.with_pull(number, |pull| {
            pull.head_sha = sha.to_owned();
            pull.pushes.push((sha.to_owned(), at));
            pull.updated_at = pull.updated_at.max(at);
        });
    }

    fn with_pull(&self, number: u64, change: impl Fn(&mut PullRequest)) {
        for pull in &mut self.state.lock().unwrap().pulls {
            if pull.number == number {
                change(pull);
            }
        }
    }

    /// Pull request `number` as the double has it.
    pub fn pull(&self, number: u64) -> Option<PullRequest> {
        let state = self.state.lock().unwrap();
        state.pulls.iter().find(|p| p.number == number).cloned()
    }

    /// Adds a comment by `author` (someone else than the token's user, say), now.
    pub fn add_comment(&self, issue: u64, author: &str, body: &str) -> u64 {
        self.add_comment_at(issue, author, body, now())
    }

    /// Adds a comment by `author` made at `at` (seconds since the epoch); like GitHub, it moves
    /// the pull request's `updated_at`.
    pub fn add_comment_at(&self, issue: u64, author: &str, body: &str, at: u64) -> u64 {
        let mut state = self.state.lock().unwrap();
        let id = state.next_id();
        state.comments.push(Comment {
            id,
            issue,
            author: author.to_owned(),
            body: body.to_owned(),
            created_at: at,
        });
        state.touch(issue, at);
        id
    }

    /// Changes comment `id`'s body (as an edit on GitHub's page would).
    pub fn update_comment_body(&self, id: u64, body: &str) {
        for comment in &mut self.state.lock().unwrap().comments {
            if comment.id == id {
                comment.body = body.to_owned();
            }
        }
    }

    /// The comments of pull request `issue`, oldest first.
    pub fn comments(&self, issue: u64) -> Vec<Comment> {
        let state = self.state.lock().unwrap();
        state
            .comments
            .iter()
            .filter(|c| c.issue == issue)
            .cloned()
            .collect()
    }

    /// Every body written to the comments of pull request `issue` through the API (created or
    /// edited), in order.
    pub fn comment_history(&self, issue: u64) -> Vec<String> {
        let state = self.state.lock().unwrap();
        state
            .comment_history
            .iter()
            .filter(|(i, _)| *i == issue)
            .map(|(_, body)| body.clone())
            .collect()
    }

    pub fn deployments(&self) -> Vec<Deployment> {
        self.state.lock().unwrap().deployments.clone()
    }

    /// The commit statuses of `sha`, oldest first, as GitHub shows them.
    pub fn commit_statuses(&self, sha: &str) -> Vec<Value> {
        let state = self.state.lock().unwrap();
        state
            .commit_statuses
            .iter()
            .filter(|(s, _)| s == sha)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// The next requests get these answers, in order.
    pub fn inject(&self, faults: &[Fault]) {
        self.state
            .lock()
            .unwrap()
            .faults
            .extend(faults.iter().map(|f| (None, f.clone())));
    }

    /// The next requests whose path ends with `path_suffix` get these answers, in order (other
    /// requests are answered normally meanwhile).
    pub fn inject_on(&self, path_suffix: &str, faults: &[Fault]) {
        self.state.lock().unwrap().faults.extend(
            faults
                .iter()
                .map(|f| (Some(path_suffix.to_owned()), f.clone())),
        );
    }

    pub fn requests(&self) -> Vec<HttpRequest> {
        self.http.requests()
    }

    /// Requests and answers that did not conform to GitHub's description.
    pub fn violations(&self) -> Vec<String> {
        self.state.lock().unwrap().violations.clone()
    }
}

impl Drop for GitHubDouble {
    fn drop(&mut self) {
        let violations = self.violations();
        if !violations.is_empty() && !std::thread::panicking() {
            panic!(
                "the GitHub double saw requests or gave answers GitHub's description does not \
                 allow:\n{}",
                violations.join("\n")
            );
        }
    }
}

impl State {
    /// What GitHub does to an issue when something happens on it: `updated_at` moves.
    fn touch(&mut self, issue: u64, at: u64) {
        for pull in self.pulls.iter_mut().filter(|p| p.number == issue) {
            pull.updated_at = pull.updated_at.max(at);
        }
    }

    /// `author_association` as GitHub derives it: the owner, a collaborator (any permission
    /// given), or none.
    fn association(&self, login: &str, repo: &Repo) -> &'static str {
        if login == repo.owner {
            "OWNER"
        } else if self.permissions.contains_key(login) {
            "COLLABORATOR"
        } else {
            "NONE"
        }
    }

    fn next_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }
}

struct Repo {
    owner: String,
    name: String,
    token: String,
}

/// A commit id (40 hex digits) made from `seed`, as a push would give the pull request's head.
pub fn commit_id(seed: &str) -> String {
    use std::hash::{Hash, Hasher};
    let part = |salt: u64| {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        (salt, seed).hash(&mut hasher);
        hasher.finish()
    };
    format!("{:016x}{:016x}{:08x}", part(1), part(2), part(3) as u32)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn time(secs: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + std::time::Duration::from_secs(secs)).to_string()
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

/// Validates the request, serves it, validates the answer.
fn serve_checked(api: &OpenApi, state: &mut State, req: &HttpRequest, repo: &Repo) -> HttpResponse {
    let operation = match api.check_request(&req.method, &req.path, &req.query, &req.body) {
        Ok(operation) => operation,
        Err(violation) => {
            state.violations.push(format!("request: {violation}"));
            return error(422, &format!("Validation Failed: {violation}"));
        }
    };
    let response = serve(api, state, req, repo);
    let documented = response.status < 300
        || api
            .check_response(&operation, response.status, b"")
            .map_or_else(|e| !e.contains("not documented"), |_| true);
    let check = if documented {
        api.check_response(&operation, response.status, &response.body)
    } else {
        // GitHub answers any operation with 401, 429 or 5xx; its body is then the basic error.
        check_basic_error(&response.body)
    };
    if let Err(violation) = check {
        state.violations.push(format!("answer: {violation}"));
    }
    response
}

fn check_basic_error(body: &[u8]) -> Result<(), String> {
    let value: Value = serde_json::from_slice(body).map_err(|e| format!("error body: {e}"))?;
    if value["message"].is_string() {
        Ok(())
    } else {
        Err(format!("error body without a message: {value}"))
    }
}

/// Who a request's bearer token is.
enum Caller {
    User,
    App,
    Nobody,
}

fn caller(state: &State, req: &HttpRequest, repo: &Repo) -> Caller {
    let Some(token) = req.header("authorization").and_then(|v| {
        v.strip_prefix("Bearer ")
            .or_else(|| v.strip_prefix("token "))
    }) else {
        return Caller::Nobody;
    };
    if token == repo.token || state.installation_tokens.contains(token) {
        return Caller::User;
    }
    if let Some(app) = &state.app {
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
        validation.set_required_spec_claims(&["exp", "iat", "iss"]);
        if let Ok(data) = jsonwebtoken::decode::<Value>(token, &app.key, &validation) {
            let iss = &data.claims["iss"];
            let (iat, exp) = (data.claims["iat"].as_u64(), data.claims["exp"].as_u64());
            // GitHub: the JWT lives at most ten minutes.
            let lifetime_ok = matches!((iat, exp), (Some(i), Some(e)) if e > i && e - i <= 600);
            if (iss == &json!(app.id.to_string()) || iss == &json!(app.id)) && lifetime_ok {
                return Caller::App;
            }
        }
    }
    Caller::Nobody
}

fn serve(api: &OpenApi, state: &mut State, req: &HttpRequest, repo: &Repo) -> HttpResponse {
    let reset = now() + 3600;
    let ok = |response: HttpResponse| with_rate_headers(response, 4999, reset);
    let caller = caller(state, req, repo);
    if matches!(caller, Caller::Nobody) {
        return error(401, "Bad credentials");
    }
    let scripted = state
        .faults
        .iter()
        .position(|(suffix, _)| suffix.as_deref().is_none_or(|s| req.path.ends_with(s)))
        .and_then(|i| state.faults.remove(i))
        .map(|(_, fault)| fault);
    match scripted {
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
    let repo_path = format!("/repos/{}/{}", repo.owner, repo.name);
    let method = req.method.as_str();

    // The App's own endpoints, with its JWT.
    if let Caller::App = caller {
        let app = state.app.as_ref().expect("an App caller");
        return match (method, req.path.as_str()) {
            ("GET", "/app") => {
                let mut body = api.example("integration");
                body["id"] = json!(app.id);
                body["slug"] = json!(app.slug);
                ok(HttpResponse::json(200, &body))
            }
            ("GET", path) if path == format!("{repo_path}/installation") => {
                let mut body = api.example("installation");
                body["id"] = json!(app.installation);
                body["app_id"] = json!(app.id);
                body["app_slug"] = json!(app.slug);
                ok(HttpResponse::json(200, &body))
            }
            ("POST", path)
                if path == format!("/app/installations/{}/access_tokens", app.installation) =>
            {
                let token = format!("ghs_double{}", state.next_id());
                state.installation_tokens.insert(token.clone());
                let mut body = api.example("installation-token");
                body["token"] = json!(token);
                body["expires_at"] = json!(time(now() + 3600));
                ok(HttpResponse::json(201, &body))
            }
            _ => error(
                401,
                "A JSON web token could not be decoded: only the App's endpoints take the JWT",
            ),
        };
    }

    if method == "GET" && req.path == "/user" {
        let mut body = api.example("private-user-response-with-public-profile-information");
        body["login"] = json!(state.user);
        body["type"] = json!("Bot");
        return ok(HttpResponse::json(200, &body));
    }
    if method == "GET" && req.path == repo_path {
        let mut body = api.example("full-repository-default-response");
        body["name"] = json!(repo.name);
        body["full_name"] = json!(format!("{}/{}", repo.owner, repo.name));
        body["private"] = json!(true);
        body["default_branch"] = json!("main");
        // GitHub's own example leaves out `language`, which its schema requires, and shows the
        // fork's parent and source, which the double's repository is not.
        body["language"] = json!("Rust");
        if let Value::Object(map) = &mut body {
            map.remove("parent");
            map.remove("source");
        }
        return ok(HttpResponse::json(200, &body));
    }
    let Some(rest) = req.path.strip_prefix(&format!("{repo_path}/")) else {
        return ok(error(404, "Not Found"));
    };
    let rest: Vec<&str> = rest.split('/').collect();
    match (method, rest.as_slice()) {
        ("GET", ["pulls"]) => list_pulls(api, state, req, repo, reset),
        ("GET", ["pulls", number]) => match find_pull(state, number) {
            Some(pull) => ok(HttpResponse::json(200, &pull_json(api, pull, repo, false))),
            None => ok(error(404, "Not Found")),
        },
        ("GET", ["issues", number, "comments"]) => {
            let Some(pull) = find_pull(state, number) else {
                return ok(error(404, "Not Found"));
            };
            let items: Vec<Value> = state
                .comments
                .iter()
                .filter(|c| c.issue == pull.number)
                .map(|c| comment_json(api, state, c, repo))
                .collect();
            paginate(req, items, reset)
        }
        ("GET", ["issues", number, "timeline"]) => {
            let Some(pull) = find_pull(state, number) else {
                return ok(error(404, "Not Found"));
            };
            paginate(req, timeline(api, state, pull, repo), reset)
        }
        ("GET", ["issues", "comments", id]) => {
            match state.comments.iter().find(|c| id.parse() == Ok(c.id)) {
                Some(c) => ok(HttpResponse::json(200, &comment_json(api, state, c, repo))),
                None => ok(error(404, "Not Found")),
            }
        }
        ("POST", ["issues", "comments", id, "reactions"]) => {
            let Some(comment) = state.comments.iter().find(|c| id.parse() == Ok(c.id)) else {
                return ok(error(404, "Not Found"));
            };
            let comment_id = comment.id;
            let body: Value = serde_json::from_slice(&req.body).unwrap_or_default();
            let content = body["content"].as_str().unwrap_or_default().to_owned();
            let mut reaction = api.example("reaction");
            reaction["content"] = json!(content);
            reaction["user"]["login"] = json!(state.user);
            // GitHub: 200 with the existing reaction when the user already reacted so.
            if state.reactions.contains(&(comment_id, content.clone())) {
                return ok(HttpResponse::json(200, &reaction));
            }
            reaction["id"] = json!(state.next_id());
            state.reactions.push((comment_id, content));
            ok(HttpResponse::json(201, &reaction))
        }
        ("GET", ["collaborators", login, "permission"]) => {
            let login = percent_decode(login);
            let given = state.permissions.get(&login).map(String::as_str);
            // The legacy `permission` (admin, write, read, none) and the role's name.
            let (permission, role) = match given {
                Some("admin") => ("admin", "admin"),
                Some("maintain") => ("write", "maintain"),
                Some("write") => ("write", "write"),
                Some("triage") => ("read", "triage"),
                _ if login == repo.owner => ("admin", "admin"),
                _ => ("read", "read"),
            };
            let mut body = api.example(
                "repository-collaborator-permission-response-if-user-has-admin-permissions",
            );
            body["permission"] = json!(permission);
            body["role_name"] = json!(role);
            body["user"]["login"] = json!(login);
            // GitHub's own example leaves out the user's `role_name`, which its schema requires.
            body["user"]["role_name"] = json!(role);
            ok(HttpResponse::json(200, &body))
        }
        ("POST", ["issues", number, "comments"]) => {
            let Some(number) = find_pull(state, number).map(|p| p.number) else {
                return ok(error(404, "Not Found"));
            };
            let body: Value = serde_json::from_slice(&req.body).unwrap_or_default();
            let id = state.next_id();
            let comment = Comment {
                id,
                issue: number,
                author: state.user.clone(),
                body: body["body"].as_str().unwrap_or_default().to_owned(),
                created_at: now(),
            };
            let answer = comment_json(api, state, &comment, repo);
            state.comment_history.push((number, comment.body.clone()));
            state.touch(number, comment.created_at);
            state.comments.push(comment);
            ok(HttpResponse::json(201, &answer))
        }
        ("PATCH", ["issues", "comments", id]) => {
            let body: Value = serde_json::from_slice(&req.body).unwrap_or_default();
            let user = state.user.clone();
            match state.comments.iter().position(|c| id.parse() == Ok(c.id)) {
                // GitHub lets a repository writer edit anyone's comment; the double's token
                // edits only its own, which is what the steps may rely on.
                Some(i) if state.comments[i].author == user => {
                    state.comments[i].body = body["body"].as_str().unwrap_or_default().to_owned();
                    let c = state.comments[i].clone();
                    let answer = comment_json(api, state, &c, repo);
                    state.comment_history.push((c.issue, c.body));
                    ok(HttpResponse::json(200, &answer))
                }
                Some(_) => ok(error(403, "Must have admin rights to Repository.")),
                None => ok(error(404, "Not Found")),
            }
        }
        ("DELETE", ["issues", "comments", id]) => {
            let before = state.comments.len();
            let user = state.user.clone();
            state
                .comments
                .retain(|c| !(id.parse() == Ok(c.id) && c.author == user));
            if state.comments.len() < before {
                ok(HttpResponse::new(204))
            } else {
                ok(error(404, "Not Found"))
            }
        }
        ("GET", ["deployments"]) => {
            let environment = req.query_param("environment").map(percent_decode);
            let sha = req.query_param("sha");
            let items: Vec<Value> = state
                .deployments
                .iter()
                .rev()
                .filter(|d| environment.as_deref().is_none_or(|e| e == d.environment))
                .filter(|d| sha.is_none_or(|s| s == d.sha))
                .map(|d| deployment_json(api, d, repo))
                .collect();
            paginate(req, items, reset)
        }
        ("POST", ["deployments"]) => {
            let body: Value = serde_json::from_slice(&req.body).unwrap_or_default();
            let sha = body["ref"].as_str().unwrap_or_default().to_owned();
            let known = state.pulls.iter().any(|p| p.head_sha == sha) || sha.len() == 40;
            if !known {
                return ok(error(422, "No ref found for: the ref"));
            }
            if body["required_contexts"] != json!([]) {
                // GitHub would check every status context of the ref; the steps pass none.
                return ok(error(
                    409,
                    "Conflict: Commit status checks failed for the ref.",
                ));
            }
            let deployment = Deployment {
                id: state.next_id(),
                sha,
                environment: body["environment"]
                    .as_str()
                    .unwrap_or("production")
                    .to_owned(),
                transient: body["transient_environment"] == true,
                production: body["production_environment"] == true,
                statuses: Vec::new(),
            };
            let answer = deployment_json(api, &deployment, repo);
            state.deployments.push(deployment);
            ok(HttpResponse::json(201, &answer))
        }
        ("GET", ["deployments", id, "statuses"]) => {
            let Some(deployment) = state.deployments.iter().find(|d| id.parse() == Ok(d.id)) else {
                return ok(error(404, "Not Found"));
            };
            let items: Vec<Value> = deployment.statuses.iter().rev().cloned().collect();
            paginate(req, items, reset)
        }
        ("POST", ["deployments", id, "statuses"]) => {
            let body: Value = serde_json::from_slice(&req.body).unwrap_or_default();
            let status_id = state.next_id();
            let Some(index) = state
                .deployments
                .iter()
                .position(|d| id.parse() == Ok(d.id))
            else {
                return ok(error(404, "Not Found"));
            };
            let mut status = api.example("deployment-status");
            let deployment = &state.deployments[index];
            let url = format!(
                "https://api.github.com/repos/{}/{}/deployments/{}",
                repo.owner, repo.name, deployment.id
            );
            status["id"] = json!(status_id);
            status["state"] = body["state"].clone();
            status["description"] = json!(body["description"].as_str().unwrap_or_default());
            status["environment"] = json!(deployment.environment);
            status["environment_url"] = json!(body["environment_url"].as_str().unwrap_or(""));
            status["log_url"] = json!(body["log_url"].as_str().unwrap_or(""));
            status["target_url"] = json!(body["log_url"].as_str().unwrap_or(""));
            status["deployment_url"] = json!(url);
            status["url"] = json!(format!("{url}/statuses/{status_id}"));
            status["created_at"] = json!(time(now()));
            status["updated_at"] = json!(time(now()));
            // auto_inactive (default true), as GitHub documents it: a success adds an inactive
            // status to the prior non-transient, non-production deployments of the environment
            // whose state was success.
            if body["state"] == "success" && body["auto_inactive"] != false {
                let (environment, this) = (deployment.environment.clone(), deployment.id);
                let mut inactive = status.clone();
                inactive["state"] = json!("inactive");
                for other in &mut state.deployments {
                    if other.environment == environment
                        && other.id != this
                        && !other.transient
                        && !other.production
                        && other
                            .statuses
                            .last()
                            .is_some_and(|s| s["state"] == "success")
                    {
                        other.statuses.push(inactive.clone());
                    }
                }
            }
            state.deployments[index].statuses.push(status.clone());
            ok(HttpResponse::json(201, &status))
        }
        ("POST", ["statuses", sha]) => {
            let body: Value = serde_json::from_slice(&req.body).unwrap_or_default();
            let mut status = api.example("status");
            let status_id = state.next_id();
            status["id"] = json!(status_id);
            status["state"] = body["state"].clone();
            status["context"] = json!(body["context"].as_str().unwrap_or("default"));
            status["description"] = body.get("description").cloned().unwrap_or(Value::Null);
            status["target_url"] = body.get("target_url").cloned().unwrap_or(Value::Null);
            status["created_at"] = json!(time(now()));
            status["updated_at"] = json!(time(now()));
            state
                .commit_statuses
                .push((sha.to_string(), status.clone()));
            ok(HttpResponse::json(201, &status))
        }
        ("GET", ["commits", reference, "status"]) => {
            let mut latest: Vec<Value> = Vec::new();
            for (_, status) in state.commit_statuses.iter().filter(|(s, _)| s == reference) {
                latest.retain(|s| s["context"] != status["context"]);
                latest.push(status.clone());
            }
            let mut combined = api.example("combined-commit-status");
            let statuses: Vec<Value> = latest
                .into_iter()
                .rev()
                .map(|mut s| {
                    if let Value::Object(map) = &mut s {
                        map.remove("creator");
                    }
                    s
                })
                .collect();
            let overall = if statuses
                .iter()
                .any(|s| s["state"] == "failure" || s["state"] == "error")
            {
                "failure"
            } else if statuses.iter().all(|s| s["state"] == "success") && !statuses.is_empty() {
                "success"
            } else {
                "pending"
            };
            combined["state"] = json!(overall);
            combined["sha"] = json!(reference);
            combined["total_count"] = json!(statuses.len());
            combined["statuses"] = Value::Array(statuses);
            ok(HttpResponse::json(200, &combined))
        }
        _ => ok(error(404, "Not Found")),
    }
}

fn find_pull<'a>(state: &'a State, number: &str) -> Option<&'a PullRequest> {
    let number: u64 = number.parse().ok()?;
    state.pulls.iter().find(|p| p.number == number)
}

/// A pull request as GitHub's REST API shows it: GitHub's example with the double's fields.
fn pull_json(api: &OpenApi, p: &PullRequest, repo: &Repo, simple: bool) -> Value {
    let mut body = if simple {
        api.example("pull-request-simple-items")[0].clone()
    } else {
        api.example("pull-request")
    };
    let (owner, name) = (&repo.owner, &repo.name);
    body["id"] = json!(1_000_000 + p.number);
    body["number"] = json!(p.number);
    body["state"] = json!(p.state);
    body["title"] = json!(format!("Pull request {}", p.number));
    body["html_url"] = json!(format!(
        "https://github.com/{owner}/{name}/pull/{}",
        p.number
    ));
    let label_template = body["labels"][0].clone();
    body["labels"] = Value::Array(
        p.labels
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let mut label = label_template.clone();
                label["id"] = json!(100 + i);
                label["name"] = json!(l);
                label
            })
            .collect(),
    );
    body["created_at"] = json!(time(p.created_at));
    body["updated_at"] = json!(time(p.updated_at));
    body["closed_at"] = if p.state == "closed" {
        json!(time(p.updated_at))
    } else {
        Value::Null
    };
    body["head"]["label"] = json!(format!("{owner}:{}", p.head_ref));
    body["head"]["ref"] = json!(p.head_ref);
    body["head"]["sha"] = json!(p.head_sha);
    body["head"]["repo"]["full_name"] = json!(format!("{owner}/{name}"));
    body["base"]["label"] = json!(format!("{owner}:main"));
    body["base"]["ref"] = json!("main");
    // GitHub's own example lists a team without the `type` its schema requires; the double
    // models no reviewers.
    body["requested_teams"] = json!([]);
    body["requested_reviewers"] = json!([]);
    body
}

fn comment_json(api: &OpenApi, state: &State, c: &Comment, repo: &Repo) -> Value {
    let mut body = api.example("issue-comment");
    let (owner, name) = (&repo.owner, &repo.name);
    body["id"] = json!(c.id);
    body["body"] = json!(c.body);
    body["user"]["login"] = json!(c.author);
    // The token's user is the steps' bot (as GET /user says).
    body["user"]["type"] = json!(if c.author == state.user {
        "Bot"
    } else {
        "User"
    });
    body["author_association"] = json!(state.association(&c.author, repo));
    body["created_at"] = json!(time(c.created_at));
    body["updated_at"] = json!(time(c.created_at));
    body["url"] = json!(format!(
        "https://api.github.com/repos/{owner}/{name}/issues/comments/{}",
        c.id
    ));
    body["html_url"] = json!(format!(
        "https://github.com/{owner}/{name}/pull/{}#issuecomment-{}",
        c.issue, c.id
    ));
    body["issue_url"] = json!(format!(
        "https://api.github.com/repos/{owner}/{name}/issues/{}",
        c.issue
    ));
    body
}

/// Pull request `p`'s timeline, oldest first: its pushes (`committed`, the committer's date the
/// push's time), its labels (`labeled`, a minute after it was opened), its comments
/// (`commented`).
fn timeline(api: &OpenApi, state: &State, p: &PullRequest, repo: &Repo) -> Vec<Value> {
    let example = api.example("timeline-issue-events");
    let of_kind = |kind: &str| {
        example
            .as_array()
            .and_then(|events| events.iter().find(|e| e["event"] == kind))
            .cloned()
            .unwrap_or_else(|| panic!("GitHub's timeline example has a {kind} event"))
    };
    let (owner, name) = (&repo.owner, &repo.name);
    let mut events: Vec<(u64, Value)> = Vec::new();
    for (sha, at) in &p.pushes {
        let who = json!({ "name": "Developer", "email": "dev@example.com", "date": time(*at) });
        let commit_url = format!("https://api.github.com/repos/{owner}/{name}/git/commits/{sha}");
        events.push((
            *at,
            json!({
                "event": "committed",
                "sha": sha,
                "node_id": format!("C_{sha}"),
                "url": commit_url,
                "html_url": format!("https://github.com/{owner}/{name}/commit/{sha}"),
                "author": who,
                "committer": who,
                "tree": { "sha": commit_id(&format!("tree {sha}")), "url": commit_url },
                "message": "a change",
                "parents": [],
                "verification": { "verified": false, "reason": "unsigned", "signature": null,
                                  "payload": null, "verified_at": null },
            }),
        ));
    }
    for label in &p.labels {
        let mut event = of_kind("labeled");
        let at = p.created_at + 60;
        event["created_at"] = json!(time(at));
        event["label"]["name"] = json!(label);
        events.push((at, event));
    }
    for c in state.comments.iter().filter(|c| c.issue == p.number) {
        let mut event = comment_json(api, state, c, repo);
        event["event"] = json!("commented");
        event["actor"] = event["user"].clone();
        events.push((c.created_at, event));
    }
    events.sort_by_key(|(at, _)| *at);
    events.into_iter().map(|(_, e)| e).collect()
}

fn deployment_json(api: &OpenApi, d: &Deployment, repo: &Repo) -> Value {
    let mut body = api.example("deployment-simple-example");
    let url = format!(
        "https://api.github.com/repos/{}/{}/deployments/{}",
        repo.owner, repo.name, d.id
    );
    body["id"] = json!(d.id);
    body["sha"] = json!(d.sha);
    body["ref"] = json!(d.sha);
    body["environment"] = json!(d.environment);
    body["original_environment"] = json!(d.environment);
    body["transient_environment"] = json!(d.transient);
    body["production_environment"] = json!(d.production);
    body["url"] = json!(url);
    body["statuses_url"] = json!(format!("{url}/statuses"));
    body
}

/// A JSON list answer with GitHub's `per_page`/`page` and its `Link` header.
fn paginate(req: &HttpRequest, items: Vec<Value>, reset: u64) -> HttpResponse {
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
    let last_page = items.len().div_ceil(per_page).max(1);
    let shown: Vec<Value> = items
        .into_iter()
        .skip((page - 1) * per_page)
        .take(per_page)
        .collect();
    let mut response =
        with_rate_headers(HttpResponse::json(200, &Value::Array(shown)), 4999, reset);
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
            "<http://{}{}?{}>",
            req.header("host").unwrap_or("localhost"),
            req.path,
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

fn list_pulls(
    api: &OpenApi,
    state: &State,
    req: &HttpRequest,
    repo: &Repo,
    reset: u64,
) -> HttpResponse {
    let wanted_state = req.query_param("state").unwrap_or("open");
    let head = req.query_param("head").map(percent_decode);
    let items: Vec<Value> = state
        .pulls
        .iter()
        .filter(|p| wanted_state == "all" || p.state == wanted_state)
        .filter(|p| {
            head.as_deref()
                .is_none_or(|h| h == format!("{}:{}", repo.owner, p.head_ref))
        })
        .map(|p| pull_json(api, p, repo, true))
        .collect();
    paginate(req, items, reset)
}
