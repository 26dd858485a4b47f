//! A fixed-response HTTP/1.1 origin for `benches/load.sh`: every request gets the same ~100-byte
//! 200 response, connections are kept alive. It does as little as possible so the benchmark
//! measures the proxy in front of it, not the origin.
//!
//! ```text
//! cargo run --release --example bench_origin -- 127.0.0.1:0 [--workers N]
//! ```
//!
//! Prints `bench_origin: listening on http://ADDR` on stdout once bound (port 0 picks a free
//! port). `--workers` (or `BENCH_ORIGIN_WORKERS`) sets the tokio worker count; the default is the
//! number of CPUs.

use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

/// ~100 bytes of JSON, so response size is comparable across targets.
const BODY: &[u8] =
    br#"{"ok":true,"service":"bench-origin","items":[1,2,3,4,5,6,7,8,9,10],"note":"fixed response body."}"#;

fn usage() -> ExitCode {
    eprintln!("usage: bench_origin ADDR [--workers N]   (e.g. 127.0.0.1:0)");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let Some(addr) = args.next() else {
        return usage();
    };
    let Ok(addr) = addr.parse::<SocketAddr>() else {
        return usage();
    };
    let mut workers = std::env::var("BENCH_ORIGIN_WORKERS")
        .ok()
        .and_then(|w| w.parse().ok());
    while let Some(arg) = args.next() {
        match (
            arg.as_str(),
            args.next().and_then(|n| n.parse::<usize>().ok()),
        ) {
            ("--workers", Some(n)) if n > 0 => workers = Some(n),
            _ => return usage(),
        }
    }
    let workers = workers.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    });
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bench_origin: runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(serve(addr, workers)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench_origin: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(addr: SocketAddr, workers: usize) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "bench_origin: listening on http://{local}")?;
        out.flush()?;
    }
    eprintln!("bench_origin: {workers} worker thread(s)");
    let body = Bytes::from_static(BODY);
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(conn) => conn,
            // Running out of file descriptors under load must not end the benchmark; back off
            // briefly instead of spinning.
            Err(_) => {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let body = body.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |_req: Request<hyper::body::Incoming>| {
                let body = body.clone();
                async move {
                    let mut resp = Response::new(Full::new(body));
                    resp.headers_mut().insert(
                        http::header::CONTENT_TYPE,
                        http::HeaderValue::from_static("application/json"),
                    );
                    Ok::<_, Infallible>(resp)
                }
            });
            let _ = http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}
