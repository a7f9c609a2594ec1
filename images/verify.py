#!/usr/bin/env python3
"""Checks the sandbox-steps image from its OCI archive, without a container runtime.

    python3 images/verify.py IMAGE.oci.tar VERSION [REVISION]

1. Unpacks the archive's layers (index.json -> manifest -> layers, in order) into a directory and
   measures them: the uncompressed size of all layers must stay at or below 40 MB (40,000,000
   bytes); the split (executable, CA certificates, the rest, tar overhead) is printed.
2. Checks the image config (user 65532:65532, OCI labels, SSL_CERT_FILE) and the tree: a static
   executable, a link per step the templates run (/usr/local/bin/<step>), nonroot in /etc/passwd
   and /etc/group, /etc/nsswitch.conf, a sticky world-writable /tmp, no shell.
3. Runs, chrooted into the unpacked tree as 65532:65532 with exactly the image's environment:
   every step's --version, and validate-params for real (outputs in /tmp/outputs).
4. Network, as a pod would see it (the kubelet mounts /etc/hosts and /etc/resolv.conf; here they
   are written into the tree): a local HTTPS server whose certificate a throwaway test CA signed,
   and a local DNS server answering for git.sandbox-steps.test.
   - Before the test CA is in the image's bundle, create-branch (rustls) and patch-kustomize
     (rustls first, libgit2 + OpenSSL after) must both fail, with no HTTP request reaching the server.
   - With the test CA appended to /etc/ssl/certs/ca-certificates.crt in the tree, both must reach
     the server (the request is logged with each client's User-Agent; the server's answer is not
     protocol v2, so patch-kustomize falls back to libgit2, whose requests must arrive) after resolving the name
     through the DNS server (the query is logged), also with SSL_CERT_FILE unset (the bundle's
     standard path is found on its own); `localhost` must resolve from /etc/hosts without asking
     DNS.
Needs root (chroot, port 53 on a loopback address) and the openssl command (test certificates).
"""

import gzip
import http.server
import io
import json
import os
import random
import re
import shutil
import socket
import ssl
import struct
import subprocess
import sys
import tarfile
import tempfile
import threading
from pathlib import Path

LIMIT_BYTES = 40_000_000
UID = 65532
REPO = Path(__file__).resolve().parent.parent
BIN = "usr/local/bin"
BUNDLE = "etc/ssl/certs/ca-certificates.crt"
TEST_HOST = "git.sandbox-steps.test"

failures = []


def check(ok, what, detail=""):
    """Records one check; `detail` (what the step said) is shown when it fails."""
    print(("  ok    " if ok else "  FAIL  ") + what + ("" if ok or not detail else f"\n        {detail}"))
    if not ok:
        failures.append(what)
    return ok


# ---------------------------------------------------------------------------------------------
# 1. unpack and measure


def blob(layout, digest):
    algo, hexdigest = digest.split(":", 1)
    return (layout / "blobs" / algo / hexdigest).read_bytes()


def unpack(archive, layout, root):
    with tarfile.open(archive) as t:
        t.extractall(layout, filter="data")
    index = json.loads((layout / "index.json").read_text())
    manifest = json.loads(blob(layout, index["manifests"][0]["digest"]))
    while "manifests" in manifest:  # an index (docker save of a multi-platform image)
        manifest = json.loads(blob(layout, manifest["manifests"][0]["digest"]))
    config = json.loads(blob(layout, manifest["config"]["digest"]))
    sizes = {"layers (compressed)": 0, "layers (uncompressed)": 0}
    members = {}
    for layer in manifest["layers"]:
        data = blob(layout, layer["digest"])
        sizes["layers (compressed)"] += len(data)
        if data[:2] == b"\x1f\x8b":  # gzip (the media types of OCI and Docker differ)
            data = gzip.decompress(data)
        sizes["layers (uncompressed)"] += len(data)
        with tarfile.open(fileobj=io.BytesIO(data)) as t:
            for m in t.getmembers():
                name = m.name.lstrip("./")
                base = os.path.basename(name)
                if base.startswith(".wh."):  # a whiteout: the lower layer's file is gone
                    gone = root / os.path.dirname(name) / base[4:]
                    shutil.rmtree(gone, ignore_errors=True) if gone.is_dir() else gone.unlink(
                        missing_ok=True
                    )
                    members.pop(os.path.join(os.path.dirname(name), base[4:]), None)
                    continue
                members[name] = m
            t.extractall(root, filter="fully_trusted", numeric_owner=True)
    return config, sizes, members


