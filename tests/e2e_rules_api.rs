//! The rules API end to end (SPEC 8; README "Rules API"): `GET /v1/admin/rules/source` serves
//! the table in force with its `ETag`; `PUT` with `If-Match` validates, writes atomically and
//! reloads, and otherwise changes nothing on disk or in force; every reload, whatever its
//! trigger, is audited as `rules.reloaded` / `rules.rejected` with the right actor.

mod common;

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::time::Duration;

use common::*;
use serde_json::Value;
use tokio::time::Instant;

const WAIT: Duration = Duration::from_secs(10);
const SOURCE: &str = "/v1/admin/rules/source";

// === helpers ===

/// `/steady/**` allowed, `/flip/**` set to `flip` (`allow` or `deny`), an allow catch-all;
/// `server_extra` lands on line 4, `store` replaces the default memory store.
fn table(origin: &str, flip: &str, server_extra: &str, store: &str) -> String {
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
{store}
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
name = "rest"
path = "/**"
upstream = "origin"
action = "allow"

{admin}"#,
        admin = identity_and_admin_toml()
    )
}

fn quoted(version: &str) -> String {
    format!("\"{version}\"")
}

async fn get_source(gw: &Gateway, user: &str, extra: &[(&str, &str)]) -> Response {
    let auth = bearer_of(user);
    let mut headers = vec![("authorization", auth.as_str())];
    headers.extend_from_slice(extra);
    send("GET", &gw.admin(SOURCE), &headers, "").await
}

/// `PUT /v1/admin/rules/source` as `user`, with `If-Match: if_match` unless `None`.
async fn put_source(gw: &Gateway, user: &str, if_match: Option<&str>, body: &str) -> Response {
    put_bytes(gw, user, if_match, body.as_bytes().to_vec()).await
}

async fn put_bytes(gw: &Gateway, user: &str, if_match: Option<&str>, body: Vec<u8>) -> Response {
    let auth = bearer_of(user);
    let mut headers = vec![
        ("authorization", auth.as_str()),
        ("content-type", "application/toml"),
    ];
    if let Some(m) = if_match {
        headers.push(("if-match", m));
    }
    send("PUT", &gw.admin(SOURCE), &headers, body).await
}

async fn rules(gw: &Gateway) -> Value {
    let r = admin_call(gw, "ops", "GET", "/v1/admin/rules", "").await;
    assert_eq!(r.status, 200, "GET /v1/admin/rules: {}", r.text());
    r.json()
}

async fn status_of(gw: &Gateway, path: &str) -> u16 {
    send("GET", &gw.url(path), &[], "").await.status.as_u16()
}

