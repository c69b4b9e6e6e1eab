//! The `surveillance` analysis: daily syndrome counts by district × vulnerable group × syndrome,
//! added over hospitals under secure aggregation and watched by the hub's detectors
//! (`medfed_surveil`). The hub asks for the date range in chunks of `chunk_days`; each chunk is one
//! secure aggregation (`ModelStep::SecaggKeys` with `days`).

use crate::study::{check_id, check_text, StudyError};
use serde::{Deserialize, Serialize};

/// Vulnerable groups, each a documented CDM rule evaluated on the day of the visit
/// (`docs/SYNTHETIC_POPULATION.md`, "Vulnerable groups").
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VulnerableGroup {
    /// Age ≥ 65.
    Elderly,
    /// Age < 5.
    ChildU5,
    /// A Medical Aid payer plan period (payer concept 2000000003) covering the day.
    MedicalAid,
    /// A registered-disability observation (2000000001) on or before the day.
    Disability,
    /// Elderly and a living-alone observation (2000000002).
    ElderlyAlone,
    /// An outdoor-worker observation (2000000011).
    OutdoorWorker,
    /// Everyone (the reference series).
    All,
}

impl VulnerableGroup {
    pub fn name(self) -> &'static str {
        match self {
            Self::Elderly => "elderly",
            Self::ChildU5 => "child_u5",
            Self::MedicalAid => "medical_aid",
            Self::Disability => "disability",
            Self::ElderlyAlone => "elderly_alone",
            Self::OutdoorWorker => "outdoor_worker",
            Self::All => "all",
        }
    }
}

/// A syndrome: a concept set of conditions (with descendants through `concept_ancestor` unless
/// `descendants` is false). A person with a record of it on a day is one case that day.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Syndrome {
    pub id: String,
    pub concepts: Vec<i64>,
    #[serde(default = "yes")]
    pub descendants: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

fn yes() -> bool {
    true
}

/// Hub-side detector settings (nodes ignore them). Defaults are the ones `docs/SURVEILLANCE.md`
/// evaluates on the synthetic population's planted outbreaks.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Detectors {
    /// First day the detectors are evaluated (default: `from` + 28 days, so EARS and the scan have
    /// a baseline).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub evaluate_from: Option<String>,
    /// EARS baseline standard-deviation floor for daily counts.
    pub ears_min_sigma: f64,
    /// Farrington Flexible (on weekly totals, Noufaily settings): years back.
    pub farrington_years: usize,
    pub farrington_alpha: f64,
    pub scan_replications: usize,
    pub scan_alpha: f64,
    pub scan_max_days: usize,
    pub scan_max_districts: usize,
    pub scan_max_radius_km: f64,
    /// Grouping: alarms this many days apart (or less) in nearby districts are one alert.
    pub gap_days: usize,
    pub link_km: f64,
    /// Detector families that must agree before an alert is raised (a significant scan cluster is
    /// enough alone).
    pub min_families: usize,
}

