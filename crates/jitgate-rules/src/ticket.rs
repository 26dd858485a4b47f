//! Approval tickets, access grants and the audit chain: the data model and its state machine.
//!
//! Everything here is pure: each transition is a function from the current ticket (or grant)
//! and the current time to the next one or a [`TransitionError`]. The store applies these
//! functions atomically to the version it read, so the decision logic exists exactly once.
//!
//! JSON is camelCase and matches SPEC section 8; timestamps are RFC 3339 UTC strings with
//! millisecond precision kept internally.

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::route::ApprovalMode;

#[cfg(test)]
mod tests;

// === Timestamp ===

/// Milliseconds since the Unix epoch, UTC. Serialised as RFC 3339 (`2026-11-22T10:30:00Z`,
/// with `.mmm` only when the milliseconds are not zero).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// From milliseconds since the epoch.
    pub const fn from_millis(ms: u64) -> Self {
        Timestamp(ms)
    }

    /// Milliseconds since the epoch.
    pub const fn as_millis(self) -> u64 {
        self.0
    }

    /// This instant plus `d` (saturating).
    pub fn plus(self, d: std::time::Duration) -> Self {
        let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Timestamp(self.0.saturating_add(ms))
    }

    /// RFC 3339 in UTC.
    pub fn to_rfc3339(self) -> String {
        let secs = self.0 / 1000;
        let ms = self.0 % 1000;
        let days = (secs / 86_400) as i64;
        let rem = secs % 86_400;
        let (y, m, d) = civil_from_days(days);
        let (hh, mm, ss) = (rem / 3600, (rem % 3600) / 60, rem % 60);
        if ms == 0 {
            format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}Z")
        } else {
            format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}.{ms:03}Z")
        }
    }

    /// Parses RFC 3339 (`Z` or a numeric offset; fractions beyond milliseconds are
    /// truncated). Instants before 1970 are refused.
    pub fn parse_rfc3339(s: &str) -> Result<Self, TimestampError> {
        let b = s.as_bytes();
        let err = || TimestampError(s.to_string());
        if b.len() < 20 {
            return Err(err());
        }
        let num = |r: std::ops::Range<usize>| -> Result<i64, TimestampError> {
            let part = &b[r];
            if part.iter().all(u8::is_ascii_digit) {
                Ok(part
                    .iter()
                    .fold(0i64, |acc, c| acc * 10 + i64::from(c - b'0')))
            } else {
                Err(err())
            }
        };
        if b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't') || b[13] != b':' {
            return Err(err());
        }
        if b[16] != b':' {
            return Err(err());
        }
        let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
        let (hh, mi, ss) = (num(11..13)?, num(14..16)?, num(17..19)?);
        if !(1..=12).contains(&mo) || d < 1 || d > days_in_month(y, mo as u32) as i64 {
            return Err(err());
        }
        if hh > 23 || mi > 59 || ss > 59 {
            return Err(err());
        }
        let mut i = 19;
        let mut ms = 0i64;
        if b.get(i) == Some(&b'.') {
            i += 1;
            let start = i;
            while i < b.len() && b[i].is_ascii_digit() {
                if i - start < 3 {
                    ms = ms * 10 + i64::from(b[i] - b'0');
                }
                i += 1;
            }
            if i == start {
                return Err(err());
            }
            for _ in (i - start)..3 {
                ms *= 10;
            }
        }
        let offset_secs = match &b[i..] {
            [b'Z' | b'z'] => 0,
            [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
                let oh = num(i + 1..i + 3)?;
                let om = num(i + 4..i + 6)?;
                if oh > 23 || om > 59 {
                    return Err(err());
                }
                let o = oh * 3600 + om * 60;
                if *sign == b'+' {
                    o
                } else {
                    -o
                }
            }
            _ => return Err(err()),
        };
        let secs = days_from_civil(y, mo as u32, d as u32) * 86_400 + hh * 3600 + mi * 60 + ss
            - offset_secs;
        let total = secs
            .checked_mul(1000)
            .and_then(|v| v.checked_add(ms))
            .ok_or_else(err)?;
        u64::try_from(total).map(Timestamp).map_err(|_| err())
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

/// OpenAPI: an RFC 3339 `date-time` string, as it is serialized.
impl utoipa::PartialSchema for Timestamp {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::Type::String)
            .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
                utoipa::openapi::KnownFormat::DateTime,
            )))
            .examples(["2026-11-22T10:30:00Z"])
            .into()
    }
}

impl utoipa::ToSchema for Timestamp {}

impl Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_rfc3339())
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Timestamp::parse_rfc3339(&s).map_err(serde::de::Error::custom)
    }
}

/// A string that is not an RFC 3339 timestamp jitgate can represent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an RFC 3339 UTC timestamp: {0:?}")]
pub struct TimestampError(pub String);

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

// Howard Hinnant's civil-calendar algorithms (proleptic Gregorian).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m as u32, d as u32)
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let (m, d) = (i64::from(m), i64::from(d));
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

// === ids ===

const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// 48-bit millisecond time and 80 random bits, as 26 uppercase Crockford base32 characters.
fn encode_ulid(ms: u64, random: u128) -> String {
    let v: u128 = (u128::from(ms & 0xFFFF_FFFF_FFFF) << 80) | (random & ((1u128 << 80) - 1));
    (0..26)
        .map(|i| CROCKFORD[((v >> (125 - 5 * i)) & 31) as usize] as char)
        .collect()
}

/// Exactly the canonical spelling [`encode_ulid`] produces: 26 characters of the uppercase
/// alphabet, the first at most `7` (128 bits). Ids come from clients, so nothing is folded.
fn is_ulid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 26 && b[0] <= b'7' && b.iter().all(|c| CROCKFORD.contains(c))
}

/// Why a client-supplied id was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a valid {kind} id")]
pub struct IdError {
    /// `ticket` or `grant`.
    pub kind: &'static str,
}

macro_rules! prefixed_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal, $kind:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        /// OpenAPI: a string starting with the kind's prefix.
        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::Type::String)
                    .pattern(Some(concat!("^", $prefix)))
                    .into()
            }
        }

        impl utoipa::ToSchema for $name {}

        impl $name {
            /// The prefix every id of this kind starts with.
            pub const PREFIX: &'static str = $prefix;

            /// A new id from a millisecond time and 80 random bits (higher bits are ignored).
            pub fn new(ms: u64, random: u128) -> Self {
                $name(format!("{}{}", $prefix, encode_ulid(ms, random)))
            }

            /// Validates a client-supplied id.
            pub fn parse(s: &str) -> Result<Self, IdError> {
                match s.strip_prefix($prefix) {
                    Some(rest) if is_ulid(rest) => Ok($name(s.to_string())),
                    _ => Err(IdError { kind: $kind }),
                }
            }

            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                $name::parse(&s)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                $name::parse(s)
            }
        }
    };
}

prefixed_id!(
    /// `jit_` + ULID.
    TicketId,
    "jit_",
    "ticket"
);
prefixed_id!(
    /// `grt_` + ULID.
    GrantId,
    "grt_",
    "grant"
);

impl GrantId {
    /// The id of the grant created by approving ticket `t`: the same ULID under `grt_`.
    pub fn for_ticket(t: &TicketId) -> GrantId {
        let ulid = t
            .as_str()
            .strip_prefix(TicketId::PREFIX)
            .unwrap_or(t.as_str());
        GrantId(format!("{}{ulid}", GrantId::PREFIX))
    }
}

// === Ticket ===

/// Where a ticket is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Status {
    /// Waiting for approvers.
    Pending,
    /// Quorum reached; the request may be released (redeemed).
    Approved,
    /// An approver denied it.
    Denied,
    /// Nobody decided within `ticket_ttl`.
    Expired,
    /// The client went away (or withdrew) before a decision.
    Cancelled,
    /// The approved request was sent upstream (every allowed use redeemed).
    Executed,
    /// A break-glass request passed without approval and was sent upstream; an approver must
    /// acknowledge it afterwards (which makes it `EXECUTED`).
    Review,
}

impl Status {
    /// Every status, in lifecycle order.
    pub const ALL: [Status; 7] = [
        Status::Pending,
        Status::Approved,
        Status::Denied,
        Status::Expired,
        Status::Cancelled,
        Status::Executed,
        Status::Review,
    ];

