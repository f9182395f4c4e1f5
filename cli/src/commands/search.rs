//! `niso search WORDS` (matching packages as `NAME  LATEST  DESCRIPTION`) and `niso show NAME`.

use crate::{context::Context, registry_client::RegistryClient, table, units};

pub async fn run(
    ctx: &Context,
    client: &RegistryClient,
    words: &[String],
    limit: usize,
) -> anyhow::Result<()> {
    let query = words.join(" ");
    let list = client.search(&query, limit.clamp(1, 1000)).await?;
    if ctx.json {
        outln!("{}", serde_json::to_string_pretty(&list.packages)?);
        return Ok(());
    }
    if list.packages.is_empty() {
        outln!("  No packages match `{query}`.");
        return Ok(());
    }
    let rows: Vec<Vec<String>> = list
        .packages
        .into_iter()
        .map(|p| {
            vec![
                p.name,
                p.latest.unwrap_or_else(|| "-".into()),
                p.description,
            ]
        })
        .collect();
    out!("{}", table::render(&rows));
    Ok(())
}

pub async fn show(ctx: &Context, client: &RegistryClient, name: &str) -> anyhow::Result<()> {
    let name: niso_protocol::PackageName = name.parse()?;
    let detail = client.package(name.as_str()).await?;
    if ctx.json {
        outln!("{}", serde_json::to_string_pretty(&detail)?);
        return Ok(());
    }
    outln!("  {} — {}", detail.name, detail.description);
    let mut rows = vec![vec![
        "VERSION".to_owned(),
        "ARCH".to_owned(),
        "SIZE".to_owned(),
        "PUBLISHED".to_owned(),
    ]];
    rows.extend(detail.versions.iter().map(|v| {
        vec![
            v.version.clone(),
            v.arch.clone(),
            units::size(v.size),
            units::date(v.published_ms),
        ]
    }));
    out!("{}", table::render(&rows));
    let tags: Vec<String> = detail
        .tags
        .iter()
        .map(|t| format!("{} → {}", t.tag, t.version))
        .collect();
    if !tags.is_empty() {
        outln!("  Tags: {}", tags.join(", "));
    }
    Ok(())
}
