//! `ground_truth.json`, and the site-level tables every synthetic hospital ships (vocabulary,
//! locations, the hospital as a care site, cdm_source).

use medfed_cdm::value::Value as V;
use medfed_cdm::{CdmError, CdmSpec, StoreWriter};
use serde::Serialize;

use crate::genotype::Panel;
use crate::model::{Models, CAD_SNPS, CAUSAL, CAUSAL_MAF, CAUSAL_OR};
use crate::rows::TableBuf;
use crate::vocab::{ancestor_rows, c, CONCEPTS};
use crate::world::{GiTruth, Outbreak, World, GROUPS, SYNDROMES};
use crate::{date_string, SynthConfig, Tally, BASELINE, END, START, SYN_START};

#[derive(Serialize)]
pub struct Check {
    pub what: &'static str,
    pub target: f64,
    pub realised: f64,
    pub source: &'static str,
}

#[derive(Serialize)]
pub struct Site {
    pub name: String,
    pub care_site_id: i64,
    pub home_provinces: Vec<String>,
    pub persons: u64,
}

#[derive(Serialize)]
pub struct CausalSnp {
    pub id: String,
    pub chrom: String,
    pub pos: u64,
    pub a1: String,
    pub a2: String,
    pub a1_freq: f64,
    pub trait_: &'static str,
    pub odds_ratio_per_a1: f64,
    pub model: &'static str,
}

#[derive(Serialize)]
pub struct RealisedOutbreak {
    #[serde(flatten)]
    pub planted: Outbreak,
    pub realised_excess_cases: u64,
}

#[derive(Serialize)]
pub struct GroundTruth {
    pub format: &'static str,
    pub config: SynthConfig,
    pub dates: serde_json::Value,
    pub sites: Vec<Site>,
    pub geography: serde_json::Value,
    pub demography: Vec<Check>,
    pub prevalence: Vec<Check>,
    pub vulnerable_groups: serde_json::Value,
    pub risk_models: Models,
    pub five_year_onsets: serde_json::Value,
    pub drug_outcome_effect: GiTruth,
    pub drug_outcome_realised: serde_json::Value,
    pub syndromes: serde_json::Value,
    /// District PM2.5 and temperature series and the relative risks they drive (`environment.rs`).
    pub environment: serde_json::Value,
    pub outbreaks: Vec<RealisedOutbreak>,
    pub genotypes: serde_json::Value,
    pub causal_variants: Vec<CausalSnp>,
    pub coding_differences: Vec<serde_json::Value>,
    pub tally: Tally,
}

