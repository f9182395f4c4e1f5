//! The HTTP client for one registry: typed calls to the `/v1` API, with the API's error
//! envelope turned into [`ClientError`].

use std::time::Duration;

use niso_protocol::api::{
    CreateKey, CreatedKey, ErrorBody, GcReport, GcRequest, ImportReport, KeyList, MirrorReport,
    MirrorRequest, NodeInfo, PackageDetail, PackageList, PeerInfo, Published, Resolved, SetTag,
    TagInfo, TagList, UploadList, UploadStatus, WhoAmI,
};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde::{Serialize, de::DeserializeOwned};

use crate::client_config::Target;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("could not reach the registry at {url}")]
    Unreachable {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{message}")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
    #[error("the registry at {url} answered {status} without a usable body")]
    Unexpected { url: String, status: u16 },
}

impl ClientError {
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Api { status, .. } | Self::Unexpected { status, .. } => Some(*status),
            Self::Unreachable { .. } => None,
        }
    }

    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Api { code, .. } => Some(code),
            _ => None,
        }
    }

    /// The registry itself is not answering, as opposed to answering no: it is down or
    /// restarting, the connection broke, or a proxy in front of it says so.
    pub fn is_away(&self) -> bool {
        matches!(self, Self::Unreachable { .. }) || matches!(self.status(), Some(502..=504))
    }
}

/// What opening an upload gave.
#[derive(Debug)]
pub enum Opened {
    Upload(UploadStatus),
    /// The registry already holds these exact bytes; nothing was opened.
    AlreadyPublished(Published),
}

#[derive(Debug, Clone)]
pub struct RegistryClient {
    http: reqwest::Client,
    pub target: Target,
}

impl RegistryClient {
    pub fn new(target: Target) -> Self {
        // Installing the process-wide TLS provider fails only if one is already installed.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(300))
            .user_agent(concat!("niso/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        Self { http, target }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.target.url)
    }

    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let mut rb = self.http.request(method, self.url(path));
        if let Some(key) = &self.target.key {
            rb = rb.bearer_auth(key);
        }
        rb
    }

    /// Sends a request; any non-2xx answer becomes [`ClientError::Api`].
    pub async fn send(&self, rb: RequestBuilder) -> Result<Response, ClientError> {
        let response = rb.send().await.map_err(|source| ClientError::Unreachable {
            url: self.target.url.clone(),
            source,
        })?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status().as_u16();
        match response.json::<ErrorBody>().await {
            Ok(body) => Err(ClientError::Api {
                status,
                code: body.error.code,
                message: body.error.message,
            }),
            Err(_) => Err(ClientError::Unexpected {
                url: self.target.url.clone(),
                status,
            }),
        }
    }

    async fn json<T: DeserializeOwned>(&self, rb: RequestBuilder) -> Result<T, ClientError> {
        let response = self.send(rb).await?;
        let status = response.status().as_u16();
        response.json().await.map_err(|_| ClientError::Unexpected {
            url: self.target.url.clone(),
            status,
        })
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.json(self.request(Method::GET, path)).await
    }

    async fn with_body<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        self.json(self.request(method, path).json(body)).await
    }

    async fn delete(&self, path: &str) -> Result<(), ClientError> {
        self.send(self.request(Method::DELETE, path))
            .await
            .map(drop)
    }

    pub async fn node_info(&self) -> Result<NodeInfo, ClientError> {
        self.get("/v1/node").await
    }

    pub async fn peers(&self) -> Result<Vec<PeerInfo>, ClientError> {
        self.get("/v1/peers").await
    }

    pub async fn whoami(&self) -> Result<WhoAmI, ClientError> {
        self.get("/v1/whoami").await
    }

    pub async fn search(&self, query: &str, limit: usize) -> Result<PackageList, ClientError> {
        self.json(
            self.request(Method::GET, "/v1/packages")
                .query(&[("q", query), ("limit", &limit.to_string())]),
        )
        .await
    }

    pub async fn list_packages(&self, cursor: Option<&str>) -> Result<PackageList, ClientError> {
        let mut rb = self
            .request(Method::GET, "/v1/packages")
            .query(&[("limit", "1000")]);
        if let Some(c) = cursor {
            rb = rb.query(&[("cursor", c)]);
        }
        self.json(rb).await
    }

    pub async fn package(&self, name: &str) -> Result<PackageDetail, ClientError> {
        self.get(&format!("/v1/packages/{name}")).await
    }

    pub async fn resolve(
        &self,
        name: &str,
        reference: Option<&str>,
        arch: Option<&str>,
    ) -> Result<Resolved, ClientError> {
        let mut rb = self.request(Method::GET, &format!("/v1/packages/{name}/resolve"));
        if let Some(r) = reference {
            rb = rb.query(&[("ref", r)]);
        }
        if let Some(a) = arch {
            rb = rb.query(&[("arch", a)]);
        }
        self.json(rb).await
    }

    pub async fn tags(&self, name: &str) -> Result<TagList, ClientError> {
        self.get(&format!("/v1/packages/{name}/tags")).await
    }

