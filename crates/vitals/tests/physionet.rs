//! Real PhysioNet records (`../shared/data/physionet_wfdb_samples`): decoding against wfdb-python's
//! own decoding of the same files (the `csv/` folder), and R-peak detection against the MIT-BIH
//! cardiologists' beat annotations.

use std::io::Read;
use std::path::{Path, PathBuf};

use medfed_vitals::driver::Detection;
use medfed_vitals::rpeak::{detect, match_beats};
use medfed_vitals::wfdb::{read_annotations, read_record};

fn data(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/data/physionet_wfdb_samples")
        .join(p)
}

/// Columns of a wfdb-python CSV (gzip), without the sample column.
fn csv(p: &str) -> (Vec<String>, Vec<Vec<f64>>) {
    let mut text = String::new();
    flate2::read::GzDecoder::new(std::fs::File::open(data(p)).unwrap())
        .read_to_string(&mut text)
        .unwrap();
    let mut lines = text.lines();
    let head: Vec<String> = lines
        .next()
        .unwrap()
        .split(',')
        .skip(1)
        .map(String::from)
        .collect();
    let mut cols = vec![Vec::new(); head.len()];
    for l in lines {
        for (c, v) in l.split(',').skip(1).enumerate() {
            cols[c].push(v.parse().unwrap_or(f64::NAN));
        }
    }
    (head, cols)
}

fn same_as_wfdb_python(record: &str, csv_file: &str, decimals: i32) {
    let r = read_record(&data(&format!("wfdb/{record}"))).unwrap();
    let (head, cols) = csv(csv_file);
    let scale = 10f64.powi(decimals);
    for (name, want) in head.iter().zip(&cols) {
        let s = r
            .signal(name)
            .unwrap_or_else(|| panic!("{record}: no signal {name}"));
        let got = &r.samples[s];
        assert_eq!(got.len(), want.len(), "{record} {name}");
        for (t, (a, b)) in got.iter().zip(want).enumerate() {
            // The CSV is rounded to `decimals` (ties either way): ours must round to it.
            assert!(
                (a - b).abs() <= 0.5 / scale * (1.0 + 1e-9) || (a.is_nan() && b.is_nan()),
                "{record} {name} sample {t}: ours {a}, wfdb-python {b}"
            );
        }
    }
}

#[test]
fn records_decode_as_wfdb_python_decodes_them() {
    // Format 212 with two signals (MIT-BIH 100), 212 with four (v102s), 16 after a 24-byte header
    // (the Challenge's a103l.mat).
    same_as_wfdb_python("100", "csv/mitdb100_signals.csv.gz", 3);
    same_as_wfdb_python("v102s", "csv/v102s_signals.csv.gz", 4);
    same_as_wfdb_python("a103l", "csv/a103l_signals.csv.gz", 4);
    let r = read_record(&data("wfdb/a103l")).unwrap();
    assert_eq!((r.fs, r.samples[0].len()), (250.0, 82_500));
    assert_eq!(r.comments, ["Asystole", "False alarm"]);
}

#[test]
fn annotations_read_as_wfdb_python_reads_them() {
    let ours = read_annotations(&data("wfdb/100.atr")).unwrap();
    let text = std::fs::read_to_string(data("csv/mitdb100_atr.csv")).unwrap();
    let theirs: Vec<(u64, String)> = text
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f[0].parse().unwrap(), f[1].to_string())
        })
        .collect();
    assert_eq!(ours.len(), theirs.len());
    for (a, (s, sym)) in ours.iter().zip(&theirs) {
        assert_eq!((a.sample, a.symbol), (*s, sym.as_str()));
    }
    assert_eq!(ours[0].aux, "(N");
    assert_eq!(ours.iter().filter(|a| a.is_beat()).count(), 2273);
}

