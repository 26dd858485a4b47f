//! The approvers' web page in a real browser (SPEC 9): headless Chromium, driven through
//! chromedriver (WebDriver), against the real binary with a recording origin. Two held
//! requests are decided from the page — one approved (the held client gets the origin's
//! answer), one denied (the held client gets the denial with its reason) — and a cross-site
//! form post and a post without the CSRF token are refused. Screenshots of the pending list and
//! a ticket, on a desktop and a phone-sized screen, are taken on every run and saved to
//! `docs/screenshots/` (the README's) when `JITGATE_SCREENSHOTS=1`, so a test run leaves the
//! tree as it found it.
//!
//! Needs `chromium` and `chromedriver` on PATH (Debian's `chromium` and `chromium-driver`;
//! `scripts/test` installs them).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client as Browser, ClientBuilder, Locator};
use serde_json::{json, Value};

use common::*;

/// Generous: Chromium starts slowly on a loaded two-core machine. Every wait is for a
/// condition; none of them measures time.
const WAIT: Duration = Duration::from_secs(90);
const BOB: [(&str, &str); 2] = [("x-user", "bob"), ("x-groups", "dev")];

fn config(origin: &str) -> String {
    format!(
        r#"[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
trusted_proxies = ["127.0.0.1/32"]

[approvals]
hold_timeout = "600s"
ticket_ttl = "15m"

[[upstreams]]
name = "deploy-api"
url = "{origin}"

[[routes]]
name = "prod-deploy"
methods = ["POST", "PUT", "DELETE"]
path = "/v1/deployments/prod/**"
upstream = "deploy-api"
action = "approve"
[routes.approval]
approvers = ["group:oncall"]

[[routes]]
name = "everything-else"
path = "/**"
upstream = "deploy-api"
action = "allow"

{admin}"#,
        admin = identity_and_admin_toml()
    )
}

/// Sends a request as bob in the background (held until decided); the handle yields the
/// answer.
fn hold_as_bob(
    gw: &Gateway,
    method: &str,
    path: &str,
    body: &str,
    reason: &str,
) -> tokio::task::JoinHandle<Response> {
    let url = gw.url(path);
    let (method, body, reason) = (method.to_string(), body.to_string(), reason.to_string());
    tokio::spawn(async move {
        let mut headers: Vec<(&str, &str)> = BOB.to_vec();
        headers.push(("jit-reason", &reason));
        headers.push(("content-type", "application/json"));
        Client::http1()
            .with_timeout(Duration::from_secs(900))
            .send(&method, &url, &headers, body)
            .await
    })
}

/// The pending ticket whose path is `path` (polling the API as `ops`).
async fn pending_ticket(gw: &Gateway, path: &str) -> String {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let r = admin_call(gw, "ops", "GET", "/v1/tickets?status=PENDING", "").await;
        if let Some(id) = r.json()["tickets"].as_array().and_then(|ts| {
            ts.iter()
                .find(|t| t["request"]["path"] == path)
                .and_then(|t| t["id"].as_str().map(str::to_string))
        }) {
            return id;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no pending ticket for {path}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn status_of(gw: &Gateway, id: &str) -> String {
    let r = admin_call(gw, "ops", "GET", &format!("/v1/tickets/{id}"), "").await;
    r.json()["status"].as_str().unwrap_or_default().to_string()
}

// === chromedriver ===

fn on_path(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|p| p.is_file())
    })
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A chromedriver process on a free loopback port; killed on drop.
struct Driver {
    child: Child,
    url: String,
    chromium: PathBuf,
}

