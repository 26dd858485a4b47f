#![allow(clippy::unwrap_used)]

use std::time::Duration;

use jitgate_rules::ticket::{
    self, Mode, RequestSnapshot, Requester, Status, Ticket, TicketDraft, TicketId, Timestamp,
};

use super::*;

const OPENED: Timestamp = Timestamp(1_800_000_000_000);

fn pending() -> Ticket {
    let draft = TicketDraft {
        route: "prod-deploy".into(),
        route_hash: [1; 32],
        mode: Mode::Action,
        requester: Requester {
            user: Some("bob".into()),
            groups: vec![],
            anonymous: None,
        },
        source: None,
        reason: None,
        request: RequestSnapshot {
            method: "POST".into(),
            host: "api.example.com".into(),
            path: "/deploy".into(),
            query: String::new(),
            target: "/deploy".into(),
            headers: vec![],
            headers_sha256: ticket::headers_digest([]),
            body_sha256: ticket::sha256_hex(b""),
            body_preview: String::new(),
        },
        ticket_ttl: Duration::from_secs(900),
        token_ttl: Duration::from_secs(300),
        quorum: 1,
        approvers: vec!["group:oncall".into()],
        self_approval: false,
        token_uses: 1,
        grant_terms: None,
        also_limit: None,
        escalation: None,
        remind_before: None,
        risk: None,
    };
    Ticket::open(TicketId::new(OPENED.as_millis(), 7), draft, OPENED)
}

/// The value of the sample named exactly `sample` (name and labels as exposed).
fn sample(text: &str, sample: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' '))
        .and_then(|v| v.split(' ').next()?.parse().ok())
}

