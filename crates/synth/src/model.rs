//! Risk models of the synthetic population: baseline biometrics and the logistic models that decide
//! who has which chronic disease at the baseline date and who develops it in the five years after.
//!
//! Every coefficient lives here and is written to `ground_truth.json`. Intercepts are calibrated at
//! start-up (bisection with common random numbers on a fixed calibration sample) so that adult
//! prevalences at the reference date match the published Korean figures in
//! `data/korea_reference_figures.csv`.
//!
//! The five-year onset models for type 2 diabetes and major cardiovascular events are exactly
//! logistic in the baseline covariates recorded at the 2018 health screening, so a logistic regression
//! of onset on those covariates recovers the coefficients.

use rand::Rng;
use rand_distr::{Distribution, Normal};
use serde::Serialize;

/// Number of causal variants; the first five act on T2D, the last three on MACE.
pub const CAUSAL: usize = 8;
pub const T2D_SNPS: std::ops::Range<usize> = 0..5;
pub const CAD_SNPS: std::ops::Range<usize> = 5..8;

/// Baseline feature names, in vector order.
pub const FEATURES: [&str; 10 + CAUSAL] = [
    "age",
    "male",
    "bmi",
    "sbp",
    "glucose",
    "ldl",
    "current_smoker",
    "ever_smoker",
    "hypertension",
    "t2d",
    "snp1",
    "snp2",
    "snp3",
    "snp4",
    "snp5",
    "snp6",
    "snp7",
    "snp8",
];
pub const F_AGE: usize = 0;
pub const F_MALE: usize = 1;
pub const F_BMI: usize = 2;
pub const F_SBP: usize = 3;
pub const F_GLUCOSE: usize = 4;
pub const F_LDL: usize = 5;
pub const F_SMOKER: usize = 6;
pub const F_EVER_SMOKER: usize = 7;
pub const F_HTN: usize = 8;
pub const F_T2D: usize = 9;
pub const F_SNP: usize = 10;
pub const NF: usize = FEATURES.len();

/// Minor allele frequencies and per-allele odds ratios of the causal variants.
pub const CAUSAL_MAF: [f64; CAUSAL] = [0.30, 0.22, 0.40, 0.15, 0.35, 0.25, 0.33, 0.18];
pub const CAUSAL_OR: [f64; CAUSAL] = [1.50, 1.40, 1.30, 1.35, 1.25, 1.30, 1.25, 1.35];

#[derive(Debug, Clone, Serialize)]
pub struct Logit {
    pub name: &'static str,
    pub description: &'static str,
    pub intercept: f64,
    #[serde(serialize_with = "ser_coefs")]
    pub coef: [f64; NF],
    /// Calibration target and the population it applies to.
    pub target: &'static str,
}

fn ser_coefs<S: serde::Serializer>(c: &[f64; NF], s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut m = s.serialize_map(None)?;
    for (i, v) in c.iter().enumerate() {
        if *v != 0.0 {
            m.serialize_entry(FEATURES[i], v)?;
        }
    }
    m.end()
}

impl Logit {
    fn new(
        name: &'static str,
        description: &'static str,
        target: &'static str,
        terms: &[(usize, f64)],
    ) -> Logit {
        let mut coef = [0.0; NF];
        for &(i, v) in terms {
            coef[i] = v;
        }
        Logit {
            name,
            description,
            intercept: 0.0,
            coef,
            target,
        }
    }
    pub fn prob(&self, x: &[f64; NF]) -> f64 {
        let lp = self.intercept + self.coef.iter().zip(x).map(|(a, b)| a * b).sum::<f64>();
        1.0 / (1.0 + (-lp).exp())
    }
}

fn snp_terms(range: std::ops::Range<usize>) -> Vec<(usize, f64)> {
    range.map(|k| (F_SNP + k, CAUSAL_OR[k].ln())).collect()
}

#[derive(Debug, Clone, Serialize)]
pub struct Models {
    pub htn_prev: Logit,
    pub htn_inc: Logit,
    pub t2d_prev: Logit,
    pub t2d_inc: Logit,
    pub dl_prev: Logit,
    pub ihd_prev: Logit,
    pub stroke_prev: Logit,
    pub mace_inc: Logit,
    pub copd_prev: Logit,
    pub oa_prev: Logit,
    pub stomach_inc: Logit,
    pub colon_inc: Logit,
}

