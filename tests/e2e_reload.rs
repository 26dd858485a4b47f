//! Hot reload end to end (SPEC 5a, 11.5; README "Reload"): a reload under load drops no
//! request, an invalid reload changes nothing and says where the error is, and the three
//! triggers (admin endpoint, file watch, SIGHUP) all swap the table in force.

mod common;

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use serde_json::Value;
use tokio::time::Instant;

const WAIT: Duration = Duration::from_secs(5);

// === helpers ===

/// A table with `/steady/**` always allowed and `/flip/**` set to `flip` (`allow` or `deny`),
/// then `/admin/**` denied and an allow catch-all; `server_extra` lands on line 4.
fn table(origin: &str, flip: &str, server_extra: &str) -> String {
    let flip_upstream = if flip == "allow" {
        "upstream = \"origin\"\n"
    } else {
        ""
    };
    format!(
        r#"[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
{server_extra}

[[upstreams]]
name = "origin"
url = "{origin}"

[[routes]]
name = "steady"
path = "/steady/**"
upstream = "origin"
action = "allow"

[[routes]]
name = "flip"
path = "/flip/**"
{flip_upstream}action = "{flip}"

[[routes]]
name = "admin"
path = "/admin/**"
case_insensitive = true
action = "deny"

[[routes]]
name = "rest"
path = "/**"
upstream = "origin"
action = "allow"

{admin}"#,
        admin = identity_and_admin_toml()
    )
}

async fn rules(gw: &Gateway) -> Value {
    let r = admin_call(gw, "ops", "GET", "/v1/admin/rules", "").await;
    assert_eq!(r.status, 200, "GET /v1/admin/rules: {}", r.text());
    r.json()
}

async fn reload(admin: &Client, gw: &Gateway) -> Response {
    admin
        .send(
            "POST",
            &gw.admin("/v1/admin/reload"),
            &[("authorization", &bearer_of("ops"))],
            "",
        )
        .await
}

async fn status_of(gw: &Gateway, path: &str) -> u16 {
    send("GET", &gw.url(path), &[], "").await.status.as_u16()
}

/// Polls `cond` every 20 ms until it holds; false once `timeout` has passed.
async fn poll_until<F, Fut>(timeout: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if cond().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The route named `name` in a `/v1/admin/rules` answer.
fn route<'a>(rules: &'a Value, name: &str) -> &'a Value {
    rules["routes"]
        .as_array()
        .and_then(|rs| rs.iter().find(|r| r["name"] == name))
        .unwrap_or_else(|| panic!("route {name} not in {rules:#}"))
}

