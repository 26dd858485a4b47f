//! The web page's HTML, written with `maud`: templates are checked when the crate compiles and
//! every interpolated value is escaped (`&`, `<`, `>`, `"`; attributes are always double-quoted),
//! so nothing a requester sent (path, headers, reason, body, user names) can become markup.
//! Only [`PreEscaped`] bypasses that, and it is used for nothing but constant text.

use maud::{html, Markup, DOCTYPE};

use jitgate_rules::ticket::{AuditEvent, Grant, Requester, Status, Ticket, Timestamp, Vote};

use super::session::Flash;

/// How often the pending list reloads itself while nobody is using it, in seconds.
pub const REFRESH_SECS: u32 = 5;

/// What every page's frame shows about the signed-in approver.
pub struct Chrome<'a> {
    /// The approver, when signed in.
    pub user: Option<&'a str>,
    /// Whether they are an operator.
    pub operator: bool,
    /// The session's CSRF token (for the sign-out form).
    pub csrf: Option<&'a str>,
    /// A notice from the last action.
    pub flash: Option<Flash>,
}

impl Chrome<'_> {
    /// The frame of a page shown to nobody in particular (sign-in, errors before sign-in).
    pub fn anonymous() -> Chrome<'static> {
        Chrome {
            user: None,
            operator: false,
            csrf: None,
            flash: None,
        }
    }
}

/// A whole page: `title`, the frame, and `main`. `refresh` makes it reload itself (through
/// `ui.js` while nobody is typing or has ticked a box; a `<noscript>` refresh otherwise).
pub fn page(title: &str, chrome: &Chrome<'_>, refresh: Option<u32>, main: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · jitgate" }
                link rel="stylesheet" href="/ui/assets/ui.css";
                script src="/ui/assets/ui.js" defer {}
                @if let Some(secs) = refresh {
                    noscript { meta http-equiv="refresh" content=(secs); }
                }
            }
            body data-refresh=[refresh] {
                header.top {
                    a.brand href="/ui/" { "jitgate" }
                    @if let (Some(user), Some(csrf)) = (chrome.user, chrome.csrf) {
                        nav {
                            a href="/ui/" { "Pending" }
                            a href="/ui/grants" { "Grants" }
                        }
                        div.who {
                            span.user { (user) @if chrome.operator { " " span.tag { "operator" } } }
                            form method="post" action="/ui/signout" {
                                input type="hidden" name="csrf" value=(csrf);
                                button.link type="submit" { "Sign out" }
                            }
                        }
                    }
                }
                main {
                    @if let Some(flash) = &chrome.flash {
                        div.flash.ok[flash.ok].err[!flash.ok] role="status" {
                            @for line in &flash.lines { p { (line) } }
                        }
                    }
                    (main)
                }
            }
        }
    }
}

/// The sign-in form.
pub fn signin(token: &str, error: Option<&str>) -> Markup {
    page(
        "Sign in",
        &Chrome::anonymous(),
        None,
        html! {
            h1 { "Sign in" }
            p.muted {
                "Paste an admin API token or an admin JWT. It is checked exactly as the admin API "
                "checks a bearer credential, kept on this gateway for the session, and never shown again."
            }
            @if let Some(e) = error { p.flash.err role="alert" { (e) } }
            form.card method="post" action="/ui/signin" autocomplete="off" {
                input type="hidden" name="csrf" value=(token);
                label for="token" { "Bearer credential" }
                input #token type="password" name="token" required autofocus spellcheck="false";
                button.primary type="submit" { "Sign in" }
            }
        },
    )
}

/// An error page.
pub fn error(
    chrome: &Chrome<'_>,
    status: u16,
    title: &str,
    detail: &str,
    back: Option<&str>,
) -> Markup {
    page(
        title,
        chrome,
        None,
        html! {
            h1 { (title) }
            p.flash.err role="alert" { (detail) }
            p.muted { "HTTP " (status) }
            p {
                @if let Some(href) = back { a href=(href) { "Back" } " · " }
                a href="/ui/" { "Pending tickets" }
            }
        },
    )
}

