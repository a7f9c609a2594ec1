#!/usr/bin/env bash
# make bench, git part: create-branch and patch-kustomize against the git CLI a user would otherwise
# script, on a big (50k commits, 10k files) and a small (1k commits, 10k files) repository served
# over smart HTTP.
# Clones go to tmpfs (/dev/shm): on disk, re-creating a 10k-file tree makes timings erratic.
set -euo pipefail
cd "$(dirname "$0")/.."
repos=target/bench-repos
token=bench-token
runs=${BENCH_RUNS:-30}

cargo build --release -q -p create-branch -p patch-kustomize
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
    echo "$stamp" > "$bare/.complete"
}
mkdir -p "$repos"
make_repo big 50000 10000
make_repo small 1000 10000

target/debug/testkit-git-server "$repos" "$token" > "$repos/server.url" &
server=$!
work=$(mktemp -d /dev/shm/bench-git.XXXX)
trap 'kill $server 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 50); do [ -s "$repos/server.url" ] && break; sleep 0.1; done
base=$(head -1 "$repos/server.url")
authed=${base/http:\/\//http://x-access-token:$token@}
export BENCH_TOKEN=$token

for repo in small big; do
    git_dir="$repos/$repo.git"
    drop="git --git-dir=$git_dir update-ref -d refs/heads/sbx-bench"
    echo "== $repo.git: $(git --git-dir="$git_dir" rev-list --count main) commits, $(git --git-dir="$git_dir" ls-tree -r main | wc -l) files"
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

    # patch-kustomize vs the shell it replaces (seeds/000: clone the branch, sed, commit, push).
    file=kustomize/environments/sandbox/kustomization.yaml
    reset="git --git-dir=$git_dir update-ref refs/heads/sbx-bench main"
    edits="s/^namespace: [^ ]*/namespace: apps-sbx-bench/; /name: registry.example.com\/acme\/api/{n;s/newTag: .*/newTag: pr-42/}; s/DB_NAME=.*/DB_NAME=sbx_bench/"
    hyperfine -N --warmup 2 --runs "$runs" --prepare "$reset" --export-json "$work/$repo-patch.json" \
        "target/release/patch-kustomize --repo $base/$repo.git --branch sbx-bench --file $file --namespace apps-sbx-bench --set-image registry.example.com/acme/api=:pr-42 --set-literal app-config/DB_NAME=sbx_bench --git-token env:BENCH_TOKEN --outputs-dir $work/out" \
        "bash -c 'rm -rf $work/sh && git clone -q --depth 1 -b sbx-bench $authed/$repo.git $work/sh && sed -i \"$edits\" $work/sh/$file && git -C $work/sh -c user.name=bench -c user.email=bench@example.invalid commit -qam patch && git -C $work/sh push -q origin HEAD:refs/heads/sbx-bench'" \
        >/dev/null
    # Both really changed the file: the last run's result is on the branch.
    git --git-dir="$git_dir" show "sbx-bench:$file" | grep -q "newTag: pr-42"
    python3 - "$work/$repo-patch.json" <<'PY'
import json, sys
ours, shell = (r["median"] for r in json.load(open(sys.argv[1]))["results"])
print(f"  patch-kustomize                    median {ours*1000:8.1f} ms")
print(f"  clone --depth 1 + sed + commit + push median {shell*1000:5.1f} ms   {shell/ours:6.1f}x patch-kustomize")
PY
done
