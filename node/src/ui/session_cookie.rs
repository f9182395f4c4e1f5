//! The session cookie lives as long as the session: every UI response to a browser with a
//! live session renews the cookie's `Max-Age`, as using the session renews its idle expiry on
//! the server. Without it, the browser dropped the cookie `session_idle_secs` after sign-in
//! however busy the session was.

use axum::{
    extract::{Request, State},
    http::header,
    middleware::Next,
    response::Response,
};

use super::{
    sessions::SESSION_COOKIE,
    viewer::{came_over_tls, cookie, set_cookie},
};
use crate::http::AppState;

pub async fn renew(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let id = cookie(request.headers(), SESSION_COOKIE);
    let secure = came_over_tls(request.uri(), request.headers());
    let mut response = next.run(request).await;
    let Some(id) = id else {
        return response;
    };
    // Checked after the handler: a sign-out or a revoked key has ended the session by now.
    if !state.ui_sessions.is_live(&id) {
        return response;
    }
    let prefix = format!("{SESSION_COOKIE}=");
    let sets_it = response
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .any(|v| v.as_bytes().starts_with(prefix.as_bytes()));
    if !sets_it {
        let renewed = set_cookie(
            SESSION_COOKIE,
            &id,
            state.config.ui.session_idle_secs,
            secure,
        );
        if let Ok(v) = renewed.parse() {
            response.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    response
}
