//! The smart-city extension (issue 9): personal warnings from health information, weather and
//! air quality.
//!
//! * [`feed`] — hourly pollutants and weather from CSV and AirKorea/KMA-shaped JSON, by file or
//!   HTTP polling, with flags for gaps and implausible values and a quarantine for bad rows.
//! * [`series`] — per-station hourly series and the averaging rules (24-h PM, 8-h O3, 3-h AQHI,
//!   AirKorea's predicted 24-h PM).
//! * [`cai`] — Korea's Comprehensive Air-quality Index from the published breakpoint table.
//! * [`aqhi`] — Canada's Air Quality Health Index.
//! * [`heat`] — the KMA summer feels-like temperature and heat-wave advisory/warning rules.
//! * [`forecast`] — the next-24-hour outlook for pollutants and the next days' maximum temperature.
//! * [`hazards`] — each district's hazards per hour, now and expected from the outlook.
//! * [`evidence`] — exposure–response from federated daily counts: conditional quasi-Poisson
//!   regression with lags, season and day of week; the heat threshold by profile likelihood.
//! * [`quality`] — replaying the rules over years of data: messages per person and coverage.
//! * [`indices`] — all of the above for a station, hour by hour and day by day.
//! * [`rules`] — personal rules over categories and hazards, episodes, quiet hours.
//! * [`poll`] — fetching feeds over HTTP.
//! * [`store`] — the service's SQLite store: registrations, profiles, consent log, outbox.
//! * [`service`] — `medfed city serve`: the HTTPS API, hour processing, webhook delivery.
//! * [`seoul`] — the embedded Seoul series (2018–2022 air, 2016–2025 weather).

pub mod aqhi;
pub mod cai;
pub mod evidence;
pub mod feed;
pub mod forecast;
pub mod hazards;
pub mod heat;
pub mod indices;
pub mod poll;
pub mod quality;
pub mod rules;
pub mod seoul;
pub mod series;
pub mod service;
pub mod store;
