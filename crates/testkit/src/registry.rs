//! A real OCI registry on loopback: Debian's `docker-registry` (the CNCF distribution registry,
//! 2.8), plain HTTP, filesystem storage, with one of its own auth modes:
//! - none (anonymous pulls and pushes);
//! - `htpasswd` (basic auth, bcrypt);
//! - `token`: the registry refuses with a `Bearer realm=...,service=...,scope=...` challenge and
//!   accepts only JWTs it verifies itself (signed RS256 by a key whose certificate is in its
//!   `rootcertbundle`, issuer and audience checked, access claims per repository). The token
//!   service that issues them is [`TokenIssuer`], a double of what Docker Hub, GHCR or Harbor run
//!   in front of their registries: it checks a user and password and signs what the registry
//!   asks for. The registry's check is real.
//!
//! Images are pushed with skopeo (Debian), from an OCI image layout written by the harness.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::{find_binary, free_port, HttpResponse, HttpServer, ServerProcess};

/// How the registry authenticates.
pub enum RegistryAuth {
    Anonymous,
    /// Basic auth for one user.
    Htpasswd {
        user: String,
        password: String,
    },
    /// Bearer tokens from a token service for one user.
    Token {
        user: String,
        password: String,
    },
}

pub struct OciRegistry {
    port: u16,
    credentials: Option<(String, String)>,
    _issuer: Option<TokenIssuer>,
    _server: ServerProcess,
    dir: tempfile::TempDir,
}

const SERVICE: &str = "registry.sandbox-steps.test";
const ISSUER: &str = "sandbox-steps-test-token-issuer";
const INSTALL_HINT: &str = "install Debian's docker-registry (apt-get install docker-registry)";

impl OciRegistry {
    pub fn start(auth: RegistryAuth) -> OciRegistry {
        let binary = find_binary(
            "docker-registry",
            &[PathBuf::from("/usr/bin")],
            INSTALL_HINT,
        );
        let dir = tempfile::tempdir().expect("registry dir");
        let port = free_port();
        let (auth_config, issuer, credentials) = match auth {
            RegistryAuth::Anonymous => (String::new(), None, None),
            RegistryAuth::Htpasswd { user, password } => {
                let hash = bcrypt::hash(&password, 5).expect("bcrypt");
                let file = dir.path().join("htpasswd");
                std::fs::write(&file, format!("{user}:{hash}\n")).unwrap();
                (
                    format!(
                        "auth:\n  htpasswd:\n    realm: sandbox-steps-test\n    path: {}\n",
                        file.display()
                    ),
                    None,
                    Some((user, password)),
                )
            }
            RegistryAuth::Token { user, password } => {
                let issuer = TokenIssuer::start(dir.path(), &user, &password);
                (
                    format!(
                        "auth:\n  token:\n    realm: {}/token\n    service: {SERVICE}\n    \
                         issuer: {ISSUER}\n    rootcertbundle: {}\n",
                        issuer.http.url(),
                        issuer.certificate.display()
                    ),
                    Some(issuer),
                    Some((user, password)),
                )
            }
        };
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\n  \
                 delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n{auth_config}",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        let mut cmd = Command::new(binary);
        cmd.arg("serve").arg(&config);
        let mut server =
            ServerProcess::spawn("docker-registry", cmd, &dir.path().join("registry.log"));
        // Any answer of /v2/ (200, or 401 with auth) means it serves.
        let base = format!("http://127.0.0.1:{port}/v2/");
        server.wait_ready(Duration::from_secs(30), || {
            reqwest::blocking::get(&base).is_ok_and(|r| matches!(r.status().as_u16(), 200 | 401))
        });
        OciRegistry {
            port,
            credentials,
            _issuer: issuer,
            _server: server,
            dir,
        }
    }

