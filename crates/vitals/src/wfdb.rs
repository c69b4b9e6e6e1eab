//! PhysioNet WFDB records: the header (`.hea`), signal files in formats 212 and 16 (with a byte
//! offset, as the Challenge's `.mat` files use), and MIT-format annotation files (`.atr`).
//!
//! Physical value = (digital − baseline) / gain, with the baseline from the gain field's
//! parentheses or else the ADC zero, as the WFDB library does.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum WfdbError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Format { path: String, message: String },
}

fn io(p: &Path, source: std::io::Error) -> WfdbError {
    WfdbError::Io {
        path: p.display().to_string(),
        source,
    }
}
fn bad(p: &Path, message: impl Into<String>) -> WfdbError {
    WfdbError::Format {
        path: p.display().to_string(),
        message: message.into(),
    }
}

/// One signal of a record, as its header line describes it.
#[derive(Clone, Debug, PartialEq)]
pub struct Signal {
    pub file: String,
    pub format: u32,
    /// Bytes to skip at the start of the signal file (`16+24`).
    pub offset: usize,
    pub gain: f64,
    pub baseline: i32,
    pub units: String,
    pub description: String,
}

/// A record: its name, sampling frequency and signals, with every signal's samples in physical
/// units.
#[derive(Clone, Debug)]
pub struct Record {
    pub name: String,
    pub fs: f64,
    pub signals: Vec<Signal>,
    /// `samples[s][t]`, physical units (NaN where the WFDB invalid value was stored).
    pub samples: Vec<Vec<f64>>,
    /// The header's comment lines (`#…`), without the `#`.
    pub comments: Vec<String>,
}

impl Record {
    /// Index of the first signal whose description is `name` (e.g. `MLII`, `II`).
    pub fn signal(&self, name: &str) -> Option<usize> {
        self.signals.iter().position(|s| s.description == name)
    }
}

