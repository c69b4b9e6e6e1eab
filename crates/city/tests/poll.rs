//! Polling feeds over real HTTP on loopback: an AirKorea-shaped endpoint that pages its answer and
//! fails now and then, and a KMA-shaped one.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use medfed_city::feed::Pollutant;
use medfed_city::poll;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[derive(Default)]
struct Hits {
    air: AtomicUsize,
}

fn page(page: usize) -> String {
    // 5 items in pages of 2: pages 1, 2, 3.
    let items: Vec<String> = (0..5)
        .skip((page - 1) * 2)
        .take(2)
        .map(|i| {
            let pm25 = if i == 3 { "\"-\"".to_string() } else { format!("\"{}\"", 10 + i) };
            format!(
                r#"{{"dataTime":"2024-05-0{} 13:00","stationName":"종로구","pm25Value":{pm25},"pm10Value":"30","o3Value":"0.040","no2Value":"0.020","coValue":"0.4","so2Value":"0.003"}}"#,
                i + 1
            )
        })
        .collect();
    format!(
        r#"{{"response":{{"header":{{"resultCode":"00","resultMsg":"NORMAL_CODE"}},"body":{{"totalCount":5,"numOfRows":2,"pageNo":{page},"items":[{}]}}}}}}"#,
        items.join(",")
    )
}

async fn air(
    State(h): State<Arc<Hits>>,
    Query(q): Query<HashMap<String, String>>,
) -> impl IntoResponse {
    let n = h.air.fetch_add(1, Ordering::SeqCst);
    // The second request fails once: the poller must retry it.
    if n == 1 {
        return (StatusCode::SERVICE_UNAVAILABLE, "busy".to_string());
    }
    let p: usize = q.get("pageNo").and_then(|s| s.parse().ok()).unwrap_or(1);
    (StatusCode::OK, page(p))
}

async fn kma() -> impl IntoResponse {
    r#"{"response":{"header":{"resultCode":"00","resultMsg":"NORMAL_SERVICE"},"body":{"dataType":"JSON","items":{"item":[
        {"tm":"2024-08-01 14:00","stnId":"108","stnNm":"서울","ta":"34.1","hm":"55","ws":"2.0"},
        {"tm":"2024-08-01 15:00","stnId":"108","stnNm":"서울","ta":"34.8","hm":"52","ws":"2.4"}]},
        "pageNo":1,"numOfRows":10,"totalCount":2}}}"#
}

async fn denied() -> impl IntoResponse {
    (StatusCode::FORBIDDEN, "no key")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_retries_and_errors() {
    let hits = Arc::new(Hits::default());
    let app = Router::new()
        .route("/air", get(air))
        .route("/kma", get(kma))
        .route("/denied", get(denied))
        .with_state(hits.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let client = poll::client(None, Duration::from_secs(5)).unwrap();

    let url = format!("http://{addr}/air?serviceKey=k&returnType=json&numOfRows=2&pageNo=1");
    let got = poll::air(&client, &url, None).await.unwrap();
    assert_eq!(got.records.len(), 5);
    assert_eq!(got.records[0].values[Pollutant::Pm25.index()], Some(10.0));
    assert_eq!(got.records[4].values[Pollutant::Pm25.index()], Some(14.0));
    assert_eq!(got.records[3].values[Pollutant::Pm25.index()], None);
    assert_eq!(got.flags.len(), 1);
    assert!(
        got.flags[0].source.contains("pageNo=2"),
        "{:?}",
        got.flags[0]
    );
    // Pages 1, 2 (failed once, then retried) and 3.
    assert_eq!(hits.air.load(Ordering::SeqCst), 4);

    let w = poll::weather(&client, &format!("http://{addr}/kma"), None)
        .await
        .unwrap();
    assert_eq!(w.records.len(), 2);
    assert_eq!(w.records[1].temp_c, Some(34.8));
    assert_eq!(w.records[1].station, "서울");

    let e = poll::air(&client, &format!("http://{addr}/denied"), None)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("/denied") && e.contains("403"), "{e}");
    server.abort();
    let e = poll::air(&client, "http://127.0.0.1:1/air", None)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("attempts"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polls_over_https_trusting_only_the_given_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = medfed_tls::self_signed(&[]).unwrap();
    let (cp, kp) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cp, &cert).unwrap();
    std::fs::write(&kp, &key).unwrap();
    let tls = medfed_tls::server_config(&cp, &kp).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let app = Router::new().route("/kma", get(kma));
    let server = tokio::spawn(medfed_tls::serve(listener, app, tls, async {
        let _ = rx.await;
    }));
    let url = format!("https://{addr}/kma");
    let trusting = poll::client(Some(cert.as_bytes()), Duration::from_secs(5)).unwrap();
    assert_eq!(
        poll::weather(&trusting, &url, None)
            .await
            .unwrap()
            .records
            .len(),
        2
    );
    // A client without the certificate refuses the server.
    let plain = poll::client(None, Duration::from_secs(5)).unwrap();
    assert!(poll::weather(&plain, &url, None).await.is_err());
    let _ = stop.send(());
    let _ = server.await;
}
