//! The README's examples, run. Every console block not marked `*Illustrative: …*` is one part of
//! a story played in order against a real node from a fresh home directory: each `$ niso …`
//! line runs, must succeed, and must print what the README shows under it. Volatile parts are
//! matched by kind — keys, key ids, dates, sizes — and a key or key id must stand for the
//! same thing wherever the README repeats it (`revoke-key` gets the id `create-key` printed);
//! `...` matches anything within a line, or any number of lines on a line of its own; a
//! command with nothing under it is only checked to succeed. Every TOML block names its file
//! in its first line and parses as that file.

use std::{
    collections::HashMap,
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Stdio},
    sync::mpsc,
    time::Duration,
};

use niso_tests::{Sandbox, package_dir};
use regex::Regex;

const README: &str = include_str!("../../README.md");
const ILLUSTRATIVE: &str = "*Illustrative:";

/// A fenced block of the README.
struct Block {
    /// 1-based line of the opening fence.
    line: usize,
    lang: String,
    body: Vec<String>,
    /// The paragraph just before it says it is illustrative.
    illustrative: bool,
}

fn blocks() -> Vec<Block> {
    let lines: Vec<&str> = README.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let Some(lang) = lines[i].strip_prefix("```") else {
            i += 1;
            continue;
        };
        let line = i + 1;
        let previous = lines[..i]
            .iter()
            .rev()
            .find(|l| !l.trim().is_empty())
            .copied()
            .unwrap_or_default();
        let mut body = Vec::new();
        i += 1;
        while i < lines.len() && !lines[i].starts_with("```") {
            body.push(lines[i].to_owned());
            i += 1;
        }
        assert!(i < lines.len(), "README.md:{line}: the block never ends");
        out.push(Block {
            line,
            lang: lang.trim().to_owned(),
            body,
            illustrative: previous.starts_with(ILLUSTRATIVE),
        });
        i += 1;
    }
    out
}

/// One `$ command` of a console block and the lines the README shows under it.
struct Step {
    line: usize,
    command: String,
    expected: Vec<String>,
}

fn steps(block: &Block) -> Vec<Step> {
    let mut out: Vec<Step> = Vec::new();
    for (n, text) in block.body.iter().enumerate() {
        let line = block.line + 1 + n;
        if let Some(command) = text.strip_prefix("$ ") {
            out.push(Step {
                line,
                command: strip_comment(command),
                expected: Vec::new(),
            });
        } else if !text.trim().is_empty() {
            out.last_mut()
                .unwrap_or_else(|| panic!("README.md:{line}: output before any `$ ` command"))
                .expected
                .push(text.clone());
        }
    }
    out
}

/// The command without a trailing `# comment` (two spaces or more before the `#`).
fn strip_comment(command: &str) -> String {
    let mut quote = None;
    let bytes = command.as_bytes();
    for (i, c) in command.char_indices() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, '#') if i >= 2 && bytes[i - 1] == b' ' && bytes[i - 2] == b' ' => {
                return command[..i].trim_end().to_owned();
            }
            _ => {}
        }
    }
    command.trim_end().to_owned()
}

/// Volatile parts of output, by kind; `bind` kinds must be used consistently.
struct Kind {
    pattern: &'static str,
    bind: bool,
}

const KINDS: &[Kind] = &[
    Kind {
        pattern: r"niso_k1_[A-Za-z0-9_-]+",
        bind: true,
    },
    Kind {
        pattern: r"key_[A-Za-z0-9]{12}",
        bind: true,
    },
    Kind {
        pattern: r"\d{4}-\d{2}-\d{2}",
        bind: false,
    },
    Kind {
        pattern: r"\d+(?:\.\d)? (?:B|kB|MB|GB|TB)",
        bind: false,
    },
];

