//! The access log (`[log] access`): one line per data-plane request on standard output,
//! `key=value` text or JSON, written after the response head is ready.
//!
//! Lines are buffered and written out when the buffer fills and at least every
//! [`FLUSH_EVERY`], so logging costs a memory copy per request, not a system call; a line is
//! on stdout within that interval. Diagnostics stay on standard error.
//!
//! Every value a client controls is written as a JSON string (quoted, control characters
//! escaped) in both formats, so no request can forge or split a log line.

use std::io::{BufWriter, Stdout, Write};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use http::Version;
use jitgate_rules::config::AccessLog as Format;

/// The longest a written line waits in the buffer.
pub const FLUSH_EVERY: Duration = Duration::from_millis(200);
/// Buffered bytes before a write-out.
const BUFFER: usize = 64 * 1024;
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

/// The access-log writer of one process.
#[derive(Debug)]
pub struct Writer {
    out: Mutex<BufWriter<Stdout>>,
}

impl Default for Writer {
    fn default() -> Self {
        Writer {
            out: Mutex::new(BufWriter::with_capacity(BUFFER, std::io::stdout())),
        }
    }
}

impl Writer {
    /// Logs `entry` in `format` (nothing for `off`).
    pub fn log(&self, format: Format, entry: &Entry<'_>) {
        let mut line = Vec::with_capacity(256);
        match format {
            Format::Off => return,
            Format::Text => text(entry, &mut line),
            Format::Json => json(entry, &mut line),
        }
        line.push(b'\n');
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        // A full or closed stdout must not fail the request; the line is lost.
        let _ = out.write_all(&line);
    }

    /// Writes out what is buffered.
    pub fn flush(&self) {
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        let _ = out.flush();
    }
}

/// A JSON string: quotes, backslashes and control characters escaped.
fn quoted(s: &str, out: &mut Vec<u8>) {
    // Serialising a &str cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// Clips a raw (unparsed) target to a bounded, valid length.
pub fn clip_raw(target: &str) -> &str {
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

fn millis(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1000.0)
}

/// `ts=... request_id="..." peer=... method="GET" path="/x" version=HTTP/1.1 status=200
/// route="api" action=allow ticket=- duration_ms=0.412`
fn text(e: &Entry<'_>, out: &mut Vec<u8>) {
    let _ = write!(
        out,
        "ts={} request_id=",
        humantime::format_rfc3339_millis(e.at)
    );
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
    let _ = write!(out, " duration_ms={}", millis(e.duration));
}

fn json(e: &Entry<'_>, out: &mut Vec<u8>) {
    let v = serde_json::json!({
        "ts": humantime::format_rfc3339_millis(e.at).to_string(),
        "requestId": e.request_id,
        "peer": e.peer.to_canonical().to_string(),
        "method": e.method,
        "path": e.path,
        "version": version(e.version),
        "status": e.status,
        "route": e.route,
        "action": e.action,
        "ticket": e.ticket,
        "durationMs": (e.duration.as_secs_f64() * 1e6).round() / 1e3,
    });
    let _ = serde_json::to_writer(&mut *out, &v);
}

#[cfg(test)]
mod tests;
