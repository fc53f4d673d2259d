//! Stories in a real browser: headless Chromium driven over WebDriver by a
//! chromedriver the test starts itself, against a server on port 0. What the browser
//! showed is kept as PNG screenshots in `target/screenshots/`.
//!
//! Needs Debian's `chromium` and `chromium-driver` (`scripts/test.sh` installs them).
//! Without them the story prints `SKIPPED (no chromium)` and passes; with `CI=true`
//! it fails instead.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use reqwest::StatusCode;
use serde_json::{json, Value};
use slotguard::domain::StaffRole;

use crate::dashboard::{december, duplicate, incident};
use crate::support::*;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// How long a live update may take to show: the detector, the event, htmx's reload.
const LIVE_SECONDS: u64 = 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_duplicate_shows_up_live_and_is_resolved_in_the_browser_while_another_clinic_sees_nothing(
) {
    let Some(driver) = Driver::start().await else {
        return;
    };
    let Some(app) = spawn_app(Backend::Sqlite).await else {
        return;
    };
    let app = std::sync::Arc::new(app);
    let kochi = driver.browser("kochi").await;
    let thrissur = driver.browser("thrissur").await;
    // The story runs as a task of its own so that, whatever it asserts, both browsers
    // are closed before the verdict is passed on.
    let story = tokio::spawn(live_duplicate_story(
        app.clone(),
        kochi.clone(),
        thrissur.clone(),
    ))
    .await;
    for browser in [kochi, thrissur] {
        let _ = browser.close().await;
    }
    if let Err(failed) = story {
        std::panic::resume_unwind(failed.into_panic());
    }
}

