//! Federation over real TCP between real processes: continuous replication, private sharing,
//! catch-up after downtime, and mirroring.

use std::time::Duration;

use niso_tests::{Sandbox, Server, follow_records, package_dir};

const CONVERGE: Duration = Duration::from_secs(60);

fn json(user: &Sandbox, args: &[&str]) -> serde_json::Value {
    serde_json::from_str(&user.ok(args)).unwrap()
}

fn publish(user: &Sandbox, registry: &str, name: &str, version: &str) {
    let dir = package_dir(
        &user.path().join("src"),
        name,
        version,
        "any",
        "federated",
        format!("{name}{version}").as_bytes(),
    );
    let file = user.path().join(format!("{name}-{version}.niso"));
    user.ok(&["pack", dir.to_str().unwrap(), "-o", file.to_str().unwrap()]);
    user.ok(&["push", file.to_str().unwrap(), "--registry", registry]);
}

fn has_manifest(records: &[serde_json::Value], name: &str) -> bool {
    records
        .iter()
        .any(|r| r["kind"] == "manifest" && r["name"] == name)
}

fn p2p_addr(user: &Sandbox, name: &str) -> String {
    let info = json(user, &["registry", "info", "--json", "--registry", name]);
    info["p2p_addrs"][0]
        .as_str()
        .expect("node listens for peers")
        .to_owned()
}

fn files_mention(dir: &std::path::Path, needle: &[u8]) -> Vec<std::path::PathBuf> {
    let mut hits = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else if std::fs::read(e.path())
                .unwrap()
                .windows(needle.len())
                .any(|w| w == needle)
            {
                hits.push(e.path());
            }
        }
    }
    hits
}

#[test]
fn three_nodes_converge_and_private_packages_stay_private() {
    let user = Sandbox::new();
    let trusting = "[[replicate]]\nfrom = \"*\"\npackages = [\"*\"]\n";
    let b = user.node("b", trusting);
    let c = user.node("c", trusting);
    let b_peer = json(&user, &["registry", "info", "--json", "--registry", "b"])["peer_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let a_config = format!(
        "[p2p]\nbootstrap = [\"{}\", \"{}\"]\n\n[[share]]\nto = \"*\"\npackages = [\"public-*\"]\n\n[[share]]\nto = \"{b_peer}\"\npackages = [\"secret-*\"]\n",
        p2p_addr(&user, "b"),
        p2p_addr(&user, "c")
    );
    let a = user.node("a", &a_config);
    let a_addr = p2p_addr(&user, "a");

    // Pushes on A reach B and C with no command.
    publish(&user, "a", "public-app", "1.0.0");
    publish(&user, "a", "secret-app", "1.0.0");
    user.ok(&[
        "tag",
        "public-app:1.0.0",
        "public-app:stable",
        "--registry",
        "a",
    ]);
    follow_records(&b.url, &b.admin_key(), CONVERGE, |r| {
        has_manifest(r, "public-app")
            && has_manifest(r, "secret-app")
            && r.iter().any(|x| x["kind"] == "tag")
    })
    .unwrap_or_else(|seen| {
        panic!(
            "b did not converge: {seen:?}\n--- b's log:\n{}\n--- a's log:\n{}",
            b.log(),
            a.log()
        )
    });
    follow_records(&c.url, &c.admin_key(), CONVERGE, |r| {
        has_manifest(r, "public-app") && r.iter().any(|x| x["kind"] == "tag")
    })
    .unwrap_or_else(|seen| panic!("c did not converge: {seen:?}"));
    for reg in ["b", "c"] {
        let pulled = json(
            &user,
            &["pull", "public-app:stable", "--json", "--registry", reg],
        );
        assert_eq!(pulled["version"], "1.0.0", "{reg}");
    }
    user.ok(&["pull", "secret-app", "--registry", "b"]);
    // C never learns of secret-app: not on its API, not anywhere in its data dir.
    user.fails(&["show", "secret-app", "--registry", "c"], 4);
    assert!(
        files_mention(&c.data_dir, b"secret-app").is_empty(),
        "secret-app leaked into c's data dir"
    );
    let peers = user.ok(&["registry", "peers", "--registry", "a"]);
    assert_eq!(peers.matches("connected").count(), 2, "{peers}");

    // C goes offline; pushes continue; C returns and catches up by syncing (gossip is gone).
    c.stop();
    publish(&user, "a", "public-app", "1.1.0");
    publish(&user, "a", "public-lib", "1.0.0");
    let c = user.node(
        "c",
        &format!("{trusting}\n[p2p]\nbootstrap = [\"{a_addr}\"]\n"),
    );
    follow_records(&c.url, &c.admin_key(), CONVERGE, |r| {
        has_manifest(r, "public-lib")
            && r.iter()
                .filter(|x| x["name"] == "public-app" && x["kind"] == "manifest")
                .count()
                == 2
    })
    .unwrap_or_else(|seen| panic!("c did not catch up: {seen:?}"));
    user.ok(&["pull", "public-app:1.1.0", "--registry", "c"]);

    // Mirror: over libp2p to a peer that A shares with; over HTTP to a node with no p2p.
    let e = user.node("e", "");
    let out = user.ok(&["registry", "mirror", "--from", "a", "--to", "e"]);
    assert!(out.contains("over p2p: 3 versions"), "{out}");
    // What it did not get is A's to decide, and the report says so.
    assert!(
        out.contains("Over p2p: the source is a libp2p peer of this node")
            && out.contains("The source offered the source's [[share]] rules for this node"),
        "{out}"
    );
    let d = Server::start(&user, &user.path().join("d"), &["--no-p2p"], &[]);
    user.add_registry("d", &d);
    let out = user.ok(&["registry", "mirror", "--from", "a", "--to", "d"]);
    assert!(out.contains("over http: 4 versions"), "{out}");
    assert!(
        out.contains("Over http: this node runs without libp2p")
            && out.contains("The source offered what key admin may pull there (admin)"),
        "{out}"
    );
    let from_a = json(&user, &["show", "secret-app", "--json", "--registry", "a"]);
    let from_d = json(&user, &["show", "secret-app", "--json", "--registry", "d"]);
    assert_eq!(from_a["versions"], from_d["versions"]);
    drop((a, b, e));
}
