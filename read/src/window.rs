//! The time windows every command takes (`flux incident replay 14:00..14:05`, `flux state
//! history --between A B`), in local time:
//!
//! - `14:00..14:05` — today (or `--date 2026-03-10`); an end before the start is the next
//!   day (`23:55..00:05`); seconds optional (`14:00:30`);
//! - `2026-03-10T14:00..2026-03-10T14:05` (also with a space, or an RFC 3339 offset);
//! - `-30m..` — from 30 minutes ago until now (units `s`, `m`, `h`, `d`), `-2h..-1h`;
//! - `..now` — from the start of the record until now; an empty end is now.

use chrono::{DateTime, Duration, Local, NaiveDate, NaiveDateTime, NaiveTime, TimeZone};
use flux_store::Nanos;

/// A half-open time range `[from, to)` in ns since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Start (inclusive).
    pub from: Nanos,
    /// End (exclusive).
    pub to: Nanos,
}

/// Why a window could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WindowError {
    /// Not `START..END`.
    #[error("window {0:?}: expected START..END, e.g. 14:00..14:05, -30m.., ..now, 2026-03-10T14:00..2026-03-10T14:05")]
    Shape(String),
    /// One end is not a time Flux reads.
    #[error(
        "window {window:?}: {end:?} is not a time (HH:MM[:SS], YYYY-MM-DD[T]HH:MM[:SS], -30m, now)"
    )]
    Time {
        /// The whole window.
        window: String,
        /// The end that failed.
        end: String,
    },
    /// The end is not after the start.
    #[error("window {0:?} is empty: its end is not after its start")]
    Empty(String),
    /// A local time that does not exist (skipped by a DST change).
    #[error(
        "window {0:?}: that local time does not exist (a daylight-saving change); give an offset"
    )]
    NoSuchLocalTime(String),
}

/// Parses `spec` relative to `now`; bare times of day fall on `date` (default: `now`'s).
pub fn parse(
    spec: &str,
    date: Option<NaiveDate>,
    now: DateTime<Local>,
) -> Result<Window, WindowError> {
    let (a, b) = spec
        .split_once("..")
        .ok_or_else(|| WindowError::Shape(spec.to_string()))?;
    let day = date.unwrap_or_else(|| now.date_naive());
    let end = |s: &str| -> Result<Option<Point>, WindowError> {
        point(s.trim(), day, now).map_err(|e| match e {
            PointError::NotATime => WindowError::Time {
                window: spec.to_string(),
                end: s.trim().to_string(),
            },
            PointError::Nonexistent => WindowError::NoSuchLocalTime(spec.to_string()),
        })
    };
    let from = match end(a)? {
        Some(p) => p.at,
        None => DateTime::<Local>::from(DateTime::UNIX_EPOCH),
    };
    let to = match end(b)? {
        Some(p) => {
            // `23:55..00:05`: a bare time of day before the start is on the next day.
            if p.time_of_day && p.at < from {
                p.at + Duration::days(1)
            } else {
                p.at
            }
        }
        None => now,
    };
    if to <= from {
        return Err(WindowError::Empty(spec.to_string()));
    }
    Ok(Window {
        from: nanos(from),
        to: nanos(to),
    })
}

/// `--between A B`: the window from `a` to `b`, each end in any form [`parse`] reads.
pub fn between(a: &str, b: &str, now: DateTime<Local>) -> Result<Window, WindowError> {
    parse(&format!("{a}..{b}"), None, now)
}

struct Point {
    at: DateTime<Local>,
    time_of_day: bool,
}

enum PointError {
    NotATime,
    Nonexistent,
}

fn point(s: &str, day: NaiveDate, now: DateTime<Local>) -> Result<Option<Point>, PointError> {
    if s.is_empty() {
        return Ok(None);
    }
    if s.eq_ignore_ascii_case("now") {
        return Ok(Some(Point {
            at: now,
            time_of_day: false,
        }));
    }
    if let Some(ago) = s.strip_prefix('-') {
        let ago = relative(ago).ok_or(PointError::NotATime)?;
        return Ok(Some(Point {
            at: now - ago,
            time_of_day: false,
        }));
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(Some(Point {
            at: t.with_timezone(&Local),
            time_of_day: false,
        }));
    }
    for format in ["%H:%M:%S", "%H:%M"] {
        if let Ok(t) = NaiveTime::parse_from_str(s, format) {
            return local(day.and_time(t)).map(|at| {
                Some(Point {
                    at,
                    time_of_day: true,
                })
            });
        }
    }
    for format in [
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, format) {
            return local(t).map(|at| {
                Some(Point {
                    at,
                    time_of_day: false,
                })
            });
        }
    }
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return local(d.and_time(NaiveTime::MIN)).map(|at| {
            Some(Point {
                at,
                time_of_day: false,
            })
        });
    }
    Err(PointError::NotATime)
}

