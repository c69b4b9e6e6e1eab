//! District environment series and the visits they drive.
//!
//! Every district gets a daily PM2.5 (24-hour mean, µg/m³) and daily maximum temperature (°C) series
//! over the surveillance window (2020–2024). They are built from shared parts, so that neighbours
//! move together as real monitoring data do: a national part, a province part and a district part,
//! each an AR(1) process, on a seasonal mean (PM2.5 on the log scale, highest in early spring;
//! temperature from the national series, shifted by latitude).
//!
//! Two syndromes respond to them (the ground truth's `environment.effects`):
//! - respiratory visits rise by [`PM_RR_PER_10`] per 10 µg/m³ of the lag 0–2 mean PM2.5;
//! - cardiovascular visits rise by [`HEAT_RR_PER_C`] per °C of the lag 0–1 mean daily maximum
//!   temperature above [`HEAT_THRESHOLD`].
//!
//! The relative risks are larger than the published ones (about 1.01–1.02 per 10 µg/m³ for
//! respiratory admissions) so that a hundred-thousand-person test population estimates them with a
//! useful interval; the method does not depend on their size. The series are rounded to 0.1 before
//! they drive anything, so `environment.csv` is exactly what the generator used.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

use crate::geo::Geography;
use crate::{END, SYN_START};

/// Relative risk of a respiratory visit per 10 µg/m³ of the lag 0–2 mean PM2.5.
pub const PM_RR_PER_10: f64 = 1.06;
/// Days averaged for the PM2.5 effect: lags 0 to `PM_LAGS`.
pub const PM_LAGS: usize = 2;
/// The PM2.5 level at which the respiratory rate is the syndrome's base rate.
pub const PM_REF: f64 = 15.0;
/// Relative risk of a cardiovascular visit per °C of the lag 0–1 mean maximum above the threshold.
pub const HEAT_RR_PER_C: f64 = 1.05;
pub const HEAT_LAGS: usize = 1;
pub const HEAT_THRESHOLD: f64 = 28.0;

/// Which syndromes the environment drives, and how: (syndrome name, effect).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Effect {
    /// log RR = ln(rr)/10 × (lag-mean PM2.5 − [`PM_REF`]).
    Pm25,
    /// log RR = ln(rr) × max(0, lag-mean Tmax − [`HEAT_THRESHOLD`]).
    Heat,
}

impl Effect {
    pub fn of(syndrome: &str) -> Option<Effect> {
        match syndrome {
            "respiratory" => Some(Effect::Pm25),
            "cardiovascular" => Some(Effect::Heat),
            _ => None,
        }
    }
}

pub struct Environment {
    pub days: usize,
    pub districts: usize,
    /// `pm25[d * days + t]`, day `t` from `SYN_START`.
    pub pm25: Vec<f64>,
    pub tmax: Vec<f64>,
}

fn normal(rng: &mut ChaCha8Rng) -> f64 {
    StandardNormal.sample(rng)
}

