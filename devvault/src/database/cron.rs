//! A minimal 5-field cron matcher for static-role `rotation_schedule`
//! (minute hour day-of-month month day-of-week; `*`, lists, ranges, steps,
//! month/day names). Times are evaluated in UTC.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::util;

/// A parsed schedule.
#[derive(Debug, Clone)]
pub struct Cron {
    minute: Vec<bool>,
    hour: Vec<bool>,
    dom: Vec<bool>,
    month: Vec<bool>,
    dow: Vec<bool>,
    dom_any: bool,
    dow_any: bool,
}

fn name_value(s: &str, names: &[&str], offset: u32) -> Option<u32> {
    let lower = s.to_ascii_lowercase();
    names
        .iter()
        .position(|n| *n == lower)
        .map(|i| i as u32 + offset)
}

fn field(
    spec: &str,
    min: u32,
    max: u32,
    names: &[&str],
    name_offset: u32,
) -> Result<Vec<bool>, String> {
    let mut set = vec![false; max as usize + 1];
    let value = |s: &str| -> Result<u32, String> {
        s.parse::<u32>()
            .ok()
            .or_else(|| name_value(s, names, name_offset))
            .ok_or_else(|| format!("invalid cron value {s:?}"))
    };
    for part in spec.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => (
                r,
                s.parse::<u32>()
                    .map_err(|_| format!("invalid step {s:?}"))?,
            ),
            None => (part, 1),
        };
        if step == 0 {
            return Err("step cannot be zero".into());
        }
        let (lo, hi) = if range == "*" {
            (min, max)
        } else if let Some((a, b)) = range.split_once('-') {
            (value(a)?, value(b)?)
        } else {
            let v = value(range)?;
            (v, if part.contains('/') { max } else { v })
        };
        if lo < min || hi > max || lo > hi {
            return Err(format!("value out of range in {part:?}"));
        }
        let mut v = lo;
        while v <= hi {
            set[v as usize] = true;
            v += step;
        }
    }
    Ok(set)
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const DAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

impl Cron {
    /// Parses a standard 5-field expression or `@hourly`/`@daily`/`@weekly`/`@monthly`/`@yearly`.
    pub fn parse(expr: &str) -> Result<Cron, String> {
        let expr = match expr.trim() {
            "@hourly" => "0 * * * *",
            "@daily" | "@midnight" => "0 0 * * *",
            "@weekly" => "0 0 * * 0",
            "@monthly" => "0 0 1 * *",
            "@yearly" | "@annually" => "0 0 1 1 *",
            other => other,
        };
        let f: Vec<&str> = expr.split_whitespace().collect();
        if f.len() != 5 {
            return Err(format!("expected exactly 5 fields, found {}", f.len()));
        }
        let mut dow = field(f[4], 0, 7, &DAYS, 0)?;
        if dow[7] {
            dow[0] = true;
        }
        dow.truncate(7);
        Ok(Cron {
            minute: field(f[0], 0, 59, &[], 0)?,
            hour: field(f[1], 0, 23, &[], 0)?,
            dom: field(f[2], 1, 31, &[], 0)?,
            month: field(f[3], 1, 12, &MONTHS, 1)?,
            dow,
            dom_any: f[2] == "*",
            dow_any: f[4] == "*",
        })
    }

    fn matches(&self, secs: i64) -> bool {
        let (_, mo, d, h, mi, _, wd) = util::utc_parts(secs);
        let day = match (self.dom_any, self.dow_any) {
            (true, true) => true,
            (false, true) => self.dom[d as usize],
            (true, false) => self.dow[wd as usize],
            (false, false) => self.dom[d as usize] || self.dow[wd as usize],
        };
        self.minute[mi as usize] && self.hour[h as usize] && self.month[mo as usize] && day
    }

    /// The first matching minute strictly after `t` (searches up to ~5 years).
    pub fn next_after(&self, t: SystemTime) -> Option<SystemTime> {
        let start = util::unix_secs(t);
        let mut m = start.div_euclid(60) * 60 + 60;
        let limit = m + 5 * 366 * 86_400;
        while m < limit {
            if self.matches(m) {
                return Some(UNIX_EPOCH + Duration::from_secs(m as u64));
            }
            m += 60;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_minute_and_names() {
        let c = Cron::parse("* * * * *").unwrap();
        let t = UNIX_EPOCH + Duration::from_secs(120 + 30);
        assert_eq!(c.next_after(t), Some(UNIX_EPOCH + Duration::from_secs(180)));
        // 1970-01-03 was a Saturday.
        let c = Cron::parse("0 0 * * SAT").unwrap();
        assert_eq!(
            c.next_after(UNIX_EPOCH),
            Some(UNIX_EPOCH + Duration::from_secs(2 * 86_400))
        );
        let c = Cron::parse("*/15 * * * *").unwrap();
        assert_eq!(
            c.next_after(UNIX_EPOCH),
            Some(UNIX_EPOCH + Duration::from_secs(900))
        );
        assert!(Cron::parse("* * *").is_err());
        assert!(Cron::parse("61 * * * *").is_err());
    }
}
