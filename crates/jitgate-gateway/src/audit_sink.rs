//! The `[audit] file` sink: every audit event this replica appends to the store is also
//! written to a JSON-lines file, one event per line, in order, once the store accepted it.
//!
//! With the Redis store several replicas append to one chain, so the events one replica
//! appends are not consecutive there. Each line is therefore the event re-chained in the
//! file's own chain ([`ticket::rechain`]: its own `seq`, `prev` and `hash`) carrying its
//! store `seq` and `hash` in `storeSeq` and `storeHash`, and the file verifies on its own
//! (`jitgate audit verify FILE`). A gateway continues the chain of the file's last line; a
//! last line that is not a whole, intact event refuses the start rather than beginning a
//! second chain in the same file.
//!
//! Writes happen on a task of their own, fed by the store's tap ([`Store::tap_audit`]): the
//! request path never waits for the disk. Each batch is written and `fdatasync`ed. A failed
//! write is logged at error level and cut back to the last whole line, and the batch is
//! retried with backoff while new events queue in memory (up to [`MAX_BACKLOG`]; beyond it
//! events are dropped from the file, counted and logged: the store keeps them). At
//! shutdown the queue is written out before the process exits.
//!
//! [`Store::tap_audit`]: jitgate_store::Store::tap_audit

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use jitgate_rules::ticket::{self, AuditEvent, GENESIS};
use jitgate_store::AuditTap;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

#[cfg(test)]
mod tests;

/// Events waiting for the file beyond this are dropped from it (and counted).
pub const MAX_BACKLOG: usize = 100_000;
/// Most events written (and synced) at once.
const BATCH: usize = 1000;
/// The first pause after a failed write; doubled while writes keep failing.
const RETRY_MIN: Duration = Duration::from_millis(100);
/// The longest pause between attempts.
const RETRY_MAX: Duration = Duration::from_secs(10);

/// Why the audit file cannot be used; the gateway does not start.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The file cannot be opened, read or locked.
    #[error("[audit] file {path}: {why}")]
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        why: String,
    },
    /// Its last line is not an intact event, so its chain cannot be continued.
    #[error("{path}:{line}: the last audit event is broken ({why}); not continuing its chain: restore the line, or move the file away to start a new one")]
    BrokenTail {
        /// The file.
        path: PathBuf,
        /// The line, from 1.
        line: u64,
        /// What is wrong with it.
        why: String,
    },
}

// === AuditFile ===

/// An open audit file and the head of its chain.
#[derive(Debug)]
pub struct AuditFile {
    path: PathBuf,
    file: File,
    /// Bytes of whole lines written so far: a failed write is cut back to this.
    len: u64,
    /// `seq` and `hash` of the last line ([`GENESIS`] and 0 for a new chain).
    head: (u64, String),
    /// The file does not end with a newline (an intact last line without one).
    newline_first: bool,
}

