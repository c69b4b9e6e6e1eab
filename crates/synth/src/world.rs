//! Everything shared by all persons of one run: geography, hospitals and their catchments, calibrated
//! risk models, syndromes with their seasonality, and the planted outbreaks.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::environment::{Effect, Environment};
use crate::geo::{Geography, AGE_BANDS};
use crate::model::{self, CalibPerson, Models};
use crate::vocab::c;
use crate::{SynthConfig, END, SYN_START};

pub const GROUPS: [&str; 5] = [
    "elderly",
    "child_u5",
    "medical_aid",
    "disability",
    "elderly_alone",
];

pub struct Syndrome {
    pub name: &'static str,
    /// First concept is the defining one (and gets the drug, if any).
    pub concepts: &'static [i64],
    pub drug: Option<i64>,
    pub er_share: f64,
    /// Seasonality: von Mises concentration and peak day of year; `None` = driven by heat.
    pub season: Option<(f64, f64)>,
}

/// The first four are the surveillance syndromes (outbreaks are planted in them); cardiovascular
/// visits exist for the environment's heat effect (`environment.rs`).
pub const SYNDROMES: [Syndrome; 5] = [
    Syndrome {
        name: "ili",
        concepts: &[c::INFLUENZA, c::FEVER],
        drug: Some(c::OSELTAMIVIR),
        er_share: 0.15,
        season: Some((1.5, 20.0)),
    },
    Syndrome {
        name: "gastrointestinal",
        concepts: &[c::DIARRHEA, c::VOMITING],
        drug: None,
        er_share: 0.2,
        season: Some((0.5, 200.0)),
    },
    Syndrome {
        name: "respiratory",
        concepts: &[c::ACUTE_BRONCHITIS, c::COUGH, c::PNEUMONIA],
        drug: None,
        er_share: 0.1,
        season: Some((0.7, 10.0)),
    },
    Syndrome {
        name: "heat_illness",
        concepts: &[c::LOCAL_HEAT_ILLNESS],
        drug: None,
        er_share: 0.6,
        season: None,
    },
    Syndrome {
        name: "cardiovascular",
        concepts: &[c::CHEST_PAIN, c::HEART_FAILURE, c::CARDIAC_ARRHYTHMIA],
        drug: None,
        er_share: 0.4,
        season: Some((0.4, 15.0)),
    },
];

impl Syndrome {
    /// Episodes per person-year before seasonality.
    pub fn rate_per_year(&self, age: i32, outdoor: bool) -> f64 {
        match self.name {
            "ili" => match age {
                0..=4 => 0.25,
                5..=19 => 0.15,
                20..=64 => 0.05,
                _ => 0.08,
            },
            "gastrointestinal" => match age {
                0..=4 => 0.20,
                5..=64 => 0.05,
                _ => 0.07,
            },
            "respiratory" => match age {
                0..=4 => 0.45,
                5..=64 => 0.10,
                _ => 0.20,
            },
            "cardiovascular" => match age {
                0..=44 => 0.01,
                45..=64 => 0.04,
                _ => 0.10,
            },
            _ => (if age >= 65 { 0.012 } else { 0.003 }) * if outdoor { 4.0 } else { 1.0 },
        }
    }
}

/// Daily relative intensity of each syndrome over the surveillance window, with cumulative sums.
pub struct Season {
    /// cum[s][i] = sum of intensity over days SYN_START..SYN_START+i, in person-years per unit rate.
    cum: Vec<Vec<f64>>,
    /// For a syndrome the environment drives, the same per district: `by_district[s][d][i]`.
    by_district: Vec<Option<Vec<Vec<f64>>>>,
    pub tmax: Vec<f64>,
    pub env: Environment,
}

fn bessel_i0(k: f64) -> f64 {
    let mut s = 1.0;
    let mut t = 1.0;
    for j in 1..30 {
        t *= (k / 2.0) * (k / 2.0) / (j * j) as f64;
        s += t;
    }
    s
}

