//! A deterministic synthetic national population with known ground truth.
//!
//! `generate` writes one OMOP CDM site store per hospital plus `ground_truth.json`, which records every
//! planted effect: risk-model coefficients, the drug–outcome hazard ratio, outbreaks, causal variants
//! and the hospitals' coding differences. Output is byte-identical for the same configuration whatever
//! the number of threads: each person draws from an RNG seeded by (seed, person index), persons are
//! generated in fixed chunks, and chunks are written in order.
//!
//! ```no_run
//! let cfg = medfed_synth::SynthConfig { persons: 20_000, ..Default::default() };
//! let truth = medfed_synth::generate(&cfg, "pop".as_ref(), &medfed_synth::NoProgress).unwrap();
//! println!("{} outbreaks planted", truth.outbreaks.len());
//! ```

pub mod environment;
pub mod genotype;
pub mod geo;
pub mod model;
pub mod person;
pub mod rows;
pub mod truth;
pub mod vocab;
pub mod world;

use std::path::Path;
use std::sync::mpsc;

use chrono::{Datelike, NaiveDate};
use medfed_cdm::{CdmError, CdmSpec, SiteMeta, StoreWriter};
use rayon::prelude::*;

use rows::{SiteRows, TABLES};
pub use truth::GroundTruth;
use world::World;

#[derive(Debug, Clone, serde::Serialize)]
pub struct SynthConfig {
    pub persons: u64,
    pub hospitals: usize,
    pub seed: u64,
    /// Share of persons in the biobank (genotyped).
    pub genotyped_share: f64,
    /// SNPs on the genotyping panel.
    pub snps: usize,
}

