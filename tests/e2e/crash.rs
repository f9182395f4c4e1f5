//! Crash safety: SIGKILL the node at chosen points during pushes, GC and mirroring, restart
//! it, and check that every visible package verifies and nothing partial is visible.

use std::{process::Stdio, time::Duration};

use niso_protocol::Digest;
use niso_tests::{Sandbox, Server, package_dir};

const FAILPOINT_TIMEOUT: Duration = Duration::from_secs(60);

fn pack(user: &Sandbox, name: &str, version: &str, payload: &[u8]) -> String {
    let dir = package_dir(user.path(), name, version, "any", "crash test", payload);
    user.ok(&["pack", dir.to_str().unwrap()]);
    format!("{name}-{version}-any.niso")
}

/// Every blob file's bytes hash to its name, and every visible version pulls and verifies.
fn check_consistent(user: &Sandbox, node: &Server) -> Vec<String> {
    for shard in std::fs::read_dir(node.data_dir.join("blobs")).unwrap() {
        for file in std::fs::read_dir(shard.unwrap().path()).unwrap() {
            let file = file.unwrap();
            let bytes = std::fs::read(file.path()).unwrap();
            assert_eq!(
                Digest::of(&bytes).hex(),
                file.file_name().to_str().unwrap(),
                "blob does not match its name"
            );
        }
    }
    let list: serde_json::Value =
        serde_json::from_str(&user.ok(&["search", "--json", "--limit", "1000"])).unwrap();
    let mut visible = Vec::new();
    for p in list.as_array().unwrap() {
        let name = p["name"].as_str().unwrap();
        let detail: serde_json::Value =
            serde_json::from_str(&user.ok(&["show", name, "--json"])).unwrap();
        for v in detail["versions"].as_array().unwrap() {
            let (version, arch) = (v["version"].as_str().unwrap(), v["arch"].as_str().unwrap());
            // `pull` exits non-zero unless the bytes hash to the listed digest.
            user.ok(&["pull", &format!("{name}:{version}"), "--arch", arch]);
            visible.push(format!("{name}@{version}"));
        }
    }
    visible.sort();
    visible
}

fn login(user: &Sandbox, node: &Server) {
    user.ok(&["login", &node.url, "--key", &node.admin_key(), "--default"]);
}

/// Named points, plus upload offsets drawn from a fixed seed (printed on failure).
fn push_crash_points(seed: u64, size: u64) -> Vec<String> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut points: Vec<String> = [
        "push-before-blob",
        "push-blob-committed",
        // Commit 1 opens the upload; commit 2 would make the manifest record durable.
        "db-commit:1",
        "db-commit:2",
    ]
    .map(str::to_owned)
    .to_vec();
    for _ in 0..3 {
        let mut b = [0u8; 8];
        rng.fill_bytes(&mut b);
        points.push(format!("upload-bytes:{}", u64::from_le_bytes(b) % size));
    }
    points
}

#[test]
fn killed_during_push_loses_nothing_acknowledged() {
    let seed = 0x5eed_0001;
    // Incompressible, so the package is as large as the payload and every offset is reachable.
    let mut payload = vec![0u8; 600_000];
    {
        use rand::{Rng, SeedableRng};
        rand_chacha::ChaCha8Rng::seed_from_u64(seed).fill_bytes(&mut payload);
    }
    for failpoint in push_crash_points(seed, 500_000) {
        let context = format!("failpoint {failpoint} (seed {seed:#x})");
        let user = Sandbox::new();
        let data = user.path().join("node");
        let node = Server::start(&user, &data, &[], &[]);
        login(&user, &node);
        let acked = pack(&user, "acked", "1.0.0", b"acknowledged before the crash");
        user.ok(&["push", &acked]);
        node.kill();

        let name = failpoint.split(':').next().unwrap().to_owned();
        let node = Server::start(&user, &data, &[], &[("NISO_FAILPOINTS", &failpoint)]);
        login(&user, &node);
        let doomed = pack(&user, "doomed", "1.0.0", &payload);
        let mut push = user
            .command()
            .args(["push", &doomed])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        node.wait_for_log(&name, FAILPOINT_TIMEOUT)
            .unwrap_or_else(|log| panic!("{context}: never reached:\n{}", log.join("\n")));
        node.kill();
        // The client would wait a minute for the node to come back and then resume the push
        // (`niso push` rides out restarts); what is tested is the node's crash, so it goes too.
        let _ = push.kill();
        let _ = push.wait();

        let node = Server::start(&user, &data, &[], &[]);
        login(&user, &node);
        let visible = check_consistent(&user, &node);
        assert_eq!(
            visible,
            vec!["acked@1.0.0"],
            "{context}: only the acknowledged push is visible"
        );
        // The interrupted push works when retried.
        user.ok(&["push", &doomed]);
        assert_eq!(
            check_consistent(&user, &node),
            vec!["acked@1.0.0", "doomed@1.0.0"],
            "{context}"
        );
    }
}

