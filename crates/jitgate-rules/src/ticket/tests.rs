#![allow(clippy::unwrap_used)]

use super::*;
use proptest::prelude::*;
use std::time::Duration;

const T0: Timestamp = Timestamp(1_795_343_400_000); // 2026-11-22T10:30:00Z

fn request() -> RequestSnapshot {
    RequestSnapshot {
        method: "POST".into(),
        host: "api.example.com".into(),
        path: "/v1/deployments/prod/web".into(),
        query: String::new(),
        target: "/v1/deployments/prod/web".into(),
        headers: vec![],
        headers_sha256: headers_digest([]),
        body_sha256: sha256_hex(b"{}"),
        body_preview: "{}".into(),
    }
}

fn bob() -> Requester {
    Requester {
        user: Some("bob".into()),
        groups: vec!["dev".into()],
        anonymous: None,
    }
}

fn draft(quorum: u32) -> TicketDraft {
    TicketDraft {
        route: "prod-deploy".into(),
        route_hash: [7; 32],
        mode: Mode::Action,
        requester: bob(),
        source: Some("192.0.2.7".into()),
        reason: Some("hotfix 4411".into()),
        request: request(),
        ticket_ttl: Duration::from_secs(900),
        token_ttl: Duration::from_secs(300),
        quorum,
        approvers: vec![
            "group:oncall".into(),
            "user:bob".into(),
            "user:carol".into(),
        ],
        self_approval: false,
        token_uses: 1,
        grant_terms: None,
        also_limit: Some(AlsoTerms {
            uses: 3,
            within_ms: 3_600_000,
        }),
        escalation: None,
        remind_before: None,
        risk: None,
    }
}

fn ticket(quorum: u32) -> Ticket {
    Ticket::open(TicketId::new(T0.0, 42), draft(quorum), T0)
}

fn oncall(user: &str) -> Approver {
    Approver {
        user: user.into(),
        groups: vec!["oncall".into()],
    }
}

fn at(secs: u64) -> Timestamp {
    T0.plus(Duration::from_secs(secs))
}

// === timestamps ===

#[test]
fn timestamps_render_as_rfc3339_utc() {
    assert_eq!(T0.to_rfc3339(), "2026-11-22T10:30:00Z");
    assert_eq!(Timestamp(T0.0 + 5).to_rfc3339(), "2026-11-22T10:30:00.005Z");
    assert_eq!(Timestamp(0).to_rfc3339(), "1970-01-01T00:00:00Z");
    assert_eq!(
        Timestamp::parse_rfc3339("2026-11-22T10:30:00Z").unwrap(),
        T0
    );
    assert_eq!(
        Timestamp::parse_rfc3339("2026-11-22T11:30:00.000123+01:00").unwrap(),
        T0
    );
    assert_eq!(
        Timestamp::parse_rfc3339("2024-02-29T00:00:00Z")
            .unwrap()
            .to_rfc3339(),
        "2024-02-29T00:00:00Z"
    );
    for bad in [
        "",
        "2026-11-22",
        "2026-11-22 10:30:00Z",
        "2026-13-22T10:30:00Z",
        "2025-02-29T10:30:00Z",
        "2026-11-22T24:00:00Z",
        "2026-11-22T10:30:00",
        "2026-11-22T10:30:00.Z",
        "1969-12-31T23:59:59Z",
        "2026-11-22T10:30:00+0100",
    ] {
        assert!(Timestamp::parse_rfc3339(bad).is_err(), "{bad}");
    }
}

proptest! {
    #[test]
    fn timestamps_round_trip(ms in 0u64..253_402_300_800_000) {
        let t = Timestamp(ms);
        prop_assert_eq!(Timestamp::parse_rfc3339(&t.to_rfc3339()).unwrap(), t);
    }
}

// === ids ===

#[test]
fn ticket_ids_are_jit_plus_ulid() {
    let id = TicketId::new(0x0190_0000_0000, 0);
    assert_eq!(id.as_str().len(), 30);
    assert!(id.as_str().starts_with("jit_"));
    assert_eq!(
        TicketId::new(0, 0).as_str(),
        "jit_00000000000000000000000000"
    );
    assert_eq!(
        TicketId::new(u64::MAX, u128::MAX).as_str(),
        "jit_7ZZZZZZZZZZZZZZZZZZZZZZZZZ"
    );
    // Time sorts first, so ids sort by creation.
    assert!(TicketId::new(1, u128::MAX) < TicketId::new(2, 0));
    assert_eq!(
        TicketId::parse("jit_01JD3ZK8Q6W6M7ZC2Y6F8X4T9B")
            .unwrap()
            .as_str(),
        "jit_01JD3ZK8Q6W6M7ZC2Y6F8X4T9B"
    );
}

#[test]
fn client_supplied_ids_are_validated() {
    for bad in [
        "",
        "jit_",
        "01JD3ZK8Q6W6M7ZC2Y6F8X4T9B",
        "grt_01JD3ZK8Q6W6M7ZC2Y6F8X4T9B",
        "jit_01jd3zk8q6w6m7zc2y6f8x4t9b", // lowercase is not the canonical spelling
        "jit_01JD3ZK8Q6W6M7ZC2Y6F8X4T9",  // 25
        "jit_01JD3ZK8Q6W6M7ZC2Y6F8X4T9BB",
        "jit_81JD3ZK8Q6W6M7ZC2Y6F8X4T9B", // overflows 128 bits
        "jit_01JD3ZK8Q6W6M7ZC2Y6F8X4TIL", // I, L are not Crockford
        "jit_01JD3ZK8Q6W6M7ZC2Y6F8X4T9U",
        "jit_../../etc/passwd0000000000",
        "jit_01JD3ZK8Q6W6M7ZC2Y6F8X4T9\u{e9}",
    ] {
        assert!(TicketId::parse(bad).is_err(), "{bad:?}");
    }
    assert!(serde_json::from_str::<TicketId>("\"jit_bad\"").is_err());
    assert!(GrantId::parse("grt_01JD3ZK8Q6W6M7ZC2Y6F8X4T9B").is_ok());
}

