//! The admin page in headless Chromium (fantoccini through chromedriver) against the real
//! binary: the driver, a browser with no network but loopback, the page checks every test
//! makes (no sideways scrolling, every field labelled, a screenshot at 1280 and 390 px under
//! target/screenshots/) and the clicks and waits a page test needs.

use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};

pub struct Driver {
    child: std::process::Child,
    pub port: u16,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// chromedriver on a free loopback port, once it accepts connections.
pub async fn chromedriver() -> Driver {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // Owned by the guard at once: killed and reaped on every path, the panic below included.
    let driver = Driver {
        child: std::process::Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("chromedriver"),
        port,
    };
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return driver;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("chromedriver did not start");
}

pub async fn browser(driver: &Driver, profile: &std::path::Path) -> Client {
    let mut caps = serde_json::Map::new();
    // No network but loopback: the background-networking flags keep Chromium from trying.
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                     "--no-first-run", "--disable-background-networking",
                     "--disable-component-update", "--disable-sync",
                     "--ignore-certificate-errors",
                     format!("--user-data-dir={}", profile.display())],
        }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{}", driver.port))
        .await
        .expect("a Chromium session")
}

/// At each width: no sideways scrolling, every field labelled, and a screenshot.
pub async fn check_page(c: &Client, name: &str) {
    check_page_at(c, name, None).await;
}

/// The same, the screenshot taken with the element of id `at` scrolled into view.
pub async fn check_page_at(c: &Client, name: &str, at: Option<&str>) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    for (width, height) in [(1280u32, 900u32), (390, 844)] {
        c.set_window_size(width, height).await.unwrap();
        if let Some(id) = at {
            let js = format!("document.getElementById('{id}').scrollIntoView({{block: 'center'}})");
            c.execute(&js, vec![]).await.unwrap();
        }
        let sideways = c
            .execute(
                "return document.documentElement.scrollWidth > document.documentElement.clientWidth;",
                vec![],
            )
            .await
            .unwrap();
        assert_eq!(
            sideways,
            serde_json::json!(false),
            "{name} scrolls sideways at {width} px"
        );
        let unlabelled = c
            .execute(
                "return [...document.querySelectorAll('input:not([type=hidden]),select,textarea')]\
                 .filter(e => !e.labels || e.labels.length === 0).map(e => e.name);",
                vec![],
            )
            .await
            .unwrap();
        assert_eq!(
            unlabelled,
            serde_json::json!([]),
            "{name}: fields without a label"
        );
        let png = c.screenshot().await.unwrap();
        std::fs::write(dir.join(format!("{name}-{width}.png")), png).unwrap();
    }
}

pub async fn fill(c: &Client, id: &str, text: &str) {
    let field = c.find(Locator::Id(id)).await.unwrap();
    field.clear().await.unwrap();
    field.send_keys(text).await.unwrap();
}

pub async fn choose(c: &Client, select: &str, value: &str) {
    c.find(Locator::Css(&format!("#{select} option[value={value}]")))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

pub async fn submit(c: &Client) {
    click(c, "main button[type=submit]").await;
}

/// Mark the page shown now, so that `loaded` can tell the next one from it: an element the
/// old page also had is no proof that the new one arrived.
pub async fn mark(c: &Client) {
    c.execute("window.__postern_old = true; return true;", vec![])
        .await
        .unwrap();
}

/// The page a click led to has replaced the marked one and finished loading.
pub async fn loaded(c: &Client) {
    for _ in 0..800 {
        let done = c
            .execute(
                "return window.__postern_old === undefined && document.readyState === 'complete';",
                vec![],
            )
            .await
            .unwrap_or(serde_json::json!(false));
        if done == serde_json::json!(true) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the next page never loaded");
}

/// The page the last click led to has loaded: `css` is on it.
pub async fn arrived(c: &Client, css: &str) {
    c.wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css} never appeared: {e}"));
}

pub async fn text_of(c: &Client, css: &str) -> String {
    c.find(Locator::Css(css))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// A self-signed certificate for `name`: (certificate PEM, key PEM, certificate DER).
pub fn self_signed(name: &str) -> (String, String, rustls_pki_types::CertificateDer<'static>) {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec![name.to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    (cert.pem(), key.serialize_pem(), cert.der().clone())
}

pub async fn submit_form(c: &Client, form: &str) {
    click(c, &format!("{form} button[type=submit]")).await;
}

/// Sign in with the generated password and set a new one, as a first-time admin does.
pub async fn first_sign_in(c: &Client, base: &str, dir: &std::path::Path) {
    let generated = std::fs::read_to_string(dir.join("data/initial-admin-password"))
        .unwrap()
        .trim()
        .to_string();
    c.goto(&format!("{base}/sign-in")).await.unwrap();
    fill(c, "user", "admin").await;
    fill(c, "password", &generated).await;
    submit(c).await;
    arrived(c, "#confirm").await;
    fill(c, "current", &generated).await;
    fill(c, "new", "correct-horse-battery").await;
    fill(c, "confirm", "correct-horse-battery").await;
    submit(c).await;
    arrived(c, "figure.chart").await;
}

/// The row form's own submit button (not the Test button beside it).
pub async fn add_row(c: &Client) {
    click(c, "#save-row").await;
}

/// Click what leads to another page, and wait for it.
pub async fn click(c: &Client, css: &str) {
    mark(c).await;
    c.find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .click()
        .await
        .unwrap();
    loaded(c).await;
}

/// Wait for a line of postern's log with `needle` (written as the delivery is recorded).
pub async fn log_line(proc: &super::process::Proc, needle: &str) -> String {
    for _ in 0..400 {
        if let Some(l) = proc.log.lock().unwrap().iter().find(|l| l.contains(needle)) {
            return l.clone();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no log line with {needle:?}");
}