/// `METHOD host/path?query` as approvers read a request.
fn request_line(t: &Ticket) -> String {
    let r = &t.request;
    let query = if r.query.is_empty() {
        String::new()
    } else {
        format!("?{}", r.query)
    };
    format!("{} {}{}{query}", r.method, r.host, r.path)
}

fn requester(r: &Requester) -> Markup {
    html! {
        @match &r.user {
            Some(u) => { (u) }
            None => { span.muted { "anonymous" } }
        }
        @if !r.groups.is_empty() { " " span.muted { "(" (r.groups.join(", ")) ")" } }
    }
}

/// Time left until `until`, counted down in the browser by `ui.js`.
fn time_left(now: Timestamp, until: Timestamp) -> Markup {
    let ms = until.as_millis().saturating_sub(now.as_millis());
    html! {
        span.left data-left-ms=(ms) { (human(ms)) }
    }
}

/// `4m 05s`, `1h 02m`, `expired`.
pub fn human(ms: u64) -> String {
    if ms == 0 {
        return "expired".into();
    }
    let s = ms.div_ceil(1000);
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m {:02}s", s / 60, s % 60),
        _ => format!("{}h {:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// The JSON spelling of a unit enum (`action`, `ticket.approved`).
fn name_of<T: serde::Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        _ => String::new(),
    }
}

fn status_badge(s: Status) -> Markup {
    html! { span class={ "badge " (s.as_str().to_ascii_lowercase()) } { (s.as_str()) } }
}

