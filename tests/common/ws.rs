//! Minimal RFC 6455 framing and a tiny client: enough to prove that an upgrade and masked frames
//! pass through the gateway intact. Not a general WebSocket implementation (no extensions, no
//! fragmentation reassembly: frames are echoed one for one).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

pub const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

pub const OP_CONT: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

/// Largest payload [`read_frame`] accepts; tests never need more.
pub const MAX_PAYLOAD: u64 = 16 * 1024 * 1024;

/// `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key`.
pub fn accept_key(key: &str) -> String {
    let mut input = key.trim().as_bytes().to_vec();
    input.extend_from_slice(GUID.as_bytes());
    let digest = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, &input);
    base64(digest.as_ref())
}

/// Standard base64 with padding (the accept key is the only user).
pub fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub fin: bool,
    pub opcode: u8,
    /// Whether the frame arrived masked (client-to-server frames must be).
    pub masked: bool,
    /// Unmasked payload.
    pub payload: Vec<u8>,
}

impl Frame {
    pub fn text(s: &str) -> Self {
        Self {
            fin: true,
            opcode: OP_TEXT,
            masked: false,
            payload: s.as_bytes().to_vec(),
        }
    }

    pub fn binary(b: &[u8]) -> Self {
        Self {
            fin: true,
            opcode: OP_BINARY,
            masked: false,
            payload: b.to_vec(),
        }
    }

    pub fn close(code: u16, reason: &str) -> Self {
        let mut payload = code.to_be_bytes().to_vec();
        payload.extend_from_slice(reason.as_bytes());
        Self {
            fin: true,
            opcode: OP_CLOSE,
            masked: false,
            payload,
        }
    }
}

/// Serialises a frame; `mask` is required for client frames and must be `None` for server frames.
pub fn encode(frame: &Frame, mask: Option<[u8; 4]>) -> Vec<u8> {
    let len = frame.payload.len();
    let mut out = Vec::with_capacity(len + 14);
    out.push((if frame.fin { 0x80 } else { 0 }) | (frame.opcode & 0x0F));
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    if len < 126 {
        out.push(mask_bit | len as u8);
    } else if len <= usize::from(u16::MAX) {
        out.push(mask_bit | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(mask_bit | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    match mask {
        Some(key) => {
            out.extend_from_slice(&key);
            out.extend(
                frame
                    .payload
                    .iter()
                    .enumerate()
                    .map(|(i, b)| b ^ key[i % 4]),
            );
        }
        None => out.extend_from_slice(&frame.payload),
    }
    out
}

/// Reads one frame; `Ok(None)` on a clean EOF before the first byte.
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> std::io::Result<Option<Frame>> {
    let mut head = [0u8; 2];
    match r.read_exact(&mut head[..1]).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    r.read_exact(&mut head[1..]).await?;
    let fin = head[0] & 0x80 != 0;
    let opcode = head[0] & 0x0F;
    let masked = head[1] & 0x80 != 0;
    let len = match head[1] & 0x7F {
        126 => u64::from(r.read_u16().await?),
        127 => r.read_u64().await?,
        n => u64::from(n),
    };
    if len > MAX_PAYLOAD {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("frame of {len} bytes is larger than the test limit"),
        ));
    }
    let mut key = [0u8; 4];
    if masked {
        r.read_exact(&mut key).await?;
    }
    let mut payload = vec![0u8; len as usize];
    r.read_exact(&mut payload).await?;
    if masked {
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= key[i % 4];
        }
    }
    Ok(Some(Frame {
        fin,
        opcode,
        masked,
        payload,
    }))
}