/// `30m`, `2h`, `90s`, `1d`.
fn relative(s: &str) -> Option<Duration> {
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = s.split_at(split);
    let n: i64 = n.parse().ok()?;
    match unit {
        "s" => Duration::try_seconds(n),
        "m" | "min" => Duration::try_minutes(n),
        "h" => Duration::try_hours(n),
        "d" => Duration::try_days(n),
        _ => None,
    }
}

fn local(t: NaiveDateTime) -> Result<DateTime<Local>, PointError> {
    // Ambiguous (a DST fall-back hour): the earlier of the two.
    Local
        .from_local_datetime(&t)
        .earliest()
        .ok_or(PointError::Nonexistent)
}

fn nanos(t: DateTime<Local>) -> Nanos {
    t.timestamp_nanos_opt()
        .and_then(|n| u64::try_from(n).ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Local> {
        local(
            NaiveDate::from_ymd_opt(2026, 3, 10)
                .and_then(|d| d.and_hms_opt(15, 0, 0))
                .expect("date"),
        )
        .ok()
        .expect("local")
    }

    fn at(d: (i32, u32, u32), t: (u32, u32, u32)) -> Nanos {
        nanos(
            local(
                NaiveDate::from_ymd_opt(d.0, d.1, d.2)
                    .and_then(|d| d.and_hms_opt(t.0, t.1, t.2))
                    .expect("date"),
            )
            .ok()
            .expect("local"),
        )
    }

    #[test]
    fn times_of_day_fall_on_today_or_the_given_date() {
        let w = parse("14:00..14:05", None, now()).expect("w");
        assert_eq!(w.from, at((2026, 3, 10), (14, 0, 0)));
        assert_eq!(w.to, at((2026, 3, 10), (14, 5, 0)));
        let d = NaiveDate::from_ymd_opt(2026, 3, 1);
        let w = parse("14:00:30..14:05", d, now()).expect("w");
        assert_eq!(w.from, at((2026, 3, 1), (14, 0, 30)));
        let w = parse("23:55..00:05", None, now()).expect("w");
        assert_eq!(w.to, at((2026, 3, 11), (0, 5, 0)), "past midnight");
    }

    #[test]
    fn full_timestamps_relative_and_open_ends() {
        let w = parse("2026-03-09T14:00..2026-03-09 14:05:10", None, now()).expect("w");
        assert_eq!(w.from, at((2026, 3, 9), (14, 0, 0)));
        assert_eq!(w.to, at((2026, 3, 9), (14, 5, 10)));
        let w = parse("-30m..", None, now()).expect("w");
        assert_eq!(w.from, at((2026, 3, 10), (14, 30, 0)));
        assert_eq!(w.to, nanos(now()));
        let w = parse("-2h..-1h", None, now()).expect("w");
        assert_eq!(
            (w.from, w.to),
            (at((2026, 3, 10), (13, 0, 0)), at((2026, 3, 10), (14, 0, 0)))
        );
        let w = parse("..now", None, now()).expect("w");
        assert_eq!((w.from, w.to), (0, nanos(now())));
        let w = parse("2026-03-10T13:00:00Z..", None, now()).expect("w");
        assert!(w.from > 0 && w.to == nanos(now()));
    }

    #[test]
    fn mistakes_are_named() {
        for (spec, needle) in [
            ("14:00", "START..END"),
            ("14:00..lunch", "\"lunch\" is not a time"),
            ("-5x..", "\"-5x\" is not a time"),
            ("14:05..14:05", "is empty"),
            ("-1h..-2h", "is empty"),
        ] {
            let e = parse(spec, None, now()).expect_err(spec).to_string();
            assert!(e.contains(needle), "{spec}: {e}");
        }
    }
}
