//! Personal warning rules: vulnerability categories × hazards, with episodes, quiet hours and one
//! message per episode and level.
//!
//! A [`Rule`] names the categories it is for, a hazard, and the values at which it gives an
//! advisory and a warning. Each hour the service computes every district's [`Hazards`] (the value
//! now, and the value expected in the next 24 hours from the outlook) and calls
//! [`Engine::update`]. For each district and rule the engine keeps an *episode*: it starts when
//! the rule's level first rises above none, may escalate from advisory to warning, and ends after
//! [`EPISODE_END_HOURS`] hours at none. A person with a matching category gets one message when an
//! episode reaches them and one more if it escalates: never a second message for the same level
//! of the same episode. In quiet hours advisories wait (and are not sent at all if the episode ends
//! first: counted as expired); warnings go out at once.
//!
//! Persons are held compactly (district, category bits, and per rule the last episode and level
//! they were told of): ten million take 1.8 GB, most of it their subject ids (measured by
//! `medfed city bench`, docs/BENCHMARKS.md).

use crate::feed::Hour;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// The categories a node may send to the city service, in bit order (one list, in the protocol).
pub use medfed_protocol::profiles::CITY_CATEGORIES as CATEGORIES;

pub fn category_bit(name: &str) -> Option<u8> {
    CATEGORIES.iter().position(|c| *c == name).map(|i| 1u8 << i)
}

/// Hours at no level that end an episode.
pub const EPISODE_END_HOURS: i64 = 12;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Hazard {
    /// 24-hour mean PM2.5, µg/m³.
    Pm25,
    /// 24-hour mean PM10, µg/m³.
    Pm10,
    /// 1-hour O3, ppm.
    O3,
    /// KMA heat level: 1 advisory, 2 warning.
    Heat,
}

pub const HAZARDS: [Hazard; 4] = [Hazard::Pm25, Hazard::Pm10, Hazard::O3, Hazard::Heat];

impl Hazard {
    pub fn name(self) -> &'static str {
        match self {
            Hazard::Pm25 => "pm25",
            Hazard::Pm10 => "pm10",
            Hazard::O3 => "o3",
            Hazard::Heat => "heat",
        }
    }
}

pub use crate::heat::Level;

/// One personal rule.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub name: String,
    pub categories: Vec<String>,
    pub hazard: Hazard,
    /// The value at or above which the rule advises; `None`: it never advises.
    pub advisory: Option<f64>,
    /// The value at or above which it warns.
    pub warning: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    #[serde(default)]
    quiet_hours: Option<[u32; 2]>,
    rule: Vec<Rule>,
}

/// The rules and quiet hours in force.
#[derive(Clone, Debug, PartialEq)]
pub struct RuleSet {
    pub rules: Vec<Rule>,
    /// Quiet from the first clock hour to the second (KST), e.g. `[22, 7]`.
    pub quiet: Option<[u32; 2]>,
    masks: Vec<u8>,
}

/// The default rules (`default_rules.toml`): the CAI's "unhealthy" (36 µg/m³ PM2.5, 81 PM10,
/// 0.091 ppm O3) and "very unhealthy" (76, 151, 0.151) bands for the groups the Ministry of
/// Environment names as sensitive, and the KMA heat levels for the elderly, people with heart
/// disease or diabetes, and young children.
pub const DEFAULT_RULES: &str = include_str!("default_rules.toml");

impl RuleSet {
    pub fn parse(text: &str) -> Result<RuleSet, String> {
        let f: RuleFile = toml::from_str(text).map_err(|e| format!("rules: {e}"))?;
        let mut masks = Vec::new();
        for (i, r) in f.rule.iter().enumerate() {
            let at = |m: String| format!("rules: rule[{i}] ({}): {m}", r.name);
            let mut mask = 0u8;
            for c in &r.categories {
                mask |= category_bit(c)
                    .ok_or_else(|| at(format!("unknown category {c:?} (one of {CATEGORIES:?})")))?;
            }
            if mask == 0 {
                return Err(at("no categories".into()));
            }
            match (r.advisory, r.warning) {
                (None, None) => return Err(at("neither an advisory nor a warning value".into())),
                (Some(a), Some(w)) if a > w => {
                    return Err(at(format!("advisory {a} above warning {w}")))
                }
                _ => {}
            }
            if f.rule[..i].iter().any(|o| o.name == r.name) {
                return Err(at("a second rule of this name".into()));
            }
            masks.push(mask);
        }
        if let Some([a, b]) = f.quiet_hours {
            if a > 23 || b > 23 {
                return Err("rules: quiet_hours are clock hours 0–23".into());
            }
        }
        if f.rule.len() > 64 {
            return Err("rules: at most 64 rules".into());
        }
        Ok(RuleSet {
            rules: f.rule,
            quiet: f.quiet_hours,
            masks,
        })
    }

