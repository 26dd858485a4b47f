#![allow(clippy::unwrap_used)]

use std::time::Duration;

use serde_json::json;

use jitgate_rules::ticket::{
    AuditKind, RequestSnapshot, Requester, Ticket, TicketDraft, TicketId, Timestamp,
};

use super::deliver::{backoff, sign};
use super::slack::verify;
use super::*;

#[test]
fn webhook_signatures_match_the_standard_webhooks_test_vector() {
    let key = webhook_key("c", "V", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
    assert_eq!(
        sign(
            &key,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1_614_265_330,
            r#"{"test": 2432232314}"#
        ),
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    );
    // The prefix is optional, as in the reference libraries; short or non-base64 keys are not.
    assert_eq!(
        webhook_key("c", "V", "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap(),
        key
    );
    assert!(webhook_key("c", "V", "whsec_c2hvcnQ=")
        .unwrap_err()
        .contains("24 to 64"));
    assert!(webhook_key("c", "V", "whsec_not base64!").is_err());
}

#[test]
fn slack_signatures_match_slacks_documented_example() {
    let secret = b"8f742231b10e8888abcd99yyyzzz85a5";
    let body = b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
    let sig = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";
    assert!(verify(secret, "1531420618", body, sig));
    // Another timestamp, body, secret or a mangled signature does not verify.
    assert!(!verify(secret, "1531420619", body, sig));
    assert!(!verify(secret, "1531420618", &body[1..], sig));
    assert!(!verify(
        b"8f742231b10e8888abcd99yyyzzz85a6",
        "1531420618",
        body,
        sig
    ));
    assert!(!verify(secret, "1531420618", body, &sig[1..]));
    assert!(!verify(secret, "1531420618", body, "v0=zz"));
    assert!(!verify(secret, "1531420618", body, ""));
}

#[test]
fn retries_back_off_exponentially_up_to_five_minutes() {
    let waits: Vec<u64> = (1..=12).map(|n| backoff(n).as_secs()).collect();
    assert_eq!(waits, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
    assert_eq!(backoff(u32::MAX), Duration::from_secs(300));
}

fn ticket(path: &str, reason: &str) -> Ticket {
    let at = Timestamp(1_800_000_000_000);
    let draft = TicketDraft {
        route: "prod-deploy".into(),
        route_hash: [1; 32],
        mode: jitgate_rules::ticket::Mode::Action,
        requester: Requester {
            user: Some("bob".into()),
            groups: vec![],
            anonymous: None,
        },
        source: None,
        reason: Some(reason.into()),
        request: RequestSnapshot {
            method: "POST".into(),
            host: "api.example.com".into(),
            path: path.into(),
            query: String::new(),
            target: path.into(),
            headers: vec![],
            headers_sha256: jitgate_rules::ticket::headers_digest([]),
            body_sha256: jitgate_rules::ticket::sha256_hex(b""),
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
    Ticket::open(TicketId::new(at.as_millis(), 7), draft, at)
}

fn channels() -> Channels {
    Channels {
        list: Vec::new(),
        client: http_client().unwrap(),
        base: "https://jit.example.com".into(),
    }
}

#[test]
fn chat_messages_keep_client_text_inert() {
    let t = ticket(
        "/v1/<https://evil.example|click>/*bold*",
        "<!channel> [x](https://evil.example)",
    );
    let told = Told::of_ticket(&t, t.created_at);
    let msg = slack::message(&told, &channels(), true);
    // Every text object a client influences is plain_text, so Slack renders no link, mention
    // or formatting from it.
    let mut kinds = Vec::new();
    fn walk(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                if let (Some(ty), Some(_)) = (m.get("type"), m.get("text").and_then(|t| t.as_str()))
                {
                    out.push(ty.as_str().unwrap_or_default().to_string());
                }
                m.values().for_each(|x| walk(x, out));
            }
            serde_json::Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            _ => {}
        }
    }
    walk(&msg["blocks"], &mut kinds);
    assert!(
        !kinds.is_empty() && kinds.iter().all(|k| k == "plain_text"),
        "{kinds:?}"
    );
    let blocks = msg["blocks"].to_string();
    assert!(
        blocks.contains(r#""action_id":"approve""#) && blocks.contains(r#""action_id":"deny""#)
    );
    assert!(blocks.contains(&format!("https://jit.example.com/ui/tickets/{}", t.id)));
    // No buttons when the route asks for links only, or once decided.
    let plain = slack::message(&told, &channels(), false).to_string();
    assert!(!plain.contains(r#""action_id":"approve""#) && plain.contains("/ui/tickets/"));
    // Teams: Markdown specials are escaped.
    let card = teams::card(&told, &channels());
    let reason = &card["attachments"][0]["content"]["body"][1]["facts"][2];
    assert_eq!(reason["title"], "Reason");
    assert_eq!(
        reason["value"],
        r"\<\!channel\> \[x\]\(https://evil\.example\)"
    );
}

#[test]
fn only_decisions_and_openings_are_told() {
    let t = ticket("/v1/x", "r");
    let ev = |kind, detail| {
        jitgate_rules::ticket::chain(
            jitgate_rules::ticket::GENESIS,
            1,
            jitgate_rules::ticket::AuditDraft::about(kind, &t, None, detail, t.created_at),
        )
    };
    assert_eq!(
        event_type(&ev(AuditKind::TicketCreated, json!({}))),
        Some("ticket.opened")
    );
    assert_eq!(
        event_type(&ev(
            AuditKind::TicketApproved,
            json!({ "quorumReached": false })
        )),
        None
    );
    assert_eq!(
        event_type(&ev(
            AuditKind::TicketApproved,
            json!({ "quorumReached": true })
        )),
        Some("ticket.decided")
    );
    assert_eq!(
        event_type(&ev(AuditKind::TicketDenied, json!({}))),
        Some("ticket.decided")
    );
    assert_eq!(
        event_type(&ev(AuditKind::TicketExpired, json!({}))),
        Some("ticket.expired")
    );
    assert_eq!(event_type(&ev(AuditKind::TicketNotified, json!({}))), None);
    assert_eq!(event_type(&ev(AuditKind::TicketExecuted, json!({}))), None);
}

#[test]
fn time_left_reads_as_people_say_it() {
    let at = Timestamp(0);
    assert_eq!(time_left(at, Timestamp(0)), "expired");
    assert_eq!(time_left(at, Timestamp(1)), "1m");
    assert_eq!(time_left(at, Timestamp(14 * 60_000)), "14m");
    assert_eq!(time_left(at, Timestamp(120 * 60_000)), "2h");
    assert_eq!(time_left(at, Timestamp(125 * 60_000)), "2h 5m");
}
