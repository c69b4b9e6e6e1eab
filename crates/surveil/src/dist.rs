//! The distribution functions the detectors need, written to R's definitions so that bounds agree
//! with R `surveillance` to the last digit where R's are exact (`qnorm` is Wichura's AS241, as R's).

/// Standard normal quantile (Wichura 1988, AS241 PPND16), as R's `qnorm`.
#[allow(clippy::excessive_precision)] // AS241 coefficients as published
pub fn qnorm(p: f64) -> f64 {
    if p.is_nan() || !(0.0..=1.0).contains(&p) {
        return f64::NAN;
    }
    if p == 0.0 {
        return f64::NEG_INFINITY;
    }
    if p == 1.0 {
        return f64::INFINITY;
    }
    let q = p - 0.5;
    if q.abs() <= 0.425 {
        let r = 0.180625 - q * q;
        return q
            * (((((((r * 2509.0809287301226727 + 33430.575583588128105) * r
                + 67265.770927008700853)
                * r
                + 45921.953931549871457)
                * r
                + 13731.693765509461125)
                * r
                + 1971.5909503065514427)
                * r
                + 133.14166789178437745)
                * r
                + 3.387132872796366608)
            / (((((((r * 5226.495278852545925 + 28729.085735721942674) * r
                + 39307.89580009271061)
                * r
                + 21213.794301586595867)
                * r
                + 5394.1960214247511077)
                * r
                + 687.1870074920579083)
                * r
                + 42.313330701600911252)
                * r
                + 1.0);
    }
    let mut r = if q < 0.0 { p } else { 1.0 - p };
    r = (-r.ln()).sqrt();
    let val = if r <= 5.0 {
        r -= 1.6;
        (((((((r * 7.7454501427834140764e-4 + 0.0227238449892691845833) * r
            + 0.24178072517745061177)
            * r
            + 1.27045825245236838258)
            * r
            + 3.64784832476320460504)
            * r
            + 5.7694972214606914055)
            * r
            + 4.6303378461565452959)
            * r
            + 1.42343711074968357734)
            / (((((((r * 1.05075007164441684324e-9 + 5.475938084995344946e-4) * r
                + 0.0151986665636164571966)
                * r
                + 0.14810397642748007459)
                * r
                + 0.68976733498510000455)
                * r
                + 1.6763848301838038494)
                * r
                + 2.05319162663775882187)
                * r
                + 1.0)
    } else {
        r -= 5.0;
        (((((((r * 2.01033439929228813265e-7 + 2.71155556874348757815e-5) * r
            + 0.0012426609473880784386)
            * r
            + 0.026532189526576123093)
            * r
            + 0.29656057182850489123)
            * r
            + 1.7848265399172913358)
            * r
            + 5.4637849111641143699)
            * r
            + 6.6579046435011037772)
            / (((((((r * 2.04426310338993978564e-15 + 1.4215117583164458887e-7) * r
                + 1.8463183175100546818e-5)
                * r
                + 7.868691311456132591e-4)
                * r
                + 0.0148753612908506148525)
                * r
                + 0.13692988092273580531)
                * r
                + 0.59983220655588793769)
                * r
                + 1.0)
    };
    if q < 0.0 {
        -val
    } else {
        val
    }
}

/// Standard normal upper tail P(Z > z).
pub fn pnorm_upper(z: f64) -> f64 {
    0.5 * libm::erfc(z / std::f64::consts::SQRT_2)
}

/// P(T_df > |t|) × 2: the two-sided p-value of a t statistic (regularised incomplete beta).
pub fn pt_two_sided(t: f64, df: f64) -> f64 {
    if !t.is_finite() {
        return if t.is_nan() { f64::NAN } else { 0.0 };
    }
    let x = df / (df + t * t);
    inc_beta(df / 2.0, 0.5, x)
}

/// Regularised incomplete beta I_x(a, b) (continued fraction, Numerical Recipes' `betacf` scheme).
pub fn inc_beta(a: f64, b: f64, x: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let ln_front =
        libm::lgamma(a + b) - libm::lgamma(a) - libm::lgamma(b) + a * x.ln() + b * (1.0 - x).ln();
    if x < (a + 1.0) / (a + b + 2.0) {
        ln_front.exp() * beta_cf(a, b, x) / a
    } else {
        1.0 - ln_front.exp() * beta_cf(b, a, 1.0 - x) / b
    }
}

fn beta_cf(a: f64, b: f64, x: f64) -> f64 {
    const TINY: f64 = 1e-300;
    let (qab, qap, qam) = (a + b, a + 1.0, a - 1.0);
    let mut c = 1.0;
    let mut d = 1.0 - qab * x / qap;
    if d.abs() < TINY {
        d = TINY;
    }
    d = 1.0 / d;
    let mut h = d;
    for m in 1..500 {
        let m = m as f64;
        let m2 = 2.0 * m;
        let aa = m * (b - m) * x / ((qam + m2) * (a + m2));
        d = 1.0 + aa * d;
        if d.abs() < TINY {
            d = TINY;
        }
        c = 1.0 + aa / c;
        if c.abs() < TINY {
            c = TINY;
        }
        d = 1.0 / d;
        h *= d * c;
        let aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2));
        d = 1.0 + aa * d;
        if d.abs() < TINY {
            d = TINY;
        }
        c = 1.0 + aa / c;
        if c.abs() < TINY {
            c = TINY;
        }
        d = 1.0 / d;
        let del = d * c;
        h *= del;
        if (del - 1.0).abs() < 1e-16 {
            break;
        }
    }
    h
}