impl GroundTruth {
    pub fn new(w: &World, t: &Tally, panel: &Panel) -> GroundTruth {
        let frac = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
        let shares = w.geo.age_shares();
        let mut demography = Vec::new();
        for (what, band) in [
            ("age share 0-4", 0usize),
            ("age share 20-24", 4),
            ("age share 40-44", 8),
            ("age share 65-69", 13),
            ("age share 85+", 17),
        ] {
            let n = t.age_band_sex[0][band] + t.age_band_sex[1][band];
            demography.push(Check {
                what,
                target: shares[band],
                realised: frac(n, t.persons),
                source: "UN WPP 2024, Korea 2023",
            });
        }
        let males: u64 = t.age_band_sex[0].iter().sum();
        demography.push(Check {
            what: "male share",
            target: w.geo.male_share(),
            realised: frac(males, t.persons),
            source: "census 2010 sex ratio by age and province",
        });
        let prevalence = vec![
            Check {
                what: "hypertension, adults >=20",
                target: 0.28,
                realised: frac(t.htn20, t.adults20),
                source: "Korea Hypertension Fact Sheet 2023 (KNHANES 2021)",
            },
            Check {
                what: "type 2 diabetes, adults >=30",
                target: 0.155,
                realised: frac(t.t2d30, t.adults30),
                source: "Diabetes Fact Sheets in Korea 2024 (KNHANES 2021-2022)",
            },
            Check {
                what: "dyslipidaemia (diagnosed), adults >=30",
                target: 0.21,
                realised: frac(t.dl30, t.adults30),
                source: "Kim Y et al. 2021, hypercholesterolaemia ~21%",
            },
            Check {
                what: "obesity (BMI>=25), men >=30",
                target: 0.447,
                realised: frac(t.male30_obese, t.male30_bmi),
                source: "Kim Y et al. 2021 (age-standardised 44.7%)",
            },
            Check {
                what: "obesity (BMI>=25), women >=30",
                target: 0.283,
                realised: frac(t.female30_obese, t.female30_bmi),
                source: "Kim Y et al. 2021 (age-standardised 28.3%)",
            },
            Check {
                what: "Medical Aid recipients, all ages",
                target: 0.03,
                realised: frac(t.medical_aid, t.persons),
                source: "programme brief: about 3%",
            },
        ];
        let sites = w
            .hospitals
            .iter()
            .enumerate()
            .map(|(i, h)| Site {
                name: h.name.clone(),
                care_site_id: i as i64 + 1,
                home_provinces: h
                    .home
                    .iter()
                    .map(|&p| w.geo.provinces[p].name.clone())
                    .collect(),
                persons: t.by_site[i],
            })
            .collect();
        let causal_variants = (0..CAUSAL)
            .map(|k| {
                let v = &panel.variants[panel.causal_index[k]];
                CausalSnp {
                    id: v.id.clone(),
                    chrom: v.chrom.clone(),
                    pos: v.pos,
                    a1: v.a1.clone(),
                    a2: v.a2.clone(),
                    a1_freq: CAUSAL_MAF[k],
                    trait_: if CAD_SNPS.contains(&k) { "mace" } else { "t2d" },
                    odds_ratio_per_a1: CAUSAL_OR[k],
                    model: if CAD_SNPS.contains(&k) {
                        "mace_5y_onset"
                    } else {
                        "t2d_prevalent and t2d_5y_onset"
                    },
                }
            })
            .collect();
        GroundTruth {
            format: "medfed-ground-truth/1",
            config: w.cfg.clone(),
            dates: serde_json::json!({
                "observation_start": date_string(START),
                "baseline": date_string(BASELINE),
                "baseline_screening": "health screening visit between 2018-07-01 and 2018-11-28 records the covariates of the onset models exactly",
                "five_year_window": format!("{} to {}", date_string(BASELINE), date_string(BASELINE + 5 * 365)),
                "five_year_onsets": "decided at baseline by the onset models, dated uniformly in the window before any death, and recorded on that day: the recorded onset is the models' outcome",
                "surveillance_start": date_string(SYN_START),
                "reference_date": date_string(END),
            }),
            sites,
            geography: serde_json::json!({
                "provinces": w.geo.provinces.iter().map(|p| serde_json::json!({"code": p.code, "name": p.name, "districts": p.districts.len()})).collect::<Vec<_>>(),
                "districts": w.geo.districts.len(),
                "location_rule": "person.location_id = district location_id; location.location_source_value = 5-digit district code, location.state = province",
            }),
            demography,
            prevalence,
            vulnerable_groups: serde_json::json!({
                "elderly": {"rule": "age >= 65 on the date of interest, from person.year_of_birth/month_of_birth/day_of_birth", "persons_at_reference_date": t.elderly},
                "child_u5": {"rule": "age < 5 on the date of interest", "persons_at_reference_date": t.child_u5},
                "medical_aid": {"rule": format!("payer_plan_period with payer_concept_id = {} (payer_source_value 'MEDICAL_AID') covering the date", c::LOCAL_MEDICAL_AID), "persons": t.medical_aid},
                "disability": {"rule": format!("observation with observation_concept_id = {} (registered disability) on or before the date", c::LOCAL_DISABILITY_REGISTERED), "persons": t.disabled},
                "elderly_alone": {"rule": format!("elderly and an observation with observation_concept_id = {} (lives alone)", c::LOCAL_LIVES_ALONE), "persons": t.lives_alone},
                "outdoor_worker": {"rule": format!("observation with observation_concept_id = {}", c::LOCAL_OUTDOOR_WORKER)},
            }),
            risk_models: w.models.clone(),
            five_year_onsets: serde_json::json!({
                "t2d": {"at_risk": t.t2d_at_risk, "onsets": t.t2d_onsets,
                        "definition": "persons aged 30-79 on 2019-01-01 (2019 - year_of_birth), in observation then, without T2D; onset = first T2D condition (201826 or its descendant 4193704) in 2019-01-01..2023-12-31",
                        "covariates": "age = 2019 - year_of_birth; male; BMI, SBP, glucose (mg/dL; hospital_c in mmol/L x 18.016), LDL from the 2018 screening visit; current smoker from its smoking observation; snp1..snp8 = A1 counts of rs_causal1..8"},
                "mace_events": t.mace_events,
            }),
            drug_outcome_effect: w.truth_gi.clone(),
            drug_outcome_realised: serde_json::json!({"gi_bleeds_on_celecoxib": t.gi_bleeds_celecoxib, "gi_bleeds_on_diclofenac": t.gi_bleeds_diclofenac}),
            syndromes: serde_json::json!(SYNDROMES.iter().map(|s| serde_json::json!({
                "name": s.name, "concepts": s.concepts, "er_share": s.er_share,
                "seasonality": match s.season { Some((k, peak)) => format!("von Mises, concentration {k}, peak day-of-year {peak}"), None => "proportional to max(0, Tmax - 29 C) of a synthetic daily temperature series".into() },
                "groups": GROUPS,
                "environment": crate::environment::Effect::of(s.name).map(|e| format!("{e:?}")),
            })).collect::<Vec<_>>()),
            environment: w.season.env.truth(),
            outbreaks: w.outbreaks.iter().zip(&t.outbreak_cases).map(|(o, n)| RealisedOutbreak { planted: o.clone(), realised_excess_cases: *n }).collect(),
            genotypes: serde_json::json!({
                "share_genotyped": w.cfg.genotyped_share, "snps": panel.variants.len(),
                "missing_call_rate": crate::genotype::MISSING_RATE,
                "hwe": "every variant is drawn in Hardy-Weinberg equilibrium at its population A1 frequency, independently per site",
                "files": "<site>/genotypes/site.{bed,bim,fam}; FID = IID = person_id",
                "a1_freq_by_variant": panel.maf.iter().map(|f| (f * 1e6).round() / 1e6).collect::<Vec<_>>(),
            }),
            causal_variants,
            coding_differences: vec![
                serde_json::json!({"site": "hospital_b", "difference": "type 2 diabetes recorded as 4193704 (T2DM without complication), a descendant of 201826: needs concept_ancestor"}),
                serde_json::json!({"site": "hospital_c", "difference": "glucose recorded in mmol/L (unit_concept_id 8753) instead of mg/dL (8840)"}),
                serde_json::json!({"site": "hospital_d", "difference": "conditions carry KCD (ICD-10) source codes and condition_type_concept_id 32810 (claim)"}),
            ],
            tally: t.clone(),
        }
    }
}

