//! A LAN: three nodes in separate network namespaces on one bridge find each other by mDNS,
//! with no bootstrap configuration, and replicate. Needs root and iproute2 (`.ci/run`
//! installs it); without them the test fails rather than pretending.

use std::time::Duration;

use niso_tests::{Sandbox, follow_records, lan::Lan, package_dir};

#[test]
fn nodes_on_a_lan_find_each_other_by_mdns_and_replicate() {
    let lan = Lan::new(3, 77, None);
    let user = Sandbox::new();
    let config = user.path().join("lan.toml");
    std::fs::write(
        &config,
        "[p2p]\nlisten = [\"/ip4/0.0.0.0/tcp/4001\"]\nmdns = true\n\n[[replicate]]\nfrom = \"*\"\npackages = [\"lan-*\"]\n\n[[share]]\nto = \"*\"\npackages = [\"lan-*\"]\n",
    )
    .unwrap();
    let mut nodes = Vec::new();
    for i in 0..lan.namespaces().len() {
        let data = user.path().join(format!("node{}", i + 1));
        let node = lan.serve(i, &user, &data, &config);
        user.ok(&[
            "registry",
            "add",
            &format!("n{}", i + 1),
            &node.url,
            "--key",
            &node.admin_key(),
        ]);
        nodes.push(node);
    }
    let dir = package_dir(
        user.path(),
        "lan-tool",
        "1.0.0",
        "any",
        "found by mDNS",
        b"lan bytes",
    );
    user.ok(&["pack", dir.to_str().unwrap()]);
    user.ok(&["push", "lan-tool-1.0.0-any.niso", "--registry", "n1"]);
    for node in &nodes[1..] {
        follow_records(&node.url, &node.admin_key(), Duration::from_secs(90), |r| {
            r.iter()
                .any(|x| x["kind"] == "manifest" && x["name"] == "lan-tool")
        })
        .unwrap_or_else(|_| panic!("{} never got lan-tool:\n{}", node.url, node.log()));
    }
    for reg in ["n2", "n3"] {
        user.ok(&["pull", "lan-tool:1.0.0", "--registry", reg]);
    }
    let peers = user.ok(&["registry", "peers", "--registry", "n3"]);
    assert!(peers.contains("connected"), "{peers}");
}
