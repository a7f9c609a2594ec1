//! copy-bucket run for real (its binary) against fake-gcs-server, directly or through the
//! harness's fault proxy.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use testkit::{FakeGcs, FaultConfig, FaultProxy, StepRun};

const SRC: &str = "src-bucket";
const DST: &str = "dst-bucket";

fn step(endpoint: &str, outputs: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_copy-bucket"));
    cmd.env_clear()
        .env("STORAGE_EMULATOR_HOST", endpoint)
        .env("SBX_OUTPUTS_DIR", outputs)
        .env("SBX_LOG_FORMAT", "json");
    cmd
}

/// A count output (copied, skipped, deleted, bytes).
fn count(run: &StepRun, name: &str) -> u64 {
    run.output(name).parse().unwrap()
}

fn copy(endpoint: &str, args: &[&str]) -> StepRun {
    let dir = tempfile::tempdir().unwrap();
    let out = step(endpoint, dir.path()).args(args).output().unwrap();
    StepRun::read(&out, dir.path(), copy_bucket::OUTPUTS)
}

fn buckets(server: &FakeGcs) {
    server.create_bucket(SRC);
    server.create_bucket(DST);
}

/// Relative name → (size, crc32c, md5) of every object under `prefix`.
fn checksums(
    server: &FakeGcs,
    bucket: &str,
    prefix: &str,
) -> BTreeMap<String, (String, Value, Value)> {
    server
        .objects(bucket, prefix)
        .into_iter()
        .map(|o| {
            let name = o["name"].as_str().unwrap();
            (
                name.strip_prefix(prefix).unwrap().to_owned(),
                (
                    o["size"].to_string(),
                    o["crc32c"].clone(),
                    o["md5Hash"].clone(),
                ),
            )
        })
        .collect()
}

/// `n` bytes that differ from object to object.
fn data(seed: usize, n: usize) -> Vec<u8> {
    (0..n).map(|i| (i.wrapping_mul(31) ^ seed) as u8).collect()
}

#[test]
fn copies_every_kind_of_object_with_its_metadata_then_a_re_run_skips_them() {
    let server = FakeGcs::start();
    buckets(&server);
    let names = [
        "a.txt",
        "with space.txt",
        "ünïcode/文書 🦄.pdf",
        "odd #?%+&=;chars.txt",
        "nested/deeper/still/x.json",
        "empty-file",
    ];
    for (i, name) in names.iter().enumerate() {
        let bytes = if *name == "empty-file" {
            Vec::new()
        } else {
            data(i, 100 + i)
        };
        server.put_object(
            SRC,
            &format!("docs/{name}"),
            "application/octet-stream",
            &bytes,
        );
    }
    server.put_object_with(
        SRC,
        "docs/meta.html.gz",
        json!({
            "contentType": "text/html",
            "cacheControl": "public, max-age=60",
            "contentEncoding": "gzip",
            "metadata": {"owner": "team-a", "ticket": "JIRA-123"}
        }),
        b"not really gzip",
    );
    server.put_object(
        SRC,
        "docs/big.bin",
        "application/octet-stream",
        &data(7, 20 << 20),
    );
    // Outside the source prefix: never copied.
    server.put_object(SRC, "docs2/not-me.txt", "text/plain", b"x");
    server.put_object(SRC, "other/not-me.txt", "text/plain", b"x");

    let first = copy(
        &server.endpoint(),
        &[
            "--source",
            "gs://src-bucket/docs",
            "--dest",
            "gs://dst-bucket/sbx-pr-42/docs/",
        ],
    );
    assert_eq!(first.code, Some(0), "{}", first.text);
    assert_eq!(count(&first, "copied"), 8, "{}", first.text);
    assert_eq!(count(&first, "skipped"), 0);
    assert_eq!(count(&first, "deleted"), 0);
    let total_bytes: u64 = (0..6).filter(|i| *i != 5).map(|i| 100 + i).sum::<u64>()
        + b"not really gzip".len() as u64
        + (20 << 20);
    assert_eq!(count(&first, "bytes"), total_bytes);
    assert_eq!(
        checksums(&server, DST, "sbx-pr-42/docs/"),
        checksums(&server, SRC, "docs/")
    );
    let meta = server.object(DST, "sbx-pr-42/docs/meta.html.gz").unwrap();
    let source_meta = server.object(SRC, "docs/meta.html.gz").unwrap();
    for field in ["contentType", "cacheControl", "contentEncoding", "metadata"] {
        assert_eq!(meta[field], source_meta[field], "{field}");
    }
    assert_eq!(meta["metadata"]["ticket"], "JIRA-123");
    // The summary line carries the outputs too.
    let summary: Value = first
        .text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v.get("outputs").is_some())
        .unwrap();
    assert_eq!(summary["outputs"]["copied"], "8");

    let again = copy(
        &server.endpoint(),
        &[
            "--source",
            "gs://src-bucket/docs",
            "--dest",
            "gs://dst-bucket/sbx-pr-42/docs",
        ],
    );
    assert_eq!(again.code, Some(0), "{}", again.text);
    assert_eq!(count(&again, "copied"), 0, "{}", again.text);
    assert_eq!(count(&again, "skipped"), 8);
    assert_eq!(count(&again, "bytes"), 0);
}