    /// The JSON / query-string spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "PENDING",
            Status::Approved => "APPROVED",
            Status::Denied => "DENIED",
            Status::Expired => "EXPIRED",
            Status::Cancelled => "CANCELLED",
            Status::Executed => "EXECUTED",
            Status::Review => "REVIEW",
        }
    }

    /// Parses the JSON spelling (`?status=PENDING`); case-sensitive.
    pub fn parse(s: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// No transition leaves this status.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Status::Denied | Status::Expired | Status::Cancelled | Status::Executed
        )
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `mode` of the route the ticket was opened under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Approve this one request.
    Action,
    /// Approval creates a time-bound grant.
    Access,
}

impl From<ApprovalMode> for Mode {
    fn from(m: ApprovalMode) -> Self {
        match m {
            ApprovalMode::Action => Mode::Action,
            ApprovalMode::Access => Mode::Access,
        }
    }
}

/// Who sent the held request.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Requester {
    /// `None` for anonymous requesters.
    pub user: Option<String>,
    /// Groups as resolved at the edge.
    pub groups: Vec<String>,
    /// Anonymous requesters only: an opaque digest of the credential-bearing headers they sent
    /// (their address when they sent none), so two anonymous clients are never one requester.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub anonymous: Option<String>,
}

impl Requester {
    /// The key used for per-requester limits, audit filters and token subjects: the user, or
    /// `anonymous:<digest>` (plain `anonymous` for a requester recorded without a digest).
    pub fn key(&self) -> std::borrow::Cow<'_, str> {
        match (&self.user, &self.anonymous) {
            (Some(u), _) => std::borrow::Cow::Borrowed(u),
            (None, Some(a)) => std::borrow::Cow::Owned(format!("anonymous:{a}")),
            (None, None) => std::borrow::Cow::Borrowed("anonymous"),
        }
    }

    /// Whether `other` is the same principal: the same user, or the same anonymous client
    /// (equal credential digests). Groups are not compared: a user is one person whatever
    /// their memberships today (the fingerprint binds groups where they matter).
    pub fn same_principal(&self, other: &Requester) -> bool {
        match (&self.user, &other.user) {
            (Some(a), Some(b)) => a == b,
            (None, None) => self.anonymous.is_some() && self.anonymous == other.anonymous,
            _ => false,
        }
    }
}

/// An authenticated approver acting on the admin plane. (Named apart from
/// [`crate::route::Principal`], which is an entry of a route's approver list.)
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Approver {
    /// The approver's user name.
    pub user: String,
    /// The approver's groups.
    pub groups: Vec<String>,
}

impl Approver {
    /// Whether an approver list (`user:NAME`, `group:NAME`) names this approver.
    pub fn is_listed(&self, approvers: &[String]) -> bool {
        approvers.iter().any(|a| {
            if let Some(u) = a.strip_prefix("user:") {
                u == self.user
            } else if let Some(g) = a.strip_prefix("group:") {
                self.groups.iter().any(|mine| mine == g)
            } else {
                false
            }
        })
    }
}

/// What approvers see of the held request. Secrets are redacted before it is built
/// (see [`redact_headers`] and [`body_preview`]); the body itself is represented only by its hash.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RequestSnapshot {
    /// The method as matched (an override spelling if one triggered the route).
    pub method: String,
    /// Canonical host.
    pub host: String,
    /// Canonical path.
    pub path: String,
    /// Raw query string without `?` (empty if none).
    pub query: String,
    /// The request target forwarded upstream, byte for byte (path with any `;` parameters a
    /// route keeps, and `?query`). Empty on tickets recorded before it was.
    #[serde(default)]
    pub target: String,
    /// The headers bound to the approval (every end-to-end header the upstream receives but
    /// the volatile ones and the requester's own credential), secrets redacted.
    #[schema(value_type = Vec<Vec<String>>)]
    pub headers: Vec<(String, String)>,
    /// Lowercase hex SHA-256 over the bound headers as sent (unredacted); see
    /// [`headers_digest`].
    #[serde(default)]
    pub headers_sha256: String,
    /// Lowercase hex SHA-256 of the request body.
    pub body_sha256: String,
    /// Size-capped, redacted preview of the body for approvers.
    pub body_preview: String,
}

/// One approval or denial.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Vote {
    /// The approver's user name.
    pub by: String,
    /// The approver's groups at the time.
    pub groups: Vec<String>,
    /// When.
    pub at: Timestamp,
    /// The comment (approval) or reason (denial).
    pub comment: Option<String>,
    /// An approval that also lets the next requests like this one through ("approve this and
    /// the next N"): what this approver agreed to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub also: Option<AlsoTerms>,
}

/// "Approve this and the next N like it": up to `uses` more requests of the same requester,
/// route and method within `within_ms` of the approval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AlsoTerms {
    /// How many more requests.
    pub uses: u32,
    /// For how long after the approval, in milliseconds.
    pub within_ms: u64,
}

/// An approval ticket: one held request (or an access request) awaiting a decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Ticket {
    /// `jit_` + ULID.
    pub id: TicketId,
    /// Where it is in its life.
    pub status: Status,
    /// Route name.
    pub route: String,
    /// Hex of the route's `definition_hash` at creation.
    pub route_hash: String,
    /// `action` or `access`.
    pub mode: Mode,
    /// Who asked.
    pub requester: Requester,
    /// The client address the request came from (canonical text, e.g. `192.0.2.7`), which
    /// per-source pending limits count by; `None` on tickets recorded before it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub source: Option<String>,
    /// The `Jit-Reason` header.
    pub reason: Option<String>,
    /// What was asked.
    pub request: RequestSnapshot,
    /// See [`fingerprint`]; also the coalescing key.
    pub fingerprint: String,
    /// Creation time.
    pub created_at: Timestamp,
    /// After this instant the ticket can no longer be decided.
    pub expires_at: Timestamp,
    /// When it left `PENDING`.
    pub decided_at: Option<Timestamp>,
    /// When the last allowed use was redeemed.
    pub executed_at: Option<Timestamp>,
    /// Approvals so far, one per distinct user.
    pub approvals: Vec<Vote>,
    /// Denials (at most one: one deny ends the ticket).
    pub denials: Vec<Vote>,
    /// Distinct approvals needed.
    pub quorum: u32,
    /// `user:NAME` / `group:NAME` entries that may decide.
    pub approvers: Vec<String>,
    /// Whether the requester may decide their own ticket.
    pub self_approval: bool,
    /// The denial reason (reaches the requester's error body).
    pub deny_reason: Option<String>,
    /// How many times the approval may be redeemed (default once).
    pub token_uses: u32,
    /// How many times it has been redeemed.
    pub redeemed: u32,
    /// How long after approval it may be redeemed (`token_ttl`), in milliseconds.
    pub token_ttl_ms: u64,
    /// Set on approval: `decidedAt + tokenTtlMs`.
    pub redeem_by: Option<Timestamp>,
    /// `access` tickets: what their approval grants, fixed when the ticket was opened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub grant_terms: Option<GrantTerms>,
    /// Ids of the releases that redeemed a use, oldest first (at most `tokenUses`), so a
    /// replica whose write timed out can tell by reading back whether its release landed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub releases: Vec<String>,
    /// The most an approval may add with `also` (the route's `max_also_uses` and
    /// `max_also_within`), fixed when the ticket was opened; `None` where the route allows
    /// no `also`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub also_limit: Option<AlsoTerms>,
    /// The auto-approve policy that approved the ticket as it was opened, by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub policy: Option<String>,
    /// Break-glass tickets: the reason the requester gave in `Jit-Break-Glass`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub break_glass: Option<String>,
    /// Break-glass tickets: the approver who acknowledged it afterwards.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub acknowledged: Option<Vote>,
    /// When the ticket, still undecided, is widened to `escalateTo` (`escalate_after`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub escalate_at: Option<Timestamp>,
    /// Who is added to `approvers` on escalation (`user:NAME` / `group:NAME`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub escalate_to: Vec<String>,
    /// When it was escalated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub escalated_at: Option<Timestamp>,
    /// When approvers are reminded that it expires soon (`remind_before`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub remind_at: Option<Timestamp>,
    /// When they were reminded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub reminded_at: Option<Timestamp>,
    /// The request's risk score and what made it up (`[approvals.risk]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub risk: Option<Risk>,
    /// While `PENDING`: the gateway replicas (by their run's id) holding a request on it. A
    /// replica joins with its first held request ([`join_hold`]) and leaves with its last
    /// ([`leave_hold`]); the ticket is cancelled when a client goes away and no replica holds
    /// a request on it any more, so a client gone from one replica does not withdraw a
    /// ticket that an identical request waits on at another.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub holders: Vec<String>,
    /// While `PENDING`: the last holder to leave did so because its client went away (not
    /// because it was answered, 202 or 503, and may come back with `Jit-Ticket`). Only then
    /// does finding that the remaining holders died ([`drop_expired_holders`]) cancel the
    /// ticket.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub gone: bool,
}