#[test]
fn r_peaks_on_mitdb_100_match_the_cardiologists_beats() {
    let r = read_record(&data("wfdb/100")).unwrap();
    let lead = r.signal("MLII").unwrap();
    let beats: Vec<u64> = read_annotations(&data("wfdb/100.atr"))
        .unwrap()
        .into_iter()
        .filter(|a| a.is_beat())
        .map(|a| a.sample)
        .collect();
    let found = detect(&r.samples[lead], r.fs);
    let tolerance = (0.150 * r.fs).round() as u64;
    let s = match_beats(&beats, &found, tolerance);
    eprintln!(
        "MIT-BIH 100, MLII: {} beats, {} detected; TP {} FN {} FP {}; sensitivity {:.4}, positive predictivity {:.4}",
        beats.len(),
        found.len(),
        s.true_positives,
        s.false_negatives,
        s.false_positives,
        s.sensitivity(),
        s.positive_predictivity()
    );
    assert!(
        s.sensitivity() >= 0.99 && s.positive_predictivity() >= 0.99,
        "{s:?}"
    );
    // The other lead works too, and the scorer can fail: a detector that is 100 ms late by design
    // still passes at 150 ms but not at 50 ms.
    let v5 = detect(&r.samples[r.signal("V5").unwrap()], r.fs);
    let s5 = match_beats(&beats, &v5, tolerance);
    eprintln!(
        "V5: sensitivity {:.4}, positive predictivity {:.4}",
        s5.sensitivity(),
        s5.positive_predictivity()
    );
    let late: Vec<u64> = beats.iter().map(|b| b + 36).collect();
    assert_eq!(
        match_beats(&beats, &late, tolerance).true_positives,
        beats.len()
    );
    assert_eq!(match_beats(&beats, &late, 18).true_positives, 0);
}

#[test]
fn bad_records_and_annotations_are_refused_with_the_file_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let hea = dir.path().join("r.hea");
    std::fs::write(&hea, "r 2 360 100\nr.dat 212 200 11 1024 0 0 0 I\n").unwrap();
    let e = read_record(&hea).unwrap_err().to_string();
    assert!(
        e.contains("r.hea") && e.contains("2 signals announced, 1 described"),
        "{e}"
    );
    std::fs::write(&hea, "r 1 360 100\nr.dat 212 abc/mV 11 1024 0 0 0 I\n").unwrap();
    let e = read_record(&hea).unwrap_err().to_string();
    assert!(e.contains("r.hea") && e.contains("gain"), "{e}");
    // A signal file shorter than the header says.
    std::fs::write(&hea, "r 1 360 100\nr.dat 16 200 16 0 0 0 0 I\n").unwrap();
    std::fs::write(dir.path().join("r.dat"), [0u8; 50]).unwrap();
    let e = read_record(&hea).unwrap_err().to_string();
    assert!(
        e.contains("r.dat") && e.contains("25 frames, the header announces 100"),
        "{e}"
    );
    // An annotation file cut in the middle.
    let atr = std::fs::read(data("wfdb/100.atr")).unwrap();
    let cut = dir.path().join("cut.atr");
    std::fs::write(&cut, &atr[..atr.len() / 2]).unwrap();
    let e = read_annotations(&cut).unwrap_err().to_string();
    assert!(e.contains("cut.atr") && e.contains("byte"), "{e}");
}

#[test]
fn thirty_two_hours_of_mimic_ii_trends_raise_nothing() {
    // MIMIC-II numerics (1 reading a minute): a 60-year-old woman's heart rate and saturation with
    // real artefacts (HR 11.5 and 99.8 for a minute) and long stretches of 0 (sensor off). Read as
    // WFDB format 16 and checked against wfdb-python's CSV first.
    use medfed_vitals::trend::TrendMonitor;
    let r = read_record(&data("wfdb/s00001/s00001-2896-10-10-00-31n")).unwrap();
    assert_eq!(r.samples[0].len(), 1936);
    let text = std::fs::read_to_string(data("csv/mimic2_s00001_numerics_1min.csv")).unwrap();
    let (hr, spo2) = (r.signal("HR").unwrap(), r.signal("SpO2").unwrap());
    let mut m = TrendMonitor::default();
    let mut episodes = Vec::new();
    for (minute, line) in text.lines().skip(1).enumerate() {
        let f: Vec<f64> = line
            .split(',')
            .map(|x| x.parse().unwrap_or(f64::NAN))
            .collect();
        let (h, s) = (r.samples[hr][minute], r.samples[spo2][minute]);
        assert!(
            (h - f[1]).abs() < 1e-9 && (s - f[7]).abs() < 1e-9,
            "minute {minute}"
        );
        episodes.extend(m.push(minute as f64 * 60.0, Some(h), Some(s)));
    }
    assert!(episodes.is_empty(), "{episodes:?}");
}

