//! `[[notify]]` channels: where approvers are told about tickets (SPEC section 9).

use std::ops::Range;
use std::time::Duration;

use http::Uri;
use serde::Deserialize;

use super::raw::{span_of, Field, Map, Strings, Table};
use super::{is_name, secs, suggest, Cx, RawConfig};

/// The events a channel can be told about, as `events = [...]` names them.
pub const NOTIFY_EVENTS: &[&str] = &[
    "ticket.opened",
    "ticket.escalated",
    "ticket.reminder",
    "ticket.decided",
    "ticket.expired",
    "break_glass.used",
    "grant.created",
    "grant.revoked",
];

#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawNotify {
    pub(super) name: Option<Field<String>>,
    kind: Option<Field<String>>,
    url: Option<Field<String>>,
    secret_env: Option<Field<String>>,
    events: Option<Field<Strings>>,
    signing_secret_env: Option<Field<String>>,
    users: Option<Field<Map<String>>>,
    timeout: Option<Field<String>>,
    retry_for: Option<Field<String>>,
}

/// What speaks on a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotifyKind {
    /// A Standard Webhooks receiver.
    Webhook,
    /// A Slack incoming webhook (Block Kit), with interactive buttons when the channel has a
    /// `signing_secret_env`.
    Slack,
    /// A Microsoft Teams incoming webhook (Adaptive Card).
    Teams,
}

impl NotifyKind {
    /// The `kind` value.
    pub fn as_str(self) -> &'static str {
        match self {
            NotifyKind::Webhook => "webhook",
            NotifyKind::Slack => "slack",
            NotifyKind::Teams => "teams",
        }
    }
}

/// One `[[notify]]` channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notify {
    /// `name`, unique; routes pick channels by it.
    pub name: String,
    /// `kind`.
    pub kind: NotifyKind,
    /// `url`, where messages are posted.
    pub url: Uri,
    /// `secret_env` (webhooks, required): the variable holding the Standard Webhooks secret
    /// (`whsec_<base64>`).
    pub secret_env: Option<String>,
    /// `events`: what the channel is told (default: every event in [`NOTIFY_EVENTS`]).
    pub events: Vec<String>,
    /// `signing_secret_env` (Slack): the variable holding the Slack app's signing secret,
    /// which verifies button callbacks; without it messages carry a link and no buttons.
    pub signing_secret_env: Option<String>,
    /// `users` (Slack): Slack user id to jitgate user, for button callbacks.
    pub users: Vec<(String, String)>,
    /// `timeout`: the limit of one delivery attempt (default 10 s).
    pub timeout: Duration,
    /// `retry_for`: how long after the event failed deliveries are retried (default 1 h).
    pub retry_for: Duration,
}

impl Notify {
    /// Whether this channel is told about `event`.
    pub fn wants(&self, event: &str) -> bool {
        self.events.iter().any(|e| e == event)
    }
}

fn env_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !s.as_bytes()[0].is_ascii_digit()
}