/// An AR(1) path with coefficient `phi` and stationary standard deviation `sd`.
fn ar1(rng: &mut ChaCha8Rng, days: usize, phi: f64, sd: f64) -> Vec<f64> {
    let inno = sd * (1.0 - phi * phi).sqrt();
    let mut x = sd * normal(rng);
    (0..days)
        .map(|_| {
            x = phi * x + inno * normal(rng);
            x
        })
        .collect()
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

impl Environment {
    /// The series for `geo`, from `seed`; `national_tmax` is the national daily maximum (one value
    /// per day from `SYN_START`), which the heat-illness syndrome also follows.
    pub fn new(geo: &Geography, national_tmax: &[f64], seed: u64) -> Environment {
        let days = (END - SYN_START + 1) as usize;
        assert_eq!(national_tmax.len(), days, "one national value per day");
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let two_pi = 2.0 * std::f64::consts::PI;
        let nat_pm = ar1(&mut rng, days, 0.7, 0.35);
        let prov: Vec<(Vec<f64>, Vec<f64>)> = geo
            .provinces
            .iter()
            .map(|_| (ar1(&mut rng, days, 0.6, 0.2), ar1(&mut rng, days, 0.6, 1.0)))
            .collect();
        let nd = geo.districts.len();
        let (mut pm25, mut tmax) = (Vec::with_capacity(nd * days), Vec::with_capacity(nd * days));
        for dist in &geo.districts {
            let offset = 0.15 * normal(&mut rng);
            let local_pm = ar1(&mut rng, days, 0.5, 0.12);
            let local_t = ar1(&mut rng, days, 0.5, 0.4);
            // Cooler to the north, warmer to the south: 0.8 °C per degree of latitude from Seoul's.
            let lat_shift = -0.8 * (dist.lat - 37.5);
            let (p_pm, p_t) = &prov[dist.province];
            for t in 0..days {
                let doy = crate::day_of_year(SYN_START + t as i32) as f64;
                let season = 24f64.ln() + 0.35 * (two_pi * (doy - 70.0) / 365.25).cos();
                let pm = (season + nat_pm[t] + p_pm[t] + local_pm[t] + offset).exp();
                pm25.push(round1(pm.max(1.0)));
                tmax.push(round1(national_tmax[t] + lat_shift + p_t[t] + local_t[t]));
            }
        }
        Environment {
            days,
            districts: nd,
            pm25,
            tmax,
        }
    }

    /// The exposure an effect acts on, for district `d` on day index `t` (lag days before the window's
    /// first day use the first day's value).
    pub fn exposure(&self, effect: Effect, d: usize, t: usize) -> f64 {
        let (x, lags) = match effect {
            Effect::Pm25 => (&self.pm25, PM_LAGS),
            Effect::Heat => (&self.tmax, HEAT_LAGS),
        };
        let row = &x[d * self.days..(d + 1) * self.days];
        (0..=lags).map(|l| row[t.saturating_sub(l)]).sum::<f64>() / (lags + 1) as f64
    }

    /// The planted relative risk of an effect at day index `t` in district `d`.
    pub fn relative_risk(&self, effect: Effect, d: usize, t: usize) -> f64 {
        let x = self.exposure(effect, d, t);
        match effect {
            Effect::Pm25 => (PM_RR_PER_10.ln() / 10.0 * (x - PM_REF)).exp(),
            Effect::Heat => (HEAT_RR_PER_C.ln() * (x - HEAT_THRESHOLD).max(0.0)).exp(),
        }
    }

    /// `environment.csv`: district code, date, PM2.5 and Tmax, one row per district-day.
    pub fn write_csv(&self, geo: &Geography, path: &std::path::Path) -> std::io::Result<()> {
        use std::io::Write;
        let tmp = path.with_extension("csv.part");
        let mut f = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
        writeln!(f, "district,date,pm25,tmax")?;
        let dates: Vec<String> = (0..self.days)
            .map(|t| crate::date_string(SYN_START + t as i32))
            .collect();
        for (d, dist) in geo.districts.iter().enumerate() {
            for (t, date) in dates.iter().enumerate() {
                let i = d * self.days + t;
                writeln!(
                    f,
                    "{},{date},{:.1},{:.1}",
                    dist.code, self.pm25[i], self.tmax[i]
                )?;
            }
        }
        f.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        std::fs::rename(&tmp, path)
    }

    /// What the ground truth records about the series and the effects.
    pub fn truth(&self) -> serde_json::Value {
        let mean = |x: &[f64]| x.iter().sum::<f64>() / x.len().max(1) as f64;
        serde_json::json!({
            "file": "environment.csv (district, date, pm25, tmax), one row per district and day 2020-01-01..2024-12-31",
            "pm25": {
                "unit": "ug/m3, 24-hour mean",
                "model": "exp(ln 24 + 0.35 cos(2 pi (doy - 70) / 365.25) + national AR(1) (phi 0.7, sd 0.35) + province AR(1) (0.6, 0.2) + district AR(1) (0.5, 0.12) + district offset N(0, 0.15)), rounded to 0.1, at least 1",
                "mean": mean(&self.pm25),
            },
            "tmax": {
                "unit": "degrees C, daily maximum",
                "model": "the national series + 0.8 C per degree of latitude south of 37.5 + province AR(1) (0.6, 1.0) + district AR(1) (0.5, 0.4), rounded to 0.1",
                "mean": mean(&self.tmax),
            },
            "effects": [
                {
                    "syndrome": "respiratory",
                    "exposure": "pm25",
                    "lags": [0, PM_LAGS],
                    "form": "linear in the lag 0-2 mean",
                    "relative_risk": PM_RR_PER_10,
                    "per": 10.0,
                    "reference": PM_REF,
                },
                {
                    "syndrome": "cardiovascular",
                    "exposure": "tmax",
                    "lags": [0, HEAT_LAGS],
                    "form": "linear above the threshold in the lag 0-1 mean, flat below",
                    "relative_risk": HEAT_RR_PER_C,
                    "per": 1.0,
                    "threshold": HEAT_THRESHOLD,
                },
            ],
            "no_effect": "respiratory visits do not depend on temperature and cardiovascular visits do not depend on PM2.5; both keep their own seasonality",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> (Geography, Environment) {
        let geo = Geography::korea();
        let days = (END - SYN_START + 1) as usize;
        let tmax: Vec<f64> = (0..days)
            .map(|t| {
                let doy = crate::day_of_year(SYN_START + t as i32) as f64;
                17.5 + 13.5 * (2.0 * std::f64::consts::PI * (doy - 205.0) / 365.25).cos()
            })
            .collect();
        let e = Environment::new(&geo, &tmax, 11);
        (geo, e)
    }

    #[test]
    fn series_are_plausible_and_seasonal() {
        let (geo, e) = env();
        assert_eq!(e.pm25.len(), geo.districts.len() * e.days);
        let mean = e.pm25.iter().sum::<f64>() / e.pm25.len() as f64;
        assert!((18.0..35.0).contains(&mean), "mean PM2.5 {mean}");
        assert!(e.pm25.iter().all(|v| *v >= 1.0 && *v < 1000.0));
        // March above August, and August hotter than January, in every district.
        let month_mean = |x: &[f64], d: usize, m: u32| {
            let v: Vec<f64> = (0..e.days)
                .filter(|t| crate::ymd(SYN_START + *t as i32).1 == m)
                .map(|t| x[d * e.days + t])
                .collect();
            v.iter().sum::<f64>() / v.len() as f64
        };
        for d in 0..geo.districts.len() {
            assert!(month_mean(&e.pm25, d, 3) > month_mean(&e.pm25, d, 8), "{d}");
            assert!(
                month_mean(&e.tmax, d, 8) > month_mean(&e.tmax, d, 1) + 15.0,
                "{d}"
            );
        }
        // Rounded to 0.1, as written.
        assert!(e
            .tmax
            .iter()
            .all(|v| ((v * 10.0).round() - v * 10.0).abs() < 1e-9));
    }

    #[test]
    fn planted_relative_risks_follow_their_definitions() {
        let (_, e) = env();
        let t = 400;
        let x = e.exposure(Effect::Pm25, 3, t);
        let row = &e.pm25[3 * e.days..];
        assert!((x - (row[t] + row[t - 1] + row[t - 2]) / 3.0).abs() < 1e-12);
        let rr = e.relative_risk(Effect::Pm25, 3, t);
        assert!((rr - PM_RR_PER_10.powf((x - PM_REF) / 10.0)).abs() < 1e-12);
        for d in 0..e.districts {
            for t in 0..e.days {
                let h = e.exposure(Effect::Heat, d, t);
                let rr = e.relative_risk(Effect::Heat, d, t);
                if h <= HEAT_THRESHOLD {
                    assert_eq!(rr, 1.0);
                } else {
                    assert!((rr.ln() - HEAT_RR_PER_C.ln() * (h - HEAT_THRESHOLD)).abs() < 1e-12);
                }
            }
        }
        assert_eq!(Effect::of("respiratory"), Some(Effect::Pm25));
        assert_eq!(Effect::of("cardiovascular"), Some(Effect::Heat));
        assert_eq!(Effect::of("ili"), None);
    }
}
