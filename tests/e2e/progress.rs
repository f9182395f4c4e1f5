//! Progress on a terminal: long commands (pack, push, mirror, export, import) draw progress
//! on stderr when it is a terminal, in the units their summaries use, and none when it is not.

use std::{io::Read, process::Stdio};

use niso_tests::{Sandbox, Server, random_package};

/// Runs `niso ARGS…` as `user` with stderr on a pseudo-terminal, asserts it succeeded, and
/// returns its stdout and what the terminal showed.
fn on_a_terminal(user: &Sandbox, args: &[&str]) -> (String, String) {
    let pty = nix::pty::openpty(None, None).unwrap();
    let mut cmd = user.command();
    let mut child = cmd
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::from(pty.slave))
        .spawn()
        .unwrap();
    // `cmd` still holds the slave end; the terminal reads to its end only once it is gone.
    drop(cmd);
    let mut master = std::fs::File::from(pty.master);
    let reader = std::thread::spawn(move || {
        let mut shown = Vec::new();
        // The read fails with EIO once the child has exited and no slave end is open.
        let _ = master.read_to_end(&mut shown);
        String::from_utf8_lossy(&shown).into_owned()
    });
    let mut stdout = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    let ok = child.wait().unwrap().success();
    let shown = reader.join().unwrap();
    assert!(ok, "niso {args:?} failed:\n{shown}");
    (stdout, shown)
}

#[test]
fn long_commands_show_progress_on_a_terminal_only() {
    let user = Sandbox::new();
    let a = Server::start(&user, &user.path().join("a"), &["--no-p2p"], &[]);
    user.add_registry("a", &a);
    let b = Server::start(&user, &user.path().join("b"), &["--no-p2p"], &[]);
    user.add_registry("b", &b);
    let file = random_package(&user, "big", 16, 0x5eed_0c01);

    let src = niso_tests::package_dir(
        user.path(),
        "packed",
        "1.0.0",
        "any",
        "a package",
        &vec![7u8; 4 << 20],
    );
    let (stdout, shown) = on_a_terminal(&user, &["pack", src.to_str().unwrap()]);
    assert!(stdout.contains("Packed packed 1.0.0"), "{stdout}");
    assert!(shown.contains("packing packed 1.0.0"), "{shown:?}");

    let (stdout, shown) =
        on_a_terminal(&user, &["push", file.to_str().unwrap(), "--registry", "a"]);
    assert!(stdout.contains("Uploaded big 1.0.0"), "{stdout}");
    // One unit system: the bar counts in the summary's units (MB), never MiB.
    assert!(
        shown.contains("big 1.0.0") && shown.contains(" MB"),
        "{shown:?}"
    );
    assert!(!shown.contains("MiB"), "{shown:?}");

    let (stdout, shown) = on_a_terminal(&user, &["registry", "mirror", "--from", "a", "--to", "b"]);
    assert!(
        stdout.contains("Mirrored a → b over http: 1 version"),
        "{stdout}"
    );
    assert!(shown.contains("mirroring a → b"), "{shown:?}");

    let bundle = user.path().join("all.bundle");
    let export = [
        "registry",
        "export",
        "--to",
        bundle.to_str().unwrap(),
        "--registry",
        "a",
    ];
    let (stdout, shown) = on_a_terminal(&user, &export);
    assert!(
        stdout.contains("Exported 1 records and 1 blobs"),
        "{stdout}"
    );
    assert!(shown.contains("export"), "{shown:?}");

    let c = Server::start(&user, &user.path().join("c"), &["--no-p2p"], &[]);
    user.add_registry("c", &c);
    let (stdout, shown) = on_a_terminal(
        &user,
        &[
            "registry",
            "import",
            bundle.to_str().unwrap(),
            "--registry",
            "c",
        ],
    );
    assert!(stdout.contains("Imported from"), "{stdout}");
    assert!(shown.contains("import"), "{shown:?}");

    // Not a terminal: nothing but the summary's own lines.
    let out = user.command().args(export).output().unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
}
