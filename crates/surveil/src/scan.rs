//! A prospective space–time scan statistic over districts (Kulldorff 2001; the space–time
//! permutation model of Kulldorff et al. 2005). Candidate clusters are cylinders: a circle of the
//! `k` districts nearest a centre's centroid (up to `max_districts` or `max_radius_km`) over the last
//! `w` days up to the day analysed (w ≤ `max_days`), so only clusters still alive are found.
//! Expected counts condition on each day's network total and on each district's share of the
//! baseline period, so seasonality and national trends do not raise clusters. The most likely
//! cluster's log-likelihood ratio is compared with its distribution under the null (each day's
//! cases spread over districts by their shares), by Monte Carlo with Besag–Clifford early stopping.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// District centroids (degrees).
#[derive(Clone, Debug)]
pub struct Geography {
    pub lat: Vec<f64>,
    pub lon: Vec<f64>,
}

/// Great-circle distance in km.
pub fn distance_km(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
    let (p1, p2) = (lat1.to_radians(), lat2.to_radians());
    let dp = p2 - p1;
    let dl = (lon2 - lon1).to_radians();
    let a = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
    2.0 * 6371.0 * a.sqrt().asin()
}

impl Geography {
    pub fn len(&self) -> usize {
        self.lat.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lat.is_empty()
    }

    pub fn distance(&self, a: usize, b: usize) -> f64 {
        distance_km(self.lat[a], self.lon[a], self.lat[b], self.lon[b])
    }

