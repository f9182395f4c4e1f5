//! The OpenAPI document: equal to the checked-in copy, structurally valid (what OpenAPI 3.1
//! requires and the validator in `.ci/openapi-check` would refuse), and carrying the
//! constraints the node enforces, so fuzzers and generated clients send what it takes.

use std::collections::{BTreeMap, BTreeSet};

use axum::http::{Method, StatusCode};
use serde_json::Value;

use crate::support::TestNode;

async fn served() -> Value {
    TestNode::new()
        .await
        .get("/v1/openapi.json", None)
        .await
        .expect(StatusCode::OK)
        .json()
}

/// Every operation: (method, path, operation object, the path item's own parameters).
fn operations(doc: &Value) -> Vec<(String, String, &Value, Vec<Value>)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        let shared = item["parameters"].as_array().cloned().unwrap_or_default();
        for (method, op) in item.as_object().expect("path item") {
            if method == "parameters" {
                continue;
            }
            out.push((method.clone(), path.clone(), op, shared.clone()));
        }
    }
    out
}

/// Follows a `$ref` within the document.
fn resolve<'a>(doc: &'a Value, value: &'a Value) -> &'a Value {
    match value["$ref"].as_str() {
        Some(r) => {
            let target = doc
                .pointer(r.trim_start_matches('#'))
                .unwrap_or(&Value::Null);
            assert!(!target.is_null(), "dangling reference {r}");
            target
        }
        None => value,
    }
}

/// The served OpenAPI document is the checked-in one. After an intended API change,
/// regenerate with `NISO_BLESS=1 cargo test -p niso-node openapi`.
#[tokio::test]
async fn openapi_matches_checked_in_copy() {
    let served = served().await;
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/openapi.json");
    if std::env::var_os("NISO_BLESS").is_some() {
        std::fs::write(path, niso_node::http::openapi::document() + "\n").unwrap();
    }
    let on_disk: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert!(
        served == on_disk,
        "docs/openapi.json is stale; regenerate it with `NISO_BLESS=1 cargo test -p niso-node openapi`"
    );
    for p in [
        "/v1/packages",
        "/v1/uploads/{id}",
        "/v1/keys",
        "/v1/gc",
        "/v1/mirror",
        "/v1/node",
        "/v1/peers",
        "/v1/export",
        "/v1/import",
        "/v1/openapi.json",
    ] {
        assert!(
            served["paths"].get(p).is_some(),
            "{p} missing from the spec"
        );
    }
}

/// What OpenAPI 3.1 requires of operations and responses, and what tools rely on: unique
/// operation ids, a description on every response, every path template parameter declared
/// (and nothing declared that the template lacks), every reference resolving.
#[tokio::test]
async fn openapi_is_structurally_valid() {
    let doc = served().await;
    assert_eq!(doc["openapi"], "3.1.0");
    let ops = operations(&doc);
    assert!(ops.len() >= 28, "only {} operations", ops.len());
    let mut ids: BTreeMap<String, String> = BTreeMap::new();
    for (method, path, op, shared) in &ops {
        let at = format!("{} {path}", method.to_uppercase());
        let id = op["operationId"]
            .as_str()
            .unwrap_or_else(|| panic!("{at} has no operationId"));
        if let Some(other) = ids.insert(id.to_owned(), at.clone()) {
            panic!("operationId {id} names both {other} and {at}");
        }
        let responses = op["responses"]
            .as_object()
            .unwrap_or_else(|| panic!("{at}: no responses"));
        assert!(!responses.is_empty(), "{at}: no responses");
        for (status, response) in responses {
            let response = resolve(&doc, response);
            assert!(
                response["description"]
                    .as_str()
                    .is_some_and(|d| !d.trim().is_empty()),
                "{at} {status}: response without a description"
            );
            assert!(
                status.len() == 3 && status.bytes().all(|b| b.is_ascii_digit()),
                "{at}: status {status}"
            );
        }
        let declared: Vec<&Value> = op["parameters"]
            .as_array()
            .map(|a| a.iter().collect())
            .unwrap_or_default();
        let mut in_path = BTreeSet::new();
        let mut seen = BTreeSet::new();
        for p in declared.iter().copied().chain(shared.iter()) {
            let p = resolve(&doc, p);
            let (name, place) = (
                p["name"].as_str().unwrap_or(""),
                p["in"].as_str().unwrap_or(""),
            );
            assert!(
                seen.insert((name, place)),
                "{at}: parameter {name} in {place} twice"
            );
            assert!(
                p.get("schema").is_some(),
                "{at}: parameter {name} has no schema"
            );
            if place == "path" {
                assert_eq!(
                    p["required"], true,
                    "{at}: path parameter {name} must be required"
                );
                in_path.insert(name.to_owned());
            }
        }
        let template: BTreeSet<String> = path
            .split('/')
            .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(str::to_owned)
            .collect();
        assert_eq!(
            template, in_path,
            "{at}: path template and path parameters differ"
        );
    }
    // Every reference anywhere in the document resolves.
    fn refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(r)) = m.get("$ref") {
                    out.push(r);
                }
                m.values().for_each(|v| refs(v, out));
            }
            Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }
    let mut all = Vec::new();
    refs(&doc, &mut all);
    assert!(!all.is_empty());
    for r in all {
        assert!(
            r.starts_with("#/") && doc.pointer(&r[1..]).is_some(),
            "dangling reference {r}"
        );
    }
}

