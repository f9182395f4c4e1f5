//! The web UI in a real browser: Debian's Chromium driven over WebDriver (chromedriver,
//! through fantoccini) against real nodes. Screenshots of every page go to
//! `$CARGO_TARGET_TMPDIR/web-ui/TEST/` and stay there, so a failing run keeps them;
//! `NISO_UPDATE_SCREENSHOTS=1` also copies the README's two into `docs/`.

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use fantoccini::{Client, ClientBuilder, Locator};
use niso_tests::{Sandbox, package_dir};
use serde_json::{Value, json};

/// How long the browser may take to show what a step waits for.
const STEP: Duration = Duration::from_secs(30);
const XSS: &str = "<script>window.__pwned=1</script><img src=x onerror=window.__pwned=2>";

/// A chromedriver process on a free port; killed on drop.
struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect(
                "chromedriver is not installed; install Debian's chromium and chromium-driver \
                 (.ci/run does)",
            );
        let url = format!("http://127.0.0.1:{port}");
        let mut driver = Self { child, url };
        let deadline = Instant::now() + STEP;
        loop {
            if status_ready(port) {
                return driver;
            }
            if let Ok(Some(status)) = driver.child.try_wait() {
                panic!("chromedriver exited at start: {status}");
            }
            assert!(Instant::now() < deadline, "chromedriver never became ready");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Whether chromedriver on `port` answers `/status` with `"ready": true`. It speaks only
/// HTTP/1.1, unlike the harness's HTTP/1.0 `http_get`.
fn status_ready(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    if write!(
        stream,
        "GET /status HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )
    .is_err()
    {
        return false;
    }
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response
        .split_once("\r\n\r\n")
        .and_then(|(_, body)| serde_json::from_str::<Value>(body).ok())
        .is_some_and(|v| v["value"]["ready"] == json!(true))
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A headless Chromium session with its own profile, and where its screenshots go.
struct Browser {
    client: Client,
    shots: PathBuf,
    taken: usize,
    _profile: tempfile::TempDir,
    _driver: Driver,
}

impl Browser {
    async fn open(test: &str) -> Self {
        let driver = Driver::start();
        let profile = tempfile::tempdir().unwrap();
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".to_owned(),
            json!({
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--hide-scrollbars", "--window-size=1200,900",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            }),
        );
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&driver.url)
            .await
            .expect("a browser session");
        let shots = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join("web-ui")
            .join(test);
        let _ = std::fs::remove_dir_all(&shots);
        std::fs::create_dir_all(&shots).unwrap();
        Self {
            client,
            shots,
            taken: 0,
            _profile: profile,
            _driver: driver,
        }
    }

    async fn goto(&self, url: &str) {
        self.client.goto(url).await.unwrap();
    }

    /// Saves a screenshot as `NN-NAME.png` and returns its path.
    async fn shot(&mut self, name: &str) -> PathBuf {
        self.taken += 1;
        let path = self.shots.join(format!("{:02}-{name}.png", self.taken));
        std::fs::write(&path, self.client.screenshot().await.unwrap()).unwrap();
        path
    }

    async fn text(&self, css: &str) -> String {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no {css}: {e}"))
            .text()
            .await
            .unwrap()
    }

    async fn body_text(&self) -> String {
        self.text("body").await
    }

    async fn eval(&self, script: &str) -> Value {
        self.client.execute(script, vec![]).await.unwrap()
    }

    /// Polls `script` until it returns true, up to [`STEP`].
    async fn wait_until(&self, what: &str, script: &str) {
        let deadline = Instant::now() + STEP;
        while self.eval(script).await != json!(true) {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; page: {}",
                self.body_text().await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn sign_in(&self, base: &str, key: &str) {
        self.goto(&format!("{base}/login")).await;
        let form = self.client.form(Locator::Id("login-form")).await.unwrap();
        form.set_by_name("key", key).await.unwrap();
        form.submit().await.unwrap();
        self.wait_until(
            "the signed-in page",
            "return document.querySelector('.who form') !== null",
        )
        .await;
    }

    /// No horizontal scroll at phone width (375 CSS px).
    async fn fits_a_phone(&mut self, url: &str, name: &str) {
        self.client.set_window_size(375, 800).await.unwrap();
        self.goto(url).await;
        let widths = self
            .eval("return [document.documentElement.scrollWidth, document.documentElement.clientWidth]")
            .await;
        self.shot(&format!("{name}-375px")).await;
        assert!(
            widths[0].as_u64() <= widths[1].as_u64(),
            "{url} scrolls sideways at 375 px: {widths}"
        );
        self.client.set_window_size(1200, 900).await.unwrap();
    }

    async fn close(self) {
        self.client.close().await.unwrap();
    }
}

/// Copies a screenshot into `docs/` for the README when asked to.
fn keep_for_readme(shot: &Path, name: &str) {
    if std::env::var_os("NISO_UPDATE_SCREENSHOTS").is_some() {
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs");
        std::fs::copy(shot, docs.join(name)).unwrap();
    }
}

fn publish(user: &Sandbox, registry: &str, name: &str, version: &str, description: &str) {
    let dir = package_dir(
        &user.path().join("src"),
        name,
        version,
        "any",
        description,
        format!("{name}{version}").as_bytes(),
    );
    let file = user.path().join(format!("{name}-{version}.niso"));
    user.ok(&["pack", dir.to_str().unwrap(), "-o", file.to_str().unwrap()]);
    user.ok(&["push", file.to_str().unwrap(), "--registry", registry]);
}

fn create_key(user: &Sandbox, registry: &str, scope: &str) -> String {
    let out = user.ok(&[
        "registry",
        "create-key",
        "--scope",
        scope,
        "--name",
        "viewer",
        "--registry",
        registry,
    ]);
    out.split_whitespace()
        .find(|w| w.starts_with("niso_k1_"))
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scoped_viewer_sees_only_its_packages_and_descriptions_stay_text() {
    let user = Sandbox::new();
    let node = user.node("main", "");
    publish(&user, "main", "acme-api", "1.0.0", "The ACME API server");
    publish(&user, "main", "acme-api", "1.1.0", "The ACME API server");
    publish(
        &user,
        "main",
        "acme-api",
        "1.2.0-rc1",
        "The ACME API server",
    );
    user.ok(&[
        "tag",
        "acme-api:1.0.0",
        "acme-api:stable",
        "--registry",
        "main",
    ]);
    publish(&user, "main", "acme-xss", "1.0.0", XSS);
    publish(&user, "main", "other-pkg", "1.0.0", "Not for ACME eyes");
    let key = create_key(&user, "main", "pull:acme-*");
    let base = node.url.clone();
    let mut b = Browser::open("scoped_viewer").await;

    // No session, anonymous pulls off: the login form, and no package names anywhere.
    b.goto(&format!("{base}/")).await;
    b.shot("home-signed-out").await;
    let source = b.client.source().await.unwrap();
    assert!(source.contains("login-form"), "{source}");
    for name in ["acme-api", "acme-xss", "other-pkg"] {
        assert!(!source.contains(name), "{name} shown without a session");
    }

    b.sign_in(&base, &key).await;
    let list = b.text("main").await;
    b.shot("packages").await;
    assert!(
        list.contains("acme-api") && list.contains("acme-xss"),
        "{list}"
    );
    assert!(
        list.contains("1.1.0"),
        "latest is the highest release: {list}"
    );
    assert!(!b.client.source().await.unwrap().contains("other-pkg"));

    // Search, through the search box.
    let search = b
        .client
        .form(Locator::Css("form[role=search]"))
        .await
        .unwrap();
    search.set_by_name("q", "server").await.unwrap();
    search.submit().await.unwrap();
    b.wait_until(
        "search results",
        "return document.getElementById('result-count') !== null",
    )
    .await;
    assert!(b.text("#result-count").await.starts_with("1 result"));
    b.goto(&format!("{base}/?q=acme")).await;
    assert!(!b.client.source().await.unwrap().contains("other-pkg"));
    b.goto(&format!("{base}/?q=eyes")).await;
    assert!(b.text("#result-count").await.starts_with("0 results"));
    assert!(!b.client.source().await.unwrap().contains("other-pkg"));

    // Open a package from the list.
    b.goto(&format!("{base}/")).await;
    b.client
        .find(Locator::LinkText("acme-api"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    b.wait_until(
        "the package page",
        "return document.getElementById('versions') !== null",
    )
    .await;
    let versions = b.text("#versions").await;
    for v in ["1.0.0", "1.1.0", "1.2.0-rc1", "this node"] {
        assert!(versions.contains(v), "{v}: {versions}");
    }
    let tags = b.text("#tags").await;
    assert!(
        tags.contains("stable → 1.0.0") && tags.contains("latest → 1.1.0"),
        "{tags}"
    );
    assert_eq!(b.text("#pull-command").await, "niso pull acme-api:1.1.0");
    assert_eq!(b.text("#upgrade-command").await, "niso upgrade acme-api");
    assert_eq!(
        b.eval("return Array.from(document.querySelectorAll('.commands button.copy'), x => x.getAttribute('aria-label'))").await,
        json!(["Copy: niso pull acme-api:1.1.0", "Copy: niso upgrade acme-api"]),
        "the script adds a copy button to each command"
    );
    let shot = b.shot("package").await;
    keep_for_readme(&shot, "ui-package.png");

    // Outside the scope: the 404 page, without the package's details.
    b.goto(&format!("{base}/packages/other-pkg")).await;
    b.shot("hidden-package").await;
    assert!(
        b.text("#error-message")
            .await
            .contains("There is no package other-pkg")
    );
    assert!(!b.body_text().await.contains("Not for ACME eyes"));

    // The description with markup is shown as text and runs nothing.
    b.goto(&format!("{base}/packages/acme-xss")).await;
    b.shot("xss").await;
    assert_eq!(b.text("#package-description").await, XSS);
    assert!(
        b.client.get_alert_text().await.is_err(),
        "no dialog is open"
    );
    let injected = b
        .eval("return [window.__pwned === undefined, document.querySelectorAll('main img, main script').length]")
        .await;
    assert_eq!(
        injected,
        json!([true, 0]),
        "nothing injected ran or was inserted"
    );

    for (path, name) in [
        ("/", "packages"),
        ("/packages/acme-api", "package"),
        ("/node", "node"),
        ("/api", "api"),
    ] {
        b.fits_a_phone(&format!("{base}{path}"), name).await;
    }
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_creates_a_key_the_cli_uses_and_revokes_it() {
    let user = Sandbox::new();
    let node = user.node("main", "");
    let base = node.url.clone();
    let mut b = Browser::open("admin_keys").await;
    b.sign_in(&base, &node.admin_key()).await;
    b.goto(&format!("{base}/keys")).await;
    let form = b.client.form(Locator::Id("create-key")).await.unwrap();
    form.set_by_name("name", "ci-deploy").await.unwrap();
    form.set_by_name("scopes", "push:acme-* pull:acme-*")
        .await
        .unwrap();
    form.submit().await.unwrap();
    b.wait_until(
        "the new key",
        "return document.getElementById('created-key') !== null",
    )
    .await;
    b.shot("key-created").await;
    let key = b.text("#created-key").await;
    assert!(key.starts_with("niso_k1_"), "{key}");

    user.ok(&["registry", "add", "ci", &base, "--key", &key]);
    publish(
        &user,
        "ci",
        "acme-tool",
        "1.0.0",
        "pushed with a key made on the web",
    );

    // Shown once: the list no longer has it.
    b.goto(&format!("{base}/keys")).await;
    assert!(!b.client.source().await.unwrap().contains(&key));
    let id = user
        .ok(&["registry", "list-keys", "--registry", "main"])
        .lines()
        .find(|l| l.contains("ci-deploy"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .to_owned();
    b.client
        .find(Locator::Css(&format!("tr[data-key='{id}'] button")))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    b.wait_until(
        "the key to leave the list",
        &format!("return document.querySelector(\"tr[data-key='{id}']\") === null"),
    )
    .await;
    b.shot("key-revoked").await;
    let file = user.path().join("acme-tool-1.0.0.niso");
    let refused = user.fails(&["push", file.to_str().unwrap(), "--registry", "ci"], 3);
    assert!(refused.contains("not known"), "{refused}");
    b.fits_a_phone(&format!("{base}/keys"), "keys").await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_update_live_while_a_package_replicates() {
    let user = Sandbox::new();
    let origin = user.node("origin", "[[share]]\nto = \"*\"\npackages = [\"*\"]\n");
    let info: Value =
        serde_json::from_str(&user.ok(&["registry", "info", "--json", "--registry", "origin"]))
            .unwrap();
    let origin_addr = info["p2p_addrs"][0].as_str().unwrap().to_owned();
    let origin_peer = info["peer_id"].as_str().unwrap().to_owned();
    let replica = user.node(
        "replica",
        &format!("[p2p]\nbootstrap = [\"{origin_addr}\"]\n\n[[replicate]]\nfrom = \"*\"\npackages = [\"*\"]\n"),
    );
    let base = replica.url.clone();
    let mut b = Browser::open("peers").await;
    b.sign_in(&base, &replica.admin_key()).await;
    b.goto(&format!("{base}/peers")).await;
    // A mark on this document: still there later means the page never reloaded.
    b.eval("window.__sameDocument = true; return true").await;
    let row = format!("document.querySelector(\"tr[data-peer='{origin_peer}']\")");
    b.wait_until(
        "the origin to show as connected",
        &format!("const r = {row}; return r !== null && r.cells[1].textContent === 'connected'"),
    )
    .await;
    // "synced to P of H in its log": H is the origin's log head at its last answer.
    let head_of = |title: &str| -> u64 {
        let of = title
            .split(" of ")
            .nth(1)
            .expect("an 'of' in the behind cell's title");
        of.split(' ').next().unwrap().parse().unwrap()
    };
    b.wait_until(
        "a first sync with the origin",
        &format!("const r = {row}; return r !== null && r.querySelector('.behind').title !== ''"),
    )
    .await;
    let before = b
        .eval(&format!("return {row}.querySelector('.behind').title"))
        .await;
    let head_before = head_of(before.as_str().unwrap());

    publish(
        &user,
        "origin",
        "acme-live",
        "1.0.0",
        "replicated while watched",
    );
    // The peers table must follow the origin's log without a reload: its head moves past
    // the new record, and the replica gets back to zero behind with no blob pending.
    b.wait_until(
        "the origin's head to move and the replica to be zero behind",
        &format!(
            "const r = {row}; if (r === null) return false;
             const cell = r.querySelector('.behind');
             const head = Number((cell.title.split(' of ')[1] || '').split(' ')[0]);
             return head > {head_before} && cell.textContent === '0'
               && r.cells[4].textContent === '0' && r.cells[5].textContent !== 'never'"
        ),
    )
    .await;
    let after = b
        .eval(&format!("return {row}.querySelector('.behind').title"))
        .await;
    assert!(head_of(after.as_str().unwrap()) > head_before, "{after}");
    // Nothing left to fetch: the package's bytes are here too.
    b.wait_until(
        "no blob in flight",
        "return document.querySelector('#fetches tbody tr.empty') !== null",
    )
    .await;
    user.ok(&["pull", "acme-live", "--registry", "replica"]);
    assert_eq!(
        b.eval("return window.__sameDocument === true").await,
        json!(true),
        "the page reloaded"
    );
    assert!(b.text("#live-status").await.starts_with("Live: updated"));
    let shot = b.shot("peers").await;
    keep_for_readme(&shot, "ui-peers.png");
    let replica_peers = format!("{}/peers", replica.url);
    b.fits_a_phone(&replica_peers, "peers").await;
    drop(origin);
    b.close().await;
}
