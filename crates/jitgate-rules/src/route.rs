//! The compiled model of one `[[routes]]` entry and the request view it is matched against.

use std::net::IpAddr;
use std::time::Duration;

use http::{HeaderMap, HeaderName, Method, StatusCode};
use ipnet::IpNet;

use crate::diag::Location;

/// What a route does with a request it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Forward to the upstream.
    Allow,
    /// Answer the route's error; never forward.
    Deny,
    /// Hold for approval; forward only once approved.
    Approve,
}

impl Action {
    /// `approve` and `deny` restrict; a request matches them if *any* of its
    /// interpretations (method spellings, path readings, header values) matches,
    /// whereas an `allow` route needs *every* interpretation to match.
    pub fn is_restricting(self) -> bool {
        !matches!(self, Action::Allow)
    }

    /// The spelling used in proxy.toml.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::Deny => "deny",
            Action::Approve => "approve",
        }
    }
}

/// `methods = [...]`; absent means any method.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MethodSet {
    /// No `methods` key.
    Any,
    /// The listed methods (uppercase tokens).
    Only(Vec<Method>),
}

/// `host = "api.example.com"` or `host = "*.example.com"` (any subdomain, at any depth,
/// never the apex). Stored lowercase without a trailing dot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    /// Exactly this host (may include a non-default port, e.g. `api.example.com:8443`).
    Exact(String),
    /// `*.example.com` stored as `.example.com`.
    Suffix(String),
}

/// One segment of a path pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// Must equal the request segment (case-insensitively on `case_insensitive` routes).
    Literal(String),
    /// `*`: exactly one segment, any value.
    Any,
    /// `{name}`: exactly one segment, captured under `name` for `explain`.
    Named(String),
}

/// `path = "/v1/deployments/prod/**"`: literal segments, `*` one segment, `{name}` a named
/// segment, and a final `**` for the rest (zero or more segments). Matching ignores a
/// trailing slash and works on segment boundaries only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathPattern {
    /// The pattern as written.
    pub source: String,
    /// The segments before any `**`.
    pub segments: Vec<Segment>,
    /// Whether the pattern ends in `**`.
    pub rest: bool,
}

/// One `headers` condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderRule {
    /// Lowercase header name.
    pub name: HeaderName,
    /// `None`: the header must be present (`"*"` in the file); `Some(v)`: a value equal to `v`.
    pub value: Option<String>,
}

/// `[routes.error]`: a custom error answer. `body` may use `{ticket}`, `{reason}`, `{rule}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorTemplate {
    /// The status to answer with.
    pub status: StatusCode,
    /// The `Content-Type` of the body.
    pub content_type: String,
    /// The body template.
    pub body: String,
}

/// Who may approve: `user:alice` or `group:oncall`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Principal {
    /// `user:NAME`
    User(String),
    /// `group:NAME`
    Group(String),
}

impl std::fmt::Display for Principal {
    /// The spelling used in proxy.toml and on tickets: `user:NAME`, `group:NAME`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Principal::User(u) => write!(f, "user:{u}"),
            Principal::Group(g) => write!(f, "group:{g}"),
        }
    }
}

/// `mode` of an approve route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApprovalMode {
    /// Approve this one request.
    Action,
    /// Grant a time-bound window to the requester on this route.
    Access,
}