impl Default for SynthConfig {
    fn default() -> Self {
        SynthConfig {
            persons: 30_000,
            hospitals: 6,
            seed: 42,
            genotyped_share: 0.2,
            snps: 10_000,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SynthError {
    #[error(transparent)]
    Store(#[from] CdmError),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Io(String),
}

pub trait Progress: Sync {
    fn persons(&self, _done: u64, _total: u64) {}
    fn stage(&self, _what: &str) {}
}
pub struct NoProgress;
impl Progress for NoProgress {}

pub const START: i32 = 16436; // 2015-01-01
pub const BASELINE: i32 = 17897; // 2019-01-01
pub const SYN_START: i32 = 18262; // 2020-01-01
pub const END: i32 = 20088; // 2024-12-31

pub fn day(y: i32, m: u32, d: u32) -> i32 {
    medfed_cdm::value::epoch_days(NaiveDate::from_ymd_opt(y, m, d).expect("valid date"))
}

fn to_date(d: i32) -> NaiveDate {
    NaiveDate::from_num_days_from_ce_opt(d + 719_163).expect("in range")
}

pub fn ymd(d: i32) -> (i32, u32, u32) {
    let n = to_date(d);
    (n.year(), n.month(), n.day())
}

pub fn day_of_year(d: i32) -> u32 {
    to_date(d).ordinal()
}

pub fn date_string(d: i32) -> String {
    to_date(d).format("%Y-%m-%d").to_string()
}

/// Counters gathered while generating; summed over chunks (order-independent integer sums).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Tally {
    pub persons: u64,
    pub by_site: Vec<u64>,
    pub age_band_sex: [[u64; geo::AGE_BANDS]; 2],
    pub adults20: u64,
    pub htn20: u64,
    pub adults30: u64,
    pub t2d30: u64,
    pub dl30: u64,
    pub male30_bmi: u64,
    pub male30_obese: u64,
    pub female30_bmi: u64,
    pub female30_obese: u64,
    pub medical_aid: u64,
    pub disabled: u64,
    pub elderly: u64,
    pub child_u5: u64,
    pub lives_alone: u64,
    pub t2d_at_risk: u64,
    pub t2d_onsets: u64,
    pub mace_events: u64,
    pub gi_bleeds_celecoxib: u64,
    pub gi_bleeds_diclofenac: u64,
    pub outbreak_cases: Vec<u64>,
}

impl Tally {
    fn new(sites: usize, outbreaks: usize) -> Tally {
        Tally {
            by_site: vec![0; sites],
            outbreak_cases: vec![0; outbreaks],
            ..Default::default()
        }
    }
    fn add(&mut self, o: &Tally) {
        macro_rules! add { ($($f:ident),*) => { $( self.$f += o.$f; )* } }
        add!(
            persons,
            adults20,
            htn20,
            adults30,
            t2d30,
            dl30,
            male30_bmi,
            male30_obese,
            female30_bmi,
            female30_obese,
            medical_aid,
            disabled,
            elderly,
            child_u5,
            lives_alone,
            t2d_at_risk,
            t2d_onsets,
            mace_events,
            gi_bleeds_celecoxib,
            gi_bleeds_diclofenac
        );
        for (a, b) in self.by_site.iter_mut().zip(&o.by_site) {
            *a += b;
        }
        for (a, b) in self.outbreak_cases.iter_mut().zip(&o.outbreak_cases) {
            *a += b;
        }
        for s in 0..2 {
            for b in 0..geo::AGE_BANDS {
                self.age_band_sex[s][b] += o.age_band_sex[s][b];
            }
        }
    }
}

/// Persons per generation chunk. Fixed, so that output does not depend on the thread count.
const CHUNK: u64 = 2048;

/// A chunk's output: per site, one record batch per generated table; plus genotyped persons.
struct ChunkOut {
    batches: Vec<Vec<arrow::record_batch::RecordBatch>>,
    genotyped: Vec<(usize, i64, bool, [u8; model::CAUSAL])>,
    tally: Tally,
}

/// Generate the population into `out/` (one folder per hospital and `ground_truth.json`).
pub fn generate(
    cfg: &SynthConfig,
    out: &Path,
    progress: &dyn Progress,
) -> Result<GroundTruth, SynthError> {
    if cfg.persons == 0 || cfg.hospitals == 0 || cfg.hospitals > 100 {
        return Err(SynthError::Invalid(
            "need at least one person and 1..=100 hospitals".into(),
        ));
    }
    if !(0.0..=1.0).contains(&cfg.genotyped_share) {
        return Err(SynthError::Invalid(
            "--genotyped-share must be between 0 and 1".into(),
        ));
    }
    progress.stage("calibrating risk models");
    let world = World::new(cfg.clone());
    let h = cfg.hospitals;
    std::fs::create_dir_all(out).map_err(|e| SynthError::Io(format!("{}: {e}", out.display())))?;
    let spec = CdmSpec::v54();

    // One store writer per hospital; generated tables stream through writer threads.
    let mut stores: Vec<StoreWriter> = Vec::new();
    for s in 0..h {
        stores.push(StoreWriter::create(out.join(&world.hospitals[s].name))?);
    }
    let mut senders = Vec::new();
    let mut handles = Vec::new();
    for store in stores.iter() {
        let (tx, rx) = mpsc::sync_channel::<Vec<arrow::record_batch::RecordBatch>>(4);
        let mut writers = Vec::new();
        for t in TABLES {
            writers.push(store.table_writer(spec.table(t).expect("spec"))?);
        }
        senders.push(tx);
        handles.push(std::thread::spawn(
            move || -> Result<Vec<(String, u64)>, CdmError> {
                for batches in rx {
                    for (w, b) in writers.iter_mut().zip(&batches) {
                        if b.num_rows() > 0 {
                            w.write(b)?;
                        }
                    }
                }
                writers.into_iter().map(|w| w.finish()).collect()
            },
        ));
    }

    let mut tally = Tally::new(h, world.outbreaks.len());
    let mut genotyped: Vec<Vec<(i64, bool, [u8; model::CAUSAL])>> = vec![Vec::new(); h];
    let chunks = cfg.persons.div_ceil(CHUNK);
    let wave = (rayon::current_num_threads() as u64 * 2).max(2);
    let mut next = 0u64;
    progress.stage("generating persons");
    while next < chunks {
        let ids: Vec<u64> = (next..(next + wave).min(chunks)).collect();
        let outs: Vec<Result<ChunkOut, CdmError>> =
            ids.par_iter().map(|&ci| gen_chunk(&world, ci)).collect();
        for o in outs {
            let o = o?;
            tally.add(&o.tally);
            for (site, batches) in o.batches.into_iter().enumerate() {
                senders[site]
                    .send(batches)
                    .map_err(|_| SynthError::Io("a site writer stopped early".into()))?;
            }
            for (site, id, male, g) in o.genotyped {
                genotyped[site].push((id, male, g));
            }
        }
        next += ids.len() as u64;
        progress.persons((next * CHUNK).min(cfg.persons), cfg.persons);
    }
    drop(senders);
    let mut finished = Vec::new();
    for hdl in handles {
        finished.push(
            hdl.join()
                .map_err(|_| SynthError::Io("site writer panicked".into()))??,
        );
    }

    progress.stage("writing genotypes");
    let panel = genotype::Panel::new(cfg);
    for (s, store) in stores.iter_mut().enumerate() {
        for (rel, rows) in &finished[s] {
            store.record_rows(rel, *rows);
        }
        // Site-level tables: vocabulary, locations, the hospital itself, cdm_source.
        truth::write_site_tables(store, &world, s)?;
        genotype::write_site(store, &panel, &world, s, &genotyped[s])?;
    }
    let truth = GroundTruth::new(&world, &tally, &panel);
    for (s, store) in stores.into_iter().enumerate() {
        let meta = SiteMeta {
            site: world.hospitals[s].name.clone(),
            cdm_version: String::new(),
            // The population's reference date, not the wall clock: output must be reproducible.
            created: "2025-01-01T00:00:00Z".into(),
            source: format!(
                "medfed synth --persons {} --hospitals {} --seed {} (site {} of {})",
                cfg.persons,
                cfg.hospitals,
                cfg.seed,
                s + 1,
                h
            ),
            source_cdm_version: None,
            files: Default::default(),
        };
        store.commit(meta)?;
    }
    let text = serde_json::to_string_pretty(&truth).map_err(|e| SynthError::Io(e.to_string()))?;
    progress.stage("writing environment series");
    let ep = out.join("environment.csv");
    world
        .season
        .env
        .write_csv(&world.geo, &ep)
        .map_err(|e| SynthError::Io(format!("{}: {e}", ep.display())))?;
    let tp = out.join("ground_truth.json");
    std::fs::write(&tp, text).map_err(|e| SynthError::Io(format!("{}: {e}", tp.display())))?;
    Ok(truth)
}

fn gen_chunk(world: &World, ci: u64) -> Result<ChunkOut, CdmError> {
    let h = world.cfg.hospitals;
    let mut rows: Vec<SiteRows> = (0..h).map(|_| SiteRows::new()).collect();
    let mut tally = Tally::new(h, world.outbreaks.len());
    let mut genotyped = Vec::new();
    let a = ci * CHUNK;
    let b = (a + CHUNK).min(world.cfg.persons);
    for i in a..b {
        if let Some(g) = person::simulate(world, i, &mut rows, &mut tally) {
            genotyped.push(g);
        }
    }
    let mut batches = Vec::with_capacity(h);
    for r in rows.iter_mut() {
        batches.push(
            r.tables
                .iter_mut()
                .map(|t| t.finish())
                .collect::<Result<Vec<_>, _>>()?,
        );
    }
    Ok(ChunkOut {
        batches,
        genotyped,
        tally,
    })
}
