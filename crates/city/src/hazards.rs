//! A district's hazards hour by hour: what the rules compare with their thresholds.
//!
//! * PM2.5 and PM10: the trailing 24-hour mean now; expected, the largest 24-hour mean over the
//!   next 24 hours, each window made of the observed hours and the outlook's hours.
//! * O3: the hour's value now; expected, the outlook's largest hour.
//! * Heat: the KMA level from observed feels-like maxima (yesterday and today, known from the
//!   afternoon); expected, the level from yesterday's observation and the 1–2 day outlook.

use crate::feed::{Hour, Pollutant};
use crate::forecast::{Model, TmaxModel, LEADS};
use crate::heat;
use crate::rules::{Hazard, Hazards};
use crate::series::{self, AirSeries};
use chrono::{Duration, NaiveDate};
use std::collections::BTreeMap;

/// The pollutant outlooks, fitted on one series.
#[derive(Clone, Debug)]
pub struct Outlook {
    pub pm25: Model,
    pub pm10: Model,
    /// On ppb (the series' ppm × 1000).
    pub o3: Model,
}

fn o3_ppb(s: &AirSeries) -> Vec<Option<f64>> {
    s.column(Pollutant::O3)
        .iter()
        .map(|v| v.map(|x| x * 1000.0))
        .collect()
}

impl Outlook {
    pub fn fit(s: &AirSeries, train: std::ops::Range<usize>) -> Option<Outlook> {
        Some(Outlook {
            pm25: Model::fit(&s.column(Pollutant::Pm25), s.start, train.clone())?,
            pm10: Model::fit(&s.column(Pollutant::Pm10), s.start, train.clone())?,
            o3: Model::fit(&o3_ppb(s), s.start, train)?,
        })
    }
}

/// The largest 24-hour mean over the next 24 hours, from the observed hours up to `t` and the
/// forecast `f` for `t+1..=t+24` (each window needs 18 values).
pub fn projected_24h_max(x: &[Option<f64>], t: usize, f: &[f64; LEADS]) -> Option<f64> {
    let mut best: Option<f64> = None;
    for k in 1..=LEADS {
        let (mut sum, mut n) = (0.0, 0usize);
        let lo = (t + k).saturating_sub(23);
        for v in x[lo..=t].iter().flatten() {
            sum += v;
            n += 1;
        }
        for v in &f[..k.min(24)] {
            sum += v;
            n += 1;
        }
        if n >= series::PM_MIN_VALID {
            let m = sum / n as f64;
            best = Some(best.map_or(m, |b: f64| b.max(m)));
        }
    }
    best
}

/// Heat levels by day: (now, expected), as the numbers the rules use (0 none, 1 advisory, 2
/// warning). Summer days only.
pub fn heat_levels(
    daily: &BTreeMap<NaiveDate, (f64, f64)>,
    model: &TmaxModel,
) -> BTreeMap<NaiveDate, (Option<f64>, Option<f64>)> {
    let level = |a: f64, b: f64| -> f64 {
        let lo = a.min(b);
        if lo >= heat::WARNING_C {
            2.0
        } else if lo >= heat::ADVISORY_C {
            1.0
        } else {
            0.0
        }
    };
    let fl = |d: &NaiveDate| daily.get(d).map(|&(t, rh)| heat::feels_like(t, rh));
    let mut out = BTreeMap::new();
    for d in daily.keys().filter(|d| heat::summer(**d)) {
        let y = *d - Duration::days(1);
        let now = fl(&y).zip(fl(d)).map(|(a, b)| level(a, b));
        let expected = daily.get(&y).map(|&(t, rh)| {
            let f1 = heat::feels_like(model.predict(y, t, 1), rh);
            let f2 = heat::feels_like(model.predict(y, t, 2), rh);
            let yesterday = heat::feels_like(t, rh);
            level(yesterday, f1).max(level(f1, f2))
        });
        out.insert(*d, (now, expected));
    }
    out
}

/// The clock hour from which today's heat is taken as observed (the daily maximum is usually
/// reached by mid-afternoon).
pub const HEAT_OBSERVED_FROM: u32 = 15;

/// Every hour's hazards for a district's series.
pub fn hourly(
    s: &AirSeries,
    outlook: &Outlook,
    heat: &BTreeMap<NaiveDate, (Option<f64>, Option<f64>)>,
) -> Vec<Hazards> {
    hourly_at(s, outlook, heat, 0..s.len())
}

/// The hazards at positions `at` of a district's series.
pub fn hourly_at(
    s: &AirSeries,
    outlook: &Outlook,
    heat: &BTreeMap<NaiveDate, (Option<f64>, Option<f64>)>,
    at: impl Iterator<Item = usize>,
) -> Vec<Hazards> {
    let pm25 = s.column(Pollutant::Pm25);
    let pm10 = s.column(Pollutant::Pm10);
    let o3 = o3_ppb(s);
    let m25 = series::moving_mean(&pm25, series::PM_WINDOW, series::PM_MIN_VALID);
    let m10 = series::moving_mean(&pm10, series::PM_WINDOW, series::PM_MIN_VALID);
    at.map(|t| {
        let mut h = Hazards::default();
        let hour = s.hour(t);
        h.now[Hazard::Pm25 as usize] = m25[t];
        h.now[Hazard::Pm10 as usize] = m10[t];
        h.now[Hazard::O3 as usize] = o3[t].map(|v| v / 1000.0);
        let exp = |now: Option<f64>, fut: Option<f64>| match (now, fut) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        let f25 = outlook
            .pm25
            .predict(&pm25, s.start, t)
            .and_then(|f| projected_24h_max(&pm25, t, &f));
        let f10 = outlook
            .pm10
            .predict(&pm10, s.start, t)
            .and_then(|f| projected_24h_max(&pm10, t, &f));
        let fo3 = outlook
            .o3
            .predict(&o3, s.start, t)
            .map(|f| f.iter().fold(0.0f64, |a, &b| a.max(b)) / 1000.0);
        h.expected[Hazard::Pm25 as usize] = exp(m25[t], f25);
        h.expected[Hazard::Pm10 as usize] = exp(m10[t], f10);
        h.expected[Hazard::O3 as usize] = exp(h.now[Hazard::O3 as usize], fo3);
        if let Some(&(now, expected)) = heat.get(&hour.day()) {
            if hour.start_clock() >= HEAT_OBSERVED_FROM {
                h.now[Hazard::Heat as usize] = now;
            }
            h.expected[Hazard::Heat as usize] = exp(h.now[Hazard::Heat as usize], expected);
        }
        h
    })
    .collect()
}

/// Daily (tmax, humidity at tmax) from daily summaries, for [`heat_levels`].
pub fn daily_heat_inputs(days: &[crate::feed::WeatherDay]) -> BTreeMap<NaiveDate, (f64, f64)> {
    days.iter()
        .filter_map(|d| {
            let (tx, ta, rh) = (d.tmax_c?, d.tavg_c?, d.rh_pct?);
            Some((d.date, (tx, heat::rh_at_tmax(tx, ta, rh))))
        })
        .collect()
}

/// The hour a day's heat level is first observed.
pub fn heat_hour(d: NaiveDate) -> Hour {
    Hour::from_day(d, HEAT_OBSERVED_FROM + 1)
}
