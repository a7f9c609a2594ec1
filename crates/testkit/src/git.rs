//! Bare repositories served over git's smart HTTP protocol by `git http-backend` (CGI) behind
//! [`HttpServer`], with HTTP basic auth: any user name, the password must be the server's token.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine;

use crate::{find_binary, HttpRequest, HttpResponse, HttpServer};

pub struct GitServer {
    root: Root,
    token: String,
    http: HttpServer,
}

/// The git CLI the harness uses (Debian's `git` package, or any git on PATH).
pub fn git_binary() -> PathBuf {
    find_binary("git", &[], "install git (apt-get install git)")
}

/// Where the repositories live: a temp dir of the test, or a directory given by the caller.
enum Root {
    Temp(tempfile::TempDir),
    Given(PathBuf),
}

impl Root {
    fn path(&self) -> &Path {
        match self {
            Root::Temp(dir) => dir.path(),
            Root::Given(path) => path,
        }
    }
}

impl GitServer {
    /// Starts a server, with an empty temp dir of repositories, whose repositories accept the
    /// basic-auth password `token`.
    pub fn start(token: &str) -> GitServer {
        Self::serve(
            Root::Temp(tempfile::tempdir().expect("git server root")),
            token,
        )
    }

    /// Serves the bare repositories already in `dir` (`<dir>/<name>.git`).
    pub fn serve_dir(dir: &Path, token: &str) -> GitServer {
        Self::serve(Root::Given(dir.to_owned()), token)
    }

    /// `http://127.0.0.1:PORT`
    pub fn base_url(&self) -> String {
        self.http.url()
    }

    fn serve(root: Root, token: &str) -> GitServer {
        let git = git_binary();
        let project_root = root.path().to_owned();
        let expected = token.to_owned();
        let http = HttpServer::start(move |req| {
            if !authorized(req, &expected) {
                return HttpResponse::new(401)
                    .header("www-authenticate", "Basic realm=\"sandbox-steps test git\"")
                    .body("authentication required");
            }
            http_backend(&git, &project_root, req)
        });
        GitServer {
            root,
            token: token.to_owned(),
            http,
        }
    }

    pub fn token(&self) -> &str {
        &self.token
    }

    /// Where the bare repositories live on disk.
    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// The path of bare repository `name` (e.g. `infra` → `<root>/infra.git`).
    pub fn repo_path(&self, name: &str) -> PathBuf {
        self.root.path().join(format!("{name}.git"))
    }

    /// `http://127.0.0.1:PORT/<name>.git`, without credentials.
    pub fn url(&self, name: &str) -> String {
        format!("{}/{name}.git", self.http.url())
    }

    /// The same URL with `user:token@` in it, for the git CLI.
    pub fn url_with_credentials(&self, name: &str) -> String {
        format!(
            "http://x-access-token:{}@{}/{name}.git",
            self.token,
            self.http.addr()
        )
    }

    /// Every HTTP request served so far.
    pub fn requests(&self) -> Vec<HttpRequest> {
        self.http.requests()
    }

    /// Creates bare repository `name` whose `main` holds one commit with `files` (path, content).
    pub fn create_repo(&self, name: &str, files: &[(&str, &str)]) -> String {
        create_bare_repo(&self.repo_path(name), files);
        self.url(name)
    }

    /// The commit `refname` points to in repository `name`, or None when the ref does not exist.
    pub fn rev_parse(&self, name: &str, refname: &str) -> Option<String> {
        rev_parse_in(&self.repo_path(name), refname)
    }

    /// Sets `key` to `value` in the configuration of repository `name` (e.g.
    /// `uploadpack.allowFilter false`: a server without partial fetches).
    pub fn configure(&self, name: &str, key: &str, value: &str) {
        git(&["config", key, value], Some(&self.repo_path(name)), &[]);
    }

    /// Points `refname` of repository `name` at `commit` (creating it), on the server's side.
    pub fn update_ref(&self, name: &str, refname: &str, commit: &str) {
        git(
            &["update-ref", refname, commit],
            Some(&self.repo_path(name)),
            &[],
        );
    }
}

