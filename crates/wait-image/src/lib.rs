//! wait-image: waits until an image exists in an OCI registry, by the distribution API's
//! `HEAD /v2/<repository>/manifests/<tag>`, authenticating as registries ask: anonymously, with
//! basic auth, or with a bearer token from the registry's token service (the `WWW-Authenticate:
//! Bearer realm=...,service=...,scope=...` challenge, as Docker Hub, GHCR, Harbor and Artifact
//! Registry answer), the credentials a user and password, or Google's Application Default
//! Credentials for Artifact Registry.

mod reference;

use std::ffi::OsString;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use reqwest::StatusCode;
use step_kit::{
    error_chain, escape_untrusted, CommonArgs, Context, ErrorKind, Secret, SecretRef, StepArgs,
    StepError, VaultFlags,
};
use tokio::time::Instant;

pub use reference::Reference;

pub const NAME: &str = "wait-image";

/// The files this step writes in `--outputs-dir`.
pub const OUTPUTS: &[&str] = &["digest", "image", "set-images", "commit"];

const EXAMPLE: &str = "\
Example:
  wait-image --image europe-docker.pkg.dev/acme/apps/web:sha-1a2b3c4 --registry-auth google \\
    --timeout 30m
  # outputs: digest=sha256:4f1c... image=europe-docker.pkg.dev/acme/apps/web@sha256:4f1c...

Exit codes: 0 the image exists; 2 invalid flags (an image reference without its registry, a bad
tag); 3 the registry refused the credentials, or asks for some and none are given; 4 not there
by the deadline, or the registry unreachable.";

/// Wait until an image tag exists in an OCI registry.
///
/// Asks the registry for the image's manifest (`HEAD /v2/<repository>/manifests/<tag>`, one
/// request per --poll-interval) until it exists: exit 0 with its digest. With --images, waits for
/// each of several (a pull request's build: tags made from --commit) and outputs them pinned, as
/// patch-kustomize's --set-image takes them. Authenticates as the
/// registry's challenge asks: basic auth, or a token from its token service for `pull` on the
/// repository, with --registry-username and --registry-password, or Google's Application Default
/// Credentials (--registry-auth google, Artifact Registry), or anonymously.
#[derive(Debug, Parser)]
#[command(name = NAME, version, after_help = EXAMPLE)]
pub struct Args {
    /// The image: REGISTRY/REPOSITORY:TAG (or @sha256:DIGEST), the registry written out.
    #[arg(long, value_name = "IMAGE")]
    pub image: Option<String>,

    /// Instead of --image: the kustomize images to set, one `NAME=REGISTRY/REPOSITORY:TAG` per
    /// line (or comma-separated), the tag may hold `{sha}` and `{short}` (--commit, and its first
    /// 7 characters). Empty (the default, without --image): nothing to wait for, set-images empty
    /// (a sandbox without images of its own: create-sandbox's default).
    #[arg(long, value_name = "NAME=IMAGE,...", default_value = "")]
    pub images: String,

    /// The commit whose build --images names (the pull request's head).
    #[arg(long, value_name = "SHA")]
    pub commit: Option<String>,

    /// How to get credentials: `auto` (--registry-username/--registry-password when given, else
    /// anonymous) or `google` (Application Default Credentials: the pod's workload identity, or
    /// `gcloud auth application-default login` on a laptop).
    #[arg(long, value_enum, default_value = "auto")]
    pub registry_auth: RegistryAuth,

    /// The registry user (with --registry-password; without a user, the password is not used).
    #[arg(long, value_name = "USER")]
    pub registry_username: Option<String>,

    /// The registry password or token, as a reference: env:NAME, file:/path or
    /// vault:<mount>/<path>#<key>.
    #[arg(long, value_name = "SECRET_REF")]
    pub registry_password: Option<SecretRef>,

    /// Speak plain HTTP to the registry (one on loopback or inside the cluster without TLS).
    #[arg(long)]
    pub plain_http: bool,

