//! One synthetic person's life in the record, 2015–2024: demography, baseline screening, chronic
//! disease and its care, acute events, the planted NSAID–GI-bleed effect, syndromic episodes and planted
//! outbreaks. All randomness comes from the person's own RNG, so output never depends on threads.

use medfed_cdm::value::Value as V;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::model::{
    self, Baseline, CAUSAL, F_AGE, F_BMI, F_GLUCOSE, F_HTN, F_LDL, F_SBP, F_SMOKER, F_T2D,
};
use crate::rows::*;
use crate::vocab::c;
use crate::world::{Syndrome, World, GROUPS, SYNDROMES};
use crate::{day, Tally, BASELINE, END, START, SYN_START};

/// Ids are `person_id * ID_STRIDE + k`; no person has this many rows in one table.
pub const ID_STRIDE: i64 = 10_000;

#[derive(Clone, Copy, PartialEq)]
enum Chronic {
    Htn,
    T2d,
    Dl,
    Ihd,
    Stroke,
    Copd,
    Asthma,
    Ckd,
    Oa,
    Stomach,
    Colon,
}

struct Person {
    site: usize,
    id: i64,
    birth: i32,
    obs_end: i32,
    medical_aid: bool,
    disabled: bool,
    lives_alone: bool,
    n: [i64; 11],
    /// (concept, date) of condition records, for eras.
    cond_dates: Vec<(i64, i32)>,
    /// (ingredient, start, end) of drug exposures, for eras.
    drug_spans: Vec<(i64, i32, i32)>,
}

impl Person {
    fn next_id(&mut self, table: usize) -> i64 {
        self.n[table] += 1;
        debug_assert!(self.n[table] < ID_STRIDE);
        self.id * ID_STRIDE + self.n[table]
    }

    fn age_at(&self, d: i32) -> i32 {
        // Whole years since birth.
        let (by, bm, bd) = crate::ymd(self.birth);
        let (y, m, dd) = crate::ymd(d);
        y - by - ((m, dd) < (bm, bd)) as i32
    }

    fn in_group(&self, group: usize, d: i32) -> bool {
        match GROUPS[group] {
            "elderly" => self.age_at(d) >= 65,
            "child_u5" => self.age_at(d) < 5,
            "medical_aid" => self.medical_aid,
            "disability" => self.disabled,
            "elderly_alone" => self.lives_alone && self.age_at(d) >= 65,
            _ => false,
        }
    }

    fn visit(&mut self, rows: &mut SiteRows, concept: i64, start: i32, end: i32) -> i64 {
        let id = self.next_id(VISIT);
        rows.tables[VISIT].push(&[
            V::Int(id),
            V::Int(self.id),
            V::Int(concept),
            V::Date(start),
            V::Null,
            V::Date(end),
            V::Null,
            V::Int(c::EHR),
            V::Null,
            V::Int(self.site as i64 + 1),
            V::Text(match concept {
                c::INPATIENT => "IP",
                c::ER => "ER",
                _ => "OP",
            }),
            V::Int(0),
        ]);
        id
    }

    fn condition(&mut self, rows: &mut SiteRows, concept: i64, date: i32, visit: i64) {
        // Coding habits differ by hospital (documented in the ground truth).
        let concept = if self.site == 1 && concept == c::T2DM {
            c::T2DM_NO_COMPLICATION
        } else {
            concept
        };
        let kcd = self.site == 3;
        let id = self.next_id(CONDITION);
        rows.tables[CONDITION].push(&[
            V::Int(id),
            V::Int(self.id),
            V::Int(concept),
            V::Date(date),
            V::Null,
            V::Null,
            V::Null,
            V::Int(if kcd { c::CLAIM } else { c::EHR }),
            V::Null,
            V::Null,
            V::Null,
            V::Int(visit),
            V::Null,
            V::Text(source_code(concept, kcd)),
            V::Int(0),
        ]);
        self.cond_dates.push((concept, date));
    }

    fn drug(&mut self, rows: &mut SiteRows, concept: i64, start: i32, days: i32, visit: i64) {
        let end = (start + days - 1).min(self.obs_end);
        let id = self.next_id(DRUG);
        rows.tables[DRUG].push(&[
            V::Int(id),
            V::Int(self.id),
            V::Int(concept),
            V::Date(start),
            V::Null,
            V::Date(end),
            V::Null,
            V::Null,
            V::Int(c::EHR),
            V::Null,
            V::Int(0),
            V::Float(days as f64),
            V::Int((end - start + 1) as i64),
            V::Null,
            V::Null,
            V::Null,
            V::Null,
            V::Int(visit),
            V::Null,
            V::Text(drug_name(concept)),
            V::Int(0),
        ]);
        self.drug_spans.push((concept, start, end));
    }