/// Every JSON error response is the one envelope, by reference.
#[tokio::test]
async fn errors_are_the_one_envelope() {
    let doc = served().await;
    let mut checked = 0;
    for (method, path, op, _) in operations(&doc) {
        for (status, response) in op["responses"].as_object().expect("responses") {
            if !(status.starts_with('4') || status.starts_with('5')) {
                continue;
            }
            let Some(content) = response["content"].as_object() else {
                // HEAD answers carry no body; `/healthz` answers 503 in text.
                assert!(
                    method == "head",
                    "{method} {path} {status}: an error without a body"
                );
                continue;
            };
            if path == "/healthz" {
                continue;
            }
            assert_eq!(
                content["application/json"]["schema"]["$ref"], "#/components/schemas/ErrorBody",
                "{method} {path} {status}"
            );
            checked += 1;
        }
    }
    assert!(checked > 50, "{checked} error responses");
}

/// The rules the node enforces on names, versions, tags, digests, ids and page sizes are in
/// the document, where a client generator or a fuzzer reads them.
#[tokio::test]
async fn parameters_carry_the_nodes_constraints() {
    let doc = served().await;
    let expected = [
        ("name", "PackageName"),
        ("version", "Version"),
        ("arch", "Arch"),
        ("tag", "Tag"),
        ("digest", "Digest"),
    ];
    let mut seen = BTreeSet::new();
    for (method, path, op, _) in operations(&doc) {
        for p in op["parameters"].as_array().into_iter().flatten() {
            let name = p["name"].as_str().unwrap_or("");
            let schema = &p["schema"];
            let at = format!("{method} {path} {name}");
            if let Some((_, component)) = expected.iter().find(|(n, _)| *n == name) {
                // Optional query parameters come as `oneOf: [null, $ref]` or a bare `$ref`.
                let text = schema.to_string();
                assert!(
                    text.contains(&format!("#/components/schemas/{component}")),
                    "{at}: {schema}"
                );
                seen.insert(name);
            }
            if p["in"] == "path" && name == "id" {
                let r = schema["$ref"].as_str().unwrap_or("");
                assert!(
                    r.ends_with("/KeyId") || r.ends_with("/UploadId"),
                    "{at}: {schema}"
                );
            }
            if name == "limit" {
                assert_eq!(schema["minimum"], 1, "{at}");
                assert_eq!(schema["maximum"], 1000, "{at}");
            }
        }
    }
    assert_eq!(seen.len(), expected.len(), "{seen:?}");
    let schemas = &doc["components"]["schemas"];
    for (_, component) in expected {
        assert!(
            schemas[component]["pattern"]
                .as_str()
                .is_some_and(|p| p.starts_with('^') && p.ends_with('$')),
            "{component}: {}",
            schemas[component]
        );
    }
    assert_eq!(schemas["PackageName"]["maxLength"], 64);
    assert_eq!(
        schemas["GcRequest"]["properties"]["keep_versions"]["minimum"],
        1
    );
    assert_eq!(schemas["CreateKey"]["properties"]["scopes"]["minItems"], 1);
}

/// Every documented operation is routed: none falls through to "no such endpoint" or a 405.
#[tokio::test]
async fn every_documented_operation_is_served() {
    let node = TestNode::new().await;
    let doc = node.get("/v1/openapi.json", None).await.json();
    for (method, path, _, _) in operations(&doc) {
        let concrete = path
            .replace("{name}", "demo")
            .replace("{version}", "1.0.0")
            .replace("{arch}", "any")
            .replace("{tag}", "stable")
            .replace("{digest}", &niso_protocol::Digest::of(b"x").to_string())
            .replace("{id}", "0123456789abcdef0123456789abcdef");
        let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let reply = node
            .call(method.clone(), &concrete, Some(&node.admin), None, &[])
            .await;
        assert_ne!(
            reply.status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path}"
        );
        assert!(
            !String::from_utf8_lossy(&reply.body).contains("no such endpoint"),
            "{method} {path} is documented but not routed"
        );
    }
}
