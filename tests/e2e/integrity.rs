//! What a name resolves to, through the real CLI: a narrow key cannot make a tag shadow a
//! version or a prefix, exact versions pull as themselves, and versions with build metadata
//! never get packed.

use niso_tests::{Sandbox, Server, package_dir};

fn pack(user: &Sandbox, name: &str, version: &str) -> String {
    let dir = package_dir(user.path(), name, version, "any", name, version.as_bytes());
    user.ok(&["pack", dir.to_str().unwrap()]);
    format!("{name}-{version}-any.niso")
}

#[test]
fn tags_cannot_shadow_versions_through_the_cli() {
    let user = Sandbox::new();
    let node = Server::start(&user, &user.path().join("node"), &[], &[]);
    user.ok(&["login", &node.url, "--key", &node.admin_key()]);
    for v in ["1.0.0", "1.0.1-evil", "1.2.0"] {
        let file = pack(&user, "my-api", v);
        user.ok(&["push", &file]);
    }
    // The attack from the field: a `push:my-*` key pointing a tag named like a version at an
    // evil build, and a tag named like a prefix.
    let ci_key = user.ok(&[
        "registry",
        "create-key",
        "--scope",
        "push:my-*",
        "--scope",
        "pull:my-*",
        "--name",
        "ci",
    ]);
    let ci_key = ci_key
        .split_whitespace()
        .find(|w| w.starts_with("niso_k1_"))
        .unwrap()
        .to_owned();
    for target in ["my-api:1.0.0", "my-api:1", "my-api:1.2"] {
        let out = user
            .command()
            .args(["tag", "my-api:1.0.1-evil", target])
            .env("NISO_KEY", &ci_key)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{target} was accepted");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("shadow"), "{target}: {stderr}");
    }
    let tags = user.ok(&["registry", "list-tags", "my-api"]);
    assert_eq!(tags, "  TAG      VERSION\n  latest   1.2.0\n", "{tags}");
    for (reference, want) in [("my-api:1.0.0", "1.0.0"), ("my-api:1", "1.2.0")] {
        let out = user.ok(&["pull", reference]);
        assert!(
            out.starts_with(&format!("  Pulled my-api {want} (any)")),
            "{reference}: {out}"
        );
    }
}

#[test]
fn build_metadata_never_gets_packed() {
    let user = Sandbox::new();
    let dir = package_dir(user.path(), "app", "1.0.0+rebuild", "any", "app", b"x");
    let out = user.run(&["pack", dir.to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("build metadata"), "{stderr}");
    assert!(!user.path().join("app-1.0.0+rebuild-any.niso").exists());
}