/// Server side echo loop used by the origin: text/binary/continuation frames come back unmasked
/// with the same opcode, pings get pongs, a close is answered with a close and ends the loop.
/// An unmasked client frame is a protocol error (1002), which is how a test notices a proxy that
/// re-frames traffic wrongly.
pub async fn echo<S: AsyncRead + AsyncWrite + Unpin>(mut io: S) -> std::io::Result<()> {
    loop {
        let Some(frame) = read_frame(&mut io).await? else {
            return Ok(());
        };
        if !frame.masked {
            io.write_all(&encode(&Frame::close(1002, "unmasked client frame"), None))
                .await?;
            return io.shutdown().await;
        }
        let reply = match frame.opcode {
            OP_TEXT | OP_BINARY | OP_CONT => Frame {
                masked: false,
                ..frame
            },
            OP_PING => Frame {
                fin: true,
                opcode: OP_PONG,
                masked: false,
                payload: frame.payload,
            },
            OP_PONG => continue,
            OP_CLOSE => {
                let reply = Frame {
                    fin: true,
                    opcode: OP_CLOSE,
                    masked: false,
                    payload: frame.payload,
                };
                io.write_all(&encode(&reply, None)).await?;
                return io.shutdown().await;
            }
            _ => {
                io.write_all(&encode(&Frame::close(1002, "unknown opcode"), None))
                    .await?;
                return io.shutdown().await;
            }
        };
        io.write_all(&encode(&reply, None)).await?;
        io.flush().await?;
    }
}

/// A WebSocket client over plain TCP (through the gateway's data plane or straight to an origin).
pub struct WsClient {
    stream: TcpStream,
    /// The raw 101 response head as received.
    pub response_head: String,
    mask_counter: u32,
}

impl WsClient {
    /// Performs the HTTP/1.1 upgrade on `path`, with `host` as the Host header and extra headers.
    /// Panics unless the answer is `101` with the right `Sec-WebSocket-Accept`.
    pub async fn connect(addr: SocketAddr, path: &str, extra_headers: &[(&str, &str)]) -> Self {
        match Self::try_connect(addr, path, extra_headers).await {
            Ok(c) => c,
            Err(e) => panic!("websocket connect to {addr}{path} failed: {e}"),
        }
    }

    /// Like [`WsClient::connect`] but returns the response head on a non-101 answer.
    pub async fn try_connect(
        addr: SocketAddr,
        path: &str,
        extra_headers: &[(&str, &str)],
    ) -> Result<Self, String> {
        let key = "dGhlIHNhbXBsZSBub25jZQ==";
        let mut req = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        );
        for (k, v) in extra_headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        let fut = async {
            let mut stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
            stream
                .write_all(req.as_bytes())
                .await
                .map_err(|e| e.to_string())?;
            // Read byte by byte up to the end of the head so no frame bytes are swallowed.
            let mut head = Vec::new();
            while !head.ends_with(b"\r\n\r\n") {
                let b = stream
                    .read_u8()
                    .await
                    .map_err(|e| format!("{e} after {:?}", String::from_utf8_lossy(&head)))?;
                head.push(b);
                if head.len() > 64 * 1024 {
                    return Err("response head too large".to_string());
                }
            }
            Ok::<_, String>((stream, String::from_utf8_lossy(&head).into_owned()))
        };
        let (stream, head) = tokio::time::timeout(Duration::from_secs(10), fut)
            .await
            .map_err(|_| "timed out waiting for the upgrade response".to_string())??;
        if !head.starts_with("HTTP/1.1 101") {
            return Err(format!("expected 101, got: {head}"));
        }
        let expected = accept_key(key);
        let accept_ok = head.lines().any(|l| {
            l.split_once(':').is_some_and(|(k, v)| {
                k.trim().eq_ignore_ascii_case("sec-websocket-accept") && v.trim() == expected
            })
        });
        if !accept_ok {
            return Err(format!("missing or wrong Sec-WebSocket-Accept in: {head}"));
        }
        Ok(Self {
            stream,
            response_head: head,
            mask_counter: 0x1234_5678,
        })
    }

    /// Sends one masked frame.
    pub async fn send(&mut self, frame: &Frame) {
        self.mask_counter = self
            .mask_counter
            .wrapping_mul(1_664_525)
            .wrapping_add(1_013_904_223);
        let bytes = encode(frame, Some(self.mask_counter.to_be_bytes()));
        self.stream.write_all(&bytes).await.expect("send ws frame");
    }

    /// Receives one frame (10 s timeout); `None` on EOF.
    pub async fn recv(&mut self) -> Option<Frame> {
        tokio::time::timeout(Duration::from_secs(10), read_frame(&mut self.stream))
            .await
            .expect("timed out waiting for a websocket frame")
            .expect("read ws frame")
    }

    /// Sends a close frame and waits for the peer's close.
    pub async fn close(mut self) -> Option<Frame> {
        self.send(&Frame::close(1000, "bye")).await;
        self.recv().await
    }
}
