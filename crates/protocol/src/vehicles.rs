//! The `vehicle_events` analysis: in-car health emergencies by district × age group × kind, counted
//! from a vehicle service's events log (`events.jsonl`) by the node that service runs, and released
//! through the same disclosure step as a hospital's tables.
//!
//! The events log is the vehicle service's only record that outlives the retention window; it holds
//! no vital signs (see `docs/VEHICLES.md`). Its line format is defined here, once, because the
//! service writes it and a node reads it.

use std::collections::BTreeSet;
use std::path::Path;

use medfed_privacy::{Measure, Table};
use serde::{Deserialize, Serialize};

use crate::study::{check_text, StudyError};
use crate::surveil::parse_day;

/// The table's name and its dimensions, in order.
pub const TABLE: &str = "vehicle_events";
pub const DIMS: [&str; 3] = ["district", "age_group", "kind"];
/// Korea Standard Time, UTC+9, in which an event's day is counted.
const KST_OFFSET_MS: i64 = 9 * 3_600_000;

/// Count the in-car emergencies decided (called to 119, or advised to the driver) whose onset falls
/// in `[from, to]` (days in Korea Standard Time; either end may be left open).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VehicleEvents {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

impl VehicleEvents {
    pub fn check(&self, path: &str) -> Result<(), StudyError> {
        let bad = |field: &str, message: &str| StudyError {
            path: format!("{path}.{field}"),
            message: message.to_string(),
        };
        let from = match &self.from {
            Some(s) => Some(parse_day(s).ok_or_else(|| bad("from", "not a date YYYY-MM-DD"))?),
            None => None,
        };
        let to = match &self.to {
            Some(s) => Some(parse_day(s).ok_or_else(|| bad("to", "not a date YYYY-MM-DD"))?),
            None => None,
        };
        if let (Some(a), Some(b)) = (from, to) {
            if b < a {
                return Err(bad("to", "before from"));
            }
        }
        if let Some(l) = &self.label {
            check_text(l, &format!("{path}.label"))?;
        }
        Ok(())
    }

    /// The window's first and last day (days since 1970-01-01), each `None` when open.
    pub fn days(&self) -> (Option<i64>, Option<i64>) {
        let day = |s: &Option<String>| s.as_deref().and_then(parse_day);
        (day(&self.from), day(&self.to))
    }

    /// Whether an event with this onset (Unix milliseconds) is in the window.
    pub fn covers(&self, onset_ms: i64) -> bool {
        in_days(self.days(), onset_ms)
    }
}

/// Whether an onset (Unix milliseconds) falls on a Korean day in `[first, last]`.
fn in_days((first, last): (Option<i64>, Option<i64>), onset_ms: i64) -> bool {
    let day = (onset_ms + KST_OFFSET_MS).div_euclid(86_400_000);
    first.is_none_or(|a| day >= a) && last.is_none_or(|b| day <= b)
}

/// One line of a vehicle service's `events.jsonl`: what happened to one detected event, never the
/// vital signs behind it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventLine {
    pub event_id: String,
    pub vin: String,
    pub kind: String,
    pub kinds: Vec<String>,
    pub onset_ms: i64,
    pub at_ms: i64,
    /// `prompted`, `cancelled`, `called`, `acknowledged` or `advised`.
    pub outcome: String,
    pub district: String,
    pub age_group: Option<String>,
}

const OUTCOMES: [&str; 5] = ["prompted", "cancelled", "called", "acknowledged", "advised"];

/// Read an events log: the file itself, or a service's state folder holding `events.jsonl`. A
/// missing log is an empty one (the service has decided nothing yet). A line that does not parse, or
/// names an unknown outcome or an empty district or kind, fails the whole read with the file, the
/// line and the field: a count from a log with unreadable lines would be silently short.
pub fn read_events(path: &Path) -> Result<Vec<EventLine>, String> {
    let p = if path.is_dir() {
        path.join("events.jsonl")
    } else {
        path.to_path_buf()
    };
    let text = match std::fs::read_to_string(&p) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("{}: {e}", p.display())),
    };
    let mut out = Vec::new();
    for (i, l) in text.lines().enumerate() {
        if l.trim().is_empty() {
            continue;
        }
        let at = |what: String| format!("{} line {}: {what}", p.display(), i + 1);
        let e: EventLine = serde_json::from_str(l).map_err(|e| at(e.to_string()))?;
        if !OUTCOMES.contains(&e.outcome.as_str()) {
            return Err(at(format!("field outcome: unknown {:?}", e.outcome)));
        }
        for (field, v) in [("district", &e.district), ("kind", &e.kind)] {
            if v.trim().is_empty() {
                return Err(at(format!("field {field}: empty")));
            }
        }
        out.push(e);
    }
    Ok(out)
}

