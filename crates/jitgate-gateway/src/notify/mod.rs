//! Telling approvers: `[[notify]]` channels (Standard Webhooks, Slack, Teams), fed by the
//! audit trail through the store's outbox (SPEC section 9).
//!
//! Every event worth telling is an audit event first. One replica at a time turns new audit
//! events into deliveries, one per channel that wants them, with the payload fixed there
//! (the store moves its fan-out cursor by compare-and-set with the deliveries, so an event is
//! queued once however many replicas run). Any replica then claims due deliveries under a
//! lease, posts them, and settles them: done, or due again after an exponential backoff until
//! the channel's `retry_for` has passed. A replica that dies mid-attempt holds a delivery only
//! until its lease ends. Every attempt is audited as `ticket.notified`.

use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use jitgate_rules::config::{Config, Notify, NotifyKind};
use jitgate_rules::ticket::{AuditEvent, AuditKind, GrantId, Ticket, TicketId, Timestamp};
use jitgate_rules::Route;
use jitgate_store::Store;

use crate::contract::{EventBody, EventData};

pub mod deliver;
pub mod slack;
mod teams;

/// The HTTP client messages are posted with.
pub type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// The channels of one rule-table generation, with their secrets read from the environment.
pub struct Channels {
    list: Vec<Channel>,
    client: HttpClient,
    /// The admin plane's base URL, without a trailing slash (links to ticket pages).
    base: String,
}

/// One channel and its secrets.
pub struct Channel {
    /// The `[[notify]]` entry.
    pub cfg: Notify,
    /// The Standard Webhooks key (webhooks).
    webhook_key: Option<Vec<u8>>,
    /// The Slack signing secret (Slack with `signing_secret_env`).
    slack_signing: Option<Vec<u8>>,
}

impl std::fmt::Debug for Channels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channels")
            .field(
                "channels",
                &self.list.iter().map(|c| &c.cfg.name).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

fn env_secret(channel: &str, key: &str, var: &str) -> Result<String, String> {
    match std::env::var(var) {
        Ok(v) if !v.trim().is_empty() => Ok(v.trim().to_string()),
        _ => Err(format!(
            "[[notify]] {channel}: environment variable `{var}` ({key}) is not set"
        )),
    }
}

/// The key of a Standard Webhooks secret: `whsec_` and base64, 24 to 64 bytes once decoded.
fn webhook_key(channel: &str, var: &str, secret: &str) -> Result<Vec<u8>, String> {
    let b64 = secret.strip_prefix("whsec_").unwrap_or(secret);
    let key = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|_| format!("[[notify]] {channel}: `{var}` must hold a Standard Webhooks secret, whsec_ and base64"))?;
    if !(24..=64).contains(&key.len()) {
        return Err(format!(
            "[[notify]] {channel}: the secret in `{var}` decodes to {} bytes; Standard Webhooks secrets are 24 to 64",
            key.len()
        ));
    }
    Ok(key)
}

impl Channels {
    /// The channels of `cfg`; every missing or malformed secret is an error.
    pub fn build(cfg: &Config) -> Result<Channels, Vec<String>> {
        let mut errors = Vec::new();
        let mut list = Vec::new();
        for n in &cfg.notify {
            let mut channel = Channel {
                cfg: n.clone(),
                webhook_key: None,
                slack_signing: None,
            };
            if let Some(var) = &n.secret_env {
                match env_secret(&n.name, "secret_env", var)
                    .and_then(|s| webhook_key(&n.name, var, &s))
                {
                    Ok(k) => channel.webhook_key = Some(k),
                    Err(e) => errors.push(e),
                }
            }
            if let Some(var) = &n.signing_secret_env {
                match env_secret(&n.name, "signing_secret_env", var) {
                    Ok(s) if s.len() >= 16 => channel.slack_signing = Some(s.into_bytes()),
                    Ok(_) => errors.push(format!(
                        "[[notify]] {}: the Slack signing secret in `{var}` is too short",
                        n.name
                    )),
                    Err(e) => errors.push(e),
                }
            }
            list.push(channel);
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let base = match &cfg.admin.public_url {
            Some(u) => u.to_string().trim_end_matches('/').to_string(),
            None => format!("http://{}", cfg.server.admin_listen),
        };
        Ok(Channels {
            list,
            client: http_client().map_err(|e| vec![e])?,
            base,
        })
    }

    /// The channel called `name`.
    pub fn get(&self, name: &str) -> Option<&Channel> {
        self.list.iter().find(|c| c.cfg.name == name)
    }

    /// Slack channels whose button callbacks can be verified.
    pub fn slack_signers(&self) -> impl Iterator<Item = (&Channel, &[u8])> {
        self.list
            .iter()
            .filter_map(|c| Some((c, c.slack_signing.as_deref()?)))
    }

    /// The channels told about `event` on `route` (every channel when the route is gone or
    /// does not choose).
    fn for_event<'a>(
        &'a self,
        route: Option<&'a Route>,
        event: &'a str,
    ) -> impl Iterator<Item = &'a Channel> + 'a {
        let picked = route
            .and_then(|r| r.approval.as_ref())
            .and_then(|a| a.notify.as_ref());
        self.list
            .iter()
            .filter(move |c| c.cfg.wants(event) && picked.is_none_or(|p| p.contains(&c.cfg.name)))
    }

    /// The ticket's page on the web UI.
    pub fn ticket_url(&self, id: &TicketId) -> String {
        format!("{}/ui/tickets/{id}", self.base)
    }

    /// The channels' names.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.list.iter().map(|c| c.cfg.name.as_str())
    }

    /// Whether there is any channel at all.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }
}

