//! Package services: a systemd unit where systemd runs, and a foreground runner with the same
//! definition (command, args, environment, working directory, restart policy) everywhere else.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use niso_protocol::package_meta::{RestartPolicy, ServiceSpec};

pub fn unit_name(package: &str) -> String {
    format!("niso-{package}.service")
}

/// Whether systemd is the running init (the `sd_booted` test) and `systemctl` is usable.
pub fn systemd_available() -> bool {
    Path::new("/run/systemd/system").is_dir()
        && Command::new("systemctl")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
}

pub fn unit_dir(system: bool, config_home: &Path) -> PathBuf {
    if system {
        PathBuf::from("/etc/systemd/system")
    } else {
        config_home.join("systemd/user")
    }
}

/// The executable a service runs: a path inside the package, or a command found on PATH.
pub fn program(spec: &ServiceSpec, root: &Path) -> PathBuf {
    if spec.command.contains('/') {
        root.join(&spec.command)
    } else {
        PathBuf::from(&spec.command)
    }
}

fn working_dir(spec: &ServiceSpec, root: &Path) -> PathBuf {
    spec.working_dir
        .as_deref()
        .map(|w| root.join(w))
        .unwrap_or_else(|| root.to_owned())
}

/// A unit that runs the package through its `current` link, so activation of another version
/// plus a restart is all an upgrade needs.
pub fn unit_text(package: &str, description: &str, spec: &ServiceSpec, current: &Path) -> String {
    // Every value comes from the package: none may end its line, add a directive, or be
    // rewritten by systemd's `%` specifiers or `$` expansion.
    let mut exec = vec![quoted(&program(spec, current).to_string_lossy(), true)];
    exec.extend(spec.args.iter().map(|a| quoted(a, true)));
    let mut text = format!(
        "# Written by niso; `niso deactivate {package}` removes it.\n[Unit]\nDescription={}\n\n[Service]\nExecStart={}\nWorkingDirectory={}\n",
        one_line(&format!("niso package {package}: {description}")),
        exec.join(" "),
        one_line(&working_dir(spec, current).to_string_lossy()),
    );
    for (k, v) in &spec.env {
        text.push_str(&format!(
            "Environment={}\n",
            quoted(&format!("{k}={v}"), false)
        ));
    }
    let restart = match spec.restart {
        RestartPolicy::No => "no",
        RestartPolicy::OnFailure => "on-failure",
        RestartPolicy::Always => "always",
    };
    text.push_str(&format!(
        "Restart={restart}\n\n[Install]\nWantedBy={}\n",
        "default.target"
    ));
    text
}

/// A double-quoted systemd word: C-style escapes for quotes, backslashes and control
/// characters, `%%` for `%`, and (in `ExecStart=`, where `$` expands) `$$` for `$`.
fn quoted(s: &str, exec: bool) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '%' => out.push_str("%%"),
            '$' if exec => out.push_str("$$"),
            c if c.is_control() => out.push_str(&format!("\\x{:02x}", u32::from(c) & 0xff)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A free-text value on one line: control characters become spaces, `%` becomes `%%`.
fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .replace('%', "%%")
}