/// Baseline state of one adult at the baseline date.
#[derive(Debug, Clone)]
pub struct Baseline {
    pub x: [f64; NF],
    pub dbp: f64,
    pub hba1c: f64,
    pub egfr: f64,
    pub former_smoker: bool,
    pub dyslipidemia: bool,
    pub ihd: bool,
    pub stroke: bool,
    pub copd: bool,
    pub oa: bool,
    /// Five-year outcomes after baseline.
    pub htn_onset: bool,
    pub t2d_onset: bool,
    pub mace_onset: bool,
    pub stomach_onset: bool,
    pub colon_onset: bool,
}

fn normal(rng: &mut impl Rng, mean: f64, sd: f64) -> f64 {
    Normal::new(mean, sd).expect("valid sd").sample(rng)
}

pub fn round_to(v: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (v * f).round() / f
}

/// Annual probability of death after baseline (Gompertz), raised by half after IHD or stroke.
pub fn annual_mortality(age: f64, frail: bool) -> f64 {
    ((-10.2 + 0.092 * age).exp() * if frail { 1.5 } else { 1.0 }).min(0.5)
}

/// Probability of surviving the six years from baseline to the reference date.
pub fn survival_to_reference(age_at_baseline: f64, frail: bool) -> f64 {
    (0..6)
        .map(|y| 1.0 - annual_mortality(age_at_baseline + y as f64, frail))
        .product()
}

/// The causal SNPs' A1 dosages for one person, Hardy–Weinberg at [`CAUSAL_MAF`].
pub fn causal_genotypes(rng: &mut impl Rng) -> [u8; CAUSAL] {
    std::array::from_fn(|k| {
        (rng.random::<f64>() < CAUSAL_MAF[k]) as u8 + (rng.random::<f64>() < CAUSAL_MAF[k]) as u8
    })
}

impl Models {
    pub fn uncalibrated() -> Models {
        use F_AGE as A;
        let mut t2d_inc_terms = vec![
            (A, 0.03),
            (F_MALE, 0.20),
            (F_BMI, 0.10),
            (F_SBP, 0.008),
            (F_GLUCOSE, 0.045),
            (F_SMOKER, 0.35),
        ];
        t2d_inc_terms.extend(snp_terms(T2D_SNPS));
        let mut t2d_prev_terms = vec![(A, 0.05), (F_MALE, 0.25), (F_BMI, 0.15), (F_SMOKER, 0.30)];
        t2d_prev_terms.extend(snp_terms(T2D_SNPS));
        let mut mace_terms = vec![
            (A, 0.07),
            (F_MALE, 0.50),
            (F_SBP, 0.015),
            (F_LDL, 0.006),
            (F_SMOKER, 0.60),
            (F_T2D, 0.50),
            (F_HTN, 0.30),
        ];
        mace_terms.extend(snp_terms(CAD_SNPS));
        Models {
            htn_prev: Logit::new("hypertension_prevalent", "hypertension diagnosed before baseline",
                "28.0% of adults >=20 have hypertension at the reference date (with htn_inc)",
                &[(A, 0.075), (F_MALE, 0.35), (F_BMI, 0.12)]),
            htn_inc: Logit::new("hypertension_5y_onset", "new hypertension within 5 years of baseline",
                "6% five-year onset among adults >=20 free of hypertension at baseline",
                &[(A, 0.04), (F_MALE, 0.20), (F_BMI, 0.10)]),
            t2d_prev: Logit::new("t2d_prevalent", "type 2 diabetes diagnosed before baseline",
                "15.5% of adults >=30 have T2D at the reference date (with t2d_inc)", &t2d_prev_terms),
            t2d_inc: Logit::new("t2d_5y_onset", "type 2 diabetes onset within 5 years of baseline; covariates from the 2018 screening",
                "5% five-year onset among persons aged 30-79 at baseline free of T2D", &t2d_inc_terms),
            dl_prev: Logit::new("dyslipidemia_prevalent", "dyslipidaemia (hypercholesterolaemia) diagnosed",
                "21% of adults >=30", &[(A, 0.04), (F_BMI, 0.08), (F_LDL, 0.03)]),
            ihd_prev: Logit::new("ihd_prevalent", "ischaemic heart disease before baseline",
                "3.5% of adults >=40", &[(A, 0.08), (F_MALE, 0.70), (F_SMOKER, 0.50), (F_HTN, 0.50), (F_T2D, 0.60)]),
            stroke_prev: Logit::new("stroke_prevalent", "stroke before baseline",
                "2% of adults >=40", &[(A, 0.09), (F_MALE, 0.40), (F_HTN, 0.70), (F_T2D, 0.40), (F_SMOKER, 0.40)]),
            mace_inc: Logit::new("mace_5y_onset", "myocardial infarction or ischaemic stroke within 5 years of baseline; covariates from the 2018 screening",
                "3% five-year onset among persons aged 40-79 at baseline without prior IHD or stroke", &mace_terms),
            copd_prev: Logit::new("copd_prevalent", "COPD", "3% of adults >=40",
                &[(A, 0.08), (F_EVER_SMOKER, 1.6), (F_MALE, 0.3)]),
            oa_prev: Logit::new("osteoarthritis_prevalent", "osteoarthritis", "15% of adults >=50",
                &[(A, 0.07), (F_MALE, -0.5), (F_BMI, 0.08)]),
            stomach_inc: Logit::new("stomach_cancer_5y_onset", "stomach cancer within 5 years", "0.4% of adults >=40",
                &[(A, 0.06), (F_MALE, 0.7), (F_SMOKER, 0.4)]),
            colon_inc: Logit::new("colon_cancer_5y_onset", "colon cancer within 5 years", "0.35% of adults >=40",
                &[(A, 0.06), (F_MALE, 0.3), (F_BMI, 0.04)]),
        }
    }