    pub fn standard() -> RuleSet {
        RuleSet::parse(DEFAULT_RULES).expect("the default rules parse")
    }

    pub fn level(&self, rule: usize, value: f64) -> Level {
        let r = &self.rules[rule];
        if r.warning.is_some_and(|w| value >= w) {
            Level::Warning
        } else if r.advisory.is_some_and(|a| value >= a) {
            Level::Advisory
        } else {
            Level::None
        }
    }

    /// Whether the hour (named by its end) starts in quiet hours.
    pub fn is_quiet(&self, h: Hour) -> bool {
        match self.quiet {
            None => false,
            Some([a, b]) => {
                let c = h.start_clock();
                if a <= b {
                    (a..b).contains(&c)
                } else {
                    c >= a || c < b
                }
            }
        }
    }

    pub fn mask(&self, rule: usize) -> u8 {
        self.masks[rule]
    }
}

/// A district's hazards in one hour: the value now and the largest value expected over the
/// outlook (at least the value now). `None` when not known.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Hazards {
    pub now: [Option<f64>; 4],
    pub expected: [Option<f64>; 4],
}

impl Hazards {
    pub fn get(&self, h: Hazard) -> (Option<f64>, Option<f64>) {
        (self.now[h as usize], self.expected[h as usize])
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Episode {
    pub id: u64,
    pub level: Level,
    pub started: Hour,
    pub last_active: Hour,
    /// True when the level comes from the outlook rather than from now.
    pub forecast: bool,
}

/// A person the engine knows: their district and categories. Consent is the caller's: only
/// consenting persons are ever added, and a withdrawal removes them.
#[derive(Clone, Debug)]
struct Person {
    district: u32,
    mask: u8,
    /// The last (episode id, level) told, per rule index; small and sparse.
    told: Vec<(u8, u64, Level)>,
    live: bool,
}

/// A message decided by the engine.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Message {
    pub subject: String,
    pub district: String,
    pub rule: String,
    pub hazard: Hazard,
    pub level: Level,
    pub episode: u64,
    pub hour: Hour,
    /// The value that set the level, and whether it is expected rather than measured now.
    pub value: f64,
    pub forecast: bool,
}

/// What an update did.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct UpdateStats {
    pub messages: usize,
    /// Advisories held for quiet hours this hour.
    pub held: usize,
    /// Held advisories dropped because their episode ended before quiet hours did.
    pub expired: usize,
    pub episodes_started: usize,
    pub episodes_ended: usize,
}

/// The engine: persons, districts, and each district's episode per rule.
#[derive(Clone, Debug)]
pub struct Engine {
    pub rules: RuleSet,
    districts: Vec<String>,
    district_ix: HashMap<String, u32>,
    persons: Vec<Person>,
    subjects: Vec<String>,
    subject_ix: HashMap<String, u32>,
    by_district: Vec<Vec<u32>>,
    /// `episodes[district][rule]`.
    episodes: Vec<Vec<Option<Episode>>>,
    /// Advisories waiting for quiet hours to end: (person, rule) → episode.
    held: HashMap<(u32, u8), u64>,
    next_episode: u64,
}

impl Engine {
    pub fn new(rules: RuleSet) -> Engine {
        Engine {
            rules,
            districts: Vec::new(),
            district_ix: HashMap::new(),
            persons: Vec::new(),
            subjects: Vec::new(),
            subject_ix: HashMap::new(),
            by_district: Vec::new(),
            episodes: Vec::new(),
            held: HashMap::new(),
            next_episode: 1,
        }
    }

