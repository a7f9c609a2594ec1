#!/usr/bin/env bash
# make bench, git part: create-branch and the three committing steps (patch-kustomize,
# create-argocd-app, delete-argocd-app) against the git CLI a user would otherwise script, on a big
# (50k commits, 10k files), a small (1k commits, 10k files) and a wide (1k commits, 100k files)
# repository served over smart HTTP (protocol v2, filters allowed, as GitHub and GitLab serve).
# Clones go to tmpfs (/dev/shm): on disk, re-creating a 10k-file tree makes timings erratic.
set -euo pipefail
cd "$(dirname "$0")/.."
repos=target/bench-repos
token=bench-token
runs=${BENCH_RUNS:-30}

cargo build --release -q -p create-branch -p patch-kustomize -p create-argocd-app -p delete-argocd-app
cargo build -q -p testkit --bin testkit-git-server

make_repo() { # name commits files
    local bare="$repos/$1.git" stamp
    stamp=$(sha256sum bench/make-infra-repo.py | cut -c1-16)   # a changed generator rebuilds
    [ "$(cat "$bare/.complete" 2>/dev/null)" = "$stamp" ] && return
    rm -rf "$bare"
    git init -q --bare --initial-branch=main "$bare"
    python3 bench/make-infra-repo.py "$2" "$3" | git --git-dir="$bare" fast-import --quiet
    git --git-dir="$bare" repack -q -a -d -b          # one pack with bitmaps, as a served repo has
    git --git-dir="$bare" config http.receivepack true
    git --git-dir="$bare" config uploadpack.allowFilter true   # as GitHub and GitLab serve
    echo "$stamp" > "$bare/.complete"
}
mkdir -p "$repos"
make_repo big 50000 10000
make_repo small 1000 10000
make_repo wide 1000 100000

