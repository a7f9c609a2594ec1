//! The two smart-HTTP exchanges sandbox-steps needs: the ref advertisement of upload-pack and a
//! receive-pack request carrying ref updates.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use step_kit::{redact_url, retry, ErrorKind, RetryPolicy, Secret, StepError};
use url::Url;

use crate::pktline::{self, Packet};

/// The all-zero object id: as the old value, "the ref must not exist"; as the new one, "delete it".
pub const ZERO_ID: &str = "0000000000000000000000000000000000000000";

/// A pack with no objects: what a ref update to a commit the remote already has must carry.
/// "PACK", version 2, 0 objects, then the SHA-1 of those 12 bytes.
const EMPTY_PACK: [u8; 32] = [
    b'P', b'A', b'C', b'K', 0, 0, 0, 2, 0, 0, 0, 0, 0x02, 0x9d, 0x08, 0x82, 0x3b, 0xd8, 0xa8, 0xea,
    0xb5, 0x10, 0xad, 0x6a, 0xc7, 0x5c, 0x82, 0x3c, 0xfd, 0x3e, 0xd3, 0x1e,
];

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// HTTP basic-auth credentials: a token as the password. Debug never shows the token.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub username: String,
    pub token: Secret,
}

/// A remote repository reached over smart HTTP(S).
pub struct Remote {
    base: String,
    client: reqwest::Client,
    credentials: Option<Credentials>,
    policy: RetryPolicy,
    /// Requests answered, and the bytes of their bodies: what a step reports it fetched.
    requests: AtomicU64,
    received: AtomicU64,
}

/// The refs a remote advertises, and where its HEAD points.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Advertisement {
    /// Full ref name → object id (for annotated tags, the peeled commit).
    pub refs: BTreeMap<String, String>,
    /// The ref HEAD points to (`refs/heads/main`), when the server says.
    pub head: Option<String>,
    pub capabilities: Vec<String>,
}

impl Advertisement {
    /// The commit of branch `name`, when it exists.
    pub fn branch(&self, name: &str) -> Option<&str> {
        self.refs
            .get(&format!("refs/heads/{name}"))
            .map(String::as_str)
    }

    /// The default branch's name (`main`), from HEAD.
    pub fn default_branch(&self) -> Option<&str> {
        self.head.as_deref()?.strip_prefix("refs/heads/")
    }

    /// Resolves a start point: a branch, a tag, a full ref name, or a 40-hex commit id (taken as
    /// is: the remote checks it when the ref update arrives).
    pub fn resolve(&self, start: &str) -> Option<(String, String)> {
        if start.len() == 40 && start.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Some((start.to_ascii_lowercase(), start.to_ascii_lowercase()));
        }
        let candidates = [
            format!("refs/heads/{start}"),
            format!("refs/tags/{start}"),
            start.to_owned(),
        ];
        candidates
            .into_iter()
            .find_map(|name| self.refs.get(&name).map(|id| (name.clone(), id.clone())))
    }
}

/// One ref update: compare-and-swap of `name` from `old` to `new` ([`ZERO_ID`] for absent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefUpdate {
    pub name: String,
    pub old: String,
    pub new: String,
}

/// What the remote said of one update: `None` accepted, `Some(reason)` refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefUpdateResult {
    pub name: String,
    pub rejected: Option<String>,
}

impl Remote {
    /// `url` is the repository's HTTP(S) URL (`https://github.com/acme/infra.git`).
    pub fn new(
        url: &str,
        credentials: Option<Credentials>,
        policy: RetryPolicy,
    ) -> Result<Remote, StepError> {
        let parsed = check_http_url(url)?;
        step_kit::install_tls_provider();
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .user_agent(concat!(
                "git/2.0 (sandbox-steps/",
                env!("CARGO_PKG_VERSION"),
                ")"
            ))
            .build()
            .map_err(|e| StepError::unexpected(format!("cannot build the HTTP client: {e}")))?;
        Ok(Remote {
            base: parsed.as_str().trim_end_matches('/').to_owned(),
            client,
            credentials,
            policy,
            requests: AtomicU64::new(0),
            received: AtomicU64::new(0),
        })
    }

    /// The requests answered so far and the bytes their answers held.
    pub(crate) fn traffic(&self) -> (u64, u64) {
        (
            self.requests.load(Ordering::Relaxed),
            self.received.load(Ordering::Relaxed),
        )
    }

    /// The repository URL (never holds credentials).
    pub fn url(&self) -> &str {
        &self.base
    }

    fn request(&self, method: reqwest::Method, url: String) -> reqwest::RequestBuilder {
        let request = self.client.request(method, url);
        match &self.credentials {
            Some(c) => request.basic_auth(&c.username, Some(c.token.expose())),
            None => request,
        }
    }

