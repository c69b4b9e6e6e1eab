//! One outbreak, one alert. Every detector's alarms (a district, a vulnerable group, a syndrome, a
//! day) are linked when they are about the same group and syndrome, in the same or nearby districts
//! (or the same scan cluster), within `gap_days` of each other; each linked set is one alert with
//! its first and last day, its districts, the detectors that agreed and a severity score. An alert
//! is raised only when independent evidence agrees (two detector families, or a significant scan
//! cluster); the rest stay signals, visible but not pushed — ESSENCE's alert fatigue comes from
//! pushing every single-detector alarm.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Detector families: EARS C1–C3 on one series are one family (they share a baseline).
/// [`Family::evidence`] puts EARS and CUSUM together: both look at the same daily counts, so the two
/// firing on one day is one piece of evidence, not two.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    Ears,
    Cusum,
    Farrington,
    Scan,
}

impl Family {
    /// Independent lines of evidence: daily aberration (EARS, CUSUM), the weekly seasonal model
    /// (Farrington), and the spatial cluster (scan).
    pub fn evidence(self) -> u8 {
        match self {
            Family::Ears | Family::Cusum => 0,
            Family::Farrington => 1,
            Family::Scan => 2,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Signal {
    /// e.g. `ears_c2`, `farrington_flexible`, `scan`.
    pub detector: String,
    pub family: Family,
    pub group: usize,
    pub syndrome: usize,
    /// The districts the alarm is about (one, or a scan cluster's).
    pub districts: Vec<usize>,
    /// Day index of the alarm (a weekly detector's alarm is dated on the week's last day).
    pub day: usize,
    /// First day the alarm's evidence covers.
    pub start: usize,
    pub observed: f64,
    pub expected: f64,
    pub p_value: Option<f64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct GroupingControl {
    pub gap_days: usize,
    /// Districts whose centroids are this close are "nearby".
    pub link_km: f64,
    /// Raise an alert with this many independent lines of evidence agreeing ([`Family::evidence`];
    /// a significant scan cluster is enough on its own).
    pub min_families: usize,
}

impl Default for GroupingControl {
    fn default() -> Self {
        GroupingControl {
            gap_days: 7,
            link_km: 15.0,
            min_families: 2,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    pub group: usize,
    pub syndrome: usize,
    pub districts: Vec<usize>,
    pub first_day: usize,
    pub last_day: usize,
    /// Day the alert would have been raised (the first day its evidence met the bar).
    pub raised_day: Option<usize>,
    pub detectors: Vec<String>,
    pub families: Vec<Family>,
    pub signals: usize,
    /// Largest observed/expected over its signals.
    pub ratio: f64,
    pub min_p_value: Option<f64>,
    /// 0–100 (see [`severity`]).
    pub severity: f64,
    pub level: Level,
    /// Met the bar for pushing (`false` = a signal kept for review).
    pub raised: bool,
    /// What was pushed, in order: the raise itself (its day and the districts so far), then an
    /// update whenever the raised alert spread to a new district, a district's signals resumed after
    /// `gap_days` of quiet, or a significant scan cluster appeared. Without updates, an alert that
    /// seasonal activity keeps alive for weeks would absorb a new outbreak next to it and nobody would
    /// hear of it.
    #[serde(default)]
    pub updates: Vec<Update>,
}

/// One notification of an alert.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Update {
    pub day: usize,
    pub districts: Vec<usize>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    Low,
    Medium,
    High,
}

/// Severity 0–100: agreement (30 × (lines of evidence − 1) / 2), size (30 × log10 of observed/expected, to
/// 10×), persistence (20 × days / 7, to a week) and a significant scan cluster (20).
pub fn severity(families: usize, ratio: f64, days: usize, scan_significant: bool) -> f64 {
    let agree = 30.0 * (families.saturating_sub(1) as f64 / 2.0).min(1.0);
    let size = 30.0 * ratio.max(1.0).log10().min(1.0);
    let persist = 20.0 * (days as f64 / 7.0).min(1.0);
    agree + size + persist + if scan_significant { 20.0 } else { 0.0 }
}

struct Dsu(Vec<usize>);
impl Dsu {
    fn find(&mut self, x: usize) -> usize {
        let mut r = x;
        while self.0[r] != r {
            r = self.0[r];
        }
        let mut y = x;
        while self.0[y] != r {
            let n = self.0[y];
            self.0[y] = r;
            y = n;
        }
        r
    }
    fn union(&mut self, a: usize, b: usize) {
        let (a, b) = (self.find(a), self.find(b));
        if a != b {
            self.0[a.max(b)] = a.min(b);
        }
    }
}

/// Group signals into alerts. `near(a, b)` says whether two districts are nearby.
pub fn group(
    signals: &[Signal],
    near: &dyn Fn(usize, usize) -> bool,
    ctl: &GroupingControl,
    scan_alpha: f64,
) -> Vec<Alert> {
    let mut by_series: BTreeMap<(usize, usize), Vec<usize>> = BTreeMap::new();
    for (i, s) in signals.iter().enumerate() {
        by_series.entry((s.group, s.syndrome)).or_default().push(i);
    }
    let mut dsu = Dsu((0..signals.len()).collect());
    for idx in by_series.values() {
        let mut idx = idx.clone();
        idx.sort_by_key(|&i| signals[i].day);
        for (a, &i) in idx.iter().enumerate() {
            for &j in &idx[a + 1..] {
                let (si, sj) = (&signals[i], &signals[j]);
                if sj.start > si.day + ctl.gap_days && sj.day > si.day + ctl.gap_days {
                    break;
                }
                let linked = si
                    .districts
                    .iter()
                    .any(|&x| sj.districts.iter().any(|&y| x == y || near(x, y)));
                if linked {
                    dsu.union(i, j);
                }
            }
        }
    }
    let mut sets: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for i in 0..signals.len() {
        let r = dsu.find(i);
        sets.entry(r).or_default().push(i);
    }
    let mut out: Vec<Alert> = sets
        .into_values()
        .map(|members| {
            let mut members = members;
            members.sort_by_key(|&i| (signals[i].day, i));
            let s0 = &signals[members[0]];
            let mut districts = BTreeSet::new();
            let mut detectors = BTreeSet::new();
            let (mut first, mut last, mut ratio) = (usize::MAX, 0, 0.0f64);
            let mut min_p: Option<f64> = None;
            let mut raised_day = None;
            let mut fam_so_far = BTreeSet::new();
            let mut evidence = BTreeSet::new();
            let mut scan_sig = false;
            let mut updates: Vec<Update> = Vec::new();
            // Last day each district had a signal of this alert.
            let mut last_seen: BTreeMap<usize, usize> = BTreeMap::new();
            for &i in &members {
                let s = &signals[i];
                let this_scan =
                    s.family == Family::Scan && s.p_value.is_some_and(|p| p <= scan_alpha);
                if raised_day.is_some() {
                    let fresh: Vec<usize> = s
                        .districts
                        .iter()
                        .copied()
                        .filter(|d| last_seen.get(d).is_none_or(|&l| s.day > l + ctl.gap_days))
                        .collect();
                    let notify = if this_scan {
                        s.districts.clone()
                    } else {
                        fresh
                    };
                    if !notify.is_empty() {
                        match updates.last_mut() {
                            // One update a day.
                            Some(u) if u.day == s.day => {
                                u.districts.extend(notify);
                                u.districts.sort_unstable();
                                u.districts.dedup();
                            }
                            _ => updates.push(Update {
                                day: s.day,
                                districts: notify,
                            }),
                        }
                    }
                }
                for &d in &s.districts {
                    let e = last_seen.entry(d).or_insert(s.day);
                    *e = (*e).max(s.day);
                }
                districts.extend(s.districts.iter().copied());
                detectors.insert(s.detector.clone());
                fam_so_far.insert(s.family);
                evidence.insert(s.family.evidence());
                first = first.min(s.start.min(s.day));
                last = last.max(s.day);
                if s.expected > 0.0 {
                    ratio = ratio.max(s.observed / s.expected);
                } else if s.observed > 0.0 {
                    ratio = ratio.max(s.observed / 0.5);
                }
                if let Some(p) = s.p_value {
                    min_p = Some(min_p.map_or(p, |m: f64| m.min(p)));
                }
                if s.family == Family::Scan && s.p_value.is_some_and(|p| p <= scan_alpha) {
                    scan_sig = true;
                }
                if raised_day.is_none() && (evidence.len() >= ctl.min_families || scan_sig) {
                    raised_day = Some(s.day);
                    updates.push(Update {
                        day: s.day,
                        districts: districts.iter().copied().collect(),
                    });
                }
            }
            let sev = severity(evidence.len(), ratio, last + 1 - first, scan_sig);
            Alert {
                group: s0.group,
                syndrome: s0.syndrome,
                districts: districts.into_iter().collect(),
                first_day: first,
                last_day: last,
                raised_day,
                detectors: detectors.into_iter().collect(),
                families: fam_so_far.into_iter().collect(),
                signals: members.len(),
                ratio,
                min_p_value: min_p,
                severity: sev,
                level: if sev >= 70.0 {
                    Level::High
                } else if sev >= 40.0 {
                    Level::Medium
                } else {
                    Level::Low
                },
                raised: raised_day.is_some(),
                updates,
            }
        })
        .collect();
    out.sort_by(|a, b| {
        a.first_day
            .cmp(&b.first_day)
            .then(a.group.cmp(&b.group))
            .then(a.syndrome.cmp(&b.syndrome))
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sig(det: &str, fam: Family, d: usize, day: usize) -> Signal {
        Signal {
            detector: det.into(),
            family: fam,
            group: 0,
            syndrome: 1,
            districts: vec![d],
            day,
            start: day,
            observed: 8.0,
            expected: 2.0,
            p_value: None,
        }
    }

    #[test]
    fn one_outbreak_is_one_alert() {
        // Three EARS variants on days 10–14 in district 3, CUSUM on day 12, Farrington for the
        // neighbouring district 4 on day 13: one alert, raised on day 13 when the weekly model
        // agreed with the daily detectors (CUSUM agreeing with EARS is the same evidence).
        let mut s: Vec<Signal> = (10..15)
            .flat_map(|d| ["ears_c1", "ears_c2", "ears_c3"].map(|m| sig(m, Family::Ears, 3, d)))
            .collect();
        s.push(sig("cusum", Family::Cusum, 3, 12));
        s.push(sig("farrington_flexible", Family::Farrington, 4, 13));
        // Unrelated: far away district 9, and district 3 two months later.
        s.push(sig("ears_c2", Family::Ears, 9, 12));
        s.push(sig("ears_c2", Family::Ears, 3, 70));
        let near = |a: usize, b: usize| a.abs_diff(b) == 1;
        let alerts = group(&s, &near, &GroupingControl::default(), 0.01);
        assert_eq!(alerts.len(), 3);
        let main = &alerts[0];
        assert_eq!(main.districts, vec![3, 4]);
        assert_eq!((main.first_day, main.last_day), (10, 14));
        assert_eq!(main.raised_day, Some(13));
        assert_eq!(main.families.len(), 3);
        assert_eq!(main.signals, 17);
        assert!(main.raised && !alerts[1].raised && !alerts[2].raised);
        assert!(main.severity > alerts[1].severity);
        assert_eq!(
            main.updates,
            vec![Update {
                day: 13,
                districts: vec![3, 4]
            }]
        );
        assert!(alerts[1].updates.is_empty());
    }

    #[test]
    fn a_raised_alert_tells_when_it_spreads_or_flares_again() {
        let near = |a: usize, b: usize| a.abs_diff(b) == 1;
        // Season-long activity in districts 1–2 keeps one alert alive; district 3 joins on day 30,
        // district 1 goes quiet from day 12 and flares again on day 40, a scan cluster on day 50.
        let mut s = vec![
            sig("ears_c2", Family::Ears, 1, 5),
            sig("farrington_flexible", Family::Farrington, 1, 6),
        ];
        for d in (6..60).step_by(5) {
            s.push(sig("ears_c2", Family::Ears, 2, d));
        }
        s.push(sig("ears_c2", Family::Ears, 1, 12));
        s.push(sig("ears_c2", Family::Ears, 3, 30));
        s.push(sig("cusum", Family::Cusum, 1, 40));
        let mut scan = sig("scan", Family::Scan, 2, 50);
        scan.districts = vec![2, 3];
        scan.p_value = Some(0.001);
        s.push(scan);
        let alerts = group(&s, &near, &GroupingControl::default(), 0.01);
        assert_eq!(alerts.len(), 1);
        let days: Vec<(usize, Vec<usize>)> = alerts[0]
            .updates
            .iter()
            .map(|u| (u.day, u.districts.clone()))
            .collect();
        assert_eq!(
            days,
            vec![
                (6, vec![1]),
                (6, vec![2]),
                (30, vec![3]),
                (40, vec![1]),
                (50, vec![2, 3])
            ]
            .into_iter()
            .fold(Vec::<(usize, Vec<usize>)>::new(), |mut v, (d, x)| {
                match v.last_mut() {
                    Some(l) if l.0 == d => {
                        l.1.extend(x);
                        l.1.sort_unstable();
                    }
                    _ => v.push((d, x)),
                }
                v
            })
        );
    }
}
