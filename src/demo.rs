//! `jitgate demo`: an echo upstream, the gateway and the embedded store, with a walkthrough
//! that runs each curl command it prints and shows the real answer.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use jitgate_gateway::contract::{ApproveRequest, DenyRequest};
use jitgate_gateway::state::load_table;
use jitgate_gateway::Gateway;
use jitgate_rules::Status;

use crate::admin_client::{parse_admin_url, AdminApi, ClientError};
use crate::cli::{announce, fail, shutdown_signal};

/// The shipped example, used when the named file does not exist.
const EXAMPLE: &str = include_str!("../proxy.toml");

struct Step {
    what: &'static str,
    method: Method,
    target: &'static str,
    headers: &'static [(&'static str, &'static str)],
    /// For a held request: what the approver does through the decision API.
    decide: Option<Decide>,
}

/// An approver's decision in the walkthrough.
struct Decide {
    /// Approve (with `text` as the comment) or deny (with `text` as the reason).
    approve: bool,
    who: &'static str,
    token: &'static str,
    text: &'static str,
}

const BOB: &[(&str, &str)] = &[
    ("content-type", "application/json"),
    ("x-user", "bob"),
    ("x-groups", "dev"),
    ("jit-reason", "hotfix 4411"),
];

const STEPS: &[Step] = &[
    Step { what: "An ordinary read passes straight through to the upstream (allow).", method: Method::GET, target: "/v1/deployments", headers: &[], decide: None },
    Step { what: "Odd spellings are canonicalised once at the edge; the upstream receives the canonical path.", method: Method::GET, target: "/v1/./deployments//staging/../prod", headers: &[], decide: None },
    Step { what: "The admin area is denied with the route's custom error.", method: Method::GET, target: "/admin/users", headers: &[], decide: None },
    Step { what: "Encoded spellings of a denied path are caught too (%61 is 'a').", method: Method::GET, target: "/%61dmin/users", headers: &[], decide: None },
    Step { what: "Ambiguous encodings such as %2F are refused outright (400).", method: Method::GET, target: "/v1/deployments/prod%2F..%2F..%2Fadmin", headers: &[], decide: None },
    Step {
        what: "A production deploy needs approval: bob's request is held as a ticket while alice (oncall) approves it; then it is released to the upstream once, carrying a signed Jit-Approval token.",
        method: Method::POST, target: "/v1/deployments/prod/web", headers: BOB,
        decide: Some(Decide { approve: true, who: "alice", token: "demo-alice-token", text: "ship it" }),
    },
    Step {
        what: "The same kind of request, denied by carol: the held request gets the route's error with her reason.",
        method: Method::POST, target: "/v1/deployments/prod/api", headers: BOB,
        decide: Some(Decide { approve: false, who: "carol", token: "demo-carol-token", text: "change freeze until Monday" }),
    },
    Step {
        what: "A method-override header counts as the method: this GET asks for DELETE, so it is held for approval too (and denied here).",
        method: Method::GET, target: "/v1/deployments/prod/web", headers: &[("x-http-method-override", "DELETE"), ("x-user", "bob")],
        decide: Some(Decide { approve: false, who: "alice", token: "demo-alice-token", text: "no deletes today" }),
    },
];

/// The operator token of the shipped example (its SHA-256 is in proxy.toml).
const OPS_TOKEN: &str = "demo-ops-token";

