//! Every detector against R `surveillance` 1.20.3 on the reference series in
//! `../shared/data/surveillance_counts/` (outputs made by its `reference/GENERATE_reference.R.txt`).

use medfed_surveil::*;
use std::path::PathBuf;

fn data() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/surveillance_counts")
}

/// Column `observed1` (or `observed`) and, where it is days since 1970, `epoch`.
fn series(name: &str) -> (Vec<f64>, Vec<i64>) {
    let mut r = csv::Reader::from_path(data().join(format!("{name}.csv"))).unwrap();
    let h = r.headers().unwrap().clone();
    let col = |n: &str| h.iter().position(|c| c == n);
    let o = col("observed1").or(col("observed")).unwrap();
    let e = col("epoch").or(col("t")).unwrap();
    let (mut obs, mut epoch) = (vec![], vec![]);
    for rec in r.records() {
        let rec = rec.unwrap();
        obs.push(rec[o].parse().unwrap());
        epoch.push(rec[e].parse().unwrap());
    }
    (obs, epoch)
}

struct Ref {
    t: usize,
    upper: Option<f64>,
    alarm: Option<bool>,
}

fn reference(file: &str) -> Vec<Ref> {
    let text = std::fs::read_to_string(data().join("reference").join(file)).unwrap();
    let body: String = text.lines().skip(1).collect::<Vec<_>>().join("\n");
    let mut r = csv::Reader::from_reader(body.as_bytes());
    r.records()
        .map(|rec| {
            let rec = rec.unwrap();
            Ref {
                t: rec[2].parse::<usize>().unwrap() - 1,
                upper: rec[5].parse().ok(),
                alarm: match &rec[6] {
                    "NA" => None,
                    a => Some(a == "1"),
                },
            }
        })
        .collect()
}

fn range(refs: &[Ref]) -> std::ops::Range<usize> {
    refs[0].t..refs[refs.len() - 1].t + 1
}

/// Compare with R: alarms identical, bounds within `rel` (NA where R has NA).
fn compare(name: &str, got: &[Point], refs: &[Ref], rel: f64) -> (usize, f64) {
    assert_eq!(got.len(), refs.len(), "{name}");
    let mut worst = 0.0f64;
    for (g, r) in got.iter().zip(refs) {
        assert_eq!(g.t, r.t);
        match (g.upperbound, r.upper) {
            (Some(a), Some(b)) => {
                let e = (a - b).abs() / b.abs().max(1e-300);
                let e = if b == 0.0 { (a - b).abs() } else { e };
                worst = worst.max(e);
                assert!(
                    e <= rel,
                    "{name} t={} bound {a} vs R {b} (rel {e:e})",
                    r.t + 1
                );
            }
            (None, None) => {}
            (a, b) => panic!("{name} t={}: bound {a:?} vs R {b:?}", r.t + 1),
        }
        assert_eq!(
            Some(g.alarm),
            r.alarm.or(Some(false)),
            "{name} t={} alarm",
            r.t + 1
        );
    }
    (got.iter().filter(|p| p.alarm).count(), worst)
}

#[test]
fn ears_c1_c2_c3_equal_r_bounds_and_alarms() {
    let cases: [(&str, &str); 16] = [
        ("salmonella_agona", "C1"),
        ("salmonella_agona", "C2"),
        ("salmonella_agona", "C3"),
        ("stsNewport", "C1"),
        ("stsNewport", "C2"),
        ("stsNewport", "C3"),
        ("sim_pointSource_seed20240601", "C1"),
        ("sim_pointSource_seed20240601", "C2"),
        ("sim_pointSource_seed20240601", "C3"),
        ("k1", "C1"),
        ("m1", "C1"),
        ("m5", "C1"),
        ("n1", "C1"),
        ("q2", "C1"),
        ("s1", "C1"),
        ("h1_nrwrp", "C1"),
    ];
    for (s, m) in cases {
        let (obs, _) = series(s);
        let stem = s.replace("_seed20240601", "");
        let refs = reference(&format!("{stem}__earsC_{m}.csv"));
        let method = match m {
            "C1" => EarsMethod::C1,
            "C2" => EarsMethod::C2,
            _ => EarsMethod::C3,
        };
        let ctl = EarsControl {
            alpha: 0.001,
            ..EarsControl::new(method)
        };
        let got = ears(&obs, range(&refs), &ctl).unwrap();
        let (alarms, worst) = compare(&format!("{s} {m}"), &got, &refs, 1e-12);
        println!(
            "{s} EARS {m}: {} points, {alarms} alarms, worst relative bound difference {worst:e}",
            got.len()
        );
    }
}

#[test]
fn cusum_equals_r() {
    let (obs, _) = series("salmonella_agona");
    let refs = reference("salmonella_agona__cusum_standard.csv");
    let got = cusum(&obs, range(&refs), &CusumControl::default()).unwrap();
    let (alarms, worst) = compare("cusum", &got, &refs, 0.0);
    println!("salmonella_agona CUSUM: {alarms} alarms, worst {worst}");
    assert!(alarms > 0);
}

#[test]
fn farrington_flexible_equals_r_to_1e9() {
    // (series, reference, control, dated weekly series?)
    let agona_orig = FarringtonControl {
        b: 3,
        w: 3,
        alpha: 0.01,
        past_weeks_not_included: Some(3),
        ..FarringtonControl::original()
    };
    let agona_nouf = FarringtonControl {
        b: 3,
        w: 3,
        alpha: 0.01,
        ..FarringtonControl::noufaily()
    };
    let newport = FarringtonControl {
        b: 4,
        w: 3,
        alpha: 0.05,
        ..FarringtonControl::noufaily()
    };
    let cases = [
        (
            "salmonella_agona",
            "salmonella_agona__farringtonFlexible_origsettings.csv",
            agona_orig,
            false,
        ),
        (
            "salmonella_agona",
            "salmonella_agona__farringtonFlexible_noufaily.csv",
            agona_nouf,
            false,
        ),
        (
            "stsNewport",
            "stsNewport__farringtonFlexible_noufaily.csv",
            newport,
            true,
        ),
    ];
    for (s, file, ctl, dated) in cases {
        let (obs, epoch) = series(s);
        let refs = reference(file);
        let ser = Series {
            observed: &obs,
            freq: 52,
            dates: dated.then_some(&epoch[..]),
        };
        let got = farrington_flexible(&ser, range(&refs), &ctl).unwrap();
        let (alarms, worst) = compare(file, &got, &refs, 1e-9);
        println!("{file}: {} points, {alarms} alarms (same as R), worst relative bound difference {worst:e}", got.len());
    }
}