proptest! {
    #[test]
    fn generated_ids_parse(ms in any::<u64>(), r in any::<u128>()) {
        let id = TicketId::new(ms, r);
        prop_assert_eq!(TicketId::parse(id.as_str()).unwrap(), id.clone());
        let g = GrantId::new(ms, r);
        prop_assert_eq!(GrantId::parse(g.as_str()).unwrap(), g);
    }

    #[test]
    fn arbitrary_strings_never_panic(s in ".*") {
        let _ = TicketId::parse(&s);
        let _ = Timestamp::parse_rfc3339(&s);
    }
}

// === JSON shape ===

#[test]
fn ticket_json_is_camel_case_as_in_the_spec() {
    let t = ticket(1);
    let v = serde_json::to_value(&t).unwrap();
    assert_eq!(v["status"], "PENDING");
    assert_eq!(v["route"], "prod-deploy");
    assert_eq!(v["mode"], "action");
    assert_eq!(v["requester"]["user"], "bob");
    assert_eq!(v["reason"], "hotfix 4411");
    assert_eq!(v["request"]["method"], "POST");
    assert!(v["request"]["bodySha256"].is_string());
    assert!(v["request"]["bodyPreview"].is_string());
    assert_eq!(v["createdAt"], "2026-11-22T10:30:00Z");
    assert_eq!(v["expiresAt"], "2026-11-22T10:45:00Z");
    assert!(v["decidedAt"].is_null());
    assert_eq!(v["quorum"], 1);
    assert_eq!(v["approvers"][0], "group:oncall");
    assert_eq!(v["selfApproval"], false);
    assert_eq!(v["tokenUses"], 1);
    assert_eq!(v["routeHash"], hex(&[7; 32]));
    assert_eq!(v["source"], "192.0.2.7");
    let back: Ticket = serde_json::from_value(v).unwrap();
    assert_eq!(back, t);
}

#[test]
fn tickets_stored_before_the_source_field_read_back_without_one() {
    let mut v = serde_json::to_value(ticket(1)).unwrap();
    v.as_object_mut().unwrap().remove("source");
    let back: Ticket = serde_json::from_value(v).unwrap();
    assert_eq!(back.source, None);
    let mut t = ticket(1);
    t.source = None;
    assert!(serde_json::to_value(&t).unwrap().get("source").is_none());
}

#[test]
fn audit_draft_about_a_ticket_files_it_under_its_requester() {
    let t = ticket(1);
    let d = AuditDraft::about(
        AuditKind::TicketApproved,
        &t,
        Some("alice"),
        serde_json::json!({ "quorumReached": true }),
        at(1),
    );
    assert_eq!(d.ticket.as_ref(), Some(&t.id));
    assert_eq!(d.requester.as_deref(), Some("bob"));
    assert_eq!(d.actor.as_deref(), Some("alice"));
    assert_eq!(d.at, at(1));
}

// === redaction ===

#[test]
fn credential_and_configured_headers_are_redacted() {
    let h = redact_headers(
        [
            ("Authorization", "Bearer x"),
            ("cookie", "s=1"),
            ("Proxy-Authorization", "Basic y"),
            ("X-Vault-Token", "hvs.z"),
            ("Content-Type", "application/json"),
        ],
        &["x-vault-token".to_string()],
    );
    assert_eq!(
        h,
        vec![
            ("Authorization".into(), REDACTED.into()),
            ("cookie".into(), REDACTED.into()),
            ("Proxy-Authorization".into(), REDACTED.into()),
            ("X-Vault-Token".into(), REDACTED.into()),
            ("Content-Type".into(), "application/json".into()),
        ]
    );
}

#[test]
fn body_previews_redact_secret_fields_and_are_capped() {
    let body = br#"{"image":"web:1.4.2","password":"hunter2","db":{"api_key":"k","privateKey":"p"},"items":[{"refresh_token":"t"}]}"#;
    let p = body_preview(body, 4096);
    assert!(!p.contains("hunter2") && !p.contains("\"k\"") && !p.contains("\"p\""));
    assert!(!p.contains("\"t\""));
    assert!(p.contains("web:1.4.2"));
    assert!(p.contains(REDACTED));

    assert_eq!(
        body_preview(b"user=bob&password=hunter2", 100),
        "user=bob&password=[redacted]"
    );
    // The body's own text: duplicate keys and large numbers show as sent.
    assert_eq!(
        body_preview(
            br#"{"replicas":1000,"replicas":1, "to":100000000000000000001}"#,
            100
        ),
        r#"{"replicas":1000,"replicas":1, "to":100000000000000000001}"#
    );
    assert_eq!(
        body_preview(
            br#"{"token":{"nested":"x","password":"y"}, "a" : [1]}"#,
            100
        ),
        r#"{"token":"[redacted]", "a" : [1]}"#
    );
    assert_eq!(body_preview(b"hello world", 5), "hello…");
    assert_eq!(body_preview("ééé".as_bytes(), 3), "é…");
    assert_eq!(body_preview(&[0xff, 0xfe], 10), "[binary, 2 bytes]");
    assert_eq!(body_preview(b"", 10), "");
    assert!(is_secret_field("X-Api-Key"));
    assert!(is_secret_field("credentials"));
    assert!(!is_secret_field("image"));
}

// === fingerprint ===

