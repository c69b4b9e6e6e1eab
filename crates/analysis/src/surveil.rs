//! The `surveillance` analysis.
//!
//! At the site, [`site_counts`] counts, for each day of a chunk, the persons with a record of each
//! syndrome's concepts, by their district (`location.location_source_value`) and by every vulnerable
//! group they belong to on that day. The vector is released as aggregate-only counts and leaves the
//! site only masked (`privacy::Released::mask`).
//!
//! At the hub, [`advance`] runs one secure aggregation per chunk and hands each chunk's network
//! totals to the hub's store; [`detect`] runs the detectors of `medfed_surveil` over the stream's
//! totals and groups their alarms; [`pooled`] publishes the result under the minimum-count rule.

// Arrow batches are read column by column, row by row: indices read best.
#![allow(clippy::needless_range_loop)]
use crate::secure::{Phase, SecaggState};
use crate::tables::i64_column;
use crate::{AnalysisError, PooledResult, SiteContribution, SiteInput, SiteOutcome};
use medfed_engine::SiteEngine;
use medfed_protocol::regression::ModelStep;
use medfed_protocol::surveil::{day_string, parse_day, Surveillance, VulnerableGroup};
use medfed_surveil as sv;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// Payer concept of Medical Aid, and the observation concepts of the group rules.
const MEDICAL_AID: i64 = 2_000_000_003;
const DISABILITY: i64 = 2_000_000_001;
const LIVES_ALONE: i64 = 2_000_000_002;
const OUTDOOR_WORKER: i64 = 2_000_000_011;

/// What a site counted for one chunk.
pub struct SiteCounts {
    pub values: Vec<f64>,
    /// Syndromic person-days found.
    pub cases: u64,
    /// Of those, persons whose district is not in the geography (not counted; reported in the log).
    pub unplaced: u64,
}

fn age_on(birth: (i64, u32, u32), day: (i64, u32, u32)) -> i64 {
    let mut a = day.0 - birth.0;
    if (day.1, day.2) < (birth.1, birth.2) {
        a -= 1;
    }
    a
}