impl Default for Detectors {
    fn default() -> Self {
        Detectors {
            evaluate_from: None,
            ears_min_sigma: 0.5,
            farrington_years: 1,
            farrington_alpha: 0.01,
            scan_replications: 999,
            // Run every day on every series: 0.001 (the smallest p-value of 999 replications) is
            // a recurrence interval of about three years per series, as SaTScan users choose for
            // daily prospective analyses.
            scan_alpha: 0.001,
            scan_max_days: 14,
            scan_max_districts: 8,
            scan_max_radius_km: 30.0,
            gap_days: 7,
            link_km: 15.0,
            min_families: 2,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Surveillance {
    pub id: String,
    pub syndromes: Vec<Syndrome>,
    #[serde(default = "default_groups")]
    pub groups: Vec<VulnerableGroup>,
    /// First and last day counted (`YYYY-MM-DD`).
    pub from: String,
    pub to: String,
    /// District table (`kr_sigungu`: Korea's 250 si-gun-gu); a person's district is their
    /// `location.location_source_value`.
    #[serde(default = "default_geography")]
    pub geography: String,
    /// Days per secure aggregation.
    #[serde(default = "default_chunk")]
    pub chunk_days: u32,
    /// Counts accumulate per stream at the hub across runs, so a scheduled run counts only new days
    /// and the detectors still see the history (default: the analysis id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
    #[serde(default)]
    pub detectors: Detectors,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

fn default_groups() -> Vec<VulnerableGroup> {
    use VulnerableGroup as G;
    vec![
        G::Elderly,
        G::ChildU5,
        G::MedicalAid,
        G::Disability,
        G::ElderlyAlone,
    ]
}
fn default_geography() -> String {
    "kr_sigungu".into()
}
fn default_chunk() -> u32 {
    14
}

/// Most numbers in one chunk's vector (syndromes × groups × districts × days).
pub const MAX_CHUNK_VALUES: usize = 2_000_000;

/// A district of a geography.
#[derive(Clone, Debug, PartialEq)]
pub struct District {
    pub code: String,
    pub name: String,
    pub province: String,
    pub lat: f64,
    pub lon: f64,
}

const KR_SIGUNGU: &str = include_str!("../data/kr_sigungu.csv");

/// The districts of a named geography (`kr_sigungu`), in their fixed order.
pub fn geography(name: &str) -> Option<Vec<District>> {
    if name != "kr_sigungu" {
        return None;
    }
    KR_SIGUNGU
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            Some(District {
                code: f.first()?.to_string(),
                name: f.get(1)?.to_string(),
                province: f.get(2)?.to_string(),
                lat: f.get(3)?.parse().ok()?,
                lon: f.get(4)?.parse().ok()?,
            })
        })
        .collect()
}

/// Days since 1970-01-01 of `YYYY-MM-DD`.
pub fn parse_day(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let y: i64 = s[0..4].parse().ok()?;
    let m: u32 = s[5..7].parse().ok()?;
    let d: u32 = s[8..10].parse().ok()?;
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let dim = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if !(1..=12).contains(&m) || d == 0 || d > dim[m as usize - 1] {
        return None;
    }
    Some(medfed_surveil::farrington::days_from_civil(y, m, d))
}

/// `YYYY-MM-DD` of days since 1970-01-01.
pub fn day_string(days: i64) -> String {
    let (y, m, d) = medfed_surveil::farrington::civil(days);
    format!("{y:04}-{m:02}-{d:02}")
}

impl Surveillance {
    pub fn first_day(&self) -> i64 {
        parse_day(&self.from).unwrap_or(0)
    }

    pub fn last_day(&self) -> i64 {
        parse_day(&self.to).unwrap_or(0)
    }

    pub fn stream(&self) -> &str {
        self.stream.as_deref().unwrap_or(&self.id)
    }

    pub fn districts(&self) -> Vec<District> {
        geography(&self.geography).unwrap_or_default()
    }

    /// The chunks of the date range, as (first, last) days.
    pub fn chunks(&self) -> Vec<(i64, i64)> {
        let (a, b) = (self.first_day(), self.last_day());
        let step = i64::from(self.chunk_days.max(1));
        let mut out = Vec::new();
        let mut s = a;
        while s <= b {
            out.push((s, (s + step - 1).min(b)));
            s += step;
        }
        out
    }

    /// Numbers in the vector of a chunk of `days` days: index
    /// `((syndrome × groups + group) × districts + district) × days + day`.
    pub fn vector_len(&self, days: usize) -> usize {
        self.syndromes.len() * self.groups.len() * self.districts().len() * days
    }

    pub fn check(&self, path: &str) -> Result<(), StudyError> {
        let e = |p: &str, m: String| StudyError {
            path: format!("{path}.{p}"),
            message: m,
        };
        if self.syndromes.is_empty() || self.syndromes.len() > 20 {
            return Err(e("syndromes", "needs 1 to 20 syndromes".into()));
        }
        let mut ids = std::collections::HashSet::new();
        for (i, s) in self.syndromes.iter().enumerate() {
            check_id(&s.id, &format!("{path}.syndromes[{i}].id"))?;
            if !ids.insert(&s.id) {
                return Err(e(
                    &format!("syndromes[{i}].id"),
                    format!("duplicate syndrome {:?}", s.id),
                ));
            }
            crate::catalog::check_concepts(
                &s.concepts,
                &format!("{path}.syndromes[{i}].concepts"),
            )?;
            if let Some(l) = &s.label {
                check_text(l, &format!("{path}.syndromes[{i}].label"))?;
            }
        }
        let mut g = self.groups.clone();
        g.sort();
        g.dedup();
        if g.len() != self.groups.len() || g.is_empty() {
            return Err(e("groups", "needs at least one group, each once".into()));
        }
        let (a, b) = match (parse_day(&self.from), parse_day(&self.to)) {
            (Some(a), Some(b)) => (a, b),
            (None, _) => {
                return Err(e(
                    "from",
                    format!("{:?} is not a date YYYY-MM-DD", self.from),
                ))
            }
            (_, None) => return Err(e("to", format!("{:?} is not a date YYYY-MM-DD", self.to))),
        };
        if b < a || b - a > 366 * 20 {
            return Err(e(
                "to",
                "must be on or after `from`, within 20 years".into(),
            ));
        }
        if !(1..=92).contains(&self.chunk_days) {
            return Err(e("chunk_days", "must be 1..=92".into()));
        }
        let Some(districts) = geography(&self.geography) else {
            return Err(e(
                "geography",
                format!(
                    "unknown geography {:?}; this build knows kr_sigungu",
                    self.geography
                ),
            ));
        };
        let n =
            self.syndromes.len() * self.groups.len() * districts.len() * self.chunk_days as usize;
        if n > MAX_CHUNK_VALUES {
            return Err(e(
                "chunk_days",
                format!("a chunk would carry {n} numbers; at most {MAX_CHUNK_VALUES} (fewer days per chunk)"),
            ));
        }
        if let Some(s) = &self.stream {
            check_id(s, &format!("{path}.stream"))?;
        }
        if let Some(l) = &self.label {
            check_text(l, &format!("{path}.label"))?;
        }
        let d = &self.detectors;
        if let Some(f) = &d.evaluate_from {
            if parse_day(f).is_none() {
                return Err(e("detectors.evaluate_from", format!("{f:?} is not a date")));
            }
        }
        let ok = d.ears_min_sigma >= 0.0
            && (1..=5).contains(&d.farrington_years)
            && (0.0..0.5).contains(&d.farrington_alpha)
            && (0.0..0.5).contains(&d.scan_alpha)
            && d.scan_replications <= 9999
            && (1..=28).contains(&d.scan_max_days)
            && (1..=50).contains(&d.scan_max_districts)
            && d.scan_max_radius_km >= 0.0
            && d.gap_days <= 60
            && d.link_km >= 0.0
            && (1..=4).contains(&d.min_families);
        if !ok {
            return Err(e(
                "detectors",
                "a setting is out of range (see docs/study.schema.json)".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_round_trip() {
        for s in ["1970-01-01", "2020-02-29", "2024-12-31", "2000-03-01"] {
            assert_eq!(day_string(parse_day(s).unwrap()), s);
        }
        assert_eq!(parse_day("2020-01-01"), Some(18262));
        assert!(parse_day("2021-02-29").is_none());
    }

    #[test]
    fn the_korean_district_table_loads() {
        let g = geography("kr_sigungu").unwrap();
        assert_eq!(g.len(), 250);
        assert!(g
            .iter()
            .all(|d| (33.0..39.0).contains(&d.lat) && (124.0..132.0).contains(&d.lon)));
    }
}