    /// Every ref of the remote and its HEAD, from `GET info/refs?service=git-upload-pack`.
    pub async fn advertised_refs(&self) -> Result<Advertisement, StepError> {
        let body = self.upload_pack_advertisement().await?;
        parse_advertisement(&body).map_err(|e| {
            StepError::precondition(format!("{}: malformed ref advertisement: {e}", self.base))
        })
    }

    /// The body of `GET info/refs?service=git-upload-pack`.
    async fn upload_pack_advertisement(&self) -> Result<bytes::Bytes, StepError> {
        let url = format!("{}/info/refs?service=git-upload-pack", self.base);
        retry(&self.policy, "git ref listing", is_transient, || async {
            let response = self
                .request(reqwest::Method::GET, url.clone())
                .send()
                .await
                .map_err(|e| self.transport_error("list refs of", e))?;
            let response = self.check_status("list refs of", response)?;
            let content_type = header(&response, "content-type");
            if content_type != "application/x-git-upload-pack-advertisement" {
                return Err(StepError::precondition(format!(
                    "{} is not a git smart-HTTP endpoint (content type {content_type:?})",
                    self.base
                )));
            }
            self.body("read the refs of", response).await
        })
        .await
    }

    /// POSTs `body` to `git-<service>` (retried while the failure is transient: every request
    /// sent here is safe to repeat) and returns the answer's body. `protocol_v2` asks for
    /// protocol v2 (upload-pack commands).
    pub(crate) async fn post(
        &self,
        service: &str,
        body: Vec<u8>,
        protocol_v2: bool,
        what: &str,
    ) -> Result<bytes::Bytes, StepError> {
        let url = format!("{}/git-{service}", self.base);
        retry(&self.policy, what, is_transient, || async {
            let mut request = self
                .request(reqwest::Method::POST, url.clone())
                .header(
                    "content-type",
                    format!("application/x-git-{service}-request"),
                )
                .header("accept", format!("application/x-git-{service}-result"))
                .body(body.clone());
            if protocol_v2 {
                request = request.header("git-protocol", "version=2");
            }
            let response = request
                .send()
                .await
                .map_err(|e| self.transport_error(what, e))?;
            let response = self.check_status(what, response)?;
            self.body(what, response).await
        })
        .await
    }

    async fn body(
        &self,
        what: &str,
        response: reqwest::Response,
    ) -> Result<bytes::Bytes, StepError> {
        let body = response
            .bytes()
            .await
            .map_err(|e| self.transport_error(&format!("read the answer to {what} of"), e))?;
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.received
            .fetch_add(body.len() as u64, Ordering::Relaxed);
        Ok(body)
    }

    /// Sends `updates` to `git-receive-pack` and returns the remote's verdict on each. Each update
    /// is a compare-and-swap on the old value, so a retried request can't clobber a newer ref:
    /// it is refused, and the caller re-reads the refs.
    pub async fn update_refs(
        &self,
        updates: &[RefUpdate],
    ) -> Result<Vec<RefUpdateResult>, StepError> {
        self.update_refs_with_pack(updates, &EMPTY_PACK).await
    }

    /// [`Remote::update_refs`] sending `pack` (the objects the new values need that the remote
    /// lacks) with the updates. A pack is only sent when an update sets a ref.
    pub(crate) async fn update_refs_with_pack(
        &self,
        updates: &[RefUpdate],
        pack: &[u8],
    ) -> Result<Vec<RefUpdateResult>, StepError> {
        let mut body = Vec::new();
        for (i, u) in updates.iter().enumerate() {
            let mut line = format!("{} {} {}", u.old, u.new, u.name).into_bytes();
            if i == 0 {
                line.push(0);
                line.extend_from_slice(
                    concat!(
                        "report-status agent=sandbox-steps/",
                        env!("CARGO_PKG_VERSION")
                    )
                    .as_bytes(),
                );
            }
            line.push(b'\n');
            pktline::encode(&mut body, &line);
        }
        pktline::flush(&mut body);
        // A pack must follow unless every update is a deletion.
        if updates.iter().any(|u| u.new != ZERO_ID) {
            body.extend_from_slice(pack);
        }
        let response = self
            .post("receive-pack", body, false, "update refs of")
            .await?;
        parse_report(&response, updates).map_err(|e| {
            StepError::precondition(format!("{}: the ref update failed: {e}", self.base))
        })
    }

    fn transport_error(&self, what: &str, e: reqwest::Error) -> StepError {
        let chain = step_kit::error_chain(&e);
        let message = format!("cannot {what} {}: {}", self.base, redact_url(&chain));
        if let Some(hint) = step_kit::tls_refusal(&chain) {
            // An untrusted certificate, or a server that does not speak TLS, stays so on a retry.
            return StepError::precondition(message).with_hint(hint);
        }
        StepError::transient(message)
    }

