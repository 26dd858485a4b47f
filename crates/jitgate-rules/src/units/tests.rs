#![allow(clippy::unwrap_used)]

use super::*;

#[test]
fn durations() {
    assert_eq!(parse_duration("50s").unwrap(), Duration::from_secs(50));
    assert_eq!(parse_duration("15m").unwrap(), Duration::from_secs(900));
    assert_eq!(parse_duration("2h").unwrap(), Duration::from_secs(7200));
    assert_eq!(parse_duration("1h 30m").unwrap(), Duration::from_secs(5400));
    assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
    assert!(parse_duration("60").unwrap_err().contains("needs a unit"));
    assert!(parse_duration("").is_err());
    assert!(parse_duration("5 parsecs").is_err());
}

#[test]
fn sizes() {
    assert_eq!(parse_size("1048576").unwrap(), 1_048_576);
    assert_eq!(parse_size("1MiB").unwrap(), 1_048_576);
    assert_eq!(parse_size("512KiB").unwrap(), 524_288);
    assert_eq!(parse_size("10MB").unwrap(), 10_000_000);
    assert_eq!(parse_size("2 GiB").unwrap(), 2 << 30);
    assert_eq!(parse_size("3kB").unwrap(), 3000);
    assert_eq!(parse_size("7B").unwrap(), 7);
    assert!(parse_size("1mib")
        .unwrap_err()
        .contains("unknown size unit `mib`"));
    assert!(parse_size("MiB").is_err());
    assert!(parse_size("-1").is_err());
    assert!(parse_size("99999999999999999999").is_err());
    assert!(parse_size("20000000TiB").unwrap_err().contains("too large"));
}

#[test]
fn rates() {
    assert_eq!(
        parse_rate("10/m").unwrap(),
        Rate {
            count: 10,
            per: Duration::from_secs(60)
        }
    );
    assert_eq!(
        parse_rate("100/h").unwrap(),
        Rate {
            count: 100,
            per: Duration::from_secs(3600)
        }
    );
    assert_eq!(
        parse_rate("5/s").unwrap(),
        Rate {
            count: 5,
            per: Duration::from_secs(1)
        }
    );
    assert_eq!(
        parse_rate("7/15m").unwrap(),
        Rate {
            count: 7,
            per: Duration::from_secs(900)
        }
    );
    assert!(parse_rate("0/m").unwrap_err().contains("at least 1"));
    assert!(parse_rate("10").is_err());
    assert!(parse_rate("x/m").is_err());
    assert!(parse_rate("1/fortnight").is_err());
}