#[test]
fn fingerprint_is_unambiguous() {
    let r = bob();
    let mut a = request();
    a.path = "/a".into();
    a.query = "b=c".into();
    let mut b = request();
    b.path = "/a?b=c".into();
    b.query = String::new();
    assert_ne!(fingerprint(&a, &r, "00"), fingerprint(&b, &r, "00"));

    let mut c = request();
    c.method = "POSTa".into();
    c.host = "pi.example.com".into();
    assert_ne!(fingerprint(&request(), &r, "00"), fingerprint(&c, &r, "00"));

    // A user literally named "anonymous" is not the anonymous requester.
    let anon = Requester::default();
    let named = Requester {
        user: Some("anonymous".into()),
        groups: vec![],
        anonymous: None,
    };
    assert_ne!(
        fingerprint(&request(), &anon, "00"),
        fingerprint(&request(), &named, "00")
    );
    // Group order and duplicates do not matter; host case does not either.
    let g1 = Requester {
        user: Some("bob".into()),
        groups: vec!["b".into(), "a".into()],
        anonymous: None,
    };
    let g2 = Requester {
        user: Some("bob".into()),
        groups: vec!["a".into(), "b".into(), "a".into()],
        anonymous: None,
    };
    let mut upper = request();
    upper.host = "API.example.com".into();
    assert_eq!(
        fingerprint(&request(), &g1, "00"),
        fingerprint(&upper, &g2, "00")
    );
    // The redacted header list and the preview are views; the headers digest is what binds.
    let mut h = request();
    h.headers.push(("X-A".into(), "1".into()));
    h.body_preview = "other".into();
    assert_eq!(fingerprint(&request(), &r, "00"), fingerprint(&h, &r, "00"));
    h.headers_sha256 = headers_digest([("x-a", &b"1"[..])]);
    assert_ne!(fingerprint(&request(), &r, "00"), fingerprint(&h, &r, "00"));
    // Two anonymous clients with different credentials are two requesters.
    let anon_a = Requester {
        anonymous: Some("aaaa".into()),
        ..Requester::default()
    };
    let anon_b = Requester {
        anonymous: Some("bbbb".into()),
        ..Requester::default()
    };
    assert_ne!(
        fingerprint(&request(), &anon_a, "00"),
        fingerprint(&request(), &anon_b, "00")
    );
    assert!(!anon_a.same_principal(&anon_b));
    assert!(anon_a.same_principal(&anon_a.clone()));
    assert!(
        !anon.same_principal(&anon),
        "digest-less anonymous is nobody's self"
    );
    assert_eq!(anon_a.key(), "anonymous:aaaa");
}

#[test]
fn headers_digest_is_unambiguous() {
    assert_ne!(
        headers_digest([("x-a", &b"1x-b1"[..])]),
        headers_digest([("x-a", &b"1"[..]), ("x-b", &b"1"[..])])
    );
    assert_ne!(
        headers_digest([("a", &b"1"[..]), ("a", &b"2"[..])]),
        headers_digest([("a", &b"2"[..]), ("a", &b"1"[..])])
    );
}

#[test]
fn approving_an_access_ticket_yields_its_grant_once() {
    let mut d = draft(1);
    d.mode = Mode::Access;
    d.grant_terms = Some(GrantTerms {
        duration_ms: 3_600_000,
        max_uses: Some(3),
    });
    let t = Ticket::open(TicketId::new(T0.0, 42), d, T0);
    let approved = approve(&t, &oncall("alice"), None, at(10)).unwrap();
    let g = grant_of(&t, &approved).expect("a grant");
    assert_eq!(g.id, GrantId::for_ticket(&t.id));
    assert_eq!(
        g.id.as_str().strip_prefix("grt_"),
        t.id.as_str().strip_prefix("jit_")
    );
    assert_eq!(g.expires_at, at(10 + 3600));
    assert_eq!(g.max_uses, Some(3));
    assert!(g.requester.same_principal(&t.requester));
    // Only on the transition into APPROVED, and only for access tickets.
    assert_eq!(grant_of(&approved, &approved), None);
    let action = ticket(1);
    let action_ok = approve(&action, &oncall("alice"), None, at(10)).unwrap();
    assert_eq!(grant_of(&action, &action_ok), None);
}

proptest! {
    #[test]
    fn fingerprint_changes_with_every_input(field in 0usize..10, extra in "[a-z0-9/=&]{1,8}") {
        let base_req = request();
        let base_who = bob();
        let base = fingerprint(&base_req, &base_who, "ab");
        let mut req = base_req.clone();
        let mut who = base_who.clone();
        let mut route = "ab".to_string();
        match field {
            0 => req.method.push_str(&extra),
            1 => req.host.push_str(&extra),
            2 => req.path.push_str(&extra),
            3 => req.query.push_str(&extra),
            4 => req.body_sha256.push_str(&extra),
            8 => req.target.push_str(&extra),
            9 => req.headers_sha256.push_str(&extra),
            5 => who.user = Some(format!("bob{extra}")),
            6 => who.groups.push(format!("g{extra}")),
            _ => route.push_str(&extra),
        }
        prop_assert_ne!(base, fingerprint(&req, &who, &route));
    }

    #[test]
    fn moving_bytes_between_fields_changes_the_fingerprint(
        s in "[a-z/?=]{0,12}", split in 0usize..12, split2 in 0usize..12,
    ) {
        let cut = |k: usize| k.min(s.len());
        let (a, b) = (cut(split), cut(split2));
        prop_assume!(a != b);
        let who = bob();
        let mut x = request();
        x.path = s[..a].to_string();
        x.query = s[a..].to_string();
        let mut y = request();
        y.path = s[..b].to_string();
        y.query = s[b..].to_string();
        prop_assert_ne!(fingerprint(&x, &who, "r"), fingerprint(&y, &who, "r"));
    }
}

// === approve / deny ===