def split(members):
    parts = {"executable": 0, "CA certificates": 0, "other files": 0}
    for name, m in members.items():
        if not m.isfile():
            continue
        if name == f"{BIN}/sandbox-steps":
            parts["executable"] += m.size
        elif name.startswith("etc/ssl/"):
            parts["CA certificates"] += m.size
        else:
            parts["other files"] += m.size
    return parts


# ---------------------------------------------------------------------------------------------
# 2. config and tree


def is_static_elf(path):
    data = path.read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != 2:
        return False
    phoff, = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    types = [struct.unpack_from("<I", data, phoff + i * phentsize)[0] for i in range(phnum)]
    return 3 not in types  # PT_INTERP: a dynamic loader would be needed


def template_steps():
    steps = set()
    for f in sorted((REPO / "workflow-templates").rglob("*.y*ml")):
        steps.update(re.findall(r"/usr/local/bin/([a-z0-9-]+)", f.read_text()))
    return steps


# ---------------------------------------------------------------------------------------------
# 3. runs


class Chroot:
    def __init__(self, root, config):
        self.root = root
        env = {}
        for item in config.get("Env") or []:
            k, _, v = item.partition("=")
            env[k] = v
        env["HOME"] = "/tmp"  # what a runtime derives from /etc/passwd
        self.env = env
        self.chroot = shutil.which("chroot") or "/usr/sbin/chroot"

    def run(self, argv, extra_env=None, timeout=60, unset=()):
        env = {k: v for k, v in dict(self.env, **(extra_env or {})).items() if k not in unset}
        return subprocess.run(
            [self.chroot, f"--userspec={UID}:{UID}", str(self.root), *argv],
            env=env,
            cwd="/",
            capture_output=True,
            text=True,
            timeout=timeout,
        )


# ---------------------------------------------------------------------------------------------
# 4. servers: HTTPS (test CA) and DNS


def make_certs(d):
    def openssl(*args):
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-subj", "/CN=sandbox-steps image test CA", "-keyout", f"{d}/ca.key",
            "-out", f"{d}/ca.crt",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={TEST_HOST}",
            "-keyout", f"{d}/server.key", "-out", f"{d}/server.csr")
    Path(f"{d}/ext").write_text(
        f"subjectAltName=DNS:{TEST_HOST},DNS:localhost,IP:127.0.0.1\n"
        "basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
    )
    openssl("x509", "-req", "-in", f"{d}/server.csr", "-CA", f"{d}/ca.crt", "-CAkey",
            f"{d}/ca.key", "-CAcreateserial", "-days", "2", "-out", f"{d}/server.crt",
            "-extfile", f"{d}/ext")


class HttpsServer:
    def __init__(self, certdir):
        self.requests = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                outer.requests.append((self.path, self.headers.get("User-Agent", "")))
                body = b"no repository here\n"
                self.send_response(404)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):
                if not self.path.endswith("/git-upload-pack"):
                    return self.do_GET()
                # A server that does not answer protocol v2 (an empty result): the committing
                # steps' partial checkout (reqwest, rustls) falls back to libgit2 (OpenSSL), whose
                # own TLS is what these checks are about.
                outer.requests.append((self.path, self.headers.get("User-Agent", "")))
                self.send_response(200)
                self.send_header("Content-Type", "application/x-git-upload-pack-result")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        class Server(http.server.ThreadingHTTPServer):
            def handle_error(self, request, client_address):
                pass  # refused handshakes are expected in the untrusted case

        self.httpd = Server(("127.0.0.1", 0), Handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(f"{certdir}/server.crt", f"{certdir}/server.key")
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self):
        self.httpd.shutdown()


