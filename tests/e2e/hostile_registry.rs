//! A registry that lies in its `resolve` answers: path pieces in the name, version or arch,
//! another package's name or version, a digest of other bytes, an archive of another package.
//! `pull`, `install` and `upgrade` must refuse each one, exit 7, and change nothing on disk.

use std::{collections::BTreeMap, path::Path};

use niso_protocol::{Digest, pack::Packer};
use niso_tests::{FakeRegistry, Sandbox};

/// A valid archive of `name` `version` for `any`, with one executable.
fn archive(name: &str, version: &str) -> Vec<u8> {
    let meta = format!(
        "name = \"{name}\"\nversion = \"{version}\"\narch = \"any\"\nbin = [\"bin/{name}\"]\n"
    );
    let mut p = Packer::new(Vec::new(), meta.as_bytes()).unwrap();
    p.add_dir("bin").unwrap();
    let script = format!("#!/bin/sh\necho {name} {version}\n");
    p.add_file(
        &format!("bin/{name}"),
        true,
        script.len() as u64,
        script.as_bytes(),
    )
    .unwrap();
    p.finish().unwrap()
}

fn answer(name: &str, version: &str, arch: &str, digest: &str, size: usize) -> serde_json::Value {
    serde_json::json!({
        "name": name, "version": version, "arch": arch, "digest": digest,
        "size": size, "description": "an api", "matched": "exact",
    })
}