/// The `rules.*` audit events, oldest first.
async fn rules_events(gw: &Gateway) -> Vec<Value> {
    let r = admin_call(gw, "ops", "GET", "/v1/audit?limit=10000", "").await;
    assert_eq!(r.status, 200, "audit: {}", r.text());
    r.json()["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["kind"].as_str().is_some_and(|k| k.starts_with("rules.")))
        .cloned()
        .collect()
}

/// Polls the audit until an event satisfies `want`; returns it.
async fn wait_rules_event(gw: &Gateway, what: &str, want: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let events = rules_events(gw).await;
        if let Some(e) = events.iter().find(|e| want(e)) {
            return e.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no audit event {what} within {WAIT:?}: {events:#?}\n{}",
            gw.stderr_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn poll_until<F, Fut>(mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + WAIT;
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

fn assert_problem(r: &Response, status: u16, slug: &str) -> Value {
    assert_eq!(r.status, status, "{}", r.text());
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("application/problem+json")),
        "content-type {:?}",
        r.header("content-type")
    );
    let v = r.json();
    assert_eq!(v["type"], format!("urn:jitgate:problem:{slug}"), "{v:#}");
    v
}

/// The files of the config's folder, sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut n: Vec<String> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    n.sort();
    n
}

/// Everything a refused PUT must leave as it was: the file byte for byte, the folder's
/// entries (no temporary file left behind), the version in force and the traffic it decides.
struct Unchanged {
    bytes: Vec<u8>,
    listing: Vec<String>,
    version: String,
}

impl Unchanged {
    async fn capture(gw: &Gateway) -> Unchanged {
        Unchanged {
            bytes: std::fs::read(gw.config_path()).expect("read config"),
            listing: listing(gw.dir()),
            version: rules(gw).await["version"]
                .as_str()
                .expect("version")
                .to_string(),
        }
    }

    async fn check(&self, gw: &Gateway, what: &str) {
        assert!(
            std::fs::read(gw.config_path()).expect("read config") == self.bytes,
            "{what}: the file on disk changed"
        );
        assert_eq!(
            listing(gw.dir()),
            self.listing,
            "{what}: the folder changed"
        );
        assert_eq!(rules(gw).await["version"], self.version, "{what}");
        let r = get_source(gw, "ops", &[]).await;
        assert_eq!(r.body.as_ref(), self.bytes.as_slice(), "{what}: source");
        assert_eq!(status_of(gw, "/flip/x").await, 200, "{what}: /flip");
    }
}

// === tests ===

/// A PUT with the current ETag is validated, written and reloaded: the next request is routed
/// by the new table, the file holds exactly the new bytes, GET serves them with the new ETag,
/// and the change is audited once, by the caller, even though the file watcher saw the write.
#[tokio::test]
async fn put_takes_effect_and_is_audited_once_by_the_caller() {
    let origin = Origin::start();
    let a = table(&origin.url(), "allow", "", "");
    let b = format!(
        "{}# body-marker: never logged\n",
        table(&origin.url(), "deny", "", "")
    );
    let gw = Gateway::start(&a);
    let (va, vb) = (sha256_hex(a.as_bytes()), sha256_hex(b.as_bytes()));
    assert_eq!(status_of(&gw, "/flip/x").await, 200);

    let r = get_source(&gw, "ops", &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), a);
    assert_eq!(r.header("etag"), Some(quoted(&va).as_str()));
    assert_eq!(r.header("content-type"), Some("application/toml"));
    let r = get_source(&gw, "ops", &[("if-none-match", &quoted(&va))]).await;
    assert_eq!(r.status, 304, "{}", r.text());
    assert!(r.body.is_empty());
    assert_eq!(r.header("etag"), Some(quoted(&va).as_str()));
    let r = get_source(&gw, "ops", &[("if-none-match", "\"other\"")]).await;
    assert_eq!(r.status, 200);

    let r = put_source(&gw, "ops", Some(&quoted(&va)), &b).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["changed"], true, "{v}");
    assert_eq!(v["version"], vb, "{v}");
    assert_eq!(r.header("etag"), Some(quoted(&vb).as_str()));
    // In force at once: no waiting for the watcher.
    assert_eq!(status_of(&gw, "/flip/x").await, 403);
    assert_eq!(status_of(&gw, "/steady/x").await, 200);
    assert!(std::fs::read(gw.config_path()).expect("read config") == b.as_bytes());
    assert_eq!(
        listing(gw.dir()),
        ["proxy.toml"],
        "a temporary file was left"
    );
    let mode = std::fs::metadata(gw.config_path())
        .expect("stat")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o644, "the file's mode was not kept");
    let r = get_source(&gw, "ops", &[]).await;
    assert_eq!(r.text(), b);
    assert_eq!(r.header("etag"), Some(quoted(&vb).as_str()));
    let v = rules(&gw).await;
    assert_eq!(v["version"], vb);
    assert_eq!(v["lastReload"]["trigger"], "put", "{v:#}");
    assert_eq!(v["lastReload"]["ok"], true, "{v:#}");

    // Sending what is in force again changes nothing.
    let r = put_source(&gw, "ops", Some(&quoted(&vb)), &b).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["changed"], false);

    let put = wait_rules_event(&gw, "rules.reloaded by put", |e| {
        e["kind"] == "rules.reloaded" && e["detail"]["trigger"] == "put"
    })
    .await;
    assert_eq!(put["actor"], "ops", "{put:#}");
    assert_eq!(put["detail"]["previousVersion"], va, "{put:#}");
    assert_eq!(put["detail"]["version"], vb, "{put:#}");
    assert_eq!(put["detail"]["warnings"], 0, "{put:#}");

    // An edit on disk afterwards is picked up by the watcher. Its events come after those of
    // the PUT's rename, so once it is audited the watcher has dealt with the PUT's write: that
    // write found its version in force and recorded nothing.
    let c = table(&origin.url(), "allow", "", "");
    let c = format!("{c}\n# edited on disk\n");
    let vc = sha256_hex(c.as_bytes());
    gw.rewrite_config(&c);
    let watch = wait_rules_event(&gw, "rules.reloaded by watch", |e| {
        e["kind"] == "rules.reloaded" && e["detail"]["version"] == vc
    })
    .await;
    assert_eq!(watch["actor"], Value::Null, "{watch:#}");
    assert_eq!(watch["detail"]["trigger"], "watch", "{watch:#}");
    assert_eq!(watch["detail"]["previousVersion"], vb, "{watch:#}");
    let events = rules_events(&gw).await;
    let versions: Vec<&Value> = events.iter().map(|e| &e["detail"]["version"]).collect();
    assert_eq!(
        versions,
        [&Value::from(vb), &Value::from(vc)],
        "{events:#?}"
    );
    assert!(events.iter().all(|e| e["kind"] == "rules.reloaded"));
    assert_eq!(status_of(&gw, "/flip/x").await, 200);
    assert!(
        !gw.stderr_text().contains("body-marker"),
        "a PUT body reached the log:\n{}",
        gw.stderr_text()
    );
}