#[test]
fn an_empty_source_copies_nothing_and_one_object_copies_one() {
    let server = FakeGcs::start();
    buckets(&server);
    let args = [
        "--source",
        "gs://src-bucket",
        "--dest",
        "gs://dst-bucket/copy",
    ];
    let empty = copy(&server.endpoint(), &args);
    assert_eq!(empty.code, Some(0), "{}", empty.text);
    assert_eq!(
        empty.outputs,
        BTreeMap::from([
            ("bytes".into(), "0".into()),
            ("copied".into(), "0".into()),
            ("deleted".into(), "0".into()),
            ("skipped".into(), "0".into())
        ])
    );
    server.put_object(SRC, "only.txt", "text/plain", b"one");
    let one = copy(&server.endpoint(), &args);
    assert_eq!(one.code, Some(0), "{}", one.text);
    assert_eq!(count(&one, "copied"), 1);
    assert_eq!(server.list(DST, ""), ["copy/only.txt"]);
}

/// One bucket for integration and its sandboxes: a disjoint prefix is a destination like any other,
/// and nothing under the source prefix (nor beside both) is ever written or deleted, also with
/// --delete-extraneous. Overlapping prefixes stay refused.
#[test]
fn the_same_bucket_under_a_disjoint_prefix_leaves_the_source_untouched() {
    let server = FakeGcs::start();
    server.create_bucket(SRC);
    for name in [
        "integration/a.txt",
        "integration/dir/b.txt",
        "other/keep.txt",
    ] {
        server.put_object(SRC, name, "text/plain", name.as_bytes());
    }
    server.put_object(SRC, "sandboxes/sbx-pr-42/stale.txt", "text/plain", b"stale");
    let source_before = checksums(&server, SRC, "integration/");
    let run = copy(
        &server.endpoint(),
        &[
            "--source",
            "gs://src-bucket/integration/",
            "--dest",
            "gs://src-bucket/sandboxes/sbx-pr-42/",
            "--delete-extraneous",
        ],
    );
    assert_eq!(run.code, Some(0), "{}", run.text);
    assert_eq!((count(&run, "copied"), count(&run, "deleted")), (2, 1));
    assert_eq!(checksums(&server, SRC, "integration/"), source_before);
    assert_eq!(
        checksums(&server, SRC, "sandboxes/sbx-pr-42/"),
        source_before
    );
    assert_eq!(server.list(SRC, "other/"), ["other/keep.txt"]);
    for (source, dest) in [
        (
            "gs://src-bucket/integration/",
            "gs://src-bucket/integration/sbx/",
        ),
        ("gs://src-bucket/integration/", "gs://src-bucket"),
        (
            "gs://src-bucket/integration/x/",
            "gs://src-bucket/integration/",
        ),
    ] {
        let refused = copy(
            &server.endpoint(),
            &["--source", source, "--dest", dest, "--delete-extraneous"],
        );
        assert_eq!(refused.code, Some(2), "{source} {dest}: {}", refused.text);
    }
    assert_eq!(checksums(&server, SRC, "integration/"), source_before);
}

#[test]
fn five_thousand_objects_across_pages() {
    let server = FakeGcs::start();
    buckets(&server);
    let objects: Vec<(String, Vec<u8>)> = (0..5000)
        .map(|i| {
            (
                format!("docs/{:02}/{i:05}.txt", i % 37),
                data(i, 16 + i % 64),
            )
        })
        .collect();
    let started = Instant::now();
    server.put_many(SRC, &objects);
    let uploaded = started.elapsed();
    // A fifth already there (a run that crashed), one of them stale.
    server.put_many(DST, &objects[..1000]);
    server.put_object(DST, &objects[0].0, "text/plain", b"stale");

    let started = Instant::now();
    let run = copy(
        &server.endpoint(),
        &[
            "--source",
            "gs://src-bucket/docs",
            "--dest",
            "gs://dst-bucket/docs",
        ],
    );
    let copied_in = started.elapsed();
    assert_eq!(run.code, Some(0), "{}", run.text);
    assert_eq!(count(&run, "copied"), 4001, "{}", run.text);
    assert_eq!(count(&run, "skipped"), 999);
    assert_eq!(
        checksums(&server, DST, "docs/"),
        checksums(&server, SRC, "docs/")
    );
    eprintln!("5000 objects: uploaded in {uploaded:?}, copied in {copied_in:?}");
}

