//! Asystole with signal-quality gating: no heartbeat on any usable ECG lead for `window_s`
//! seconds, and — when a pulse oximeter is worn — no pulse in its plethysmogram either.
//!
//! A loose or lifted electrode must not look like a stopped heart. A lead is *unusable* for a
//! second when it is stuck (the same value throughout), carries non-numbers (the WFDB invalid
//! value), or is a motion artefact (peak to peak over 2.5 times the median of its last ten usable
//! seconds; the beat detector then learns its levels again); an unusable lead cannot show beats, and it cannot show their absence either. Asystole needs at
//! least one usable lead that stays without beats for the whole window. The plethysmogram is the
//! independent witness the PhysioNet/CinC 2015 false-alarm winners used: while it keeps pulsing, the
//! heart is beating, whatever the ECG shows.

use std::collections::VecDeque;

use crate::rpeak::RPeakDetector;

/// Pulses in a plethysmogram: band-passed 0.5–8 Hz, a pulse is a local maximum higher than a
/// fifth of the median of the last ten pulses' heights (so a flat or noise-only trace stops
/// yielding pulses) at least 300 ms after the last one.
#[derive(Clone, Debug)]
pub struct PulseDetector {
    fs: f64,
    hp: [f64; 2],
    lp: f64,
    alpha_hp: f64,
    alpha_lp: f64,
    prev: [f64; 2],
    n: u64,
    last: Option<u64>,
    heights: VecDeque<f64>,
    /// Running minimum since the last pulse (pulse height = peak − trough).
    trough: f64,
}

impl PulseDetector {
    pub fn new(fs: f64) -> PulseDetector {
        let rc = |fc: f64| 1.0 / (2.0 * std::f64::consts::PI * fc);
        let dt = 1.0 / fs;
        PulseDetector {
            fs,
            hp: [0.0; 2],
            lp: 0.0,
            alpha_hp: rc(0.5) / (rc(0.5) + dt),
            alpha_lp: dt / (rc(8.0) + dt),
            prev: [0.0; 2],
            n: 0,
            last: None,
            heights: VecDeque::new(),
            trough: f64::MAX,
        }
    }

    /// One sample; `Some(index)` when a pulse peak is confirmed (at the previous sample).
    pub fn push(&mut self, x: f64) -> Option<u64> {
        let x = if x.is_finite() { x } else { 0.0 };
        // First-order high-pass then low-pass.
        let hp = self.alpha_hp * (self.hp[1] + x - self.hp[0]);
        self.hp = [x, hp];
        self.lp += self.alpha_lp * (hp - self.lp);
        let y = self.lp;
        let n = self.n;
        self.n += 1;
        let [p1, p2] = self.prev;
        self.prev = [y, p1];
        self.trough = self.trough.min(y);
        if n < 2 || !(p1 > p2 && p1 >= y) {
            return None;
        }
        let height = p1 - self.trough;
        let gap = (0.3 * self.fs) as u64;
        if self.last.is_some_and(|l| n - 1 < l + gap) || height <= 0.0 {
            return None;
        }
        let mut sorted: Vec<f64> = self.heights.iter().copied().collect();
        sorted.sort_by(f64::total_cmp);
        let median = sorted.get(sorted.len() / 2).copied().unwrap_or(0.0);
        if height < 0.2 * median {
            return None;
        }
        self.heights.push_back(height);
        if self.heights.len() > 10 {
            self.heights.pop_front();
        }
        self.last = Some(n - 1);
        self.trough = f64::MAX;
        Some(n - 1)
    }
}

/// One ECG lead's detector and quality over the last second.
#[derive(Clone, Debug)]
struct Lead {
    beats: RPeakDetector,
    last_beat: Option<u64>,
    second: Vec<f64>,
    /// Whether the lead was usable in the last completed second, and since when it has been
    /// usable without a pause.
    usable_since: Option<u64>,
    /// Peak-to-peak amplitudes of the last ten usable seconds.
    spans: VecDeque<f64>,
    /// The last two seconds of samples (the first one's index is `raw_start`), to measure beats.
    raw: VecDeque<f64>,
    raw_start: u64,
    /// Amplitudes of beats in the current second, committed to `amps` if the second is clean.
    pending: Vec<f64>,
    /// Amplitudes of the last 16 beats in clean seconds.
    amps: VecDeque<f64>,
}

impl Lead {
    /// A beat's amplitude: the largest distance from the mean of the last two seconds within
    /// 60 ms of the beat (the detector places it on the band-passed signal, a few samples off).
    fn amplitude(&self, b: u64, fs: f64) -> f64 {
        let (sum, n) = self
            .raw
            .iter()
            .filter(|v| v.is_finite())
            .fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
        let mean = sum / n.max(1) as f64;
        let w = (0.06 * fs) as u64;
        (b.saturating_sub(w)..=b + w)
            .filter_map(|i| i.checked_sub(self.raw_start))
            .filter_map(|i| self.raw.get(i as usize))
            .filter(|v| v.is_finite())
            .map(|v| (v - mean).abs())
            .fold(0.0, f64::max)
    }

    /// Whether a detected beat is as large as real ones (a third of the median of the last clean
    /// beats): after an artefact the detector learns its levels afresh, and on the flat line of a
    /// stopped heart it would otherwise learn the noise and find "beats" in it.
    fn real(&self, amp: f64) -> bool {
        if self.amps.len() < 4 {
            return true;
        }
        let mut s: Vec<f64> = self.amps.iter().copied().collect();
        s.sort_by(f64::total_cmp);
        amp >= s[s.len() / 2] / 3.0
    }
}