/// The site's counts for days `first..=last`.
pub async fn site_counts(
    engine: &SiteEngine,
    s: &Surveillance,
    first: i64,
    last: i64,
) -> Result<SiteCounts, AnalysisError> {
    let shape = |m: String| AnalysisError::Shape {
        id: s.id.clone(),
        message: m,
    };
    if last < first || last - first > i64::from(s.chunk_days.max(1)) {
        return Err(shape(format!("a chunk of {} days", last - first + 1)));
    }
    let districts = s.districts();
    let dindex: HashMap<&str, usize> = districts
        .iter()
        .enumerate()
        .map(|(i, d)| (d.code.as_str(), i))
        .collect();
    // Concept → syndromes.
    let mut values_sql = Vec::new();
    for (k, syn) in s.syndromes.iter().enumerate() {
        let ids = if syn.descendants {
            crate::local::expand(engine, &syn.concepts).await?
        } else {
            syn.concepts.clone()
        };
        values_sql.extend(ids.iter().map(|c| format!("({c}, {k})")));
    }
    let d = engine.dialect();
    let cases = format!(
        "SELECT DISTINCT co.person_id, {day} AS d, s.k \
         FROM condition_occurrence co JOIN (VALUES {vals}) AS s(concept_id, k) \
         ON co.condition_concept_id = s.concept_id \
         WHERE co.condition_start_date >= DATE '{a}' AND co.condition_start_date <= DATE '{b}'",
        day = d.days("co.condition_start_date"),
        vals = values_sql.join(", "),
        a = day_string(first),
        b = day_string(last),
    );
    let rows_sql = format!(
        "WITH c AS ({cases}) \
         SELECT c.person_id, c.d, c.k, p.year_of_birth, p.month_of_birth, p.day_of_birth, \
         l.location_source_value \
         FROM c JOIN person p ON p.person_id = c.person_id \
         LEFT JOIN location l ON l.location_id = p.location_id"
    );
    struct Case {
        person: i64,
        day: i64,
        k: usize,
        birth: (i64, u32, u32),
        district: Option<usize>,
    }
    let mut rows = Vec::new();
    for b in engine.sql(&rows_sql).await? {
        let cols: Vec<Vec<Option<i64>>> = (0..6)
            .map(|i| i64_column(&b, i, &s.id))
            .collect::<Result<_, _>>()?;
        let codes = arrow::compute::cast(b.column(6), &arrow::datatypes::DataType::Utf8)
            .map_err(|e| shape(e.to_string()))?;
        let codes = codes
            .as_any()
            .downcast_ref::<arrow::array::StringArray>()
            .ok_or_else(|| shape("location_source_value is not text".into()))?;
        use arrow::array::Array as _;
        for r in 0..b.num_rows() {
            let (Some(person), Some(day), Some(k)) = (cols[0][r], cols[1][r], cols[2][r]) else {
                continue;
            };
            let code = (!codes.is_null(r)).then(|| codes.value(r));
            rows.push(Case {
                person,
                day,
                k: k as usize,
                birth: (
                    cols[3][r].unwrap_or(1900),
                    cols[4][r].unwrap_or(1) as u32,
                    cols[5][r].unwrap_or(1) as u32,
                ),
                district: code.and_then(|c| dindex.get(c).copied()),
            });
        }
    }
    // Group rules that need more than the person row, for the persons with cases only.
    let needs = |g: VulnerableGroup| s.groups.contains(&g);
    let mut aid: HashMap<i64, Vec<(i64, i64)>> = HashMap::new();
    if needs(VulnerableGroup::MedicalAid) && !rows.is_empty() {
        let q = format!(
            "WITH c AS ({cases}) SELECT pp.person_id, {a}, {b} FROM payer_plan_period pp \
             WHERE pp.payer_concept_id = {MEDICAL_AID} \
             AND pp.person_id IN (SELECT person_id FROM c)",
            a = d.days("pp.payer_plan_period_start_date"),
            b = d.days("pp.payer_plan_period_end_date"),
        );
        for b in engine.sql(&q).await? {
            let c: Vec<Vec<Option<i64>>> = (0..3)
                .map(|i| i64_column(&b, i, &s.id))
                .collect::<Result<_, _>>()?;
            for r in 0..b.num_rows() {
                if let (Some(p), Some(x), Some(y)) = (c[0][r], c[1][r], c[2][r]) {
                    aid.entry(p).or_default().push((x, y));
                }
            }
        }
    }
    // First observation of each flag concept, by person.
    let mut flags: HashMap<(i64, i64), i64> = HashMap::new();
    let wanted: Vec<i64> = [
        (VulnerableGroup::Disability, DISABILITY),
        (VulnerableGroup::ElderlyAlone, LIVES_ALONE),
        (VulnerableGroup::OutdoorWorker, OUTDOOR_WORKER),
    ]
    .iter()
    .filter(|(g, _)| needs(*g))
    .map(|(_, c)| *c)
    .collect();
    if !wanted.is_empty() && !rows.is_empty() {
        let q = format!(
            "WITH c AS ({cases}) SELECT o.person_id, o.observation_concept_id, MIN({od}) \
             FROM observation o WHERE o.observation_concept_id IN ({list}) \
             AND o.person_id IN (SELECT person_id FROM c) GROUP BY o.person_id, o.observation_concept_id",
            od = d.days("o.observation_date"),
            list = wanted
                .iter()
                .map(i64::to_string)
                .collect::<Vec<_>>()
                .join(", "),
        );
        for b in engine.sql(&q).await? {
            let c: Vec<Vec<Option<i64>>> = (0..3)
                .map(|i| i64_column(&b, i, &s.id))
                .collect::<Result<_, _>>()?;
            for r in 0..b.num_rows() {
                if let (Some(p), Some(k), Some(x)) = (c[0][r], c[1][r], c[2][r]) {
                    flags.insert((p, k), x);
                }
            }
        }
    }
    let (ng, nd) = (s.groups.len(), districts.len());
    let len = (last - first + 1) as usize;
    let mut values = vec![0.0; s.syndromes.len() * ng * nd * len];
    let mut unplaced = 0;
    for c in &rows {
        let Some(district) = c.district else {
            unplaced += 1;
            continue;
        };
        let age = age_on(c.birth, sv::farrington::civil(c.day));
        let flag_by = |k: i64| flags.get(&(c.person, k)).is_some_and(|&x| x <= c.day);
        for (g, group) in s.groups.iter().enumerate() {
            let member = match group {
                VulnerableGroup::Elderly => age >= 65,
                VulnerableGroup::ChildU5 => age < 5,
                VulnerableGroup::MedicalAid => aid
                    .get(&c.person)
                    .is_some_and(|v| v.iter().any(|&(a, b)| a <= c.day && c.day <= b)),
                VulnerableGroup::Disability => flag_by(DISABILITY),
                VulnerableGroup::ElderlyAlone => age >= 65 && flag_by(LIVES_ALONE),
                VulnerableGroup::OutdoorWorker => flags.contains_key(&(c.person, OUTDOOR_WORKER)),
                VulnerableGroup::All => true,
            };
            if member {
                let i = ((c.k * ng + g) * nd + district) * len + (c.day - first) as usize;
                values[i] += 1.0;
            }
        }
    }
    Ok(SiteCounts {
        values,
        cases: rows.len() as u64,
        unplaced,
    })
}

