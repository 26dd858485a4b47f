//! 64 MiB through the gateway both ways: bodies are streamed, never buffered whole, so the
//! gateway's peak resident memory (`VmHWM`) grows by far less than the body.

mod common;

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use common::origin::{large_body_chunk, large_body_sha256};
use common::*;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper::body::{Body, Frame, SizeHint};
use sha2::{Digest, Sha256};

const SIZE: u64 = 64 * 1024 * 1024;
/// The gateway must stay below this peak RSS in total while moving 64 MiB (debug build).
const MAX_PEAK_KIB: u64 = 48 * 1024;
/// ...and its peak may not grow by more than this over the pre-transfer baseline.
const MAX_GROWTH_KIB: u64 = 24 * 1024;
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(60);

fn config(origin_url: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n\n\
         [[upstreams]]\nname = \"origin\"\nurl = \"{origin_url}\"\n\n\
         [[routes]]\nname = \"all\"\npath = \"/**\"\nupstream = \"origin\"\naction = \"allow\"\n"
    )
}

/// `(VmHWM, VmRSS)` of `pid` in KiB.
fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing in /proc/{pid}/status"))
    };
    (field("VmHWM:"), field("VmRSS:"))
}

fn assert_bounded(what: &str, baseline: (u64, u64), after: (u64, u64)) {
    let growth = after.0.saturating_sub(baseline.0);
    println!(
        "{what}: gateway VmHWM baseline {} KiB (VmRSS {} KiB), after {} KiB (VmRSS {} KiB), \
         peak growth {growth} KiB for a {} KiB body",
        baseline.0,
        baseline.1,
        after.0,
        after.1,
        SIZE / 1024
    );
    assert!(
        growth < MAX_GROWTH_KIB && after.0 < MAX_PEAK_KIB,
        "{what}: the gateway buffered the body: peak {} KiB (baseline {} KiB)",
        after.0,
        baseline.0
    );
}

/// The `/large/{n}` byte pattern (`offset % 251`), generated on the fly: one period-aligned
/// block is built once and handed out as cheap `Bytes` clones.
struct PatternBody {
    block: Bytes,
    sent: u64,
    total: u64,
}

impl PatternBody {
    fn new(total: u64) -> Self {
        let block = Bytes::from(large_body_chunk(0, 251 * 256));
        Self {
            block,
            sent: 0,
            total,
        }
    }
}

impl Body for PatternBody {
    type Data = Bytes;
    type Error = client::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.sent >= self.total {
            return Poll::Ready(None);
        }
        let len = (self.total - self.sent).min(self.block.len() as u64) as usize;
        let chunk = self.block.slice(..len);
        self.sent += len as u64;
        Poll::Ready(Some(Ok(Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.sent >= self.total
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.total - self.sent)
    }
}

async fn warm_up(gw: &Gateway) {
    let resp = send("POST", &gw.url("/warm-up"), &[], "x").await;
    assert_eq!(resp.status, 200, "{}", resp.text());
}

#[tokio::test]
async fn upload_of_64_mib_is_streamed_with_bounded_memory() {
    let origin = Origin::start();
    let gw = Gateway::start(&config(&origin.url()));
    warm_up(&gw).await;
    let baseline = memory_kib(gw.pid());

    let req = Request::post(gw.url("/upload"))
        .header("content-type", "application/octet-stream")
        .body(PatternBody::new(SIZE).boxed_unsync())
        .expect("request");
    let resp = Client::http1()
        .with_timeout(TRANSFER_TIMEOUT)
        .request(req)
        .await
        .expect("upload through the gateway");
    assert_eq!(resp.status, 200, "{}", resp.text());

    let reqs = origin.wait_for(2, TRANSFER_TIMEOUT).await;
    let r = &reqs[1];
    assert_eq!(r.target, "/upload");
    assert_eq!(r.body_error, None);
    assert_eq!(r.body_len, SIZE);
    assert_eq!(r.body_sha256, large_body_sha256(SIZE));
    assert_bounded("upload", baseline, memory_kib(gw.pid()));
}

#[tokio::test]
async fn download_of_64_mib_is_streamed_with_bounded_memory() {
    let origin = Origin::start();
    let gw = Gateway::start(&config(&origin.url()));
    warm_up(&gw).await;
    let baseline = memory_kib(gw.pid());

    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Empty<Bytes>>();
    let url = gw.url(&format!("/large/{SIZE}"));
    let transfer = async {
        let resp = client
            .get(url.parse().expect("uri"))
            .await
            .expect("download head");
        assert_eq!(resp.status(), 200);
        assert_eq!(
            resp.headers()
                .get("content-length")
                .and_then(|v| v.to_str().ok()),
            Some(SIZE.to_string().as_str()),
            "Content-Length is relayed"
        );
        let mut body = resp.into_body();
        let mut hasher = Sha256::new();
        let mut len = 0u64;
        while let Some(frame) = body.frame().await {
            let frame = frame.expect("body frame");
            if let Some(data) = frame.data_ref() {
                len += data.len() as u64;
                hasher.update(data);
            }
        }
        let hex: String = hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        (len, hex)
    };
    let (len, sha) = tokio::time::timeout(TRANSFER_TIMEOUT, transfer)
        .await
        .expect("download in time");
    assert_eq!(len, SIZE);
    assert_eq!(sha, large_body_sha256(SIZE));
    assert_bounded("download", baseline, memory_kib(gw.pid()));
}
