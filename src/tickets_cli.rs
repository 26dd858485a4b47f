//! `jitgate tickets list|show|approve|deny`: a command-line client of the admin plane's
//! decision API (SPEC sections 8 and 9).
//!
//! Exit codes: 0 when everything asked for was done, 1 when the admin API refused anything
//! (a 4xx/5xx answer, or a ticket of a batch that was not decided) or the local setup is
//! wrong (an invalid config or `JITGATE_ADMIN_URL`), 2 for usage errors, 3 when the admin
//! API could not be reached or did not answer properly. Every failure is one line on stderr
//! starting with `jitgate: `.

use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use clap::{Args, Subcommand};
use jitgate_gateway::contract::{
    AlsoRequest, ApproveRequest, DecideItem, DecideRequest, Decision, DenyRequest,
};
use jitgate_rules::ticket::Vote;
use jitgate_rules::{Mode, Status, Ticket, TicketId, Timestamp};

use crate::admin_client::{
    clean, clip, print_json, problem_body_line, refused, runtime, AdminApi, AdminArgs, ClientError,
};

/// Widest REQUEST column in `list`.
const REQUEST_COLUMN: usize = 60;

/// `jitgate tickets`: list, show and decide approval tickets through the admin API.
#[derive(Args)]
#[command(after_help = "\
The admin URL is --admin, else $JITGATE_ADMIN_URL, else http://<admin_listen> of --config \
(or ./proxy.toml when it exists), else http://127.0.0.1:9090. The token (an admin API token \
or JWT) is --token, else $JITGATE_ADMIN_TOKEN; prefer the variable, arguments are visible to \
other local users.

Exit codes: 0 done; 1 refused by the admin API (or invalid local setup); 2 usage error; \
3 the admin API could not be reached.")]
pub struct TicketsArgs {
    #[command(flatten)]
    admin: AdminArgs,
    #[command(subcommand)]
    command: TicketsCommand,
}

