//! The browser dashboard in a real headless Chromium, driven over WebDriver: a session
//! started from the form and followed live to consensus (and the README screenshot),
//! hostile model text rendered inert, and the HTTP API's JSON errors.

use crate::ALL_ROLES;
use agentmesh_e2e::webdriver::{Browser, http};
use agentmesh_e2e::{Cluster, CoordinatorOpts};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

const TERMINAL: [&str; 4] = ["CONSENSUS", "NO_CONSENSUS", "CANCELLED", "FAILED"];

/// A coordinator (with its HTTP port) and one worker per role.
fn cluster(think_ms: &str) -> (Cluster, String) {
    let mut cluster = Cluster::start(CoordinatorOpts::default());
    cluster.add_roles(&ALL_ROLES, 1, &["--think-ms", think_ms]);
    let http = cluster
        .http
        .clone()
        .expect("the coordinator serves HTTP (--http)");
    (cluster, format!("http://{http}"))
}

/// Runs a script that returns a value, panicking with the driver log on a WebDriver error.
fn js(browser: &Browser, script: &str) -> Value {
    browser
        .execute(script, vec![])
        .unwrap_or_else(|e| panic!("script failed: {e}\n{script}\n{}", browser.log_tail()))
}

/// The rendered text of the first element matching `css`. The view re-renders sections
/// as events arrive, so a reference can go stale between find and read: retried.
fn visible_text(browser: &Browser, css: &str) -> String {
    browser.wait_for(Duration::from_secs(10), css, |b| match b.find(css)? {
        Some(el) => b.text(&el).map(Some),
        None => Ok(None),
    })
}

/// What the session view shows now, read in one script so the numbers agree.
const SNAPSHOT: &str = r#"
const status = document.getElementById('session-status');
return {
  marker: window.__marker === undefined ? null : window.__marker,
  hash: location.hash,
  entries: document.querySelectorAll('#entries .entry[data-seq]').length,
  status: status ? status.dataset.status : null,
};"#;

