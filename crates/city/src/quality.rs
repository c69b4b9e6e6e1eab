//! Alert quality: the rules replayed hour by hour over years of one district's data.
//!
//! Each year is replayed with outlooks fitted on the *other* years (leave one year out), so that
//! no warning is helped by the data it is judged on. One person per category (and one with none)
//! receives what the engine decides. Reported: messages per person per year by group, and the
//! share of "very unhealthy" PM2.5 hours (24-hour mean ≥ 76 µg/m³) that a PM2.5 warning issued
//! *beforehand* in the same episode covered.

use crate::feed::{Hour, Pollutant, WeatherDay};
use crate::forecast::{Model, TmaxModel};
use crate::hazards::{self, Outlook};
use crate::rules::{Engine, Hazard, Hazards, Level, Message, RuleSet, CATEGORIES};
use crate::series::{self, AirSeries};
use chrono::{Datelike, NaiveDate};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};

/// Messages one person of a group received in one year.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GroupYear {
    pub group: String,
    pub year: i32,
    pub advisories: usize,
    pub warnings: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct Quality {
    pub district: String,
    pub years: Vec<i32>,
    pub per_person: Vec<GroupYear>,
    /// Hours with a 24-hour PM2.5 mean of 76 µg/m³ or more.
    pub very_unhealthy_hours: usize,
    /// … of which a PM2.5 warning sent before the hour, in the same episode, covered.
    pub covered_by_warning: usize,
    /// … of which any PM2.5 message (advisory or warning) sent before the hour covered.
    pub covered_by_any: usize,
    /// Hours from the first warning to the first very unhealthy hour, per episode that had both
    /// (warning first).
    pub lead_hours: Vec<i64>,
    /// Episodes of the PM2.5 rule that reached a very unhealthy hour (the stricter measure: was
    /// each warned before its *first* such hour? `lead_hours.len()` of them were).
    pub very_unhealthy_episodes: usize,
    /// Episodes of the PM2.5 rule that reached a warning but never a very unhealthy hour.
    pub warning_episodes: usize,
    pub warning_episodes_without_very_unhealthy: usize,
    /// Held advisories that expired in quiet hours.
    pub expired: usize,
}

/// The group name of a person with no category.
pub const NO_CATEGORY: &str = "none";

