//! The record log as a narrow key sees it: only its packages, paged through the per-package
//! index, with positions that never step over what it may not see.

use axum::http::StatusCode;

use crate::support::{TestNode, package};

/// Pages through `/v1/records` with `key`; returns each page's (packages, next, more).
async fn pages(node: &TestNode, key: &str, limit: usize) -> Vec<(Vec<String>, u64, bool)> {
    let mut after = 0;
    let mut out = Vec::new();
    loop {
        let page = node
            .get(
                &format!("/v1/records?after={after}&limit={limit}"),
                Some(key),
            )
            .await
            .expect(StatusCode::OK)
            .json();
        let names = page["records"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap().to_owned())
            .collect();
        let (next, more) = (
            page["next"].as_u64().unwrap(),
            page["more"].as_bool().unwrap(),
        );
        out.push((names, next, more));
        if !more {
            return out;
        }
        assert!(next > after, "paging must move on");
        after = next;
    }
}

#[tokio::test]
async fn a_narrow_key_pages_through_its_own_records_only() {
    let node = TestNode::new().await;
    let admin = node.admin.clone();
    // Log positions 1..=9: acme at 2, 5 and 8; everything else belongs to others.
    for i in 0..3 {
        for name in ["other-a", "acme-api", "other-b"] {
            let v = format!("1.{i}.0");
            node.push(
                &admin,
                name,
                &package(name, &v, "any", format!("{name}{v}").as_bytes()),
            )
            .await
            .expect(StatusCode::CREATED);
        }
    }
    let acme = node.key(&["pull:acme-*"]).await;
    let seen = pages(&node, &acme, 2).await;
    assert_eq!(
        seen,
        [
            (vec!["acme-api".to_owned(), "acme-api".to_owned()], 5, true),
            (vec!["acme-api".to_owned()], 8, false),
        ]
    );
    // A key that sees nothing learns nothing, not even how long the log is.
    let nobody = node.key(&["pull:nothing-*"]).await;
    assert_eq!(pages(&node, &nobody, 100).await, [(vec![], 0, false)]);
    // The admin pages the whole log.
    let all: usize = pages(&node, &admin, 4)
        .await
        .iter()
        .map(|p| p.0.len())
        .sum();
    assert_eq!(all, 9);
}

/// `wait` holds a request that finds nothing new until a record arrives, then answers with it
/// rather than waiting out its deadline.
#[tokio::test]
async fn a_long_poll_answers_when_a_record_arrives() {
    let node = TestNode::new().await;
    let admin = node.admin.clone();
    node.push(&admin, "first", &package("first", "1.0.0", "any", b"1"))
        .await
        .expect(StatusCode::CREATED);
    let at = node
        .get("/v1/records", Some(&admin))
        .await
        .expect(StatusCode::OK)
        .json()["next"]
        .as_u64()
        .unwrap();
    let poll = format!("/v1/records?after={at}&wait=60");
    let second = package("second", "1.0.0", "any", b"2");
    let started = std::time::Instant::now();
    let (polled, pushed) = tokio::join!(
        node.get(&poll, Some(&admin)),
        node.push(&admin, "second", &second),
    );
    pushed.expect(StatusCode::CREATED);
    let page = polled.expect(StatusCode::OK).json();
    let names: Vec<&str> = page["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["second"]);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(60),
        "the poll waited out its deadline"
    );
}
