//! `approve_above_rate` (SPEC 8): on a route that sets it, a named requester's requests within
//! the rate are approved by policy (recorded like an auto-approval, policy `rate`); beyond it
//! they wait for a person. One GCRA limiter per route, keyed by requester; the rate is counted
//! per replica (see the README).

use std::num::NonZeroU32;
use std::sync::Arc;

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use jitgate_rules::route::{Rate, Route};

/// Past this many requesters a limiter forgets those it no longer needs to remember.
const SHRINK_ABOVE: usize = 10_000;

/// `count` requests per `per` for each key, as a burst of `count` refilled evenly.
struct Keyed {
    limiter: DefaultKeyedRateLimiter<String>,
}

impl Keyed {
    fn new(rate: Rate) -> Option<Keyed> {
        let count = NonZeroU32::new(rate.count)?;
        let quota = Quota::with_period(rate.per / rate.count)?.allow_burst(count);
        Some(Keyed {
            limiter: RateLimiter::keyed(quota),
        })
    }

    /// Spends one of `key`'s requests if the rate allows it now.
    fn admit(&self, key: &str) -> bool {
        if self.limiter.len() > SHRINK_ABOVE {
            // Keys whose budget is full again are forgotten, so the map does not grow with
            // every key ever seen.
            self.limiter.retain_recent();
            self.limiter.shrink_to_fit();
        }
        self.limiter.check_key(&key.to_string()).is_ok()
    }
}

/// The limiter of one route, per requester.
pub struct RouteRate {
    /// The route's definition, so a reload keeps the counts of an unchanged route.
    definition: [u8; 32],
    /// The rate as written.
    pub rate: Rate,
    keyed: Keyed,
}

impl RouteRate {
    /// The limiter for `route`, if it sets `approve_above_rate`: the one `previous` had for
    /// the same unchanged route (so a reload does not hand out a fresh burst), else new.
    pub fn for_route(route: &Route, previous: Option<&Arc<RouteRate>>) -> Option<Arc<RouteRate>> {
        let rate = route.approval.as_ref()?.approve_above_rate?;
        if let Some(p) = previous.filter(|p| p.definition == route.definition_hash) {
            return Some(p.clone());
        }
        Some(Arc::new(RouteRate {
            definition: route.definition_hash,
            rate,
            keyed: Keyed::new(rate)?,
        }))
    }

    /// Spends one of `requester`'s requests if the rate allows it now.
    pub fn admit(&self, requester: &str) -> bool {
        self.keyed.admit(requester)
    }

    /// `"5/m"`-style text of the rate, for the audit.
    pub fn text(&self) -> String {
        format!(
            "{}/{}",
            self.rate.count,
            jitgate_rules::units::format_duration(self.rate.per)
        )
    }
}

/// `[approvals.risk] rate_above`: one limiter over every route, keyed by route and
/// requester, per replica; `over` says whether a request is above the rate.
pub struct RiskRate {
    keyed: Keyed,
}

impl RiskRate {
    /// The limiter for `rate`.
    pub fn new(rate: Rate) -> Option<RiskRate> {
        Some(RiskRate {
            keyed: Keyed::new(rate)?,
        })
    }

    /// Counts one request of `requester` on `route`; true when it is above the rate.
    pub fn over(&self, route: &str, requester: &str) -> bool {
        !self.keyed.admit(&format!("{route}\0{requester}"))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn route(toml_rate: &str) -> Route {
        let src = format!(
            "[[upstreams]]\nname = \"o\"\nurl = \"http://127.0.0.1:1\"\n\n[[routes]]\nname = \"r\"\npath = \"/**\"\nupstream = \"o\"\naction = \"approve\"\n[routes.approval]\napprovers = [\"user:a\"]\napprove_above_rate = \"{toml_rate}\"\n"
        );
        let t = jitgate_rules::RuleTable::parse(&src, std::path::Path::new("proxy.toml")).unwrap();
        t.routes()[0].clone()
    }

    #[test]
    fn admits_a_burst_of_the_rate_per_requester_then_refuses() {
        let r = RouteRate::for_route(&route("3/h"), None).unwrap();
        assert!((0..3).all(|_| r.admit("bob")));
        assert!(!r.admit("bob"), "the fourth in the hour");
        assert!(r.admit("carol"), "each requester has their own");
        assert_eq!(r.text(), "3/1h");
    }

    #[test]
    fn a_reload_keeps_the_counts_of_an_unchanged_route_only() {
        let route = route("1/h");
        let r = RouteRate::for_route(&route, None).unwrap();
        assert!(r.admit("bob"));
        let kept = RouteRate::for_route(&route, Some(&r)).unwrap();
        assert!(!kept.admit("bob"), "same limiter: no fresh burst");
        let edited = self::route("2/h");
        let fresh = RouteRate::for_route(&edited, Some(&r)).unwrap();
        assert!(fresh.admit("bob"), "an edited route starts over");
    }
}
