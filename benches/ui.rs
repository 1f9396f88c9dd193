//! The web console on a large store (`make bench-ui`): one member with
//! `KVD_UI_KEYS` keys (default 1,000,000; 256 B values): half flat,
//! `/flat/<7 digits>`, half in 1,000 directories (500 keys each at 1M),
//! `/tree/<3 digits>/<6 digits>`. Then, in headless Chromium: the first
//! load's bytes over the wire, and the time until each step of browsing is
//! on screen: the root, `/`, the first and second pages of `/tree/` (100
//! directories each), `/flat/` (100 keys), one key with its history, and a
//! put seen in a live watch. Each step runs `ROUNDS` times in a fresh page;
//! the median and worst are printed, in milliseconds.

#![allow(clippy::unwrap_used, clippy::expect_used)] // bench code: a panic is a failed run

use std::time::Instant;

use base64::Engine as _;
use etcd_client::{Client, Txn, TxnOp};

#[path = "../tests/common/browser.rs"]
mod browser;
mod common;

use browser::Browser;
use common::start_cluster;

const ROUNDS: usize = 3;
const VALUE_BYTES: usize = 256;
/// Puts per load transaction (kvd's default --max-txn-ops is 128).
const TXN_OPS: usize = 128;

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn key(i: usize) -> String {
    if i.is_multiple_of(2) {
        format!("/flat/{:07}", i / 2)
    } else {
        let j = i / 2;
        format!("/tree/{:03}/{:06}", j % 1000, j / 1000)
    }
}

/// Loads `keys` keys in transactions of TXN_OPS puts from 4 writers.
async fn load(c: &Client, keys: usize) {
    let writers = 4;
    let mut tasks = Vec::new();
    for w in 0..writers {
        let mut kv = c.kv_client();
        tasks.push(tokio::spawn(async move {
            let value = vec![b'v'; VALUE_BYTES];
            let mut start = w * TXN_OPS;
            while start < keys {
                let ops: Vec<TxnOp> = (start..(start + TXN_OPS).min(keys))
                    .map(|i| TxnOp::put(key(i), value.clone(), None))
                    .collect();
                kv.txn(Txn::new().and_then(ops)).await.expect("load txn");
                start += writers * TXN_OPS;
            }
        }));
    }
    for t in tasks {
        t.await.expect("writer");
    }
}

/// Milliseconds from now until `expr` holds on the page.
async fn time(browser: &Browser, what: &str, expr: &str) -> f64 {
    let started = Instant::now();
    browser.until(what, expr).await;
    started.elapsed().as_secs_f64() * 1000.0
}

fn dir_item(key: &str) -> String {
    format!("#tree li.dir[data-key='{}']", b64(key))
}

/// Children listed under directory item `css` (items, not "more…").
fn listed(css: &str, at_least: usize) -> String {
    format!(
        "document.querySelectorAll(\"{css} > ul > li.node\").length >= {at_least}
         && !document.querySelector(\"{css} > ul > li.loading\")"
    )
}

#[tokio::main]
async fn main() {
    let keys: usize = std::env::var("KVD_UI_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let cluster = start_cluster(env!("CARGO_BIN_EXE_kvd"), false, 1, &["--enable-ui"]).await;
    let port = cluster.members[0].client_port;
    let c = Client::connect([format!("127.0.0.1:{port}")], None)
        .await
        .unwrap();
    let started = Instant::now();
    load(&c, keys).await;
    println!(
        "loaded {keys} keys in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let url = format!("http://127.0.0.1:{port}/ui/");
    let steps = [
        "first load (page and assets on screen)",
        "root listed",
        "/ listed",
        "/tree/ first 100 directories",
        "/tree/ next 100 directories",
        "/flat/ first 100 keys",
        "one key with its history",
        "a put seen in the live watch",
    ];
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); steps.len()];
    let mut wire = 0;
    for round in 0..ROUNDS {
        let browser = Browser::start().await;
        let t = Instant::now();
        browser.page.goto(&format!("{url}#keys")).await.unwrap();
        browser
            .until("loaded", "document.readyState === 'complete'")
            .await;
        let first = t.elapsed().as_secs_f64() * 1000.0;
        times[0].push(first);
        if round == 0 {
            wire = browser
                .js("performance.getEntriesByType('navigation')[0].transferSize
                     + performance.getEntriesByType('resource')
                         .filter(e => !['fetch', 'xmlhttprequest'].includes(e.initiatorType))
                         .reduce((n, e) => n + e.transferSize, 0)")
                .await
                .as_u64()
                .unwrap();
        }
        // The root's listing starts with the page.
        times[1].push(
            first
                + time(
                    &browser,
                    "root",
                    &format!("document.querySelector(\"{}\")", dir_item("/")),
                )
                .await,
        );
        let slash = dir_item("/");
        browser.click(&format!("{slash} > a")).await;
        times[2].push(time(&browser, "/", &listed(&slash, 2)).await);
        let tree = dir_item("/tree/");
        browser.click(&format!("{tree} > a")).await;
        times[3].push(time(&browser, "/tree/ page 1", &listed(&tree, 100)).await);
        browser
            .click(&format!("{tree} > ul > li.more button"))
            .await;
        times[4].push(time(&browser, "/tree/ page 2", &listed(&tree, 200)).await);
        let flat = dir_item("/flat/");
        browser.click(&format!("{flat} > a")).await;
        times[5].push(time(&browser, "/flat/ page 1", &listed(&flat, 100)).await);
        browser
            .click(&format!("{flat} > ul > li.leaf:nth-child(7) > a"))
            .await;
        times[6].push(
            time(
                &browser,
                "key and history",
                "document.querySelector('#key-detail .key-name')?.textContent === '/flat/0000006'
                 && document.querySelector('#key-detail .history-table tr.version')
                 && document.querySelector('#key-detail .history .hint')",
            )
            .await,
        );
        browser.click("#key-watch").await;
        browser
            .until(
                "watching",
                "document.getElementById('watch-status').textContent.startsWith('watching')",
            )
            .await;
        let mut kv = c.kv_client();
        let t = Instant::now();
        kv.put("/flat/0000006", format!("round {round}"), None)
            .await
            .unwrap();
        browser
            .until(
                "the event",
                &format!("[...document.querySelectorAll('#watch-feed tr.event')].some(r => r.textContent.includes('round {round}'))"),
            )
            .await;
        times[7].push(t.elapsed().as_secs_f64() * 1000.0);
        browser.close().await;
    }
    println!("\nweb console on {keys} keys: first load {wire} bytes over the wire\n");
    println!("| step | median ms | worst ms |");
    println!("|---|---|---|");
    for (step, mut t) in steps.iter().zip(times) {
        t.sort_by(f64::total_cmp);
        println!("| {step} | {:.0} | {:.0} |", t[t.len() / 2], t[t.len() - 1]);
    }
}