/// A request's risk score (`[approvals.risk]`): the sum of the weights of the signals that
/// were present, each listed so an approver and an auditor can read why.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Risk {
    /// The sum of the factors' points.
    pub score: u32,
    /// Every signal that contributed, in a fixed order.
    pub factors: Vec<RiskFactor>,
}

/// One contribution to a [`Risk`] score.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RiskFactor {
    /// `off_hours`, `new_source`, `rate`, `method` or `large_body`.
    pub signal: String,
    /// Its weight.
    pub points: u32,
    /// What was seen, e.g. `Sat 02:14 Europe/Berlin` or `203.0.113.9`.
    pub detail: String,
}

/// What approving an `access` ticket grants, recorded from the route when the ticket is
/// opened so a later edit of the route cannot change it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct GrantTerms {
    /// How long the grant lasts from approval, in milliseconds.
    pub duration_ms: u64,
    /// How many requests it lets through, if capped.
    pub max_uses: Option<u32>,
}

/// Everything needed to open a ticket that is not derived.
#[derive(Debug, Clone)]
pub struct TicketDraft {
    /// Route name.
    pub route: String,
    /// The route's `definition_hash`.
    pub route_hash: [u8; 32],
    /// `action` or `access`.
    pub mode: Mode,
    /// Who asked.
    pub requester: Requester,
    /// The client address (canonical text), for per-source limits.
    pub source: Option<String>,
    /// `Jit-Reason`.
    pub reason: Option<String>,
    /// What was asked (already redacted).
    pub request: RequestSnapshot,
    /// `ticket_ttl`.
    pub ticket_ttl: std::time::Duration,
    /// `token_ttl`.
    pub token_ttl: std::time::Duration,
    /// Distinct approvals needed.
    pub quorum: u32,
    /// Approver list as written in the route (`group:oncall`).
    pub approvers: Vec<String>,
    /// `self_approval`.
    pub self_approval: bool,
    /// How many times the approval may be redeemed.
    pub token_uses: u32,
    /// `access` tickets: what approval grants.
    pub grant_terms: Option<GrantTerms>,
    /// `action` tickets: the most an approval's `also` may grant (`None`: not allowed).
    pub also_limit: Option<AlsoTerms>,
    /// `escalate_after` and `escalate_to` (`None`: no escalation).
    pub escalation: Option<(std::time::Duration, Vec<String>)>,
    /// `remind_before`.
    pub remind_before: Option<std::time::Duration>,
    /// The request's risk score, if `[approvals.risk]` is configured.
    pub risk: Option<Risk>,
}

impl Ticket {
    /// A new `PENDING` ticket.
    pub fn open(id: TicketId, draft: TicketDraft, now: Timestamp) -> Ticket {
        let route_hash = hex(&draft.route_hash);
        let expires_at = now.plus(draft.ticket_ttl);
        let (escalate_at, escalate_to) = match draft.escalation {
            Some((after, to)) if now.plus(after) < expires_at => (Some(now.plus(after)), to),
            _ => (None, Vec::new()),
        };
        let remind_at = draft
            .remind_before
            .map(|b| Timestamp(expires_at.0.saturating_sub(duration_ms(b))))
            .filter(|at| *at > now);
        let fingerprint = fingerprint(&draft.request, &draft.requester, &route_hash);
        Ticket {
            id,
            status: Status::Pending,
            route: draft.route,
            route_hash,
            mode: draft.mode,
            requester: draft.requester,
            source: draft.source,
            reason: draft.reason,
            request: draft.request,
            fingerprint,
            created_at: now,
            expires_at,
            decided_at: None,
            executed_at: None,
            approvals: Vec::new(),
            denials: Vec::new(),
            quorum: draft.quorum,
            approvers: draft.approvers,
            self_approval: draft.self_approval,
            deny_reason: None,
            token_uses: draft.token_uses.max(1),
            redeemed: 0,
            token_ttl_ms: u64::try_from(draft.token_ttl.as_millis()).unwrap_or(u64::MAX),
            redeem_by: None,
            grant_terms: draft.grant_terms,
            releases: Vec::new(),
            also_limit: draft.also_limit,
            policy: None,
            break_glass: None,
            acknowledged: None,
            escalate_at,
            escalate_to,
            escalated_at: None,
            remind_at,
            reminded_at: None,
            risk: draft.risk,
            holders: Vec::new(),
            gone: false,
        }
    }

    /// Identical requests from the same requester under the same rule share this key.
    pub fn coalesce_key(&self) -> &str {
        &self.fingerprint
    }

    /// What caps this ticket counts against beyond its route: its requester's user across every
    /// route (`user:<name>`), or, for an anonymous requester (who can mint identities at will),
    /// the client address it came from. `None` for an anonymous ticket without an address.
    pub fn quota_key(&self) -> Option<String> {
        match &self.requester.user {
            Some(u) => Some(format!("user:{u}")),
            None => self.source.clone(),
        }
    }

    /// Whether this ticket was opened on `route` by `requester` (the same principal).
    pub fn belongs_to(&self, route: &str, requester: &Requester) -> bool {
        self.route == route && self.requester.same_principal(requester)
    }

    /// Whether `approver` is this ticket's requester (anonymous requesters are nobody's self).
    fn is_self(&self, approver: &Approver) -> bool {
        self.requester.user.as_deref() == Some(approver.user.as_str())
    }
}

fn duration_ms(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

// === fingerprint ===

fn field(h: &mut Sha256, b: &[u8]) {
    h.update((b.len() as u64).to_be_bytes());
    h.update(b);
}

/// SHA-256 over an unambiguous (length-prefixed) encoding of what an approval is for: the
/// method (every spelling), canonical host, path, query, the forwarded target byte for byte,
/// the digest of the bound headers, the body hash, the requester (user, or a distinct
/// anonymous marker with the anonymous client's digest, plus sorted groups) and the route's
/// definition hash. Binds an approval to exactly one request under one rule.
///
/// The anonymous requester is encoded with a tag byte rather than the word `anonymous`, so a
/// user who is literally called `anonymous` does not share fingerprints with anonymous clients.
pub fn fingerprint(request: &RequestSnapshot, requester: &Requester, route_hash: &str) -> String {
    let mut h = Sha256::new();
    field(&mut h, b"jitgate-fingerprint-v2");
    field(&mut h, request.method.as_bytes());
    field(&mut h, request.host.to_ascii_lowercase().as_bytes());
    field(&mut h, request.path.as_bytes());
    field(&mut h, request.query.as_bytes());
    field(&mut h, request.target.as_bytes());
    field(
        &mut h,
        request.headers_sha256.to_ascii_lowercase().as_bytes(),
    );
    field(&mut h, request.body_sha256.to_ascii_lowercase().as_bytes());
    match &requester.user {
        Some(u) => {
            h.update([1]);
            field(&mut h, u.as_bytes());
        }
        None => {
            h.update([0]);
            field(
                &mut h,
                requester.anonymous.as_deref().unwrap_or("").as_bytes(),
            );
        }
    }
    let mut groups: Vec<&str> = requester.groups.iter().map(String::as_str).collect();
    groups.sort_unstable();
    groups.dedup();
    h.update((groups.len() as u64).to_be_bytes());
    for g in groups {
        field(&mut h, g.as_bytes());
    }
    field(&mut h, route_hash.to_ascii_lowercase().as_bytes());
    hex(&h.finalize())
}

/// Lowercase hex SHA-256 over header fields, length-prefixed in the order given (callers pass
/// names lowercase and sorted, values of one name in the order received): what binds an
/// approval to the headers the upstream receives.
pub fn headers_digest<'a>(fields: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> String {
    let mut h = Sha256::new();
    field(&mut h, b"jitgate-headers-v1");
    for (name, value) in fields {
        field(&mut h, name.as_bytes());
        field(&mut h, value);
    }
    hex(&h.finalize())
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}

/// Lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

// === redaction ===

/// What replaces a secret.
pub const REDACTED: &str = "[redacted]";

/// Headers that always carry credentials.
const SECRET_HEADERS: [&str; 3] = ["authorization", "cookie", "proxy-authorization"];

/// Copies headers for a ticket, replacing the values of credential headers, of headers whose
/// names look secret ([`is_secret_field`]: `X-Api-Key`, `X-Vault-Token`...) and of the
/// configured `secret_names` (case-insensitive) with [`REDACTED`].
pub fn redact_headers<'a>(
    headers: impl IntoIterator<Item = (&'a str, &'a str)>,
    secret_names: &[String],
) -> Vec<(String, String)> {
    headers
        .into_iter()
        .map(|(name, value)| {
            let secret = SECRET_HEADERS.iter().any(|s| s.eq_ignore_ascii_case(name))
                || is_secret_field(name)
                || secret_names.iter().any(|s| s.eq_ignore_ascii_case(name));
            let value = if secret { REDACTED } else { value };
            (name.to_string(), value.to_string())
        })
        .collect()
}

/// Whether a JSON or form field name looks like it holds a secret: after dropping `_`, `-`
/// and case, it contains one of the usual words (so `db_password`, `refresh_token`,
/// `X-Api-Key` and `privateKey` all count).
pub fn is_secret_field(name: &str) -> bool {
    const WORDS: [&str; 12] = [
        "password",
        "passwd",
        "secret",
        "token",
        "apikey",
        "authorization",
        "credential",
        "privatekey",
        "accesskey",
        "cookie",
        "session",
        "signature",
    ];
    let norm: String = name
        .chars()
        .filter(|c| *c != '_' && *c != '-')
        .flat_map(char::to_lowercase)
        .collect();
    WORDS.iter().any(|w| norm.contains(w))
}

/// A preview of the body for approvers, at most `cap` bytes (plus a trailing `…` when cut).
/// It is the body's own text: JSON bodies have the values of secret-looking fields (at any
/// depth) replaced in place, form bodies likewise; nothing is re-printed, so duplicate keys
/// and numbers beyond 64 bits show as the upstream will read them. Other UTF-8 text is shown
/// as is; binary bodies are summarised by their size.
pub fn body_preview(body: &[u8], cap: usize) -> String {
    if body.is_empty() {
        return String::new();
    }
    let Ok(s) = std::str::from_utf8(body) else {
        return format!("[binary, {} bytes]", body.len());
    };
    let json = s.strip_prefix('\u{feff}').unwrap_or(s);
    let text = if json.trim_start().starts_with(['{', '[']) {
        match redact_json_text(json) {
            Some(redacted) => redacted,
            // Looks like JSON a lenient parser might still read, but not ours: its secrets
            // could not be found, so it is not shown.
            None => {
                return format!(
                    "[{} bytes that look like JSON but do not parse: not shown, so that no secret in them is]",
                    body.len()
                )
            }
        }
    } else if looks_like_form(s) {
        redact_form(s)
    } else {
        s.to_string()
    };
    truncate(text, cap)
}

/// `s` with the value of every secret-looking member replaced by `"[redacted]"`, byte for
/// byte otherwise; `None` when `s` does not parse as JSON.
fn redact_json_text(s: &str) -> Option<String> {
    let mut secret: Vec<std::ops::Range<usize>> = Vec::new();
    crate::json::members(s, |m| {
        let key = crate::json::decode_string(m.raw_key).unwrap_or_default();
        if is_secret_field(&key) {
            secret.push(m.value);
        }
    })
    .ok()?;
    // Members are reported innermost first; keep the outermost spans, in order.
    secret.sort_by_key(|r| (r.start, std::cmp::Reverse(r.end)));
    let mut out = String::with_capacity(s.len());
    let mut at = 0;
    for r in secret {
        if r.start < at {
            continue;
        }
        out.push_str(s.get(at..r.start)?);
        out.push('"');
        out.push_str(REDACTED);
        out.push('"');
        at = r.end;
    }
    out.push_str(s.get(at..)?);
    Some(out)
}

fn looks_like_form(s: &str) -> bool {
    !s.is_empty() && !s.contains(char::is_whitespace) && s.split('&').all(|kv| kv.contains('='))
}

