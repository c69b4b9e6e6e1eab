//! Where an event happened, for the statistics: the nearest of Seoul's 25 districts (gu) by
//! centroid, with the names the synthetic population uses, or "outside Seoul" beyond 15 km of all.

/// (name, centroid latitude, longitude): approximate centroids of the district areas.
pub const SEOUL_GU: [(&str, f64, f64); 25] = [
    ("Jongno-gu", 37.5945, 126.9770),
    ("Jung-gu", 37.5601, 126.9960),
    ("Yongsan-gu", 37.5311, 126.9810),
    ("Seongdong-gu", 37.5506, 127.0410),
    ("Gwangjin-gu", 37.5467, 127.0857),
    ("Dongdaemun-gu", 37.5838, 127.0507),
    ("Jungnang-gu", 37.5977, 127.0929),
    ("Seongbuk-gu", 37.6058, 127.0175),
    ("Gangbuk-gu", 37.6469, 127.0147),
    ("Dobong-gu", 37.6691, 127.0324),
    ("Nowon-gu", 37.6525, 127.0750),
    ("Eunpyeong-gu", 37.6190, 126.9270),
    ("Seodaemun-gu", 37.5778, 126.9390),
    ("Mapo-gu", 37.5593, 126.9080),
    ("Yangcheon-gu", 37.5247, 126.8555),
    ("Gangseo-gu", 37.5612, 126.8228),
    ("Guro-gu", 37.4945, 126.8560),
    ("Geumcheon-gu", 37.4605, 126.9008),
    ("Yeongdeungpo-gu", 37.5223, 126.9101),
    ("Dongjak-gu", 37.4989, 126.9516),
    ("Gwanak-gu", 37.4673, 126.9453),
    ("Seocho-gu", 37.4733, 127.0312),
    ("Gangnam-gu", 37.4966, 127.0630),
    ("Songpa-gu", 37.5048, 127.1144),
    ("Gangdong-gu", 37.5502, 127.1470),
];

/// The district of a position.
pub fn district(lat: f64, lon: f64) -> &'static str {
    let km = |(la, lo): (f64, f64)| {
        let dy = (lat - la) * 111.0;
        let dx = (lon - lo) * 111.0 * la.to_radians().cos();
        (dx * dx + dy * dy).sqrt()
    };
    SEOUL_GU
        .iter()
        .map(|&(n, la, lo)| (n, km((la, lo))))
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .filter(|&(_, d)| d <= 15.0)
        .map_or("outside Seoul", |(n, _)| n)
}

#[cfg(test)]
mod tests {
    #[test]
    fn positions_fall_in_their_districts() {
        // Gyeongbokgung, COEX, Gimpo airport, Busan.
        assert_eq!(super::district(37.5796, 126.9770), "Jongno-gu");
        assert_eq!(super::district(37.5116, 127.0594), "Gangnam-gu");
        assert_eq!(super::district(37.5587, 126.7945), "Gangseo-gu");
        assert_eq!(super::district(35.1796, 129.0756), "outside Seoul");
    }
}