    fn check_status(
        &self,
        what: &str,
        response: reqwest::Response,
    ) -> Result<reqwest::Response, StepError> {
        let status = response.status().as_u16();
        let hint = "check --git-token (it needs read and write access to the repository's \
                    contents) and --git-username";
        match status {
            200..=299 => Ok(response),
            401 => Err(StepError::precondition(format!(
                "cannot {what} {}: authentication failed (HTTP 401)",
                self.base
            ))
            .with_hint(hint)),
            403 => Err(StepError::precondition(format!(
                "cannot {what} {}: permission denied (HTTP 403)",
                self.base
            ))
            .with_hint(hint)),
            404 => Err(StepError::precondition(format!(
                "cannot {what} {}: repository not found, or not visible with these credentials \
                 (HTTP 404)",
                self.base
            ))),
            408 | 429 | 500..=599 => Err(StepError::transient(format!(
                "cannot {what} {}: HTTP {status}",
                self.base
            ))),
            _ => Err(StepError::precondition(format!(
                "cannot {what} {}: HTTP {status}",
                self.base
            ))),
        }
    }
}

/// An HTTP(S) repository URL without credentials, query or fragment; anything else is exit 2.
pub(crate) fn check_http_url(url: &str) -> Result<Url, StepError> {
    let parsed = Url::parse(url)
        .map_err(|e| StepError::invalid(format!("--repo {}: not a URL: {e}", redact_url(url))))?;
    match parsed.scheme() {
        "https" | "http" => {}
        other => {
            return Err(StepError::invalid(format!(
                "--repo {}: scheme {other:?} is not supported; use the repository's https:// URL \
                 with --git-token",
                redact_url(url)
            )))
        }
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(StepError::invalid(format!(
            "--repo {}: credentials inside the URL are refused (they would show in logs and the \
             Argo UI); pass the token with --git-token",
            redact_url(url)
        )));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(StepError::invalid(format!(
            "--repo {}: a repository URL has no query or fragment",
            redact_url(url)
        )));
    }
    Ok(parsed)
}

fn is_transient(e: &StepError) -> bool {
    e.kind == ErrorKind::Transient
}

fn header(response: &reqwest::Response, name: &str) -> String {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

pub(crate) fn text(data: &[u8]) -> Result<&str, String> {
    std::str::from_utf8(data)
        .map(|s| s.trim_end_matches('\n'))
        .map_err(|_| "a line is not UTF-8".to_owned())
}

/// Parses the v0 advertisement: `# service=...`, flush, then `<id> <ref>[\0<capabilities>]` lines.
fn parse_advertisement(body: &[u8]) -> Result<Advertisement, String> {
    let packets = pktline::decode(body)?;
    let mut lines = packets.iter().filter_map(|p| match p {
        Packet::Data(d) => Some(*d),
        Packet::Flush => None,
    });
    match lines.next().map(text).transpose()? {
        Some(first) if first.starts_with("# service=") => {}
        _ => return Err("it does not start with a service line".into()),
    }
    let mut ad = Advertisement::default();
    for (i, data) in lines.enumerate() {
        let (refline, caps) = match data.iter().position(|&b| b == 0) {
            Some(nul) => (&data[..nul], Some(&data[nul + 1..])),
            None => (data, None),
        };
        if let (0, Some(caps)) = (i, caps) {
            ad.capabilities = text(caps)?.split(' ').map(str::to_owned).collect();
            ad.head = ad
                .capabilities
                .iter()
                .find_map(|c| c.strip_prefix("symref=HEAD:"))
                .map(str::to_owned);
        }
        let line = text(refline)?;
        let (id, name) = line.split_once(' ').ok_or("a ref line has no name")?;
        if id.len() != 40 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!(
                "object id {id:?} is not 40 hex digits (SHA-256 repositories are not supported)"
            ));
        }
        if name == "capabilities^{}" {
            continue; // an empty repository
        }
        // The peeled commit of an annotated tag (`<tag>^{}`, right after the tag) replaces it.
        let name = name.strip_suffix("^{}").unwrap_or(name);
        ad.refs.insert(name.to_owned(), id.to_owned());
    }
    if ad.capabilities.iter().any(|c| c == "object-format=sha256") {
        return Err("SHA-256 repositories are not supported".into());
    }
    Ok(ad)
}

