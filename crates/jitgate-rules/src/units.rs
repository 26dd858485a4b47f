//! Durations (`"50s"`, `"15m"`, `"2h"`), sizes (`"1MiB"`, `"512KiB"`, `"1048576"`) and rates
//! (`"10/m"`), as written in `proxy.toml`.
//!
//! Each parser returns a one-line message on error; the config parser adds the location.

use std::time::Duration;

use crate::route::Rate;

/// Parses a humantime duration such as `"50s"`, `"15m"`, `"2h 30m"` or `"500ms"`.
///
/// A bare number is refused: the unit is what makes `"60"` unambiguous to a reader.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err("empty duration; expected e.g. \"50s\", \"15m\", \"2h\"".to_string());
    }
    if t.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("duration `{s}` needs a unit, e.g. \"{t}s\""));
    }
    humantime::parse_duration(t).map_err(|e| format!("invalid duration `{s}`: {e}"))
}

/// Formats a duration the way it is written in `proxy.toml` (`"15m"`, `"1h 30m"`).
pub fn format_duration(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

/// Parses a size in bytes: a plain integer, or a number with a unit. Units are
/// case-sensitive: `B`, binary `KiB MiB GiB TiB` (powers of 1024) and decimal
/// `kB KB MB GB TB` (powers of 1000). `"1MiB"` = 1,048,576; `"10MB"` = 10,000,000.
/// A space between number and unit is allowed; `_` separators are not.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    if num.is_empty() {
        return Err(format!(
            "invalid size `{s}`; expected e.g. \"1MiB\", \"512KiB\", \"10MB\", \"1048576\""
        ));
    }
    let n: u64 = num
        .parse()
        .map_err(|_| format!("size `{s}` is too large"))?;
    let mult: u64 = match unit.trim_start() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        "kB" | "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        other => {
            return Err(format!(
                "unknown size unit `{other}` in `{s}`; use B, KiB, MiB, GiB, TiB, kB, MB, GB or TB"
            ))
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("size `{s}` is too large"))
}

/// Parses a rate `COUNT/PERIOD`: the period is `s`, `m`, `h` or `d` (one of that unit),
/// or any humantime duration (`"100/15m"`). The count must be at least 1.
pub fn parse_rate(s: &str) -> Result<Rate, String> {
    let bad = || format!("invalid rate `{s}`; expected e.g. \"10/m\", \"100/h\", \"5/s\"");
    let (count, per) = s.trim().split_once('/').ok_or_else(bad)?;
    let count: u32 = count.trim().parse().map_err(|_| bad())?;
    if count == 0 {
        return Err(format!(
            "rate `{s}` allows no request; the count must be at least 1"
        ));
    }
    let per = match per.trim() {
        "s" | "sec" | "second" => Duration::from_secs(1),
        "m" | "min" | "minute" => Duration::from_secs(60),
        "h" | "hour" => Duration::from_secs(3600),
        "d" | "day" => Duration::from_secs(86_400),
        other => humantime::parse_duration(other).map_err(|_| bad())?,
    };
    if per.is_zero() {
        return Err(bad());
    }
    Ok(Rate { count, per })
}

#[cfg(test)]
mod tests;