fn http_client() -> Result<HttpClient, String> {
    let tls = crate::tls::client_config(None).map_err(|e| format!("[[notify]]: {e}"))?;
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(Duration::from_secs(5)));
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .build(connector))
}

/// The event an audit event announces, by the name channels and `GET /v1/events` use.
pub fn event_type(e: &AuditEvent) -> Option<&'static str> {
    Some(match e.kind {
        AuditKind::TicketCreated => "ticket.opened",
        AuditKind::TicketApproved if e.detail["quorumReached"] == true => "ticket.decided",
        AuditKind::TicketDenied => "ticket.decided",
        AuditKind::TicketExpired => "ticket.expired",
        AuditKind::GrantCreated => "grant.created",
        AuditKind::GrantRevoked => "grant.revoked",
        AuditKind::BreakGlass => "break_glass.used",
        AuditKind::TicketEscalated => "ticket.escalated",
        AuditKind::TicketReminder => "ticket.reminder",
        _ => return None,
    })
}

/// An audit event worth telling, with the ticket (and grant) as the API shows them.
#[derive(Debug, Clone)]
pub struct Told {
    /// The audit event's number.
    pub seq: u64,
    /// What happened ([`event_type`]).
    pub kind: &'static str,
    /// When.
    pub at: Timestamp,
    /// Who did it.
    pub actor: Option<String>,
    /// The ticket concerned, as it is now.
    pub ticket: Option<Ticket>,
    /// `{type, timestamp, data}`: the Standard Webhooks body (and the event stream's data).
    pub body: EventBody,
    /// Stable for this event wherever it is told: `msg_` and part of the event's hash.
    pub msg_id: String,
}

impl Told {
    /// `{type, timestamp, data}` as JSON (members in alphabetical order, as the admin plane
    /// writes its answers).
    pub fn body_json(&self) -> String {
        serde_json::to_value(&self.body)
            .map(|v| v.to_string())
            .unwrap_or_default()
    }

    /// Loads what `e` is about, or `None` when it is not an event anyone is told.
    pub async fn load(store: &dyn Store, e: &AuditEvent) -> Option<Told> {
        let kind = event_type(e)?;
        let ticket = match &e.ticket {
            Some(id) => store.get(id).await.ok().flatten(),
            None => None,
        };
        let grant = match (kind, e.detail["grant"].as_str()) {
            ("grant.created" | "grant.revoked", Some(g)) => match GrantId::parse(g) {
                Ok(id) => store.get_grant(&id).await.ok().flatten(),
                Err(_) => None,
            },
            _ => None,
        };
        let data = match (&grant, &ticket) {
            (Some(g), _) => EventData::Grant(Box::new(g.clone())),
            (None, Some(t)) => EventData::Ticket(Box::new(t.clone())),
            (None, None) => EventData::TicketRef {
                ticket: e.ticket.clone(),
            },
        };
        Some(Told {
            seq: e.seq,
            kind,
            at: e.at,
            actor: e.actor.clone(),
            ticket,
            body: EventBody {
                type_: kind.to_string(),
                timestamp: e.at,
                data,
            },
            msg_id: format!("msg_{}", e.hash.get(..32).unwrap_or(&e.hash)),
        })
    }

    /// What `channel` is sent about this event.
    fn payload(&self, channel: &Channel, route: Option<&Route>, channels: &Channels) -> String {
        match channel.cfg.kind {
            NotifyKind::Webhook => self.body_json(),
            NotifyKind::Slack => {
                let buttons = channel.slack_signing.is_some()
                    && route
                        .and_then(|r| r.approval.as_ref())
                        .is_none_or(|a| a.chat_approval);
                slack::message(self, channels, buttons).to_string()
            }
            NotifyKind::Teams => teams::card(self, channels).to_string(),
        }
    }
}

/// Clips `s` to `max` characters, marking the cut.
fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
        out.push('…');
        out
    }
}

/// `METHOD host/path?query` of a ticket's request, clipped.
fn request_line(t: &Ticket) -> String {
    let r = &t.request;
    let query = if r.query.is_empty() {
        String::new()
    } else {
        format!("?{}", r.query)
    };
    clip(&format!("{} {}{}{}", r.method, r.host, r.path, query), 500)
}

/// Who asked, as people read it.
fn requester(t: &Ticket) -> String {
    match &t.requester.user {
        Some(u) => u.clone(),
        None => "anonymous".to_string(),
    }
}

/// Time left until `until` from `now`, as `14m` / `2h 5m` / `expired`.
fn time_left(now: Timestamp, until: Timestamp) -> String {
    let ms = until.as_millis().saturating_sub(now.as_millis());
    if ms == 0 {
        return "expired".to_string();
    }
    let mins = ms.div_ceil(60_000);
    match (mins / 60, mins % 60) {
        (0, m) => format!("{m}m"),
        (h, 0) => format!("{h}h"),
        (h, m) => format!("{h}h {m}m"),
    }
}

/// What became of the ticket, in words.
fn outcome(t: &Ticket) -> String {
    use jitgate_rules::ticket::Status;
    let by = |votes: &[jitgate_rules::ticket::Vote]| {
        votes
            .iter()
            .map(|v| v.by.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    match t.status {
        Status::Pending => format!("Pending: {} of {} approvals", t.approvals.len(), t.quorum),
        Status::Approved | Status::Executed => format!("Approved by {}", by(&t.approvals)),
        Status::Denied => format!("Denied by {}", by(&t.denials)),
        other => format!("{other}"),
    }
}

#[cfg(test)]
mod tests;