    pub async fn set_tag(
        &self,
        name: &str,
        tag: &str,
        version: &str,
    ) -> Result<TagInfo, ClientError> {
        self.with_body(
            Method::PUT,
            &format!("/v1/packages/{name}/tags/{tag}"),
            &SetTag {
                version: version.to_owned(),
            },
        )
        .await
    }

    pub async fn delete_tag(&self, name: &str, tag: &str) -> Result<(), ClientError> {
        let rb = self.request(Method::DELETE, &format!("/v1/packages/{name}/tags/{tag}"));
        self.send(rb).await.map(drop)
    }

    pub async fn delete_version(
        &self,
        name: &str,
        version: &str,
        arch: Option<&str>,
    ) -> Result<(), ClientError> {
        let mut rb = self.request(
            Method::DELETE,
            &format!("/v1/packages/{name}/versions/{version}"),
        );
        if let Some(a) = arch {
            rb = rb.query(&[("arch", a)]);
        }
        self.send(rb).await.map(drop)
    }

    /// Opens an upload for a file with `digest`, unless the registry already has those
    /// exact bytes under `name`.
    pub async fn create_upload(&self, name: &str, digest: &str) -> Result<Opened, ClientError> {
        let response = self
            .send(
                self.request(Method::POST, &format!("/v1/packages/{name}/uploads"))
                    .query(&[("digest", digest)]),
            )
            .await?;
        let status = response.status();
        let unexpected = |_| ClientError::Unexpected {
            url: self.target.url.clone(),
            status: status.as_u16(),
        };
        if status == StatusCode::OK {
            return response
                .json()
                .await
                .map(Opened::AlreadyPublished)
                .map_err(unexpected);
        }
        response
            .json()
            .await
            .map(Opened::Upload)
            .map_err(unexpected)
    }

    /// The caller's open uploads (every key's for an admin key).
    pub async fn list_uploads(&self) -> Result<UploadList, ClientError> {
        self.get("/v1/uploads").await
    }

    pub async fn upload_status(&self, id: &str) -> Result<UploadStatus, ClientError> {
        self.get(&format!("/v1/uploads/{id}")).await
    }

    pub async fn append_upload(
        &self,
        id: &str,
        offset: u64,
        length: u64,
        body: reqwest::Body,
    ) -> Result<UploadStatus, ClientError> {
        self.json(
            self.request(Method::PATCH, &format!("/v1/uploads/{id}"))
                .header("upload-offset", offset)
                .header(reqwest::header::CONTENT_LENGTH, length)
                .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
                .body(body),
        )
        .await
    }

    pub async fn finish_upload(
        &self,
        id: &str,
        digest: &str,
    ) -> Result<(StatusCode, Published), ClientError> {
        let response = self
            .send(
                self.request(Method::PUT, &format!("/v1/uploads/{id}"))
                    .query(&[("digest", digest)]),
            )
            .await?;
        let status = response.status();
        let published = response.json().await.map_err(|_| ClientError::Unexpected {
            url: self.target.url.clone(),
            status: status.as_u16(),
        })?;
        Ok((status, published))
    }

    pub async fn cancel_upload(&self, id: &str) -> Result<(), ClientError> {
        self.delete(&format!("/v1/uploads/{id}")).await
    }

    /// Starts a blob download, from byte `from` on.
    pub async fn download(
        &self,
        name: &str,
        digest: &str,
        from: u64,
    ) -> Result<Response, ClientError> {
        let mut rb = self.request(Method::GET, &format!("/v1/packages/{name}/blobs/{digest}"));
        if from > 0 {
            rb = rb.header(reqwest::header::RANGE, format!("bytes={from}-"));
        }
        self.send(rb).await
    }

    /// Starts streaming a bundle export.
    pub async fn export(&self, since: u64, packages: &[String]) -> Result<Response, ClientError> {
        let mut rb = self
            .request(Method::GET, "/v1/export")
            .query(&[("since", since.to_string())]);
        if !packages.is_empty() {
            rb = rb.query(&[("packages", packages.join(","))]);
        }
        self.send(rb).await
    }

    pub async fn import(
        &self,
        body: reqwest::Body,
        length: u64,
    ) -> Result<ImportReport, ClientError> {
        self.json(
            self.request(Method::POST, "/v1/import")
                .header(reqwest::header::CONTENT_TYPE, "application/x-tar")
                .header(reqwest::header::CONTENT_LENGTH, length)
                .body(body),
        )
        .await
    }

    pub async fn create_key(&self, body: &CreateKey) -> Result<CreatedKey, ClientError> {
        self.with_body(Method::POST, "/v1/keys", body).await
    }

    pub async fn list_keys(&self) -> Result<KeyList, ClientError> {
        self.get("/v1/keys").await
    }

    pub async fn revoke_key(&self, id: &str) -> Result<(), ClientError> {
        self.delete(&format!("/v1/keys/{id}")).await
    }

    pub async fn gc(&self, body: &GcRequest) -> Result<GcReport, ClientError> {
        self.with_body(Method::POST, "/v1/gc", body).await
    }

    pub async fn mirror(&self, body: &MirrorRequest) -> Result<MirrorReport, ClientError> {
        self.with_body(Method::POST, "/v1/mirror", body).await
    }
}