    fn district(&mut self, name: &str) -> u32 {
        if let Some(&i) = self.district_ix.get(name) {
            return i;
        }
        let i = self.districts.len() as u32;
        self.districts.push(name.to_string());
        self.district_ix.insert(name.to_string(), i);
        self.by_district.push(Vec::new());
        self.episodes.push(vec![None; self.rules.rules.len()]);
        i
    }

    pub fn districts(&self) -> &[String] {
        &self.districts
    }

    /// Adds or updates a person. `told` restores what they were already told (after a restart).
    pub fn upsert(
        &mut self,
        subject: &str,
        district: &str,
        categories: &[&str],
    ) -> Result<(), String> {
        let mut mask = 0u8;
        for c in categories {
            mask |= category_bit(c).ok_or_else(|| format!("unknown category {c:?}"))?;
        }
        let d = self.district(district);
        match self.subject_ix.get(subject).copied() {
            Some(i) => {
                let p = &mut self.persons[i as usize];
                if p.district != d {
                    self.by_district[p.district as usize].retain(|&x| x != i);
                    self.by_district[d as usize].push(i);
                    p.district = d;
                }
                p.mask = mask;
                p.live = true;
            }
            None => {
                let i = self.persons.len() as u32;
                self.persons.push(Person {
                    district: d,
                    mask,
                    told: Vec::new(),
                    live: true,
                });
                self.subjects.push(subject.to_string());
                self.subject_ix.insert(subject.to_string(), i);
                self.by_district[d as usize].push(i);
            }
        }
        Ok(())
    }

    /// Removes a person: no message is decided for them after this.
    pub fn remove(&mut self, subject: &str) -> bool {
        let Some(i) = self.subject_ix.remove(subject) else {
            return false;
        };
        let p = &mut self.persons[i as usize];
        self.by_district[p.district as usize].retain(|&x| x != i);
        p.live = false;
        p.mask = 0;
        p.told.clear();
        self.subjects[i as usize].clear();
        self.held.retain(|k, _| k.0 != i);
        true
    }

    /// Records that a person was told of an episode at a level (restoring state after a restart).
    pub fn mark_told(&mut self, subject: &str, rule: &str, episode: u64, level: Level) {
        let (Some(&i), Some(r)) = (
            self.subject_ix.get(subject),
            self.rules.rules.iter().position(|x| x.name == rule),
        ) else {
            return;
        };
        tell(&mut self.persons[i as usize], r as u8, episode, level);
        self.next_episode = self.next_episode.max(episode + 1);
    }

    pub fn persons(&self) -> usize {
        self.subject_ix.len()
    }

    /// The open episodes: (district, rule, episode).
    pub fn episodes(&self) -> Vec<(String, String, Episode)> {
        let mut out = Vec::new();
        for (d, eps) in self.episodes.iter().enumerate() {
            for (r, e) in eps.iter().enumerate() {
                if let Some(e) = e {
                    out.push((
                        self.districts[d].clone(),
                        self.rules.rules[r].name.clone(),
                        *e,
                    ));
                }
            }
        }
        out
    }

    /// The open episode of a district and rule.
    pub fn episode(&self, district: &str, rule: &str) -> Option<Episode> {
        let d = *self.district_ix.get(district)? as usize;
        let r = self.rules.rules.iter().position(|x| x.name == rule)?;
        self.episodes[d][r]
    }

    /// Restores an open episode (after a restart).
    pub fn restore_episode(&mut self, district: &str, rule: &str, e: Episode) {
        let Some(r) = self.rules.rules.iter().position(|x| x.name == rule) else {
            return;
        };
        let d = self.district(district) as usize;
        self.episodes[d][r] = Some(e);
        self.next_episode = self.next_episode.max(e.id + 1);
    }

