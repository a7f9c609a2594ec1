#!/usr/bin/env bash
# The anchor of `make bench` for validate-params: the same validation and derivation as a platform
# team writes it in shell today (seeds/000 step 0), with the same outputs. Not used by the product.
set -euo pipefail
pr_number=$1 head_ref=$2 repository=$3 outputs=${4:-/tmp/outputs}
env_prefix=sbx-pr- namespace_prefix=apps- bucket_prefix=acme- base_domain=sandbox.acme.dev
errors=0
[[ $pr_number =~ ^[1-9][0-9]{0,9}$ ]] || { echo "--pr-number: must be a number" >&2; errors=1; }
git check-ref-format --branch "$head_ref" >/dev/null 2>&1 || { echo "--head-ref: not a branch name" >&2; errors=1; }
[[ $repository =~ ^[A-Za-z0-9-]{1,39}/[A-Za-z0-9._-]{1,100}$ ]] || { echo "--repository: must be owner/name" >&2; errors=1; }
[ "$errors" = 0 ] || exit 2
hash=$(printf %s "$head_ref" | sha256sum | cut -c1-8)
slug=$(printf %s "$head_ref" | iconv -f utf-8 -t ascii//TRANSLIT 2>/dev/null | tr 'A-Z' 'a-z' | sed -e 's/[^a-z0-9]\{1,\}/-/g' -e 's/^-//' -e 's/-$//' | cut -c1-54)
environment="$env_prefix$pr_number"
mkdir -p "$outputs"
printf %s "$environment" > "$outputs/environment"
printf %s "$namespace_prefix$environment" > "$outputs/namespace"
printf %s "$environment" > "$outputs/branch"
printf %s "${environment//-/_}" > "$outputs/database"
printf %s "$bucket_prefix$environment" > "$outputs/bucket"
printf %s "$environment" > "$outputs/app-name"
printf %s "$environment.$base_domain" > "$outputs/hostname"
printf %s "${slug%-}-$hash" > "$outputs/head-ref-slug"
