//! Rhythm from the beat series: ventricular tachycardia and fibrillation by the rate criteria
//! implantable defibrillators use, and atrial fibrillation from RR irregularity.
//!
//! * **VF** — the interval-counting rule of ICDs: at least 18 of the last 24 RR intervals shorter
//!   than 320 ms (a rate over 188/min). Fibrillation is chaotic, so its "beats" are whatever peaks
//!   the detector finds; what matters is that they come fast.
//! * **VT** — 16 consecutive intervals shorter than 400 ms (over 150/min), with the two
//!   discriminators ICDs use against sinus tachycardia and conducted AF: *stability* (14 of the 16
//!   within 40 ms of their median) and *sudden onset* (the run's median at most 80 % of the median of
//!   the 8 intervals before it).
//! * **AF** — the irregularly irregular rhythm, from windows of 64 intervals (after the 4 longest
//!   and 4 shortest are dropped, so that isolated ectopic beats do not count): normalised RMSSD over
//!   0.10 and Shannon entropy of the 16-bin interval histogram over 0.70 (Dash et al., Ann Biomed Eng
//!   2009), in two consecutive windows. A driver whose consented profile says AF is not told again.
//!
//! The monitor is fed beats (sample indices) and stays pure: no clock, no I/O.

use std::collections::VecDeque;

/// A rhythm the monitor can raise.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Rhythm {
    VentricularFibrillation,
    VentricularTachycardia,
    AtrialFibrillation,
}

/// Thresholds; the defaults are the ones in the module documentation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RhythmRules {
    pub vf_interval_s: f64,
    pub vf_needed: usize,
    pub vf_of: usize,
    pub vt_interval_s: f64,
    pub vt_beats: usize,
    pub af_window: usize,
    pub af_nrmssd: f64,
    pub af_entropy: f64,
    /// Known AF (consented profile): AF is not raised.
    pub known_af: bool,
}

impl Default for RhythmRules {
    fn default() -> Self {
        RhythmRules {
            vf_interval_s: 0.320,
            vf_needed: 18,
            vf_of: 24,
            vt_interval_s: 0.400,
            vt_beats: 16,
            af_window: 64,
            af_nrmssd: 0.10,
            af_entropy: 0.70,
            known_af: false,
        }
    }
}

/// Normalised RMSSD and Shannon entropy (16 bins, normalised to 0..1) of RR intervals, with the
/// `trim` longest and shortest dropped.
pub fn irregularity(rr: &[f64], trim: usize) -> (f64, f64) {
    let mut sorted = rr.to_vec();
    sorted.sort_by(f64::total_cmp);
    if sorted.len() <= 2 * trim + 2 {
        return (0.0, 0.0);
    }
    let (lo, hi) = (sorted[trim], sorted[sorted.len() - 1 - trim]);
    let kept: Vec<f64> = rr.iter().copied().filter(|&x| x >= lo && x <= hi).collect();
    let mean = kept.iter().sum::<f64>() / kept.len() as f64;
    let ssd = kept.windows(2).map(|w| (w[1] - w[0]).powi(2)).sum::<f64>();
    let rmssd = (ssd / (kept.len() - 1) as f64).sqrt();
    let mut bins = [0usize; 16];
    let width = (hi - lo) / 16.0;
    for &x in &kept {
        let b = if width > 0.0 {
            (((x - lo) / width) as usize).min(15)
        } else {
            0
        };
        bins[b] += 1;
    }
    let n = kept.len() as f64;
    let entropy = bins
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = c as f64 / n;
            -p * p.ln()
        })
        .sum::<f64>()
        / 16f64.ln();
    (rmssd / mean, entropy)
}

/// Kuo and Dillman's VF-filter leakage of a block of (band-passed) ECG: the block's mean half
/// period `N` from the ratio of its absolute sum to its absolute differences, then how much of the
/// signal survives a notch at that period, `Σ|x[i] + x[i−N]| / Σ(|x[i]| + |x[i−N]|)`. A sinusoid-like
/// rhythm (fibrillation) leaks little (under 0.406 in their study), QRS complexes a lot.
pub fn vf_leakage(x: &[f64]) -> f64 {
    let abs: f64 = x.iter().map(|v| v.abs()).sum();
    let diff: f64 = x.windows(2).map(|w| (w[1] - w[0]).abs()).sum();
    if diff <= 0.0 {
        return 1.0;
    }
    // π Σ|x| / Σ|Δx| is half the period of a sinusoid, in samples.
    let half = ((std::f64::consts::PI * abs / diff + 0.5) as usize).max(1);
    if half >= x.len() {
        return 1.0;
    }
    let (mut num, mut den) = (0.0, 0.0);
    for i in half..x.len() {
        num += (x[i] + x[i - half]).abs();
        den += x[i].abs() + x[i - half].abs();
    }
    if den > 0.0 {
        num / den
    } else {
        1.0
    }
}

