//! The client on its own, without a registry: output to a closed pipe, what `pack` refuses,
//! and architectures spelled the way other systems spell them.

use std::os::unix::fs::PermissionsExt;

use niso_tests::{Sandbox, package_dir};

#[test]
fn output_to_a_closed_pipe_ends_quietly() {
    let user = Sandbox::new();
    for args in [&["completions", "bash"][..], &["registry", "list"][..]] {
        let (status, stderr) = user.with_stdout_closed(args);
        assert!(
            status.success(),
            "niso {}: {status}: {stderr}",
            args.join(" ")
        );
        assert_eq!(stderr, "", "niso {}", args.join(" "));
    }
}

#[test]
fn pack_refuses_a_package_that_could_never_be_activated() {
    let user = Sandbox::new();
    let dir = package_dir(user.path(), "tool", "1.0.0", "any", "A tool", b"x");
    let bin = dir.join("bin/tool");
    let pack = |user: &Sandbox| user.fails(&["pack", dir.to_str().unwrap()], 1);

    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o644)).unwrap();
    let stderr = pack(&user);
    assert!(
        stderr
            .contains("lists `bin/tool` under `bin`, but it is not executable (chmod +x bin/tool)"),
        "{stderr}"
    );

    std::fs::remove_file(&bin).unwrap();
    let stderr = pack(&user);
    assert!(
        stderr.contains("lists `bin/tool` under `bin`, but the directory has no such file"),
        "{stderr}"
    );
    assert!(
        !std::fs::read_dir(user.path()).unwrap().any(|e| e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .ends_with(".niso")),
        "nothing was written"
    );
}

#[test]
fn other_systems_architecture_names_get_the_niso_name() {
    let user = Sandbox::new();
    let dir = package_dir(user.path(), "tool", "1.0.0", "amd64", "A tool", b"x");
    let stderr = user.fails(&["pack", dir.to_str().unwrap()], 1);
    assert!(
        stderr.contains("architecture `amd64` is spelled `x86_64` in niso"),
        "{stderr}"
    );
    let stderr = user.fails(&["pull", "tool:1.0.0", "--arch", "arm64"], 2);
    assert!(
        stderr.contains("architecture `arm64` is spelled `aarch64` in niso"),
        "{stderr}"
    );
}

#[test]
fn messages_say_what_happened_and_what_to_do() {
    let user = Sandbox::new();

    // A tag target written without its package.
    let stderr = user.fails(&["tag", "my-api:1.0.0", "stable"], 2);
    assert!(
        stderr.contains("`stable` names no tag; the target is NAME:TAG, e.g. `niso tag my-api:1.0.0 my-api:stable`"),
        "{stderr}"
    );

    // Rolling back something never installed.
    let stderr = user.fails(&["rollback", "nosuch"], 1);
    assert!(
        stderr.contains("nosuch is not installed here (see `niso list`)"),
        "{stderr}"
    );

    // A malformed NISO_KEY is named, once, before anything is sent.
    let out = user
        .command()
        .args(["search", "x"])
        .env("NISO_KEY", "not-a-key")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("NISO_KEY is not a niso API key"),
        "{stderr}"
    );
    assert_eq!(stderr.matches("NISO_KEY").count(), 1, "{stderr}");

    // Exporting into a directory that does not exist names that directory.
    let missing = user.path().join("no/such/dir/all.niso-bundle");
    let stderr = user.fails(
        &["registry", "export", "--to", missing.to_str().unwrap()],
        1,
    );
    assert!(
        stderr.contains(&format!(
            "directory {} does not exist",
            user.path().join("no/such/dir").display()
        )) && !stderr.contains(".partial"),
        "{stderr}"
    );

    // Under --json, the failure is JSON too.
    let out = user.run(&["rollback", "nosuch", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let error: serde_json::Value = serde_json::from_slice(&out.stderr).unwrap();
    assert_eq!(error["error"]["exit_code"], 1);
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("nosuch is not installed"),
        "{error}"
    );
}

#[test]
fn a_registry_whose_port_is_taken_leaves_nothing_behind() {
    let user = Sandbox::new();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let data = user.path().join("registry-data");
    let stderr = user.fails(
        &[
            "registry",
            "serve",
            "--listen",
            &addr,
            "--data-dir",
            data.to_str().unwrap(),
        ],
        1,
    );
    assert!(
        stderr.contains(&format!("could not listen on {addr}")) && stderr.contains("--listen"),
        "{stderr}"
    );
    assert!(!data.exists(), "no data dir or admin key was created");
}

#[test]
fn logging_in_where_nothing_answers_or_tls_meets_plain_http() {
    let user = Sandbox::new();
    let key = niso_protocol::api_key::ApiKey::generate(&mut |b| b.fill(3));

    // Nothing listens: the key was never judged.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let stderr = user.fails(&["login", &url, "--key", key.expose()], 6);
    assert!(
        stderr.contains(&format!("could not log in to {url}"))
            && !stderr.contains("did not accept"),
        "{stderr}"
    );

    // https:// to a server that answers in plain HTTP.
    let plain = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = plain.local_addr().unwrap();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for stream in plain.incoming().take(4) {
            let Ok(mut stream) = stream else { continue };
            let mut buf = [0u8; 1024];
            let _ = stream.read(&mut buf);
            let _ = stream.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
        }
    });
    let stderr = user.fails(
        &["login", &format!("https://{addr}"), "--key", key.expose()],
        6,
    );
    assert!(
        stderr.contains(&format!("answered, but not over TLS; if it is a plain-HTTP registry (as `niso registry serve` is), use http://{addr}")),
        "{stderr}"
    );
}