/// The error lines of a 422 answer or of `lastReloadError`.
fn error_lines(v: &Value) -> Vec<String> {
    v["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("no `errors` list in {v:#}"))
        .iter()
        .map(|e| e.as_str().unwrap_or_default().to_string())
        .collect()
}

/// Whether `line` reads `<...>proxy.toml:LINE:COL: error: ...`.
fn has_position(line: &str, file: &str, at: &str) -> bool {
    line.contains(&format!("{file}:{at}: error: "))
}

/// Every line has the `file:line:column: error: message` shape.
fn assert_positioned(lines: &[String]) {
    assert!(!lines.is_empty(), "no errors reported");
    for l in lines {
        let Some((head, _msg)) = l.split_once(": error: ") else {
            panic!("error without `: error: `: {l}");
        };
        let mut parts = head.rsplitn(3, ':');
        let col = parts.next().unwrap_or_default();
        let line = parts.next().unwrap_or_default();
        let file = parts.next().unwrap_or_default();
        assert!(
            !file.is_empty() && line.parse::<u32>().is_ok() && col.parse::<u32>().is_ok(),
            "error is not `file:line:column: error: msg`: {l}"
        );
    }
}

#[derive(Default)]
struct LoadStats {
    steady_ok: AtomicUsize,
    flip_allowed: AtomicUsize,
    flip_denied: AtomicUsize,
    failures: Mutex<Vec<String>>,
}

impl LoadStats {
    fn fail(&self, what: String) {
        let mut f = self.failures.lock().expect("failures lock");
        if f.len() < 50 {
            f.push(what);
        }
    }
}

// === tests ===

/// SPEC 11.5: 100 reloads alternating `/flip` between allow and deny while keep-alive clients
/// hammer `/steady` and `/flip` on several connections: no request fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reload_under_load_drops_no_request() {
    const RELOADS: usize = 100;
    const WORKERS: usize = 6;
    let origin = Origin::start();
    let a = table(&origin.url(), "allow", "watch = false");
    let b = table(&origin.url(), "deny", "watch = false");
    let gw = Gateway::start(&a);
    assert_eq!(status_of(&gw, "/steady/warm").await, 200);

    let stats = Arc::new(LoadStats::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for w in 0..WORKERS {
        let (stats, stop) = (stats.clone(), stop.clone());
        let steady = gw.url(&format!("/steady/w{w}"));
        let flip = gw.url(&format!("/flip/w{w}"));
        // Half the workers speak h2c, half HTTP/1.1 keep-alive; one pooled client each.
        let client = if w % 2 == 0 {
            Client::http1()
        } else {
            Client::h2c()
        }
        .with_timeout(Duration::from_secs(10));
        workers.push(tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                match client
                    .try_send("GET", &format!("{steady}/{i}"), &[], "")
                    .await
                {
                    Ok(r) if r.status == 200 => {
                        stats.steady_ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(r) => stats.fail(format!("/steady answered {}: {}", r.status, r.text())),
                    Err(e) => stats.fail(format!("/steady transport error: {e}")),
                }
                match client
                    .try_send("GET", &format!("{flip}/{i}"), &[], "")
                    .await
                {
                    Ok(r) if r.status == 200 => {
                        stats.flip_allowed.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(r) if r.status == 403 => {
                        stats.flip_denied.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(r) => stats.fail(format!("/flip answered {}: {}", r.status, r.text())),
                    Err(e) => stats.fail(format!("/flip transport error: {e}")),
                }
            }
        }));
    }

    // Let every worker get going before the first reload.
    assert!(
        poll_until(WAIT, || async {
            stats.steady_ok.load(Ordering::Relaxed) >= WORKERS * 2
        })
        .await,
        "load did not start"
    );
    let admin = Client::http1();
    let started = Instant::now();
    let before = stats.steady_ok.load(Ordering::Relaxed);
    for i in 0..RELOADS {
        // Ends on `a` (i = 99 is odd).
        let next = if i % 2 == 0 { &b } else { &a };
        gw.rewrite_config(next);
        let r = reload(&admin, &gw).await;
        assert_eq!(r.status, 200, "reload {i}: {}", r.text());
        let v = r.json();
        assert_eq!(v["changed"], true, "reload {i} did not swap: {v}");
        assert_eq!(v["version"], sha256_hex(next.as_bytes()), "reload {i}: {v}");
    }
    let reload_time = started.elapsed();
    let during = stats.steady_ok.load(Ordering::Relaxed) - before;
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.expect("worker task");
    }

    let steady = stats.steady_ok.load(Ordering::Relaxed);
    let allowed = stats.flip_allowed.load(Ordering::Relaxed);
    let denied = stats.flip_denied.load(Ordering::Relaxed);
    println!(
        "reload under load: {RELOADS} reloads in {reload_time:?}; {} requests \
         ({steady} /steady 200, {allowed} /flip 200, {denied} /flip 403), {during} /steady during reloads",
        steady + allowed + denied
    );
    let failures = stats.failures.lock().expect("failures lock").clone();
    assert!(failures.is_empty(), "failed requests: {failures:#?}");
    assert!(
        during >= RELOADS,
        "too little traffic overlapped the reloads ({during} /steady requests) to prove anything"
    );
    assert!(
        allowed > 0 && denied > 0,
        "both tables should have answered /flip under load (200: {allowed}, 403: {denied})"
    );

    // The final table (a: /flip allowed) is in force and reported.
    let v = rules(&gw).await;
    assert_eq!(v["version"], sha256_hex(a.as_bytes()), "{v:#}");
    assert_eq!(route(&v, "flip")["action"], "allow");
    assert_eq!(v["lastReload"]["ok"], true, "{v:#}");
    assert_eq!(v["lastReload"]["version"], sha256_hex(a.as_bytes()));
    assert_eq!(status_of(&gw, "/flip/final").await, 200);
}

/// SPEC 5a / 11.5: each kind of invalid file is refused with positioned errors, and the running
/// table, its version and the traffic it decides stay exactly as they were.
#[tokio::test]
async fn invalid_reload_changes_nothing() {
    let origin = Origin::start();
    let good = table(&origin.url(), "allow", "watch = false");
    let gw = Gateway::start(&good);
    let admin = Client::http1();
    let version = rules(&gw).await["version"].clone();
    assert_eq!(version, sha256_hex(good.as_bytes()));

    // Line 2 of `table()` is `listen = ...`; line 4 is the `server_extra` slot.
    let syntax = good.replacen("listen = \"127.0.0.1:0\"", "listen = \"127.0.0.1:0", 1);
    let unknown_key = table(&origin.url(), "allow", "colour = \"red\"");
    // An approve route after the allow catch-all: it could never match (a silent hole).
    let shadowed = format!(
        "{good}\n[[routes]]\nname = \"prod\"\npath = \"/prod/**\"\nupstream = \"origin\"\n\
         action = \"approve\"\n[routes.approval]\napprovers = [\"user:alice\"]\nquorum = 1\n"
    );
    let shadowed_line = good.lines().count() + 2;
    let unknown_upstream = good.replacen(
        "path = \"/steady/**\"\nupstream = \"origin\"",
        "path = \"/steady/**\"\nupstream = \"nowhere\"",
        1,
    );
    let upstream_line = unknown_upstream
        .lines()
        .position(|l| l.contains("\"nowhere\""))
        .expect("nowhere line")
        + 1;
    let cases: Vec<(&str, String, String)> = vec![
        ("syntax error", syntax, "2:22".into()),
        ("unknown key", unknown_key, "4:1".into()),
        (
            "shadowed approve route",
            shadowed,
            format!("{shadowed_line}:1"),
        ),
        (
            "unknown upstream",
            unknown_upstream,
            format!("{upstream_line}:12"),
        ),
    ];

    for (what, bad, at) in &cases {
        gw.rewrite_config(bad);
        let r = reload(&admin, &gw).await;
        assert_eq!(r.status, 422, "{what}: {}", r.text());
        assert!(
            r.header("content-type")
                .is_some_and(|c| c.starts_with("application/problem+json")),
            "{what}: content-type {:?}",
            r.header("content-type")
        );
        let errors = error_lines(&r.json());
        assert_positioned(&errors);
        assert!(
            errors.iter().any(|l| has_position(l, "proxy.toml", at)),
            "{what}: expected an error at proxy.toml:{at}, got {errors:#?}"
        );

        let v = rules(&gw).await;
        assert_eq!(v["version"], version, "{what}: the version changed");
        assert_eq!(route(&v, "flip")["action"], "allow", "{what}");
        let last = &v["lastReloadError"];
        assert_eq!(last["ok"], false, "{what}: lastReloadError {last:#}");
        assert_eq!(
            error_lines(last),
            errors,
            "{what}: lastReloadError {last:#}"
        );
        assert_eq!(v["lastReload"]["ok"], false, "{what}: lastReload {v:#}");

        // Traffic still follows the old table.
        let before = origin.count();
        assert_eq!(status_of(&gw, "/steady/x").await, 200, "{what}");
        assert_eq!(status_of(&gw, "/flip/x").await, 200, "{what}");
        assert_eq!(status_of(&gw, "/admin/x").await, 403, "{what}");
        assert_eq!(status_of(&gw, "/prod/x").await, 200, "{what}");
        assert_eq!(origin.count(), before + 3, "{what}");
    }

    // A valid file is taken, and it is what decides from then on.
    let next = table(&origin.url(), "deny", "watch = false");
    gw.rewrite_config(&next);
    let r = reload(&admin, &gw).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["changed"], true, "{v}");
    assert_eq!(v["version"], sha256_hex(next.as_bytes()));
    let v = rules(&gw).await;
    assert_eq!(v["version"], sha256_hex(next.as_bytes()));
    assert_eq!(v["lastReload"]["ok"], true, "{v:#}");
    assert_eq!(status_of(&gw, "/flip/x").await, 403);

    // Reloading the same file again is not a change.
    let r = reload(&admin, &gw).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["changed"], false);
}