#[test]
fn also_makes_a_method_bound_grant_only_within_the_route_limit() {
    let also = |uses, within_ms| Some(AlsoTerms { uses, within_ms });
    let t = ticket(1);
    // Beyond the limit, zero, or a window too long: refused, nothing recorded.
    for (a, why) in [
        (also(4, 60_000), "uses above the limit"),
        (also(0, 60_000), "zero uses"),
        (also(1, 3_600_001), "window above the limit"),
        (also(1, 0), "empty window"),
    ] {
        let e = approve_also(&t, &oncall("alice"), None, a, at(1)).unwrap_err();
        assert!(matches!(e, TransitionError::AlsoRefused { .. }), "{why}");
        assert_eq!(e.status(), 400);
    }
    let next = approve_also(&t, &oncall("alice"), None, also(2, 60_000), at(1)).unwrap();
    let g = grant_of(&t, &next).expect("grant");
    assert_eq!(g.method.as_deref(), Some("POST"));
    assert_eq!(g.max_uses, Some(2));
    assert_eq!(g.expires_at, Timestamp(at(1).0 + 60_000));
    assert_eq!(g.requester, t.requester);
    assert_eq!(g.id, GrantId::for_ticket(&t.id));
    // A plain approval grants nothing more.
    let plain = approve(&t, &oncall("alice"), None, at(1)).unwrap();
    assert!(grant_of(&t, &plain).is_none());

    // A route that allows no `also`, an anonymous requester, an access ticket: refused.
    let mut none = t.clone();
    none.also_limit = None;
    assert!(approve_also(&none, &oncall("alice"), None, also(1, 1), at(1)).is_err());
    let mut anon = t.clone();
    anon.requester = Requester {
        user: None,
        groups: vec![],
        anonymous: Some("abc".into()),
    };
    assert!(approve_also(&anon, &oncall("alice"), None, also(1, 1), at(1)).is_err());
    let mut access = t.clone();
    access.mode = Mode::Access;
    assert!(approve_also(&access, &oncall("alice"), None, also(1, 1), at(1)).is_err());

    // Quorum 2: a plain first approval means no `also` afterwards; both agreeing gives the
    // smaller terms.
    let t2 = ticket(2);
    let first = approve(&t2, &oncall("alice"), None, at(1)).unwrap();
    assert!(approve_also(&first, &oncall("carol"), None, also(1, 1000), at(2)).is_err());
    let first = approve_also(&t2, &oncall("alice"), None, also(3, 9000), at(1)).unwrap();
    assert!(grant_of(&t2, &first).is_none(), "quorum not reached");
    let both = approve_also(&first, &oncall("carol"), None, also(1, 5000), at(2)).unwrap();
    let g = grant_of(&first, &both).expect("grant");
    assert_eq!(
        (g.max_uses, g.expires_at),
        (Some(1), Timestamp(at(2).0 + 5000))
    );
    // The second approver may decline `also`: the request is released, no grant.
    let plain = approve(&first, &oncall("carol"), None, at(2)).unwrap();
    assert_eq!(plain.status, Status::Approved);
    assert!(grant_of(&first, &plain).is_none());
}

#[test]
fn escalation_widens_the_approvers_once_when_due_and_reminders_come_once() {
    let mut d = draft(1);
    d.escalation = Some((
        Duration::from_secs(300),
        vec!["user:mallory".into(), "group:oncall".into()],
    ));
    d.remind_before = Some(Duration::from_secs(60));
    let t = Ticket::open(TicketId::new(T0.0, 7), d, T0);
    assert_eq!(t.escalate_at, Some(at(300)));
    assert_eq!(t.remind_at, Some(at(840)));
    let mallory = Approver {
        user: "mallory".into(),
        groups: vec![],
    };
    // Before the delay mallory may not decide, and nothing escalates.
    assert_eq!(
        approve(&t, &mallory, None, at(299)).unwrap_err(),
        TransitionError::NotAnApprover
    );
    assert_eq!(escalate(&t, at(299)).unwrap_err(), TransitionError::NotDue);
    let e = escalate(&t, at(300)).unwrap();
    assert_eq!(e.escalated_at, Some(at(300)));
    assert_eq!(
        e.approvers.iter().filter(|a| *a == "group:oncall").count(),
        1,
        "no duplicates"
    );
    assert!(approve(&e, &mallory, None, at(301)).is_ok());
    assert_eq!(
        escalate(&e, at(400)).unwrap_err(),
        TransitionError::AlreadyDone
    );
    // Reminders: once, when due, only while pending and not expired.
    assert_eq!(remind(&t, at(839)).unwrap_err(), TransitionError::NotDue);
    let r = remind(&t, at(840)).unwrap();
    assert_eq!(r.reminded_at, Some(at(840)));
    assert_eq!(
        remind(&r, at(841)).unwrap_err(),
        TransitionError::AlreadyDone
    );
    assert_eq!(remind(&t, at(900)).unwrap_err(), TransitionError::Expired);
    let decided = approve(&t, &oncall("alice"), None, at(10)).unwrap();
    assert!(matches!(
        escalate(&decided, at(300)),
        Err(TransitionError::NotPending { .. })
    ));
    // A delay not shorter than the ticket's life means no escalation; nor a reminder before
    // the ticket exists.
    let mut late = draft(1);
    late.escalation = Some((Duration::from_secs(900), vec!["user:x".into()]));
    late.remind_before = Some(Duration::from_secs(900));
    let t = Ticket::open(TicketId::new(T0.0, 8), late, T0);
    assert_eq!((t.escalate_at, t.remind_at), (None, None));
    assert_eq!(
        escalate(&t, at(1)).unwrap_err(),
        TransitionError::AlreadyDone
    );
}

#[test]
fn quorum_counts_distinct_approvers() {
    let t = ticket(2);
    let t = approve(&t, &oncall("alice"), Some("ok".into()), at(1)).unwrap();
    assert_eq!(t.status, Status::Pending);
    assert_eq!(
        approve(&t, &oncall("alice"), None, at(2)),
        Err(TransitionError::AlreadyVoted)
    );
    let t = approve(&t, &oncall("dave"), None, at(3)).unwrap();
    assert_eq!(t.status, Status::Approved);
    assert_eq!(t.decided_at, Some(at(3)));
    assert_eq!(t.redeem_by, Some(at(3 + 300)));
    assert_eq!(t.approvals.len(), 2);
    assert_eq!(t.approvals[0].comment.as_deref(), Some("ok"));
}

#[test]
fn listed_users_and_group_members_only() {
    let t = ticket(1);
    let stranger = Approver {
        user: "mallory".into(),
        groups: vec!["dev".into()],
    };
    assert_eq!(
        approve(&t, &stranger, None, at(1)),
        Err(TransitionError::NotAnApprover)
    );
    assert_eq!(
        deny(&t, &stranger, None, at(1)),
        Err(TransitionError::NotAnApprover)
    );
    assert_eq!(TransitionError::NotAnApprover.status(), 403);
    let carol = Approver {
        user: "carol".into(),
        groups: vec![],
    };
    assert_eq!(
        approve(&t, &carol, None, at(1)).unwrap().status,
        Status::Approved
    );
    // A group named like a user entry does not match, nor the reverse.
    let confused = Approver {
        user: "oncall".into(),
        groups: vec!["carol".into()],
    };
    assert_eq!(
        approve(&t, &confused, None, at(1)),
        Err(TransitionError::NotAnApprover)
    );
}

