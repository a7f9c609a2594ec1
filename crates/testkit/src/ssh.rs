//! Bare repositories served over SSH by a real OpenSSH server (`sshd` from Debian's
//! openssh-server) on a free loopback port, with its own host key and one authorized client key.
//! Git runs `git-receive-pack`/`git-upload-pack` through it as it does on any SSH remote.

use std::io::Read;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::git::{create_bare_repo, rev_parse_in};
use crate::{find_binary, free_port, ServerProcess};

pub struct SshGitServer {
    port: u16,
    user: String,
    dir: tempfile::TempDir,
    _server: ServerProcess,
}

const INSTALL_HINT: &str = "install OpenSSH's server (apt-get install openssh-server)";

fn keygen(path: &Path) {
    let status = Command::new(find_binary("ssh-keygen", &[], INSTALL_HINT))
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "testkit", "-f"])
        .arg(path)
        .status()
        .expect("run ssh-keygen");
    assert!(status.success(), "ssh-keygen failed");
}

impl SshGitServer {
    pub fn start() -> SshGitServer {
        let sshd = find_binary("sshd", &[PathBuf::from("/usr/sbin")], INSTALL_HINT);
        let dir = tempfile::Builder::new()
            .prefix("testkit-ssh.")
            .tempdir()
            .expect("ssh dir");
        let d = dir.path();
        keygen(&d.join("host_key"));
        keygen(&d.join("client_key"));
        keygen(&d.join("other_key"));
        std::fs::copy(d.join("client_key.pub"), d.join("authorized_keys")).unwrap();
        let user = String::from_utf8(Command::new("id").arg("-un").output().unwrap().stdout)
            .unwrap()
            .trim()
            .to_owned();
        let port = free_port();
        let config = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_key\nPidFile {d}/sshd.pid\n\
             AuthorizedKeysFile {d}/authorized_keys\nStrictModes no\nUsePAM no\n\
             PasswordAuthentication no\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\n\
             PermitRootLogin prohibit-password\nAllowUsers {user}\nLogLevel VERBOSE\n",
            d = d.display()
        );
        std::fs::write(d.join("sshd_config"), config).unwrap();
        // sshd's privilege separation needs this directory when started as root.
        let _ = std::fs::create_dir_all("/run/sshd");
        let mut cmd = Command::new(sshd);
        cmd.args(["-D", "-e", "-f"]).arg(d.join("sshd_config"));
        let mut server = ServerProcess::spawn("sshd", cmd, &d.join("sshd.log"));
        server.wait_ready(Duration::from_secs(15), || {
            let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
                return false;
            };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
            let mut banner = [0u8; 7];
            stream.read_exact(&mut banner).is_ok() && &banner == b"SSH-2.0"
        });
        SshGitServer {
            port,
            user,
            dir,
            _server: server,
        }
    }

    pub fn repo_path(&self, name: &str) -> PathBuf {
        self.dir.path().join("repos").join(format!("{name}.git"))
    }

    /// Creates bare repository `name` with `files` on `main`; returns its `ssh://` URL.
    pub fn create_repo(&self, name: &str, files: &[(&str, &str)]) -> String {
        create_bare_repo(&self.repo_path(name), files);
        self.url(name)
    }

    /// `ssh://USER@127.0.0.1:PORT/<dir>/repos/<name>.git`
    pub fn url(&self, name: &str) -> String {
        format!(
            "ssh://{}@127.0.0.1:{}{}",
            self.user,
            self.port,
            self.repo_path(name).display()
        )
    }

    pub fn rev_parse(&self, name: &str, refname: &str) -> Option<String> {
        rev_parse_in(&self.repo_path(name), refname)
    }

    /// The private key the server accepts (OpenSSH format).
    pub fn client_key(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("client_key")).unwrap()
    }

    /// A valid private key the server does not accept.
    pub fn other_key(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("other_key")).unwrap()
    }

    /// A known_hosts line for this server's host key.
    pub fn known_hosts(&self) -> String {
        let public = std::fs::read_to_string(self.dir.path().join("host_key.pub")).unwrap();
        let mut fields = public.split_whitespace();
        let (kind, key) = (fields.next().unwrap(), fields.next().unwrap());
        format!("[127.0.0.1]:{} {kind} {key}\n", self.port)
    }

    /// A known_hosts line naming this server with another key (a changed or spoofed host).
    pub fn wrong_known_hosts(&self) -> String {
        let public = std::fs::read_to_string(self.dir.path().join("other_key.pub")).unwrap();
        let mut fields = public.split_whitespace();
        let (kind, key) = (fields.next().unwrap(), fields.next().unwrap());
        format!("[127.0.0.1]:{} {kind} {key}\n", self.port)
    }
}
