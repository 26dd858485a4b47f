//! A webhook receiver for notification tests: records every POST (headers and whole body)
//! and answers 500 to the first `fail_first` of them, then 200. Runs on its own thread and
//! runtime, like the recording origin; dropping it stops it.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::sync::{oneshot, watch};

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Hook {
    /// The request path.
    pub path: String,
    /// Headers, lowercase names (the last value of each).
    pub headers: HashMap<String, String>,
    /// The whole body.
    pub body: Bytes,
    /// What it answered.
    pub status: u16,
}

impl Hook {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("hook body is JSON")
    }
}

struct State {
    hooks: Mutex<Vec<Hook>>,
    fail_first: AtomicUsize,
    changed: watch::Sender<usize>,
}

/// A running receiver.
pub struct HookReceiver {
    addr: SocketAddr,
    state: Arc<State>,
    shutdown: Option<oneshot::Sender<()>>,
}

impl HookReceiver {
    /// Answers 500 to the first `fail_first` requests, 200 after.
    pub fn start(fail_first: usize) -> HookReceiver {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind hooks");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("hooks addr");
        let state = Arc::new(State {
            hooks: Mutex::new(Vec::new()),
            fail_first: AtomicUsize::new(fail_first),
            changed: watch::channel(0).0,
        });
        let (tx, rx) = oneshot::channel::<()>();
        let st = state.clone();
        std::thread::Builder::new()
            .name(format!("hooks-{addr}"))
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("hooks runtime");
                rt.block_on(async move {
                    let listener =
                        tokio::net::TcpListener::from_std(listener).expect("tokio listener");
                    let serve = async {
                        loop {
                            let Ok((stream, _)) = listener.accept().await else {
                                continue;
                            };
                            let st = st.clone();
                            tokio::spawn(async move {
                                let svc = service_fn(move |req| record(st.clone(), req));
                                let _ = auto::Builder::new(TokioExecutor::new())
                                    .serve_connection(TokioIo::new(stream), svc)
                                    .await;
                            });
                        }
                    };
                    tokio::select! {
                        () = serve => {}
                        _ = rx => {}
                    }
                });
                rt.shutdown_timeout(Duration::from_millis(200));
            })
            .expect("spawn hooks thread");
        HookReceiver {
            addr,
            state,
            shutdown: Some(tx),
        }
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Everything received so far, in order.
    pub fn hooks(&self) -> Vec<Hook> {
        self.state.hooks.lock().expect("hooks lock").clone()
    }

    /// Waits until `pred` holds for what was received; panics after `timeout`.
    pub async fn wait_until(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&[Hook]) -> bool,
    ) -> Vec<Hook> {
        let mut rx = self.state.changed.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let hooks = self.hooks();
            if pred(&hooks) {
                return hooks;
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            assert!(
                !left.is_zero(),
                "hooks: {what} within {timeout:?}; got {hooks:#?}"
            );
            let _ = tokio::time::timeout(left.min(Duration::from_millis(200)), rx.changed()).await;
        }
    }
}

impl Drop for HookReceiver {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

async fn record(
    state: Arc<State>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let fail = state
        .fail_first
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    let status = if fail { 500 } else { 200 };
    let headers = parts
        .headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let n = {
        let mut hooks = state.hooks.lock().expect("hooks lock");
        hooks.push(Hook {
            path: parts.uri.path().to_string(),
            headers,
            body,
            status,
        });
        hooks.len()
    };
    state.changed.send_replace(n);
    let mut resp = Response::new(Full::new(Bytes::from_static(b"ok")));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    Ok(resp)
}
