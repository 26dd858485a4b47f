//! The `jitgate` command line (README "CLI"): `check`, `explain` and `demo --once`, run as
//! the real binary.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const JITGATE: &str = env!("CARGO_BIN_EXE_jitgate");

// === helpers ===

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn all(&self) -> String {
        format!(
            "exit {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

fn from_output(o: Output) -> Run {
    Run {
        code: o.status.code(),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

/// Runs `jitgate ARGS` in `dir`, killing it after `timeout`.
fn jitgate(dir: &Path, args: &[&str], timeout: Duration) -> Run {
    let mut child = Command::new(JITGATE)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn jitgate");
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            _ => {
                let _ = child.kill();
                let run = from_output(child.wait_with_output().expect("collect output"));
                panic!(
                    "jitgate {args:?} did not finish within {timeout:?}\n{}",
                    run.all()
                );
            }
        }
    }
    from_output(child.wait_with_output().expect("collect output"))
}

fn run(dir: &Path, args: &[&str]) -> Run {
    jitgate(dir, args, Duration::from_secs(20))
}

fn write(dir: &Path, name: &str, contents: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, contents).expect("write config");
    path
}

const HEAD: &str = r#"[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:1"

[[upstreams]]
name = "origin"
url = "http://127.0.0.1:1"
"#;

/// The 0-based index of the line equal to `needle`. For a route's `name = "..."` line this
/// is the 1-based line number of its `[[routes]]` header, just above it.
fn line_index(table: &str, needle: &str) -> usize {
    table
        .lines()
        .position(|l| l == needle)
        .unwrap_or_else(|| panic!("{needle} not in table"))
}

// === check ===

#[test]
fn check_accepts_a_valid_table() {
    let dir = tempfile::tempdir().expect("tempdir");
    let table = format!(
        "{HEAD}\n[[routes]]\nname = \"admin\"\npath = \"/admin/**\"\naction = \"deny\"\n\n\
         [[routes]]\nname = \"rest\"\npath = \"/**\"\nupstream = \"origin\"\naction = \"allow\"\n"
    );
    write(dir.path(), "proxy.toml", &table);
    let r = run(dir.path(), &["check", "proxy.toml"]);
    assert_eq!(r.code, Some(0), "{}", r.all());
    assert!(r.stdout.contains("OK"), "{}", r.all());
    assert!(!r.stdout.contains("error"), "{}", r.all());

    // The shipped example is valid too.
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("proxy.toml");
    let shipped = shipped.to_str().expect("utf-8 path");
    let r = run(dir.path(), &["check", shipped]);
    assert_eq!(r.code, Some(0), "{}", r.all());
    assert!(r.stdout.contains("OK"), "{}", r.all());
}

#[test]
fn check_reports_every_error_with_its_position() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Line numbers matter: each error below is asserted at its exact position.
    let table = r#"[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:1"
colour = "red"

[approvals]
hold_timeout = "soon"

[[upstreams]]
name = "origin"
url = "http://127.0.0.1:1"

[[routes]]
name = "ghost"
path = "/ghost/**"
upstream = "nowhere"
action = "allow"

[[routes]]
name = "prod"
path = "/prod/**"
upstream = "origin"
action = "approve"
[routes.approval]
approvers = ["user:alice"]
quorum = 0

[[routes]]
name = "odd"
path = "/x"
action = "maybe"
"#;
    write(dir.path(), "bad.toml", table);
    let r = run(dir.path(), &["check", "bad.toml"]);
    assert_eq!(r.code, Some(1), "{}", r.all());
    let errors: Vec<&str> = r
        .stdout
        .lines()
        .chain(r.stderr.lines())
        .filter(|l| l.starts_with("bad.toml:") && l.contains(": error: "))
        .collect();
    for (at, about) in [
        ("4:1", "colour"),
        ("16:12", "nowhere"),
        ("26:10", "quorum"),
        ("31:10", "maybe"),
    ] {
        assert!(
            errors
                .iter()
                .any(|l| l.starts_with(&format!("bad.toml:{at}: error: ")) && l.contains(about)),
            "no error about {about} at bad.toml:{at}\n{}",
            r.all()
        );
    }
    // Every error is reported, not just the first, each in FILE:LINE:COL form.
    assert!(errors.len() >= 5, "{}", r.all());
    assert!(
        errors.iter().any(|l| l.contains("hold_timeout")),
        "{}",
        r.all()
    );
    assert!(!r.stdout.contains(": OK"), "{}", r.all());
}

