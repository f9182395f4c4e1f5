//! `niso registry uploads [--cancel ID]`: the open uploads a key may see, and cancelling one.

use anyhow::bail;

use crate::{context::Context, registry_client::RegistryClient, table, units};

fn now_ms() -> u64 {
    jiff::Timestamp::now()
        .as_millisecond()
        .try_into()
        .unwrap_or(0)
}

pub async fn list(ctx: &Context, client: &RegistryClient) -> anyhow::Result<()> {
    let uploads = client.list_uploads().await?.uploads;
    if ctx.json {
        outln!("{}", serde_json::to_string_pretty(&uploads)?);
        return Ok(());
    }
    let now = now_ms();
    let mut rows = vec![
        ["ID", "PACKAGE", "OFFSET", "AGE", "IDLE", "KEY"]
            .map(str::to_owned)
            .to_vec(),
    ];
    for u in uploads {
        rows.push(vec![
            u.id,
            u.package,
            units::size(u.offset),
            units::span(now.saturating_sub(u.created_ms)),
            units::span(u.idle_ms),
            u.key_id.unwrap_or_else(|| "-".to_owned()),
        ]);
    }
    out!("{}", table::render(&rows));
    Ok(())
}

pub async fn cancel(ctx: &Context, client: &RegistryClient, id: &str) -> anyhow::Result<()> {
    // The id goes into a URL path: only what the registry hands out may get there.
    if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!("`{id}` is not an upload id (32 hex digits, as `niso registry uploads` lists them)");
    }
    client.cancel_upload(id).await?;
    if ctx.json {
        outln!("{}", serde_json::json!({ "cancelled": id }));
    } else {
        outln!("  Cancelled upload {id}");
    }
    Ok(())
}