/// The hub's state of a surveillance analysis between phases.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SurveilState {
    /// Round of tasks out (1-based; four per chunk).
    pub round: u32,
    /// Chunk being aggregated (0-based).
    pub chunk: usize,
    pub chunks_done: usize,
    /// Sites in the first chunk's sum; later chunks must have at least two of them.
    pub participants: Vec<String>,
    pub excluded: Vec<(String, String)>,
    pub secagg: Option<SecaggState>,
    pub error: Option<String>,
}

/// One chunk's network totals, for the hub's store.
#[derive(Clone, Debug, PartialEq)]
pub struct ChunkTotals {
    pub first: i64,
    pub last: i64,
    /// Layout of [`Surveillance::vector_len`].
    pub values: Vec<f64>,
    pub sites: Vec<String>,
}

pub use crate::regression::Next;

fn chunk_steps(
    s: &Surveillance,
    state: &mut SurveilState,
    nodes: &[String],
) -> Vec<(String, ModelStep)> {
    let (a, b) = s.chunks()[state.chunk];
    let (sa, steps) = crate::secure::start(nodes, Vec::new(), Some((day_string(a), day_string(b))));
    state.secagg = Some(sa);
    steps
}

pub fn first_round(
    s: &Surveillance,
    state: &mut SurveilState,
    nodes: &[String],
) -> Vec<(String, ModelStep)> {
    state.round = 1;
    chunk_steps(s, state, nodes)
}

