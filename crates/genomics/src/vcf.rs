//! VCF and BCF import into the site's PLINK 1 binary genotype store, through `noodles-vcf` (plain
//! text, gzip or BGZF, detected from the extension) and `noodles-bcf` (BCF 2, BGZF or uncompressed,
//! detected from the `.bcf` extension or the `BCF` magic bytes). A BCF record is decoded by
//! noodles and read through the same VCF record path, so both formats follow the same rules.
//!
//! What PLINK 1.9's `--vcf … --double-id --keep-allele-order` would write, with these rules, every
//! one counted in the report:
//! - A1 = ALT, A2 = REF; a record with k ALT alleles becomes k biallelic variants (`ID` suffixed
//!   `_2`, `_3`, … after the first), each coding its ALT against REF; a call carrying another ALT is
//!   missing there.
//! - `./.`, a half call (`0/.`) and a record with no GT are missing calls; a haploid call counts as
//!   homozygous (as PLINK does).
//! - Sample ids: kept as they are (FID = IID = sample), or mapped to `person_id` through a map; a
//!   sample the map lacks is left out and listed.
//! - A record that cannot be read (bad position, a GT allele index past the ALT list, a wrong
//!   number of sample columns) stops the import with the file, the line (for BCF, the record
//!   number) and the field; nothing is written under the output prefix until every record has been
//!   read.

use std::collections::HashMap;
use std::io::{BufRead, Read};
use std::path::Path;

use noodles_bcf as bcf;
use noodles_vcf as vcf;

use crate::{bad, io_err, write_bim, write_fam, BedWriter, GenoError, Sample, Variant};

/// What an import did.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct VcfImport {
    /// Samples in the VCF, and kept (mapped) in the output.
    pub samples: usize,
    pub kept_samples: usize,
    /// VCF samples the id map does not list (left out).
    pub unmapped: Vec<String>,
    pub records: u64,
    /// Variants written (one per ALT allele).
    pub variants: u64,
    pub multiallelic_records: u64,
    /// Records without an ALT allele (monomorphic reference sites), not written.
    pub no_alt_records: u64,
    pub missing_calls: u64,
    pub half_calls: u64,
    /// Calls set missing in a split variant because they carry another ALT allele.
    pub other_alt_calls: u64,
}

/// One sample's GT: allele indices (`None` = `.`), haploid or diploid.
fn parse_gt(field: &str) -> Result<[Option<u32>; 2], String> {
    let gt = field.split(':').next().unwrap_or("");
    let mut out = [None, None];
    let mut n = 0;
    for a in gt.split(['/', '|']) {
        if n == 2 {
            return Err(format!("GT {gt:?}: more than two alleles"));
        }
        out[n] = match a {
            "." => None,
            s => Some(
                s.parse::<u32>()
                    .map_err(|_| format!("GT {gt:?}: allele {s:?} is not an index"))?,
            ),
        };
        n += 1;
    }
    if n == 1 {
        // Haploid: counted as homozygous.
        out[1] = out[0];
    }
    Ok(out)
}

/// A variant file being read: VCF text, or BCF with the encoder that turns each record into the
/// VCF line the rest of the import reads.
enum Input {
    Vcf(vcf::io::Reader<Box<dyn BufRead>>),
    Bcf {
        reader: bcf::io::Reader<Box<dyn Read>>,
        record: bcf::Record,
        line: vcf::io::Writer<Vec<u8>>,
    },
}

/// Whether `src` is BCF, and if so whether BGZF-compressed: the `.bcf` extension, or the raw magic
/// `BCF` of an uncompressed file.
fn bcf_kind(src: &Path) -> Result<Option<bcf::io::CompressionMethod>, GenoError> {
    let mut magic = [0u8; 3];
    let mut f = std::fs::File::open(src).map_err(|e| io_err(src, e))?;
    let n = f.read(&mut magic).map_err(|e| io_err(src, e))?;
    if n == 3 && &magic == b"BCF" {
        return Ok(Some(bcf::io::CompressionMethod::None));
    }
    let ext = src.extension().and_then(|e| e.to_str()).unwrap_or("");
    Ok(ext
        .eq_ignore_ascii_case("bcf")
        .then_some(bcf::io::CompressionMethod::Bgzf))
}

