//! Air-gapped transfer (export on one node, import on a node that never saw it) and pulling
//! from the nearest of several registries.

use niso_tests::{Sandbox, Server, package_dir};

fn publish(user: &Sandbox, registry: &str, name: &str, version: &str) {
    let dir = package_dir(
        &user.path().join("src"),
        name,
        version,
        "any",
        "airgap test",
        format!("{name}{version}").as_bytes(),
    );
    let file = user.path().join(format!("{name}-{version}.niso"));
    user.ok(&["pack", dir.to_str().unwrap(), "-o", file.to_str().unwrap()]);
    user.ok(&["push", file.to_str().unwrap(), "--registry", registry]);
}

fn json(user: &Sandbox, args: &[&str]) -> serde_json::Value {
    serde_json::from_str(&user.ok(args)).unwrap()
}

#[test]
fn export_then_import_on_a_disconnected_node() {
    let user = Sandbox::new();
    let a = Server::start(&user, &user.path().join("a"), &[], &[]);
    user.add_registry("a", &a);
    let a_peer = json(&user, &["registry", "info", "--registry", "a", "--json"])["peer_id"]
        .as_str()
        .unwrap()
        .to_owned();
    publish(&user, "a", "acme-api", "1.0.0");
    publish(&user, "a", "acme-web", "1.0.0");
    publish(&user, "a", "private-thing", "1.0.0");
    user.ok(&[
        "tag",
        "acme-api:1.0.0",
        "acme-api:stable",
        "--registry",
        "a",
    ]);

    let full = user.path().join("full.bundle");
    let out = user.ok(&[
        "registry",
        "export",
        "--to",
        full.to_str().unwrap(),
        "--packages",
        "acme-*",
        "--registry",
        "a",
    ]);
    assert!(
        out.starts_with("  Exported 3 records and 2 blobs ("),
        "{out}"
    );
    let mark: String = out
        .lines()
        .nth(1)
        .unwrap()
        .rsplit(' ')
        .next()
        .unwrap()
        .to_owned();

    // The importing node trusts A's signatures for acme-* only.
    let _c = user.node(
        "c",
        &format!("[[replicate]]\nfrom = \"{a_peer}\"\npackages = [\"acme-*\"]\n"),
    );

    // A tampered bundle is rejected whole: nothing becomes visible.
    let tampered = user.path().join("tampered.bundle");
    {
        let mut input = tar::Archive::new(std::fs::File::open(&full).unwrap());
        let mut output = tar::Builder::new(std::fs::File::create(&tampered).unwrap());
        let mut flipped = false;
        for entry in input.entries().unwrap() {
            let mut entry = entry.unwrap();
            let header = entry.header().clone();
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut data).unwrap();
            if !flipped && entry.path().unwrap().starts_with("blobs") {
                let last = data.len() - 1;
                data[last] ^= 1;
                flipped = true;
            }
            output.append(&header, &data[..]).unwrap();
        }
        assert!(flipped);
        output.finish().unwrap();
    }
    let err = user.fails(
        &[
            "registry",
            "import",
            tampered.to_str().unwrap(),
            "--registry",
            "c",
        ],
        7,
    );
    assert!(err.contains("nothing was imported"), "{err}");
    assert!(
        json(&user, &["search", "--json", "--registry", "c"])
            .as_array()
            .unwrap()
            .is_empty()
    );

    let out = user.ok(&[
        "registry",
        "import",
        full.to_str().unwrap(),
        "--registry",
        "c",
    ]);
    assert!(
        out.contains("2 versions, 1 tag update, 0 deletions; 2 blobs"),
        "{out}"
    );
    for name in ["acme-api", "acme-web"] {
        let on_a = json(&user, &["show", name, "--json", "--registry", "a"]);
        let on_c = json(&user, &["show", name, "--json", "--registry", "c"]);
        assert_eq!(on_a["versions"], on_c["versions"], "{name} differs");
        assert_eq!(on_a["tags"], on_c["tags"], "{name} tags differ");
    }
    user.fails(&["show", "private-thing", "--registry", "c"], 4);

    // Incremental: only what changed since the mark.
    publish(&user, "a", "acme-api", "1.1.0");
    let inc = user.path().join("inc.bundle");
    let out = user.ok(&[
        "registry",
        "export",
        "--to",
        inc.to_str().unwrap(),
        "--since",
        &mark,
        "--registry",
        "a",
    ]);
    assert!(out.starts_with("  Exported 1 records and 1 blobs"), "{out}");
    let out = user.ok(&[
        "registry",
        "import",
        inc.to_str().unwrap(),
        "--registry",
        "c",
    ]);
    assert!(out.contains("1 version, 0 tag updates"), "{out}");
    user.ok(&["pull", "acme-api:1.1.0", "--registry", "c"]);
    // Importing again adds nothing.
    let out = user.ok(&[
        "registry",
        "import",
        full.to_str().unwrap(),
        "--registry",
        "c",
    ]);
    assert!(
        out.contains("0 versions") && out.contains("3 already present"),
        "{out}"
    );

    // A node with no [[replicate]] rule takes nothing from a bundle.
    let d = Server::start(&user, &user.path().join("d"), &[], &[]);
    user.add_registry("d", &d);
    let out = user.ok(&[
        "registry",
        "import",
        full.to_str().unwrap(),
        "--registry",
        "d",
    ]);
    assert!(
        out.contains("3 not accepted by any [[replicate]] rule"),
        "{out}"
    );
}

#[test]
fn pull_from_the_nearest_registry_with_fallback() {
    let user = Sandbox::new();
    let a = Server::start(&user, &user.path().join("a"), &[], &[]);
    let b = Server::start(&user, &user.path().join("b"), &[], &[]);
    user.add_registry("a", &a);
    user.add_registry("b", &b);
    publish(&user, "a", "tool", "1.0.0");
    publish(&user, "b", "tool", "1.0.0");
    // Only b has this one: a fails over to b.
    publish(&user, "b", "tool", "2.0.0");
    let config = user.path().join("config/niso/config.toml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("\n[groups.near]\nregistries = [\"a\", \"b\"]\n");
    std::fs::write(&config, text).unwrap();

    let out = json(&user, &["pull", "tool:1.0.0", "--nearest", "--json"]);
    assert!(
        ["a", "b"]
            .iter()
            .any(|r| out["from"].as_str().unwrap().starts_with(r)),
        "{out}"
    );
    let out = json(
        &user,
        &["pull", "tool:2.0.0", "--registry", "near", "--json"],
    );
    assert!(out["from"].as_str().unwrap().starts_with("b "), "{out}");
    a.kill();
    let out = json(
        &user,
        &["pull", "tool:1.0.0", "--registry", "near", "--json"],
    );
    assert!(
        out["from"].as_str().unwrap().starts_with("b "),
        "a is down, b serves: {out}"
    );
}