impl Season {
    fn new(rng: &mut ChaCha8Rng, geo: &Geography, env_seed: u64) -> Season {
        let days = (END - SYN_START + 1) as usize;
        // Synthetic daily maximum temperature in Seoul-like climate: annual cycle plus AR(1) weather.
        let mut tmax = Vec::with_capacity(days);
        let mut ar = 0.0;
        for i in 0..days {
            let doy = crate::day_of_year(SYN_START + i as i32) as f64;
            ar = 0.7 * ar
                + 2.2 * rand_distr::Distribution::<f64>::sample(&rand_distr::StandardNormal, rng);
            tmax.push(
                17.5 + 13.5 * (2.0 * std::f64::consts::PI * (doy - 205.0) / 365.25).cos() + ar,
            );
        }
        let heat_raw: Vec<f64> = tmax.iter().map(|t| (t - 29.0).max(0.0)).collect();
        let heat_mean = heat_raw.iter().sum::<f64>() / days as f64;
        let env = Environment::new(geo, &tmax, env_seed);
        let base: Vec<Vec<f64>> = SYNDROMES
            .iter()
            .map(|s| {
                heat_raw
                    .iter()
                    .enumerate()
                    .map(|(i, heat)| match s.season {
                        Some((k, peak)) => {
                            let doy = crate::day_of_year(SYN_START + i as i32) as f64;
                            (k * (2.0 * std::f64::consts::PI * (doy - peak) / 365.25).cos()).exp()
                                / bessel_i0(k)
                        }
                        None => heat / heat_mean.max(1e-9),
                    })
                    .collect()
            })
            .collect();
        let cumulate = |w: &mut dyn Iterator<Item = f64>| {
            let mut acc = 0.0;
            let mut out = Vec::with_capacity(days + 1);
            out.push(0.0);
            for x in w {
                acc += x / 365.25;
                out.push(acc);
            }
            out
        };
        let cum = base
            .iter()
            .map(|w| cumulate(&mut w.iter().copied()))
            .collect();
        let by_district = SYNDROMES
            .iter()
            .zip(&base)
            .map(|(s, w)| {
                let effect = Effect::of(s.name)?;
                Some(
                    (0..env.districts)
                        .map(|d| {
                            cumulate(&mut (0..days).map(|t| w[t] * env.relative_risk(effect, d, t)))
                        })
                        .collect(),
                )
            })
            .collect();
        Season {
            cum,
            by_district,
            tmax,
            env,
        }
    }

    fn cum(&self, s: usize, district: usize) -> &[f64] {
        match &self.by_district[s] {
            Some(per) => &per[district],
            None => &self.cum[s],
        }
    }

    /// Expected episodes per unit yearly rate over days `a..=b` in `district`.
    pub fn mass(&self, s: usize, district: usize, a: i32, b: i32) -> f64 {
        let cum = self.cum(s, district);
        let (i, j) = ((a - SYN_START) as usize, (b - SYN_START) as usize + 1);
        cum[j] - cum[i]
    }

