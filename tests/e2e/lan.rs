//! A LAN: three nodes in separate network namespaces on one bridge find each other by mDNS,
//! with no bootstrap configuration, and replicate. Needs root and iproute2 (`.ci/run`
//! installs it); without them the test fails rather than pretending.

use std::{process::Command, time::Duration};

use niso_tests::{Sandbox, Server, follow_records, package_dir};

struct Lan {
    bridge: String,
    namespaces: Vec<String>,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap_or_else(|e| {
        panic!(
            "running `ip` failed ({e}); this test needs iproute2 and root, which .ci/run provides"
        )
    });
    assert!(
        out.status.success(),
        "ip {} failed: {} (this test needs root to create network namespaces)",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Lan {
    /// A bridge `10.231.77.254/24` with `n` namespaces at `10.231.77.1..=n`.
    fn new(n: usize) -> Self {
        let tag = std::process::id() % 10_000;
        let lan = Self {
            bridge: format!("nisobr{tag}"),
            namespaces: (1..=n).map(|i| format!("niso-lan-{tag}-{i}")).collect(),
        };
        ip(&["link", "add", &lan.bridge, "type", "bridge"]);
        ip(&["addr", "add", "10.231.77.254/24", "dev", &lan.bridge]);
        ip(&["link", "set", &lan.bridge, "up"]);
        for (i, ns) in lan.namespaces.iter().enumerate() {
            let host_end = format!("nisov{tag}{}", i + 1);
            ip(&["netns", "add", ns]);
            ip(&[
                "link", "add", &host_end, "type", "veth", "peer", "name", "eth0", "netns", ns,
            ]);
            ip(&["link", "set", &host_end, "master", &lan.bridge]);
            ip(&["link", "set", &host_end, "up"]);
            let addr = format!("10.231.77.{}/24", i + 1);
            ip(&["-n", ns, "addr", "add", &addr, "dev", "eth0"]);
            ip(&["-n", ns, "link", "set", "eth0", "up"]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
            // mDNS goes to 224.0.0.251; give multicast a route out of eth0.
            ip(&["-n", ns, "route", "add", "224.0.0.0/4", "dev", "eth0"]);
        }
        lan
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        for ns in &self.namespaces {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .status();
    }
}

#[test]
fn nodes_on_a_lan_find_each_other_by_mdns_and_replicate() {
    let lan = Lan::new(3);
    let user = Sandbox::new();
    let config = user.path().join("lan.toml");
    std::fs::write(
        &config,
        "[p2p]\nlisten = [\"/ip4/0.0.0.0/tcp/4001\"]\nmdns = true\n\n[[replicate]]\nfrom = \"*\"\npackages = [\"lan-*\"]\n\n[[share]]\nto = \"*\"\npackages = [\"lan-*\"]\n",
    )
    .unwrap();
    let mut nodes = Vec::new();
    for (i, ns) in lan.namespaces.iter().enumerate() {
        let data = user.path().join(format!("node{}", i + 1));
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns])
            .arg(niso_tests::niso_bin())
            .args([
                "registry",
                "serve",
                "--listen",
                &format!("10.231.77.{}:5000", i + 1),
                "--data-dir",
            ])
            .arg(&data)
            .arg("--config")
            .arg(&config)
            .env("HOME", user.path())
            .env("XDG_CONFIG_HOME", user.path().join("config"))
            .env("XDG_DATA_HOME", user.path().join("data"));
        let node = Server::spawn(cmd, &data);
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