/// An asystole monitor over ECG leads and an optional plethysmogram, all at `fs`.
#[derive(Clone, Debug)]
pub struct AsystoleMonitor {
    fs: f64,
    window: u64,
    leads: Vec<Lead>,
    pulse: Option<(PulseDetector, Option<u64>)>,
    n: u64,
    raised: bool,
}

impl AsystoleMonitor {
    pub fn new(fs: f64, leads: usize, pleth: bool, window_s: f64) -> AsystoleMonitor {
        AsystoleMonitor {
            fs,
            window: (window_s * fs) as u64,
            leads: (0..leads)
                .map(|_| Lead {
                    beats: RPeakDetector::new(fs),
                    last_beat: None,
                    second: Vec::new(),
                    usable_since: None,
                    spans: VecDeque::new(),
                    raw: VecDeque::new(),
                    raw_start: 0,
                    pending: Vec::new(),
                    amps: VecDeque::new(),
                })
                .collect(),
            pulse: pleth.then(|| (PulseDetector::new(fs), None)),
            n: 0,
            raised: false,
        }
    }

    /// Whether lead `i` was usable in its last completed second (not stuck, lifted or moving).
    pub fn lead_usable(&self, i: usize) -> bool {
        self.leads.get(i).is_some_and(|l| l.usable_since.is_some())
    }

    /// Whether an asystole episode is on.
    pub fn active(&self) -> bool {
        self.raised
    }

    /// One frame (a sample of every lead, and of the plethysmogram if worn). Returns the sample
    /// index when asystole is raised (once per episode; a beat or a pulse ends the episode).
    pub fn push(&mut self, ecg: &[f64], pleth: Option<f64>) -> Option<u64> {
        self.push_beats(ecg, pleth, &mut Vec::new())
    }

    /// [`push`](Self::push), also appending the beats the first lead's detector confirmed now,
    /// so that a caller needing the beat series does not run a second detector.
    pub fn push_beats(
        &mut self,
        ecg: &[f64],
        pleth: Option<f64>,
        first_lead_beats: &mut Vec<u64>,
    ) -> Option<u64> {
        let n = self.n;
        self.n += 1;
        let second = self.fs.round() as usize;
        let mut out = Vec::new();
        let mut any_beat = false;
        for (i, (lead, &x)) in self.leads.iter_mut().zip(ecg).enumerate() {
            out.clear();
            lead.raw.push_back(x);
            if lead.raw.len() > 2 * second {
                lead.raw.pop_front();
                lead.raw_start += 1;
            }
            lead.beats.push(x, &mut out);
            if i == 0 {
                first_lead_beats.extend_from_slice(&out);
            }
            for &b in &out {
                let amp = lead.amplitude(b, self.fs);
                if lead.real(amp) {
                    lead.pending.push(amp);
                    lead.last_beat = Some(b);
                    any_beat = true;
                }
            }
            lead.second.push(x);
            if lead.second.len() == second {
                let (lo, hi) = lead
                    .second
                    .iter()
                    .fold((f64::MAX, f64::MIN), |(a, b), &v| (a.min(v), b.max(v)));
                let spread = (hi - lo).partial_cmp(&1e-6);
                let stuck = spread != Some(std::cmp::Ordering::Greater)
                    || lead.second.iter().any(|v| !v.is_finite());
                // Motion: a second far wider than the lead's usual beats.
                let mut sorted: Vec<f64> = lead.spans.iter().copied().collect();
                sorted.sort_by(f64::total_cmp);
                let noisy = sorted.len() >= 5 && hi - lo > 2.5 * sorted[sorted.len() / 2];
                let pending = std::mem::take(&mut lead.pending);
                if stuck || noisy {
                    lead.usable_since = None;
                    if noisy {
                        lead.beats.relearn();
                    }
                } else {
                    lead.amps.extend(pending);
                    while lead.amps.len() > 16 {
                        lead.amps.pop_front();
                    }
                    lead.spans.push_back(hi - lo);
                    if lead.spans.len() > 10 {
                        lead.spans.pop_front();
                    }
                    if lead.usable_since.is_none() {
                        // Usable again: the step back from a lifted or stuck lead is an
                        // artefact too, so the detector learns its levels afresh, and the lead
                        // can show asystole only after that learning and a whole window.
                        lead.usable_since = Some(n + 1 + 2 * second as u64);
                        lead.beats.relearn();
                    }
                }
                lead.second.clear();
            }
        }
        let mut pulsing = false;
        if let (Some((det, last)), Some(p)) = (self.pulse.as_mut(), pleth) {
            if let Some(i) = det.push(p) {
                *last = Some(i);
            }
            pulsing = last.is_some_and(|l| n < l + self.window);
        }
        if any_beat || pulsing {
            self.raised = false;
        }
        // Learning: the first beats set the detectors' levels.
        if n < self.window + (3.0 * self.fs) as u64 || self.raised || pulsing {
            return None;
        }
        // A lead that has been usable for the whole window with no beat in it.
        let silent = self.leads.iter().any(|l| {
            l.usable_since.is_some_and(|u| u + self.window <= n)
                && l.last_beat.is_none_or(|b| b + self.window <= n)
        });
        // Every usable lead must agree: one with a recent beat vetoes.
        let beating = self
            .leads
            .iter()
            .any(|l| l.last_beat.is_some_and(|b| b + self.window > n));
        if silent && !beating {
            self.raised = true;
            return Some(n);
        }
        None
    }
}