async fn live_duplicate_story(app: std::sync::Arc<TestApp>, kochi: Client, thrissur: Client) {
    app.staff_user("asha@kochi.example", StaffRole::Clinic, &["kochi"])
        .await;
    app.staff_user("tara@thrissur.example", StaffRole::Clinic, &["thrissur"])
        .await;

    // Logging in through the form lands on the overview, which is live.
    kochi.goto(&app.url("/")).await.unwrap();
    assert_eq!(path_of(&kochi).await, "/login");
    fill(&kochi, "input[name=email]", "asha@kochi.example").await;
    fill(&kochi, "input[name=password]", PASSWORD).await;
    screenshot(&kochi, "login").await;
    click(&kochi, "button[type=submit]").await;
    wait_for_live(&kochi, "/").await;
    assert_eq!(
        text(&kochi, "[data-card=today]").await.as_deref(),
        Some("0")
    );
    assert!(text(&kochi, "#recent-h + p")
        .await
        .is_some_and(|t| t.contains("No duplicates detected")));
    screenshot(&kochi, "overview-empty").await;

    log_in(&thrissur, &app, "tara@thrissur.example").await;
    wait_for_live(&thrissur, "/").await;

    // A duplicate arrives through the watch API: the open overview shows it.
    mark_page(&kochi).await;
    let first = duplicate(&app, "kochi", december(1), 5, ["Anu Thomas", "Biju Paul"]).await;
    let row = format!("a[href=\"/incidents/{first}\"]");
    eventually(
        LIVE_SECONDS,
        "the overview to show the duplicate",
        || async {
            (text(&kochi, "[data-card=today]").await.as_deref() == Some("1")
                && kochi.find(Locator::Css(&row)).await.is_ok())
            .then_some(())
        },
    )
    .await;
    assert_not_reloaded(&kochi, "overview").await;
    screenshot(&kochi, "overview-live-duplicate").await;

    // The incidents page is live too.
    kochi.goto(&app.url("/incidents")).await.unwrap();
    wait_for_live(&kochi, "/incidents").await;
    mark_page(&kochi).await;
    let second = duplicate(&app, "kochi", december(1), 6, ["Chitra Nair", "Deepa Das"]).await;
    let second_row = format!("a[href=\"/incidents/{second}\"]");
    eventually(LIVE_SECONDS, "the incidents page to list both", || async {
        (kochi.find(Locator::Css(&second_row)).await.is_ok()
            && kochi.find(Locator::Css(&row)).await.is_ok()
            && text(&kochi, "p.count")
                .await
                .is_some_and(|t| t.starts_with("2 incidents")))
        .then_some(())
    })
    .await;
    assert_not_reloaded(&kochi, "incidents").await;
    screenshot(&kochi, "incidents").await;

    // Meanwhile the other clinic's open overview has stayed empty.
    assert_eq!(
        text(&thrissur, "[data-card=today]").await.as_deref(),
        Some("0")
    );
    let source = thrissur.source().await.unwrap();
    assert!(source.contains("No duplicates detected"));
    assert!(!source.contains(&first) && !source.contains(&second));

    // Investigate: both appointments side by side, then acknowledge and resolve.
    click(&kochi, &row).await;
    eventually(LIVE_SECONDS, "the investigate page", || async {
        (path_of(&kochi).await == format!("/incidents/{first}")).then_some(())
    })
    .await;
    let members = kochi
        .find_all(Locator::Css("article.member .patient"))
        .await
        .unwrap();
    let mut patients = Vec::new();
    for member in members {
        patients.push(member.text().await.unwrap());
    }
    patients.sort();
    assert_eq!(patients, ["Anu Thomas", "Biju Paul"]);
    screenshot(&kochi, "investigate").await;

    click(&kochi, "form[action$='/acknowledge'] button").await;
    wait_for_text(&kochi, ".heading .badge", "Acknowledged").await;
    let note = "Called Biju, moved him to slot 7";
    fill(&kochi, "textarea[name=note]", note).await;
    click(&kochi, "form[action$='/resolve'] button").await;
    wait_for_text(&kochi, ".heading .badge", "Resolved").await;
    assert_eq!(text(&kochi, "dd.note").await.as_deref(), Some(note));
    let resolved = incident(&app, &first).await;
    assert_eq!(
        (&resolved["state"], &resolved["resolvedBy"]),
        (&json!("resolved"), &json!("user:asha@kochi.example"))
    );
    screenshot(&kochi, "investigate-resolved").await;

    // The other clinic's browser: its own incident shows up live, Kochi's never.
    thrissur.goto(&app.url("/incidents")).await.unwrap();
    wait_for_live(&thrissur, "/incidents").await;
    assert!(text(&thrissur, "p.count")
        .await
        .is_some_and(|t| t.starts_with("0 incidents")));
    let own = duplicate(&app, "thrissur", december(1), 9, ["Esha", "Farah"]).await;
    let own_row = format!("a[href=\"/incidents/{own}\"]");
    eventually(LIVE_SECONDS, "Thrissur's own incident", || async {
        thrissur.find(Locator::Css(&own_row)).await.ok()
    })
    .await;
    let source = thrissur.source().await.unwrap();
    assert!(!source.contains(&first) && !source.contains(&second));
    assert!(text(&thrissur, "p.count")
        .await
        .is_some_and(|t| t.starts_with("1 incident ")));

    // A phone: the overview in 390 CSS pixels, without sideways scrolling.
    kochi.set_window_size(390, 844).await.unwrap();
    kochi.goto(&app.url("/")).await.unwrap();
    wait_for_live(&kochi, "/").await;
    let widths = kochi
        .execute(
            "return [window.innerWidth, document.documentElement.scrollWidth];",
            vec![],
        )
        .await
        .unwrap();
    screenshot(&kochi, "overview-phone").await;
    let (viewport, content) = (widths[0].as_u64().unwrap(), widths[1].as_u64().unwrap());
    assert!(viewport <= 390, "the window is phone-sized: {viewport}");
    assert!(
        content <= viewport,
        "the overview is {content} px wide in a {viewport} px phone screen"
    );
}

// ---- driving the browser ------------------------------------------------------------

/// chromedriver on a free port of 127.0.0.1, with a profile folder per browser;
/// stopped when dropped, and any browser it left behind with it.
struct Driver {
    child: Child,
    url: String,
    profiles: tempfile::TempDir,
}