/// The local step: each decided event (`called` or `advised`) counted once, by district, age group
/// (`unknown` when the driver shared none) and kind, with margins. The release step then applies the
/// node's small-cell rule.
pub fn count(events: &[EventLine], spec: &VehicleEvents) -> Table {
    let dims: Vec<(&str, bool)> = DIMS.iter().map(|d| (*d, true)).collect();
    let mut t = Table::new(TABLE, &dims, vec![Measure::count("events")]);
    let mut seen = BTreeSet::new();
    let window = spec.days();
    for e in events {
        if !matches!(e.outcome.as_str(), "called" | "advised")
            || !in_days(window, e.onset_ms)
            || !seen.insert(e.event_id.as_str())
        {
            continue;
        }
        let age = e.age_group.clone().unwrap_or_else(|| "unknown".into());
        t.add(vec![e.district.clone(), age, e.kind.clone()], &[1.0]);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(id: &str, outcome: &str, onset_ms: i64) -> EventLine {
        EventLine {
            event_id: id.into(),
            vin: "KMHSM042000000001".into(),
            kind: "asystole".into(),
            kinds: vec!["asystole".into()],
            onset_ms,
            at_ms: onset_ms + 20_000,
            outcome: outcome.into(),
            district: "Jongno-gu".into(),
            age_group: Some("60-69".into()),
        }
    }

    #[test]
    fn counts_each_decided_event_once_in_its_kst_day() {
        // 2026-03-01 00:30 KST is 2026-02-28 15:30 UTC.
        let t0 = 1_772_292_600_000;
        let events = vec![
            line("a", "prompted", t0),
            line("a", "called", t0),
            line("a", "acknowledged", t0),
            line("a", "called", t0),
            line("b", "cancelled", t0),
            line("c", "advised", t0),
        ];
        let all = VehicleEvents {
            id: "v".into(),
            from: None,
            to: None,
            label: None,
        };
        let t = count(&events, &all);
        let total: f64 = t.cells.values().map(|v| v[0]).sum();
        assert_eq!(total, 2.0, "{:?}", t.cells);
        assert_eq!(t.cells.len(), 1, "one district, age group and kind");
        let march = VehicleEvents {
            from: Some("2026-03-01".into()),
            to: Some("2026-03-01".into()),
            ..all.clone()
        };
        assert!(march.covers(t0));
        let feb = VehicleEvents {
            from: Some("2026-02-28".into()),
            to: Some("2026-02-28".into()),
            ..all
        };
        assert!(!feb.covers(t0), "the UTC day is not the Korean day");
        assert!(feb.check("a").is_ok());
        let backwards = VehicleEvents {
            from: Some("2026-03-02".into()),
            ..feb
        };
        assert_eq!(backwards.check("a").unwrap_err().path, "a.to");
    }

    #[test]
    fn a_bad_line_names_the_file_line_and_field() {
        let d = tempfile::tempdir().unwrap();
        let ok = serde_json::to_string(&line("a", "called", 0)).unwrap();
        let bad = ok.replace("\"called\"", "\"maybe\"");
        std::fs::write(d.path().join("events.jsonl"), format!("{ok}\n\n{bad}\n")).unwrap();
        let e = read_events(d.path()).unwrap_err();
        assert!(e.contains("events.jsonl line 3: field outcome"), "{e}");
        std::fs::write(
            d.path().join("events.jsonl"),
            format!("{ok}\n{{\"event_id\":1}}\n"),
        )
        .unwrap();
        let e = read_events(&d.path().join("events.jsonl")).unwrap_err();
        assert!(e.contains("line 2"), "{e}");
        assert!(read_events(&d.path().join("none.jsonl"))
            .unwrap()
            .is_empty());
    }
}