fn systemctl(system: bool, args: &[&str]) -> anyhow::Result<()> {
    let mut cmd = Command::new("systemctl");
    if !system {
        cmd.arg("--user");
    }
    let out = cmd.args(args).output().context("could not run systemctl")?;
    if !out.status.success() {
        bail!(
            "systemctl {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Writes the unit, reloads systemd and (re)starts the service.
pub fn install_and_start(
    unit_dir: &Path,
    package: &str,
    unit: &str,
    system: bool,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(unit_dir)?;
    let path = unit_dir.join(unit_name(package));
    std::fs::write(&path, unit).with_context(|| format!("could not write {}", path.display()))?;
    systemctl(system, &["daemon-reload"])?;
    systemctl(system, &["enable", &unit_name(package)])?;
    systemctl(system, &["restart", &unit_name(package)])
}

/// Stops and removes the unit, if there is one.
pub fn stop_and_remove(unit_dir: &Path, package: &str, system: bool) -> anyhow::Result<bool> {
    let path = unit_dir.join(unit_name(package));
    if !path.exists() {
        return Ok(false);
    }
    if systemd_available() {
        systemctl(system, &["disable", "--now", &unit_name(package)])?;
    }
    std::fs::remove_file(&path)?;
    if systemd_available() {
        systemctl(system, &["daemon-reload"])?;
    }
    Ok(true)
}

/// Runs the service in the foreground until it exits for good or this process is told to
/// stop; SIGINT and SIGTERM are passed on to the service.
pub async fn run_foreground(package: &str, spec: &ServiceSpec, root: &Path) -> anyhow::Result<i32> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut backoff = Duration::from_secs(1);
    loop {
        let started = Instant::now();
        let mut child = tokio::process::Command::new(program(spec, root))
            .args(&spec.args)
            .envs(&spec.env)
            .current_dir(working_dir(spec, root))
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("could not start the {package} service ({})", spec.command))?;
        let pid = child.id().and_then(|p| i32::try_from(p).ok());
        let stop = |signal: nix::sys::signal::Signal| {
            if let Some(pid) = pid {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal);
            }
        };
        let status = tokio::select! {
            status = child.wait() => status?,
            _ = term.recv() => {
                stop(nix::sys::signal::Signal::SIGTERM);
                child.wait().await?;
                return Ok(0);
            }
            _ = int.recv() => {
                stop(nix::sys::signal::Signal::SIGINT);
                child.wait().await?;
                return Ok(0);
            }
        };
        let code = status.code().unwrap_or(1);
        let again = match spec.restart {
            RestartPolicy::No => false,
            RestartPolicy::OnFailure => !status.success(),
            RestartPolicy::Always => true,
        };
        if !again {
            return Ok(code);
        }
        if started.elapsed() > Duration::from_secs(60) {
            backoff = Duration::from_secs(1);
        }
        eprintln!(
            "niso: {package} exited ({status}); restarting in {}s",
            backoff.as_secs()
        );
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_runs_through_current() {
        let spec: ServiceSpec = toml::from_str(
            "command = \"bin/srv\"\nargs = [\"--port\", \"8 0\"]\nenv = { A = \"b\" }\nrestart = \"always\"\n",
        )
        .unwrap();
        let text = unit_text(
            "srv",
            "a server",
            &spec,
            Path::new("/home/u/.local/share/niso/pkgs/srv/current"),
        );
        assert!(text.contains("ExecStart=\"/home/u/.local/share/niso/pkgs/srv/current/bin/srv\" \"--port\" \"8 0\""), "{text}");
        assert!(text.contains("Environment=\"A=b\""));
        assert!(text.contains("Restart=always"));
        assert!(text.contains("WorkingDirectory=/home/u/.local/share/niso/pkgs/srv/current\n"));
    }

    #[test]
    fn package_values_cannot_add_directives_or_expand() {
        let spec: ServiceSpec = toml::from_str(
            "command = \"bin/srv\"\nargs = [\"a\\nExecStartPre=/bin/evil\", \"%h\", \"$HOME\", \"q\\\"x\"]\nenv = { A = \"1\\n[Install]\" }\n",
        )
        .unwrap();
        let text = unit_text(
            "srv",
            "ok\n[Service]\nExecStartPre=/bin/evil 100%",
            &spec,
            Path::new("/p/current"),
        );
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            !lines.iter().any(|l| l.starts_with("ExecStartPre")),
            "{text}"
        );
        assert_eq!(
            lines.iter().filter(|l| l.starts_with('[')).count(),
            3,
            "only [Unit], [Service], [Install]: {text}"
        );
        assert!(
            text.contains(
                "Description=niso package srv: ok [Service] ExecStartPre=/bin/evil 100%%\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("\"a\\nExecStartPre=/bin/evil\" \"%%h\" \"$$HOME\" \"q\\\"x\""),
            "{text}"
        );
        assert!(text.contains("Environment=\"A=1\\n[Install]\"\n"), "{text}");
    }
}
