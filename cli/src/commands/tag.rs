//! `niso tag SOURCE TARGET`, `niso untag NAME:TAG`, `niso registry list-tags NAME` and
//! `niso delete NAME:VERSION`.

use anyhow::{Context as _, bail};
use niso_protocol::reference::PackageRef;

use crate::{context::Context, exit::Usage, registry_client::RegistryClient, table};

pub async fn tag(
    ctx: &Context,
    client: &RegistryClient,
    source: &str,
    target: &str,
) -> anyhow::Result<()> {
    let src: PackageRef = source.parse()?;
    let dst: PackageRef = target.parse()?;
    let Some(tag) = dst.selector.as_deref() else {
        // `niso tag my-api:1.0.0 stable`: the tag was meant for the source's package.
        return Err(Usage(format!(
            "`{target}` names no tag; the target is NAME:TAG, e.g. `niso tag {source} {}:{target}`",
            src.name
        ))
        .into());
    };
    if src.name != dst.name {
        bail!(
            "tags point within one package: {} and {} differ",
            src.name,
            dst.name
        );
    }
    let resolved = client
        .resolve(src.name.as_str(), src.selector.as_deref(), None)
        .await
        .with_context(|| format!("cannot find {source}"))?;
    let info = client
        .set_tag(dst.name.as_str(), tag, &resolved.version)
        .await
        .with_context(|| format!("cannot tag {source} as {tag}"))?;
    if ctx.json {
        outln!("{}", serde_json::to_string(&info)?);
    } else {
        outln!("  Tagged {} {} as {}", dst.name, info.version, info.tag);
    }
    Ok(())
}

pub async fn untag(ctx: &Context, client: &RegistryClient, reference: &str) -> anyhow::Result<()> {
    let r: PackageRef = reference.parse()?;
    let Some(tag) = r.selector.as_deref() else {
        bail!(
            "`{reference}` names no tag; write NAME:TAG, e.g. {}:stable",
            r.name
        );
    };
    if tag == "latest" {
        bail!("`latest` is not a tag you can remove: it always names the newest version");
    }
    client
        .delete_tag(r.name.as_str(), tag)
        .await
        .with_context(|| format!("cannot remove tag {reference}"))?;
    if ctx.json {
        outln!("{}", serde_json::json!({"untagged": reference}));
    } else {
        outln!("  Removed tag {tag} of {}", r.name);
    }
    Ok(())
}

pub async fn list(ctx: &Context, client: &RegistryClient, name: &str) -> anyhow::Result<()> {
    let name: niso_protocol::PackageName = name.parse()?;
    let tags = client.tags(name.as_str()).await?;
    if ctx.json {
        outln!("{}", serde_json::to_string_pretty(&tags.tags)?);
        return Ok(());
    }
    let mut rows = vec![vec!["TAG".to_owned(), "VERSION".to_owned()]];
    rows.extend(tags.tags.into_iter().map(|t| vec![t.tag, t.version]));
    out!("{}", table::render(&rows));
    Ok(())
}

pub async fn delete(
    ctx: &Context,
    client: &RegistryClient,
    reference: &str,
    arch: Option<&str>,
) -> anyhow::Result<()> {
    let r: PackageRef = reference.parse()?;
    let Some(version) = r.selector.as_deref() else {
        return Err(Usage(format!(
            "`{reference}` names no version; write NAME:VERSION"
        ))
        .into());
    };
    if semver_like(version).is_none() {
        return Err(Usage(format!(
            "`{version}` is not an exact version; deletion never follows tags"
        ))
        .into());
    }
    if let Some(arch) = arch {
        crate::arch_arg::parse(arch)?;
    }
    client
        .delete_version(r.name.as_str(), version, arch)
        .await
        .with_context(|| format!("cannot delete {reference}"))?;
    if ctx.json {
        outln!(
            "{}",
            serde_json::json!({"deleted": reference, "arch": arch})
        );
    } else {
        match arch {
            Some(a) => outln!("  Deleted {} {version} ({a})", r.name),
            None => outln!("  Deleted {} {version}", r.name),
        }
    }
    Ok(())
}

fn semver_like(s: &str) -> Option<niso_protocol::Version> {
    niso_protocol::Version::parse(s).ok()
}