pub async fn run(config: &Path, once: bool) -> ExitCode {
    let (path, _tmp) = match resolve_config(config) {
        Ok(p) => p,
        Err(e) => return fail(&e),
    };
    let table = match load_table(&path) {
        Ok(t) => t,
        Err(errors) => return fail(&errors.join("\n")),
    };
    for upstream in &table.config().upstreams {
        let Some(addr) = upstream_addr(&upstream.url) else {
            println!(
                "upstream {} ({}) is not a local http:// address; the demo does not start it",
                upstream.name, upstream.url
            );
            continue;
        };
        match crate::echo::spawn(addr).await {
            Ok(bound) => println!("jitgate: echo upstream {} on http://{bound}", upstream.name),
            Err(e) => return fail(&format!("cannot start the echo upstream on {addr}: {e} (is something else listening there?)")),
        }
    }
    let gateway = match Gateway::bind(&path).await {
        Ok(g) => g,
        Err(e) => return fail(&e.to_string()),
    };
    announce(&gateway);
    let shared = gateway.shared();
    let data = format!("{}://{}", gateway.data_scheme(), gateway.data_addr());
    let admin = format!("http://{}", gateway.admin_addr());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(gateway.run(async move {
        let _ = stop_rx.await;
    }));

    println!(
        "\njitgate demo: config {} (store: memory)\n",
        path.display()
    );
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    for (i, step) in STEPS.iter().enumerate() {
        println!("{}. {}", i + 1, step.what);
        let mut curl = format!("   $ curl -i -X {} '{data}{}'", step.method, step.target);
        for (k, v) in step.headers {
            curl.push_str(&format!(" -H '{k}: {v}'"));
        }
        if step.method == Method::POST {
            curl.push_str(" -d '{\"image\":\"web:1.4.2\"}'");
        }
        println!("{curl}");
        let answer = match &step.decide {
            None => send(&client, &data, step).await,
            Some(decide) => {
                let held = tokio::spawn({
                    let client = client.clone();
                    let data = data.clone();
                    async move { send(&client, &data, step).await }
                });
                if let Err(e) = decide_held(&admin, decide).await {
                    println!("   (decision failed: {e})");
                }
                held.await.unwrap_or_else(|e| Err(e.to_string()))
            }
        };
        match answer {
            Ok((status, body)) => {
                println!("   -> {status}");
                println!("   {}\n", summarise(&body));
            }
            Err(e) => println!("   -> request failed: {e}\n"),
        }
    }
    println!("Tickets and their audit trail (operators):\n   $ curl -H 'Authorization: Bearer {OPS_TOKEN}' '{admin}/v1/tickets?status=EXECUTED'\n   $ curl -H 'Authorization: Bearer {OPS_TOKEN}' '{admin}/v1/audit'");
    println!("The same from the command line:\n   $ jitgate tickets --admin {admin} --token demo-alice-token list --status all");
    println!("The approvers' web page (sign in with demo-alice-token, or demo-ops-token for the audit trail):\n   {admin}/ui/");
    println!("Rule table and reload status:\n   $ curl -H 'Authorization: Bearer {OPS_TOKEN}' {admin}/v1/admin/rules");
    println!("Metrics for Prometheus (no token; the admin plane is internal):\n   $ curl {admin}/metrics");
    println!("Explain a request without sending it:\n   $ jitgate explain --config {} GET '/%61dmin/users'", path.display());
    println!("Edit {} and save: the table reloads (or the error is reported with file:line:column and nothing changes).", path.display());

    if !once {
        println!("\nServing until Ctrl-C.");
        shutdown_signal().await;
    }
    // The access log is buffered; show what the walkthrough wrote to it.
    println!("\nAccess log ([log] access; one line per request on stdout, with its X-Request-Id):");
    shared.access_log().flush();
    let _ = stop_tx.send(());
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
    ExitCode::SUCCESS
}

/// The named file, or the built-in example written to a temp folder.
fn resolve_config(config: &Path) -> Result<(PathBuf, Option<TempDir>), String> {
    if config.exists() {
        return Ok((config.to_path_buf(), None));
    }
    let dir = TempDir::new().map_err(|e| format!("cannot create a temp folder: {e}"))?;
    let path = dir.0.join("proxy.toml");
    std::fs::write(&path, EXAMPLE).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    println!(
        "{} not found; using the built-in example at {}",
        config.display(),
        path.display()
    );
    Ok((path, Some(dir)))
}

struct TempDir(PathBuf);