/// `If-Match` is required (428), must name the version in force (412 naming it), and is
/// checked under the reload lock: of two PUTs racing with the same ETag exactly one wins.
#[tokio::test]
async fn stale_or_missing_if_match_changes_nothing_and_racing_puts_have_one_winner() {
    let origin = Origin::start();
    let a = table(&origin.url(), "allow", "watch = false", "");
    let b = table(&origin.url(), "deny", "watch = false", "");
    let gw = Gateway::start(&a);
    let va = sha256_hex(a.as_bytes());
    let before = Unchanged::capture(&gw).await;

    let r = put_source(&gw, "ops", None, &b).await;
    let p = assert_problem(&r, 428, "precondition-required");
    assert!(p["detail"].as_str().is_some_and(|d| d.contains("If-Match")));
    assert!(
        p.get("currentVersion").is_none(),
        "428 must not invite a blind retry: {p:#}"
    );
    let r = put_source(&gw, "ops", Some("*"), &b).await;
    assert_problem(&r, 428, "precondition-required");
    before.check(&gw, "missing If-Match").await;

    let stale = sha256_hex(b"an older table");
    for tag in [quoted(&stale), format!("W/{}", quoted(&va)), String::new()] {
        let r = put_source(&gw, "ops", Some(&tag), &b).await;
        let p = assert_problem(&r, 412, "stale-version");
        assert_eq!(p["currentVersion"], va, "{tag}: {p:#}");
        assert_eq!(r.header("etag"), Some(quoted(&va).as_str()), "{tag}");
        before.check(&gw, &format!("If-Match {tag}")).await;
    }
    let audited = rules_events(&gw).await;
    assert!(
        audited.is_empty(),
        "a refused precondition is no reload: {audited:#?}"
    );

    // Two writers edited version `a`: one gets in, the other is told it is stale.
    let c = table(&origin.url(), "deny", "watch = false", "")
        .replace("name = \"steady\"", "name = \"steady-c\"");
    let tag = quoted(&va);
    let (r1, r2) = tokio::join!(
        put_source(&gw, "ops", Some(&tag), &b),
        put_source(&gw, "ops", Some(&tag), &c)
    );
    let mut statuses = [r1.status.as_u16(), r2.status.as_u16()];
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 412], "{}\n{}", r1.text(), r2.text());
    let (winner, text) = if r1.status == 200 {
        (&b, &r1)
    } else {
        (&c, &r2)
    };
    let loser = if r1.status == 200 { &r2 } else { &r1 };
    let vw = sha256_hex(winner.as_bytes());
    assert_eq!(text.json()["version"], vw);
    assert_eq!(loser.json()["currentVersion"], vw, "{}", loser.text());
    assert!(std::fs::read(gw.config_path()).expect("read config") == winner.as_bytes());
    assert_eq!(rules(&gw).await["version"], vw);
    assert_eq!(status_of(&gw, "/flip/x").await, 403);
}