fn redact_form(s: &str) -> String {
    s.split('&')
        .map(|kv| match kv.split_once('=') {
            Some((k, _)) if is_secret_field(k) => format!("{k}={REDACTED}"),
            _ => kv.to_string(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

fn truncate(mut s: String, cap: usize) -> String {
    if s.len() <= cap {
        return s;
    }
    let end = clip(&s, cap).len();
    s.truncate(end);
    s.push('…');
    s
}

/// The longest prefix of `s` of at most `cap` bytes that ends on a character boundary.
pub fn clip(s: &str, cap: usize) -> &str {
    let mut end = s.len().min(cap);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

// === transitions ===

/// Why a transition was refused. [`TransitionError::status`] gives the HTTP status.
#[derive(
    Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(tag = "error", rename_all = "camelCase")]
pub enum TransitionError {
    /// A decision on a ticket that is no longer pending.
    #[error("the ticket is {status}, not PENDING")]
    NotPending {
        /// The ticket's current status.
        status: Status,
    },
    /// A decision at or after `expiresAt`; the caller should expire the ticket.
    #[error("the ticket expired before the decision")]
    Expired,
    /// `expire` before `expiresAt`.
    #[error("the ticket is not due to expire yet")]
    NotDue,
    /// The approver is not on the ticket's approver list.
    #[error("not an approver for this route")]
    NotAnApprover,
    /// The requester deciding their own ticket on a route without `self_approval`.
    #[error("requesters may not decide their own tickets on this route")]
    SelfApproval,
    /// A second vote by the same user.
    #[error("this approver has already voted")]
    AlreadyVoted,
    /// Redeeming a ticket that is not approved.
    #[error("the ticket is {status}, not APPROVED")]
    NotApproved {
        /// The ticket's current status.
        status: Status,
    },
    /// Redeeming with a request the ticket was not opened for.
    #[error("the ticket was opened for a different request")]
    OtherRequest,
    /// Redeeming an `access` ticket (its approval is a grant, not a release).
    #[error("access tickets are redeemed through their grant")]
    NotAction,
    /// Redeeming after `redeemBy` (`token_ttl` after approval).
    #[error("the approval is no longer redeemable")]
    RedemptionExpired,
    /// Using or revoking a revoked grant.
    #[error("the grant was revoked")]
    GrantRevoked,
    /// Using a grant at or after its end.
    #[error("the grant has expired")]
    GrantExpired,
    /// Using a grant past `maxUses`.
    #[error("the grant has no uses left")]
    GrantExhausted,
    /// Acknowledging a ticket that is not a break-glass ticket awaiting review.
    #[error("the ticket is {status}, not REVIEW")]
    NotInReview {
        /// The ticket's current status.
        status: Status,
    },
    /// An escalation or reminder that already happened (or that the ticket does not have).
    #[error("already done")]
    AlreadyDone,
    /// An approval's `also` that the ticket does not allow.
    #[error("{detail}")]
    AlsoRefused {
        /// Why.
        detail: String,
    },
}

impl TransitionError {
    /// The HTTP status the gateway answers with: 403 for "you may not" and lapsed
    /// permissions, 409 for "not in that state (any more)".
    pub fn status(&self) -> u16 {
        match self {
            TransitionError::NotAnApprover
            | TransitionError::OtherRequest
            | TransitionError::SelfApproval
            | TransitionError::RedemptionExpired
            | TransitionError::GrantRevoked
            | TransitionError::GrantExpired
            | TransitionError::GrantExhausted => 403,
            TransitionError::AlsoRefused { .. } => 400,
            TransitionError::NotPending { .. }
            | TransitionError::Expired
            | TransitionError::NotDue
            | TransitionError::AlreadyVoted
            | TransitionError::NotApproved { .. }
            | TransitionError::NotInReview { .. }
            | TransitionError::AlreadyDone
            | TransitionError::NotAction => 409,
        }
    }
}

/// The checks every decision shares, in the order their errors are reported: the state
/// (409), the clock (409), who is deciding (403), and double voting (409).
fn check_decision(t: &Ticket, approver: &Approver, now: Timestamp) -> Result<(), TransitionError> {
    if t.status != Status::Pending {
        return Err(TransitionError::NotPending { status: t.status });
    }
    if now >= t.expires_at {
        return Err(TransitionError::Expired);
    }
    if !approver.is_listed(&t.approvers) {
        return Err(TransitionError::NotAnApprover);
    }
    if t.is_self(approver) && !t.self_approval {
        return Err(TransitionError::SelfApproval);
    }
    let voted = |v: &Vote| v.by == approver.user;
    if t.approvals.iter().any(voted) || t.denials.iter().any(voted) {
        return Err(TransitionError::AlreadyVoted);
    }
    Ok(())
}

fn vote(approver: &Approver, comment: Option<String>, now: Timestamp) -> Vote {
    Vote {
        by: approver.user.clone(),
        groups: approver.groups.clone(),
        at: now,
        comment,
        also: None,
    }
}

/// Records an approval; reaching `quorum` distinct approvers makes the ticket `APPROVED`.
pub fn approve(
    t: &Ticket,
    approver: &Approver,
    comment: Option<String>,
    now: Timestamp,
) -> Result<Ticket, TransitionError> {
    approve_also(t, approver, comment, None, now)
}

/// [`approve`], also agreeing to let the next `also.uses` requests like this one through
/// within `also.within_ms` ([`grant_of`] turns that into a grant once the quorum is reached,
/// if every approval agreed; the smallest terms apply). Refused unless the ticket is an
/// `action` ticket of a named requester whose route allows that much (`also_limit`), and
/// unless every earlier approval of the ticket asked for it too (a quorum agrees on all that
/// is released, or on nothing beyond this request).
pub fn approve_also(
    t: &Ticket,
    approver: &Approver,
    comment: Option<String>,
    also: Option<AlsoTerms>,
    now: Timestamp,
) -> Result<Ticket, TransitionError> {
    check_decision(t, approver, now)?;
    if let Some(also) = also {
        check_also(t, also)?;
    }
    let mut next = t.clone();
    let mut v = vote(approver, comment, now);
    v.also = also;
    next.approvals.push(v);
    if next.approvals.len() as u64 >= u64::from(next.quorum.max(1)) {
        decide(&mut next, Status::Approved, now);
        next.redeem_by = Some(Timestamp(now.0.saturating_add(next.token_ttl_ms)));
    }
    Ok(next)
}

fn check_also(t: &Ticket, also: AlsoTerms) -> Result<(), TransitionError> {
    let refuse = |detail: String| Err(TransitionError::AlsoRefused { detail });
    if t.mode != Mode::Action {
        return refuse(
            "`also` applies to action tickets; an access ticket's approval is a grant already"
                .into(),
        );
    }
    if t.requester.user.is_none() {
        return refuse("`also` needs a named requester; anonymous clients cannot be told apart well enough to trust with more requests".into());
    }
    let Some(limit) = t.also_limit else {
        return refuse(format!(
            "route {} does not allow `also` (max_also_uses is 0)",
            t.route
        ));
    };
    if also.uses == 0 || also.uses > limit.uses {
        return refuse(format!(
            "`also.uses` must be 1 to {} on route {}",
            limit.uses, t.route
        ));
    }
    if also.within_ms == 0 || also.within_ms > limit.within_ms {
        return refuse(format!(
            "`also.within` must be at most {} on route {}",
            crate::units::format_duration(std::time::Duration::from_millis(limit.within_ms)),
            t.route
        ));
    }
    if t.approvals.iter().any(|v| v.also.is_none()) {
        return refuse(
            "an earlier approval of this ticket did not agree to `also`; approve without it".into(),
        );
    }
    Ok(())
}

/// A `PENDING` ticket approved as it is opened by the auto-approve policy `policy`:
/// `APPROVED`, with one approval by `policy:<name>` standing for the whole quorum.
pub fn auto_approve(t: &Ticket, policy: &str, now: Timestamp) -> Result<Ticket, TransitionError> {
    if t.status != Status::Pending {
        return Err(TransitionError::NotPending { status: t.status });
    }
    let mut next = t.clone();
    next.approvals.push(Vote {
        by: format!("policy:{policy}"),
        groups: Vec::new(),
        at: now,
        comment: None,
        also: None,
    });
    next.policy = Some(policy.to_string());
    decide(&mut next, Status::Approved, now);
    next.redeem_by = Some(Timestamp(now.0.saturating_add(next.token_ttl_ms)));
    Ok(next)
}

/// A `PENDING` ticket whose request passes by break-glass as it is opened, released once by
/// `release`: `REVIEW`, with the requester's `reason`, until an approver acknowledges it.
pub fn break_glass(
    t: &Ticket,
    reason: &str,
    release: &str,
    now: Timestamp,
) -> Result<Ticket, TransitionError> {
    if t.status != Status::Pending {
        return Err(TransitionError::NotPending { status: t.status });
    }
    let mut next = t.clone();
    decide(&mut next, Status::Review, now);
    next.break_glass = Some(reason.to_string());
    next.executed_at = Some(now);
    next.redeem_by = Some(Timestamp(now.0.saturating_add(next.token_ttl_ms)));
    next.redeemed = 1;
    next.releases.push(release.to_string());
    Ok(next)
}

/// An approver acknowledges a break-glass ticket: `REVIEW` -> `EXECUTED`. The route's
/// approvers only, and not the requester unless the route allows self-approval.
pub fn acknowledge(
    t: &Ticket,
    approver: &Approver,
    comment: Option<String>,
    now: Timestamp,
) -> Result<Ticket, TransitionError> {
    if t.status != Status::Review {
        return Err(TransitionError::NotInReview { status: t.status });
    }
    if !approver.is_listed(&t.approvers) {
        return Err(TransitionError::NotAnApprover);
    }
    if t.is_self(approver) && !t.self_approval {
        return Err(TransitionError::SelfApproval);
    }
    let mut next = t.clone();
    next.status = Status::Executed;
    next.acknowledged = Some(vote(approver, comment, now));
    Ok(next)
}

/// The checks a timed step of a pending ticket shares, in the order their errors are
/// reported: still pending, the step set (`due`) and not yet `done`, due by `now`, and the
/// ticket not expired.
fn check_step(
    t: &Ticket,
    due: Option<Timestamp>,
    done: Option<Timestamp>,
    now: Timestamp,
) -> Result<(), TransitionError> {
    if t.status != Status::Pending {
        return Err(TransitionError::NotPending { status: t.status });
    }
    let Some(at) = due.filter(|_| done.is_none()) else {
        return Err(TransitionError::AlreadyDone);
    };
    if now < at {
        return Err(TransitionError::NotDue);
    }
    if now >= t.expires_at {
        return Err(TransitionError::Expired);
    }
    Ok(())
}

/// Escalates a ticket undecided at its `escalateAt`: its `escalateTo` join its approvers
/// (they may see and decide it from now on). `NotDue` before that instant; `AlreadyDone` once
/// escalated (or without escalation).
pub fn escalate(t: &Ticket, now: Timestamp) -> Result<Ticket, TransitionError> {
    check_step(t, t.escalate_at, t.escalated_at, now)?;
    let mut next = t.clone();
    for p in &t.escalate_to {
        if !next.approvers.contains(p) {
            next.approvers.push(p.clone());
        }
    }
    next.escalated_at = Some(now);
    Ok(next)
}

/// Marks the reminder of a ticket undecided at its `remindAt` as sent. `NotDue` before that
/// instant; `AlreadyDone` once reminded (or without a reminder).
pub fn remind(t: &Ticket, now: Timestamp) -> Result<Ticket, TransitionError> {
    check_step(t, t.remind_at, t.reminded_at, now)?;
    let mut next = t.clone();
    next.reminded_at = Some(now);
    Ok(next)
}

/// Denies the ticket: one denial ends it. A requester may deny their own ticket only where
/// they could approve it (`self_approval`); withdrawing one's own request is [`cancel`].
pub fn deny(
    t: &Ticket,
    approver: &Approver,
    reason: Option<String>,
    now: Timestamp,
) -> Result<Ticket, TransitionError> {
    check_decision(t, approver, now)?;
    let mut next = t.clone();
    next.denials.push(vote(approver, reason.clone(), now));
    decide(&mut next, Status::Denied, now);
    next.deny_reason = reason;
    Ok(next)
}

/// `PENDING` and due → `EXPIRED`.
pub fn expire(t: &Ticket, now: Timestamp) -> Result<Ticket, TransitionError> {
    if t.status != Status::Pending {
        return Err(TransitionError::NotPending { status: t.status });
    }
    if now < t.expires_at {
        return Err(TransitionError::NotDue);
    }
    let mut next = t.clone();
    decide(&mut next, Status::Expired, now);
    Ok(next)
}

/// `next`, a pending ticket, leaves `PENDING` for `status` at `now`: what only a pending
/// ticket means ([`Ticket::holders`], [`Ticket::gone`]) goes with it.
fn decide(next: &mut Ticket, status: Status, now: Timestamp) {
    next.status = status;
    next.decided_at = Some(now);
    next.holders.clear();
    next.gone = false;
}

/// `PENDING` → `CANCELLED` (the client went away or withdrew).
pub fn cancel(t: &Ticket, now: Timestamp) -> Result<Ticket, TransitionError> {
    if t.status != Status::Pending {
        return Err(TransitionError::NotPending { status: t.status });
    }
    let mut next = t.clone();
    decide(&mut next, Status::Cancelled, now);
    Ok(next)
}

/// Replica `replica` holds a request on pending ticket `t` ([`Ticket::holders`]).
/// [`TransitionError::AlreadyDone`] when it is listed already (nothing to write).
pub fn join_hold(t: &Ticket, replica: &str) -> Result<Ticket, TransitionError> {
    if t.status != Status::Pending {
        return Err(TransitionError::NotPending { status: t.status });
    }
    if t.holders.iter().any(|h| h == replica) {
        return Err(TransitionError::AlreadyDone);
    }
    let mut next = t.clone();
    next.holders.push(replica.to_string());
    Ok(next)
}

/// Replica `replica` holds no request on pending ticket `t` any more, nor do the replicas in
/// `expired` (their lease ran out: they died holding). With `gone` (its last client went
/// away without an answer) and no other replica holding one, the ticket is cancelled as
/// [`cancel`] would; with others still holding, [`Ticket::gone`] records that this client went
/// away, and a leave after an answer (`gone` false: the client may come back) clears it.
/// [`TransitionError::AlreadyDone`] when there is nothing to write.
pub fn leave_hold(
    t: &Ticket,
    replica: &str,
    expired: &[String],
    gone: bool,
    now: Timestamp,
) -> Result<Ticket, TransitionError> {
    if t.status != Status::Pending {
        return Err(TransitionError::NotPending { status: t.status });
    }
    let mut next = t.clone();
    next.holders
        .retain(|h| h != replica && !expired.iter().any(|e| e == h));
    if gone && next.holders.is_empty() {
        decide(&mut next, Status::Cancelled, now);
        return Ok(next);
    }
    next.gone = gone;
    if next.holders.len() == t.holders.len() && next.gone == t.gone {
        return Err(TransitionError::AlreadyDone);
    }
    Ok(next)
}

/// The holders in `expired` (their lease ran out: they died holding) are dropped from pending
/// ticket `t`; when none is left and the last to leave did so because its client went away
/// ([`Ticket::gone`]), the ticket is cancelled as [`cancel`] would. A ticket whose last
/// leaver was answered (its client may come back) stays pending.
/// [`TransitionError::AlreadyDone`] when none of them is listed.
pub fn drop_expired_holders(
    t: &Ticket,
    expired: &[String],
    now: Timestamp,
) -> Result<Ticket, TransitionError> {
    if t.status != Status::Pending {
        return Err(TransitionError::NotPending { status: t.status });
    }
    let mut next = t.clone();
    next.holders.retain(|h| !expired.iter().any(|e| e == h));
    if next.holders.len() == t.holders.len() {
        return Err(TransitionError::AlreadyDone);
    }
    if next.holders.is_empty() && t.gone {
        decide(&mut next, Status::Cancelled, now);
    }
    Ok(next)
}

/// Redeems one use of an approved `action` ticket for the release `release` (an id unique to
/// this attempt, recorded on the ticket) of the request whose fingerprint is `fingerprint`;
/// the last allowed use makes it `EXECUTED`. A request with another fingerprint spends
/// nothing. The store applies this atomically, which is what makes release at-most-once and
/// only of what was approved.
pub fn execute(
    t: &Ticket,
    now: Timestamp,
    release: &str,
    fingerprint: &str,
) -> Result<Ticket, TransitionError> {
    if t.fingerprint != fingerprint {
        return Err(TransitionError::OtherRequest);
    }
    if t.status != Status::Approved {
        return Err(TransitionError::NotApproved { status: t.status });
    }
    if t.mode != Mode::Action {
        return Err(TransitionError::NotAction);
    }
    if t.redeem_by.is_some_and(|by| now >= by) {
        return Err(TransitionError::RedemptionExpired);
    }
    let mut next = t.clone();
    next.redeemed = next.redeemed.saturating_add(1);
    next.releases.push(release.to_string());
    if next.redeemed >= next.token_uses {
        next.status = Status::Executed;
        next.executed_at = Some(now);
    }
    Ok(next)
}

// === Grant ===

/// A time-bound permission for one requester on one `access` route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Grant {
    /// `grt_` + ULID.
    pub id: GrantId,
    /// Route name.
    pub route: String,
    /// Hex of the route's `definition_hash` when granted (the grant lapses when it changes).
    pub route_hash: String,
    /// Who may use it.
    pub requester: Requester,
    /// When it was granted.
    pub created_at: Timestamp,
    /// When it ends on its own.
    pub expires_at: Timestamp,
    /// `max_uses`, if capped.
    pub max_uses: Option<u32>,
    /// Uses so far.
    pub uses: u32,
    /// When it was revoked.
    pub revoked_at: Option<Timestamp>,
    /// The ticket whose approval created it.
    pub ticket: Option<TicketId>,
    /// Grants an `also` approval created on an `action` route: the method (as the ticket
    /// recorded it) the grant lets through; `None` on access grants, which cover the route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub method: Option<String>,
}

impl Grant {
    /// Not revoked, not expired, uses left.
    pub fn is_active(&self, now: Timestamp) -> bool {
        self.revoked_at.is_none()
            && now < self.expires_at
            && self.max_uses.is_none_or(|m| self.uses < m)
    }

    /// What the grant is at `now`: revoked first, then expired, then used up, else active.
    pub fn state(&self, now: Timestamp) -> GrantState {
        if self.revoked_at.is_some() {
            GrantState::Revoked
        } else if now >= self.expires_at {
            GrantState::Expired
        } else if self.max_uses.is_some_and(|m| self.uses >= m) {
            GrantState::UsedUp
        } else {
            GrantState::Active
        }
    }

    /// Whether this grant is for `route` and the requester whose key is `requester`.
    pub fn belongs_to(&self, route: &str, requester: &str) -> bool {
        self.route == route && self.requester.key() == requester
    }
}

/// What a grant is at a given time ([`Grant::state`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantState {
    /// Usable.
    Active,
    /// Revoked.
    Revoked,
    /// Past its expiry.
    Expired,
    /// Every allowed use spent.
    UsedUp,
}

impl GrantState {
    /// Every state.
    pub const ALL: [GrantState; 4] = [
        GrantState::Active,
        GrantState::Revoked,
        GrantState::Expired,
        GrantState::UsedUp,
    ];

    /// The query-string spelling (`?state=`).
    pub fn as_str(self) -> &'static str {
        match self {
            GrantState::Active => "active",
            GrantState::Revoked => "revoked",
            GrantState::Expired => "expired",
            GrantState::UsedUp => "used_up",
        }
    }

    /// Parses [`GrantState::as_str`]'s spelling.
    pub fn parse(s: &str) -> Option<GrantState> {
        GrantState::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

/// The grant an approval creates: when `before` was pending and `after` is an approved
/// `access` ticket with grant terms, a grant for its requester and route, lasting the terms'
/// duration from the decision. Its id is derived from the ticket's, so a grant is created at
/// most once per ticket whichever replica records the approval. Stores call this inside the
/// approve transition, so the grant exists as soon as the ticket says `APPROVED`.
///
/// An `action` ticket approved with `also` by every approval gets a grant of the smallest
/// terms agreed, bound to the ticket's method (see [`approve_also`]).
pub fn grant_of(before: &Ticket, after: &Ticket) -> Option<Grant> {
    if before.status != Status::Pending || after.status != Status::Approved {
        return None;
    }
    let from = after.decided_at?;
    if after.mode == Mode::Action {
        let agreed: Option<Vec<AlsoTerms>> = after.approvals.iter().map(|v| v.also).collect();
        let agreed = agreed.filter(|a| !a.is_empty())?;
        let uses = agreed.iter().map(|a| a.uses).min()?;
        let within = agreed.iter().map(|a| a.within_ms).min()?;
        after.requester.user.as_ref()?;
        return Some(Grant {
            id: GrantId::for_ticket(&after.id),
            route: after.route.clone(),
            route_hash: after.route_hash.clone(),
            requester: after.requester.clone(),
            created_at: from,
            expires_at: Timestamp(from.0.saturating_add(within)),
            max_uses: Some(uses),
            uses: 0,
            revoked_at: None,
            ticket: Some(after.id.clone()),
            method: Some(after.request.method.clone()),
        });
    }
    let terms = after.grant_terms?;
    Some(Grant {
        id: GrantId::for_ticket(&after.id),
        route: after.route.clone(),
        route_hash: after.route_hash.clone(),
        requester: after.requester.clone(),
        created_at: from,
        expires_at: Timestamp(from.0.saturating_add(terms.duration_ms)),
        max_uses: terms.max_uses,
        uses: 0,
        revoked_at: None,
        ticket: Some(after.id.clone()),
        method: None,
    })
}

/// Uses the grant once.
pub fn use_grant(g: &Grant, now: Timestamp) -> Result<Grant, TransitionError> {
    if g.revoked_at.is_some() {
        return Err(TransitionError::GrantRevoked);
    }
    if now >= g.expires_at {
        return Err(TransitionError::GrantExpired);
    }
    if g.max_uses.is_some_and(|m| g.uses >= m) {
        return Err(TransitionError::GrantExhausted);
    }
    let mut next = g.clone();
    next.uses = next.uses.saturating_add(1);
    Ok(next)
}

/// Revokes an active grant. A grant already revoked, expired or used up is refused (the same
/// errors a use gets), so the audit records one revocation, of a grant that could still be
/// used.
pub fn revoke(g: &Grant, now: Timestamp) -> Result<Grant, TransitionError> {
    use_grant(g, now)?;
    let mut next = g.clone();
    next.revoked_at = Some(now);
    Ok(next)
}

// === audit ===

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
pub enum AuditKind {
    /// A ticket was opened.
    #[serde(rename = "ticket.created")]
    TicketCreated,
    /// Approvers were notified.
    #[serde(rename = "ticket.notified")]
    TicketNotified,
    /// An approval was recorded (the detail says whether quorum was reached).
    #[serde(rename = "ticket.approved")]
    TicketApproved,
    /// The ticket was denied.
    #[serde(rename = "ticket.denied")]
    TicketDenied,
    /// The ticket expired undecided.
    #[serde(rename = "ticket.expired")]
    TicketExpired,
    /// The client went away.
    #[serde(rename = "ticket.cancelled")]
    TicketCancelled,
    /// A use of the approval was spent and the request released (atomically with the spend).
    #[serde(rename = "ticket.executed")]
    TicketExecuted,
    /// What became of a released request: the upstream's status, or why there was none.
    #[serde(rename = "ticket.forwarded")]
    TicketForwarded,
    /// A grant was created.
    #[serde(rename = "grant.created")]
    GrantCreated,
    /// A grant let a request through.
    #[serde(rename = "grant.used")]
    GrantUsed,
    /// A grant was revoked.
    #[serde(rename = "grant.revoked")]
    GrantRevoked,
    /// A grant ran out.
    #[serde(rename = "grant.expired")]
    GrantExpired,
    /// A request passed by break-glass.
    #[serde(rename = "break_glass.used")]
    BreakGlass,
    /// A break-glass attempt was refused (no reason, not a listed group, not allowed here).
    #[serde(rename = "break_glass.refused")]
    BreakGlassRefused,
    /// An approver acknowledged a break-glass ticket.
    #[serde(rename = "ticket.acknowledged")]
    TicketAcknowledged,
    /// A ticket undecided for `escalate_after` was widened to `escalate_to`.
    #[serde(rename = "ticket.escalated")]
    TicketEscalated,
    /// A ticket is about to expire undecided (`remind_before`).
    #[serde(rename = "ticket.reminder")]
    TicketReminder,
    /// A request passed by an auto-approval condition.
    #[serde(rename = "ticket.auto_approved")]
    AutoApproved,
    /// A non-enforcing (shadow) route matched: what it would have done.
    #[serde(rename = "shadow.matched")]
    ShadowMatched,
    /// A new rule table was applied.
    #[serde(rename = "rules.reloaded")]
    RulesReloaded,
    /// A new rule table was refused.
    #[serde(rename = "rules.rejected")]
    RulesRejected,
}

impl AuditKind {
    /// Every kind, in declaration order.
    pub const ALL: [AuditKind; 21] = [
        AuditKind::TicketCreated,
        AuditKind::TicketNotified,
        AuditKind::TicketApproved,
        AuditKind::TicketDenied,
        AuditKind::TicketExpired,
        AuditKind::TicketCancelled,
        AuditKind::TicketExecuted,
        AuditKind::TicketForwarded,
        AuditKind::GrantCreated,
        AuditKind::GrantUsed,
        AuditKind::GrantRevoked,
        AuditKind::GrantExpired,
        AuditKind::BreakGlass,
        AuditKind::BreakGlassRefused,
        AuditKind::TicketAcknowledged,
        AuditKind::TicketEscalated,
        AuditKind::TicketReminder,
        AuditKind::AutoApproved,
        AuditKind::ShadowMatched,
        AuditKind::RulesReloaded,
        AuditKind::RulesRejected,
    ];

    /// The wire name (`ticket.created`, `break_glass`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            AuditKind::TicketCreated => "ticket.created",
            AuditKind::TicketNotified => "ticket.notified",
            AuditKind::TicketApproved => "ticket.approved",
            AuditKind::TicketDenied => "ticket.denied",
            AuditKind::TicketExpired => "ticket.expired",
            AuditKind::TicketCancelled => "ticket.cancelled",
            AuditKind::TicketExecuted => "ticket.executed",
            AuditKind::TicketForwarded => "ticket.forwarded",
            AuditKind::GrantCreated => "grant.created",
            AuditKind::GrantUsed => "grant.used",
            AuditKind::GrantRevoked => "grant.revoked",
            AuditKind::GrantExpired => "grant.expired",
            AuditKind::BreakGlass => "break_glass.used",
            AuditKind::BreakGlassRefused => "break_glass.refused",
            AuditKind::TicketAcknowledged => "ticket.acknowledged",
            AuditKind::TicketEscalated => "ticket.escalated",
            AuditKind::TicketReminder => "ticket.reminder",
            AuditKind::AutoApproved => "ticket.auto_approved",
            AuditKind::ShadowMatched => "shadow.matched",
            AuditKind::RulesReloaded => "rules.reloaded",
            AuditKind::RulesRejected => "rules.rejected",
        }
    }

    /// The kind with this wire name.
    pub fn parse(s: &str) -> Option<AuditKind> {
        AuditKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl fmt::Display for AuditKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An audit event before the store numbers and chains it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditDraft {
    /// When.
    pub at: Timestamp,
    /// What.
    pub kind: AuditKind,
    /// The ticket concerned.
    pub ticket: Option<TicketId>,
    /// Who did it (approver, operator; `None` for the gateway itself).
    pub actor: Option<String>,
    /// Whom it concerns (the requester's key), for `?requester=`.
    pub requester: Option<String>,
    /// The route concerned, for `?route=`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    /// Anything else (upstream status, grant id, reason...).
    pub detail: serde_json::Value,
}

impl AuditDraft {
    /// An event about ticket `t` at `at`, by `actor` (`None`: the gateway itself), filed under
    /// the ticket's requester.
    pub fn about(
        kind: AuditKind,
        t: &Ticket,
        actor: Option<&str>,
        detail: serde_json::Value,
        at: Timestamp,
    ) -> AuditDraft {
        AuditDraft {
            at,
            kind,
            ticket: Some(t.id.clone()),
            actor: actor.map(str::to_string),
            requester: Some(t.requester.key().into_owned()),
            route: Some(t.route.clone()),
            detail,
        }
    }
}

/// A numbered, hash-chained audit event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditEvent {
    /// Position in the chain, from 1.
    pub seq: u64,
    /// When.
    pub at: Timestamp,
    /// What.
    pub kind: AuditKind,
    /// The ticket concerned.
    pub ticket: Option<TicketId>,
    /// Who did it.
    pub actor: Option<String>,
    /// Whom it concerns.
    pub requester: Option<String>,
    /// The route concerned. Absent (not `null`) when there is none, so events recorded
    /// before the field existed keep their hashes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub route: Option<String>,
    /// Anything else.
    pub detail: serde_json::Value,
    /// On a line of an `[audit] file`: the `seq` this event has in the store's chain (the
    /// line's own `seq`, `prev` and `hash` are the file's chain). Absent in the store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub store_seq: Option<u64>,
    /// On a line of an `[audit] file`: the event's `hash` in the store's chain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub store_hash: Option<String>,
    /// The previous event's hash ([`GENESIS`] for the first).
    pub prev: String,
    /// `SHA-256(prev || canonical JSON of this event without "hash")`, hex.
    pub hash: String,
}

/// The `prev` of the first event.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Numbers and chains a draft after the event whose hash is `prev`.
pub fn chain(prev: &str, seq: u64, draft: AuditDraft) -> AuditEvent {
    let mut e = AuditEvent {
        seq,
        at: draft.at,
        kind: draft.kind,
        ticket: draft.ticket,
        actor: draft.actor,
        requester: draft.requester,
        route: draft.route,
        detail: draft.detail,
        store_seq: None,
        store_hash: None,
        prev: prev.to_string(),
        hash: String::new(),
    };
    e.hash = event_hash(&e);
    e
}

/// The line an `[audit] file` holds for `stored`, an event of the store's chain: the same
/// event, numbered and chained in the file's own chain after the line whose hash is `prev`,
/// carrying its store `seq` and `hash` in `storeSeq` and `storeHash` (covered by the line's
/// hash). Several replicas share the store's chain, so the events one replica appends are
/// not consecutive there; the file's chain is, so the file verifies on its own.
pub fn rechain(prev: &str, seq: u64, stored: &AuditEvent) -> AuditEvent {
    let mut e = AuditEvent {
        seq,
        store_seq: Some(stored.seq),
        store_hash: Some(stored.hash.clone()),
        prev: prev.to_string(),
        hash: String::new(),
        ..stored.clone()
    };
    e.hash = event_hash(&e);
    e
}

/// The hash an event should carry, whatever it carries.
pub fn event_hash(e: &AuditEvent) -> String {
    let v = serde_json::to_value(e).unwrap_or(serde_json::Value::Null);
    value_hash(&e.prev, &v)
}

/// The hash of an event as written (a JSON object, read from a file or an API answer):
/// `SHA-256(prev || canonical JSON of the object without "hash")`. Hashing what was written,
/// rather than what it decodes to, means a member added to a line breaks its hash too.
pub fn value_hash(prev: &str, v: &serde_json::Value) -> String {
    let mut h = Sha256::new();
    h.update(prev.as_bytes());
    match v {
        serde_json::Value::Object(m) if m.contains_key("hash") => {
            let mut m = m.clone();
            m.remove("hash");
            h.update(canonical_json(&serde_json::Value::Object(m)).as_bytes());
        }
        other => h.update(canonical_json(other).as_bytes()),
    }
    hex(&h.finalize())
}

/// JSON with object keys sorted at every depth and no insignificant whitespace, so the hash
/// does not depend on serde_json's map ordering features.
pub fn canonical_json(v: &serde_json::Value) -> String {
    fn go(v: &serde_json::Value, out: &mut String) {
        match v {
            serde_json::Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                out.push('{');
                for (i, k) in keys.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&serde_json::Value::String(k.clone()).to_string());
                    out.push(':');
                    if let Some(val) = m.get(k) {
                        go(val, out);
                    }
                }
                out.push('}');
            }
            serde_json::Value::Array(a) => {
                out.push('[');
                for (i, val) in a.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    go(val, out);
                }
                out.push(']');
            }
            other => out.push_str(&other.to_string()),
        }
    }
    let mut out = String::new();
    go(v, &mut out);
    out
}