target/debug/testkit-git-server "$repos" "$token" > "$repos/server.url" &
server=$!
work=$(mktemp -d /dev/shm/bench-git.XXXX)
trap 'kill $server 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 50); do [ -s "$repos/server.url" ] && break; sleep 0.1; done
base=$(head -1 "$repos/server.url")
authed=${base/http:\/\//http://x-access-token:$token@}
export BENCH_TOKEN=$token

# Medians of OURS and SHELL (hyperfine, PREPARE before each run), their ratio, and the bytes each
# fetched: the step's own count (its log), and the size of the pack the shell's clone received.
versus() { # label runs prepare ours shell
    local label=$1 runs=$2 prepare=$3 ours=$4 shell=$5
    hyperfine -N --warmup 2 --runs "$runs" --prepare "$prepare" --export-json "$work/versus.json" \
        "$ours" "$shell" >/dev/null
    $prepare
    local ours_bytes shell_bytes
    ours_bytes=$(eval "$ours" 2>&1 >/dev/null | grep -o '[0-9]* byte(s) received' | awk '{s+=$1} END {print s+0}')
    $prepare
    eval "$shell" >/dev/null 2>&1
    shell_bytes=$(cat "$work"/sh/.git/objects/pack/*.pack 2>/dev/null | wc -c)
    python3 - "$work/versus.json" "$label" "$ours_bytes" "$shell_bytes" <<'PY'
import json, sys
ours, shell = (r["median"] for r in json.load(open(sys.argv[1]))["results"])
label, ours_bytes, shell_bytes = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
print(f"  {label:34s} median {ours*1000:8.1f} ms   fetched {ours_bytes/1024:9.1f} KiB")
print(f"  {'  clone --depth 1 + edit + push':34s} median {shell*1000:8.1f} ms   fetched {shell_bytes/1024:9.1f} KiB   {shell/ours:5.1f}x")
PY
}

for repo in small big wide; do
    git_dir="$repos/$repo.git"
    drop="git --git-dir=$git_dir update-ref -d refs/heads/sbx-bench"
    echo "== $repo.git: $(git --git-dir="$git_dir" rev-list --count main) commits, $(git --git-dir="$git_dir" ls-tree -r main | wc -l) files"
    if [ "$repo" != wide ]; then
        full_runs=$([ "$repo" = big ] && echo 5 || echo 10)
        hyperfine -N --warmup 2 --runs "$runs" --prepare "$drop" --export-json "$work/$repo-fast.json" \
            "target/release/create-branch --repo $base/$repo.git --branch sbx-bench --git-token env:BENCH_TOKEN --outputs-dir $work/out" \
            "bash -c 'rm -rf $work/shallow && git clone -q --depth 1 --single-branch $authed/$repo.git $work/shallow && git -C $work/shallow push -q origin HEAD:refs/heads/sbx-bench'" \
            >/dev/null
        hyperfine -N --warmup 1 --runs "$full_runs" --prepare "$drop" --export-json "$work/$repo-full.json" \
            "bash -c 'rm -rf $work/full && git clone -q $authed/$repo.git $work/full && git -C $work/full push -q origin HEAD:refs/heads/sbx-bench'" \
            >/dev/null
        python3 - "$work/$repo-fast.json" "$work/$repo-full.json" <<'PY'
import json, sys
fast = json.load(open(sys.argv[1]))["results"]
full = json.load(open(sys.argv[2]))["results"]
ours, shallow, clone = fast[0]["median"], fast[1]["median"], full[0]["median"]
print(f"  create-branch                      median {ours*1000:8.1f} ms")
print(f"  shallow clone + push (git CLI)     median {shallow*1000:8.1f} ms   {shallow/ours:6.1f}x create-branch")
print(f"  full clone + push (git CLI)        median {clone*1000:8.1f} ms   {clone/ours:6.1f}x create-branch")
PY
    fi

    # The committing steps vs the shell they replace (seeds/000: clone the branch, edit, commit,
    # push), each run making one real commit on sbx-bench (reset to its start before each run).
    step_runs=$([ "$repo" = wide ] && echo 10 || echo "$runs")
    reset="git --git-dir=$git_dir update-ref refs/heads/sbx-bench main"
    clone="rm -rf $work/sh && git clone -q --depth 1 -b sbx-bench $authed/$repo.git $work/sh"
    commit="git -C $work/sh -c user.name=bench -c user.email=bench@example.invalid commit -q"
    push="git -C $work/sh push -q origin HEAD:refs/heads/sbx-bench"
    flags="--repo $base/$repo.git --branch sbx-bench --git-token env:BENCH_TOKEN --outputs-dir $work/out"

    file=kustomize/environments/sandbox/kustomization.yaml
    edits="s/^namespace: [^ ]*/namespace: apps-sbx-bench/; /name: registry.example.com\/acme\/api/{n;s/newTag: .*/newTag: pr-42/}; s/DB_NAME=.*/DB_NAME=sbx_bench/"
    versus patch-kustomize "$step_runs" "$reset" \
        "target/release/patch-kustomize $flags --file $file --namespace apps-sbx-bench --set-image registry.example.com/acme/api=:pr-42 --set-literal app-config/DB_NAME=sbx_bench" \
        "bash -c '$clone && sed -i \"$edits\" $work/sh/$file && $commit -am patch && $push'"
    # Both really changed the file: the last run's result is on the branch.
    git --git-dir="$git_dir" show "sbx-bench:$file" | grep -q "newTag: pr-42"

    app_flags="--path argocd/apps --name sbx-bench --source-repo $base/$repo.git --source-path kustomize/environments/sandbox --target-revision sbx-bench --dest-namespace apps-sbx-bench"
    # The Application the shell writes: the one the step writes, taken from a first run.
    $reset
    target/release/create-argocd-app $flags $app_flags >/dev/null 2>&1
    with_app=$(git --git-dir="$git_dir" rev-parse sbx-bench)
    git --git-dir="$git_dir" show sbx-bench:argocd/apps/sbx-bench.yaml > "$work/app.yaml"
    versus create-argocd-app "$step_runs" "$reset" \
        "target/release/create-argocd-app $flags $app_flags" \
        "bash -c '$clone && mkdir -p $work/sh/argocd/apps && cp $work/app.yaml $work/sh/argocd/apps/sbx-bench.yaml && git -C $work/sh add -A && $commit -m app && $push'"
    git --git-dir="$git_dir" cat-file -e sbx-bench:argocd/apps/sbx-bench.yaml

    remove="git --git-dir=$git_dir update-ref refs/heads/sbx-bench $with_app"
    versus delete-argocd-app "$step_runs" "$remove" \
        "target/release/delete-argocd-app $flags --path argocd/apps --name sbx-bench" \
        "bash -c '$clone && git -C $work/sh rm -q argocd/apps/sbx-bench.yaml && $commit -m remove && $push'"
    ! git --git-dir="$git_dir" cat-file -e sbx-bench:argocd/apps/sbx-bench.yaml 2>/dev/null
    $drop
done
