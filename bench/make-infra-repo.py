#!/usr/bin/env python3
"""Writes a git fast-import stream for a synthetic infrastructure repository: one commit adding
FILES files under kustomize/ and terraform/ plus the integration and sandbox environments'
kustomizations, then COMMITS-1 commits each changing one file.
Usage: make-infra-repo.py COMMITS FILES | git fast-import --quiet"""
import sys

commits, files = int(sys.argv[1]), int(sys.argv[2])
out = sys.stdout.buffer
when = 1_700_000_000


KUSTOMIZATION = b"""# The %s environment.
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
namespace: apps-environment   # replaced per environment
resources:
  - ../../apps
images:
  - name: registry.example.com/acme/api
    newTag: %s
configMapGenerator:
  - name: app-config
    literals:
      - DB_NAME=environment
"""


def data(payload: bytes):
    out.write(b"data %d\n" % len(payload))
    out.write(payload)
    out.write(b"\n")


def path(i: int) -> bytes:
    area = b"kustomize/apps" if i % 2 else b"terraform/modules"
    return b"%s/app-%03d/file-%05d.yaml" % (area, i % 500, i)


for n in range(commits):
    out.write(b"commit refs/heads/main\n")
    out.write(b"committer bench <bench@example.invalid> %d +0000\n" % (when + n))
    data(b"change %d\n" % n)
    if n == 0:
        for env, tag in ((b"integration", b"1.4.2"), (b"sandbox", b"latest")):
            out.write(b"M 100644 inline kustomize/environments/%s/kustomization.yaml\n" % env)
            data(KUSTOMIZATION % (env, tag))
        for i in range(files):
            out.write(b"M 100644 inline %s\n" % path(i))
            data(b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app-%05d\ndata:\n  revision: \"0\"\n" % i)
    else:
        i = (n * 7919) % files
        out.write(b"M 100644 inline %s\n" % path(i))
        data(b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app-%05d\ndata:\n  revision: \"%d\"\n" % (i, n))
    out.write(b"\n")
