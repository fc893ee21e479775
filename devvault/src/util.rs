//! Small helpers shared by every module: ids, Go-compatible time and duration
//! formatting, and lenient parsing of request fields the way Vault's
//! `framework.FieldData` accepts them (ints, numeric strings, duration strings).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::Rng;
use serde_json::Value;

const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Parses `a=b&c=d` (a query string or a form body); `+` is a space, and the last of
/// repeated keys wins.
pub fn parse_query(q: &str) -> BTreeMap<String, String> {
    form_urlencoded::parse(q.as_bytes()).into_owned().collect()
}

/// Decodes `%XX` escapes in a URL path (where `+` stays a plus).
pub fn percent_decode_path(p: &str) -> String {
    percent_encoding::percent_decode_str(p)
        .decode_utf8_lossy()
        .into_owned()
}

/// Random base62 string, used for token ids, accessors and lease suffixes.
pub fn random_base62(n: usize) -> String {
    let mut rng = rand::rng();
    (0..n)
        .map(|_| BASE62[rng.random_range(0..BASE62.len())] as char)
        .collect()
}

/// A random UUID-shaped string (8-4-4-4-12 hex), like Vault's request ids.
pub fn uuid() -> String {
    let mut rng = rand::rng();
    let b: [u8; 16] = rng.random();
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Seconds since the Unix epoch (negative never happens on a sane clock).
pub fn unix_secs(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    }
}

/// Milliseconds since the Unix epoch.
pub fn unix_millis(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Go's `time.Time.Truncate(time.Second)` for wall-clock times.
pub fn truncate_secs(t: SystemTime) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(unix_secs(t).max(0) as u64)
}

/// Calendar date from days since 1970-01-01 (Howard Hinnant's algorithm).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = (z - era * 146_097) as u64;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe as i64 + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Broken-down UTC time: (year, month, day, hour, minute, second, weekday 0=Sunday).
pub fn utc_parts(secs: i64) -> (i64, u32, u32, u32, u32, u32, u32) {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let wd = (days + 4).rem_euclid(7) as u32;
    (
        y,
        m,
        d,
        (rem / 3600) as u32,
        ((rem % 3600) / 60) as u32,
        (rem % 60) as u32,
        wd,
    )
}

/// Go's `time.RFC3339Nano` in UTC: fraction with trailing zeros trimmed, `Z` suffix.
pub fn rfc3339_nano(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let (y, mo, da, h, mi, s, _) = utc_parts(d.as_secs() as i64);
    let nanos = d.subsec_nanos();
    let mut out = format!("{y:04}-{mo:02}-{da:02}T{h:02}:{mi:02}:{s:02}");
    if nanos != 0 {
        let frac = format!("{nanos:09}");
        out.push('.');
        out.push_str(frac.trim_end_matches('0'));
    }
    out.push('Z');
    out
}

/// The `{{expiration}}` format the PostgreSQL plugin uses: `2006-01-02 15:04:05-0700`.
pub fn pg_expiration(t: SystemTime) -> String {
    let (y, mo, da, h, mi, s, _) = utc_parts(unix_secs(t));
    format!("{y:04}-{mo:02}-{da:02} {h:02}:{mi:02}:{s:02}+0000")
}

/// Go's `time.Duration.String()` for whole seconds (`"1h0m0s"`, `"1m40s"`, `"0s"`).
pub fn go_duration_string(d: Duration) -> String {
    let total = d.as_secs();
    let (h, m, s) = (total / 3600, (total % 3600) / 60, total % 60);
    if h > 0 {
        format!("{h}h{m}m{s}s")
    } else if m > 0 {
        format!("{m}m{s}s")
    } else {
        format!("{s}s")
    }
}

/// Vault's `humanDuration` (sdk/framework/lease.go): Go's duration string with
/// zero trailing units stripped (`"1h"`, `"1m40s"`, `"59m58s"`).
pub fn human_duration(d: Duration) -> String {
    if d.as_secs() == 0 {
        return "0s".to_string();
    }
    let mut s = go_duration_string(d);
    if s.ends_with("m0s") {
        s.truncate(s.len() - 2);
    }
    if s.ends_with("h0m") {
        s.truncate(s.len() - 2);
    }
    s
}

