//! Launches the real `jitgate` binary with a config written to a temp dir, and waits for it to
//! announce its bound addresses on stdout:
//!
//! ```text
//! jitgate: data plane on http://127.0.0.1:41234
//! jitgate: admin plane on http://127.0.0.1:41235
//! ```
//!
//! stdout and stderr are drained by threads into buffers (so the pipes never fill) and kept for
//! assertions. The child runs with its working directory set to the temp dir, so relative paths in
//! the config resolve there whichever base the gateway uses.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub const CONFIG_FILE: &str = "proxy.toml";
pub const DEFAULT_STARTUP_TIMEOUT: Duration = Duration::from_secs(20);
const DATA_PREFIX: &str = "jitgate: data plane on ";
const ADMIN_PREFIX: &str = "jitgate: admin plane on ";

#[derive(Debug, Clone, Copy)]
pub enum Sig {
    Hup,
    Term,
    Int,
    Kill,
    /// Freezes the process (a long stall: a VM pause, CPU starvation) until [`Sig::Cont`].
    Stop,
    Cont,
}

impl Sig {
    fn flag(self) -> &'static str {
        match self {
            Sig::Hup => "-HUP",
            Sig::Term => "-TERM",
            Sig::Int => "-INT",
            Sig::Kill => "-KILL",
            Sig::Stop => "-STOP",
            Sig::Cont => "-CONT",
        }
    }
}

/// How to start a gateway; see [`Gateway::builder`].
#[derive(Clone)]
pub struct GatewayBuilder {
    config: String,
    program: PathBuf,
    extra_args: Vec<String>,
    env: Vec<(String, String)>,
    files: Vec<(PathBuf, Vec<u8>)>,
    startup_timeout: Duration,
}

impl GatewayBuilder {
    /// Sets an environment variable for the child (e.g. `JITGATE_JWT_SECRET`).
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// Writes a file (relative to the config dir) before starting: certs, keys, JWKS.
    pub fn file(mut self, rel_path: &str, contents: impl Into<Vec<u8>>) -> Self {
        self.files.push((PathBuf::from(rel_path), contents.into()));
        self
    }

    /// Extra arguments after `serve --config <path>`.
    pub fn arg(mut self, arg: &str) -> Self {
        self.extra_args.push(arg.to_string());
        self
    }

    /// Runs another program instead of the jitgate binary (the harness self-test uses a script).
    pub fn program(mut self, program: impl Into<PathBuf>) -> Self {
        self.program = program.into();
        self
    }

    pub fn startup_timeout(mut self, timeout: Duration) -> Self {
        self.startup_timeout = timeout;
        self
    }

    /// Starts the gateway; panics (with its stderr) if it exits or stays silent past the timeout.
    pub fn start(self) -> Gateway {
        let dir = tempfile::tempdir().expect("gateway temp dir");
        for (rel, contents) in &self.files {
            let path = dir.path().join(rel);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).expect("create file dir");
            }
            std::fs::write(&path, contents).expect("write gateway file");
        }
        let config_path = dir.path().join(CONFIG_FILE);
        std::fs::write(&config_path, &self.config).expect("write config");
        let running = spawn(&self, dir.path(), &config_path);
        Gateway {
            builder: self,
            config_path,
            running,
            dir,
        }
    }
}

struct Running {
    child: Child,
    data_url: String,
    admin_url: String,
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    readers: Vec<JoinHandle<()>>,
}

/// A running gateway process; killed on drop.
pub struct Gateway {
    builder: GatewayBuilder,
    config_path: PathBuf,
    running: Running,
    // Last, so the directory outlives the process it is the working directory of.
    dir: tempfile::TempDir,
}

fn drain<R: Read + Send + 'static>(
    r: R,
    buf: Arc<Mutex<Vec<u8>>>,
    lines: Option<mpsc::Sender<String>>,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(r);
        let mut line = Vec::new();
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    buf.lock().expect("output buffer").extend_from_slice(&line);
                    if let Some(tx) = &lines {
                        let _ = tx.send(String::from_utf8_lossy(&line).trim_end().to_string());
                    }
                }
            }
        }
    })
}