    /// For each district, the districts by distance (itself first), cut at `max` or `radius_km`.
    pub fn circles(&self, max: usize, radius_km: f64) -> Vec<Vec<usize>> {
        (0..self.len())
            .map(|c| {
                let mut d: Vec<(f64, usize)> =
                    (0..self.len()).map(|o| (self.distance(c, o), o)).collect();
                d.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
                d.into_iter()
                    .take(max)
                    .filter(|(km, o)| *o == c || *km <= radius_km)
                    .map(|(_, o)| o)
                    .collect()
            })
            .collect()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScanControl {
    pub max_districts: usize,
    pub max_radius_km: f64,
    pub max_days: usize,
    /// Days before the scanned window that give each district's share.
    pub baseline_days: usize,
    pub replications: usize,
    /// Stop the Monte Carlo once this many null maxima reach the observed one (it also stops as soon
    /// as the p-value can no longer reach `alpha`); p-values of stopped runs are Besag–Clifford's
    /// estimate from the replications run.
    pub stop_after: usize,
    pub alpha: f64,
    pub seed: u64,
}

impl Default for ScanControl {
    fn default() -> Self {
        ScanControl {
            max_districts: 8,
            max_radius_km: 30.0,
            max_days: 7,
            baseline_days: 365,
            replications: 999,
            stop_after: 20,
            alpha: 0.01,
            seed: 20_240_601,
        }
    }
}

/// The most likely cluster on a day.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Cluster {
    pub day: usize,
    pub center: usize,
    pub districts: Vec<usize>,
    /// First day of the cluster's window.
    pub start: usize,
    pub observed: f64,
    pub expected: f64,
    pub llr: f64,
    pub p_value: f64,
    /// Monte Carlo replications run (fewer than asked when stopped early).
    pub replications: usize,
    pub alarm: bool,
}

/// Poisson log-likelihood ratio of `c` cases against `e` expected out of `total` (0 unless c > e).
fn llr(c: f64, e: f64, total: f64) -> f64 {
    if c <= e || e <= 0.0 {
        return 0.0;
    }
    let rest = total - c;
    let mut v = c * (c / e).ln();
    if rest > 0.0 {
        v += rest * (rest / (total - e)).ln();
    }
    v
}

/// Maximum LLR over all cylinders; `counts[d * days + w]` = cases of district `d` over the last
/// `w + 1` days, `expect` likewise, `totals[w]` the network's.
fn best(
    circles: &[Vec<usize>],
    counts: &[f64],
    expect: &[f64],
    totals: &[f64],
) -> (f64, usize, usize, usize) {
    let days = totals.len();
    let mut top = (0.0, 0, 0, 0);
    for (c, circle) in circles.iter().enumerate() {
        for (w, &total) in totals.iter().enumerate() {
            let (mut oc, mut ec) = (0.0, 0.0);
            for (k, &d) in circle.iter().enumerate() {
                oc += counts[d * days + w];
                ec += expect[d * days + w];
                if oc > ec {
                    let v = llr(oc, ec, total);
                    if v > top.0 {
                        top = (v, c, k + 1, w);
                    }
                }
            }
        }
    }
    top
}

/// Whether any cylinder's LLR reaches `top` (the Monte Carlo only needs that, not the maximum).
/// `ln(x) <= x - 1` bounds the Poisson LLR by `N (c - e)^2 / (e (N - e))`, so a cylinder whose bound
/// stays below `top` is passed over without a logarithm; under the null nearly all are.
fn exceeds(
    circles: &[Vec<usize>],
    counts: &[f64],
    expect: &[f64],
    totals: &[f64],
    top: f64,
) -> bool {
    let days = totals.len();
    // Leave room for rounding between the bound and the LLR computed with logarithms.
    let cut = top * (1.0 - 1e-9) - 1e-12;
    for circle in circles {
        for (w, &total) in totals.iter().enumerate() {
            let (mut oc, mut ec) = (0.0, 0.0);
            for &d in circle {
                oc += counts[d * days + w];
                ec += expect[d * days + w];
                if oc > ec {
                    let diff = oc - ec;
                    let rest = total - ec;
                    if (rest <= 0.0 || total * diff * diff >= cut * ec * rest)
                        && llr(oc, ec, total) >= top
                    {
                        return true;
                    }
                }
            }
        }
    }
    false
}

/// Walker's alias table: draws a district in O(1) with the probabilities of `weights`.
struct Alias {
    prob: Vec<f64>,
    alias: Vec<usize>,
}

impl Alias {
    fn new(weights: &[f64]) -> Alias {
        let n = weights.len();
        let total: f64 = weights.iter().sum();
        let mut scaled: Vec<f64> = weights.iter().map(|w| w * n as f64 / total).collect();
        let mut prob = vec![1.0; n];
        let mut alias: Vec<usize> = (0..n).collect();
        let (mut small, mut large): (Vec<usize>, Vec<usize>) =
            (0..n).partition(|&i| scaled[i] < 1.0);
        while let (Some(s), Some(&l)) = (small.pop(), large.last()) {
            prob[s] = scaled[s];
            alias[s] = l;
            scaled[l] -= 1.0 - scaled[s];
            if scaled[l] < 1.0 {
                large.pop();
                small.push(l);
            }
        }
        // Whatever is left holds probability one up to rounding.
        Alias { prob, alias }
    }

