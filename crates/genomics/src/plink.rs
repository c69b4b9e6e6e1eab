//! PLINK 1.9's report files (`.assoc`, `.assoc.fisher`, `.model`, `.hwe`, `.frq`, `.frq.cc`,
//! `.lmiss`, `.assoc.adjusted`) written from pooled tables, in PLINK's column layout and number format
//! (C's `%g` with four significant digits), so that existing tools read them and they compare
//! token for token with PLINK's own output.

use std::fmt::Write;

use crate::assoc::{self, Adjusted, CaseControl};
use crate::Variant;

/// `%.*g` as PLINK 1.9 prints it: `NA` for `NaN`, `inf`/`-inf`. PLINK scales the value to `digits`
/// significant digits and rounds half to even with a tolerance (its "banker's rounding" constants:
/// 0.5 ± 5e-11 for four digits), so a value that close to a decimal tie counts as the tie: OR
/// 9844/7360 (the double just below 1.3375) prints `1.338` where glibc prints `1.337`, and 1.0625
/// prints `1.062`; an HWE p of 0.63005000001 prints `0.6301`.
pub fn fmt_g(x: f64, digits: usize) -> String {
    if x.is_nan() {
        return "NA".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "inf".into() } else { "-inf".into() };
    }
    if x == 0.0 {
        return "0".into();
    }
    let p = digits.clamp(1, 15) as i32;
    let sign = if x < 0.0 { "-" } else { "" };
    let ax = x.abs();
    let pow10 = |k: i32| -> f64 { format!("1e{k}").parse().unwrap_or(1.0) };
    let scale = |e: i32| -> f64 {
        let k = p - 1 - e;
        if k >= 0 {
            ax * pow10(k)
        } else {
            ax / pow10(-k)
        }
    };
    // A tie within 5·10^-(15 − digits) of .5 goes to the even neighbour (PLINK's tolerance for
    // four significant digits is 5e-11).
    let tol = 5.0 * pow10(-(15 - p));
    let bround = |v: f64| -> u64 {
        let r = v.trunc() as u64;
        let frac = v - r as f64;
        r + u64::from(
            frac + if r.is_multiple_of(2) {
                0.5 - tol
            } else {
                0.5 + tol
            } >= 1.0,
        )
    };
    let e0: i32 = format!("{ax:e}")
        .split_once('e')
        .and_then(|(_, e)| e.parse().ok())
        .unwrap_or(0);
    let mut e = e0;
    let mut m = bround(scale(e));
    if m >= 10u64.pow(p as u32) {
        e += 1;
        m = bround(scale(e));
    }
    let digits = format!("{m:0width$}", width = p as usize);
    let strip = |s: String| -> String {
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s
        }
    };
    if e < -4 || e >= p {
        let mant = strip(format!("{}.{}", &digits[..1], &digits[1..]));
        format!(
            "{sign}{mant}e{}{:02}",
            if e < 0 { '-' } else { '+' },
            e.abs()
        )
    } else if e >= 0 {
        let k = e as usize + 1;
        strip(format!("{sign}{}.{}", &digits[..k], &digits[k..]))
    } else {
        let zeros = "0".repeat((-e - 1) as usize);
        strip(format!("{sign}0.{zeros}{digits}"))
    }
}

fn g(x: f64) -> String {
    fmt_g(x, 4)
}

fn opt(x: Option<f64>) -> String {
    x.map(g).unwrap_or_else(|| "NA".into())
}

/// One variant of a report: its `.bim` line and its pooled table with A1 the minor allele.
#[derive(Clone, Debug)]
pub struct Row<'a> {
    pub variant: &'a Variant,
    pub a1: &'a str,
    pub a2: &'a str,
    pub table: CaseControl,
}

/// Orient a pooled table as PLINK 1.9 does (A1 minor over all samples analysed).
pub fn orient<'a>(variant: &'a Variant, table: &CaseControl) -> Row<'a> {
    let (table, flipped) = table.minor_first();
    let (a1, a2) = if flipped {
        (variant.a2.as_str(), variant.a1.as_str())
    } else {
        (variant.a1.as_str(), variant.a2.as_str())
    };
    Row {
        variant,
        a1,
        a2,
        table,
    }
}

/// `--assoc` (`.assoc`).
pub fn assoc(rows: &[Row]) -> String {
    let mut s = format!(
        "{:>4} {:>11} {:>10} {:>4} {:>8} {:>8} {:>4} {:>12} {:>12} {:>12} \n",
        "CHR", "SNP", "BP", "A1", "F_A", "F_U", "A2", "CHISQ", "P", "OR"
    );
    for r in rows {
        let a = assoc::allelic(&r.table);
        let _ = writeln!(
            s,
            "{:>4} {:>11} {:>10} {:>4} {:>8} {:>8} {:>4} {:>12} {:>12} {:>12} ",
            r.variant.chrom,
            r.variant.id,
            r.variant.pos,
            r.a1,
            g(a.f_a),
            g(a.f_u),
            r.a2,
            opt(a.chisq),
            opt(a.p),
            opt(a.or)
        );
    }
    s
}

