//! A throwaway PostgreSQL cluster from Debian's binaries: `initdb` + `pg_ctl` on a free port in a
//! temp dir. `initdb` refuses to run as root, so as root both run as the `postgres` user.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::{find_binary, free_port, ServerProcess};

pub struct Postgres {
    port: u16,
    bindir: PathBuf,
    data: PathBuf,
    run_as: Option<(u32, u32)>,
    /// The superuser's password when TCP connections need one (`start_with_password`).
    password: Option<String>,
    // Field order matters: the server stops before its directory is removed.
    _server: Option<ServerProcess>,
    _dir: tempfile::TempDir,
}

const INSTALL_HINT: &str = "install PostgreSQL 15 (apt-get install postgresql) or set PG_BINDIR";

/// Debian puts the server binaries in /usr/lib/postgresql/<major>/bin, not on PATH.
fn bindir() -> PathBuf {
    if let Some(dir) = std::env::var_os("PG_BINDIR") {
        return dir.into();
    }
    let mut debian: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|entries| {
            entries
                .filter_map(|e| Some(e.ok()?.path().join("bin")))
                .collect()
        })
        .unwrap_or_default();
    debian.sort();
    debian.reverse();
    if let Some(dir) = debian.into_iter().find(|d| d.join("postgres").is_file()) {
        return dir;
    }
    // Elsewhere `postgres` may be a symlink on PATH: its real directory has the other tools.
    let postgres = find_binary("postgres", &[], INSTALL_HINT);
    let real = std::fs::canonicalize(&postgres).unwrap_or(postgres);
    real.parent().unwrap().to_owned()
}

unsafe extern "C" {
    fn geteuid() -> u32;
}

/// The uid and gid of the `postgres` user when running as root (initdb refuses root), else None.
fn postgres_user() -> Option<(u32, u32)> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { geteuid() } != 0 {
        return None;
    }
    let id = |flag: &str| -> u32 {
        let out = Command::new("id")
            .args([flag, "postgres"])
            .output()
            .expect("run id");
        assert!(
            out.status.success(),
            "no `postgres` user to run the cluster as: {INSTALL_HINT}"
        );
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("numeric id")
    };
    Some((id("-u"), id("-g")))
}

impl Postgres {
    /// A cluster that trusts every connection (no passwords).
    pub fn start() -> Postgres {
        Postgres::start_inner(None)
    }

    /// A cluster that asks for a password (SCRAM) on TCP connections, as a real server does:
    /// for tests that prove a generated password works. The superuser's is `password`.
    pub fn start_with_password(password: &str) -> Postgres {
        Postgres::start_inner(Some(password))
    }

    fn start_inner(password: Option<&str>) -> Postgres {
        let bindir = bindir();
        let dir = tempfile::Builder::new()
            .prefix("testkit-pg.")
            .tempdir()
            .expect("postgres temp dir");
        let run_as = postgres_user();
        if run_as.is_some() {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .expect("run chown");
            assert!(
                status.success(),
                "chown the cluster dir to postgres: {INSTALL_HINT}"
            );
        }
        let data = dir.path().join("data");
        let mut pg = Postgres {
            port: free_port(),
            bindir,
            data,
            run_as,
            password: password.map(str::to_owned),
            _server: None,
            _dir: dir,
        };
        let mut initdb = pg.command("initdb");
        if let Some(password) = password {
            let file = pg._dir.path().join("pwfile");
            std::fs::write(&file, password).expect("write the password file");
            if let Some((uid, gid)) = run_as {
                std::os::unix::fs::chown(&file, Some(uid), Some(gid)).expect("chown pwfile");
            }
            initdb
                .arg(format!("--pwfile={}", file.display()))
                .args(["--auth-host=scram-sha-256", "--auth-local=trust"]);
        } else {
            initdb.arg("--auth=trust");
        }
        let out = initdb
            .args([
                "--no-sync",
                "--username=postgres",
                "--encoding=UTF8",
                "--locale=C",
                "-D",
            ])
            .arg(&pg.data)
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // `postgres` itself in the foreground, so the harness owns the process and its log.
        let mut server = pg.command("postgres");
        server
            .arg("-D")
            .arg(&pg.data)
            .args([
                "-p",
                &pg.port.to_string(),
                "-c",
                "listen_addresses=127.0.0.1",
            ])
            .args([
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
            ])
            .arg("-k")
            .arg(pg._dir.path());
        let log = pg._dir.path().join("postgres.log");
        // SIGQUIT: immediate shutdown, backends included (SIGKILL would orphan them).
        let mut process = ServerProcess::spawn("postgres", server, &log).with_stop_signal(3);
        let (isready, port) = (pg.bindir.join("pg_isready"), pg.port);
        process.wait_ready(Duration::from_secs(30), || {
            Command::new(&isready)
                .args([
                    "-q",
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &port.to_string(),
                    "-U",
                    "postgres",
                ])
                .status()
                .is_ok_and(|s| s.success())
        });
        pg._server = Some(process);
        pg
    }

    fn command(&self, program: &str) -> Command {
        use std::os::unix::process::CommandExt;
        let mut cmd = Command::new(self.bindir.join(program));
        if let Some((uid, gid)) = self.run_as {
            // Run as postgres directly (not through runuser), so stopping the process stops it.
            cmd.uid(uid).gid(gid).env("HOME", self._dir.path());
        }
        cmd
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn bindir(&self) -> &Path {
        &self.bindir
    }

    /// `postgres://postgres@127.0.0.1:PORT/<database>`, with the password when the cluster
    /// asks for one.
    pub fn url(&self, database: &str) -> String {
        match &self.password {
            Some(p) => format!("postgres://postgres:{p}@127.0.0.1:{}/{database}", self.port),
            None => format!("postgres://postgres@127.0.0.1:{}/{database}", self.port),
        }
    }

    /// Also accepts TCP connections from `cidr` (e.g. a pod network whose traffic is forwarded to
    /// this loopback server), with the cluster's method (password or trust), and reloads.
    pub fn allow_network(&self, cidr: &str) {
        let method = if self.password.is_some() {
            "scram-sha-256"
        } else {
            "trust"
        };
        let hba = self.data.join("pg_hba.conf");
        let mut text = std::fs::read_to_string(&hba).expect("read pg_hba.conf");
        text.push_str(&format!("host all all {cidr} {method}\n"));
        std::fs::write(&hba, text).expect("write pg_hba.conf");
        assert_eq!(self.psql("postgres", "SELECT pg_reload_conf()"), "t");
    }

    /// Runs SQL with `psql` as the superuser and returns its unaligned output.
    pub fn psql(&self, database: &str, sql: &str) -> String {
        let psql = find_binary("psql", std::slice::from_ref(&self.bindir), INSTALL_HINT);
        let out = Command::new(psql)
            .args([
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                &self.url(database),
                "-c",
                sql,
            ])
            .output()
            .expect("run psql");
        assert!(
            out.status.success(),
            "psql {sql:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim_end().to_owned()
    }
}