/// An invalid table is 422 with every error at file:line:column, audited as rejected by the
/// caller, and changes nothing: the file byte for byte, the folder, the table in force.
#[tokio::test]
async fn invalid_table_is_422_with_positions_and_changes_nothing() {
    let origin = Origin::start();
    let a = table(&origin.url(), "allow", "watch = false", "");
    let gw = Gateway::start(&a);
    let va = sha256_hex(a.as_bytes());
    let before = Unchanged::capture(&gw).await;
    let tag = quoted(&va);

    // An unknown key on line 4, and /flip denied: nothing of it may apply.
    let unknown_key = format!(
        "{}\n# body-marker: never logged\n",
        table(&origin.url(), "deny", "colour = \"red\"", "")
    );
    let syntax = a.replacen("listen = \"127.0.0.1:0\"", "listen = \"127.0.0.1:0", 1);
    let unknown_upstream = table(&origin.url(), "deny", "", "").replacen(
        "upstream = \"origin\"",
        "upstream = \"nowhere\"",
        1,
    );
    let nowhere_line = unknown_upstream
        .lines()
        .position(|l| l.contains("\"nowhere\""))
        .expect("nowhere line")
        + 1;
    let cases = [
        (
            "unknown key",
            unknown_key,
            "proxy.toml:4:1: error: ".to_string(),
        ),
        ("syntax error", syntax, "proxy.toml:2:".to_string()),
        (
            "unknown upstream",
            unknown_upstream,
            format!("proxy.toml:{nowhere_line}:12: error: "),
        ),
    ];
    for (what, bad, at) in &cases {
        let r = put_source(&gw, "ops", Some(&tag), bad).await;
        let p = assert_problem(&r, 422, "invalid-config");
        let errors: Vec<&str> = p["errors"]
            .as_array()
            .expect("errors")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert!(
            errors.iter().any(|e| e.contains(at.as_str())),
            "{what}: {errors:#?}"
        );
        for e in &errors {
            let head = e.split(": error: ").next().unwrap_or_default();
            let mut parts = head.rsplitn(3, ':');
            let (col, line) = (parts.next(), parts.next());
            assert!(
                col.is_some_and(|c| c.parse::<u32>().is_ok())
                    && line.is_some_and(|l| l.parse::<u32>().is_ok()),
                "{what}: not file:line:column: {e}"
            );
        }
        before.check(&gw, what).await;
        let rejected = wait_rules_event(&gw, what, |e| {
            e["kind"] == "rules.rejected" && e["detail"]["version"] == sha256_hex(bad.as_bytes())
        })
        .await;
        assert_eq!(rejected["actor"], "ops", "{rejected:#}");
        assert_eq!(rejected["detail"]["trigger"], "put", "{rejected:#}");
        assert_eq!(rejected["detail"]["errors"], p["errors"], "{rejected:#}");
        let v = rules(&gw).await;
        assert_eq!(v["lastReloadError"]["trigger"], "put", "{v:#}");
    }

    let r = put_bytes(
        &gw,
        "ops",
        Some(&tag),
        b"[server]\nlisten = \"\xff\"\n".to_vec(),
    )
    .await;
    assert_problem(&r, 422, "invalid-config");
    before.check(&gw, "not UTF-8").await;

    // Over 1 MiB: 413 before anything is parsed.
    let huge = format!("{a}\n#{}\n", "x".repeat(1024 * 1024));
    let r = put_source(&gw, "ops", Some(&tag), &huge).await;
    assert_problem(&r, 413, "body-too-large");
    before.check(&gw, "too large").await;

    // The same edit, fixed, goes in.
    let fixed = table(&origin.url(), "deny", "watch = false", "");
    let r = put_source(&gw, "ops", Some(&tag), &fixed).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(status_of(&gw, "/flip/x").await, 403);
    assert!(
        !gw.stderr_text().contains("body-marker"),
        "a PUT body reached the log:\n{}",
        gw.stderr_text()
    );
}

