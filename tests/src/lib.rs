//! Harness for end-to-end tests: build and locate the real `niso` binary, give each test its
//! own HOME, start registry nodes on free ports and wait for their readiness line.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test harness: failures are test failures"
)]

pub mod catalog;
pub mod fake_registry;
pub mod http1;
pub mod lan;
pub mod proxy;

pub use fake_registry::FakeRegistry;
pub use proxy::{Fault, Proxy};

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::{OnceLock, mpsc},
    time::Duration,
};

/// How long a node may take to print its listening line.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// The `niso` binary: `NISO_BIN` if set; else the one cargo built for this run when the caller
/// is an integration test of niso-cli (the e2e suite: cargo passes its path in
/// `CARGO_BIN_EXE_niso`, and it has the same features as the tests, so nothing is compiled
/// twice); else (benches) built on first use with the caller's profile.
pub fn niso_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(path) = std::env::var_os("NISO_BIN") {
            return PathBuf::from(path);
        }
        if let Some(path) = std::env::var_os("CARGO_BIN_EXE_niso") {
            return PathBuf::from(path);
        }
        escargot::CargoBuild::new()
            .package("niso-cli")
            .bin("niso")
            .current_release()
            .run()
            .expect("building the niso binary")
            .path()
            .to_owned()
    })
}

/// An isolated user: its own HOME, config and data dirs.
pub struct Sandbox {
    pub dir: tempfile::TempDir,
}

impl Default for Sandbox {
    fn default() -> Self {
        Self::new()
    }
}

impl Sandbox {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `niso ARGS…` as this user, with no NISO_* variables inherited.
    pub fn command(&self) -> Command {
        let mut c = Command::new(niso_bin());
        c.current_dir(self.path())
            .env("HOME", self.path())
            .env("XDG_CONFIG_HOME", self.path().join("config"))
            .env("XDG_DATA_HOME", self.path().join("data"))
            .env_remove("NISO_REGISTRY")
            .env_remove("NISO_KEY")
            .env_remove("NISO_LOG")
            .env_remove("NISO_FAILPOINTS")
            // Tests run services in the foreground; they never touch the machine's systemd.
            .env("NISO_NO_SYSTEMD", "1");
        c
    }

    /// Runs `niso ARGS…` and returns its output without judging it.
    pub fn run(&self, args: &[&str]) -> Output {
        self.command().args(args).output().unwrap()
    }

    /// Runs `niso ARGS…` with its stdout a pipe whose reader is already gone, as after
    /// `niso … | head -1`: the exit status and stderr.
    pub fn with_stdout_closed(&self, args: &[&str]) -> (std::process::ExitStatus, String) {
        use std::io::Read;
        let mut child = self
            .command()
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let mut stderr = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
        (child.wait().unwrap(), stderr)
    }

    /// Runs `niso ARGS…`, asserts success and returns stdout.
    #[track_caller]
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "niso {} failed ({}):\nstdout: {}\nstderr: {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Registers `server` with the client as `name`, with its admin key.
    pub fn add_registry(&self, name: &str, server: &Server) {
        self.ok(&[
            "registry",
            "add",
            name,
            &server.url,
            "--key",
            &server.admin_key(),
        ]);
    }

    /// Starts a node on data dir `NAME` with config file `NAME.toml` holding `config`, and
    /// registers it as `name` (starting `name` again restarts it on the same data).
    pub fn node(&self, name: &str, config: &str) -> Server {
        let path = self.path().join(format!("{name}.toml"));
        std::fs::write(&path, config).unwrap();
        let server = Server::start(
            self,
            &self.path().join(name),
            &["--config", path.to_str().unwrap()],
            &[],
        );
        self.add_registry(name, &server);
        server
    }

    /// Pulls `reference` (from the default registry) into a file and asserts its bytes are
    /// `original`'s: what was published is what was pushed.
    #[track_caller]
    pub fn assert_pulls_back(&self, reference: &str, original: &Path) {
        let back = self.path().join("pulled-back.niso");
        self.ok(&["pull", reference, "-o", back.to_str().unwrap()]);
        assert!(
            std::fs::read(&back).unwrap() == std::fs::read(original).unwrap(),
            "{reference} pulled back differs from {}",
            original.display()
        );
        std::fs::remove_file(back).unwrap();
    }