#[test]
fn killed_during_gc_keeps_every_visible_version_whole() {
    let user = Sandbox::new();
    let data = user.path().join("node");
    let config = user.path().join("node.toml");
    std::fs::write(&config, "[gc]\ngrace_period_secs = 0\n").unwrap();
    let flags = ["--config", config.to_str().unwrap()];
    let node = Server::start(&user, &data, &flags, &[]);
    login(&user, &node);
    for v in ["1.0.0", "1.1.0", "1.2.0", "1.3.0"] {
        let f = pack(&user, "svc", v, v.as_bytes());
        user.ok(&["push", &f]);
    }
    node.kill();

    let node = Server::start(
        &user,
        &data,
        &flags,
        &[("NISO_FAILPOINTS", "gc-versions-removed")],
    );
    login(&user, &node);
    let mut gc = user
        .command()
        .args(["registry", "gc", "--keep-versions", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    node.wait_for_log("gc-versions-removed", FAILPOINT_TIMEOUT)
        .unwrap();
    node.kill();
    let _ = gc.wait();

    let node = Server::start(&user, &data, &flags, &[]);
    login(&user, &node);
    check_consistent(&user, &node);
    // The versions were removed in one transaction before any file: either all or none went.
    let detail = user.ok(&["registry", "list-tags", "svc", "--json"]);
    assert!(detail.contains("1.3.0"));
    for v in ["1.0.0", "1.1.0", "1.2.0"] {
        user.fails(&["pull", &format!("svc:{v}")], 4);
    }
    // The interrupted sweep left orphan blobs; the next GC removes them.
    let blobs = || {
        std::fs::read_dir(data.join("blobs"))
            .unwrap()
            .map(|d| std::fs::read_dir(d.unwrap().path()).unwrap().count())
            .sum::<usize>()
    };
    assert_eq!(blobs(), 4);
    let out = user.ok(&["registry", "gc", "--keep-versions", "1"]);
    assert!(out.contains("Removed 0 versions and 3 blobs"), "{out}");
    assert_eq!(blobs(), 1);
    user.ok(&["pull", "svc:1.3.0"]);
}

#[test]
fn killed_during_mirror_resumes_cleanly() {
    let user = Sandbox::new();
    let source = Server::start(&user, &user.path().join("a"), &[], &[]);
    user.ok(&[
        "registry",
        "add",
        "a",
        &source.url,
        "--key",
        &source.admin_key(),
    ]);
    for (n, v) in [("one", "1.0.0"), ("two", "1.0.0"), ("three", "1.0.0")] {
        let f = pack(&user, n, v, n.as_bytes());
        user.ok(&["push", &f, "--registry", "a"]);
    }
    let data_b = user.path().join("b");
    let b = Server::start(
        &user,
        &data_b,
        &[],
        &[("NISO_FAILPOINTS", "mirror-blob-committed")],
    );
    user.add_registry("b", &b);
    let mut mirror = user
        .command()
        .args(["registry", "mirror", "--from", "a", "--to", "b"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    b.wait_for_log("mirror-blob-committed", FAILPOINT_TIMEOUT)
        .unwrap();
    b.kill();
    let _ = mirror.wait();

    let b = Server::start(&user, &data_b, &[], &[]);
    user.add_registry("b", &b);
    user.ok(&[
        "login",
        &b.url,
        "--key",
        &b.admin_key(),
        "--name",
        "b",
        "--default",
    ]);
    assert!(
        check_consistent(&user, &b).is_empty(),
        "a record whose blob landed but was not committed is not visible"
    );
    let out = user.ok(&["registry", "mirror", "--from", "a", "--to", "b"]);
    assert!(out.contains("3 versions"), "{out}");
    assert_eq!(check_consistent(&user, &b).len(), 3);
}