#[test]
fn no_self_approval_unless_the_route_allows_it() {
    let t = ticket(1);
    let bob_oncall = Approver {
        user: "bob".into(),
        groups: vec!["oncall".into()],
    };
    assert_eq!(
        approve(&t, &bob_oncall, None, at(1)),
        Err(TransitionError::SelfApproval)
    );
    assert_eq!(
        deny(&t, &bob_oncall, None, at(1)),
        Err(TransitionError::SelfApproval)
    );
    assert_eq!(TransitionError::SelfApproval.status(), 403);
    let mut allowed = t.clone();
    allowed.self_approval = true;
    assert_eq!(
        approve(&allowed, &bob_oncall, None, at(1)).unwrap().status,
        Status::Approved
    );
    // Anonymous requesters are nobody's self.
    let mut anon = t.clone();
    anon.requester = Requester::default();
    assert!(approve(&anon, &oncall("anonymous"), None, at(1)).is_ok());
}

#[test]
fn decisions_at_or_after_expiry_are_refused_with_409() {
    let t = ticket(1);
    let e = approve(&t, &oncall("alice"), None, t.expires_at).unwrap_err();
    assert_eq!(e, TransitionError::Expired);
    assert_eq!(e.status(), 409);
    assert_eq!(
        deny(&t, &oncall("alice"), None, at(10_000)),
        Err(TransitionError::Expired)
    );
    assert!(approve(&t, &oncall("alice"), None, Timestamp(t.expires_at.0 - 1)).is_ok());
}

#[test]
fn one_deny_ends_the_ticket() {
    let t = ticket(2);
    let t = approve(&t, &oncall("alice"), None, at(1)).unwrap();
    let d = deny(
        &t,
        &oncall("dave"),
        Some("not during the freeze".into()),
        at(2),
    )
    .unwrap();
    assert_eq!(d.status, Status::Denied);
    assert_eq!(d.deny_reason.as_deref(), Some("not during the freeze"));
    assert_eq!(d.decided_at, Some(at(2)));
    assert_eq!(d.denials.len(), 1);
    assert_eq!(
        approve(&d, &oncall("erin"), None, at(3)),
        Err(TransitionError::NotPending {
            status: Status::Denied
        })
    );
    // An approver who already approved cannot also deny.
    assert_eq!(
        deny(&t, &oncall("alice"), None, at(2)),
        Err(TransitionError::AlreadyVoted)
    );
}

// === expire / cancel / execute ===

#[test]
fn expire_only_when_due_and_pending() {
    let t = ticket(1);
    assert_eq!(expire(&t, at(1)), Err(TransitionError::NotDue));
    let e = expire(&t, t.expires_at).unwrap();
    assert_eq!(e.status, Status::Expired);
    assert_eq!(e.decided_at, Some(t.expires_at));
    let approved = approve(&t, &oncall("alice"), None, at(1)).unwrap();
    assert_eq!(
        expire(&approved, at(10_000)),
        Err(TransitionError::NotPending {
            status: Status::Approved
        })
    );
}

/// SPEC 6 across replicas: a ticket is cancelled when a client goes away and no replica
/// holds a request on it any more; never while another replica still does.
#[test]
fn holders_join_and_leave_and_the_last_gone_cancels() {
    let t = ticket(1);
    let a = join_hold(&t, "replica-a").unwrap();
    assert_eq!(
        join_hold(&a, "replica-a"),
        Err(TransitionError::AlreadyDone)
    );
    let ab = join_hold(&a, "replica-b").unwrap();
    assert_eq!(ab.holders, ["replica-a", "replica-b"]);
    // A's client goes away: B still holds, so the ticket stays pending.
    let b = leave_hold(&ab, "replica-a", &[], true, at(1)).unwrap();
    assert_eq!(b.status, Status::Pending);
    assert_eq!(b.holders, ["replica-b"]);
    assert!(b.gone, "the client gone is recorded while B holds");
    // Gone again, not listed: nothing to write.
    assert_eq!(
        leave_hold(&b, "replica-a", &[], true, at(1)),
        Err(TransitionError::AlreadyDone)
    );
    // A's client was answered meanwhile (it may come back): that clears the record.
    let answered = leave_hold(&b, "replica-a", &[], false, at(1)).unwrap();
    assert!(!answered.gone);
    assert_eq!(answered.holders, ["replica-b"]);
    assert_eq!(
        leave_hold(&answered, "replica-a", &[], false, at(1)),
        Err(TransitionError::AlreadyDone)
    );
    // B's request was answered (202 at its hold timeout): B leaves, nothing is cancelled.
    let none = leave_hold(&b, "replica-b", &[], false, at(2)).unwrap();
    assert_eq!(none.status, Status::Pending);
    assert!(none.holders.is_empty());
    // B's client goes away as the last holder: cancelled.
    let c = leave_hold(&b, "replica-b", &[], true, at(3)).unwrap();
    assert_eq!(c.status, Status::Cancelled);
    assert_eq!(c.decided_at, Some(at(3)));
    // A ticket no one listed (opened before holders were kept): the one gone cancels it.
    assert_eq!(
        leave_hold(&t, "replica-a", &[], true, at(4))
            .unwrap()
            .status,
        Status::Cancelled
    );
    // A replica that died holding (its lease ran out) does not keep the ticket alive: the
    // last live one gone cancels it.
    let dead = vec!["replica-a".to_string()];
    let c = leave_hold(&ab, "replica-b", &dead, true, at(4)).unwrap();
    assert_eq!(c.status, Status::Cancelled);
    // ... nor is it listed once anyone leaves, even without cancelling.
    let left = leave_hold(&ab, "replica-c", &dead, false, at(4)).unwrap();
    assert_eq!(left.holders, ["replica-b"]);
    // Only while pending.
    let decided = cancel(&t, at(5)).unwrap();
    assert!(matches!(
        drop_expired_holders(&decided, &dead, at(6)),
        Err(TransitionError::NotPending { .. })
    ));
    assert!(matches!(
        join_hold(&decided, "replica-a"),
        Err(TransitionError::NotPending { .. })
    ));
    assert!(matches!(
        leave_hold(&decided, "replica-a", &[], true, at(6)),
        Err(TransitionError::NotPending { .. })
    ));
}