/// Advance after a phase; a finished chunk's totals come back with the next round.
pub fn advance(
    s: &Surveillance,
    state: &mut SurveilState,
    step: &ModelStep,
    inputs: &[(String, SiteInput<'_>)],
) -> (Next, Option<ChunkTotals>) {
    let Some(mut sa) = state.secagg.take() else {
        state.error = Some("a secure-aggregation answer without a session".into());
        return (Next::Done, None);
    };
    let mut excluded = Vec::new();
    let phase = crate::secure::phase(
        &mut sa,
        step,
        inputs,
        &mut excluded,
        crate::secure::Encoding::Integer,
        2,
    );
    for (site, why) in excluded {
        if !state.excluded.iter().any(|(s, _)| *s == site) {
            state
                .excluded
                .push((site, format!("{why} (chunk {})", state.chunk + 1)));
        }
    }
    match phase {
        Phase::Failed(why) => {
            state.error = Some(format!("chunk {}: {why}", state.chunk + 1));
            (Next::Done, None)
        }
        Phase::Next(next) => {
            state.round += 1;
            state.secagg = Some(sa);
            (Next::Round(next), None)
        }
        Phase::Sum { total, survivors } => {
            let (a, b) = s.chunks()[state.chunk];
            let want = s.vector_len((b - a + 1) as usize);
            if total.len() != want || survivors.len() < 2 {
                state.error = Some(if survivors.len() < 2 {
                    format!(
                        "chunk {}: only {} site left; a sum over one site is that site's counts, so it is not unmasked",
                        state.chunk + 1,
                        survivors.len()
                    )
                } else {
                    format!(
                        "chunk {}: {} numbers, expected {want}",
                        state.chunk + 1,
                        total.len()
                    )
                });
                return (Next::Done, None);
            }
            if state.chunk == 0 {
                state.participants = survivors.clone();
            }
            let totals = ChunkTotals {
                first: a,
                last: b,
                // Integer counts: the fixed-point sum decodes exactly.
                values: total.iter().map(|v| v.round()).collect(),
                sites: survivors.clone(),
            };
            state.chunks_done += 1;
            state.chunk += 1;
            if state.chunk >= s.chunks().len() {
                return (Next::Done, Some(totals));
            }
            state.round += 1;
            // The next chunk goes to every site still in the network's sum.
            let steps = chunk_steps(s, state, &survivors);
            (Next::Round(steps), Some(totals))
        }
    }
}

/// A stream's network totals: `counts[syndrome][group][district][day]`, days from `first_day`.
#[derive(Clone, Debug)]
pub struct Cube {
    pub first_day: i64,
    pub days: usize,
    pub syndromes: Vec<String>,
    pub groups: Vec<VulnerableGroup>,
    pub districts: Vec<medfed_protocol::surveil::District>,
    pub counts: Vec<f64>,
    /// Days with no stored totals (zeros in `counts`).
    pub missing_days: Vec<i64>,
}

impl Cube {
    pub fn new(s: &Surveillance, first_day: i64, days: usize) -> Cube {
        let districts = s.districts();
        Cube {
            first_day,
            days,
            syndromes: s.syndromes.iter().map(|x| x.id.clone()).collect(),
            groups: s.groups.clone(),
            counts: vec![0.0; s.syndromes.len() * s.groups.len() * districts.len() * days],
            districts,
            missing_days: Vec::new(),
        }
    }

    pub fn series(&self, k: usize, g: usize, d: usize) -> &[f64] {
        let i = ((k * self.groups.len() + g) * self.districts.len() + d) * self.days;
        &self.counts[i..i + self.days]
    }

    /// Add one chunk's totals (in its own layout) at its days.
    pub fn put_chunk(&mut self, first: i64, len: usize, values: &[f64]) {
        let (ng, nd) = (self.groups.len(), self.districts.len());
        for k in 0..self.syndromes.len() {
            for g in 0..ng {
                for d in 0..nd {
                    let src = ((k * ng + g) * nd + d) * len;
                    let dst = ((k * ng + g) * nd + d) * self.days;
                    for t in 0..len {
                        let day = first + t as i64 - self.first_day;
                        if (0..self.days as i64).contains(&day) {
                            self.counts[dst + day as usize] = values[src + t];
                        }
                    }
                }
            }
        }
    }
}

/// Everything the detectors found.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Detection {
    pub evaluated_from: i64,
    pub signals: Vec<sv::alerts::Signal>,
    pub alerts: Vec<sv::alerts::Alert>,
    /// Alarm days per detector.
    pub alarms: BTreeMap<String, usize>,
    /// Series evaluated (syndrome × group × district with any case).
    pub series: usize,
}

/// Run every detector over the cube from `evaluate_from` (day index) on; `progress` is called with
/// the fraction done.
pub fn detect(s: &Surveillance, cube: &Cube, progress: &(dyn Fn(f64) + Sync)) -> Detection {
    let det = &s.detectors;
    let start = det
        .evaluate_from
        .as_deref()
        .and_then(parse_day)
        .map(|d| (d - cube.first_day).max(0) as usize)
        .unwrap_or(28)
        .max(28)
        .min(cube.days);
    let (ns, ng, nd) = (
        cube.syndromes.len(),
        cube.groups.len(),
        cube.districts.len(),
    );
    let mut signals = Vec::new();
    let mut alarms: BTreeMap<String, usize> = BTreeMap::new();
    let mut series = 0;
    let total = (ns * ng) as f64;
    let geo = sv::scan::Geography {
        lat: cube.districts.iter().map(|d| d.lat).collect(),
        lon: cube.districts.iter().map(|d| d.lon).collect(),
    };
    let circles = geo.circles(det.scan_max_districts, det.scan_max_radius_km);
    let scan_ctl = sv::scan::ScanControl {
        max_districts: det.scan_max_districts,
        max_radius_km: det.scan_max_radius_km,
        max_days: det.scan_max_days,
        replications: det.scan_replications,
        alpha: det.scan_alpha,
        ..sv::scan::ScanControl::default()
    };
    // Weekly blocks end on the last day of the cube.
    let weeks = cube.days / 7;
    let week_offset = cube.days - weeks * 7;
    let week_end = |w: usize| week_offset + w * 7 + 6;
    let mut far = sv::FarringtonControl {
        b: det.farrington_years,
        alpha: det.farrington_alpha,
        ..sv::FarringtonControl::noufaily()
    };
    if far.b < 3 {
        // Noufaily's 26 weeks left out leave too little of a one-year baseline; keep the window.
        far.past_weeks_not_included = Some(far.w);
    }
    let far_first = far.b * 52 + far.w + 1;
    // Each group × syndrome is independent: run them in parallel, merge in order.
    let pairs: Vec<(usize, usize)> = (0..ns).flat_map(|k| (0..ng).map(move |g| (k, g))).collect();
    let done = std::sync::atomic::AtomicUsize::new(0);
    let per_pair: Vec<(Vec<sv::alerts::Signal>, usize)> = pairs
        .par_iter()
        .map(|&(k, g)| {
            let mut signals = Vec::new();
            let mut series = 0;
            let mut push = |sig: sv::alerts::Signal| signals.push(sig);
            let mut any = vec![false; nd];
            for (d, a) in any.iter_mut().enumerate() {
                let x = cube.series(k, g, d);
                if x.iter().all(|v| *v == 0.0) {
                    continue;
                }
                *a = true;
                series += 1;
                let sig =
                    |det: &str, fam, p: &sv::Point, day: usize, from: usize| sv::alerts::Signal {
                        detector: det.into(),
                        family: fam,
                        group: g,
                        syndrome: k,
                        districts: vec![d],
                        day,
                        start: from,
                        observed: p.observed,
                        expected: p.expected.unwrap_or(0.0),
                        p_value: p.p_value,
                    };
                for (name, m) in [
                    ("ears_c1", sv::EarsMethod::C1),
                    ("ears_c2", sv::EarsMethod::C2),
                    ("ears_c3", sv::EarsMethod::C3),
                ] {
                    let ctl = sv::EarsControl {
                        min_sigma: det.ears_min_sigma,
                        ..sv::EarsControl::new(m)
                    };
                    let from = start.max(ctl.first());
                    if let Ok(points) = sv::ears(x, from..cube.days, &ctl) {
                        for p in points.iter().filter(|p| p.alarm) {
                            push(sig(name, sv::alerts::Family::Ears, p, p.t, p.t));
                        }
                    }
                }
                let cctl = sv::CusumControl {
                    reset: true,
                    ..sv::CusumControl::default()
                };
                if let Ok(points) = sv::cusum_moving(x, start.max(30)..cube.days, &cctl, 28, 2, 0.2)
                {
                    for p in points.iter().filter(|p| p.alarm) {
                        push(sig("cusum", sv::alerts::Family::Cusum, p, p.t, p.t));
                    }
                }
                if weeks > far_first {
                    let wk: Vec<f64> = (0..weeks)
                        .map(|w| x[week_end(w) - 6..=week_end(w)].iter().sum())
                        .collect();
                    let first_week = (0..weeks)
                        .find(|&w| week_end(w) >= start)
                        .unwrap_or(weeks)
                        .max(far_first);
                    let ser = sv::Series {
                        observed: &wk,
                        freq: 52,
                        dates: None,
                    };
                    if let Ok(points) = sv::farrington_flexible(&ser, first_week..weeks, &far) {
                        for p in points.iter().filter(|p| p.alarm) {
                            let day = week_end(p.t);
                            push(sig(
                                "farrington_flexible",
                                sv::alerts::Family::Farrington,
                                p,
                                day,
                                day - 6,
                            ));
                        }
                    }
                }
            }
            // The scan over all districts of this group × syndrome.
            if det.scan_replications > 0 && any.iter().filter(|a| **a).count() > 1 {
                let rows: Vec<Vec<f64>> = (0..nd).map(|d| cube.series(k, g, d).to_vec()).collect();
                for day in start..cube.days {
                    let today: f64 = rows.iter().map(|r| r[day]).sum();
                    if today == 0.0 {
                        continue;
                    }
                    let ctl = sv::scan::ScanControl {
                        seed: scan_ctl.seed ^ (((k * 31 + g) as u64) << 32),
                        ..scan_ctl
                    };
                    if let Some(c) = sv::scan::scan_day(&rows, &circles, day, &ctl) {
                        if c.alarm {
                            push(sv::alerts::Signal {
                                detector: "scan".into(),
                                family: sv::alerts::Family::Scan,
                                group: g,
                                syndrome: k,
                                districts: c.districts.clone(),
                                day,
                                start: c.start,
                                observed: c.observed,
                                expected: c.expected,
                                p_value: Some(c.p_value),
                            });
                        }
                    }
                }
            }
            let n = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            progress(n as f64 / total);
            (signals, series)
        })
        .collect();
    for (sigs, n) in per_pair {
        series += n;
        for s in sigs {
            *alarms.entry(s.detector.clone()).or_default() += 1;
            signals.push(s);
        }
    }
    progress(1.0);
    let gctl = sv::alerts::GroupingControl {
        gap_days: det.gap_days,
        link_km: det.link_km,
        min_families: det.min_families,
    };
    let near = |a: usize, b: usize| geo.distance(a, b) <= det.link_km;
    let alerts = sv::alerts::group(&signals, &near, &gctl, det.scan_alpha);
    Detection {
        evaluated_from: cube.first_day + start as i64,
        signals,
        alerts,
        alarms,
        series,
    }
}

/// A published count: the value, or `None` when it is 1..`k`−1 (the minimum-count rule applies to
/// what the hub publishes; the detectors saw the exact totals).
pub fn publish(v: f64, k: u64) -> Option<f64> {
    (v == 0.0 || v >= k as f64).then_some(v)
}

/// The pooled result of a surveillance analysis: alerts and weekly national totals by group and
/// syndrome, every count under the minimum-count rule `k`; no per-site number exists to show.
pub fn pooled(
    s: &Surveillance,
    cube: &Cube,
    det: &Detection,
    state: &SurveilState,
    k: u64,
) -> PooledResult {
    let mut sites: Vec<SiteContribution> = state
        .participants
        .iter()
        .map(|p| SiteContribution {
            site: p.clone(),
            outcome: SiteOutcome::Released { value: None },
        })
        .collect();
    for (site, why) in &state.excluded {
        if !state.participants.contains(site) {
            sites.push(SiteContribution {
                site: site.clone(),
                outcome: SiteOutcome::Refused {
                    reason: why.clone(),
                },
            });
        }
    }
    let mut notes = vec![format!(
        "counts added under secure aggregation: the hub holds network totals per district × group × syndrome × day, never a site's; published counts 1..{} are withheld",
        k.saturating_sub(1)
    )];
    if let Some(e) = &state.error {
        notes.push(format!("stopped: {e}"));
    }
    if !cube.missing_days.is_empty() {
        notes.push(format!(
            "{} days have no stored totals and count as zero",
            cube.missing_days.len()
        ));
    }
    let alert_json: Vec<serde_json::Value> = det
        .alerts
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let observed: f64 = a
                .districts
                .iter()
                .map(|&d| {
                    cube.series(a.syndrome, a.group, d)[a.first_day..=a.last_day]
                        .iter()
                        .sum::<f64>()
                })
                .sum();
            serde_json::json!({
                "id": i + 1,
                "group": cube.groups[a.group].name(),
                "syndrome": cube.syndromes[a.syndrome],
                "districts": a.districts.iter().map(|&d| &cube.districts[d].code).collect::<Vec<_>>(),
                "district_names": a.districts.iter().map(|&d| format!("{} {}", cube.districts[d].province, cube.districts[d].name)).collect::<Vec<_>>(),
                "first_day": day_string(cube.first_day + a.first_day as i64),
                "last_day": day_string(cube.first_day + a.last_day as i64),
                "raised_day": a.raised_day.map(|d| day_string(cube.first_day + d as i64)),
                "raised": a.raised,
                "updates": a.updates.iter().map(|u| serde_json::json!({
                    "day": day_string(cube.first_day + u.day as i64),
                    "districts": u.districts.iter().map(|&d| &cube.districts[d].code).collect::<Vec<_>>(),
                })).collect::<Vec<_>>(),
                "severity": (a.severity * 10.0).round() / 10.0,
                "level": a.level,
                "detectors": a.detectors,
                "signals": a.signals,
                "ratio": (a.ratio * 100.0).round() / 100.0,
                "min_p_value": a.min_p_value,
                "observed": publish(observed, k),
            })
        })
        .collect();
    // Weekly national totals by group × syndrome, weeks ending on the last day.
    let weeks = cube.days / 7;
    let off = cube.days - weeks * 7;
    let mut weekly = Vec::new();
    for (ki, syn) in cube.syndromes.iter().enumerate() {
        for (gi, g) in cube.groups.iter().enumerate() {
            let mut tot = vec![0.0; weeks];
            for d in 0..cube.districts.len() {
                let x = cube.series(ki, gi, d);
                for (w, t) in tot.iter_mut().enumerate() {
                    *t += x[off + w * 7..off + w * 7 + 7].iter().sum::<f64>();
                }
            }
            // The national epidemic curve's threshold: Farrington Flexible on the weekly totals.
            let far = sv::FarringtonControl {
                b: s.detectors.farrington_years,
                alpha: s.detectors.farrington_alpha,
                past_weeks_not_included: (s.detectors.farrington_years < 3).then_some(3),
                ..sv::FarringtonControl::noufaily()
            };
            let first = far.b * 52 + far.w + 1;
            let mut upper = vec![None; weeks];
            let mut alarm = vec![false; weeks];
            if weeks > first {
                let ser = sv::Series {
                    observed: &tot,
                    freq: 52,
                    dates: None,
                };
                if let Ok(points) = sv::farrington_flexible(&ser, first..weeks, &far) {
                    for p in points {
                        upper[p.t] = p.upperbound;
                        alarm[p.t] = p.alarm;
                    }
                }
            }
            weekly.push(serde_json::json!({
                "syndrome": syn, "group": g.name(),
                "counts": tot.iter().map(|v| publish(*v, k)).collect::<Vec<_>>(),
                "farrington_upper": upper,
                "farrington_alarm": alarm,
            }));
        }
    }
    let raised = det.alerts.iter().filter(|a| a.raised).count();
    PooledResult {
        id: s.id.clone(),
        kind: "surveillance".into(),
        value: serde_json::json!({
            "stream": s.stream(),
            "first_day": day_string(cube.first_day),
            "last_day": day_string(cube.first_day + cube.days as i64 - 1),
            "evaluated_from": day_string(det.evaluated_from),
            "syndromes": cube.syndromes,
            "groups": cube.groups.iter().map(|g| g.name()).collect::<Vec<_>>(),
            "geography": s.geography,
            "series_with_cases": det.series,
            "alarms_by_detector": det.alarms,
            "alerts_raised": raised,
            "signals_not_raised": det.alerts.len() - raised,
            "alerts": alert_json,
            "week_ends": (0..weeks).map(|w| day_string(cube.first_day + (off + w * 7 + 6) as i64)).collect::<Vec<_>>(),
            "weekly": weekly,
        }),
        sites,
        notes,
    }
}

