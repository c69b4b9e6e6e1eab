//! The wire format between cars and the vehicle service, over MQTT.
//!
//! Topics, under a prefix (default `medfed/v1/cars`):
//!
//! | topic | from | payload |
//! |---|---|---|
//! | `{prefix}/{vin}/vitals` | car, 1 Hz | [`VitalsMsg`] |
//! | `{prefix}/{vin}/ecg` | car, one chunk a second | [`EcgMsg`] |
//! | `{prefix}/{vin}/cancel` | car, when the driver dismisses a prompt | [`CancelMsg`] |
//! | `{prefix}/{vin}/cmd` | service | [`Command`] |
//!
//! Every payload is sealed: `hex(HMAC-SHA256(key, topic ‖ "\n" ‖ json)) ‖ " " ‖ json`. The car's
//! key is derived from the fleet key and its VIN, so the service holds one secret and a car holds
//! only its own; binding the topic stops a car from speaking for another. A payload that does not
//! parse, is not sealed with the right key, or carries an out-of-range field is rejected with the
//! reason and the field named; the service counts and drops it.

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

pub const DEFAULT_PREFIX: &str = "medfed/v1/cars";
/// The largest payload accepted (an ECG chunk of one second at 1 kHz is about 8 KB).
pub const MAX_PAYLOAD: usize = 64 * 1024;

type HmacSha256 = Hmac<Sha256>;

/// Wall clock in µs since the epoch: the `sent_us` a car stamps and the service measures
/// latency against.
pub fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// A car's key: HMAC-SHA256 of its VIN under the fleet key.
pub fn vehicle_key(fleet_key: &[u8], vin: &str) -> [u8; 32] {
    let mut m = HmacSha256::new_from_slice(fleet_key).expect("HMAC takes any key length");
    m.update(b"medfed vehicle key\n");
    m.update(vin.as_bytes());
    m.finalize().into_bytes().into()
}

fn mac(key: &[u8], topic: &str, json: &[u8]) -> HmacSha256 {
    let mut m = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    m.update(topic.as_bytes());
    m.update(b"\n");
    m.update(json);
    m
}

/// Seal `json` for `topic`.
pub fn seal(key: &[u8], topic: &str, json: &[u8]) -> Vec<u8> {
    let tag = mac(key, topic, json).finalize().into_bytes();
    let mut out = hex::encode(tag).into_bytes();
    out.push(b' ');
    out.extend_from_slice(json);
    out
}

/// Check a sealed payload; returns the JSON.
pub fn open<'a>(key: &[u8], topic: &str, payload: &'a [u8]) -> Result<&'a [u8], Reject> {
    if payload.len() < 66 || payload[64] != b' ' {
        return Err(Reject::Unsigned);
    }
    let tag = hex::decode(&payload[..64]).map_err(|_| Reject::Unsigned)?;
    let json = &payload[65..];
    mac(key, topic, json)
        .verify_slice(&tag)
        .map_err(|_| Reject::BadSignature)?;
    Ok(json)
}

/// Why a message was dropped.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, thiserror::Error)]
pub enum Reject {
    #[error("topic is not {{prefix}}/{{VIN}}/vitals|ecg|cancel")]
    Topic,
    #[error("payload over {MAX_PAYLOAD} bytes")]
    TooLarge,
    #[error("payload is not sealed")]
    Unsigned,
    #[error("seal does not match the vehicle's key")]
    BadSignature,
    #[error("not valid JSON for the topic: {0}")]
    Json(String),
    #[error("field {0}")]
    Field(String),
    #[error("sequence number already seen")]
    Duplicate,
}

impl Reject {
    /// A short name for counters.
    pub fn reason(&self) -> &'static str {
        match self {
            Reject::Topic => "topic",
            Reject::TooLarge => "too_large",
            Reject::Unsigned => "unsigned",
            Reject::BadSignature => "bad_signature",
            Reject::Json(_) => "json",
            Reject::Field(_) => "field",
            Reject::Duplicate => "duplicate",
        }
    }
}

/// One second of vitals and controls.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VitalsMsg {
    pub seq: u64,
    /// Car time of the reading, ms since the Unix epoch.
    pub t_ms: i64,
    /// Wall clock when published, µs since the epoch (for latency).
    #[serde(default)]
    pub sent_us: i64,
    pub hr: Option<f64>,
    #[serde(default)]
    pub rr_ms: Vec<f64>,
    pub spo2: Option<f64>,
    pub worn: bool,
    pub steering_dps: f64,
    pub pedal: f64,
    pub brake: bool,
    pub speed_kmh: f64,
    pub lat: f64,
    pub lon: f64,
    pub heading_deg: f64,
    pub passengers: u8,
}

