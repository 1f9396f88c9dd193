//! The web console (`kvd serve --enable-ui`) in a real browser: headless
//! Chromium (Debian's `chromium`) driven through `chromedriver` over
//! WebDriver (the fantoccini crate), against real members. The tests click,
//! type and read the page as a person would, check what they did through
//! the etcd-client crate, and save screenshots of the cluster view under
//! load, the key tree and the live watch in `target/ui-screenshots/`.
//! Serving rules (TLS only with `--client-cert-auth`, off by default, gzip,
//! ETag) are checked with curl.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

#[path = "common/browser.rs"]
mod browser;
mod common;

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use etcd_client::{GetOptions, Permission};
use serde_json::json;

use browser::Browser;

use common::pki::{Ca, Usage, Validity};
use common::*;

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// Answers yes in the confirmation dialog once it is open.
async fn confirm(browser: &Browser) {
    browser
        .until(
            "asked to confirm",
            "document.getElementById('confirm').open",
        )
        .await;
    browser.click("#confirm-yes").await;
}

/// Puts and watch events on `endpoint` until `stop`: the traffic the
/// cluster view plots.
fn load(endpoint: String, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let mut c = connect(&[endpoint]).await;
        let mut reader = c.clone();
        let mut events = c
            .watch(
                "load/",
                Some(etcd_client::WatchOptions::new().with_prefix()),
            )
            .await
            .unwrap();
        tokio::spawn(async move { while let Ok(Some(_)) = events.message().await {} });
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) {
            c.put(format!("load/{}", n % 100), format!("value {n}"), None)
                .await
                .unwrap();
            reader.get(format!("load/{}", n % 100), None).await.unwrap();
            n += 1;
        }
        n
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn the_console_shows_the_cluster_edits_keys_and_watches_live() {
    let _serial = serial().await;
    let cluster = Cluster::start_with(
        3,
        ClusterOptions {
            extra_args: vec!["--enable-ui".to_string()],
            client_tls: None,
        },
    )
    .await;
    let mut c = cluster.client(0).await;
    let browser = Browser::start().await;
    let url = format!("{}/ui/", cluster.endpoint(0));
    browser.page.goto(&url).await.unwrap();

    // Page weight of the first load, from the browser's own accounting
    // (every byte over the wire, headers included; cache empty).
    browser
        .until("loaded", "document.readyState === 'complete'")
        .await;
    let weight = browser
        .js(
            "(() => { const nav = performance.getEntriesByType('navigation')[0];
                      const assets = performance.getEntriesByType('resource')
                        .filter(e => !['fetch', 'xmlhttprequest'].includes(e.initiatorType));
                      return { wire: nav.transferSize + assets.reduce((n, e) => n + e.transferSize, 0),
                               decoded: nav.decodedBodySize + assets.reduce((n, e) => n + e.decodedBodySize, 0),
                               files: 1 + assets.length,
                               elsewhere: assets.map(e => e.name).filter(n => !n.startsWith(location.origin + '/ui/')) }; })()",
        )
        .await;
    eprintln!("page weight on first load: {weight}");
    let wire = weight["wire"].as_u64().unwrap();
    assert!(
        wire > 10_000 && wire < 120_000,
        "first load moved {wire} bytes: {weight}"
    );
    // index.html, two stylesheets, uPlot and the console's seven modules;
    // nothing from anywhere else.
    assert_eq!(weight["files"], 11, "{weight}");
    assert_eq!(weight["elsewhere"], json!([]), "{weight}");

    // Cluster view: the three members, one leader, all reachable.
    browser
        .until(
            "three members with one leader",
            "document.querySelectorAll('#members tbody tr').length === 3
             && document.querySelectorAll('#members .badge-leader').length === 1
             && document.querySelectorAll('#members .badge-down').length === 0",
        )
        .await;
    let mut names: Vec<String> = serde_json::from_value(
        browser
            .js("[...document.querySelectorAll('#members tbody tr')].map(r => r.dataset.member)")
            .await,
    )
    .unwrap();
    names.sort();
    let mut expected: Vec<String> = cluster.members.iter().map(|m| m.name.clone()).collect();
    expected.sort();
    assert_eq!(names, expected);
    let mut cluster = cluster;
    let leader = cluster.leader_index().await;
    let shown_leader = browser
        .js("document.querySelector('#members tr.leader').dataset.member")
        .await;
    assert_eq!(shown_leader, json!(cluster.members[leader].name));
    let terms = browser
        .js("[...document.querySelectorAll('#members tbody tr')].map(r => Number(r.children[5].textContent))")
        .await;
    assert!(
        terms
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t.as_f64() >= Some(1.0)),
        "Raft terms: {terms}"
    );

    // Under load, the plots show puts, watch events and fsync latency.
    let stop = Arc::new(AtomicBool::new(false));
    let loader = load(cluster.endpoint(0), stop.clone());
    browser
        .until(
            "puts/s, reads/s, events/s and latencies plotted",
            "(() => { const l = window.kvd.cluster.latest();
                      return l.puts > 10 && l.reads > 10 && l.events > 10 && l.proposal > 0 && l.fsync > 0; })()",
        )
        .await;
    // A few more samples, so the plots show a line.
    browser
        .until(
            "four samples plotted",
            "window.kvd.cluster.samples[0].length >= 4",
        )
        .await;
    browser.screenshot("cluster").await;
    stop.store(true, Ordering::Relaxed);
    let puts = loader.await.unwrap();
    assert!(puts > 0);

    // Keys: create one through the put dialog, with confirmation.
    let key = "/ui-test/greeting";
    browser.click("#tab-keys").await;
    browser
        .until("the root listed", "document.querySelector('#tree li.node')")
        .await;
    browser.click("#new-key").await;
    browser.type_into("#editor-key", key).await;
    browser
        .type_into("#editor-value", r#"{"hello":"world","n":1}"#)
        .await;
    browser.click("#editor-submit").await;
    confirm(&browser).await;
    browser
        .until(
            "the new key shown",
            &format!(
                "document.querySelector('#key-detail .key-name')?.textContent === {key:?}
                 && document.getElementById('key-version')?.textContent === '1'"
            ),
        )
        .await;
    let got = c.get(key, None).await.unwrap();
    assert_eq!(got.kvs()[0].value(), br#"{"hello":"world","n":1}"#);
    // Shown as pretty-printed JSON.
    browser
        .until(
            "JSON view",
            "document.querySelector('.tab.active')?.dataset.kind === 'json'
             && document.querySelector('pre.value.json')?.textContent.includes('\"hello\": \"world\"')",
        )
        .await;
    // And in the tree, two levels down.
    browser
        .click(&format!("#tree li.dir[data-key='{}'] > a", b64("/")))
        .await;
    browser
        .click(&format!(
            "#tree li.dir[data-key='{}'] > a",
            b64("/ui-test/")
        ))
        .await;
    browser
        .until(
            "the key in the tree",
            &format!(
                "document.querySelector(\"#tree li.leaf[data-key='{}']\")",
                b64(key)
            ),
        )
        .await;

    // A second version under a lease: TTL and history shown.
    let lease = c.lease_grant(600, None).await.unwrap().id();
    browser.click("#key-edit").await;
    browser
        .type_into("#editor-value", r#"{"hello":"again"}"#)
        .await;
    browser
        .type_into("#editor-lease", &format!("{lease:x}"))
        .await;
    browser.click("#editor-submit").await;
    confirm(&browser).await;
    browser
        .until(
            "version 2 with its lease and TTL",
            &format!(
                "document.getElementById('key-version')?.textContent === '2'
                 && document.getElementById('key-lease')?.textContent.startsWith('{lease:x} · TTL ')
                 && document.querySelectorAll('.history-table tr.version').length === 2"
            ),
        )
        .await;
    let got = c.get(key, None).await.unwrap();
    assert_eq!(got.kvs()[0].lease(), lease);
    assert_eq!(got.kvs()[0].version(), 2);
    // The older version's value, from the history.
    browser
        .click(".history-table tr.version:nth-child(3)")
        .await;
    browser
        .until(
            "version 1 shown from the history",
            "document.querySelector('#key-detail .value-box')?.textContent.includes('version 1 at revision')
             && document.querySelector('#key-detail .value-box')?.textContent.includes('\"world\"')",
        )
        .await;
    browser.screenshot("keys").await;

    // Watch: a live feed of the prefix, with pause and filter.
    browser.click("#tab-watch").await;
    browser.type_into("#watch-key", "/ui-test/").await;
    browser.click("#watch-prev").await;
    browser.click("#watch-start").await;
    browser
        .until(
            "watching",
            "document.getElementById('watch-status').textContent.startsWith('watching since revision')",
        )
        .await;
    c.put("/ui-test/a", "first", None).await.unwrap();
    c.put("/ui-test/b", "second", None).await.unwrap();
    browser
        .until(
            "two events",
            "document.querySelectorAll('#watch-feed tr.event').length === 2",
        )
        .await;
    let keys = browser
        .js("[...document.querySelectorAll('#watch-feed tr.event')].map(r => r.children[2].textContent)")
        .await;
    assert_eq!(keys, json!(["/ui-test/b", "/ui-test/a"]), "newest first");

    browser.click("#watch-pause").await;
    c.put("/ui-test/a", "third", None).await.unwrap();
    browser
        .until(
            "the event held while paused",
            "document.getElementById('watch-status').textContent.includes('paused, 1 held')",
        )
        .await;
    assert_eq!(
        browser
            .js("document.querySelectorAll('#watch-feed tr.event').length")
            .await,
        json!(2)
    );
    browser.click("#watch-pause").await;
    browser
        .until(
            "the held event shown on resume, with its previous value",
            "document.querySelectorAll('#watch-feed tr.event').length === 3
             && document.querySelector('#watch-feed tr.event').children[5].textContent === 'first'",
        )
        .await;
    browser.type_into("#watch-filter", "second").await;
    browser
        .until(
            "filtered to one row",
            "document.querySelectorAll('#watch-feed tr.event:not([hidden])').length === 1",
        )
        .await;
    browser
        .js(
            "(() => { const f = document.getElementById('watch-filter'); f.value = '';
                      f.dispatchEvent(new Event('input')); return true; })()",
        )
        .await;

    // Delete through the keys view; the feed shows it.
    browser.click("#tab-keys").await;
    browser.click("#key-delete").await;
    confirm(&browser).await;
    browser
        .until("deleted", "document.getElementById('key-deleted')")
        .await;
    assert_eq!(
        c.get(key, Some(GetOptions::new().with_count_only()))
            .await
            .unwrap()
            .count(),
        0
    );
    browser.click("#tab-watch").await;
    browser
        .until(
            "the delete in the feed",
            &format!(
                "document.querySelector(\"#watch-feed tr.event[data-type='DELETE'][data-key='{}']\")",
                b64(key)
            ),
        )
        .await;
    // Put events of the greeting happened before the watch started: the
    // feed holds exactly what the watch saw.
    assert_eq!(
        browser
            .js("document.querySelectorAll('#watch-feed tr.event').length")
            .await,
        json!(4)
    );
    browser.screenshot("watch").await;
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn with_auth_on_the_console_logs_in_and_keeps_each_users_permissions() {
    let _serial = serial().await;
    let cluster = Cluster::start_with(
        1,
        ClusterOptions {
            extra_args: vec!["--enable-ui".to_string()],
            client_tls: None,
        },
    )
    .await;
    let mut c = cluster.client(0).await;
    c.put("/a/1", "alice may read this", None).await.unwrap();
    c.put("/b/1", "alice may not", None).await.unwrap();
    c.user_add("root", "root-pw", None).await.unwrap();
    c.user_grant_role("root", "root").await.unwrap();
    c.role_add("a-reader").await.unwrap();
    c.role_grant_permission("a-reader", Permission::read("/a/").with_prefix())
        .await
        .unwrap();
    c.user_add("alice", "alice-pw", None).await.unwrap();
    c.user_grant_role("alice", "a-reader").await.unwrap();
    c.auth_enable().await.unwrap();

    let browser = Browser::start().await;
    browser
        .page
        .goto(&format!("{}/ui/#keys", cluster.endpoint(0)))
        .await
        .unwrap();
    // The page needs a user: the login dialog opens.
    browser
        .until("the login dialog", "document.getElementById('login').open")
        .await;
    browser.type_into("#login-user", "root").await;
    browser.type_into("#login-password", "wrong").await;
    browser.click("#login-submit").await;
    browser
        .until(
            "a refused password",
            "document.getElementById('login-error').textContent.includes('authentication failed')",
        )
        .await;
    browser.type_into("#login-password", "root-pw").await;
    browser.click("#login-submit").await;
    browser.click("#tab-watch").await;
    browser.type_into("#watch-key", "/a/").await;
    browser.click("#watch-start").await;
    browser
        .until(
            "the watch started as root",
            "document.getElementById('watch-status').textContent.startsWith('watching since revision')",
        )
        .await;
    let mut as_root = etcd_client::Client::connect(
        [cluster.endpoint(0)],
        Some(etcd_client::ConnectOptions::new().with_user("root", "root-pw")),
    )
    .await
    .unwrap();
    as_root
        .put("/a/2", "seen by root's watch", None)
        .await
        .unwrap();
    browser
        .until(
            "the event",
            "document.querySelector('#watch-feed tr.event')?.textContent.includes('seen by root')",
        )
        .await;
    browser.click("#tab-keys").await;
    browser
        .until(
            "the tree listed as root",
            &format!(
                "document.querySelector(\"#tree li.dir[data-key='{}']\")",
                b64("/")
            ),
        )
        .await;
    assert_eq!(
        browser
            .js("document.getElementById('who-name').textContent")
            .await,
        json!("user root")
    );

    // Log out, then in as alice: the tree is refused (she may not read
    // every key), the key she may read opens.
    browser.click("#logout").await;
    browser
        .until(
            "the login dialog again",
            "document.getElementById('login').open",
        )
        .await;
    browser.type_into("#login-user", "alice").await;
    browser.type_into("#login-password", "alice-pw").await;
    browser.click("#login-submit").await;
    browser
        .until(
            "the tree refused to alice",
            "document.querySelector('#tree .error')?.textContent.includes('permission denied')",
        )
        .await;
    browser.type_into("#goto-key", "/a/1").await;
    browser.click("#goto button[type=submit]").await;
    browser
        .until(
            "alice's key",
            "document.querySelector('pre.value')?.textContent === 'alice may read this'",
        )
        .await;
    browser.type_into("#goto-key", "/b/1").await;
    browser.click("#goto button[type=submit]").await;
    browser
        .until(
            "bob's key refused",
            "document.querySelector('#key-detail .error')?.textContent.includes('permission denied')",
        )
        .await;
    browser.close().await;
}

/// curl's status line and body for `url` with `extra` flags.
fn curl(extra: &[&str], url: &str) -> (Option<u16>, String, String) {
    let out = Command::new("curl")
        .args(["-s", "-S", "-i", "--max-time", "10"])
        .args(extra)
        .arg(url)
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let status = text
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok());
    (
        status,
        text,
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn the_console_is_off_by_default_and_tls_only_with_client_cert_auth() {
    let _serial = serial().await;
    let dir = TestDir::new();

    // Off by default.
    let plain = Cluster::start(1).await;
    let (status, text, _) = curl(&[], &format!("{}/ui/", plain.endpoint(0)));
    assert_eq!(status, Some(404), "{text}");
    assert!(text.contains("--enable-ui"), "{text}");
    drop(plain);

    // One https and one plain client URL, --client-cert-auth.
    let ca = Ca::new(dir.path(), "ca");
    let (server_cert, server_key) = ca.issue("server", None, Usage::Server, Validity::Current);
    let (cert, key) = ca.issue("client", Some("root"), Usage::Client, Validity::Current);
    let (tls_port, plain_port, peer_port) = (free_port(), free_port(), free_port());
    let mut args = single_member_args(
        "m",
        &dir.path().join("m.kvd"),
        tls_port,
        peer_port,
        "ui-tls",
    );
    let listen = args
        .iter()
        .position(|a| a == "--listen-client-urls")
        .unwrap()
        + 1;
    args[listen] = format!("https://127.0.0.1:{tls_port},http://127.0.0.1:{plain_port}");
    let advertise = args
        .iter()
        .position(|a| a == "--advertise-client-urls")
        .unwrap()
        + 1;
    args[advertise] = format!("https://127.0.0.1:{tls_port}");
    args.extend([
        format!("--cert-file={}", server_cert.display()),
        format!("--key-file={}", server_key.display()),
        format!("--trusted-ca-file={}", ca.cert.display()),
        "--client-cert-auth".to_string(),
        "--enable-ui".to_string(),
    ]);
    let mut server = Server::start(ServerSpec::new(args, dir.path(), &dir.path().join("m.log")));
    let client_files = ClientFiles {
        ca: ca.cert.clone(),
        cert: cert.clone(),
        key: key.clone(),
    };
    let tls_url = format!("https://127.0.0.1:{tls_port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut c = loop {
        if let Some(status) = server.exit_status() {
            panic!("member exited with {status}:\n{}", server.log_tail(40));
        }
        let mut c = connect_tls(std::slice::from_ref(&tls_url), Some(&client_files)).await;
        if c.status().await.is_ok_and(|s| s.leader() != 0) {
            break c;
        }
        assert!(
            Instant::now() < deadline,
            "no leader:\n{}",
            server.log_tail(40)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    c.put("k", "v", None).await.unwrap();
    // Auth on: the certificate's CN (root) is the user.
    c.user_add("root", "root-pw", None).await.unwrap();
    c.user_grant_role("root", "root").await.unwrap();
    c.auth_enable().await.unwrap();

    // The plain listener refuses the console.
    let (status, text, _) = curl(&[], &format!("http://127.0.0.1:{plain_port}/ui/"));
    assert_eq!(status, Some(403), "{text}");
    assert!(text.contains("only over TLS"), "{text}");
    // Over TLS with a client certificate: the page, gzipped when asked,
    // revalidated by ETag.
    let tls = [
        "--cacert",
        ca.cert.to_str().unwrap(),
        "--cert",
        cert.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
    ];
    let (status, text, _) = curl(&tls, &format!("{tls_url}/ui/"));
    assert_eq!(status, Some(200), "{text}");
    assert!(text.contains("<title>kvd console</title>"), "{text}");
    let lower = text.to_ascii_lowercase();
    assert!(
        lower.contains("content-security-policy: default-src 'self'"),
        "{text}"
    );
    let etag = lower
        .lines()
        .find_map(|l| l.strip_prefix("etag: "))
        .unwrap()
        .trim()
        .to_string();
    let mut gz = tls.to_vec();
    gz.extend(["--compressed"]);
    let (status, text, _) = curl(&gz, &format!("{tls_url}/ui/app.js"));
    assert_eq!(status, Some(200));
    assert!(
        text.to_ascii_lowercase().contains("content-encoding: gzip"),
        "{text}"
    );
    assert!(text.contains("import { ClusterView }"), "{text}");
    let mut cond = tls.to_vec();
    let header = format!("If-None-Match: {etag}");
    cond.extend(["-H", &header]);
    let (status, _, _) = curl(&cond, &format!("{tls_url}/ui/"));
    assert_eq!(status, Some(304));
    let (status, _, _) = curl(&tls, &format!("{tls_url}/ui/no-such-file.js"));
    assert_eq!(status, Some(404));
    let (status, _, _) = curl(&tls, &format!("{tls_url}/ui"));
    assert_eq!(status, Some(308));
    // The gateway takes the certificate's user from curl, and from the
    // console's own origin, but not from another site's page (which a
    // browser holding the certificate would otherwise let write).
    let put = |extra: &[&str]| {
        let mut args = tls.to_vec();
        args.extend(extra);
        args.extend(["-X", "POST", "-d", r#"{"key":"Zm9v","value":"YmFy"}"#]);
        curl(&args, &format!("{tls_url}/v3/kv/put"))
    };
    let (status, text, _) = put(&[]);
    assert_eq!(status, Some(200), "{text}");
    let own = format!("Origin: {tls_url}");
    let (status, text, _) = put(&["-H", &own]);
    assert_eq!(status, Some(200), "{text}");
    for foreign in ["Origin: https://evil.example", "Sec-Fetch-Site: cross-site"] {
        let (status, text, _) = put(&["-H", foreign]);
        assert_ne!(status, Some(200), "{foreign}: {text}");
        assert!(text.contains("user name is empty"), "{foreign}: {text}");
    }
    // Without a client certificate, no TLS session at all.
    let (status, _, err) = curl(
        &["--cacert", ca.cert.to_str().unwrap()],
        &format!("{tls_url}/ui/"),
    );
    assert_eq!(status, None, "served without a client certificate: {err}");
    server.terminate();
}
