//! Auto-approval policies (SPEC 8): `[[routes.approval.auto_approve]]` entries, each a named set
//! of typed conditions that must all hold for a request to be approved without a person.
//!
//! Everything a condition reads comes from the one canonical request, through
//! [`PolicyInput`]. An auto-approval lets a request through, so every condition is judged
//! the way an `allow` route is: a method or path with several readings (override spellings,
//! alternative decodings) passes only when *every* reading passes, and a header condition
//! only when every value sent passes.

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use http::{HeaderMap, Method};

use crate::route::{AutoApprove, HeaderRule};
use crate::ticket::Timestamp;

/// What a policy sees of a held request.
#[derive(Debug, Clone, Copy)]
pub struct PolicyInput<'a> {
    /// Every method reading (`[0]` on the wire, then override spellings).
    pub methods: &'a [Method],
    /// Every path reading (`[0]` the canonical path).
    pub paths: &'a [&'a str],
    /// The requester's user (`None`: anonymous).
    pub user: Option<&'a str>,
    /// The requester's groups.
    pub groups: &'a [String],
    /// The client address (after `trusted_proxies`).
    pub source: IpAddr,
    /// The request headers.
    pub headers: &'a HeaderMap,
    /// `access` routes: the grant duration the request would get.
    pub duration: Option<Duration>,
    /// The request's risk score (`None` without `[approvals.risk]`).
    pub risk: Option<u32>,
    /// Now.
    pub now: Timestamp,
}

/// Why a policy did not apply: the first condition that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Miss {
    /// `path_prefix`.
    Path,
    /// `methods`.
    Method,
    /// `users`.
    User,
    /// `groups`.
    Group,
    /// `source`.
    Source,
    /// `headers`.
    Header,
    /// `duration_below`.
    Duration,
    /// `max_duration`: the grant asked for is longer than the policy gives.
    TooLong,
    /// `window`.
    Window,
    /// `risk_below`.
    Risk,
}

impl fmt::Display for Miss {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Miss::Path => "the path is not under `path_prefix`",
            Miss::Method => "the method (or one of its override spellings) is not in `methods`",
            Miss::User => "the requester is not in `users`",
            Miss::Group => "the requester is in none of `groups`",
            Miss::Source => "the client address is in none of `source`",
            Miss::Header => "a `headers` condition does not hold",
            Miss::Duration => "the grant asked for is not below `duration_below`",
            Miss::TooLong => "the grant asked for is longer than the policy's `max_duration`",
            Miss::Window => "now is outside `window`",
            Miss::Risk => "the request's risk score is not below `risk_below`",
        })
    }
}

/// `[approvals.risk]`: weights for signals the gateway sees, summed into a request's score.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RiskModel {
    /// `business_hours` (with `time_zone`): outside them `off_hours` points.
    pub business_hours: Option<Window>,
    /// The zone of `business_hours` (default UTC).
    pub time_zone: Option<Zone>,
    /// `off_hours`.
    pub off_hours: u32,
    /// `new_source`: a client address this requester has not used before.
    pub new_source: u32,
    /// `rate_above`: above this rate of the requester's requests on the route...
    pub rate_above: Option<crate::route::Rate>,
    /// ...`rate` points.
    pub rate: u32,
    /// `methods = { DELETE = 30 }`: points per method (the highest of the request's method
    /// readings counts).
    pub methods: Vec<(Method, u32)>,
    /// `body_above`: a body larger than this many bytes...
    pub body_above: Option<u64>,
    /// ...`large_body` points.
    pub large_body: u32,
}

/// What a risk score is computed from.
#[derive(Debug, Clone, Copy)]
pub struct RiskInput<'a> {
    /// Every method reading.
    pub methods: &'a [Method],
    /// The body's size in bytes as received.
    pub body_len: u64,
    /// The body's `Content-Encoding` other than `identity`, if any: its decoded size is
    /// unknown, so it counts as large.
    pub body_encoding: Option<&'a str>,
    /// The client address, when this requester had not used it before.
    pub new_source: Option<IpAddr>,
    /// Whether the requester is above `rate_above` on the route.
    pub over_rate: bool,
    /// Now.
    pub now: Timestamp,
}

impl RiskModel {
    /// Whether scoring needs to know if the source is new (a store round trip).
    pub fn wants_source(&self) -> bool {
        self.new_source > 0
    }

    /// The highest score any request can get.
    pub fn max_score(&self) -> u32 {
        let method = self.methods.iter().map(|(_, p)| *p).max().unwrap_or(0);
        [
            self.off_hours,
            self.new_source,
            self.rate,
            method,
            self.large_body,
        ]
        .iter()
        .fold(0u32, |s, p| s.saturating_add(*p))
    }

