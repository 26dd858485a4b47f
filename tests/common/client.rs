//! Test clients: HTTP/1.1, h2c (prior knowledge) and HTTPS (ALPN h2 + http/1.1) over
//! hyper-util's legacy client, and a raw TCP client for byte-exact requests no normal client
//! would send.

use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode, Version};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client as Legacy;
use hyper_util::rt::TokioExecutor;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::tls::{client_config_from_pem, IssuedCert};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Request body type accepted by [`Client::request`].
pub type ReqBody = UnsyncBoxBody<Bytes, BoxError>;

pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// A whole response, body collected.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub trailers: Option<HeaderMap>,
}

impl Response {
    /// First value of header `name` as a string (None if absent or not visible ASCII).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Body parsed as JSON; panics with the body text if it isn't.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("response body is not JSON ({e}): {}", self.text()))
    }
}

/// A body from bytes.
pub fn body(b: impl Into<Bytes>) -> ReqBody {
    Full::new(b.into()).map_err(|e| match e {}).boxed_unsync()
}

/// A body of `data` followed by `trailers` (chunked on HTTP/1.1, a trailing HEADERS frame on h2).
pub fn body_with_trailers(data: impl Into<Bytes>, trailers: HeaderMap) -> ReqBody {
    FramesBody {
        frames: vec![Frame::data(data.into()), Frame::trailers(trailers)],
    }
    .boxed_unsync()
}

/// Yields a fixed list of frames, in order.
struct FramesBody {
    frames: Vec<Frame<Bytes>>,
}

impl Body for FramesBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.frames.is_empty() {
            Poll::Ready(None)
        } else {
            Poll::Ready(Some(Ok(self.frames.remove(0))))
        }
    }
}

enum Inner {
    Http(Legacy<HttpConnector, ReqBody>),
    Https(Legacy<HttpsConnector<HttpConnector>, ReqBody>),
}

/// A pooled client for one protocol choice.
pub struct Client {
    inner: Inner,
    timeout: Duration,
}