    /// Draw a day in `a..=b` proportional to intensity in `district`.
    pub fn draw(&self, s: usize, district: usize, a: i32, b: i32, u: f64) -> i32 {
        let cum = self.cum(s, district);
        let (i, j) = ((a - SYN_START) as usize, (b - SYN_START) as usize + 1);
        let target = cum[i] + u * (cum[j] - cum[i]);
        let idx = cum[i..=j].partition_point(|&x| x <= target);
        (SYN_START + (i + idx) as i32 - 1).clamp(a, b)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Outbreak {
    pub id: usize,
    pub district: usize,
    pub district_code: String,
    pub district_name: String,
    pub group: usize,
    pub group_name: &'static str,
    pub syndrome: usize,
    pub syndrome_name: &'static str,
    pub start: i32,
    pub start_date: String,
    pub days: i32,
    /// Expected extra cases over the whole outbreak.
    pub expected_excess: f64,
    /// Expected baseline cases in the same cell and window (for the relative size).
    pub expected_baseline: f64,
    #[serde(skip)]
    pub rate_per_person_day: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct GiTruth {
    pub description: &'static str,
    pub exposure: &'static str,
    pub comparator: &'static str,
    pub outcome_concept_id: i64,
    pub hazard_ratio: f64,
    pub base_rate_per_year: f64,
    pub age_log_hr_per_year: f64,
    pub confounding: &'static str,
}

pub struct Hospital {
    pub name: String,
    pub home: Vec<usize>,
}

pub struct World {
    pub cfg: SynthConfig,
    pub geo: Geography,
    pub models: Models,
    pub hospitals: Vec<Hospital>,
    pub outbreaks: Vec<Outbreak>,
    pub season: Season,
    pub truth_gi: GiTruth,
    demo_cum: Vec<f64>,
    /// Per province: cumulative hospital choice probabilities.
    site_cum: Vec<Vec<f64>>,
}

/// SplitMix64: derives independent seeds for streams (person i, calibration, outbreaks, SNP k …).
pub fn mix(seed: u64, stream: u64, index: u64) -> u64 {
    let mut z = seed
        ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ index.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

pub const STREAM_PERSON: u64 = 1;
pub const STREAM_CALIB: u64 = 2;
pub const STREAM_WORLD: u64 = 3;
pub const STREAM_SNP: u64 = 4;
pub const STREAM_ENVIRONMENT: u64 = 5;

impl World {
    pub fn new(cfg: SynthConfig) -> World {
        let geo = Geography::korea();
        let mut demo_cum = Vec::with_capacity(geo.weight.len() * 2 * AGE_BANDS);
        let mut acc = 0.0;
        for w in &geo.weight {
            for sex in w {
                for v in sex {
                    acc += v;
                    demo_cum.push(acc);
                }
            }
        }
        // Hospitals: provinces dealt round-robin by population, so sizes differ.
        let h = cfg.hospitals.max(1);
        let mut order: Vec<usize> = (0..geo.provinces.len()).collect();
        let pop = |p: usize| geo.weight[p].iter().flatten().sum::<f64>();
        order.sort_by(|a, b| pop(*b).partial_cmp(&pop(*a)).expect("finite"));
        let mut hospitals: Vec<Hospital> = (0..h)
            .map(|i| Hospital {
                name: site_name(i),
                home: Vec::new(),
            })
            .collect();
        for (k, p) in order.iter().enumerate() {
            let slot = if k < h { k } else { h - 1 - (k % h) };
            hospitals[slot].home.push(*p);
        }
        let site_cum = (0..geo.provinces.len())
            .map(|p| {
                let mut acc = 0.0;
                (0..h)
                    .map(|s| {
                        let home = hospitals[s].home.contains(&p);
                        acc += if home {
                            0.85
                        } else {
                            0.15 / (h as f64 - 1.0).max(1.0)
                        } + if h == 1 { 0.15 } else { 0.0 };
                        acc
                    })
                    .collect()
            })
            .collect();

        let mut models = Models::uncalibrated();
        // Calibration sample: adults drawn from the same demography.
        let mut crng = ChaCha8Rng::seed_from_u64(mix(cfg.seed, STREAM_CALIB, 0));
        let mut sample = Vec::new();
        while sample.len() < 20_000 {
            let (_, male, band) =
                World::draw_demography_from(&demo_cum, geo.weight.len(), crng.random());
            let age_end = if band == 17 {
                85 + crng.random_range(0..15)
            } else {
                band as i32 * 5 + crng.random_range(0..5)
            };
            // Same age arithmetic as the generator: birth 0-1 years before age_end, age at baseline by year.
            let age_b = age_end - 5 + (crng.random::<f64>() < 0.5) as i32;
            if age_b < 14 {
                continue;
            }
            let snps = model::causal_genotypes(&mut crng);
            sample.push(CalibPerson {
                age: age_b as f64,
                male,
                snps,
                seed: crng.random(),
            });
        }
        model::calibrate(&mut models, &sample);

        let mut wrng = ChaCha8Rng::seed_from_u64(mix(cfg.seed, STREAM_WORLD, 0));
        let season = Season::new(&mut wrng, &geo, mix(cfg.seed, STREAM_ENVIRONMENT, 0));
        let truth_gi = GiTruth {
            description: "GI haemorrhage during NSAID courses of osteoarthritis patients aged >=50 at baseline",
            exposure: "diclofenac (1124300)",
            comparator: "celecoxib (1118084)",
            outcome_concept_id: c::GI_HEMORRHAGE,
            hazard_ratio: 2.0,
            base_rate_per_year: 0.03,
            age_log_hr_per_year: 0.04,
            confounding: "older patients are more often given celecoxib (P = 0.5 + 0.02*(age-65), clamped to 0.2..0.8) and bleed more (log HR 0.04/year), so the crude ratio is biased towards 1 and age-stratified estimates recover 2.0",
        };
        let mut w = World {
            cfg,
            geo,
            models,
            hospitals,
            outbreaks: Vec::new(),
            season,
            truth_gi,
            demo_cum,
            site_cum,
        };
        w.outbreaks = w.plant_outbreaks(&mut wrng);
        w
    }

    fn draw_demography_from(cum: &[f64], provinces: usize, u: f64) -> (usize, bool, usize) {
        let total = *cum.last().expect("non-empty");
        let i = cum.partition_point(|&x| x <= u * total).min(cum.len() - 1);
        let p = i / (2 * AGE_BANDS);
        let sex = (i / AGE_BANDS) % 2;
        debug_assert!(p < provinces);
        (p, sex == 0, i % AGE_BANDS)
    }

    pub fn person_rng(&self, index: u64) -> ChaCha8Rng {
        ChaCha8Rng::seed_from_u64(mix(self.cfg.seed, STREAM_PERSON, index))
    }

    pub fn draw_demography(&self, u: f64) -> (usize, bool, usize) {
        World::draw_demography_from(&self.demo_cum, self.geo.weight.len(), u)
    }

    pub fn draw_district(&self, province: usize, u: f64) -> usize {
        let ds = &self.geo.provinces[province].districts;
        let mut acc = 0.0;
        for &d in ds {
            acc += self.geo.districts[d].weight;
            if u < acc {
                return d;
            }
        }
        *ds.last().expect("province has districts")
    }

    pub fn draw_site(&self, province: usize, u: f64) -> usize {
        let cum = &self.site_cum[province];
        let total = *cum.last().expect("hospitals");
        cum.partition_point(|&x| x <= u * total).min(cum.len() - 1)
    }

    /// Share of the national population in a district.
    fn district_share(&self, d: usize) -> f64 {
        let dist = &self.geo.districts[d];
        self.geo.weight[dist.province].iter().flatten().sum::<f64>() * dist.weight
    }

    fn group_share(&self, province: usize, group: usize) -> f64 {
        let w = &self.geo.weight[province];
        let tot: f64 = w.iter().flatten().sum();
        let elderly: f64 = (13..AGE_BANDS).map(|b| w[0][b] + w[1][b]).sum::<f64>() / tot;
        match GROUPS[group] {
            "elderly" => elderly,
            "child_u5" => (w[0][0] + w[1][0]) / tot,
            "medical_aid" => 0.07 * elderly + 0.022 * (1.0 - elderly),
            "disability" => 0.015 + 0.0012 * 42.0,
            _ => 0.22 * elderly,
        }
    }

    /// Outbreaks: one per 4,000 persons (at least 8, at most 60), in 2021–2024, sized so that the excess is
    /// several times the cell's baseline and at least 12 cases: a cluster public-health staff would
    /// act on. (With 6, a 100,000-person population realised 2 to 9 extra cases over one to three
    /// weeks, which no detector can tell from noise in a cell with a baseline near zero.)
    fn plant_outbreaks(&self, rng: &mut ChaCha8Rng) -> Vec<Outbreak> {
        let n = ((self.cfg.persons / 4_000) as usize).clamp(8, 60);
        let mut out = Vec::new();
        let persons = self.cfg.persons as f64;
        let mut tries = 0;
        while out.len() < n && tries < 10_000 {
            tries += 1;
            // District weighted by population.
            let u: f64 = rng.random();
            let mut acc = 0.0;
            let mut district = self.geo.districts.len() - 1;
            for d in 0..self.geo.districts.len() {
                acc += self.district_share(d);
                if u < acc {
                    district = d;
                    break;
                }
            }
            let group = rng.random_range(0..4);
            let syndrome = match GROUPS[group] {
                "child_u5" => [0usize, 1, 2][rng.random_range(0..3)],
                _ => rng.random_range(0..4),
            };
            let year = rng.random_range(2021..2025);
            let start = if SYNDROMES[syndrome].name == "heat_illness" {
                crate::day(year, 7, 10) + rng.random_range(0..35)
            } else {
                crate::day(year, 1, 1) + rng.random_range(0..330)
            };
            let days = rng.random_range(7..22);
            if start + days > END {
                continue;
            }
            let prov = self.geo.districts[district].province;
            let cell = persons * self.district_share(district) * self.group_share(prov, group);
            if cell < 20.0 {
                continue;
            }
            // Overlapping outbreaks in one cell would blur the truth; keep them apart.
            if out.iter().any(|o: &Outbreak| {
                o.district == district && o.group == group && (o.start - start).abs() < 60
            }) {
                continue;
            }
            let age_for_rate = match GROUPS[group] {
                "elderly" => 75,
                "child_u5" => 2,
                _ => 40,
            };
            let rate = SYNDROMES[syndrome].rate_per_year(age_for_rate, false);
            let baseline = cell
                * rate
                * self
                    .season
                    .mass(syndrome, district, start, start + days - 1);
            let excess = (4.0 * baseline).max(12.0);
            out.push(Outbreak {
                id: out.len(),
                district,
                district_code: self.geo.districts[district].code.clone(),
                district_name: self.geo.districts[district].name.clone(),
                group,
                group_name: GROUPS[group],
                syndrome,
                syndrome_name: SYNDROMES[syndrome].name,
                start,
                start_date: crate::date_string(start),
                days,
                expected_excess: excess,
                expected_baseline: baseline,
                rate_per_person_day: excess / (cell * days as f64),
            });
        }
        out.sort_by_key(|o| (o.start, o.district));
        for (i, o) in out.iter_mut().enumerate() {
            o.id = i;
        }
        out
    }
}

pub fn site_name(i: usize) -> String {
    let letters = b"abcdefghijklmnopqrstuvwxyz";
    if i < 26 {
        format!("hospital_{}", letters[i] as char)
    } else {
        format!("hospital_{i}")
    }
}