    fn measurement(
        &mut self,
        rows: &mut SiteRows,
        concept: i64,
        date: i32,
        value: f64,
        visit: i64,
    ) {
        let (mut value, mut unit, unit_text, low, high) = match concept {
            c::BMI => (value, c::KG_M2, "kg/m2", 18.5, 24.9),
            c::SBP => (value, c::MMHG, "mmHg", 90.0, 120.0),
            c::DBP => (value, c::MMHG, "mmHg", 60.0, 80.0),
            c::GLUCOSE => (value, c::MG_DL, "mg/dL", 70.0, 99.0),
            c::HBA1C => (value, c::PERCENT, "%", 4.0, 5.6),
            c::LDL => (value, c::MG_DL, "mg/dL", 0.0, 129.0),
            _ => (value, c::ML_MIN_173, "mL/min/1.73m2", 90.0, 150.0),
        };
        let (mut low, mut high, mut unit_text) = (low, high, unit_text);
        if self.site == 2 && concept == c::GLUCOSE {
            // Hospital c reports glucose in mmol/L.
            value = model::round_to(value / 18.016, 1);
            unit = c::MMOL_L;
            unit_text = "mmol/L";
            low = 3.9;
            high = 5.5;
        }
        let id = self.next_id(MEASUREMENT);
        rows.tables[MEASUREMENT].push(&[
            V::Int(id),
            V::Int(self.id),
            V::Int(concept),
            V::Date(date),
            V::Null,
            V::Null,
            V::Int(c::EHR),
            V::Null,
            V::Float(value),
            V::Null,
            V::Int(unit),
            V::Float(low),
            V::Float(high),
            V::Null,
            V::Int(visit),
            V::Null,
            V::Text(loinc(concept)),
            V::Int(0),
            V::Text(unit_text),
        ]);
    }

    fn observation(
        &mut self,
        rows: &mut SiteRows,
        concept: i64,
        date: i32,
        value_concept: Option<i64>,
        visit: Option<i64>,
    ) {
        let id = self.next_id(OBSERVATION);
        rows.tables[OBSERVATION].push(&[
            V::Int(id),
            V::Int(self.id),
            V::Int(concept),
            V::Date(date),
            V::Null,
            V::Int(c::EHR),
            V::Null,
            V::Null,
            value_concept.map(V::Int).unwrap_or(V::Null),
            V::Null,
            V::Null,
            V::Null,
            visit.map(V::Int).unwrap_or(V::Null),
        ]);
    }
}

fn source_code(concept: i64, kcd: bool) -> &'static str {
    if kcd {
        return match concept {
            c::ESSENTIAL_HYPERTENSION => "I10",
            c::T2DM | c::T2DM_NO_COMPLICATION => "E11",
            c::HYPERCHOLESTEROLEMIA | c::HYPERLIPIDEMIA => "E78",
            c::ACUTE_MI => "I21",
            c::CORONARY_ARTERIOSCLEROSIS => "I25",
            c::CEREBRAL_INFARCTION => "I63",
            c::COPD => "J44",
            c::ASTHMA => "J45",
            c::CKD_STAGE3 => "N18.3",
            c::STOMACH_CANCER => "C16",
            c::COLON_CANCER => "C18",
            c::OA_KNEE => "M17",
            c::GI_HEMORRHAGE => "K92.2",
            c::INFLUENZA => "J11",
            c::FEVER => "R50",
            c::COUGH => "R05",
            c::ACUTE_BRONCHITIS => "J20",
            c::PNEUMONIA => "J18",
            c::DIARRHEA => "R19.7",
            c::VOMITING => "R11",
            c::LOCAL_HEAT_ILLNESS => "T67",
            _ => "",
        };
    }
    crate::vocab::CONCEPTS
        .iter()
        .find(|x| x.0 == concept)
        .map(|x| x.6)
        .unwrap_or("")
}

fn drug_name(concept: i64) -> &'static str {
    crate::vocab::CONCEPTS
        .iter()
        .find(|x| x.0 == concept)
        .map(|x| x.1)
        .unwrap_or("")
}

