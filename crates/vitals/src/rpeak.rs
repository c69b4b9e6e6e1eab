//! Streaming R-peak detection on one ECG lead, after Pan and Tompkins (IEEE TBME 1985): band-pass
//! 5–15 Hz (second-order Butterworth sections), five-point derivative, squaring, 150 ms moving-window
//! integration, adaptive signal and noise levels with a 200 ms refractory period, and a search back
//! at half the threshold when no beat has come for 1.66 mean RR intervals. The R peak is placed at
//! the largest band-passed amplitude in the integration window before the integrated peak.
//!
//! One sample in, at most a few beats out; state is a few hundred numbers, so a detector per driver
//! costs nothing. [`match_beats`] scores detections against reference annotations (sensitivity and
//! positive predictivity within a tolerance, as ANSI/AAMI EC57 does).

use std::collections::VecDeque;

/// A second-order IIR section (direct form I).
#[derive(Clone, Debug)]
pub(crate) struct Biquad {
    b: [f64; 3],
    a: [f64; 2],
    x: [f64; 2],
    y: [f64; 2],
}

impl Biquad {
    /// Butterworth low-pass (`high = false`) or high-pass at `fc` Hz for sampling rate `fs`
    /// (bilinear transform).
    pub(crate) fn butterworth(fc: f64, fs: f64, high: bool) -> Biquad {
        let k = (std::f64::consts::PI * fc / fs).tan();
        let r2 = std::f64::consts::SQRT_2;
        let norm = 1.0 / (1.0 + r2 * k + k * k);
        let b = if high {
            [norm, -2.0 * norm, norm]
        } else {
            let b0 = k * k * norm;
            [b0, 2.0 * b0, b0]
        };
        let a = [2.0 * (k * k - 1.0) * norm, (1.0 - r2 * k + k * k) * norm];
        Biquad {
            b,
            a,
            x: [0.0; 2],
            y: [0.0; 2],
        }
    }

    pub(crate) fn step(&mut self, x: f64) -> f64 {
        let y = self.b[0] * x + self.b[1] * self.x[0] + self.b[2] * self.x[1]
            - self.a[0] * self.y[0]
            - self.a[1] * self.y[1];
        self.x = [x, self.x[0]];
        self.y = [y, self.y[0]];
        y
    }
}

/// The detector's state for one lead.
#[derive(Clone, Debug)]
pub struct RPeakDetector {
    fs: f64,
    hp: Biquad,
    lp: Biquad,
    /// Last five band-passed samples (derivative), newest first.
    d: [f64; 5],
    /// Moving-window integration.
    win: VecDeque<f64>,
    win_sum: f64,
    win_len: usize,
    /// Band-passed samples of the last second, to place the R peak; `bp_start` is the first's index.
    bp: VecDeque<f64>,
    bp_start: u64,
    /// Samples seen.
    n: u64,
    /// Integrated signal at n−1 and n−2 (local maxima).
    m1: f64,
    m2: f64,
    /// Learning phase: the first two seconds set the levels.
    learn_max: f64,
    learn_sum: f64,
    learning: bool,
    learn_start: u64,
    spki: f64,
    npki: f64,
    /// A peak over the threshold waiting out the refractory period: (index, value).
    pending: Option<(u64, f64)>,
    /// Peaks under the threshold since the last beat, for the search back.
    noise_peaks: Vec<(u64, f64)>,
    last_beat: Option<u64>,
    rr: VecDeque<f64>,
}

impl RPeakDetector {
    pub fn new(fs: f64) -> RPeakDetector {
        let win_len = ((0.150 * fs).round() as usize).max(1);
        RPeakDetector {
            fs,
            hp: Biquad::butterworth(5.0, fs, true),
            lp: Biquad::butterworth(15.0, fs, false),
            d: [0.0; 5],
            win: VecDeque::with_capacity(win_len + 1),
            win_sum: 0.0,
            win_len,
            bp: VecDeque::new(),
            bp_start: 0,
            n: 0,
            m1: 0.0,
            m2: 0.0,
            learn_max: 0.0,
            learn_sum: 0.0,
            learning: true,
            learn_start: 0,
            spki: 0.0,
            npki: 0.0,
            pending: None,
            noise_peaks: Vec::new(),
            last_beat: None,
            rr: VecDeque::new(),
        }
    }

    fn threshold(&self) -> f64 {
        self.npki + 0.25 * (self.spki - self.npki)
    }

    fn samples(&self, seconds: f64) -> u64 {
        (seconds * self.fs).round() as u64
    }

    /// The R peak for an integrated peak at `p`: the largest band-passed magnitude in the
    /// integration window (plus the filters' delay) before it.
    fn place(&self, p: u64) -> u64 {
        let back = self.win_len as u64 + self.samples(0.05);
        let from = p.saturating_sub(back).max(self.bp_start);
        let mut best = (p, f64::MIN);
        for t in from..=p.min(self.n.saturating_sub(1)) {
            let v = self.bp[(t - self.bp_start) as usize].abs();
            if v > best.1 {
                best = (t, v);
            }
        }
        best.0
    }

    fn beat(&mut self, p: u64, value: f64, searchback: bool, out: &mut Vec<u64>) {
        self.spki = if searchback {
            0.25 * value + 0.75 * self.spki
        } else {
            0.125 * value + 0.875 * self.spki
        };
        let r = self.place(p);
        if let Some(last) = self.last_beat {
            self.rr.push_back((r.saturating_sub(last)) as f64);
            if self.rr.len() > 8 {
                self.rr.pop_front();
            }
        }
        self.last_beat = Some(r);
        self.noise_peaks.clear();
        out.push(r);
    }