/// Verifies a whole chain from [`GENESIS`]. See [`verify_from`].
pub fn verify(events: &[AuditEvent]) -> Result<(), (usize, String)> {
    verify_from(GENESIS, 0, events)
}

/// Verifies events that follow the event with hash `prev` and number `prev_seq`: numbers
/// are consecutive (a removed or reordered event breaks them), each `prev` is the hash
/// before it, and each hash matches its content (an edited event breaks it). Returns the
/// index of the first bad event and why.
pub fn verify_from(
    prev: &str,
    prev_seq: u64,
    events: &[AuditEvent],
) -> Result<(), (usize, String)> {
    let mut prev = prev.to_string();
    let mut seq = prev_seq;
    for (i, e) in events.iter().enumerate() {
        if e.seq != seq + 1 {
            return Err((i, format!("expected seq {}, found {}", seq + 1, e.seq)));
        }
        if e.prev != prev {
            return Err((
                i,
                "prev does not match the preceding event's hash".to_string(),
            ));
        }
        if event_hash(e) != e.hash {
            return Err((i, "hash does not match the event's content".to_string()));
        }
        prev.clone_from(&e.hash);
        seq = e.seq;
    }
    Ok(())
}

/// Verifies a chain one event at a time, as it is read (lines of a file, pages of the admin
/// API), from the JSON as written: see [`verify_from`] for what is checked, and
/// [`value_hash`] for why the JSON rather than the decoded event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainCheck {
    prev: String,
    seq: u64,
}

