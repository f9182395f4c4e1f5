//! A source registry that answers a mirror with a body that never ends: the mirror stops
//! reading at its bound and fails, promptly, instead of holding the stream in memory.

use std::{
    io::{BufRead, BufReader, Write},
    net::TcpListener,
    time::Duration,
};

use axum::http::{Method, StatusCode};
use serde_json::json;
use tokio::sync::oneshot;

use crate::support::TestNode;

/// What the mirror is allowed to take, whatever the source sends.
const DEADLINE: Duration = Duration::from_secs(30);

/// Serves one request with `status` and a chunked JSON body that goes on until the client
/// hangs up. Reports how many body bytes it wrote before that.
fn endless_source(status: &'static str) -> (String, oneshot::Receiver<u64>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (done, written) = oneshot::channel();
    std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        // Should the client never hang up, the thread still ends and the test fails on `written`.
        stream
            .set_write_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut request_line = String::new();
        reader.read_line(&mut request_line).unwrap();
        assert!(
            request_line.starts_with("GET /v1/records?"),
            "{request_line}"
        );
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap() == 0 || line == "\r\n" {
                break;
            }
        }
        let mut stream = stream;
        let head = format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n"
        );
        let filler = "{\"n\":0},".repeat(8 * 1024);
        let mut sent = 0u64;
        if stream.write_all(head.as_bytes()).is_ok() {
            let mut body: &[u8] = b"{\"records\":[";
            // Ends only when a write fails: the client hung up (or the write timed out).
            while stream
                .write_all(&[format!("{:x}\r\n", body.len()).as_bytes(), body, b"\r\n"].concat())
                .is_ok()
            {
                sent += body.len() as u64;
                body = filler.as_bytes();
            }
        }
        let _ = done.send(sent);
    });
    (url, written)
}

async fn mirror(node: &TestNode, url: &str) -> crate::support::Reply {
    let call = node.send_json(
        Method::POST,
        "/v1/mirror",
        Some(&node.admin),
        json!({ "from": url, "key": "anything" }),
    );
    tokio::time::timeout(DEADLINE, call)
        .await
        .expect("the mirror did not give up on an endless body")
}

#[tokio::test]
async fn an_endless_records_page_fails_the_mirror() {
    let (url, written) = endless_source("200 OK");
    let node = TestNode::new().await;
    let reply = mirror(&node, &url).await.expect(StatusCode::BAD_GATEWAY);
    assert_eq!(reply.code(), "source_failed");
    let message = reply.json()["error"]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        message.contains("/v1/records?after=0") && message.contains("larger than 16777216 bytes"),
        "{message}"
    );
    let sent = tokio::time::timeout(DEADLINE, written)
        .await
        .expect("the mirror kept the connection open")
        .unwrap();
    // The bound plus what socket buffers hold: the mirror stopped reading near its limit.
    assert!(sent > 16 << 20, "{sent}");
    assert!(sent < 64 << 20, "{sent}");
    assert_eq!(
        node.node.state().store.counts().unwrap(),
        (0, 0),
        "nothing is applied from a refused page"
    );
}

#[tokio::test]
async fn an_endless_error_body_is_cut_short() {
    let (url, written) = endless_source("500 Internal Server Error");
    let node = TestNode::new().await;
    let reply = mirror(&node, &url).await.expect(StatusCode::BAD_GATEWAY);
    let message = reply.json()["error"]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        message.contains("(500)") && message.contains("larger than 65536 bytes"),
        "{message}"
    );
    let sent = tokio::time::timeout(DEADLINE, written)
        .await
        .expect("the mirror kept the connection open")
        .unwrap();
    assert!(sent < 16 << 20, "{sent}");
}
