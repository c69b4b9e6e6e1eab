//! Genotypes in PLINK 1 binary form (`.bed/.bim/.fam`), 2-bit packed and memory-mapped.
//!
//! Only per-variant summaries computed here may ever leave a node; this crate holds genotypes and the
//! kernels over them and knows nothing about the network.
//!
//! `.bed` layout (SNP-major): magic `6c 1b 01`, then for each variant `ceil(n/4)` bytes holding 2-bit
//! codes, low bits first: `00` homozygous A1, `01` missing, `10` heterozygous, `11` homozygous A2.
//!
//! ```no_run
//! let bed = medfed_genomics::Bed::open("site/genotypes/site".as_ref()).unwrap();
//! let c = bed.counts(0);
//! println!("A1 frequency {}", c.a1_freq());
//! ```

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use memmap2::Mmap;

pub mod assoc;
pub mod dist;
pub mod glm;
pub mod plink;
pub mod vcf;

pub const BED_MAGIC: [u8; 3] = [0x6c, 0x1b, 0x01];

#[derive(Debug, thiserror::Error)]
pub enum GenoError {
    #[error("{path}: {msg}")]
    Bad { path: String, msg: String },
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

fn io_err(path: &Path, source: std::io::Error) -> GenoError {
    GenoError::Io {
        path: path.display().to_string(),
        source,
    }
}
fn bad(path: &Path, msg: impl Into<String>) -> GenoError {
    GenoError::Bad {
        path: path.display().to_string(),
        msg: msg.into(),
    }
}

/// One `.bim` line.
#[derive(Debug, Clone, PartialEq)]
pub struct Variant {
    pub chrom: String,
    pub id: String,
    pub cm: f64,
    pub pos: u64,
    /// Counted allele (usually minor).
    pub a1: String,
    pub a2: String,
}

/// One `.fam` line.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub fid: String,
    pub iid: String,
    /// 1 male, 2 female, 0 unknown.
    pub sex: u8,
    /// PLINK phenotype column as written (`-9` missing).
    pub pheno: String,
}

/// Genotype counts of one variant over all samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct GenoCounts {
    pub hom_a1: u64,
    pub het: u64,
    pub hom_a2: u64,
    pub missing: u64,
}

impl GenoCounts {
    pub fn called(&self) -> u64 {
        self.hom_a1 + self.het + self.hom_a2
    }
    pub fn a1_freq(&self) -> f64 {
        let n = self.called();
        if n == 0 {
            return f64::NAN;
        }
        (2 * self.hom_a1 + self.het) as f64 / (2 * n) as f64
    }
}

/// Writes a `.bed` variant by variant (SNP-major).
pub struct BedWriter {
    out: BufWriter<File>,
    path: PathBuf,
    samples: usize,
    buf: Vec<u8>,
}

impl BedWriter {
    pub fn create(path: &Path, samples: usize) -> Result<BedWriter, GenoError> {
        let f = File::create(path).map_err(|e| io_err(path, e))?;
        let mut out = BufWriter::with_capacity(1 << 20, f);
        out.write_all(&BED_MAGIC).map_err(|e| io_err(path, e))?;
        Ok(BedWriter {
            out,
            path: path.to_path_buf(),
            samples,
            buf: vec![0; samples.div_ceil(4)],
        })
    }

    /// Write one variant given A1 allele counts per sample (0, 1, 2, or any other value for missing).
    pub fn write_dosages(&mut self, a1_counts: &[u8]) -> Result<(), GenoError> {
        if a1_counts.len() != self.samples {
            return Err(bad(
                &self.path,
                format!("{} genotypes for {} samples", a1_counts.len(), self.samples),
            ));
        }
        pack_dosages(a1_counts, &mut self.buf);
        self.out
            .write_all(&self.buf)
            .map_err(|e| io_err(&self.path, e))
    }

    /// Write one variant already packed (`ceil(n/4)` bytes).
    pub fn write_packed(&mut self, packed: &[u8]) -> Result<(), GenoError> {
        if packed.len() != self.buf.len() {
            return Err(bad(&self.path, "packed variant has the wrong length"));
        }
        self.out
            .write_all(packed)
            .map_err(|e| io_err(&self.path, e))
    }

    pub fn finish(self) -> Result<(), GenoError> {
        let f = self
            .out
            .into_inner()
            .map_err(|e| io_err(&self.path, e.into_error()))?;
        f.sync_all().map_err(|e| io_err(&self.path, e))
    }
}

/// Pack A1 counts into PLINK 2-bit codes (`out.len() == ceil(n/4)`).
pub fn pack_dosages(a1_counts: &[u8], out: &mut [u8]) {
    out.iter_mut().for_each(|b| *b = 0);
    for (i, &g) in a1_counts.iter().enumerate() {
        let code = match g {
            2 => 0b00,
            1 => 0b10,
            0 => 0b11,
            _ => 0b01,
        };
        out[i / 4] |= code << ((i % 4) * 2);
    }
}