    /// The score of `input` with each contributing factor.
    pub fn score(&self, input: &RiskInput<'_>) -> crate::ticket::Risk {
        use crate::ticket::{Risk, RiskFactor};
        let mut factors = Vec::new();
        let mut add = |signal: &str, points: u32, detail: String| {
            if points > 0 {
                factors.push(RiskFactor {
                    signal: signal.to_string(),
                    points,
                    detail,
                });
            }
        };
        if let Some(hours) = &self.business_hours {
            let zone = self.time_zone.as_ref().unwrap_or_else(|| Zone::utc());
            if let Some((day, minute)) = zone.local(input.now) {
                if !hours.contains(day, minute) {
                    const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
                    let detail = format!(
                        "{} {:02}:{:02} {}",
                        DAYS[day % 7],
                        minute / 60,
                        minute % 60,
                        zone.name()
                    );
                    add("off_hours", self.off_hours, detail);
                }
            }
        }
        if let Some(ip) = input.new_source {
            add("new_source", self.new_source, ip.to_string());
        }
        if input.over_rate {
            let detail = self.rate_above.map_or_else(String::new, |r| {
                format!("above {}/{}", r.count, crate::units::format_duration(r.per))
            });
            add("rate", self.rate, detail);
        }
        let method = input
            .methods
            .iter()
            .filter_map(|m| self.methods.iter().find(|(w, _)| w == m))
            .max_by_key(|(_, p)| *p);
        if let Some((m, points)) = method {
            add("method", *points, m.to_string());
        }
        if self.body_above.is_some() {
            if let Some(enc) = input.body_encoding {
                add(
                    "large_body",
                    self.large_body,
                    format!("{} bytes encoded as {enc}", input.body_len),
                );
            } else if self.body_above.is_some_and(|above| input.body_len > above) {
                add(
                    "large_body",
                    self.large_body,
                    format!("{} bytes", input.body_len),
                );
            }
        }
        let score = factors.iter().fold(0u32, |s, f| s.saturating_add(f.points));
        Risk { score, factors }
    }
}

/// `window = "Mon-Fri 09:00-18:00"`: days of the week and a time of day range, in minutes
/// since midnight; `from > to` spans midnight (the day named is the day it starts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Window {
    /// Monday first.
    pub days: [bool; 7],
    /// Start, minutes after midnight (inclusive).
    pub from: u16,
    /// End, minutes after midnight (exclusive); `1440` is midnight at the end of the day.
    pub to: u16,
}

impl Window {
    /// Parses `"HH:MM-HH:MM"` or `"Mon-Fri HH:MM-HH:MM"` (days `Mon`..`Sun`, `-` ranges
    /// that may wrap, `,` lists).
    pub fn parse(w: &str) -> Result<Window, String> {
        let bad = || {
            format!("invalid `window` `{w}`; expected \"HH:MM-HH:MM\" or \"Mon-Fri HH:MM-HH:MM\"")
        };
        const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
        let (days, times) = match w.trim().rsplit_once(' ') {
            Some((d, t)) => (Some(d.trim()), t),
            None => (None, w.trim()),
        };
        let mut set = [days.is_none(); 7];
        if let Some(days) = days {
            for part in days.split(',') {
                let day = |s: &str| DAYS.iter().position(|d| *d == s.trim()).ok_or_else(bad);
                match part.split_once('-') {
                    Some((a, b)) => {
                        let (a, b) = (day(a)?, day(b)?);
                        let mut i = a;
                        loop {
                            set[i] = true;
                            if i == b {
                                break;
                            }
                            i = (i + 1) % 7;
                        }
                    }
                    None => set[day(part)?] = true,
                }
            }
        }
        let time = |s: &str| -> Option<u16> {
            let (h, m) = s.split_once(':')?;
            let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
            (s.len() == 5 && m < 60 && h * 60 + m <= 24 * 60).then_some(h * 60 + m)
        };
        let (from, to) = times.split_once('-').ok_or_else(bad)?;
        match (time(from), time(to)) {
            (Some(from), Some(to)) if from != to && from < 24 * 60 => Ok(Window {
                days: set,
                from,
                to,
            }),
            _ => Err(bad()),
        }
    }

    /// Whether `weekday` (Monday = 0) at `minute` after midnight is inside.
    pub fn contains(&self, weekday: usize, minute: u16) -> bool {
        let day = |d: usize| self.days[d % 7];
        if self.from < self.to {
            day(weekday) && self.from <= minute && minute < self.to
        } else {
            // Across midnight: the evening of a listed day, or the morning after one.
            (day(weekday) && minute >= self.from) || (day(weekday + 6) && minute < self.to)
        }
    }
}