#[test]
fn dashboard_follows_a_session_live_to_consensus() {
    let (cluster, base) = cluster("400");
    let browser = Browser::start();
    browser
        .navigate(&format!("{base}/"))
        .expect("open dashboard");

    // The overview lists every worker, grouped by role.
    browser.wait_for(Duration::from_secs(15), "seven workers listed", |b| {
        let n = b.execute(
            "return document.querySelectorAll('#workers .role-group .worker').length;",
            vec![],
        )?;
        Ok((n == json!(7)).then_some(()))
    });
    for role in ALL_ROLES {
        let group = browser
            .find(&format!("#workers .role-group[data-role=\"{role}\"]"))
            .expect("find");
        assert!(group.is_some(), "no worker group for {role}");
    }
    js(&browser, "window.__marker = 1; return null;");

    // Start the negotiation from the form.
    let task = browser.element("#start-form #task").expect("task field");
    browser.clear(&task).expect("clear");
    browser
        .send_keys(&task, agentmesh_brain::DEMO_TASK)
        .expect("type the task");
    let roles = browser.element("#start-form #roles").expect("roles field");
    assert_eq!(
        browser
            .attribute(&roles, "value")
            .expect("value")
            .as_deref(),
        Some("backend,frontend,security,architect,devops,database"),
        "the roles input defaults to the six specialists"
    );
    let submit = browser.element("#start-submit").expect("submit button");
    browser.click(&submit).expect("submit");

    let id: String = browser.wait_for(Duration::from_secs(15), "the session view", |b| {
        let hash = b.execute("return location.hash;", vec![])?;
        Ok(hash
            .as_str()
            .and_then(|h| h.strip_prefix("#/session/"))
            .map(str::to_string))
    });

    // Follow it: the entry count must grow in steps while the page never reloads.
    let start = Instant::now();
    let mut seen: Vec<u64> = Vec::new();
    let last = loop {
        let snap = js(&browser, SNAPSHOT);
        assert_eq!(
            snap["marker"],
            json!(1),
            "the page reloaded (window.__marker is gone): {snap}"
        );
        let entries = snap["entries"].as_u64().unwrap_or(0);
        if let Some(&prev) = seen.last() {
            assert!(
                entries >= prev,
                "entry count went back: {seen:?} then {entries}"
            );
        }
        if seen.last() != Some(&entries) {
            seen.push(entries);
        }
        let status = snap["status"].as_str().unwrap_or_default().to_string();
        if TERMINAL.contains(&status.as_str()) {
            break snap;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "session {id} not ended in the page after 120 s: {snap}\n{}",
            cluster.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let growing: Vec<u64> = seen.iter().copied().filter(|&n| n > 0).collect();
    assert!(
        growing.len() >= 3,
        "the page should show entries arriving in several steps, saw counts {seen:?}"
    );
    assert_eq!(last["status"], json!("CONSENSUS"), "{last}");
    assert_eq!(last["marker"], json!(1));

    // The final view: outcome, a sign-off by every role, verdicts, proposal diff.
    let api = http(
        "GET",
        &format!("{base}/api/sessions/{id}/transcript"),
        &[],
        None,
    )
    .expect("transcript");
    assert_eq!(api.status, 200, "{}", api.body);
    let transcript = api.json();
    let final_hash = transcript["session"]["final_hash"]
        .as_str()
        .expect("final hash")
        .to_string();
    let entries = transcript["entries"].as_array().expect("entries").len();
    browser.wait_for(Duration::from_secs(10), "every entry shown", |b| {
        let n = b.execute(
            "return document.querySelectorAll('#entries .entry[data-seq]').length;",
            vec![],
        )?;
        Ok((n == json!(entries)).then_some(()))
    });

    let outcome_text = visible_text(&browser, "#outcome");
    assert!(outcome_text.contains("CONSENSUS"), "{outcome_text}");
    assert!(outcome_text.contains(&final_hash), "{outcome_text}");
    assert_eq!(
        js(
            &browser,
            "return document.getElementById('outcome').dataset.status;"
        ),
        json!("CONSENSUS")
    );

    let signed: BTreeSet<String> = js(
        &browser,
        "return Array.from(document.querySelectorAll('#signoffs .signoff[data-signed=\"true\"]'))
            .map(e => e.dataset.role);",
    )
    .as_array()
    .expect("roles")
    .iter()
    .filter_map(|v| v.as_str().map(str::to_string))
    .collect();
    let all: BTreeSet<String> = ALL_ROLES.iter().map(|r| r.to_string()).collect();
    assert_eq!(signed, all, "every role signs the final proposal");
    assert_eq!(visible_text(&browser, "#signoff-count"), "7 / 7");
    // Each sign-off is marked verified only once the page checked it itself (WebCrypto
    // Ed25519 over the chain and the signature), and the certificate too.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let marks = loop {
        let marks = js(
            &browser,
            r#"return {
              verified: document.querySelectorAll('#signoffs .signoff[data-verified="true"]').length,
              certificate: (document.getElementById('certificate-mark') || {dataset: {}}).dataset.verified || null,
              why: Array.from(document.querySelectorAll('#signoffs .verify-mark')).map(e => e.title),
            };"#,
        );
        if marks["verified"] == json!(7) && marks["certificate"] == json!("true")
            || std::time::Instant::now() > deadline
        {
            break marks;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert_eq!(
        marks["verified"],
        json!(7),
        "every sign-off verified in the page: {marks}"
    );
    assert_eq!(marks["certificate"], json!("true"), "{marks}");

    let view = js(
        &browser,
        r#"return {
          approvals: document.querySelectorAll('#verdicts .verdict-cell[data-verdict="APPROVE"]').length,
          objections: document.querySelectorAll('#verdicts .verdict-cell[data-verdict="OBJECT"]').length,
          versions: Array.from(document.querySelectorAll('#proposals .version-tab')).map(e => e.dataset.version),
          added: document.querySelectorAll('#diff .diff-line.add').length,
          current: document.querySelector('#timeline .tl-cell.current') !== null,
          conn: document.getElementById('conn').dataset.state,
          diff: window.agentmesh.diffLines(['a', 'b', 'c'], ['a', 'c', 'd']).map(d => d.kind + d.text),
        };"#,
    );
    // The demo task: six objections in round 1, seven approvals of v2 in round 2.
    assert!(view["approvals"].as_u64() >= Some(7), "{view}");
    assert!(view["objections"].as_u64() >= Some(1), "{view}");
    assert_eq!(view["versions"], json!(["1", "2"]), "{view}");
    assert!(
        view["added"].as_u64() > Some(0),
        "v2 adds lines to v1: {view}"
    );
    assert_eq!(
        view["current"],
        json!(false),
        "nothing is live any more: {view}"
    );
    assert_eq!(view["conn"], json!("ended"), "the stream is closed: {view}");
    assert_eq!(view["diff"], json!(["samea", "delb", "samec", "addd"]));

    // The download links serve the communication file and the lossless JSON.
    let links = js(
        &browser,
        "return [document.getElementById('download-md').href,
                 document.getElementById('download-json').href];",
    );
    let md = http("GET", links[0].as_str().expect("md link"), &[], None).expect("md");
    assert_eq!(md.status, 200);
    assert!(md.body.starts_with("### [SUPERVISOR] ["), "{}", md.body);
    assert!(md.body.contains("**Type**: FRAMEWORK"));
    let export = http("GET", links[1].as_str().expect("json link"), &[], None).expect("json");
    assert_eq!(export.status, 200);
    assert_eq!(
        export.json()["entries"].as_array().map(Vec::len),
        Some(entries)
    );

    // The README's picture: the final session view.
    js(&browser, "window.scrollTo(0, 0); return null;");
    // The picture is taken once the entries' fade-in has finished.
    browser.wait_for(Duration::from_secs(10), "animations finished", |b| {
        let running = b.execute(
            "return document.getAnimations().filter(a => a.playState === 'running').length;",
            vec![],
        )?;
        Ok((running.as_u64() == Some(0)).then_some(()))
    });
    // Saved beside the build output; `UPDATE_SCREENSHOT=1` refreshes the README's copy
    // in docs/ instead, so an ordinary test run leaves the work tree clean.
    let png = if std::env::var_os("UPDATE_SCREENSHOT").is_some() {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/dashboard.png")
    } else {
        agentmesh_e2e::log_dir().join("dashboard.png")
    };
    browser.save_screenshot(&png).expect("screenshot");
    let bytes = std::fs::read(&png).expect("read screenshot");
    assert!(
        bytes.starts_with(b"\x89PNG\r\n\x1a\n") && bytes.len() > 10_000,
        "a real PNG"
    );

    let errors = browser.console_errors().expect("console log");
    assert!(errors.is_empty(), "the page logged errors: {errors:#?}");

    // Back to the overview without a reload: the session is listed as ended.
    js(&browser, "location.hash = '#/'; return null;");
    browser.wait_for(Duration::from_secs(10), "the ended session listed", |b| {
        let css = format!(
            "#ended-sessions .session-row[data-session-id=\"{id}\"][data-status=\"CONSENSUS\"]"
        );
        Ok(b.find(&css)?.map(drop))
    });
    assert_eq!(js(&browser, "return window.__marker;"), json!(1));
    let errors = browser.console_errors().expect("console log");
    assert!(errors.is_empty(), "the page logged errors: {errors:#?}");
}

