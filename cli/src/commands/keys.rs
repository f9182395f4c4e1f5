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
        println!("{}", serde_json::to_string_pretty(&created)?);
    } else {
        println!("  Created key: {}", created.key);
        println!("  Store this key securely — it cannot be retrieved later.");
    }
    Ok(())
}

pub async fn list(ctx: &Context, client: &RegistryClient) -> anyhow::Result<()> {
    let keys = client.list_keys().await?.keys;
    if ctx.json {
        println!("{}", serde_json::to_string_pretty(&keys)?);
        return Ok(());
    }
    let now = now_ms();
    let mut rows = vec![vec![
        "ID".to_owned(),
        "NAME".to_owned(),
        "SCOPES".to_owned(),
        "LAST USED".to_owned(),
    ]];
    for k in keys {
        let mut last = k
            .last_used_ms
            .map(units::date)
            .unwrap_or_else(|| "never".into());
        if k.expires_at_ms.is_some_and(|t| t <= now) {
            last.push_str(" (expired)");
        }
        rows.push(vec![k.id, k.name, k.scopes.join(","), last]);
    }
    print!("{}", table::render(&rows));
    Ok(())
}

pub async fn revoke(ctx: &Context, client: &RegistryClient, id: &str) -> anyhow::Result<()> {
    client.revoke_key(id).await?;
    if ctx.json {
        println!("{}", serde_json::json!({ "revoked": id }));
    } else {
        println!("  Revoked key {id}");
    }
    Ok(())
}
