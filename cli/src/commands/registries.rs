//! `niso login` and `niso registry add | list | remove`: the client's registry list.

use anyhow::Context as _;
use niso_protocol::api_key::ApiKey;

use crate::{
    client_config::{ClientConfig, Target, is_url, normalize_url},
    context::Context,
    registry_client::{ClientError, RegistryClient},
    table,
};

pub async fn login(
    ctx: &Context,
    url: &str,
    key: &str,
    name: Option<&str>,
    make_default: bool,
) -> anyhow::Result<()> {
    if !is_url(url) {
        anyhow::bail!("`{url}` is not an http:// or https:// URL");
    }
    ApiKey::parse(key).context("that is not a niso API key")?;
    let url = normalize_url(url);
    let client = RegistryClient::new(Target {
        name: url.clone(),
        url: url.clone(),
        key: Some(key.to_owned()),
    });
    let me = match client.whoami().await {
        Ok(me) => me,
        // Nothing answered: the key was never judged, so do not say it was refused.
        Err(e @ ClientError::Unreachable { .. }) => {
            return Err(anyhow::Error::new(e).context(format!("could not log in to {url}")));
        }
        Err(e) => {
            return Err(anyhow::Error::new(e)
                .context(format!("the registry at {url} did not accept the key")));
        }
    };
    let mut config = ClientConfig::load(&ctx.config_path)?;
    let existing = config
        .all()
        .into_iter()
        .find(|(_, e)| normalize_url(&e.url) == url)
        .map(|(n, _)| n);
    let name = name
        .map(str::to_owned)
        .or(existing)
        .unwrap_or_else(|| host_of(&url));
    // The first registry someone logs in to becomes the default: that is where they work.
    let make_default = make_default || config.default.is_none();
    config.add(&name, &url, Some(key.to_owned()), make_default)?;
    config.save(&ctx.config_path)?;
    if ctx.json {
        outln!(
            "{}",
            serde_json::json!({"registry": name, "url": url, "key_id": me.key_id, "default": config.default_name() == name})
        );
    } else {
        let who = me.name.unwrap_or_default();
        let id = me.key_id.unwrap_or_default();
        outln!("  Logged in to {url} as {who} ({id})");
        if config.default_name() == name {
            outln!("  Saved as registry `{name}` (default)");
        } else {
            outln!(
                "  Saved as registry `{name}`; the default is still `{}` (use --registry {name}, or log in again with --default)",
                config.default_name()
            );
        }
    }
    Ok(())
}

fn host_of(url: &str) -> String {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    rest.split('/').next().unwrap_or(rest).to_owned()
}

pub fn add(
    ctx: &Context,
    name: &str,
    url: &str,
    key: Option<String>,
    make_default: bool,
) -> anyhow::Result<()> {
    if let Some(k) = &key {
        ApiKey::parse(k).context("that is not a niso API key")?;
    }
    let mut config = ClientConfig::load(&ctx.config_path)?;
    config.add(name, url, key, make_default)?;
    config.save(&ctx.config_path)?;
    if !ctx.json {
        outln!(
            "  Added registry `{name}` ({}){}",
            normalize_url(url),
            if make_default { " as the default" } else { "" }
        );
    }
    Ok(())
}

pub fn list(ctx: &Context) -> anyhow::Result<()> {
    let config = ClientConfig::load(&ctx.config_path)?;
    let default = config.default_name().to_owned();
    let all = config.all();
    if ctx.json {
        let out: Vec<_> = all
            .iter()
            .map(|(n, e)| serde_json::json!({"name": n, "url": e.url, "default": *n == default, "has_key": e.key.is_some()}))
            .collect();
        outln!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    let mut rows = vec![vec![
        "NAME".to_owned(),
        "URL".to_owned(),
        "DEFAULT".to_owned(),
    ]];
    for (name, entry) in all {
        let is_default = if name == default { "yes" } else { "no" };
        rows.push(vec![name, entry.url, is_default.to_owned()]);
    }
    out!("{}", table::render(&rows));
    Ok(())
}

pub fn remove(ctx: &Context, name: &str) -> anyhow::Result<()> {
    let mut config = ClientConfig::load(&ctx.config_path)?;
    let was_default = config.default_name() == name;
    config.remove(name)?;
    config.save(&ctx.config_path)?;
    let default = config.target(None, None)?;
    if ctx.json {
        outln!(
            "{}",
            serde_json::json!({"removed": name, "default": default.name, "default_url": default.url})
        );
    } else if was_default {
        outln!("  Removed registry `{name}`");
        outln!(
            "  The default registry is now `{}` ({}); choose another with `niso registry default NAME`",
            default.name,
            default.url
        );
    } else {
        outln!("  Removed registry `{name}`");
    }
    Ok(())
}

/// `registry default [NAME]`: shows the default, or makes `name` the default.
pub fn default(ctx: &Context, name: Option<&str>) -> anyhow::Result<()> {
    let mut config = ClientConfig::load(&ctx.config_path)?;
    if let Some(name) = name {
        config.set_default(name)?;
        config.save(&ctx.config_path)?;
    }
    let default = config.target(None, None)?;
    if ctx.json {
        outln!(
            "{}",
            serde_json::json!({"default": default.name, "url": default.url})
        );
    } else if name.is_some() {
        outln!(
            "  The default registry is now `{}` ({})",
            default.name,
            default.url
        );
    } else {
        outln!(
            "  The default registry is `{}` ({})",
            default.name,
            default.url
        );
    }
    Ok(())
}