fn loinc(concept: i64) -> &'static str {
    crate::vocab::CONCEPTS
        .iter()
        .find(|x| x.0 == concept)
        .map(|x| x.6)
        .unwrap_or("")
}

/// Simulate person number `index` (0-based) into `rows` (indexed by site). Returns the causal genotypes
/// when the person is in the biobank.
pub fn simulate(
    w: &World,
    index: u64,
    rows: &mut [SiteRows],
    tally: &mut Tally,
) -> Option<(usize, i64, bool, [u8; CAUSAL])> {
    let mut rng: ChaCha8Rng = w.person_rng(index);
    let id = index as i64 + 1;
    // Demography.
    let (prov, male, band) = w.draw_demography(rng.random());
    let age_end = if band == 17 {
        85 + rng.random_range(0..15)
    } else {
        band as i32 * 5 + rng.random_range(0..5)
    };
    let birth = END - age_end * 365 - rng.random_range(0..365) - age_end / 4;
    let (yob, mob, dob) = crate::ymd(birth);
    let district = w.draw_district(prov, rng.random());
    let site = w.draw_site(prov, rng.random());
    let snps = model::causal_genotypes(&mut rng);
    let genotyped = rng.random::<f64>() < w.cfg.genotyped_share;
    let u: [f64; 8] = rng.random();
    let age_b = 2019 - yob;
    let elderly_b = age_end >= 65;
    let medical_aid = u[0] < if elderly_b { 0.07 } else { 0.022 };
    let disabled = u[1] < 0.015 + 0.0012 * (age_end as f64);
    let lives_alone = elderly_b && u[2] < 0.22;
    let outdoor = (20..70).contains(&age_b) && u[3] < if male { 0.12 } else { 0.04 };
    // Late entry into the hospital's records for a share of people.
    let late = if u[4] < 0.15 {
        rng.random_range(0..1500)
    } else {
        0
    };
    let obs_start = birth.max(START) + late;
    let mut obs_end = END;
    let mut p = Person {
        site,
        id,
        birth,
        obs_end,
        medical_aid,
        disabled,
        lives_alone,
        n: [0; 11],
        cond_dates: Vec::new(),
        drug_spans: Vec::new(),
    };
    let r = &mut rows[site];

    // Baseline for adults (age >= 20 at the baseline date) — the health-screening population.
    let adult = age_b >= 20 && obs_start < BASELINE;
    let b: Option<Baseline> = adult.then(|| w.models.baseline(&mut rng, age_b as f64, male, &snps));

    // Mortality after baseline (and after any MACE, below).
    let mut death: Option<(i32, i64)> = None;
    if let Some(b) = &b {
        for year in 0..6 {
            let q = model::annual_mortality((age_b + year) as f64, b.ihd || b.stroke);
            let (uu, dd): (f64, i32) = (rng.random(), rng.random_range(0..365));
            if death.is_none() && uu < q {
                death = Some((BASELINE + year * 365 + dd, 0));
            }
        }
    }

    // Chronic conditions with diagnosis dates.
    let mut chronic: Vec<(Chronic, i32)> = Vec::new();
    let prevalent_date =
        |rng: &mut ChaCha8Rng| obs_start + rng.random_range(0..(BASELINE - obs_start).max(1));
    // Onsets in the five years after baseline fall before any death (a person who dies in the window
    // had their onset, if any, while alive and recorded), so that the onset models' truth is what
    // the records show: the recorded five-year onset is exactly the model's outcome.
    let onset_span = death.map_or(5 * 365 + 1, |(d, _)| (d - BASELINE).clamp(1, 5 * 365 + 1));
    let onset_date = |rng: &mut ChaCha8Rng| BASELINE + rng.random_range(0..onset_span);
    let mut mace: Option<(i32, bool)> = None;
    if let Some(b) = &b {
        let flags = [
            (b.x[F_HTN] > 0.0, Chronic::Htn),
            (b.x[F_T2D] > 0.0, Chronic::T2d),
            (b.dyslipidemia, Chronic::Dl),
            (b.ihd, Chronic::Ihd),
            (b.stroke, Chronic::Stroke),
            (b.copd, Chronic::Copd),
            (b.egfr < 60.0, Chronic::Ckd),
            (b.oa, Chronic::Oa),
        ];
        for (has, which) in flags {
            let d = prevalent_date(&mut rng);
            if has {
                chronic.push((which, d));
            }
        }
        let onsets = [
            (b.htn_onset, Chronic::Htn),
            (b.t2d_onset, Chronic::T2d),
            (b.stomach_onset, Chronic::Stomach),
            (b.colon_onset, Chronic::Colon),
        ];
        for (has, which) in onsets {
            let d = onset_date(&mut rng);
            if has {
                chronic.push((which, d));
            }
        }
        let (d, is_mi, fatal): (i32, bool, f64) = (
            onset_date(&mut rng),
            rng.random::<f64>() < 0.6,
            rng.random(),
        );
        if b.mace_onset {
            mace = Some((d, is_mi));
            chronic.push((if is_mi { Chronic::Ihd } else { Chronic::Stroke }, d + 1));
            if fatal < 0.08 {
                let dd = d + (fatal * 300.0) as i32;
                if death.map(|x| dd < x.0).unwrap_or(true) {
                    death = Some((
                        dd,
                        if is_mi {
                            c::ACUTE_MI
                        } else {
                            c::CEREBRAL_INFARCTION
                        },
                    ));
                }
            }
        }
    }
    let asthma_p = if age_end < 15 { 0.07 } else { 0.035 };
    let asthma_d = obs_start + rng.random_range(0..(END - obs_start).max(1));
    if rng.random::<f64>() < asthma_p {
        chronic.push((Chronic::Asthma, asthma_d));
    }
    if let Some((d, _)) = death {
        obs_end = d.min(END);
        p.obs_end = obs_end;
    }
    chronic.retain(|(_, d)| *d <= obs_end);

    // Person row.
    r.tables[PERSON].push(&[
        V::Int(id),
        V::Int(if male { c::MALE } else { c::FEMALE }),
        V::Int(yob as i64),
        V::Int(mob as i64),
        V::Int(dob as i64),
        V::Null,
        V::Int(c::ASIAN),
        V::Int(c::NOT_HISPANIC),
        V::Int(w.geo.districts[district].location_id),
        V::Null,
        V::Int(site as i64 + 1),
        V::Text(""),
        V::Text(if male { "M" } else { "F" }),
        V::Int(0),
        V::Text("Korean"),
        V::Int(0),
        V::Text(""),
        V::Int(0),
    ]);
    let opid = p.next_id(OBS_PERIOD);
    r.tables[OBS_PERIOD].push(&[
        V::Int(opid),
        V::Int(id),
        V::Date(obs_start),
        V::Date(obs_end),
        V::Int(c::PERIOD_EHR),
    ]);
    let ppid = p.next_id(PAYER);
    r.tables[PAYER].push(&[
        V::Int(ppid),
        V::Int(id),
        V::Date(obs_start),
        V::Date(obs_end),
        V::Int(if medical_aid {
            c::LOCAL_MEDICAL_AID
        } else {
            c::LOCAL_NHI
        }),
        V::Text(if medical_aid { "MEDICAL_AID" } else { "NHI" }),
        V::Null,
        V::Null,
        V::Text(if medical_aid {
            "Medical Aid"
        } else {
            "National Health Insurance"
        }),
    ]);
    if disabled {
        p.observation(r, c::LOCAL_DISABILITY_REGISTERED, obs_start, None, None);
    }
    if lives_alone {
        let d = obs_start.max(birth + 65 * 365 + 16);
        if d <= obs_end {
            p.observation(r, c::LOCAL_LIVES_ALONE, d, None, None);
        }
    }
    if outdoor {
        p.observation(r, c::LOCAL_OUTDOOR_WORKER, obs_start, None, None);
    }

    // Health screenings: 2016, 2018 (the baseline), 2020, 2022, 2024.
    if let Some(b) = &b {
        for (k, year) in [2016, 2018, 2020, 2022, 2024].into_iter().enumerate() {
            let d = day(year, 7, 1) + rng.random_range(0..150);
            let attend: f64 = rng.random();
            let noise: [f64; 6] = std::array::from_fn(|_| rng.random::<f64>() - 0.5);
            let p_attend = if year == 2018 { 0.92 } else { 0.7 };
            if attend >= p_attend || d < obs_start || d > obs_end {
                continue;
            }
            let v = p.visit(r, c::OUTPATIENT, d, d);
            let years = (year - 2018) as f64;
            let baseline_visit = k == 1;
            let t2d_now =
                b.x[F_T2D] > 0.0 || chronic.iter().any(|(w, od)| *w == Chronic::T2d && *od <= d);
            let jit = |i: usize, s: f64| if baseline_visit { 0.0 } else { noise[i] * s };
            let bmi = model::round_to(b.x[F_BMI] + 0.15 * years + jit(0, 2.0), 1);
            let sbp = (b.x[F_SBP] + 0.5 * years + jit(1, 16.0)).round();
            let dbp = (b.dbp + jit(2, 10.0)).round();
            let glu = (b.x[F_GLUCOSE]
                + jit(3, 14.0)
                + if t2d_now && b.x[F_T2D] == 0.0 {
                    45.0
                } else {
                    0.0
                })
            .round();
            let ldl = (b.x[F_LDL] + jit(4, 30.0)).round();
            p.measurement(r, c::BMI, d, bmi, v);
            p.measurement(r, c::SBP, d, sbp, v);
            p.measurement(r, c::DBP, d, dbp, v);
            p.measurement(r, c::GLUCOSE, d, glu, v);
            p.measurement(r, c::LDL, d, ldl, v);
            if t2d_now || baseline_visit {
                p.measurement(
                    r,
                    c::HBA1C,
                    d,
                    model::round_to(
                        b.hba1c
                            + jit(5, 0.6)
                            + if t2d_now && b.x[F_T2D] == 0.0 {
                                1.5
                            } else {
                                0.0
                            },
                        1,
                    ),
                    v,
                );
            }
            if b.x[F_AGE] >= 40.0 {
                p.measurement(r, c::EGFR, d, (b.egfr - 0.8 * years).round(), v);
            }
            let status = if b.x[F_SMOKER] > 0.0 {
                c::SMOKER
            } else if b.former_smoker {
                c::EX_SMOKER
            } else {
                c::NEVER_SMOKED
            };
            p.observation(r, c::TOBACCO_SMOKING_STATUS, d, Some(status), Some(v));
        }
    }

    // Chronic care: a clinic visit about every six months from diagnosis, with 180-day prescriptions.
    if !chronic.is_empty() {
        chronic.sort_by_key(|x| x.1);
        let first = chronic[0].1;
        let htn_drug = if rng.random::<f64>() < 0.6 {
            c::AMLODIPINE
        } else {
            c::LOSARTAN
        };
        let insulin = b.as_ref().map(|b| b.hba1c > 9.0).unwrap_or(false);
        // The diagnosis itself is recorded on its day (so a condition's first record is its onset,
        // which the risk models' ground truth relies on); follow-up visits record it again.
        for &(which, od) in &chronic {
            if od <= obs_end {
                let v = p.visit(r, c::OUTPATIENT, od, od);
                p.condition(r, chronic_concept(which), od, v);
            }
        }
        let mut d = first;
        let mut k = 0;
        while d <= obs_end {
            let v = p.visit(r, c::OUTPATIENT, d, d);
            let active: Vec<(Chronic, i32)> =
                chronic.iter().copied().filter(|(_, od)| *od <= d).collect();
            for (which, od) in active {
                let concept = chronic_concept(which);
                // Cancers are followed for two years; everything else for life.
                if matches!(which, Chronic::Stomach | Chronic::Colon) && d > od + 730 {
                    continue;
                }
                p.condition(r, concept, d, v);
                let drugs: &[i64] = match which {
                    Chronic::Htn => &[htn_drug],
                    Chronic::T2d if insulin => &[c::METFORMIN, c::INSULIN_GLARGINE],
                    Chronic::T2d => &[c::METFORMIN],
                    Chronic::Dl => &[c::ATORVASTATIN],
                    Chronic::Ihd => &[c::ASPIRIN],
                    Chronic::Stroke => &[c::CLOPIDOGREL],
                    Chronic::Copd | Chronic::Asthma => &[c::ALBUTEROL],
                    _ => &[],
                };
                for &dr in drugs {
                    p.drug(r, dr, d, 180, v);
                }
            }
            k += 1;
            d = first + k * 182 + rng.random_range(-20..=20);
        }
    }

    // Acute cardiovascular events.
    if let Some((d, is_mi)) = mace {
        if d <= obs_end {
            let stay = rng.random_range(3..10);
            let v = p.visit(r, c::INPATIENT, d, (d + stay).min(obs_end));
            p.condition(
                r,
                if is_mi {
                    c::ACUTE_MI
                } else {
                    c::CEREBRAL_INFARCTION
                },
                d,
                v,
            );
            tally.mace_events += 1;
        }
    }

    // Planted drug–outcome effect: NSAID courses in osteoarthritis, GI bleeding during exposure.
    if let Some(b) = &b {
        if b.oa && b.x[F_AGE] >= 50.0 {
            let courses = rng.random_range(0..4);
            let age = b.x[F_AGE];
            for _ in 0..courses {
                let start = obs_start.max(START + 365)
                    + rng.random_range(0..(END - 180 - obs_start.max(START + 365)).max(1));
                let len = rng.random_range(30..181);
                let p_celecoxib = (0.5 + 0.02 * (age - 65.0)).clamp(0.2, 0.8);
                let cel = rng.random::<f64>() < p_celecoxib;
                let rate = w.truth_gi.base_rate_per_year
                    * (w.truth_gi.age_log_hr_per_year * (age - 65.0)).exp()
                    * if cel { 1.0 } else { w.truth_gi.hazard_ratio };
                let t: f64 = -rng.random::<f64>().ln() / rate * 365.25;
                if start > obs_end {
                    continue;
                }
                let v = p.visit(r, c::OUTPATIENT, start, start);
                p.condition(r, c::OA_KNEE, start, v);
                let drug = if cel { c::CELECOXIB } else { c::DICLOFENAC };
                let len = len.min(obs_end - start + 1);
                if (t as i32) < len {
                    let ev = start + t as i32;
                    p.drug(r, drug, start, (ev - start + 1).max(1), v);
                    let ve = p.visit(r, c::ER, ev, ev);
                    p.condition(r, c::GI_HEMORRHAGE, ev, ve);
                    if cel {
                        tally.gi_bleeds_celecoxib += 1
                    } else {
                        tally.gi_bleeds_diclofenac += 1
                    }
                    break;
                } else {
                    p.drug(r, drug, start, len, v);
                }
            }
        }
    }

    // Syndromic episodes 2020–2024 and planted outbreaks.
    let win_a = obs_start.max(SYN_START);
    if win_a <= obs_end {
        for (s, syn) in SYNDROMES.iter().enumerate() {
            let rate = syn.rate_per_year(p.age_at(win_a), outdoor);
            let mean = rate * w.season.mass(s, district, win_a, obs_end);
            let n = poisson(&mut rng, mean);
            for _ in 0..n {
                let d = w.season.draw(s, district, win_a, obs_end, rng.random());
                episode(&mut p, r, &mut rng, syn, d);
            }
        }
        for (oi, ob) in w.outbreaks.iter().enumerate() {
            let a = ob.start.max(win_a);
            let e = (ob.start + ob.days - 1).min(obs_end);
            if ob.district != district || a > e || !p.in_group(ob.group, ob.start) {
                continue;
            }
            let n = poisson(&mut rng, ob.rate_per_person_day * (e - a + 1) as f64);
            for _ in 0..n {
                let d = a + rng.random_range(0..(e - a + 1));
                episode(&mut p, r, &mut rng, &SYNDROMES[ob.syndrome], d);
                tally.outbreak_cases[oi] += 1;
            }
        }
    }

    if let Some((d, cause)) = death {
        if d <= END {
            r.tables[DEATH].push(&[
                V::Int(id),
                V::Date(d),
                V::Null,
                V::Int(c::EHR),
                V::Int(cause),
            ]);
        }
    }
    eras(&mut p, r);

    // Tallies for the realism checks in the ground truth.
    tally.persons += 1;
    tally.by_site[site] += 1;
    tally.age_band_sex[if male { 0 } else { 1 }][band.min(17)] += 1;
    let at_end = |which: Chronic| chronic.iter().any(|(w, d)| *w == which && *d <= END);
    if death.is_none() {
        if age_end >= 20 {
            tally.adults20 += 1;
            tally.htn20 += at_end(Chronic::Htn) as u64;
        }
        if age_end >= 30 {
            tally.adults30 += 1;
            tally.t2d30 += at_end(Chronic::T2d) as u64;
            tally.dl30 += at_end(Chronic::Dl) as u64;
            if let Some(b) = &b {
                let ob = b.x[F_BMI] >= 25.0;
                if male {
                    tally.male30_bmi += 1;
                    tally.male30_obese += ob as u64;
                } else {
                    tally.female30_bmi += 1;
                    tally.female30_obese += ob as u64;
                }
            }
        }
    }
    tally.medical_aid += medical_aid as u64;
    tally.disabled += disabled as u64;
    tally.elderly += (age_end >= 65) as u64;
    tally.child_u5 += (age_end < 5) as u64;
    tally.lives_alone += lives_alone as u64;
    if let Some(b) = &b {
        if (30.0..80.0).contains(&b.x[F_AGE]) && b.x[F_T2D] == 0.0 {
            tally.t2d_at_risk += 1;
            tally.t2d_onsets += b.t2d_onset as u64;
        }
    }
    genotyped.then_some((site, id, male, snps))
}