/// README "Reload": the folder is watched, so an atomic rename-into-place is picked up; an
/// invalid edit is logged with file:line:column and changes nothing.
#[tokio::test]
async fn file_change_reloads_and_invalid_edit_is_logged() {
    let origin = Origin::start();
    let a = table(&origin.url(), "allow", "");
    let b = table(&origin.url(), "deny", "");
    let gw = Gateway::start(&a);
    assert_eq!(status_of(&gw, "/flip/x").await, 200);

    gw.rewrite_config(&b);
    assert!(
        poll_until(WAIT, || async { status_of(&gw, "/flip/x").await == 403 }).await,
        "the file change was not picked up within {WAIT:?}\n{}",
        gw.stderr_text()
    );
    let v = rules(&gw).await;
    assert_eq!(v["version"], sha256_hex(b.as_bytes()));
    assert_eq!(v["lastReload"]["ok"], true, "{v:#}");
    assert_eq!(v["lastReload"]["trigger"], "watch", "{v:#}");

    // An unknown key on line 4, column 1, with /flip allowed again: nothing of it may apply.
    let bad = table(&origin.url(), "allow", "colour = \"red\"");
    gw.rewrite_config(&bad);
    assert!(
        gw.wait_for_stderr("proxy.toml:4:1: error: ", WAIT).await,
        "the invalid edit was not reported with file:line:column on stderr:\n{}",
        gw.stderr_text()
    );
    let v = rules(&gw).await;
    assert_eq!(v["version"], sha256_hex(b.as_bytes()), "{v:#}");
    assert_eq!(route(&v, "flip")["action"], "deny");
    assert!(
        error_lines(&v["lastReloadError"])
            .iter()
            .any(|l| has_position(l, "proxy.toml", "4:1")),
        "{v:#}"
    );
    assert_eq!(status_of(&gw, "/flip/x").await, 403);
    assert_eq!(status_of(&gw, "/steady/x").await, 200);

    // Fixing the file is picked up too.
    gw.rewrite_config(&a);
    assert!(
        poll_until(WAIT, || async { status_of(&gw, "/flip/x").await == 200 }).await,
        "the fixed file was not picked up within {WAIT:?}"
    );
}

