#![allow(clippy::unwrap_used)]

use std::path::Path;

use super::*;
use crate::route::{MethodSet, Principal, Rate};
use crate::RuleTable;

const FILE: &str = "/etc/jitgate/proxy.toml";

fn parse(src: &str) -> RuleTable {
    match RuleTable::parse(src, Path::new(FILE)) {
        Ok(t) => t,
        Err(d) => panic!(
            "unexpected errors:\n{}",
            d.iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        ),
    }
}

/// Every diagnostic (errors and warnings) of a config that must fail.
fn errors(src: &str) -> Vec<String> {
    match RuleTable::parse(src, Path::new(FILE)) {
        Ok(_) => panic!("expected errors for:\n{src}"),
        Err(d) => d.iter().map(|d| d.to_string()).collect(),
    }
}

fn one_error(src: &str) -> String {
    let e: Vec<String> = errors(src)
        .into_iter()
        .filter(|d| d.contains(": error: "))
        .collect();
    assert_eq!(e.len(), 1, "expected one error, got {e:#?}");
    e.into_iter().next().unwrap()
}

const UP: &str = "[[upstreams]]\nname = \"up\"\nurl = \"http://127.0.0.1:9000\"\n";

fn with_route(route: &str) -> String {
    format!("{UP}\n[[routes]]\n{route}")
}

/// [`with_route`] in a table that identifies requesters (by trusted headers).
fn with_identity_and_route(route: &str) -> String {
    format!(
        "[server]\ntrusted_proxies = [\"127.0.0.1/32\"]\n\n[identity.headers]\nuser = \"X-User\"\n\n{}",
        with_route(route)
    )
}

#[test]
fn break_glass_groups_need_requesters_that_carry_groups() {
    let route = "name = \"r\"\nupstream = \"up\"\naction = \"approve\"\n[routes.approval]\napprovers = [\"group:ops\"]\nbreak_glass = { groups = [\"sre\"] }\n";
    // Trusted identity headers without a groups header: a user, but never a group.
    let e = one_error(&with_identity_and_route(route));
    assert!(
        e.contains(":17:15: error: route r: `break_glass` groups overlap nobody"),
        "{e}"
    );
    // A groups header nobody is trusted to send.
    let untrusted = format!(
        "[identity.headers]\nuser = \"X-User\"\ngroups = \"X-Groups\"\n\n{}",
        with_route(route)
    );
    assert!(one_error(&untrusted).contains("`break_glass` groups overlap nobody"));
    // No identity at all.
    assert!(one_error(&with_route(route)).contains("`break_glass` groups overlap nobody"));
    // Trusted groups header, or a JWT (its groups claim): someone can be in `sre`.
    let grouped = format!(
        "[server]\ntrusted_proxies = [\"127.0.0.1/32\"]\n\n[identity.headers]\nuser = \"X-User\"\ngroups = \"X-Groups\"\n\n{}",
        with_route(route)
    );
    parse(&grouped);
    let jwt = format!(
        "[identity.jwt]\nhs256_secret_env = \"JWT_SECRET\"\n\n{}",
        with_route(route)
    );
    parse(&jwt);
}

#[test]
fn routes_that_need_identified_requesters_need_a_way_to_identify_them() {
    let access = "name = \"r\"\nupstream = \"up\"\naction = \"approve\"\n[routes.approval]\napprovers = [\"group:ops\"]\nmode = \"access\"\nmax_duration = \"1h\"\n";
    let got: Vec<String> = errors(&with_route(access))
        .into_iter()
        .filter(|d| d.contains(": error: "))
        .collect();
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].contains("route r: mode = \"access\" needs identified requesters, but neither [identity.jwt] nor [identity.headers] with [server] trusted_proxies is configured"), "{got:?}");
    // Identity headers nobody is trusted to send identify nobody.
    let untrusted = format!(
        "[identity.headers]\nuser = \"X-User\"\n\n{}",
        with_route(access)
    );
    let got: Vec<String> = errors(&untrusted)
        .into_iter()
        .filter(|d| d.contains(": error: "))
        .collect();
    assert!(
        got.len() == 1 && got[0].contains("needs identified requesters"),
        "{got:?}"
    );
    let required = "name = \"r\"\nupstream = \"up\"\naction = \"approve\"\n[routes.approval]\napprovers = [\"group:ops\"]\nrequire_identity = true\n";
    let got: Vec<String> = errors(&with_route(required))
        .into_iter()
        .filter(|d| d.contains(": error: "))
        .collect();
    assert!(
        got.len() == 1 && got[0].contains("`require_identity` needs identified requesters"),
        "{got:?}"
    );
    // With an identity source both are fine.
    parse(&with_identity_and_route(access));
    parse(&with_identity_and_route(required));
}

#[test]
fn example_fixture_parses_every_key() {
    let src = include_str!("../../tests/data/proxy.example.toml");
    let t = parse(src);
    assert!(t.warnings().is_empty(), "{:?}", t.warnings());
    let c = t.config();
    assert_eq!(c.server.listen.to_string(), "0.0.0.0:8080");
    assert_eq!(c.server.admin_listen.to_string(), "127.0.0.1:9090");
    assert!(!c.server.admin_allow_remote);
    let tls = c.server.tls.as_ref().unwrap();
    assert_eq!(tls.cert, Path::new("/etc/jitgate/certs/gw.pem"));
    assert_eq!(tls.key, Path::new("/etc/jitgate/certs/gw.key"));
    assert_eq!(c.server.trusted_proxies.len(), 2);
    assert_eq!(c.server.shutdown_grace, Duration::from_secs(30));
    assert_eq!(
        c.audit.file.as_deref(),
        Some(Path::new("/etc/jitgate/audit/jitgate-audit.jsonl"))
    );
    assert!(c.server.watch);
    assert_eq!(
        c.store,
        Store::Redis {
            url: "redis://127.0.0.1:6379/0".into(),
            retention: Duration::from_secs(48 * 3600),
            ca_file: None,
            client_tls: None,
            sentinel_username: None,
            sentinel_password: None,
            replica_acks: None,
        }
    );
    assert_eq!(c.approvals.max_held_body, 1 << 20);
    assert_eq!(
        c.approvals.signing_key.as_deref(),
        Some(Path::new("/etc/jitgate/keys/approval-ed25519.pem"))
    );
    let jwt = c.identity.jwt.as_ref().unwrap();
    assert_eq!(jwt.issuer.as_deref(), Some("https://idp.example.com"));
    assert_eq!(jwt.hs256_secret_env.as_deref(), Some("JITGATE_JWT_SECRET"));
    assert_eq!(
        jwt.public_keys,
        vec![PathBuf::from("/etc/jitgate/keys/idp.pem")]
    );
    assert_eq!(
        jwt.jwks_file.as_deref(),
        Some(Path::new("/etc/jitgate/keys/jwks.json"))
    );
    let h = c.identity.headers.as_ref().unwrap();
    assert_eq!(
        (h.user.as_str(), h.groups.as_deref()),
        ("x-auth-user", Some("x-auth-groups"))
    );
    // The names the edge strips from untrusted peers' requests (user, then groups).
    assert_eq!(
        c.identity.header_names(),
        [
            http::HeaderName::from_static("x-auth-user"),
            http::HeaderName::from_static("x-auth-groups")
        ]
    );
    assert_eq!(
        c.admin.operators,
        vec![
            Principal::Group("platform".into()),
            Principal::User("root".into())
        ]
    );
    assert_eq!(
        c.admin.jwt.as_ref().unwrap().jwks_file.as_deref(),
        Some(Path::new("/etc/jitgate/admin-jwks.json"))
    );
    assert_eq!(c.admin.api_tokens[0].name, "ci-bot");
    assert_eq!(c.admin.api_tokens[0].user, "ci");
    assert_eq!(
        (c.approvals.max_pending, c.approvals.max_pending_per_source),
        (5000, 10)
    );
    assert_eq!(
        c.identity.credential_headers,
        vec!["authorization", "cookie", "x-api-key", "x-session"]
    );
    assert_eq!(c.admin.api_tokens[0].groups, vec!["oncall".to_string()]);
    assert_eq!(
        c.admin.public_url.as_ref().unwrap().to_string(),
        "https://jitgate-admin.example.com/"
    );
    let kinds: Vec<(&str, NotifyKind)> =
        c.notify.iter().map(|n| (n.name.as_str(), n.kind)).collect();
    assert_eq!(
        kinds,
        [
            ("ops-hook", NotifyKind::Webhook),
            ("chat", NotifyKind::Slack),
            ("teams", NotifyKind::Teams)
        ]
    );
    assert_eq!(c.notify[0].events, ["ticket.opened", "ticket.decided"]);
    assert_eq!(
        (c.notify[0].timeout, c.notify[0].retry_for),
        (Duration::from_secs(5), Duration::from_secs(7200))
    );
    assert_eq!(
        c.notify[1].signing_secret_env.as_deref(),
        Some("SLACK_SIGNING_SECRET")
    );
    let billing = t.upstream("billing").unwrap();
    assert_eq!(billing.protocol, UpstreamProtocol::H2);
    assert!(!billing.preserve_host);
    assert_eq!(
        billing.ca_file.as_deref(),
        Some(Path::new("/etc/jitgate/certs/internal-ca.pem"))
    );
    assert_eq!(t.upstream("deploy-api").unwrap().pool_max_idle, 256);

    let names: Vec<&str> = t.routes().iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "block-debug",
            "prod-deploy",
            "billing-access",
            "everything-else"
        ]
    );
    let r = &t.routes()[0];
    let e = r.error.as_ref().unwrap();
    assert_eq!(
        (e.status.as_u16(), e.content_type.as_str()),
        (404, "application/json")
    );
    let r = &t.routes()[1];
    assert_eq!(r.index, 1);
    assert_eq!(
        r.methods,
        MethodSet::Only(vec![Method::POST, Method::PUT, Method::DELETE])
    );
    assert_eq!(r.host, Some(HostPattern::Exact("api.example.com".into())));
    assert_eq!(r.headers.len(), 2);
    assert_eq!(r.source.len(), 2);
    assert!(r.case_insensitive && r.allow_encoded_slash && r.allow_path_params && r.enforce);
    assert_eq!(r.location.to_string(), format!("{FILE}:81:1"));
    let a = r.approval.as_ref().unwrap();
    assert_eq!(
        a.approvers,
        vec![
            Principal::Group("oncall".into()),
            Principal::User("alice".into())
        ]
    );
    assert_eq!(a.mode, ApprovalMode::Action);
    assert!(a.require_identity);
    assert_eq!(a.hold_timeout, Some(Duration::from_secs(30)));
    assert_eq!(a.ticket_ttl, Some(Duration::from_secs(600)));
    assert_eq!(a.token_ttl, Some(Duration::from_secs(120)));
    assert_eq!(a.max_pending_per_requester, Some(3));
    assert_eq!(a.break_glass_groups, vec!["sre".to_string()]);
    assert_eq!(
        a.volatile_headers,
        vec![http::HeaderName::from_static("x-client-trace")]
    );
    assert_eq!(a.escalate_after, Some(Duration::from_secs(300)));
    assert_eq!(a.escalate_to, vec![Principal::Group("security".into())]);
    assert_eq!(
        a.approve_above_rate,
        Some(Rate {
            count: 10,
            per: Duration::from_secs(60)
        })
    );
    assert_eq!(
        a.notify.as_deref(),
        Some(&["ops-hook".to_string(), "chat".to_string()][..])
    );
    assert!(a.chat_approval);
    let auto = &a.auto_approve[0];
    assert_eq!(
        auto.path_prefix.as_deref(),
        Some("/v1/deployments/prod/canary")
    );
    assert_eq!(auto.methods, vec![Method::POST]);
    assert_eq!(auto.name, "canary-bots");
    assert_eq!(
        auto.window,
        Some(crate::policy::Window::parse("Mon-Fri 09:00-17:00").unwrap())
    );
    assert_eq!(
        auto.time_zone.as_ref().map(|z| z.name()),
        Some("Europe/Paris")
    );
    let e = r.error.as_ref().unwrap();
    assert_eq!(e.content_type, DEFAULT_ERROR_CONTENT_TYPE);
    let r = &t.routes()[2];
    assert_eq!(
        r.host,
        Some(HostPattern::Suffix(".billing.example.com".into()))
    );
    assert!(!r.enforce);
    let a = r.approval.as_ref().unwrap();
    assert_eq!(a.mode, ApprovalMode::Access);
    assert!(a.require_identity, "access forces require_identity");
    assert_eq!(
        a.durations,
        vec![Duration::from_secs(3600), Duration::from_secs(4 * 3600)]
    );
    assert_eq!(a.max_duration, Some(Duration::from_secs(8 * 3600)));
    assert_eq!(a.max_uses, Some(50));
    assert_eq!(
        a.auto_approve[0].duration_below,
        Some(Duration::from_secs(7200))
    );
    assert_eq!(t.version().len(), 64);
    assert!(t.canon_options().allow_encoded_slash && t.canon_options().allow_path_params);
}