    /// Runs `niso ARGS…`, asserts it fails with `code` and returns stderr.
    #[track_caller]
    pub fn fails(&self, args: &[&str], code: i32) -> String {
        let out = self.run(args);
        assert_eq!(
            out.status.code(),
            Some(code),
            "niso {}:\nstdout: {}\nstderr: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stderr).unwrap()
    }
}

/// A `niso registry serve` process.
pub struct Server {
    pub child: Child,
    pub url: String,
    pub data_dir: PathBuf,
    stderr_lines: mpsc::Receiver<String>,
}

impl Server {
    /// Starts a node on a free port with `data_dir`, extra flags and environment.
    pub fn start(sandbox: &Sandbox, data_dir: &Path, flags: &[&str], env: &[(&str, &str)]) -> Self {
        let mut cmd = sandbox.command();
        cmd.args(["registry", "serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir);
        // Tests never take the default p2p port or look at the real LAN unless they ask to.
        if !flags
            .iter()
            .any(|f| f.starts_with("--p2p-listen") || *f == "--no-p2p")
        {
            cmd.args(["--p2p-listen", "/ip4/127.0.0.1/tcp/0"]);
        }
        if !flags.contains(&"--mdns") {
            cmd.arg("--no-mdns");
        }
        cmd.args(flags.iter().filter(|f| **f != "--mdns"));
        for (k, v) in env {
            cmd.env(k, v);
        }
        Self::spawn(cmd, data_dir)
    }

    /// Runs `cmd` (anything that ends up running `niso registry serve`) and waits for the
    /// node's listening line on its stdout.
    pub fn spawn(mut cmd: Command, data_dir: &Path) -> Self {
        if std::env::var_os("NISO_LOG").is_none()
            && !cmd.get_envs().any(|(k, v)| k == "NISO_LOG" && v.is_some())
        {
            cmd.env("NISO_LOG", "info");
        }
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (ready_tx, ready_rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(url) = line.trim().strip_prefix("niso registry listening on ") {
                    let _ = ready_tx.send(url.to_owned());
                }
            }
        });
        let (line_tx, stderr_lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if line_tx.send(line).is_err() {
                    break;
                }
            }
        });
        let url = match ready_rx.recv_timeout(READY_TIMEOUT) {
            Ok(url) => url,
            Err(_) => {
                let _ = child.kill();
                let log: Vec<String> = stderr_lines.try_iter().collect();
                panic!("node did not become ready:\n{}", log.join("\n"));
            }
        };
        Self {
            child,
            url,
            data_dir: data_dir.to_owned(),
            stderr_lines,
        }
    }

    pub fn admin_key(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("admin.key"))
            .unwrap()
            .trim()
            .to_owned()
    }

    /// Waits until the node logs a line containing `needle` (a failpoint, say).
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> Result<String, Vec<String>> {
        let deadline = std::time::Instant::now() + timeout;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.stderr_lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return Ok(line),
                Ok(line) => seen.push(line),
                Err(_) => return Err(seen),
            }
        }
    }

    /// Everything the node logged so far (and not yet consumed by `wait_for_log`).
    pub fn log(&self) -> String {
        self.stderr_lines.try_iter().collect::<Vec<_>>().join("\n")
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM and wait: the graceful path.
    pub fn stop(mut self) {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).unwrap());
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A node in `user`'s sandbox (data under `name`) that shares every package with every peer,
/// logging warnings only.
pub fn sharing_node(user: &Sandbox, name: &str) -> Server {
    let cfg = user.path().join(format!("{name}.toml"));
    std::fs::write(&cfg, "[[share]]\nto = \"*\"\npackages = [\"*\"]\n").unwrap();
    Server::start(
        user,
        &user.path().join(name),
        &["--config", cfg.to_str().unwrap()],
        &[("NISO_LOG", "warn")],
    )
}

/// A fresh node (data under `name`) that bootstraps from `origin_addr` and replicates every
/// package from everyone with `blobs` (`eager` or `lazy`), logging warnings only.
pub fn replica(user: &Sandbox, name: &str, origin_addr: &str, blobs: &str) -> Server {
    let cfg = user.path().join(format!("{name}.toml"));
    std::fs::write(
        &cfg,
        format!(
            "[p2p]\nbootstrap = [\"{origin_addr}\"]\n\n[[replicate]]\nfrom = \"*\"\npackages = [\"*\"]\nblobs = \"{blobs}\"\n"
        ),
    )
    .unwrap();
    Server::start(
        user,
        &user.path().join(name),
        &["--config", cfg.to_str().unwrap()],
        &[("NISO_LOG", "warn")],
    )
}

