//! A one-node Kubernetes cluster beside a [`KubeApiServer`]: containerd (with Debian's runc and CNI
//! plugins), kubelet and kube-scheduler as host processes, in the manner of Kubernetes' own
//! `hack/local-up-cluster.sh`, all built from pinned upstream modules by cluster/build.sh. Images
//! come from OCI archives (buildah, `make image`), imported into containerd: no registry.
//!
//! The machine's facts it works around (cluster/one-node-notes.md): cgroup v1 (kubelet's
//! `failCgroupV1: false`, the cgroupfs driver: no systemd), no CAP_SYS_RESOURCE (containerd's
//! `restrict_oom_score_adj`). Pods sit on the bridge `sbxbr0` (10.88.0.0/16) and reach this
//! machine's loopback servers at [`Node::GATEWAY`]:port, and the API server at the `kubernetes`
//! Service address, through DNAT rules into 127.0.0.1 (`route_localnet` on the bridge).
//! Requires root. Everything it changes on the host (the bridge, the iptables rules, kubelet's
//! own chains, the kernel settings kubelet adjusts, cgroups, mounts) is undone when it is dropped.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::kube_apiserver::{cluster_tool, KubeApiServer};
use crate::process::{free_port, ServerProcess};

/// The bridge pods are attached to, and its address: what pods use to reach this machine.
const BRIDGE: &str = "sbxbr0";
const SUBNET: &str = "10.88.0.0/16";
/// The `kubernetes` Service's address (the API server's `--service-cluster-ip-range`).
const SERVICE_IP: &str = "10.96.0.1";
/// The comment that marks the iptables rules the node adds, to remove exactly those.
const RULE_COMMENT: &str = "sandbox-steps-test-node";
/// Kernel settings kubelet sets on start (protectKernelDefaults: false); restored on drop.
const KUBELET_SYSCTLS: &[&str] = &[
    "kernel.panic",
    "kernel.panic_on_oops",
    "vm.overcommit_memory",
    "vm.panic_on_oom",
];
/// The cgroup (in every hierarchy) the node's pods live under, removed on drop.
const CGROUP_ROOT: &str = "sandbox-steps-node";

/// The node's pause image: the pods' sandbox process (cluster/pause), imported as this name.
pub const PAUSE_IMAGE: &str = "sandbox-steps.local/pause:1";

pub struct Node {
    dir: tempfile::TempDir,
    sysctls: Vec<(String, String)>,
    netns_before: Vec<String>,
    // Stopped in this order on drop (before the host changes are undone).
    scheduler: Option<ServerProcess>,
    kubelet: Option<ServerProcess>,
    containerd: Option<ServerProcess>,
}

fn run(program: impl AsRef<std::ffi::OsStr>, args: &[&str]) -> (bool, String) {
    let out = Command::new(program.as_ref())
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {:?} {args:?}: {e}", program.as_ref()));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn must(program: impl AsRef<std::ffi::OsStr>, args: &[&str]) -> String {
    let name = program.as_ref().to_string_lossy().into_owned();
    let (ok, text) = run(program, args);
    assert!(ok, "{name} {args:?}: {text}");
    text
}

fn sysctl(key: &str) -> String {
    let path = format!("/proc/sys/{}", key.replace('.', "/"));
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .trim()
        .to_owned()
}

fn set_sysctl(key: &str, value: &str) {
    let path = format!("/proc/sys/{}", key.replace('.', "/"));
    std::fs::write(&path, value).unwrap_or_else(|e| panic!("write {path}: {e}"));
}

