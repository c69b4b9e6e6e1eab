//! Korean geography and demography: 17 provinces, about 250 districts (si-gun-gu), and the
//! province × sex × 5-year age band weights people are drawn from.
//!
//! Shape by province and sex comes from the 2010 census (`data/census2010_age_sex_tidy.csv`); each age
//! band is then rescaled so the national age shares equal the UN WPP 2023 shares
//! (`data/un_wpp2024_korea_age_share_2023.csv`). Sejong (created 2012) is carved out of Chungnam with
//! 0.75 % of the population and Chungnam's shape.

use std::collections::BTreeMap;

const CENSUS: &str = include_str!("../data/census2010_age_sex_tidy.csv");
const SHARES_2023: &str = include_str!("../data/un_wpp2024_korea_age_share_2023.csv");

pub const AGE_BANDS: usize = 18;

/// (code, English name, census code, districts, centroid lat, lon, spread in degrees)
const PROVINCES: [(&str, &str, &str, usize, f64, f64, f64); 17] = [
    ("11", "Seoul", "11", 25, 37.56, 126.98, 0.12),
    ("21", "Busan", "21", 16, 35.18, 129.08, 0.12),
    ("22", "Daegu", "22", 8, 35.87, 128.60, 0.10),
    ("23", "Incheon", "23", 10, 37.46, 126.70, 0.12),
    ("24", "Gwangju", "24", 5, 35.16, 126.85, 0.08),
    ("25", "Daejeon", "25", 5, 36.35, 127.38, 0.08),
    ("26", "Ulsan", "26", 5, 35.54, 129.31, 0.10),
    ("29", "Sejong", "34", 1, 36.48, 127.29, 0.05),
    ("31", "Gyeonggi", "31", 42, 37.41, 127.52, 0.45),
    ("32", "Gangwon", "32", 18, 37.82, 128.16, 0.55),
    ("33", "Chungbuk", "33", 14, 36.64, 127.49, 0.40),
    ("34", "Chungnam", "34", 16, 36.66, 126.67, 0.40),
    ("35", "Jeonbuk", "35", 15, 35.82, 127.15, 0.40),
    ("36", "Jeonnam", "36", 22, 34.82, 126.46, 0.50),
    ("37", "Gyeongbuk", "37", 24, 36.49, 128.89, 0.55),
    ("38", "Gyeongnam", "38", 22, 35.46, 128.21, 0.45),
    ("39", "Jeju", "39", 2, 33.49, 126.50, 0.15),
];

const SEOUL_GU: [&str; 25] = [
    "Jongno-gu",
    "Jung-gu",
    "Yongsan-gu",
    "Seongdong-gu",
    "Gwangjin-gu",
    "Dongdaemun-gu",
    "Jungnang-gu",
    "Seongbuk-gu",
    "Gangbuk-gu",
    "Dobong-gu",
    "Nowon-gu",
    "Eunpyeong-gu",
    "Seodaemun-gu",
    "Mapo-gu",
    "Yangcheon-gu",
    "Gangseo-gu",
    "Guro-gu",
    "Geumcheon-gu",
    "Yeongdeungpo-gu",
    "Dongjak-gu",
    "Gwanak-gu",
    "Seocho-gu",
    "Gangnam-gu",
    "Songpa-gu",
    "Gangdong-gu",
];