impl Client {
    /// HTTP/1.1 over plain TCP.
    pub fn http1() -> Self {
        let c = Legacy::builder(TokioExecutor::new()).build_http();
        Self {
            inner: Inner::Http(c),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// HTTP/2 over plain TCP with prior knowledge (h2c).
    pub fn h2c() -> Self {
        let c = Legacy::builder(TokioExecutor::new())
            .http2_only(true)
            .build_http();
        Self {
            inner: Inner::Http(c),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// HTTPS trusting only the CA(s) in `ca_pem`; offers ALPN h2 and http/1.1 (h2 preferred).
    pub fn https(ca_pem: &str) -> Self {
        Self::https_inner(ca_pem, None, true)
    }

    /// HTTPS offering only ALPN `http/1.1`.
    pub fn https_http1(ca_pem: &str) -> Self {
        Self::https_inner(ca_pem, None, false)
    }

    /// HTTPS presenting a client certificate (mutual TLS).
    pub fn https_with_client_cert(ca_pem: &str, client: &IssuedCert) -> Self {
        Self::https_inner(ca_pem, Some(client), true)
    }

    fn https_inner(ca_pem: &str, client: Option<&IssuedCert>, h2: bool) -> Self {
        let mut config = client_config_from_pem(ca_pem, client);
        let connector = if h2 {
            hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config(config)
                .https_only()
                .enable_all_versions()
                .build()
        } else {
            // The builder offers no ALPN at all for HTTP/1.1-only; offer http/1.1 like curl does.
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            let mut http = HttpConnector::new();
            http.enforce_http(false);
            HttpsConnector::from((http, config))
        };
        let c = Legacy::builder(TokioExecutor::new()).build(connector);
        Self {
            inner: Inner::Https(c),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Per-request timeout (default 30 s), covering the head and the whole body.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sends a request and collects the response; panics on any transport error or timeout.
    pub async fn send(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Response {
        match self.try_send(method, url, headers, body).await {
            Ok(r) => r,
            Err(e) => panic!("{method} {url}: {e}"),
        }
    }

    /// Like [`Client::send`] but returns transport errors and timeouts as `Err`.
    pub async fn try_send(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Result<Response, String> {
        let method = Method::from_bytes(method.as_bytes()).map_err(|e| e.to_string())?;
        let mut req = Request::builder().method(method).uri(url);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req
            .body(self::body(body))
            .map_err(|e| format!("building request: {e}"))?;
        self.request(req).await
    }

    /// Sends an arbitrary request (streaming bodies, trailers, explicit version).
    pub async fn request(&self, req: Request<ReqBody>) -> Result<Response, String> {
        let fut = async {
            let resp = match &self.inner {
                Inner::Http(c) => c.request(req).await,
                Inner::Https(c) => c.request(req).await,
            }
            .map_err(|e| format!("{e:?}"))?;
            let (parts, body) = resp.into_parts();
            let collected = body.collect().await.map_err(|e| format!("body: {e}"))?;
            let trailers = collected.trailers().cloned();
            Ok(Response {
                status: parts.status,
                version: parts.version,
                headers: parts.headers,
                body: collected.to_bytes(),
                trailers,
            })
        };
        tokio::time::timeout(self.timeout, fut)
            .await
            .map_err(|_| format!("timed out after {:?}", self.timeout))?
    }
}

/// One HTTP/1.1 request with a fresh connection-less client: `send("GET", url, &[], "")`.
pub async fn send(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Response {
    Client::http1().send(method, url, headers, body).await
}

/// Writes `bytes` verbatim to `addr` and reads one response: the head, then a body framed by
/// Content-Length or chunked encoding, or up to EOF (10 s timeout; whatever arrived by then is
/// returned). A 1xx/204/304 response or a `HEAD`-looking request ends at the head.
pub async fn raw_request(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    raw_request_timeout(addr, bytes, Duration::from_secs(10)).await
}

pub async fn raw_request_timeout(addr: SocketAddr, bytes: &[u8], timeout: Duration) -> Vec<u8> {
    raw_exchange(addr, bytes, timeout, false).await
}

/// Writes `bytes` verbatim (e.g. several pipelined requests) and reads until the server closes
/// the connection or `timeout` passes; returns everything read.
pub async fn raw_until_close(addr: SocketAddr, bytes: &[u8], timeout: Duration) -> Vec<u8> {
    raw_exchange(addr, bytes, timeout, true).await
}

async fn raw_exchange(addr: SocketAddr, bytes: &[u8], timeout: Duration, to_eof: bool) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    stream.write_all(bytes).await.expect("write raw request");
    let head_only = bytes.starts_with(b"HEAD ");
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(timeout, async {
        let mut tmp = [0u8; 16 * 1024];
        loop {
            if !to_eof && response_complete(&buf, head_only) {
                return;
            }
            match stream.read(&mut tmp).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&tmp[..n]),
            }
        }
    })
    .await;
    buf
}

/// Whether `buf` holds a complete HTTP/1.x response.
fn response_complete(buf: &[u8], head_only: bool) -> bool {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let parsed = RawResponse::parse(&buf[..end + 4]);
    let body = &buf[end + 4..];
    if head_only || parsed.status < 200 || parsed.status == 204 || parsed.status == 304 {
        return true;
    }
    if parsed
        .header("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
    {
        return dechunk(body).is_some();
    }
    match parsed
        .header("content-length")
        .and_then(|v| v.parse::<usize>().ok())
    {
        Some(n) => body.len() >= n,
        None => false, // read to EOF
    }
}

/// Decodes a complete chunked body; `None` if incomplete or malformed.
fn dechunk(mut b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let i = b.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&b[..i]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        b = &b[i + 2..];
        if size == 0 {
            // Trailers end with an empty line.
            let mut rest = b;
            loop {
                let j = rest.windows(2).position(|w| w == b"\r\n")?;
                if j == 0 {
                    return Some(out);
                }
                rest = &rest[j + 2..];
            }
        }
        if b.len() < size + 2 {
            return None;
        }
        out.extend_from_slice(&b[..size]);
        b = &b[size + 2..];
    }
}

/// A parsed raw HTTP/1.x response, for assertions on [`raw_request`] output.
#[derive(Debug, Clone)]
pub struct RawResponse {
    /// 0 if the status line did not parse.
    pub status: u16,
    pub status_line: String,
    /// Header lines split at the first colon, names as sent, values trimmed.
    pub headers: Vec<(String, String)>,
    /// Body, de-chunked if it was chunked.
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn parse(raw: &[u8]) -> Self {
        let end = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map_or(raw.len(), |i| i + 4);
        let head = String::from_utf8_lossy(&raw[..end]);
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or("").to_string();
        let status = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.to_string(), v.trim().to_string()))
            .collect();
        let raw_body = &raw[end.min(raw.len())..];
        let chunked = headers.iter().any(|(k, v)| {
            k.eq_ignore_ascii_case("transfer-encoding")
                && v.to_ascii_lowercase().contains("chunked")
        });
        let body = if chunked {
            dechunk(raw_body).unwrap_or_else(|| raw_body.to_vec())
        } else {
            raw_body.to_vec()
        };
        Self {
            status,
            status_line,
            headers,
            body,
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}