/// An IANA time zone, resolved against the bundled zone database when the table is loaded.
/// Compared and hashed by name, so a route's definition does not change with the database.
#[derive(Clone)]
pub struct Zone {
    name: String,
    tz: jiff::tz::TimeZone,
}

impl Zone {
    /// The zone called `name` (`"Europe/Berlin"`, `"UTC"`), or why there is none.
    pub fn get(name: &str) -> Result<Zone, String> {
        let tz = jiff::tz::TimeZone::get(name).map_err(|_| {
            format!("`time_zone` `{name}` is not a time zone of the IANA database (such as \"Europe/Berlin\")")
        })?;
        Ok(Zone {
            name: name.to_string(),
            tz,
        })
    }

    /// UTC, the zone of windows that name none.
    pub fn utc() -> &'static Zone {
        static UTC: std::sync::LazyLock<Zone> = std::sync::LazyLock::new(|| Zone {
            name: "UTC".into(),
            tz: jiff::tz::TimeZone::UTC,
        });
        &UTC
    }

    /// The name as written.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The weekday (Monday = 0) and minute after midnight of `at` in this zone.
    pub fn local(&self, at: Timestamp) -> Option<(usize, u16)> {
        let ms = i64::try_from(at.as_millis()).ok()?;
        let ts = jiff::Timestamp::from_millisecond(ms).ok()?;
        let dt = self.tz.to_datetime(ts);
        let day = usize::try_from(dt.weekday().to_monday_zero_offset()).ok()?;
        let minute = u16::try_from(i32::from(dt.hour()) * 60 + i32::from(dt.minute())).ok()?;
        Some((day, minute))
    }
}

impl fmt::Debug for Zone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Zone({:?})", self.name)
    }
}

impl PartialEq for Zone {
    fn eq(&self, other: &Zone) -> bool {
        self.name == other.name
    }
}

impl Eq for Zone {}

/// What one request's policy evaluation has already worked out, shared across the route's
/// policies: its local time in each zone they name (a zone conversion is most of what a
/// window check costs, and policies usually share a zone), and each header condition they
/// repeat (`x-env = "staging"`: a header lookup costs more than comparing two conditions).
#[derive(Default)]
pub struct PolicyMemo<'z> {
    /// The conditions the policy evaluated last passed (see [`AutoApprove::shares`]).
    passed: u16,
    seen: Vec<(&'z str, Option<(usize, u16)>)>,
    headers: Vec<(&'z HeaderRule, bool)>,
}

impl<'z> PolicyMemo<'z> {
    fn header(&mut self, rule: &'z HeaderRule, headers: &HeaderMap) -> bool {
        if let Some((_, held)) = self.headers.iter().find(|(r, _)| *r == rule) {
            return *held;
        }
        let held = all_values(rule, headers);
        self.headers.push((rule, held));
        held
    }

    fn get(&mut self, zone: Option<&'z Zone>, now: Timestamp) -> Option<(usize, u16)> {
        let name = zone.map_or("UTC", Zone::name);
        if let Some((_, local)) = self.seen.iter().find(|(n, _)| *n == name) {
            return *local;
        }
        let local = zone.unwrap_or_else(|| Zone::utc()).local(now);
        self.seen.push((name, local));
        local
    }
}

impl AutoApprove {
    /// `Ok` when every condition holds for `input`, else the first that does not.
    pub fn check(&self, input: &PolicyInput<'_>) -> Result<(), Miss> {
        self.check_with(input, &mut PolicyMemo::default())
    }

    /// [`AutoApprove::check`] with the request's local times shared across policies.
    pub fn check_with<'z>(
        &'z self,
        input: &PolicyInput<'_>,
        times: &mut PolicyMemo<'z>,
    ) -> Result<(), Miss> {
        // Conditions identical to the previous policy's that held for it hold again.
        let reuse = self.shares & times.passed;
        let mut passed = 0u16;
        let result = self.evaluate(input, times, reuse, &mut passed);
        times.passed = passed;
        result
    }

    fn evaluate<'z>(
        &'z self,
        input: &PolicyInput<'_>,
        times: &mut PolicyMemo<'z>,
        reuse: u16,
        passed: &mut u16,
    ) -> Result<(), Miss> {
        let fresh = |bit: u16| reuse & bit == 0;
        if let Some(prefix) = &self.path_prefix {
            if fresh(SHARES_PATH) && !input.paths.iter().all(|p| under(p, prefix)) {
                return Err(Miss::Path);
            }
        }
        *passed |= SHARES_PATH;
        if fresh(SHARES_METHODS)
            && !self.methods.is_empty()
            && !input.methods.iter().all(|m| self.methods.contains(m))
        {
            return Err(Miss::Method);
        }
        *passed |= SHARES_METHODS;
        if fresh(SHARES_USERS)
            && !self.users.is_empty()
            && !input
                .user
                .is_some_and(|u| self.users.iter().any(|x| x == u))
        {
            return Err(Miss::User);
        }
        *passed |= SHARES_USERS;
        if fresh(SHARES_GROUPS)
            && !self.groups.is_empty()
            && (input.user.is_none() || !input.groups.iter().any(|g| self.groups.contains(g)))
        {
            return Err(Miss::Group);
        }
        *passed |= SHARES_GROUPS;
        if fresh(SHARES_SOURCE)
            && !self.source.is_empty()
            && !self.source.iter().any(|n| n.contains(&input.source))
        {
            return Err(Miss::Source);
        }
        *passed |= SHARES_SOURCE;
        if fresh(SHARES_HEADERS) && !self.headers.iter().all(|h| times.header(h, input.headers)) {
            return Err(Miss::Header);
        }
        *passed |= SHARES_HEADERS;
        if let Some(below) = self.duration_below {
            if input.duration.is_none_or(|d| d >= below) {
                return Err(Miss::Duration);
            }
        }
        if let Some(max) = self.max_duration {
            if input.duration.is_some_and(|d| d > max) {
                return Err(Miss::TooLong);
            }
        }
        if let Some(below) = self.risk_below {
            if input.risk.is_none_or(|r| r >= below) {
                return Err(Miss::Risk);
            }
        }
        if let Some(w) = &self.window {
            if fresh(SHARES_WINDOW) {
                let local = times.get(self.time_zone.as_ref(), input.now);
                if !local.is_some_and(|(day, minute)| w.contains(day, minute)) {
                    return Err(Miss::Window);
                }
            }
        }
        *passed |= SHARES_WINDOW;
        Ok(())
    }
}