/// One chunk of steering-wheel ECG, in microvolts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EcgMsg {
    pub seq: u64,
    pub t0_ms: i64,
    #[serde(default)]
    pub sent_us: i64,
    pub fs: f64,
    pub lead_off: bool,
    pub uv: Vec<i32>,
}

/// The driver dismissed the prompt for `event`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CancelMsg {
    pub seq: u64,
    pub t_ms: i64,
    pub event: String,
}

/// What the service tells a car.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Command {
    pub event: String,
    /// `confirm` (show the prompt until `deadline_ms`), `cancelled`, `call_placed`,
    /// `hazard_lights_on`, `safe_stop`, or `advise` (AF: tell the driver, no call).
    pub action: String,
    pub kind: String,
    #[serde(default)]
    pub deadline_ms: Option<i64>,
}

/// A parsed, authenticated message from a car.
#[derive(Clone, Debug, PartialEq)]
pub enum Incoming {
    Vitals(VitalsMsg),
    Ecg(EcgMsg),
    Cancel(CancelMsg),
}

/// Whether `vin` is a well-formed ISO 3779 vehicle identification number (17 characters, digits
/// and capitals without I, O and Q).
pub fn valid_vin(vin: &str) -> bool {
    vin.len() == 17
        && vin
            .bytes()
            .all(|b| b.is_ascii_digit() || (b.is_ascii_uppercase() && !b"IOQ".contains(&b)))
}

/// Split `{prefix}/{vin}/{kind}`.
pub fn split_topic<'a>(prefix: &str, topic: &'a str) -> Option<(&'a str, &'a str)> {
    let rest = topic.strip_prefix(prefix)?.strip_prefix('/')?;
    let (vin, kind) = rest.split_once('/')?;
    valid_vin(vin).then_some((vin, kind))
}

fn check(ok: bool, field: &str, why: &str) -> Result<(), Reject> {
    if ok {
        Ok(())
    } else {
        Err(Reject::Field(format!("{field}: {why}")))
    }
}

fn json<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, Reject> {
    serde_json::from_slice(bytes).map_err(|e| Reject::Json(e.to_string()))
}

/// Authenticate and parse a message from a car. Returns the VIN and the message.
pub fn parse(
    prefix: &str,
    fleet_key: &[u8],
    topic: &str,
    payload: &[u8],
) -> Result<(String, Incoming), Reject> {
    let (vin, kind) = split_topic(prefix, topic).ok_or(Reject::Topic)?;
    if !matches!(kind, "vitals" | "ecg" | "cancel") {
        return Err(Reject::Topic);
    }
    if payload.len() > MAX_PAYLOAD {
        return Err(Reject::TooLarge);
    }
    let key = vehicle_key(fleet_key, vin);
    let body = open(&key, topic, payload)?;
    let msg = match kind {
        "vitals" => {
            let v: VitalsMsg = json(body)?;
            check(v.t_ms > 0, "t_ms", "must be a time after 1970")?;
            let fin = |x: f64| x.is_finite();
            check(v.hr.is_none_or(fin), "hr", "not a number")?;
            check(v.spo2.is_none_or(fin), "spo2", "not a number")?;
            check(
                v.rr_ms.len() <= 16 && v.rr_ms.iter().all(|x| fin(*x)),
                "rr_ms",
                "at most 16 finite intervals",
            )?;
            check(fin(v.steering_dps), "steering_dps", "not a number")?;
            check((0.0..=1.0).contains(&v.pedal), "pedal", "outside 0..1")?;
            check(
                (0.0..=400.0).contains(&v.speed_kmh),
                "speed_kmh",
                "outside 0..400",
            )?;
            check((-90.0..=90.0).contains(&v.lat), "lat", "outside −90..90")?;
            check(
                (-180.0..=180.0).contains(&v.lon),
                "lon",
                "outside −180..180",
            )?;
            check(
                (0.0..=360.0).contains(&v.heading_deg),
                "heading_deg",
                "outside 0..360",
            )?;
            Incoming::Vitals(v)
        }
        "ecg" => {
            let e: EcgMsg = json(body)?;
            check(e.t0_ms > 0, "t0_ms", "must be a time after 1970")?;
            check((50.0..=1000.0).contains(&e.fs), "fs", "outside 50..1000 Hz")?;
            check(
                !e.uv.is_empty() && e.uv.len() as f64 <= 2.0 * e.fs,
                "uv",
                "1 to 2 s of samples",
            )?;
            Incoming::Ecg(e)
        }
        _ => {
            let c: CancelMsg = json(body)?;
            check(
                !c.event.is_empty() && c.event.len() <= 80,
                "event",
                "1 to 80 characters",
            )?;
            Incoming::Cancel(c)
        }
    };
    Ok((vin.to_string(), msg))
}

