//! The web UI through the router: sign-in and sessions, CSRF, security headers, escaping,
//! and that a page never shows a package the viewer's key may not pull.

use axum::{
    body::Body,
    http::{Method, StatusCode},
};
use niso_protocol::pack::Packer;

use crate::support::{Reply, TestNode, package};

const XSS: &str = "<script>alert(1)</script><img src=x onerror=alert(2)>";

fn described(name: &str, version: &str, description: &str) -> Vec<u8> {
    let meta = format!(
        "name = \"{name}\"\nversion = \"{version}\"\narch = \"any\"\ndescription = \"{description}\"\n"
    );
    let mut p = Packer::new(Vec::new(), meta.as_bytes()).unwrap();
    p.add_file("payload", false, 3, &b"abc"[..]).unwrap();
    p.finish().unwrap()
}

fn body(r: &Reply) -> String {
    String::from_utf8_lossy(&r.body).into_owned()
}

/// Every `Set-Cookie` of a reply.
fn set_cookies(r: &Reply) -> Vec<String> {
    r.headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}

fn cookie_value(r: &Reply, name: &str) -> Option<String> {
    set_cookies(r).iter().find_map(|c| {
        c.split(';')
            .next()
            .and_then(|kv| kv.strip_prefix(&format!("{name}=")))
            .map(str::to_owned)
    })
}

/// The `value` of the hidden `csrf` input of a page.
fn csrf_of(page: &str) -> String {
    let at = page
        .find("name=\"csrf\" value=\"")
        .expect("a form with a CSRF token")
        + 19;
    page[at..at + 64].to_owned()
}

async fn get(node: &TestNode, path: &str, cookie: Option<&str>) -> Reply {
    let headers: Vec<(&str, String)> = cookie
        .map(|c| ("cookie", c.to_owned()))
        .into_iter()
        .collect();
    node.call(Method::GET, path, None, None, &headers).await
}

