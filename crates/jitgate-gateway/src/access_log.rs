//! The access log (`[log] access`): one line per data-plane request on standard output,
//! `key=value` text or JSON, written after the response head is ready.
//!
//! Requests never write to stdout themselves: they append their line to a buffer, and a thread
//! of its own writes the buffer out at least every [`FLUSH_EVERY`] (sooner once 64 KiB are
//! waiting). So logging costs a memory copy per request, not a system call, and a stdout that
//! blocks (a stalled log shipper, a full pipe) stalls only that thread: once [`MAX_PENDING`]
//! bytes wait, further lines are dropped and counted (`jitgate_access_log_dropped_total`)
//! instead of holding up requests, the admin plane or the runtime. Diagnostics stay on
//! standard error.
//!
//! Every value a client controls is written as a JSON string (quoted, control characters
//! escaped) in both formats, so no request can forge or split a log line.

use std::io::Write;
use std::net::IpAddr;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use http::Version;
use jitgate_rules::config::AccessLog as Format;

/// The longest a written line waits in the buffer.
pub const FLUSH_EVERY: Duration = Duration::from_millis(200);
/// Waiting bytes that wake the writer before [`FLUSH_EVERY`].
const BATCH: usize = 64 * 1024;
/// Waiting bytes past which lines are dropped (about 16,000 lines): stdout is not keeping up.
pub const MAX_PENDING: usize = 4 * 1024 * 1024;
/// Longest raw target logged for a request that could not be parsed.
const MAX_RAW_TARGET: usize = 256;

/// One request, as logged.
#[derive(Debug)]
pub struct Entry<'a> {
    /// When the request arrived.
    pub at: SystemTime,
    /// `X-Request-Id` as forwarded.
    pub request_id: &'a str,
    /// The client address (the TCP peer).
    pub peer: IpAddr,
    /// The method as matched: every reading (`GET+DELETE`) when an override header or a body
    /// `_method` added one.
    pub method: &'a str,
    /// The canonical path (the raw target, clipped, when the request was malformed). Query
    /// strings are not logged: they carry credentials too often.
    pub path: &'a str,
    /// The client's HTTP version.
    pub version: Version,
    /// The status answered.
    pub status: u16,
    /// The route that decided, if any.
    pub route: Option<&'a str>,
    /// `allow`, `deny`, `approve` or `none`.
    pub action: &'a str,
    /// The ticket the request was held on or released by.
    pub ticket: Option<&'a str>,
    /// From arrival to the response head.
    pub duration: Duration,
}

/// The access-log writer of one process: a buffer and the thread that writes it out.
#[derive(Debug)]
pub struct Writer {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    state: Mutex<State>,
    /// Held from taking a batch to having written it, so batches reach stdout in order.
    order: Mutex<()>,
    /// Wakes the writer thread: a batch is ready, or the writer is dropped.
    wake: Condvar,
}

#[derive(Debug, Default)]
struct State {
    pending: Vec<u8>,
    /// The writer was woken for the batch waiting: one wake-up (a futex call) per batch, not
    /// one per line until the writer runs.
    woken: bool,
    closed: bool,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Default for Writer {
    fn default() -> Self {
        let inner = Arc::new(Inner::default());
        let thread = inner.clone();
        let spawned = std::thread::Builder::new()
            .name("jitgate-access-log".into())
            .spawn(move || write_out(&thread));
        if let Err(e) = spawned {
            // Without the thread nothing drains the buffer: lines are dropped and counted
            // once it is full, and `flush` still writes what waits.
            tracing::error!("cannot start the access-log writer: {e}");
        }
        Writer { inner }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.inner.lock().closed = true;
        self.inner.wake.notify_one();
    }
}

/// The writer thread: takes what waits, writes it, until the [`Writer`] is dropped.
fn write_out(inner: &Inner) {
    loop {
        let _in_order = inner.order.lock().unwrap_or_else(|e| e.into_inner());
        let batch = {
            let mut state = inner.lock();
            if state.pending.len() < BATCH && !state.closed {
                state = inner
                    .wake
                    .wait_timeout(state, FLUSH_EVERY)
                    .map_or_else(|e| e.into_inner().0, |(s, _)| s);
            }
            if state.closed && state.pending.is_empty() {
                return;
            }
            state.woken = false;
            std::mem::take(&mut state.pending)
        };
        write_stdout(&batch);
    }
}

fn write_stdout(batch: &[u8]) {
    if batch.is_empty() {
        return;
    }
    let mut out = std::io::stdout().lock();
    // A closed stdout loses the lines; it must not end the gateway.
    let _ = out.write_all(batch).and_then(|()| out.flush());
}

impl Writer {
    /// Logs `entry` in `format` (nothing for `off`). Never blocks on stdout; `false` when the
    /// line was dropped because [`MAX_PENDING`] bytes are already waiting.
    pub fn log(&self, format: Format, entry: &Entry<'_>) -> bool {
        let mut line = Vec::with_capacity(256);
        match format {
            Format::Off => return true,
            Format::Text => text(entry, &mut line),
            Format::Json => json(entry, &mut line),
        }
        line.push(b'\n');
        let mut state = self.inner.lock();
        if state.pending.len() + line.len() > MAX_PENDING {
            return false;
        }
        state.pending.extend_from_slice(&line);
        if state.pending.len() >= BATCH && !state.woken {
            state.woken = true;
            self.inner.wake.notify_one();
        }
        true
    }