impl Cx<'_> {
    /// `[[notify]]`; `None` when a channel has errors.
    pub(super) fn notify(&mut self, doc: &Table<RawConfig>) -> Option<Vec<Notify>> {
        let mut out: Vec<Notify> = Vec::new();
        let mut ok = true;
        for (t, span) in self.tables(&doc.notify, "notify", "the top level") {
            match self.channel(t, span, &out) {
                Some(n) => out.push(n),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    fn channel(
        &mut self,
        t: &Table<RawNotify>,
        span: Range<usize>,
        seen: &[Notify],
    ) -> Option<Notify> {
        let sec = "[[notify]]";
        self.keys(t, sec);
        let mut ok = true;
        let name = match self.string(&t.name, "name", sec) {
            None => {
                if t.name.is_none() {
                    self.error(span.clone(), "a [[notify]] channel needs `name`");
                }
                None
            }
            Some((n, sp)) if !is_name(n) => {
                self.error(
                    sp,
                    format!("channel name `{n}` may only use letters, digits, `-`, `_` and `.`"),
                );
                None
            }
            Some((n, sp)) if seen.iter().any(|c| c.name == n) => {
                self.error(sp, format!("channel name `{n}` is used twice"));
                None
            }
            Some((n, _)) => Some(n.to_string()),
        };
        let kind = match self.string(&t.kind, "kind", sec) {
            None => {
                if t.kind.is_none() {
                    self.error(
                        span.clone(),
                        "a [[notify]] channel needs `kind`: webhook, slack or teams",
                    );
                }
                None
            }
            Some((k, sp)) => {
                let kinds = [NotifyKind::Webhook, NotifyKind::Slack, NotifyKind::Teams];
                let found = kinds.into_iter().find(|x| x.as_str() == k);
                if found.is_none() {
                    let hint = suggest(k, &["webhook", "slack", "teams"])
                        .map(|s| format!("; did you mean `{s}`?"))
                        .unwrap_or_default();
                    self.error(
                        sp,
                        format!("`kind` must be webhook, slack or teams, not `{k}`{hint}"),
                    );
                }
                found
            }
        };
        let url = match self.string(&t.url, "url", sec) {
            None => {
                if t.url.is_none() {
                    self.error(span.clone(), "a [[notify]] channel needs `url`");
                }
                None
            }
            Some((u, sp)) => match check_url(u) {
                Ok((uri, plain_remote)) => {
                    if plain_remote {
                        self.warn(sp, format!("`url` {u} is plain http to a host other than loopback: messages (and their ticket details) travel unencrypted"));
                    }
                    Some(uri)
                }
                Err(e) => {
                    self.error(sp, format!("`url` in [[notify]]: {e}"));
                    None
                }
            },
        };
        let mut env =
            |cx: &mut Self, f: &Option<Field<String>>, key: &str| match cx.string(f, key, sec) {
                None => {
                    ok &= f.is_none();
                    None
                }
                Some((v, sp)) if !env_name(v) => {
                    cx.error(
                        sp,
                        format!(
                            "`{key}` in [[notify]] must be an environment variable name, not `{v}`"
                        ),
                    );
                    ok = false;
                    None
                }
                Some((v, _)) => Some(v.to_string()),
            };
        let secret_env = env(self, &t.secret_env, "secret_env");
        let signing_secret_env = env(self, &t.signing_secret_env, "signing_secret_env");
        let events = match self.strings(&t.events, "events", sec) {
            None => {
                ok &= t.events.is_none();
                NOTIFY_EVENTS.iter().map(|e| (*e).to_string()).collect()
            }
            Some((list, sp)) => {
                let mut events: Vec<String> = Vec::new();
                for (e, esp) in list {
                    if !NOTIFY_EVENTS.contains(&e) {
                        let hint = suggest(e, NOTIFY_EVENTS)
                            .map(|s| format!("; did you mean `{s}`?"))
                            .unwrap_or_default();
                        self.error(esp, format!("unknown event `{e}` in `events`{hint}"));
                        ok = false;
                    } else if events.iter().any(|x| x == e) {
                        self.warn(esp, format!("event `{e}` is listed twice"));
                    } else {
                        events.push(e.to_string());
                    }
                }
                if events.is_empty() && ok {
                    self.error(sp, "`events` is empty: the channel would never be told anything (remove the channel, or leave `events` out for every event)");
                    ok = false;
                }
                events
            }
        };
        let mut users = Vec::new();
        if let Some((ut, _)) = self.get(&t.users, "users", sec) {
            for (k, v) in ut {
                match &v.value {
                    Ok(u) if !u.is_empty() && !u.chars().any(char::is_whitespace) => {
                        users.push((k.get_ref().to_string(), u.to_string()));
                    }
                    _ => {
                        self.error(v.span.clone(), format!("`users` maps a Slack user id to a jitgate user name; `{}` needs a non-empty name without spaces", k.get_ref()));
                        ok = false;
                    }
                }
            }
        } else {
            ok &= t.users.is_none();
        }
        let timeout = match self.duration(&t.timeout, "timeout", sec) {
            None => {
                ok &= t.timeout.is_none();
                secs(10)
            }
            Some((d, sp)) if d > secs(60) => {
                self.error(sp, "`timeout` in [[notify]] is at most 60s");
                ok = false;
                d
            }
            Some((d, _)) => d,
        };
        let retry_for = match self.duration(&t.retry_for, "retry_for", sec) {
            None => {
                ok &= t.retry_for.is_none();
                secs(3600)
            }
            Some((d, sp)) if d > secs(7 * 24 * 3600) => {
                self.error(sp, "`retry_for` in [[notify]] is at most 7d");
                ok = false;
                d
            }
            Some((d, _)) => d,
        };
        // Keys that only one kind reads are refused on the others: accepted, they would do
        // nothing.
        if let Some(kind) = kind {
            let only = |key: &str, at: Option<Range<usize>>, for_kind: NotifyKind| {
                let at = at.filter(|_| kind != for_kind)?;
                Some((
                    at,
                    format!(
                        "`{key}` is only read for kind = \"{}\", not \"{}\"",
                        for_kind.as_str(),
                        kind.as_str()
                    ),
                ))
            };
            for (key, at, for_kind) in [
                ("secret_env", span_of(&t.secret_env), NotifyKind::Webhook),
                (
                    "signing_secret_env",
                    span_of(&t.signing_secret_env),
                    NotifyKind::Slack,
                ),
                ("users", span_of(&t.users), NotifyKind::Slack),
            ] {
                if let Some((at, msg)) = only(key, at, for_kind) {
                    self.error(at, msg);
                    ok = false;
                }
            }
            if kind == NotifyKind::Webhook && t.secret_env.is_none() {
                self.error(span.clone(), "a webhook channel needs `secret_env`, the variable holding its Standard Webhooks secret (whsec_...): receivers verify every message by it");
                ok = false;
            }
            if kind == NotifyKind::Slack && !users.is_empty() && t.signing_secret_env.is_none() {
                self.warn(span.clone(), "`users` without `signing_secret_env`: messages carry no buttons, so nobody decides from Slack");
            }
        }
        match (name, kind, url) {
            (Some(name), Some(kind), Some(url)) if ok => Some(Notify {
                name,
                kind,
                url,
                secret_env,
                events,
                signing_secret_env,
                users,
                timeout,
                retry_for,
            }),
            _ => None,
        }
    }
}

/// An absolute `http(s)://` URL with a host; the bool says it is plain http off loopback.
fn check_url(u: &str) -> Result<(Uri, bool), String> {
    let uri: Uri = u.parse().map_err(|e| format!("`{u}` is not a URL ({e})"))?;
    let https = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => return Err(format!("`{u}` must start with https:// or http://")),
    };
    let host = uri
        .host()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| format!("`{u}` has no host"))?;
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err(format!(
            "`{u}` carries credentials; put secrets in the environment"
        ));
    }
    let loopback = host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    Ok((uri, !https && !loopback))
}