pub fn write_bim(path: &Path, variants: &[Variant]) -> Result<(), GenoError> {
    let f = File::create(path).map_err(|e| io_err(path, e))?;
    let mut w = BufWriter::new(f);
    for v in variants {
        writeln!(
            w,
            "{}\t{}\t{}\t{}\t{}\t{}",
            v.chrom, v.id, v.cm, v.pos, v.a1, v.a2
        )
        .map_err(|e| io_err(path, e))?;
    }
    w.into_inner()
        .map_err(|e| io_err(path, e.into_error()))?
        .sync_all()
        .map_err(|e| io_err(path, e))
}

pub fn write_fam(path: &Path, samples: &[Sample]) -> Result<(), GenoError> {
    let f = File::create(path).map_err(|e| io_err(path, e))?;
    let mut w = BufWriter::new(f);
    for s in samples {
        writeln!(w, "{} {} 0 0 {} {}", s.fid, s.iid, s.sex, s.pheno)
            .map_err(|e| io_err(path, e))?;
    }
    w.into_inner()
        .map_err(|e| io_err(path, e.into_error()))?
        .sync_all()
        .map_err(|e| io_err(path, e))
}

pub fn read_bim(path: &Path) -> Result<Vec<Variant>, GenoError> {
    let f = File::open(path).map_err(|e| io_err(path, e))?;
    let mut out = Vec::new();
    for (i, line) in BufReader::new(f).lines().enumerate() {
        let line = line.map_err(|e| io_err(path, e))?;
        let t: Vec<&str> = line.split_whitespace().collect();
        if t.len() != 6 {
            return Err(bad(
                path,
                format!("line {}: expected 6 columns, found {}", i + 1, t.len()),
            ));
        }
        let num = |s: &str, what: &str| -> Result<f64, GenoError> {
            s.parse().map_err(|_| {
                bad(
                    path,
                    format!("line {}: {what} '{s}' is not a number", i + 1),
                )
            })
        };
        out.push(Variant {
            chrom: t[0].into(),
            id: t[1].into(),
            cm: num(t[2], "cM position")?,
            pos: num(t[3], "base-pair position")? as u64,
            a1: t[4].into(),
            a2: t[5].into(),
        });
    }
    Ok(out)
}

pub fn read_fam(path: &Path) -> Result<Vec<Sample>, GenoError> {
    let f = File::open(path).map_err(|e| io_err(path, e))?;
    let mut out = Vec::new();
    for (i, line) in BufReader::new(f).lines().enumerate() {
        let line = line.map_err(|e| io_err(path, e))?;
        let t: Vec<&str> = line.split_whitespace().collect();
        if t.len() != 6 {
            return Err(bad(
                path,
                format!("line {}: expected 6 columns, found {}", i + 1, t.len()),
            ));
        }
        let sex = match t[4] {
            "1" => 1,
            "2" => 2,
            _ => 0,
        };
        out.push(Sample {
            fid: t[0].into(),
            iid: t[1].into(),
            sex,
            pheno: t[5].into(),
        });
    }
    Ok(out)
}

/// `prefix.ext`, keeping any dot already in the prefix (`toydata.5chrom` → `toydata.5chrom.bed`,
/// where `Path::with_extension` would give `toydata.bed`).
pub fn with_suffix(prefix: &Path, ext: &str) -> PathBuf {
    let mut s = prefix.as_os_str().to_owned();
    s.push(".");
    s.push(ext);
    PathBuf::from(s)
}

/// A memory-mapped PLINK fileset.
pub struct Bed {
    pub variants: Vec<Variant>,
    pub samples: Vec<Sample>,
    map: Mmap,
    stride: usize,
}

impl Bed {
    /// Open `prefix.bed/.bim/.fam`; checks the magic bytes and the file size against the counts.
    pub fn open(prefix: &Path) -> Result<Bed, GenoError> {
        let variants = read_bim(&with_suffix(prefix, "bim"))?;
        let samples = read_fam(&with_suffix(prefix, "fam"))?;
        let bed_path = with_suffix(prefix, "bed");
        let f = File::open(&bed_path).map_err(|e| io_err(&bed_path, e))?;
        // SAFETY: the file is opened read-only; medfed never writes a .bed in place.
        let map = unsafe { Mmap::map(&f) }.map_err(|e| io_err(&bed_path, e))?;
        if map.len() < 3 || map[..3] != BED_MAGIC {
            return Err(bad(
                &bed_path,
                "not a SNP-major PLINK 1 .bed (magic bytes 6c 1b 01 missing)",
            ));
        }
        let stride = samples.len().div_ceil(4);
        let want = 3 + stride * variants.len();
        if map.len() != want {
            return Err(bad(
                &bed_path,
                format!(
                    "size {} bytes, expected {want} for {} variants x {} samples",
                    map.len(),
                    variants.len(),
                    samples.len()
                ),
            ));
        }
        Ok(Bed {
            variants,
            samples,
            map,
            stride,
        })
    }