    /// How often to ask.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = step_kit::parse_duration)]
    pub poll_interval: Duration,

    #[command(flatten)]
    pub vault: VaultFlags,

    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RegistryAuth {
    Auto,
    Google,
}

impl StepArgs for Args {
    const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30 * 60);
    fn common(&self) -> &CommonArgs {
        &self.common
    }
}

/// Runs the step with `argv` (the first item is the program name); returns the exit code.
pub fn run(argv: impl IntoIterator<Item = OsString>) -> u8 {
    step_kit::run_from(NAME, argv, wait_image)
}

/// The manifest media types asked for: an index or a manifest, OCI's or Docker's.
const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
    application/vnd.oci.image.manifest.v1+json, \
    application/vnd.docker.distribution.manifest.list.v2+json, \
    application/vnd.docker.distribution.manifest.v2+json";

/// What one question to the registry found.
enum Probe {
    Found(String),
    Absent,
}

/// A `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
}

fn parse_challenge(header: &str) -> Option<Challenge> {
    let (scheme, params) = header.trim().split_once(' ').unwrap_or((header.trim(), ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Some(Challenge::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    // key="value" pairs; a scope holds commas (repository:a/b:pull,push), so split on quotes.
    let mut fields = std::collections::BTreeMap::new();
    let mut rest = params;
    while let Some((key, after)) = rest.split_once("=\"") {
        let Some((value, tail)) = after.split_once('"') else {
            break;
        };
        fields.insert(
            key.trim()
                .trim_start_matches(',')
                .trim()
                .to_ascii_lowercase(),
            value.to_owned(),
        );
        rest = tail;
    }
    Some(Challenge::Bearer {
        realm: fields.remove("realm")?,
        service: fields.remove("service"),
        scope: fields.remove("scope"),
    })
}

struct Registry {
    http: reqwest::Client,
    image: Reference,
    manifest_url: String,
    credentials: Option<(String, Secret)>,
    /// The bearer token from the registry's token service, once asked for.
    token: Option<Secret>,
    /// Basic credentials are sent once the registry asked for them.
    basic: bool,
    requests: u64,
}

impl Registry {
    /// One manifest HEAD, authenticating as the registry asks (at most one token fetch).
    async fn probe(&mut self) -> Result<Probe, StepError> {
        let mut fetched_token = false;
        loop {
            let mut request = self.http.head(&self.manifest_url).header("accept", ACCEPT);
            if let Some(token) = &self.token {
                request = request.bearer_auth(token.expose());
            } else if let (true, Some((user, password))) = (self.basic, &self.credentials) {
                request = request.basic_auth(user, Some(password.expose()));
            }
            self.requests += 1;
            let response = request.send().await.map_err(|e| {
                StepError::transient(format!(
                    "registry {}: {}",
                    self.image.registry,
                    error_chain(&e)
                ))
            })?;
            let status = response.status();
            let header = |name: &str| {
                response
                    .headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            };
            match status {
                StatusCode::OK => {
                    return Ok(Probe::Found(
                        header("docker-content-digest").unwrap_or_default(),
                    ))
                }
                StatusCode::NOT_FOUND => return Ok(Probe::Absent),
                StatusCode::UNAUTHORIZED => {
                    let challenge = header("www-authenticate").and_then(|h| parse_challenge(&h));
                    match challenge {
                        Some(Challenge::Basic) if self.credentials.is_some() && !self.basic => {
                            self.basic = true;
                        }
                        Some(Challenge::Bearer {
                            realm,
                            service,
                            scope,
                        }) if !fetched_token => {
                            self.token = Some(self.fetch_token(&realm, service, scope).await?);
                            fetched_token = true;
                        }
                        _ => return Err(self.refused()),
                    }
                }
                StatusCode::FORBIDDEN => return Err(self.refused()),
                s if s.is_server_error() || s == StatusCode::TOO_MANY_REQUESTS => {
                    return Err(StepError::transient(format!(
                        "registry {}: HTTP {}",
                        self.image.registry,
                        s.as_u16()
                    )))
                }
                s => {
                    return Err(StepError::precondition(format!(
                        "registry {} answered HTTP {} for {}",
                        self.image.registry,
                        s.as_u16(),
                        self.image
                    )))
                }
            }
        }
    }

    fn refused(&self) -> StepError {
        let (what, hint) = if self.credentials.is_some() {
            (
                "refused the credentials",
                "check --registry-username and --registry-password (or the workload identity with --registry-auth google): pull access to the repository is needed",
            )
        } else {
            (
                "needs credentials",
                "give --registry-username and --registry-password, or --registry-auth google",
            )
        };
        StepError::precondition(format!(
            "registry {} {what} for {}",
            self.image.registry, self.image
        ))
        .with_hint(hint)
    }

    /// A token for pulling the repository from the registry's token service (the distribution
    /// spec's token authentication: GET realm?service=...&scope=..., basic auth when there are
    /// credentials; the answer's `token` or `access_token`).
    async fn fetch_token(
        &mut self,
        realm: &str,
        service: Option<String>,
        scope: Option<String>,
    ) -> Result<Secret, StepError> {
        let scope = scope.unwrap_or_else(|| format!("repository:{}:pull", self.image.repository));
        let mut query = vec![("scope", scope)];
        if let Some(service) = service {
            query.push(("service", service));
        }
        let url = reqwest::Url::parse_with_params(realm, &query).map_err(|e| {
            StepError::precondition(format!(
                "registry {}: its token service {}: {e}",
                self.image.registry,
                escape_untrusted(realm)
            ))
        })?;
        let mut request = self.http.get(url);
        if let Some((user, password)) = &self.credentials {
            request = request.basic_auth(user, Some(password.expose()));
        }
        self.requests += 1;
        let response = request.send().await.map_err(|e| {
            StepError::transient(format!("registry token service: {}", error_chain(&e)))
        })?;
        let status = response.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(self.refused());
        }
        if !status.is_success() {
            return Err(StepError::transient(format!(
                "registry token service: HTTP {}",
                status.as_u16()
            )));
        }
        #[derive(serde::Deserialize)]
        struct TokenJson {
            token: Option<String>,
            access_token: Option<String>,
        }
        let body: TokenJson = response.json().await.map_err(|e| {
            StepError::transient(format!("registry token service: unreadable answer: {e}"))
        })?;
        body.token
            .or(body.access_token)
            .filter(|t| !t.is_empty())
            .map(Secret::new)
            .ok_or_else(|| StepError::transient("registry token service: no token in its answer"))
    }
}

/// An access token from Google's Application Default Credentials, as Artifact Registry takes it
/// (user `oauth2accesstoken`).
async fn google_credentials() -> Result<(String, Secret), StepError> {
    use token_source::TokenSourceProvider;
    let scopes = ["https://www.googleapis.com/auth/cloud-platform"];
    let config = gcloud_auth::project::Config::default().with_scopes(&scopes);
    let no_credentials = |e: String| {
        StepError::precondition(format!(
            "--registry-auth google: no Application Default Credentials ({e})"
        ))
        .with_hint(
            "in GKE, a workload identity with roles/artifactregistry.reader; on a laptop, \
             `gcloud auth application-default login`",
        )
    };
    let provider = gcloud_auth::token::DefaultTokenSourceProvider::new(config)
        .await
        .map_err(|e| no_credentials(e.to_string()))?;
    let token = provider
        .token_source()
        .token()
        .await
        .map_err(|e| no_credentials(e.to_string()))?;
    let token = token.strip_prefix("Bearer ").unwrap_or(&token).to_owned();
    Ok(("oauth2accesstoken".to_owned(), Secret::new(token)))
}

/// `--images` lines, their `{sha}` and `{short}` replaced: (kustomize name, reference).
pub fn expand_images(
    images: &str,
    commit: Option<&str>,
) -> Result<Vec<(String, Reference)>, String> {
    let mut out = Vec::new();
    for entry in images
        .split(['\n', ','])
        .map(str::trim)
        .filter(|e| !e.is_empty())
    {
        let (name, image) = entry
            .split_once('=')
            .ok_or_else(|| format!("{entry:?}: expected NAME=REGISTRY/REPOSITORY:TAG"))?;
        let name = name.trim();
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_./:".contains(&b))
        {
            return Err(format!(
                "{entry:?}: the kustomize image name {name:?} is not an image name"
            ));
        }
        let image = if image.contains("{sha}") || image.contains("{short}") {
            let sha =
                commit.ok_or_else(|| format!("{entry:?}: {{sha}} and {{short}} need --commit"))?;
            image.replace("{sha}", sha).replace("{short}", &sha[..7])
        } else {
            image.to_owned()
        };
        let reference =
            Reference::parse(image.trim()).map_err(|why| format!("{entry:?}: {why}"))?;
        out.push((name.to_owned(), reference));
    }
    Ok(out)
}

async fn wait_image(args: Args, ctx: Context) -> Result<(), StepError> {
    let commit = args.commit.as_deref().filter(|c| !c.is_empty());
    if let Some(commit) = commit {
        naming::check_commit_id(commit, true).map_err(|rule| {
            StepError::invalid(format!("--commit {}: {rule}", escape_untrusted(commit)))
        })?;
    }
    if args.image.is_some() && !args.images.trim().is_empty() {
        return Err(StepError::invalid(
            "--image and --images exclude each other",
        ));
    }
    let wanted: Vec<(Option<String>, Reference)> = match (&args.image, &args.images) {
        (Some(image), _) => vec![(
            None,
            Reference::parse(image).map_err(|why| {
                StepError::invalid(format!("--image {}: {why}", escape_untrusted(image)))
            })?,
        )],
        (None, images) => expand_images(images, commit)
            .map_err(|why| StepError::invalid(format!("--images: {}", escape_untrusted(&why))))?
            .into_iter()
            .map(|(name, reference)| (Some(name), reference))
            .collect(),
    };
    if wanted.is_empty() {
        tracing::info!("no --image, and --images is empty: nothing to wait for");
        ctx.outputs.set("digest", "")?;
        ctx.outputs.set("image", "")?;
        ctx.outputs.set("commit", "")?;
        return ctx.outputs.set("set-images", "");
    }
    // A password without a user is not used: the template passes its Secret's reference always.
    let credentials = match (
        args.registry_auth,
        &args.registry_username,
        &args.registry_password,
    ) {
        (RegistryAuth::Google, None, _) => Some(google_credentials().await?),
        (RegistryAuth::Google, Some(_), _) => {
            return Err(StepError::invalid(
                "--registry-auth google takes no --registry-username",
            ))
        }
        (RegistryAuth::Auto, Some(user), Some(password)) => Some((
            user.clone(),
            password.resolve("--registry-password", &args.vault).await?,
        )),
        (RegistryAuth::Auto, Some(_), None) => {
            return Err(StepError::invalid(
                "--registry-username needs --registry-password",
            ))
        }
        (RegistryAuth::Auto, None, _) => None,
    };
    let http = step_kit::http_client()?;
    let mut set_images = Vec::new();
    let mut last = (String::new(), String::new());
    for (name, image) in &wanted {
        let digest = wait_for(&args, &ctx, http.clone(), credentials.clone(), image).await?;
        let pinned = if digest.is_empty() {
            image.to_string()
        } else {
            image.pinned(&digest)
        };
        if let Some(name) = name {
            // NAME=REGISTRY/REPOSITORY:TAG@DIGEST: the tag for people, the digest for the cluster.
            let version = if digest.is_empty() {
                image.to_string()
            } else {
                format!("{image}@{digest}")
            };
            set_images.push(format!("{name}={version}"));
        }
        last = (digest, pinned);
    }
    ctx.outputs.set("digest", &last.0)?;
    ctx.outputs.set("image", &last.1)?;
    // The commit whose build the images are, when they are one (what the sandbox now runs).
    let built_from = if set_images.is_empty() {
        ""
    } else {
        commit.unwrap_or_default()
    };
    ctx.outputs.set("commit", built_from)?;
    ctx.outputs.set("set-images", &set_images.join("\n"))
}

/// Waits until `image` exists; its digest.
async fn wait_for(
    args: &Args,
    ctx: &Context,
    http: reqwest::Client,
    credentials: Option<(String, Secret)>,
    image: &Reference,
) -> Result<String, StepError> {
    let manifest_url = format!(
        "{}{}/manifests/{}",
        image.api_base(args.plain_http),
        image.repository,
        image.reference
    );
    let mut registry = Registry {
        http,
        image: image.clone(),
        manifest_url,
        credentials,
        token: None,
        basic: false,
        requests: 0,
    };
    let started = Instant::now();
    let mut said_absent = None::<Instant>;
    loop {
        match registry.probe().await {
            Ok(Probe::Found(digest)) => {
                tracing::info!(
                    "{image} exists (digest {}) after {:.1} s, {} requests",
                    if digest.is_empty() {
                        "not given"
                    } else {
                        &digest
                    },
                    started.elapsed().as_secs_f64(),
                    registry.requests
                );
                return Ok(digest);
            }
            Ok(Probe::Absent) => {
                // The first time, then once a minute.
                if said_absent.is_none_or(|at| at.elapsed() >= Duration::from_secs(60)) {
                    tracing::info!(
                        "{image} is not in the registry yet ({:.0} s); asking every {:?}",
                        started.elapsed().as_secs_f64(),
                        args.poll_interval
                    );
                    said_absent = Some(Instant::now());
                }
            }
            Err(e) if e.kind == ErrorKind::Transient => {
                tracing::warn!("{e}; asking again in {:?}", args.poll_interval);
            }
            Err(e) => return Err(e),
        }
        if Instant::now() + args.poll_interval > ctx.deadline {
            return Err(StepError::transient(format!(
                "{image} did not appear within {:.0} s ({} requests)",
                started.elapsed().as_secs_f64(),
                registry.requests
            )));
        }
        tokio::time::sleep(args.poll_interval).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_from_the_commit() {
        let sha = "1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d";
        let images = expand_images(
            "web=ghcr.io/acme/web:sha-{short}\n api = ghcr.io/acme/api:{sha} ,",
            Some(sha),
        )
        .unwrap();
        assert_eq!(images[0].0, "web");
        assert_eq!(images[0].1.to_string(), "ghcr.io/acme/web:sha-1a2b3c4");
        assert_eq!(images[1].1.reference, sha);
        assert!(expand_images("", None).unwrap().is_empty());
        assert!(expand_images("web=ghcr.io/acme/web:sha-{short}", None).is_err());
        assert!(expand_images("ghcr.io/acme/web:1", None).is_err());
        assert!(expand_images("we b=ghcr.io/acme/web:1", None).is_err());
    }

    #[test]
    fn challenges() {
        assert_eq!(
            parse_challenge("Basic realm=\"Registry\""),
            Some(Challenge::Basic)
        );
        assert_eq!(
            parse_challenge(
                "Bearer realm=\"https://auth.example/token\",service=\"registry.example\",scope=\"repository:acme/web:pull,push\""
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.example/token".into(),
                service: Some("registry.example".into()),
                scope: Some("repository:acme/web:pull,push".into()),
            })
        );
        assert_eq!(parse_challenge("Bearer service=\"x\""), None);
        assert_eq!(parse_challenge("Negotiate"), None);
    }
}