/// Read record `path` (the `.hea` path or the record path without extension).
pub fn read_record(path: &Path) -> Result<Record, WfdbError> {
    let hea: PathBuf = if path.extension().is_some_and(|e| e == "hea") {
        path.to_path_buf()
    } else {
        let mut s = path.as_os_str().to_owned();
        s.push(".hea");
        PathBuf::from(s)
    };
    let dir = hea.parent().unwrap_or(Path::new("."));
    let text = std::fs::read_to_string(&hea).map_err(|e| io(&hea, e))?;
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let mut comments = Vec::new();
    let first = loop {
        match lines.next() {
            Some(l) => match l.strip_prefix('#') {
                Some(c) => comments.push(c.trim().to_string()),
                None => break l,
            },
            None => return Err(bad(&hea, "no record line")),
        }
    };
    let f: Vec<&str> = first.split_whitespace().collect();
    if f.len() < 2 || f[0].contains('/') {
        return Err(bad(
            &hea,
            "multi-segment records are not read here; give a segment",
        ));
    }
    let nsig: usize = f[1]
        .parse()
        .map_err(|_| bad(&hea, format!("line 1, number of signals: {:?}", f[1])))?;
    let fs: f64 = match f.get(2) {
        Some(x) => x
            .split('/')
            .next()
            .unwrap_or("")
            .parse()
            .map_err(|_| bad(&hea, format!("line 1, sampling frequency: {x:?}")))?,
        None => 250.0,
    };
    let nsamp: Option<usize> = f.get(3).and_then(|x| x.parse().ok());
    let mut signals = Vec::with_capacity(nsig);
    for (i, l) in lines.by_ref().enumerate() {
        if let Some(c) = l.strip_prefix('#') {
            comments.push(c.trim().to_string());
            continue;
        }
        if signals.len() == nsig {
            break;
        }
        let at = |field: &str, v: &str| bad(&hea, format!("signal line {}, {field}: {v:?}", i + 1));
        let s: Vec<&str> = l.split_whitespace().collect();
        if s.len() < 2 {
            return Err(at("line", l));
        }
        let (format, offset) = match s[1].split_once('+') {
            Some((a, b)) => (a, b.parse().map_err(|_| at("byte offset", b))?),
            None => (s[1], 0usize),
        };
        let format: u32 = format
            .split(['x', ':'])
            .next()
            .unwrap_or("")
            .parse()
            .map_err(|_| at("format", s[1]))?;
        // Gain field: 200, 200/mV, 7247(0)/mV, 1.052e+04/mV.
        let gain_field = s.get(2).copied().unwrap_or("200");
        let (gain_part, units) = match gain_field.split_once('/') {
            Some((g, u)) => (g, u.to_string()),
            None => (gain_field, "mV".to_string()),
        };
        let (gain_text, base_text) = match gain_part.split_once('(') {
            Some((g, b)) => (g, Some(b.trim_end_matches(')'))),
            None => (gain_part, None),
        };
        let mut gain: f64 = gain_text.parse().map_err(|_| at("gain", gain_field))?;
        if gain == 0.0 {
            gain = 200.0;
        }
        let adc_zero: i32 = match s.get(4) {
            Some(z) => z.parse().map_err(|_| at("ADC zero", z))?,
            None => 0,
        };
        let baseline = match base_text {
            Some(b) => b.parse().map_err(|_| at("baseline", b))?,
            None => adc_zero,
        };
        signals.push(Signal {
            file: s[0].to_string(),
            format,
            offset,
            gain,
            baseline,
            units,
            description: if s.len() > 8 {
                s[8..].join(" ")
            } else {
                String::new()
            },
        });
    }
    for l in lines {
        if let Some(c) = l.strip_prefix('#') {
            comments.push(c.trim().to_string());
        }
    }
    if signals.len() != nsig {
        return Err(bad(
            &hea,
            format!("{nsig} signals announced, {} described", signals.len()),
        ));
    }
    // Signals sharing a file are interleaved frame by frame, in header order.
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); nsig];
    let mut done = vec![false; nsig];
    for s0 in 0..nsig {
        if done[s0] {
            continue;
        }
        let group: Vec<usize> = (0..nsig)
            .filter(|&j| signals[j].file == signals[s0].file)
            .collect();
        let sig = &signals[s0];
        if group.iter().any(|&j| signals[j].format != sig.format) {
            return Err(bad(
                &hea,
                format!("{}: signals of one file in different formats", sig.file),
            ));
        }
        let path = dir.join(&sig.file);
        let bytes = std::fs::read(&path).map_err(|e| io(&path, e))?;
        let data = bytes.get(sig.offset..).unwrap_or(&[]);
        let digital: Vec<i32> = match sig.format {
            212 => decode_212(data),
            16 => data
                .chunks_exact(2)
                .map(|c| i32::from(i16::from_le_bytes([c[0], c[1]])))
                .collect(),
            80 => data.iter().map(|&b| i32::from(b) - 128).collect(),
            other => {
                return Err(bad(
                    &path,
                    format!("signal format {other} is not read here (212, 16, 80 are)"),
                ))
            }
        };
        let n = group.len();
        let frames = digital.len() / n;
        let frames = nsamp.map_or(frames, |m| m.min(frames));
        if let Some(m) = nsamp {
            if frames < m {
                return Err(bad(
                    &path,
                    format!("{frames} frames, the header announces {m}"),
                ));
            }
        }
        for (k, &j) in group.iter().enumerate() {
            let s = &signals[j];
            let invalid = if s.format == 212 {
                -2048
            } else {
                i32::from(i16::MIN)
            };
            samples[j] = (0..frames)
                .map(|t| {
                    let d = digital[t * n + k];
                    if d == invalid {
                        f64::NAN
                    } else {
                        f64::from(d - s.baseline) / s.gain
                    }
                })
                .collect();
            done[j] = true;
        }
    }
    Ok(Record {
        name: f[0].to_string(),
        fs,
        signals,
        samples,
        comments,
    })
}