/// `[routes.approval]` and the per-route policy keys of SPEC section 8. Parsed and
/// validated now; enforced by the hold engine.
#[derive(Debug, Clone, PartialEq)]
pub struct ApprovalPolicy {
    /// Listed approvers.
    pub approvers: Vec<Principal>,
    /// Distinct approvals needed.
    pub quorum: u32,
    /// Whether the requester may approve their own ticket.
    pub self_approval: bool,
    /// `action` or `access`.
    pub mode: ApprovalMode,
    /// Whether anonymous requesters are refused (always true for `access`).
    pub require_identity: bool,
    /// Per-route override of `[approvals].hold_timeout`.
    pub hold_timeout: Option<Duration>,
    /// Per-route override of `[approvals].ticket_ttl`.
    pub ticket_ttl: Option<Duration>,
    /// Per-route override of `[approvals].token_ttl`.
    pub token_ttl: Option<Duration>,
    /// How many times one approval token may be redeemed (default 1).
    pub token_uses: u32,
    /// `access` mode: selectable grant durations.
    pub durations: Vec<Duration>,
    /// `access` mode: the duration when none is asked for.
    pub default_duration: Option<Duration>,
    /// `access` mode: the longest grant.
    pub max_duration: Option<Duration>,
    /// `access` mode: how many requests one grant allows.
    pub max_uses: Option<u32>,
    /// Pending tickets one requester may have on this route.
    pub max_pending_per_requester: Option<u32>,
    /// `max_also_uses`: how many more requests one approval's `also` may let through
    /// (`action` mode; 0, the default, allows no `also`).
    pub max_also_uses: u32,
    /// `max_also_within`: the longest `also.within` (default 1h).
    pub max_also_within: Duration,
    /// Groups that may send `Jit-Break-Glass: <reason>`.
    pub break_glass_groups: Vec<String>,
    /// Escalate to `escalate_to` after this long undecided.
    pub escalate_after: Option<Duration>,
    /// Who joins the approvers on escalation.
    pub escalate_to: Vec<Principal>,
    /// `remind_before`: approvers are reminded this long before an undecided ticket expires.
    pub remind_before: Option<Duration>,
    /// Raw `auto_approve` conditions, validated but interpreted by the hold engine.
    pub auto_approve: Vec<AutoApprove>,
    /// `approve_above_rate = "10/m"`: requests within the rate pass.
    pub approve_above_rate: Option<Rate>,
    /// `volatile_headers`: headers (lowercase) left out of the approval binding on this
    /// route, in addition to [`crate::request::DEFAULT_VOLATILE_HEADERS`].
    pub volatile_headers: Vec<HeaderName>,
    /// `notify`: the `[[notify]]` channels told about this route's tickets (`None`: every
    /// channel).
    pub notify: Option<Vec<String>>,
    /// `chat_approval`: whether chat messages carry Approve / Deny buttons (default true);
    /// false leaves a link to the ticket page only.
    pub chat_approval: bool,
}

impl ApprovalPolicy {
    /// What approving a ticket on this route grants (`access` mode only): the default
    /// duration (the smallest preset, else `max_duration`), never above `max_duration`, and
    /// `max_uses`. Recorded on the ticket when it is opened.
    pub fn grant_terms(&self) -> Option<crate::ticket::GrantTerms> {
        if self.mode != ApprovalMode::Access {
            return None;
        }
        let duration = self
            .default_duration
            .or_else(|| self.durations.iter().min().copied())
            .or(self.max_duration)
            .unwrap_or(Duration::from_secs(3600));
        let duration = self.max_duration.map_or(duration, |m| duration.min(m));
        Some(crate::ticket::GrantTerms {
            duration_ms: u64::try_from(duration.as_millis()).unwrap_or(u64::MAX),
            max_uses: self.max_uses,
        })
    }

    /// The most an approval's `also` may grant on this route, recorded on its tickets
    /// (`None` when the route allows no `also`).
    pub fn also_limit(&self) -> Option<crate::ticket::AlsoTerms> {
        (self.mode == ApprovalMode::Action && self.max_also_uses > 0).then(|| {
            crate::ticket::AlsoTerms {
                uses: self.max_also_uses,
                within_ms: u64::try_from(self.max_also_within.as_millis()).unwrap_or(u64::MAX),
            }
        })
    }

    /// [`ApprovalPolicy::grant_terms`] for a request that asks for `requested`
    /// (`Jit-Duration`). The answer is a grant of exactly that duration or a refusal saying
    /// why, never a silently shortened grant: with `durations` presets it must be one of
    /// them; it is never above `max_duration` (which access routes must set); zero is
    /// refused. `action` routes grant nothing, whatever
    /// is asked.
    pub fn grant_terms_for(
        &self,
        requested: Option<Duration>,
    ) -> Result<Option<crate::ticket::GrantTerms>, String> {
        let (Some(requested), ApprovalMode::Access) = (requested, self.mode) else {
            return Ok(self.grant_terms());
        };
        let show = crate::units::format_duration;
        if requested.as_millis() == 0 {
            return Err("Jit-Duration must be at least 1ms".into());
        }
        if requested.subsec_nanos() % 1_000_000 != 0 {
            return Err(format!(
                "Jit-Duration {} is not a whole number of milliseconds",
                show(requested)
            ));
        }
        let longest = self
            .max_duration
            .or(self.default_duration)
            .unwrap_or(Duration::from_secs(3600));
        if requested > longest {
            return Err(format!(
                "Jit-Duration {} is longer than this route grants ({} at most)",
                show(requested),
                show(longest)
            ));
        }
        if !self.durations.is_empty() && !self.durations.contains(&requested) {
            let presets: Vec<String> = self.durations.iter().map(|d| show(*d)).collect();
            return Err(format!(
                "Jit-Duration {} is not one of this route's durations: {}",
                show(requested),
                presets.join(", ")
            ));
        }
        Ok(Some(crate::ticket::GrantTerms {
            duration_ms: u64::try_from(requested.as_millis()).unwrap_or(u64::MAX),
            max_uses: self.max_uses,
        }))
    }
}

