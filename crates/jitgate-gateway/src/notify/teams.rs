//! Microsoft Teams: an Adaptive Card posted to an incoming webhook, with the ticket's facts
//! and a link to its page (Teams webhooks cannot call back, so there are no buttons).

use serde_json::{json, Value};

use super::{clip, outcome, request_line, requester, time_left, Channels, Told};

/// Adaptive Card text is Markdown: what a client controls is escaped so it cannot turn into
/// links or formatting.
fn plain(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(
            c,
            '\\' | '`'
                | '*'
                | '_'
                | '{'
                | '}'
                | '['
                | ']'
                | '('
                | ')'
                | '#'
                | '+'
                | '-'
                | '.'
                | '!'
                | '<'
                | '>'
                | '|'
                | '~'
        ) {
            out.push('\\');
        }
        if c.is_control() {
            out.push(' ');
        } else {
            out.push(c);
        }
    }
    out
}

/// The message for `told`.
pub(super) fn card(told: &Told, channels: &Channels) -> Value {
    let Some(t) = &told.ticket else {
        return json!({
            "type": "message",
            "attachments": [{
                "contentType": "application/vnd.microsoft.card.adaptive",
                "content": {
                    "type": "AdaptiveCard",
                    "version": "1.4",
                    "body": [{ "type": "TextBlock", "text": plain(told.kind), "weight": "Bolder" }],
                },
            }],
        });
    };
    let title = match told.kind {
        "ticket.opened" => format!("Approval needed: {}", t.route),
        other => format!("{other}: {}", t.route),
    };
    let facts = [
        ("Request", request_line(t)),
        ("Requester", requester(t)),
        (
            "Reason",
            t.reason.clone().unwrap_or_else(|| "(none)".into()),
        ),
        ("Route", t.route.clone()),
        ("Status", outcome(t)),
        ("Time left", time_left(told.at, t.expires_at)),
    ];
    json!({
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "content": {
                "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                "type": "AdaptiveCard",
                "version": "1.4",
                "body": [
                    { "type": "TextBlock", "text": plain(&clip(&title, 150)), "weight": "Bolder", "size": "Medium", "wrap": true },
                    { "type": "FactSet", "facts": facts.iter().map(|(k, v)| json!({ "title": k, "value": plain(&clip(v, 500)) })).collect::<Vec<_>>() },
                ],
                "actions": [{ "type": "Action.OpenUrl", "title": "Open ticket", "url": channels.ticket_url(&t.id) }],
            },
        }],
    })
}
