//! The gcs crate against fake-gcs-server (and the fault proxy in front of it).

use std::time::Duration;

use futures_util::TryStreamExt;
use gcs::{ErrorClass, Gcs, Settings};
use step_kit::RetryPolicy;
use testkit::{FakeGcs, FaultConfig, FaultProxy};

/// The harness's servers are driven with blocking calls, so the async code under test runs on its
/// own runtime, one call at a time.
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

fn client(endpoint: String) -> Gcs {
    step_kit::install_tls_provider();
    block_on(Gcs::connect(&Settings {
        emulator: Some(endpoint),
        ..Settings::from_env()
    }))
    .unwrap()
}

fn quick() -> RetryPolicy {
    RetryPolicy::network()
        .with_delays(Duration::from_millis(5), Duration::from_millis(50))
        .with_max_retries(10)
}

#[test]
fn listing_streams_every_page_in_name_order() {
    let server = FakeGcs::start();
    server.create_bucket("src-bucket");
    let objects: Vec<(String, Vec<u8>)> = (0..2500)
        .map(|i| (format!("docs/{i:05}.txt"), format!("{i}").into_bytes()))
        .chain([("other/x".to_owned(), b"x".to_vec())])
        .collect();
    server.put_many("src-bucket", &objects);
    let gcs = client(server.endpoint());
    let policy = quick();
    let pages: Vec<Vec<gcs::Entry>> =
        block_on(gcs.list("src-bucket", "docs/", &policy).try_collect()).unwrap();
    assert_eq!(pages.len(), 3, "1000 objects a page");
    let names: Vec<String> = pages.into_iter().flatten().map(|e| e.name).collect();
    assert_eq!(names.len(), 2500);
    assert!(names.windows(2).all(|w| w[0] < w[1]), "name order");
    assert!(names.iter().all(|n| n.starts_with("docs/")));
}

#[test]
fn rewrite_copies_data_and_metadata_server_side() {
    let server = FakeGcs::start();
    server.create_bucket("src-bucket");
    server.create_bucket("dst-bucket");
    let source = server.put_object_with(
        "src-bucket",
        "a/b c#?%+é.json",
        serde_json::json!({
            "contentType": "application/json",
            "cacheControl": "no-cache",
            "contentEncoding": "identity",
            "metadata": {"owner": "team-a"}
        }),
        b"{\"k\": 1}",
    );
    let gcs = client(server.endpoint());
    let policy = quick();
    let copied = block_on(gcs.rewrite(
        ("src-bucket", "a/b c#?%+é.json"),
        ("dst-bucket", "copy/b c#?%+é.json"),
        &policy,
    ))
    .unwrap();
    assert_eq!(copied.size, 8);
    assert_eq!(copied.crc32c.as_deref(), source["crc32c"].as_str());
    let dest = server.object("dst-bucket", "copy/b c#?%+é.json").unwrap();
    for field in [
        "contentType",
        "cacheControl",
        "contentEncoding",
        "metadata",
        "crc32c",
        "md5Hash",
    ] {
        assert_eq!(dest[field], source[field], "{field}");
    }

    let delete = || block_on(gcs.delete("dst-bucket", "copy/b c#?%+é.json", &policy)).unwrap();
    assert!(delete());
    assert!(!delete(), "already gone");
    assert!(server.object("dst-bucket", "copy/b c#?%+é.json").is_none());
}

#[test]
fn a_missing_bucket_is_not_found() {
    let server = FakeGcs::start();
    server.create_bucket("src-bucket");
    let gcs = client(server.endpoint());
    let policy = quick();
    block_on(gcs.check_bucket("src-bucket", &policy)).unwrap();
    let err = block_on(gcs.check_bucket("no-such-bucket", &policy)).unwrap_err();
    assert_eq!(err.class, ErrorClass::NotFound, "{err}");
    assert_eq!(err.into_step_error().exit_code(), 3);
}

#[test]
fn calls_retry_through_injected_faults() {
    let server = FakeGcs::start();
    server.create_bucket("src-bucket");
    server.create_bucket("dst-bucket");
    for i in 0..30 {
        server.put_object("src-bucket", &format!("f{i:02}"), "text/plain", b"hello");
    }
    let proxy = FaultProxy::start(
        &server.endpoint(),
        FaultConfig {
            rate: 0.3,
            ..FaultConfig::default()
        },
    );
    let gcs = client(proxy.url());
    let policy = quick();
    for _ in 0..5 {
        let names: Vec<String> = block_on(
            gcs.list("src-bucket", "", &policy)
                .map_ok(|page| page.into_iter().map(|e| e.name).collect::<Vec<_>>())
                .try_concat(),
        )
        .unwrap();
        assert_eq!(names.len(), 30);
    }
    for i in 0..30 {
        let name = format!("f{i:02}");
        block_on(gcs.rewrite(("src-bucket", &name), ("dst-bucket", &name), &policy)).unwrap();
    }
    assert_eq!(server.list("dst-bucket", "").len(), 30);
    let counts = proxy.counts();
    assert!(
        counts.unavailable_503 + counts.too_many_429 > 0,
        "{counts:?}"
    );
    assert!(
        counts.dropped_before + counts.dropped_after > 0,
        "{counts:?}"
    );
}

/// fake-gcs-server finishes every rewrite in one call, so the multi-call loop runs against a
/// double of the rewrite endpoint that answers as GCS does for a large cross-location copy:
/// `done: false` with a token twice, then the object.
#[test]
fn the_rewrite_loop_follows_tokens_until_done() {
    let double = testkit::HttpServer::start(|req| {
        let progress = |done: bool, token: &str, bytes: u64| {
            let mut answer = serde_json::json!({
                "kind": "storage#rewriteResponse",
                "totalBytesRewritten": bytes.to_string(),
                "objectSize": "3145728",
                "done": done,
                "rewriteToken": token,
            });
            if done {
                answer["resource"] = serde_json::json!({
                    "kind": "storage#object", "id": "dst-bucket/big.bin/7",
                    "selfLink": "http://x/storage/v1/b/dst-bucket/o/big.bin",
                    "mediaLink": "http://x/download/storage/v1/b/dst-bucket/o/big.bin?alt=media",
                    "name": "big.bin", "bucket": "dst-bucket", "size": "3145728",
                    "crc32c": "AAAAAA==", "md5Hash": "bWQ1", "generation": "7",
                    "metageneration": "1", "storageClass": "STANDARD"
                });
            }
            testkit::HttpResponse::json(200, &answer)
        };
        match req.query_param("rewriteToken") {
            None => progress(false, "token-1", 1 << 20),
            Some("token-1") => progress(false, "token-2", 2 << 20),
            Some("token-2") => progress(true, "", 3 << 20),
            Some(other) => testkit::HttpResponse::json(
                400,
                &serde_json::json!({
                    "error": {"code": 400, "message": format!("bad token {other}"), "errors": []}
                }),
            ),
        }
    });
    let gcs = client(double.url());
    let copied = block_on(gcs.rewrite(
        ("src-bucket", "big.bin"),
        ("dst-bucket", "big.bin"),
        &quick(),
    ))
    .unwrap();
    assert_eq!(copied.size, 3 << 20);
    assert_eq!(copied.crc32c.as_deref(), Some("AAAAAA=="));
    let calls: Vec<String> = double
        .requests()
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert_eq!(calls.len(), 3, "{calls:?}");
    assert!(
        calls.iter().all(
            |c| c == "POST /storage/v1/b/src-bucket/o/big.bin/rewriteTo/b/dst-bucket/o/big.bin"
        ),
        "{calls:?}"
    );
}
