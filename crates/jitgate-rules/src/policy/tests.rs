#![allow(clippy::unwrap_used)]

use super::*;
use http::HeaderValue;

// 2026-11-27 (a Friday) 10:30 UTC = 11:30 in Berlin.
const FRI_1030_UTC: Timestamp = Timestamp(1_795_775_400_000);

fn input<'a>(
    methods: &'a [Method],
    paths: &'a [&'a str],
    groups: &'a [String],
    headers: &'a HeaderMap,
) -> PolicyInput<'a> {
    PolicyInput {
        methods,
        paths,
        user: Some("bot"),
        groups,
        source: "10.1.2.3".parse().unwrap(),
        headers,
        duration: None,
        risk: None,
        now: FRI_1030_UTC,
    }
}

#[test]
fn the_test_clock_is_what_the_comment_says() {
    assert_eq!(Zone::utc().local(FRI_1030_UTC), Some((4, 10 * 60 + 30)));
    let berlin = Zone::get("Europe/Berlin").unwrap();
    assert_eq!(berlin.local(FRI_1030_UTC), Some((4, 11 * 60 + 30)));
}

#[test]
fn windows_parse_days_ranges_and_midnight() {
    let w = Window::parse("Mon-Fri 09:00-18:00").unwrap();
    assert_eq!(w.days, [true, true, true, true, true, false, false]);
    assert!(w.contains(0, 9 * 60));
    assert!(!w.contains(0, 18 * 60), "the end is exclusive");
    assert!(!w.contains(5, 10 * 60), "Saturday");
    let wrap = Window::parse("Fri-Mon 00:00-24:00").unwrap();
    assert_eq!(wrap.days, [true, false, false, false, true, true, true]);
    let night = Window::parse("Fri 22:00-06:00").unwrap();
    assert!(night.contains(4, 23 * 60));
    assert!(
        night.contains(5, 5 * 60),
        "Saturday morning belongs to Friday night"
    );
    assert!(
        !night.contains(4, 5 * 60),
        "Friday morning belongs to Thursday night"
    );
    assert!(Window::parse("09:00-17:00")
        .unwrap()
        .days
        .iter()
        .all(|d| *d));
    assert!(Window::parse("Sat,Sun 10:00-12:00").unwrap().days[5]);
    for bad in [
        "9-5",
        "09:00-09:00",
        "Mon-Fry 09:00-17:00",
        "25:00-26:00",
        "09:00",
        "24:00-01:00",
        "09:0-17:00",
    ] {
        assert!(Window::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn unknown_time_zones_are_refused() {
    assert!(Zone::get("Europe/Berlin").is_ok());
    assert!(Zone::get("America/Argentina/Buenos_Aires").is_ok());
    assert!(Zone::get("Europe/Berlim").is_err());
    assert!(Zone::get("Mars/Olympus").is_err());
    assert!(Zone::get("").is_err());
}

#[test]
fn every_condition_admits_and_refuses() {
    let headers = {
        let mut h = HeaderMap::new();
        h.insert("x-env", HeaderValue::from_static("staging"));
        h
    };
    let groups = vec!["release-bots".to_string()];
    let post = [Method::POST];
    let canary = ["/v1/deploy/canary/web"];
    let base = input(&post, &canary, &groups, &headers);
    let policy = AutoApprove {
        name: "canary".into(),
        path_prefix: Some("/v1/deploy/canary".into()),
        methods: vec![Method::POST],
        users: vec!["bot".into()],
        groups: vec!["release-bots".into()],
        source: vec!["10.1.0.0/16".parse().unwrap()],
        headers: vec![HeaderRule {
            name: http::HeaderName::from_static("x-env"),
            value: Some("staging".into()),
        }],
        window: Some(Window::parse("Mon-Fri 09:00-18:00").unwrap()),
        time_zone: Some(Zone::get("Europe/Berlin").unwrap()),
        ..AutoApprove::default()
    };
    assert_eq!(policy.check(&base), Ok(()));

    let other_path = ["/v1/deploy/canaryx"];
    assert_eq!(
        policy.check(&PolicyInput {
            paths: &other_path,
            ..base
        }),
        Err(Miss::Path)
    );
    // Every reading must be under the prefix.
    let two_readings = ["/v1/deploy/canary/web", "/v1/deploy/prod"];
    assert_eq!(
        policy.check(&PolicyInput {
            paths: &two_readings,
            ..base
        }),
        Err(Miss::Path)
    );
    // A method override reading that is not listed refuses.
    let overridden = [Method::POST, Method::DELETE];
    assert_eq!(
        policy.check(&PolicyInput {
            methods: &overridden,
            ..base
        }),
        Err(Miss::Method)
    );
    assert_eq!(
        policy.check(&PolicyInput {
            user: Some("eve"),
            ..base
        }),
        Err(Miss::User)
    );
    let no_groups: Vec<String> = vec![];
    let only_users = AutoApprove {
        users: vec![],
        ..policy.clone()
    };
    assert_eq!(
        only_users.check(&PolicyInput {
            groups: &no_groups,
            ..base
        }),
        Err(Miss::Group)
    );
    assert_eq!(
        only_users.check(&PolicyInput { user: None, ..base }),
        Err(Miss::Group),
        "anonymous has no groups"
    );
    assert_eq!(
        policy.check(&PolicyInput {
            source: "10.2.0.1".parse().unwrap(),
            ..base
        }),
        Err(Miss::Source)
    );
    let prod = {
        let mut h = HeaderMap::new();
        h.insert("x-env", HeaderValue::from_static("prod"));
        h
    };
    assert_eq!(
        policy.check(&PolicyInput {
            headers: &prod,
            ..base
        }),
        Err(Miss::Header)
    );
    let both = {
        let mut h = HeaderMap::new();
        h.append("x-env", HeaderValue::from_static("staging"));
        h.append("x-env", HeaderValue::from_static("prod"));
        h
    };
    assert_eq!(
        policy.check(&PolicyInput {
            headers: &both,
            ..base
        }),
        Err(Miss::Header),
        "every value"
    );
    let listed = {
        let mut h = HeaderMap::new();
        h.insert("x-env", HeaderValue::from_static("staging, prod"));
        h
    };
    assert_eq!(
        policy.check(&PolicyInput {
            headers: &listed,
            ..base
        }),
        Err(Miss::Header),
        "every list item"
    );
    // 19:00 in Berlin on Friday: outside; Saturday: outside.
    let evening = Timestamp(FRI_1030_UTC.0 + 7 * 3_600_000 + 30 * 60_000);
    assert_eq!(
        policy.check(&PolicyInput {
            now: evening,
            ..base
        }),
        Err(Miss::Window)
    );
    let saturday = Timestamp(FRI_1030_UTC.0 + 24 * 3_600_000);
    assert_eq!(
        policy.check(&PolicyInput {
            now: saturday,
            ..base
        }),
        Err(Miss::Window)
    );
    // 17:30 UTC is 18:30 in Berlin: the zone matters.
    let late = Timestamp(FRI_1030_UTC.0 + 7 * 3_600_000);
    assert_eq!(
        policy.check(&PolicyInput { now: late, ..base }),
        Err(Miss::Window)
    );
    let utc = AutoApprove {
        time_zone: None,
        ..policy.clone()
    };
    assert_eq!(utc.check(&PolicyInput { now: late, ..base }), Ok(()));
}

#[test]
fn durations_bound_what_a_policy_grants() {
    let headers = HeaderMap::new();
    let groups = vec![];
    let get = [Method::GET];
    let p = ["/console"];
    let base = input(&get, &p, &groups, &headers);
    let short = AutoApprove {
        name: "short".into(),
        duration_below: Some(Duration::from_secs(3600)),
        ..AutoApprove::default()
    };
    let d = |s| Some(Duration::from_secs(s));
    assert_eq!(
        short.check(&PolicyInput {
            duration: d(1800),
            ..base
        }),
        Ok(())
    );
    assert_eq!(
        short.check(&PolicyInput {
            duration: d(3600),
            ..base
        }),
        Err(Miss::Duration)
    );
    assert_eq!(
        short.check(&PolicyInput {
            duration: None,
            ..base
        }),
        Err(Miss::Duration)
    );
    let capped = AutoApprove {
        name: "capped".into(),
        users: vec!["bot".into()],
        max_duration: Some(Duration::from_secs(3600)),
        ..AutoApprove::default()
    };
    assert_eq!(
        capped.check(&PolicyInput {
            duration: d(3600),
            ..base
        }),
        Ok(())
    );
    assert_eq!(
        capped.check(&PolicyInput {
            duration: d(3601),
            ..base
        }),
        Err(Miss::TooLong)
    );
}

#[test]
fn the_first_policy_that_holds_applies() {
    let headers = HeaderMap::new();
    let groups = vec![];
    let get = [Method::GET];
    let p = ["/a/b"];
    let base = input(&get, &p, &groups, &headers);
    let policies = vec![
        AutoApprove {
            name: "eve".into(),
            users: vec!["eve".into()],
            ..AutoApprove::default()
        },
        AutoApprove {
            name: "a".into(),
            path_prefix: Some("/a".into()),
            ..AutoApprove::default()
        },
        AutoApprove {
            name: "root".into(),
            path_prefix: Some("/".into()),
            ..AutoApprove::default()
        },
    ];
    assert_eq!(
        first_match(&policies, &base).map(|p| p.name.as_str()),
        Some("a")
    );
    assert!(first_match(&policies[..1], &base).is_none());
}

#[test]
fn risk_scores_add_up_and_say_why() {
    let model = RiskModel {
        business_hours: Some(Window::parse("Mon-Fri 09:00-18:00").unwrap()),
        time_zone: Some(Zone::get("Europe/Berlin").unwrap()),
        off_hours: 30,
        new_source: 40,
        rate_above: Some(crate::units::parse_rate("10/m").unwrap()),
        rate: 20,
        methods: vec![(Method::DELETE, 25), (Method::POST, 5)],
        body_above: Some(1024),
        large_body: 10,
    };
    let quiet = RiskInput {
        methods: &[Method::GET],
        body_len: 10,
        body_encoding: None,
        new_source: None,
        over_rate: false,
        now: FRI_1030_UTC,
    };
    let r = model.score(&quiet);
    assert_eq!((r.score, r.factors.len()), (0, 0));
    let saturday_night = Timestamp(FRI_1030_UTC.0 + 24 * 3_600_000 + 14 * 3_600_000);
    let loud = RiskInput {
        methods: &[Method::POST, Method::DELETE],
        body_len: 4096,
        body_encoding: None,
        new_source: Some("203.0.113.9".parse().unwrap()),
        over_rate: true,
        now: saturday_night,
    };
    let r = model.score(&loud);
    assert_eq!(r.score, 30 + 40 + 20 + 25 + 10);
    let signals: Vec<(&str, u32, &str)> = r
        .factors
        .iter()
        .map(|f| (f.signal.as_str(), f.points, f.detail.as_str()))
        .collect();
    assert_eq!(
        signals,
        vec![
            ("off_hours", 30, "Sun 01:30 Europe/Berlin"),
            ("new_source", 40, "203.0.113.9"),
            ("rate", 20, "above 10/1m"),
            ("method", 25, "DELETE"),
            ("large_body", 10, "4096 bytes"),
        ]
    );
    // risk_below admits below the bound only, and never without a score.
    let policy = AutoApprove {
        name: "calm".into(),
        risk_below: Some(50),
        ..AutoApprove::default()
    };
    let headers = HeaderMap::new();
    let groups = vec![];
    let get = [Method::GET];
    let p = ["/x"];
    let base = input(&get, &p, &groups, &headers);
    assert_eq!(
        policy.check(&PolicyInput {
            risk: Some(49),
            ..base
        }),
        Ok(())
    );
    assert_eq!(
        policy.check(&PolicyInput {
            risk: Some(50),
            ..base
        }),
        Err(Miss::Risk)
    );
    assert_eq!(
        policy.check(&PolicyInput { risk: None, ..base }),
        Err(Miss::Risk)
    );
}

#[test]
fn shared_conditions_give_the_same_answer_as_judging_each_policy_alone() {
    let staging = HeaderRule {
        name: http::HeaderName::from_static("x-env"),
        value: Some("staging".into()),
    };
    let base = AutoApprove {
        name: "a".into(),
        path_prefix: Some("/v1".into()),
        methods: vec![Method::POST],
        groups: vec!["dev".into()],
        source: vec!["10.0.0.0/8".parse().unwrap()],
        headers: vec![staging],
        window: Some(Window::parse("Sat 00:00-01:00").unwrap()),
        time_zone: Some(Zone::get("Europe/Berlin").unwrap()),
        ..AutoApprove::default()
    };
    let mut policies = vec![
        base.clone(),
        AutoApprove {
            name: "b".into(),
            groups: vec!["ops".into()],
            ..base.clone()
        },
        AutoApprove {
            name: "c".into(),
            path_prefix: Some("/v2".into()),
            window: None,
            ..base.clone()
        },
        AutoApprove {
            name: "d".into(),
            window: Some(Window::parse("Mon-Fri 09:00-18:00").unwrap()),
            ..base.clone()
        },
        AutoApprove {
            name: "e".into(),
            headers: vec![],
            window: None,
            ..base.clone()
        },
    ];
    link_shared(&mut policies);
    assert_eq!(policies[0].shares, 0);
    assert_eq!(policies[1].shares & SHARES_GROUPS, 0);
    assert_ne!(policies[1].shares & SHARES_PATH, 0);
    let mut env = HeaderMap::new();
    env.insert("x-env", http::HeaderValue::from_static("staging"));
    let empty = HeaderMap::new();
    let post = [Method::POST];
    let dev = vec!["dev".to_string()];
    let ops = vec!["ops".to_string()];
    for paths in [&["/v1/x"][..], &["/v2/x"][..]] {
        for groups in [&dev, &ops] {
            for headers in [&env, &empty] {
                for now in [FRI_1030_UTC, Timestamp(FRI_1030_UTC.0 + 24 * 3_600_000)] {
                    let input = PolicyInput {
                        paths,
                        groups,
                        headers,
                        now,
                        ..input(&post, paths, groups, headers)
                    };
                    let alone = policies
                        .iter()
                        .find(|p| p.check(&input).is_ok())
                        .map(|p| p.name.clone());
                    let shared = first_match(&policies, &input).map(|p| p.name.clone());
                    assert_eq!(shared, alone, "{paths:?} {groups:?} {headers:?} {now}");
                }
            }
        }
    }
}