    /// Packed bytes of variant `v`.
    pub fn packed(&self, v: usize) -> &[u8] {
        &self.map[3 + v * self.stride..3 + (v + 1) * self.stride]
    }

    /// Genotype counts of variant `v`, 32 genotypes per 64-bit word with popcounts.
    pub fn counts(&self, v: usize) -> GenoCounts {
        count_packed(self.packed(v), self.samples.len())
    }
}

/// Copies of allele A1 of sample `i` in a packed variant (PLINK's codes: 00 two, 10 one, 11 none,
/// 01 missing → `None`).
pub fn a1_dosage(packed: &[u8], i: usize) -> Option<u8> {
    match (packed.get(i / 4)? >> (2 * (i % 4))) & 0b11 {
        0b00 => Some(2),
        0b10 => Some(1),
        0b11 => Some(0),
        _ => None,
    }
}

/// Count genotype classes in a packed variant of `n` samples.
pub fn count_packed(bytes: &[u8], n: usize) -> GenoCounts {
    const LO: u64 = 0x5555_5555_5555_5555;
    let (mut hom_a1, mut missing, mut het, mut hom_a2) = (0u64, 0u64, 0u64, 0u64);
    let mut chunks = bytes.chunks_exact(8);
    let mut tally = |w: u64, valid: u64| {
        let lo = w & LO;
        let hi = (w >> 1) & LO;
        hom_a1 += (!lo & !hi & valid).count_ones() as u64;
        missing += (lo & !hi & valid).count_ones() as u64;
        het += (!lo & hi & valid).count_ones() as u64;
        hom_a2 += (lo & hi & valid).count_ones() as u64;
    };
    let full_words = n / 32;
    let mut done = 0usize;
    for c in chunks.by_ref() {
        let w = u64::from_le_bytes(c.try_into().expect("8 bytes"));
        if done < full_words {
            tally(w, LO);
        } else {
            let rem = n - done * 32;
            tally(
                w,
                if rem >= 32 {
                    LO
                } else {
                    LO & ((1u64 << (2 * rem)) - 1)
                },
            );
        }
        done += 1;
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut b = [0u8; 8];
        b[..rest.len()].copy_from_slice(rest);
        let w = u64::from_le_bytes(b);
        let rem = n.saturating_sub(done * 32).min(32);
        let valid = if rem >= 32 {
            LO
        } else {
            LO & ((1u64 << (2 * rem)) - 1)
        };
        tally(w, valid);
    }
    GenoCounts {
        hom_a1,
        het,
        hom_a2,
        missing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_and_count_roundtrip_with_padding() {
        for n in [1usize, 3, 4, 5, 31, 32, 33, 63, 64, 65, 100, 257] {
            let g: Vec<u8> = (0..n)
                .map(|i| [0u8, 1, 2, 9][(i * 7 + i / 3) % 4])
                .collect();
            let mut packed = vec![0u8; n.div_ceil(4)];
            pack_dosages(&g, &mut packed);
            let c = count_packed(&packed, n);
            let want = GenoCounts {
                hom_a1: g.iter().filter(|&&x| x == 2).count() as u64,
                het: g.iter().filter(|&&x| x == 1).count() as u64,
                hom_a2: g.iter().filter(|&&x| x == 0).count() as u64,
                missing: g.iter().filter(|&&x| x > 2).count() as u64,
            };
            assert_eq!(c, want, "n={n}");
        }
    }

    #[test]
    fn write_then_open() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x");
        let mut w = BedWriter::create(&p.with_extension("bed"), 5).unwrap();
        w.write_dosages(&[0, 1, 2, 255, 2]).unwrap();
        w.finish().unwrap();
        write_bim(
            &p.with_extension("bim"),
            &[Variant {
                chrom: "1".into(),
                id: "rs1".into(),
                cm: 0.0,
                pos: 10,
                a1: "A".into(),
                a2: "G".into(),
            }],
        )
        .unwrap();
        let samples: Vec<Sample> = (0..5)
            .map(|i| Sample {
                fid: i.to_string(),
                iid: i.to_string(),
                sex: 1,
                pheno: "-9".into(),
            })
            .collect();
        write_fam(&p.with_extension("fam"), &samples).unwrap();
        let bed = Bed::open(&p).unwrap();
        assert_eq!(
            bed.counts(0),
            GenoCounts {
                hom_a1: 2,
                het: 1,
                hom_a2: 1,
                missing: 1
            }
        );
        assert!((bed.counts(0).a1_freq() - 5.0 / 8.0).abs() < 1e-12);
    }
}