    /// One hour: updates every district's episodes from its hazards and decides messages.
    pub fn update(
        &mut self,
        hour: Hour,
        hazards: &HashMap<String, Hazards>,
    ) -> (Vec<Message>, UpdateStats) {
        let mut stats = UpdateStats::default();
        let quiet = self.rules.is_quiet(hour);
        let nrules = self.rules.rules.len();
        for (name, hz) in hazards {
            let d = self.district(name) as usize;
            for r in 0..nrules {
                let (now, expected) = hz.get(self.rules.rules[r].hazard);
                let now_level = now.map(|v| self.rules.level(r, v)).unwrap_or(Level::None);
                let exp_level = expected
                    .map(|v| self.rules.level(r, v))
                    .unwrap_or(Level::None);
                let level = now_level.max(exp_level);
                let slot = &mut self.episodes[d][r];
                match (slot.as_mut(), level) {
                    (Some(e), Level::None) => {
                        if hour.0 - e.last_active.0 >= EPISODE_END_HOURS {
                            *slot = None;
                            stats.episodes_ended += 1;
                        }
                    }
                    (Some(e), l) => {
                        e.last_active = hour;
                        if l > e.level {
                            e.level = l;
                            e.forecast = exp_level > now_level;
                        }
                    }
                    (None, Level::None) => {}
                    (None, l) => {
                        *slot = Some(Episode {
                            id: self.next_episode,
                            level: l,
                            started: hour,
                            last_active: hour,
                            forecast: exp_level > now_level,
                        });
                        self.next_episode += 1;
                        stats.episodes_started += 1;
                    }
                }
            }
        }
        // Held advisories whose episode is gone expire.
        let before = self.held.len();
        let episodes = &self.episodes;
        let persons = &self.persons;
        self.held.retain(|&(p, r), id| {
            let d = persons[p as usize].district as usize;
            episodes[d][r as usize].is_some_and(|e| e.id == *id)
        });
        stats.expired = before - self.held.len();
        if !quiet {
            self.held.clear();
        }

        let mut messages = Vec::new();
        for (d, eps) in self.episodes.iter().enumerate() {
            if eps.iter().all(Option::is_none) {
                continue;
            }
            let Some(hz) = hazards.get(&self.districts[d]) else {
                continue;
            };
            for (r, e) in eps.iter().enumerate() {
                let Some(e) = e else { continue };
                let mask = self.rules.mask(r);
                let rule = &self.rules.rules[r];
                let (now, expected) = hz.get(rule.hazard);
                let value = if e.forecast {
                    expected.or(now)
                } else {
                    now.or(expected)
                }
                .unwrap_or(f64::NAN);
                for &p in &self.by_district[d] {
                    let person = &mut self.persons[p as usize];
                    if !person.live || person.mask & mask == 0 {
                        continue;
                    }
                    if told(person, r as u8).is_some_and(|(id, l)| id == e.id && l >= e.level) {
                        continue;
                    }
                    if quiet && e.level == Level::Advisory {
                        if self.held.insert((p, r as u8), e.id).is_none() {
                            stats.held += 1;
                        }
                        continue;
                    }
                    tell(person, r as u8, e.id, e.level);
                    messages.push(Message {
                        subject: self.subjects[p as usize].clone(),
                        district: self.districts[d].clone(),
                        rule: rule.name.clone(),
                        hazard: rule.hazard,
                        level: e.level,
                        episode: e.id,
                        hour,
                        value,
                        forecast: e.forecast,
                    });
                }
            }
        }
        stats.messages = messages.len();
        (messages, stats)
    }
}

fn told(p: &Person, rule: u8) -> Option<(u64, Level)> {
    p.told.iter().find(|t| t.0 == rule).map(|t| (t.1, t.2))
}

