//! A small W3C WebDriver client over reqwest (already a dev-dependency), enough for the
//! console's browser tests: a headless Chromium session driven by `chromedriver`, started
//! per test and killed on drop. Written here rather than pulling fantoccini or thirtyfour:
//! the handful of commands below is all the tests use, and the 2-core CI builds less.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use std::os::unix::process::CommandExt as _;

use crate::harness::free_port;

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const WAIT: Duration = Duration::from_secs(30);
/// W3C element reference key.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Whether Chromium and chromedriver are installed; outside CI a missing browser skips the
/// test (after saying so), under CI it fails it.
pub fn browser_available() -> bool {
    if Path::new(CHROMIUM).exists() && Path::new(CHROMEDRIVER).exists() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{CHROMIUM} or {CHROMEDRIVER} is missing under CI: scripts/test.sh installs the `chromium` and `chromium-driver` packages"
    );
    eprintln!("SKIPPED: {CHROMIUM} or {CHROMEDRIVER} is not installed (apt-get install -y chromium chromium-driver; scripts/test.sh does it)");
    false
}

/// A browser session. The driver process is killed on drop (the browser with it).
pub struct Browser {
    base: String,
    session: String,
    http: reqwest::Client,
    _driver: DriverGroup,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session.
    pub async fn start() -> Browser {
        let port = free_port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("start chromedriver");
        let driver = DriverGroup(driver);
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("client");
        let end = Instant::now() + WAIT;
        while http.get(format!("{base}/status")).send().await.is_err() {
            assert!(Instant::now() < end, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let profile = tempfile::tempdir().expect("profile dir");
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--window-size=1400,1000", format!("--user-data-dir={}", profile.path().display())],
            },
        }}});
        let v: Value = http
            .post(format!("{base}/session"))
            .json(&caps)
            .send()
            .await
            .expect("new session")
            .json()
            .await
            .expect("session json");
        let session = v["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {v}"))
            .to_owned();
        Browser {
            base,
            session,
            http,
            _driver: driver,
            _profile: profile,
        }
    }

    async fn cmd(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let mut r = self.http.request(method, url);
        if let Some(b) = body {
            r = r.json(&b);
        }
        let v: Value = r
            .send()
            .await
            .expect("webdriver")
            .json()
            .await
            .expect("webdriver json");
        v["value"].clone()
    }

    /// Opens `url`.
    pub async fn goto(&self, url: &str) {
        let v = self
            .cmd(reqwest::Method::POST, "/url", Some(json!({"url": url})))
            .await;
        assert!(v.is_null(), "goto {url}: {v}");
    }

    /// The current URL.
    pub async fn url(&self) -> String {
        self.cmd(reqwest::Method::GET, "/url", None)
            .await
            .as_str()
            .unwrap_or("")
            .to_owned()
    }

    /// The element matching the CSS selector, if any now.
    pub async fn find(&self, css: &str) -> Option<String> {
        let v = self
            .cmd(
                reqwest::Method::POST,
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        v[ELEMENT].as_str().map(str::to_owned)
    }

    /// Waits (at most 30 s) for an element matching `css`.
    pub async fn wait_for(&self, css: &str) -> String {
        let end = Instant::now() + WAIT;
        loop {
            if let Some(e) = self.find(css).await {
                return e;
            }
            assert!(
                Instant::now() < end,
                "no `{css}` on {}: {}",
                self.url().await,
                self.page_text().await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the text of `css` satisfies `ok`; returns it.
    pub async fn wait_text(&self, css: &str, ok: impl Fn(&str) -> bool) -> String {
        let end = Instant::now() + WAIT;
        loop {
            if let Some(e) = self.find(css).await {
                let t = self.text(&e).await;
                if ok(&t) {
                    return t;
                }
                assert!(Instant::now() < end, "`{css}` never matched; last: {t}");
            } else {
                assert!(
                    Instant::now() < end,
                    "no `{css}`: {}",
                    self.page_text().await
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// An element's visible text.
    pub async fn text(&self, el: &str) -> String {
        self.cmd(reqwest::Method::GET, &format!("/element/{el}/text"), None)
            .await
            .as_str()
            .unwrap_or("")
            .to_owned()
    }

    /// The whole page's visible text.
    pub async fn page_text(&self) -> String {
        match self.find("body").await {
            Some(b) => self.text(&b).await,
            None => String::new(),
        }
    }

    /// Clicks an element.
    pub async fn click(&self, el: &str) {
        self.cmd(
            reqwest::Method::POST,
            &format!("/element/{el}/click"),
            Some(json!({})),
        )
        .await;
    }

    /// Types into an element.
    pub async fn type_into(&self, el: &str, text: &str) {
        self.cmd(
            reqwest::Method::POST,
            &format!("/element/{el}/value"),
            Some(json!({"text": text})),
        )
        .await;
    }

    /// Sends keys to whatever has focus (keyboard navigation).
    pub async fn keys(&self, keys: &str) {
        let actions: Vec<Value> = keys
            .chars()
            .flat_map(|c| {
                [
                    json!({"type": "keyDown", "value": c.to_string()}),
                    json!({"type": "keyUp", "value": c.to_string()}),
                ]
            })
            .collect();
        self.cmd(
            reqwest::Method::POST,
            "/actions",
            Some(json!({"actions": [{"type": "key", "id": "kb", "actions": actions}]})),
        )
        .await;
    }

    /// Runs a script; returns its value.
    pub async fn exec(&self, script: &str) -> Value {
        self.cmd(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({"script": script, "args": []})),
        )
        .await
    }

    /// Saves a PNG screenshot of the page to `path`.
    pub async fn screenshot(&self, path: &Path) {
        let v = self.cmd(reqwest::Method::GET, "/screenshot", None).await;
        use base64::Engine as _;
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap_or(""))
            .expect("a base64 screenshot");
        if let Some(d) = path.parent() {
            std::fs::create_dir_all(d).expect("screenshot dir");
        }
        std::fs::write(path, png).expect("write screenshot");
    }
}

impl Browser {
    /// Ends the WebDriver session (the browser exits).
    pub async fn quit(&self) {
        let url = format!("{}/session/{}", self.base, self.session);
        let _ = self.http.delete(url).send().await;
    }
}

/// chromedriver in a process group of its own: killed with its browser on drop.
struct DriverGroup(std::process::Child);

impl Drop for DriverGroup {
    fn drop(&mut self) {
        // The group's id is the driver's pid (process_group(0)); Chromium's processes are in it.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.0.id())])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