fn netns_names() -> Vec<String> {
    std::fs::read_dir("/run/netns")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Builds an image FROM scratch holding `files` (source, path in the image) and a world-writable
/// `/tmp` (as images have: Argo's init container writes a resource template's manifest to
/// /tmp/manifest.yaml in its own file system, argo-workflows workflow/executor/executor.go
/// StageFiles), with `entrypoint`, as an OCI archive; buildah with storage of its own under `dir`
/// (vfs: no overlay mount needed).
pub fn build_image(dir: &Path, name: &str, files: &[(&Path, &str)], entrypoint: &str) -> PathBuf {
    let storage = dir.join("buildah");
    let root = format!("--root={}", storage.join("storage").display());
    let runroot = format!("--runroot={}", storage.join("run").display());
    let buildah = |args: &[&str]| {
        let mut all = vec![root.as_str(), runroot.as_str(), "--storage-driver=vfs"];
        all.extend_from_slice(args);
        must("buildah", &all).trim().to_owned()
    };
    let container = buildah(&["from", "scratch"]);
    // `buildah add` unpacks a local tar with its modes (1777 for /tmp).
    let stage = dir.join("image-tmp");
    std::fs::create_dir_all(stage.join("tmp")).expect("stage /tmp");
    std::fs::set_permissions(stage.join("tmp"), std::fs::Permissions::from_mode(0o1777))
        .expect("chmod /tmp");
    let tar = dir.join("image-tmp.tar");
    must(
        "tar",
        &[
            "-C",
            stage.to_str().unwrap(),
            "-cf",
            tar.to_str().unwrap(),
            "tmp",
        ],
    );
    buildah(&["add", &container, tar.to_str().unwrap(), "/"]);
    for (source, target) in files {
        buildah(&["copy", &container, source.to_str().unwrap(), target]);
    }
    let entrypoint = format!("[\"{entrypoint}\"]");
    buildah(&[
        "config",
        "--env",
        "PATH=/bin",
        "--entrypoint",
        &entrypoint,
        &container,
    ]);
    buildah(&["commit", "--quiet", &container, name]);
    buildah(&["rm", &container]);
    let archive = dir.join(format!("{}.oci.tar", name.replace(['/', ':'], "_")));
    buildah(&[
        "push",
        "--quiet",
        name,
        &format!("oci-archive:{}", archive.display()),
    ]);
    archive
}

impl Node {
    /// Pods reach this machine's loopback servers at this address (same port).
    pub const GATEWAY: &'static str = "10.88.0.1";

    /// Starts containerd, kubelet and kube-scheduler for `api` and waits until the node is Ready.
    pub fn start(api: &KubeApiServer) -> Node {
        assert_eq!(
            must("id", &["-u"]).trim(),
            "0",
            "the one-node cluster needs root (network, cgroups, mounts)"
        );
        let started = Instant::now();
        let dir = tempfile::Builder::new()
            .prefix("sandbox-steps-node.")
            .tempdir()
            .expect("node dir");
        let d = dir.path().to_owned();
        Node::clean_host();
        let mut node = Node {
            dir,
            sysctls: KUBELET_SYSCTLS
                .iter()
                .map(|k| (k.to_string(), sysctl(k)))
                .collect(),
            netns_before: netns_names(),
            scheduler: None,
            kubelet: None,
            containerd: None,
        };

        // The bridge first: kubelet's node address is on it, and route_localnet must be set on it
        // before a pod's packet is DNATed to 127.0.0.1.
        must("ip", &["link", "add", BRIDGE, "type", "bridge"]);
        must(
            "ip",
            &[
                "addr",
                "add",
                &format!("{}/16", Node::GATEWAY),
                "dev",
                BRIDGE,
            ],
        );
        must("ip", &["link", "set", BRIDGE, "up"]);
        set_sysctl(&format!("net.ipv4.conf.{BRIDGE}.route_localnet"), "1");
        set_sysctl("net.ipv4.ip_forward", "1");
        let api_port = api.url().rsplit(':').next().unwrap().to_owned();
        for rule in [
            vec!["-d", SERVICE_IP, "-p", "tcp", "--dport", "443"],
            vec!["-d", Node::GATEWAY, "-p", "tcp"],
        ] {
            let to = if rule[1] == SERVICE_IP {
                format!("127.0.0.1:{api_port}")
            } else {
                "127.0.0.1".to_owned()
            };
            let mut args = vec!["-t", "nat", "-A", "PREROUTING", "-i", BRIDGE];
            args.extend(rule);
            args.extend(["-m", "comment", "--comment", RULE_COMMENT, "-j", "DNAT"]);
            args.extend(["--to-destination", to.as_str()]);
            must("iptables", &args);
        }

        // containerd, its shim and ctr (cluster/containerd), on PATH for containerd.
        let bin = d.join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        for tool in ["containerd", "containerd-shim-runc-v2"] {
            std::os::unix::fs::symlink(
                std::fs::canonicalize(cluster_tool(tool)).unwrap(),
                bin.join(tool),
            )
            .unwrap();
        }
        let cni = d.join("cni");
        std::fs::create_dir_all(&cni).unwrap();
        std::fs::write(
            cni.join("10-sandbox-steps.conflist"),
            format!(
                r#"{{"cniVersion": "1.0.0", "name": "sandbox-steps", "plugins": [
  {{"type": "bridge", "bridge": "{BRIDGE}", "isGateway": true, "ipMasq": false,
   "ipam": {{"type": "host-local", "ranges": [[{{"subnet": "{SUBNET}", "gateway": "{}"}}]],
            "routes": [{{"dst": "0.0.0.0/0"}}], "dataDir": "{}"}}}},
  {{"type": "loopback"}}]}}"#,
                Node::GATEWAY,
                d.join("cni-ipam").display()
            ),
        )
        .unwrap();
        let socket = d.join("containerd/containerd.sock");
        std::fs::write(
            d.join("containerd.toml"),
            format!(
                "version = 3\nroot = '{root}'\nstate = '{state}'\n[grpc]\n  address = '{socket}'\n\
                 [plugins.'io.containerd.cri.v1.images']\n  snapshotter = 'overlayfs'\n\
                 [plugins.'io.containerd.cri.v1.images'.pinned_images]\n  sandbox = '{PAUSE_IMAGE}'\n\
                 [plugins.'io.containerd.cri.v1.runtime']\n  restrict_oom_score_adj = true\n\
                 [plugins.'io.containerd.cri.v1.runtime'.cni]\n  bin_dirs = ['/usr/lib/cni']\n  conf_dir = '{cni}'\n",
                root = d.join("containerd/root").display(),
                state = d.join("containerd/state").display(),
                socket = socket.display(),
                cni = cni.display(),
            ),
        )
        .unwrap();
        let mut cmd = Command::new(bin.join("containerd"));
        cmd.arg("--config").arg(d.join("containerd.toml")).env(
            "PATH",
            format!(
                "{}:{}",
                bin.display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        );
        let mut containerd = ServerProcess::spawn("containerd", cmd, &d.join("containerd.log"));
        containerd.wait_ready(Duration::from_secs(30), || socket.exists());
        node.containerd = Some(containerd);
        let pause = build_image(
            &d,
            PAUSE_IMAGE,
            &[(
                &std::fs::canonicalize(cluster_tool("pause")).unwrap(),
                "/pause",
            )],
            "/pause",
        );
        node.import_image(&pause, PAUSE_IMAGE);

        // The pods' cgroup in every hierarchy (kubelet wants it there, and makes kubepods in it);
        // a v1 cpuset starts empty and takes no process until given the CPUs and memory nodes.
        for hierarchy in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
            if hierarchy.path().join("cgroup.procs").is_file() {
                let ours = hierarchy.path().join(CGROUP_ROOT);
                std::fs::create_dir_all(&ours).unwrap();
                for file in ["cpuset.cpus", "cpuset.mems"] {
                    if let Ok(value) = std::fs::read_to_string(hierarchy.path().join(file)) {
                        std::fs::write(ours.join(file), value.trim()).unwrap();
                    }
                }
            }
        }
        // kubelet: cgroup v1 and cgroupfs (no systemd here), image garbage collection off (the
        // images have no registry to come back from), node address on the bridge.
        let (port, healthz) = (free_port(), free_port());
        std::fs::write(
            d.join("kubelet.yaml"),
            format!(
                "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n\
                 failCgroupV1: false\ncgroupDriver: cgroupfs\ncgroupRoot: /{CGROUP_ROOT}\n\
                 containerRuntimeEndpoint: unix://{socket}\nfailSwapOn: false\n\
                 address: {gateway}\nport: {port}\nreadOnlyPort: 0\n\
                 healthzBindAddress: 127.0.0.1\nhealthzPort: {healthz}\n\
                 authentication: {{anonymous: {{enabled: false}}, webhook: {{enabled: false}}, x509: {{clientCAFile: {ca}}}}}\n\
                 authorization: {{mode: AlwaysAllow}}\n\
                 imageGCHighThresholdPercent: 100\nimageGCLowThresholdPercent: 99\n\
                 evictionHard: {{memory.available: 100Mi, nodefs.available: 1%, imagefs.available: 1%, nodefs.inodesFree: 1%}}\n\
                 resolvConf: ''\nenforceNodeAllocatable: []\npodLogsDir: {logs}\n",
                socket = socket.display(),
                gateway = Node::GATEWAY,
                ca = api.ca_file().display(),
                logs = d.join("pod-logs").display(),
            ),
        )
        .unwrap();
        let kube = cluster_tool("kube");
        let mut cmd = Command::new(&kube);
        cmd.arg("kubelet")
            .arg(format!("--config={}", d.join("kubelet.yaml").display()))
            .arg(format!("--kubeconfig={}", api.admin_kubeconfig().display()))
            .arg(format!("--root-dir={}", d.join("kubelet").display()))
            .arg(format!("--cert-dir={}", d.join("kubelet/pki").display()))
            .args(["--hostname-override=sandbox-steps-node", "--v=1"])
            .arg(format!("--node-ip={}", Node::GATEWAY));
        node.kubelet = Some(ServerProcess::spawn("kubelet", cmd, &d.join("kubelet.log")));
        let mut cmd = Command::new(&kube);
        cmd.arg("kube-scheduler")
            .arg(format!("--kubeconfig={}", api.admin_kubeconfig().display()))
            .args(["--leader-elect=false", "--secure-port=0", "--v=1"]);
        node.scheduler = Some(ServerProcess::spawn(
            "kube-scheduler",
            cmd,
            &d.join("scheduler.log"),
        ));

        // Ready, and schedulable: the node-lifecycle controller lifts the not-ready taint.
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let (status, body) = api.get("/api/v1/nodes/sandbox-steps-node");
            let ready = status == 200
                && body["status"]["conditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True");
            let tainted = body["spec"]["taints"]
                .as_array()
                .is_some_and(|t| !t.is_empty());
            if ready && !tainted {
                break;
            }
            for process in [&mut node.containerd, &mut node.kubelet, &mut node.scheduler] {
                process.as_mut().unwrap().assert_running();
            }
            assert!(
                Instant::now() < deadline,
                "the node was not Ready in 90 s: {body}"
            );
            std::thread::sleep(Duration::from_millis(250));
        }
        eprintln!(
            "one-node cluster up in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        node
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Imports an OCI archive into the node's containerd as `name` (the archive may carry no
    /// name: buildah's oci-archive does not).
    pub fn import_image(&self, archive: &Path, name: &str) {
        let socket = self.dir.path().join("containerd/containerd.sock");
        let address = format!("--address={}", socket.display());
        must(
            cluster_tool("containerd"),
            &[
                "ctr",
                &address,
                "--namespace=k8s.io",
                "images",
                "import",
                &format!("--index-name={name}"),
                archive.to_str().unwrap(),
            ],
        );
    }

    /// The logs of the node's processes (for a failing test's message).
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for name in ["containerd.log", "kubelet.log", "scheduler.log"] {
            let text = std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(40).collect();
            out.push_str(&format!("---- {name} (last lines) ----\n"));
            for line in tail.into_iter().rev() {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }

    /// Removes what a node left on the host: its processes' children (pods), mounts, cgroups,
    /// network namespaces, the bridge, iptables rules and chains. Also run before a start, for a
    /// run that was killed.
    fn clean_host() {
        // The pods' processes (in the node's cgroups), then the shims.
        for hierarchy in cgroup_dirs() {
            for procs in find_files(&hierarchy, "cgroup.procs") {
                for pid in std::fs::read_to_string(&procs).unwrap_or_default().lines() {
                    crate::process::signal(pid.trim().parse().unwrap_or(0), 9);
                }
            }
        }
        // containerd and its shims (whose -address is the node's socket), never another
        // containerd of the machine.
        let _ = quietly(Command::new("pkill").args([
            "-KILL",
            "-f",
            "sandbox-steps-node\\..*containerd",
        ]));
        std::thread::sleep(Duration::from_millis(200));
        // Mounts under node directories (overlay rootfs, volumes, shm), deepest first.
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        let mut points: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split(' ').nth(1))
            .filter(|p| p.contains("/sandbox-steps-node."))
            .collect();
        points.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for point in points {
            let _ = quietly(Command::new("umount").args(["-l", point]));
        }
        for hierarchy in cgroup_dirs() {
            remove_cgroup_tree(&hierarchy);
        }
        let _ = quietly(Command::new("ip").args(["link", "del", BRIDGE]));
        for iptables in ["iptables", "ip6tables"] {
            for table in ["filter", "nat", "mangle"] {
                let (_, rules) = run(iptables, &["-t", table, "-S"]);
                for rule in rules.lines() {
                    let ours = rule.starts_with("-A ")
                        && (rule.contains(RULE_COMMENT) || rule.contains("KUBE-"));
                    if ours {
                        let delete = format!("-t {table} -D {}", &rule[3..]);
                        let args: Vec<String> = shell_words(&delete);
                        let args: Vec<&str> = args.iter().map(String::as_str).collect();
                        let _ = run(iptables, &args);
                    }
                }
                for rule in rules.lines() {
                    if let Some(chain) = rule.strip_prefix("-N KUBE-") {
                        let chain = format!("KUBE-{chain}");
                        let _ = run(iptables, &["-t", table, "-F", &chain]);
                        let _ = run(iptables, &["-t", table, "-X", &chain]);
                    }
                }
            }
        }
    }
}