/// The story's state: the user, the node the README started, and what README literals stand
/// for here.
struct Story {
    user: Sandbox,
    node: Option<Child>,
    /// README text → this run's text, for commands; reversed for output.
    replace: Vec<(String, String)>,
    /// README literal of a bound kind → the value it stood for in this run.
    bound: HashMap<String, String>,
    vars: HashMap<&'static str, String>,
}

impl Drop for Story {
    fn drop(&mut self) {
        if let Some(node) = &mut self.node {
            let _ = node.kill();
            let _ = node.wait();
        }
    }
}

impl Story {
    fn new() -> Self {
        let user = Sandbox::new();
        let host_arch = std::env::consts::ARCH.to_owned();
        let mut replace = vec![
            (
                "/var/lib/niso-registry".to_owned(),
                user.path().join("registry-data").display().to_string(),
            ),
            (
                "/home/me/.local/share".to_owned(),
                user.path().join("data").display().to_string(),
            ),
        ];
        if host_arch != "x86_64" {
            replace.push(("x86_64".to_owned(), host_arch));
        }
        Self {
            user,
            node: None,
            replace,
            bound: HashMap::new(),
            vars: HashMap::new(),
        }
    }

    fn forward(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for (readme, here) in &self.replace {
            out = out.replace(readme, here);
        }
        for (readme, here) in &self.bound {
            out = out.replace(readme, here);
        }
        out
    }

    fn backward(&self, text: &str) -> String {
        let mut pairs: Vec<&(String, String)> = self.replace.iter().collect();
        pairs.sort_by_key(|(_, here)| std::cmp::Reverse(here.len()));
        let mut out = text.to_owned();
        for (readme, here) in pairs {
            out = out.replace(here.as_str(), readme);
        }
        out
    }

    /// Runs one README step and checks its output.
    fn run(&mut self, step: &Step) {
        let words = self.words(step);
        assert_eq!(
            words[0], "niso",
            "README.md:{}: not a niso command",
            step.line
        );
        if words.get(1..3).is_some_and(|w| w == ["registry", "serve"]) {
            return self.serve(step, &words[1..]);
        }
        let out = self.user.command().args(&words[1..]).output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "README.md:{}: `{}` failed ({}):\n{}{stdout}",
            step.line,
            step.command,
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        if !step.expected.is_empty() {
            let shown: Vec<String> = stdout.lines().map(|l| self.backward(l)).collect();
            self.expect(step, &shown);
        }
    }

    /// The command's words, as a shell would split them: quotes, `$VAR` and `$(cat FILE)`.
    fn words(&self, step: &Step) -> Vec<String> {
        let text = self.forward(&step.command);
        let mut words = Vec::new();
        let mut word = String::new();
        let mut in_word = false;
        let mut chars = text.chars().peekable();
        let mut quote = None;
        while let Some(c) = chars.next() {
            match (quote, c) {
                (None, ' ') => {
                    if in_word {
                        words.push(std::mem::take(&mut word));
                        in_word = false;
                    }
                }
                (None, '\'' | '"') => {
                    quote = Some(c);
                    in_word = true;
                }
                (Some(q), c) if c == q => quote = None,
                (q, '$') if q != Some('\'') => {
                    in_word = true;
                    if chars.peek() == Some(&'(') {
                        let inner: String =
                            chars.by_ref().skip(1).take_while(|&c| c != ')').collect();
                        let file = inner.strip_prefix("cat ").unwrap_or_else(|| {
                            panic!("README.md:{}: only $(cat FILE) is understood", step.line)
                        });
                        word.push_str(std::fs::read_to_string(file.trim()).unwrap().trim_end());
                    } else {
                        let mut name = String::new();
                        while let Some(&c) = chars.peek() {
                            if !(c.is_ascii_alphanumeric() || c == '_') {
                                break;
                            }
                            name.push(c);
                            chars.next();
                        }
                        word.push_str(self.vars.get(name.as_str()).unwrap_or_else(|| {
                            panic!("README.md:{}: ${name} is not set by the story", step.line)
                        }));
                    }
                }
                (_, c) => {
                    word.push(c);
                    in_word = true;
                }
            }
        }
        if in_word {
            words.push(word);
        }
        words
    }