#[test]
fn check_reports_a_syntax_error_with_its_position() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(
        dir.path(),
        "syntax.toml",
        "[server]\nlisten = \"127.0.0.1:0\nadmin_listen = \"127.0.0.1:1\"\n",
    );
    let r = run(dir.path(), &["check", "syntax.toml"]);
    assert_eq!(r.code, Some(1), "{}", r.all());
    assert!(
        r.stdout.contains("syntax.toml:2:22: error: "),
        "{}",
        r.all()
    );
}

#[test]
fn check_refuses_an_approve_route_shadowed_by_an_allow_route() {
    let dir = tempfile::tempdir().expect("tempdir");
    let table = format!(
        "{HEAD}\n[[routes]]\nname = \"everything\"\npath = \"/**\"\nupstream = \"origin\"\naction = \"allow\"\n\n\
         [[routes]]\nname = \"prod\"\npath = \"/prod/**\"\nupstream = \"origin\"\naction = \"approve\"\n\
         [routes.approval]\napprovers = [\"user:alice\"]\nquorum = 1\n"
    );
    // The route's `[[routes]]` header is the line before its name: the name's 0-based index
    // is the header's 1-based line number.
    let prod_line = line_index(&table, "name = \"prod\"");
    write(dir.path(), "shadow.toml", &table);
    let r = run(dir.path(), &["check", "shadow.toml"]);
    assert_eq!(r.code, Some(1), "{}", r.all());
    let at = format!("shadow.toml:{prod_line}:1: error: ");
    assert!(
        r.stdout
            .lines()
            .any(|l| l.starts_with(&at) && l.contains("prod") && l.contains("everything")),
        "expected {at}... naming both routes\n{}",
        r.all()
    );

    // The same shadowing with a deny route is just as much a hole.
    let deny = table
        .replace(
            "upstream = \"origin\"\naction = \"approve\"",
            "action = \"deny\"",
        )
        .replace(
            "[routes.approval]\napprovers = [\"user:alice\"]\nquorum = 1\n",
            "",
        );
    write(dir.path(), "shadow-deny.toml", &deny);
    let r = run(dir.path(), &["check", "shadow-deny.toml"]);
    assert_eq!(r.code, Some(1), "{}", r.all());
    assert!(
        r.stdout
            .contains(&format!("shadow-deny.toml:{prod_line}:1: error: ")),
        "{}",
        r.all()
    );
}

/// Every error is reported in one run: a shadowed approve route is not hidden behind an
/// unrelated error elsewhere in the file.
#[test]
fn check_reports_a_shadowed_approve_route_alongside_other_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let table = format!(
        "{HEAD}\n[[routes]]\nname = \"ghost\"\npath = \"/ghost/**\"\nupstream = \"nowhere\"\naction = \"allow\"\n\n\
         [[routes]]\nname = \"everything\"\npath = \"/**\"\nupstream = \"origin\"\naction = \"allow\"\n\n\
         [[routes]]\nname = \"prod\"\npath = \"/prod/**\"\nupstream = \"origin\"\naction = \"approve\"\n\
         [routes.approval]\napprovers = [\"user:alice\"]\nquorum = 1\n"
    );
    let ghost_line = line_index(&table, "upstream = \"nowhere\"") + 1;
    let prod_line = line_index(&table, "name = \"prod\"");
    write(dir.path(), "both.toml", &table);
    let r = run(dir.path(), &["check", "both.toml"]);
    assert_eq!(r.code, Some(1), "{}", r.all());
    assert!(
        r.stdout
            .contains(&format!("both.toml:{ghost_line}:12: error: ")),
        "{}",
        r.all()
    );
    assert!(
        r.stdout.lines().any(
            |l| l.starts_with(&format!("both.toml:{prod_line}:1: error: ")) && l.contains("prod")
        ),
        "the shadowed approve route is not reported next to the other error\n{}",
        r.all()
    );
}

#[test]
fn check_warns_about_other_shadowed_routes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let table = format!(
        "{HEAD}\n[[routes]]\nname = \"everything\"\npath = \"/**\"\nupstream = \"origin\"\naction = \"allow\"\n\n\
         [[routes]]\nname = \"later\"\npath = \"/x/**\"\nupstream = \"origin\"\naction = \"allow\"\n"
    );
    let later_line = line_index(&table, "name = \"later\"");
    write(dir.path(), "warn.toml", &table);
    let r = run(dir.path(), &["check", "warn.toml"]);
    assert_eq!(r.code, Some(0), "{}", r.all());
    assert!(
        r.stdout.lines().any(
            |l| l.starts_with(&format!("warn.toml:{later_line}:1: warning: "))
                && l.contains("later")
        ),
        "{}",
        r.all()
    );
    assert!(r.stdout.contains("OK"), "{}", r.all());
    assert!(!r.stdout.contains(": error: "), "{}", r.all());
}

