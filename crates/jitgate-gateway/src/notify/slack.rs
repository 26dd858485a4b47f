//! Slack: Block Kit messages posted to an incoming webhook, and the interactive callback
//! (`POST /v1/notify/slack/actions`) their Approve / Deny buttons call.
//!
//! A callback is believed only when its `X-Slack-Signature` (v0: HMAC-SHA256 of
//! `v0:<timestamp>:<body>` under a channel's signing secret) verifies and its timestamp is
//! within five minutes; the Slack user must be mapped by that channel's `users`. The
//! decision then goes through the admin API's own rules, as the mapped user with the groups
//! of that user's `[admin] api_tokens`.

use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt as _, Full};
use serde_json::{json, Value};

use jitgate_rules::ticket::{Approver, Status, Ticket, Timestamp};

use super::{clip, outcome, request_line, requester, time_left, Channels, Told};
use crate::body::ProxyBody;
use crate::contract::{EventBody, EventData};
use crate::problem::{Fault, Problem};
use crate::state::Shared;

/// How far a callback's timestamp may be from now.
const MAX_SKEW_SECS: u64 = 300;

fn text(s: &str) -> Value {
    // Plain text: what a client controls (paths, reasons) cannot become links, mentions or
    // formatting.
    json!({ "type": "plain_text", "text": s, "emoji": false })
}

/// The message for `told`; `buttons` adds Approve / Deny while the ticket is pending.
pub fn message(told: &Told, channels: &Channels, buttons: bool) -> Value {
    let Some(t) = &told.ticket else {
        return json!({ "text": format!("jitgate: {}", told.kind) });
    };
    let title = match told.kind {
        "ticket.opened" => format!("Approval needed: {}", t.route),
        "ticket.decided" => format!("Decided: {}", t.route),
        "ticket.expired" => format!("Expired: {}", t.route),
        "ticket.escalated" => format!("Escalated, approval needed: {}", t.route),
        "ticket.reminder" => format!("Expires soon, approval needed: {}", t.route),
        "break_glass.used" => format!("BREAK-GLASS used: {}", t.route),
        other => format!("{other}: {}", t.route),
    };
    let link = channels.ticket_url(&t.id);
    let mut fields = vec![
        text(&format!("Requester: {}", clip(&requester(t), 200))),
        text(&format!("Route: {}", clip(&t.route, 200))),
        text(&format!(
            "Reason: {}",
            clip(t.reason.as_deref().unwrap_or("(none)"), 500)
        )),
        text(&format!("Time left: {}", time_left(told.at, t.expires_at))),
    ];
    fields.push(text(&clip(&outcome(t), 500)));
    let mut actions = Vec::new();
    if buttons && t.status == Status::Pending {
        actions.push(json!({
            "type": "button", "action_id": "approve", "style": "primary",
            "text": text("Approve"), "value": t.id.as_str(),
        }));
        actions.push(json!({
            "type": "button", "action_id": "deny", "style": "danger",
            "text": text("Deny"), "value": t.id.as_str(),
        }));
    }
    actions.push(json!({
        "type": "button", "action_id": "open", "text": text("Open ticket"), "url": link,
    }));
    json!({
        "text": clip(&format!("{title}: {}", request_line(t)), 1000),
        "blocks": [
            { "type": "header", "text": text(&clip(&title, 150)) },
            { "type": "section", "text": text(&clip(&request_line(t), 2900)) },
            { "type": "section", "fields": fields },
            { "type": "actions", "block_id": "jitgate", "elements": actions },
        ],
    })
}

