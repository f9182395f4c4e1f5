//! `/metrics` stays small however many distinct request methods clients invent: the request
//! counter's labels come from a fixed set.

use axum::http::{Method, StatusCode};

use crate::support::TestNode;

/// Far above what the fixed label set can produce (8 methods × the few statuses the router
/// answers with), far below what 2,000 junk methods would (one series line each).
const METRICS_BOUND: usize = 16 * 1024;

#[tokio::test]
async fn junk_methods_do_not_grow_metrics() {
    let n = TestNode::new().await;
    for i in 0..2_000 {
        let method = Method::from_bytes(format!("JUNK{i}").as_bytes()).unwrap();
        let reply = n.call(method, "/v1/packages", None, None, &[]).await;
        assert!(reply.status.is_client_error(), "{}", reply.status);
    }
    n.get("/v1/packages", None).await;

    let reply = n.get("/metrics", None).await.expect(StatusCode::OK);
    let text = String::from_utf8(reply.body).unwrap();
    assert!(
        text.len() < METRICS_BOUND,
        "/metrics is {} bytes:\n{text}",
        text.len()
    );
    assert!(
        !text.contains("JUNK"),
        "a junk method became a label:\n{text}"
    );

    // The junk is still counted, under `other`.
    let other: u64 = text
        .lines()
        .filter(|l| l.starts_with("niso_http_requests_total{") && l.contains("method=\"other\""))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(other, 2_000, "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("niso_http_requests_total{") && l.contains("method=\"GET\"")),
        "{text}"
    );
}