/// A replica looking again at the holders after its client went away: the holders whose
/// lease ran out are dropped, and the ticket is cancelled only when none is left and the
/// last to leave was a client gone, not one answered (which may come back with
/// `Jit-Ticket`).
#[test]
fn dropping_dead_holders_cancels_only_what_a_gone_client_left() {
    let t = ticket(1);
    let abc = ["replica-a", "replica-b", "replica-c"]
        .iter()
        .fold(t, |t, r| join_hold(&t, r).unwrap());
    let dead_c = vec!["replica-c".to_string()];
    // None of them listed: nothing to write.
    assert_eq!(
        drop_expired_holders(&abc, &["replica-x".to_string()], at(1)),
        Err(TransitionError::AlreadyDone)
    );
    // A's client goes, then C dies: B still holds, so only C is dropped.
    let bc = leave_hold(&abc, "replica-a", &[], true, at(1)).unwrap();
    let b = drop_expired_holders(&bc, &dead_c, at(2)).unwrap();
    assert_eq!(
        (b.status, b.holders.as_slice()),
        (Status::Pending, &["replica-b".to_string()][..])
    );
    // B's client is answered 202 (it may resume), then C dies: pending, no holder.
    let c = leave_hold(&bc, "replica-b", &[], false, at(2)).unwrap();
    let none = drop_expired_holders(&c, &dead_c, at(3)).unwrap();
    assert_eq!(none.status, Status::Pending);
    assert!(none.holders.is_empty());
    // B's client went away instead, then C dies: every client is gone, so it is cancelled.
    let c = leave_hold(&bc, "replica-b", &[], true, at(2)).unwrap();
    let gone = drop_expired_holders(&c, &dead_c, at(3)).unwrap();
    assert_eq!(gone.status, Status::Cancelled);
    assert_eq!(gone.decided_at, Some(at(3)));
}

/// `holders` and `gone` mean something only while a ticket is pending: every decision drops
/// them, so a decided ticket's JSON does not show replicas or a client gone.
#[test]
fn a_decision_drops_what_only_a_pending_ticket_means() {
    let t = ticket(1);
    let ab = join_hold(&join_hold(&t, "replica-a").unwrap(), "replica-b").unwrap();
    let held = leave_hold(&ab, "replica-a", &[], true, at(1)).unwrap();
    assert!(held.gone && !held.holders.is_empty());
    let decided = [
        approve(&held, &oncall("alice"), None, at(2)).unwrap(),
        deny(&held, &oncall("alice"), None, at(2)).unwrap(),
        cancel(&held, at(2)).unwrap(),
        expire(&held, held.expires_at).unwrap(),
    ];
    for d in decided {
        assert_ne!(d.status, Status::Pending);
        assert!(d.holders.is_empty(), "{:?} kept its holders", d.status);
        assert!(!d.gone, "{:?} kept gone", d.status);
        assert!(d.decided_at.is_some());
    }
}

#[test]
fn cancel_only_while_pending() {
    let t = ticket(1);
    let c = cancel(&t, at(1)).unwrap();
    assert_eq!(c.status, Status::Cancelled);
    assert!(cancel(&c, at(2)).is_err());
}

#[test]
fn execute_at_most_token_uses_times() {
    let t = ticket(1);
    assert_eq!(
        execute(&t, at(1), "r", &t.fingerprint),
        Err(TransitionError::NotApproved {
            status: Status::Pending
        })
    );
    let a = approve(&t, &oncall("alice"), None, at(1)).unwrap();
    let x = execute(&a, at(2), "r", &a.fingerprint).unwrap();
    assert_eq!(x.status, Status::Executed);
    assert_eq!(x.executed_at, Some(at(2)));
    assert_eq!(
        execute(&x, at(3), "r", &x.fingerprint),
        Err(TransitionError::NotApproved {
            status: Status::Executed
        })
    );

    let mut twice = a.clone();
    twice.token_uses = 2;
    let once = execute(&twice, at(2), "r1", &twice.fingerprint).unwrap();
    assert_eq!(once.releases, vec!["r1".to_string()]);
    // Another request spends nothing.
    assert_eq!(
        execute(&once, at(3), "r", "0000"),
        Err(TransitionError::OtherRequest)
    );
    assert_eq!((once.status, once.redeemed), (Status::Approved, 1));
    let done = execute(&once, at(3), "r", &once.fingerprint).unwrap();
    assert_eq!((done.status, done.redeemed), (Status::Executed, 2));

    assert_eq!(
        execute(&a, at(1 + 300), "r", &a.fingerprint),
        Err(TransitionError::RedemptionExpired)
    );
    let mut access = a.clone();
    access.mode = Mode::Access;
    assert_eq!(
        execute(&access, at(2), "r", &access.fingerprint),
        Err(TransitionError::NotAction)
    );
}

#[derive(Debug, Clone)]
enum Op {
    Approve(u8),
    Deny(u8),
    Expire,
    Cancel,
    Execute,
    Advance(u32),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u8..4).prop_map(Op::Approve),
        (0u8..4).prop_map(Op::Deny),
        Just(Op::Expire),
        Just(Op::Cancel),
        Just(Op::Execute),
        (0u32..1200).prop_map(Op::Advance),
    ]
}

proptest! {
    /// Whatever sequence of operations arrives, terminal states are never left, decisions
    /// happen only before expiry, quorum is distinct users, and execution happens at most
    /// `token_uses` times.
    #[test]
    fn the_state_machine_keeps_its_invariants(quorum in 1u32..4, uses in 1u32..3, ops in proptest::collection::vec(op(), 0..30)) {
        let mut t = ticket(quorum);
        t.token_uses = uses;
        let mut now = T0;
        let mut executions = 0;
        for o in ops {
            let before = t.clone();
            let r = match o {
                Op::Approve(u) => approve(&t, &oncall(&format!("u{u}")), None, now),
                Op::Deny(u) => deny(&t, &oncall(&format!("u{u}")), None, now),
                Op::Expire => expire(&t, now),
                Op::Cancel => cancel(&t, now),
                Op::Execute => execute(&t, now, "r", &t.fingerprint),
                Op::Advance(s) => { now = now.plus(Duration::from_secs(u64::from(s))); continue; }
            };
            match r {
                Ok(next) => {
                    prop_assert!(!before.status.is_terminal(), "left terminal {:?}", before.status);
                    if matches!(o, Op::Execute) { executions += 1; }
                    if before.status == Status::Pending && next.status != Status::Pending {
                        prop_assert_eq!(next.decided_at, Some(now));
                    }
                    if next.status == Status::Approved && before.status == Status::Pending {
                        prop_assert!(now < t.expires_at);
                        let mut by: Vec<&str> = next.approvals.iter().map(|v| v.by.as_str()).collect();
                        by.sort_unstable();
                        by.dedup();
                        prop_assert_eq!(by.len() as u32, quorum);
                    }
                    t = next;
                }
                Err(e) => {
                    prop_assert!(e.status() == 403 || e.status() == 409);
                }
            }
        }
        prop_assert!(executions <= uses);
    }
}