/// The condition concept a chronic disease is recorded with.
fn chronic_concept(which: Chronic) -> i64 {
    match which {
        Chronic::Htn => c::ESSENTIAL_HYPERTENSION,
        Chronic::T2d => c::T2DM,
        Chronic::Dl => c::HYPERCHOLESTEROLEMIA,
        Chronic::Ihd => c::CORONARY_ARTERIOSCLEROSIS,
        Chronic::Stroke => c::CEREBRAL_INFARCTION,
        Chronic::Copd => c::COPD,
        Chronic::Asthma => c::ASTHMA,
        Chronic::Ckd => c::CKD_STAGE3,
        Chronic::Oa => c::OA_KNEE,
        Chronic::Stomach => c::STOMACH_CANCER,
        Chronic::Colon => c::COLON_CANCER,
    }
}

fn episode(p: &mut Person, r: &mut SiteRows, rng: &mut ChaCha8Rng, syn: &Syndrome, d: i32) {
    let er = rng.random::<f64>() < syn.er_share;
    let v = p.visit(r, if er { c::ER } else { c::OUTPATIENT }, d, d);
    let pick: f64 = rng.random();
    let concepts = syn.concepts;
    let primary = concepts[(pick * concepts.len() as f64) as usize % concepts.len()];
    p.condition(r, primary, d, v);
    if let Some(drug) = syn.drug {
        if primary == syn.concepts[0] {
            p.drug(r, drug, d, 5, v);
        }
    }
}

