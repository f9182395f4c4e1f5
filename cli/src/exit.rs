//! Exit codes and hints for failures, chosen from the error's chain.

use crate::{registry_client::ClientError, resolved::Refused};

pub const FAILURE: u8 = 1;
pub const USAGE: u8 = 2;
pub const AUTH: u8 = 3;
pub const NOT_FOUND: u8 = 4;
pub const CONFLICT: u8 = 5;
pub const UNREACHABLE: u8 = 6;
pub const VERIFICATION: u8 = 7;
/// 128 + SIGINT, what shells report for a command stopped by Ctrl-C.
pub const INTERRUPTED: u8 = 130;

/// The user interrupted the command (Ctrl-C) and it stopped after cleaning up.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Interrupted(pub String);

/// The command line asked for something malformed (a reference without the part the command
/// needs, another system's architecture name): exit 2, like clap's own usage errors.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Usage(pub String);

/// A downloaded or uploaded package did not match what it claimed to be.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct VerificationFailed(pub String);

/// A transfer stopped (a broken or silent connection) after the command's own retries; running
/// the command again resumes it.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct TransferStopped {
    pub message: String,
    pub hint: String,
}

/// A registry error with a suggestion for the user (shown as `niso: hint:`).
#[derive(Debug, thiserror::Error)]
#[error("{source}")]
pub struct Hinted {
    pub hint: String,
    #[source]
    pub source: ClientError,
}

fn client_error(err: &anyhow::Error) -> Option<&ClientError> {
    err.chain().find_map(|e| e.downcast_ref::<ClientError>())
}

pub fn code(err: &anyhow::Error) -> u8 {
    if err.downcast_ref::<Interrupted>().is_some() {
        return INTERRUPTED;
    }
    if err.chain().any(|e| {
        e.is::<VerificationFailed>()
            || e.is::<Refused>()
            || e.is::<niso_protocol::archive::ArchiveError>()
    }) {
        return VERIFICATION;
    }
    if err.chain().any(|e| {
        e.is::<Usage>()
            || e.is::<niso_protocol::reference::RefError>()
            || e.is::<niso_protocol::arch::ArchError>()
    }) {
        return USAGE;
    }
    if err.chain().any(|e| e.is::<TransferStopped>()) {
        return UNREACHABLE;
    }
    match client_error(err) {
        Some(ClientError::Unreachable { .. }) => UNREACHABLE,
        Some(e) => match (e.status(), e.code()) {
            (Some(401 | 403), _) => AUTH,
            (Some(404), _) => NOT_FOUND,
            (Some(409), _) => CONFLICT,
            (Some(400), Some("digest_mismatch" | "invalid_archive" | "invalid_bundle")) => {
                VERIFICATION
            }
            _ => FAILURE,
        },
        None => FAILURE,
    }
}

/// What to try next, when there is something useful to say. `env_key`: whether `NISO_KEY`
/// supplied the key, which is then the first suspect of a refusal.
pub fn hint(err: &anyhow::Error, env_key: bool) -> Option<String> {
    if let Some(h) = err.chain().find_map(|e| e.downcast_ref::<Hinted>()) {
        return Some(h.hint.clone());
    }
    if let Some(t) = err
        .chain()
        .find_map(|e| e.downcast_ref::<TransferStopped>())
    {
        return Some(t.hint.clone());
    }
    if err.chain().any(|e| e.is::<Refused>()) {
        return Some(
            "nothing was installed or kept; a registry reached over plain http can be altered on the way, so prefer https"
                .to_owned(),
        );
    }
    let e = client_error(err)?;
    match (e.status(), e) {
        // rustls reading a plain-HTTP answer as a TLS record.
        (None, ClientError::Unreachable { url, .. })
            if url.starts_with("https://")
                && err.chain().any(|c| {
                    let text = c.to_string();
                    text.contains("InvalidContentType") || text.contains("corrupt message")
                }) =>
        {
            Some(format!(
                "{url} answered, but not over TLS; if it is a plain-HTTP registry (as `niso registry serve` is), use http://{}",
                url.trim_start_matches("https://")
            ))
        }
        (None, ClientError::Unreachable { url, .. }) => Some(format!(
            "is the registry running? Start one with `niso registry serve`, or pick another with --registry (tried {url})"
        )),
        // The registry's own message already says how to log in.
        (Some(401), _) if env_key => Some(
            "the key came from NISO_KEY, which overrides the saved one; check it, or unset it"
                .to_owned(),
        ),
        (Some(401), _) => None,
        (Some(403), _) => Some(
            "ask the registry's admin for a key with that scope: `niso registry create-key --scope ...`"
                .to_owned(),
        ),
        _ => None,
    }
}
