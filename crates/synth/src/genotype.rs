//! The biobank: a SNP panel with a realistic allele-frequency spectrum, Hardy–Weinberg genotypes, and
//! the causal variants of the risk models, written per site as PLINK 1 binary files whose sample ids
//! are `person_id`s.

use medfed_cdm::{CdmError, StoreWriter};
use medfed_genomics::{pack_dosages, write_bim, write_fam, BedWriter, Sample, Variant};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::model::{CAUSAL, CAUSAL_MAF};
use crate::world::{mix, World, STREAM_SNP};
use crate::SynthConfig;

/// Share of genotype calls left missing.
pub const MISSING_RATE: f64 = 0.003;

pub struct Panel {
    pub variants: Vec<Variant>,
    /// A1 (minor) allele frequency of each variant in the population.
    pub maf: Vec<f64>,
    /// Panel index of causal variant k.
    pub causal_index: [usize; CAUSAL],
}

impl Panel {
    pub fn new(cfg: &SynthConfig) -> Panel {
        let n = cfg.snps.max(CAUSAL);
        let mut rng = ChaCha8Rng::seed_from_u64(mix(cfg.seed, STREAM_SNP, u64::MAX));
        // Chromosome lengths (Mb, GRCh37) decide how many SNPs each chromosome gets.
        const LEN: [f64; 22] = [
            249.0, 243.0, 198.0, 191.0, 181.0, 171.0, 159.0, 146.0, 141.0, 136.0, 135.0, 134.0,
            115.0, 107.0, 103.0, 90.0, 81.0, 78.0, 59.0, 63.0, 48.0, 51.0,
        ];
        let total: f64 = LEN.iter().sum();
        let mut counts: Vec<usize> = LEN
            .iter()
            .map(|l| ((l / total) * n as f64).floor() as usize)
            .collect();
        let mut k = 0;
        while counts.iter().sum::<usize>() < n {
            counts[k % 22] += 1;
            k += 1;
        }
        let causal_index: [usize; CAUSAL] =
            std::array::from_fn(|i| (i * n) / CAUSAL + n / (3 * CAUSAL));
        let mut variants = Vec::with_capacity(n);
        let mut maf = Vec::with_capacity(n);
        const ALLELES: [(&str, &str); 6] = [
            ("A", "G"),
            ("G", "A"),
            ("C", "T"),
            ("T", "C"),
            ("A", "C"),
            ("G", "T"),
        ];
        for (ci, &cnt) in counts.iter().enumerate() {
            let spacing = (LEN[ci] * 1e6 / (cnt + 1) as f64) as u64;
            for j in 0..cnt {
                let idx = variants.len();
                // A skewed spectrum: many rare-ish variants, fewer common ones (MAF 0.01..0.5).
                let u: f64 = rng.random();
                let f = 0.01 + 0.49 * u.powf(1.6);
                let (a1, a2) = ALLELES[rng.random_range(0..ALLELES.len())];
                let jitter = rng.random_range(0..spacing.max(2) / 2);
                let causal = causal_index.iter().position(|&c| c == idx);
                variants.push(Variant {
                    chrom: (ci + 1).to_string(),
                    id: if causal.is_some() {
                        format!("rs_causal{}", causal.unwrap_or(0) + 1)
                    } else {
                        format!("snp{:06}", idx + 1)
                    },
                    cm: 0.0,
                    pos: 10_000 + (j as u64 + 1) * spacing + jitter,
                    a1: a1.into(),
                    a2: a2.into(),
                });
                maf.push(causal.map(|k| CAUSAL_MAF[k]).unwrap_or(f));
            }
        }
        Panel {
            variants,
            maf,
            causal_index,
        }
    }
}

/// Write `genotypes/site.{bed,bim,fam}` into a store being built.
pub fn write_site(
    store: &mut StoreWriter,
    panel: &Panel,
    world: &World,
    site: usize,
    people: &[(i64, bool, [u8; CAUSAL])],
) -> Result<(), CdmError> {
    if people.is_empty() {
        return Ok(());
    }
    let dir = store.staging_dir().join(medfed_cdm::store::GENOTYPE_DIR);
    std::fs::create_dir_all(&dir)
        .map_err(|e| CdmError::Store(format!("{}: {e}", dir.display())))?;
    let prefix = dir.join("site");
    let g = |e: medfed_genomics::GenoError| CdmError::Store(e.to_string());
    let samples: Vec<Sample> = people
        .iter()
        .map(|(id, male, _)| Sample {
            fid: id.to_string(),
            iid: id.to_string(),
            sex: if *male { 1 } else { 2 },
            pheno: "-9".into(),
        })
        .collect();
    write_fam(&prefix.with_extension("fam"), &samples).map_err(g)?;
    write_bim(&prefix.with_extension("bim"), &panel.variants).map_err(g)?;
    let n = people.len();
    let stride = n.div_ceil(4);
    let mut bed = BedWriter::create(&prefix.with_extension("bed"), n).map_err(g)?;
    let block = 256;
    let seed = world.cfg.seed;
    for start in (0..panel.variants.len()).step_by(block) {
        let end = (start + block).min(panel.variants.len());
        let packed: Vec<Vec<u8>> = (start..end)
            .into_par_iter()
            .map(|v| {
                let mut dos = vec![0u8; n];
                let mut rng = ChaCha8Rng::seed_from_u64(mix(
                    seed,
                    STREAM_SNP,
                    ((site as u64) << 32) | v as u64,
                ));
                let causal = panel.causal_index.iter().position(|&c| c == v);
                let t = (panel.maf[v] * 4_294_967_296.0) as u64;
                let miss = (MISSING_RATE * 4_294_967_296.0) as u64;
                for (i, d) in dos.iter_mut().enumerate() {
                    let r: u64 = rng.random();
                    if (r >> 32) < miss {
                        *d = 255;
                        continue;
                    }
                    *d = match causal {
                        Some(k) => people[i].2[k],
                        None => {
                            let r2: u64 = rng.random();
                            ((r2 & 0xFFFF_FFFF) < t) as u8 + ((r2 >> 32) < t) as u8
                        }
                    };
                }
                let mut out = vec![0u8; stride];
                pack_dosages(&dos, &mut out);
                out
            })
            .collect();
        for p in &packed {
            bed.write_packed(p).map_err(g)?;
        }
    }
    bed.finish().map_err(g)?;
    store.record_rows("genotypes/site.bed", panel.variants.len() as u64);
    store.record_rows("genotypes/site.bim", panel.variants.len() as u64);
    store.record_rows("genotypes/site.fam", n as u64);
    Ok(())
}
