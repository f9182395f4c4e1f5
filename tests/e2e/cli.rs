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
    let stderr = user.fails(&["pull", "tool:1.0.0", "--arch", "arm64"], 1);
    assert!(
        stderr.contains("architecture `arm64` is spelled `aarch64` in niso"),
        "{stderr}"
    );
}