#[test]
fn include_exclude_dry_run_and_delete_extraneous() {
    let server = FakeGcs::start();
    buckets(&server);
    for (name, body) in [
        ("a.pdf", "a"),
        ("b.tmp", "b"),
        ("sub/c.pdf", "c"),
        ("d.txt", "new d"),
        ("e.png", "e"),
    ] {
        server.put_object(SRC, &format!("in/{name}"), "text/plain", body.as_bytes());
    }
    for (name, body) in [
        ("stale.pdf", "gone from the source"),
        ("keep.tmp", "excluded, so kept"),
        ("d.txt", "old d"),
        ("e.png", "not included, so kept"),
    ] {
        server.put_object(DST, &format!("out/{name}"), "text/plain", body.as_bytes());
    }
    // Outside the destination prefix: never touched.
    server.put_object(DST, "elsewhere/stale.pdf", "text/plain", b"x");
    let before = checksums(&server, DST, "");
    let args = [
        "--source",
        "gs://src-bucket/in",
        "--dest",
        "gs://dst-bucket/out",
        "--include",
        "*.pdf,*.txt",
        "--include",
        "*.tmp",
        "--exclude",
        "*.tmp",
        "--delete-extraneous",
    ];

    let mut dry: Vec<&str> = args.to_vec();
    dry.push("--dry-run");
    let plan = copy(&server.endpoint(), &dry);
    assert_eq!(plan.code, Some(0), "{}", plan.text);
    assert_eq!(
        checksums(&server, DST, ""),
        before,
        "a dry run writes nothing"
    );
    assert_eq!(count(&plan, "copied"), 3, "{}", plan.text);
    assert_eq!(count(&plan, "deleted"), 1);
    for listed in [
        "would copy",
        "in/a.pdf",
        "in/sub/c.pdf",
        "in/d.txt",
        "would delete",
        "out/stale.pdf",
    ] {
        assert!(plan.text.contains(listed), "{listed}: {}", plan.text);
    }

    let run = copy(&server.endpoint(), &args);
    assert_eq!(run.code, Some(0), "{}", run.text);
    assert_eq!(count(&run, "copied"), 3);
    assert_eq!(count(&run, "deleted"), 1);
    assert_eq!(count(&run, "skipped"), 0);
    let mut names = server.list(DST, "");
    names.sort();
    assert_eq!(
        names,
        [
            "elsewhere/stale.pdf",
            "out/a.pdf",
            "out/d.txt",
            "out/e.png",
            "out/keep.tmp",
            "out/sub/c.pdf"
        ]
    );
    assert_eq!(
        server.object(DST, "out/d.txt").unwrap()["size"],
        json!("5"),
        "the different d.txt was copied over"
    );
    // The source is never written.
    assert_eq!(server.list(SRC, "").len(), 5);
}