impl Drop for Driver {
    /// Ends chromedriver and every browser it started (its process group), also when the
    /// test failed before closing its sessions.
    fn drop(&mut self) {
        // `--` first: procps-ng's kill reads `kill -KILL -19` as two signal options and then
        // signals pid -1, which is every process the caller may signal.
        let _ = Command::new("kill")
            .args(["-s", "KILL", "--"])
            .arg(format!("-{}", self.child.id()))
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn chromedriver() -> Driver {
    let program = on_path("chromedriver").expect(
        "chromedriver is not on PATH: install Debian's `chromium` and `chromium-driver` (scripts/test does)",
    );
    let chromium = on_path("chromium")
        .or_else(|| on_path("chromium-browser"))
        .expect("chromium is not on PATH: install Debian's `chromium` (scripts/test does)");
    let port = free_port();
    let child = Command::new(program)
        .arg(format!("--port={port}"))
        // A process group of its own, which the browsers it starts join: Drop ends them all.
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromedriver");
    let driver = Driver {
        child,
        url: format!("http://127.0.0.1:{port}"),
        chromium,
    };
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let ready = Client::http1()
            .with_timeout(Duration::from_secs(5))
            .try_send("GET", &format!("{}/status", driver.url), &[], "")
            .await
            .is_ok_and(|r| r.status == 200 && r.json()["value"]["ready"] == true);
        if ready {
            return driver;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "chromedriver did not become ready"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A headless Chromium session: a desktop window, or a phone's screen (375 CSS px wide).
async fn browser(driver: &Driver, phone: bool) -> Browser {
    let mut options = json!({
        "binary": driver.chromium,
        "args": [
            "--headless=new",
            "--no-sandbox",
            "--disable-dev-shm-usage",
            "--disable-gpu",
            "--no-first-run",
            "--hide-scrollbars",
            "--window-size=1280,1000",
        ],
    });
    if phone {
        options["mobileEmulation"] = json!({
            "deviceMetrics": { "width": 375, "height": 812, "pixelRatio": 2.0, "touch": true, "mobile": true },
        });
    }
    let mut caps = serde_json::Map::new();
    caps.insert("browserName".into(), json!("chrome"));
    caps.insert("goog:chromeOptions".into(), options);
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("a Chromium session")
}

async fn wait_for(b: &Browser, css: &str) -> fantoccini::elements::Element {
    b.wait()
        .at_most(WAIT)
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no `{css}` on the page: {e}"))
}

/// Waits until the page's text contains `needle`; returns the text.
async fn wait_for_text(b: &Browser, needle: &str) -> String {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Ok(body) = b.find(Locator::Css("body")).await {
            if let Ok(text) = body.text().await {
                if text.contains(needle) {
                    return text;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the page never said {needle:?}; it says:\n{text}"
                );
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no page saying {needle:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn sign_in(b: &Browser, gw: &Gateway, user: &str) {
    b.goto(&gw.admin("/ui/")).await.unwrap();
    // Not signed in: sent to the sign-in form.
    let field = wait_for(b, "#token").await;
    field.send_keys(&token_of(user)).await.unwrap();
    b.find(Locator::Css("form.card button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for_text(b, "Pending tickets").await;
    wait_for_text(b, user).await;
}

fn screenshot_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn screenshot(b: &Browser, name: &str) {
    let png = b.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG"), "{name} is not a PNG");
    if std::env::var_os("JITGATE_SCREENSHOTS").is_some_and(|v| v == "1") {
        std::fs::write(screenshot_dir().join(name), png).unwrap();
    }
}

/// Nothing on the page is wider than the screen (no horizontal scrolling).
async fn fits_the_screen(b: &Browser, what: &str) {
    let v: Value = b
        .execute(
            "return [document.documentElement.scrollWidth, window.innerWidth];",
            vec![],
        )
        .await
        .unwrap();
    let (scroll, inner) = (v[0].as_u64().unwrap(), v[1].as_u64().unwrap());
    assert!(
        scroll <= inner,
        "{what} scrolls sideways: {scroll}px of content in {inner}px"
    );
}

/// A page on another origin that posts a form to `action` as soon as it loads.
struct Attacker {
    port: u16,
}

impl Attacker {
    fn start(action: &str) -> Attacker {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let page = format!(
            "<!DOCTYPE html><html><body>\
             <form id=f method=post action=\"{action}\">\
             <input type=hidden name=decision value=approve>\
             <input type=hidden name=comment value=pwned></form>\
             <script>document.getElementById('f').submit()</script></body></html>"
        );
        let page = std::sync::Arc::new(page);
        std::thread::spawn(move || {
            // A connection each (browsers open spare ones that never send a request).
            for stream in listener.incoming() {
                let Ok(mut s) = stream else { return };
                let page = page.clone();
                std::thread::spawn(move || {
                    let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
                    let mut buf = [0u8; 4096];
                    let mut head = Vec::new();
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut buf) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let _ = write!(
                        s,
                        "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{page}",
                        page.len()
                    );
                });
            }
        });
        Attacker { port }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_approver_decides_from_the_web_page_in_a_real_browser() {
    let origin = Origin::start();
    let gw = Gateway::start(&config(&origin.url()));
    let web = hold_as_bob(
        &gw,
        "POST",
        "/v1/deployments/prod/web",
        r#"{"image":"web:1.4.2","replicas":3,"token":"s3cr3t"}"#,
        "hotfix 4411",
    );
    let db = hold_as_bob(
        &gw,
        "POST",
        "/v1/deployments/prod/db-migrate",
        r#"{"migration":"0212_drop_legacy_sessions"}"#,
        "schema change 212",
    );
    let cache = hold_as_bob(
        &gw,
        "DELETE",
        "/v1/deployments/prod/cache",
        "",
        "cache purge",
    );
    let web_id = pending_ticket(&gw, "/v1/deployments/prod/web").await;
    let db_id = pending_ticket(&gw, "/v1/deployments/prod/db-migrate").await;
    let cache_id = pending_ticket(&gw, "/v1/deployments/prod/cache").await;

    let driver = chromedriver().await;

    // A phone: the list and a ticket fit a 375 px screen.
    let phone = browser(&driver, true).await;
    sign_in(&phone, &gw, "carol").await;
    for id in [&web_id, &db_id, &cache_id] {
        wait_for(&phone, &format!("tr[data-ticket=\"{id}\"]")).await;
    }
    fits_the_screen(&phone, "the pending list on a phone").await;
    screenshot(&phone, "pending-phone.png").await;
    phone
        .goto(&gw.admin(&format!("/ui/tickets/{web_id}")))
        .await
        .unwrap();
    wait_for(&phone, "#comment").await;
    fits_the_screen(&phone, "a ticket on a phone").await;
    screenshot(&phone, "ticket-phone.png").await;
    phone.close().await.unwrap();

    // A desktop: sign in, see the pending list, open the first ticket.
    let b = browser(&driver, false).await;
    sign_in(&b, &gw, "alice").await;
    for id in [&web_id, &db_id, &cache_id] {
        wait_for(&b, &format!("tr[data-ticket=\"{id}\"]")).await;
    }
    screenshot(&b, "pending.png").await;

    b.goto(&gw.admin(&format!("/ui/tickets/{web_id}")))
        .await
        .unwrap();
    let text = wait_for_text(&b, "hotfix 4411").await;
    assert!(text.contains("POST 127.0.0.1"), "{text}");
    assert!(
        text.contains("[redacted]") && !text.contains("s3cr3t"),
        "the body preview is redacted: {text}"
    );
    assert!(text.contains("0 of 1"), "{text}");
    // Tall enough for the whole ticket in one picture.
    b.set_window_size(1280, 1500).await.unwrap();
    screenshot(&b, "ticket.png").await;

    // Approve: the held client gets the origin's answer, and the origin got the request.
    wait_for(&b, "#comment")
        .await
        .send_keys("ship it")
        .await
        .unwrap();
    b.find(Locator::Css("button[value=approve]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for_text(&b, &format!("{web_id}: approved")).await;
    let answer = web.await.unwrap();
    assert_eq!(answer.status, 200, "{}", answer.text());
    let forwarded = origin.wait_for(1, WAIT).await;
    assert_eq!(forwarded[0].path(), "/v1/deployments/prod/web");
    let t = admin_call(&gw, "ops", "GET", &format!("/v1/tickets/{web_id}"), "").await;
    assert_eq!(t.json()["approvals"][0]["by"], "alice");
    assert_eq!(t.json()["approvals"][0]["comment"], "ship it");

    // Deny: the held client gets the denial with the reason.
    b.goto(&gw.admin(&format!("/ui/tickets/{db_id}")))
        .await
        .unwrap();
    wait_for(&b, "#comment")
        .await
        .send_keys("not during the freeze")
        .await
        .unwrap();
    b.find(Locator::Css("button[value=deny]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for_text(&b, &format!("{db_id}: denied")).await;
    let answer = db.await.unwrap();
    assert_eq!(answer.status, 403, "{}", answer.text());
    assert_eq!(
        answer.header("content-type"),
        Some("application/problem+json")
    );
    assert_eq!(answer.json()["reason"], "not during the freeze");
    assert_eq!(answer.json()["ticket"], db_id.as_str());

    // A page on another origin (same site: 127.0.0.1, another port, so the SameSite=Strict
    // cookie is still sent) that posts an approval as soon as it loads: refused.
    let action = gw.admin(&format!("/ui/tickets/{cache_id}/decide"));
    let same_site = Attacker::start(&action);
    b.goto(&format!("http://127.0.0.1:{}/", same_site.port))
        .await
        .unwrap();
    wait_for_text(&b, "Cross-site request refused").await;
    // And from another site (`localhost`), where the browser does not even send the cookie.
    b.goto(&gw.admin("/ui/")).await.unwrap();
    wait_for_text(&b, "Pending tickets").await;
    b.goto(&format!("http://localhost:{}/", same_site.port))
        .await
        .unwrap();
    wait_for_text(&b, "Cross-site request refused").await;
    assert_eq!(status_of(&gw, &cache_id).await, "PENDING");

    // The page's own form with its CSRF token taken out: refused.
    b.goto(&gw.admin(&format!("/ui/tickets/{cache_id}")))
        .await
        .unwrap();
    wait_for(&b, "#comment").await;
    b.execute(
        "document.querySelector('form.decide input[name=csrf]').remove();",
        vec![],
    )
    .await
    .unwrap();
    b.find(Locator::Css("button[value=approve]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for_text(&b, "CSRF token").await;
    assert_eq!(status_of(&gw, &cache_id).await, "PENDING");
    assert_eq!(origin.count(), 1, "nothing else reached the origin");

    // Sign out ends the session: the page asks to sign in again.
    b.goto(&gw.admin("/ui/")).await.unwrap();
    wait_for(&b, "form[action=\"/ui/signout\"] button")
        .await
        .click()
        .await
        .unwrap();
    wait_for(&b, "#token").await;
    b.goto(&gw.admin("/ui/")).await.unwrap();
    wait_for(&b, "#token").await;
    b.close().await.unwrap();
    cache.abort();
}