/// A table sent through the API may name only files the table in force names (keys,
/// certificates, CA bundles): the API edits rules, it does not point the gateway at other
/// files on its host. Files are checked as a reload checks them, relative to the config's
/// folder; a table keeping the files in force goes in.
#[tokio::test]
async fn a_put_may_not_name_files_the_table_in_force_does_not() {
    let origin = Origin::start();
    let with_ca = |ca: &str, flip: &str| {
        table(&origin.url(), flip, "watch = false", "").replacen(
            &format!("url = \"{}\"\n", origin.url()),
            &format!("url = \"{}\"\nca_file = \"{ca}\"\n", origin.url()),
            1,
        )
    };
    let a = with_ca("ca.pem", "allow");
    let pki = TestPki::new();
    let gw = Gateway::builder(&a).file("ca.pem", pki.ca_pem()).start();
    let tag = quoted(&sha256_hex(a.as_bytes()));
    let before = Unchanged::capture(&gw).await;

    for (what, other) in [
        ("an absolute path", "/etc/passwd".to_string()),
        ("a relative path", "keys/other.pem".to_string()),
        (
            "a path out of the folder",
            format!("{}/../ca.pem", gw.dir().display()),
        ),
    ] {
        let bad = with_ca(&other, "deny");
        let line = bad
            .lines()
            .position(|l| l.starts_with("ca_file"))
            .expect("ca_file line")
            + 1;
        let r = put_source(&gw, "ops", Some(&tag), &bad).await;
        let p = assert_problem(&r, 422, "invalid-config");
        let errors = p["errors"].to_string();
        assert!(
            errors.contains(&format!("proxy.toml:{line}:11: error: "))
                && errors.contains("not named by the table in force"),
            "{what}: {p:#}"
        );
        before.check(&gw, what).await;
    }
    // The same file, spelt absolutely, is the file in force.
    let b = with_ca(&format!("{}/ca.pem", gw.dir().display()), "deny");
    let r = put_source(&gw, "ops", Some(&tag), &b).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json()["warnings"].as_array().map(Vec::len),
        Some(1),
        "{}",
        r.text()
    );
    assert_eq!(status_of(&gw, "/flip/x").await, 403);
}

/// Only operators read or replace the source; a refused caller's body is never applied.
#[tokio::test]
async fn only_operators_read_or_replace_the_source() {
    let origin = Origin::start();
    let a = table(&origin.url(), "allow", "watch = false", "");
    let b = table(&origin.url(), "deny", "watch = false", "");
    let gw = Gateway::start(&a);
    let tag = quoted(&sha256_hex(a.as_bytes()));
    let before = Unchanged::capture(&gw).await;

    for user in ["alice", "bob", "mallory"] {
        let r = get_source(&gw, user, &[]).await;
        assert_problem(&r, 403, "not-an-operator");
        assert!(r.header("etag").is_none(), "{user} learnt the version");
        assert!(!r.text().contains("[[routes]]"), "{user} read the table");
        let r = put_source(&gw, user, Some(&tag), &b).await;
        assert_problem(&r, 403, "not-an-operator");
        before.check(&gw, user).await;
    }
    for auth in [vec![], vec![("authorization", "Bearer not-a-token")]] {
        let r = send("GET", &gw.admin(SOURCE), &auth, "").await;
        assert_problem(&r, 401, "unauthenticated");
        let mut headers = auth.clone();
        headers.push(("if-match", tag.as_str()));
        let r = send("PUT", &gw.admin(SOURCE), &headers, b.clone()).await;
        assert_problem(&r, 401, "unauthenticated");
    }
    before.check(&gw, "unauthenticated").await;
    assert!(rules_events(&gw).await.is_empty());
    assert!(
        !gw.stderr_text().contains("name = \"flip\""),
        "a PUT body reached the log"
    );
}

