//! The registry page, command by command, against real nodes on real sockets.

use niso_tests::{Sandbox, Server, package_dir};

fn host_arch() -> &'static str {
    std::env::consts::ARCH
}

/// `niso pack` a package and return the file name it wrote.
fn pack(user: &Sandbox, name: &str, version: &str, arch: &str, description: &str) -> String {
    let dir = package_dir(
        user.path(),
        name,
        version,
        arch,
        description,
        version.as_bytes(),
    );
    let out = user.ok(&["pack", dir.to_str().unwrap()]);
    let file = format!("{name}-{version}-{arch}.niso");
    assert!(
        out.starts_with(&format!("  Packed {name} {version} ({arch}) — ")),
        "{out}"
    );
    assert!(user.path().join(&file).exists());
    file
}

fn today() -> String {
    // The node and this test share a clock; the date is UTC, as list-keys prints it.
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let out = std::process::Command::new("date")
        .args(["-u", "-d", &format!("@{secs}"), "+%Y-%m-%d"])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[test]
fn the_registry_page_end_to_end() {
    let admin = Sandbox::new();
    let config = admin.path().join("node.toml");
    // No grace period, so GC's blob sweep is visible in this test.
    std::fs::write(&config, "[gc]\ngrace_period_secs = 0\n").unwrap();
    let node = Server::start(
        &admin,
        &admin.path().join("node-a"),
        &["--config", config.to_str().unwrap()],
        &[],
    );
    let url = node.url.clone();
    let arch = host_arch();

    // Authentication.
    let out = admin.ok(&["login", &url, "--key", &node.admin_key()]);
    assert!(
        out.contains(&format!("Logged in to {url} as admin")),
        "{out}"
    );
    let out = admin.ok(&[
        "registry",
        "create-key",
        "--scope",
        "push:my-*",
        "--scope",
        "pull:*",
        "--name",
        "ci-deploy",
    ]);
    let mut lines = out.lines();
    let ci_key = lines
        .next()
        .unwrap()
        .strip_prefix("  Created key: ")
        .unwrap()
        .to_owned();
    assert!(ci_key.starts_with("niso_k1_"));
    assert_eq!(
        lines.next(),
        Some("  Store this key securely — it cannot be retrieved later.")
    );
    let id_line = lines.next().unwrap();
    let created_id = id_line
        .strip_prefix("  Key ID: ")
        .and_then(|rest| rest.split_once(' '))
        .map(|(id, _)| id.to_owned())
        .unwrap_or_else(|| panic!("{id_line}"));
    assert_eq!(
        id_line,
        format!("  Key ID: {created_id} (revoke with: niso registry revoke-key {created_id})")
    );

    // Push, as the CI user configured only through NISO_REGISTRY and NISO_KEY.
    let ci = Sandbox::new();
    let ci_run = |args: &[&str]| {
        ci.command()
            .args(args)
            .env("NISO_REGISTRY", &url)
            .env("NISO_KEY", &ci_key)
            .output()
            .unwrap()
    };
    for version in ["1.0.0", "1.1.0-rc1", "1.1.0"] {
        let file = pack(&ci, "my-api", version, arch, "My API server");
        let out = ci_run(&["push", &file]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            stdout.starts_with(&format!("  Uploaded my-api {version} ({arch}) — ")),
            "{stdout}"
        );
        assert!(
            stdout.trim_end().ends_with(" B"),
            "size with unit: {stdout}"
        );
    }
    let other = pack(&ci, "other-app", "1.0.0", "any", "Not mine");
    let out = ci_run(&["push", &other]);
    assert_eq!(out.status.code(), Some(3), "403 is exit code 3");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("push:other-app"),
        "names the missing scope: {stderr}"
    );
    // The same bytes again are fine; other bytes under the same version are a conflict.
    let again = ci_run(&["push", &format!("my-api-1.0.0-{arch}.niso")]);
    assert!(String::from_utf8_lossy(&again.stdout).contains("Already published"));
    let changed = package_dir(
        &ci.path().join("changed"),
        "my-api",
        "1.0.0",
        arch,
        "My API server",
        b"other bytes",
    );
    let changed_file = ci.path().join("changed.niso");
    ci.ok(&[
        "pack",
        changed.to_str().unwrap(),
        "-o",
        changed_file.to_str().unwrap(),
    ]);
    let out = ci_run(&["push", changed_file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(5), "409 is exit code 5");

    // Tags.
    assert_eq!(
        admin.ok(&["tag", "my-api:1.0.0", "my-api:stable"]),
        "  Tagged my-api 1.0.0 as stable\n"
    );
    admin.ok(&["tag", "my-api:1.1.0-rc1", "my-api:beta"]);
    assert_eq!(
        admin.ok(&["registry", "list-tags", "my-api"]),
        "  TAG      VERSION\n  stable   1.0.0\n  beta     1.1.0-rc1\n  latest   1.1.0\n"
    );

    // Pull latest, exact version, tag, prefix; each lands verified in the local store.
    let pulled = |reference: &str, want: &str| {
        let out = admin.ok(&["pull", reference]);
        assert!(
            out.starts_with(&format!("  Pulled my-api {want} ({arch})")),
            "{reference}: {out}"
        );
        let saved = out
            .lines()
            .nth(1)
            .unwrap()
            .strip_prefix("  Saved to ")
            .unwrap()
            .to_owned();
        let pushed = std::fs::read(ci.path().join(format!("my-api-{want}-{arch}.niso"))).unwrap();
        assert_eq!(
            std::fs::read(saved).unwrap(),
            pushed,
            "{reference}: bytes differ"
        );
    };
    pulled("my-api", "1.1.0");
    pulled("my-api:1.0.0", "1.0.0");
    pulled("my-api:stable", "1.0.0");
    pulled("my-api:beta", "1.1.0-rc1");
    pulled("my-api:1", "1.1.0");
    let stderr = admin.fails(&["pull", "my-apo"], 4);
    assert!(
        stderr.contains("hint: similar packages: my-api"),
        "{stderr}"
    );
    let stderr = admin.fails(&["pull", "my-api:7"], 4);
    assert!(
        stderr.contains("versions: 1.0.0, 1.1.0-rc1, 1.1.0"),
        "{stderr}"
    );

    // Search.
    let out = admin.ok(&["search", "my-api"]);
    assert_eq!(out, "  my-api   1.1.0   My API server\n");
    let json: serde_json::Value =
        serde_json::from_str(&admin.ok(&["search", "api", "--json"])).unwrap();
    assert_eq!(json[0]["name"], "my-api");
    // A reader that goes away (`| head -1`) ends the listing quietly.
    let (status, stderr) = admin.with_stdout_closed(&["search", "api", "--json"]);
    assert!(status.success(), "{status}: {stderr}");
    assert_eq!(stderr, "");

    // Keys: LAST USED is filled once the key was used; revocation bites on the next request.
    let keys = admin.ok(&["registry", "list-keys"]);
    let header = keys.lines().next().unwrap();
    assert!(
        header.starts_with("  ID")
            && header.contains("NAME")
            && header.contains("SCOPES")
            && header.contains("LAST USED")
            && header.ends_with("EXPIRES"),
        "{keys}"
    );
    let ci_row = keys
        .lines()
        .find(|l| l.contains("ci-deploy"))
        .unwrap()
        .to_owned();
    assert!(ci_row.contains("push:my-*,pull:*"), "{ci_row}");
    let fields: Vec<&str> = ci_row.split_whitespace().collect();
    assert_eq!(
        fields[fields.len() - 2..],
        [today().as_str(), "never"],
        "last used today, never expires: {ci_row}"
    );
    let ci_id = ci_row.split_whitespace().next().unwrap().to_owned();
    assert_eq!(ci_id, created_id, "create-key printed the key's ID");
    assert!(ci_id.starts_with("key_"));
    assert_eq!(
        admin.ok(&["registry", "revoke-key", &ci_id]),
        format!("  Revoked key {ci_id}\n")
    );
    let out = ci_run(&["search", "my-api"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("niso login"),
        "401 suggests login"
    );

    // Garbage collection: a dry run first, then the real thing removes exactly that.
    for version in ["0.1.0", "0.2.0"] {
        let file = pack(&admin, "my-api", version, arch, "My API server");
        admin.ok(&["push", &file]);
    }
    let dry = admin.ok(&["registry", "gc", "--keep-versions", "2", "--dry-run"]);
    assert!(
        dry.starts_with("  Would remove 2 versions and 2 blobs ("),
        "{dry}"
    );
    assert!(
        dry.contains(&format!("    my-api 0.1.0 ({arch})"))
            && dry.contains(&format!("    my-api 0.2.0 ({arch})")),
        "{dry}"
    );
    assert!(dry.contains("Nothing was removed (dry run)."));
    admin.ok(&["pull", "my-api:0.1.0"]);
    let real = admin.ok(&["registry", "gc", "--keep-versions", "2"]);
    assert!(
        real.starts_with("  Removed 2 versions and 2 blobs ("),
        "{real}"
    );
    admin.fails(&["pull", "my-api:0.1.0"], 4);
    admin.ok(&["pull", "my-api:stable"]);

    // Registry configuration and node info.
    let list = admin.ok(&["registry", "list"]);
    let rows: Vec<Vec<&str>> = list
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows[0], vec!["NAME", "URL", "DEFAULT"]);
    assert_eq!(rows[1], vec!["niso.dev", "https://registry.niso.dev", "no"]);
    assert_eq!(rows[2][1..], [url.as_str(), "yes"]);
    let info = admin.ok(&["registry", "info"]);
    assert!(info.contains("Peer id    12D3KooW"), "{info}");

    // Mirroring into a second node that has never seen the first.
    let node_b = Server::start(&admin, &admin.path().join("node-b"), &[], &[]);
    admin.ok(&[
        "registry",
        "add",
        "b",
        &node_b.url,
        "--key",
        &node_b.admin_key(),
    ]);
    let a_name = rows[2][0].to_owned();
    let out = admin.ok(&["registry", "mirror", "--from", &a_name, "--to", "b"]);
    assert!(
        out.starts_with(&format!(
            "  Mirrored {a_name} → b over http: 3 versions, 2 tag updates, 0 deletions"
        )),
        "{out}"
    );
    assert!(out.contains("Fetched 3 blobs ("), "{out}");
    assert_eq!(
        admin.ok(&["registry", "list-tags", "my-api", "--registry", "b"]),
        "  TAG      VERSION\n  stable   1.0.0\n  beta     1.1.0-rc1\n  latest   1.1.0\n"
    );
    let from_b: serde_json::Value =
        serde_json::from_str(&admin.ok(&["pull", "my-api:stable", "--registry", "b", "--json"]))
            .unwrap();
    let from_a: serde_json::Value =
        serde_json::from_str(&admin.ok(&["pull", "my-api:stable", "--json"])).unwrap();
    assert_eq!(from_b["digest"], from_a["digest"]);
    let out = admin.ok(&["registry", "mirror", "--from", &a_name, "--to", "b"]);
    assert!(
        out.contains("0 versions") && out.contains("Fetched 0 blobs"),
        "second mirror copies nothing: {out}"
    );

    // Removing a tag leaves the version.
    assert_eq!(
        admin.ok(&["untag", "my-api:beta"]),
        "  Removed tag beta of my-api\n"
    );
    assert_eq!(
        admin.ok(&["registry", "list-tags", "my-api"]),
        "  TAG      VERSION\n  stable   1.0.0\n  latest   1.1.0\n"
    );
    admin.ok(&["pull", "my-api:1.1.0-rc1"]);

    // The default registry: shown, moved, and named when the default is removed.
    assert_eq!(
        admin.ok(&["registry", "default", "b"]),
        format!("  The default registry is now `b` ({})\n", node_b.url)
    );
    let peer_b = admin.ok(&["registry", "info", "--json"]);
    let peer_b: serde_json::Value = serde_json::from_str(&peer_b).unwrap();
    assert_eq!(
        admin.ok(&["registry", "remove", "b"]),
        "  Removed registry `b`\n  The default registry is now `niso.dev` (https://registry.niso.dev); \
         choose another with `niso registry default NAME`\n"
    );
    admin.fails(&["registry", "default", "b"], 1);
    admin.ok(&["registry", "default", &a_name]);
    assert_eq!(
        admin.ok(&["registry", "default"]),
        format!("  The default registry is `{a_name}` ({url})\n")
    );

    // A node's peer id, read from its data dir without asking it.
    let offline = admin.ok(&[
        "registry",
        "info",
        "--data-dir",
        admin.path().join("node-b").to_str().unwrap(),
    ]);
    let peer_id = peer_b["peer_id"].as_str().unwrap();
    assert!(
        offline.contains(&format!("  Peer id    {peer_id}\n")),
        "{offline}"
    );
    let stderr = admin.fails(&["registry", "info", "--data-dir", "/nonexistent"], 1);
    assert!(stderr.contains("has no node key"), "{stderr}");

    // Extras a user expects.
    assert!(admin.ok(&["completions", "bash"]).contains("niso"));
    let help = admin.ok(&["registry", "create-key", "--help"]);
    assert!(help.contains("Example"), "{help}");
    node.stop();
}
