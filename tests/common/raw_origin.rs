//! A byte-recording HTTP/1.1 origin: a plain TCP listener that keeps the exact request head bytes
//! it received (and the body bytes as framed on the wire), so a test can assert what the gateway
//! forwarded byte for byte. It answers every request `200 OK` with `Content-Length` and keeps the
//! connection alive unless the request said `Connection: close`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{oneshot, watch};

/// Longest head accepted; a larger one is recorded as-is and the connection is closed.
const MAX_HEAD: usize = 64 * 1024;
/// Body bytes kept per request; the rest is only counted.
const MAX_KEPT_BODY: usize = 1024 * 1024;

pub const RAW_RESPONSE: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok";

#[derive(Debug, Clone)]
pub struct RawRecorded {
    pub seq: usize,
    /// Connection number, from 0.
    pub conn: usize,
    /// Request line and header lines through the blank line, exactly as received.
    pub head: Vec<u8>,
    /// Body bytes as framed on the wire (chunk-size lines included), up to 1 MiB.
    pub body: Vec<u8>,
    /// Total framed body length.
    pub body_len: u64,
}

impl RawRecorded {
    pub fn head_str(&self) -> String {
        String::from_utf8_lossy(&self.head).into_owned()
    }

    /// The request line without CRLF.
    pub fn request_line(&self) -> String {
        let s = self.head_str();
        s.split("\r\n").next().unwrap_or("").to_string()
    }

    /// The request-target from the request line.
    pub fn target(&self) -> String {
        self.request_line()
            .split(' ')
            .nth(1)
            .unwrap_or("")
            .to_string()
    }

    /// Header lines (without CRLF) in received order, names as sent.
    pub fn header_lines(&self) -> Vec<String> {
        self.head_str()
            .split("\r\n")
            .skip(1)
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect()
    }

    /// Values of header `name` (case-insensitive), in received order.
    pub fn header_values(&self, name: &str) -> Vec<String> {
        self.header_lines()
            .iter()
            .filter_map(|l| l.split_once(':'))
            .filter(|(k, _)| k.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_string())
            .collect()
    }
}

struct State {
    requests: Mutex<Vec<RawRecorded>>,
    changed: watch::Sender<u64>,
    conns: Mutex<usize>,
}

impl State {
    fn push(&self, conn: usize, head: Vec<u8>, body: Vec<u8>, body_len: u64) {
        {
            let mut reqs = self.requests.lock().expect("raw origin lock");
            let seq = reqs.len();
            reqs.push(RawRecorded {
                seq,
                conn,
                head,
                body,
                body_len,
            });
        }
        self.changed.send_modify(|v| *v += 1);
    }
}

pub struct RawOrigin {
    addr: SocketAddr,
    state: Arc<State>,
    shutdown: Option<oneshot::Sender<()>>,
}

impl RawOrigin {
    pub fn start() -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind raw origin");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("raw origin addr");
        let (changed, _) = watch::channel(0);
        let state = Arc::new(State {
            requests: Mutex::new(Vec::new()),
            changed,
            conns: Mutex::new(0),
        });
        let (tx, rx) = oneshot::channel::<()>();
        let st = state.clone();
        std::thread::Builder::new()
            .name(format!("raw-origin-{addr}"))
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("raw origin runtime");
                rt.block_on(async move {
                    let listener =
                        tokio::net::TcpListener::from_std(listener).expect("tokio listener");
                    let accept = async {
                        loop {
                            let Ok((stream, _)) = listener.accept().await else {
                                continue;
                            };
                            let conn = {
                                let mut c = st.conns.lock().expect("raw origin lock");
                                *c += 1;
                                *c - 1
                            };
                            tokio::spawn(serve(stream, conn, st.clone()));
                        }
                    };
                    tokio::select! {
                        _ = accept => {}
                        _ = rx => {}
                    }
                });
                rt.shutdown_timeout(Duration::from_millis(200));
            })
            .expect("spawn raw origin thread");
        Self {
            addr,
            state,
            shutdown: Some(tx),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn requests(&self) -> Vec<RawRecorded> {
        self.state.requests.lock().expect("raw origin lock").clone()
    }

    pub fn count(&self) -> usize {
        self.state.requests.lock().expect("raw origin lock").len()
    }

    /// Waits until `n` complete requests have been recorded; panics after `timeout`.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<RawRecorded> {
        let mut rx = self.state.changed.subscribe();
        let wait = async {
            loop {
                let snapshot = self.requests();
                if snapshot.len() >= n {
                    return snapshot;
                }
                if rx.changed().await.is_err() {
                    return self.requests();
                }
            }
        };
        match tokio::time::timeout(timeout, wait).await {
            Ok(r) => r,
            Err(_) => panic!(
                "raw origin: waited {timeout:?} for {n} requests, have {:#?}",
                self.requests()
            ),
        }
    }
}