/// README "Signals": with `watch = false` an edit does nothing by itself; SIGHUP reloads it.
#[tokio::test]
async fn sighup_reloads_when_watch_is_off() {
    let origin = Origin::start();
    let a = table(&origin.url(), "allow", "watch = false");
    let b = table(&origin.url(), "deny", "watch = false");
    let gw = Gateway::start(&a);
    assert_eq!(status_of(&gw, "/flip/x").await, 200);

    gw.rewrite_config(&b);
    // Without the signal nothing changes: watch well past the 200 ms debounce.
    let until = Instant::now() + Duration::from_millis(800);
    let mut checked = 0;
    while Instant::now() < until {
        assert_eq!(
            status_of(&gw, "/flip/x").await,
            200,
            "the table changed without a signal although watch = false"
        );
        checked += 1;
    }
    assert!(checked > 0);
    assert_eq!(rules(&gw).await["version"], sha256_hex(a.as_bytes()));

    gw.signal(Sig::Hup);
    assert!(
        poll_until(WAIT, || async { status_of(&gw, "/flip/x").await == 403 }).await,
        "SIGHUP did not reload within {WAIT:?}\n{}",
        gw.stderr_text()
    );
    let v = rules(&gw).await;
    assert_eq!(v["version"], sha256_hex(b.as_bytes()));
    assert_eq!(v["lastReload"]["ok"], true, "{v:#}");
    let trigger = v["lastReload"]["trigger"].as_str().unwrap_or_default();
    assert!(
        matches!(trigger, "signal" | "sighup"),
        "lastReload.trigger {trigger:?}"
    );
}

/// SPEC 5a: listeners are never re-bound; a changed `listen` is a warning, the rest applies.
#[tokio::test]
async fn listen_change_is_reported_not_rebound() {
    let origin = Origin::start();
    let a = table(&origin.url(), "allow", "watch = false");
    let gw = Gateway::start(&a);
    let old = gw.data_addr();

    let free = std::net::TcpListener::bind("127.0.0.1:0").expect("bind probe");
    let new_addr = free.local_addr().expect("probe addr");
    drop(free);
    let b = table(&origin.url(), "deny", "watch = false").replacen(
        "listen = \"127.0.0.1:0\"",
        &format!("listen = \"{new_addr}\""),
        1,
    );
    gw.rewrite_config(&b);
    let r = reload(&Client::http1(), &gw).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["changed"], true, "{v}");
    let warnings: Vec<String> = v["warnings"]
        .as_array()
        .map(|w| {
            w.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    assert!(
        warnings.iter().any(|w| w.contains("listen")),
        "no warning about the changed listen address: {v}"
    );

    // Still served on the old port, with the new table; nothing on the new one.
    assert_eq!(gw.data_addr(), old);
    assert_eq!(status_of(&gw, "/steady/x").await, 200);
    assert_eq!(status_of(&gw, "/flip/x").await, 403);
    assert!(
        tokio::net::TcpStream::connect(new_addr).await.is_err(),
        "something listens on the new address {new_addr} after the reload"
    );
}