/// Runs a best-effort cleanup command without its output (a bridge already gone is no news).
fn quietly(cmd: &mut Command) -> std::io::Result<std::process::ExitStatus> {
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
}

/// `-A` rule text split as iptables-save quotes it (comments in double quotes).
fn shell_words(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quoted = false;
    for c in text.chars() {
        match c {
            '"' => quoted = !quoted,
            ' ' if !quoted => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
            }
            c => word.push(c),
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    words
}

/// The node's cgroup in each v1 hierarchy that has it.
fn cgroup_dirs() -> Vec<PathBuf> {
    std::fs::read_dir("/sys/fs/cgroup")
        .map(|d| {
            d.flatten()
                .map(|e| e.path().join(CGROUP_ROOT))
                .filter(|p| p.is_dir())
                .collect()
        })
        .unwrap_or_default()
}

fn find_files(dir: &Path, name: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                found.extend(find_files(&path, name));
            } else if entry.file_name() == name {
                found.push(path);
            }
        }
    }
    found
}

/// Removes a cgroup directory tree, children first (cgroup directories are removed with rmdir).
fn remove_cgroup_tree(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.path().is_dir() {
                remove_cgroup_tree(&entry.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}

impl Drop for Node {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
        self.scheduler.take();
        self.kubelet.take();
        self.containerd.take();
        Node::clean_host();
        for name in netns_names() {
            if !self.netns_before.contains(&name) {
                let _ = quietly(Command::new("ip").args(["netns", "delete", &name]));
            }
        }
        for (key, value) in &self.sysctls {
            if !value.is_empty() {
                let _ = std::fs::write(format!("/proc/sys/{}", key.replace('.', "/")), value);
            }
        }
    }
}
