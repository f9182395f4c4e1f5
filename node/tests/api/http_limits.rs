//! The HTTP server's own rules, on a loopback socket: clients that stop talking lose their
//! connection within the header-read or body-idle deadline, one address cannot take every
//! connection slot, and `/healthz` answers from elsewhere while a flood is held.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpSocket, TcpStream},
    sync::oneshot,
};

use crate::support::TestNode;

/// A node serving HTTP on 127.0.0.1 with the given `[http]` rules.
struct Served {
    node: TestNode,
    addr: SocketAddr,
    _stop: oneshot::Sender<()>,
}

async fn serve(tweak: impl FnOnce(&mut niso_node::config::HttpConfig)) -> Served {
    let node = TestNode::with(|c| {
        c.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        tweak(&mut c.http);
    })
    .await;
    let listener = node.node.bind().await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = node.node.clone();
    tokio::spawn(async move {
        server
            .serve(listener, async {
                let _ = stopped.await;
            })
            .await
    });
    Served {
        node,
        addr,
        _stop: stop,
    }
}

/// Connects to `to` from the loopback address `from` (Linux routes all of 127/8 locally).
async fn connect_from(from: [u8; 4], to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((from, 0))).unwrap();
    socket.connect(to).await.unwrap()
}

/// Reads until the server closes the connection or `within` passes; the bytes read, or
/// `None` when the connection was still open at the deadline.
async fn read_until_closed(stream: &mut TcpStream, within: Duration) -> Option<Vec<u8>> {
    let mut got = Vec::new();
    let read = tokio::time::timeout(within, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    read.ok().map(|()| got)
}

async fn healthz_from(from: [u8; 4], to: SocketAddr) -> String {
    let mut stream = connect_from(from, to).await;
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: niso\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let reply = read_until_closed(&mut stream, Duration::from_secs(10))
        .await
        .expect("healthz answered and closed within 10 s");
    String::from_utf8_lossy(&reply).into_owned()
}

#[tokio::test]
async fn stalled_clients_are_closed_and_healthz_answers_meanwhile() {
    let served = serve(|http| {
        http.header_read_timeout_secs = 2;
        http.max_connections = 64;
        http.max_connections_per_ip = 16;
    })
    .await;
    let start = Instant::now();

    // 40 connections from one address: half send a partial request head, half nothing.
    let mut held = Vec::new();
    for i in 0..40 {
        let mut stream = connect_from([127, 0, 0, 1], served.addr).await;
        if i % 2 == 0 {
            // The server may already have closed an over-limit connection: a failed write
            // is fine, what matters is when the server lets go.
            let _ = stream
                .write_all(b"GET /healthz HTTP/1.1\r\nHost: niso\r\n")
                .await;
        }
        held.push(stream);
    }

    // Another address still gets in, while the flood is held.
    let reply = healthz_from([127, 0, 0, 2], served.addr).await;
    assert!(
        reply.starts_with("HTTP/1.1 200"),
        "healthz during the flood: {reply}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "the check ran while the flood was still held"
    );

    // Every flood connection ends by the header deadline (plus slack for a loaded machine),
    // and none of them got a response.
    for (i, stream) in held.iter_mut().enumerate() {
        let left = Duration::from_secs(8).saturating_sub(start.elapsed());
        let got = read_until_closed(stream, left)
            .await
            .unwrap_or_else(|| panic!("connection {i} still open after {:?}", start.elapsed()));
        assert!(
            got.is_empty() || got.starts_with(b"HTTP/1.1 408"),
            "connection {i}: {got:?}"
        );
    }

    let metrics = served
        .node
        .get("/metrics", Some(&served.node.admin))
        .await
        .expect(axum::http::StatusCode::OK);
    let text = String::from_utf8_lossy(&metrics.body).into_owned();
    let refused: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("niso_http_connections_refused_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no refused counter in:\n{text}"));
    assert_eq!(refused, 24, "40 from one address with room for 16");
}

#[tokio::test]
async fn a_body_that_stops_arriving_ends_the_request() {
    let served = serve(|http| http.body_idle_timeout_secs = 1).await;
    let mut stream = connect_from([127, 0, 0, 1], served.addr).await;
    let head = format!(
        "POST /v1/keys HTTP/1.1\r\nHost: niso\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"name\":",
        served.node.admin
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let start = Instant::now();
    let got = read_until_closed(&mut stream, Duration::from_secs(6))
        .await
        .expect("the server gave up on the silent body within 6 s");
    let reply = String::from_utf8_lossy(&got);
    assert!(
        start.elapsed() >= Duration::from_millis(900),
        "the body was given its idle time first ({:?})",
        start.elapsed()
    );
    assert!(reply.starts_with("HTTP/1.1 400"), "reply: {reply}");
    assert!(reply.contains("\"code\""), "one error envelope: {reply}");
}

#[tokio::test]
async fn idle_keep_alive_connections_are_closed_after_the_header_deadline() {
    let served = serve(|http| http.header_read_timeout_secs = 1).await;
    let mut stream = connect_from([127, 0, 0, 1], served.addr).await;
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: niso\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 512];
    let n = stream.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    // Kept alive, then silent: the server lets it go.
    let start = Instant::now();
    let rest = read_until_closed(&mut stream, Duration::from_secs(6))
        .await
        .expect("an idle keep-alive connection is closed");
    assert!(rest.is_empty(), "{rest:?}");
    assert!(start.elapsed() >= Duration::from_millis(500));
}

#[tokio::test]
async fn a_client_that_stops_reading_a_download_loses_the_connection() {
    let served = serve(|http| http.body_idle_timeout_secs = 1).await;
    // Incompressible, and far larger than the socket buffers on both sides.
    let mut payload = vec![0u8; 32 * 1024 * 1024];
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    for chunk in payload.chunks_mut(8) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
    }
    let archive = crate::support::package("big", "1.0.0", "any", &payload);
    let digest = niso_protocol::Digest::of(&archive);
    served
        .node
        .push(&served.node.admin, "big", &archive)
        .await
        .expect(axum::http::StatusCode::CREATED);

    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(served.addr).await.unwrap();
    let request = format!(
        "GET /v1/packages/big/blobs/{digest} HTTP/1.1\r\nHost: niso\r\nAuthorization: Bearer {}\r\n\r\n",
        served.node.admin
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    // Take the first bytes so the response has surely started, then stop reading.
    let mut first = [0u8; 64];
    let n = stream.read(&mut first).await.unwrap();
    assert!(first[..n].starts_with(b"HTTP/1.1 200"));

    let open = || async {
        let metrics = served
            .node
            .get("/metrics", Some(&served.node.admin))
            .await
            .expect(axum::http::StatusCode::OK);
        String::from_utf8_lossy(&metrics.body)
            .lines()
            .find_map(|l| l.strip_prefix("niso_http_connections "))
            .and_then(|v| v.trim().parse::<i64>().ok())
            .expect("an open-connections gauge")
    };
    assert_eq!(open().await, 1, "the download holds its connection");
    let deadline = Instant::now() + Duration::from_secs(10);
    while open().await != 0 {
        assert!(
            Instant::now() < deadline,
            "a reader that stopped still holds its connection after 10 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(stream);
}