impl Input {
    fn open(src: &Path) -> Result<(Input, vcf::Header), GenoError> {
        match bcf_kind(src)? {
            Some(method) => {
                let mut reader = bcf::io::reader::Builder::default()
                    .set_compression_method(method)
                    .build_from_path(src)
                    .map_err(|e| io_err(src, e))?;
                let header = reader
                    .read_header()
                    .map_err(|e| bad(src, format!("BCF header: {e}")))?;
                let input = Input::Bcf {
                    reader,
                    record: bcf::Record::default(),
                    line: vcf::io::Writer::new(Vec::new()),
                };
                Ok((input, header))
            }
            None => {
                let mut reader = vcf::io::reader::Builder::default()
                    .build_from_path(src)
                    .map_err(|e| io_err(src, e))?;
                let header = reader
                    .read_header()
                    .map_err(|e| bad(src, format!("header: {e}")))?;
                Ok((Input::Vcf(reader), header))
            }
        }
    }

    /// The next record into `record`; 0 at the end.
    fn next(&mut self, header: &vcf::Header, record: &mut vcf::Record) -> std::io::Result<usize> {
        match self {
            Input::Vcf(r) => r.read_record(record),
            Input::Bcf {
                reader,
                record: b,
                line,
            } => {
                use vcf::variant::io::Write as _;
                let n = reader.read_record(b)?;
                if n == 0 {
                    return Ok(0);
                }
                line.get_mut().clear();
                line.write_variant_record(header, b)?;
                *record = vcf::Record::try_from(&line.get_ref()[..])?;
                Ok(n)
            }
        }
    }

    /// What errors call a record's place: a line of a VCF, a record of a BCF.
    fn unit(&self) -> &'static str {
        match self {
            Input::Vcf(_) => "line",
            Input::Bcf { .. } => "record",
        }
    }
}

/// Lines of the header (`##…` and `#CHROM`), so that errors can name a record's line.
fn header_lines(src: &Path) -> Result<u64, GenoError> {
    let mut r = vcf::io::reader::Builder::default()
        .build_from_path(src)
        .map_err(|e| io_err(src, e))?;
    let inner = r.get_mut();
    let (mut n, mut buf) = (0u64, Vec::new());
    loop {
        buf.clear();
        if inner
            .read_until(b'\n', &mut buf)
            .map_err(|e| io_err(src, e))?
            == 0
            || buf[0] != b'#'
        {
            return Ok(n);
        }
        n += 1;
    }
}

