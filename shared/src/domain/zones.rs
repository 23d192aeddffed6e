//! IANA time zones for schedules, as the rule each one follows today (the POSIX TZ string at
//! the end of its TZif file, e.g. `CET-1CEST,M3.5.0,M10.5.0/3` for Europe/Berlin), kept in
//! `zones.txt` (written by `infra/zones.py` from the time-zone database). Schedules only look
//! forward, so today's rule is what they need (and, for the few zones no rule describes, their
//! listed changes from 2024 on): ~27 KB keeps the Lambda functions small where the whole
//! history of every zone would add about 2 MB.

use chrono::{DateTime, Datelike, Duration, LocalResult, NaiveDate, NaiveDateTime, Utc, Weekday};
use std::collections::HashMap;
use std::sync::OnceLock;

/// `zones.txt`, deflated in the binary.
pub static ZONES_TABLE: crate::assets::Packed = crate::packed!("zones.txt.z");

/// A time zone: its standard offset and, if it has one, its daylight-saving rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Zone {
    /// Seconds east of UTC.
    std: i32,
    dst: Option<Dst>,
    /// Changes no rule can say (Morocco's around Ramadan), as (unix time, offset from then on),
    /// oldest first: followed until the last one, the rule after it.
    listed: &'static [(i64, i32)],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Dst {
    offset: i32,
    start: Rule,
    end: Rule,
}

/// When a change happens: a day of the year and a local time (seconds, may be negative or past
/// 24 h), in the offset in force before the change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Rule {
    day: Day,
    time: i32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Day {
    /// `Mm.w.d`: the w-th (5 = last) weekday d (0 = Sunday) of month m.
    Month { month: u32, week: u32, weekday: u32 },
    /// `Jn`: day n (1–365), February 29 never counted.
    Julian(u32),
    /// `n`: day n (0–365), February 29 counted.
    Ordinal(u32),
}

struct Cursor<'a>(&'a [u8]);

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.0.first().copied()
    }

    fn eat(&mut self, b: u8) -> bool {
        if self.peek() == Some(b) {
            self.0 = &self.0[1..];
            true
        } else {
            false
        }
    }

    fn number(&mut self) -> Option<u32> {
        let digits = self.0.iter().take_while(|b| b.is_ascii_digit()).count();
        if digits == 0 {
            return None;
        }
        let n = std::str::from_utf8(&self.0[..digits]).ok()?.parse().ok()?;
        self.0 = &self.0[digits..];
        Some(n)
    }

    /// A zone abbreviation: `<+03>` or letters.
    fn name(&mut self) -> Option<()> {
        if self.eat(b'<') {
            let end = self.0.iter().position(|b| *b == b'>')?;
            self.0 = &self.0[end + 1..];
        } else {
            let letters = self
                .0
                .iter()
                .take_while(|b| b.is_ascii_alphabetic())
                .count();
            if letters < 3 {
                return None;
            }
            self.0 = &self.0[letters..];
        }
        Some(())
    }

    /// `[+-]h[:mm[:ss]]` in seconds.
    fn hms(&mut self) -> Option<i32> {
        let sign = if self.eat(b'-') {
            -1
        } else {
            self.eat(b'+');
            1
        };
        let mut secs = self.number()? as i32 * 3600;
        if self.eat(b':') {
            secs += self.number()? as i32 * 60;
            if self.eat(b':') {
                secs += self.number()? as i32;
            }
        }
        Some(sign * secs)
    }

    fn rule(&mut self) -> Option<Rule> {
        let day = if self.eat(b'M') {
            let month = self.number()?;
            self.eat(b'.').then_some(())?;
            let week = self.number()?;
            self.eat(b'.').then_some(())?;
            let weekday = self.number()?;
            ((1..=12).contains(&month) && (1..=5).contains(&week) && weekday <= 6).then_some(
                Day::Month {
                    month,
                    week,
                    weekday,
                },
            )?
        } else if self.eat(b'J') {
            Day::Julian(self.number().filter(|n| (1..=365).contains(n))?)
        } else {
            Day::Ordinal(self.number().filter(|n| *n <= 365)?)
        };
        let time = if self.eat(b'/') {
            self.hms()?
        } else {
            2 * 3600
        };
        Some(Rule { day, time })
    }
}

impl Zone {
    /// A POSIX TZ rule: `std offset [dst [offset] ,start[/time],end[/time]]`.
    fn parse_rule(text: &str) -> Option<Self> {
        let mut c = Cursor(text.as_bytes());
        c.name()?;
        // (POSIX offsets count west of UTC.)
        let std = -c.hms()?;
        if c.peek().is_none() {
            return Some(Zone {
                std,
                dst: None,
                listed: &[],
            });
        }
        c.name()?;
        let offset = match c.peek() {
            Some(b',') => std + 3600,
            _ => -c.hms()?,
        };
        c.eat(b',').then_some(())?;
        let start = c.rule()?;
        c.eat(b',').then_some(())?;
        let end = c.rule()?;
        c.peek().is_none().then_some(Zone {
            std,
            dst: Some(Dst { offset, start, end }),
            listed: &[],
        })
    }

