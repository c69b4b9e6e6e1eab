//! Tables: the statistic of every stratified analysis (characterization, cross-tabs, descriptive
//! statistics, incidence, Kaplan–Meier, comparative studies).
//!
//! A table has dimensions (stratum columns) and measures. A measure is either a **count** (persons,
//! records, events: the small-cell rule applies to it) or a **sum** (person-days, sums of values and
//! of their squares: released only in a cell whose counts pass). Sums of the released cells of all
//! sites are the pooled sums, so every table analysis is exact when pooled.
//!
//! Disclosure control of a table, in order:
//! 1. *base population*: a table about a cohort is withheld whole when the cohort is smaller than
//!    `min_cohort_size`, or when its persons differ from an earlier released set's by fewer than
//!    `min_cell_count` (differencing and trackers);
//! 2. *primary suppression*: a cell with any count in `1..min_cell_count` is withheld;
//! 3. *secondary suppression* along the dimensions that partition what is counted (sex partitions
//!    persons; condition concept does not, since a person has many conditions): the node adds every
//!    margin over those dimensions (`*`), and wherever a line of the table (one partition dimension
//!    varying, the others fixed, with its margin) has exactly one withheld cell, it also withholds
//!    the smallest other cell of that line, repeating until no line has exactly one. A withheld cell
//!    can then not be recovered as a margin minus the released cells. Margins are released with the
//!    table on purpose: they are what another analysis (persons by sex, say) would release anyway,
//!    so the check sees the equations an attacker could write.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::{near_an_earlier_release, History, Policy, Suppression};