// === grants ===

fn grant() -> Grant {
    Grant {
        id: GrantId::new(T0.0, 1),
        route: "db-admin".into(),
        route_hash: hex(&[1; 32]),
        requester: bob(),
        created_at: T0,
        expires_at: at(3600),
        max_uses: Some(2),
        uses: 0,
        revoked_at: None,
        ticket: Some(TicketId::new(T0.0, 2)),
        method: None,
    }
}

#[test]
fn grants_are_used_until_exhausted_expired_or_revoked() {
    let g = grant();
    assert!(g.is_active(at(1)));
    let g1 = use_grant(&g, at(1)).unwrap();
    let g2 = use_grant(&g1, at(2)).unwrap();
    assert_eq!(g2.uses, 2);
    assert!(!g2.is_active(at(3)));
    assert_eq!(use_grant(&g2, at(3)), Err(TransitionError::GrantExhausted));
    assert_eq!(use_grant(&g, at(3600)), Err(TransitionError::GrantExpired));
    let r = revoke(&g, at(5)).unwrap();
    assert_eq!(r.revoked_at, Some(at(5)));
    assert_eq!(use_grant(&r, at(6)), Err(TransitionError::GrantRevoked));
    assert_eq!(revoke(&r, at(6)), Err(TransitionError::GrantRevoked));
    // Only a grant that could still be used is revoked: not a used-up or an expired one.
    assert_eq!(revoke(&g2, at(3)), Err(TransitionError::GrantExhausted));
    assert_eq!(revoke(&g, at(3600)), Err(TransitionError::GrantExpired));
    let mut unlimited = g.clone();
    unlimited.max_uses = None;
    unlimited.uses = 1000;
    assert!(use_grant(&unlimited, at(1)).is_ok());
    let v = serde_json::to_value(&g).unwrap();
    assert_eq!(v["maxUses"], 2);
    assert!(v["revokedAt"].is_null());
}

// === audit chain ===

fn events(n: usize) -> Vec<AuditEvent> {
    let mut prev = GENESIS.to_string();
    (0..n)
        .map(|i| {
            let e = chain(
                &prev,
                i as u64 + 1,
                AuditDraft {
                    at: at(i as u64),
                    kind: AuditKind::TicketApproved,
                    ticket: Some(TicketId::new(T0.0, i as u128)),
                    actor: Some("alice".into()),
                    requester: Some("bob".into()),
                    route: None,
                    detail: serde_json::json!({"z": 1, "a": [i, "x"], "m": {"b": 2, "a": 1}}),
                },
            );
            prev = e.hash.clone();
            e
        })
        .collect()
}

#[test]
fn an_intact_chain_verifies() {
    let ev = events(5);
    assert_eq!(verify(&ev), Ok(()));
    assert_eq!(verify(&[]), Ok(()));
    assert_eq!(verify_from(&ev[1].hash, 2, &ev[2..]), Ok(()));
    let v = serde_json::to_value(&ev[0]).unwrap();
    assert_eq!(v["kind"], "ticket.approved");
    assert_eq!(v["prev"], GENESIS);
    let back: AuditEvent = serde_json::from_value(v).unwrap();
    assert_eq!(back, ev[0]);
}

#[test]
fn edits_removals_and_reorders_are_detected() {
    let ev = events(5);
    let mut edited = ev.clone();
    edited[2].actor = Some("mallory".into());
    assert_eq!(verify(&edited).unwrap_err().0, 2);

    let mut detail = ev.clone();
    detail[3].detail["z"] = serde_json::json!(2);
    assert_eq!(verify(&detail).unwrap_err().0, 3);

    let mut rehashed = ev.clone();
    rehashed[1].actor = Some("mallory".into());
    rehashed[1].hash = event_hash(&rehashed[1]);
    assert_eq!(verify(&rehashed).unwrap_err().0, 2);

    let mut removed = ev.clone();
    removed.remove(1);
    assert_eq!(verify(&removed).unwrap_err().0, 1);

    let mut first_removed = ev.clone();
    first_removed.remove(0);
    assert_eq!(verify(&first_removed).unwrap_err().0, 0);

    let mut reordered = ev.clone();
    reordered.swap(1, 2);
    assert_eq!(verify(&reordered).unwrap_err().0, 1);
}

#[test]
fn canonical_json_sorts_keys_at_every_depth() {
    let v = serde_json::json!({"b": {"d": 1, "c": [ {"y": 1, "x": "\""} ]}, "a": null});
    assert_eq!(
        canonical_json(&v),
        r#"{"a":null,"b":{"c":[{"x":"\"","y":1}],"d":1}}"#
    );
}

#[test]
fn transition_errors_map_to_http_statuses() {
    assert_eq!(TransitionError::Expired.status(), 409);
    assert_eq!(TransitionError::AlreadyVoted.status(), 409);
    assert_eq!(
        TransitionError::NotPending {
            status: Status::Denied
        }
        .status(),
        409
    );
    assert_eq!(TransitionError::GrantRevoked.status(), 403);
    assert_eq!(Status::parse("PENDING"), Some(Status::Pending));
    assert_eq!(Status::parse("pending"), None);
}

/// An event exactly as the store wrote it before events had a `route` (serialised and
/// hashed by that code): it still decodes, re-serialises to the same JSON and verifies.
const OLD_SHAPE_EVENT: &str = r#"{"seq":1,"at":"2026-09-21T14:13:20.123Z","kind":"ticket.approved","ticket":"jit_01JD3ZK8Q6W6M7ZC2Y6F8X4T9B","actor":"alice","requester":"bob","detail":{"comment":"ship it","quorumReached":true},"prev":"0000000000000000000000000000000000000000000000000000000000000000","hash":"51c1eb966ba197222675da206dd88084105923afd6c738fec0358b6da354e599"}"#;