// === explain ===

const EXPLAIN_TABLE: &str = r#"
[[routes]]
name = "public"
path = "/public/**"
upstream = "origin"
action = "allow"

[[routes]]
name = "writes"
methods = ["POST"]
path = "/**"
upstream = "origin"
action = "allow"

[[routes]]
name = "other-host"
host = "other.example.com"
upstream = "origin"
action = "allow"

[[routes]]
name = "admin-area"
path = "/admin/**"
case_insensitive = true
action = "deny"
"#;

fn explain_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "proxy.toml", &format!("{HEAD}{EXPLAIN_TABLE}"));
    dir
}

#[test]
fn explain_shows_the_canonical_form_and_why_earlier_routes_did_not_match() {
    let dir = explain_dir();
    let r = run(
        dir.path(),
        &[
            "explain",
            "--config",
            "proxy.toml",
            "GET",
            "http://api.example.com/%61dmin/x",
        ],
    );
    assert_eq!(r.code, Some(0), "{}", r.all());
    let out = &r.stdout;
    assert!(
        out.contains("canonical: GET /admin/x\n") && out.contains("host: api.example.com\n"),
        "canonical form missing\n{}",
        r.all()
    );
    // Each earlier route is listed with the reason it did not match.
    for (name, why) in [
        ("public", "/public/**"),
        ("writes", "POST"),
        ("other-host", "other.example.com"),
    ] {
        assert!(
            out.lines().any(|l| l.contains(name) && l.contains(why)),
            "no reason given for route {name}\n{}",
            r.all()
        );
    }
    let verdict = single_verdict(&r);
    assert!(
        verdict.contains("admin-area") && verdict.contains("deny"),
        "{}",
        r.all()
    );
}

/// The one `=> ...` verdict line of an explain run (printed once, on its own line).
fn single_verdict(r: &Run) -> &str {
    let verdicts: Vec<&str> = r.stdout.lines().filter(|l| l.contains("=>")).collect();
    assert_eq!(verdicts.len(), 1, "{}", r.all());
    assert_eq!(
        verdicts[0].matches("=>").count(),
        1,
        "verdict printed more than once on one line: {:?}",
        verdicts[0]
    );
    verdicts[0]
}

#[test]
fn explain_without_a_matching_route_exits_1() {
    let dir = explain_dir();
    let r = run(
        dir.path(),
        &[
            "explain",
            "--config",
            "proxy.toml",
            "GET",
            "http://api.example.com/nothing",
        ],
    );
    assert_eq!(r.code, Some(1), "{}", r.all());
    let verdict = single_verdict(&r);
    assert!(verdict.contains("no route"), "{}", r.all());
    assert!(verdict.contains("404"), "{}", r.all());
    // Every route was tried and said why not.
    assert!(
        r.stdout
            .lines()
            .any(|l| l.contains("admin-area") && l.contains("/admin/**")),
        "{}",
        r.all()
    );
}

#[test]
fn explain_refuses_a_malformed_target_with_400() {
    let dir = explain_dir();
    for target in [
        "http://api.example.com/public%2F..%2Fadmin",
        "http://api.example.com/../admin",
        "/public/..;/admin",
    ] {
        let r = run(
            dir.path(),
            &["explain", "--config", "proxy.toml", "GET", target],
        );
        assert_eq!(r.code, Some(1), "{target}\n{}", r.all());
        assert!(
            r.stdout.contains("400") || r.stderr.contains("400"),
            "{target}\n{}",
            r.all()
        );
        assert!(!r.stdout.contains("admin-area"), "{target}\n{}", r.all());
    }
}

// === demo ===

/// A port nothing listens on right now (bound and released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("probe port")
        .port()
}

