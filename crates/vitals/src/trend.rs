//! Vital-sign trends with persistence: bradycardia, tachycardia and sustained desaturation from
//! heart-rate and SpO2 readings (the car's 1 Hz vitals, or a monitor's minute numerics).
//!
//! A reading outside the physiologically possible range (heart rate 20–300 bpm, SpO2 50–100 %) is
//! an artefact or a disconnected sensor (monitors write 0 when a signal is absent) and counts as
//! missing. A condition is raised when every valid reading for at least `persist_s` seconds meets it
//! — at least two readings, so that one artefact never raises anything — and a missing reading
//! restarts the clock. Each condition is raised once per episode and cleared when a valid reading no
//! longer meets it. A consented health profile (known atrial fibrillation, a pacemaker, chronic lung
//! disease) shifts the thresholds; it arrives as a category, never as the record.

/// What a monitor can raise.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Condition {
    Bradycardia,
    Tachycardia,
    Desaturation,
}

/// The categories a driver's hospital node may send with consent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Profile {
    /// Known atrial fibrillation: fast irregular rates are expected; tachycardia needs more.
    pub atrial_fibrillation: bool,
    /// A pacemaker: the paced rate is a floor, so a rate under it is itself alarming.
    pub pacemaker: bool,
    /// Chronic lung disease (COPD): a lower usual saturation.
    pub chronic_lung_disease: bool,
}

/// Thresholds and persistence.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rules {
    pub brady_bpm: f64,
    pub tachy_bpm: f64,
    pub spo2_low: f64,
    pub persist_s: f64,
}

impl Rules {
    /// Defaults for a driver, shifted by the profile.
    pub fn for_profile(p: Profile) -> Rules {
        Rules {
            brady_bpm: if p.pacemaker { 50.0 } else { 40.0 },
            tachy_bpm: if p.atrial_fibrillation { 170.0 } else { 150.0 },
            spo2_low: if p.chronic_lung_disease { 80.0 } else { 85.0 },
            persist_s: 30.0,
        }
    }
}

impl Default for Rules {
    fn default() -> Self {
        Rules::for_profile(Profile::default())
    }
}

/// An episode: the condition, when its first qualifying reading came, and when it was raised.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Episode {
    pub condition: Condition,
    pub onset_s: f64,
    pub raised_s: f64,
}

#[derive(Clone, Copy, Debug, Default)]
struct Track {
    /// Time and count of the run of readings meeting the condition.
    since: Option<f64>,
    readings: u32,
    raised: bool,
}

impl Track {
    /// One valid reading (`meets`) or a missing one (`None`); returns the onset when raised now.
    fn step(&mut self, t: f64, meets: Option<bool>, persist: f64) -> Option<f64> {
        match meets {
            None => {
                // Unknown: the run restarts, but a raised episode stays raised until a valid
                // reading ends it.
                self.since = None;
                self.readings = 0;
                None
            }
            Some(false) => {
                *self = Track::default();
                None
            }
            Some(true) => {
                let since = *self.since.get_or_insert(t);
                self.readings += 1;
                if !self.raised && self.readings >= 2 && t - since >= persist {
                    self.raised = true;
                    return Some(since);
                }
                None
            }
        }
    }
}

/// One person's trend monitor.
#[derive(Clone, Debug, Default)]
pub struct TrendMonitor {
    pub rules: Rules,
    brady: Track,
    tachy: Track,
    desat: Track,
}

fn valid(x: Option<f64>, lo: f64, hi: f64) -> Option<f64> {
    x.filter(|v| v.is_finite() && *v >= lo && *v <= hi)
}

impl TrendMonitor {
    pub fn new(rules: Rules) -> TrendMonitor {
        TrendMonitor {
            rules,
            ..TrendMonitor::default()
        }
    }

    /// Whether the condition's episode is on (raised and not yet ended by a valid reading).
    pub fn active(&self, c: Condition) -> bool {
        match c {
            Condition::Bradycardia => self.brady.raised,
            Condition::Tachycardia => self.tachy.raised,
            Condition::Desaturation => self.desat.raised,
        }
    }

    /// Readings at time `t` seconds (`None` where a sensor gave nothing); episodes raised now.
    pub fn push(&mut self, t: f64, hr: Option<f64>, spo2: Option<f64>) -> Vec<Episode> {
        let r = self.rules;
        let hr = valid(hr, 20.0, 300.0);
        let spo2 = valid(spo2, 50.0, 100.0);
        let mut out = Vec::new();
        for (track, condition, meets) in [
            (
                &mut self.brady,
                Condition::Bradycardia,
                hr.map(|h| h < r.brady_bpm),
            ),
            (
                &mut self.tachy,
                Condition::Tachycardia,
                hr.map(|h| h > r.tachy_bpm),
            ),
            (
                &mut self.desat,
                Condition::Desaturation,
                spo2.map(|s| s < r.spo2_low),
            ),
        ] {
            if let Some(onset_s) = track.step(t, meets, r.persist_s) {
                out.push(Episode {
                    condition,
                    onset_s,
                    raised_s: t,
                });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(m: &mut TrendMonitor, readings: &[(f64, Option<f64>, Option<f64>)]) -> Vec<Episode> {
        readings
            .iter()
            .flat_map(|&(t, h, s)| m.push(t, h, s))
            .collect()
    }

    #[test]
    fn persistence_artefacts_missing_readings_and_profiles() {
        // 1 Hz: normal, then heart rate 32 from t = 100 s for two minutes.
        let mut m = TrendMonitor::new(Rules::default());
        let r: Vec<_> = (0..400)
            .map(|t| {
                let hr = if (100..220).contains(&t) { 32.0 } else { 70.0 };
                (t as f64, Some(hr), Some(97.0))
            })
            .collect();
        let e = run(&mut m, &r);
        assert_eq!(
            e,
            [Episode {
                condition: Condition::Bradycardia,
                onset_s: 100.0,
                raised_s: 130.0
            }]
        );
        // One artefact, zeros from a loose sensor and a gap in a low run raise nothing.
        let mut m = TrendMonitor::new(Rules::default());
        let mut r: Vec<_> = (0..200)
            .map(|t| (t as f64, Some(70.0), Some(97.0)))
            .collect();
        r[50].1 = Some(11.5);
        for x in &mut r[80..140] {
            *x = (x.0, Some(0.0), Some(0.0));
        }
        for (i, x) in r[150..190].iter_mut().enumerate() {
            x.2 = if i == 20 { None } else { Some(80.0) };
        }
        assert!(run(&mut m, &r).is_empty());
        // A raised episode is raised once, and again after it ended.
        let mut m = TrendMonitor::new(Rules::default());
        let r: Vec<_> = (0..300)
            .map(|t| {
                let s = if (0..60).contains(&t) || (200..260).contains(&t) {
                    80.0
                } else {
                    97.0
                };
                (t as f64, Some(75.0), Some(s))
            })
            .collect();
        let e = run(&mut m, &r);
        assert_eq!(e.len(), 2);
        assert_eq!((e[0].raised_s, e[1].onset_s), (30.0, 200.0));
        // A heart rate of 160 is tachycardia, but not for a driver with known AF.
        let r: Vec<_> = (0..100)
            .map(|t| (t as f64, Some(160.0), Some(97.0)))
            .collect();
        assert_eq!(run(&mut TrendMonitor::default(), &r).len(), 1);
        let af = Rules::for_profile(Profile {
            atrial_fibrillation: true,
            ..Profile::default()
        });
        assert!(run(&mut TrendMonitor::new(af), &r).is_empty());
    }
}