/// A count distribution given by its probability of 0 and the ratio pmf(x+1)/pmf(x).
trait Counts {
    fn ln_p0(&self) -> f64;
    fn ratio(&self, x: f64) -> f64;
    fn mean(&self) -> f64;
}

struct Pois(f64);
impl Counts for Pois {
    fn ln_p0(&self) -> f64 {
        -self.0
    }
    fn ratio(&self, x: f64) -> f64 {
        self.0 / (x + 1.0)
    }
    fn mean(&self) -> f64 {
        self.0
    }
}

/// R's `dnbinom(x, size, prob)`.
struct NegBin {
    size: f64,
    prob: f64,
}
impl Counts for NegBin {
    fn ln_p0(&self) -> f64 {
        self.size * self.prob.ln()
    }
    fn ratio(&self, x: f64) -> f64 {
        (x + self.size) / (x + 1.0) * (1.0 - self.prob)
    }
    fn mean(&self) -> f64 {
        self.size * (1.0 - self.prob) / self.prob
    }
}

/// Cumulative probabilities by summing the probability function from 0, in log space at the start
/// so that large means do not underflow.
fn cdf_walk(d: &dyn Counts, mut stop: impl FnMut(f64, f64) -> bool) -> f64 {
    // Work with a scaled pmf: ln pmf(0) may underflow; keep a running log scale.
    let mut ln_scale = d.ln_p0();
    let mut pmf = 1.0; // pmf(x) / exp(ln_scale)
    let mut acc = 0.0; // cdf(x) / exp(ln_scale)
    let mut x = 0.0;
    let limit = 10.0 * d.mean() + 1e4;
    loop {
        acc += pmf;
        let cdf = acc * ln_scale.exp();
        if stop(x, cdf.min(1.0)) || x > limit {
            return x;
        }
        pmf *= d.ratio(x);
        x += 1.0;
        if pmf > 1e200 {
            ln_scale += pmf.ln();
            acc /= pmf;
            pmf = 1.0;
        }
    }
}

fn quantile(d: &dyn Counts, p: f64) -> f64 {
    // R's discrete quantiles: the smallest x with P(X <= x) >= p, with R's fuzz for rounding.
    let target = p * (1.0 - 64.0 * f64::EPSILON);
    cdf_walk(d, |_, c| c >= target)
}

fn upper_tail(d: &dyn Counts, q: f64) -> f64 {
    // P(X > q) for integer q ≥ -1.
    if q < 0.0 {
        return 1.0;
    }
    let mut last = 0.0;
    cdf_walk(d, |x, c| {
        last = c;
        x >= q
    });
    (1.0 - last).max(0.0)
}

/// R's `qpois(p, lambda)`.
pub fn qpois(p: f64, lambda: f64) -> f64 {
    if lambda <= 0.0 {
        return 0.0;
    }
    quantile(&Pois(lambda), p)
}

/// R's `qnbinom(p, size, prob)`.
pub fn qnbinom(p: f64, size: f64, prob: f64) -> f64 {
    quantile(&NegBin { size, prob }, p)
}

/// R's `ppois(q, lambda, lower.tail = FALSE)`.
pub fn ppois_upper(q: f64, lambda: f64) -> f64 {
    upper_tail(&Pois(lambda), q)
}

/// R's `pnbinom(q, size, prob, lower.tail = FALSE)`.
pub fn pnbinom_upper(q: f64, size: f64, prob: f64) -> f64 {
    upper_tail(&NegBin { size, prob }, q)
}

/// Sample mean and standard deviation (n − 1), as R's `mean` and `sd`.
pub fn mean_sd(x: &[f64]) -> (f64, f64) {
    let n = x.len() as f64;
    let mean = x.iter().sum::<f64>() / n;
    let ss: f64 = x.iter().map(|v| (v - mean) * (v - mean)).sum();
    (mean, (ss / (n - 1.0)).sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::excessive_precision)] // R's printed digits
    fn normal_quantiles_match_r() {
        // R: sprintf("%.17g", qnorm(c(0.999, 0.975, 0.01, 1e-10)))
        assert_eq!(qnorm(0.999), 3.0902323061678132);
        assert_eq!(qnorm(0.975), 1.9599639845400536);
        assert!((qnorm(0.01) + 2.3263478740408408).abs() < 1e-15);
        assert!((qnorm(1e-10) + 6.3613409024040557).abs() < 1e-13);
    }

    #[test]
    fn count_quantiles_match_r() {
        // R: qpois(0.99, 3.2) = 8; qnbinom(0.99, 2.5, 0.4) = 14; qpois(0.95, 1000) = 1052
        assert_eq!(qpois(0.99, 3.2), 8.0);
        assert_eq!(qnbinom(0.99, 2.5, 0.4), 14.0);
        assert_eq!(qpois(0.95, 1000.0), 1052.0);
        // R: ppois(4, 3.2, lower.tail = FALSE), pnbinom(9, 2.5, 0.4, lower.tail = FALSE), 2 * pt(-2, 10)
        assert!((ppois_upper(4.0, 3.2) - 0.2193874889).abs() < 1e-9);
        assert!((pnbinom_upper(9.0, 2.5, 0.4) - 0.0527966310).abs() < 1e-9);
        assert!((pt_two_sided(2.0, 10.0) - 0.07338803).abs() < 1e-7);
    }
}
