//! A LAN of network namespaces on one Linux bridge, for tests and benchmarks that need the
//! kernel's real TCP between nodes: one namespace per node, each uplink optionally shaped with
//! `tc`. Needs root and iproute2 (`.ci/run` installs iproute2); `Lan::available` says whether
//! this process can build one.

use std::{
    path::Path,
    process::{Command, Output},
};

use crate::{Sandbox, Server};

/// A bridge `10.231.SUBNET.254/24` on the host with one namespace per node at
/// `10.231.SUBNET.1..=n`, torn down on drop.
pub struct Lan {
    bridge: String,
    namespaces: Vec<String>,
    subnet: u8,
}

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program).args(args).output().unwrap_or_else(|e| {
        panic!("running `{program}` failed ({e}); this needs iproute2 and root, which .ci/run provides")
    })
}

/// Runs `program` and fails the caller unless it succeeds.
fn succeed(program: &str, args: &[&str]) {
    let out = run(program, args);
    assert!(
        out.status.success(),
        "{program} {} failed: {} (this needs root to create network namespaces)",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn ip(args: &[&str]) {
    succeed("ip", args);
}

fn tc(args: &[&str]) {
    succeed("tc", args);
}

impl Lan {
    /// Whether this process may build a LAN: root, with `ip` and `tc` on the path.
    pub fn available() -> bool {
        use std::os::unix::fs::MetadataExt;
        // /proc/self belongs to the process's effective user.
        std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
            && ["ip", "tc"].iter().all(|p| {
                Command::new(p)
                    .arg("-V")
                    .output()
                    .is_ok_and(|o| o.status.success())
            })
    }

    /// `n` namespaces on a new bridge. With `uplink` (a tc rate such as `100mbit`), what each
    /// node sends is shaped to that rate by a token bucket on its own end of the link; what it
    /// receives is not, as on an asymmetric access link.
    pub fn new(n: usize, subnet: u8, uplink: Option<&str>) -> Self {
        let tag = std::process::id() % 10_000;
        let lan = Self {
            bridge: format!("nisobr{subnet}x{tag}"),
            namespaces: (1..=n)
                .map(|i| format!("niso-{subnet}-{tag}-{i}"))
                .collect(),
            subnet,
        };
        ip(&["link", "add", &lan.bridge, "type", "bridge"]);
        ip(&[
            "addr",
            "add",
            &format!("10.231.{subnet}.254/24"),
            "dev",
            &lan.bridge,
        ]);
        ip(&["link", "set", &lan.bridge, "up"]);
        for (i, ns) in lan.namespaces.iter().enumerate() {
            let host_end = format!("nisov{subnet}x{tag}x{}", i + 1);
            ip(&["netns", "add", ns]);
            ip(&[
                "link", "add", &host_end, "type", "veth", "peer", "name", "eth0", "netns", ns,
            ]);
            ip(&["link", "set", &host_end, "master", &lan.bridge]);
            ip(&["link", "set", &host_end, "up"]);
            ip(&[
                "-n",
                ns,
                "addr",
                "add",
                &format!("{}/24", lan.addr(i)),
                "dev",
                "eth0",
            ]);
            ip(&["-n", ns, "link", "set", "eth0", "up"]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
            // mDNS goes to 224.0.0.251; give multicast a route out of eth0.
            ip(&["-n", ns, "route", "add", "224.0.0.0/4", "dev", "eth0"]);
            if let Some(rate) = uplink {
                // A bucket larger than one GSO super-packet (64 KiB) so none is dropped whole.
                tc(&[
                    "-n", ns, "qdisc", "add", "dev", "eth0", "root", "tbf", "rate", rate, "burst",
                    "128kb", "latency", "100ms",
                ]);
            }
        }
        lan
    }

    /// The namespaces, node `i` in the `i`-th.
    pub fn namespaces(&self) -> &[String] {
        &self.namespaces
    }

    /// Node `i`'s address.
    pub fn addr(&self, i: usize) -> String {
        format!("10.231.{}.{}", self.subnet, i + 1)
    }

    /// Starts `niso registry serve` in node `i`'s namespace, HTTP on port 5000 of its address,
    /// with the sandbox's HOME and `config`.
    pub fn serve(&self, i: usize, user: &Sandbox, data: &Path, config: &Path) -> Server {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.namespaces[i]])
            .arg(crate::niso_bin())
            .args([
                "registry",
                "serve",
                "--listen",
                &format!("{}:5000", self.addr(i)),
                "--data-dir",
            ])
            .arg(data)
            .arg("--config")
            .arg(config)
            .env("HOME", user.path())
            .env("XDG_CONFIG_HOME", user.path().join("config"))
            .env("XDG_DATA_HOME", user.path().join("data"));
        Server::spawn(cmd, data)
    }

    /// Bytes node `i` has sent on its link so far (the kernel's counter for its `eth0`).
    pub fn tx_bytes(&self, i: usize) -> u64 {
        let out = run(
            "ip",
            &[
                "-n",
                &self.namespaces[i],
                "-s",
                "-j",
                "link",
                "show",
                "eth0",
            ],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let links: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        links[0]["stats64"]["tx"]["bytes"].as_u64().unwrap()
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        for ns in &self.namespaces {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .status();
    }
}