/// Writes a package directory with `niso.toml` and one executable, ready for `niso pack`.
pub fn package_dir(
    root: &Path,
    name: &str,
    version: &str,
    arch: &str,
    description: &str,
    payload: &[u8],
) -> PathBuf {
    let dir = root.join(format!("src-{name}-{version}-{arch}"));
    std::fs::create_dir_all(dir.join("bin")).unwrap();
    std::fs::write(
        dir.join("niso.toml"),
        format!("name = \"{name}\"\nversion = \"{version}\"\narch = \"{arch}\"\ndescription = \"{description}\"\nbin = [\"bin/{name}\"]\n"),
    )
    .unwrap();
    let script = dir.join(format!("bin/{name}"));
    std::fs::write(&script, format!("#!/bin/sh\necho {name} {version}\n")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(dir.join("payload.bin"), payload).unwrap();
    dir
}

/// `GET path` over plain HTTP/1.0 on `url` (`http://host:port`): status line and body.
pub fn http_get(url: &str, path: &str) -> std::io::Result<(String, String)> {
    http_get_with_key(url, path, None)
}

/// Like [`http_get`], with a bearer key.
pub fn http_get_with_key(
    url: &str,
    path: &str,
    key: Option<&str>,
) -> std::io::Result<(String, String)> {
    use std::io::{Read, Write};
    let addr = url.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(90)))?;
    let auth = key
        .map(|k| format!("Authorization: Bearer {k}\r\n"))
        .unwrap_or_default();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n{auth}\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head.lines().next().unwrap_or_default().to_owned();
    Ok((status, body.to_owned()))
}

/// Follows a node's record log (long-polling `/v1/records?wait=`) until `done` says the
/// records seen so far are enough, or `timeout` passes. Returns every record seen.
pub fn follow_records(
    url: &str,
    key: &str,
    timeout: Duration,
    mut done: impl FnMut(&[serde_json::Value]) -> bool,
) -> Result<Vec<serde_json::Value>, Vec<serde_json::Value>> {
    let deadline = std::time::Instant::now() + timeout;
    let mut seen = Vec::new();
    let mut after = 0u64;
    loop {
        if done(&seen) {
            return Ok(seen);
        }
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Err(seen);
        }
        let wait = left.as_secs().clamp(1, 30);
        let (status, body) = http_get_with_key(
            url,
            &format!("/v1/records?after={after}&limit=1000&wait={wait}"),
            Some(key),
        )
        .map_err(|_| seen.clone())?;
        assert!(status.contains("200"), "{status}: {body}");
        let page: serde_json::Value = serde_json::from_str(&body).unwrap();
        seen.extend(page["records"].as_array().unwrap().iter().cloned());
        after = page["next"].as_u64().unwrap();
    }
}

/// Packs `NAME-1.0.0-any.niso` in the sandbox around `mib` MiB of seeded random (so
/// incompressible) bytes, streamed to disk 8 MiB at a time; returns the archive's path.
pub fn random_package(sandbox: &Sandbox, name: &str, mib: u64, seed: u64) -> PathBuf {
    use rand::{Rng, SeedableRng};
    use std::io::Write;

    let dir = sandbox.path().join(format!("{name}-src"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("niso.toml"),
        format!("name = \"{name}\"\nversion = \"1.0.0\"\narch = \"any\"\n"),
    )
    .unwrap();
    {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut f = std::io::BufWriter::new(std::fs::File::create(dir.join("payload")).unwrap());
        let mut chunk = vec![0u8; 8 << 20];
        for _ in 0..mib.div_ceil(8) {
            rng.fill_bytes(&mut chunk);
            f.write_all(&chunk).unwrap();
        }
        f.flush().unwrap();
    }
    sandbox.ok(&["pack", dir.to_str().unwrap()]);
    std::fs::remove_file(dir.join("payload")).unwrap();
    sandbox.path().join(format!("{name}-1.0.0-any.niso"))
}

/// What a process holds now, from `/proc/PID/status`: `RssAnon` (heap and stacks) and
/// `RssFile` (mapped files), in MiB, as `anon A MiB + files F MiB`.
pub fn rss_breakdown(pid: u32) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or(0)
            / 1024
    };
    format!(
        "anon {} MiB + files {} MiB",
        field("RssAnon:"),
        field("RssFile:")
    )
}

/// The kernel's record of a process's peak resident set (`VmHWM`), in KiB.
pub fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// CPU time a process has used so far, user and system, in seconds (`/proc/PID/stat`, counted in
/// `USER_HZ` ticks: 100 a second on x86 and ARM Linux). Unlike wall time it does not include
/// waiting for the disk's flushes.
pub fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // The command name may hold spaces and parentheses; the fields after its last `)` do not.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 1..]
        .split_whitespace()
        .collect();
    // utime and stime are fields 14 and 15 of the line; the state (field 3) comes first here.
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    ticks as f64 / 100.0
}