/// Import `src` into `out` (`out.bed`, `.bim`, `.fam`). `map`: VCF sample id → person id.
pub fn import_vcf(
    src: &Path,
    out: &Path,
    map: Option<&HashMap<String, String>>,
) -> Result<VcfImport, GenoError> {
    let (mut input, header) = Input::open(src)?;
    let names: Vec<String> = header.sample_names().iter().cloned().collect();
    let unit = input.unit();
    let header_lines = match input {
        Input::Vcf(_) => header_lines(src)?,
        Input::Bcf { .. } => 0,
    };
    let mut report = VcfImport {
        samples: names.len(),
        ..VcfImport::default()
    };
    // Column of every kept sample.
    let mut keep: Vec<usize> = Vec::new();
    let mut samples: Vec<Sample> = Vec::new();
    for (i, n) in names.iter().enumerate() {
        let id = match map {
            None => Some(n.clone()),
            Some(m) => m.get(n).cloned(),
        };
        match id {
            Some(id) => {
                keep.push(i);
                samples.push(Sample {
                    fid: id.clone(),
                    iid: id,
                    sex: 0,
                    pheno: "-9".into(),
                });
            }
            None => report.unmapped.push(n.clone()),
        }
    }
    report.kept_samples = keep.len();
    if keep.is_empty() {
        return Err(bad(src, "no sample of the VCF is kept (check the id map)"));
    }
    let tmp = |ext: &str| crate::with_suffix(out, &format!("{ext}.partial"));
    let (bed_tmp, bim_tmp, fam_tmp) = (tmp("bed"), tmp("bim"), tmp("fam"));
    let mut bed = BedWriter::create(&bed_tmp, keep.len())?;
    let mut variants: Vec<Variant> = Vec::new();
    let mut dosages = vec![0u8; keep.len()];
    let mut calls: Vec<[Option<u32>; 2]> = vec![[None, None]; names.len()];
    let mut record = vcf::Record::default();
    let mut line = header_lines;
    let result = (|| -> Result<(), GenoError> {
        loop {
            let n = input
                .next(&header, &mut record)
                .map_err(|e| bad(src, format!("{unit} {}: {e}", line + 1)))?;
            if n == 0 {
                return Ok(());
            }
            line += 1;
            report.records += 1;
            let at = |field: &str, msg: String| bad(src, format!("{unit} {line}, {field}: {msg}"));
            let chrom = record.reference_sequence_name().to_string();
            let pos = match record.variant_start() {
                Some(Ok(p)) => usize::from(p) as u64,
                Some(Err(e)) => return Err(at("POS", e.to_string())),
                None => return Err(at("POS", "missing".into())),
            };
            let id = record.ids().as_ref().to_string();
            let reference = record.reference_bases().to_string();
            let alts: Vec<String> = match record.alternate_bases().as_ref() {
                "." | "" => Vec::new(),
                s => s.split(',').map(str::to_string).collect(),
            };
            if alts.is_empty() {
                report.no_alt_records += 1;
                continue;
            }
            if alts.len() > 1 {
                report.multiallelic_records += 1;
            }
            // The sample columns: FORMAT, then one per sample.
            let raw = record.samples();
            let mut cols = raw.as_ref().split('\t');
            let format = cols.next().unwrap_or("");
            let gt_first = format.split(':').next() == Some("GT");
            let mut k = 0;
            for c in cols {
                if k == names.len() {
                    return Err(at(
                        "samples",
                        format!("more than the header's {} sample columns", names.len()),
                    ));
                }
                calls[k] = if gt_first {
                    let g = parse_gt(c).map_err(|m| at(&format!("sample {}", names[k]), m))?;
                    for a in g.iter().flatten() {
                        if *a as usize > alts.len() {
                            return Err(at(
                                &format!("sample {}", names[k]),
                                format!("allele {a} but only {} ALT alleles", alts.len()),
                            ));
                        }
                    }
                    g
                } else {
                    [None, None]
                };
                k += 1;
            }
            if k != names.len() && !(k == 0 && raw.as_ref().is_empty()) {
                return Err(at(
                    "samples",
                    format!("{k} sample columns, the header has {}", names.len()),
                ));
            }
            for (j, alt) in alts.iter().enumerate() {
                let code = j as u32 + 1;
                for (d, &col) in dosages.iter_mut().zip(&keep) {
                    *d = match calls[col] {
                        [Some(a), Some(b)] => {
                            let other = |x: u32| x != 0 && x != code;
                            if other(a) || other(b) {
                                if j == 0 {
                                    report.other_alt_calls += 1;
                                }
                                3
                            } else {
                                u8::from(a == code) + u8::from(b == code)
                            }
                        }
                        [None, None] => {
                            if j == 0 {
                                report.missing_calls += 1;
                            }
                            3
                        }
                        _ => {
                            if j == 0 {
                                report.half_calls += 1;
                            }
                            3
                        }
                    };
                }
                bed.write_dosages(&dosages)?;
                let vid = if id == "." {
                    format!("{chrom}:{pos}:{reference}:{alt}")
                } else if j == 0 {
                    id.clone()
                } else {
                    format!("{id}_{}", j + 1)
                };
                variants.push(Variant {
                    chrom: chrom.clone(),
                    id: vid,
                    cm: 0.0,
                    pos,
                    a1: alt.clone(),
                    a2: reference.clone(),
                });
                report.variants += 1;
            }
        }
    })();
    let finish = result
        .and_then(|()| bed.finish())
        .and_then(|()| write_bim(&bim_tmp, &variants))
        .and_then(|()| write_fam(&fam_tmp, &samples));
    if let Err(e) = finish {
        for p in [&bed_tmp, &bim_tmp, &fam_tmp] {
            let _ = std::fs::remove_file(p);
        }
        return Err(e);
    }
    // Every file is complete: move them into place (.fam last, so a reader never sees a .fam
    // without its .bed).
    for (from, ext) in [(&bed_tmp, "bed"), (&bim_tmp, "bim"), (&fam_tmp, "fam")] {
        let to = crate::with_suffix(out, ext);
        std::fs::rename(from, &to).map_err(|e| io_err(&to, e))?;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Bed;

    fn data(p: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../../shared/data")
            .join(p)
    }

    #[test]
    fn the_1000_genomes_region_imports_as_plink_converted_it() {
        // kg_chr1.{bed,bim,fam} is PLINK 1.9's `--vcf example.vcf.gz --double-id --make-bed` of
        // the same file; PLINK put the minor allele first, so compare tables up to orientation.
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("kg");
        let r = import_vcf(&data("kg1000_chr1_region/example.vcf.gz"), &out, None).unwrap();
        assert_eq!((r.samples, r.kept_samples), (2504, 2504));
        let ours = Bed::open(&out).unwrap();
        let theirs = Bed::open(&data("kg1000_chr1_region/kg_chr1")).unwrap();
        assert_eq!(ours.variants.len(), theirs.variants.len());
        assert_eq!(r.variants as usize, theirs.variants.len());
        for (a, b) in ours.samples.iter().zip(&theirs.samples) {
            assert_eq!(a.iid, b.iid);
        }
        for v in 0..ours.variants.len() {
            let (x, y) = (&ours.variants[v], &theirs.variants[v]);
            assert_eq!((&x.chrom, &x.id, x.pos), (&y.chrom, &y.id, y.pos));
            let (cx, cy) = (ours.counts(v), theirs.counts(v));
            if x.a1 == y.a1 {
                assert_eq!(cx, cy, "{}", x.id);
            } else {
                assert_eq!(
                    (x.a1.as_str(), x.a2.as_str()),
                    (y.a2.as_str(), y.a1.as_str())
                );
                assert_eq!(cx, cy.flipped(), "{}", x.id);
            }
        }
    }

    #[test]
    fn multiallelic_sites_missing_and_half_calls_and_the_id_map() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("t.vcf");
        std::fs::write(
            &src,
            "##fileformat=VCFv4.3\n##FORMAT=<ID=GT,Number=1,Type=String,Description=\"Genotype\">\n\
             #CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\ts1\ts2\ts3\ts4\n\
             1\t100\trs1\tA\tG\t.\t.\t.\tGT\t0/0\t0/1\t1|1\t./.\n\
             1\t200\trs2\tC\tT,G\t.\t.\t.\tGT:DP\t0/2:3\t1/1:4\t0/.:5\t2\n\
             1\t300\t.\tT\t.\t.\t.\t.\tGT\t0/0\t0/0\t0/0\t0/0\n",
        )
        .unwrap();
        let map: HashMap<String, String> = [("s1", "101"), ("s2", "102"), ("s4", "104")]
            .into_iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        let out = dir.path().join("site");
        let r = import_vcf(&src, &out, Some(&map)).unwrap();
        assert_eq!(r.unmapped, vec!["s3".to_string()]);
        assert_eq!(
            (
                r.records,
                r.variants,
                r.multiallelic_records,
                r.no_alt_records
            ),
            (3, 3, 1, 1)
        );
        let bed = Bed::open(&out).unwrap();
        let ids: Vec<&str> = bed.variants.iter().map(|v| v.id.as_str()).collect();
        assert_eq!(ids, ["rs1", "rs2", "rs2_2"]);
        assert_eq!(
            bed.samples
                .iter()
                .map(|s| s.iid.as_str())
                .collect::<Vec<_>>(),
            ["101", "102", "104"]
        );
        let d = |v: usize| -> Vec<Option<u8>> {
            (0..3).map(|i| crate::a1_dosage(bed.packed(v), i)).collect()
        };
        // rs1: s1 0/0, s2 0/1, s4 ./.
        assert_eq!(d(0), [Some(0), Some(1), None]);
        // rs2 T: s1 0/2 carries G (missing here), s2 1/1, s4 haploid 2 (missing here).
        assert_eq!(d(1), [None, Some(2), None]);
        // rs2_2 G: s1 0/2, s2 1/1 carries T (missing), s4 haploid 2 = 2 copies.
        assert_eq!(d(2), [Some(1), None, Some(2)]);
        assert_eq!(
            (bed.variants[2].a1.as_str(), bed.variants[2].a2.as_str()),
            ("G", "C")
        );
    }

    #[test]
    fn a_bad_record_names_the_file_line_and_field_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("bad.vcf");
        std::fs::write(
            &src,
            "##fileformat=VCFv4.3\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\ts1\ts2\n\
             1\t100\trs1\tA\tG\t.\t.\t.\tGT\t0/0\t0/1\n\
             1\t200\trs2\tA\tG\t.\t.\t.\tGT\t0/0\t0/3\n",
        )
        .unwrap();
        let out = dir.path().join("site");
        let e = import_vcf(&src, &out, None).unwrap_err().to_string();
        assert!(
            e.contains("bad.vcf") && e.contains("line 4") && e.contains("sample s2"),
            "{e}"
        );
        assert!(
            std::fs::read_dir(dir.path()).unwrap().count() == 1,
            "left files behind"
        );
    }

    fn bcftools(args: &[&str]) {
        let o = std::process::Command::new("bcftools")
            .args(args)
            .output()
            .expect("bcftools (installed by scripts/test-all.sh)");
        assert!(
            o.status.success(),
            "bcftools {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }

    fn files(prefix: &Path) -> Vec<Vec<u8>> {
        ["bed", "bim", "fam"]
            .iter()
            .map(|e| std::fs::read(crate::with_suffix(prefix, e)).unwrap())
            .collect()
    }

    #[test]
    fn bcf_compressed_or_not_imports_as_its_vcf_does() {
        // bcftools writes the 1000 Genomes region and the multi-allelic test file as BGZF and as
        // uncompressed BCF; each imports to the same .bed, .bim and .fam, and the same report, as
        // the VCF it came from.
        let dir = tempfile::tempdir().unwrap();
        let small = dir.path().join("t.vcf");
        std::fs::write(
            &small,
            "##fileformat=VCFv4.3\n##contig=<ID=1>\n##FORMAT=<ID=GT,Number=1,Type=String,Description=\"Genotype\">\n\
             #CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\ts1\ts2\ts3\ts4\n\
             1\t100\trs1\tA\tG\t.\t.\t.\tGT\t0/0\t0/1\t1|1\t./.\n\
             1\t200\trs2\tC\tT,G\t.\t.\t.\tGT\t0/2\t1/1\t0/.\t2\n\
             1\t300\t.\tT\t.\t.\t.\t.\tGT\t0/0\t0/0\t0/0\t0/0\n",
        )
        .unwrap();
        for (name, src) in [
            ("kg", data("kg1000_chr1_region/example.vcf.gz")),
            ("small", small),
        ] {
            let from_vcf = dir.path().join(format!("{name}_vcf"));
            let want = import_vcf(&src, &from_vcf, None).unwrap();
            for (flag, file) in [
                ("-Ob", format!("{name}.bcf")),
                ("-Ou", format!("{name}.raw")),
            ] {
                let bcf = dir.path().join(&file);
                bcftools(&[
                    "view",
                    flag,
                    "-o",
                    bcf.to_str().unwrap(),
                    src.to_str().unwrap(),
                ]);
                let out = dir.path().join(format!("{file}_out"));
                let got = import_vcf(&bcf, &out, None).unwrap();
                assert_eq!(got, want, "{file}");
                assert!(files(&out) == files(&from_vcf), "{file}: files differ");
            }
        }
    }

    #[test]
    fn a_truncated_bcf_names_the_file_and_record_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let whole = dir.path().join("whole.bcf");
        let src = data("kg1000_chr1_region/example.vcf.gz");
        bcftools(&[
            "view",
            "-Ou",
            "-o",
            whole.to_str().unwrap(),
            src.to_str().unwrap(),
        ]);
        let bytes = std::fs::read(&whole).unwrap();
        let cut = dir.path().join("cut.bcf");
        std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
        std::fs::remove_file(&whole).unwrap();
        let e = import_vcf(&cut, &dir.path().join("site"), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("cut.bcf") && e.contains("record "), "{e}");
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(left.len(), 1, "left files behind");
    }
}
