//! `niso search WORDS`: matching packages as `NAME  LATEST  DESCRIPTION`.

use crate::{context::Context, registry_client::RegistryClient, table};

pub async fn run(
    ctx: &Context,
    client: &RegistryClient,
    words: &[String],
    limit: usize,
) -> anyhow::Result<()> {
    let query = words.join(" ");
    let list = client.search(&query, limit.clamp(1, 1000)).await?;
    if ctx.json {
        println!("{}", serde_json::to_string_pretty(&list.packages)?);
        return Ok(());
    }
    if list.packages.is_empty() {
        println!("  No packages match `{query}`.");
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
    print!("{}", table::render(&rows));
    Ok(())
}
