//! `/api`: the HTTP API reference, rendered from the node's own OpenAPI document.

use axum::{
    extract::State,
    response::{Html, IntoResponse, Response},
};
use minijinja::context;
use serde::Serialize;
use serde_json::Value;

use super::{page_error::PageError, templates::render, viewer::Viewer};
use crate::http::{AppState, openapi};

#[derive(Serialize)]
struct Operation {
    method: String,
    path: String,
    summary: String,
    tag: String,
}

/// Every operation of the document, grouped by tag in the document's tag order.
fn operations(doc: &Value) -> Vec<Operation> {
    let mut out = Vec::new();
    if let Some(paths) = doc.get("paths").and_then(Value::as_object) {
        for (path, item) in paths {
            let Some(item) = item.as_object() else {
                continue;
            };
            for (method, op) in item {
                let text = |k: &str| op.get(k).and_then(Value::as_str).map(str::to_owned);
                out.push(Operation {
                    method: method.to_uppercase(),
                    path: path.clone(),
                    summary: text("summary")
                        .or_else(|| text("description"))
                        .unwrap_or_default(),
                    tag: op
                        .get("tags")
                        .and_then(|t| t.get(0))
                        .and_then(Value::as_str)
                        .unwrap_or("other")
                        .to_owned(),
                });
            }
        }
    }
    let order: Vec<String> = doc
        .get("tags")
        .and_then(Value::as_array)
        .map(|t| {
            t.iter()
                .filter_map(|t| t.get("name").and_then(Value::as_str).map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    out.sort_by_key(|o| order.iter().position(|t| *t == o.tag).unwrap_or(usize::MAX));
    out
}

pub async fn show(State(state): State<AppState>, viewer: Viewer) -> Result<Response, PageError> {
    let doc: Value = serde_json::from_str(&openapi::document()).unwrap_or(Value::Null);
    let body = render(
        "api.html",
        context! {
            viewer => viewer.template_context(&state),
            page => "api",
            title => doc.pointer("/info/title").and_then(Value::as_str).unwrap_or("niso registry"),
            description => doc.pointer("/info/description").and_then(Value::as_str).unwrap_or_default(),
            operations => operations(&doc),
        },
    )?;
    Ok(Html(body).into_response())
}