/// One stream's rhythm monitor.
#[derive(Clone, Debug)]
pub struct RhythmMonitor {
    pub rules: RhythmRules,
    fs: f64,
    last_beat: Option<u64>,
    /// The last `max(vf_of, af_window)` intervals, seconds.
    rr: VecDeque<f64>,
    af_windows: u32,
    since_af_check: usize,
    /// Seconds of ECG judged clean without a break (see [`quality`](Self::quality)).
    clean_s: f64,
    raised: [bool; 3],
}

impl RhythmMonitor {
    pub fn new(fs: f64, rules: RhythmRules) -> RhythmMonitor {
        RhythmMonitor {
            rules,
            fs,
            last_beat: None,
            rr: VecDeque::new(),
            af_windows: 0,
            since_af_check: 0,
            clean_s: 0.0,
            raised: [false; 3],
        }
    }

    /// The heart rate over the last 8 intervals (beats per minute).
    pub fn rate(&self) -> Option<f64> {
        let n = self.rr.len().min(8);
        (n >= 4).then(|| 60.0 * n as f64 / self.rr.iter().rev().take(n).sum::<f64>())
    }

    /// The signal quality of the last block of ECG. AF is judged only on windows without a noisy
    /// block: AF keeps normal QRS complexes, so a window whose ECG looks like noise (kurtosis under
    /// 5, Li and Clifford's kSQI) says nothing about the atria. VT and VF are not gated this way —
    /// fibrillation itself looks like noise — but by the pulse witness (see `driver`).
    /// A window counts only when the ECG was clean throughout its span.
    pub fn quality(&mut self, clean: bool, block_s: f64) {
        self.clean_s = if clean { self.clean_s + block_s } else { 0.0 };
    }

    /// A gap in the signal (lead off, lost chunks): the interval series restarts.
    pub fn gap(&mut self) {
        self.last_beat = None;
        self.rr.clear();
        self.af_windows = 0;
        self.since_af_check = 0;
    }

    /// A beat at sample `index`; rhythms raised now (once per episode).
    pub fn beat(&mut self, index: u64) -> Vec<Rhythm> {
        let Some(last) = self.last_beat.replace(index) else {
            return Vec::new();
        };
        let rr = index.saturating_sub(last) as f64 / self.fs;
        let r = self.rules;
        self.rr.push_back(rr);
        if self.rr.len() > r.vf_of.max(r.af_window) {
            self.rr.pop_front();
        }
        let mut out = Vec::new();
        // VF: 18 of the last 24 short.
        let recent: Vec<f64> = self.rr.iter().rev().take(r.vf_of).copied().collect();
        let vf = recent.len() >= r.vf_of
            && recent.iter().filter(|&&x| x < r.vf_interval_s).count() >= r.vf_needed;
        // VT: 16 consecutive short, stable, sudden.
        let run: Vec<f64> = self.rr.iter().rev().take(r.vt_beats).copied().collect();
        let vt = run.len() >= r.vt_beats && run.iter().all(|&x| x < r.vt_interval_s) && {
            let mut s = run.clone();
            s.sort_by(f64::total_cmp);
            let median = s[s.len() / 2];
            let stable =
                run.iter().filter(|&&x| (x - median).abs() <= 0.040).count() >= r.vt_beats * 7 / 8;
            // Sudden onset: the run's median at most 80 % of the 8 intervals before it.
            let before: Vec<f64> = self
                .rr
                .iter()
                .rev()
                .skip(r.vt_beats)
                .take(8)
                .copied()
                .collect();
            let sudden = before.len() < 8 || {
                let mut b = before.clone();
                b.sort_by(f64::total_cmp);
                median <= 0.8 * b[4]
            };
            stable && sudden && !vf
        };
        // AF: every 16 beats, look at the last 64 intervals.
        self.since_af_check += 1;
        let mut af = self.raised[2];
        if self.rr.len() >= r.af_window && self.since_af_check >= 16 {
            self.since_af_check = 0;
            let w: Vec<f64> = self.rr.iter().rev().take(r.af_window).copied().collect();
            let (nrmssd, entropy) = irregularity(&w, 4);
            // A noisy window is unknown: the episode, if any, stays as it is, and two clean
            // windows are needed again to raise one.
            let noisy = self.clean_s < w.iter().sum::<f64>();
            if noisy {
                self.af_windows = 0;
            } else if nrmssd > r.af_nrmssd && entropy > r.af_entropy {
                self.af_windows += 1;
            } else {
                self.af_windows = 0;
            }
            af = if noisy {
                self.raised[2]
            } else {
                self.af_windows >= 2
            };
        }
        for (i, (now, rhythm)) in [
            (vf, Rhythm::VentricularFibrillation),
            (vt, Rhythm::VentricularTachycardia),
            (af && !r.known_af, Rhythm::AtrialFibrillation),
        ]
        .into_iter()
        .enumerate()
        {
            // VT and VF end when the rate criterion no longer holds for the last 8 intervals.
            let ended = match rhythm {
                Rhythm::AtrialFibrillation => !af,
                _ => recent.iter().take(8).all(|&x| x >= r.vt_interval_s),
            };
            if now && !self.raised[i] {
                self.raised[i] = true;
                out.push(rhythm);
            } else if self.raised[i] && ended {
                self.raised[i] = false;
            }
        }
        out
    }

