//! `[approvals]` and its `[approvals.risk]` weights.

use std::ops::Range;
use std::time::Duration;

use http::Method;
use serde::Deserialize;

use super::raw::{span_of, Field, Map, Size, Table};
use super::{secs, units, Approvals, Cx};
use crate::policy::{RiskModel, Window, Zone};

#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawApprovals {
    hold_timeout: Option<Field<String>>,
    ticket_ttl: Option<Field<String>>,
    token_ttl: Option<Field<String>>,
    max_held_body: Option<Field<Size>>,
    signing_key: Option<Field<String>>,
    reconcile_interval: Option<Field<String>>,
    max_pending: Option<Field<i64>>,
    max_pending_per_source: Option<Field<i64>>,
    max_pending_per_user: Option<Field<i64>>,
    risk: Option<Field<Table<RawRisk>>>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawRisk {
    business_hours: Option<Field<String>>,
    time_zone: Option<Field<String>>,
    off_hours: Option<Field<i64>>,
    new_source: Option<Field<i64>>,
    rate_above: Option<Field<String>>,
    rate: Option<Field<i64>>,
    methods: Option<Field<Map<i64>>>,
    body_above: Option<Field<Size>>,
    large_body: Option<Field<i64>>,
}

impl Cx<'_> {
    pub(super) fn approvals(&mut self, t: &Table<RawApprovals>) -> Option<Approvals> {
        let sec = "[approvals]";
        let hold_timeout = self.duration(&t.hold_timeout, "hold_timeout", sec);
        let ticket_ttl = self.duration(&t.ticket_ttl, "ticket_ttl", sec);
        let token_ttl = self
            .duration(&t.token_ttl, "token_ttl", sec)
            .map_or(secs(300), |d| d.0);
        let max_held_body = match self.size(&t.max_held_body, "max_held_body", sec) {
            Some(n) => n,
            None if t.max_held_body.is_some() => return None,
            None => 1 << 20,
        };
        let signing_key = self.path_value(&t.signing_key, "signing_key", sec);
        let reconcile_interval =
            match self.duration(&t.reconcile_interval, "reconcile_interval", sec) {
                Some((d, span)) if d < Duration::from_millis(50) => {
                    self.error(
                        span,
                        "`reconcile_interval` in [approvals] must be at least 50ms",
                    );
                    return None;
                }
                Some((d, _)) => d,
                None => secs(1),
            };
        let max_pending = self
            .u32_(&t.max_pending, "max_pending", sec, 1)
            .map_or(10_000, |n| u64::from(n.0));
        let max_pending_per_source = self
            .u32_(&t.max_pending_per_source, "max_pending_per_source", sec, 1)
            .map_or(20, |n| n.0);
        let max_pending_per_user = match self.u32_(
            &t.max_pending_per_user,
            "max_pending_per_user",
            sec,
            1,
        ) {
            Some((n, span)) => {
                if u64::from(n) >= max_pending {
                    self.warn(span, "`max_pending_per_user` is not below `max_pending`: one requester can take every pending slot");
                }
                n
            }
            None => 50,
        };
        let ticket = ticket_ttl.clone().map_or(secs(900), |d| d.0);
        if let Some((h, span)) = &hold_timeout {
            if *h > ticket {
                self.warn(span.clone(), "`hold_timeout` in [approvals] is longer than `ticket_ttl`; tickets expire while clients still wait");
            }
        }
        let risk = match self.table(&t.risk, "risk", sec, "[approvals.risk]") {
            Some((rt, span)) => Some(self.risk(rt, span)?),
            None if t.risk.is_some() => return None,
            None => None,
        };
        Some(Approvals {
            risk,
            hold_timeout: hold_timeout.map_or(secs(50), |d| d.0),
            ticket_ttl: ticket,
            token_ttl,
            max_held_body,
            signing_key,
            reconcile_interval,
            max_pending,
            max_pending_per_source,
            max_pending_per_user,
        })
    }

    /// `[approvals.risk]`: every weight a whole number of points, each signal with what it
    /// needs (`off_hours` with `business_hours`, `rate` with `rate_above`, `large_body` with
    /// `body_above`), and at least one weight.
    fn risk(&mut self, t: &Table<RawRisk>, span: Range<usize>) -> Option<RiskModel> {
        let sec = "[approvals.risk]";
        let before = self.error_count();
        let mut m = RiskModel::default();
        let points = |cx: &mut Self, f: &Option<Field<i64>>, key: &str| {
            cx.u32_(f, key, sec, 0).map_or(0, |n| n.0)
        };
        m.off_hours = points(self, &t.off_hours, "off_hours");
        m.new_source = points(self, &t.new_source, "new_source");
        m.rate = points(self, &t.rate, "rate");
        m.large_body = points(self, &t.large_body, "large_body");
        if let Some((w, sp)) = self.string(&t.business_hours, "business_hours", sec) {
            match Window::parse(w) {
                Ok(w) => m.business_hours = Some(w),
                Err(e) => self.error(sp, e.replace("`window`", "`business_hours`")),
            }
        }
        if let Some((z, sp)) = self.string(&t.time_zone, "time_zone", sec) {
            match Zone::get(z) {
                Ok(zone) => m.time_zone = Some(zone),
                Err(e) => self.error(sp, e),
            }
        }
        if let Some((r, sp)) = self.string(&t.rate_above, "rate_above", sec) {
            match units::parse_rate(r) {
                Ok(r) => m.rate_above = Some(r),
                Err(e) => self.error(sp, e),
            }
        }
        if t.body_above.is_some() {
            m.body_above = self.size(&t.body_above, "body_above", sec);
        }
        if let Some((mt, _)) = self.get(&t.methods, "methods", sec) {
            for (k, v) in mt {
                let name: &str = k.get_ref();
                let Ok(method) = Method::from_bytes(name.as_bytes()) else {
                    self.error(k.span(), format!("`{name}` is not an HTTP method"));
                    continue;
                };
                if name.bytes().any(|b| b.is_ascii_lowercase()) {
                    self.error(
                        k.span(),
                        format!("`{name}`: methods are case-sensitive and upper case on the wire; write `{}`", name.to_ascii_uppercase()),
                    );
                    continue;
                }
                if let Some((n, _)) = self.u32_at(v, name, sec, 0) {
                    m.methods.push((method, n));
                }
            }
        }
        let needs = [
            (
                "off_hours",
                &t.off_hours,
                m.off_hours,
                "business_hours",
                m.business_hours.is_some() || t.business_hours.is_some(),
            ),
            (
                "rate",
                &t.rate,
                m.rate,
                "rate_above",
                m.rate_above.is_some() || t.rate_above.is_some(),
            ),
            (
                "large_body",
                &t.large_body,
                m.large_body,
                "body_above",
                m.body_above.is_some() || t.body_above.is_some(),
            ),
        ];
        for (weight, f, points, needed, present) in needs {
            if points > 0 && !present {
                if let Some(sp) = span_of(f) {
                    self.error(sp, format!("`{weight}` needs `{needed}`"));
                }
            }
        }
        let any = m.off_hours + m.new_source + m.rate + m.large_body > 0
            || m.methods.iter().any(|(_, p)| *p > 0);
        if !any {
            self.error(
                span,
                "[approvals.risk] gives no signal any weight: every score would be 0",
            );
        }
        (self.error_count() == before).then_some(m)
    }

    /// A size given as `"1MiB"` or as a number of bytes.
    fn size(&mut self, f: &Option<Field<Size>>, key: &str, sec: &str) -> Option<u64> {
        let (v, span) = self.get(f, key, sec)?;
        match v {
            Size::Bytes(n) => match u64::try_from(*n) {
                Ok(n) => Some(n),
                Err(_) => {
                    self.error(span, format!("`{key}` in {sec} must not be negative"));
                    None
                }
            },
            Size::Text(s) => match units::parse_size(s) {
                Ok(n) => Some(n),
                Err(e) => {
                    self.error(span, format!("`{key}` in {sec}: {e}"));
                    None
                }
            },
        }
    }
}