/// Creates a bare repository at `bare` whose `main` holds one commit with `files`.
pub(crate) fn create_bare_repo(bare: &Path, files: &[(&str, &str)]) {
    git(
        &["init", "--quiet", "--bare", "--initial-branch=main"],
        None,
        &[bare.to_str().unwrap()],
    );
    git(&["config", "http.receivepack", "true"], Some(bare), &[]);
    // Filtered fetches (partial clone), as GitHub and GitLab serve them; git's own default is off
    // (`GitServer::configure` turns it off again for a repository).
    git(
        &["config", "uploadpack.allowFilter", "true"],
        Some(bare),
        &[],
    );
    let work = tempfile::tempdir().expect("work tree");
    git(
        &["init", "--quiet", "--initial-branch=main"],
        Some(work.path()),
        &[],
    );
    for (path, content) in files {
        let file = work.path().join(path);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, content).unwrap();
    }
    git(&["add", "--all"], Some(work.path()), &[]);
    git(
        &["commit", "--quiet", "--allow-empty", "-m", "initial commit"],
        Some(work.path()),
        &[],
    );
    git(
        &["push", "--quiet"],
        Some(work.path()),
        &[bare.to_str().unwrap(), "main"],
    );
}

/// The commit `refname` points to in the bare repository at `bare`, or None.
pub(crate) fn rev_parse_in(bare: &Path, refname: &str) -> Option<String> {
    let out = Command::new(git_binary())
        .args(["rev-parse", "--verify", "--quiet", refname])
        .current_dir(bare)
        .output()
        .expect("run git rev-parse");
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Runs the harness's git with a fixed identity, failing the test on error.
fn git(args: &[&str], dir: Option<&Path>, extra: &[&str]) {
    let mut cmd = Command::new(git_binary());
    cmd.args(args).args(extra);
    if let Some(dir) = dir {
        cmd.current_dir(dir);
    }
    // The machine's own git configuration (signing, hooks, default branch) stays out of tests.
    let out = cmd
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "testkit")
        .env("GIT_AUTHOR_EMAIL", "testkit@example.invalid")
        .env("GIT_COMMITTER_NAME", "testkit")
        .env("GIT_COMMITTER_EMAIL", "testkit@example.invalid")
        .output()
        .expect("run git");
    assert!(
        out.status.success(),
        "git {args:?} {extra:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn authorized(req: &HttpRequest, token: &str) -> bool {
    let Some(value) = req.header("authorization") else {
        return false;
    };
    let Some(encoded) = value.strip_prefix("Basic ") else {
        return false;
    };
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else {
        return false;
    };
    let text = String::from_utf8_lossy(&decoded);
    matches!(text.split_once(':'), Some((_, password)) if password == token)
}

/// Runs `git http-backend` as a CGI program for one request.
fn http_backend(git: &Path, project_root: &Path, req: &HttpRequest) -> HttpResponse {
    let mut cmd = Command::new(git);
    cmd.arg("http-backend")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("GIT_PROJECT_ROOT", project_root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("REQUEST_METHOD", &req.method)
        .env("PATH_INFO", &req.path)
        .env("QUERY_STRING", &req.query)
        .env("REMOTE_USER", "sandbox-steps")
        .env("REMOTE_ADDR", "127.0.0.1")
        .env("CONTENT_LENGTH", req.body.len().to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (header, var) in [
        ("content-type", "CONTENT_TYPE"),
        ("content-encoding", "HTTP_CONTENT_ENCODING"),
        ("git-protocol", "GIT_PROTOCOL"),
    ] {
        if let Some(value) = req.header(header) {
            cmd.env(var, value);
        }
    }
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) => return HttpResponse::new(500).body(format!("cannot run git http-backend: {e}")),
    };
    let body = req.body.clone();
    let mut stdin = child.stdin.take().expect("cgi stdin");
    // Write the body on another thread: http-backend may answer before reading all of it.
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&body);
    });
    let out = child.wait_with_output().expect("wait for git http-backend");
    let _ = writer.join();
    parse_cgi_output(&out.stdout, &out.stderr)
}

fn parse_cgi_output(stdout: &[u8], stderr: &[u8]) -> HttpResponse {
    let split = stdout
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| (p, 4))
        .or_else(|| stdout.windows(2).position(|w| w == b"\n\n").map(|p| (p, 2)));
    let Some((head_len, sep)) = split else {
        return HttpResponse::new(500).body(format!(
            "git http-backend gave no headers: {}",
            String::from_utf8_lossy(stderr)
        ));
    };
    let head = String::from_utf8_lossy(&stdout[..head_len]);
    let mut response = HttpResponse::new(200);
    for line in head.lines() {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            response.status = value
                .split_whitespace()
                .next()
                .and_then(|s| s.parse().ok())
                .unwrap_or(500);
        } else {
            response.headers.push((name.to_owned(), value.to_owned()));
        }
    }
    response.body = bytes::Bytes::copy_from_slice(&stdout[head_len + sep..]);
    response
}