    /// `niso registry serve`: started in the background; the README shows its first lines.
    fn serve(&mut self, step: &Step, args: &[String]) {
        let args: Vec<String> = args
            .iter()
            .map(|a| {
                if a == "127.0.0.1:5000" {
                    "127.0.0.1:0".to_owned()
                } else {
                    a.clone()
                }
            })
            .collect();
        let mut child = self
            .user
            .command()
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        self.node = Some(child);
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                if tx.send(line.unwrap_or_default()).is_err() {
                    break;
                }
            }
        });
        let mut shown = Vec::new();
        for _ in &step.expected {
            let line = rx
                .recv_timeout(Duration::from_secs(60))
                .unwrap_or_else(|_| {
                    panic!("README.md:{}: the node printed only {shown:?}", step.line)
                });
            if let Some(port) = line
                .trim()
                .strip_prefix("niso registry listening on http://127.0.0.1:")
            {
                self.replace
                    .push(("127.0.0.1:5000".to_owned(), format!("127.0.0.1:{port}")));
            }
            shown.push(self.backward(&line));
        }
        self.expect(step, &shown);
    }

    fn expect(&mut self, step: &Step, shown: &[String]) {
        let expected: Vec<String> = step.expected.iter().map(|l| squeeze(l)).collect();
        let shown: Vec<String> = shown
            .iter()
            .map(|l| squeeze(l))
            .filter(|l| !l.is_empty())
            .collect();
        let mut bound = self.bound.clone();
        if !lines_match(&expected, &shown, &mut bound) {
            panic!(
                "README.md:{}: `{}` printed\n{}\nbut the README shows\n{}",
                step.line,
                step.command,
                shown.join("\n"),
                expected.join("\n")
            );
        }
        self.bound = bound;
    }
}

