//! Installing and running packages: upgrade, rollback, failed upgrades that change nothing,
//! and the registry itself as a niso package run as a service.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
};

use niso_protocol::Digest;
use niso_tests::{FakeRegistry, Sandbox, Server, http_get, package_dir};

fn bin(user: &Sandbox, exe: &str) -> PathBuf {
    user.path().join("data/niso/bin").join(exe)
}

/// Runs an activated executable through the bin directory's link.
fn run_exe(user: &Sandbox, exe: &str) -> String {
    let out = std::process::Command::new(bin(user, exe)).output().unwrap();
    assert!(
        out.status.success(),
        "{exe} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn publish(user: &Sandbox, name: &str, version: &str) {
    let dir = package_dir(
        &user.path().join("src"),
        name,
        version,
        "any",
        "a tool",
        version.as_bytes(),
    );
    let file = user.path().join(format!("{name}-{version}.niso"));
    user.ok(&["pack", dir.to_str().unwrap(), "-o", file.to_str().unwrap()]);
    user.ok(&["push", file.to_str().unwrap()]);
}

fn blob_path(data: &Path, bytes_of: &Path) -> PathBuf {
    let d = Digest::of(&std::fs::read(bytes_of).unwrap()).hex();
    data.join("blobs").join(&d[..2]).join(d)
}

#[test]
fn upgrade_run_upgrade_rollback() {
    let user = Sandbox::new();
    let node = Server::start(&user, &user.path().join("node"), &[], &[]);
    user.ok(&["login", &node.url, "--key", &node.admin_key()]);
    publish(&user, "hello", "1.0.0");
    publish(&user, "hello", "2.0.0");

    let out = user.ok(&["upgrade", "hello:1.0.0"]);
    assert!(out.contains("Installed and activated hello 1.0.0"), "{out}");
    assert_eq!(run_exe(&user, "hello"), "hello 1.0.0");
    let out = user.ok(&["upgrade", "hello:2.0.0"]);
    assert!(out.contains("Upgraded hello 1.0.0 → 2.0.0"), "{out}");
    assert_eq!(run_exe(&user, "hello"), "hello 2.0.0");
    assert!(user.ok(&["upgrade", "hello:2.0.0"]).contains("up to date"));
    assert_eq!(
        user.ok(&["rollback", "hello"]),
        "  Rolled back hello to 1.0.0\n  hello is held at 1.0.0: `niso upgrade` leaves it; \
         `niso upgrade hello` moves on from 2.0.0 again\n"
    );
    assert_eq!(run_exe(&user, "hello"), "hello 1.0.0");

    // A rollback holds the package: a bare upgrade says so and leaves it.
    let list = user.ok(&["list"]);
    assert_eq!(
        list,
        "  NAME    ACTIVE   INSTALLED      TRACKS\n  hello   1.0.0    1.0.0, 2.0.0   held (rolled back from 2.0.0)\n"
    );
    assert_eq!(
        user.ok(&["upgrade"]),
        "  hello is held at 1.0.0 (rolled back from 2.0.0); `niso upgrade hello` to move on\n"
    );
    assert_eq!(run_exe(&user, "hello"), "hello 1.0.0");
    // Installing twice is a no-op; the active version cannot be removed without --force.
    assert!(
        user.ok(&["install", "hello:2.0.0"])
            .contains("already installed")
    );
    let err = user.fails(&["remove", "hello:1.0.0"], 1);
    assert!(err.contains("is active"), "{err}");
    user.ok(&["remove", "hello:2.0.0"]);
    // Naming the package ends the hold and follows its reference again: 2.0.0.
    let out = user.ok(&["upgrade", "hello:2.0.0"]);
    assert!(out.contains("Upgraded hello 1.0.0 → 2.0.0"), "{out}");
    let list = user.ok(&["list"]);
    assert!(list.ends_with("   2.0.0\n"), "tracks 2.0.0 again: {list}");
    assert_eq!(run_exe(&user, "hello"), "hello 2.0.0");
    user.ok(&["deactivate", "hello"]);
    assert!(!bin(&user, "hello").exists());
}

#[test]
fn failed_upgrades_leave_the_active_version_alone() {
    let user = Sandbox::new();
    let data = user.path().join("node");
    let node = Server::start(&user, &data, &[], &[]);
    user.ok(&["login", &node.url, "--key", &node.admin_key()]);
    publish(&user, "tool", "1.0.0");
    user.ok(&["upgrade", "tool:1.0.0"]);
    let before =
        std::fs::read_to_string(user.path().join("data/niso/pkgs/tool/state.toml")).unwrap();

    // Corrupted in transit: the node's blob no longer matches its digest.
    publish(&user, "tool", "3.0.0");
    let blob = blob_path(&data, &user.path().join("tool-3.0.0.niso"));
    let mut bytes = std::fs::read(&blob).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&blob, bytes).unwrap();
    let err = user.fails(&["upgrade", "tool:3.0.0"], 7);
    assert!(err.contains("hashes to"), "{err}");
    assert!(
        err.contains("upgrade failed") || err.contains("upgrading tool"),
        "{err}"
    );
    assert_eq!(run_exe(&user, "tool"), "tool 1.0.0");

    // A disk write failing halfway through unpacking.
    publish(&user, "tool", "3.1.0");
    let out = user
        .command()
        .args(["upgrade", "tool:3.1.0"])
        .env("NISO_FAILPOINTS", "install-write")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("injected failure"));
    assert_eq!(run_exe(&user, "tool"), "tool 1.0.0");
    assert!(
        !user.path().join("data/niso/pkgs/tool/3.1.0").exists(),
        "no partial install is left"
    );
    assert!(
        !user
            .path()
            .join("data/niso/pkgs/tool/.3.1.0.installing")
            .exists()
    );
    assert_eq!(
        std::fs::read_to_string(user.path().join("data/niso/pkgs/tool/state.toml")).unwrap(),
        before
    );

    // The same upgrade works once the fault is gone.
    user.ok(&["upgrade", "tool:3.1.0"]);
    assert_eq!(run_exe(&user, "tool"), "tool 3.1.0");
}