impl AuditFile {
    /// Opens (creating it, readable and writable by the owner only) and locks `path`, and
    /// finds the head of its chain: the last non-blank line, which must be an intact event.
    /// A missing or empty file starts a new chain.
    pub fn open(path: &Path) -> Result<AuditFile, SinkError> {
        use std::os::unix::fs::OpenOptionsExt as _;
        let open_err = |why: String| SinkError::Open {
            path: path.to_path_buf(),
            why,
        };
        let file = std::fs::OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| open_err(format!("cannot open: {e}")))?;
        // Its last line is read back, and a failed write cut back: a pipe or device cannot.
        let meta = file
            .metadata()
            .map_err(|e| open_err(format!("cannot read: {e}")))?;
        if !meta.is_file() {
            return Err(open_err("not a regular file".to_string()));
        }
        // Two processes appending to one file would interleave two chains.
        rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive).map_err(
            |e| {
                open_err(format!(
                    "cannot lock it ({e}): is another jitgate writing to it? Give every replica its own file"
                ))
            },
        )?;
        let Scan {
            len,
            last,
            ends_with_newline,
        } = scan(&file).map_err(|e| open_err(format!("cannot read: {e}")))?;
        let head = match last {
            None => (0, GENESIS.to_string()),
            Some((line, text)) => {
                let broken = |why: String| SinkError::BrokenTail {
                    path: path.to_path_buf(),
                    line,
                    why,
                };
                let raw: serde_json::Value = serde_json::from_slice(text.trim_ascii_end())
                    .map_err(|e| broken(format!("not JSON: {e}")))?;
                let e = ticket::check_alone(&raw).map_err(broken)?;
                (e.seq, e.hash)
            }
        };
        Ok(AuditFile {
            path: path.to_path_buf(),
            file,
            len,
            head,
            newline_first: len > 0 && !ends_with_newline,
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `seq` and `hash` of the chain's last line (`0` and [`GENESIS`] when there is none).
    pub fn head(&self) -> (u64, &str) {
        (self.head.0, &self.head.1)
    }

    /// Appends `events` (as the store chained them) as lines of the file's chain, and syncs.
    /// On failure nothing of the batch stays in the file (a partial write is cut back) and
    /// the head is unchanged, so the same batch can be tried again.
    pub fn append(&mut self, events: &[AuditEvent]) -> std::io::Result<()> {
        // Whatever a failed attempt left behind goes first.
        let actual = self.file.metadata()?.len();
        if actual > self.len {
            self.file.set_len(self.len)?;
        } else if actual < self.len {
            return Err(std::io::Error::other(format!(
                "the file shrank from {} to {actual} bytes (truncated or rotated by something \
                 else); not appending, its chain would no longer verify",
                self.len
            )));
        }
        let mut buf = Vec::with_capacity(events.len() * 512);
        if self.newline_first {
            buf.push(b'\n');
        }
        let (mut seq, mut prev) = self.head.clone();
        for e in events {
            seq += 1;
            let line = ticket::rechain(&prev, seq, e);
            serde_json::to_writer(&mut buf, &line)?;
            buf.push(b'\n');
            prev = line.hash;
        }
        let written = self
            .file
            .write_all(&buf)
            .and_then(|()| self.file.sync_data());
        if let Err(e) = written {
            // Cut back now if possible (else at the next attempt, above).
            let _ = self.file.set_len(self.len);
            return Err(e);
        }
        self.len += buf.len() as u64;
        self.head = (seq, prev);
        self.newline_first = false;
        Ok(())
    }

    /// Starts the writer task.
    pub fn start(self) -> AuditSink {
        let (tx, rx) = mpsc::unbounded_channel();
        let (close, closing) = watch::channel(false);
        let path = self.path.clone();
        let task = tokio::spawn(write_loop(self, rx, closing));
        AuditSink {
            path,
            tx,
            close,
            task,
        }
    }
}

/// What reading an audit file found.
struct Scan {
    /// Its length in bytes.
    len: u64,
    /// Its last non-blank line and that line's number (from 1).
    last: Option<(u64, Vec<u8>)>,
    /// Whether it ends with a newline (or is empty).
    ends_with_newline: bool,
}

/// Reads the file once, keeping one line in memory.
fn scan(file: &File) -> std::io::Result<Scan> {
    let mut reader = BufReader::new(file);
    let mut buf = Vec::new();
    let mut found = Scan {
        len: 0,
        last: None,
        ends_with_newline: true,
    };
    let mut number = 0;
    loop {
        buf.clear();
        let n = reader.read_until(b'\n', &mut buf)?;
        if n == 0 {
            return Ok(found);
        }
        found.len += n as u64;
        number += 1;
        found.ends_with_newline = buf.last() == Some(&b'\n');
        if !buf.iter().all(u8::is_ascii_whitespace) {
            found.last = Some((number, std::mem::take(&mut buf)));
        }
    }
}

// === AuditSink ===

/// What became of the events handed to a sink.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SinkReport {
    /// Written to the file.
    pub written: u64,
    /// Not written: dropped beyond [`MAX_BACKLOG`], or still queued when the sink closed
    /// with the file failing.
    pub unwritten: u64,
}

/// The running writer of an audit file.
pub struct AuditSink {
    path: PathBuf,
    tx: mpsc::UnboundedSender<AuditEvent>,
    close: watch::Sender<bool>,
    task: JoinHandle<SinkReport>,
}

