//! Google Cloud Storage for the steps that read or write buckets (copy-bucket, restore-db).
//!
//! Through `gcloud-storage`, the JSON API client: the official `google-cloud-storage` 1.x sends
//! list, rewrite and delete over gRPC (google.storage.v2), which no emulator serves, so it could
//! not be tested here. What this crate adds on top:
//!
//! - [`Gcs::from_env`]: `STORAGE_EMULATOR_HOST` (e.g. `http://127.0.0.1:4443`, the Google SDKs'
//!   convention) selects that endpoint with anonymous credentials; otherwise Application Default
//!   Credentials (Workload Identity in a pod). One HTTP client with a connect timeout and a read
//!   timeout (no whole-request timeout: a download of a large object takes as long as it takes,
//!   a stalled call fails).
//! - [`GcsUrl`]: `gs://BUCKET[/PREFIX]`, the bucket checked with `naming::check_bucket_name`.
//! - [`Gcs::list`]: a listing streamed page by page (each page retried), never held whole.
//! - [`Gcs::rewrite`]: a server-side copy, looping on `done` (gcloud-storage returns
//!   `rewrite_token: Some("")` once done, so the token is no loop condition).
//! - [`Error`]: each failure classified; 408/429/5xx, resets and timeouts are transient.

mod error;
mod url;

use std::time::Duration;

use futures_util::Stream;
use gcloud_storage::client::{Client, ClientConfig};
use gcloud_storage::http::buckets::get::GetBucketRequest;
use gcloud_storage::http::buckets::list::ListBucketsRequest;
use gcloud_storage::http::objects::delete::DeleteObjectRequest;
use gcloud_storage::http::objects::download::Range;
use gcloud_storage::http::objects::get::GetObjectRequest;
use gcloud_storage::http::objects::list::ListObjectsRequest;
use gcloud_storage::http::objects::rewrite::RewriteObjectRequest;
use gcloud_storage::http::objects::Object;
use step_kit::{retry, RetryPolicy};

pub use error::{class_of_status, Error, ErrorClass};
pub use url::{GcsUrl, Location};

/// The environment variable the Google SDKs read for an emulator's endpoint.
pub const EMULATOR_ENV: &str = "STORAGE_EMULATOR_HOST";

/// Objects per listing page (the JSON API's maximum and default).
pub const PAGE_SIZE: i32 = 1000;

/// One object of a listing, with what a copy compares: its size and checksums.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The full object name.
    pub name: String,
    pub size: u64,
    /// Base64 of the big-endian CRC32C, as GCS reports it.
    pub crc32c: Option<String>,
    /// Base64 of the MD5 (absent on composite objects).
    pub md5: Option<String>,
    pub generation: i64,
    /// When the object was last written (Unix seconds), when the service says.
    pub updated: Option<i64>,
}

impl Entry {
    fn from_object(o: Object) -> Self {
        Entry {
            name: o.name,
            size: u64::try_from(o.size).unwrap_or(0),
            crc32c: o.crc32c.filter(|s| !s.is_empty()),
            md5: o.md5_hash.filter(|s| !s.is_empty()),
            generation: o.generation,
            updated: o.updated.map(|t| t.unix_timestamp()),
        }
    }

    /// Same content: the same size and CRC32C, or the same MD5 when either has no CRC32C. Without
    /// a checksum on both sides nothing can be told, so `false`.
    pub fn same_content(&self, other: &Entry) -> bool {
        if self.size != other.size {
            return false;
        }
        match (&self.crc32c, &other.crc32c) {
            (Some(a), Some(b)) => a == b,
            _ => matches!((&self.md5, &other.md5), (Some(a), Some(b)) if a == b),
        }
    }
}

/// Client settings: the endpoint and the HTTP timeouts.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `None`: Google's endpoint with Application Default Credentials; `Some(url)`: an emulator,
    /// anonymously.
    pub emulator: Option<String>,
    pub connect_timeout: Duration,
    /// The longest silence of a request: waiting for the answer (a rewrite call returns within
    /// about 30 s on GCS, whatever the size) or between two reads of a body being downloaded.
    pub read_timeout: Duration,
    /// Idle connections kept per host: the copy's concurrency.
    pub max_idle_connections: usize,
}

