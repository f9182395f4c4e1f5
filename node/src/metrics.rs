//! Prometheus metrics served at `/metrics`.

use axum::http::Method;
use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

/// Labels of the request counter. Both come from fixed sets: the request line is the
/// client's to choose, and every distinct label value is a series kept for the node's life.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// One of [`METHOD_LABELS`].
    pub method: &'static str,
    /// The response's status code, which `http::StatusCode` keeps within 100..=999.
    pub status: u16,
}

/// The method label values: the methods the API routes, and `other` for everything else.
pub const METHOD_LABELS: [&str; 8] = [
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "other",
];

/// The label for `method`: itself when it is one of the known methods, `other` otherwise.
pub fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// Why a record from elsewhere was refused; values come only from `intake::Reason`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusedLabels {
    pub reason: String,
}

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub upload_bytes: Counter,
    pub download_bytes: Counter,
    pub packages_published: Counter,
    pub records_applied: Counter,
    pub records_rejected: Counter,
    pub records_refused: Family<RefusedLabels, Counter>,
    pub gossip_dropped: Counter,
    pub auth_failures: Counter,
    pub gc_runs: Counter,
    pub uploads_expired: Counter,
    pub p2p_blob_bytes_served: Counter,
    pub http_connections: Gauge,
    pub http_connections_refused: Counter,
    pub packages: Gauge,
    pub versions: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("niso");
        let requests = Family::<RequestLabels, Counter>::default();
        let upload_bytes = Counter::default();
        let download_bytes = Counter::default();
        let packages_published = Counter::default();
        let records_applied = Counter::default();
        let records_rejected = Counter::default();
        let records_refused = Family::<RefusedLabels, Counter>::default();
        let gossip_dropped = Counter::default();
        let auth_failures = Counter::default();
        let gc_runs = Counter::default();
        let uploads_expired = Counter::default();
        let p2p_blob_bytes_served = Counter::default();
        let http_connections = Gauge::default();
        let http_connections_refused = Counter::default();
        let packages = Gauge::default();
        let versions = Gauge::default();
        registry.register(
            "http_requests",
            "HTTP requests by method and status",
            requests.clone(),
        );
        registry.register(
            "upload_bytes",
            "Package bytes received",
            upload_bytes.clone(),
        );
        registry.register(
            "download_bytes",
            "Blob bytes served",
            download_bytes.clone(),
        );
        registry.register(
            "packages_published",
            "Package versions published here",
            packages_published.clone(),
        );
        registry.register(
            "records_applied",
            "Records from elsewhere applied",
            records_applied.clone(),
        );
        registry.register(
            "records_rejected",
            "Records from elsewhere refused",
            records_rejected.clone(),
        );
        registry.register(
            "records_refused",
            "Records from elsewhere refused, by reason (authority, conflict, invalid, ...)",
            records_refused.clone(),
        );
        registry.register(
            "gossip_dropped",
            "Gossiped records dropped for want of room to take them in (sync rounds pull them)",
            gossip_dropped.clone(),
        );
        registry.register(
            "auth_failures",
            "Requests refused for a missing or bad key",
            auth_failures.clone(),
        );
        registry.register("gc_runs", "Garbage collection runs", gc_runs.clone());
        registry.register(
            "uploads_expired",
            "Abandoned uploads removed after idling past the timeout",
            uploads_expired.clone(),
        );
        registry.register(
            "p2p_blob_bytes_served",
            "Blob bytes sent to peers",
            p2p_blob_bytes_served.clone(),
        );
        registry.register(
            "http_connections",
            "HTTP connections held",
            http_connections.clone(),
        );
        registry.register(
            "http_connections_refused",
            "HTTP connections closed on accept for being over a connection limit",
            http_connections_refused.clone(),
        );
        registry.register("packages", "Packages held", packages.clone());
        registry.register("versions", "Package versions held", versions.clone());
        Self {
            registry,
            requests,
            upload_bytes,
            download_bytes,
            packages_published,
            records_applied,
            records_rejected,
            records_refused,
            gossip_dropped,
            auth_failures,
            gc_runs,
            uploads_expired,
            p2p_blob_bytes_served,
            http_connections,
            http_connections_refused,
            packages,
            versions,
        }
    }
}

impl Metrics {
    /// Counts one refused record under `reason` (one of `intake::Reason`'s fixed names).
    pub fn refused(&self, reason: &'static str) {
        self.records_refused
            .get_or_create(&RefusedLabels {
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_method_maps_into_the_fixed_set() {
        for (method, want) in [
            (Method::GET, "GET"),
            (Method::HEAD, "HEAD"),
            (Method::POST, "POST"),
            (Method::PUT, "PUT"),
            (Method::PATCH, "PATCH"),
            (Method::DELETE, "DELETE"),
            (Method::OPTIONS, "OPTIONS"),
            (Method::TRACE, "other"),
            (Method::CONNECT, "other"),
            (Method::from_bytes(b"JUNK").unwrap(), "other"),
            (Method::from_bytes(b"get").unwrap(), "other"),
        ] {
            let label = method_label(&method);
            assert_eq!(label, want, "{method}");
            assert!(METHOD_LABELS.contains(&label));
        }
    }
}
