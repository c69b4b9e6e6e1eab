//! Parsing one CSV field into a typed CDM value, and the Arrow column builders that hold them.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, Date32Builder, Float64Builder, Int64Builder, StringBuilder,
    TimestampMicrosecondBuilder,
};
use chrono::{Datelike, NaiveDate};

use crate::spec::CdmType;

/// Days from 0001-01-01 (chrono's CE day 1) to 1970-01-01.
const UNIX_EPOCH_CE_DAYS: i32 = 719_163;

/// A parsed field value. `Null` only for empty input (or `NA`/`NULL` in non-text fields).
#[derive(Debug, Clone, PartialEq)]
pub enum Value<'a> {
    Null,
    Int(i64),
    Float(f64),
    /// Days since 1970-01-01.
    Date(i32),
    /// Microseconds since 1970-01-01T00:00:00.
    Timestamp(i64),
    Text(&'a str),
}

/// Parse `raw` as `ty`. The error is a short reason suitable for a quarantine record.
pub fn parse_value(raw: &str, ty: CdmType) -> Result<Value<'_>, String> {
    let s = raw.trim();
    if s.is_empty() {
        return Ok(Value::Null);
    }
    if !matches!(ty, CdmType::Varchar(_)) && (s == "NA" || s.eq_ignore_ascii_case("null")) {
        return Ok(Value::Null);
    }
    match ty {
        CdmType::Integer => parse_int(s).map(Value::Int),
        CdmType::Float => s
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite())
            .map(Value::Float)
            .ok_or_else(|| format!("'{}' is not a number", clip(s))),
        // Some exports write DATE columns as timestamps ("2005-05-07 00:00:00"); the date part is the value.
        CdmType::Date if s.len() > 10 && matches!(s.as_bytes()[10], b' ' | b'T') => {
            parse_datetime(s).map(|us| Value::Date(us.div_euclid(86_400_000_000) as i32))
        }
        CdmType::Date => parse_date(s).map(Value::Date),
        CdmType::Datetime => parse_datetime(s).map(Value::Timestamp),
        CdmType::Varchar(max) => {
            if let Some(max) = max {
                let n = raw.chars().count();
                if n > max {
                    return Err(format!("text of {n} characters exceeds varchar({max})"));
                }
            }
            Ok(Value::Text(raw))
        }
    }
}

fn clip(s: &str) -> String {
    if s.chars().count() > 40 {
        format!("{}…", s.chars().take(40).collect::<String>())
    } else {
        s.to_string()
    }
}

fn parse_int(s: &str) -> Result<i64, String> {
    if let Ok(v) = s.parse::<i64>() {
        return Ok(v);
    }
    // Exports from tools that hold ids as DOUBLE write "123.0"; accept integral values only.
    match s.parse::<f64>() {
        Ok(f) if f.is_finite() && f.fract() == 0.0 && f.abs() < 9.0e15 => Ok(f as i64),
        _ => Err(format!("'{}' is not an integer", clip(s))),
    }
}

fn digits(b: &[u8]) -> Option<u32> {
    let mut v = 0u32;
    for &c in b {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v * 10 + (c - b'0') as u32;
    }
    Some(v)
}

/// `YYYY-MM-DD` or `YYYYMMDD` → days since the Unix epoch. Years outside 1800..=2200 are refused as
/// implausible for clinical data.
pub fn parse_date(s: &str) -> Result<i32, String> {
    let b = s.as_bytes();
    let (y, m, d) = match b.len() {
        10 if (b[4] == b'-' && b[7] == b'-') || (b[4] == b'/' && b[7] == b'/') => {
            (digits(&b[0..4]), digits(&b[5..7]), digits(&b[8..10]))
        }
        8 => (digits(&b[0..4]), digits(&b[4..6]), digits(&b[6..8])),
        _ => (None, None, None),
    };
    let (Some(y), Some(m), Some(d)) = (y, m, d) else {
        return Err(format!(
            "'{}' is not a date (YYYY-MM-DD or YYYYMMDD)",
            clip(s)
        ));
    };
    if !(1800..=2200).contains(&y) {
        return Err(format!("date '{s}' has implausible year {y}"));
    }
    NaiveDate::from_ymd_opt(y as i32, m, d)
        .map(|nd| nd.num_days_from_ce() - UNIX_EPOCH_CE_DAYS)
        .ok_or_else(|| format!("'{s}' is not a valid calendar date"))
}

/// `YYYY-MM-DD[ T]HH:MM[:SS[.ffffff]][Z]`, or a bare date (midnight) → µs since the Unix epoch.
pub fn parse_datetime(s: &str) -> Result<i64, String> {
    let s = s.strip_suffix('Z').unwrap_or(s);
    let (date_part, time_part) = match s.find([' ', 'T']) {
        Some(i) => (&s[..i], Some(s[i + 1..].trim())),
        None => (s, None),
    };
    let days = parse_date(date_part)? as i64;
    let mut micros = 0i64;
    if let Some(t) = time_part.filter(|t| !t.is_empty()) {
        let (hms, frac) = match t.split_once('.') {
            Some((a, f)) => (a, Some(f)),
            None => (t, None),
        };
        let parts: Vec<&str> = hms.split(':').collect();
        let bad = || format!("'{}' is not a date-time", clip(s));
        if parts.len() < 2 || parts.len() > 3 {
            return Err(bad());
        }
        let h = digits(parts[0].as_bytes())
            .filter(|&h| h < 24 && !parts[0].is_empty())
            .ok_or_else(bad)?;
        let mi = digits(parts[1].as_bytes())
            .filter(|&m| m < 60 && parts[1].len() == 2)
            .ok_or_else(bad)?;
        let sec = match parts.get(2) {
            Some(p) => digits(p.as_bytes())
                .filter(|&x| x < 61 && p.len() == 2)
                .ok_or_else(bad)?,
            None => 0,
        };
        micros = ((h as i64 * 60 + mi as i64) * 60 + sec as i64) * 1_000_000;
        if let Some(f) = frac {
            let f = &f[..f.len().min(6)];
            let v = digits(f.as_bytes())
                .filter(|_| !f.is_empty())
                .ok_or_else(bad)? as i64;
            micros += v * 10i64.pow(6 - f.len() as u32);
        }
    }
    Ok(days * 86_400_000_000 + micros)
}