#[test]
fn demo_once_walks_through_and_exits_0() {
    let dir = tempfile::tempdir().expect("tempdir");
    let shipped = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("proxy.toml"))
        .expect("read shipped proxy.toml");
    let (data, admin, upstream) = (free_port(), free_port(), free_port());
    let config = shipped
        .replace("127.0.0.1:8080", &format!("127.0.0.1:{data}"))
        .replace("127.0.0.1:9090", &format!("127.0.0.1:{admin}"))
        .replace("127.0.0.1:9000", &format!("127.0.0.1:{upstream}"));
    assert_ne!(config, shipped, "the shipped ports moved; update this test");
    write(dir.path(), "demo.toml", &config);
    let r = jitgate(
        dir.path(),
        &["demo", "--config", "demo.toml", "--once"],
        Duration::from_secs(60),
    );
    assert_eq!(r.code, Some(0), "{}", r.all());
    let out = &r.stdout;
    assert!(
        out.contains(&format!("127.0.0.1:{data}")),
        "the demo did not use the configured port\n{}",
        r.all()
    );
    // Answers, in step order: the first is the plain read, a later one the admin area.
    let answers: Vec<&str> = out
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("-> "))
        .collect();
    assert!(
        answers.first().is_some_and(|a| a.starts_with("-> 200")),
        "first step is not a 200\n{}",
        r.all()
    );
    let admin_step = out
        .split("\n\n")
        .find(|block| block.contains("/admin/users") && block.contains("curl"))
        .unwrap_or_else(|| panic!("no admin step\n{}", r.all()));
    assert!(
        admin_step.contains("-> 403"),
        "admin step is not a 403:\n{admin_step}"
    );
    // The held deploy is approved and released with a token; the next one is denied with
    // carol's reason.
    let approved = out
        .split("\n\n")
        .find(|block| block.contains("/v1/deployments/prod/web") && block.contains("/approve"))
        .unwrap_or_else(|| panic!("no approval step\n{}", r.all()));
    assert!(
        approved.contains("ticket APPROVED")
            && approved.contains("-> 200")
            && approved.contains("with a Jit-Approval token"),
        "approval step:\n{approved}"
    );
    let denied = out
        .split("\n\n")
        .find(|block| block.contains("/v1/deployments/prod/api") && block.contains("/deny"))
        .unwrap_or_else(|| panic!("no denial step\n{}", r.all()));
    assert!(
        denied.contains("ticket DENIED")
            && denied.contains("-> 403")
            && denied.contains("change freeze until Monday"),
        "denial step:\n{denied}"
    );
}

// === token ===

const TOKEN_CONFIG: &str = r#"
[identity.jwt]
issuer = "https://idp.test"
audience = "jitgate"
hs256_secret_env = "JITGATE_CLI_TEST_SECRET"
groups_claim = "groups"
"#;

const TOKEN_SECRET: &str = "a-development-secret-of-at-least-32-bytes!";

fn token_cmd(dir: &Path, secret: Option<&str>, args: &[&str]) -> Run {
    let mut cmd = Command::new(JITGATE);
    cmd.arg("token")
        .args(args)
        .current_dir(dir)
        .env_remove("JITGATE_CLI_TEST_SECRET")
        .stdin(Stdio::null());
    if let Some(s) = secret {
        cmd.env("JITGATE_CLI_TEST_SECRET", s);
    }
    from_output(cmd.output().expect("run jitgate token"))
}

#[test]
fn token_mints_a_jwt_the_gateway_accepts() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "proxy.toml", &format!("{HEAD}{TOKEN_CONFIG}"));
    let r = token_cmd(
        dir.path(),
        Some(TOKEN_SECRET),
        &[
            "--user", "alice", "-g", "oncall", "-g", "dev", "--ttl", "10m",
        ],
    );
    assert_eq!(r.code, Some(0), "{}", r.all());
    let token = r.stdout.trim();
    assert_eq!(token.split('.').count(), 3, "not a JWT: {token}");

    // The requester authenticator built from the same config accepts it.
    let src = std::fs::read_to_string(dir.path().join("proxy.toml")).expect("read");
    let table =
        jitgate_rules::RuleTable::parse(&src, Path::new("proxy.toml")).expect("valid config");
    let auth = jitgate_identity::Authenticator::from_config_with_env(
        &table.config().identity,
        &[],
        &|var| (var == "JITGATE_CLI_TEST_SECRET").then(|| TOKEN_SECRET.to_string()),
    )
    .expect("authenticator");
    let mut headers = http::HeaderMap::new();
    headers.insert(
        http::header::AUTHORIZATION,
        http::HeaderValue::from_str(&format!("Bearer {token}")).expect("header"),
    );
    let who = auth.authenticate(&headers, false).expect("token accepted");
    assert_eq!(who.user.as_deref(), Some("alice"));
    assert_eq!(who.groups, vec!["oncall".to_string(), "dev".to_string()]);

    // A different secret does not accept it.
    let other = jitgate_identity::Authenticator::from_config_with_env(
        &table.config().identity,
        &[],
        &|_| Some("another-secret-that-is-also-32-bytes-long".to_string()),
    )
    .expect("authenticator");
    assert!(other.authenticate(&headers, false).is_err());
}