#[test]
fn every_metric_of_the_contract_is_exposed() {
    let m = Metrics::new();
    // Metrics without labels, and the reload results, are there from the start; families
    // whose labels come from traffic appear with their first sample.
    let text = m.encode();
    assert!(text.ends_with("# EOF\n"));
    assert_eq!(sample(&text, "jitgate_store_errors_total"), Some(0.0));
    assert_eq!(sample(&text, "jitgate_held_requests"), Some(0.0));
    assert_eq!(sample(&text, "jitgate_decision_seconds_count"), Some(0.0));
    assert_eq!(sample(&text, "jitgate_release_seconds_count"), Some(0.0));
    assert_eq!(
        sample(&text, r#"jitgate_reloads_total{result="rejected"}"#),
        Some(0.0)
    );

    m.request(
        &m.route("api", Served::Allow),
        200,
        Duration::from_millis(1),
    );
    m.ticket_opened("api");
    let mut t = pending();
    t.status = Status::Denied;
    m.ticket_transition(&t, OPENED);
    m.upstream("api").observe(0.001);
    m.notification("hook", "delivered");
    let text = m.encode();
    for (name, kind) in [
        ("jitgate_requests", "counter"),
        ("jitgate_request_duration_seconds", "histogram"),
        ("jitgate_held_requests", "gauge"),
        ("jitgate_tickets_opened", "counter"),
        ("jitgate_tickets_decided", "counter"),
        ("jitgate_decision_seconds", "histogram"),
        ("jitgate_release_seconds", "histogram"),
        ("jitgate_upstream_duration_seconds", "histogram"),
        ("jitgate_reloads", "counter"),
        ("jitgate_store_errors", "counter"),
        ("jitgate_notifications", "counter"),
    ] {
        assert!(
            text.contains(&format!("# TYPE {name} {kind}\n")),
            "{name}:\n{text}"
        );
    }
}

#[test]
fn requests_are_counted_by_route_action_and_status() {
    let m = Metrics::new();
    let api = m.route("api", Served::Allow);
    m.request(&api, 200, Duration::from_millis(3));
    m.request(&api, 200, Duration::from_millis(1));
    // More statuses than a route keeps handles for are counted all the same.
    for status in 400..420 {
        m.request(&api, status, Duration::from_millis(1));
        m.request(&api, status, Duration::from_millis(1));
    }
    m.request(m.unrouted(), 404, Duration::from_micros(100));
    let text = m.encode();
    let api = r#"jitgate_requests_total{route="api",action="allow",status="200"}"#;
    assert_eq!(sample(&text, api), Some(2.0));
    let none = r#"jitgate_requests_total{route="",action="none",status="404"}"#;
    assert_eq!(sample(&text, none), Some(1.0));
    for status in 400..420 {
        let labels =
            format!(r#"jitgate_requests_total{{route="api",action="allow",status="{status}"}}"#);
        assert_eq!(sample(&text, &labels), Some(2.0), "{status}");
    }
    let count = r#"jitgate_request_duration_seconds_count{action="allow"}"#;
    assert_eq!(sample(&text, count), Some(42.0));
    let sum = r#"jitgate_request_duration_seconds_sum{action="allow"}"#;
    assert!((sample(&text, sum).unwrap() - 0.044).abs() < 1e-9);
}

#[test]
fn a_ticket_counts_as_decided_once_it_leaves_pending() {
    let m = Metrics::new();
    let t = pending();
    // Still pending (the first approval of a quorum of two): nothing decided.
    m.ticket_transition(&t, OPENED.plus(Duration::from_secs(5)));
    let mut approved = t.clone();
    approved.status = Status::Approved;
    approved.decided_at = Some(OPENED.plus(Duration::from_secs(42)));
    m.ticket_transition(&approved, OPENED.plus(Duration::from_secs(50)));
    let expired = ticket::expire(&t, OPENED.plus(Duration::from_secs(900))).unwrap();
    m.ticket_transition(&expired, OPENED.plus(Duration::from_secs(900)));
    let mut executed = approved.clone();
    executed.status = Status::Executed;
    m.ticket_transition(&executed, OPENED.plus(Duration::from_secs(60)));

    let text = m.encode();
    let decided = |outcome: &str| {
        sample(
            &text,
            &format!(r#"jitgate_tickets_decided_total{{route="prod-deploy",outcome="{outcome}"}}"#),
        )
    };
    assert_eq!(decided("approved"), Some(1.0));
    assert_eq!(decided("expired"), Some(1.0));
    assert_eq!(decided("denied"), None);
    assert_eq!(sample(&text, "jitgate_decision_seconds_count"), Some(2.0));
    // 42 s to the approval, 900 s to the expiry.
    assert_eq!(sample(&text, "jitgate_decision_seconds_sum"), Some(942.0));
}

#[test]
fn held_requests_are_a_gauge_that_follows_the_guards() {
    let m = Metrics::new();
    let a = m.held();
    let b = m.held();
    assert_eq!(sample(&m.encode(), "jitgate_held_requests"), Some(2.0));
    drop(a);
    assert_eq!(sample(&m.encode(), "jitgate_held_requests"), Some(1.0));
    drop(b);
    assert_eq!(sample(&m.encode(), "jitgate_held_requests"), Some(0.0));
}

#[test]
fn releases_upstreams_reloads_notifications_and_store_errors_are_counted() {
    let m = Metrics::new();
    m.released(OPENED, OPENED.plus(Duration::from_millis(250)));
    m.upstream("billing").observe(0.007);
    m.reload("applied");
    m.reload("rejected");
    m.reload("rejected");
    m.notification("ops-hook", "failed");
    m.notification("ops-hook", "delivered");
    m.store_error();
    m.store_error();
    let text = m.encode();
    assert_eq!(sample(&text, "jitgate_release_seconds_sum"), Some(0.25));
    let up = r#"jitgate_upstream_duration_seconds_count{upstream="billing"}"#;
    assert_eq!(sample(&text, up), Some(1.0));
    let rejected = r#"jitgate_reloads_total{result="rejected"}"#;
    assert_eq!(sample(&text, rejected), Some(2.0));
    let failed = r#"jitgate_notifications_total{channel="ops-hook",result="failed"}"#;
    assert_eq!(sample(&text, failed), Some(1.0));
    assert_eq!(sample(&text, "jitgate_store_errors_total"), Some(2.0));
}
