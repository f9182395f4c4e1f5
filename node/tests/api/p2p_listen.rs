//! A node told to listen for peers on a TCP port that is already taken refuses to start,
//! whether a plain program or another node (whose socket allows port reuse) holds it.

use std::time::Duration;

use niso_node::{Node, NodeConfig, p2p::TransportChoice};

fn config(dir: &tempfile::TempDir, listen: &str) -> NodeConfig {
    let mut config = NodeConfig {
        data_dir: dir.path().join("data"),
        ..NodeConfig::default()
    };
    config.p2p.enabled = Some(true);
    config.p2p.listen = vec![listen.to_owned()];
    config.p2p.mdns = false;
    config
}

async fn open_fails(listen: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    match Node::open_with(config(&dir, listen), TransportChoice::Tcp).await {
        Ok(node) => {
            let addrs = node.state().p2p.as_ref().unwrap().listen_addrs();
            node.shutdown();
            panic!("a node opened on a taken port, listening on {addrs:?}");
        }
        Err(e) => e.to_string(),
    }
}

#[tokio::test]
async fn a_port_another_program_listens_on_is_refused() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = format!("/ip4/127.0.0.1/tcp/{}", taken.local_addr().unwrap().port());
    assert_eq!(
        open_fails(&addr).await,
        format!("p2p address {addr} is already in use")
    );
}

#[tokio::test]
async fn a_port_another_node_listens_on_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let first = Node::open_with(config(&dir, "/ip4/127.0.0.1/tcp/0"), TransportChoice::Tcp)
        .await
        .unwrap();
    let p2p = first.state().p2p.as_ref().unwrap();
    assert!(p2p.wait_listening(Duration::from_secs(10)).await);
    let listening = p2p.listen_addrs();
    let port = listening[0]
        .strip_prefix("/ip4/127.0.0.1/tcp/")
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_else(|| panic!("{listening:?}"));
    let addr = format!("/ip4/127.0.0.1/tcp/{port}");

    assert_eq!(
        open_fails(&addr).await,
        format!("p2p address {addr} is already in use")
    );
    // The first node keeps its listener.
    assert_eq!(p2p.listen_addrs(), listening);
    first.shutdown();
}