    /// A line of `zones.txt`'s rule part: the rule, then `|time:offset,…` if changes are listed.
    fn parse(text: &str) -> Option<Self> {
        let (rule, listed) = match text.split_once('|') {
            Some((rule, listed)) => (rule, Some(listed)),
            None => (text, None),
        };
        let mut zone = Self::parse_rule(rule)?;
        if let Some(listed) = listed {
            let changes: Vec<(i64, i32)> = listed
                .split(',')
                .map(|c| {
                    let (t, o) = c.split_once(':')?;
                    Some((t.parse().ok()?, o.parse().ok()?))
                })
                .collect::<Option<_>>()?;
            // (Parsed once per process, into the table that lives as long as it.)
            zone.listed = changes.leak();
        }
        Some(zone)
    }

    /// The zone named `name` (`Europe/Berlin`, `UTC`), if it is one.
    pub fn named(name: &str) -> Option<Self> {
        static TABLE: OnceLock<HashMap<&'static str, Zone>> = OnceLock::new();
        TABLE
            .get_or_init(|| {
                ZONES_TABLE
                    .text()
                    .lines()
                    .filter_map(|line| {
                        let (name, rule) = line.split_once(' ')?;
                        Some((name, Zone::parse(rule)?))
                    })
                    .collect()
            })
            .get(name)
            .copied()
    }

    pub const UTC: Zone = Zone {
        std: 0,
        dst: None,
        listed: &[],
    };

    /// The offset (seconds east of UTC) in force at `t`.
    pub fn offset_at(&self, t: DateTime<Utc>) -> i32 {
        if let (Some(first), Some(last)) = (self.listed.first(), self.listed.last()) {
            let secs = t.timestamp();
            if secs >= first.0 && secs < last.0 {
                let i = self.listed.partition_point(|c| c.0 <= secs);
                return self.listed[i - 1].1;
            }
        }
        let Some(dst) = self.dst else {
            return self.std;
        };
        // (At the ends of what a time holds, where a year's changes cannot be computed, the
        // standard offset: no schedule reaches there, and nothing may panic on the way.)
        let Some(local) = t.checked_add_signed(Duration::seconds(self.std as i64)) else {
            return self.std;
        };
        let year = local.year();
        if !(-262_000..=262_000).contains(&year) {
            return self.std;
        }
        let start = dst.start.instant(year, self.std);
        let end = dst.end.instant(year, dst.offset);
        let in_dst = if start <= end {
            start <= t && t < end
        } else {
            !(end <= t && t < start)
        };
        if in_dst {
            dst.offset
        } else {
            self.std
        }
    }

    /// The local date at `t`.
    pub fn local_date(&self, t: DateTime<Utc>) -> NaiveDate {
        let local = t
            .naive_utc()
            .checked_add_signed(Duration::seconds(self.offset_at(t) as i64));
        local.unwrap_or(t.naive_utc()).date()
    }

    /// When the local time `local` happens: once, twice (clocks went back) or never (clocks
    /// went forward over it).
    pub fn from_local(&self, local: NaiveDateTime) -> LocalResult<DateTime<Utc>> {
        let mut offsets = vec![self.std];
        if let Some(dst) = self.dst {
            offsets.push(dst.offset);
        }
        offsets.extend(self.listed.iter().map(|c| c.1));
        offsets.sort();
        offsets.dedup();
        let mut found: Vec<DateTime<Utc>> = offsets
            .into_iter()
            .filter_map(|off| {
                local
                    .checked_sub_signed(Duration::seconds(off as i64))
                    .map(|t| t.and_utc())
            })
            .filter(|t| {
                let off = (local - t.naive_utc()).num_seconds() as i32;
                self.offset_at(*t) == off
            })
            .collect();
        found.sort();
        found.dedup();
        match found.as_slice() {
            [] => LocalResult::None,
            [one] => LocalResult::Single(*one),
            [first, .., last] => LocalResult::Ambiguous(*first, *last),
        }
    }
}