fn tell(p: &mut Person, rule: u8, id: u64, level: Level) {
    match p.told.iter_mut().find(|t| t.0 == rule) {
        Some(t) => {
            if (t.1, t.2) < (id, level) {
                *t = (rule, id, level);
            }
        }
        None => p.told.push((rule, id, level)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pm(now: f64, expected: f64) -> HashMap<String, Hazards> {
        let mut h = Hazards::default();
        h.now[Hazard::Pm25 as usize] = Some(now);
        h.expected[Hazard::Pm25 as usize] = Some(expected);
        [("종로구".to_string(), h)].into_iter().collect()
    }

    fn at(s: &str) -> Hour {
        Hour::parse(s).unwrap()
    }

    #[test]
    fn default_rules_parse_and_bad_rules_are_named() {
        let r = RuleSet::standard();
        assert!(r.rules.iter().any(|x| x.name == "pm25_sensitive"));
        let e = RuleSet::parse(
            "[[rule]]\nname='x'\ncategories=['smokers']\nhazard='pm25'\nadvisory=36.0\n",
        )
        .unwrap_err();
        assert!(e.contains("rule[0] (x)") && e.contains("smokers"), "{e}");
        let e = RuleSet::parse("[[rule]]\nname='x'\ncategories=['elderly']\nhazard='pm25'\nadvisory=80.0\nwarning=36.0\n").unwrap_err();
        assert!(e.contains("advisory 80 above warning 36"), "{e}");
    }

    #[test]
    fn one_message_per_episode_and_level_with_quiet_hours() {
        let mut e = Engine::new(RuleSet::standard());
        e.upsert("app-1", "종로구", &["respiratory"]).unwrap();
        e.upsert("app-2", "종로구", &["diabetes"]).unwrap();
        // 10:00, PM2.5 40: an advisory for the respiratory group only.
        let (m, _) = e.update(at("2024-03-01 10:00"), &pm(40.0, 40.0));
        assert_eq!(m.len(), 1);
        assert_eq!(
            (m[0].subject.as_str(), m[0].level),
            ("app-1", Level::Advisory)
        );
        // The same episode the next hour: nothing new.
        assert!(e
            .update(at("2024-03-01 11:00"), &pm(45.0, 50.0))
            .0
            .is_empty());
        // The outlook reaches the warning band: one escalation, marked as expected.
        let (m, _) = e.update(at("2024-03-01 12:00"), &pm(50.0, 80.0));
        assert_eq!(m.len(), 1);
        assert_eq!(
            (m[0].level, m[0].forecast, m[0].value),
            (Level::Warning, true, 80.0)
        );
        // Clean air for less than 12 hours does not end the episode; back up does not re-send.
        for h in 13..=20 {
            assert!(e
                .update(at(&format!("2024-03-01 {h}:00")), &pm(10.0, 10.0))
                .0
                .is_empty());
        }
        assert!(e
            .update(at("2024-03-01 21:00"), &pm(40.0, 40.0))
            .0
            .is_empty());
        // Twelve clean hours end it; the next rise is a new episode — but it is 23:00 (quiet), so
        // the advisory waits, and goes at 07:00.
        for h in 22..=24 {
            e.update(at(&format!("2024-03-01 {h}:00")), &pm(10.0, 10.0));
        }
        for h in 1..=9 {
            e.update(at(&format!("2024-03-02 {h:02}:00")), &pm(10.0, 10.0));
        }
        assert!(e.episodes().is_empty());
        let (m, s) = e.update(at("2024-03-02 23:00"), &pm(40.0, 40.0));
        assert!(m.is_empty());
        assert_eq!(s.held, 1);
        assert!(e
            .update(at("2024-03-03 03:00"), &pm(40.0, 40.0))
            .0
            .is_empty());
        let (m, _) = e.update(at("2024-03-03 08:00"), &pm(40.0, 40.0));
        assert_eq!(m.len(), 1, "sent when quiet hours end (the hour 07–08)");
        // A warning does not wait for quiet hours.
        let (m, _) = e.update(at("2024-03-03 23:00"), &pm(90.0, 90.0));
        assert_eq!((m.len(), m[0].level), (1, Level::Warning));
    }

    #[test]
    fn a_removed_person_gets_nothing_and_a_late_joiner_gets_the_open_episode() {
        let mut e = Engine::new(RuleSet::standard());
        e.upsert("a", "중구", &["respiratory"]).unwrap();
        e.upsert("b", "중구", &["respiratory"]).unwrap();
        assert!(e.remove("b"));
        let mut h = pm(40.0, 40.0);
        let v = h.remove("종로구").unwrap();
        h.insert("중구".into(), v);
        let (m, _) = e.update(at("2024-03-01 10:00"), &h);
        assert_eq!(
            m.iter().map(|m| m.subject.as_str()).collect::<Vec<_>>(),
            vec!["a"]
        );
        e.upsert("c", "중구", &["respiratory", "elderly"]).unwrap();
        let (m, _) = e.update(at("2024-03-01 11:00"), &h);
        assert_eq!(
            m.iter().map(|m| m.subject.as_str()).collect::<Vec<_>>(),
            vec!["c"]
        );
    }
}