#[derive(Subcommand)]
enum TicketsCommand {
    /// List tickets: pending ones (soonest to expire first) by default, or those of one
    /// status (newest first).
    List {
        /// PENDING, APPROVED, DENIED, EXPIRED, CANCELLED, EXECUTED, or all.
        #[arg(long, default_value = "PENDING", value_parser = parse_status_filter)]
        status: StatusFilter,
        /// At most this many tickets (the server's default is 100; it sets the maximum).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        limit: Option<u32>,
        /// Print the admin API's JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show one ticket: the request, requester, reason, body preview, votes and time left.
    Show {
        /// The ticket id (jit_...).
        #[arg(value_parser = parse_ticket_id)]
        id: String,
        /// Print the admin API's JSON instead.
        #[arg(long)]
        json: bool,
    },
    /// Approve one or more tickets as the token's user.
    Approve {
        /// Ticket ids (jit_...); several are decided in one batch call.
        #[arg(required = true, value_parser = parse_ticket_id)]
        ids: Vec<String>,
        /// A comment recorded with the approval.
        #[arg(long, short = 'm')]
        comment: Option<String>,
        /// Also let the same requester send this many more requests like it (same route and
        /// method) within `--within` (one ticket only; the route's `max_also_uses` bounds it).
        #[arg(long, requires = "within", value_name = "N")]
        also: Option<u32>,
        /// How long the `--also` uses last after the approval, e.g. `1h`.
        #[arg(long, requires = "also", value_name = "DURATION")]
        within: Option<String>,
    },
    /// Deny one or more tickets as the token's user.
    Deny {
        /// Ticket ids (jit_...); several are decided in one batch call.
        #[arg(required = true, value_parser = parse_ticket_id)]
        ids: Vec<String>,
        /// The reason; it reaches the requester's error body.
        #[arg(long, short = 'r')]
        reason: Option<String>,
    },
    /// Acknowledge a break-glass ticket in REVIEW as the token's user.
    Acknowledge {
        /// The ticket id (jit_...).
        #[arg(value_parser = parse_ticket_id)]
        id: String,
        /// A comment recorded with the acknowledgement.
        #[arg(long, short = 'm')]
        comment: Option<String>,
    },
}

/// A `--status` value: one status, or every status.
#[derive(Clone, Copy)]
struct StatusFilter(Option<Status>);

fn parse_status_filter(s: &str) -> Result<StatusFilter, String> {
    if s.eq_ignore_ascii_case("all") {
        return Ok(StatusFilter(None));
    }
    Status::parse(&s.to_ascii_uppercase())
        .map(|st| StatusFilter(Some(st)))
        .ok_or_else(|| {
            "expected PENDING, APPROVED, DENIED, EXPIRED, CANCELLED, EXECUTED or all".to_string()
        })
}

fn parse_ticket_id(s: &str) -> Result<String, String> {
    TicketId::parse(s.trim())
        .map(|id| id.to_string())
        .map_err(|_| "not a ticket id (jit_ followed by 26 base32 characters)".to_string())
}

/// Runs `jitgate tickets ...`.
pub fn run(args: TicketsArgs) -> ExitCode {
    let admin = match args.admin.client() {
        Ok(a) => a,
        Err(code) => return code,
    };
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    rt.block_on(async {
        match args.command {
            TicketsCommand::List {
                status,
                limit,
                json,
            } => list(&admin, status, limit, json).await,
            TicketsCommand::Show { id, json } => show(&admin, &id, json).await,
            TicketsCommand::Approve {
                ids,
                comment,
                also,
                within,
            } => {
                let also = also
                    .zip(within)
                    .map(|(uses, within)| AlsoRequest { uses, within });
                if also.is_some() && ids.len() != 1 {
                    eprintln!("jitgate tickets approve: --also applies to one ticket at a time");
                    return ExitCode::from(2);
                }
                decide(&admin, ids, true, comment, also).await
            }
            TicketsCommand::Deny { ids, reason } => decide(&admin, ids, false, reason, None).await,
            TicketsCommand::Acknowledge { id, comment } => {
                let body = ApproveRequest {
                    comment: comment.filter(|c| !c.trim().is_empty()),
                    also: None,
                };
                match admin.acknowledge(&id, &body).await {
                    Ok(t) => {
                        println!("{id}: {}", t.status);
                        ExitCode::SUCCESS
                    }
                    Err(ClientError::Refused(_, reason)) => {
                        refused(&format!("{id}: refused: {reason}"))
                    }
                    Err(e) => e.exit(),
                }
            }
        }
    })
}

// === list ===

async fn list(
    admin: &AdminApi,
    status: StatusFilter,
    limit: Option<u32>,
    as_json: bool,
) -> ExitCode {
    let list = match admin.list_tickets(status.0, limit).await {
        Ok(l) => l,
        Err(e) => return e.exit(),
    };
    if as_json {
        print_json(&list);
        return ExitCode::SUCCESS;
    }
    let tickets = list.tickets;
    if tickets.is_empty() {
        match status.0 {
            Some(s) => println!("no {s} tickets"),
            None => println!("no tickets"),
        }
        return ExitCode::SUCCESS;
    }
    let now = now_ms();
    let mut rows = vec![[
        "ID",
        "STATUS",
        "ROUTE",
        "REQUESTER",
        "REQUEST",
        "AGE",
        "EXPIRES",
        "APPROVALS",
    ]
    .map(String::from)];
    for t in &tickets {
        let request = clip(&request_summary(t), REQUEST_COLUMN);
        let age = ago(now, t.created_at);
        let expires = if t.status == Status::Pending {
            until(now, t.expires_at)
        } else {
            "-".to_string()
        };
        rows.push([
            clean(t.id.as_str()),
            t.status.to_string(),
            clean(&t.route),
            requester_user(t),
            request,
            age,
            expires,
            votes(t),
        ]);
    }
    print!("{}", table(&rows));
    ExitCode::SUCCESS
}

/// Left-aligned columns two spaces apart; the last column is not padded.
fn table<const N: usize>(rows: &[[String; N]]) -> String {
    let mut widths = [0usize; N];
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            line.push_str(cell);
            if i + 1 < N {
                let pad = widths[i].saturating_sub(cell.chars().count()) + 2;
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

// === show ===

async fn show(admin: &AdminApi, id: &str, as_json: bool) -> ExitCode {
    let t = match admin.ticket(id).await {
        Ok(t) => t,
        Err(ClientError::Refused(_, reason)) => return refused(&format!("{id}: {reason}")),
        Err(e) => return e.exit(),
    };
    if as_json {
        print_json(&t);
    } else {
        print!("{}", detail(&t, now_ms()));
    }
    ExitCode::SUCCESS
}

/// The human-readable view of one ticket.
fn detail(t: &Ticket, now: u64) -> String {
    let mut out = String::new();
    let mut field = |label: &str, value: String| {
        out.push_str(&format!("{label:<11}{value}\n"));
    };
    field("ticket", clean(t.id.as_str()));
    field("status", t.status.to_string());
    let mode = match t.mode {
        Mode::Action => "action",
        Mode::Access => "access",
    };
    field("route", format!("{} ({mode})", clean(&t.route)));
    let req = &t.request;
    let query = if req.query.is_empty() {
        String::new()
    } else {
        format!("?{}", clean(&req.query))
    };
    field(
        "request",
        format!("{} {}{query}", clean(&req.method), clean(&req.path)),
    );
    field(
        "host",
        if req.host.is_empty() {
            "(none)".to_string()
        } else {
            clean(&req.host)
        },
    );
    let groups = strings(&t.requester.groups);
    field(
        "requester",
        if groups.is_empty() {
            requester_user(t)
        } else {
            format!("{} (groups: {})", requester_user(t), groups.join(", "))
        },
    );
    let reason = t.reason.as_deref().map(clean).unwrap_or_default();
    field(
        "reason",
        if reason.is_empty() {
            "(none given)".to_string()
        } else {
            reason
        },
    );
    field(
        "created",
        format!("{} ({})", t.created_at, ago(now, t.created_at)),
    );
    if t.status == Status::Pending {
        field(
            "expires",
            format!("{} ({})", t.expires_at, until(now, t.expires_at)),
        );
    }
    if let Some(d) = t.decided_at {
        field("decided", format!("{d} ({})", ago(now, d)));
    }
    if t.status == Status::Approved {
        if let Some(r) = t.redeem_by {
            field("redeem by", format!("{r} ({})", until(now, r)));
        }
    }
    let approvers = strings(&t.approvers);
    field(
        "approvals",
        if approvers.is_empty() {
            votes(t)
        } else {
            format!("{} (approvers: {})", votes(t), approvers.join(", "))
        },
    );
    for v in &t.approvals {
        out.push_str(&format!("  + {}\n", vote_line(v)));
    }
    for v in &t.denials {
        out.push_str(&format!("  - denied by {}\n", vote_line(v)));
    }
    if req.body_preview.is_empty() {
        out.push_str(&format!("{:<11}(empty)\n", "body"));
    } else {
        out.push_str(&format!(
            "{:<11}sha256 {}\n",
            "body",
            clean(&req.body_sha256)
        ));
        for line in req.body_preview.lines() {
            out.push_str(&format!("  {}\n", clean(line)));
        }
    }
    if !req.headers.is_empty() {
        out.push_str("headers\n");
        for (name, value) in &req.headers {
            out.push_str(&format!("  {}: {}\n", clean(name), clean(value)));
        }
    }
    out
}

/// `alice (oncall), 2026-11-22T10:31:00Z: "ship it"`
fn vote_line(v: &Vote) -> String {
    let groups = strings(&v.groups);
    let mut line = clean(&v.by);
    if !groups.is_empty() {
        line.push_str(&format!(" ({})", groups.join(", ")));
    }
    line.push_str(&format!(", {}", v.at));
    let comment = v.comment.as_deref().map(clean).unwrap_or_default();
    if !comment.is_empty() {
        line.push_str(&format!(": {comment:?}"));
    }
    line
}

// === approve / deny ===

/// What happened to one ticket of a decision.
enum Outcome {
    /// Recorded; the ticket as it is now.
    Decided(Box<Ticket>),
    /// Refused, with the one-line reason.
    Refused(String),
}

async fn decide(
    admin: &AdminApi,
    mut ids: Vec<String>,
    approve: bool,
    text: Option<String>,
    also: Option<AlsoRequest>,
) -> ExitCode {
    // The same id twice would only be refused the second time.
    let mut seen = std::collections::HashSet::new();
    ids.retain(|id| seen.insert(id.clone()));
    let text = text.filter(|t| !t.trim().is_empty());
    let outcomes: Vec<(String, Outcome)> = if let [id] = ids.as_slice() {
        let answer = if approve {
            let body = ApproveRequest {
                comment: text,
                also,
            };
            admin.approve(id, &body).await
        } else {
            let body = DenyRequest { reason: text };
            admin.deny(id, &body).await
        };
        let outcome = match answer {
            Ok(t) => Outcome::Decided(Box::new(t)),
            Err(ClientError::Refused(_, reason)) => Outcome::Refused(reason),
            Err(e) => return e.exit(),
        };
        vec![(id.clone(), outcome)]
    } else {
        let (decision, comment, reason) = if approve {
            (Decision::Approve, text, None)
        } else {
            (Decision::Deny, None, text)
        };
        let body = DecideRequest {
            ids: ids.clone(),
            decision,
            comment,
            reason,
        };
        let results = match admin.decide(&body).await {
            Ok(r) => r.results,
            Err(e) => return e.exit(),
        };
        let mut outcomes: Vec<(String, Outcome)> = results
            .into_iter()
            .map(|r| match r {
                DecideItem::Decided { id, ticket, .. } => (clean(&id), Outcome::Decided(ticket)),
                DecideItem::Refused { id, problem, .. } => {
                    (clean(&id), Outcome::Refused(problem_body_line(&problem)))
                }
            })
            .collect();
        // Every id asked for must be accounted for.
        for id in &ids {
            if !outcomes.iter().any(|(got, _)| got == id) {
                outcomes.push((
                    id.clone(),
                    Outcome::Refused("not in the admin API's answer".to_string()),
                ));
            }
        }
        outcomes
    };
    let mut refusals = Vec::new();
    for (id, outcome) in &outcomes {
        match outcome {
            Outcome::Decided(t) => {
                if t.status == Status::Denied {
                    println!("{id}: {}", t.status);
                } else {
                    println!("{id}: {} ({})", t.status, votes(t));
                }
            }
            Outcome::Refused(reason) => {
                println!("{id}: refused: {reason}");
                refusals.push(format!("{id}: refused: {reason}"));
            }
        }
    }
    match refusals.as_slice() {
        [] => ExitCode::SUCCESS,
        [one] => refused(one),
        many => refused(&format!(
            "{} of {} tickets refused",
            many.len(),
            outcomes.len()
        )),
    }
}

// === ticket fields ===

fn strings(v: &[String]) -> Vec<String> {
    v.iter().map(|s| clean(s)).collect()
}

fn requester_user(t: &Ticket) -> String {
    let user = t.requester.user.as_deref().map(clean).unwrap_or_default();
    if user.is_empty() {
        "anonymous".to_string()
    } else {
        user
    }
}

/// `POST api.example.com /v1/deployments?x=1`
fn request_summary(t: &Ticket) -> String {
    let req = &t.request;
    let mut s = format!("{} ", clean(&req.method));
    if !req.host.is_empty() {
        s.push_str(&clean(&req.host));
        s.push(' ');
    }
    s.push_str(&clean(&req.path));
    if !req.query.is_empty() {
        s.push('?');
        s.push_str(&clean(&req.query));
    }
    s
}

/// `approvals/quorum`, e.g. `1/2`.
fn votes(t: &Ticket) -> String {
    format!("{}/{}", t.approvals.len(), t.quorum)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// `3m ago`
fn ago(now: u64, t: Timestamp) -> String {
    let ms = now.saturating_sub(t.as_millis());
    if ms < 1000 {
        "just now".to_string()
    } else {
        format!("{} ago", span(ms))
    }
}

/// `in 14m 3s`, or `expired 2m ago`.
fn until(now: u64, t: Timestamp) -> String {
    let at = t.as_millis();
    if at > now {
        format!("in {}", span(at - now))
    } else {
        format!("expired {}", ago(now, t))
    }
}

/// A compact duration with at most two units: `45s`, `14m 3s`, `2h 5m`, `3d 4h`.
fn span(ms: u64) -> String {
    let s = ms / 1000;
    let (d, h, m, sec) = (s / 86_400, (s / 3600) % 24, (s / 60) % 60, s % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{sec}s"),
        (0, 0, _) if sec == 0 => format!("{m}m"),
        (0, 0, _) => format!("{m}m {sec}s"),
        (0, _, 0) => format!("{h}h"),
        (0, _, _) => format!("{h}h {m}m"),
        (_, 0, _) => format!("{d}d"),
        _ => format!("{d}d {h}h"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_ids() {
        assert!(parse_status_filter("all").is_ok_and(|s| s.0.is_none()));
        assert!(parse_status_filter("denied").is_ok_and(|s| s.0 == Some(Status::Denied)));
        assert!(parse_status_filter("nope").is_err());
        assert!(parse_ticket_id("jit_01JD3ZK8Q6W6M7ZC2Y6F8X4T9B").is_ok());
        assert!(parse_ticket_id("jit_../../admin/reload").is_err());
    }

    #[test]
    fn spans() {
        assert_eq!(span(45_000), "45s");
        assert_eq!(span(14 * 60_000 + 3_000), "14m 3s");
        assert_eq!(span(2 * 3_600_000 + 5 * 60_000), "2h 5m");
        assert_eq!(span(3 * 86_400_000 + 4 * 3_600_000), "3d 4h");
    }

    #[test]
    fn table_aligns() {
        let rows = [
            ["A".to_string(), "BB".to_string(), "C".to_string()],
            ["aaa".to_string(), "b".to_string(), "c".to_string()],
        ];
        assert_eq!(table(&rows), "A    BB  C\naaa  b   c\n");
    }
}