/// [`AutoApprove::shares`] bits: the condition is the same as the previous policy's.
pub const SHARES_PATH: u16 = 1;
/// `methods`.
pub const SHARES_METHODS: u16 = 1 << 1;
/// `users`.
pub const SHARES_USERS: u16 = 1 << 2;
/// `groups`.
pub const SHARES_GROUPS: u16 = 1 << 3;
/// `source`.
pub const SHARES_SOURCE: u16 = 1 << 4;
/// `headers`.
pub const SHARES_HEADERS: u16 = 1 << 5;
/// `window` and `time_zone`.
pub const SHARES_WINDOW: u16 = 1 << 6;

/// Sets each policy's [`AutoApprove::shares`]: which of its conditions are the same as the
/// policy before it, so evaluation does not judge them again for one request (routes often
/// list policies that differ in one condition).
pub fn link_shared(policies: &mut [AutoApprove]) {
    for i in 1..policies.len() {
        let (before, after) = policies.split_at_mut(i);
        let (a, b) = (&before[i - 1], &mut after[0]);
        let mut s = 0;
        if a.path_prefix == b.path_prefix {
            s |= SHARES_PATH;
        }
        if a.methods == b.methods {
            s |= SHARES_METHODS;
        }
        if a.users == b.users {
            s |= SHARES_USERS;
        }
        if a.groups == b.groups {
            s |= SHARES_GROUPS;
        }
        if a.source == b.source {
            s |= SHARES_SOURCE;
        }
        if a.headers == b.headers {
            s |= SHARES_HEADERS;
        }
        if a.window == b.window && a.time_zone == b.time_zone {
            s |= SHARES_WINDOW;
        }
        b.shares = s;
    }
}

/// Whether `path` is `prefix` or below it at a segment boundary.
fn under(path: &str, prefix: &str) -> bool {
    prefix == "/"
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// A header condition judged permissively: present (and, with a value, every value sent
/// equal to it, comma-separated list items included).
fn all_values(rule: &HeaderRule, headers: &HeaderMap) -> bool {
    crate::matcher::header_matches(rule, headers, true)
}

/// The first of `policies` whose conditions all hold for `input`.
pub fn first_match<'p>(
    policies: &'p [AutoApprove],
    input: &PolicyInput<'_>,
) -> Option<&'p AutoApprove> {
    let mut times = PolicyMemo::default();
    policies
        .iter()
        .find(|p| p.check_with(input, &mut times).is_ok())
}

#[cfg(test)]
mod tests;