    /// `127.0.0.1:PORT`, the registry part of an image reference.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Pushes a one-layer image holding `content` as `REPOSITORY:TAG`, with skopeo (from an OCI
    /// image layout written here), authenticating as the registry's user. Returns the digest of
    /// its manifest in the registry.
    pub fn push_image(&self, repository: &str, tag: &str, content: &str) -> String {
        let layout = tempfile::tempdir_in(self.dir.path()).unwrap();
        let blobs = layout.path().join("blobs/sha256");
        std::fs::create_dir_all(&blobs).unwrap();
        let blob = |bytes: &[u8]| -> (String, usize) {
            let hex: String = Sha256::digest(bytes)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            std::fs::write(blobs.join(&hex), bytes).unwrap();
            (format!("sha256:{hex}"), bytes.len())
        };
        let stage = layout.path().join("stage");
        std::fs::create_dir_all(&stage).unwrap();
        std::fs::write(stage.join("content.txt"), content).unwrap();
        let tar = Command::new("tar")
            .args(["--sort=name", "--mtime=@0", "--owner=0", "--group=0", "-C"])
            .arg(&stage)
            .args(["-cf", "-", "content.txt"])
            .output()
            .expect("tar");
        assert!(tar.status.success());
        let (layer, layer_size) = blob(&tar.stdout);
        let config = json!({"architecture": "amd64", "os": "linux", "config": {},
                            "rootfs": {"type": "layers", "diff_ids": [layer]}});
        let (config, config_size) = blob(config.to_string().as_bytes());
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": config, "size": config_size},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                        "digest": layer, "size": layer_size}],
        });
        let (layout_manifest, manifest_size) = blob(manifest.to_string().as_bytes());
        let index = json!({"schemaVersion": 2, "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": layout_manifest, "size": manifest_size,
            "annotations": {"org.opencontainers.image.ref.name": tag}}]});
        std::fs::write(layout.path().join("index.json"), index.to_string()).unwrap();
        std::fs::write(
            layout.path().join("oci-layout"),
            r#"{"imageLayoutVersion": "1.0.0"}"#,
        )
        .unwrap();
        let skopeo = find_binary(
            "skopeo",
            &[PathBuf::from("/usr/bin")],
            "apt-get install skopeo",
        );
        let mut cmd = Command::new(skopeo);
        cmd.args(["copy", "--quiet", "--dest-tls-verify=false"])
            .env("HOME", self.dir.path())
            .env("TMPDIR", self.dir.path());
        if let Some((user, password)) = &self.credentials {
            cmd.arg(format!("--dest-creds={user}:{password}"));
        }
        cmd.arg(format!("oci:{}:{tag}", layout.path().display()))
            .arg(format!("docker://{}/{repository}:{tag}", self.host()));
        let out = cmd.output().expect("run skopeo");
        assert!(
            out.status.success(),
            "skopeo copy to {}/{repository}:{tag}: {}\n{}",
            self.host(),
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        // skopeo compresses the layer on the way, so the stored manifest is not the layout's:
        // the digest is the registry's, as skopeo reads it back.
        let skopeo = find_binary(
            "skopeo",
            &[PathBuf::from("/usr/bin")],
            "apt-get install skopeo",
        );
        let mut inspect = Command::new(skopeo);
        inspect
            .args(["inspect", "--tls-verify=false", "--format", "{{.Digest}}"])
            .env("HOME", self.dir.path());
        if let Some((user, password)) = &self.credentials {
            inspect.arg(format!("--creds={user}:{password}"));
        }
        let out = inspect
            .arg(format!("docker://{}/{repository}:{tag}", self.host()))
            .output()
            .expect("run skopeo inspect");
        assert!(
            out.status.success(),
            "skopeo inspect: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// The registry's log (what it refused, and why).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }
}

/// The token service in front of a registry in token mode (a double: see the module's docs).
/// `GET /token?service=...&scope=repository:NAME:ACTIONS` with the user's basic auth answers
/// `{"token": JWT, "access_token": JWT, "expires_in": 300}`: the JWT signed with its key, its
/// certificate in the `x5c` header (the registry checks it against its `rootcertbundle`), the
/// actions asked for granted.
pub struct TokenIssuer {
    http: HttpServer,
    certificate: PathBuf,
}

impl TokenIssuer {
    fn start(dir: &Path, user: &str, password: &str) -> TokenIssuer {
        let key = dir.join("issuer.key");
        let certificate = dir.join("issuer.crt");
        let status = Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            ])
            .args(["-subj", "/CN=sandbox-steps-test-token-issuer"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&certificate)
            .output()
            .expect("openssl");
        assert!(status.status.success(), "openssl req: {status:?}");
        let pem = std::fs::read_to_string(&certificate).unwrap();
        let der_base64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        let signing_key =
            jsonwebtoken::EncodingKey::from_rsa_pem(&std::fs::read(&key).unwrap()).unwrap();
        let expected = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        );
        let http = HttpServer::start(move |req| {
            if req.path != "/token" {
                return HttpResponse::new(404);
            }
            if req.header("authorization") != Some(expected.as_str()) {
                return HttpResponse::json(401, &json!({"details": "bad credentials"}));
            }
            let scope = crate::openapi::percent_decode(req.query_param("scope").unwrap_or(""));
            let access: Vec<serde_json::Value> = scope
                .split(' ')
                .filter_map(|s| {
                    let mut parts = s.splitn(3, ':');
                    let (kind, name, actions) = (parts.next()?, parts.next()?, parts.next()?);
                    Some(json!({"type": kind, "name": name,
                                "actions": actions.split(',').collect::<Vec<_>>()}))
                })
                .collect();
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_secs();
            let claims = json!({
                "iss": ISSUER, "sub": "sandbox-steps-test-user", "aud": SERVICE,
                "exp": now + 300, "nbf": now - 10, "iat": now, "jti": format!("{now}-{}", scope.len()),
                "access": access,
            });
            let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
            header.x5c = Some(vec![der_base64.clone()]);
            let token = jsonwebtoken::encode(&header, &claims, &signing_key).unwrap();
            HttpResponse::json(
                200,
                &json!({"token": token, "access_token": token, "expires_in": 300}),
            )
        });
        TokenIssuer { http, certificate }
    }
}