/// A file the gateway must not replace is refused with 409 and left as it is: read-only, a
/// symbolic link (the Kubernetes ConfigMap layout), or an edit on disk not yet in force.
#[tokio::test]
async fn read_only_linked_or_edited_config_is_refused_with_409() {
    let origin = Origin::start();
    let a = table(&origin.url(), "allow", "watch = false", "");
    let b = table(&origin.url(), "deny", "watch = false", "");
    let gw = Gateway::start(&a);
    let tag = quoted(&sha256_hex(a.as_bytes()));
    let path = gw.config_path().to_path_buf();

    // Read-only (mode 0444), refused even though the test (and the gateway) may run as root.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o444)).expect("chmod");
    let before = Unchanged::capture(&gw).await;
    let r = put_source(&gw, "ops", Some(&tag), &b).await;
    let p = assert_problem(&r, 409, "config-not-writable");
    assert!(
        p["detail"]
            .as_str()
            .is_some_and(|d| d.contains("read-only")),
        "{p:#}"
    );
    before.check(&gw, "read-only").await;
    let rejected = wait_rules_event(&gw, "rules.rejected (read-only)", |e| {
        e["kind"] == "rules.rejected"
    })
    .await;
    assert_eq!(rejected["actor"], "ops");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");

    // proxy.toml -> ..data/proxy.toml, ..data -> ..v1: a ConfigMap mount.
    let real = gw.dir().join("..v1");
    std::fs::create_dir(&real).expect("mkdir");
    std::fs::write(real.join("proxy.toml"), &a).expect("write");
    std::os::unix::fs::symlink("..v1", gw.dir().join("..data")).expect("link ..data");
    let tmp = gw.dir().join("proxy.toml.link");
    std::os::unix::fs::symlink("..data/proxy.toml", &tmp).expect("link");
    std::fs::rename(&tmp, &path).expect("swap in the link");
    let before = Unchanged::capture(&gw).await;
    let r = put_source(&gw, "ops", Some(&tag), &b).await;
    let p = assert_problem(&r, 409, "config-not-writable");
    assert!(
        p["detail"]
            .as_str()
            .is_some_and(|d| d.contains("symbolic link")),
        "{p:#}"
    );
    before.check(&gw, "symlink").await;
    assert!(std::fs::symlink_metadata(&path)
        .expect("stat")
        .file_type()
        .is_symlink());
    assert!(std::fs::read(real.join("proxy.toml")).expect("read") == a.as_bytes());
    // Back to a plain file.
    std::fs::remove_file(&path).expect("unlink");
    std::fs::write(&path, &a).expect("write");

    // An edit on disk the gateway has not loaded (watch = false): replacing the file would
    // lose it.
    let c = format!("{a}\n# an edit on disk, not reloaded yet\n");
    gw.rewrite_config(&c);
    let r = put_source(&gw, "ops", Some(&tag), &b).await;
    let p = assert_problem(&r, 409, "config-changed-on-disk");
    assert_eq!(p["diskVersion"], sha256_hex(c.as_bytes()), "{p:#}");
    assert_eq!(p["currentVersion"], sha256_hex(a.as_bytes()), "{p:#}");
    assert!(std::fs::read(&path).expect("read") == c.as_bytes());
    assert_eq!(status_of(&gw, "/flip/x").await, 200);
}

/// Reloads from a file edit are audited by nobody (`actor` null, trigger `watch`): applied
/// ones as `rules.reloaded`, refused ones as `rules.rejected` with their positioned errors.
#[tokio::test]
async fn file_edits_are_audited_as_the_gateway() {
    let origin = Origin::start();
    let a = table(&origin.url(), "allow", "", "");
    let b = table(&origin.url(), "deny", "", "");
    let gw = Gateway::start(&a);
    let (va, vb) = (sha256_hex(a.as_bytes()), sha256_hex(b.as_bytes()));

    gw.rewrite_config(&b);
    let e = wait_rules_event(&gw, "watch reload", |e| {
        e["kind"] == "rules.reloaded" && e["detail"]["version"] == vb
    })
    .await;
    assert_eq!(e["actor"], Value::Null, "{e:#}");
    assert_eq!(e["detail"]["trigger"], "watch", "{e:#}");
    assert_eq!(e["detail"]["previousVersion"], va, "{e:#}");
    assert_eq!(status_of(&gw, "/flip/x").await, 403);

    let bad = table(&origin.url(), "allow", "colour = \"red\"", "");
    gw.rewrite_config(&bad);
    let e = wait_rules_event(&gw, "watch rejection", |e| e["kind"] == "rules.rejected").await;
    assert_eq!(e["actor"], Value::Null, "{e:#}");
    assert_eq!(e["detail"]["trigger"], "watch", "{e:#}");
    assert_eq!(e["detail"]["version"], sha256_hex(bad.as_bytes()), "{e:#}");
    assert_eq!(e["detail"]["errorCount"], 1, "{e:#}");
    assert!(
        e["detail"]["errors"][0]
            .as_str()
            .is_some_and(|l| l.contains("proxy.toml:4:1: error: ")),
        "{e:#}"
    );
    assert_eq!(status_of(&gw, "/flip/x").await, 403);
}

