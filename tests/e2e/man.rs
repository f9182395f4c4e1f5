//! `niso man`: the man pages are roff generated from the grammar `--help` shows, one page per
//! command with `--dir`.

use niso_tests::Sandbox;

/// The commands `niso --help` lists, `help` aside.
fn commands_in_help(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        // A wrapped description continues further in.
        .filter(|l| !l[2..].starts_with(' '))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(str::to_owned)
        .collect()
}

#[test]
fn niso_man_prints_a_page_naming_every_command() {
    let user = Sandbox::new();
    let page = user.ok(&["man"]);
    assert!(page.contains("\n.TH niso 1 "), "{page}");
    assert!(page.contains("\n.SH SYNOPSIS\n"), "{page}");
    assert!(page.contains("\n.SH SUBCOMMANDS\n"), "{page}");

    let commands = commands_in_help(&user.ok(&["--help"]));
    assert!(
        commands.len() > 10 && commands.iter().any(|c| c == "push"),
        "{commands:?}"
    );
    for command in &commands {
        // roff escapes the hyphen.
        let entry = format!("\nniso\\-{command}(1)\n");
        assert!(page.contains(&entry), "{command} is missing from niso(1)");
    }
    assert!(!page.contains("niso\\-help(1)"), "{page}");
}

#[test]
fn niso_man_dir_writes_a_page_per_command() {
    let user = Sandbox::new();
    let dir = user.path().join("share/man/man1");
    let out = user.ok(&["man", "--dir", dir.to_str().unwrap()]);

    let mut pages: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    pages.sort();
    assert_eq!(
        out,
        format!("  Wrote {} man pages to {}\n", pages.len(), dir.display())
    );
    for command in commands_in_help(&user.ok(&["--help"])) {
        assert!(
            pages.contains(&format!("niso-{command}.1")),
            "no page for {command}: {pages:?}"
        );
    }
    // Nested commands get pages of their own, titled with their full name.
    for (file, title) in [
        ("niso.1", "niso"),
        ("niso-push.1", "niso-push"),
        ("niso-registry-serve.1", "niso-registry-serve"),
        ("niso-service-run.1", "niso-service-run"),
    ] {
        let text = std::fs::read_to_string(dir.join(file)).unwrap();
        assert!(
            text.contains(&format!("\n.TH {title} 1 ")),
            "{file}: {text}"
        );
    }
    let serve = std::fs::read_to_string(dir.join("niso-registry-serve.1")).unwrap();
    assert!(serve.contains("\\-\\-data\\-dir"), "{serve}");
    assert!(!pages.iter().any(|p| p.contains("help")), "{pages:?}");
}