fn spawn(b: &GatewayBuilder, dir: &Path, config_path: &Path) -> Running {
    let mut cmd = Command::new(&b.program);
    cmd.arg("serve")
        .arg("--config")
        .arg(config_path)
        .args(&b.extra_args)
        .current_dir(dir)
        .env("RUST_BACKTRACE", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in &b.env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", b.program.display()));
    let stdout = Arc::new(Mutex::new(Vec::new()));
    let stderr = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = mpsc::channel();
    let readers = vec![
        drain(
            child.stdout.take().expect("stdout piped"),
            stdout.clone(),
            Some(tx),
        ),
        drain(
            child.stderr.take().expect("stderr piped"),
            stderr.clone(),
            None,
        ),
    ];
    let mut running = Running {
        child,
        data_url: String::new(),
        admin_url: String::new(),
        stdout,
        stderr,
        readers,
    };
    let deadline = Instant::now() + b.startup_timeout;
    let mut data = None;
    let mut admin = None;
    let failure = loop {
        if data.is_some() && admin.is_some() {
            break None;
        }
        let now = Instant::now();
        if now >= deadline {
            break Some(format!(
                "no address announcement within {:?}",
                b.startup_timeout
            ));
        }
        match rx.recv_timeout((deadline - now).min(Duration::from_millis(50))) {
            Ok(line) => {
                if let Some(url) = line.strip_prefix(DATA_PREFIX) {
                    data = Some(url.trim().to_string());
                } else if let Some(url) = line.strip_prefix(ADMIN_PREFIX) {
                    admin = Some(url.trim().to_string());
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if let Ok(Some(status)) = running.child.try_wait() {
                    break Some(format!("exited early with {status}"));
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                // stdout closed: wait briefly for the exit status to report it.
                let status = wait_exit(&mut running.child, Duration::from_secs(2));
                break Some(format!("closed stdout (exit: {status:?})"));
            }
        }
    };
    if let Some(why) = failure {
        let _ = running.child.kill();
        let _ = running.child.wait();
        // The pipes close once the process is gone; give the readers a moment to finish.
        let until = Instant::now() + Duration::from_secs(2);
        while running.readers.iter().any(|h| !h.is_finished()) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!(
            "gateway {} {why}\n--- config {} ---\n{}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            b.program.display(),
            config_path.display(),
            b.config,
            text(&running.stdout),
            text(&running.stderr),
        );
    }
    running.data_url = data.unwrap_or_default();
    running.admin_url = admin.unwrap_or_default();
    running
}

fn text(buf: &Arc<Mutex<Vec<u8>>>) -> String {
    String::from_utf8_lossy(&buf.lock().expect("output buffer")).into_owned()
}

fn wait_exit(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn addr_of(url: &str) -> SocketAddr {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let hostport = rest.split('/').next().unwrap_or(rest);
    hostport
        .parse()
        .unwrap_or_else(|e| panic!("announced address {url:?} is not ip:port: {e}"))
}

impl Gateway {
    /// Starts `jitgate serve --config <tmp>/proxy.toml` with `config_toml`.
    pub fn start(config_toml: &str) -> Gateway {
        Self::builder(config_toml).start()
    }

    pub fn builder(config_toml: &str) -> GatewayBuilder {
        GatewayBuilder {
            config: config_toml.to_string(),
            program: PathBuf::from(env!("CARGO_BIN_EXE_jitgate")),
            extra_args: Vec::new(),
            env: Vec::new(),
            files: Vec::new(),
            startup_timeout: DEFAULT_STARTUP_TIMEOUT,
        }
    }

    /// `http://127.0.0.1:PORT` (or `https://` with TLS), as announced.
    pub fn data_url(&self) -> &str {
        &self.running.data_url
    }

    pub fn admin_url(&self) -> &str {
        &self.running.admin_url
    }

    pub fn data_addr(&self) -> SocketAddr {
        addr_of(&self.running.data_url)
    }

    pub fn admin_addr(&self) -> SocketAddr {
        addr_of(&self.running.admin_url)
    }

    /// `data_url() + path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.running.data_url)
    }

    /// `admin_url() + path`.
    pub fn admin(&self, path: &str) -> String {
        format!("{}{path}", self.running.admin_url)
    }

    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// The temp dir holding the config and any files written with the builder.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn pid(&self) -> u32 {
        self.running.child.id()
    }

    /// Replaces the config atomically (write a temp file in the same dir, then rename), so a
    /// watcher never sees a half-written file.
    pub fn rewrite_config(&self, new: &str) {
        let tmp = self.dir.path().join(format!(".{CONFIG_FILE}.tmp"));
        std::fs::write(&tmp, new).expect("write temp config");
        std::fs::rename(&tmp, &self.config_path).expect("rename config into place");
    }

    /// Writes another file into the config dir (same atomic write).
    pub fn write_file(&self, rel_path: &str, contents: impl AsRef<[u8]>) {
        let path = self.dir.path().join(rel_path);
        let tmp = path.with_extension("harness-tmp");
        std::fs::write(&tmp, contents).expect("write temp file");
        std::fs::rename(&tmp, &path).expect("rename file into place");
    }

    /// Sends a signal with the `kill` command.
    pub fn signal(&self, sig: Sig) {
        let status = Command::new("kill")
            .arg(sig.flag())
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(
            status.success(),
            "kill {} {} failed",
            sig.flag(),
            self.pid()
        );
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        wait_exit(&mut self.running.child, timeout)
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.running.child.try_wait(), Ok(None))
    }

    pub fn stdout_text(&self) -> String {
        text(&self.running.stdout)
    }

    pub fn stderr_text(&self) -> String {
        text(&self.running.stderr)
    }

    /// Polls stderr (every 20 ms, without blocking the runtime) until it contains `needle`;
    /// false after `timeout`.
    pub async fn wait_for_stderr(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.stderr_text().contains(needle) {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Kills the process (SIGKILL) and starts it again with the same dir and current config.
    /// Addresses change when the config uses port 0.
    pub fn restart(&mut self) {
        self.kill();
        self.running = spawn(&self.builder, self.dir.path(), &self.config_path);
    }

    /// Stops with SIGTERM (SIGKILL after `grace`) and starts it again with the same dir and
    /// current config, as an orderly restart would; returns how the first process exited.
    pub fn restart_graceful(&mut self, grace: Duration) -> Option<ExitStatus> {
        let status = self.stop(grace);
        self.running = spawn(&self.builder, self.dir.path(), &self.config_path);
        status
    }

    /// Stops with SIGTERM, waiting up to `grace` before SIGKILL; returns the exit status.
    pub fn stop(&mut self, grace: Duration) -> Option<ExitStatus> {
        if self.is_running() {
            self.signal(Sig::Term);
        }
        let status = self.wait_exit(grace);
        if status.is_none() {
            self.kill();
        }
        status
    }

    fn kill(&mut self) {
        let _ = self.running.child.kill();
        let _ = self.running.child.wait();
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "--- gateway stderr (pid {}) ---\n{}",
                self.pid(),
                self.stderr_text()
            );
        }
    }
}