impl Settings {
    /// From the environment: `STORAGE_EMULATOR_HOST` when set and not empty.
    pub fn from_env() -> Self {
        Settings {
            emulator: std::env::var(EMULATOR_ENV)
                .ok()
                .filter(|v| !v.trim().is_empty()),
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(120),
            max_idle_connections: 64,
        }
    }
}

/// `http://host:port` for an emulator given as `host:port` or a URL (the SDKs accept both).
pub fn emulator_endpoint(value: &str) -> String {
    let value = value.trim().trim_end_matches('/');
    if value.starts_with("http://") || value.starts_with("https://") {
        value.to_owned()
    } else {
        format!("http://{value}")
    }
}

/// A GCS client.
#[derive(Clone)]
pub struct Gcs {
    client: Client,
    endpoint: String,
}

impl Gcs {
    /// The client the environment asks for: see [`Settings::from_env`].
    pub async fn from_env() -> Result<Gcs, Error> {
        Gcs::connect(&Settings::from_env()).await
    }

    pub async fn connect(settings: &Settings) -> Result<Gcs, Error> {
        let http = reqwest::Client::builder()
            .connect_timeout(settings.connect_timeout)
            .read_timeout(settings.read_timeout)
            .pool_max_idle_per_host(settings.max_idle_connections)
            .pool_idle_timeout(Duration::from_secs(30))
            .tcp_nodelay(true)
            .build()
            .map_err(|e| {
                Error::new(
                    ErrorClass::Other,
                    format!("cannot build the HTTP client: {e}"),
                )
            })?;
        let mut config = ClientConfig {
            http: Some(reqwest_middleware::ClientBuilder::new(http).build()),
            ..ClientConfig::default()
        };
        let endpoint = match &settings.emulator {
            Some(emulator) => {
                config = config.anonymous();
                config.storage_endpoint = emulator_endpoint(emulator);
                tracing::info!(
                    "{EMULATOR_ENV} is set: using {} with anonymous credentials",
                    config.storage_endpoint
                );
                config.storage_endpoint.clone()
            }
            None => {
                config = config.with_auth().await.map_err(|e| {
                    Error::new(
                        ErrorClass::Auth,
                        format!(
                            "no Google credentials: {} (Application Default Credentials: \
                             Workload Identity in a pod, GOOGLE_APPLICATION_CREDENTIALS or \
                             `gcloud auth application-default login` on a laptop; \
                             {EMULATOR_ENV} for an emulator)",
                            step_kit::error_chain(&e)
                        ),
                    )
                })?;
                config.storage_endpoint.clone()
            }
        };
        Ok(Gcs {
            client: Client::new(config),
            endpoint,
        })
    }

    /// The JSON API's endpoint (Google's, or the emulator's).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The names of `project`'s buckets that start with `prefix`, in name order, a page of up
    /// to 1,000 at a time.
    pub async fn list_buckets(
        &self,
        project: &str,
        prefix: &str,
        policy: &RetryPolicy,
    ) -> Result<Vec<String>, Error> {
        let what = format!("list the buckets of project {project}");
        let mut names = Vec::new();
        let mut page_token = None;
        loop {
            let request = ListBucketsRequest {
                project: project.to_owned(),
                prefix: Some(prefix.to_owned()).filter(|p| !p.is_empty()),
                page_token: page_token.clone(),
                max_results: Some(1000),
                ..Default::default()
            };
            let page = retry(policy, &what, Error::is_transient, || async {
                self.client
                    .list_buckets(&request)
                    .await
                    .map_err(|e| Error::from_http(&what, &e))
            })
            .await?;
            names.extend(
                page.items
                    .into_iter()
                    .map(|b| b.name)
                    .filter(|n| n.starts_with(prefix)),
            );
            page_token = page.next_page_token.filter(|t| !t.is_empty());
            if page_token.is_none() {
                names.sort();
                return Ok(names);
            }
        }
    }

    /// Checks that `bucket` exists and is readable: [`ErrorClass::NotFound`] when it does not.
    pub async fn check_bucket(&self, bucket: &str, policy: &RetryPolicy) -> Result<(), Error> {
        let what = format!("get bucket gs://{bucket}");
        retry(policy, &what, Error::is_transient, || async {
            self.client
                .get_bucket(&GetBucketRequest {
                    bucket: bucket.to_owned(),
                    ..Default::default()
                })
                .await
                .map(|_| ())
                .map_err(|e| Error::from_http(&what, &e))
        })
        .await
    }

