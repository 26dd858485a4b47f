//! The floor hyper sets for `benches/load.sh`: a bare HTTP/1.1 reverse proxy with nothing of
//! jitgate in it, built the way a fast hyper proxy is built. It runs one current-thread
//! runtime per CPU, each with its own `SO_REUSEPORT` listener and its own pooled upstream
//! client (keep-alive). Every request is forwarded to one origin with `X-Forwarded-For`
//! added, as nginx's bench config does. There is no routing, no canonicalisation, no
//! header scrubbing and no logging. The gap between this and jitgate is what jitgate's own
//! per-request path costs.
//!
//! ```text
//! cargo run --release --example bare_proxy -- 127.0.0.1:0 http://127.0.0.1:8080 [--threads N] [--multi]
//! ```
//!
//! `--multi` runs one multi-thread runtime (N workers, one listener, one pool) instead, to
//! measure what thread-per-core buys over tokio's work-stealing scheduler.
//!
//! Prints `bare_proxy: listening on http://ADDR` on stdout once bound.

use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;

use http::header::HeaderValue;
use http::uri::{Authority, Scheme};
use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};

fn usage() -> ExitCode {
    eprintln!("usage: bare_proxy LISTEN_ADDR ORIGIN_URL [--threads N]");
    ExitCode::from(2)
}

fn listener(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(addr), Some(origin)) = (
        args.first().and_then(|a| a.parse::<SocketAddr>().ok()),
        args.get(1).and_then(|o| o.parse::<Uri>().ok()),
    ) else {
        return usage();
    };
    let mut rest: Vec<&str> = args.iter().skip(2).map(String::as_str).collect();
    let multi = rest.contains(&"--multi");
    rest.retain(|a| *a != "--multi");
    let threads = match rest.as_slice() {
        [] => std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
        ["--threads", n] => match n.parse::<usize>() {
            Ok(n) if n > 0 => n,
            _ => return usage(),
        },
        _ => return usage(),
    };
    let (Some(scheme), Some(authority)) = (origin.scheme().cloned(), origin.authority().cloned())
    else {
        return usage();
    };
    // The first listener picks the port (0 = any free one); the others share it.
    let first = match listener(addr) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("bare_proxy: bind {addr}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let bound = match first.local_addr() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("bare_proxy: {e}");
            return ExitCode::FAILURE;
        }
    };
    if multi {
        println!("bare_proxy: listening on http://{bound}");
        let _ = std::io::stdout().flush();
        let rt = match tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                eprintln!("bare_proxy: runtime: {e}");
                return ExitCode::FAILURE;
            }
        };
        rt.block_on(accept_loop(first, scheme, authority, false));
        return ExitCode::SUCCESS;
    }
    let mut listeners = vec![first];
    for _ in 1..threads {
        match listener(bound) {
            Ok(l) => listeners.push(l),
            Err(e) => {
                eprintln!("bare_proxy: bind {bound}: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    println!("bare_proxy: listening on http://{bound}");
    let _ = std::io::stdout().flush();
    let workers: Vec<_> = listeners
        .into_iter()
        .map(|l| {
            let (scheme, authority) = (scheme.clone(), authority.clone());
            std::thread::spawn(move || serve(l, scheme, authority))
        })
        .collect();
    for w in workers {
        let _ = w.join();
    }
    ExitCode::SUCCESS
}

/// One thread: its own runtime, listener and upstream pool.
fn serve(l: std::net::TcpListener, scheme: Scheme, authority: Authority) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bare_proxy: runtime: {e}");
            return;
        }
    };
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, accept_loop(l, scheme, authority, true));
}

/// Accepts and proxies on `l`; each connection runs as a local task (`local`: on this
/// thread's current-thread runtime) or a spawned one (the multi-thread runtime).
async fn accept_loop(l: std::net::TcpListener, scheme: Scheme, authority: Authority, local: bool) {
    let Ok(l) = tokio::net::TcpListener::from_std(l) else {
        return;
    };
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<HttpConnector, Incoming> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(256)
        .build(connector);
    loop {
        let Ok((stream, peer)) = l.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (client, scheme, authority) = (client.clone(), scheme.clone(), authority.clone());
        let conn = async move {
            let service = service_fn(move |mut req: Request<Incoming>| {
                let client = client.clone();
                let mut parts = req.uri().clone().into_parts();
                parts.scheme = Some(scheme.clone());
                parts.authority = Some(authority.clone());
                if let Ok(uri) = Uri::from_parts(parts) {
                    *req.uri_mut() = uri;
                }
                if let Ok(v) = HeaderValue::from_str(&peer.ip().to_string()) {
                    req.headers_mut().append("x-forwarded-for", v);
                }
                async move {
                    Ok::<_, Infallible>(match client.request(req).await {
                        Ok(resp) => resp.map(http_body_util::Either::Left),
                        Err(_) => {
                            let mut r = Response::new(http_body_util::Either::Right(
                                http_body_util::Empty::new(),
                            ));
                            *r.status_mut() = http::StatusCode::BAD_GATEWAY;
                            r
                        }
                    })
                }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        };
        if local {
            tokio::task::spawn_local(conn);
        } else {
            tokio::spawn(conn);
        }
    }
}
