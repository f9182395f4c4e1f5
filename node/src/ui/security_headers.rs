//! The headers every UI response carries: a strict Content-Security-Policy (scripts and styles
//! only from the node itself, no inline script), no framing, no sniffing, no referrer leaks.

use axum::{
    http::{HeaderName, HeaderValue, header},
    response::Response,
};

/// Everything comes from the node itself: no CDN, no fonts, no inline script (the one script
/// is a file of ours), and forms post only back here.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

pub async fn add(mut response: Response) -> Response {
    let headers = response.headers_mut();
    let set = |headers: &mut axum::http::HeaderMap, name: HeaderName, value: &'static str| {
        headers.insert(name, HeaderValue::from_static(value));
    };
    set(
        headers,
        header::CONTENT_SECURITY_POLICY,
        CONTENT_SECURITY_POLICY,
    );
    set(headers, header::X_FRAME_OPTIONS, "DENY");
    set(headers, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(headers, header::REFERRER_POLICY, "no-referrer");
    // Pages show keys (once, on creation) and what a key may see: no cache keeps them.
    if !headers.contains_key(header::CACHE_CONTROL) {
        set(headers, header::CACHE_CONTROL, "no-store");
    }
    response
}
