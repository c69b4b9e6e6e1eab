//! The city service's store (SQLite, `city.db`): registrations, profiles, the consent log,
//! observations, open episodes and the notification outbox.
//!
//! Consent is two-sided. A citizen *registers* with the city (their app's subject id and home
//! district), and their hospital's node sends their *profile* (categories only, in a batch signed
//! by the node). Only a subject with both is ever given to the rules engine. A withdrawal, from
//! either side, deletes the registration, the profile and every message to or about the subject,
//! with `secure_delete` on so that the deleted rows are overwritten in the file; what remains is
//! one line in the consent log (subject, time, "withdrawn") and a tombstone that stops a batch
//! issued before the withdrawal from bringing the profile back.

use crate::feed::{AirObs, Hour, WeatherDay, POLLUTANTS};
use crate::rules::{Episode, Level, Message};
use chrono::NaiveDate;
use rusqlite::{params, Connection, OptionalExtension};
use std::path::Path;

pub struct Store {
    db: Connection,
}

pub type Result<T> = std::result::Result<T, String>;

fn e(x: rusqlite::Error) -> String {
    format!("city.db: {x}")
}

/// A stored profile: categories and age band.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredProfile {
    pub subject: String,
    pub node: String,
    pub categories: Vec<String>,
    pub age_group: Option<String>,
}

/// An outbox row.
#[derive(Clone, Debug, PartialEq)]
pub struct Outgoing {
    pub id: i64,
    pub body: String,
    pub attempts: i64,
}

#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct Counts {
    pub registered: i64,
    pub profiles: i64,
    /// Registered and profiled: the persons the rules see.
    pub eligible: i64,
    pub withdrawn: i64,
    pub pending: i64,
    pub sent: i64,
    pub rejected: i64,
    pub failed: i64,
}

pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS registrations (subject TEXT PRIMARY KEY, district TEXT NOT NULL, at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS profiles (subject TEXT PRIMARY KEY, node TEXT NOT NULL, categories TEXT NOT NULL,
  age_group TEXT, issued_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS tombstones (subject TEXT PRIMARY KEY, at INTEGER NOT NULL, source TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS consent_log (id INTEGER PRIMARY KEY, at INTEGER NOT NULL, subject TEXT NOT NULL,
  event TEXT NOT NULL, source TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS air (district TEXT NOT NULL, hour INTEGER NOT NULL, pm25 REAL, pm10 REAL, o3 REAL,
  no2 REAL, co REAL, so2 REAL, PRIMARY KEY (district, hour));
CREATE TABLE IF NOT EXISTS weather_days (district TEXT NOT NULL, day TEXT NOT NULL, tmax REAL, tavg REAL, rh REAL,
  PRIMARY KEY (district, day));
CREATE TABLE IF NOT EXISTS processed (hour INTEGER PRIMARY KEY);
CREATE TABLE IF NOT EXISTS episodes (district TEXT NOT NULL, rule TEXT NOT NULL, id INTEGER NOT NULL, level TEXT NOT NULL,
  started INTEGER NOT NULL, last_active INTEGER NOT NULL, forecast INTEGER NOT NULL, PRIMARY KEY (district, rule));
CREATE TABLE IF NOT EXISTS outbox (id INTEGER PRIMARY KEY, subject TEXT NOT NULL, rule TEXT NOT NULL,
  episode INTEGER NOT NULL, level TEXT NOT NULL, hour INTEGER NOT NULL, body TEXT NOT NULL,
  status TEXT NOT NULL DEFAULT 'pending', attempts INTEGER NOT NULL DEFAULT 0, next_at INTEGER NOT NULL DEFAULT 0,
  detail TEXT, UNIQUE (subject, rule, episode, level));
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (status, next_at);
";

fn level_name(l: Level) -> &'static str {
    l.name()
}

fn level_parse(s: &str) -> Level {
    match s {
        "warning" => Level::Warning,
        "advisory" => Level::Advisory,
        _ => Level::None,
    }
}

impl Store {
    pub fn open(path: &Path) -> Result<Store> {
        let db = Connection::open(path).map_err(e)?;
        db.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA secure_delete = ON; PRAGMA foreign_keys = ON;",
        )
        .map_err(e)?;
        db.execute_batch(SCHEMA).map_err(e)?;
        Ok(Store { db })
    }

    /// A citizen's registration (their consent at the city). A new registration after a
    /// withdrawal is a new consent: the tombstone goes.
    pub fn register(&mut self, subject: &str, district: &str, at: i64) -> Result<()> {
        let tx = self.db.transaction().map_err(e)?;
        tx.execute(
            "INSERT INTO registrations (subject, district, at) VALUES (?1, ?2, ?3)
             ON CONFLICT (subject) DO UPDATE SET district = excluded.district",
            params![subject, district, at],
        )
        .map_err(e)?;
        tx.execute(
            "DELETE FROM tombstones WHERE subject = ?1",
            params![subject],
        )
        .map_err(e)?;
        tx.execute(
            "INSERT INTO consent_log (at, subject, event, source) VALUES (?1, ?2, 'registered', 'citizen')",
            params![at, subject],
        )
        .map_err(e)?;
        tx.commit().map_err(e)
    }

    /// Stores a profile from a node's batch, unless the subject withdrew: at the city (then only a
    /// new registration by the citizen lifts it), or at the hospital after the batch was issued.
    /// Returns whether it was stored. Times are Unix seconds.
    pub fn put_profile(&mut self, p: &StoredProfile, issued_at: i64) -> Result<bool> {
        let dead: Option<(i64, String)> = self
            .db
            .query_row(
                "SELECT at, source FROM tombstones WHERE subject = ?1",
                params![p.subject],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(e)?;
        if dead.is_some_and(|(at, source)| source == "citizen" || at >= issued_at) {
            return Ok(false);
        }
        let tx = self.db.transaction().map_err(e)?;
        tx.execute(
            "INSERT INTO profiles (subject, node, categories, age_group, issued_at) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (subject) DO UPDATE SET node = excluded.node, categories = excluded.categories,
               age_group = excluded.age_group, issued_at = excluded.issued_at
             WHERE excluded.issued_at >= profiles.issued_at",
            params![p.subject, p.node, p.categories.join(","), p.age_group, issued_at],
        )
        .map_err(e)?;
        tx.execute(
            "DELETE FROM tombstones WHERE subject = ?1",
            params![p.subject],
        )
        .map_err(e)?;
        tx.execute(
            "INSERT INTO consent_log (at, subject, event, source) VALUES (?1, ?2, 'profile', ?3)",
            params![issued_at, p.subject, p.node],
        )
        .map_err(e)?;
        tx.commit().map_err(e)?;
        Ok(true)
    }

    /// Deletes everything about a subject and leaves a tombstone. Returns whether anything was
    /// held.
    pub fn withdraw(&mut self, subject: &str, at: i64, source: &str) -> Result<bool> {
        let tx = self.db.transaction().map_err(e)?;
        let mut n = 0;
        for sql in [
            "DELETE FROM registrations WHERE subject = ?1",
            "DELETE FROM profiles WHERE subject = ?1",
            "DELETE FROM outbox WHERE subject = ?1",
        ] {
            n += tx.execute(sql, params![subject]).map_err(e)?;
        }
        tx.execute(
            "INSERT INTO tombstones (subject, at, source) VALUES (?1, ?2, ?3)
             ON CONFLICT (subject) DO UPDATE SET at = excluded.at, source = excluded.source",
            params![subject, at, source],
        )
        .map_err(e)?;
        tx.execute(
            "INSERT INTO consent_log (at, subject, event, source) VALUES (?1, ?2, 'withdrawn', ?3)",
            params![at, subject, source],
        )
        .map_err(e)?;
        tx.commit().map_err(e)?;
        Ok(n > 0)
    }

    /// Subjects with both a registration and a profile: (subject, district, categories).
    pub fn eligible(&self) -> Result<Vec<(String, String, Vec<String>)>> {
        let mut st = self
            .db
            .prepare(
                "SELECT r.subject, r.district, p.categories FROM registrations r JOIN profiles p USING (subject) ORDER BY r.subject",
            )
            .map_err(e)?;
        let rows = st
            .query_map([], |r| {
                let cats: String = r.get(2)?;
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    cats.split(',')
                        .filter(|s| !s.is_empty())
                        .map(String::from)
                        .collect(),
                ))
            })
            .map_err(e)?;
        rows.collect::<std::result::Result<_, _>>().map_err(e)
    }

    /// One subject's state: (registered district, profile).
    pub fn subject(&self, subject: &str) -> Result<(Option<String>, Option<StoredProfile>)> {
        let d = self
            .db
            .query_row(
                "SELECT district FROM registrations WHERE subject = ?1",
                params![subject],
                |r| r.get(0),
            )
            .optional()
            .map_err(e)?;
        let p = self
            .db
            .query_row(
                "SELECT subject, node, categories, age_group FROM profiles WHERE subject = ?1",
                params![subject],
                |r| {
                    let cats: String = r.get(2)?;
                    Ok(StoredProfile {
                        subject: r.get(0)?,
                        node: r.get(1)?,
                        categories: cats
                            .split(',')
                            .filter(|s| !s.is_empty())
                            .map(String::from)
                            .collect(),
                        age_group: r.get(3)?,
                    })
                },
            )
            .optional()
            .map_err(e)?;
        Ok((d, p))
    }

    /// Every column of the profiles table, for checking what the city holds.
    pub fn profile_columns(&self) -> Result<Vec<String>> {
        let st = self
            .db
            .prepare("SELECT * FROM profiles LIMIT 0")
            .map_err(e)?;
        Ok(st.column_names().iter().map(|s| s.to_string()).collect())
    }

    /// The consent log: (at, subject, event, source).
    pub fn consent_log(&self) -> Result<Vec<(i64, String, String, String)>> {
        let mut st = self
            .db
            .prepare("SELECT at, subject, event, source FROM consent_log ORDER BY id")
            .map_err(e)?;
        let rows = st
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .map_err(e)?;
        rows.collect::<std::result::Result<_, _>>().map_err(e)
    }

    /// Stores observations (a later reading of the same district and hour replaces the earlier).
    pub fn put_air(&mut self, obs: &[AirObs]) -> Result<()> {
        let tx = self.db.transaction().map_err(e)?;
        {
            let mut st = tx
                .prepare(
                    "INSERT OR REPLACE INTO air (district, hour, pm25, pm10, o3, no2, co, so2) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )
                .map_err(e)?;
            for o in obs {
                let v = o.values;
                st.execute(params![
                    o.station, o.hour.0, v[0], v[1], v[2], v[3], v[4], v[5]
                ])
                .map_err(e)?;
            }
        }
        tx.commit().map_err(e)
    }

    /// A district's observations from `from` on.
    pub fn air_since(&self, district: &str, from: Hour) -> Result<Vec<AirObs>> {
        let mut st = self
            .db
            .prepare("SELECT hour, pm25, pm10, o3, no2, co, so2 FROM air WHERE district = ?1 AND hour >= ?2 ORDER BY hour")
            .map_err(e)?;
        let rows = st
            .query_map(params![district, from.0], |r| {
                let mut values = [None; 6];
                for p in POLLUTANTS {
                    values[p.index()] = r.get(1 + p.index())?;
                }
                Ok(AirObs {
                    station: district.to_string(),
                    hour: Hour(r.get(0)?),
                    values,
                })
            })
            .map_err(e)?;
        rows.collect::<std::result::Result<_, _>>().map_err(e)
    }

    pub fn districts(&self) -> Result<Vec<String>> {
        let mut st = self
            .db
            .prepare("SELECT DISTINCT district FROM air ORDER BY district")
            .map_err(e)?;
        let rows = st.query_map([], |r| r.get(0)).map_err(e)?;
        rows.collect::<std::result::Result<_, _>>().map_err(e)
    }

    /// Hours with observations that have not been processed, in order.
    pub fn unprocessed_hours(&self) -> Result<Vec<Hour>> {
        let mut st = self
            .db
            .prepare("SELECT DISTINCT hour FROM air WHERE hour NOT IN (SELECT hour FROM processed) ORDER BY hour")
            .map_err(e)?;
        let rows = st.query_map([], |r| Ok(Hour(r.get(0)?))).map_err(e)?;
        rows.collect::<std::result::Result<_, _>>().map_err(e)
    }

    /// The last hour processed.
    pub fn last_processed(&self) -> Result<Option<Hour>> {
        let h: Option<i64> = self
            .db
            .query_row("SELECT MAX(hour) FROM processed", [], |r| r.get(0))
            .map_err(e)?;
        Ok(h.map(Hour))
    }

    pub fn put_weather_days(&mut self, days: &[WeatherDay]) -> Result<()> {
        let tx = self.db.transaction().map_err(e)?;
        for d in days {
            tx.execute(
                "INSERT OR REPLACE INTO weather_days (district, day, tmax, tavg, rh) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![d.station, d.date.to_string(), d.tmax_c, d.tavg_c, d.rh_pct],
            )
            .map_err(e)?;
        }
        tx.commit().map_err(e)
    }

    /// A district's daily weather from `from` to `to`, inclusive.
    pub fn weather_days_between(
        &self,
        district: &str,
        from: NaiveDate,
        to: NaiveDate,
    ) -> Result<Vec<WeatherDay>> {
        let mut st = self
            .db
            .prepare(
                "SELECT day, tmax, tavg, rh FROM weather_days WHERE district = ?1 AND day BETWEEN ?2 AND ?3 ORDER BY day",
            )
            .map_err(e)?;
        let rows = st
            .query_map(params![district, from.to_string(), to.to_string()], |r| {
                let day: String = r.get(0)?;
                Ok((day, r.get(1)?, r.get(2)?, r.get(3)?))
            })
            .map_err(e)?;
        let mut out = Vec::new();
        for row in rows {
            let (day, tmax, tavg, rh): (String, Option<f64>, Option<f64>, Option<f64>) =
                row.map_err(e)?;
            let date = NaiveDate::parse_from_str(&day, "%Y-%m-%d")
                .map_err(|x| format!("city.db: weather day {day}: {x}"))?;
            out.push(WeatherDay {
                station: district.into(),
                date,
                tmax_c: tmax,
                tmin_c: None,
                tavg_c: tavg,
                rh_pct: rh,
                precip_mm: None,
            });
        }
        Ok(out)
    }

    /// Records an hour's outcome in one transaction: the messages into the outbox, the open
    /// episodes, and the hour as processed. A message already in the outbox (the same subject,
    /// rule, episode and level) is not added twice.
    pub fn commit_hour(
        &mut self,
        hour: Hour,
        messages: &[(Message, String)],
        episodes: &[(String, String, Episode)],
    ) -> Result<usize> {
        let tx = self.db.transaction().map_err(e)?;
        let mut added = 0;
        {
            let mut st = tx
                .prepare(
                    "INSERT OR IGNORE INTO outbox (subject, rule, episode, level, hour, body) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )
                .map_err(e)?;
            for (m, body) in messages {
                added += st
                    .execute(params![
                        m.subject,
                        m.rule,
                        m.episode as i64,
                        level_name(m.level),
                        m.hour.0,
                        body
                    ])
                    .map_err(e)?;
            }
        }
        tx.execute("DELETE FROM episodes", []).map_err(e)?;
        for (d, r, ep) in episodes {
            tx.execute(
                "INSERT INTO episodes (district, rule, id, level, started, last_active, forecast) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![d, r, ep.id as i64, level_name(ep.level), ep.started.0, ep.last_active.0, ep.forecast as i64],
            )
            .map_err(e)?;
        }
        tx.execute(
            "INSERT OR IGNORE INTO processed (hour) VALUES (?1)",
            params![hour.0],
        )
        .map_err(e)?;
        tx.commit().map_err(e)?;
        Ok(added)
    }

    pub fn episodes(&self) -> Result<Vec<(String, String, Episode)>> {
        let mut st = self
            .db
            .prepare(
                "SELECT district, rule, id, level, started, last_active, forecast FROM episodes",
            )
            .map_err(e)?;
        let rows = st
            .query_map([], |r| {
                let level: String = r.get(3)?;
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    Episode {
                        id: r.get::<_, i64>(2)? as u64,
                        level: level_parse(&level),
                        started: Hour(r.get(4)?),
                        last_active: Hour(r.get(5)?),
                        forecast: r.get::<_, i64>(6)? != 0,
                    },
                ))
            })
            .map_err(e)?;
        rows.collect::<std::result::Result<_, _>>().map_err(e)
    }

    /// What each subject was told: (subject, rule, episode, level), for restoring the engine.
    pub fn told(&self) -> Result<Vec<(String, String, u64, Level)>> {
        let mut st = self
            .db
            .prepare("SELECT subject, rule, episode, level FROM outbox")
            .map_err(e)?;
        let rows = st
            .query_map([], |r| {
                let level: String = r.get(3)?;
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get::<_, i64>(2)? as u64,
                    level_parse(&level),
                ))
            })
            .map_err(e)?;
        rows.collect::<std::result::Result<_, _>>().map_err(e)
    }

    /// Pending messages due by `now` (ms).
    pub fn due(&self, now: i64, limit: usize) -> Result<Vec<Outgoing>> {
        let mut st = self
            .db
            .prepare("SELECT id, body, attempts FROM outbox WHERE status = 'pending' AND next_at <= ?1 ORDER BY id LIMIT ?2")
            .map_err(e)?;
        let rows = st
            .query_map(params![now, limit as i64], |r| {
                Ok(Outgoing {
                    id: r.get(0)?,
                    body: r.get(1)?,
                    attempts: r.get(2)?,
                })
            })
            .map_err(e)?;
        rows.collect::<std::result::Result<_, _>>().map_err(e)
    }

    /// Marks a delivery attempt: `status` is sent, pending (retry at `next_at`), rejected or failed.
    pub fn mark(&self, id: i64, status: &str, next_at: i64, detail: &str) -> Result<()> {
        self.db
            .execute(
                "UPDATE outbox SET status = ?2, attempts = attempts + 1, next_at = ?3, detail = ?4 WHERE id = ?1",
                params![id, status, next_at, detail],
            )
            .map_err(e)?;
        Ok(())
    }

    pub fn counts(&self) -> Result<Counts> {
        let one =
            |sql: &str| -> Result<i64> { self.db.query_row(sql, [], |r| r.get(0)).map_err(e) };
        let status = |s: &str| -> Result<i64> {
            self.db
                .query_row(
                    "SELECT COUNT(*) FROM outbox WHERE status = ?1",
                    params![s],
                    |r| r.get(0),
                )
                .map_err(e)
        };
        Ok(Counts {
            registered: one("SELECT COUNT(*) FROM registrations")?,
            profiles: one("SELECT COUNT(*) FROM profiles")?,
            eligible: one("SELECT COUNT(*) FROM registrations JOIN profiles USING (subject)")?,
            withdrawn: one("SELECT COUNT(*) FROM tombstones")?,
            pending: status("pending")?,
            sent: status("sent")?,
            rejected: status("rejected")?,
            failed: status("failed")?,
        })
    }

    /// Every outbox body with its status, for reports and tests.
    pub fn outbox(&self) -> Result<Vec<(String, String, String)>> {
        let mut st = self
            .db
            .prepare("SELECT subject, status, body FROM outbox ORDER BY id")
            .map_err(e)?;
        let rows = st
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .map_err(e)?;
        rows.collect::<std::result::Result<_, _>>().map_err(e)
    }
}