#[test]
fn token_without_the_secret_variable_fails_with_one_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "proxy.toml", &format!("{HEAD}{TOKEN_CONFIG}"));
    let r = token_cmd(dir.path(), None, &["--user", "alice"]);
    assert_eq!(r.code, Some(1), "{}", r.all());
    assert!(r.stdout.is_empty(), "{}", r.all());
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.all());
    assert!(r.stderr.contains("JITGATE_CLI_TEST_SECRET"), "{}", r.all());
}

#[test]
fn token_without_identity_jwt_fails() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "proxy.toml", HEAD);
    let r = token_cmd(dir.path(), Some(TOKEN_SECRET), &["--user", "alice"]);
    assert_eq!(r.code, Some(1), "{}", r.all());
    assert!(r.stderr.contains("[identity.jwt]"), "{}", r.all());
}

const POLICY_TABLE: &str = r#"
[[routes]]
name = "deploy"
methods = ["POST"]
path = "/deploy/**"
upstream = "origin"
action = "approve"
[routes.approval]
approvers = ["group:oncall"]
escalate_after = "5m"
escalate_to = ["group:leads"]
[[routes.approval.auto_approve]]
name = "weekday-bots"
groups = ["bots"]
window = "Mon-Fri 09:00-17:00"
time_zone = "Europe/Berlin"
[[routes.approval.auto_approve]]
name = "office"
source = ["10.0.0.0/8"]
"#;

#[test]
fn explain_says_which_policy_applies_as_whom_and_when_and_why_the_others_do_not() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "proxy.toml", &format!("{HEAD}{POLICY_TABLE}"));
    let explain = |extra: &[&str]| {
        let mut args = vec!["explain", "--config", "proxy.toml"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["POST", "http://api.example.com/deploy/web"]);
        let r = run(dir.path(), &args);
        assert_eq!(r.code, Some(0), "{}", r.all());
        r
    };
    // Friday 11:00 in Berlin: the bots' policy applies.
    let r = explain(&[
        "--user",
        "bot",
        "--group",
        "bots",
        "--at",
        "2026-11-27T10:00:00Z",
    ]);
    assert!(
        r.stdout
            .contains("as bot (groups bots) at 2026-11-27T10:00:00"),
        "{}",
        r.all()
    );
    assert!(
        r.stdout.contains("auto_approve weekday-bots: APPLIES"),
        "{}",
        r.all()
    );
    assert!(r.stdout.contains("=> approved by policy"), "{}", r.all());
    // Saturday: neither applies, and each says why; a person decides, escalation shown.
    let r = explain(&[
        "--user",
        "bot",
        "--group",
        "bots",
        "--at",
        "2026-11-28T10:00:00Z",
    ]);
    assert!(
        r.stdout
            .contains("auto_approve weekday-bots: no, now is outside `window`"),
        "{}",
        r.all()
    );
    assert!(
        r.stdout
            .contains("auto_approve office: no, the client address is in none of `source`"),
        "{}",
        r.all()
    );
    assert!(
        r.stdout
            .contains("=> held for approval by group:oncall (quorum 1)"),
        "{}",
        r.all()
    );
    assert!(
        r.stdout.contains("escalates to group:leads after 5m"),
        "{}",
        r.all()
    );
    // From the office, anyone: the second policy.
    let r = explain(&["--source", "10.1.2.3", "--at", "2026-11-28T10:00:00Z"]);
    assert!(
        r.stdout
            .contains("auto_approve weekday-bots: no, the requester is in none of `groups`"),
        "{}",
        r.all()
    );
    assert!(
        r.stdout.contains("auto_approve office: APPLIES"),
        "{}",
        r.all()
    );
    // A bad time is one line and a non-zero exit.
    let r = run(
        dir.path(),
        &[
            "explain",
            "--config",
            "proxy.toml",
            "--at",
            "friday",
            "POST",
            "/deploy/web",
        ],
    );
    assert_eq!(r.code, Some(1), "{}", r.all());
    assert!(r.stderr.contains("--at"), "{}", r.all());
}