#[test]
fn defaults() {
    let t = parse(&with_route(
        "name = \"r\"\nupstream = \"up\"\naction = \"allow\"\n",
    ));
    let c = t.config();
    assert_eq!(c.server.listen.to_string(), DEFAULT_LISTEN);
    assert_eq!(c.server.admin_listen.to_string(), DEFAULT_ADMIN_LISTEN);
    assert_eq!(c.server.header_read_timeout, Duration::from_secs(10));
    assert!(c.server.tls.is_none() && c.server.watch && c.server.trusted_proxies.is_empty());
    assert!(matches!(c.store, Store::Memory { .. }));
    assert_eq!(c.approvals.hold_timeout, Duration::from_secs(50));
    assert_eq!(c.approvals.ticket_ttl, Duration::from_secs(900));
    assert_eq!(c.approvals.token_ttl, Duration::from_secs(300));
    assert_eq!(c.approvals.max_held_body, 1 << 20);
    assert_eq!(c.identity, Identity::default());
    assert_eq!(c.admin, Admin::default());
    let u = t.upstream("up").unwrap();
    assert_eq!(u.protocol, UpstreamProtocol::Auto);
    assert!(u.preserve_host);
    assert_eq!(u.connect_timeout, Duration::from_secs(5));
    assert_eq!(u.response_timeout, Duration::from_secs(60));
    assert_eq!(u.idle_timeout, Duration::from_secs(60));
    assert_eq!(u.pool_idle_timeout, Duration::from_secs(90));
    assert_eq!(u.pool_max_idle, 256);
    let r = &t.routes()[0];
    assert_eq!(r.path.source, "/**");
    assert!(r.path.rest && r.path.segments.is_empty());
    assert_eq!(r.methods, MethodSet::Any);
    assert!(r.host.is_none() && r.headers.is_empty() && r.source.is_empty());
    assert!(r.enforce && !r.case_insensitive && !r.allow_encoded_slash && !r.allow_path_params);
    assert!(r.error.is_none() && r.approval.is_none());
    assert_eq!(r.location.to_string(), format!("{FILE}:5:1"));
}

#[test]
fn approval_defaults_and_error_defaults() {
    let t = parse(&with_route(
        "name = \"r\"\nupstream = \"up\"\naction = \"approve\"\n[routes.approval]\napprovers = [\"group:ops\"]\n[routes.error]\nstatus = 451\n",
    ));
    let r = &t.routes()[0];
    let a = r.approval.as_ref().unwrap();
    assert_eq!(
        (
            a.quorum,
            a.self_approval,
            a.mode,
            a.require_identity,
            a.token_uses
        ),
        (1, false, ApprovalMode::Action, false, 1)
    );
    assert!(
        a.hold_timeout.is_none()
            && a.durations.is_empty()
            && a.default_duration.is_none()
            && a.auto_approve.is_empty()
    );
    let e = r.error.as_ref().unwrap();
    assert_eq!(e.status.as_u16(), 451);
    assert_eq!(e.content_type, PROBLEM_JSON);
    assert!(e.body.contains("\"status\":451") && e.body.contains("{reason}"));
    assert!(placeholders(&e.body).all(|(_, n)| ERROR_PLACEHOLDERS.contains(&n)));
}

#[test]
fn access_default_duration_is_the_smallest_preset() {
    let t = parse(&with_identity_and_route(
        "name = \"r\"\nupstream = \"up\"\naction = \"approve\"\n[routes.approval]\napprovers = [\"group:ops\"]\nmode = \"access\"\ndurations = [\"4h\", \"30m\"]\nmax_duration = \"4h\"\n",
    ));
    assert_eq!(
        t.routes()[0].approval.as_ref().unwrap().default_duration,
        Some(Duration::from_secs(1800))
    );
}

/// `Jit-Duration`: exactly what was asked, one of the presets, never above the longest grant;
/// nothing silently shortened.
#[test]
fn a_requested_duration_is_granted_exactly_or_refused() {
    let route = |extra: &str| {
        let t = parse(&with_identity_and_route(&format!(
            "name = \"r\"\nupstream = \"up\"\naction = \"approve\"\n[routes.approval]\napprovers = [\"group:ops\"]\n{extra}"
        )));
        t.routes()[0].approval.clone().unwrap()
    };
    let min = |m: u64| Duration::from_secs(m * 60);
    let ms = |m: u64| Some(m * 60_000);
    let presets = route(
        "mode = \"access\"\ndurations = [\"4h\", \"30m\"]\nmax_duration = \"4h\"\nmax_uses = 3\n",
    );
    let terms = presets.grant_terms_for(Some(min(240))).unwrap().unwrap();
    assert_eq!(
        (Some(terms.duration_ms), terms.max_uses),
        (ms(240), Some(3))
    );
    assert_eq!(
        presets
            .grant_terms_for(None)
            .unwrap()
            .map(|t| t.duration_ms),
        ms(30)
    );
    let e = presets.grant_terms_for(Some(min(60))).unwrap_err();
    assert_eq!(
        e,
        "Jit-Duration 1h is not one of this route's durations: 4h, 30m"
    );
    let e = presets.grant_terms_for(Some(min(300))).unwrap_err();
    assert_eq!(
        e,
        "Jit-Duration 5h is longer than this route grants (4h at most)"
    );
    assert!(presets.grant_terms_for(Some(Duration::ZERO)).is_err());
    // Nothing under a millisecond, and nothing between milliseconds.
    assert!(presets
        .grant_terms_for(Some(Duration::from_nanos(1)))
        .is_err());
    assert!(presets
        .grant_terms_for(Some(min(30) + Duration::from_micros(500)))
        .is_err());

    // Without presets: anything up to max_duration (which access routes must set).
    let capped = route("mode = \"access\"\nmax_duration = \"2h\"\n");
    assert_eq!(
        capped
            .grant_terms_for(Some(min(45)))
            .unwrap()
            .map(|t| t.duration_ms),
        ms(45)
    );
    assert!(capped.grant_terms_for(Some(min(120))).is_ok());
    assert!(capped.grant_terms_for(Some(min(121))).is_err());

    // An action route grants nothing, whatever is asked.
    let action = route("");
    assert_eq!(action.grant_terms_for(Some(min(60))), Ok(None));
}