/// A registry that serves whatever archive it is given, as a hostile one would.
fn hostile_registry(name: &'static str, versions: Vec<(&'static str, Vec<u8>)>) -> String {
    FakeRegistry::start(move |path| {
        versions.iter().find_map(|(v, bytes)| {
            let digest = Digest::of(bytes).to_string();
            if path.starts_with(&format!("/v1/packages/{name}/resolve"))
                && path.contains(&format!("ref={v}"))
            {
                let json = serde_json::json!({"name": name, "version": v, "arch": "any", "digest": digest, "size": bytes.len(), "description": "", "matched": "exact"});
                Some(("200 OK", json.to_string().into_bytes(), "application/json"))
            } else if path == format!("/v1/packages/{name}/blobs/{digest}") {
                Some(("200 OK", bytes.clone(), "application/octet-stream"))
            } else {
                None
            }
        })
    })
    .url
}

#[test]
fn hostile_archives_are_refused_at_install() {
    use niso_protocol::pack::Packer;
    let good = {
        let meta = b"name = \"evil\"\nversion = \"1.0.0\"\narch = \"any\"\nbin = [\"bin/evil\"]\n";
        let mut p = Packer::new(Vec::new(), meta).unwrap();
        p.add_dir("bin").unwrap();
        let script = b"#!/bin/sh\necho evil 1.0.0\n";
        p.add_file("bin/evil", true, script.len() as u64, &script[..])
            .unwrap();
        p.finish().unwrap()
    };
    // Version 2 tries to write outside the install directory.
    let bad = {
        let meta = b"name = \"evil\"\nversion = \"2.0.0\"\narch = \"any\"\n";
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(meta.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, "niso.toml", &meta[..]).unwrap();
        let mut h = tar::Header::new_gnu();
        let payload = b"pwned";
        h.set_size(payload.len() as u64);
        h.set_mode(0o755);
        let path = b"../../../../bin/evil";
        h.as_old_mut().name[..path.len()].copy_from_slice(path);
        h.set_cksum();
        b.append(&h, &payload[..]).unwrap();
        zstd::encode_all(&b.into_inner().unwrap()[..], 3).unwrap()
    };
    let url = hostile_registry("evil", vec![("1.0.0", good), ("2.0.0", bad)]);
    let user = Sandbox::new();
    user.ok(&["upgrade", "evil:1.0.0", "--registry", &url]);
    assert_eq!(run_exe(&user, "evil"), "evil 1.0.0");
    // An archive that fails the package checks is a verification failure: exit 7.
    let err = user.fails(&["upgrade", "evil:2.0.0", "--registry", &url], 7);
    assert!(err.contains("`..`"), "{err}");
    assert_eq!(run_exe(&user, "evil"), "evil 1.0.0");
    assert!(
        !user.path().join("data/bin/evil").exists(),
        "nothing escaped the install dir"
    );
    assert!(!user.path().join("data/niso/pkgs/evil/2.0.0").exists());
}

#[test]
fn the_registry_as_a_niso_package() {
    let user = Sandbox::new();
    let node = Server::start(&user, &user.path().join("node"), &[], &[]);
    user.ok(&["login", &node.url, "--key", &node.admin_key()]);
    let out = user.ok(&["pack", "--self"]);
    let arch = std::env::consts::ARCH;
    assert!(
        out.contains(&format!(
            "Packed niso-registry {} ({arch})",
            env!("CARGO_PKG_VERSION")
        )),
        "{out}"
    );
    user.ok(&[
        "push",
        &format!("niso-registry-{}-{arch}.niso", env!("CARGO_PKG_VERSION")),
    ]);

    let out = user.ok(&["activate", "niso-registry"]);
    assert!(
        out.contains("niso service run niso-registry"),
        "without systemd the foreground runner is offered: {out}"
    );
    // The packaged registry reads its listen address and data dir from the user's config.
    let served = user.path().join("served-data");
    std::fs::create_dir_all(user.path().join("config/niso")).unwrap();
    std::fs::write(
        user.path().join("config/niso/registry.toml"),
        format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n",
            served.display()
        ),
    )
    .unwrap();
    let mut cmd = user.command();
    cmd.args(["service", "run", "niso-registry"])
        .stdin(Stdio::null());
    let service = Server::spawn(cmd, &served);
    let (status, body) = http_get(&service.url, "/healthz").unwrap();
    assert!(status.contains("200"), "{status}");
    assert_eq!(body, "ok\n");
    assert!(
        served.join("admin.key").exists(),
        "the packaged node used the configured data dir"
    );
    service.stop();
}