/// Whether `signature` (`v0=<hex>`) signs `v0:<timestamp>:<body>` under `key`.
pub fn verify(key: &[u8], timestamp: &str, body: &[u8], signature: &str) -> bool {
    let Some(hex) = signature.strip_prefix("v0=") else {
        return false;
    };
    let Some(tag) = decode_hex(hex) else {
        return false;
    };
    let mut msg = Vec::with_capacity(body.len() + timestamp.len() + 4);
    msg.extend_from_slice(b"v0:");
    msg.extend_from_slice(timestamp.as_bytes());
    msg.push(b':');
    msg.extend_from_slice(body);
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    ring::hmac::verify(&key, &msg, &tag).is_ok()
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The `payload` field of a form-encoded body, decoded as the admin plane decodes forms.
fn form_payload(body: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    crate::admin::query_pairs(Some(text))
        .ok()?
        .into_iter()
        .find_map(|(k, v)| (k == "payload").then_some(v))
}

fn refused(status: StatusCode, slug: &'static str, title: &'static str, detail: String) -> Problem {
    Problem::new(status, slug, title, detail, Fault::Downstream)
}

/// Serves `POST /v1/notify/slack/actions`.
pub async fn actions(
    shared: &Arc<Shared>,
    req: Request<hyper::body::Incoming>,
) -> http::Response<ProxyBody> {
    match act(shared, req).await {
        Ok(()) => http::Response::new(ProxyBody::Empty),
        Err(p) => p.into_response(),
    }
}

async fn act(shared: &Arc<Shared>, req: Request<hyper::body::Incoming>) -> Result<(), Problem> {
    let (parts, body) = req.into_parts();
    let limited = http_body_util::Limited::new(body, 256 * 1024);
    let body =
        match tokio::time::timeout(std::time::Duration::from_secs(10), limited.collect()).await {
            Ok(Ok(c)) => c.to_bytes(),
            _ => {
                return Err(Problem::bad_request(
                    "the callback body is too large or stalled",
                ))
            }
        };
    let snap = shared.snapshot();
    let channels = &snap.notify;
    let unsigned = || {
        refused(
            StatusCode::UNAUTHORIZED,
            "bad-signature",
            "Slack signature not verified",
            "the callback's X-Slack-Signature does not verify under any Slack channel's signing secret".into(),
        )
    };
    let header = |h: &HeaderMap, name: &str| {
        h.get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let (Some(ts), Some(sig)) = (
        header(&parts.headers, "x-slack-request-timestamp"),
        header(&parts.headers, "x-slack-signature"),
    ) else {
        return Err(unsigned());
    };
    let now_secs = shared.engine().now().as_millis() / 1000;
    match ts.parse::<u64>() {
        Ok(t) if t.abs_diff(now_secs) <= MAX_SKEW_SECS => {}
        _ => {
            return Err(refused(
                StatusCode::UNAUTHORIZED,
                "stale-request",
                "Slack request too old",
                format!("X-Slack-Request-Timestamp must be within {MAX_SKEW_SECS}s of now"),
            ))
        }
    }
    let Some((channel, _)) = channels
        .slack_signers()
        .find(|(_, key)| verify(key, &ts, &body, &sig))
    else {
        return Err(unsigned());
    };
    crate::admin::AuthMark::of(&parts.extensions);
    let payload: Value = form_payload(&body)
        .and_then(|p| serde_json::from_str(&p).ok())
        .ok_or_else(|| Problem::bad_request("the callback carries no JSON `payload` field"))?;
    let slack_user = payload["user"]["id"].as_str().unwrap_or_default();
    let response_url = payload["response_url"].as_str().map(str::to_string);
    let action = &payload["actions"][0];
    let approve = match action["action_id"].as_str() {
        Some("approve") => true,
        Some("deny") => false,
        // The link button also calls back; nothing to do.
        Some("open") => return Ok(()),
        _ => return Err(Problem::bad_request("unknown action")),
    };
    let ticket = action["value"].as_str().unwrap_or_default().to_string();
    let Some(user) = channel
        .cfg
        .users
        .iter()
        .find(|(id, _)| id == slack_user)
        .map(|(_, u)| u.clone())
    else {
        tracing::info!(channel = %channel.cfg.name, slack_user, "Slack decision refused: user not mapped");
        if let Some(url) = &response_url {
            respond(
                channels,
                url,
                json!({ "response_type": "ephemeral", "replace_original": false,
                "text": "jitgate: your Slack user is not mapped to an approver (`users` of this channel); nothing was decided." }),
            );
        }
        return Err(refused(
            StatusCode::FORBIDDEN,
            "unknown-user",
            "Slack user not mapped",
            format!(
                "Slack user {slack_user} is not in the `users` of channel {}",
                channel.cfg.name
            ),
        ));
    };
    let groups = {
        let mut g: Vec<String> = snap
            .table
            .config()
            .admin
            .api_tokens
            .iter()
            .filter(|t| t.user == user)
            .flat_map(|t| t.groups.iter().cloned())
            .collect();
        g.sort();
        g.dedup();
        g
    };
    let comment = Some(format!("from Slack ({})", channel.cfg.name));
    let result = crate::admin::decide_as(
        shared,
        Approver {
            user: user.clone(),
            groups,
        },
        &ticket,
        approve,
        comment,
        &channel.cfg.name,
    )
    .await;
    let Some(url) = response_url else {
        return result.map(|_| ());
    };
    match result {
        Ok(t) => {
            let buttons = snap
                .table
                .route(&t.route)
                .and_then(|r| r.approval.as_ref())
                .is_none_or(|a| a.chat_approval);
            let told = Told::of_ticket(&t, shared.engine().now());
            let mut update = message(&told, channels, buttons);
            update["replace_original"] = json!(true);
            respond(channels, &url, update);
            Ok(())
        }
        Err(p) => {
            respond(
                channels,
                &url,
                json!({ "response_type": "ephemeral", "replace_original": false,
                "text": format!("jitgate: {}", p.detail) }),
            );
            Ok(())
        }
    }
}

/// Posts `body` to a callback's `response_url` in the background (Slack wants the callback
/// answered within 3 s).
fn respond(channels: &Channels, url: &str, body: Value) {
    let Ok(uri) = url.parse::<http::Uri>() else {
        return;
    };
    if !matches!(uri.scheme_str(), Some("https" | "http")) {
        return;
    }
    let client = channels.client.clone();
    tokio::spawn(async move {
        let req = Request::post(uri)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body.to_string())));
        let Ok(req) = req else { return };
        match tokio::time::timeout(std::time::Duration::from_secs(10), client.request(req)).await {
            Ok(Ok(resp)) if resp.status().is_success() => {}
            Ok(Ok(resp)) => {
                tracing::warn!(status = %resp.status(), "Slack response_url refused the update")
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "Slack response_url unreachable"),
            Err(_) => tracing::warn!("Slack response_url timed out"),
        }
    });
}

impl Told {
    /// What a ticket's state tells now (the message a chat callback updates to).
    pub fn of_ticket(t: &Ticket, at: Timestamp) -> Told {
        let kind = match t.status {
            Status::Pending => "ticket.opened",
            Status::Expired => "ticket.expired",
            _ => "ticket.decided",
        };
        Told {
            seq: 0,
            kind,
            at,
            actor: None,
            ticket: Some(t.clone()),
            body: EventBody {
                type_: kind.to_string(),
                timestamp: at,
                data: EventData::Ticket(Box::new(t.clone())),
            },
            msg_id: String::new(),
        }
    }
}