impl Driver {
    async fn start() -> Option<Driver> {
        let missing: Vec<&str> = [CHROMIUM, CHROMEDRIVER]
            .into_iter()
            .filter(|p| !Path::new(p).exists())
            .collect();
        if !missing.is_empty() {
            let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
            assert!(
                !ci,
                "CI=true but {} missing: run scripts/test.sh, which installs Debian's \
                 chromium and chromium-driver",
                missing.join(" and ")
            );
            eprintln!(
                "SKIPPED (no chromium): {} missing; scripts/test.sh installs them",
                missing.join(" and ")
            );
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let driver = Driver {
            child,
            url: format!("http://127.0.0.1:{port}"),
            profiles: tempfile::tempdir().unwrap(),
        };
        let status = format!("{}/status", driver.url);
        let probe = reqwest::Client::new();
        eventually(30, "chromedriver to answer", || async {
            let ready = probe.get(&status).send().await.ok()?;
            (ready.status() == StatusCode::OK).then_some(())
        })
        .await;
        Some(driver)
    }

    /// A new headless Chromium with an empty profile of its own.
    async fn browser(&self, name: &str) -> Client {
        let profile = self.profiles.path().join(name);
        let mut capabilities = serde_json::Map::new();
        capabilities.insert("browserName".into(), json!("chrome"));
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": CHROMIUM,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--window-size=1280,1800", "--disable-background-networking",
                    "--no-first-run", "--disable-sync", "--disable-component-update", "--disable-quic",
                    format!("--user-data-dir={}", profile.display()),
                ],
            }),
        );
        ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities)
            .connect(&self.url)
            .await
            .unwrap_or_else(|e| panic!("Chromium did not start through chromedriver: {e}"))
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // A browser whose session was never closed (the test process is dying) is
        // found by its profile folder, which no other process names.
        let profiles = self.profiles.path().display().to_string();
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmdline).contains(&profiles) {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
        }
    }
}

async fn log_in(browser: &Client, app: &TestApp, email: &str) {
    browser.goto(&app.url("/login")).await.unwrap();
    fill(browser, "input[name=email]", email).await;
    fill(browser, "input[name=password]", PASSWORD).await;
    click(browser, "button[type=submit]").await;
}

async fn fill(browser: &Client, css: &str, value: &str) {
    let field = browser
        .wait()
        .at_most(Duration::from_secs(LIVE_SECONDS))
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no {css}: {e}"));
    field.send_keys(value).await.unwrap();
}

async fn click(browser: &Client, css: &str) {
    browser
        .wait()
        .at_most(Duration::from_secs(LIVE_SECONDS))
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no {css}: {e}"))
        .click()
        .await
        .unwrap();
}

/// The text of the first element matching `css`, if there is one.
async fn text(browser: &Client, css: &str) -> Option<String> {
    let element = browser.find(Locator::Css(css)).await.ok()?;
    Some(element.text().await.ok()?.trim().to_owned())
}

async fn wait_for_text(browser: &Client, css: &str, expected: &str) {
    eventually(
        LIVE_SECONDS,
        &format!("{css} to say {expected}"),
        || async {
            text(browser, css)
                .await
                .is_some_and(|t| t.contains(expected))
                .then_some(())
        },
    )
    .await;
}

async fn path_of(browser: &Client) -> String {
    browser.current_url().await.unwrap().path().to_owned()
}

/// Waits until the browser is at `path` and its page has opened the live stream.
async fn wait_for_live(browser: &Client, path: &str) {
    eventually(LIVE_SECONDS, &format!("{path} to be live"), || async {
        (path_of(browser).await == path
            && text(browser, "#live-status")
                .await
                .is_some_and(|t| t.starts_with("● Live")))
        .then_some(())
    })
    .await;
}

/// Leaves a mark in the page's window: a reload would wipe it.
async fn mark_page(browser: &Client) {
    browser
        .execute(
            "window.slotguardTestMark = 'no reload'; return true;",
            vec![],
        )
        .await
        .unwrap();
}

async fn assert_not_reloaded(browser: &Client, page: &str) {
    let mark = browser
        .execute("return window.slotguardTestMark || null;", vec![])
        .await
        .unwrap();
    assert_eq!(
        mark,
        Value::from("no reload"),
        "the {page} page was reloaded"
    );
}

fn screenshots() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/screenshots")
}

/// Saves what the browser shows as `target/screenshots/{name}.png`.
async fn screenshot(browser: &Client, name: &str) {
    let png = browser.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG"), "{name}: not a PNG");
    std::fs::create_dir_all(screenshots()).unwrap();
    std::fs::write(screenshots().join(format!("{name}.png")), png).unwrap();
}