class DnsServer:
    """Answers A queries for `names` (name -> IPv4); NODATA for their other types, NXDOMAIN else."""

    def __init__(self, names):
        self.names = names
        self.queries = []
        for _ in range(50):
            self.addr = f"127.{random.randint(1, 254)}.{random.randint(1, 254)}.{random.randint(2, 254)}"
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                self.sock.bind((self.addr, 53))
                break
            except OSError:
                self.sock.close()
        else:
            raise RuntimeError("no free loopback address for the DNS server")
        self.sock.settimeout(0.2)
        self.running = True
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while self.running:
            try:
                data, peer = self.sock.recvfrom(512)
            except socket.timeout:
                continue
            except OSError:
                return
            try:
                self.sock.sendto(self.answer(data), peer)
            except Exception:
                continue

    def answer(self, query):
        qid, _flags, qdcount = struct.unpack_from(">HHH", query, 0)
        pos, labels = 12, []
        while query[pos]:
            n = query[pos]
            labels.append(query[pos + 1:pos + 1 + n].decode("ascii", "replace"))
            pos += n + 1
        qtype, _qclass = struct.unpack_from(">HH", query, pos + 1)
        question = query[12:pos + 5]
        name = ".".join(labels).lower()
        self.queries.append((name, qtype))
        answers = b""
        rcode = 0
        if name in self.names:
            if qtype == 1:
                answers = b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, 60, 4) + socket.inet_aton(
                    self.names[name]
                )
        else:
            rcode = 3
        header = struct.pack(">HHHHHH", qid, 0x8180 | rcode, 1, 1 if answers else 0, 0, 0)
        return header + question + answers

    def stop(self):
        self.running = False
        self.sock.close()