impl Rule {
    /// The UTC instant of this change in `year`, `before` being the offset in force until then.
    fn instant(&self, year: i32, before: i32) -> DateTime<Utc> {
        let date = match self.day {
            Day::Month {
                month,
                week,
                weekday,
            } => {
                let first = NaiveDate::from_ymd_opt(year, month, 1).expect("a valid month");
                let wd = Weekday::try_from(((weekday + 6) % 7) as u8).expect("0 to 6");
                let mut day = first
                    + Duration::days(
                        ((7 + wd.num_days_from_monday() as i64
                            - first.weekday().num_days_from_monday() as i64)
                            % 7)
                            + 7 * (week as i64 - 1),
                    );
                while day.month() != month {
                    day -= Duration::days(7);
                }
                day
            }
            Day::Julian(n) => {
                let leap = NaiveDate::from_ymd_opt(year, 2, 29).is_some();
                let ordinal = if leap && n >= 60 { n + 1 } else { n };
                NaiveDate::from_yo_opt(year, ordinal).expect("a valid day")
            }
            Day::Ordinal(n) => NaiveDate::from_yo_opt(year, n + 1)
                .unwrap_or_else(|| NaiveDate::from_yo_opt(year, 365).expect("a valid day")),
        };
        (date.and_hms_opt(0, 0, 0).expect("midnight")
            + Duration::seconds(self.time as i64 - before as i64))
        .and_utc()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn every_zone_in_the_table_parses() {
        let lines = ZONES_TABLE.text().lines().count();
        let parsed = ZONES_TABLE
            .text()
            .lines()
            .filter(|l| {
                l.split_once(' ')
                    .and_then(|(_, r)| Zone::parse(r))
                    .is_some()
            })
            .count();
        assert_eq!(parsed, lines);
        assert!(lines > 400);
        assert!(Zone::named("Mars/Olympus").is_none());
    }

    #[test]
    fn offsets_follow_each_zones_rule() {
        let berlin = Zone::named("Europe/Berlin").unwrap();
        // Clocks go forward 2026-03-29 01:00 UTC, back 2026-10-25 01:00 UTC.
        assert_eq!(berlin.offset_at(utc("2026-03-29T00:59:59Z")), 3600);
        assert_eq!(berlin.offset_at(utc("2026-03-29T01:00:00Z")), 7200);
        assert_eq!(berlin.offset_at(utc("2026-10-25T00:59:59Z")), 7200);
        assert_eq!(berlin.offset_at(utc("2026-10-25T01:00:00Z")), 3600);
        // Southern hemisphere: Sydney is on daylight time over the new year.
        let sydney = Zone::named("Australia/Sydney").unwrap();
        assert_eq!(sydney.offset_at(utc("2026-01-15T00:00:00Z")), 11 * 3600);
        assert_eq!(sydney.offset_at(utc("2026-07-15T00:00:00Z")), 10 * 3600);
        // New York, 2026-03-08 07:00 UTC and 2026-11-01 06:00 UTC.
        let ny = Zone::named("America/New_York").unwrap();
        assert_eq!(ny.offset_at(utc("2026-03-08T06:59:00Z")), -5 * 3600);
        assert_eq!(ny.offset_at(utc("2026-03-08T07:00:00Z")), -4 * 3600);
        assert_eq!(ny.offset_at(utc("2026-11-01T05:59:00Z")), -4 * 3600);
        assert_eq!(ny.offset_at(utc("2026-11-01T06:00:00Z")), -5 * 3600);
        // Fractional offsets, and a zone without daylight time.
        let chatham = Zone::named("Pacific/Chatham").unwrap();
        assert_eq!(
            chatham.offset_at(utc("2026-07-01T00:00:00Z")),
            12 * 3600 + 45 * 60
        );
        assert_eq!(
            Zone::named("Asia/Kolkata")
                .unwrap()
                .offset_at(utc("2026-07-01T00:00:00Z")),
            5 * 3600 + 30 * 60
        );
        assert_eq!(Zone::named("UTC").unwrap(), Zone::UTC);
        // Morocco's changes around Ramadan are listed: +00 from 2026-02-15 02:00 UTC to
        // 2026-03-22 02:00 UTC, +01 around them.
        let casablanca = Zone::named("Africa/Casablanca").unwrap();
        assert_eq!(casablanca.offset_at(utc("2026-01-15T00:00:00Z")), 3600);
        assert_eq!(casablanca.offset_at(utc("2026-03-01T00:00:00Z")), 0);
        assert_eq!(casablanca.offset_at(utc("2026-04-01T00:00:00Z")), 3600);
    }

    #[test]
    fn a_local_time_happens_once_twice_or_never() {
        let berlin = Zone::named("Europe/Berlin").unwrap();
        let local = |s: &str| NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S").unwrap();
        assert_eq!(
            berlin.from_local(local("2026-07-01T12:00:00")),
            LocalResult::Single(utc("2026-07-01T10:00:00Z"))
        );
        assert_eq!(
            berlin.from_local(local("2026-03-29T02:30:00")),
            LocalResult::None
        );
        assert_eq!(
            berlin.from_local(local("2026-10-25T02:30:00")),
            LocalResult::Ambiguous(utc("2026-10-25T00:30:00Z"), utc("2026-10-25T01:30:00Z"))
        );
        assert_eq!(
            berlin.local_date(utc("2026-10-24T22:30:00Z")),
            NaiveDate::from_ymd_opt(2026, 10, 25).unwrap()
        );
    }
}