/// Uniform noise of ±0.02 (a linear congruential generator from `seed`): a baseline with no
/// heartbeat on it.
fn noise(mut seed: u64) -> impl FnMut() -> f64 {
    move || {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((seed >> 33) as f64 / (1u64 << 31) as f64 - 0.5) * 0.04
    }
}

/// The asystole monitor over a whole record's ECG leads (and pleth); the samples where it raised.
fn asystole_calls(record: &str, leads: &[&str], pleth: Option<&str>) -> Vec<u64> {
    use medfed_vitals::arrest::AsystoleMonitor;
    let r = read_record(&data(&format!("wfdb/{record}"))).unwrap();
    let idx: Vec<usize> = leads.iter().map(|l| r.signal(l).unwrap()).collect();
    let p = pleth.map(|p| r.signal(p).unwrap());
    let mut m = AsystoleMonitor::new(r.fs, idx.len(), p.is_some(), 4.0);
    let mut calls = Vec::new();
    let mut frame = vec![0.0; idx.len()];
    for t in 0..r.samples[0].len() {
        for (k, &i) in idx.iter().enumerate() {
            frame[k] = r.samples[i][t];
        }
        calls.extend(m.push(&frame, p.map(|p| r.samples[p][t])));
    }
    calls
}

#[test]
fn the_labelled_icu_false_alarms_raise_no_asystole() {
    // PhysioNet/CinC 2015: a103l was a bedside monitor's false asystole alarm, v102s a false VT
    // alarm; with both ECG leads and the plethysmogram, nothing is raised over either record.
    for (rec, leads) in [("a103l", ["II", "V"]), ("v102s", ["II", "V"])] {
        let calls = asystole_calls(rec, &leads, Some("PLETH"));
        assert!(calls.is_empty(), "{rec}: asystole raised at {calls:?}");
        let ecg_only = asystole_calls(rec, &leads, None);
        eprintln!("{rec}: ECG only would raise at {ecg_only:?}");
    }
}

#[test]
fn a_stopped_heart_is_raised_and_a_lifted_electrode_is_not() {
    use medfed_vitals::arrest::AsystoleMonitor;
    let r = read_record(&data("wfdb/100")).unwrap();
    let (fs, a, b) = (r.fs, r.signal("MLII").unwrap(), r.signal("V5").unwrap());
    let onset = (60.0 * fs) as usize;
    let end = (90.0 * fs) as usize;
    let mut noise = noise(7);
    // Stopped: after 60 s both leads show only a few hundredths of a millivolt of noise.
    let mut m = AsystoleMonitor::new(fs, 2, false, 4.0);
    let mut calls = Vec::new();
    for t in 0..end {
        let f = if t < onset {
            [r.samples[a][t], r.samples[b][t]]
        } else {
            [noise(), noise()]
        };
        calls.extend(m.push(&f, None));
    }
    assert_eq!(calls.len(), 1, "{calls:?}");
    // Asystole is four seconds without a beat, counted from the last real one.
    let last_beat = read_annotations(&data("wfdb/100.atr"))
        .unwrap()
        .into_iter()
        .filter(|x| x.is_beat() && (x.sample as usize) < onset)
        .map(|x| x.sample)
        .max()
        .unwrap();
    let delay = (calls[0] as f64 - last_beat as f64) / fs;
    eprintln!("asystole raised {delay:.2} s after the last beat");
    assert!(
        (4.0..6.0).contains(&delay),
        "raised {delay} s after the last beat"
    );
    // Lifted: both leads stuck at one value (lead off) — unusable, so never asystole.
    let mut m = AsystoleMonitor::new(fs, 2, false, 4.0);
    for t in 0..end {
        let f = if t < onset {
            [r.samples[a][t], r.samples[b][t]]
        } else {
            [0.0, 0.0]
        };
        assert!(
            m.push(&f, None).is_none(),
            "raised at {t} on a lifted electrode"
        );
    }
}

