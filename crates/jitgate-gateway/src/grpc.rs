//! gRPC as the gateway sees it: which requests are gRPC calls, how long their client will
//! wait, and the trailers-only answers the gateway gives them on its own behalf.

use std::time::Duration;

use http::header::{self, HeaderValue};
use http::{HeaderMap, Response};
use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};

use crate::body::ProxyBody;

/// gRPC status codes (grpc/doc/statuscodes.md).
pub const INVALID_ARGUMENT: u8 = 3;
/// See [`INVALID_ARGUMENT`].
pub const DEADLINE_EXCEEDED: u8 = 4;
/// See [`INVALID_ARGUMENT`].
pub const PERMISSION_DENIED: u8 = 7;
/// See [`INVALID_ARGUMENT`].
pub const RESOURCE_EXHAUSTED: u8 = 8;
/// See [`INVALID_ARGUMENT`].
pub const FAILED_PRECONDITION: u8 = 9;
/// See [`INVALID_ARGUMENT`].
pub const UNIMPLEMENTED: u8 = 12;
/// See [`INVALID_ARGUMENT`].
pub const INTERNAL: u8 = 13;
/// See [`INVALID_ARGUMENT`].
pub const UNAVAILABLE: u8 = 14;
/// See [`INVALID_ARGUMENT`].
pub const UNAUTHENTICATED: u8 = 16;

/// A trailers-only gRPC answer: HTTP 200, `grpc-status` and a percent-encoded `grpc-message`
/// in the only header block, and no body (gRPC over HTTP/2, "Responses").
pub fn answer(status: u8, message: &str) -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::Empty);
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    h.insert("grpc-status", HeaderValue::from(u16::from(status)));
    if let Ok(v) = HeaderValue::from_str(&percent_encode(message)) {
        h.insert("grpc-message", v);
    }
    resp
}

/// gRPC's `grpc-message` encoding: bytes outside printable ASCII, and `%`, percent-encoded.
pub fn percent_encode(s: &str) -> String {
    // `CONTROLS` is 0x00-0x1F and 0x7F; bytes above 0x7F are always encoded.
    const GRPC_MESSAGE: &AsciiSet = &CONTROLS.add(b'%');
    utf8_percent_encode(s, GRPC_MESSAGE).to_string()
}

/// Whether a request is a gRPC call (`content-type: application/grpc`, `+proto`, `+json`...),
/// which gets gRPC answers from the gateway.
pub fn is_call(headers: &HeaderMap) -> bool {
    const GRPC: &[u8] = b"application/grpc";
    // Every request with a body asks this: compared in place, without a lowercase copy.
    headers.get(header::CONTENT_TYPE).is_some_and(|v| {
        let ct = v.as_bytes();
        ct.get(..GRPC.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(GRPC))
            && matches!(ct.get(GRPC.len()), None | Some(b'+' | b';'))
    })
}

/// How long the client will wait for this call (`grpc-timeout`: up to 8 digits and a unit,
/// H M S m u n), if it said.
pub fn timeout(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get("grpc-timeout")?.as_bytes();
    let (digits, unit) = v.split_at(v.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b"H" => Duration::from_secs(n.saturating_mul(3600)),
        b"M" => Duration::from_secs(n.saturating_mul(60)),
        b"S" => Duration::from_secs(n),
        b"m" => Duration::from_millis(n),
        b"u" => Duration::from_micros(n),
        b"n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests;
