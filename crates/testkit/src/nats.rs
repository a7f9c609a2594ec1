//! NATS with JetStream (Debian's `nats-server`), the bus Argo Events' EventSources and Sensors
//! talk through (an EventBus of type `jetstreamExotic`). TLS on: Argo Events' JetStream client
//! refuses a server without it (with no `tls` in the EventBus it skips verifying the certificate,
//! so a self-signed one made here serves).

use std::process::Command;
use std::time::Duration;

use crate::{find_binary, free_port, wait_for_http_ok, ServerProcess};

pub struct NatsServer {
    port: u16,
    _server: ServerProcess,
    _dir: tempfile::TempDir,
}

const INSTALL_HINT: &str = "install Debian's nats-server (`apt-get install nats-server`)";

impl NatsServer {
    /// Listens on 127.0.0.1 (pods reach it through the node's gateway) with a certificate for
    /// `hosts` (IP addresses) besides 127.0.0.1.
    pub fn start(hosts: &[&str]) -> NatsServer {
        let bin = find_binary("nats-server", &[], INSTALL_HINT);
        let dir = tempfile::tempdir().expect("nats dir");
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        let names: String = std::iter::once("127.0.0.1")
            .chain(hosts.iter().copied())
            .map(|ip| format!("IP:{ip}"))
            .collect::<Vec<_>>()
            .join(",");
        let out = Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
            .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"])
            .args(["-subj", "/CN=nats", "-addext"])
            .arg(format!("subjectAltName={names}"))
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .expect("run openssl (install Debian's openssl)");
        assert!(
            out.status.success(),
            "openssl: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let (port, monitor) = (free_port(), free_port());
        let config = dir.path().join("nats.conf");
        std::fs::write(
            &config,
            format!(
                "listen: 127.0.0.1:{port}\nhttp: 127.0.0.1:{monitor}\n\
                 jetstream {{ store_dir: \"{}\" }}\n\
                 tls {{ cert_file: \"{}\", key_file: \"{}\" }}\n",
                dir.path().join("jetstream").display(),
                cert.display(),
                key.display()
            ),
        )
        .expect("write nats.conf");
        let mut cmd = Command::new(bin);
        cmd.arg("-c").arg(&config);
        let mut server = ServerProcess::spawn("nats-server", cmd, &dir.path().join("nats.log"));
        let health = format!("http://127.0.0.1:{monitor}/healthz?js-enabled-only=true");
        server.wait_ready(Duration::from_secs(30), || wait_for_http_ok(&health));
        NatsServer {
            port,
            _server: server,
            _dir: dir,
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }
}