/// Why an event breaks the chain; `seq` is the position in the chain where it breaks (the
/// number the event should have carried).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("seq {seq}: {why}")]
pub struct ChainBreak {
    /// The first broken event's position in the chain.
    pub seq: u64,
    /// What is wrong with it.
    pub why: String,
}

impl Default for ChainCheck {
    fn default() -> Self {
        ChainCheck::new()
    }
}

impl ChainCheck {
    /// A check of a whole chain, from [`GENESIS`].
    pub fn new() -> ChainCheck {
        ChainCheck::after(GENESIS, 0)
    }

    /// A check of the events that follow the event with hash `prev` and number `seq`.
    pub fn after(prev: &str, seq: u64) -> ChainCheck {
        ChainCheck {
            prev: prev.to_string(),
            seq,
        }
    }

    /// The number the next event must carry.
    pub fn next_seq(&self) -> u64 {
        self.seq.saturating_add(1)
    }

    /// The hash of the last event checked ([`GENESIS`] or the starting point before any).
    pub fn head(&self) -> &str {
        &self.prev
    }

    /// Checks the next event as written; returns it decoded.
    pub fn check(&mut self, raw: &serde_json::Value) -> Result<AuditEvent, ChainBreak> {
        let broken = |why: String| ChainBreak {
            seq: self.next_seq(),
            why,
        };
        let e: AuditEvent = serde_json::from_value(raw.clone())
            .map_err(|err| broken(format!("not an audit event: {err}")))?;
        if e.seq != self.next_seq() {
            return Err(broken(format!(
                "expected seq {}, found {} (an event is missing, or out of order)",
                self.next_seq(),
                e.seq
            )));
        }
        if e.prev != self.prev {
            return Err(broken(
                "prev does not match the preceding event's hash".to_string(),
            ));
        }
        if value_hash(&e.prev, raw) != e.hash {
            return Err(broken(
                "hash does not match the event's content".to_string(),
            ));
        }
        self.prev.clone_from(&e.hash);
        self.seq = e.seq;
        Ok(e)
    }
}

/// Checks one event on its own (the last line of an `[audit] file`, before a gateway
/// continues its chain): it decodes, and its hash matches its content as written.
pub fn check_alone(raw: &serde_json::Value) -> Result<AuditEvent, String> {
    let e: AuditEvent =
        serde_json::from_value(raw.clone()).map_err(|err| format!("not an audit event: {err}"))?;
    if value_hash(&e.prev, raw) != e.hash {
        return Err("hash does not match the event's content".to_string());
    }
    Ok(e)
}