#[test]
fn a_run_killed_midway_resumes_copying_only_what_is_missing() {
    let server = FakeGcs::start();
    buckets(&server);
    let objects: Vec<(String, Vec<u8>)> = (0..600)
        .map(|i| (format!("docs/{i:04}"), data(i, 64)))
        .collect();
    server.put_many(SRC, &objects);
    // Slowed down so the kill lands midway.
    let slow = FaultProxy::start(
        &server.endpoint(),
        FaultConfig {
            rate: 0.0,
            delay: Duration::from_millis(20),
            ..FaultConfig::default()
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "--source",
        "gs://src-bucket/docs",
        "--dest",
        "gs://dst-bucket/docs",
        "--concurrency",
        "4",
    ];
    let mut child = step(&slow.url(), dir.path())
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let there = server.list(DST, "docs/").len();
        if there >= 50 {
            break;
        }
        assert!(Instant::now() < deadline, "the copy did not start");
        assert!(
            child.try_wait().unwrap().is_none(),
            "finished before the kill"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL: no cleanup at all
    child.wait().unwrap();
    let present = server.list(DST, "docs/").len() as u64;
    assert!(present < 600, "killed after the end");

    let resumed = copy(&server.endpoint(), &args);
    assert_eq!(resumed.code, Some(0), "{}", resumed.text);
    assert_eq!(count(&resumed, "copied"), 600 - present, "{}", resumed.text);
    assert_eq!(count(&resumed, "skipped"), present);
    assert_eq!(
        checksums(&server, DST, "docs/"),
        checksums(&server, SRC, "docs/")
    );
}

#[test]
fn injected_faults_are_retried_and_every_checksum_matches() {
    let server = FakeGcs::start();
    buckets(&server);
    let objects: Vec<(String, Vec<u8>)> = (0..300)
        .map(|i| (format!("docs/{i:04}.bin"), data(i, 1 + i * 97)))
        .collect();
    server.put_many(SRC, &objects);
    for i in 0..20 {
        server.put_object(DST, &format!("docs/zz-extra-{i}"), "text/plain", b"x");
    }
    let proxy = FaultProxy::start(&server.endpoint(), FaultConfig::default());
    let run = copy(
        &proxy.url(),
        &[
            "--source",
            "gs://src-bucket/docs",
            "--dest",
            "gs://dst-bucket/docs",
            "--delete-extraneous",
        ],
    );
    assert_eq!(run.code, Some(0), "{}", run.text);
    assert_eq!(count(&run, "copied"), 300, "{}", run.text);
    assert_eq!(count(&run, "deleted"), 20);
    assert_eq!(
        checksums(&server, DST, "docs/"),
        checksums(&server, SRC, "docs/")
    );
    let counts = proxy.counts();
    let faults =
        counts.unavailable_503 + counts.too_many_429 + counts.dropped_before + counts.dropped_after;
    assert!(faults >= 40, "{counts:?}");
    assert!(counts.dropped_after > 0, "{counts:?}");
}

#[test]
fn objects_failing_after_retries_exit_4_listing_them_and_the_rest_is_copied() {
    let server = FakeGcs::start();
    buckets(&server);
    for name in ["ok-1", "ok-2", "ok-3", "bad-1", "bad-2"] {
        server.put_object(SRC, name, "text/plain", name.as_bytes());
    }
    let proxy = FaultProxy::start(
        &server.endpoint(),
        FaultConfig {
            rate: 0.0,
            always_fail: vec!["/o/bad-".into()],
            ..FaultConfig::default()
        },
    );
    let run = copy(
        &proxy.url(),
        &["--source", "gs://src-bucket", "--dest", "gs://dst-bucket"],
    );
    assert_eq!(run.code, Some(4), "{}", run.text);
    assert_eq!(count(&run, "copied"), 3);
    assert!(run.text.contains("2 objects failed"), "{}", run.text);
    assert!(
        run.text.contains("bad-1") && run.text.contains("bad-2"),
        "{}",
        run.text
    );
    let mut names = server.list(DST, "");
    names.sort();
    assert_eq!(names, ["ok-1", "ok-2", "ok-3"]);
}

#[test]
fn bad_input_exits_2_before_any_request() {
    // Nothing listens there: a request would fail with another code.
    let nowhere = "http://127.0.0.1:9";
    for (source, dest) in [
        ("src-bucket/docs", "gs://dst-bucket"),
        (
            "gs://src-bucket",
            "https://storage.googleapis.com/dst-bucket",
        ),
        ("gs://Src_Bucket", "gs://dst-bucket"),
        ("gs://src-bucket", "gs://google-dst"),
        ("gs://src-bucket/docs", "gs://src-bucket/docs"),
        ("gs://src-bucket/docs", "gs://src-bucket/docs/"),
        ("gs://src-bucket/docs", "gs://src-bucket/docs/copy"),
        ("gs://src-bucket/docs/2024", "gs://src-bucket/docs"),
        ("gs://src-bucket", "gs://src-bucket/copy"),
    ] {
        let run = copy(nowhere, &["--source", source, "--dest", dest]);
        assert_eq!(run.code, Some(2), "{source} -> {dest}: {}", run.text);
    }
    let run = copy(
        nowhere,
        &[
            "--source",
            "gs://src-bucket",
            "--dest",
            "gs://dst-bucket",
            "--concurrency",
            "0",
        ],
    );
    assert_eq!(run.code, Some(2), "{}", run.text);
}

#[test]
fn a_missing_bucket_exits_3() {
    let server = FakeGcs::start();
    server.create_bucket(SRC);
    server.put_object(SRC, "a", "text/plain", b"a");
    let run = copy(
        &server.endpoint(),
        &[
            "--source",
            "gs://src-bucket",
            "--dest",
            "gs://no-such-bucket",
        ],
    );
    assert_eq!(run.code, Some(3), "{}", run.text);
    assert!(
        run.text
            .contains("destination bucket gs://no-such-bucket does not exist"),
        "{}",
        run.text
    );
    let run = copy(
        &server.endpoint(),
        &[
            "--source",
            "gs://no-such-source",
            "--dest",
            "gs://src-bucket/x",
        ],
    );
    assert_eq!(run.code, Some(3), "{}", run.text);
}