    /// Learn the signal and noise levels again from the next two seconds, as at the start: after
    /// an artefact, whose peaks would otherwise keep the threshold over the real beats.
    pub fn relearn(&mut self) {
        self.learning = true;
        self.learn_start = self.n;
        self.learn_max = 0.0;
        self.learn_sum = 0.0;
        self.pending = None;
        self.noise_peaks.clear();
    }

    /// Add one sample; detected beats (sample indices of R peaks, in order) are appended to `out`.
    pub fn push(&mut self, x: f64, out: &mut Vec<u64>) {
        let x = if x.is_finite() { x } else { 0.0 };
        let bp = self.lp.step(self.hp.step(x));
        self.bp.push_back(bp);
        let keep = self.samples(1.0).max(self.win_len as u64 * 3) as usize;
        if self.bp.len() > keep {
            self.bp.pop_front();
            self.bp_start += 1;
        }
        self.d = [bp, self.d[0], self.d[1], self.d[2], self.d[3]];
        let der = (2.0 * self.d[0] + self.d[1] - self.d[3] - 2.0 * self.d[4]) * self.fs / 8.0;
        let sq = der * der;
        self.win.push_back(sq);
        self.win_sum += sq;
        if self.win.len() > self.win_len {
            self.win_sum -= self.win.pop_front().unwrap_or(0.0);
        }
        let m = self.win_sum.max(0.0) / self.win_len as f64;
        let now = self.n;
        self.n += 1;
        if self.learning {
            self.learn_max = self.learn_max.max(m);
            self.learn_sum += m;
            if self.n - self.learn_start >= self.samples(2.0) {
                self.learning = false;
                self.spki = 0.25 * self.learn_max;
                self.npki = 0.5 * self.learn_sum / (self.n - self.learn_start) as f64;
            }
            self.m2 = self.m1;
            self.m1 = m;
            return;
        }
        // A local maximum of the integrated signal at now − 1.
        if self.m1 > self.m2 && self.m1 >= m {
            let (p, v) = (now - 1, self.m1);
            let refractory = self.last_beat.is_some_and(|b| p < b + self.samples(0.2));
            if v > self.threshold() && !refractory {
                match self.pending {
                    Some((_, pv)) if pv >= v => {}
                    _ => self.pending = Some((p, v)),
                }
            } else {
                self.npki = 0.125 * v + 0.875 * self.npki;
                if !refractory {
                    self.noise_peaks.push((p, v));
                }
            }
        }
        self.m2 = self.m1;
        self.m1 = m;
        // A pending peak becomes a beat once 200 ms pass with no larger one.
        if let Some((p, v)) = self.pending {
            if now >= p + self.samples(0.2) {
                self.pending = None;
                self.beat(p, v, false, out);
            }
        }
        // Search back: no beat for 1.66 mean RR intervals.
        if let (Some(last), None, false) = (self.last_beat, self.pending, self.rr.is_empty()) {
            let mean = self.rr.iter().sum::<f64>() / self.rr.len() as f64;
            if (now - last) as f64 > 1.66 * mean {
                let half = 0.5 * self.threshold();
                let best = self
                    .noise_peaks
                    .iter()
                    .copied()
                    .filter(|&(p, v)| v > half && p >= last + self.samples(0.2))
                    .max_by(|a, b| a.1.total_cmp(&b.1));
                match best {
                    Some((p, v)) => self.beat(p, v, true, out),
                    // Nothing to find: wait another interval before looking again.
                    None => self.noise_peaks.clear(),
                }
            }
        }
    }
}

/// Detect R peaks in a whole signal (the streaming detector run over it).
pub fn detect(signal: &[f64], fs: f64) -> Vec<u64> {
    let mut d = RPeakDetector::new(fs);
    let mut out = Vec::new();
    for &x in signal {
        d.push(x, &mut out);
    }
    out
}

/// Detections scored against reference beats: each reference beat matches at most one detection
/// within `tolerance` samples (closest first, in time order).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Score {
    pub true_positives: usize,
    pub false_negatives: usize,
    pub false_positives: usize,
}

impl Score {
    pub fn sensitivity(&self) -> f64 {
        self.true_positives as f64 / (self.true_positives + self.false_negatives).max(1) as f64
    }
    pub fn positive_predictivity(&self) -> f64 {
        self.true_positives as f64 / (self.true_positives + self.false_positives).max(1) as f64
    }
}

/// Match detections to reference beats (both sorted) within `tolerance` samples.
pub fn match_beats(reference: &[u64], detected: &[u64], tolerance: u64) -> Score {
    let (mut i, mut j, mut tp) = (0, 0, 0);
    while i < reference.len() && j < detected.len() {
        let (r, d) = (reference[i], detected[j]);
        if d + tolerance < r {
            j += 1; // a detection before any reference beat it could match
        } else if r + tolerance < d {
            i += 1; // a reference beat missed
        } else {
            // Within tolerance: take the closer of this detection and the next for this beat.
            if j + 1 < detected.len() && detected[j + 1].abs_diff(r) < d.abs_diff(r) {
                j += 1;
                continue;
            }
            tp += 1;
            i += 1;
            j += 1;
        }
    }
    Score {
        true_positives: tp,
        false_negatives: reference.len() - tp,
        false_positives: detected.len() - tp,
    }
}
