//! Counts of events for the national statistics: calls and AF advice by district, age group and
//! kind, released through the same rules a hospital node applies to a table
//! ([`medfed_privacy::release`]): a cell counting 1..k−1 events is withheld, and so is the smallest
//! other cell of any line whose margin would give it away. No VIN, time or vital sign leaves.

use medfed_privacy::{Measure, ReleasedTable};
use medfed_privacy::{Policy, SiteStatistic};
use medfed_protocol::vehicles::{count, VehicleEvents, DIMS, TABLE};

use crate::service::EventLine;

/// One event per id: its final outcome (`called` or `advised`) and where, who and what, counted by
/// the node's local step ([`count`]) and released with the small-cell rule at `k`.
pub fn tabulate(events: &[EventLine], k: u64) -> ReleasedTable {
    let all = VehicleEvents {
        id: "vehicle_events".into(),
        from: None,
        to: None,
        label: None,
    };
    let policy = Policy {
        min_cell_count: k,
        ..Policy::default()
    };
    let released =
        medfed_privacy::release(SiteStatistic::tables(vec![count(events, &all)]), &policy);
    released
        .tables()
        .and_then(|t| t.first().cloned())
        .unwrap_or(ReleasedTable {
            name: TABLE.into(),
            dims: DIMS.iter().map(|d| d.to_string()).collect(),
            measures: vec![Measure::count("events")],
            partition: vec![true; 3],
            elapsed_ms: 0,
            suppressed: None,
            cells: Vec::new(),
        })
}

/// The released table as text: margins first.
pub fn render(t: &ReleasedTable) -> String {
    let mut out = format!(
        "{:<18} {:<8} {:<26} {:>7}\n",
        "district", "age", "kind", "events"
    );
    let mut cells = t.cells.clone();
    cells.sort_by_key(|c| (c.key.iter().filter(|k| *k != "*").count(), c.key.clone()));
    for c in &cells {
        let v = match (&c.values, &c.suppressed) {
            (Some(v), _) => format!("{}", v[0]),
            (None, Some(_)) => "<k".into(),
            _ => "-".into(),
        };
        out.push_str(&format!(
            "{:<18} {:<8} {:<26} {:>7}\n",
            c.key[0], c.key[1], c.key[2], v
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(id: &str, district: &str, kind: &str, outcome: &str) -> EventLine {
        EventLine {
            event_id: id.into(),
            vin: "KMHXX00XXXX000001".into(),
            kind: kind.into(),
            kinds: vec![kind.into()],
            onset_ms: 0,
            at_ms: 0,
            outcome: outcome.into(),
            district: district.into(),
            age_group: Some("40-64".into()),
        }
    }

    #[test]
    fn small_cells_are_withheld_and_an_event_counts_once() {
        let mut events = Vec::new();
        for (d, kind, n) in [
            ("Mapo-gu", "asystole", 12),
            ("Mapo-gu", "bradycardia", 10),
            ("Jung-gu", "asystole", 11),
            ("Jung-gu", "bradycardia", 2),
            ("Gangnam-gu", "asystole", 13),
            ("Gangnam-gu", "bradycardia", 9),
        ] {
            for i in 0..n {
                let id = format!("{d}{kind}{i}");
                // Each event's prompt, call and acknowledgement: counted once.
                for outcome in ["prompted", "called", "acknowledged"] {
                    events.push(ev(&id, d, kind, outcome));
                }
            }
        }
        events.push(ev("c", "Jung-gu", "tachycardia", "cancelled"));
        let t = tabulate(&events, 5);
        let cell = |d: &str, k: &str| {
            t.cells
                .iter()
                .find(|c| c.key == [d, "40-64", k])
                .unwrap_or_else(|| panic!("{d} {k}: {:?}", t.cells))
                .clone()
        };
        assert_eq!(cell("Mapo-gu", "asystole").values, Some(vec![12.0]));
        assert_eq!(cell("Mapo-gu", "bradycardia").values, Some(vec![10.0]));
        let b = cell("Jung-gu", "bradycardia");
        assert!(b.values.is_none() && b.suppressed.is_some());
        assert!(
            t.cells.iter().all(|c| c.key[2] != "tachycardia"),
            "cancelled prompts are not events"
        );
        // Secondary suppression: Jung-gu's other cell, and a second district's pair, are withheld
        // too, so that no margin minus released cells gives the 2 back.
        assert!(cell("Jung-gu", "asystole").values.is_none());
        assert!(cell("Gangnam-gu", "bradycardia").values.is_none());
        assert!(t
            .cells
            .iter()
            .all(|c| c.values.as_ref().is_none_or(|v| v[0] != 2.0)));
    }
}