/// Condition and drug eras (OHDSI conventions: 30-day persistence window for both).
fn eras(p: &mut Person, r: &mut SiteRows) {
    let mut conds = std::mem::take(&mut p.cond_dates);
    conds.sort();
    let mut i = 0;
    while i < conds.len() {
        let (concept, start) = conds[i];
        let (mut end, mut count) = (start, 1);
        let mut j = i + 1;
        while j < conds.len() && conds[j].0 == concept && conds[j].1 <= end + 30 {
            end = end.max(conds[j].1);
            count += 1;
            j += 1;
        }
        let id = p.next_id(CONDITION_ERA);
        r.tables[CONDITION_ERA].push(&[
            V::Int(id),
            V::Int(p.id),
            V::Int(concept),
            V::Date(start),
            V::Date(end),
            V::Int(count),
        ]);
        i = j;
    }
    let mut drugs = std::mem::take(&mut p.drug_spans);
    drugs.sort();
    let mut i = 0;
    while i < drugs.len() {
        let (concept, start, mut end) = drugs[i];
        let (mut count, mut gap) = (1, 0);
        let mut j = i + 1;
        while j < drugs.len() && drugs[j].0 == concept && drugs[j].1 <= end + 30 {
            if drugs[j].1 > end + 1 {
                gap += drugs[j].1 - end - 1;
            }
            end = end.max(drugs[j].2);
            count += 1;
            j += 1;
        }
        let id = p.next_id(DRUG_ERA);
        r.tables[DRUG_ERA].push(&[
            V::Int(id),
            V::Int(p.id),
            V::Int(concept),
            V::Date(start),
            V::Date(end),
            V::Int(count),
            V::Int(gap as i64),
        ]);
        i = j;
    }
}

/// Poisson draw (inversion for small means, normal approximation above 50).
pub fn poisson(rng: &mut impl Rng, mean: f64) -> u64 {
    if mean <= 0.0 {
        return 0;
    }
    if mean > 50.0 {
        let z: f64 = rand_distr::Distribution::sample(&rand_distr::StandardNormal, rng);
        return (mean + mean.sqrt() * z).round().max(0.0) as u64;
    }
    let l = (-mean).exp();
    let (mut k, mut prod) = (0u64, rng.random::<f64>());
    while prod > l {
        k += 1;
        prod *= rng.random::<f64>();
    }
    k
}
