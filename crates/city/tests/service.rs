//! The city service end to end on loopback: HTTPS API, a node's signed profile batch, citizens'
//! registrations and withdrawals, hourly air updates, and webhook delivery with retries.

use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use medfed_city::rules::RuleSet;
use medfed_city::service::{self, City, Notification, Webhook};
use medfed_protocol::profiles::{Profile, ProfileBatch, FORMAT};
use medfed_protocol::{SecretKey, Signed};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Default)]
struct Gateway {
    /// Requests to fail before accepting.
    fail_first: usize,
    seen: usize,
    /// Delivered, by idempotency key (a retried key is counted once).
    got: BTreeMap<String, Notification>,
    duplicates: usize,
}

async fn hook(
    axum::extract::State(g): axum::extract::State<Arc<Mutex<Gateway>>>,
    headers: HeaderMap,
    body: String,
) -> StatusCode {
    let mut g = g.lock().unwrap();
    g.seen += 1;
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some("Bearer hook-token") {
        return StatusCode::UNAUTHORIZED;
    }
    if g.seen <= g.fail_first {
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    let key = headers
        .get("idempotency-key")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let n: Notification = serde_json::from_str(&body).unwrap();
    if g.got.insert(key, n).is_some() {
        g.duplicates += 1;
    }
    StatusCode::OK
}

fn air_json(district: &str, hours: &[(String, f64)]) -> String {
    let items: Vec<String> = hours
        .iter()
        .map(|(h, pm25)| {
            format!(
                r#"{{"dataTime":"{h}","stationName":"{district}","pm25Value":"{pm25}","pm10Value":"40","o3Value":"0.020","no2Value":"0.020","coValue":"0.4","so2Value":"0.003"}}"#
            )
        })
        .collect();
    format!(
        r#"{{"response":{{"header":{{"resultCode":"00","resultMsg":"NORMAL_CODE"}},"body":{{"items":[{}]}}}}}}"#,
        items.join(",")
    )
}

fn hours(day: &str, from: u32, to: u32, pm25: impl Fn(u32) -> f64) -> Vec<(String, f64)> {
    (from..=to)
        .map(|h| (format!("{day} {h:02}:00"), pm25(h)))
        .collect()
}

fn batch(
    key: &SecretKey,
    issued_at: i64,
    profiles: &[(&str, &[&str])],
    withdrawn: &[&str],
) -> Signed {
    let b = ProfileBatch {
        format: FORMAT.into(),
        node: "hospital_a".into(),
        service: "city".into(),
        issued_at,
        profiles: profiles
            .iter()
            .map(|(s, c)| Profile {
                subject: s.to_string(),
                categories: c.iter().map(|x| x.to_string()).collect(),
                age_group: Some("65-79".into()),
            })
            .collect(),
        withdrawn: withdrawn.iter().map(|s| s.to_string()).collect(),
    };
    Signed::seal(&b, key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consented_citizens_get_one_message_per_episode_and_withdrawal_stops_and_deletes() {
    let dir = tempfile::tempdir().unwrap();
    let node = SecretKey::generate();
    let (outlook, tmax) = service::seoul_models().unwrap();
    let city = City::open(
        dir.path(),
        RuleSet::standard(),
        outlook.clone(),
        tmax.clone(),
        vec![("hospital_a".into(), node.public())],
    )
    .unwrap();
    let running = service::spawn(dir.path(), city, "127.0.0.1:0")
        .await
        .unwrap();
    let cert = std::fs::read(dir.path().join("cert.pem")).unwrap();
    let client = medfed_tls::client(&cert, Duration::from_secs(10)).unwrap();
    let url = running.url.clone();
    let (app, feed) = (running.tokens.app.clone(), running.tokens.feed.clone());

    // The webhook gateway, failing its first two requests.
    let gw = Arc::new(Mutex::new(Gateway {
        fail_first: 2,
        ..Default::default()
    }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook_url = format!("http://{}/push", listener.local_addr().unwrap());
    let gw_app = Router::new()
        .route("/push", post(hook))
        .with_state(gw.clone());
    let gw_task = tokio::spawn(async move { axum::serve(listener, gw_app).await.unwrap() });

    // Hostile and unauthenticated requests are refused.
    let r = client
        .post(format!("{url}/v1/subscribers"))
        .json(&serde_json::json!({"subject": "x", "district": "종로구"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = client
        .post(format!("{url}/v1/air"))
        .bearer_auth(&app)
        .body(air_json("종로구", &[]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "the app token does not feed air");
    let stranger = SecretKey::generate();
    let r = client
        .post(format!("{url}/v1/profiles"))
        .json(&batch(&stranger, 1, &[("s1", &["respiratory"])], &[]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = client
        .post(format!("{url}/v1/profiles"))
        .json(&batch(&node, 1, &[("s1", &["atrial_fibrillation"])], &[]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(r.text().await.unwrap().contains("categories"));
    let r = client
        .post(format!("{url}/v1/subscribers"))
        .bearer_auth(&app)
        .json(&serde_json::json!({"subject": "s1", "district": "종로구", "diagnosis": "asthma"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "a registration carries no health data");

    // The node's batch: s1 respiratory, s2 elderly, s3 diabetes, s4 respiratory (never registers).
    let issued = 1_000;
    let r = client
        .post(format!("{url}/v1/profiles"))
        .json(&batch(
            &node,
            issued,
            &[
                ("s1", &["respiratory"]),
                ("s2", &["elderly"]),
                ("s3", &["diabetes"]),
                ("s4", &["respiratory"]),
            ],
            &[],
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["stored"], 4);
    // Citizens register: s1, s2, s3 and s5 (no profile).
    for s in ["s1", "s2", "s3", "s5"] {
        let r = client
            .post(format!("{url}/v1/subscribers"))
            .bearer_auth(&app)
            .json(&serde_json::json!({"subject": s, "district": "종로구"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }

    // A clean day, then PM2.5 climbing from 08:00 to 120 µg/m³.
    let day0 = hours("2024-03-04", 1, 24, |_| 20.0);
    let day1 = hours("2024-03-05", 1, 24, |h| {
        if h < 8 {
            20.0
        } else {
            (20.0 + 5.0 * (h - 7) as f64).min(120.0)
        }
    });
    for d in [day0, day1] {
        let r = client
            .post(format!("{url}/v1/air"))
            .bearer_auth(&feed)
            .body(air_json("종로구", &d))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(v["hours"].as_array().unwrap().len(), 24);
    }

    // Deliver: the first two attempts fail, then everything arrives.
    let c = running.city.clone();
    let hook = Webhook {
        url: hook_url.clone(),
        token: "hook-token".into(),
    };
    let plain = medfed_city::poll::client(None, Duration::from_secs(5)).unwrap();
    for _ in 0..20 {
        service::deliver_once(&c, &plain, &hook).await.unwrap();
        if c.lock().unwrap().counts().unwrap().pending == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(600)).await;
    }
    let counts = c.lock().unwrap().counts().unwrap();
    assert_eq!(
        (counts.pending, counts.rejected, counts.failed),
        (0, 0, 0),
        "{counts:?}"
    );
    let got: Vec<Notification> = gw.lock().unwrap().got.values().cloned().collect();
    let to = |s: &str| {
        got.iter()
            .filter(|n| n.subject == s)
            .map(|n| (n.hazard.name(), n.level.name()))
            .collect::<Vec<_>>()
    };
    // s1 (respiratory) and s2 (elderly) get the PM2.5 advisory and then the warning, once each.
    assert_eq!(
        to("s1"),
        vec![("pm25", "advisory"), ("pm25", "warning")],
        "{got:#?}"
    );
    assert_eq!(to("s2"), to("s1"));
    // Diabetes is not in the PM2.5 rule; s4 never consented at the city; s5 has no profile.
    assert!(to("s3").is_empty() && to("s4").is_empty() && to("s5").is_empty());
    for n in &got {
        let body = serde_json::to_string(n).unwrap();
        assert!(
            !body.contains("respiratory") && !body.contains("elderly"),
            "{body}"
        );
    }
    // The warning came from the outlook before the 24-hour mean reached 76.
    let w = got
        .iter()
        .find(|n| n.subject == "s1" && n.level.name() == "warning")
        .unwrap();
    assert!(w.forecast, "{w:?}");
    assert_eq!(gw.lock().unwrap().duplicates, 0);

    // s1 withdraws at the city: everything about s1 is deleted, and nothing more is sent.
    let r = client
        .delete(format!("{url}/v1/subscribers/s1"))
        .bearer_auth(&app)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    {
        let city = c.lock().unwrap();
        assert_eq!(city.store.subject("s1").unwrap(), (None, None));
        assert!(city
            .store
            .outbox()
            .unwrap()
            .iter()
            .all(|(s, _, _)| s != "s1"));
        let log = city.store.consent_log().unwrap();
        assert!(log
            .iter()
            .any(|(_, s, e, src)| s == "s1" && e == "withdrawn" && src == "citizen"));
        assert_eq!(
            city.store.profile_columns().unwrap(),
            vec!["subject", "node", "categories", "age_group", "issued_at"]
        );
    }
    // A batch issued before the withdrawal does not bring s1 back.
    let r = client
        .post(format!("{url}/v1/profiles"))
        .json(&batch(&node, issued, &[("s1", &["respiratory"])], &[]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["stale"], 1);
    // Nor does a later one: s1 withdrew at the city, and only s1 registering again lifts that.
    let r = client
        .post(format!("{url}/v1/profiles"))
        .json(&batch(
            &node,
            medfed_protocol::now() + 5,
            &[("s1", &["respiratory"])],
            &[],
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["stale"], 1);
    assert_eq!(c.lock().unwrap().store.subject("s1").unwrap(), (None, None));
    // The node withdraws s2 (the patient withdrew at the hospital).
    let r = client
        .post(format!("{url}/v1/profiles"))
        .json(&batch(&node, medfed_protocol::now(), &[], &["s2"]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["withdrawn"], 1);

    // Two clean days end the episode; then a new one starts. Nobody is left to tell but … nobody:
    // s3's rules do not fire on PM2.5.
    let day2 = hours("2024-03-06", 1, 24, |_| 10.0);
    let day3 = hours("2024-03-07", 1, 24, |h| if h < 9 { 10.0 } else { 130.0 });
    for d in [day2, day3] {
        let r = client
            .post(format!("{url}/v1/air"))
            .bearer_auth(&feed)
            .body(air_json("종로구", &d))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    service::deliver_once(&c, &plain, &hook).await.unwrap();
    let after: Vec<Notification> = gw.lock().unwrap().got.values().cloned().collect();
    assert_eq!(
        after.len(),
        got.len(),
        "no message after the withdrawals: {after:#?}"
    );

    // A new consent of s3's neighbour with a respiratory profile gets the open episode's warning.
    let r = client
        .post(format!("{url}/v1/profiles"))
        .json(&batch(
            &node,
            medfed_protocol::now(),
            &[("s6", &["respiratory"])],
            &[],
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    client
        .post(format!("{url}/v1/subscribers"))
        .bearer_auth(&app)
        .json(&serde_json::json!({"subject": "s6", "district": "종로구"}))
        .send()
        .await
        .unwrap();
    let day3b = hours("2024-03-08", 1, 1, |_| 130.0);
    client
        .post(format!("{url}/v1/air"))
        .bearer_auth(&feed)
        .body(air_json("종로구", &day3b))
        .send()
        .await
        .unwrap();
    service::deliver_once(&c, &plain, &hook).await.unwrap();
    let s6: Vec<_> = gw
        .lock()
        .unwrap()
        .got
        .values()
        .filter(|n| n.subject == "s6")
        .map(|n| n.level.name())
        .collect();
    assert_eq!(s6, vec!["warning"]);

    // Restart: the engine comes back from the store and does not repeat itself.
    running.stop().await;
    let again = City::open(
        dir.path(),
        RuleSet::standard(),
        outlook,
        tmax,
        vec![("hospital_a".into(), node.public())],
    )
    .unwrap();
    assert_eq!(again.engine.persons(), 2, "s3 and s6");
    let running = service::spawn(dir.path(), again, "127.0.0.1:0")
        .await
        .unwrap();
    let day3c = hours("2024-03-08", 2, 3, |_| 130.0);
    client
        .post(format!("{}/v1/air", running.url))
        .bearer_auth(&feed)
        .body(air_json("종로구", &day3c))
        .send()
        .await
        .unwrap();
    // A late reading for a past hour is stored, and decides nothing.
    let late = hours("2024-03-03", 5, 5, |_| 300.0);
    let v: serde_json::Value = client
        .post(format!("{}/v1/air", running.url))
        .bearer_auth(&feed)
        .body(air_json("종로구", &late))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["hours"][0]["late"], true, "{v}");
    assert_eq!(v["hours"][0]["messages"], 0, "{v}");
    let c2 = running.city.clone();
    assert_eq!(c2.lock().unwrap().counts().unwrap().pending, 0);
    let st: serde_json::Value = client
        .get(format!("{}/v1/status", running.url))
        .bearer_auth(&app)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(st["counts"]["eligible"], 2);
    assert_eq!(st["counts"]["withdrawn"], 2);
    running.stop().await;
    gw_task.abort();
}