/// Replays the rules over every year of `air` (one district) with heat from `weather`.
pub fn replay(air: &AirSeries, weather: &[WeatherDay], rules: &RuleSet) -> Result<Quality, String> {
    let year_of: Vec<i32> = (0..air.len()).map(|t| air.hour(t).day().year()).collect();
    let years: Vec<i32> = {
        let mut y = year_of.clone();
        y.dedup();
        y
    };
    let heat_in = hazards::daily_heat_inputs(weather);
    let tmax: BTreeMap<NaiveDate, f64> = heat_in.iter().map(|(d, v)| (*d, v.0)).collect();
    let mut hz: Vec<Hazards> = Vec::with_capacity(air.len());
    for &y in &years {
        let out = |t: usize| year_of[t] != y;
        let fit = |p: Pollutant, scale: f64| {
            let x: Vec<Option<f64>> = air.column(p).iter().map(|v| v.map(|c| c * scale)).collect();
            Model::fit_where(&x, air.start, out)
                .ok_or_else(|| format!("outlook for {} without {y}", p.label()))
        };
        let outlook = Outlook {
            pm25: fit(Pollutant::Pm25, 1.0)?,
            pm10: fit(Pollutant::Pm10, 1.0)?,
            o3: fit(Pollutant::O3, 1000.0)?,
        };
        let tm = TmaxModel::fit_where(&tmax, |d| d.year() != y).ok_or("tmax outlook")?;
        let heat = hazards::heat_levels(&heat_in, &tm);
        hz.extend(hazards::hourly_at(
            air,
            &outlook,
            &heat,
            (0..air.len()).filter(|&t| year_of[t] == y),
        ));
    }

    let mut engine = Engine::new(rules.clone());
    let district = air.station.clone();
    let mut groups: Vec<&str> = CATEGORIES.to_vec();
    groups.push(NO_CATEGORY);
    for g in &groups {
        let cats: Vec<&str> = if *g == NO_CATEGORY { vec![] } else { vec![*g] };
        engine.upsert(g, &district, &cats)?;
    }
    let pm_rule = rules
        .rules
        .iter()
        .find(|r| r.hazard == Hazard::Pm25 && r.categories.iter().any(|c| c == "respiratory"))
        .map(|r| r.name.clone())
        .ok_or("no PM2.5 rule for the respiratory group")?;

    let m25 = series::moving_mean(
        &air.column(Pollutant::Pm25),
        series::PM_WINDOW,
        series::PM_MIN_VALID,
    );
    let mut counts: BTreeMap<(String, i32), (usize, usize)> = BTreeMap::new();
    let mut first_warning: HashMap<u64, Hour> = HashMap::new();
    let mut first_any: HashMap<u64, Hour> = HashMap::new();
    let mut first_vu: HashMap<u64, Hour> = HashMap::new();
    let mut warned_episodes: Vec<u64> = Vec::new();
    let (mut vu, mut cov_w, mut cov_a, mut expired) = (0, 0, 0, 0);
    for (t, h) in hz.iter().enumerate() {
        let hour = air.hour(t);
        let one: HashMap<String, Hazards> = [(district.clone(), *h)].into_iter().collect();
        let (msgs, stats) = engine.update(hour, &one);
        expired += stats.expired;
        for m in &msgs {
            let c = counts
                .entry((m.subject.clone(), hour.day().year()))
                .or_default();
            match m.level {
                Level::Warning => c.1 += 1,
                _ => c.0 += 1,
            }
            if m.subject == "respiratory" && m.rule == pm_rule {
                note_pm_message(m, &mut first_any, &mut first_warning, &mut warned_episodes);
            }
        }
        if m25[t].is_some_and(|v| v >= 76.0) {
            vu += 1;
            if let Some(e) = engine.episode(&district, &pm_rule) {
                first_vu.entry(e.id).or_insert(hour);
                if first_warning.get(&e.id).is_some_and(|w| *w < hour) {
                    cov_w += 1;
                }
                if first_any.get(&e.id).is_some_and(|w| *w < hour) {
                    cov_a += 1;
                }
            }
        }
    }
    let mut lead_hours: Vec<i64> = first_vu
        .iter()
        .filter_map(|(id, v)| first_warning.get(id).filter(|w| *w < v).map(|w| v.0 - w.0))
        .collect();
    lead_hours.sort_unstable();
    let without = warned_episodes
        .iter()
        .filter(|id| !first_vu.contains_key(id))
        .count();
    let per_person = groups
        .iter()
        .flat_map(|g| {
            years.iter().map(|&y| {
                let (a, w) = counts.get(&(g.to_string(), y)).copied().unwrap_or_default();
                GroupYear {
                    group: g.to_string(),
                    year: y,
                    advisories: a,
                    warnings: w,
                }
            })
        })
        .collect();
    Ok(Quality {
        district,
        years,
        per_person,
        very_unhealthy_hours: vu,
        covered_by_warning: cov_w,
        covered_by_any: cov_a,
        very_unhealthy_episodes: first_vu.len(),
        lead_hours,
        warning_episodes: warned_episodes.len(),
        warning_episodes_without_very_unhealthy: without,
        expired,
    })
}

fn note_pm_message(
    m: &Message,
    first_any: &mut HashMap<u64, Hour>,
    first_warning: &mut HashMap<u64, Hour>,
    warned: &mut Vec<u64>,
) {
    first_any.entry(m.episode).or_insert(m.hour);
    if m.level == Level::Warning && !first_warning.contains_key(&m.episode) {
        first_warning.insert(m.episode, m.hour);
        warned.push(m.episode);
    }
}

impl Quality {
    /// Mean messages per person per year for a group: (advisories, warnings).
    pub fn per_year(&self, group: &str) -> (f64, f64) {
        let rows: Vec<&GroupYear> = self
            .per_person
            .iter()
            .filter(|g| g.group == group)
            .collect();
        let n = rows.len().max(1) as f64;
        (
            rows.iter().map(|g| g.advisories as f64).sum::<f64>() / n,
            rows.iter().map(|g| g.warnings as f64).sum::<f64>() / n,
        )
    }

    pub fn median_lead_hours(&self) -> Option<i64> {
        (!self.lead_hours.is_empty()).then(|| self.lead_hours[self.lead_hours.len() / 2])
    }
}