/// Parses a Go-style duration (`"1h30m"`, `"90s"`, `"1.5h"`, `"7d"`) or a bare
/// integer string meaning seconds, like Vault's `parseutil.ParseDurationSecond`.
pub fn parse_duration_str(input: &str) -> Result<Duration, String> {
    let s = input.trim();
    if s.is_empty() {
        return Ok(Duration::ZERO);
    }
    if let Ok(n) = s.parse::<i64>() {
        if n < 0 {
            return Err(format!("invalid duration {input:?}: negative"));
        }
        return Ok(clamp_secs(n as f64));
    }
    let bytes = s.as_bytes();
    let mut i = 0;
    let mut total = 0f64;
    while i < bytes.len() {
        let start = i;
        while i < bytes.len() && (bytes[i].is_ascii_digit() || bytes[i] == b'.') {
            i += 1;
        }
        let num: f64 = s[start..i]
            .parse()
            .map_err(|_| format!("time: invalid duration {input:?}"))?;
        let ustart = i;
        while i < bytes.len() && !(bytes[i].is_ascii_digit() || bytes[i] == b'.') {
            i += 1;
        }
        let mult = match &s[ustart..i] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "d" => 86_400.0,
            _ => return Err(format!("time: invalid duration {input:?}")),
        };
        total += num * mult;
    }
    Ok(clamp_secs(total))
}

/// Longest duration accepted anywhere (100 years): keeps `SystemTime + d`
/// from overflowing on absurd input; Vault caps such values by max TTLs anyway.
pub const MAX_DURATION_SECS: f64 = 100.0 * 365.0 * 86_400.0;

fn clamp_secs(s: f64) -> Duration {
    if s.is_nan() || s <= 0.0 {
        return Duration::ZERO;
    }
    Duration::from_secs_f64(s.min(MAX_DURATION_SECS))
}

/// A duration field from JSON: integer seconds, numeric string or duration string.
pub fn parse_duration(v: &Value) -> Result<Duration, String> {
    match v {
        Value::Null => Ok(Duration::ZERO),
        Value::Number(n) => {
            let f = n.as_f64().unwrap_or(0.0);
            if f < 0.0 {
                return Err("cannot be negative".into());
            }
            Ok(clamp_secs(f))
        }
        Value::String(s) => parse_duration_str(s),
        _ => Err(format!("could not parse {v} as a duration")),
    }
}

/// A boolean field: JSON bool or the strings Go's `strconv.ParseBool` accepts.
pub fn parse_bool(v: &Value) -> Result<bool, String> {
    match v {
        Value::Bool(b) => Ok(*b),
        Value::String(s) => parse_bool_str(s),
        Value::Number(n) => Ok(n.as_f64().unwrap_or(0.0) != 0.0),
        Value::Null => Ok(false),
        _ => Err(format!("could not parse {v} as a bool")),
    }
}

/// Go's `strconv.ParseBool` accepted spellings.
pub fn parse_bool_str(s: &str) -> Result<bool, String> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        _ => Err(format!("strconv.ParseBool: parsing {s:?}: invalid syntax")),
    }
}

/// An integer field: JSON number or numeric string.
pub fn parse_int(v: &Value) -> Result<i64, String> {
    match v {
        Value::Number(n) => n
            .as_i64()
            .or_else(|| n.as_f64().map(|f| f as i64))
            .ok_or_else(|| format!("could not parse {n} as an int")),
        Value::String(s) if s.trim().is_empty() => Ok(0),
        Value::String(s) => s
            .trim()
            .parse::<i64>()
            .map_err(|_| format!("strconv.ParseInt: parsing {s:?}: invalid syntax")),
        Value::Null => Ok(0),
        _ => Err(format!("could not parse {v} as an int")),
    }
}

/// A string-slice field: JSON array, or a comma-separated string (Vault's
/// `TypeCommaStringSlice`). Empty entries are dropped.
pub fn comma_list(v: &Value) -> Vec<String> {
    match v {
        Value::Array(items) => items
            .iter()
            .filter_map(|i| match i {
                Value::String(s) => Some(s.trim().to_string()),
                Value::Null => None,
                other => Some(other.to_string()),
            })
            .filter(|s| !s.is_empty())
            .collect(),
        Value::String(s) => s
            .split(',')
            .map(|x| x.trim().to_string())
            .filter(|x| !x.is_empty())
            .collect(),
        _ => Vec::new(),
    }
}

/// A JSON object as a string map (token `meta`, KV `custom_metadata`): a string value as is,
/// any other value as its JSON text.
pub fn string_map(m: &serde_json::Map<String, Value>) -> BTreeMap<String, String> {
    m.iter()
        .map(|(k, v)| {
            let v = v
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| v.to_string());
            (k.clone(), v)
        })
        .collect()
}