async fn post_form(node: &TestNode, path: &str, cookie: Option<&str>, form: &str) -> Reply {
    let mut headers = vec![(
        "content-type",
        "application/x-www-form-urlencoded".to_owned(),
    )];
    if let Some(c) = cookie {
        headers.push(("cookie", c.to_owned()));
    }
    node.call(
        Method::POST,
        path,
        None,
        Some(Body::from(form.to_owned())),
        &headers,
    )
    .await
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Signs in through the login form and returns the `Cookie` header of the session.
async fn sign_in(node: &TestNode, key: &str) -> String {
    let form = get(node, "/login", None).await.expect(StatusCode::OK);
    let login_cookie = cookie_value(&form, "niso_login").unwrap();
    let csrf = csrf_of(&body(&form));
    let done = post_form(
        node,
        "/login",
        Some(&format!("niso_login={login_cookie}")),
        &format!("key={}&csrf={csrf}", enc(key)),
    )
    .await
    .expect(StatusCode::SEE_OTHER);
    format!(
        "niso_session={}",
        cookie_value(&done, "niso_session").unwrap()
    )
}

async fn node_with_packages() -> TestNode {
    let node = TestNode::new().await;
    for (name, version) in [
        ("acme-api", "1.0.0"),
        ("acme-api", "1.1.0"),
        ("acme-web", "2.0.0"),
        ("other-pkg", "1.0.0"),
    ] {
        node.push(&node.admin, name, &package(name, version, "x86_64", b"x"))
            .await
            .expect(StatusCode::CREATED);
    }
    node
}

#[tokio::test]
async fn a_scoped_session_sees_only_what_its_key_may_pull() {
    let node = node_with_packages().await;
    let key = node.key(&["pull:acme-*"]).await;
    let cookie = sign_in(&node, &key).await;

    let list = body(&get(&node, "/", Some(&cookie)).await.expect(StatusCode::OK));
    assert!(
        list.contains("acme-api") && list.contains("acme-web"),
        "{list}"
    );
    assert!(list.contains("1.1.0"), "the latest version is listed");
    assert!(!list.contains("other-pkg"), "{list}");

    // A search that would match every package counts only the visible ones.
    let search = body(
        &get(&node, "/?q=package", Some(&cookie))
            .await
            .expect(StatusCode::OK),
    );
    assert!(search.contains("2 results"), "{search}");
    assert!(!search.contains("other-pkg"));
    let search = body(
        &get(&node, "/?q=other", Some(&cookie))
            .await
            .expect(StatusCode::OK),
    );
    assert!(
        search.contains("0 results") && !search.contains("other-pkg"),
        "{search}"
    );

    let page = body(
        &get(&node, "/packages/acme-api", Some(&cookie))
            .await
            .expect(StatusCode::OK),
    );
    for want in [
        "1.0.0",
        "1.1.0",
        "x86_64",
        "latest",
        "niso pull acme-api:1.1.0",
        "niso upgrade acme-api",
        "(this node)",
    ] {
        assert!(page.contains(want), "missing {want}: {page}");
    }
    let hidden = get(&node, "/packages/other-pkg", Some(&cookie))
        .await
        .expect(StatusCode::NOT_FOUND);
    let missing = get(&node, "/packages/no-such-pkg", Some(&cookie))
        .await
        .expect(StatusCode::NOT_FOUND);
    assert_eq!(
        body(&hidden).replace("other-pkg", "NAME"),
        body(&missing).replace("no-such-pkg", "NAME"),
        "a hidden package answers exactly like a missing one"
    );
    assert!(
        hidden.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );

    // Counts of the whole catalog would tell of packages outside the scope.
    let node_page = body(
        &get(&node, "/node", Some(&cookie))
            .await
            .expect(StatusCode::OK),
    );
    assert!(!node_page.contains("id=\"catalog\""), "{node_page}");
    assert!(!node_page.contains("4 packages"));

    // Not an admin: no keys or peers pages.
    get(&node, "/keys", Some(&cookie))
        .await
        .expect(StatusCode::FORBIDDEN);
    get(&node, "/peers", Some(&cookie))
        .await
        .expect(StatusCode::FORBIDDEN);
    get(&node, "/ui/peers.json", Some(&cookie))
        .await
        .expect(StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn pages_paginate() {
    let node = TestNode::new().await;
    for i in 0..55 {
        let name = format!("pkg-{i:02}");
        node.push(&node.admin, &name, &package(&name, "1.0.0", "any", b"x"))
            .await
            .expect(StatusCode::CREATED);
    }
    let cookie = sign_in(&node, &node.admin).await;
    let first = body(&get(&node, "/", Some(&cookie)).await.expect(StatusCode::OK));
    assert!(first.contains("pkg-49") && !first.contains("pkg-50"));
    assert!(first.contains("href=\"/?cursor=pkg-49\""), "{first}");
    let second = body(
        &get(&node, "/?cursor=pkg-49", Some(&cookie))
            .await
            .expect(StatusCode::OK),
    );
    assert!(second.contains("pkg-50") && second.contains("pkg-54") && !second.contains("pkg-49"));
    assert!(!second.contains("Next page"));
}

#[tokio::test]
async fn without_a_session_and_anonymous_pull_off_pages_show_the_login_form_and_no_names() {
    let node = node_with_packages().await;
    for path in ["/", "/?q=acme", "/packages/acme-api", "/keys", "/peers"] {
        let r = get(&node, path, None)
            .await
            .expect(StatusCode::UNAUTHORIZED);
        let page = body(&r);
        assert!(page.contains("id=\"login-form\""), "{path}: {page}");
        assert!(
            !page.contains("acme-api") && !page.contains("other-pkg"),
            "{path}: {page}"
        );
    }
}

#[tokio::test]
async fn anonymous_pull_shows_packages_without_a_session() {
    let node = TestNode::with(|c| c.anonymous_pull = true).await;
    node.push(
        &node.admin,
        "acme-api",
        &package("acme-api", "1.0.0", "any", b"x"),
    )
    .await
    .expect(StatusCode::CREATED);
    let page = body(&get(&node, "/", None).await.expect(StatusCode::OK));
    assert!(page.contains("acme-api") && page.contains("Sign in"));
    get(&node, "/packages/acme-api", None)
        .await
        .expect(StatusCode::OK);
    // Admin pages ask a visitor without a session to sign in.
    let keys = body(
        &get(&node, "/keys", None)
            .await
            .expect(StatusCode::UNAUTHORIZED),
    );
    assert!(keys.contains("id=\"login-form\""), "{keys}");
}

#[tokio::test]
async fn descriptions_render_as_text() {
    let node = TestNode::new().await;
    node.push(
        &node.admin,
        "acme-xss",
        &described("acme-xss", "1.0.0", XSS),
    )
    .await
    .expect(StatusCode::CREATED);
    let cookie = sign_in(&node, &node.admin).await;
    for path in ["/", "/packages/acme-xss", "/?q=acme"] {
        let page = body(&get(&node, path, Some(&cookie)).await.expect(StatusCode::OK));
        assert!(
            !page.contains("<script>alert") && !page.contains("<img src=x"),
            "{path}: {page}"
        );
        assert!(
            page.contains(
                "&lt;script&gt;alert(1)&lt;&#x2f;script&gt;&lt;img src=x onerror=alert(2)&gt;"
            ),
            "{path}: {page}"
        );
    }
}

#[tokio::test]
async fn sessions_use_strict_cookies_and_end_on_sign_out_or_revocation() {
    let node = TestNode::new().await;
    let form = get(&node, "/login", None).await.expect(StatusCode::OK);
    let login_cookie = cookie_value(&form, "niso_login").unwrap();
    let csrf = csrf_of(&body(&form));

    // A wrong key: refused on the page, no session.
    let refused = post_form(
        &node,
        "/login",
        Some(&format!("niso_login={login_cookie}")),
        &format!("key=niso_k1_nope&csrf={csrf}"),
    )
    .await
    .expect(StatusCode::UNAUTHORIZED);
    assert!(body(&refused).contains("Sign-in failed"));
    assert!(cookie_value(&refused, "niso_session").is_none());

    let key = node.key(&["pull:*"]).await;
    let done = post_form(
        &node,
        "/login",
        Some(&format!("niso_login={login_cookie}")),
        &format!("key={}&csrf={csrf}", enc(&key)),
    )
    .await
    .expect(StatusCode::SEE_OTHER);
    let set = set_cookies(&done);
    let session = set.iter().find(|c| c.starts_with("niso_session=")).unwrap();
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age="] {
        assert!(session.contains(flag), "{session}");
    }
    assert!(!session.contains("Secure"), "plain HTTP: {session}");
    let cookie = format!(
        "niso_session={}",
        cookie_value(&done, "niso_session").unwrap()
    );
    let home = get(&node, "/", Some(&cookie)).await.expect(StatusCode::OK);
    // Each page renews the cookie's lifetime, as using the session renews it on the node.
    let renewed = set_cookies(&home);
    assert_eq!(renewed.len(), 1, "{renewed:?}");
    assert!(
        renewed[0].starts_with(&format!("{cookie}; "))
            && renewed[0].contains(&format!("; Max-Age={};", 12 * 3600))
            && renewed[0].contains("HttpOnly"),
        "{renewed:?}"
    );
    // A cookie naming no live session is not echoed back.
    let stranger = get(&node, "/", Some("niso_session=00ff")).await;
    assert!(
        cookie_value(&stranger, "niso_session").is_none(),
        "{:?}",
        set_cookies(&stranger)
    );
    let home = body(&home);
    assert!(home.contains("Sign out"));

    // Behind a TLS proxy the cookie is Secure.
    let form = node
        .call(
            Method::GET,
            "/login",
            None,
            None,
            &[("x-forwarded-proto", "https".into())],
        )
        .await;
    assert!(set_cookies(&form)[0].contains("; Secure"));

    // Sign-out needs the session's CSRF token.
    post_form(&node, "/logout", Some(&cookie), "csrf=00")
        .await
        .expect(StatusCode::FORBIDDEN);
    get(&node, "/", Some(&cookie)).await.expect(StatusCode::OK);
    let out = post_form(
        &node,
        "/logout",
        Some(&cookie),
        &format!("csrf={}", csrf_of(&home)),
    )
    .await
    .expect(StatusCode::SEE_OTHER);
    assert!(set_cookies(&out)[0].starts_with("niso_session=;"));
    get(&node, "/", Some(&cookie))
        .await
        .expect(StatusCode::UNAUTHORIZED);

    // Revoking the key ends its session on the next page.
    let admin = sign_in(&node, &node.admin).await;
    let victim_key = node.key(&["pull:*"]).await;
    let victim = sign_in(&node, &victim_key).await;
    get(&node, "/", Some(&victim)).await.expect(StatusCode::OK);
    let keys = body(
        &get(&node, "/keys", Some(&admin))
            .await
            .expect(StatusCode::OK),
    );
    let id = node.get("/v1/whoami", Some(&victim_key)).await.json()["key_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(keys.contains(&id));
    post_form(
        &node,
        &format!("/keys/{id}/revoke"),
        Some(&admin),
        &format!("csrf={}", csrf_of(&keys)),
    )
    .await
    .expect(StatusCode::SEE_OTHER);
    get(&node, "/", Some(&victim))
        .await
        .expect(StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn forms_without_the_right_csrf_token_are_refused() {
    let node = TestNode::new().await;
    // Login: no pre-login cookie (a cross-site post), or a token for another cookie.
    let form = get(&node, "/login", None).await;
    let csrf = csrf_of(&body(&form));
    let key = enc(&node.admin);
    post_form(&node, "/login", None, &format!("key={key}&csrf={csrf}"))
        .await
        .expect(StatusCode::FORBIDDEN);
    post_form(
        &node,
        "/login",
        Some(&format!("niso_login={}", "ab".repeat(32))),
        &format!("key={key}&csrf={csrf}"),
    )
    .await
    .expect(StatusCode::FORBIDDEN);

    // Key creation: another session's token, or none.
    let admin = sign_in(&node, &node.admin).await;
    let other = sign_in(&node, &node.admin).await;
    let other_csrf = csrf_of(&body(&get(&node, "/keys", Some(&other)).await));
    let refused = post_form(
        &node,
        "/keys",
        Some(&admin),
        &format!("csrf={other_csrf}&name=x&scopes=pull%3A*"),
    )
    .await
    .expect(StatusCode::FORBIDDEN);
    assert!(body(&refused).contains("form has expired"));
    post_form(&node, "/keys", Some(&admin), "name=x&scopes=pull%3A*")
        .await
        .expect(StatusCode::BAD_REQUEST);
    let keys = node.get("/v1/keys", Some(&node.admin)).await.json();
    assert_eq!(
        keys["keys"].as_array().unwrap().len(),
        1,
        "no key was created: {keys}"
    );

    // With its own token it works, and the secret is on the page once.
    let csrf = csrf_of(&body(&get(&node, "/keys", Some(&admin)).await));
    let created = post_form(
        &node,
        "/keys",
        Some(&admin),
        &format!("csrf={csrf}&name=ci&scopes=push%3Aacme-*+pull%3Aacme-*"),
    )
    .await
    .expect(StatusCode::CREATED);
    let page = body(&created);
    let at = page.find("id=\"created-key\">").unwrap() + 17;
    let secret: String = page[at..].chars().take_while(|c| *c != '<').collect();
    assert!(secret.starts_with("niso_k1_"), "{secret}");
    let who = node
        .get("/v1/whoami", Some(&secret))
        .await
        .expect(StatusCode::OK)
        .json();
    assert_eq!(
        who["scopes"],
        serde_json::json!(["push:acme-*", "pull:acme-*"])
    );
    assert!(
        !body(&get(&node, "/keys", Some(&admin)).await).contains(&secret),
        "shown once"
    );
}

#[tokio::test]
async fn every_page_carries_the_security_headers() {
    let node = TestNode::new().await;
    let cookie = sign_in(&node, &node.admin).await;
    for path in [
        "/",
        "/login",
        "/node",
        "/peers",
        "/keys",
        "/api",
        "/packages/nope",
        "/ui/style.css",
        "/ui/app.js",
    ] {
        let r = get(&node, path, Some(&cookie)).await;
        let h = |n: &str| {
            r.headers
                .get(n)
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default()
        };
        let csp = h("content-security-policy");
        assert!(
            csp.contains("default-src 'none'") && csp.contains("script-src 'self'"),
            "{path}: {csp}"
        );
        assert!(!csp.contains("unsafe-inline"), "{path}");
        assert_eq!(h("x-frame-options"), "DENY", "{path}");
        assert_eq!(h("x-content-type-options"), "nosniff", "{path}");
        assert_eq!(h("referrer-policy"), "no-referrer", "{path}");
        if h("content-type").starts_with("text/html") {
            let page = body(&r);
            assert!(
                !page.contains("<script>")
                    && ["onclick=", "onload=", "onerror=", "onsubmit="]
                        .iter()
                        .all(|a| !page.contains(a)),
                "{path}: no inline script or handlers"
            );
            assert!(
                !page.contains("http://") && !page.contains("https://"),
                "{path}: nothing from elsewhere"
            );
        }
    }
}

#[tokio::test]
async fn admin_pages_render() {
    let node = TestNode::new().await;
    let cookie = sign_in(&node, &node.admin).await;
    let page = body(
        &get(&node, "/node", Some(&cookie))
            .await
            .expect(StatusCode::OK),
    );
    assert!(page.contains(&node.node.state().peer_id), "{page}");
    assert!(
        page.contains("0 packages, 0 builds"),
        "admins see the catalog's size"
    );
    assert!(page.contains("none since this node started"), "{page}");
    let key = node.admin.clone();
    node.send_json(
        Method::POST,
        "/v1/gc",
        Some(&key),
        serde_json::json!({"keep_versions": 1, "dry_run": true}),
    )
    .await
    .expect(StatusCode::OK);
    let page = body(&get(&node, "/node", Some(&cookie)).await);
    assert!(
        page.contains("none since this node started"),
        "a dry run removes nothing: {page}"
    );
    node.send_json(
        Method::POST,
        "/v1/gc",
        Some(&key),
        serde_json::json!({"keep_versions": 1}),
    )
    .await
    .expect(StatusCode::OK);
    let page = body(&get(&node, "/node", Some(&cookie)).await);
    assert!(
        page.contains("removed 0 versions and 0 blobs"),
        "the last GC: {page}"
    );
    // The escaper writes `/` as `&#x2f;`.
    let api = body(
        &get(&node, "/api", Some(&cookie))
            .await
            .expect(StatusCode::OK),
    )
    .replace("&#x2f;", "/");
    assert!(
        api.contains("/v1/packages/{name}") && api.contains("DELETE"),
        "{api}"
    );
    let peers = body(
        &get(&node, "/peers", Some(&cookie))
            .await
            .expect(StatusCode::OK),
    );
    assert!(peers.contains("Peer-to-peer is off"));
    assert!(
        peers.contains("<title>Peers · niso registry</title>"),
        "{peers}"
    );
    assert_eq!(peers.matches("id=\"fetches\"").count(), 1, "{peers}");
    let json = get(&node, "/ui/peers.json", Some(&cookie))
        .await
        .expect(StatusCode::OK);
    assert_eq!(json.json(), serde_json::json!({"peers": [], "fetches": []}));
}

#[tokio::test]
async fn ui_requests_are_counted_and_the_ui_can_be_turned_off() {
    let node = TestNode::new().await;
    get(&node, "/login", None).await.expect(StatusCode::OK);
    let metrics = body(&get(&node, "/metrics", None).await);
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("niso_http_requests_total{")
                && l.contains("status=\"200\"")
                && l.contains("GET")),
        "{metrics}"
    );

    let off = TestNode::with(|c| c.ui.enabled = false).await;
    for path in ["/", "/login", "/packages/x", "/keys", "/ui/style.css"] {
        let r = get(&off, path, None).await.expect(StatusCode::NOT_FOUND);
        assert_eq!(r.code(), "not_found", "{path}: the API's 404");
    }
    get(&off, "/v1/node", None).await.expect(StatusCode::OK);
}