#[test]
fn dashboard_renders_hostile_text_inert_and_api_errors_are_json() {
    let (cluster, base) = cluster("50");
    let hostile = "Design a comment widget. <script>window.__pwned=1</script>\
                   <img src=x onerror=\"window.__pwned=2\"> & keep it safe";

    let created = http(
        "POST",
        &format!("{base}/api/sessions"),
        &[],
        Some(&json!({ "task": hostile, "max_rounds": 2 })),
    )
    .expect("create session");
    assert_eq!(created.status, 201, "{}", created.body);
    let session = created.json();
    let id = session["id"].as_str().expect("id").to_string();
    assert_eq!(session["task"], json!(hostile));

    let browser = Browser::start();
    browser
        .navigate(&format!("{base}/#/session/{id}"))
        .expect("open session view");
    browser.wait_for(Duration::from_secs(60), "entries and an outcome", |b| {
        let snap = b.execute(SNAPSHOT, vec![])?;
        let ended = TERMINAL.contains(&snap["status"].as_str().unwrap_or_default());
        Ok((ended && snap["entries"].as_u64() > Some(0)).then_some(()))
    });
    // No injected element exists, so no injected handler can ever run: checking the
    // structure first makes the `pwned` check final, with nothing to wait for.
    let probe = js(
        &browser,
        r#"return {
          pwned: typeof window.__pwned,
          scripts: document.scripts.length,
          images: document.images.length,
          handlers: document.querySelectorAll('[onerror],[onload],[onclick]').length,
          text: document.body.innerText,
        };"#,
    );
    assert_eq!(
        probe["scripts"],
        json!(1),
        "only the dashboard's own script"
    );
    assert_eq!(probe["images"], json!(0), "no injected element");
    assert_eq!(probe["handlers"], json!(0), "no injected handler");
    assert_eq!(probe["pwned"], json!("undefined"), "model text ran as code");
    let text = probe["text"].as_str().unwrap_or_default();
    assert!(
        text.contains("<script>window.__pwned=1</script>"),
        "the literal markup is shown as text"
    );
    assert_eq!(visible_text(&browser, "#session-task"), hostile);

    // The overview lists it as text too.
    js(&browser, "location.hash = '#/'; return null;");
    // Read in one script: the overview re-renders its rows as mesh events arrive.
    let listed = browser.wait_for(Duration::from_secs(10), "the session listed", |b| {
        let text = b.execute(
            "const e = document.querySelector(`.session-row[data-session-id=\"${arguments[0]}\"] .session-task`);
             return e ? e.textContent : null;",
            vec![json!(id)],
        )?;
        Ok(text.as_str().map(str::to_string))
    });
    assert_eq!(listed, hostile);
    assert_eq!(
        js(&browser, "return typeof window.__pwned;"),
        json!("undefined")
    );

    // The API's errors are JSON with a status that says what went wrong.
    let missing = http("GET", &format!("{base}/api/sessions/nope"), &[], None).expect("get");
    assert_eq!(missing.status, 404, "{}", missing.body);
    assert!(missing.content_type.starts_with("application/json"));
    assert!(
        missing.json()["error"]
            .as_str()
            .is_some_and(|e| !e.is_empty()),
        "{}",
        missing.body
    );

    let future = http(
        "GET",
        &format!("{base}/api/sessions/{id}/events"),
        &[("Last-Event-ID", "999999"), ("Accept", "text/event-stream")],
        None,
    )
    .expect("events");
    assert_eq!(future.status, 400, "{}", future.body);
    assert!(future.content_type.starts_with("application/json"));
    assert!(
        future.json()["error"]
            .as_str()
            .is_some_and(|e| !e.is_empty()),
        "{}",
        future.body
    );

    // The largest seq has no successor to resume from: refused, not overflowed.
    let past_every_seq = http(
        "GET",
        &format!("{base}/api/sessions/{id}/events"),
        &[
            ("Last-Event-ID", "18446744073709551615"),
            ("Accept", "text/event-stream"),
        ],
        None,
    )
    .expect("events");
    assert_eq!(past_every_seq.status, 400, "{}", past_every_seq.body);
    assert!(
        past_every_seq.json()["error"]
            .as_str()
            .is_some_and(|e| e.contains("18446744073709551615")),
        "{}",
        past_every_seq.body
    );

    let bad = http(
        "POST",
        &format!("{base}/api/sessions"),
        &[],
        Some(&json!({ "roles": "backend" })),
    )
    .expect("bad create");
    assert_eq!(bad.status, 400, "{}", bad.body);
    assert!(bad.json()["error"].is_string(), "{}", bad.body);
    drop(cluster);
}