fn put(store: &mut StoreWriter, mut buf: TableBuf) -> Result<(), CdmError> {
    let mut w = store.table_writer(buf.spec)?;
    let batch = buf.finish()?;
    w.write(&batch)?;
    let (rel, rows) = w.finish()?;
    store.record_rows(&rel, rows);
    Ok(())
}

/// Vocabulary, locations, care site and cdm_source; empty files for every other CDM table.
pub fn write_site_tables(store: &mut StoreWriter, w: &World, site: usize) -> Result<(), CdmError> {
    let mut concept = TableBuf::new("concept");
    for x in CONCEPTS {
        concept.push(&[
            V::Int(x.0),
            V::Text(x.1),
            V::Text(x.2),
            V::Text(x.3),
            V::Text(x.4),
            if x.5.is_empty() {
                V::Null
            } else {
                V::Text(x.5)
            },
            V::Text(x.6),
            V::Date(crate::day(1970, 1, 1)),
            V::Date(crate::day(2099, 12, 31)),
        ]);
    }
    put(store, concept)?;
    let mut anc = TableBuf::new("concept_ancestor");
    for (a, d, l) in ancestor_rows() {
        anc.push(&[V::Int(a), V::Int(d), V::Int(l), V::Int(l)]);
    }
    put(store, anc)?;
    let mut loc = TableBuf::new("location");
    for d in &w.geo.districts {
        let prov = &w.geo.provinces[d.province].name;
        loc.push(&[
            V::Int(d.location_id),
            V::Null,
            V::Null,
            V::Text(&d.name),
            V::Text(prov),
            V::Null,
            V::Text(&d.code),
            V::Text(&d.code),
            V::Int(4_330_427), // Republic of Korea
            V::Text("KR"),
            V::Float(d.lat),
            V::Float(d.lon),
        ]);
    }
    put(store, loc)?;
    let mut cs = TableBuf::new("care_site");
    let home = w.hospitals[site].home.first().copied().unwrap_or(0);
    let loc_id = w.geo.provinces[home]
        .districts
        .first()
        .map(|&d| w.geo.districts[d].location_id)
        .unwrap_or(1);
    let name = w.hospitals[site].name.clone();
    cs.push(&[
        V::Int(site as i64 + 1),
        V::Text(&name),
        V::Int(8717),
        V::Int(loc_id),
        V::Text(&name),
    ]);
    put(store, cs)?;
    let mut src = TableBuf::new("cdm_source");
    src.push(&[
        V::Text(&name),
        V::Text(&name),
        V::Text("medfed synthetic population"),
        V::Text("Synthetic Korean national population; see ground_truth.json"),
        V::Null,
        V::Null,
        V::Date(END),
        V::Date(END),
        V::Text("5.4"),
        V::Int(756_265),
        V::Text("medfed curated subset"),
    ]);
    put(store, src)?;
    // Every other CDM table exists, empty, with its schema.
    let done: Vec<&str> = crate::rows::TABLES
        .iter()
        .copied()
        .chain([
            "concept",
            "concept_ancestor",
            "location",
            "care_site",
            "cdm_source",
        ])
        .collect();
    for t in CdmSpec::v54().tables() {
        if !done.contains(&t.name.as_str()) {
            let wtr = store.table_writer(t)?;
            let (rel, rows) = wtr.finish()?;
            store.record_rows(&rel, rows);
        }
    }
    Ok(())
}