/// Format 212: pairs of 12-bit two's-complement samples in three bytes.
fn decode_212(b: &[u8]) -> Vec<i32> {
    let mut out = Vec::with_capacity(b.len() * 2 / 3);
    let sign = |v: i32| if v & 0x800 != 0 { v - 0x1000 } else { v };
    for c in b.chunks_exact(3) {
        let (b0, b1, b2) = (i32::from(c[0]), i32::from(c[1]), i32::from(c[2]));
        out.push(sign(((b1 & 0x0f) << 8) | b0));
        out.push(sign(((b1 & 0xf0) << 4) | b2));
    }
    out
}

/// One annotation: its sample, its code's symbol, and its aux text (rhythm changes, e.g. `(N`).
#[derive(Clone, Debug, PartialEq)]
pub struct Annotation {
    pub sample: u64,
    pub symbol: &'static str,
    pub aux: String,
}

/// Annotation codes 0..=41 and their symbols (WFDB's `ecgcodes.h`).
const SYMBOLS: [&str; 42] = [
    " ", "N", "L", "R", "a", "V", "F", "J", "A", "S", "E", "j", "/", "Q", "~", "[15]", "|", "[17]",
    "s", "T", "*", "D", "\"", "=", "p", "B", "^", "t", "+", "u", "?", "!", "[", "]", "e", "n", "@",
    "x", "f", "(", ")", "r",
];

impl Annotation {
    /// Whether the annotation labels a beat (the ANSI/AAMI EC57 beat labels).
    pub fn is_beat(&self) -> bool {
        matches!(
            self.symbol,
            "N" | "L"
                | "R"
                | "B"
                | "A"
                | "a"
                | "J"
                | "S"
                | "V"
                | "r"
                | "F"
                | "e"
                | "j"
                | "n"
                | "E"
                | "/"
                | "f"
                | "Q"
                | "?"
        )
    }
}

/// Read an MIT-format annotation file (`100.atr`).
pub fn read_annotations(path: &Path) -> Result<Vec<Annotation>, WfdbError> {
    let b = std::fs::read(path).map_err(|e| io(path, e))?;
    let word = |i: usize| -> Option<u16> { Some(u16::from_le_bytes([*b.get(i)?, *b.get(i + 1)?])) };
    let mut out: Vec<Annotation> = Vec::new();
    let (mut i, mut t) = (0usize, 0u64);
    loop {
        let Some(w) = word(i) else {
            return Err(bad(
                path,
                format!("byte {i}: ends without the end-of-file word"),
            ));
        };
        i += 2;
        let (code, value) = (w >> 10, u64::from(w & 0x3ff));
        match code {
            0 if value == 0 => return Ok(out),
            59 => {
                // SKIP: a 32-bit interval follows, high 16 bits first (PDP-11 order).
                let (Some(hi), Some(lo)) = (word(i), word(i + 2)) else {
                    return Err(bad(path, format!("byte {i}: truncated SKIP")));
                };
                let skip = (i64::from(hi) << 16 | i64::from(lo)) as i32;
                t = (t as i64 + i64::from(skip)) as u64;
                i += 4;
            }
            60..=62 => {} // NUM, SUB, CHN: attributes of the previous annotation, not kept.
            63 => {
                let n = value as usize;
                let text = b
                    .get(i..i + n)
                    .ok_or_else(|| bad(path, format!("byte {i}: truncated AUX")))?;
                if let Some(a) = out.last_mut() {
                    a.aux = String::from_utf8_lossy(text)
                        .trim_end_matches('\0')
                        .to_string();
                }
                i += n + (n & 1);
            }
            c if (c as usize) < SYMBOLS.len() => {
                t += value;
                out.push(Annotation {
                    sample: t,
                    symbol: SYMBOLS[c as usize],
                    aux: String::new(),
                });
            }
            c => return Err(bad(path, format!("byte {}: annotation code {c}", i - 2))),
        }
    }
}