# ---------------------------------------------------------------------------------------------


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    archive, version = Path(sys.argv[1]), sys.argv[2]
    revision = sys.argv[3] if len(sys.argv) > 3 else None
    work = Path(tempfile.mkdtemp(prefix="sandbox-steps-image-"))
    try:
        verify(archive, version, revision, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if failures:
        print(f"\nimage verification FAILED ({len(failures)}):")
        for f in failures:
            print(f"  - {f}")
        sys.exit(1)
    print("\nimage verified")


def verify(archive, version, revision, work):
    root = work / "rootfs"
    root.mkdir()
    config_doc, sizes, members = unpack(archive, work / "layout", root)
    config = config_doc.get("config", {})

    print(f"size of {archive.name}:")
    for k, v in sizes.items():
        print(f"  {k:24} {v:>12,} bytes  ({v / 1e6:.1f} MB)")
    parts = split(members)
    for k, v in parts.items():
        print(f"    {k:22} {v:>12,} bytes  ({v / 1e6:.1f} MB)")
    overhead = sizes["layers (uncompressed)"] - sum(parts.values())
    print(f"    {'tar headers, links':22} {overhead:>12,} bytes")
    print("checks:")
    check(
        sizes["layers (uncompressed)"] <= LIMIT_BYTES,
        f"uncompressed layers {sizes['layers (uncompressed)']:,} <= {LIMIT_BYTES:,} bytes",
    )

    # -- config
    labels = config.get("Labels") or {}
    check(config.get("User") == f"{UID}:{UID}", f"runs as {UID}:{UID} (User={config.get('User')!r})")
    check(labels.get("org.opencontainers.image.version") == version,
          f"label version = {version}")
    check(labels.get("org.opencontainers.image.source", "").startswith("https://"),
          "label source is a URL")
    rev = labels.get("org.opencontainers.image.revision", "")
    check(rev == revision if revision else bool(rev), f"label revision = {rev}")
    env = dict(e.partition("=")[::2] for e in config.get("Env") or [])
    check(env.get("SSL_CERT_FILE") == "/" + BUNDLE, "SSL_CERT_FILE names the image's CA bundle")

    # -- tree
    exe = root / BIN / "sandbox-steps"
    check(exe.is_file() and is_static_elf(exe), "/usr/local/bin/sandbox-steps is a static executable")
    for shell in ("bin/sh", "bin/bash", "bin/busybox"):
        check(not (root / shell).exists(), f"no /{shell}")
    check(members.get("tmp") is not None and members["tmp"].mode & 0o7777 == 0o1777,
          "/tmp is drwxrwxrwt")
    passwd = (root / "etc/passwd").read_text() if (root / "etc/passwd").exists() else ""
    group = (root / "etc/group").read_text() if (root / "etc/group").exists() else ""
    check(f"nonroot:x:{UID}:{UID}:" in passwd, "/etc/passwd has nonroot (65532)")
    check(f"nonroot:x:{UID}:" in group, "/etc/group has nonroot (65532)")
    nss = root / "etc/nsswitch.conf"
    check(nss.exists() and "hosts: files dns" in nss.read_text(), "/etc/nsswitch.conf: hosts: files dns")
    bundle = root / BUNDLE
    check(bundle.is_file() and bundle.read_text().count("BEGIN CERTIFICATE") > 50,
          "CA bundle with the public roots")

    links = sorted(
        p.name for p in (root / BIN).iterdir() if p.is_symlink() and os.readlink(p) == "sandbox-steps"
    )
    print(f"  steps in the image: {', '.join(links)}")
    for step in sorted(template_steps()):
        check(step in links, f"the templates' /usr/local/bin/{step} is in the image")

    # -- runs
    box = Chroot(root, config)
    out = box.run(["/usr/local/bin/sandbox-steps", "--version"])
    check(out.returncode == 0 and out.stdout.strip() == f"sandbox-steps {version}",
          f"sandbox-steps --version: {out.stdout.strip() or out.stderr.strip()}")
    for step in links:
        out = box.run([f"/usr/local/bin/{step}", "--version"])
        check(out.returncode == 0 and out.stdout.strip() == f"{step} {version}",
              f"{step} --version: {out.stdout.strip() or out.stderr.strip()[:200]}")

    out = box.run([
        "/usr/local/bin/validate-params", "--pr-number", "42", "--head-ref",
        "feature/JIRA-123_Ünïcode", "--repository", "acme/platform", "--bucket-prefix", "acme-",
        "--base-domain", "sbx.example.com",
    ])
    summary = {}
    try:
        summary = json.loads(out.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        pass
    outputs = root / "tmp/outputs"
    check(out.returncode == 0 and summary.get("ok") is True,
          f"validate-params runs (exit {out.returncode}, summary ok={summary.get('ok')})",
          f"stdout: {out.stdout.strip()[:500]}\n        stderr: {out.stderr.strip()[:500]}")
    env_file = outputs / "environment"
    check(env_file.exists() and env_file.read_text() == "sbx-pr-42"
          and env_file.stat().st_uid == UID,
          "validate-params wrote /tmp/outputs/environment = sbx-pr-42 as 65532")

    # -- network
    certs = work / "certs"
    certs.mkdir()
    make_certs(certs)
    https = HttpsServer(certs)
    dns = DnsServer({TEST_HOST: "127.0.0.1"})
    try:
        network(box, root, https, dns, certs)
    finally:
        https.stop()
        dns.stop()


def network(box, root, https, dns, certs):
    # What the kubelet mounts into a pod.
    (root / "etc/hosts").write_text("127.0.0.1 localhost\n::1 localhost ip6-localhost\n")
    (root / "etc/resolv.conf").write_text(f"nameserver {dns.addr}\noptions timeout:2 attempts:2\n")
    print(f"  (HTTPS server on 127.0.0.1:{https.port}, DNS server on {dns.addr}:53)")

    def create_branch(host, repo, unset=()):
        return box.run([
            "/usr/local/bin/create-branch", "--repo", f"https://{host}:{https.port}/{repo}.git",
            "--branch", "sbx-pr-42", "--timeout", "10s",
        ], timeout=60, unset=unset)

    def patch_kustomize(host, repo, unset=()):
        # Its first request (the partial checkout's ls-refs) goes through reqwest (rustls); the
        # server's empty answer makes it fall back to libgit2 (OpenSSL), whose requests carry
        # libgit2's user agent.
        return box.run([
            "/usr/local/bin/patch-kustomize", "--repo", f"https://{host}:{https.port}/{repo}.git",
            "--branch", "sbx-pr-42", "--file", "kustomization.yaml", "--namespace", "sbx-pr-42",
            "--allow-protected-branch", "--timeout", "10s",
        ], timeout=60, unset=unset)

    def requests_for(repo):
        return [(p, ua) for p, ua in https.requests if p.startswith(f"/{repo}.git/")]

    def show(out):
        last = out.stderr.strip().splitlines()[-1] if out.stderr.strip() else ""
        try:
            last = json.loads(last).get("message", last)
        except ValueError:
            pass
        return f"exit {out.returncode}: {last if len(last) <= 300 else '...' + last[-300:]}"

    # Untrusted: the test CA is not in the image's bundle yet.
    for name, run in (("create-branch (rustls)", create_branch), ("patch-kustomize (rustls first, libgit2+OpenSSL on fallback)", patch_kustomize)):
        repo = "untrusted-" + name.split()[0]
        out = run(TEST_HOST, repo)
        # Refused for the certificate (not for a name or a connection that failed).
        check(out.returncode != 0 and not requests_for(repo) and "certificate" in out.stderr.lower(),
              f"{name} refuses a certificate the bundle does not vouch for ({show(out)})")
    check((TEST_HOST, 1) in dns.queries, f"{TEST_HOST} was resolved through DNS ({dns.addr})")

    # Trusted: the test CA appended to the image's bundle.
    bundle = root / BUNDLE
    bundle.write_text(bundle.read_text() + "\n" + (certs / "ca.crt").read_text())
    out = create_branch(TEST_HOST, "trusted-rustls")
    reqs = requests_for("trusted-rustls")
    check(bool(reqs) and all("sandbox-steps" in ua for _, ua in reqs),
          f"create-branch (rustls, reqwest) reached https://{TEST_HOST} over TLS: {reqs[:1]} ({show(out)})")
    out = patch_kustomize(TEST_HOST, "trusted-libgit2")
    reqs = requests_for("trusted-libgit2")
    check(bool(reqs) and any("libgit2" in ua for _, ua in reqs),
          f"patch-kustomize (libgit2, OpenSSL) reached https://{TEST_HOST} over TLS: {reqs[:1]} ({show(out)})")

    # The bundle's standard path is found without SSL_CERT_FILE too (a pod spec that replaces the
    # environment must not lose TLS).
    for name, run in (("create-branch", create_branch), ("patch-kustomize", patch_kustomize)):
        repo = "no-env-" + name
        out = run(TEST_HOST, repo, unset=("SSL_CERT_FILE",))
        agents = [ua for _, ua in requests_for(repo)]
        check(bool(agents) and (name == "create-branch" or any("libgit2" in ua for ua in agents)),
              f"{name} trusts /{BUNDLE} without SSL_CERT_FILE too ({show(out)})")

    # localhost from /etc/hosts, DNS not asked.
    before = len([q for q in dns.queries if q[0] == "localhost"])
    out = create_branch("localhost", "hosts-file")
    reqs = requests_for("hosts-file")
    after = len([q for q in dns.queries if q[0] == "localhost"])
    check(bool(reqs) and after == before,
          f"localhost resolves from /etc/hosts (DNS not asked) and is reached over TLS ({show(out)})")


if __name__ == "__main__":
    main()
