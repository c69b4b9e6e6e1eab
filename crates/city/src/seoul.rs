//! The Seoul series embedded for first runs with no flags (see `data/SOURCE.txt`).

use crate::feed::{self, AirObs, CsvOptions, FeedError, Ingest, Pollutant, WeatherDay};

/// Hourly Seoul city-wide pollutants, 2018–2022 (gzip).
pub const AIR_GZ: &[u8] = include_bytes!("../data/seoul_air_hourly_2018_2022.csv.gz");
/// Daily Seoul weather, 2016–2025 (gzip).
pub const WEATHER_GZ: &[u8] = include_bytes!("../data/seoul_daily_weather_2016_2025.csv.gz");
pub const AIR_NAME: &str = "seoul_air_hourly_2018_2022.csv";
pub const WEATHER_NAME: &str = "seoul_daily_weather_2016_2025.csv";
pub const STATION: &str = "seoul";

/// The options that read the Seoul air file: one city-wide station, and its NO2 column, which
/// is labelled "이산화탄소" (CO2) but holds NO2 in ppm.
pub fn air_options() -> CsvOptions {
    CsvOptions {
        station: Some(STATION.into()),
        aliases: vec![("이산화탄소".into(), Pollutant::No2)],
    }
}

pub fn air() -> Result<Ingest<AirObs>, FeedError> {
    let bytes = feed::gunzip(AIR_NAME, AIR_GZ)?;
    feed::read_air_csv(AIR_NAME, &bytes, &air_options())
}

pub fn weather() -> Result<Ingest<WeatherDay>, FeedError> {
    let bytes = feed::gunzip(WEATHER_NAME, WEATHER_GZ)?;
    let opts = CsvOptions {
        station: Some(STATION.into()),
        aliases: vec![],
    };
    feed::read_weather_daily_csv(WEATHER_NAME, &bytes, &opts)
}