/// `POST /v1/admin/reload` is audited by its caller (applied or refused), SIGHUP by nobody;
/// a reload that finds the file unchanged records nothing. The API answers once the event is
/// recorded.
#[tokio::test]
async fn api_and_signal_reloads_are_audited_with_their_actor() {
    let origin = Origin::start();
    let a = table(&origin.url(), "allow", "watch = false", "");
    let b = table(&origin.url(), "deny", "watch = false", "");
    let gw = Gateway::start(&a);
    let (va, vb) = (sha256_hex(a.as_bytes()), sha256_hex(b.as_bytes()));

    gw.rewrite_config(&b);
    let r = admin_call(&gw, "ops", "POST", "/v1/admin/reload", "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let events = rules_events(&gw).await;
    assert_eq!(events.len(), 1, "{events:#?}");
    let e = &events[0];
    assert_eq!(e["kind"], "rules.reloaded", "{e:#}");
    assert_eq!(e["actor"], "ops", "{e:#}");
    assert_eq!(e["detail"]["trigger"], "admin", "{e:#}");
    assert_eq!(e["detail"]["previousVersion"], va, "{e:#}");
    assert_eq!(e["detail"]["version"], vb, "{e:#}");

    // Unchanged: nothing to record.
    let r = admin_call(&gw, "ops", "POST", "/v1/admin/reload", "").await;
    assert_eq!(r.json()["changed"], false, "{}", r.text());
    assert_eq!(rules_events(&gw).await.len(), 1);

    let bad = table(&origin.url(), "allow", "colour = \"red\"", "");
    gw.rewrite_config(&bad);
    let r = admin_call(&gw, "ops", "POST", "/v1/admin/reload", "").await;
    assert_problem(&r, 422, "invalid-config");
    let events = rules_events(&gw).await;
    assert_eq!(events.len(), 2, "{events:#?}");
    let e = &events[1];
    assert_eq!(e["kind"], "rules.rejected", "{e:#}");
    assert_eq!(e["actor"], "ops", "{e:#}");
    assert_eq!(e["detail"]["trigger"], "admin", "{e:#}");
    assert_eq!(e["detail"]["version"], sha256_hex(bad.as_bytes()), "{e:#}");
    assert_eq!(e["detail"]["errors"], r.json()["errors"], "{e:#}");

    gw.rewrite_config(&a);
    gw.signal(Sig::Hup);
    let e = wait_rules_event(&gw, "SIGHUP reload", |e| {
        e["kind"] == "rules.reloaded" && e["detail"]["version"] == va
    })
    .await;
    assert_eq!(e["actor"], Value::Null, "{e:#}");
    assert_eq!(e["detail"]["trigger"], "signal", "{e:#}");
    assert_eq!(e["detail"]["previousVersion"], vb, "{e:#}");
    assert_eq!(status_of(&gw, "/flip/x").await, 200);
}

/// SPEC 11.4: with the store down a PUT still applies (allow routes keep flowing under the
/// new table); its audit event is kept and written once the store is back.
#[tokio::test]
async fn a_put_applies_while_the_store_is_down_and_is_audited_when_it_returns() {
    let mut redis = RedisServer::start();
    let origin = Origin::start();
    let store = format!("[store]\nkind = \"redis\"\nurl = \"{}\"\n", redis.url());
    let a = table(&origin.url(), "allow", "watch = false", &store);
    let b = table(&origin.url(), "deny", "watch = false", &store);
    let gw = Gateway::start(&a);
    let (va, vb) = (sha256_hex(a.as_bytes()), sha256_hex(b.as_bytes()));
    assert!(
        poll_until(|| async {
            let r = send("GET", &gw.admin("/readyz"), &[], "").await;
            r.json()["store"]["status"] == "ok"
        })
        .await,
        "the store never connected"
    );

    redis.stop();
    let r = put_source(&gw, "ops", Some(&quoted(&va)), &b).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["version"], vb);
    assert_eq!(status_of(&gw, "/flip/x").await, 403);
    assert_eq!(status_of(&gw, "/steady/x").await, 200);
    assert!(
        gw.wait_for_stderr("retrying in the background", WAIT).await,
        "the failed append was not reported:\n{}",
        gw.stderr_text()
    );

    redis.restart();
    let e = wait_rules_event(&gw, "rules.reloaded after the outage", |e| {
        e["kind"] == "rules.reloaded" && e["detail"]["version"] == vb
    })
    .await;
    assert_eq!(e["actor"], "ops", "{e:#}");
    assert_eq!(e["detail"]["trigger"], "put", "{e:#}");
    assert_eq!(e["detail"]["previousVersion"], va, "{e:#}");
}