#[test]
fn events_recorded_before_route_existed_still_verify() {
    let raw: serde_json::Value = serde_json::from_str(OLD_SHAPE_EVENT).unwrap();
    let e: AuditEvent = serde_json::from_value(raw.clone()).unwrap();
    assert_eq!(e.route, None);
    assert_eq!(e.store_seq, None);
    assert_eq!(
        serde_json::to_value(&e).unwrap(),
        raw,
        "no member added on the way back"
    );
    assert_eq!(event_hash(&e), e.hash);
    assert_eq!(verify(std::slice::from_ref(&e)), Ok(()));
    let mut check = ChainCheck::new();
    assert_eq!(check.check(&raw), Ok(e.clone()));
    assert_eq!(check_alone(&raw), Ok(e));
}

#[test]
fn about_files_the_event_under_the_route() {
    let t = ticket(1);
    let d = AuditDraft::about(
        AuditKind::TicketCreated,
        &t,
        None,
        serde_json::Value::Null,
        at(1),
    );
    assert_eq!(d.route.as_deref(), Some(t.route.as_str()));
    let e = chain(GENESIS, 1, d);
    let v = serde_json::to_value(&e).unwrap();
    assert_eq!(v["route"], t.route.as_str());
    assert!(v.get("storeSeq").is_none() && v.get("storeHash").is_none());
    // Without a route the member is absent, not null (the shape of older events).
    let mut none = e.clone();
    none.route = None;
    assert!(serde_json::to_value(&none).unwrap().get("route").is_none());
}

#[test]
fn audit_kinds_have_their_wire_names() {
    for k in AuditKind::ALL {
        assert_eq!(serde_json::to_value(k).unwrap(), k.as_str());
        assert_eq!(AuditKind::parse(k.as_str()), Some(k));
        assert_eq!(k.to_string(), k.as_str());
    }
    assert_eq!(AuditKind::parse("ticket"), None);
    assert_eq!(AuditKind::parse("TICKET.CREATED"), None);
}

/// Store events 2, 5 and 9 of some chain (another replica appended the rest), as one
/// replica's file holds them.
fn file_lines() -> (Vec<AuditEvent>, Vec<AuditEvent>) {
    let store = events(9);
    let mine: Vec<AuditEvent> = [1, 4, 8].iter().map(|&i| store[i].clone()).collect();
    let mut prev = GENESIS.to_string();
    let lines = mine
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let line = rechain(&prev, i as u64 + 1, e);
            prev = line.hash.clone();
            line
        })
        .collect();
    (mine, lines)
}

#[test]
fn a_rechained_file_is_a_chain_of_its_own() {
    let (mine, lines) = file_lines();
    assert_eq!(verify(&lines), Ok(()));
    let mut check = ChainCheck::new();
    for (line, stored) in lines.iter().zip(&mine) {
        let raw = serde_json::to_value(line).unwrap();
        assert_eq!(raw["storeSeq"], stored.seq);
        assert_eq!(raw["storeHash"], stored.hash.as_str());
        let got = check.check(&raw).unwrap();
        assert_eq!(
            (got.at, got.kind, &got.detail),
            (stored.at, stored.kind, &stored.detail)
        );
    }
    assert_eq!(check.next_seq(), 4);
    assert_eq!(check.head(), lines[2].hash);
    // The store's seq is covered by the line's hash.
    let mut moved = serde_json::to_value(&lines[0]).unwrap();
    moved["storeSeq"] = 3.into();
    assert_eq!(
        ChainCheck::new().check(&moved).unwrap_err(),
        ChainBreak {
            seq: 1,
            why: "hash does not match the event's content".into()
        }
    );
}

#[test]
fn chain_check_names_the_first_broken_seq() {
    let raw: Vec<serde_json::Value> = events(5)
        .iter()
        .map(|e| serde_json::to_value(e).unwrap())
        .collect();
    let first_break = |lines: &[serde_json::Value]| {
        let mut c = ChainCheck::new();
        lines.iter().find_map(|l| c.check(l).err())
    };
    assert_eq!(first_break(&raw), None);
    // Edited.
    let mut edited = raw.clone();
    edited[2]["actor"] = "mallory".into();
    assert_eq!(first_break(&edited).unwrap().seq, 3);
    // Removed.
    let mut removed = raw.clone();
    removed.remove(3);
    let b = first_break(&removed).unwrap();
    assert_eq!(b.seq, 4);
    assert!(b.why.contains("expected seq 4, found 5"), "{b}");
    // Reordered.
    let mut swapped = raw.clone();
    swapped.swap(1, 2);
    assert_eq!(first_break(&swapped).unwrap().seq, 2);
    // A member added to an event (which decoding alone would drop) breaks it.
    let mut added = raw.clone();
    added[0]["note"] = "approved by the CEO".into();
    assert_eq!(first_break(&added).unwrap().seq, 1);
    // A member removed (which decoding would default) breaks it too.
    let mut dropped = raw.clone();
    dropped[1].as_object_mut().unwrap().remove("actor");
    assert_eq!(first_break(&dropped).unwrap().seq, 2);
    // Not an event at all.
    let mut garbage = raw.clone();
    garbage[4] = serde_json::json!({"hello": "world"});
    let b = first_break(&garbage).unwrap();
    assert_eq!(b.seq, 5);
    assert!(b.why.starts_with("not an audit event"), "{b}");
    // An edited event whose hash was recomputed breaks the next one's prev.
    let mut rehashed = events(5);
    rehashed[1].actor = Some("mallory".into());
    rehashed[1].hash = event_hash(&rehashed[1]);
    let rehashed: Vec<serde_json::Value> = rehashed
        .iter()
        .map(|e| serde_json::to_value(e).unwrap())
        .collect();
    let b = first_break(&rehashed).unwrap();
    assert_eq!(b.seq, 3);
    assert!(b.why.contains("prev"), "{b}");
    // From the middle, trusting the starting point.
    let mut mid = ChainCheck::after(raw[1]["hash"].as_str().unwrap(), 2);
    assert!(raw[2..].iter().all(|l| mid.check(l).is_ok()));
}