fn squeeze(line: &str) -> String {
    line.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Whether `shown` has the shape of `expected`, line by line, extending `bound`.
fn lines_match(expected: &[String], shown: &[String], bound: &mut HashMap<String, String>) -> bool {
    let Some((first, rest)) = expected.split_first() else {
        return shown.is_empty();
    };
    if first == "..." {
        return (0..=shown.len()).any(|skip| {
            let mut trial = bound.clone();
            let ok = lines_match(rest, &shown[skip..], &mut trial);
            if ok {
                *bound = trial;
            }
            ok
        });
    }
    let Some((line, others)) = shown.split_first() else {
        return false;
    };
    let mut trial = bound.clone();
    if line_matches(first, line, &mut trial) && lines_match(rest, others, &mut trial) {
        *bound = trial;
        return true;
    }
    false
}

/// One line: literal text, `...` for anything, and volatile parts matched by kind.
fn line_matches(expected: &str, shown: &str, bound: &mut HashMap<String, String>) -> bool {
    // (pattern, Some(bind) for a volatile kind, None for `...`)
    let parts: Vec<(Regex, Option<bool>)> = KINDS
        .iter()
        .map(|k| (Regex::new(k.pattern).unwrap(), Some(k.bind)))
        .chain(std::iter::once((Regex::new(r"\.\.\.").unwrap(), None)))
        .collect();
    // Cut the expected line into literal text and those parts, left to right.
    let mut pattern = String::from("^");
    let mut captures = Vec::new();
    let mut rest = expected;
    loop {
        let next = parts
            .iter()
            .filter_map(|(re, part)| re.find(rest).map(|m| (m, re, *part)))
            .min_by_key(|(m, _, _)| m.start());
        let Some((m, re, part)) = next else {
            pattern.push_str(&regex::escape(rest));
            break;
        };
        pattern.push_str(&regex::escape(&rest[..m.start()]));
        match part {
            None => pattern.push_str(".*"),
            Some(bind) => {
                pattern.push_str(&format!("({})", re.as_str()));
                captures.push((m.as_str().to_owned(), bind));
            }
        }
        rest = &rest[m.end()..];
    }
    pattern.push('$');
    let Some(found) = Regex::new(&pattern).unwrap().captures(shown) else {
        return false;
    };
    for (i, (literal, bind)) in captures.into_iter().enumerate() {
        if !bind {
            continue;
        }
        let value = found[i + 1].to_owned();
        match bound.get(&literal) {
            Some(v) if *v != value => return false,
            Some(_) => {}
            None => {
                // Two README literals for one value would hide a mistake in the README.
                if bound.values().any(|v| *v == value) {
                    return false;
                }
                bound.insert(literal, value);
            }
        }
    }
    true
}

/// The README's own `my-api/niso.toml`, for this machine's architecture.
fn package_toml(story: &Story) -> String {
    let block = blocks()
        .into_iter()
        .find(|b| b.lang == "toml" && b.body[0] == "# my-api/niso.toml")
        .expect("the README shows my-api/niso.toml");
    story.forward(&block.body[1..].join("\n"))
}

fn write_executable(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// What the story needs before a block that the README does not show being made.
fn prepare(story: &mut Story, first_command: &str) {
    let arch = std::env::consts::ARCH;
    if first_command.starts_with("niso pack my-api") {
        let dir = story.user.path().join("my-api");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("niso.toml"), package_toml(story)).unwrap();
        write_executable(&dir.join("bin/my-api"), "#!/bin/sh\necho my-api 1.0.0\n");
    } else if first_command.starts_with("niso pull my-api:1.0.0") {
        // Other versions and packages the walkthrough pulls, searches, tags, deletes and
        // collects.
        let published: &[(&str, &str, &str, &str)] = &[
            ("my-api", "0.1.0", arch, "My API server"),
            ("my-api", "0.2.0", arch, "My API server"),
            ("my-api", "0.4.0", arch, "My API server"),
            ("my-api", "0.5.0", arch, "My API server"),
            ("my-api", "0.9.0", arch, "My API server"),
            ("my-api", "1.1.0-rc1", arch, "My API server"),
            ("my-api", "1.1.0", arch, "My API server"),
            ("postgres", "16.0.0", "any", "Official PostgreSQL package"),
            ("nodejs", "20.11.0", "any", "Node.js"),
        ];
        let root = story.user.path().join("fixtures");
        for (name, version, arch, description) in published {
            let dir = package_dir(&root, name, version, arch, description, version.as_bytes());
            let file = root.join(format!("{name}-{version}-{arch}.niso"));
            story
                .user
                .ok(&["pack", dir.to_str().unwrap(), "-o", file.to_str().unwrap()]);
            story.user.ok(&["push", file.to_str().unwrap()]);
        }
        story.user.ok(&["tag", "my-api:1.1.0-rc1", "my-api:beta"]);
    } else if first_command.starts_with("niso registry add private") {
        let key =
            std::fs::read_to_string(story.user.path().join("registry-data/admin.key")).unwrap();
        story.vars.insert("PRIVATE_KEY", key.trim().to_owned());
    }
}

#[test]
fn every_console_example_of_the_readme_runs_as_shown() {
    let mut story = Story::new();
    let mut ran = 0;
    for block in blocks() {
        if block.lang != "console" {
            continue;
        }
        let steps = steps(&block);
        assert!(
            !steps.is_empty(),
            "README.md:{}: a console block without commands",
            block.line
        );
        if block.illustrative {
            continue;
        }
        prepare(&mut story, &steps[0].command);
        for step in &steps {
            story.run(step);
            ran += 1;
        }
    }
    assert!(ran >= 25, "only {ran} README commands ran");
}

/// A config example that only `niso` itself can judge: the client config.
fn client_config_parses(text: &str) -> Result<(), String> {
    let user = Sandbox::new();
    let path: PathBuf = user.path().join("config/niso/config.toml");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, text).unwrap();
    let out: std::process::Output = user.command().args(["registry", "list"]).output().unwrap();
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[test]
fn every_toml_example_of_the_readme_parses_as_the_file_it_names() {
    let story = Story::new();
    let mut checked = 0;
    for block in blocks().into_iter().filter(|b| b.lang == "toml") {
        let first = block.body[0].as_str();
        let text = block.body.join("\n");
        match first {
            "# my-api/niso.toml" | "# my-api/niso.toml, continued" => {
                let mut toml = package_toml(&story);
                if first.ends_with("continued") {
                    toml = format!("{toml}\n{}", story.forward(&text));
                }
                let dir = story.user.path().join(format!("pkg-{}", block.line));
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(dir.join("niso.toml"), toml).unwrap();
                write_executable(&dir.join("bin/my-api"), "#!/bin/sh\n");
                let out: std::process::Output = story
                    .user
                    .command()
                    .args(["pack", dir.to_str().unwrap(), "-o"])
                    .arg(dir.join("out.niso"))
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "README.md:{}: {}",
                    block.line,
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            "# ~/.config/niso/config.toml" => {
                if let Err(e) = client_config_parses(&text) {
                    panic!("README.md:{}: {e}", block.line);
                }
            }
            // Node configs parse as the node's config struct in its own unit tests
            // (node/src/config.rs), which the e2e suite does not link.
            first
                if first.starts_with("# niso registry serve --config")
                    || first.starts_with("# ~/.config/niso/registry.toml") => {}
            other => panic!(
                "README.md:{}: a TOML example must name its file in its first line, not {other:?}",
                block.line
            ),
        }
        checked += 1;
    }
    assert!(checked >= 6, "only {checked} TOML examples");
}

#[test]
fn the_matcher_tells_shapes_apart() {
    let mut bound = HashMap::new();
    let line = |e: &str, s: &str, b: &mut HashMap<String, String>| line_matches(e, s, b);
    assert!(line(
        "Key ID: key_6udsoB1DO8yn (revoke with: niso registry revoke-key key_6udsoB1DO8yn)",
        "Key ID: key_AAAAAAAAAAAA (revoke with: niso registry revoke-key key_AAAAAAAAAAAA)",
        &mut bound
    ));
    assert_eq!(bound["key_6udsoB1DO8yn"], "key_AAAAAAAAAAAA");
    // The same README id cannot stand for another value, nor two ids for one value.
    assert!(!line(
        "x key_6udsoB1DO8yn",
        "x key_BBBBBBBBBBBB",
        &mut bound
    ));
    assert!(!line(
        "x key_NvKbnmgfwrSo",
        "x key_AAAAAAAAAAAA",
        &mut bound
    ));
    assert!(line(
        "Pulled 8.2 MB on 2026-11-26",
        "Pulled 1.1 kB on 2026-12-01",
        &mut bound
    ));
    assert!(!line(
        "Pulled my-api 1.0.0",
        "Pulled my-api 1.1.0",
        &mut bound
    ));
    assert!(line(
        "Admin key: x (log in with: ...)",
        "Admin key: x (log in with: anything)",
        &mut bound
    ));
    let lines = |e: &[&str], s: &[&str]| {
        let e: Vec<String> = e.iter().map(|l| (*l).to_owned()).collect();
        let s: Vec<String> = s.iter().map(|l| (*l).to_owned()).collect();
        lines_match(&e, &s, &mut HashMap::new())
    };
    assert!(lines(&["a", "...", "d"], &["a", "b", "c", "d"]));
    assert!(!lines(&["a", "d"], &["a", "b", "d"]));
    assert!(!lines(&["a"], &["a", "extra"]));
    assert_eq!(strip_comment("niso pull x   # a comment"), "niso pull x");
    assert_eq!(
        strip_comment("niso x --scope \"a  #b\""),
        "niso x --scope \"a  #b\""
    );
}