    fn sample(&self, rng: &mut impl Rng) -> usize {
        let n = self.prob.len();
        let u: f64 = rng.random::<f64>() * n as f64;
        let i = (u as usize).min(n - 1);
        if u - (i as f64) < self.prob[i] {
            i
        } else {
            self.alias[i]
        }
    }
}

/// Cumulative windows ending today: `out[d * days + w]` = sum of `per_day(d, i)` over the last
/// `w + 1` days (`i` counts from the window's first day).
fn windows(nd: usize, days: usize, per_day: impl Fn(usize, usize) -> f64, out: &mut [f64]) {
    for d in 0..nd {
        let mut acc = 0.0;
        for w in 0..days {
            acc += per_day(d, days - 1 - w);
            out[d * days + w] = acc;
        }
    }
}

/// Scan day `day` of `counts[district][day]` (network totals of one group × syndrome).
pub fn scan_day(
    counts: &[Vec<f64>],
    circles: &[Vec<usize>],
    day: usize,
    ctl: &ScanControl,
) -> Option<Cluster> {
    let nd = counts.len();
    let days = ctl.max_days.min(day + 1);
    let first = day + 1 - days;
    let base_end = first;
    let base_start = base_end.saturating_sub(ctl.baseline_days);
    if base_end <= base_start || nd == 0 {
        return None;
    }
    // District shares of the baseline, smoothed so that a district with no baseline case can still
    // form a cluster without an infinite ratio.
    let base: Vec<f64> = counts
        .iter()
        .map(|r| r[base_start..base_end].iter().sum::<f64>() + 0.5)
        .collect();
    let base_total: f64 = base.iter().sum();
    let share: Vec<f64> = base.iter().map(|b| b / base_total).collect();
    let daily: Vec<f64> = (first..=day)
        .map(|t| counts.iter().map(|r| r[t]).sum())
        .collect();
    let mut obs = vec![0.0; nd * days];
    let mut exp = vec![0.0; nd * days];
    windows(nd, days, |d, i| counts[d][first + i], &mut obs);
    windows(nd, days, |d, i| daily[i] * share[d], &mut exp);
    let totals: Vec<f64> = (0..days)
        .map(|w| daily[days - 1 - w..].iter().sum())
        .collect();
    let (top, c, k, w) = best(circles, &obs, &exp, &totals);
    let districts: Vec<usize> = circles[c][..k.max(1)].to_vec();
    let mut cluster = Cluster {
        day,
        center: c,
        observed: districts.iter().map(|&d| obs[d * days + w]).sum(),
        expected: districts.iter().map(|&d| exp[d * days + w]).sum(),
        districts,
        start: day - w,
        llr: top,
        p_value: 1.0,
        replications: 0,
        alarm: false,
    };
    if top <= 0.0 {
        return Some(cluster);
    }
    // Null: each day's cases spread over districts by share (multinomial, one alias draw a case).
    let table = Alias::new(&share);
    let mut rng =
        ChaCha8Rng::seed_from_u64(ctl.seed ^ (day as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    // Sequential Monte Carlo: an alarm needs (exceed + 1) / (R + 1) <= alpha, so once `limit`
    // replications reach the observed maximum the answer is "no alarm" and the rest need not run.
    let limit = ((ctl.alpha * (ctl.replications + 1) as f64).floor() as usize)
        .clamp(1, ctl.stop_after.max(1));
    let mut sim = vec![0.0; nd * days];
    let mut so = vec![0.0; nd * days];
    let mut exceed = 0;
    let mut reps = 0;
    while reps < ctl.replications && exceed < limit {
        sim.iter_mut().for_each(|x| *x = 0.0);
        for (i, &n) in daily.iter().enumerate() {
            for _ in 0..n as u64 {
                sim[table.sample(&mut rng) * days + i] += 1.0;
            }
        }
        windows(nd, days, |d, i| sim[d * days + i], &mut so);
        if exceeds(circles, &so, &exp, &totals, top) {
            exceed += 1;
        }
        reps += 1;
    }
    cluster.replications = reps;
    cluster.p_value = (exceed + 1) as f64 / (reps + 1) as f64;
    cluster.alarm = reps == ctl.replications && cluster.p_value <= ctl.alpha;
    Some(cluster)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_distr::{Distribution, Poisson};

    fn grid(n: usize) -> Geography {
        // n × n districts 10 km apart around 37°N.
        let (mut lat, mut lon) = (vec![], vec![]);
        for i in 0..n {
            for j in 0..n {
                lat.push(37.0 + i as f64 * 0.09);
                lon.push(127.0 + j as f64 * 0.113);
            }
        }
        Geography { lat, lon }
    }

    fn background(nd: usize, days: usize, rate: f64, seed: u64) -> Vec<Vec<f64>> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let p = Poisson::new(rate).unwrap();
        (0..nd)
            .map(|_| (0..days).map(|_| p.sample(&mut rng)).collect())
            .collect()
    }

    #[test]
    fn finds_a_planted_cluster_and_stays_quiet_without_one() {
        let g = grid(8);
        let ctl = ScanControl {
            replications: 199,
            alpha: 0.01,
            ..ScanControl::default()
        };
        let circles = g.circles(ctl.max_districts, ctl.max_radius_km);
        let mut counts = background(g.len(), 400, 2.0, 1);
        // Quiet days: the most likely cluster is not significant at 1 % in 19 of 20 or more.
        let quiet = (380..400)
            .filter(|&d| scan_day(&counts, &circles, d, &ctl).unwrap().alarm)
            .count();
        assert!(quiet <= 1, "{quiet} false alarms in 20 quiet days");
        // Three neighbouring districts get 4 extra cases a day for the last 4 days.
        for d in [27, 28, 35] {
            for c in &mut counts[d][396..400] {
                *c += 4.0;
            }
        }
        let c = scan_day(&counts, &circles, 399, &ctl).unwrap();
        assert!(c.alarm, "{c:?}");
        assert!(c.districts.contains(&28) && c.districts.len() <= 8, "{c:?}");
        assert!(c.start >= 394 && c.start <= 397, "{c:?}");
        assert!(c.observed > c.expected * 2.0);
    }

    #[test]
    fn alias_draws_follow_the_weights() {
        let w = [0.5, 3.0, 0.0, 1.5, 5.0];
        let t = Alias::new(&w);
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let n = 200_000;
        let mut hits = [0usize; 5];
        for _ in 0..n {
            hits[t.sample(&mut rng)] += 1;
        }
        assert_eq!(hits[2], 0, "a zero weight is never drawn");
        for (h, wi) in hits.iter().zip(w) {
            let p = wi / 10.0;
            let sd = (n as f64 * p * (1.0 - p)).sqrt();
            assert!(
                (*h as f64 - n as f64 * p).abs() <= 5.0 * sd + 1.0,
                "{hits:?}"
            );
        }
    }

    #[test]
    fn the_bounded_test_agrees_with_the_maximum() {
        // Whatever the counts, "some cylinder reaches top" equals "the maximum reaches top".
        let g = grid(5);
        let circles = g.circles(6, 30.0);
        let days = 5;
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for round in 0..300 {
            let counts: Vec<f64> = (0..g.len() * days)
                .map(|_| Poisson::new(1.5).unwrap().sample(&mut rng))
                .collect();
            let expect: Vec<f64> = (0..g.len() * days)
                .map(|i| 1.0 + (i % 7) as f64 * 0.2)
                .collect();
            let mut totals: Vec<f64> = (0..days)
                .map(|w| (0..g.len()).map(|d| counts[d * days + w]).sum::<f64>())
                .collect();
            if round % 10 == 0 {
                // Totals no larger than some cylinder's expectation exercise the guard.
                totals.iter_mut().for_each(|t| *t = 1.0);
            }
            let top = best(&circles, &counts, &expect, &totals).0;
            assert!(top > 0.0, "round {round}");
            for f in [0.5, 0.999_999, 1.0, 1.000_001, 2.0] {
                let got = exceeds(&circles, &counts, &expect, &totals, top * f);
                assert_eq!(got, f <= 1.0, "round {round}, top {top}, f {f}");
            }
        }
    }

    #[test]
    fn llr_is_kulldorffs() {
        // 20 observed where 10 expected out of 100: 20 ln 2 + 80 ln(80/90).
        let v = llr(20.0, 10.0, 100.0);
        assert!((v - (20.0 * 2f64.ln() + 80.0 * (80.0f64 / 90.0).ln())).abs() < 1e-12);
        assert_eq!(llr(5.0, 10.0, 100.0), 0.0);
    }
}