/// One `[[routes.approval.auto_approve]]` entry: a named policy whose every set condition
/// must hold (see [`crate::policy`]).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AutoApprove {
    /// `name`: unique on the route; recorded on the ticket and in the audit.
    pub name: String,
    /// Canonical path prefix (segment boundary).
    pub path_prefix: Option<String>,
    /// Methods.
    pub methods: Vec<Method>,
    /// Requester users (any).
    pub users: Vec<String>,
    /// Requester groups (any).
    pub groups: Vec<String>,
    /// Source CIDRs.
    pub source: Vec<IpNet>,
    /// Header conditions, all of which must hold for every value sent.
    pub headers: Vec<HeaderRule>,
    /// Access requests shorter than this.
    pub duration_below: Option<Duration>,
    /// `window = "Mon-Fri 09:00-17:00"`, in `time_zone`.
    pub window: Option<crate::policy::Window>,
    /// IANA time zone of `window` (default UTC).
    pub time_zone: Option<crate::policy::Zone>,
    /// `risk_below`: the request's risk score (`[approvals.risk]`) is below this.
    pub risk_below: Option<u32>,
    /// `access` routes: the longest grant this policy approves (longer ones go to people).
    pub max_duration: Option<Duration>,
    /// `access` routes: the most uses a grant it approves allows (the smaller of this and the
    /// route's `max_uses`).
    pub max_uses: Option<u32>,
    /// Which conditions are the same as the previous policy's on the route (bits
    /// `crate::policy::SHARES_*`, set at load by [`crate::policy::link_shared`]).
    pub shares: u16,
}

/// `count` requests per `per`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Requests allowed in one period.
    pub count: u32,
    /// The period.
    pub per: Duration,
}

/// One compiled `[[routes]]` entry.
#[derive(Debug, Clone)]
pub struct Route {
    /// Position in file order (0-based); first match wins.
    pub index: usize,
    /// `name` (unique in the table).
    pub name: String,
    /// `action`.
    pub action: Action,
    /// `upstream` name; required for allow and approve, optional for deny.
    pub upstream: Option<String>,
    /// `methods`.
    pub methods: MethodSet,
    /// `host`.
    pub host: Option<HostPattern>,
    /// `path` (default `/**`).
    pub path: PathPattern,
    /// `headers`: all must hold.
    pub headers: Vec<HeaderRule>,
    /// `source`: the client address must be in one of these; empty means any.
    pub source: Vec<IpNet>,
    /// `case_insensitive`: compare literal path segments ignoring ASCII case.
    pub case_insensitive: bool,
    /// `allow_encoded_slash`: `%2F` is kept opaque instead of rejected.
    pub allow_encoded_slash: bool,
    /// `allow_path_params`: `;` parameters are ignored for matching and kept when forwarding.
    pub allow_path_params: bool,
    /// `enforce = false`: shadow mode, log "would hold/deny" and forward.
    pub enforce: bool,
    /// `[routes.error]`.
    pub error: Option<ErrorTemplate>,
    /// `[routes.approval]`; `Some` exactly when `action = "approve"`.
    pub approval: Option<ApprovalPolicy>,
    /// SHA-256 over the route's normalised definition, so approvals lapse when it is edited.
    pub definition_hash: [u8; 32],
    /// Where the `[[routes]]` table starts in the file.
    pub location: Location,
}

/// What the matcher sees of a request: built once at the edge from the canonical target.
///
/// Each field that can be read more than one way lists every reading; a restricting
/// route matches when *any* reading matches, an `allow` route only when *all* do.
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    /// `[0]` is the method on the wire; the rest are method-override spellings.
    pub methods: &'a [Method],
    /// Canonical host (lowercase, no trailing dot, no default port); empty if none was sent.
    pub host: &'a str,
    /// `[0]` is the canonical path; the rest are alternative readings (see [`crate::canon`]).
    pub paths: &'a [&'a str],
    /// Request headers, for `headers` conditions.
    pub headers: &'a HeaderMap,
    /// The client address (after `trusted_proxies`).
    pub source: IpAddr,
}
