//! `[routes.approval]`: who decides, for how long, and the policies that decide without
//! anyone (`auto_approve`, `approve_above_rate`) or before anyone (`break_glass`).

use std::ops::Range;
use std::time::Duration;

use serde::Deserialize;

use super::raw::{span_of, Field, Map, Strings, Table, Tables};
use super::{
    parse_path_pattern, secs, suggest, units, Approvals, Cx, AUTO_CONDITIONS, DEFAULT_ALSO_WITHIN,
};
use crate::policy::{RiskModel, Window, Zone};
use crate::route::{ApprovalMode, ApprovalPolicy, AutoApprove, Principal, Segment};

#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawApproval {
    approvers: Option<Field<Strings>>,
    quorum: Option<Field<i64>>,
    self_approval: Option<Field<bool>>,
    mode: Option<Field<String>>,
    require_identity: Option<Field<bool>>,
    hold_timeout: Option<Field<String>>,
    ticket_ttl: Option<Field<String>>,
    token_ttl: Option<Field<String>>,
    token_uses: Option<Field<i64>>,
    durations: Option<Field<Strings>>,
    default_duration: Option<Field<String>>,
    max_duration: Option<Field<String>>,
    max_uses: Option<Field<i64>>,
    max_pending_per_requester: Option<Field<i64>>,
    max_also_uses: Option<Field<i64>>,
    max_also_within: Option<Field<String>>,
    pub(super) break_glass: Option<Field<Table<RawBreakGlass>>>,
    escalate_after: Option<Field<String>>,
    escalate_to: Option<Field<Strings>>,
    remind_before: Option<Field<String>>,
    auto_approve: Option<Field<Tables<RawAutoApprove>>>,
    approve_above_rate: Option<Field<String>>,
    volatile_headers: Option<Field<Strings>>,
    notify: Option<Field<Strings>>,
    chat_approval: Option<Field<bool>>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawBreakGlass {
    groups: Option<Field<Strings>>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawAutoApprove {
    name: Option<Field<String>>,
    path_prefix: Option<Field<String>>,
    methods: Option<Field<Strings>>,
    users: Option<Field<Strings>>,
    groups: Option<Field<Strings>>,
    source: Option<Field<Strings>>,
    headers: Option<Field<Map<String>>>,
    duration_below: Option<Field<String>>,
    window: Option<Field<String>>,
    time_zone: Option<Field<String>>,
    max_duration: Option<Field<String>>,
    max_uses: Option<Field<i64>>,
    risk_below: Option<Field<i64>>,
}

impl Cx<'_> {
    /// Bare user or group names (`users`, `groups`), where `approvers` takes principals: a
    /// name spelt `group:sre` would name a group nobody is in, so the principal spelling is
    /// refused with the name it means.
    fn names(&mut self, f: &Option<Field<Strings>>, key: &str, sec: &str) -> Option<Vec<String>> {
        let (items, _) = self.strings(f, key, sec)?;
        let mut out = Vec::new();
        for (s, sp) in items {
            match s.split_once(':') {
                Some((kind @ ("user" | "group"), name)) => self.error(
                    sp,
                    format!("`{s}` in `{key}` is a principal, as `approvers` takes them; `{key}` in {sec} takes {kind} names: write `{name}`"),
                ),
                _ => out.push(s.to_string()),
            }
        }
        Some(out)
    }
}

/// Whether `f` holds an empty array.
fn is_empty_list(f: &Option<Field<Strings>>) -> bool {
    matches!(f, Some(Field { value: Ok(v), .. }) if v.is_empty())
}