    /// The objects of `bucket` under `prefix`, in name order, one page at a time: the next page is
    /// asked for only when this one has been taken, so memory holds a page, whatever the size of
    /// the bucket. Each page request is retried on transient errors.
    pub fn list<'a>(
        &'a self,
        bucket: &'a str,
        prefix: &'a str,
        policy: &'a RetryPolicy,
    ) -> impl Stream<Item = Result<Vec<Entry>, Error>> + 'a {
        let what = format!("list gs://{bucket}/{prefix}");
        // The state: the next page's token, or None once the last page was returned.
        futures_util::stream::try_unfold(Some(None::<String>), move |state| {
            let what = what.clone();
            async move {
                let Some(page_token) = state else {
                    return Ok(None);
                };
                let request = ListObjectsRequest {
                    bucket: bucket.to_owned(),
                    prefix: (!prefix.is_empty()).then(|| prefix.to_owned()),
                    max_results: Some(PAGE_SIZE),
                    page_token,
                    ..Default::default()
                };
                let page = retry(policy, &what, Error::is_transient, || async {
                    self.client
                        .list_objects(&request)
                        .await
                        .map_err(|e| Error::from_http(&what, &e))
                })
                .await?;
                let entries: Vec<Entry> = page
                    .items
                    .unwrap_or_default()
                    .into_iter()
                    .map(Entry::from_object)
                    .collect();
                let next = page.next_page_token.filter(|t| !t.is_empty()).map(Some);
                Ok(Some((entries, next)))
            }
        })
    }

    /// Copies `source` to `dest` server side with the rewrite API (the data never passes through
    /// this process), looping until the service says `done`; each call is retried on transient
    /// errors, with the token of the last answer. The destination gets the source's metadata
    /// (content type, cache control, content encoding, custom metadata). Returns the new object.
    pub async fn rewrite(
        &self,
        source: (&str, &str),
        dest: (&str, &str),
        policy: &RetryPolicy,
    ) -> Result<Entry, Error> {
        let what = format!(
            "rewrite gs://{}/{} to gs://{}/{}",
            source.0, source.1, dest.0, dest.1
        );
        let mut request = RewriteObjectRequest {
            source_bucket: source.0.to_owned(),
            source_object: source.1.to_owned(),
            destination_bucket: dest.0.to_owned(),
            destination_object: dest.1.to_owned(),
            ..Default::default()
        };
        // A rewrite of a large object across locations or storage classes takes a call per few
        // hundred MiB; a bound keeps a misbehaving server from looping us forever.
        for _ in 0..100_000 {
            let answer = retry(policy, &what, Error::is_transient, || async {
                self.client
                    .rewrite_object(&request)
                    .await
                    .map_err(|e| Error::from_http(&what, &e))
            })
            .await?;
            if answer.done {
                return match answer.resource {
                    Some(object) => Ok(Entry::from_object(object)),
                    None => Err(Error::new(
                        ErrorClass::Other,
                        format!("{what}: done without the new object's metadata"),
                    )),
                };
            }
            tracing::debug!(
                "{what}: {} of {} bytes",
                answer.total_bytes_rewritten,
                answer.object_size
            );
            match answer.rewrite_token.filter(|t| !t.is_empty()) {
                Some(token) => request.rewrite_token = Some(token),
                None => {
                    return Err(Error::new(
                        ErrorClass::Transient,
                        format!("{what}: not done, and no rewrite token to go on with"),
                    ))
                }
            }
        }
        Err(Error::new(
            ErrorClass::Other,
            format!("{what}: still not done after 100000 calls"),
        ))
    }

    /// The metadata of one object: [`ErrorClass::NotFound`] when there is none.
    pub async fn object(
        &self,
        bucket: &str,
        name: &str,
        policy: &RetryPolicy,
    ) -> Result<Entry, Error> {
        let what = format!("get gs://{bucket}/{name}");
        retry(policy, &what, Error::is_transient, || async {
            self.client
                .get_object(&GetObjectRequest {
                    bucket: bucket.to_owned(),
                    object: name.to_owned(),
                    ..Default::default()
                })
                .await
                .map(Entry::from_object)
                .map_err(|e| Error::from_http(&what, &e))
        })
        .await
    }

    /// The content of one generation of an object, streamed as it arrives. A download that
    /// breaks off (reset, timeout, 5xx) is resumed from the byte it reached with a range
    /// request of the same generation, within `policy`; so a long download survives a flaky
    /// network, and never mixes two versions of the object.
    pub fn read(
        &self,
        bucket: &str,
        name: &str,
        generation: i64,
        policy: &RetryPolicy,
    ) -> impl Stream<Item = Result<bytes::Bytes, Error>> + Send + 'static {
        type Body = std::pin::Pin<
            Box<dyn Stream<Item = Result<bytes::Bytes, gcloud_storage::http::Error>> + Send>,
        >;
        struct State {
            offset: u64,
            body: Option<Body>,
            /// Resumptions since data last arrived.
            resumed: usize,
        }
        let what = format!("download gs://{bucket}/{name}#{generation}");
        let request = GetObjectRequest {
            bucket: bucket.to_owned(),
            object: name.to_owned(),
            generation: Some(generation),
            ..Default::default()
        };
        let (client, policy) = (self.client.clone(), policy.clone());
        let start = State {
            offset: 0,
            body: None,
            resumed: 0,
        };
        futures_util::stream::try_unfold(start, move |mut state| {
            let (what, request, client, policy) = (
                what.clone(),
                request.clone(),
                client.clone(),
                policy.clone(),
            );
            async move {
                use futures_util::StreamExt;
                loop {
                    if state.body.is_none() {
                        let range = Range((state.offset > 0).then_some(state.offset), None);
                        let body = retry(&policy, &what, Error::is_transient, || async {
                            client
                                .download_streamed_object(&request, &range)
                                .await
                                .map_err(|e| Error::from_http(&what, &e))
                        })
                        .await?;
                        state.body = Some(Box::pin(body));
                    }
                    let body = state.body.as_mut().expect("opened above");
                    match body.next().await {
                        None => return Ok(None),
                        Some(Ok(data)) => {
                            state.offset += data.len() as u64;
                            state.resumed = 0;
                            return Ok(Some((data, state)));
                        }
                        Some(Err(e)) => {
                            let e = Error::from_http(&what, &e);
                            if !e.is_transient() || state.resumed >= policy.max_retries {
                                return Err(e);
                            }
                            state.resumed += 1;
                            tracing::warn!(
                                "{what}: broke off at byte {} ({e}); resuming from there",
                                state.offset
                            );
                            state.body = None;
                        }
                    }
                }
            }
        })
    }

    /// Deletes an object; `Ok(false)` when it was not there (already deleted: a retry after a
    /// lost answer, or a concurrent run).
    pub async fn delete(
        &self,
        bucket: &str,
        name: &str,
        policy: &RetryPolicy,
    ) -> Result<bool, Error> {
        let what = format!("delete gs://{bucket}/{name}");
        let result = retry(policy, &what, Error::is_transient, || async {
            self.client
                .delete_object(&DeleteObjectRequest {
                    bucket: bucket.to_owned(),
                    object: name.to_owned(),
                    ..Default::default()
                })
                .await
                .map_err(|e| Error::from_http(&what, &e))
        })
        .await;
        match result {
            Ok(()) => Ok(true),
            Err(e) if e.class == ErrorClass::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(size: u64, crc: Option<&str>, md5: Option<&str>) -> Entry {
        Entry {
            name: "x".into(),
            size,
            crc32c: crc.map(str::to_owned),
            md5: md5.map(str::to_owned),
            generation: 1,
            updated: None,
        }
    }

    #[test]
    fn same_content_needs_size_and_a_checksum() {
        let a = entry(3, Some("AAAA"), Some("m1"));
        assert!(a.same_content(&entry(3, Some("AAAA"), Some("other"))));
        assert!(!a.same_content(&entry(4, Some("AAAA"), Some("m1"))));
        assert!(!a.same_content(&entry(3, Some("BBBB"), Some("m1"))));
        // CRC32C missing on one side: MD5 decides.
        assert!(a.same_content(&entry(3, None, Some("m1"))));
        assert!(!a.same_content(&entry(3, None, Some("m2"))));
        // No checksum in common: copied again.
        assert!(!entry(3, None, None).same_content(&entry(3, None, None)));
    }

    #[test]
    fn emulator_endpoints_take_both_forms() {
        assert_eq!(emulator_endpoint("127.0.0.1:4443"), "http://127.0.0.1:4443");
        assert_eq!(
            emulator_endpoint("http://127.0.0.1:4443/"),
            "http://127.0.0.1:4443"
        );
        assert_eq!(emulator_endpoint("https://gcs.local"), "https://gcs.local");
    }
}