impl AuditSink {
    /// Where the store sends what it appended ([`jitgate_store::Store::tap_audit`]).
    pub fn tap(&self) -> AuditTap {
        self.tx.clone()
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes out what was sent before this call and stops, within `timeout`. Events sent
    /// afterwards are not written. `None` when the writer did not finish in time.
    pub async fn close(self, timeout: Duration) -> Option<SinkReport> {
        let AuditSink {
            path,
            tx,
            close,
            mut task,
        } = self;
        drop(tx);
        close.send_replace(true);
        match tokio::time::timeout(timeout, &mut task).await {
            Ok(Ok(report)) => Some(report),
            Ok(Err(e)) => {
                tracing::error!(file = %path.display(), "the audit file writer failed: {e}");
                None
            }
            Err(_) => {
                task.abort();
                tracing::error!(
                    file = %path.display(),
                    "the audit file writer did not finish within {timeout:?}; events still queued are not in the file (the store has them)"
                );
                None
            }
        }
    }
}

/// Queued events and what became of the others.
struct Queue {
    events: VecDeque<AuditEvent>,
    report: SinkReport,
    /// Events dropped since the last time that was logged.
    dropped: u64,
}

impl Queue {
    fn push(&mut self, e: AuditEvent) {
        if self.events.len() < MAX_BACKLOG {
            self.events.push_back(e);
        } else {
            self.report.unwritten += 1;
            self.dropped += 1;
        }
    }

    /// Takes everything already sent, without waiting.
    fn drain(&mut self, rx: &mut mpsc::UnboundedReceiver<AuditEvent>) {
        while let Ok(e) = rx.try_recv() {
            self.push(e);
        }
    }
}

async fn write_loop(
    file: AuditFile,
    mut rx: mpsc::UnboundedReceiver<AuditEvent>,
    mut closing: watch::Receiver<bool>,
) -> SinkReport {
    let path = file.path.display().to_string();
    let mut file = Some(file);
    let mut q = Queue {
        events: VecDeque::new(),
        report: SinkReport::default(),
        dropped: 0,
    };
    let mut closed = false;
    let mut retry = RETRY_MIN;
    let mut failing = false;
    // Attempts left once closing: the process is about to exit, so no long backoff.
    let mut last_tries = 3;
    loop {
        if q.events.is_empty() {
            if closed {
                break;
            }
            tokio::select! {
                got = rx.recv() => match got {
                    Some(e) => q.push(e),
                    None => closed = true,
                },
                _ = closing.wait_for(|c| *c) => closed = true,
            }
        }
        q.drain(&mut rx);
        if q.dropped > 0 {
            tracing::error!(
                file = %path,
                "audit file backlog full ({MAX_BACKLOG} events): {} event(s) dropped from the file (the store has them)",
                q.dropped
            );
            q.dropped = 0;
        }
        if q.events.is_empty() {
            continue;
        }
        let batch: Vec<AuditEvent> = q.events.iter().take(BATCH).cloned().collect();
        let Some(mut f) = file.take() else { break };
        let outcome = tokio::task::spawn_blocking(move || {
            let r = f.append(&batch);
            (f, batch.len(), r)
        })
        .await;
        let (f, n, result) = match outcome {
            Ok(done) => done,
            Err(e) => {
                tracing::error!(file = %path, "the audit file writer failed: {e}");
                break;
            }
        };
        file = Some(f);
        match result {
            Ok(()) => {
                q.events.drain(..n);
                q.report.written += n as u64;
                if failing {
                    tracing::warn!(file = %path, "audit file writable again");
                    failing = false;
                }
                retry = RETRY_MIN;
            }
            Err(e) if closed => {
                last_tries -= 1;
                if last_tries == 0 {
                    tracing::error!(
                        file = %path,
                        "cannot write audit events at shutdown: {e}; {} event(s) are not in the file (the store has them)",
                        q.events.len()
                    );
                    break;
                }
                tracing::error!(file = %path, "cannot write audit events at shutdown: {e}; trying again");
                tokio::time::sleep(RETRY_MIN).await;
            }
            Err(e) => {
                failing = true;
                tracing::error!(
                    file = %path,
                    "cannot write audit events: {e}; {} event(s) waiting, retrying in {retry:?}",
                    q.events.len()
                );
                // Keep taking events while waiting; closing cuts the wait short.
                let wait = tokio::time::sleep(retry);
                tokio::pin!(wait);
                loop {
                    tokio::select! {
                        () = &mut wait => break,
                        got = rx.recv(), if !closed => match got {
                            Some(e) => q.push(e),
                            None => closed = true,
                        },
                        _ = closing.wait_for(|c| *c), if !closed => closed = true,
                    }
                    if closed {
                        break;
                    }
                }
                retry = (retry * 2).min(RETRY_MAX);
            }
        }
    }
    q.report.unwritten += q.events.len() as u64;
    q.report
}