/// The pending list: soonest to expire first, with check boxes to decide several at once.
pub fn pending(chrome: &Chrome<'_>, tickets: &[Ticket], now: Timestamp) -> Markup {
    let csrf = chrome.csrf.unwrap_or_default();
    page(
        "Pending tickets",
        chrome,
        Some(REFRESH_SECS),
        html! {
            h1 { "Pending tickets " span.count { "(" (tickets.len()) ")" } }
            @if tickets.is_empty() {
                p.empty { "Nothing is waiting for a decision. This page refreshes on its own." }
            } @else {
                form method="post" action="/ui/decide" {
                    input type="hidden" name="csrf" value=(csrf);
                    table.tickets {
                        thead {
                            tr {
                                th.pick {
                                    label.all { input #select-all type="checkbox"; span { "Select all" } }
                                }
                                th { "Request" }
                                th { "Requester" }
                                th { "Reason" }
                                th { "Approvals" }
                                th { "Time left" }
                            }
                        }
                        tbody {
                            @for t in tickets {
                                tr data-ticket=(t.id.as_str()) {
                                    td.pick {
                                        input type="checkbox" name="id" value=(t.id.as_str())
                                            aria-label={ "Select " (t.id.as_str()) };
                                    }
                                    td.req {
                                        a href={ "/ui/tickets/" (t.id.as_str()) } { code { (request_line(t)) } }
                                        div.muted { "route " (t.route) }
                                    }
                                    td data-label="Requester" { (requester(&t.requester)) }
                                    td data-label="Reason" {
                                        @match &t.reason { Some(r) => { (r) } None => { span.muted { "none given" } } }
                                    }
                                    td data-label="Approvals" { (t.approvals.len()) " of " (t.quorum) }
                                    td data-label="Time left" { (time_left(now, t.expires_at)) }
                                }
                            }
                        }
                    }
                    div.decide {
                        label for="batch-comment" { "Comment (approval) or reason (denial)" }
                        input #batch-comment type="text" name="comment" maxlength="2000";
                        div.buttons {
                            button.primary type="submit" name="decision" value="approve" { "Approve selected" }
                            button.danger type="submit" name="decision" value="deny" { "Deny selected" }
                        }
                    }
                }
            }
        },
    )
}

fn votes(title: &str, list: &[Vote]) -> Markup {
    html! {
        @if !list.is_empty() {
            h3 { (title) }
            ul.votes {
                @for v in list {
                    li {
                        strong { (v.by) } " " span.muted { (v.at.to_rfc3339()) }
                        @if let Some(c) = &v.comment { div { (c) } }
                    }
                }
            }
        }
    }
}

/// What the ticket page shows of the audit trail.
pub enum Trail<'a> {
    /// The ticket's events (operators).
    Events(&'a [AuditEvent]),
    /// The caller may not read the audit log.
    OperatorsOnly,
    /// The store did not answer.
    Unavailable(&'a str),
}

/// One ticket: the request as approvers see it, its votes, and the decision form.
pub fn ticket(chrome: &Chrome<'_>, t: &Ticket, now: Timestamp, trail: &Trail<'_>) -> Markup {
    let csrf = chrome.csrf.unwrap_or_default();
    let r = &t.request;
    page(
        &format!("Ticket {}", t.id),
        chrome,
        None,
        html! {
            h1.request { code { (request_line(t)) } }
            p { (status_badge(t.status)) " " span.muted { (t.id.as_str()) } }
            dl.facts {
                dt { "Route" } dd { (t.route) " " span.muted { "(" (name_of(&t.mode)) ")" } }
                dt { "Requester" } dd { (requester(&t.requester)) }
                @if let Some(src) = &t.source { dt { "Source" } dd { code { (src) } } }
                dt { "Reason" } dd { @match &t.reason { Some(x) => { (x) } None => { span.muted { "none given" } } } }
                @if !r.target.is_empty() { dt { "Target" } dd { code { (r.target) } } }
                dt { "Approvals" } dd { (t.approvals.len()) " of " (t.quorum) }
                dt { "Approvers" } dd { (t.approvers.join(", ")) }
                dt { "Created" } dd { (t.created_at.to_rfc3339()) }
                @if t.status == Status::Pending {
                    dt { "Time left" } dd { (time_left(now, t.expires_at)) " " span.muted { "(expires " (t.expires_at.to_rfc3339()) ")" } }
                } @else {
                    dt { "Expires" } dd { (t.expires_at.to_rfc3339()) }
                }
                @if let Some(d) = t.decided_at { dt { "Decided" } dd { (d.to_rfc3339()) } }
                @if let Some(reason) = &t.deny_reason { dt { "Denial reason" } dd { (reason) } }
                @if let Some(p) = &t.policy { dt { "Approved by policy" } dd { code { (p) } } }
                @if let Some(why) = &t.break_glass { dt { "Break-glass" } dd.danger { (why) } }
                @if let Some(a) = &t.acknowledged {
                    dt { "Acknowledged" } dd { (a.by) " at " (a.at.to_rfc3339()) @if let Some(c) = &a.comment { ": " (c) } }
                }
                @if let Some(at) = t.escalate_at {
                    dt { "Escalation" } dd {
                        @if let Some(done) = t.escalated_at { "escalated at " (done.to_rfc3339()) } @else { "at " (at.to_rfc3339()) }
                        " to " (t.escalate_to.join(", "))
                    }
                }
                @if let Some(r) = &t.risk {
                    dt { "Risk score" } dd {
                        strong { (r.score) }
                        @if !r.factors.is_empty() {
                            ul.factors {
                                @for f in &r.factors { li { code { (f.signal) } " +" (f.points) " " span.muted { (f.detail) } } }
                            }
                        }
                    }
                }
            }
            (votes("Approvals", &t.approvals))
            (votes("Denials", &t.denials))
            h2 { "Bound headers" }
            p.muted { "The approval is bound to these headers as the upstream receives them; secrets are redacted." }
            @if r.headers.is_empty() {
                p.muted { "none" }
            } @else {
                table.headers {
                    tbody {
                        @for (name, value) in &r.headers {
                            tr { th { code { (name) } } td { code { (value) } } }
                        }
                    }
                }
            }
            h2 { "Body" }
            @if r.body_preview.is_empty() {
                p.muted { "empty" }
            } @else {
                pre.body { (r.body_preview) }
            }
            p.muted.hash { "SHA-256 " code { (r.body_sha256) } }
            @if t.status == Status::Pending {
                h2 { "Decision" }
                form.card.decide method="post" action={ "/ui/tickets/" (t.id.as_str()) "/decide" } {
                    input type="hidden" name="csrf" value=(csrf);
                    label for="comment" { "Comment (approval) or reason (denial; the requester sees it)" }
                    textarea #comment name="comment" rows="2" maxlength="2000" {}
                    @if let (Some(limit), Some(_)) = (t.also_limit, &t.requester.user) {
                        fieldset.also {
                            legend { "Also approve the next requests like this one (optional)" }
                            label for="also_uses" { "More requests (up to " (limit.uses) ")" }
                            input #also_uses type="number" name="also_uses" min="1" max=(limit.uses);
                            label for="also_within" { "Within (up to " (human(limit.within_ms)) ", e.g. 30m)" }
                            input #also_within type="text" name="also_within" maxlength="20";
                        }
                    }
                    div.buttons {
                        button.primary type="submit" name="decision" value="approve" { "Approve" }
                        button.danger type="submit" name="decision" value="deny" { "Deny" }
                    }
                }
            }
            @if t.status == Status::Review {
                h2 { "Review" }
                form.card.decide method="post" action={ "/ui/tickets/" (t.id.as_str()) "/decide" } {
                    input type="hidden" name="csrf" value=(csrf);
                    p { "This request passed by break-glass. Acknowledge it once it has been reviewed." }
                    label for="comment" { "Comment" }
                    textarea #comment name="comment" rows="2" maxlength="2000" {}
                    div.buttons {
                        button.primary type="submit" name="decision" value="acknowledge" { "Acknowledge" }
                    }
                }
            }
            h2 { "Audit trail" }
            @match trail {
                Trail::Events(events) => {
                    @if events.is_empty() { p.muted { "No events." } }
                    ol.trail {
                        @for e in *events {
                            li {
                                strong { (name_of(&e.kind)) }
                                " " span.muted { "#" (e.seq) " " (e.at.to_rfc3339()) }
                                @if let Some(a) = &e.actor { " by " (a) }
                                @if !e.detail.is_null() { pre.detail { (e.detail.to_string()) } }
                            }
                        }
                    }
                }
                Trail::OperatorsOnly => { p.muted { "The audit trail is shown to operators." } }
                Trail::Unavailable(why) => { p.flash.err { (why) } }
            }
        },
    )
}

/// Active grants the approver may manage (operators: all; requesters: their own; a route's
/// approvers: the grants on it), each with a revoke form.
pub fn grants(chrome: &Chrome<'_>, grants: &[Grant], now: Timestamp) -> Markup {
    page(
        "Grants",
        chrome,
        None,
        html! {
            h1 { "Active grants " span.count { "(" (grants.len()) ")" } }
            p.muted {
                @if chrome.operator { "Every active grant." } @else { "Your grants, and the grants on routes you approve." }
                " Revoking one stops its next request on every replica; it is held for approval again."
            }
            @if grants.is_empty() {
                p.empty { "No active grants." }
            } @else {
                table.tickets {
                    thead { tr { th { "Grant" } th { "Requester" } th { "Uses" } th { "Time left" } th { "Revoke" } } }
                    tbody {
                        @for g in grants {
                            tr {
                                td.req {
                                    code { (g.id.as_str()) }
                                    div.muted { "route " (g.route) }
                                    @if let Some(t) = &g.ticket {
                                        div { a href={ "/ui/tickets/" (t.as_str()) } { "ticket" } }
                                    }
                                }
                                td data-label="Requester" { (requester(&g.requester)) }
                                td data-label="Uses" {
                                    (g.uses) @if let Some(m) = g.max_uses { " of " (m) }
                                }
                                td data-label="Time left" { (time_left(now, g.expires_at)) }
                                td data-label="Revoke" {
                                    @if let Some(csrf) = chrome.csrf {
                                        form method="post" action={ "/ui/grants/" (g.id.as_str()) "/revoke" } {
                                            input type="hidden" name="csrf" value=(csrf);
                                            input type="text" name="reason" maxlength="2000" placeholder="reason" aria-label="Reason";
                                            button.deny type="submit" { "Revoke" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        },
    )
}