/// An Arrow builder for one CDM column.
pub enum ColumnBuilder {
    Int(Int64Builder),
    Float(Float64Builder),
    Date(Date32Builder),
    Timestamp(TimestampMicrosecondBuilder),
    Text(StringBuilder),
}

impl ColumnBuilder {
    pub fn new(ty: CdmType, capacity: usize) -> ColumnBuilder {
        match ty {
            CdmType::Integer => ColumnBuilder::Int(Int64Builder::with_capacity(capacity)),
            CdmType::Float => ColumnBuilder::Float(Float64Builder::with_capacity(capacity)),
            CdmType::Date => ColumnBuilder::Date(Date32Builder::with_capacity(capacity)),
            CdmType::Datetime => {
                ColumnBuilder::Timestamp(TimestampMicrosecondBuilder::with_capacity(capacity))
            }
            CdmType::Varchar(_) => {
                ColumnBuilder::Text(StringBuilder::with_capacity(capacity, capacity * 8))
            }
        }
    }

    /// Append a value already checked against this column's type.
    pub fn append(&mut self, v: &Value) {
        match (self, v) {
            (ColumnBuilder::Int(b), Value::Int(x)) => b.append_value(*x),
            (ColumnBuilder::Float(b), Value::Float(x)) => b.append_value(*x),
            (ColumnBuilder::Date(b), Value::Date(x)) => b.append_value(*x),
            (ColumnBuilder::Timestamp(b), Value::Timestamp(x)) => b.append_value(*x),
            (ColumnBuilder::Text(b), Value::Text(x)) => b.append_value(x),
            (b, _) => b.append_null(),
        }
    }

    pub fn append_null(&mut self) {
        match self {
            ColumnBuilder::Int(b) => b.append_null(),
            ColumnBuilder::Float(b) => b.append_null(),
            ColumnBuilder::Date(b) => b.append_null(),
            ColumnBuilder::Timestamp(b) => b.append_null(),
            ColumnBuilder::Text(b) => b.append_null(),
        }
    }

    pub fn finish(&mut self) -> ArrayRef {
        match self {
            ColumnBuilder::Int(b) => Arc::new(b.finish()),
            ColumnBuilder::Float(b) => Arc::new(b.finish()),
            ColumnBuilder::Date(b) => Arc::new(b.finish()),
            ColumnBuilder::Timestamp(b) => Arc::new(b.finish()),
            ColumnBuilder::Text(b) => Arc::new(b.finish()),
        }
    }
}

/// Days since the Unix epoch for a calendar date (for generators and tests).
pub fn epoch_days(date: NaiveDate) -> i32 {
    date.num_days_from_ce() - UNIX_EPOCH_CE_DAYS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_in_both_formats() {
        assert_eq!(parse_date("1970-01-01"), Ok(0));
        assert_eq!(parse_date("19700102"), Ok(1));
        assert_eq!(parse_date("2024-02-29"), Ok(19782));
        assert!(parse_date("2023-02-29")
            .unwrap_err()
            .contains("not a valid calendar date"));
        assert!(parse_date("31/12/2020").is_err());
        assert!(parse_date("0200-01-01")
            .unwrap_err()
            .contains("implausible"));
    }

    #[test]
    fn datetimes() {
        assert_eq!(parse_datetime("1970-01-01 00:00:01"), Ok(1_000_000));
        assert_eq!(parse_datetime("1970-01-01T00:01:00.5Z"), Ok(60_500_000));
        assert_eq!(parse_datetime("1970-01-02"), Ok(86_400_000_000));
        assert!(parse_datetime("1970-01-01 25:00:00").is_err());
    }

    #[test]
    fn integers_and_nulls() {
        assert_eq!(parse_value("42", CdmType::Integer), Ok(Value::Int(42)));
        assert_eq!(parse_value("42.0", CdmType::Integer), Ok(Value::Int(42)));
        assert!(parse_value("42.5", CdmType::Integer).is_err());
        assert_eq!(parse_value("", CdmType::Integer), Ok(Value::Null));
        assert_eq!(parse_value("NA", CdmType::Float), Ok(Value::Null));
        assert_eq!(
            parse_value("NA", CdmType::Varchar(Some(5))),
            Ok(Value::Text("NA"))
        );
        assert!(parse_value("abcdef", CdmType::Varchar(Some(5))).is_err());
        assert!(parse_value("inf", CdmType::Float).is_err());
        assert_eq!(
            parse_value("1970-01-02 00:00:00", CdmType::Date),
            Ok(Value::Date(1))
        );
        assert!(parse_value("1970-01-02 99:00:00", CdmType::Date).is_err());
    }
}
