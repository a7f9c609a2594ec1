//! Starting, waiting for and stopping server processes.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free TCP port on 127.0.0.1 (bound once to find it, then released for the server).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral port on 127.0.0.1")
        .port()
}

/// Finds `name` on PATH or in `extra_dirs`; panics with `install_hint` when it is nowhere, so a
/// missing server fails the test instead of skipping it.
pub fn find_binary(name: &str, extra_dirs: &[PathBuf], install_hint: &str) -> PathBuf {
    let path_dirs = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    for dir in path_dirs.iter().chain(extra_dirs) {
        let candidate = dir.join(name);
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!("`{name}` not found on PATH nor in {extra_dirs:?}: {install_hint}");
}

/// A running server: killed on drop; its log is printed when the test is failing.
pub struct ServerProcess {
    name: String,
    child: Child,
    log: PathBuf,
    stop_signal: i32,
}

unsafe extern "C" {
    fn kill(pid: i32, sig: i32) -> i32;
    fn atexit(callback: extern "C" fn()) -> i32;
}

type ExitAction = Box<dyn FnOnce() + Send>;
static AT_EXIT: std::sync::Mutex<Vec<ExitAction>> = std::sync::Mutex::new(Vec::new());

extern "C" fn run_at_exit() {
    let actions = std::mem::take(&mut *AT_EXIT.lock().unwrap_or_else(|e| e.into_inner()));
    for action in actions.into_iter().rev() {
        action();
    }
}

/// Runs `action` when the process exits (C `atexit`), latest first: for servers kept in a static,
/// which Rust never drops, so that a test binary leaves no process behind.
pub fn at_exit(action: impl FnOnce() + Send + 'static) {
    static REGISTERED: std::sync::Once = std::sync::Once::new();
    // SAFETY: registers a plain extern "C" function without arguments.
    REGISTERED.call_once(|| assert_eq!(unsafe { atexit(run_at_exit) }, 0, "atexit"));
    AT_EXIT.lock().unwrap().push(Box::new(action));
}

/// Sends `signal` to process `pid`.
pub fn signal(pid: u32, signal: i32) {
    // SAFETY: plain kill(2).
    unsafe { kill(pid as i32, signal) };
}

impl ServerProcess {
    /// Starts `cmd` with stdout and stderr appended to `log`.
    pub fn spawn(name: &str, mut cmd: Command, log: &Path) -> ServerProcess {
        let file = std::fs::File::create(log).expect("create server log");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("clone log handle"))
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        ServerProcess {
            name: name.to_owned(),
            child,
            log: log.to_owned(),
            stop_signal: 15,
        }
    }

    /// The signal sent first on drop (default SIGTERM); SIGKILL follows after 5 s.
    pub fn with_stop_signal(mut self, signal: i32) -> Self {
        self.stop_signal = signal;
        self
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the process at once (SIGKILL, a crash) and waits until it is gone, its ports free.
    pub fn kill_now(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Panics (printing the log) when the process has already exited.
    pub fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "{} exited early ({status}); log:\n{}",
                self.name,
                self.log()
            );
        }
    }

    /// Waits for `ready` to hold, checking the process is alive; panics with the log on timeout.
    pub fn wait_ready(&mut self, timeout: Duration, mut ready: impl FnMut() -> bool) {
        let started = Instant::now();
        loop {
            self.assert_running();
            if ready() {
                return;
            }
            if started.elapsed() > timeout {
                panic!(
                    "{} not ready after {timeout:?}; log:\n{}",
                    self.name,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- {} log ----\n{}---- end of {} log ----",
                self.name,
                self.log(),
                self.name
            );
        }
        // SAFETY: plain kill(2) on our own child's pid, which has not been reaped yet.
        unsafe { kill(self.child.id() as i32, self.stop_signal) };
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until `GET url` (plain http on loopback) answers 200.
pub fn wait_for_http_ok(url: &str) -> bool {
    http_get_status(url) == Some(200)
}

fn http_get_status(url: &str) -> Option<u16> {
    let rest = url.strip_prefix("http://")?;
    let (host, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_owned()), |(h, p)| (h, format!("/{p}")));
    let mut stream = TcpStream::connect(host).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

/// `data` compressed with Debian's `gzip`, as a nightly `pg_dump | gzip` job writes it.
pub fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut child = Command::new("gzip")
        .arg("-c")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run gzip");
    let mut stdin = child.stdin.take().expect("piped");
    let data = data.to_vec();
    // Written from another thread: gzip's output would fill its pipe while we still write.
    let writer = std::thread::spawn(move || stdin.write_all(&data));
    let out = child.wait_with_output().expect("gzip output");
    writer.join().expect("gzip writer").expect("write to gzip");
    assert!(out.status.success(), "gzip failed");
    out.stdout
}