    /// Whether a rhythm's episode is still on.
    pub fn active(&self, rhythm: Rhythm) -> bool {
        self.raised[rhythm as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(m: &mut RhythmMonitor, rr: &[f64]) -> Vec<(usize, Rhythm)> {
        let mut t = 0.0;
        let mut out = vec![];
        // Clean ECG throughout.
        m.quality(true, 1e6);
        m.beat(0);
        for (i, &x) in rr.iter().enumerate() {
            t += x;
            for r in m.beat((t * 250.0f64).round() as u64) {
                out.push((i, r));
            }
        }
        out
    }

    /// A deterministic pseudo-random sequence in 0..1.
    fn lcg(n: usize, mut s: u64) -> Vec<f64> {
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (s >> 11) as f64 / (1u64 << 53) as f64
            })
            .collect()
    }

    #[test]
    fn vt_vf_and_af_by_their_rate_and_irregularity_criteria() {
        let noise = lcg(2000, 7);
        let sinus: Vec<f64> = (0..300)
            .map(|i| 0.85 + 0.03 * (i as f64 / 4.0).sin() + 0.01 * noise[i])
            .collect();
        // Sinus rhythm then 30 beats of monomorphic VT at 190/min: VT after 16 short intervals.
        let mut rr = sinus.clone();
        rr.extend((0..30).map(|i| 0.316 + 0.004 * noise[300 + i]));
        rr.extend(sinus.iter().take(40));
        let mut m = RhythmMonitor::new(250.0, RhythmRules::default());
        let got = feed(&mut m, &rr);
        assert_eq!(got, [(315, Rhythm::VentricularTachycardia)]);
        assert!(!m.active(Rhythm::VentricularTachycardia));
        // Fibrillation: fast chaotic intervals 180–300 ms.
        let mut rr = sinus.clone();
        rr.extend((0..40).map(|i| 0.18 + 0.12 * noise[400 + i]));
        let mut m = RhythmMonitor::new(250.0, RhythmRules::default());
        let got = feed(&mut m, &rr);
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].1, Rhythm::VentricularFibrillation);
        assert!(got[0].0 < 300 + 24, "{got:?}");
        // Sinus tachycardia that builds up slowly is not VT (onset), nor a run of AF-like fast
        // irregular beats (stability).
        let mut rr = sinus.clone();
        rr.extend((0..100).map(|i| (0.85 - i as f64 * 0.005).max(0.38)));
        assert!(feed(&mut RhythmMonitor::new(250.0, RhythmRules::default()), &rr).is_empty());
        // AF: irregularly irregular intervals 0.4–1.0 s, raised within three windows; not with
        // the known-AF profile; isolated ectopics in sinus rhythm raise nothing.
        let mut rr = sinus.clone();
        rr.extend((0..200).map(|i| 0.4 + 0.6 * noise[600 + i]));
        let got = feed(&mut RhythmMonitor::new(250.0, RhythmRules::default()), &rr);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].1, Rhythm::AtrialFibrillation);
        assert!(got[0].0 < 300 + 64 + 48, "{got:?}");
        let known = RhythmRules {
            known_af: true,
            ..RhythmRules::default()
        };
        assert!(feed(&mut RhythmMonitor::new(250.0, known), &rr).is_empty());
        let mut rr = sinus.clone();
        for i in (20..300).step_by(37) {
            rr[i] = 0.5;
            rr[i + 1] = 1.2;
        }
        assert!(feed(&mut RhythmMonitor::new(250.0, RhythmRules::default()), &rr).is_empty());
    }
}