#[test]
fn relative_paths_resolve_against_the_config_folder() {
    let src = "[approvals]\nsigning_key = \"k.pem\"\n";
    let t = RuleTable::parse(src, Path::new("conf/proxy.toml")).unwrap();
    assert_eq!(
        t.config().approvals.signing_key.as_deref(),
        Some(Path::new("conf/k.pem"))
    );
    let t = RuleTable::parse(src, Path::new("proxy.toml")).unwrap();
    assert_eq!(
        t.config().approvals.signing_key.as_deref(),
        Some(Path::new("k.pem"))
    );
}

#[test]
fn audit_file_is_optional_resolved_and_checked() {
    let t = parse("");
    assert_eq!(t.config().audit, Audit::default());
    let t = RuleTable::parse(
        "[audit]\nfile = \"audit.jsonl\"\n",
        Path::new("conf/proxy.toml"),
    )
    .unwrap();
    assert_eq!(
        t.config().audit.file.as_deref(),
        Some(Path::new("conf/audit.jsonl"))
    );
    let t = parse("[audit]\nfile = \"/var/log/jitgate/audit.jsonl\"\n");
    assert_eq!(
        t.config().audit.file.as_deref(),
        Some(Path::new("/var/log/jitgate/audit.jsonl"))
    );
    assert_eq!(
        one_error("[audit]\nfiel = \"a.jsonl\"\n"),
        format!("{FILE}:2:1: error: unknown key `fiel` in [audit]; did you mean `file`?")
    );
    assert_eq!(
        one_error("[audit]\nfile = \"\"\n"),
        format!("{FILE}:2:8: error: `file` in [audit] is empty")
    );
    assert_eq!(
        one_error("[audit]\nfile = 3\n"),
        format!("{FILE}:2:8: error: `file` in [audit] must be a string, not integer")
    );
    assert_eq!(
        one_error("audit = \"a.jsonl\"\n"),
        format!("{FILE}:1:9: error: `audit` in the top level must be a table, not string")
    );
}

#[test]
fn syntax_errors_have_locations() {
    let e = errors("[server]\nlisten = \n");
    assert!(e[0].starts_with(&format!("{FILE}:2:10: error: ")), "{e:?}");
}

#[test]
fn unknown_keys_everywhere_with_suggestions() {
    let e = one_error("[server]\nlsiten = \"0.0.0.0:1\"\n");
    assert_eq!(
        e,
        format!("{FILE}:2:1: error: unknown key `lsiten` in [server]; did you mean `listen`?")
    );
    let e = one_error("[sever]\n");
    assert_eq!(
        e,
        format!("{FILE}:1:2: error: unknown key `sever` in the top level; did you mean `server`?")
    );
    let e = one_error(&with_route(
        "name = \"r\"\nupstream = \"up\"\naction = \"allow\"\nmethod = [\"GET\"]\n",
    ));
    assert_eq!(
        e,
        format!("{FILE}:9:1: error: unknown key `method` in [[routes]]; did you mean `methods`?")
    );
    let e = one_error(&with_route("name = \"r\"\nupstream = \"up\"\naction = \"approve\"\n[routes.approval]\napprovers = [\"user:a\"]\nqourum = 1\n"));
    assert_eq!(
        e,
        format!(
            "{FILE}:11:1: error: unknown key `qourum` in [routes.approval]; did you mean `quorum`?"
        )
    );
    let e = one_error("[store]\nzzz = 1\n");
    assert_eq!(
        e,
        format!("{FILE}:2:1: error: unknown key `zzz` in [store]")
    );
}

#[test]
fn all_errors_are_reported_together() {
    let src = format!(
        "[server]\nlisten = \"nope\"\n[store]\nkind = \"etcd\"\n{UP}[[routes]]\nname = \"a\"\nupstream = \"missing\"\naction = \"allow\"\n[[routes]]\nname = \"a\"\naction = \"alow\"\n"
    );
    let e = errors(&src);
    assert_eq!(
        e,
        vec![
            format!("{FILE}:2:10: error: `listen` in [server] must be IP:PORT (e.g. \"0.0.0.0:8080\"), not `nope`"),
            format!("{FILE}:4:8: error: `kind` in [store] must be \"memory\" or \"redis\", not `etcd`"),
            format!("{FILE}:10:12: error: route upstream `missing` is not declared in [[upstreams]]"),
            format!("{FILE}:13:8: error: route name `a` is used twice"),
            format!("{FILE}:14:10: error: `action` must be \"allow\", \"deny\" or \"approve\", not `alow`; did you mean `allow`?"),
        ]
    );
}