#[derive(Debug, Clone, serde::Serialize)]
pub struct Province {
    pub code: String,
    pub name: String,
    pub districts: Vec<usize>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct District {
    /// `location_id` in the CDM (1-based, national).
    pub location_id: i64,
    /// Five-digit code: province code + three digits.
    pub code: String,
    pub name: String,
    pub province: usize,
    pub lat: f64,
    pub lon: f64,
    /// Share of its province's population.
    pub weight: f64,
}

pub struct Geography {
    pub provinces: Vec<Province>,
    pub districts: Vec<District>,
    /// weight[p][sex][band]; sex 0 male, 1 female. Sums to 1 over everything.
    pub weight: Vec<[[f64; AGE_BANDS]; 2]>,
}

fn band_index(label: &str) -> Option<usize> {
    let lo: usize = label
        .trim_end_matches('+')
        .split('-')
        .next()?
        .parse()
        .ok()?;
    Some((lo / 5).min(AGE_BANDS - 1))
}

impl Geography {
    pub fn korea() -> Geography {
        let mut census: BTreeMap<String, [[f64; AGE_BANDS]; 2]> = BTreeMap::new();
        for line in CENSUS.lines().skip(1) {
            let t: Vec<&str> = line.split(',').collect();
            if t.len() < 6 {
                continue;
            }
            let Some(b) = band_index(t[2]) else { continue };
            let e = census
                .entry(t[0].to_string())
                .or_insert([[0.0; AGE_BANDS]; 2]);
            e[0][b] += t[4].parse::<f64>().unwrap_or(0.0);
            e[1][b] += t[5].parse::<f64>().unwrap_or(0.0);
        }
        let mut shares = [0.0; AGE_BANDS];
        for line in SHARES_2023.lines().skip(1) {
            let t: Vec<&str> = line.split(',').collect();
            if let (Some(b), Ok(v)) = (band_index(t[0]), t[1].parse::<f64>()) {
                shares[b] = v;
            }
        }
        let mut weight: Vec<[[f64; AGE_BANDS]; 2]> = Vec::new();
        for (code, _, census_code, ..) in PROVINCES {
            let mut w = census[census_code];
            let scale = match code {
                "29" => 0.0075,
                "34" => 1.0 - 0.0075 / share_of(&census, "34"),
                _ => 1.0,
            };
            w.iter_mut().flatten().for_each(|x| *x *= scale);
            weight.push(w);
        }
        // Rescale each age band nationally to the 2023 shares.
        for b in 0..AGE_BANDS {
            let band_total: f64 = weight.iter().map(|w| w[0][b] + w[1][b]).sum();
            for w in weight.iter_mut() {
                w[0][b] *= shares[b] / band_total;
                w[1][b] *= shares[b] / band_total;
            }
        }
        let total: f64 = weight.iter().flatten().flatten().sum();
        weight
            .iter_mut()
            .flatten()
            .flatten()
            .for_each(|x| *x /= total);

        let mut provinces = Vec::new();
        let mut districts = Vec::new();
        for (pi, (code, name, _, nd, lat, lon, spread)) in PROVINCES.iter().enumerate() {
            let mut ids = Vec::new();
            let side = (*nd as f64).sqrt().ceil() as usize;
            // Uneven district sizes: weight k-th district by 1/(1 + 0.08 k), a mild Zipf-like spread.
            let raw: Vec<f64> = (0..*nd).map(|k| 1.0 / (1.0 + 0.08 * k as f64)).collect();
            let sum: f64 = raw.iter().sum();
            for k in 0..*nd {
                let (gx, gy) = ((k % side) as f64, (k / side) as f64);
                let off = |g: f64| {
                    if side > 1 {
                        (g / (side - 1) as f64 - 0.5) * 2.0 * spread
                    } else {
                        0.0
                    }
                };
                let dname = if *code == "11" {
                    SEOUL_GU[k].to_string()
                } else {
                    format!("{name}-{:02}", k + 1)
                };
                ids.push(districts.len());
                districts.push(District {
                    location_id: districts.len() as i64 + 1,
                    code: format!("{code}{:03}", (k + 1) * 10),
                    name: dname,
                    province: pi,
                    lat: ((lat + off(gy)) * 1e4).round() / 1e4,
                    lon: ((lon + off(gx)) * 1e4).round() / 1e4,
                    weight: raw[k] / sum,
                });
            }
            provinces.push(Province {
                code: code.to_string(),
                name: name.to_string(),
                districts: ids,
            });
        }
        Geography {
            provinces,
            districts,
            weight,
        }
    }

    /// National share of each age band (after rescaling) — the target the generator is tested against.
    pub fn age_shares(&self) -> [f64; AGE_BANDS] {
        let mut s = [0.0; AGE_BANDS];
        for w in &self.weight {
            for b in 0..AGE_BANDS {
                s[b] += w[0][b] + w[1][b];
            }
        }
        s
    }

    pub fn male_share(&self) -> f64 {
        self.weight.iter().map(|w| w[0].iter().sum::<f64>()).sum()
    }
}

fn share_of(census: &BTreeMap<String, [[f64; AGE_BANDS]; 2]>, code: &str) -> f64 {
    let all: f64 = PROVINCES
        .iter()
        .filter(|p| p.0 != "29")
        .map(|p| census[p.2].iter().flatten().sum::<f64>())
        .sum();
    census[code].iter().flatten().sum::<f64>() / all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn korea_has_17_provinces_and_about_250_districts() {
        let g = Geography::korea();
        assert_eq!(g.provinces.len(), 17);
        assert_eq!(g.districts.len(), 250);
        let total: f64 = g.weight.iter().flatten().flatten().sum();
        assert!((total - 1.0).abs() < 1e-9);
        let s = g.age_shares();
        assert!(
            (s[13] - 0.0635 / 0.9998).abs() < 1e-3,
            "65-69 share {}",
            s[13]
        );
        assert!((g.male_share() - 0.5).abs() < 0.02);
        let seoul: f64 = g.weight[0].iter().flatten().sum();
        assert!((0.17..0.22).contains(&seoul), "Seoul share {seoul}");
    }
}

#[cfg(test)]
mod district_table {
    use super::*;

    /// The district table the surveillance studies name as `kr_sigungu` (embedded in the protocol
    /// crate) is this geography: code, name, province, centroid. `MEDFED_WRITE_GEO=1` rewrites it.
    #[test]
    fn protocol_district_table_is_this_geography() {
        let g = Geography::korea();
        let mut csv = String::from("code,name,province,lat,lon\n");
        for d in &g.districts {
            csv.push_str(&format!(
                "{},{},{},{:.4},{:.4}\n",
                d.code, d.name, g.provinces[d.province].name, d.lat, d.lon
            ));
        }
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../protocol/data/kr_sigungu.csv"
        );
        if std::env::var_os("MEDFED_WRITE_GEO").is_some() {
            std::fs::write(path, &csv).unwrap();
        }
        assert_eq!(std::fs::read_to_string(path).unwrap(), csv);
    }
}