/// A planted (or otherwise known) outbreak, to score detectors against.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct KnownOutbreak {
    pub district: String,
    pub group: String,
    pub syndrome: String,
    pub start: i64,
    pub days: i64,
}

/// One detector's (or the grouped alerts') record against known outbreaks.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Score {
    pub detector: String,
    pub outbreaks: usize,
    pub found: usize,
    pub sensitivity: f64,
    /// Alarms (alarm days; for grouped alerts, raised alerts) matching no outbreak.
    pub false_alarms: usize,
    pub false_per_district_year: f64,
    pub median_days_to_detection: Option<f64>,
}

/// Score every detector and the raised alerts: an outbreak is found by an alarm for its group and
/// syndrome whose districts include its district, dated from its first day to `slack` days after
/// its last (weekly detectors date an alarm at the week's end); the delay is from the first day.
pub fn evaluate(det: &Detection, cube: &Cube, known: &[KnownOutbreak], slack: i64) -> Vec<Score> {
    evaluate_detail(det, cube, known, slack).0
}

/// One known outbreak inside the evaluated window and who found it, with the delay in days.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OutbreakHit {
    pub outbreak: KnownOutbreak,
    pub found_by: BTreeMap<String, i64>,
}

/// [`evaluate`], plus each outbreak's detectors.
pub fn evaluate_detail(
    det: &Detection,
    cube: &Cube,
    known: &[KnownOutbreak],
    slack: i64,
) -> (Vec<Score>, Vec<OutbreakHit>) {
    let day0 = cube.first_day;
    let end = day0 + cube.days as i64 - 1;
    let gi = |n: &str| cube.groups.iter().position(|g| g.name() == n);
    let ki = |n: &str| cube.syndromes.iter().position(|s| s == n);
    let di = |c: &str| cube.districts.iter().position(|d| d.code == c);
    // Outbreaks inside the evaluated window, as (group, syndrome, district, first, last) indices.
    type Cell = (usize, usize, usize, i64, i64);
    let inside: Vec<(&KnownOutbreak, Cell)> = known
        .iter()
        .filter_map(|o| {
            let (g, k, d) = (gi(&o.group)?, ki(&o.syndrome)?, di(&o.district)?);
            let (a, b) = (o.start - day0, o.start + o.days - 1 - day0);
            (o.start >= det.evaluated_from && o.start + o.days - 1 <= end)
                .then_some((o, (g, k, d, a, b)))
        })
        .collect();
    let obs: Vec<Cell> = inside.iter().map(|x| x.1).collect();
    let mut per_outbreak: Vec<OutbreakHit> = inside
        .iter()
        .map(|(o, _)| OutbreakHit {
            outbreak: (*o).clone(),
            found_by: BTreeMap::new(),
        })
        .collect();
    let years = (end - det.evaluated_from + 1) as f64 / 365.25;
    let district_years = cube.districts.len() as f64 * years;
    let median = |mut v: Vec<f64>| {
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        Some(if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        })
    };
    // (group, syndrome, districts, first day, last day, detection day) of each alarm or alert.
    type Mark<'a> = (usize, usize, &'a [usize], i64, i64, i64);
    let mut score = |name: &str, marks: &[Mark<'_>]| {
        let hits = |m: &Mark<'_>, o: &(usize, usize, usize, i64, i64)| {
            m.0 == o.0 && m.1 == o.1 && m.2.contains(&o.2) && m.4 >= o.3 && m.3 <= o.4 + slack
        };
        let mut delays = Vec::new();
        let mut found = 0;
        for (oi, o) in obs.iter().enumerate() {
            let first = marks
                .iter()
                .filter(|m| hits(m, o) && m.5 >= o.3 && m.5 <= o.4 + slack)
                .map(|m| m.5)
                .min();
            if let Some(f) = first {
                found += 1;
                delays.push((f - o.3) as f64);
                per_outbreak[oi].found_by.insert(name.to_string(), f - o.3);
            }
        }
        let false_alarms = marks
            .iter()
            .filter(|m| !obs.iter().any(|o| hits(m, o)))
            .count();
        Score {
            detector: name.into(),
            outbreaks: obs.len(),
            found,
            sensitivity: if obs.is_empty() {
                0.0
            } else {
                found as f64 / obs.len() as f64
            },
            false_alarms,
            false_per_district_year: false_alarms as f64 / district_years.max(1e-9),
            median_days_to_detection: median(delays),
        }
    };
    let mut out = Vec::new();
    for name in det.alarms.keys() {
        let marks: Vec<Mark<'_>> = det
            .signals
            .iter()
            .filter(|s| &s.detector == name)
            .map(|s| {
                (
                    s.group,
                    s.syndrome,
                    &s.districts[..],
                    s.start as i64,
                    s.day as i64,
                    s.day as i64,
                )
            })
            .collect();
        out.push(score(name, &marks));
    }
    // Every notification counts: the raise and each update (a false one is a false alarm).
    let marks: Vec<Mark<'_>> = det
        .alerts
        .iter()
        .filter(|a| a.raised)
        .flat_map(|a| {
            a.updates.iter().map(move |u| {
                (
                    a.group,
                    a.syndrome,
                    &u.districts[..],
                    u.day as i64,
                    u.day as i64,
                    u.day as i64,
                )
            })
        })
        .collect();
    out.push(score("grouped_alerts", &marks));
    (out, per_outbreak)
}