/// (config, expected "line:col: error: message") pairs, one error each.
#[test]
fn validation_errors_point_at_the_value() {
    let cases: Vec<(String, &str)> = vec![
        ("[server]\nadmin_listen = \"0.0.0.0:9090\"\n".into(), "2:16: error: `admin_listen` (0.0.0.0:9090) is not a loopback address; set `admin_allow_remote = true` to expose the admin plane"),
        ("[server]\nlisten = \"127.0.0.1:9000\"\nadmin_listen = \"127.0.0.1:9000\"\n".into(), "3:16: error: `admin_listen` (127.0.0.1:9000) must differ from `listen` (127.0.0.1:9000): the admin plane never shares the data port"),
        ("[server]\nwatch = \"yes\"\n".into(), "2:9: error: `watch` in [server] must be true or false, not string"),
        ("[server]\ntls = { cert = \"a.pem\" }\n".into(), "2:7: error: `tls` in [server] needs both `cert` and `key`"),
        ("[server]\ntrusted_proxies = [\"10.0.0.0/33\"]\n".into(), "2:20: error: invalid CIDR `10.0.0.0/33`; expected e.g. \"10.0.0.0/8\" or \"::1/128\""),
        ("[server]\nshutdown_grace = \"30\"\n".into(), "2:18: error: `shutdown_grace` in [server]: duration `30` needs a unit, e.g. \"30s\""),
        ("[store]\nkind = \"redis\"\n".into(), "2:8: error: [store] kind = \"redis\" needs `url` (redis:// or rediss://)"),
        ("[store]\nkind = \"redis\"\nurl = \"http://x\"\n".into(), "3:7: error: `url` in [store] must be a redis:// or rediss:// URL (or +sentinel / +cluster), not `http://x`"),
        ("[store]\nkind = \"redis\"\nurl = \"redis://r:6379\"\nca_file = \"ca.pem\"\n".into(), "4:11: error: `ca_file` in [store] needs a TLS url (rediss://, rediss+sentinel://, rediss+cluster://); `redis://r:6379` is plain text"),
        ("[store]\nkind = \"redis\"\nurl = \"redis://r:6379\"\ntls = { cert = \"c.pem\", key = \"c.key\" }\n".into(), "4:7: error: `tls` in [store] needs a TLS url (rediss://, rediss+sentinel://, rediss+cluster://); `redis://r:6379` is plain text"),
        ("[store]\nkind = \"redis\"\nurl = \"rediss://r:6379\"\ntls = { cert = \"c.pem\" }\n".into(), "4:7: error: `tls` in [store] needs both `cert` and `key`"),
        ("[store]\nkind = \"redis\"\nurl = \"rediss://r:6379/#insecure\"\n".into(), "3:7: error: `url` in [store] must not have a #fragment (`#insecure` would turn off certificate checks); give the CA with `ca_file`"),
        ("[store]\nkind = \"redis\"\nurl = \"redis+sentinel://s1:26379\"\n".into(), "3:7: error: `url` in [store]: a sentinel URL needs the primary's name after the hosts: redis+sentinel://host:port/MASTER_NAME"),
        ("[store]\nkind = \"redis\"\nurl = \"redis://r:6379\"\nsentinel_password = \"x\"\n".into(), "4:21: error: `sentinel_password` in [store] needs a redis+sentinel:// url"),
        ("[store]\nkind = \"redis\"\nurl = \"redis+cluster://a:7000,b:7000/1\"\n".into(), "3:7: error: `url` in [store]: a cluster URL is only seed nodes (Redis Cluster has one database): redis+cluster://host:port,host:port"),
        ("[store]\nkind = \"redis\"\nurl = \"rediss://r:6379\"\ntls = { cert = \"c.pem\", key = \"c.key\", ca = \"x\" }\n".into(), "4:40: error: unknown key `ca` in [store.tls]"),
        ("[approvals]\nmax_held_body = \"1mb\"\n".into(), "2:17: error: `max_held_body` in [approvals]: unknown size unit `mb` in `1mb`; use B, KiB, MiB, GiB, TiB, kB, MB, GB or TB"),
        ("[approvals]\nticket_ttl = \"soon\"\n".into(), "2:14: error: `ticket_ttl` in [approvals]: invalid duration `soon`: expected number at 0"),
        ("[identity.jwt]\nissuer = \"x\"\n".into(), "1:1: error: [identity.jwt] needs a key: `hs256_secret_env`, `public_keys` or `jwks_file`"),
        ("[identity.jwt]\nhs256_secret_env = \"MY-SECRET\"\n".into(), "2:20: error: `hs256_secret_env` in [identity.jwt] must be an environment variable name, not `MY-SECRET`"),
        ("[admin]\noperators = [\"platform\"]\n".into(), "2:14: error: invalid principal `platform`; expected `user:NAME` or `group:NAME`"),
        ("[admin]\napi_tokens = [{ name = \"x\", user = \"x\", sha256 = \"abc\" }]\n".into(), "2:50: error: `sha256` of an api token must be 64 hex digits (the SHA-256 of the token, never the token itself)"),
        (format!("{UP}{UP}"), "5:8: error: upstream name `up` is used twice"),
        ("[[upstreams]]\nname = \"u\"\nurl = \"ftp://x\"\n".into(), "3:7: error: upstream `url` `ftp://x` must start with http:// or https://"),
        ("[[upstreams]]\nname = \"u\"\nurl = \"http://x:1/api\"\n".into(), "3:7: error: upstream `url` `http://x:1/api` must not have a path; requests are forwarded with their own path"),
        ("[[upstreams]]\nname = \"u\"\nurl = \"http://x/?a=1\"\n".into(), "3:7: error: upstream `url` `http://x/?a=1` must not have a query"),
        ("[[upstreams]]\nname = \"u\"\nurl = \"http://me:pw@x\"\n".into(), "3:7: error: upstream `url` `http://me:pw@x` must not contain user info; credentials do not belong in the config"),
        ("[[upstreams]]\nname = \"u\"\nurl = \"http://x\"\nprotocol = \"h3\"\n".into(), "4:12: error: `protocol` in [[upstreams]] must be \"auto\", \"http1\" or \"h2\", not `h3`"),
        (with_route("name = \"r\"\naction = \"allow\"\n"), "5:1: error: an allow or approve route needs `upstream`"),
        (with_route("upstream = \"up\"\naction = \"allow\"\n"), "5:1: error: a route needs `name`"),
        (with_route("name = \"r\"\nupstream = \"up\"\n"), "5:1: error: a route needs `action` (allow, deny or approve)"),
        (with_route("name = \"r\"\nupstream = \"up\"\naction = \"approve\"\n"), "5:1: error: an approve route needs [routes.approval] (at least `approvers`)"),
        (with_route("name = \"r\"\naction = \"deny\"\n[routes.approval]\napprovers = [\"user:a\"]\n"), "8:1: error: [routes.approval] is only for action = \"approve\", not \"deny\""),
        (with_route("name = \"r r\"\naction = \"deny\"\n"), "6:8: error: route name `r r` may only use letters, digits, `-`, `_` and `.`"),
        (with_route("name = \"r\"\naction = \"deny\"\npath = \"/a/**/b\"\n"), "8:8: error: `**` must be the last segment of path pattern `/a/**/b`"),
        (with_route("name = \"r\"\naction = \"deny\"\npath = \"a/b\"\n"), "8:8: error: path pattern `a/b` must start with `/`"),
        (with_route("name = \"r\"\naction = \"deny\"\npath = \"/a//b\"\n"), "8:8: error: path pattern `/a//b` has an empty segment (`//`)"),
        (with_route("name = \"r\"\naction = \"deny\"\npath = \"/a/../b\"\n"), "8:8: error: path pattern `/a/../b` has a `..` segment"),
        (with_route("name = \"r\"\naction = \"deny\"\npath = \"/a%2Fb\"\n"), "8:8: error: path pattern `/a%2Fb` contains `%`; patterns match canonical paths, which never contain `%`, `;`, `?`, `#`, `\\` or whitespace"),
        (with_route("name = \"r\"\naction = \"deny\"\npath = \"/a;x\"\n"), "8:8: error: path pattern `/a;x` contains `;`; patterns match canonical paths, which never contain `%`, `;`, `?`, `#`, `\\` or whitespace"),
        (with_route("name = \"r\"\naction = \"deny\"\npath = \"/a b\"\n"), "8:8: error: path pattern `/a b` contains ` `; patterns match canonical paths, which never contain `%`, `;`, `?`, `#`, `\\` or whitespace"),
        (with_route("name = \"r\"\naction = \"deny\"\npath = \"/a*\"\n"), "8:8: error: `*` must be a whole segment in path pattern `/a*` (found `a*`)"),
        (with_route("name = \"r\"\naction = \"deny\"\npath = \"/{a}/{a}\"\n"), "8:8: error: segment name `a` is used twice in path pattern `/{a}/{a}`"),
        (with_route("name = \"r\"\naction = \"deny\"\nhost = \"*.\"\n"), "8:8: error: invalid host `*.`: expected `*.example.com`"),
        (with_route("name = \"r\"\naction = \"deny\"\nhost = \"a.*.com\"\n"), "8:8: error: invalid host `a.*.com`: `*` is only allowed as the whole first label, as in `*.example.com`"),
        (with_route("name = \"r\"\naction = \"deny\"\nhost = \"a.com:99999\"\n"), "8:8: error: invalid host `a.com:99999`: invalid port"),
        (with_route("name = \"r\"\naction = \"deny\"\nmethods = [\"GE T\"]\n"), "8:12: error: invalid method `GE T`"),
        (with_route("name = \"r\"\naction = \"deny\"\nmethods = []\n"), "8:11: error: `methods` in [[routes]] is empty, so nothing would match; leave it out to match any method"),
        (with_route("name = \"r\"\naction = \"deny\"\nheaders = { \"x y\" = \"1\" }\n"), "8:13: error: `x y` is not a valid header name"),
        (with_route("name = \"r\"\naction = \"deny\"\nheaders = { \"x\" = 1 }\n"), "8:19: error: header condition `x` must be a string (`\"*\"` means present)"),
        (with_route("name = \"r\"\naction = \"deny\"\n[routes.error]\nstatus = 302\n"), "9:10: error: `status` in [routes.error] must be from 400 to 599, not 302"),
        (with_route("name = \"r\"\naction = \"deny\"\n[routes.error]\nbody = \"no {tiket}\"\n"), "9:8: error: unknown placeholder `{tiket}` in [routes.error] body; use {ticket}, {reason} or {rule}; did you mean `{ticket}`?"),
        (with_route("name = \"r\"\naction = \"deny\"\n[routes.error]\ncontent_type = \"text/html\"\n"), "9:16: error: `content_type` in [routes.error] needs a `body`"),
        (with_route("name = \"r\"\naction = \"deny\"\n[routes.error]\ncontent_type = \"text/csv\"\nbody = \"{reason}\"\n"), "10:8: error: [routes.error] body uses placeholders, but jitgate cannot escape values for content type `text/csv`; use text/plain, text/html, JSON or XML, or a body without placeholders"),
        ("[admin]\napi_tokens = [{ name = \"x\", sha256 = \"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\" }]\n".into(), "2:15: error: an api token needs `user`, the person it acts as (two tokens of one person name the same user, so they count as one approver)"),
        ("[identity]\ncredential_headers = [\"bad header\"]\n".into(), "2:23: error: `credential_headers` in [identity]: `bad header` is not a header name"),
    ];
    let mut bad = Vec::new();
    for (src, want) in cases {
        let got: Vec<String> = errors(&src)
            .into_iter()
            .filter(|d| d.contains(": error: "))
            .collect();
        if got != vec![format!("{FILE}:{want}")] {
            bad.push(format!("want {want}\n got {got:?}"));
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

fn approve_route(approval: &str) -> String {
    with_route(&format!(
        "name = \"r\"\nupstream = \"up\"\naction = \"approve\"\n[routes.approval]\n{approval}"
    ))
}

#[test]
fn unsafe_approval_policies_are_errors() {
    // [routes.approval] is on line 9; its first key on line 10.
    let cases: Vec<(&str, &str)> = vec![
        ("quorum = 1\n", "9:1: error: [routes.approval] needs `approvers`"),
        ("approvers = []\n", "10:13: error: `approvers` is empty: nobody could approve"),
        ("approvers = [\"user:a\"]\nquorum = 0\n", "11:10: error: `quorum` must be at least 1, not 0: a ticket would pass with no approval"),
        ("approvers = [\"user:a\", \"user:b\"]\nquorum = 3\n", "11:10: error: `quorum` = 3 needs more distinct approvers than the 2 listed users"),
        ("approvers = [\"usr:a\"]\n", "10:14: error: invalid principal `usr:a`; expected `user:NAME` or `group:NAME`"),
        ("approvers = [\"user:a\"]\nmode = \"both\"\n", "11:8: error: `mode` must be \"action\" or \"access\", not `both`"),
        ("approvers = [\"user:a\"]\nmode = \"access\"\nmax_duration = \"1h\"\nrequire_identity = false\n", "13:20: error: `require_identity = false` is not possible with mode = \"access\": a grant belongs to a requester"),
        ("approvers = [\"user:a\"]\nmode = \"access\"\n", "11:8: error: mode = \"access\" needs `max_duration` (the longest grant)"),
        ("approvers = [\"user:a\"]\nmode = \"access\"\nmax_duration = \"1h\"\ndefault_duration = \"2h\"\n", "13:20: error: `default_duration` (2h) is longer than `max_duration` (1h)"),
        ("approvers = [\"user:a\"]\nmode = \"access\"\nmax_duration = \"1h\"\ndurations = [\"30m\", \"2h\"]\n", "13:21: error: grant duration 2h is longer than `max_duration` (1h)"),
        ("approvers = [\"user:a\"]\ndurations = [\"1h\"]\n", "11:13: error: `durations` is only for mode = \"access\""),
        ("approvers = [\"user:a\"]\nmode = \"access\"\nmax_duration = \"1h\"\nmax_also_uses = 2\n", "13:17: error: `max_also_uses` is only for mode = \"action\" (an access approval is a grant already)"),
        ("approvers = [\"user:a\"]\nmax_also_within = \"1h\"\n", "11:19: error: `max_also_within` needs `max_also_uses` above 0"),
        ("approvers = [\"user:a\"]\nmax_also_uses = 2\nmax_also_within = \"0s\"\n", "12:19: error: `max_also_within` in [routes.approval] must be longer than zero"),
        ("approvers = [\"user:a\"]\nmax_also_uses = -1\n", "11:17: error: `max_also_uses` in [routes.approval] must be an integer from 0 to 4294967295"),
        ("approvers = [\"user:a\"]\ntoken_uses = 0\n", "11:14: error: `token_uses` in [routes.approval] must be an integer from 1 to 4294967295"),
        ("approvers = [\"user:a\"]\nbreak_glass = { groups = [] }\n", "11:15: error: `break_glass` needs a non-empty `groups` list"),
        ("approvers = [\"user:a\"]\nbreak_glass = [\"sre\"]\n", "11:15: error: `break_glass` in [routes.approval] must be a table, not array"),
        ("approvers = [\"user:a\"]\nescalate_to = [\"group:sec\"]\n", "11:15: error: `escalate_to` needs `escalate_after`"),
        ("approvers = [\"user:a\"]\nescalate_after = \"1m\"\n", "11:18: error: `escalate_after` needs `escalate_to`"),
        ("approvers = [\"user:a\"]\napprove_above_rate = \"10 per minute\"\n", "11:22: error: invalid rate `10 per minute`; expected e.g. \"10/m\", \"100/h\", \"5/s\""),
        ("approvers = [\"user:a\"]\n[[routes.approval.auto_approve]]\nname = \"x\"\n", "11:1: error: an auto_approve policy with no condition would approve every request; give at least one condition"),
        ("approvers = [\"user:a\"]\n[[routes.approval.auto_approve]]\nname = \"x\"\nwindow = \"9-5\"\n", "13:10: error: invalid `window` `9-5`; expected \"HH:MM-HH:MM\" or \"Mon-Fri HH:MM-HH:MM\""),
        ("approvers = [\"user:a\"]\n[[routes.approval.auto_approve]]\nname = \"x\"\npath_prefix = \"/a/**\"\n", "13:15: error: `path_prefix` `/a/**` must be a plain path without `*`, `**` or `{name}`"),
        ("approvers = [\"user:a\"]\n[[routes.approval.auto_approve]]\nmethods = [\"GET\"]\n", "11:1: error: an auto_approve policy needs a `name` (recorded on what it approves)"),
        ("approvers = [\"user:a\"]\n[[routes.approval.auto_approve]]\nname = \"x\"\nwindow = \"09:00-17:00\"\ntime_zone = \"Europe/Berlim\"\n", "14:13: error: `time_zone` `Europe/Berlim` is not a time zone of the IANA database (such as \"Europe/Berlin\")"),
        ("approvers = [\"user:a\"]\n[[routes.approval.auto_approve]]\nname = \"x\"\nmethods = [\"GET\"]\ntime_zone = \"UTC\"\n", "14:13: error: `time_zone` is only used with `window`; add a `window` or remove it"),
        ("approvers = [\"user:a\"]\n[[routes.approval.auto_approve]]\nname = \"x\"\ngroups = []\n", "13:10: error: `groups` is empty: the condition could never hold; remove it or list something"),
        ("approvers = [\"user:a\"]\n[[routes.approval.auto_approve]]\nname = \"x\"\nusers = [\"bot\"]\nduration_below = \"1h\"\n", "14:18: error: `duration_below` in [[routes.approval.auto_approve]] is only for mode = \"access\" (it bounds a grant)"),
        ("approvers = [\"user:a\"]\n[[routes.approval.auto_approve]]\nname = \"x\"\nusers = [\"bot\"]\n[[routes.approval.auto_approve]]\nname = \"x\"\nusers = [\"bat\"]\n", "15:8: error: a second auto_approve policy is named `x` on this route; names identify what a policy approved"),
        ("approvers = [\"user:a\"]\n[[routes.approval.auto_approve]]\nname = \"x\"\nheaders = { \"x env\" = \"1\" }\n", "13:13: error: `x env` is not a valid header name"),
        ("approvers = [\"user:a\"]\n[[routes.approval.auto_approve]]\nname = \"x\"\nheaders = {}\n", "13:11: error: `headers` is empty: it would hold for every request; remove it or name a header"),
        ("approvers = [\"user:a\"]\n[[routes.approval.auto_approve]]\nname = \"x\"\nrisk_below = 50\n", "13:14: error: `risk_below` needs [approvals.risk] (the weights of the score)"),
        ("approvers = [\"user:a\"]\nmode = \"access\"\nmax_duration = \"1h\"\n[[routes.approval.auto_approve]]\nname = \"x\"\ngroups = [\"dev\"]\nmethods = [\"GET\"]\n", "16:11: error: `methods` in [[routes.approval.auto_approve]] is only for mode = \"action\": an access grant covers the whole route, so it would be judged on the first request only; narrow the route instead"),
    ];
    let mut bad = Vec::new();
    for (approval, want) in cases {
        let got: Vec<String> = errors(&approve_route(approval))
            .into_iter()
            .filter(|d| d.contains(": error: "))
            .collect();
        if got != vec![format!("{FILE}:{want}")] {
            bad.push(format!("want {want}\n got {got:?}"));
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
    // Groups may hold many people: a large quorum is fine.
    parse(&approve_route("approvers = [\"group:ops\"]\nquorum = 5\n"));
}

#[test]
fn warnings_do_not_fail() {
    let t = parse(&with_route("name = \"r\"\nupstream = \"up\"\naction = \"allow\"\nmethods = [\"get\"]\nsource = [\"10.1.2.3/8\"]\n"));
    let w: Vec<String> = t.warnings().iter().map(|d| d.to_string()).collect();
    assert_eq!(
        w,
        vec![
            format!(
                "{FILE}:9:12: warning: method `get` should be written in uppercase; read as `GET`"
            ),
            format!("{FILE}:10:11: warning: `10.1.2.3/8` has host bits set; it means 10.0.0.0/8"),
        ]
    );
    assert_eq!(t.routes()[0].methods, MethodSet::Only(vec![Method::GET]));
    let t = parse("");
    assert_eq!(
        t.warnings()[0].to_string(),
        format!("{FILE}:1:1: warning: no [[routes]]: every request will be answered 404")
    );
}

#[test]
fn hosts_are_normalised() {
    assert_eq!(
        parse_host_pattern("API.Example.com.").unwrap(),
        HostPattern::Exact("api.example.com".into())
    );
    assert_eq!(
        parse_host_pattern("api.example.com:8443").unwrap(),
        HostPattern::Exact("api.example.com:8443".into())
    );
    assert_eq!(
        parse_host_pattern("[::1]:8443").unwrap(),
        HostPattern::Exact("[::1]:8443".into())
    );
    assert_eq!(
        parse_host_pattern("*.Example.com").unwrap(),
        HostPattern::Suffix(".example.com".into())
    );
    assert!(parse_host_pattern("*.example.com:80").is_err());
    assert!(parse_host_pattern("").is_err());
}

#[test]
fn definition_hash_changes_with_the_rule_only() {
    let a = parse(&with_route(
        "name = \"r\"\nupstream = \"up\"\naction = \"allow\"\n",
    ));
    let b = parse(&format!(
        "# moved\n\n{}",
        with_route("name = \"r\"\nupstream = \"up\"\naction = \"allow\"\n")
    ));
    let c = parse(&with_route(
        "name = \"r\"\nupstream = \"up\"\naction = \"allow\"\npath = \"/x/**\"\n",
    ));
    assert_eq!(a.routes()[0].definition_hash, b.routes()[0].definition_hash);
    assert_ne!(a.routes()[0].definition_hash, c.routes()[0].definition_hash);
    assert_ne!(a.version(), b.version());
}

/// Every path key is listed with where it is named, so the rules API can refuse a table that
/// points the gateway at files the table in force does not name.
#[test]
fn every_file_the_config_names_is_listed_with_its_position() {
    let src = include_str!("../../tests/data/proxy.example.toml");
    let t = parse(src);
    let files: Vec<(String, String)> = t
        .config()
        .files
        .iter()
        .map(|f| (f.path.display().to_string(), f.location.to_string()))
        .collect();
    let at = |needle: &str| {
        let line = src
            .lines()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("{needle} not in the fixture"));
        let column = src.lines().nth(line).unwrap().find(needle).unwrap() + 1;
        format!("{FILE}:{}:{column}", line + 1)
    };
    let want = [
        ("/etc/jitgate/certs/gw.pem", at("\"certs/gw.pem\"")),
        ("/etc/jitgate/certs/gw.key", at("\"certs/gw.key\"")),
        (
            "/etc/jitgate/keys/approval-ed25519.pem",
            at("\"keys/approval-ed25519.pem\""),
        ),
        ("/etc/jitgate/keys/idp.pem", at("\"keys/idp.pem\"")),
        ("/etc/jitgate/keys/jwks.json", at("\"keys/jwks.json\"")),
        (
            "/etc/jitgate/admin-jwks.json",
            at("\"/etc/jitgate/admin-jwks.json\""),
        ),
        (
            "/etc/jitgate/certs/internal-ca.pem",
            at("\"certs/internal-ca.pem\""),
        ),
        (
            "/etc/jitgate/audit/jitgate-audit.jsonl",
            at("\"audit/jitgate-audit.jsonl\""),
        ),
    ];
    let want: Vec<(String, String)> = want.into_iter().map(|(p, l)| (p.to_string(), l)).collect();
    assert_eq!(files, want);
}

#[test]
fn the_table_keeps_the_exact_source_its_version_hashes() {
    let src = format!(
        "# comments and spacing kept\r\n\n{}",
        with_route("name = \"r\"\nupstream = \"up\"\naction = \"allow\"\n")
    );
    let t = parse(&src);
    assert_eq!(t.source(), src);
    assert_eq!(t.version(), crate::ticket::sha256_hex(src.as_bytes()));
}

#[test]
fn suggestions() {
    let known = ["listen", "admin_listen", "watch"];
    assert_eq!(suggest("lsiten", &known), Some("listen"));
    assert_eq!(suggest("qwertyuiop", &known), None);
    assert_eq!(edit_distance("kitten", "sitting"), 3);
}

#[test]
fn line_index_agrees_with_from_offset() {
    let src = "a = 1\n\nb = \"é\u{1F600}x\"\r\n[c]\nd = 2";
    let cx = Cx {
        src,
        file: "f".into(),
        base: PathBuf::new(),
        diags: Vec::new(),
        files: Vec::new(),
        broken_upstreams: Vec::new(),
        channels: Vec::new(),
        line_starts: std::iter::once(0)
            .chain(src.match_indices('\n').map(|(i, _)| i + 1))
            .collect(),
    };
    for (i, _) in src.char_indices().chain(std::iter::once((src.len(), ' '))) {
        assert_eq!(
            cx.loc(&(i..i)),
            Location::from_offset("f", src, i),
            "offset {i}"
        );
    }
}

#[test]
fn error_bodies_render_with_escaping() {
    let t = ErrorTemplate {
        status: StatusCode::FORBIDDEN,
        content_type: "application/json".into(),
        body: "{\"rule\": \"{rule}\", \"why\": \"{reason}\", \"t\": \"{ticket}\", \"keep\": \"{other}\"}".into(),
    };
    assert_eq!(
        render_error_body(&t, "jit_1", "say \"hi\"\n\\", "r"),
        "{\"rule\": \"r\", \"why\": \"say \\\"hi\\\"\\u000a\\\\\", \"t\": \"jit_1\", \"keep\": \"{other}\"}"
    );
    let t = ErrorTemplate {
        status: StatusCode::FORBIDDEN,
        content_type: DEFAULT_ERROR_CONTENT_TYPE.into(),
        body: "{rule}: \"{reason}\"".into(),
    };
    assert_eq!(render_error_body(&t, "", "a\"b", "r"), "r: \"a\"b\"");
}

#[test]
fn error_templates_escape_for_their_content_type() {
    let t = |ct: &str, body: &str| ErrorTemplate {
        status: StatusCode::FORBIDDEN,
        content_type: ct.into(),
        body: body.into(),
    };
    let reason = "<script>alert(\"x\")</script> & 'q'";
    assert_eq!(
        render_error_body(
            &t("text/html; charset=utf-8", "<p>{reason}</p>"),
            "",
            reason,
            ""
        ),
        "<p>&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;q&#39;</p>"
    );
    assert_eq!(
        render_error_body(
            &t("application/problem+json", r#"{"d":"{reason}"}"#),
            "",
            "a\"b\\\n",
            ""
        ),
        r#"{"d":"a\"b\\\u000a"}"#
    );
    assert_eq!(
        render_error_body(&t("application/xml", "<e>{reason}</e>"), "", "<x/>", ""),
        "<e>&lt;x/&gt;</e>"
    );
    assert_eq!(
        render_error_body(&t("text/plain", "{reason}"), "", "<raw>", ""),
        "<raw>"
    );
    assert_eq!(Escaping::for_content_type("text/csv"), None);
    assert_eq!(
        Escaping::for_content_type("application/vnd.api+json"),
        Some(Escaping::Json)
    );
    assert_eq!(
        Escaping::for_content_type("image/svg+xml"),
        Some(Escaping::Markup)
    );
}

const HOOK: &str = "[[notify]]\nname = \"ops-hook\"\nkind = \"webhook\"\nurl = \"https://hooks.example.com/jitgate\"\nsecret_env = \"JITGATE_WEBHOOK_SECRET\"\n";

#[test]
fn notify_channels_parse_with_defaults() {
    let src = format!(
        "{HOOK}\n[[notify]]\nname = \"chat\"\nkind = \"slack\"\nurl = \"https://hooks.slack.com/services/T/B/x\"\nsigning_secret_env = \"SLACK_SIGNING\"\nevents = [\"ticket.opened\", \"ticket.decided\"]\nusers = {{ \"U012ABC\" = \"alice\" }}\ntimeout = \"3s\"\nretry_for = \"10m\"\n\n[admin]\npublic_url = \"https://jit.example.com\"\n\n{}",
        approve_route("approvers = [\"group:oncall\"]\nnotify = [\"chat\"]\nchat_approval = false")
    );
    let t = parse(&src);
    let c = t.config();
    assert_eq!(c.notify.len(), 2);
    let hook = &c.notify[0];
    assert_eq!(hook.kind, NotifyKind::Webhook);
    assert_eq!(hook.secret_env.as_deref(), Some("JITGATE_WEBHOOK_SECRET"));
    assert_eq!(hook.events.len(), NOTIFY_EVENTS.len());
    assert_eq!(hook.timeout, Duration::from_secs(10));
    assert_eq!(hook.retry_for, Duration::from_secs(3600));
    let chat = &c.notify[1];
    assert_eq!(chat.kind, NotifyKind::Slack);
    assert!(chat.wants("ticket.decided") && !chat.wants("ticket.expired"));
    assert_eq!(
        chat.users,
        vec![("U012ABC".to_string(), "alice".to_string())]
    );
    assert_eq!(chat.timeout, Duration::from_secs(3));
    assert_eq!(chat.retry_for, Duration::from_secs(600));
    assert_eq!(
        c.admin.public_url.as_ref().unwrap().to_string(),
        "https://jit.example.com/"
    );
    let a = c.routes[0].approval.as_ref().unwrap();
    assert_eq!(a.notify.as_deref(), Some(&["chat".to_string()][..]));
    assert!(!a.chat_approval);
    // Without `notify`, a route tells every channel.
    let t = parse(&format!(
        "{HOOK}\n{}",
        approve_route("approvers = [\"group:oncall\"]")
    ));
    let a = t.config().routes[0].approval.as_ref().unwrap();
    assert!(a.notify.is_none() && a.chat_approval);
}

#[test]
fn notify_errors_point_at_the_value() {
    let e = one_error(&format!(
        "{}\n{}",
        HOOK.replace("webhook", "webhok"),
        approve_route("approvers = [\"group:oncall\"]")
    ));
    assert!(
        e.contains("proxy.toml:3:8: error:") && e.contains("did you mean `webhook`?"),
        "{e}"
    );
    let e = one_error(&HOOK.replace("\"ticket", "x").replace(
        "secret_env = \"JITGATE_WEBHOOK_SECRET\"\n",
        "secret_env = \"JITGATE_WEBHOOK_SECRET\"\nevents = [\"ticket.opend\"]\n",
    ));
    assert!(
        e.contains(":6:") && e.contains("did you mean `ticket.opened`?"),
        "{e}"
    );
    let e = one_error(&HOOK.replace("secret_env = \"JITGATE_WEBHOOK_SECRET\"\n", ""));
    assert!(e.contains("needs `secret_env`"), "{e}");
    let e = one_error(&HOOK.replace("https://hooks.example.com/jitgate", "ftp://x"));
    assert!(e.contains(":4:7: error:") && e.contains("https://"), "{e}");
    let e = one_error(&HOOK.replace("https://hooks.", "https://user:pw@hooks."));
    assert!(e.contains("credentials"), "{e}");
    let e = one_error(&format!("{HOOK}users = {{ \"U1\" = \"alice\" }}\n"));
    assert!(
        e.contains("`users` is only read for kind = \"slack\""),
        "{e}"
    );
    let e = one_error(&format!("{HOOK}retry_fro = \"1h\"\n"));
    assert!(
        e.contains("unknown key `retry_fro`") && e.contains("did you mean `retry_for`?"),
        "{e}"
    );
    let e = one_error(&format!("{HOOK}\n{HOOK}"));
    assert!(
        e.contains(":8:8: error:") && e.contains("used twice"),
        "{e}"
    );
    let e = one_error(&format!("{HOOK}timeout = \"2m\"\n"));
    assert!(e.contains("at most 60s"), "{e}");
    let e = one_error(&format!("{HOOK}events = []\n"));
    assert!(e.contains("`events` is empty"), "{e}");
    // A route naming a channel that does not exist.
    let e = one_error(&format!(
        "{HOOK}\n{}",
        approve_route("approvers = [\"group:oncall\"]\nnotify = [\"ops-hok\"]")
    ));
    assert!(
        e.contains("no [[notify]] channel is called") && e.contains("did you mean `ops-hook`?"),
        "{e}"
    );
    let e = one_error(&format!(
        "[admin]\npublic_url = \"jit.example.com\"\n{}",
        approve_route("approvers = [\"group:oncall\"]")
    ));
    assert!(
        e.contains(":2:14: error:") && e.contains("public_url"),
        "{e}"
    );
    // Plain http to a remote host is allowed with a warning; to loopback it is not warned.
    let t = parse(&HOOK.replace("https://hooks.example.com/jitgate", "http://127.0.0.1:9/x"));
    assert!(
        !t.warnings()
            .iter()
            .any(|w| w.to_string().contains("unencrypted")),
        "{:?}",
        t.warnings()
    );
    let t = parse(&HOOK.replace("https://", "http://"));
    assert!(t
        .warnings()
        .iter()
        .any(|w| w.to_string().contains("unencrypted")));
}

#[test]
fn notify_channels_do_not_change_the_approved_definition() {
    let a = parse(&format!(
        "{HOOK}\n{}",
        approve_route("approvers = [\"group:oncall\"]")
    ));
    let b = parse(&format!(
        "{HOOK}\n{}",
        approve_route(
            "approvers = [\"group:oncall\"]\nnotify = [\"ops-hook\"]\nchat_approval = false"
        )
    ));
    let c = parse(&format!(
        "{HOOK}\n{}",
        approve_route("approvers = [\"group:dev\"]")
    ));
    assert_eq!(
        a.config().routes[0].definition_hash,
        b.config().routes[0].definition_hash
    );
    assert_ne!(
        a.config().routes[0].definition_hash,
        c.config().routes[0].definition_hash
    );
}

#[test]
fn risk_weights_are_validated_with_positions() {
    let top = "[approvals.risk]\n";
    let cases: Vec<(&str, &str)> = vec![
        ("off_hours = 30\n", "2:13: error: `off_hours` needs `business_hours`"),
        ("rate = 5\n", "2:8: error: `rate` needs `rate_above`"),
        ("large_body = 5\n", "2:14: error: `large_body` needs `body_above`"),
        ("new_source = 0\n", "1:1: error: [approvals.risk] gives no signal any weight: every score would be 0"),
        ("new_source = 10\ntime_zone = \"Mars/Base\"\n", "3:13: error: `time_zone` `Mars/Base` is not a time zone of the IANA database (such as \"Europe/Berlin\")"),
        ("new_source = 10\nmethods = { \"BAD METHOD\" = 3 }\n", "3:13: error: `BAD METHOD` is not an HTTP method"),
        ("new_source = 10\nmethods = { DELETE = -3 }\n", "3:22: error: `DELETE` in [approvals.risk] must be an integer from 0 to 4294967295"),
    ];
    let mut bad = Vec::new();
    for (body, want) in cases {
        let got: Vec<String> = errors(&format!("{top}{body}"))
            .into_iter()
            .filter(|d| d.contains(": error: "))
            .collect();
        if got != vec![format!("{FILE}:{want}")] {
            bad.push(format!("want {want}\n got {got:?}"));
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
    let t = parse("[approvals.risk]\nbusiness_hours = \"Mon-Fri 09:00-18:00\"\ntime_zone = \"Europe/Berlin\"\noff_hours = 30\nnew_source = 40\nrate_above = \"10/m\"\nrate = 20\nmethods = { DELETE = 25 }\nbody_above = \"1MiB\"\nlarge_body = 10\n");
    let m = t.config().approvals.risk.as_ref().expect("risk");
    assert_eq!(
        (m.off_hours, m.new_source, m.rate, m.large_body),
        (30, 40, 20, 10)
    );
    assert_eq!(m.methods, vec![(http::Method::DELETE, 25)]);
    assert_eq!(m.body_above, Some(1 << 20));
}

/// The serde-derived model keeps going after a value of the wrong type: every problem of a
/// section is reported in one read, each at its own position, whatever TOML type was found.
#[test]
fn wrong_types_are_each_reported_and_the_section_is_still_checked() {
    let src = "[server]\nwatch = \"yes\"\nlisten = 8080\nshutdown_grace = 1979-05-27T07:32:00Z\nmax_connections = 99999999999999999999\nheader_read_timeout = [\"1s\"]\nlsiten = \"x\"\n";
    let got: Vec<String> = errors(src)
        .into_iter()
        .filter(|e| e.contains(": error: "))
        .map(|e| e.trim_start_matches(FILE).to_string())
        .collect();
    assert_eq!(
        got,
        [
            ":2:9: error: `watch` in [server] must be true or false, not string",
            ":3:10: error: `listen` in [server] must be a string, not integer",
            ":4:18: error: `shutdown_grace` in [server] must be a string, not datetime",
            ":5:19: error: `max_connections` in [server] is out of range",
            ":6:23: error: `header_read_timeout` in [server] must be a string, not array",
            ":7:1: error: unknown key `lsiten` in [server]; did you mean `listen`?",
        ]
    );
    // Arrays of tables: each element is checked on its own, nested tables included.
    let src = with_route("name = \"a\"\naction = \"deny\"\nsource = [\"10.0.0.0/8\", 7]\n[routes.error]\nstatuss = 404\n\n[[routes]]\nname = \"b\"\naction = \"dney\"\nenforce = \"no\"\n");
    let got: Vec<String> = errors(&src)
        .into_iter()
        .filter(|e| e.contains(": error: "))
        .map(|e| e.trim_start_matches(FILE).to_string())
        .collect();
    assert_eq!(
        got,
        [
            ":8:25: error: `source[..]` in [[routes]] must be a string, not integer",
            ":10:1: error: unknown key `statuss` in [routes.error]; did you mean `status`?",
            ":14:10: error: `action` must be \"allow\", \"deny\" or \"approve\", not `dney`; did you mean `deny`?",
            ":15:11: error: `enforce` in [[routes]] must be true or false, not string",
        ]
    );
}

// === found by the red team against the serde-derived model ===

/// Errors only, without the file name.
fn error_lines(src: &str) -> Vec<String> {
    errors(src)
        .into_iter()
        .filter(|e| e.contains(": error: "))
        .map(|e| e.trim_start_matches(FILE).to_string())
        .collect()
}

/// Kept from the hand-walked reader: An integer beyond 64 bits given to a key that is not an integer at all was
/// "must be a string, not integer" (the old reader); the new one says "is out of range", as
/// if a smaller number would do.
#[test]
fn huge_integer_on_a_non_integer_key_is_a_type_error() {
    assert_eq!(
        error_lines("[server]\nlisten = 99999999999999999999\nwatch = 99999999999999999999\n"),
        [
            ":2:10: error: `listen` in [server] must be a string, not integer",
            ":3:9: error: `watch` in [server] must be true or false, not integer",
        ]
    );
    let route = "name = \"r\"\naction = \"deny\"\nmethods = [99999999999999999999]\nenforce = -99999999999999999999\n";
    let got = error_lines(&with_route(route));
    assert!(
        got.contains(
            &":8:12: error: `methods[..]` in [[routes]] must be a string, not integer".to_string()
        ),
        "{got:#?}"
    );
    assert!(
        got.contains(
            &":9:11: error: `enforce` in [[routes]] must be true or false, not integer".to_string()
        ),
        "{got:#?}"
    );
}

/// Kept from the hand-walked reader: A datetime where a table (or a table of data keys) is expected leaks serde and
/// toml internals: "`tls` in [server]: invalid type: string "$__toml_private_datetime",
/// expected a spanned value". The old reader said "must be a table, not datetime".
#[test]
fn datetime_where_a_table_is_expected_says_datetime() {
    assert_eq!(
        error_lines("[server]\ntls = 1979-05-27T07:32:00Z\n"),
        [":2:7: error: `tls` in [server] must be a table, not datetime"]
    );
    let route = "name = \"r\"\naction = \"deny\"\nheaders = 1979-05-27\nerror = 07:32:00\n";
    assert_eq!(
        error_lines(&with_route(route)),
        [
            ":8:11: error: `headers` in [[routes]] must be a table, not datetime",
            ":9:9: error: `error` in [[routes]] must be a table, not datetime",
        ]
    );
    let approve = "name = \"r\"\nupstream = \"up\"\naction = \"approve\"\napproval = 1979-05-27\n";
    assert_eq!(
        error_lines(&with_route(approve)),
        [":9:12: error: `approval` in [[routes]] must be a table, not datetime"]
    );
}

/// Kept from the hand-walked reader: A float too large for f64 (`1e400`) given to any key is now reported with
/// toml's raw message ("floating-point number overflowed", with a trailing newline) instead
/// of the type error the old reader gave ("must be an integer, not float").
#[test]
fn float_overflow_is_a_type_error() {
    let route = "name = \"r\"\nupstream = \"up\"\naction = \"approve\"\n[routes.approval]\napprovers = [\"group:ops\"]\nquorum = 1e400\nself_approval = -1e400\n";
    assert_eq!(
        error_lines(&with_route(route)),
        [
            ":11:10: error: `quorum` in [routes.approval] must be an integer, not float",
            ":12:17: error: `self_approval` in [routes.approval] must be true or false, not float",
        ]
    );
}

/// Refused since the red team: `source = []` on a route is accepted and means "any
/// source": an allow route meant for an (empty) list of networks is open to everyone.
/// `methods = []` is refused for the same reason ("nothing would match"), and so is
/// `source = []` in an auto_approve policy.
#[test]
fn empty_route_source_is_refused() {
    let allow = "name = \"r\"\nupstream = \"up\"\naction = \"allow\"\nsource = []\n";
    let e = errors(&with_route(allow));
    assert!(e.iter().any(|e| e.contains("`source`")), "{e:#?}");
}

/// Refused since the red team: `headers = {}` on a route is accepted as "no header condition"; in an
/// auto_approve policy the same table is refused ("it would hold for every request").
#[test]
fn empty_route_headers_is_refused() {
    let allow = "name = \"r\"\nupstream = \"up\"\naction = \"allow\"\nheaders = {}\n";
    let e = errors(&with_route(allow));
    assert!(e.iter().any(|e| e.contains("`headers`")), "{e:#?}");
}

/// Refused since the red team: `break_glass` takes bare group
/// names, `approvers` takes principals; `groups = ["group:sre"]` (the approvers' spelling) is
/// accepted without a word and names a group called `group:sre`, which nobody is in: every
/// emergency is refused 403, exactly what `check_identifiable` means to catch.
#[test]
fn break_glass_groups_in_principal_syntax_are_reported() {
    let route = "name = \"r\"\nupstream = \"up\"\naction = \"approve\"\n[routes.approval]\napprovers = [\"group:ops\"]\nbreak_glass = { groups = [\"group:sre\"] }\n";
    let src = format!(
        "[identity.jwt]\nhs256_secret_env = \"JWT_SECRET\"\n\n{}",
        with_route(route)
    );
    let diags: Vec<String> = match RuleTable::parse(&src, Path::new(FILE)) {
        Ok(t) => t.warnings().iter().map(|d| d.to_string()).collect(),
        Err(d) => d.iter().map(|d| d.to_string()).collect(),
    };
    assert!(
        diags.iter().any(|d| d.contains("group:sre")),
        "no diagnostic for break_glass group `group:sre`: {diags:#?}"
    );
}

/// Refused since the red team: Quoted header names that differ only by case are two TOML keys but one
/// header: both conditions are kept, so the route needs `x-env` to be `prod` and `dev` at
/// once (an allow route then never matches; a deny route fires only on a request carrying
/// both). Repeated names elsewhere (`volatile_headers`, `credential_headers`) are reported.
#[test]
fn route_header_named_twice_is_refused() {
    let deny = "name = \"r\"\naction = \"deny\"\nheaders = { \"X-Env\" = \"prod\", \"x-env\" = \"dev\" }\n";
    let src = with_route(deny);
    let diags: Vec<String> = match RuleTable::parse(&src, Path::new(FILE)) {
        Ok(t) => t.warnings().iter().map(|d| d.to_string()).collect(),
        Err(d) => d.iter().map(|d| d.to_string()).collect(),
    };
    assert!(
        diags
            .iter()
            .any(|d| d.to_ascii_lowercase().contains("x-env")),
        "header `x-env` named twice without a diagnostic: {diags:#?}"
    );
}

/// Refused since the red team: `quorum` beyond u32 is silently clamped to 4294967295
/// (`u32::try_from(n).unwrap_or(u32::MAX)`): the file says one number, the table holds
/// another. Every other count is refused above u32::MAX ("must be an integer from 1 to ...").
#[test]
fn quorum_beyond_u32_is_refused() {
    let route = "name = \"r\"\nupstream = \"up\"\naction = \"approve\"\n[routes.approval]\napprovers = [\"group:ops\"]\nquorum = 4294967296\n";
    let e = one_error(&with_route(route));
    assert!(e.contains(":11:10: error: `quorum`"), "{e}");
}

/// Refused since the red team: When `listen` takes the default `admin_listen` port, the error is located at
/// 1:1 (span 0..0 of the absent `admin_listen`) instead of at `listen`.
#[test]
fn listen_clashing_with_default_admin_listen_points_at_listen() {
    let e = one_error("[server]\nwatch = true\nlisten = \"127.0.0.1:9090\"\n");
    assert!(e.contains(":3:10: error: `admin_listen`"), "{e}");
}

/// Red team (store over TLS / Sentinel): a `[store] url` error must not repeat the URL's
/// password. These messages go to `jitgate check` output, to the log, to `lastReloadError`,
/// and into the hash-chained `rules.rejected` audit event, which is never trimmed and cannot
/// be edited without breaking the chain.
#[test]
fn store_url_errors_do_not_echo_the_password() {
    for src in [
        "[store]\nkind = \"redis\"\nurl = \"http://:hunter2@r:6379\"\n",
        "[store]\nkind = \"redis\"\nurl = \"redis://app:hunter2@r:6379/0\"\nca_file = \"ca.pem\"\n",
        "[store]\nkind = \"redis\"\nurl = \"redis+sentinel://app:hunter2@s1:26379/m\"\ntls = { cert = \"c.pem\", key = \"c.key\" }\n",
        "[store]\nkind = \"redis\"\nurl = \"redis+sentinel://app:hunter2@s1:26379\"\n",
        "[store]\nkind = \"redis\"\nurl = \"rediss://:hunter2@r:6379/#insecure\"\n",
    ] {
        let e = one_error(src);
        assert!(!e.contains("hunter2"), "the password is in the error: {e}");
    }
}

/// Red team: `replica_acks`, `sentinel_username` and `sentinel_password` mean nothing with
/// the memory store. `ca_file` and `tls` are warned about there ("ignored with kind =
/// \"memory\""), and `sentinel_*` are refused with a non-sentinel URL; these three pass
/// silently, so an operator who forgot `kind = "redis"` is not told that the durability
/// (`replica_acks`) they configured does not apply.
#[test]
fn redis_only_store_keys_are_flagged_with_the_memory_store() {
    for key in [
        "replica_acks = 2",
        "sentinel_password = \"x\"",
        "sentinel_username = \"x\"",
    ] {
        let t = parse(&format!("[store]\n{key}\n"));
        let w: Vec<String> = t.warnings().iter().map(|d| d.to_string()).collect();
        let name = key.split(' ').next().unwrap();
        assert!(
            w.iter().any(|d| d.contains(name)),
            "`{key}` with the memory store passes without a word: {w:?}"
        );
    }
}

/// Red team: Sentinel URLs the parser reads as documented (withstood): user info with `@` and
/// `:` in the password (percent-encoded or not), IPv6 hosts, the default port; and refusals.
#[test]
fn sentinel_urls_read_as_documented() {
    let u = SentinelUrl::parse("redis+sentinel://app:p@ss:w@rd@[::1],s2:1/my%20master/2")
        .unwrap()
        .unwrap();
    assert_eq!(u.username.as_deref(), Some("app"));
    assert_eq!(u.password.as_deref(), Some("p@ss:w@rd"));
    assert_eq!(
        u.sentinels,
        [("::1".to_string(), 26379), ("s2".to_string(), 1)]
    );
    assert_eq!((u.master.as_str(), u.db), ("my master", 2));
    for bad in [
        "redis+sentinel:///m",
        "redis+sentinel://u:p@/m",
        "redis+sentinel://s1//0",
        "redis+sentinel://s1:65536/m",
        "redis+sentinel://[::1]x/m",
        "redis+sentinel://s1/m#insecure",
    ] {
        assert!(
            matches!(SentinelUrl::parse(bad), Some(Err(_))),
            "accepted {bad}"
        );
    }
    // Through check: a fragment anywhere is refused before the sentinel parser.
    let e = one_error("[store]\nkind = \"redis\"\nurl = \"rediss+sentinel://s1#insecure:1/m\"\n");
    assert!(e.contains("#fragment"), "{e}");
}
