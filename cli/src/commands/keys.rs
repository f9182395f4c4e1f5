//! `niso registry create-key | list-keys | revoke-key`.

use niso_protocol::{api::CreateKey, scope::Scope};

use crate::{context::Context, registry_client::RegistryClient, table, units};

fn now_ms() -> u64 {
    jiff::Timestamp::now()
        .as_millisecond()
        .try_into()
        .unwrap_or(0)
}

pub async fn create(
    ctx: &Context,
    client: &RegistryClient,
    scopes: &[String],
    name: &str,
    expires: Option<&str>,
) -> anyhow::Result<()> {
    // Check locally first so a typo gets a precise message before any request.
    for s in scopes {
        s.parse::<Scope>()?;
    }
    let expires_at_ms = expires.map(|e| units::expiry(e, now_ms())).transpose()?;
    let created = client
        .create_key(&CreateKey {
            name: name.to_owned(),
            scopes: scopes.to_vec(),
            expires_at_ms,
        })
        .await?;
    if ctx.json {
        outln!("{}", serde_json::to_string_pretty(&created)?);
    } else {
        outln!("  Created key: {}", created.key);
        outln!("  Store this key securely — it cannot be retrieved later.");
        let id = &created.info.id;
        outln!("  Key ID: {id} (revoke with: niso registry revoke-key {id})");
    }
    Ok(())
}

pub async fn list(ctx: &Context, client: &RegistryClient) -> anyhow::Result<()> {
    let keys = client.list_keys().await?.keys;
    if ctx.json {
        outln!("{}", serde_json::to_string_pretty(&keys)?);
        return Ok(());
    }
    let now = now_ms();
    let mut rows = vec![vec![
        "ID".to_owned(),
        "NAME".to_owned(),
        "SCOPES".to_owned(),
        "LAST USED".to_owned(),
        "EXPIRES".to_owned(),
    ]];
    for k in keys {
        let last = k
            .last_used_ms
            .map(units::date)
            .unwrap_or_else(|| "never".into());
        let expires = match k.expires_at_ms {
            None => "never".to_owned(),
            Some(t) if t <= now => format!("{} (expired)", units::date(t)),
            Some(t) => units::date(t),
        };
        rows.push(vec![k.id, k.name, k.scopes.join(","), last, expires]);
    }
    out!("{}", table::render(&rows));
    Ok(())
}

pub async fn revoke(ctx: &Context, client: &RegistryClient, id: &str) -> anyhow::Result<()> {
    client.revoke_key(id).await?;
    if ctx.json {
        outln!("{}", serde_json::json!({ "revoked": id }));
    } else {
        outln!("  Revoked key {id}");
    }
    Ok(())
}
