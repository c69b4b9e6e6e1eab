//! The few distribution tails the association tests need; the normal and incomplete-beta ones are
//! the surveillance detectors' (`medfed_surveil::dist`).

pub use medfed_surveil::dist::{inc_beta, pnorm_upper, qnorm};

/// Upper tail of the chi-square distribution with 1 or 2 degrees of freedom (the allelic, trend,
/// genotypic and Wald tests); `NaN` for a non-finite statistic.
pub fn chisq_upper(x: f64, df: u32) -> f64 {
    if !x.is_finite() {
        return f64::NAN;
    }
    let x = x.max(0.0);
    match df {
        1 => libm::erfc((x / 2.0).sqrt()),
        2 => (-x / 2.0).exp(),
        _ => gamma_q(df as f64 / 2.0, x / 2.0),
    }
}

/// Regularized upper incomplete gamma `Q(a, x)` (series below `a + 1`, continued fraction above).
pub fn gamma_q(a: f64, x: f64) -> f64 {
    if x <= 0.0 {
        return 1.0;
    }
    let lg = libm::lgamma(a);
    if x < a + 1.0 {
        let (mut sum, mut term, mut ap) = (1.0 / a, 1.0 / a, a);
        for _ in 0..1000 {
            ap += 1.0;
            term *= x / ap;
            sum += term;
            if term.abs() < sum.abs() * 1e-16 {
                break;
            }
        }
        1.0 - sum * (-x + a * x.ln() - lg).exp()
    } else {
        // Lentz's method.
        let tiny = 1e-300;
        let mut b = x + 1.0 - a;
        let mut c = 1.0 / tiny;
        let mut d = 1.0 / b;
        let mut h = d;
        for i in 1..1000 {
            let an = -(i as f64) * (i as f64 - a);
            b += 2.0;
            d = an * d + b;
            if d.abs() < tiny {
                d = tiny;
            }
            c = b + an / c;
            if c.abs() < tiny {
                c = tiny;
            }
            d = 1.0 / d;
            let del = d * c;
            h *= del;
            if (del - 1.0).abs() < 1e-16 {
                break;
            }
        }
        (-x + a * x.ln() - lg).exp() * h
    }
}

/// Two-sided p-value of Student's t with `df` degrees of freedom; `NaN` for a statistic that is not
/// finite (a perfect fit) or no degree of freedom, which the reports print as `NA`.
pub fn pt_two_sided(t: f64, df: f64) -> f64 {
    if !t.is_finite() || df <= 0.0 {
        return f64::NAN;
    }
    medfed_surveil::dist::pt_two_sided(t, df)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tails_match_known_values() {
        // R: pchisq(3.841459, 1, lower = FALSE) = 0.05; pchisq(5.991465, 2, ...) = 0.05;
        // pchisq(7.814728, 3, ...) = 0.05; pchisq(30, 3, ...) = 1.38005703129325e-06;
        // pt(2.228139, 10) two-sided = 0.05; qnorm(0.975).
        assert!((chisq_upper(3.841_459, 1) - 0.05).abs() < 1e-7);
        assert!((chisq_upper(5.991_465, 2) - 0.05).abs() < 1e-7);
        assert!((chisq_upper(7.814_728, 3) - 0.05).abs() < 1e-7);
        assert!((chisq_upper(30.0, 3) - 1.380_057_031_293_25e-6).abs() < 1e-17);
        assert!((pt_two_sided(2.228_139, 10.0) - 0.05).abs() < 1e-7);
        assert!((qnorm(0.975) - 1.959_963_984_540_054).abs() < 1e-14);
        assert!((pnorm_upper(1.959_963_984_540_054) - 0.025).abs() < 1e-15);
    }
}