/// A list of SQL statements: an array is taken as is; a single string is one
/// statement (never split on commas, SQL has commas).
pub fn statement_list(v: &Value) -> Vec<String> {
    match v {
        Value::Array(_) => comma_list_raw(v),
        Value::String(s) if !s.trim().is_empty() => vec![s.clone()],
        _ => Vec::new(),
    }
}

fn comma_list_raw(v: &Value) -> Vec<String> {
    match v {
        Value::Array(items) => items
            .iter()
            .filter_map(|i| i.as_str().map(str::to_string))
            .filter(|s| !s.trim().is_empty())
            .collect(),
        _ => Vec::new(),
    }
}

/// Sorted, de-duplicated policy list the way `policyutil.SanitizePolicies` builds it.
pub fn sanitize_policies(mut p: Vec<String>, add_default: bool) -> Vec<String> {
    p = p
        .into_iter()
        .map(|s| s.trim().to_lowercase())
        .filter(|s| !s.is_empty())
        .collect();
    if p.iter().any(|s| s == "root") {
        return vec!["root".to_string()];
    }
    if add_default && !p.iter().any(|s| s == "default") {
        p.push("default".to_string());
    }
    p.sort();
    p.dedup();
    p
}

/// Whole seconds of a duration as the `int` Vault serialises.
pub fn secs(d: Duration) -> i64 {
    d.as_secs() as i64
}

/// A list of PEM blocks: a JSON array of PEMs, or one string that may hold
/// several concatenated PEM blocks (commas are legal inside neither).
pub fn comma_list_pem(v: &Value) -> Vec<String> {
    match v {
        Value::Array(items) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        Value::String(s) => {
            let mut out = Vec::new();
            let mut cur = String::new();
            for line in s.lines() {
                cur.push_str(line);
                cur.push('\n');
                if line.starts_with("-----END") {
                    out.push(std::mem::take(&mut cur));
                }
            }
            out
        }
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_and_path_decoding() {
        let q = parse_query("list=true&lease_id=database%2Fcreds%2Fa+b&x&x=2");
        assert_eq!(q.get("list").map(String::as_str), Some("true"));
        assert_eq!(
            q.get("lease_id").map(String::as_str),
            Some("database/creds/a b")
        );
        assert_eq!(q.get("x").map(String::as_str), Some("2"));
        assert_eq!(percent_decode_path("kv/a%20b+c%2Fd"), "kv/a b+c/d");
    }

    #[test]
    fn human_duration_matches_vault() {
        assert_eq!(human_duration(Duration::from_secs(3600)), "1h");
        assert_eq!(human_duration(Duration::from_secs(100)), "1m40s");
        assert_eq!(human_duration(Duration::from_secs(3598)), "59m58s");
        assert_eq!(human_duration(Duration::from_secs(7205)), "2h0m5s");
        assert_eq!(human_duration(Duration::from_secs(60)), "1m");
        assert_eq!(human_duration(Duration::from_secs(45)), "45s");
    }

    #[test]
    fn durations_parse_like_go() {
        assert_eq!(
            parse_duration_str("1h30m").unwrap(),
            Duration::from_secs(5400)
        );
        assert_eq!(parse_duration_str("300").unwrap(), Duration::from_secs(300));
        assert_eq!(
            parse_duration_str("1.5h").unwrap(),
            Duration::from_secs(5400)
        );
        assert_eq!(
            parse_duration_str("7d").unwrap(),
            Duration::from_secs(604_800)
        );
        assert!(parse_duration_str("abc").is_err());
    }

    #[test]
    fn rfc3339_nano_trims_zeros() {
        let t = UNIX_EPOCH + Duration::new(1_735_947_439, 654_491_470);
        assert_eq!(rfc3339_nano(t), "2025-01-03T23:37:19.65449147Z");
        let t = UNIX_EPOCH + Duration::from_secs(0);
        assert_eq!(rfc3339_nano(t), "1970-01-01T00:00:00Z");
    }

    #[test]
    fn policies_are_sorted_with_default() {
        assert_eq!(
            sanitize_policies(vec!["web".into(), "Stage".into()], true),
            vec!["default", "stage", "web"]
        );
        assert_eq!(sanitize_policies(vec!["root".into()], true), vec!["root"]);
    }
}