impl Drop for RawOrigin {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

enum Framing {
    None,
    Length(u64),
    Chunked,
}

fn framing(head: &[u8]) -> (Framing, bool) {
    let text = String::from_utf8_lossy(head);
    let mut framing = Framing::None;
    let mut close = false;
    for line in text.split("\r\n").skip(1) {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let (k, v) = (k.trim(), v.trim());
        if k.eq_ignore_ascii_case("transfer-encoding") && v.to_ascii_lowercase().contains("chunked")
        {
            framing = Framing::Chunked;
        } else if k.eq_ignore_ascii_case("content-length") && !matches!(framing, Framing::Chunked) {
            framing = v.parse().map(Framing::Length).unwrap_or(Framing::None);
        } else if k.eq_ignore_ascii_case("connection") && v.eq_ignore_ascii_case("close") {
            close = true;
        }
    }
    (framing, close)
}

/// Buffered reader over the connection that keeps leftover bytes between requests.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    async fn fill(&mut self) -> std::io::Result<bool> {
        let mut tmp = [0u8; 16 * 1024];
        let n = self.stream.read(&mut tmp).await?;
        self.buf.extend_from_slice(&tmp[..n]);
        Ok(n > 0)
    }

    /// Takes exactly `n` bytes (appending up to the keep limit to `out`).
    async fn take(
        &mut self,
        mut n: u64,
        out: &mut Vec<u8>,
        total: &mut u64,
    ) -> std::io::Result<()> {
        while n > 0 {
            if self.buf.is_empty() && !self.fill().await? {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            let k = (self.buf.len() as u64).min(n) as usize;
            let room = MAX_KEPT_BODY.saturating_sub(out.len()).min(k);
            out.extend_from_slice(&self.buf[..room]);
            self.buf.drain(..k);
            *total += k as u64;
            n -= k as u64;
        }
        Ok(())
    }

    /// Takes one CRLF-terminated line, including the CRLF.
    async fn line(&mut self, out: &mut Vec<u8>, total: &mut u64) -> std::io::Result<Vec<u8>> {
        loop {
            if let Some(i) = find(&self.buf, b"\r\n") {
                let line: Vec<u8> = self.buf.drain(..i + 2).collect();
                *total += line.len() as u64;
                if out.len() + line.len() <= MAX_KEPT_BODY {
                    out.extend_from_slice(&line);
                }
                return Ok(line);
            }
            if self.buf.len() > MAX_HEAD || !self.fill().await? {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        }
    }
}

async fn serve(stream: TcpStream, conn_id: usize, state: Arc<State>) {
    let _ = stream.set_nodelay(true);
    let mut conn = Conn {
        stream,
        buf: Vec::new(),
    };
    loop {
        let head = loop {
            if let Some(i) = find(&conn.buf, b"\r\n\r\n") {
                break conn.buf.drain(..i + 4).collect::<Vec<u8>>();
            }
            if conn.buf.len() > MAX_HEAD {
                state.push(conn_id, std::mem::take(&mut conn.buf), Vec::new(), 0);
                return;
            }
            match conn.fill().await {
                Ok(true) => {}
                _ => {
                    if !conn.buf.is_empty() {
                        // A partial head before EOF is still evidence of what was sent.
                        state.push(conn_id, std::mem::take(&mut conn.buf), Vec::new(), 0);
                    }
                    return;
                }
            }
        };
        let (framing, close) = framing(&head);
        let mut body = Vec::new();
        let mut total = 0u64;
        let read = async {
            match framing {
                Framing::None => Ok(()),
                Framing::Length(n) => conn.take(n, &mut body, &mut total).await,
                Framing::Chunked => loop {
                    let line = conn.line(&mut body, &mut total).await?;
                    let size_text = String::from_utf8_lossy(&line);
                    let size_text = size_text.trim().split(';').next().unwrap_or("").trim();
                    let size = u64::from_str_radix(size_text, 16)
                        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidData))?;
                    if size == 0 {
                        // Trailer section, through the empty line.
                        while conn.line(&mut body, &mut total).await? != b"\r\n" {}
                        return Ok(());
                    }
                    conn.take(size + 2, &mut body, &mut total).await?;
                },
            }
        };
        let ok = read.await.is_ok();
        state.push(conn_id, head, body, total);
        if !ok || conn.stream.write_all(RAW_RESPONSE).await.is_err() || close {
            let _ = conn.stream.shutdown().await;
            return;
        }
    }
}