impl TempDir {
    fn new() -> std::io::Result<TempDir> {
        let dir = std::env::temp_dir().join(format!("jitgate-demo-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        Ok(TempDir(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn upstream_addr(url: &http::Uri) -> Option<SocketAddr> {
    if url.scheme_str() != Some("http") {
        return None;
    }
    let host = url.host()?;
    let port = url.port_u16().unwrap_or(80);
    let addr: SocketAddr = format!("{host}:{port}").parse().ok()?;
    addr.ip().is_loopback().then_some(addr)
}

async fn send(
    client: &Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    base: &str,
    step: &Step,
) -> Result<(http::StatusCode, String), String> {
    let body = if step.method == Method::POST {
        Bytes::from_static(b"{\"image\":\"web:1.4.2\"}")
    } else {
        Bytes::new()
    };
    let mut req = Request::builder()
        .method(step.method.clone())
        .uri(format!("{base}{}", step.target));
    for (k, v) in step.headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(body)).map_err(|e| e.to_string())?;
    exchange(client, req).await
}

/// Waits for the held request's ticket, shows it, and decides it as the step says, through
/// the CLI's typed admin client.
async fn decide_held(admin: &str, decide: &Decide) -> Result<(), String> {
    let base = parse_admin_url(admin)?;
    let auth = HeaderValue::from_str(&format!("Bearer {}", decide.token))
        .map_err(|e| format!("bad demo token: {e}"))?;
    let api = AdminApi::new(base, Some(auth));
    let reason = |e: ClientError| match e {
        ClientError::Refused(_, r) | ClientError::Unreachable(r) => r,
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let ticket = loop {
        let list = api
            .list_tickets(Some(Status::Pending), None)
            .await
            .map_err(reason)?;
        if let Some(t) = list.tickets.into_iter().next() {
            break t;
        }
        if tokio::time::Instant::now() >= deadline {
            return Err("no pending ticket appeared".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let id = ticket.id.to_string();
    println!("   ... held. {} sees the pending ticket:", decide.who);
    println!(
        "   $ curl -H 'Authorization: Bearer {}' '{admin}/v1/tickets?status=PENDING'",
        decide.token
    );
    println!(
        "   {id}: {} {}{} by {} (reason: {}), needs {} approval(s) from {}",
        ticket.request.method,
        ticket.request.host,
        ticket.request.path,
        ticket.requester.user.as_deref().unwrap_or("anonymous"),
        ticket.reason.as_deref().unwrap_or("-"),
        ticket.quorum,
        serde_json::to_string(&ticket.approvers).unwrap_or_default(),
    );
    let text = Some(decide.text.to_string());
    let body = if decide.approve {
        serde_json::to_string(&ApproveRequest {
            comment: text.clone(),
            also: None,
        })
    } else {
        serde_json::to_string(&DenyRequest {
            reason: text.clone(),
        })
    }
    .unwrap_or_default();
    let verb = if decide.approve { "approve" } else { "deny" };
    println!(
        "   $ curl -X POST -H 'Authorization: Bearer {}' '{admin}/v1/tickets/{id}/{verb}' -d '{body}'",
        decide.token
    );
    let answer = if decide.approve {
        api.approve(
            &id,
            &ApproveRequest {
                comment: text,
                also: None,
            },
        )
        .await
    } else {
        api.deny(&id, &DenyRequest { reason: text }).await
    };
    match answer {
        Ok(t) => println!("   -> {}: ticket {}", StatusCode::OK, t.status),
        Err(ClientError::Refused(status, _)) => println!("   -> {status}: ticket ?"),
        Err(ClientError::Unreachable(r)) => return Err(r),
    }
    println!("   The held request answers:");
    Ok(())
}

/// Sends `req` (10 s limit) and reads the whole answer as text.
async fn exchange(
    client: &Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    req: Request<Full<Bytes>>,
) -> Result<(http::StatusCode, String), String> {
    let resp = tokio::time::timeout(Duration::from_secs(10), client.request(req))
        .await
        .map_err(|_| "timed out".to_string())?
        .map_err(|e| e.to_string())?;
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// The interesting part of an answer: the echoed target, or the problem's detail.
fn summarise(body: &str) -> String {
    match serde_json::from_str::<serde_json::Value>(body) {
        Ok(v) if v.get("echo").is_some() => {
            let approval = if v["headers"].get("jit-approval").is_some() {
                " with a Jit-Approval token"
            } else {
                ""
            };
            format!(
                "upstream received: {} {}{approval}",
                v["method"].as_str().unwrap_or("?"),
                v["target"].as_str().unwrap_or("?")
            )
        }
        Ok(v) if v.get("reason").is_some() && v.get("ticket").is_some() => format!(
            "{} (ticket {}, reason: {})",
            v["error"].as_str().or(v["title"].as_str()).unwrap_or(""),
            v["ticket"].as_str().unwrap_or(""),
            v["reason"].as_str().unwrap_or("")
        ),
        Ok(v) if v.get("detail").is_some() => format!(
            "{}: {}",
            v["title"].as_str().unwrap_or(""),
            v["detail"].as_str().unwrap_or("")
        ),
        _ => body.chars().take(200).collect(),
    }
}