/// `--assoc fisher` (`.assoc.fisher`).
pub fn fisher(rows: &[Row]) -> String {
    let mut s = format!(
        "{:>4} {:>11} {:>10} {:>4} {:>8} {:>8} {:>4} {:>12} {:>12} \n",
        "CHR", "SNP", "BP", "A1", "F_A", "F_U", "A2", "P", "OR"
    );
    for r in rows {
        let a = assoc::allelic(&r.table);
        let _ = writeln!(
            s,
            "{:>4} {:>11} {:>10} {:>4} {:>8} {:>8} {:>4} {:>12} {:>12} ",
            r.variant.chrom,
            r.variant.id,
            r.variant.pos,
            r.a1,
            g(a.f_a),
            g(a.f_u),
            r.a2,
            g(a.fisher_p),
            opt(a.or)
        );
    }
    s
}

/// `--model` (`.model`).
pub fn model(rows: &[Row]) -> String {
    let mut s = format!(
        "{:>4} {:>11} {:>4} {:>4} {:>8} {:>14} {:>14} {:>12} {:>4} {:>12}\n",
        "CHR", "SNP", "A1", "A2", "TEST", "AFF", "UNAFF", "CHISQ", "DF", "P"
    );
    for r in rows {
        for t in assoc::model(&r.table, assoc::MIN_CELL) {
            let _ = writeln!(
                s,
                "{:>4} {:>11} {:>4} {:>4} {:>8} {:>14} {:>14} {:>12} {:>4} {:>12}",
                r.variant.chrom,
                r.variant.id,
                r.a1,
                r.a2,
                t.test,
                t.aff,
                t.unaff,
                opt(t.chisq),
                if t.chisq.is_some() {
                    t.df.to_string()
                } else {
                    "NA".into()
                },
                opt(t.p)
            );
        }
    }
    s
}

/// `--hardy` (`.hwe`): all samples, cases and controls (the last two only when some sample has a
/// case/control phenotype, as PLINK).
pub fn hardy(rows: &[Row]) -> String {
    let mut s = format!(
        "{:>4} {:>11} {:>8} {:>4} {:>4} {:>20} {:>8} {:>8} {:>12} \n",
        "CHR", "SNP", "TEST", "A1", "A2", "GENO", "O(HET)", "E(HET)", "P"
    );
    let cc = rows.iter().any(|r| {
        r.table.case.called()
            + r.table.case.missing
            + r.table.control.called()
            + r.table.control.missing
            > 0
    });
    for r in rows {
        let all = r.table.all();
        let mut tests = vec![("ALL", all)];
        if cc {
            tests.push(("AFF", r.table.case));
            tests.push(("UNAFF", r.table.control));
        }
        for (name, gc) in tests {
            let h = assoc::hardy(&gc);
            let _ = writeln!(
                s,
                "{:>4} {:>11} {:>8} {:>4} {:>4} {:>20} {:>8} {:>8} {:>12} ",
                r.variant.chrom,
                r.variant.id,
                name,
                r.a1,
                r.a2,
                gc.slash(),
                g(h.o_het),
                g(h.e_het),
                g(h.p)
            );
        }
    }
    s
}

/// `--freq` (`.frq`).
pub fn frq(rows: &[Row]) -> String {
    let mut s = format!(
        "{:>4} {:>11} {:>4} {:>4} {:>12} {:>8}\n",
        "CHR", "SNP", "A1", "A2", "MAF", "NCHROBS"
    );
    for r in rows {
        let f = assoc::freq(&r.table);
        let _ = writeln!(
            s,
            "{:>4} {:>11} {:>4} {:>4} {:>12} {:>8}",
            r.variant.chrom,
            r.variant.id,
            r.a1,
            r.a2,
            g(f.maf),
            f.nchrobs
        );
    }
    s
}

/// `--freq case-control` (`.frq.cc`).
pub fn frq_cc(rows: &[Row]) -> String {
    let mut s = format!(
        "{:>4} {:>11} {:>4} {:>4} {:>12} {:>12} {:>10} {:>10}\n",
        "CHR", "SNP", "A1", "A2", "MAF_A", "MAF_U", "NCHROBS_A", "NCHROBS_U"
    );
    for r in rows {
        let f = assoc::freq(&r.table);
        let _ = writeln!(
            s,
            "{:>4} {:>11} {:>4} {:>4} {:>12} {:>12} {:>10} {:>10}",
            r.variant.chrom,
            r.variant.id,
            r.a1,
            r.a2,
            g(f.maf_a),
            g(f.maf_u),
            f.nchrobs_a,
            f.nchrobs_u
        );
    }
    s
}