    /// Draw baseline biometrics and disease states for an adult aged `age` at baseline.
    /// `snps` are the causal genotypes (A1 counts). All randomness comes from `rng`, in a fixed order.
    pub fn baseline(
        &self,
        rng: &mut impl Rng,
        age: f64,
        male: bool,
        snps: &[u8; CAUSAL],
    ) -> Baseline {
        let m = if male { 1.0 } else { 0.0 };
        let mut x = [0.0; NF];
        x[F_AGE] = age;
        x[F_MALE] = m;
        for k in 0..CAUSAL {
            x[F_SNP + k] = snps[k] as f64;
        }
        // Every random number is drawn up front, in a fixed order, so that the number of draws never
        // depends on an intercept: calibration by bisection then sees common random numbers.
        let u: [f64; 12] = rng.random();
        let z: [f64; 8] = std::array::from_fn(|_| normal(rng, 0.0, 1.0));
        // Smoking (KNHANES-like: about 35% of men and 6% of women smoke).
        let (p_cur, p_former) = if male {
            (0.36 - 0.002 * (age - 40.0).max(0.0), 0.25)
        } else {
            (0.06, 0.04)
        };
        let current = u[0] < p_cur;
        let former = !current && u[0] < p_cur + p_former;
        x[F_SMOKER] = current as u8 as f64;
        x[F_EVER_SMOKER] = (current || former) as u8 as f64;
        // BMI: obesity (>=25) about 41% of men and 27% of women.
        let (bmi_mean, bmi_sd) = if male { (24.5, 3.2) } else { (22.9, 3.4) };
        x[F_BMI] = round_to(
            (bmi_mean + 0.015 * (age - 45.0) + bmi_sd * z[0]).clamp(14.0, 50.0),
            1,
        );
        let htn = u[1] < self.htn_prev.prob(&x);
        x[F_HTN] = htn as u8 as f64;
        // Values are rounded as a screening record would hold them, before they enter any risk model.
        x[F_SBP] = (108.0
            + 0.45 * (age - 20.0)
            + 4.0 * m
            + (x[F_BMI] - 23.0)
            + 11.0 * z[1]
            + if htn { 16.0 } else { 0.0 })
        .clamp(80.0, 230.0)
        .round();
        let dbp = (0.55 * x[F_SBP] + 8.0 + 6.0 * z[2])
            .clamp(40.0, 140.0)
            .round();
        let t2d = u[2] < self.t2d_prev.prob(&x);
        x[F_T2D] = t2d as u8 as f64;
        x[F_GLUCOSE] = (86.0
            + 0.22 * (age - 20.0)
            + 1.2 * (x[F_BMI] - 23.0)
            + 9.0 * z[3]
            + if t2d { 50.0 + 20.0 * z[4] } else { 0.0 })
        .clamp(50.0, 400.0)
        .round();
        let hba1c = round_to(
            (4.4 + 0.012 * x[F_GLUCOSE] + 0.25 * z[5]).clamp(3.5, 15.0),
            1,
        );
        x[F_LDL] = (108.0 + 0.35 * (age - 20.0) + (x[F_BMI] - 23.0) + 30.0 * z[6])
            .clamp(20.0, 300.0)
            .round();
        let egfr = (108.0 - 0.85 * (age - 20.0) + 13.0 * z[7]
            - if t2d { 8.0 } else { 0.0 }
            - if htn { 5.0 } else { 0.0 })
        .clamp(5.0, 150.0)
        .round();
        let dyslipidemia = u[3] < self.dl_prev.prob(&x);
        let ihd = age >= 30.0 && u[4] < self.ihd_prev.prob(&x);
        let stroke = age >= 30.0 && u[5] < self.stroke_prev.prob(&x);
        let copd = age >= 40.0 && u[6] < self.copd_prev.prob(&x);
        let oa = age >= 40.0 && u[7] < self.oa_prev.prob(&x);
        let htn_onset = !htn && u[8] < self.htn_inc.prob(&x);
        let t2d_onset = !t2d && u[9] < self.t2d_inc.prob(&x);
        let mace_onset = !(ihd || stroke) && age >= 30.0 && u[10] < self.mace_inc.prob(&x);
        let stomach_onset = age >= 30.0 && u[11] < self.stomach_inc.prob(&x);
        let colon_onset = age >= 30.0 && u[11] > 1.0 - self.colon_inc.prob(&x);
        Baseline {
            x,
            dbp,
            hba1c,
            egfr,
            former_smoker: former,
            dyslipidemia,
            ihd,
            stroke,
            copd,
            oa,
            htn_onset,
            t2d_onset,
            mace_onset,
            stomach_onset,
            colon_onset,
        }
    }
}