    /// Writes out what waits, from the calling thread (which may block on stdout): at
    /// shutdown, and for the demo's walkthrough.
    pub fn flush(&self) {
        let _in_order = self.inner.order.lock().unwrap_or_else(|e| e.into_inner());
        let batch = std::mem::take(&mut self.inner.lock().pending);
        write_stdout(&batch);
    }
}

/// A JSON string: quotes, backslashes and control characters escaped.
fn quoted(s: &str, out: &mut Vec<u8>) {
    // Serialising a &str cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// A raw (unparsed) path as logged: without its `;` parameters (a session id, say) and
/// clipped to a bounded, valid length.
pub fn clip_raw(path: &str) -> &str {
    let target = path.split(';').next().unwrap_or_default();
    if target.len() <= MAX_RAW_TARGET {
        return target;
    }
    let mut end = MAX_RAW_TARGET;
    while !target.is_char_boundary(end) {
        end -= 1;
    }
    &target[..end]
}

fn version(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_3 => "HTTP/3",
        _ => "HTTP/1.1",
    }
}

/// `1.234`: milliseconds with three decimals, from integers (float formatting costs more than
/// the rest of the line).
fn millis(d: Duration, out: &mut Vec<u8>) {
    let micros = d.as_micros();
    let _ = write!(out, "{}.{:03}", micros / 1000, micros % 1000);
}

/// `2026-11-27T19:40:01.123Z`. The date and time to the second are formatted once a second per
/// thread; the milliseconds are appended.
fn timestamp(at: SystemTime, out: &mut Vec<u8>) {
    use std::cell::RefCell;
    thread_local! {
        static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let since = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = since.as_secs();
    SECOND.with(|cell| {
        let mut cached = cell.borrow_mut();
        if cached.0 != secs {
            let whole = SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
            let text = humantime::format_rfc3339_seconds(whole).to_string();
            // `...:SSZ`: keep the part before the zone designator.
            *cached = (secs, text.trim_end_matches('Z').to_string());
        }
        out.extend_from_slice(cached.1.as_bytes());
    });
    let _ = write!(out, ".{:03}Z", since.subsec_millis());
}

/// `ts=... request_id="..." peer=... method="GET" path="/x" version=HTTP/1.1 status=200
/// route="api" action=allow ticket=- duration_ms=0.412`
fn text(e: &Entry<'_>, out: &mut Vec<u8>) {
    out.extend_from_slice(b"ts=");
    timestamp(e.at, out);
    out.extend_from_slice(b" request_id=");
    quoted(e.request_id, out);
    let _ = write!(out, " peer={} method=", e.peer.to_canonical());
    quoted(e.method, out);
    out.extend_from_slice(b" path=");
    quoted(e.path, out);
    let _ = write!(
        out,
        " version={} status={} route=",
        version(e.version),
        e.status
    );
    match e.route {
        Some(r) => quoted(r, out),
        None => out.push(b'-'),
    }
    let _ = write!(out, " action={} ticket=", e.action);
    match e.ticket {
        Some(t) => quoted(t, out),
        None => out.push(b'-'),
    }
    out.extend_from_slice(b" duration_ms=");
    millis(e.duration, out);
}

/// One JSON object, written member by member (no intermediate value).
fn json(e: &Entry<'_>, out: &mut Vec<u8>) {
    let optional = |v: Option<&str>, out: &mut Vec<u8>| match v {
        Some(s) => quoted(s, out),
        None => out.extend_from_slice(b"null"),
    };
    out.extend_from_slice(b"{\"ts\":\"");
    timestamp(e.at, out);
    out.extend_from_slice(b"\",\"requestId\":");
    quoted(e.request_id, out);
    let _ = write!(out, ",\"peer\":\"{}\",\"method\":", e.peer.to_canonical());
    quoted(e.method, out);
    out.extend_from_slice(b",\"path\":");
    quoted(e.path, out);
    let _ = write!(
        out,
        ",\"version\":\"{}\",\"status\":{},\"route\":",
        version(e.version),
        e.status
    );
    optional(e.route, out);
    let _ = write!(out, ",\"action\":\"{}\",\"ticket\":", e.action);
    optional(e.ticket, out);
    out.extend_from_slice(b",\"durationMs\":");
    millis(e.duration, out);
    out.push(b'}');
}

#[cfg(test)]
mod tests;