/// The key of a margin in one dimension.
pub const ALL: &str = "*";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MeasureKind {
    /// Persons, records or events: subject to the small-cell rule.
    Count,
    /// A sum over the persons or records of the cell (person-days, Σx, Σx²).
    Sum,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Measure {
    pub name: String,
    pub kind: MeasureKind,
}

impl Measure {
    pub fn count(name: &str) -> Measure {
        Measure {
            name: name.to_string(),
            kind: MeasureKind::Count,
        }
    }
    pub fn sum(name: &str) -> Measure {
        Measure {
            name: name.to_string(),
            kind: MeasureKind::Sum,
        }
    }
}

/// One table computed at a site (before release).
#[derive(Clone, Debug)]
pub struct Table {
    /// Name of the table within its analysis (for example the Achilles analysis id).
    pub name: String,
    pub dims: Vec<String>,
    pub measures: Vec<Measure>,
    /// Per dimension: whether its values partition what is counted (each person or record is in
    /// exactly one value, given the other dimensions), so that margins over it are sums of cells.
    pub partition: Vec<bool>,
    pub cells: BTreeMap<Vec<String>, Vec<f64>>,
    /// How long the local step took, in milliseconds (released: it describes the query, not people).
    pub elapsed_ms: u64,
}

impl Table {
    /// `dims`: name and whether the dimension partitions what is counted.
    pub fn new(name: &str, dims: &[(&str, bool)], measures: Vec<Measure>) -> Table {
        Table {
            name: name.to_string(),
            dims: dims.iter().map(|d| d.0.to_string()).collect(),
            partition: dims.iter().map(|d| d.1).collect(),
            measures,
            cells: BTreeMap::new(),
            elapsed_ms: 0,
        }
    }

    /// Add `values` to the cell `key` (cells are summed, so rows may arrive in pieces).
    pub fn add(&mut self, key: Vec<String>, values: &[f64]) {
        let cell = self
            .cells
            .entry(key)
            .or_insert_with(|| vec![0.0; values.len()]);
        for (c, v) in cell.iter_mut().zip(values) {
            *c += v;
        }
    }
}

/// A released table: every cell either carries its values or says why they were withheld.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleasedTable {
    pub name: String,
    pub dims: Vec<String>,
    pub measures: Vec<Measure>,
    pub partition: Vec<bool>,
    pub elapsed_ms: u64,
    /// Present when the whole table was withheld (base population too small or too close to an
    /// earlier release); `cells` is then empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suppressed: Option<Suppression>,
    pub cells: Vec<ReleasedCell>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleasedCell {
    pub key: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<Vec<f64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suppressed: Option<Suppression>,
}

/// Check a base population against the policy and the release history. `None`: it may be used.
pub(crate) fn check_base(
    base: &[i64],
    policy: &Policy,
    history: &dyn History,
) -> Option<Suppression> {
    let n = base.len() as u64;
    if n > 0 && n < policy.min_cohort_size {
        return Some(Suppression::MinCohortSize {
            threshold: policy.min_cohort_size,
        });
    }
    let k = policy.min_cell_count;
    (policy.differencing && near_an_earlier_release(base, k, history))
        .then_some(Suppression::Differencing { threshold: k })
}

pub(crate) fn release_table(t: Table, policy: &Policy, base: Option<Suppression>) -> ReleasedTable {
    let k = policy.min_cell_count;
    let mut out = ReleasedTable {
        name: t.name,
        dims: t.dims,
        measures: t.measures,
        partition: t.partition,
        elapsed_ms: t.elapsed_ms,
        suppressed: None,
        cells: Vec::new(),
    };
    if let Some(rule) = base {
        out.suppressed = Some(rule);
        return out;
    }
    let counts: Vec<usize> = out
        .measures
        .iter()
        .enumerate()
        .filter(|(_, m)| m.kind == MeasureKind::Count)
        .map(|(i, _)| i)
        .collect();
    let mut cells = t.cells;
    if out.partition.iter().any(|p| *p) {
        add_margins(&mut cells, &out.partition, out.measures.len());
    }
    // Primary suppression.
    let small = |v: &[f64]| counts.iter().any(|&i| v[i] > 0.0 && v[i] < k as f64);
    let mut withheld: BTreeMap<Vec<String>, Suppression> = cells
        .iter()
        .filter(|(_, v)| small(v))
        .map(|(key, _)| (key.clone(), Suppression::MinCellCount { threshold: k }))
        .collect();
    // Secondary suppression.
    if !withheld.is_empty() {
        let size = |v: &[f64]| counts.first().map(|&i| v[i]).unwrap_or(0.0);
        // The lines of the table, once: for each partition dimension, the cells that agree on every
        // other dimension (margins included).
        let mut lines: Vec<Vec<&Vec<String>>> = Vec::new();
        for (d, _) in out.partition.iter().enumerate().filter(|p| *p.1) {
            let mut by_line: BTreeMap<Vec<&str>, Vec<&Vec<String>>> = BTreeMap::new();
            for key in cells.keys() {
                let line: Vec<&str> = key
                    .iter()
                    .enumerate()
                    .map(|(i, s)| if i == d { "" } else { s.as_str() })
                    .collect();
                by_line.entry(line).or_default().push(key);
            }
            lines.extend(by_line.into_values());
        }
        loop {
            let mut added = None;
            for members in &lines {
                let n_withheld = members
                    .iter()
                    .filter(|k| withheld.contains_key(**k))
                    .count();
                if n_withheld != 1 || members.len() < 2 {
                    continue;
                }
                // The smallest released cell of the line, preferring a non-zero one (withholding a
                // zero hides less, but a zero is also a cell the attacker could otherwise use).
                let pick = members
                    .iter()
                    .filter(|k| !withheld.contains_key(**k))
                    .min_by(|a, b| {
                        let (va, vb) = (size(&cells[**a]), size(&cells[**b]));
                        ((va == 0.0), va)
                            .partial_cmp(&((vb == 0.0), vb))
                            .unwrap_or(std::cmp::Ordering::Equal)
                    });
                if let Some(p) = pick {
                    added = Some((*p).clone());
                    break;
                }
            }
            match added {
                Some(key) => {
                    withheld.insert(key, Suppression::Complementary { threshold: k });
                }
                None => break,
            }
        }
    }
    out.cells = cells
        .into_iter()
        .map(|(key, values)| match withheld.remove(&key) {
            Some(rule) => ReleasedCell {
                key,
                values: None,
                suppressed: Some(rule),
            },
            None => ReleasedCell {
                key,
                values: Some(values),
                suppressed: None,
            },
        })
        .collect();
    out
}

/// Add every margin over the partition dimensions: for each non-empty set of them, the cells summed
/// over it with key `*`.
fn add_margins(cells: &mut BTreeMap<Vec<String>, Vec<f64>>, partition: &[bool], width: usize) {
    let dims = partition.len();
    let leaves: Vec<(Vec<String>, Vec<f64>)> = cells
        .iter()
        .filter(|(k, _)| !k.iter().any(|s| s == ALL))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut seen: BTreeSet<Vec<String>> = BTreeSet::new();
    for mask in 1u32..(1 << dims) {
        if (0..dims).any(|i| mask & (1 << i) != 0 && !partition[i]) {
            continue;
        }
        for (key, values) in &leaves {
            let m: Vec<String> = key
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    if mask & (1 << i) != 0 {
                        ALL.to_string()
                    } else {
                        s.clone()
                    }
                })
                .collect();
            if seen.insert(m.clone()) {
                cells.insert(m.clone(), vec![0.0; width]);
            }
            let cell = cells.get_mut(&m).expect("inserted");
            for (c, v) in cell.iter_mut().zip(values) {
                *c += v;
            }
        }
    }
    if leaves.is_empty() && partition.iter().all(|p| *p) {
        // An empty population still has a (zero) grand total, so the pooled total is known.
        cells.insert(vec![ALL.to_string(); dims], vec![0.0; width]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NoHistory;

    fn policy(k: u64) -> Policy {
        Policy {
            min_cell_count: k,
            ..Policy::default()
        }
    }

    fn by_sex(cells: &[(&str, f64)]) -> Table {
        let mut t = Table::new("by_sex", &[("sex", true)], vec![Measure::count("persons")]);
        for (s, n) in cells {
            t.add(vec![s.to_string()], &[*n]);
        }
        t
    }

    fn value(r: &ReleasedTable, key: &[&str]) -> Option<f64> {
        let key: Vec<String> = key.iter().map(|s| s.to_string()).collect();
        r.cells
            .iter()
            .find(|c| c.key == key)
            .expect("cell present")
            .values
            .as_ref()
            .map(|v| v[0])
    }

    /// The attack: a suppressed cell recovered as the total minus the released cells. Secondary
    /// suppression withholds a second cell of the line, so the subtraction has two unknowns.
    #[test]
    fn suppressed_cell_cannot_be_recovered_from_the_total() {
        let r = release_table(
            by_sex(&[("female", 520.0), ("male", 470.0), ("unknown", 3.0)]),
            &policy(10),
            None,
        );
        assert_eq!(value(&r, &["unknown"]), None);
        assert_eq!(value(&r, &["*"]), Some(993.0));
        let released: f64 = r
            .cells
            .iter()
            .filter(|c| c.key[0] != ALL)
            .filter_map(|c| c.values.as_ref().map(|v| v[0]))
            .sum();
        let withheld = r
            .cells
            .iter()
            .filter(|c| c.key[0] != ALL && c.values.is_none())
            .count();
        assert_eq!(withheld, 2, "{r:?}");
        // The smallest other cell (male) is the complement.
        assert_eq!(value(&r, &["male"]), None);
        assert!(matches!(
            r.cells
                .iter()
                .find(|c| c.key == ["male"])
                .unwrap()
                .suppressed,
            Some(Suppression::Complementary { .. })
        ));
        assert!(993.0 - released > 3.0);
    }

    #[test]
    fn two_way_tables_leave_no_line_with_one_unknown() {
        let mut t = Table::new(
            "x",
            &[("age", true), ("sex", true)],
            vec![Measure::count("persons"), Measure::sum("days")],
        );
        for (a, s, n) in [
            ("0", "f", 40.0),
            ("0", "m", 2.0),
            ("1", "f", 30.0),
            ("1", "m", 25.0),
            ("2", "f", 12.0),
            ("2", "m", 50.0),
        ] {
            t.add(vec![a.into(), s.into()], &[n, n * 100.0]);
        }
        let r = release_table(t, &policy(10), None);
        let withheld: BTreeSet<Vec<String>> = r
            .cells
            .iter()
            .filter(|c| c.values.is_none())
            .map(|c| c.key.clone())
            .collect();
        assert!(withheld.contains(&vec!["0".to_string(), "m".to_string()]));
        for d in 0..2 {
            let mut lines: BTreeMap<Vec<String>, usize> = BTreeMap::new();
            for c in &r.cells {
                let mut l = c.key.clone();
                l[d] = String::new();
                *lines.entry(l).or_default() += withheld.contains(&c.key) as usize;
            }
            assert!(lines.values().all(|&n| n != 1), "{lines:?}");
        }
        // Margins are the sums of the cells, sums included.
        let all = r.cells.iter().find(|c| c.key == ["*", "*"]).unwrap();
        assert_eq!(all.values.as_ref().unwrap(), &vec![159.0, 15900.0]);
    }

    #[test]
    fn small_cohorts_and_near_duplicates_withhold_the_whole_table() {
        let p = Policy {
            min_cell_count: 5,
            min_cohort_size: 20,
            ..Policy::default()
        };
        let small: Vec<i64> = (0..12).collect();
        assert_eq!(
            check_base(&small, &p, &NoHistory),
            Some(Suppression::MinCohortSize { threshold: 20 })
        );
        struct Past(Vec<i64>);
        impl History for Past {
            fn similar(&self, _: u64, _: u64) -> Vec<Vec<i64>> {
                vec![self.0.clone()]
            }
        }
        let base: Vec<i64> = (0..100).collect();
        let one_more: Vec<i64> = (0..101).collect();
        assert_eq!(
            check_base(&one_more, &p, &Past(base.clone())),
            Some(Suppression::Differencing { threshold: 5 })
        );
        assert_eq!(check_base(&base, &p, &Past(base.clone())), None);
        let r = release_table(
            by_sex(&[("f", 50.0)]),
            &p,
            Some(Suppression::MinCohortSize { threshold: 20 }),
        );
        assert!(r.cells.is_empty() && r.suppressed.is_some());
    }

    #[test]
    fn non_additive_tables_get_primary_suppression_only() {
        let mut t = Table::new(
            "prev",
            &[("concept", false)],
            vec![Measure::count("persons")],
        );
        t.add(vec!["1".into()], &[100.0]);
        t.add(vec!["2".into()], &[4.0]);
        let r = release_table(t, &policy(5), None);
        assert_eq!(r.cells.len(), 2);
        assert_eq!(value(&r, &["1"]), Some(100.0));
        assert_eq!(value(&r, &["2"]), None);
        // Concept × sex: lines run along sex only, with a margin per concept.
        let mut t = Table::new(
            "prev_sex",
            &[("concept", false), ("sex", true)],
            vec![Measure::count("persons")],
        );
        for (c, s, n) in [
            ("1", "f", 60.0),
            ("1", "m", 3.0),
            ("2", "f", 30.0),
            ("2", "m", 30.0),
        ] {
            t.add(vec![c.into(), s.into()], &[n]);
        }
        let r = release_table(t, &policy(5), None);
        assert_eq!(value(&r, &["1", "m"]), None);
        assert_eq!(value(&r, &["1", "f"]), None, "63 - 60 would give the 3");
        assert_eq!(value(&r, &["1", "*"]), Some(63.0));
        assert_eq!(value(&r, &["2", "*"]), Some(60.0));
        assert!(r.cells.iter().all(|c| c.key[0] != ALL));
    }
}