#[cfg(test)]
mod tests {
    use super::*;

    const VIN: &str = "KMHXX00XXXX000001";

    fn vitals() -> VitalsMsg {
        VitalsMsg {
            seq: 1,
            t_ms: 1_700_000_000_000,
            sent_us: 0,
            hr: Some(70.0),
            rr_ms: vec![850.0],
            spo2: Some(97.0),
            worn: true,
            steering_dps: 3.0,
            pedal: 0.3,
            brake: false,
            speed_kmh: 50.0,
            lat: 37.5,
            lon: 127.0,
            heading_deg: 90.0,
            passengers: 1,
        }
    }

    #[test]
    fn sealed_messages_parse_and_every_kind_of_bad_one_is_named() {
        let fleet = b"fleet secret";
        let topic = format!("{DEFAULT_PREFIX}/{VIN}/vitals");
        let body = serde_json::to_vec(&vitals()).unwrap();
        let key = vehicle_key(fleet, VIN);
        let good = seal(&key, &topic, &body);
        let (vin, m) = parse(DEFAULT_PREFIX, fleet, &topic, &good).unwrap();
        assert_eq!((vin.as_str(), m), (VIN, Incoming::Vitals(vitals())));
        let err =
            |topic: &str, payload: &[u8]| parse(DEFAULT_PREFIX, fleet, topic, payload).unwrap_err();
        // Another car's key, another car's topic, a flipped byte, no seal at all.
        let other = seal(&vehicle_key(fleet, "KMHXX00XXXX000002"), &topic, &body);
        assert_eq!(err(&topic, &other), Reject::BadSignature);
        let moved = format!("{DEFAULT_PREFIX}/KMHXX00XXXX000002/vitals");
        assert_eq!(err(&moved, &good), Reject::BadSignature);
        let mut flipped = good.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert_eq!(err(&topic, &flipped), Reject::BadSignature);
        assert_eq!(err(&topic, &body), Reject::Unsigned);
        assert_eq!(err(&topic, b""), Reject::Unsigned);
        // Topics.
        assert_eq!(
            err(&format!("{DEFAULT_PREFIX}/{VIN}/other"), &good),
            Reject::Topic
        );
        assert_eq!(
            err(&format!("{DEFAULT_PREFIX}/not-a-vin/vitals"), &good),
            Reject::Topic
        );
        assert_eq!(err("elsewhere/x", &good), Reject::Topic);
        // Size, JSON and fields, sealed properly.
        assert_eq!(err(&topic, &vec![b'a'; MAX_PAYLOAD + 1]), Reject::TooLarge);
        let sealed = |json: &str| seal(&key, &topic, json.as_bytes());
        assert!(matches!(
            err(&topic, &sealed("{\"seq\":1}")),
            Reject::Json(_)
        ));
        let mut v = vitals();
        v.pedal = 7.0;
        let e = err(&topic, &sealed(&serde_json::to_string(&v).unwrap()));
        assert_eq!(e.to_string(), "field pedal: outside 0..1");
        let ecg_topic = format!("{DEFAULT_PREFIX}/{VIN}/ecg");
        let ecg = EcgMsg {
            seq: 1,
            t0_ms: 1,
            sent_us: 0,
            fs: 250.0,
            lead_off: false,
            uv: vec![0; 1000],
        };
        let e = parse(
            DEFAULT_PREFIX,
            fleet,
            &ecg_topic,
            &seal(&key, &ecg_topic, &serde_json::to_vec(&ecg).unwrap()),
        )
        .unwrap_err();
        assert_eq!(e.to_string(), "field uv: 1 to 2 s of samples");
    }
}
