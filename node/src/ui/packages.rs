//! The package pages: `/` (list and search, paginated) and `/packages/NAME` (every build,
//! tags, and the commands to pull it). Only packages the viewer may pull exist here.

use std::collections::BTreeSet;

use axum::{
    extract::{
        Path, Query, State,
        rejection::{PathRejection, QueryRejection},
    },
    http::{HeaderMap, StatusCode},
    response::{Html, IntoResponse, Response},
};
use minijinja::context;
use niso_protocol::reference::{LATEST, latest};
use serde::{Deserialize, Serialize};

use super::{login, page_error::PageError, templates::render, viewer::Viewer};
use crate::{http::AppState, identity::peer_id, store::VersionRow};

const PAGE_SIZE: usize = 50;

#[derive(Deserialize)]
pub struct ListQuery {
    q: Option<String>,
    cursor: Option<String>,
}

#[derive(Serialize)]
struct Row {
    name: String,
    latest: Option<String>,
    description: String,
    archs: Vec<String>,
    published_ms: Option<u64>,
}

pub async fn list(
    State(state): State<AppState>,
    viewer: Viewer,
    headers: HeaderMap,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Response, PageError> {
    let Query(query) = query.map_err(|e| PageError::BadRequest(e.body_text()))?;
    let Some(principal) = viewer.principal.as_ref() else {
        return login::page(&state, &viewer, &headers, StatusCode::UNAUTHORIZED, None);
    };
    let allow = |name: &str| {
        principal
            .scopes
            .allows(niso_protocol::scope::Action::Pull, name)
    };
    let q = query.q.as_deref().map(str::trim).unwrap_or_default();
    let (names, next, total) = if q.is_empty() {
        let rows = state
            .store
            .packages_after(query.cursor.as_deref(), PAGE_SIZE + 1, allow)?;
        let more = rows.len() > PAGE_SIZE;
        let names: Vec<String> = rows.into_iter().take(PAGE_SIZE).map(|(n, _)| n).collect();
        let next = if more { names.last().cloned() } else { None };
        (names, next, None)
    } else {
        let offset: usize = query
            .cursor
            .as_deref()
            .map(str::parse)
            .transpose()
            .map_err(|_| PageError::BadRequest("that page link is not one this node made".into()))?
            .unwrap_or(0);
        let (hits, total) = state.store.search(q, offset, PAGE_SIZE, allow)?;
        let shown = offset + hits.len();
        let next = (shown < total).then(|| shown.to_string());
        (
            hits.into_iter().map(|h| h.name).collect(),
            next,
            Some(total),
        )
    };
    let mut rows = Vec::with_capacity(names.len());
    for name in names {
        let versions = state.store.versions(&name)?;
        let newest = latest(versions.iter().map(|r| &r.version)).cloned();
        rows.push(Row {
            description: description(&versions, newest.as_ref()),
            latest: newest.map(|v| v.to_string()),
            archs: versions
                .iter()
                .map(|r| r.arch.to_string())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect(),
            published_ms: versions.iter().map(|r| r.entry.published_ms).max(),
            name,
        });
    }
    let body = render(
        "packages.html",
        context! {
            viewer => viewer.template_context(&state),
            page => "packages",
            q,
            rows,
            next,
            total,
            first_page => query.cursor.is_none(),
        },
    )?;
    Ok(Html(body).into_response())
}

/// The latest version's description (its `any` build's, else the first with one).
fn description(rows: &[VersionRow], newest: Option<&semver::Version>) -> String {
    let mut builds: Vec<&VersionRow> = rows.iter().filter(|r| Some(&r.version) == newest).collect();
    builds.sort_by_key(|r| (!r.arch.is_any(), r.arch.to_string()));
    builds
        .into_iter()
        .map(|r| r.entry.description.clone())
        .find(|d| !d.is_empty())
        .unwrap_or_default()
}

#[derive(Serialize)]
struct Build {
    version: String,
    arch: String,
    size: u64,
    digest: String,
    published_ms: u64,
    origin_peer: String,
    here: bool,
    tags: Vec<String>,
}

#[derive(Serialize)]
struct Tag {
    tag: String,
    version: String,
    automatic: bool,
}

pub async fn detail(
    State(state): State<AppState>,
    viewer: Viewer,
    headers: HeaderMap,
    name: Result<Path<String>, PathRejection>,
) -> Result<Response, PageError> {
    let Path(name) = name.map_err(|e| PageError::BadRequest(e.body_text()))?;
    if viewer.principal.is_none() {
        return login::page(&state, &viewer, &headers, StatusCode::UNAUTHORIZED, None);
    }
    // A package the viewer may not pull answers exactly like one that does not exist.
    let missing = || PageError::NotFound(format!("There is no package {name} here."));
    if niso_protocol::PackageName::new(&name).is_err() || !viewer.may_pull(&name) {
        return Err(missing());
    }
    let mut rows = state.store.versions(&name)?;
    if rows.is_empty() {
        return Err(missing());
    }
    rows.sort_by(|a, b| b.version.cmp(&a.version).then(a.arch.cmp(&b.arch)));
    let newest = latest(rows.iter().map(|r| &r.version)).cloned();
    let mut tags: Vec<Tag> = state
        .store
        .tags(&name)?
        .into_iter()
        .map(|(tag, v)| Tag {
            tag,
            version: v.to_string(),
            automatic: false,
        })
        .collect();
    if let Some(v) = &newest {
        tags.push(Tag {
            tag: LATEST.to_owned(),
            version: v.to_string(),
            automatic: true,
        });
    }
    let here = state.store.origin();
    let builds: Vec<Build> = rows
        .iter()
        .map(|r| {
            let origin = niso_protocol::record::OriginKey(r.entry.origin);
            let version = r.version.to_string();
            Build {
                tags: tags
                    .iter()
                    .filter(|t| t.version == version)
                    .map(|t| t.tag.clone())
                    .collect(),
                version,
                arch: r.arch.to_string(),
                size: r.entry.size,
                digest: r.digest().to_string(),
                published_ms: r.entry.published_ms,
                origin_peer: peer_id(&origin),
                here: origin == here,
            }
        })
        .collect();
    let body = render(
        "package.html",
        context! {
            viewer => viewer.template_context(&state),
            page => "packages",
            name,
            description => description(&rows, newest.as_ref()),
            latest => newest.map(|v| v.to_string()),
            builds,
            tags,
        },
    )?;
    Ok(Html(body).into_response())
}