impl Cx<'_> {
    pub(super) fn approval(
        &mut self,
        t: &Table<RawApproval>,
        span: Range<usize>,
        global: Option<&Approvals>,
    ) -> Option<ApprovalPolicy> {
        let sec = "[routes.approval]";
        let mut ok = true;
        let approvers = match self.principals(&t.approvers, "approvers", sec) {
            None => {
                ok = false;
                Vec::new()
            }
            Some((p, sp)) => {
                if is_empty_list(&t.approvers) {
                    self.error(sp, "`approvers` is empty: nobody could approve");
                    ok = false;
                }
                p
            }
        };
        if t.approvers.is_none() {
            self.error(span.clone(), "[routes.approval] needs `approvers`");
        }
        let quorum = match self.integer(&t.quorum, "quorum", sec) {
            None => {
                ok &= t.quorum.is_none();
                1
            }
            Some((n, sp)) => {
                if n < 1 {
                    self.error(sp, format!("`quorum` must be at least 1, not {n}: a ticket would pass with no approval"));
                    ok = false;
                    1
                } else if let Ok(q) = u32::try_from(n) {
                    let users_only = !approvers.is_empty()
                        && approvers.iter().all(|p| matches!(p, Principal::User(_)));
                    if users_only && q as usize > approvers.len() {
                        self.error(sp, format!("`quorum` = {q} needs more distinct approvers than the {} listed users", approvers.len()));
                        ok = false;
                    }
                    q
                } else {
                    self.error(
                        sp,
                        format!(
                            "`quorum` in {sec} must be an integer from 1 to {}",
                            u32::MAX
                        ),
                    );
                    ok = false;
                    1
                }
            }
        };
        let self_approval = self
            .flag(&t.self_approval, "self_approval", sec)
            .is_some_and(|b| b.0);
        let mode = match self.string(&t.mode, "mode", sec) {
            None => {
                ok &= t.mode.is_none();
                ApprovalMode::Action
            }
            Some(("action", _)) => ApprovalMode::Action,
            Some(("access", _)) => ApprovalMode::Access,
            Some((m, sp)) => {
                self.error(
                    sp,
                    format!("`mode` must be \"action\" or \"access\", not `{m}`"),
                );
                ok = false;
                ApprovalMode::Action
            }
        };
        let require_identity = match (
            self.flag(&t.require_identity, "require_identity", sec),
            mode,
        ) {
            (Some((false, sp)), ApprovalMode::Access) => {
                self.error(sp, "`require_identity = false` is not possible with mode = \"access\": a grant belongs to a requester");
                ok = false;
                true
            }
            (_, ApprovalMode::Access) => true,
            (b, ApprovalMode::Action) => b.is_some_and(|b| b.0),
        };
        let mut dur = |cx: &mut Self,
                       f: &Option<Field<String>>,
                       key: &str|
         -> Option<(Duration, Range<usize>)> {
            let d = cx.duration(f, key, sec);
            if d.is_none() && f.is_some() {
                ok = false;
            }
            d
        };
        let hold_timeout = dur(self, &t.hold_timeout, "hold_timeout");
        let ticket_ttl = dur(self, &t.ticket_ttl, "ticket_ttl");
        let token_ttl = dur(self, &t.token_ttl, "token_ttl");
        let default_duration = dur(self, &t.default_duration, "default_duration");
        let max_duration = dur(self, &t.max_duration, "max_duration");
        let escalate_after = dur(self, &t.escalate_after, "escalate_after");
        let max_also_within = dur(self, &t.max_also_within, "max_also_within");
        let remind_before = dur(self, &t.remind_before, "remind_before");
        let mut count =
            |cx: &mut Self, f: &Option<Field<i64>>, key: &str| -> Option<(u32, Range<usize>)> {
                let n = cx.u32_(f, key, sec, 1);
                if n.is_none() && f.is_some() {
                    ok = false;
                }
                n
            };
        let token_uses = count(self, &t.token_uses, "token_uses").map_or(1, |n| n.0);
        let max_uses = count(self, &t.max_uses, "max_uses");
        let max_pending_per_requester = count(
            self,
            &t.max_pending_per_requester,
            "max_pending_per_requester",
        )
        .map(|n| n.0);
        let max_also_uses = match self.u32_(&t.max_also_uses, "max_also_uses", sec, 0) {
            Some((n, _)) => n,
            None => {
                ok &= t.max_also_uses.is_none();
                0
            }
        };
        if mode == ApprovalMode::Access {
            for (key, at) in [
                ("max_also_uses", span_of(&t.max_also_uses)),
                ("max_also_within", span_of(&t.max_also_within)),
            ] {
                if let Some(sp) = at {
                    self.error(sp, format!("`{key}` is only for mode = \"action\" (an access approval is a grant already)"));
                    ok = false;
                }
            }
        } else if max_also_uses == 0 {
            if let Some((_, sp)) = &max_also_within {
                self.error(
                    sp.clone(),
                    "`max_also_within` needs `max_also_uses` above 0",
                );
                ok = false;
            }
        }
        let mut durations = Vec::new();
        if let Some((items, _)) = self.strings(&t.durations, "durations", sec) {
            for (s, sp) in items {
                match units::parse_duration(s) {
                    Ok(d) if !d.is_zero() => durations.push((d, sp)),
                    Ok(_) => {
                        self.error(sp, "a grant duration must be longer than zero");
                        ok = false;
                    }
                    Err(e) => {
                        self.error(sp, format!("`durations` in {sec}: {e}"));
                        ok = false;
                    }
                }
            }
        }
        // Grant durations only mean something in access mode.
        if mode == ApprovalMode::Action {
            for (key, at) in [
                ("durations", span_of(&t.durations)),
                ("default_duration", span_of(&t.default_duration)),
                ("max_duration", span_of(&t.max_duration)),
                ("max_uses", span_of(&t.max_uses)),
            ] {
                if let Some(sp) = at {
                    self.error(sp, format!("`{key}` is only for mode = \"access\""));
                    ok = false;
                }
            }
        } else {
            let max = match &max_duration {
                Some((m, _)) => Some(*m),
                None => {
                    if t.max_duration.is_none() {
                        let span = span_of(&t.mode).unwrap_or(span.clone());
                        self.error(
                            span,
                            "mode = \"access\" needs `max_duration` (the longest grant)",
                        );
                    }
                    ok = false;
                    None
                }
            };
            if let Some(max) = max {
                for (d, sp) in &durations {
                    if *d > max {
                        self.error(
                            sp.clone(),
                            format!(
                                "grant duration {} is longer than `max_duration` ({})",
                                units::format_duration(*d),
                                units::format_duration(max)
                            ),
                        );
                        ok = false;
                    }
                }
                if let Some((d, sp)) = &default_duration {
                    if *d > max {
                        self.error(
                            sp.clone(),
                            format!(
                                "`default_duration` ({}) is longer than `max_duration` ({})",
                                units::format_duration(*d),
                                units::format_duration(max)
                            ),
                        );
                        ok = false;
                    }
                }
            }
        }
        let default_duration = default_duration.map(|d| d.0).or_else(|| {
            if mode == ApprovalMode::Access {
                durations
                    .iter()
                    .map(|d| d.0)
                    .min()
                    .or(max_duration.as_ref().map(|m| m.0))
            } else {
                None
            }
        });
        let bsec = "[routes.approval.break_glass]";
        let break_glass_groups = match self.table(&t.break_glass, "break_glass", sec, bsec) {
            None => {
                ok &= t.break_glass.is_none();
                Vec::new()
            }
            Some((bt, sp)) => {
                let groups = self.names(&bt.groups, "groups", bsec).unwrap_or_default();
                if groups.is_empty() || groups.iter().any(|g| g.is_empty()) {
                    self.error(sp, "`break_glass` needs a non-empty `groups` list");
                    ok = false;
                }
                groups
            }
        };
        let escalate_to = match self.principals(&t.escalate_to, "escalate_to", sec) {
            None => {
                ok &= t.escalate_to.is_none();
                Vec::new()
            }
            Some((p, sp)) => {
                if escalate_after.is_none() && t.escalate_after.is_none() {
                    self.error(sp, "`escalate_to` needs `escalate_after`");
                    ok = false;
                }
                p
            }
        };
        let ttl = ticket_ttl
            .as_ref()
            .map(|d| d.0)
            .or(global.map(|g| g.ticket_ttl))
            .unwrap_or(secs(900));
        if let Some((after, sp)) = &escalate_after {
            if escalate_to.is_empty() && t.escalate_to.is_none() {
                self.error(sp.clone(), "`escalate_after` needs `escalate_to`");
                ok = false;
            }
            if *after >= ttl {
                self.warn(sp.clone(), "`escalate_after` is not shorter than the ticket's `ticket_ttl`; the ticket expires first");
            }
        }
        if let Some((before, sp)) = &remind_before {
            if *before >= ttl {
                self.error(
                    sp.clone(),
                    format!(
                        "`remind_before` ({}) must be shorter than the ticket's `ticket_ttl` ({}): the reminder would come before the ticket exists",
                        units::format_duration(*before),
                        units::format_duration(ttl)
                    ),
                );
                ok = false;
            }
        }
        let mut auto_approve = Vec::new();
        for (at, sp) in self.tables(&t.auto_approve, "auto_approve", sec) {
            let risk = global.and_then(|g| g.risk.as_ref());
            match self.auto_approve(at, sp.clone(), mode, risk) {
                Some(a) if auto_approve.iter().any(|b: &AutoApprove| b.name == a.name) => {
                    let sp = span_of(&at.name).unwrap_or(sp);
                    self.error(sp, format!("a second auto_approve policy is named `{}` on this route; names identify what a policy approved", a.name));
                    ok = false;
                }
                Some(a) => auto_approve.push(a),
                None => ok = false,
            }
        }
        let approve_above_rate = match self.string(&t.approve_above_rate, "approve_above_rate", sec)
        {
            None => {
                ok &= t.approve_above_rate.is_none();
                None
            }
            Some((_, sp)) if mode == ApprovalMode::Access => {
                self.error(sp, "`approve_above_rate` is only for mode = \"action\": on an access route the one request within the rate would open a grant that lets every later one through");
                ok = false;
                None
            }
            Some((r, sp)) => match units::parse_rate(r) {
                Ok(r) => Some(r),
                Err(e) => {
                    self.error(sp, e);
                    ok = false;
                    None
                }
            },
        };
        crate::policy::link_shared(&mut auto_approve);
        if approve_above_rate.is_some() && auto_approve.iter().any(|a| a.risk_below.is_some()) {
            if let Some(sp) = span_of(&t.approve_above_rate) {
                self.warn(sp, "requests within `approve_above_rate` pass whatever their risk score: the `risk_below` of this route's policies does not bound them");
            }
        }
        let volatile_headers = self
            .header_names(&t.volatile_headers, "volatile_headers", sec)
            .unwrap_or_default();
        let notify = match self.strings(&t.notify, "notify", sec) {
            None => {
                ok &= t.notify.is_none();
                None
            }
            Some((names, _)) => {
                let mut picked: Vec<String> = Vec::new();
                for (n, sp) in names {
                    if !self.channels.iter().any(|c| c == n) {
                        let known: Vec<&str> = self.channels.iter().map(String::as_str).collect();
                        let hint = suggest(n, &known)
                            .map(|s| format!("; did you mean `{s}`?"))
                            .unwrap_or_default();
                        self.error(
                            sp,
                            format!(
                                "`notify` names `{n}`, which no [[notify]] channel is called{hint}"
                            ),
                        );
                        ok = false;
                    } else if !picked.iter().any(|p| p == n) {
                        picked.push(n.to_string());
                    }
                }
                Some(picked)
            }
        };
        let chat_approval = match self.flag(&t.chat_approval, "chat_approval", sec) {
            None => {
                ok &= t.chat_approval.is_none();
                true
            }
            Some((b, _)) => b,
        };
        ok.then(|| ApprovalPolicy {
            approvers,
            quorum,
            self_approval,
            mode,
            require_identity,
            hold_timeout: hold_timeout.map(|d| d.0),
            ticket_ttl: ticket_ttl.map(|d| d.0),
            token_ttl: token_ttl.map(|d| d.0),
            token_uses,
            durations: durations.into_iter().map(|d| d.0).collect(),
            default_duration,
            max_duration: max_duration.map(|d| d.0),
            max_uses: max_uses.map(|n| n.0),
            max_pending_per_requester,
            max_also_uses,
            max_also_within: max_also_within.map_or(DEFAULT_ALSO_WITHIN, |d| d.0),
            break_glass_groups,
            escalate_after: escalate_after.map(|d| d.0),
            escalate_to,
            remind_before: remind_before.map(|d| d.0),
            auto_approve,
            approve_above_rate,
            volatile_headers,
            notify,
            chat_approval,
        })
    }

    fn auto_approve(
        &mut self,
        t: &Table<RawAutoApprove>,
        span: Range<usize>,
        mode: ApprovalMode,
        risk: Option<&RiskModel>,
    ) -> Option<AutoApprove> {
        let sec = "[[routes.approval.auto_approve]]";
        self.keys(t, sec);
        let errors_before = self.error_count();
        let mut a = AutoApprove::default();
        match self.string(&t.name, "name", sec) {
            Some((n, sp)) if n.trim().is_empty() => self.error(sp, "`name` must not be empty"),
            Some((n, _)) => a.name = n.to_string(),
            None if t.name.is_none() => self.error(
                span.clone(),
                "an auto_approve policy needs a `name` (recorded on what it approves)",
            ),
            None => {}
        }
        if let Some((p, sp)) = self.string(&t.path_prefix, "path_prefix", sec) {
            match parse_path_pattern(p) {
                Ok(pat)
                    if pat.rest
                        || pat
                            .segments
                            .iter()
                            .any(|s| !matches!(s, Segment::Literal(_))) =>
                {
                    self.error(sp, format!("`path_prefix` `{p}` must be a plain path without `*`, `**` or `{{name}}`"));
                }
                Ok(_) => {
                    a.path_prefix = Some(
                        p.strip_suffix('/')
                            .filter(|s| !s.is_empty())
                            .unwrap_or(p)
                            .to_string(),
                    )
                }
                Err(e) => self.error(sp, e.replace("path pattern", "`path_prefix`")),
            }
        }
        if t.methods.is_some() {
            a.methods = self.methods(&t.methods, "methods", sec).unwrap_or_default();
        }
        a.users = self.names(&t.users, "users", sec).unwrap_or_default();
        a.groups = self.names(&t.groups, "groups", sec).unwrap_or_default();
        a.source = self.cidrs(&t.source, "source", sec);
        if let Some(h) = &t.headers {
            a.headers = self.header_rules(&t.headers, sec).unwrap_or_default();
            if matches!(&h.value, Ok(m) if m.is_empty()) {
                self.error(h.span.clone(), "`headers` is empty: it would hold for every request; remove it or name a header");
            }
            for rule in &a.headers {
                if rule
                    .name
                    .as_str()
                    .starts_with(crate::headers::GATEWAY_PREFIX)
                {
                    self.warn(h.span.clone(), format!("`{}` is a gateway header, never seen by conditions: this policy never applies", rule.name));
                }
            }
        }
        a.duration_below = self
            .duration(&t.duration_below, "duration_below", sec)
            .map(|d| d.0);
        a.max_duration = self
            .duration(&t.max_duration, "max_duration", sec)
            .map(|d| d.0);
        a.max_uses = self.u32_(&t.max_uses, "max_uses", sec, 1).map(|n| n.0);
        if let Some((n, sp)) = self.u32_(&t.risk_below, "risk_below", sec, 1) {
            match risk {
                None => self.error(sp, "`risk_below` needs [approvals.risk] (the weights of the score)"),
                Some(m) if n > m.max_score() => self.warn(
                    sp,
                    format!("`risk_below = {n}` is above the highest score [approvals.risk] can give ({}): it restricts nothing", m.max_score()),
                ),
                Some(_) => {}
            }
            a.risk_below = Some(n);
        }
        if mode == ApprovalMode::Access {
            // An access grant covers the whole route, like one a person gives: a condition on
            // what one request looks like would be judged on the first request only.
            for (key, at) in [
                ("path_prefix", span_of(&t.path_prefix)),
                ("methods", span_of(&t.methods)),
                ("headers", span_of(&t.headers)),
            ] {
                if let Some(sp) = at {
                    self.error(
                        sp,
                        format!("`{key}` in {sec} is only for mode = \"action\": an access grant covers the whole route, so it would be judged on the first request only; narrow the route instead"),
                    );
                }
            }
        }
        if mode == ApprovalMode::Action {
            for (key, at) in [
                ("duration_below", span_of(&t.duration_below)),
                ("max_duration", span_of(&t.max_duration)),
                ("max_uses", span_of(&t.max_uses)),
            ] {
                if let Some(sp) = at {
                    self.error(
                        sp,
                        format!(
                            "`{key}` in {sec} is only for mode = \"access\" (it bounds a grant)"
                        ),
                    );
                }
            }
        }
        if let Some((w, sp)) = self.string(&t.window, "window", sec) {
            match Window::parse(w) {
                Ok(w) if w.days.iter().all(|d| *d) && w.from == 0 && w.to == 24 * 60 => {
                    self.warn(sp, "`window` covers all of every day: it restricts nothing");
                    a.window = Some(w);
                }
                Ok(w) => a.window = Some(w),
                Err(e) => self.error(sp, e),
            }
        }
        if a.path_prefix.as_deref() == Some("/") {
            if let Some(sp) = span_of(&t.path_prefix) {
                self.warn(
                    sp,
                    "`path_prefix = \"/\"` holds for every path: it restricts nothing",
                );
            }
        }
        if let Some((z, sp)) = self.string(&t.time_zone, "time_zone", sec) {
            match Zone::get(z) {
                Ok(zone) => a.time_zone = Some(zone),
                Err(e) => self.error(sp.clone(), e),
            }
            if t.window.is_none() {
                self.error(
                    sp,
                    "`time_zone` is only used with `window`; add a `window` or remove it",
                );
            }
        }
        for (key, f) in [
            ("users", &t.users),
            ("groups", &t.groups),
            ("source", &t.source),
            ("methods", &t.methods),
        ] {
            if let (true, Some(sp)) = (is_empty_list(f), span_of(f)) {
                self.error(sp, format!("`{key}` is empty: the condition could never hold; remove it or list something"));
            }
        }
        if !AUTO_CONDITIONS.iter().any(|k| t.has(k)) {
            self.error(span, "an auto_approve policy with no condition would approve every request; give at least one condition");
        }
        (self.error_count() == errors_before).then_some(a)
    }
}
