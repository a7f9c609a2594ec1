#!/usr/bin/env bash
# make bench: each step side by side with the tool a user would otherwise pick, in one run,
# medians of many runs (hyperfine), and the ratio. Machines here are noisy: compare ratios.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v hyperfine >/dev/null || { echo "hyperfine is needed: apt-get install hyperfine" >&2; exit 1; }
cargo build --release -q -p validate-params
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
runs=${BENCH_RUNS:-300}

# hyperfine's JSON has each command's median; report both and the ratio.
report() {
    python3 - "$1" <<'PY'
import json, sys
results = json.load(open(sys.argv[1]))["results"]
ours, anchor = results[0], results[1]
for r in results:
    print(f"  {r['command'][:60]:60s} median {r['median']*1000:7.2f} ms  (mean {r['mean']*1000:.2f} ± {r['stddev']*1000:.2f})")
print(f"  ratio anchor/ours: {anchor['median']/ours['median']:.1f}x")
PY
}

echo "validate-params: a real run (exec to exit, 8 outputs written) vs the shell-script equivalent"
args=(42 'feature/JIRA-123_Ünïcode' acme/platform)
hyperfine -N --warmup 20 --runs "$runs" --export-json "$out/vp.json" \
    "target/release/validate-params --pr-number ${args[0]} --head-ref ${args[1]} --repository ${args[2]} --namespace-prefix apps- --bucket-prefix acme- --base-domain sandbox.acme.dev --outputs-dir $out/ours --log-format json" \
    "bash bench/validate-params.sh ${args[0]} ${args[1]} ${args[2]} $out/shell" >/dev/null
report "$out/vp.json"

echo
echo "wait-workflow: against the Kubernetes API double (no kube-apiserver here; kubectl wait needs discovery the double does not serve)"
cargo test -q --release -p wait-workflow --test bench -- --ignored --nocapture 2>/dev/null | grep '^wait-workflow'

echo
bash bench/git.sh

echo
bash bench/copy-bucket.sh

echo
bash bench/restore-db.sh