/// One member of the calibration sample: age at baseline, sex and a private RNG seed.
pub struct CalibPerson {
    pub age: f64,
    pub male: bool,
    pub snps: [u8; CAUSAL],
    pub seed: u64,
}

/// Calibrate all intercepts. Deterministic: the sample and its seeds are fixed by the caller.
pub fn calibrate(models: &mut Models, sample: &[CalibPerson]) {
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;
    // Age at the reference date is about age at baseline + 4.5 years.
    let end_age = |p: &CalibPerson| p.age + 4.5;
    // Mean of `f` over the sample members selected by `sel`, simulating with the current models. With
    // `survivors`, each person is weighted by the chance of being alive at the reference date, because
    // the published prevalences (and the generator's realised ones) are among the living.
    fn mean_over(
        models: &Models,
        sample: &[CalibPerson],
        survivors: bool,
        sel: &dyn Fn(&CalibPerson) -> bool,
        f: &dyn Fn(&Models, &Baseline) -> Option<f64>,
    ) -> f64 {
        let (mut s, mut n) = (0.0, 0.0);
        for p in sample.iter().filter(|p| sel(p)) {
            if p.age < 20.0 {
                // Too young for the baseline screening: no chronic disease in the generator either.
                n += 1.0;
                continue;
            }
            let mut rng = ChaCha8Rng::seed_from_u64(p.seed);
            let b = models.baseline(&mut rng, p.age, p.male, &p.snps);
            if let Some(v) = f(models, &b) {
                let w = if survivors {
                    survival_to_reference(p.age, b.ihd || b.stroke)
                } else {
                    1.0
                };
                s += w * v;
                n += w;
            }
        }
        if n > 0.0 {
            s / n
        } else {
            0.0
        }
    }
    fn bisect(
        models: &mut Models,
        pick: fn(&mut Models) -> &mut Logit,
        target: f64,
        eval: &dyn Fn(&Models) -> f64,
    ) {
        let (mut lo, mut hi) = (-40.0, 10.0);
        for _ in 0..40 {
            let mid = 0.5 * (lo + hi);
            pick(models).intercept = mid;
            if eval(models) < target {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        pick(models).intercept = 0.5 * (lo + hi);
    }
    let x_prev = |l: &Logit, b: &Baseline| l.prob(&b.x);
    for _round in 0..2 {
        // Hypertension: five-year onset among the free, then prevalence at the end.
        bisect(models, |m| &mut m.htn_inc, 0.06, &|m| {
            mean_over(m, sample, false, &|p| p.age >= 20.0, &|m, b| {
                (b.x[F_HTN] == 0.0).then(|| x_prev(&m.htn_inc, b))
            })
        });
        bisect(models, |m| &mut m.htn_prev, 0.28, &|m| {
            // Realised draws, not expected values: covariates are drawn conditional on the realised state.
            mean_over(m, sample, true, &|p| end_age(p) >= 20.0, &|_, b| {
                Some((b.x[F_HTN] > 0.0 || b.htn_onset) as u8 as f64)
            })
        });
        bisect(models, |m| &mut m.t2d_inc, 0.05, &|m| {
            mean_over(
                m,
                sample,
                false,
                &|p| (30.0..80.0).contains(&p.age),
                &|m, b| (b.x[F_T2D] == 0.0).then(|| m.t2d_inc.prob(&b.x)),
            )
        });
        bisect(models, |m| &mut m.t2d_prev, 0.155, &|m| {
            mean_over(m, sample, true, &|p| end_age(p) >= 30.0, &|_, b| {
                Some((b.x[F_T2D] > 0.0 || b.t2d_onset) as u8 as f64)
            })
        });
    }
    let adults = |min: f64| move |p: &CalibPerson| p.age >= min;
    bisect(models, |m| &mut m.dl_prev, 0.21, &|m| {
        mean_over(m, sample, true, &|p| end_age(p) >= 30.0, &|_, b| {
            Some(b.dyslipidemia as u8 as f64)
        })
    });
    bisect(models, |m| &mut m.ihd_prev, 0.035, &|m| {
        mean_over(m, sample, false, &adults(40.0), &|m, b| {
            Some(m.ihd_prev.prob(&b.x))
        })
    });
    bisect(models, |m| &mut m.stroke_prev, 0.02, &|m| {
        mean_over(m, sample, false, &adults(40.0), &|m, b| {
            Some(m.stroke_prev.prob(&b.x))
        })
    });
    bisect(models, |m| &mut m.mace_inc, 0.03, &|m| {
        mean_over(
            m,
            sample,
            false,
            &|p| (40.0..80.0).contains(&p.age),
            &|m, b| (!(b.ihd || b.stroke)).then(|| m.mace_inc.prob(&b.x)),
        )
    });
    bisect(models, |m| &mut m.copd_prev, 0.03, &|m| {
        mean_over(m, sample, false, &adults(40.0), &|m, b| {
            Some(m.copd_prev.prob(&b.x))
        })
    });
    bisect(models, |m| &mut m.oa_prev, 0.15, &|m| {
        mean_over(m, sample, false, &adults(50.0), &|m, b| {
            Some(m.oa_prev.prob(&b.x))
        })
    });
    bisect(models, |m| &mut m.stomach_inc, 0.004, &|m| {
        mean_over(m, sample, false, &adults(40.0), &|m, b| {
            Some(m.stomach_inc.prob(&b.x))
        })
    });
    bisect(models, |m| &mut m.colon_inc, 0.0035, &|m| {
        mean_over(m, sample, false, &adults(40.0), &|m, b| {
            Some(m.colon_inc.prob(&b.x))
        })
    });
}
