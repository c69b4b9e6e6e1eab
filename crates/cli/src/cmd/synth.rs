use std::path::PathBuf;

use indicatif::ProgressBar;
use medfed_synth::{generate, Progress, SynthConfig};

use super::progress::count_bar;

/// Generate a synthetic national population: one OMOP CDM site store per hospital plus
/// ground_truth.json with every planted effect (risk-model coefficients, a drug–outcome hazard ratio,
/// outbreaks, causal variants, coding differences between hospitals).
///
/// Deterministic: the same arguments give byte-identical output whatever the thread count
/// (RAYON_NUM_THREADS). Pilot scale is `--persons 10000000`.
#[derive(clap::Args)]
pub struct Args {
    /// Number of persons in the national population.
    #[arg(long, default_value_t = 30_000)]
    persons: u64,
    /// Number of hospitals (site stores).
    #[arg(long, default_value_t = 6)]
    hospitals: usize,
    /// Random seed.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Share of persons genotyped (the biobank).
    #[arg(long, default_value_t = 0.2)]
    genotyped_share: f64,
    /// SNPs on the genotyping panel.
    #[arg(long, default_value_t = 10_000)]
    snps: usize,
    /// Output folder (one sub-folder per hospital).
    #[arg(long, default_value = "medfed-population")]
    out: PathBuf,
}

struct Bar(ProgressBar);
impl Progress for Bar {
    fn persons(&self, done: u64, _total: u64) {
        self.0.set_position(done);
    }
    fn stage(&self, what: &str) {
        self.0.set_message(what.to_string());
    }
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let cfg = SynthConfig {
        persons: a.persons,
        hospitals: a.hospitals,
        seed: a.seed,
        genotyped_share: a.genotyped_share,
        snps: a.snps,
    };
    let bar = Bar(count_bar(a.persons, "persons"));
    let started = std::time::Instant::now();
    let truth = generate(&cfg, &a.out, &bar)?;
    bar.0.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{} persons in {} hospitals written to {} in {secs:.1} s ({:.0} persons/s)",
        a.persons,
        a.hospitals,
        a.out.display(),
        a.persons as f64 / secs
    );
    for s in &truth.sites {
        println!(
            "  {:<12} {:>10} persons  (home provinces: {})",
            s.name,
            s.persons,
            s.home_provinces.join(", ")
        );
    }
    for c in &truth.prevalence {
        println!(
            "  {:<60} target {:>5.1}%  realised {:>5.1}%",
            c.what,
            100.0 * c.target,
            100.0 * c.realised
        );
    }
    println!(
        "  {} outbreaks planted; ground truth in {}",
        truth.outbreaks.len(),
        a.out.join("ground_truth.json").display()
    );
    Ok(())
}