/// Parses the report-status answer: `unpack ok`, then `ok <ref>` or `ng <ref> <reason>` each.
fn parse_report(body: &[u8], updates: &[RefUpdate]) -> Result<Vec<RefUpdateResult>, String> {
    let packets = pktline::decode(body)?;
    let mut lines = packets.iter().filter_map(|p| match p {
        Packet::Data(d) => Some(*d),
        Packet::Flush => None,
    });
    match lines.next().map(text).transpose()? {
        Some("unpack ok") => {}
        Some(other) => return Err(format!("the remote said {other:?}")),
        None => return Err("the remote sent no report".into()),
    }
    let mut results = Vec::new();
    for data in lines {
        let line = text(data)?;
        if let Some(name) = line.strip_prefix("ok ") {
            results.push(RefUpdateResult {
                name: name.to_owned(),
                rejected: None,
            });
        } else if let Some(rest) = line.strip_prefix("ng ") {
            let (name, reason) = rest.split_once(' ').unwrap_or((rest, "refused"));
            results.push(RefUpdateResult {
                name: name.to_owned(),
                rejected: Some(reason.to_owned()),
            });
        }
    }
    for u in updates {
        if !results.iter().any(|r| r.name == u.name) {
            return Err(format!("the remote did not report on {}", u.name));
        }
    }
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packets(lines: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for l in lines {
            if l.is_empty() {
                pktline::flush(&mut out);
            } else {
                pktline::encode(&mut out, l);
            }
        }
        out
    }

    const A: &str = "1111111111111111111111111111111111111111";
    const B: &str = "2222222222222222222222222222222222222222";

    #[test]
    fn advertisement_with_head_tags_and_capabilities() {
        let body = packets(&[
            b"# service=git-upload-pack\n",
            b"",
            format!("{A} HEAD\0multi_ack symref=HEAD:refs/heads/main agent=git/2.47\n").as_bytes(),
            format!("{A} refs/heads/main\n").as_bytes(),
            format!("{B} refs/tags/v1\n").as_bytes(),
            format!("{A} refs/tags/v1^{{}}\n").as_bytes(),
            b"",
        ]);
        let ad = parse_advertisement(&body).unwrap();
        assert_eq!(ad.default_branch(), Some("main"));
        assert_eq!(ad.branch("main"), Some(A));
        assert_eq!(
            ad.refs["refs/tags/v1"], A,
            "annotated tags resolve to their commit"
        );
        assert_eq!(ad.resolve("v1"), Some(("refs/tags/v1".into(), A.into())));
        assert_eq!(
            ad.resolve("main"),
            Some(("refs/heads/main".into(), A.into()))
        );
        assert_eq!(ad.resolve("nope"), None);
    }

    #[test]
    fn empty_repository() {
        let body = packets(&[
            b"# service=git-upload-pack\n",
            b"",
            format!("{ZERO_ID} capabilities^{{}}\0agent=git/2.47\n").as_bytes(),
            b"",
        ]);
        let ad = parse_advertisement(&body).unwrap();
        assert!(ad.refs.is_empty());
        assert_eq!(ad.default_branch(), None);
    }

    #[test]
    fn reports() {
        let update = |name: &str| RefUpdate {
            name: name.into(),
            old: ZERO_ID.into(),
            new: A.into(),
        };
        let ok = packets(&[b"unpack ok\n", b"ok refs/heads/x\n", b""]);
        assert_eq!(
            parse_report(&ok, &[update("refs/heads/x")]).unwrap()[0].rejected,
            None
        );
        let ng = packets(&[
            b"unpack ok\n",
            b"ng refs/heads/x failed to update ref\n",
            b"",
        ]);
        assert_eq!(
            parse_report(&ng, &[update("refs/heads/x")]).unwrap()[0]
                .rejected
                .as_deref(),
            Some("failed to update ref")
        );
        let bad = packets(&[b"unpack index-pack failed\n", b""]);
        assert!(parse_report(&bad, &[update("refs/heads/x")]).is_err());
        let silent = packets(&[b"unpack ok\n", b""]);
        assert!(parse_report(&silent, &[update("refs/heads/x")]).is_err());
    }

    /// The constant is a real pack: git indexes it.
    #[test]
    fn the_empty_pack_is_valid() {
        let dir = std::env::temp_dir().join(format!("empty-pack-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pack = dir.join("empty.pack");
        std::fs::write(&pack, EMPTY_PACK).unwrap();
        let status = std::process::Command::new("git")
            .args(["index-pack"])
            .arg(&pack)
            .status()
            .unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(status.success());
    }

    #[test]
    fn urls_with_credentials_or_other_schemes_are_refused() {
        for bad in [
            "https://user:tok@github.com/a/b.git",
            "https://tok@github.com/a/b.git",
            "git@github.com:a/b.git",
            "ssh://git@github.com/a/b.git",
            "file:///srv/git/b.git",
            "https://github.com/a/b.git?x=1",
        ] {
            let e = Remote::new(bad, None, RetryPolicy::network())
                .err()
                .unwrap();
            assert_eq!(e.exit_code(), 2, "{bad}");
            assert!(!e.message.contains("tok@"), "{e}");
        }
    }
}