#[test]
fn the_plethysmogram_vetoes_a_silent_ecg_until_it_stops_pulsing_too() {
    // a103l: after 60 s the ECG leads show only noise; the pleth goes on pulsing (a perfused heart
    // with a bad ECG) — nothing is raised. At 120 s the pleth goes flat as well: asystole.
    use medfed_vitals::arrest::AsystoleMonitor;
    let r = read_record(&data("wfdb/a103l")).unwrap();
    let (ii, v, pl) = (
        r.signal("II").unwrap(),
        r.signal("V").unwrap(),
        r.signal("PLETH").unwrap(),
    );
    let (ecg_off, pleth_off) = ((60.0 * r.fs) as usize, (120.0 * r.fs) as usize);
    let mut noise = noise(11);
    let mut m = AsystoleMonitor::new(r.fs, 2, true, 4.0);
    let mut calls = Vec::new();
    for t in 0..(150.0 * r.fs) as usize {
        let ecg = if t < ecg_off {
            [r.samples[ii][t], r.samples[v][t]]
        } else {
            [noise(), noise()]
        };
        let p = if t < pleth_off {
            r.samples[pl][t]
        } else {
            0.5 + noise() * 0.1
        };
        calls.extend(m.push(&ecg, Some(p)));
    }
    assert_eq!(calls.len(), 1, "{calls:?}");
    let at = calls[0] as f64 / r.fs;
    eprintln!("pleth flat at 120 s: asystole raised at {at:.2} s");
    assert!((120.0..127.0).contains(&at), "raised at {at} s");
}

/// What a driver monitor raises on one ECG lead of a record, fed in one-second chunks, with the
/// record's plethysmogram (if any) standing in for the car's wearable: its pulse rate once a second.
fn driver_detections(record: &str, lead: &str, pleth: Option<&str>) -> Vec<Detection> {
    use medfed_vitals::arrest::PulseDetector;
    use medfed_vitals::driver::{DriverMonitor, DriverRules, Reading};
    let r = read_record(&data(&format!("wfdb/{record}"))).unwrap();
    let ecg = &r.samples[r.signal(lead).unwrap()];
    let pleth = pleth.map(|p| &r.samples[r.signal(p).unwrap()]);
    let fs = r.fs;
    let second = fs as usize;
    let mut m = DriverMonitor::new(Default::default(), DriverRules::default());
    let mut pulses = PulseDetector::new(fs);
    let mut last: Vec<u64> = Vec::new();
    let mut out = Vec::new();
    for (s, chunk) in ecg.chunks(second).enumerate() {
        let t = s as f64;
        out.extend(m.ecg(t, fs, chunk, false));
        let mut hr = None;
        if let Some(p) = pleth {
            for &x in &p[s * second..(s * second + chunk.len())] {
                last.extend(pulses.push(x));
            }
            let end = ((s + 1) * second) as u64;
            last.retain(|&b| b + 5 * second as u64 >= end);
            if last.len() >= 3 {
                let span = (last[last.len() - 1] - last[0]) as f64 / fs;
                hr = Some(60.0 * (last.len() - 1) as f64 / span);
            }
        }
        let reading = Reading {
            t: t + 1.0,
            hr,
            spo2: None,
            worn: pleth.is_some(),
            ..Reading::default()
        };
        out.extend(m.reading(&reading));
    }
    out
}

#[test]
fn real_rhythms_raise_no_vt_vf_or_af_and_the_labelled_false_vt_alarm_neither() {
    // MIT-BIH 100: sinus rhythm with 33 atrial and 1 ventricular premature beats, 30 minutes, on
    // either lead.
    assert_eq!(driver_detections("100", "MLII", None), []);
    assert_eq!(driver_detections("100", "V5", None), []);
    // CinC 2015 v102s, a bedside monitor's VT alarm that experts labelled false. Its lead II is
    // noise (kurtosis about 3.5 throughout), where the beat detector finds fast "beats"; the
    // plethysmogram's regular pulse contradicts a ventricular rhythm, and the noise is no ground
    // for AF.
    assert_eq!(driver_detections("v102s", "II", Some("PLETH")), []);
    assert_eq!(driver_detections("v102s", "V", Some("PLETH")), []);
    assert_eq!(driver_detections("a103l", "II", Some("PLETH")), []);
}
