//! A node on a temp dir, driven through its router without sockets.

use axum::{
    Router,
    body::Body,
    http::{Method, Request, StatusCode},
};
use http_body_util::BodyExt;
use niso_node::{
    Node, NodeConfig,
    api_keys::issue_key,
    config::P2pConfig,
    p2p::{Incoming, P2p, TransportChoice},
    trust::Trust,
};
use niso_protocol::{Digest, pack::Packer, scope::Scope};
use serde_json::Value;
use tower::ServiceExt;

pub struct TestNode {
    pub node: Node,
    pub router: Router,
    pub dir: tempfile::TempDir,
    pub admin: String,
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: axum::http::HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// The `error.code` of an error envelope.
    pub fn code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    #[track_caller]
    pub fn expect(self, status: StatusCode) -> Self {
        assert_eq!(
            self.status,
            status,
            "body: {}",
            String::from_utf8_lossy(&self.body)
        );
        self
    }
}

impl TestNode {
    pub async fn new() -> Self {
        Self::with(|_| {}).await
    }

    /// A node without p2p (HTTP tests).
    pub async fn with(tweak: impl FnOnce(&mut NodeConfig)) -> Self {
        Self::with_transport(
            |c| {
                c.p2p.enabled = Some(false);
                tweak(c);
            },
            TransportChoice::Memory,
        )
        .await
    }

    pub async fn with_transport(
        tweak: impl FnOnce(&mut NodeConfig),
        transport: TransportChoice,
    ) -> Self {
        Self::in_dir(tempfile::tempdir().unwrap(), tweak, transport).await
    }

    /// A node on `dir`, whose `data/` may already hold files (a node key made in advance, so
    /// other nodes' rules can name this one before it starts).
    pub async fn in_dir(
        dir: tempfile::TempDir,
        tweak: impl FnOnce(&mut NodeConfig),
        transport: TransportChoice,
    ) -> Self {
        let mut config = NodeConfig {
            data_dir: dir.path().join("data"),
            ..NodeConfig::default()
        };
        // Tests that pick a transport want the p2p side, rules or not.
        config.p2p.enabled = Some(true);
        tweak(&mut config);
        let node = Node::open_with(config, transport).await.unwrap();
        let admin = std::fs::read_to_string(dir.path().join("data/admin.key"))
            .unwrap()
            .trim()
            .to_owned();
        Self {
            router: node.router(),
            node,
            dir,
            admin,
        }
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Option<Body>,
        headers: &[(&str, String)],
    ) -> Reply {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(k) = key {
            req = req.header("authorization", format!("Bearer {k}"));
        }
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        let req = req.body(body.unwrap_or_else(Body::empty)).unwrap();
        let response = self.router.clone().oneshot(req).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = response
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec();
        Reply {
            status,
            headers,
            body,
        }
    }

    pub async fn get(&self, path: &str, key: Option<&str>) -> Reply {
        self.call(Method::GET, path, key, None, &[]).await
    }

    pub async fn send_json(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Value,
    ) -> Reply {
        self.call(
            method,
            path,
            key,
            Some(Body::from(body.to_string())),
            &[("content-type", "application/json".to_owned())],
        )
        .await
    }

    /// A key with `scopes`, issued straight through the store.
    pub async fn key(&self, scopes: &[&str]) -> String {
        self.key_expiring(scopes, None).await
    }

    pub async fn key_expiring(&self, scopes: &[&str], expires_at_ms: Option<u64>) -> String {
        let scopes: Vec<Scope> = scopes.iter().map(|s| s.parse().unwrap()).collect();
        let (key, _) = issue_key(
            &self.node.state().store,
            "test".into(),
            scopes,
            expires_at_ms,
        )
        .await
        .unwrap();
        key.expose().to_owned()
    }

    /// Opens an upload, sends `bytes` in one PATCH and finishes with their digest.
    pub async fn push(&self, key: &str, name: &str, bytes: &[u8]) -> Reply {
        self.push_claiming(key, name, bytes, Digest::of(bytes))
            .await
    }

    pub async fn push_claiming(
        &self,
        key: &str,
        name: &str,
        bytes: &[u8],
        digest: Digest,
    ) -> Reply {
        let created = self
            .call(
                Method::POST,
                &format!("/v1/packages/{name}/uploads"),
                Some(key),
                None,
                &[],
            )
            .await;
        if created.status != StatusCode::CREATED {
            return created;
        }
        let id = created.json()["id"].as_str().unwrap().to_owned();
        let patched = self
            .patch_upload(key, &id, bytes.to_vec(), "0".into())
            .await;
        if patched.status != StatusCode::OK {
            return patched;
        }
        self.finish_upload(key, &id, digest).await
    }

    /// `PATCH /v1/uploads/{id}` with `bytes` at `offset`.
    pub async fn patch_upload(&self, key: &str, id: &str, bytes: Vec<u8>, offset: String) -> Reply {
        self.call(
            Method::PATCH,
            &format!("/v1/uploads/{id}"),
            Some(key),
            Some(Body::from(bytes)),
            &[("upload-offset", offset)],
        )
        .await
    }

    /// `PUT /v1/uploads/{id}?digest=…`: finish the upload as `digest`.
    pub async fn finish_upload(&self, key: &str, id: &str, digest: Digest) -> Reply {
        self.call(
            Method::PUT,
            &format!("/v1/uploads/{id}?digest={digest}"),
            Some(key),
            None,
            &[],
        )
        .await
    }

    /// Every file under the data dir, recursively.
    pub fn data_files(&self) -> Vec<std::path::PathBuf> {
        let mut out = Vec::new();
        let mut stack = vec![self.dir.path().join("data")];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let e = e.unwrap();
                if e.file_type().unwrap().is_dir() {
                    stack.push(e.path());
                } else {
                    out.push(e.path());
                }
            }
        }
        out
    }
}

/// A valid package archive.
pub fn package(name: &str, version: &str, arch: &str, payload: &[u8]) -> Vec<u8> {
    let meta = format!(
        "name = \"{name}\"\nversion = \"{version}\"\narch = \"{arch}\"\ndescription = \"{name} package\"\n"
    );
    let mut p = Packer::new(Vec::new(), meta.as_bytes()).unwrap();
    p.add_file("payload", false, payload.len() as u64, payload)
        .unwrap();
    p.finish().unwrap()
}

/// A bare libp2p side on the memory transport, for a test to script as a peer: its handle,
/// its address and its inbound streams.
pub async fn bare_peer(secret: [u8; 32]) -> (P2p, String, Incoming) {
    let config = P2pConfig {
        listen: vec!["/memory/0".into()],
        mdns: false,
        ..P2pConfig::default()
    };
    let (peer, mut events, _tx, _task, incoming) =
        P2p::start(secret, &config, Trust::default(), TransportChoice::Memory)
            .await
            .unwrap();
    // Its events matter to no test; taken, so its event loop never finds the queue full.
    tokio::spawn(async move { while events.recv().await.is_some() {} });
    assert!(
        peer.wait_listening(std::time::Duration::from_secs(10))
            .await
    );
    let addr = peer.listen_addrs().remove(0);
    (peer, addr, incoming)
}