/// Every file and symlink under `root` with its contents (or link target). Directories count
/// only through what they hold, so a removed tree shows as missing files.
fn snapshot(root: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            let rel = path.strip_prefix(root).unwrap().display().to_string();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if meta.is_symlink() {
                let target = std::fs::read_link(&path).unwrap();
                out.insert(rel, target.display().to_string().into_bytes());
            } else if meta.is_dir() {
                walk(root, &path, out);
            } else {
                out.insert(rel, std::fs::read(&path).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// A user with files where the path tricks would land: beside the client's data dir (which
/// `pkgs/NAME/../../../victim` reaches), and beside the sandbox's own data directory.
fn user_with_victims() -> Sandbox {
    let user = Sandbox::new();
    for dir in ["data/victim", "victim"] {
        std::fs::create_dir_all(user.path().join(dir)).unwrap();
        std::fs::write(user.path().join(dir).join("keep.txt"), b"precious").unwrap();
    }
    user
}

/// Runs `niso ARGS… --registry URL`, expects exit 7 and every needle in its stderr, and that
/// no file anywhere in the user's home appeared, changed or went away.
#[track_caller]
fn refused(user: &Sandbox, registry: &FakeRegistry, args: &[&str], needles: &[&str]) {
    let before = snapshot(user.path());
    let mut full = args.to_vec();
    full.extend(["--registry", registry.url.as_str()]);
    let stderr = user.fails(&full, 7);
    for needle in needles {
        assert!(
            stderr.contains(needle),
            "niso {}: `{needle}` not in:\n{stderr}",
            args.join(" ")
        );
    }
    assert!(
        stderr.contains("niso: error: "),
        "niso {}: {stderr}",
        args.join(" ")
    );
    let after = snapshot(user.path());
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        after.keys().collect::<Vec<_>>(),
        "niso {} changed the files on disk",
        args.join(" ")
    );
    assert!(before == after, "niso {} changed a file", args.join(" "));
    for dir in ["data/victim", "victim"] {
        assert_eq!(
            std::fs::read(user.path().join(dir).join("keep.txt")).unwrap(),
            b"precious"
        );
    }
}

const COMMANDS: [&str; 3] = ["pull", "install", "upgrade"];

#[test]
fn path_pieces_in_an_answer_are_refused_before_any_download() {
    let good = archive("my-api", "1.0.0");
    let digest = Digest::of(&good).to_string();
    let host = std::env::consts::ARCH;
    let tricks = [
        (
            "name",
            answer("../../victim", "1.0.0", "any", &digest, good.len()),
        ),
        (
            "name",
            answer("/tmp/victim", "1.0.0", "any", &digest, good.len()),
        ),
        (
            "name",
            answer("my-api/../..", "1.0.0", "any", &digest, good.len()),
        ),
        (
            "version",
            answer("my-api", "../../../victim", "any", &digest, good.len()),
        ),
        (
            "version",
            answer(
                "my-api",
                "1.0.0/../../../../victim",
                "any",
                &digest,
                good.len(),
            ),
        ),
        (
            "arch",
            answer("my-api", "1.0.0", "../../victim", &digest, good.len()),
        ),
        (
            "arch",
            answer("my-api", "1.0.0", "/victim", &digest, good.len()),
        ),
        (
            "digest",
            answer("my-api", "1.0.0", host, "blake3:../../victim", good.len()),
        ),
    ];
    let user = user_with_victims();
    for (field, trick) in tricks {
        let registry = FakeRegistry::answering(trick.clone(), good.clone());
        for command in COMMANDS {
            refused(
                &user,
                &registry,
                &[command, "my-api"],
                &[
                    &format!("the registry answered with {field} `"),
                    "which is not valid; refusing it",
                ],
            );
        }
        assert!(
            !registry.asked_for_a_blob(),
            "{trick}: the client downloaded before checking the answer"
        );
    }
    assert!(!user.path().join("data/niso/pkgs").exists());
}

#[test]
fn an_answer_for_another_package_version_or_arch_is_refused() {
    let evil = archive("evil", "1.0.0");
    let digest = Digest::of(&evil).to_string();
    let user = user_with_victims();

    let registry = FakeRegistry::answering(
        answer("evil", "1.0.0", "any", &digest, evil.len()),
        evil.clone(),
    );
    for command in COMMANDS {
        refused(
            &user,
            &registry,
            &[command, "my-api"],
            &["the registry answered for `evil` but `my-api` was asked; refusing it"],
        );
    }

    let newer = archive("my-api", "6.6.6");
    let registry = FakeRegistry::answering(
        answer(
            "my-api",
            "6.6.6",
            "any",
            &Digest::of(&newer).to_string(),
            newer.len(),
        ),
        newer,
    );
    for command in COMMANDS {
        refused(
            &user,
            &registry,
            &[command, "my-api:1.0.0"],
            &["the registry answered my-api 6.6.6 but version 1.0.0 was asked; refusing it"],
        );
    }

    // An architecture no machine runs: never the host's, never `any`.
    let registry = FakeRegistry::answering(
        answer("my-api", "1.0.0", "pdp11", &digest, evil.len()),
        evil,
    );
    for command in COMMANDS {
        refused(
            &user,
            &registry,
            &[command, "my-api"],
            &[
                "the registry answered with a build for `pdp11`",
                "refusing it",
            ],
        );
    }
    assert!(!registry.asked_for_a_blob());
}

#[test]
fn bytes_that_are_not_what_the_answer_says_are_refused() {
    let user = user_with_victims();
    // The honest registry's version stays installed and active through every refusal below.
    let good = archive("my-api", "1.0.0");
    let honest = FakeRegistry::answering(
        answer(
            "my-api",
            "1.0.0",
            "any",
            &Digest::of(&good).to_string(),
            good.len(),
        ),
        good.clone(),
    );
    user.ok(&["upgrade", "my-api:1.0.0", "--registry", &honest.url]);

    // A digest of other bytes than the blob served.
    let served = archive("my-api", "2.0.0");
    let listed = Digest::of(b"something else").to_string();
    let registry = FakeRegistry::answering(
        answer("my-api", "2.0.0", "any", &listed, served.len()),
        served,
    );
    for command in COMMANDS {
        refused(
            &user,
            &registry,
            &[command, "my-api:2.0.0"],
            &["hashes to", &listed, "nothing was kept"],
        );
    }

    // The digest fits the bytes, but the archive inside is another package.
    let evil = archive("evil", "2.0.0");
    let registry = FakeRegistry::answering(
        answer(
            "my-api",
            "2.0.0",
            "any",
            &Digest::of(&evil).to_string(),
            evil.len(),
        ),
        evil,
    );
    for command in COMMANDS {
        refused(
            &user,
            &registry,
            &[command, "my-api:2.0.0"],
            &[
                "says it is evil 2.0.0 (any), not the my-api 2.0.0 (any) the registry listed",
                "refusing it",
            ],
        );
    }

    // Bytes that hash right but are no archive at all.
    let junk = b"not a package".to_vec();
    let registry = FakeRegistry::answering(
        answer(
            "my-api",
            "2.0.0",
            "any",
            &Digest::of(&junk).to_string(),
            junk.len(),
        ),
        junk,
    );
    for command in COMMANDS {
        refused(
            &user,
            &registry,
            &[command, "my-api:2.0.0"],
            &["is not a valid .niso archive"],
        );
    }

    let out = std::process::Command::new(user.path().join("data/niso/bin/my-api"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "my-api 1.0.0\n");
}