/// `--missing` per variant (`.lmiss`).
pub fn lmiss(rows: &[Row]) -> String {
    let mut s = format!(
        "{:>4} {:>11} {:>8} {:>8} {:>8}\n",
        "CHR", "SNP", "N_MISS", "N_GENO", "F_MISS"
    );
    for r in rows {
        let f = assoc::freq(&r.table);
        let _ = writeln!(
            s,
            "{:>4} {:>11} {:>8} {:>8} {:>8}",
            r.variant.chrom,
            r.variant.id,
            f.n_miss,
            f.n_geno,
            g(if f.n_geno == 0 {
                f64::NAN
            } else {
                f.n_miss as f64 / f.n_geno as f64
            })
        );
    }
    s
}

/// `--adjust` (`.assoc.adjusted`), rows as [`assoc::adjust`] orders them.
pub fn adjusted(rows: &[Row], adj: &[Adjusted]) -> String {
    let mut s = format!(
        "{:>4} {:>11} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} \n",
        "CHR", "SNP", "UNADJ", "GC", "BONF", "HOLM", "SIDAK_SS", "SIDAK_SD", "FDR_BH", "FDR_BY"
    );
    for a in adj {
        let r = &rows[a.index];
        let _ = writeln!(
            s,
            "{:>4} {:>11} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} ",
            r.variant.chrom,
            r.variant.id,
            g(a.unadj),
            g(a.gc),
            g(a.bonf),
            g(a.holm),
            g(a.sidak_ss),
            g(a.sidak_sd),
            g(a.fdr_bh),
            g(a.fdr_by)
        );
    }
    s
}

/// `--logistic --beta --ci 0.95 --hide-covar` (`.assoc.logistic`) or `--linear --ci 0.95
/// --hide-covar` (`.assoc.linear`): the A1 dosage's row (ADD) of each variant's fit. `fits[i]` is
/// `(n, beta, se, p)` of row `i` with A1 as the row says (`None`: not fitted, printed as NA). Returns
/// the file's extension and its text.
pub fn glm_add(
    rows: &[Row],
    fits: &[Option<(u64, f64, f64, f64)>],
    logistic: bool,
) -> (&'static str, String) {
    let mut s = format!(
        "{:>4} {:>11} {:>10} {:>4} {:>10} {:>8} {:>10} {:>8} {:>8} {:>8} {:>12} {:>12} \n",
        "CHR", "SNP", "BP", "A1", "TEST", "NMISS", "BETA", "SE", "L95", "U95", "STAT", "P"
    );
    let z = crate::dist::qnorm(0.975);
    for (r, f) in rows.iter().zip(fits) {
        let (n, b, se, p) = f.unwrap_or((0, f64::NAN, f64::NAN, f64::NAN));
        let _ = writeln!(
            s,
            "{:>4} {:>11} {:>10} {:>4} {:>10} {:>8} {:>10} {:>8} {:>8} {:>8} {:>12} {:>12} ",
            r.variant.chrom,
            r.variant.id,
            r.variant.pos,
            r.a1,
            "ADD",
            n,
            g(b),
            g(se),
            g(b - z * se),
            g(b + z * se),
            g(b / se),
            g(p)
        );
    }
    (
        if logistic {
            "assoc.logistic"
        } else {
            "assoc.linear"
        },
        s,
    )
}

#[cfg(test)]
mod tests {
    use super::fmt_g;

    #[test]
    fn formats_like_printf_g() {
        for (x, want) in [
            (0.39, "0.39"),
            (0.343_333, "0.3433"),
            (5.6271, "5.627"),
            (1200.0, "1200"),
            // Ties (within PLINK's tolerance) go to even.
            (12_345.0, "1.234e+04"),
            (1.0625, "1.062"),
            ((46.0 * 214.0) / (184.0 * 40.0), "1.338"),
            ((30.0 * 206.0) / (200.0 * 48.0), "0.6438"),
            // Just over the tie by more than the tolerance: up, as PLINK 1.9's --hardy prints it.
            (0.630_050_000_010_476_5, "0.6301"),
            (1.05e-10, "1.05e-10"),
            (0.000_099_21, "9.921e-05"),
            (0.000_992_1, "0.0009921"),
            (0.999_99, "1"),
            (9.999_6, "10"),
            (-0.189_4, "-0.1894"),
            (0.000_012_345, "1.234e-05"),
            (999_960.0, "1e+06"),
            (0.1, "0.1"),
            (f64::NAN, "NA"),
            (f64::INFINITY, "inf"),
        ] {
            assert_eq!(fmt_g(x, 4), want, "{x}");
        }
    }
}
