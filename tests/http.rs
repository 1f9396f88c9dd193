//! The HTTP face of a member, driven with curl as a user would: the seeds'
//! v2 curl examples (etcd's v2 API guide) verbatim, v2 and v3 sharing one
//! store, etcd's JSON gateway for every service (and a watch streaming
//! while etcdctl writes), CORS, `/livez` and `/readyz`. Expected bodies are
//! etcd 3.4's (recorded in its v2 and gateway behaviour), indexes masked.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use common::{etcdctl, stdout_ok, Cluster};

/// A curl answer: status, headers (names lowercased), body.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }
}

/// Runs `curl -s -S -i <args>` and splits its answer.
fn curl(args: &[&str]) -> Reply {
    let out = Command::new("curl")
        .args(["-s", "-S", "-i", "--max-time", "30"])
        .args(args)
        .output()
        .expect("run curl (apt install curl)");
    assert!(
        out.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP answer");
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Reply {
        status,
        headers,
        body: body.to_string(),
    }
}

/// Replaces what differs from run to run (indexes, expiration times,
/// in-order key numbers) so that bodies compare with etcd's.
fn mask(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    loop {
        let next = ["Index\":", "\"index\":", "\"expiration\":\"", "/queue/"]
            .iter()
            .filter_map(|p| rest.find(p).map(|i| (i, *p)))
            .min();
        let Some((i, pattern)) = next else {
            out.push_str(rest);
            return out;
        };
        out.push_str(&rest[..i + pattern.len()]);
        rest = &rest[i + pattern.len()..];
        if pattern.ends_with('"') {
            let end = rest.find('"').unwrap();
            out.push('E');
            rest = &rest[end..];
        } else {
            let end = rest
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len());
            out.push(if pattern == "/queue/" { 'Q' } else { 'N' });
            rest = &rest[end..];
        }
    }
}

/// Asserts the status and the masked body (which must end in a newline,
/// as v2's JSON encoder writes it).
#[track_caller]
fn expect(reply: &Reply, status: u16, body: &str) {
    assert_eq!(
        (reply.status, mask(&reply.body)),
        (status, format!("{body}\n")),
        "unexpected answer {reply:?}"
    );
}

/// A curl started now and read later (a wait, a stream).
struct Background(std::process::Child);

impl Background {
    fn start(args: &[&str]) -> Background {
        let child = Command::new("curl")
            .args(["-s", "-N", "--max-time", "30"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("run curl");
        // Give it time to connect before the write it waits for.
        std::thread::sleep(Duration::from_millis(400));
        Background(child)
    }

    /// Its whole output once it exits.
    fn output(self) -> String {
        let out = self.0.wait_with_output().expect("curl output");
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    /// Its first `n` lines (a stream), then kills it.
    fn lines(mut self, n: usize) -> Vec<String> {
        let stdout = self.0.stdout.take().unwrap();
        let lines: Vec<String> = BufReader::new(stdout)
            .lines()
            .take(n)
            .map(|l| l.unwrap())
            .collect();
        let _ = self.0.kill();
        let _ = self.0.wait();
        lines
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_seeds_v2_curl_examples() {
    let cluster = Cluster::start(1).await;
    let base = format!("{}/v2/keys", cluster.endpoint(0));
    let url = |path: &str| format!("{base}{path}");

    // Setting, getting, changing and deleting a key.
    let set = curl(&["-L", &url("/message"), "-XPUT", "-d", "value=Hello world"]);
    expect(
        &set,
        201,
        r#"{"action":"set","node":{"key":"/message","value":"Hello world","modifiedIndex":N,"createdIndex":N}}"#,
    );
    for h in [
        "x-etcd-index",
        "x-raft-index",
        "x-raft-term",
        "x-etcd-cluster-id",
    ] {
        assert!(set.header(h).is_some(), "{h} missing: {set:?}");
    }
    assert_eq!(set.header("content-type"), Some("application/json"));
    expect(
        &curl(&["-L", &url("/message")]),
        200,
        r#"{"action":"get","node":{"key":"/message","value":"Hello world","modifiedIndex":N,"createdIndex":N}}"#,
    );
    expect(
        &curl(&["-L", &url("/message"), "-XPUT", "-d", "value=Hello etcd"]),
        200,
        r#"{"action":"set","node":{"key":"/message","value":"Hello etcd","modifiedIndex":N,"createdIndex":N},"prevNode":{"key":"/message","value":"Hello world","modifiedIndex":N,"createdIndex":N}}"#,
    );
    expect(
        &curl(&["-L", &url("/message"), "-XDELETE"]),
        200,
        r#"{"action":"delete","node":{"key":"/message","modifiedIndex":N,"createdIndex":N},"prevNode":{"key":"/message","value":"Hello etcd","modifiedIndex":N,"createdIndex":N}}"#,
    );

    // A TTL, and the expiry seen by a waiting client.
    let ttl = curl(&[
        "-L",
        &url("/foo"),
        "-XPUT",
        "-d",
        "value=bar",
        "-d",
        "ttl=2",
    ]);
    expect(
        &ttl,
        201,
        r#"{"action":"set","node":{"key":"/foo","value":"bar","expiration":"E","ttl":2,"modifiedIndex":N,"createdIndex":N}}"#,
    );
    let waiter = Background::start(&["-L", &url("/foo?wait=true")]);
    let expired = waiter.output();
    assert_eq!(
        mask(&expired),
        "{\"action\":\"expire\",\"node\":{\"key\":\"/foo\",\"modifiedIndex\":N,\"createdIndex\":N},\"prevNode\":{\"key\":\"/foo\",\"value\":\"bar\",\"modifiedIndex\":N,\"createdIndex\":N}}\n"
    );
    let gone = curl(&["-L", &url("/foo")]);
    expect(
        &gone,
        404,
        r#"{"errorCode":100,"message":"Key not found","cause":"/foo","index":N}"#,
    );
    assert!(
        gone.header("x-raft-index").is_none(),
        "errors carry no X-Raft-*"
    );

    // Waiting for a change, and for one that already happened (waitIndex).
    let waiter = Background::start(&["-L", &url("/foo?wait=true")]);
    let put = curl(&["-L", &url("/foo"), "-XPUT", "-d", "value=bar"]);
    let seen: Value = serde_json::from_str(&waiter.output()).unwrap();
    assert_eq!(seen["action"], "set");
    assert_eq!(seen["node"], put.json()["node"]);
    let index = put.json()["node"]["modifiedIndex"].as_i64().unwrap();
    let waited = curl(&["-L", &url(&format!("/foo?wait=true&waitIndex={index}"))]);
    assert_eq!(waited.json()["node"]["modifiedIndex"], index);
    assert_eq!(waited.json()["node"]["value"], "bar");

    // A recursive wait sees a change below the directory.
    let waiter = Background::start(&["-L", &url("/dir?wait=true&recursive=true")]);
    curl(&["-L", &url("/dir/foo"), "-XPUT", "-d", "value=bar"]);
    let seen: Value = serde_json::from_str(&waiter.output()).unwrap();
    assert_eq!(
        (seen["action"].as_str(), seen["node"]["key"].as_str()),
        (Some("set"), Some("/dir/foo"))
    );

    // In-order keys, listed in order.
    let job1 = curl(&[&url("/queue"), "-XPOST", "-d", "value=Job1"]);
    expect(
        &job1,
        201,
        r#"{"action":"create","node":{"key":"/queue/Q","value":"Job1","modifiedIndex":N,"createdIndex":N}}"#,
    );
    let job2 = curl(&[&url("/queue"), "-XPOST", "-d", "value=Job2"]);
    let (k1, k2) = (
        job1.json()["node"]["key"].as_str().unwrap().to_string(),
        job2.json()["node"]["key"].as_str().unwrap().to_string(),
    );
    assert!(k1 < k2 && k1.len() == "/queue/".len() + 20, "{k1} {k2}");
    let listed = curl(&["-s", &url("/queue?recursive=true&sorted=true")]);
    expect(
        &listed,
        200,
        r#"{"action":"get","node":{"key":"/queue","dir":true,"nodes":[{"key":"/queue/Q","value":"Job1","modifiedIndex":N,"createdIndex":N},{"key":"/queue/Q","value":"Job2","modifiedIndex":N,"createdIndex":N}]}}"#,
    );

    // A directory with a TTL, refreshed; a key inside expires with it.
    let dir = curl(&[
        "-L",
        &url("/ttldir"),
        "-XPUT",
        "-d",
        "ttl=30",
        "-d",
        "dir=true",
    ]);
    expect(
        &dir,
        201,
        r#"{"action":"set","node":{"key":"/ttldir","dir":true,"expiration":"E","ttl":30,"modifiedIndex":N,"createdIndex":N}}"#,
    );
    let refreshed = curl(&[
        "-L",
        &url("/ttldir"),
        "-XPUT",
        "-d",
        "ttl=30",
        "-d",
        "dir=true",
        "-d",
        "refresh=true",
        "-d",
        "prevExist=true",
    ]);
    assert_eq!(
        (refreshed.status, refreshed.json()["action"].as_str()),
        (200, Some("update"))
    );
    curl(&["-L", &url("/ttldir/inside"), "-XPUT", "-d", "value=x"]);
    let got = etcdctl(&cluster.endpoints(), &["lease", "list"]).await;
    assert!(
        stdout_ok(&["lease", "list"], &got).contains("found 1 leases"),
        "the key shares the directory's lease"
    );

    // Atomic compare-and-swap.
    curl(&["-L", &url("/cas"), "-XPUT", "-d", "value=one"]);
    expect(
        &curl(&[
            "-L",
            &url("/cas?prevExist=false"),
            "-XPUT",
            "-d",
            "value=three",
        ]),
        412,
        r#"{"errorCode":105,"message":"Key already exists","cause":"/cas","index":N}"#,
    );
    expect(
        &curl(&[
            "-L",
            &url("/cas?prevValue=two"),
            "-XPUT",
            "-d",
            "value=three",
        ]),
        412,
        r#"{"errorCode":101,"message":"Compare failed","cause":"[two != one]","index":N}"#,
    );
    expect(
        &curl(&["-L", &url("/cas?prevValue=one"), "-XPUT", "-d", "value=two"]),
        200,
        r#"{"action":"compareAndSwap","node":{"key":"/cas","value":"two","modifiedIndex":N,"createdIndex":N},"prevNode":{"key":"/cas","value":"one","modifiedIndex":N,"createdIndex":N}}"#,
    );
    // Atomic compare-and-delete.
    expect(
        &curl(&["-L", &url("/cas?prevValue=one"), "-XDELETE"]),
        412,
        r#"{"errorCode":101,"message":"Compare failed","cause":"[one != two]","index":N}"#,
    );
    expect(
        &curl(&["-L", &url("/cas?prevValue=two"), "-XDELETE"]),
        200,
        r#"{"action":"compareAndDelete","node":{"key":"/cas","modifiedIndex":N,"createdIndex":N},"prevNode":{"key":"/cas","value":"two","modifiedIndex":N,"createdIndex":N}}"#,
    );

    // Directories: create, list, refuse to delete while full, delete.
    expect(
        &curl(&["-L", &url("/emptydir"), "-XPUT", "-d", "dir=true"]),
        201,
        r#"{"action":"set","node":{"key":"/emptydir","dir":true,"modifiedIndex":N,"createdIndex":N}}"#,
    );
    curl(&["-L", &url("/foo_dir/foo"), "-XPUT", "-d", "value=bar"]);
    expect(
        &curl(&["-L", &url("/foo_dir")]),
        200,
        r#"{"action":"get","node":{"key":"/foo_dir","dir":true,"nodes":[{"key":"/foo_dir/foo","value":"bar","modifiedIndex":N,"createdIndex":N}]}}"#,
    );
    expect(
        &curl(&["-L", &url("/foo_dir?dir=true"), "-XDELETE"]),
        403,
        r#"{"errorCode":108,"message":"Directory not empty","cause":"/foo_dir","index":N}"#,
    );
    expect(
        &curl(&["-L", &url("/foo_dir?recursive=true"), "-XDELETE"]),
        200,
        r#"{"action":"delete","node":{"key":"/foo_dir","dir":true,"modifiedIndex":N},"prevNode":{"key":"/foo_dir","dir":true}}"#,
    );
    expect(
        &curl(&["-L", &url("/emptydir?dir=true"), "-XDELETE"]),
        200,
        r#"{"action":"delete","node":{"key":"/emptydir","dir":true,"modifiedIndex":N,"createdIndex":N},"prevNode":{"key":"/emptydir","dir":true,"modifiedIndex":N,"createdIndex":N}}"#,
    );

    // Hidden nodes stay out of listings.
    curl(&[
        "-L",
        &url("/_message"),
        "-XPUT",
        "-d",
        "value=Hello hidden world",
    ]);
    curl(&["-L", &url("/message"), "-XPUT", "-d", "value=Hello world"]);
    let root = curl(&["-L", &format!("{base}/")]).json();
    let names: Vec<&str> = root["node"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["key"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"/message") && !names.contains(&"/_message"),
        "{names:?}"
    );
    assert!(
        root["node"].get("key").is_none(),
        "the root has no key: {root}"
    );

    // Errors with etcd's codes and statuses.
    expect(
        &curl(&["-L", &url("/message/child"), "-XPUT", "-d", "value=x"]),
        400,
        r#"{"errorCode":104,"message":"Not a directory","cause":"/message","index":N}"#,
    );
    expect(
        &curl(&["-L", &url("/queue"), "-XPUT", "-d", "value=x"]),
        403,
        r#"{"errorCode":102,"message":"Not a file","cause":"/queue","index":N}"#,
    );
    let bad = curl(&[
        "-L",
        &url("/message"),
        "-XPUT",
        "-d",
        "value=x",
        "-d",
        "ttl=abc",
    ]);
    expect(
        &bad,
        400,
        r#"{"errorCode":202,"message":"The given TTL in POST form is not a number","index":N}"#,
    );
    assert_eq!(bad.header("x-etcd-index"), Some("0"));
}

#[tokio::test(flavor = "multi_thread")]
async fn v2_and_v3_share_one_store() {
    let cluster = Cluster::start(1).await;
    let eps = cluster.endpoints();
    let base = format!("{}/v2/keys", cluster.endpoint(0));

    // A key written with PUT /v2/keys/a/b is the v3 key /a/b.
    curl(&[&format!("{base}/a/b"), "-XPUT", "-d", "value=from v2"]);
    let got = etcdctl(&eps, &["get", "/a/b"]).await;
    assert_eq!(stdout_ok(&["get"], &got), "/a/b\nfrom v2\n");

    // A v3 key is a v2 node, its revision the v2 index.
    let out = etcdctl(&eps, &["put", "/a/c", "from v3", "-w", "json"]).await;
    let revision = serde_json::from_str::<Value>(&stdout_ok(&["put"], &out)).unwrap()["header"]
        ["revision"]
        .as_i64()
        .unwrap();
    let dir = curl(&[&format!("{base}/a")]).json();
    assert_eq!(dir["node"]["nodes"][1]["key"], "/a/c");
    assert_eq!(dir["node"]["nodes"][1]["value"], "from v3");
    assert_eq!(dir["node"]["nodes"][1]["modifiedIndex"], revision);

    // A v2 TTL is a lease.
    curl(&[
        &format!("{base}/a/t"),
        "-XPUT",
        "-d",
        "value=t",
        "-d",
        "ttl=60",
    ]);
    let got = etcdctl(&eps, &["get", "/a/t", "-w", "json"]).await;
    let lease = serde_json::from_str::<Value>(&stdout_ok(&["get"], &got)).unwrap()["kvs"][0]
        ["lease"]
        .as_i64()
        .unwrap();
    let ttl = etcdctl(&eps, &["lease", "timetolive", &format!("{lease:x}")]).await;
    assert!(stdout_ok(&["lease"], &ttl).contains("granted with TTL(60s)"));

    // An etcdctl delete wakes a v2 waiter.
    let waiter = Background::start(&[&format!("{base}/a/b?wait=true")]);
    stdout_ok(&["del"], &etcdctl(&eps, &["del", "/a/b"]).await);
    let seen: Value = serde_json::from_str(&waiter.output()).unwrap();
    assert_eq!(seen["action"], "delete");
    assert_eq!(seen["prevNode"]["value"], "from v2");

    // A compacted waitIndex is v2's 401.
    stdout_ok(
        &["compact"],
        &etcdctl(&eps, &["compact", &revision.to_string()]).await,
    );
    let old = curl(&[&format!("{base}/a/c?wait=true&waitIndex=1")]);
    assert_eq!(
        (old.status, old.json()["errorCode"].as_i64()),
        (400, Some(401))
    );
}

/// `POST <endpoint>/v3/<path>` with a JSON body, parsed.
fn v3(endpoint: &str, path: &str, body: &str, extra: &[&str]) -> Reply {
    let url = format!("{endpoint}/v3/{path}");
    let mut args = vec![url.as_str(), "-XPOST", "-d", body];
    args.extend_from_slice(extra);
    curl(&args)
}

fn b64(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_json_gateway_answers_every_service() {
    let cluster = Cluster::start(1).await;
    let ep = cluster.endpoint(0);
    let ok = |path: &str, body: &str| -> Value {
        let r = v3(&ep, path, body, &[]);
        assert_eq!(r.status, 200, "{path}: {r:?}");
        assert!(
            !r.body.ends_with('\n'),
            "unary answers end without a newline"
        );
        r.json()
    };
    let (foo, bar) = (b64("foo"), b64("bar"));

    // KV: proto names out, int64 as strings, bytes as base64.
    let put = ok("kv/put", &format!(r#"{{"key":"{foo}","value":"{bar}"}}"#));
    assert!(put["header"]["revision"].is_string(), "{put}");
    let range = ok("kv/range", &format!(r#"{{"key":"{foo}"}}"#));
    assert_eq!(range["kvs"][0]["value"], bar);
    assert_eq!(range["kvs"][0]["version"], "1");
    assert_eq!(range["count"], "1");
    // camelCase and enum names accepted on input; /v3beta is /v3.
    let beta = curl(&[
        &format!("{ep}/v3beta/kv/range"),
        "-XPOST",
        "-d",
        &format!(
            r#"{{"key":"{}","rangeEnd":"{}","sort_order":"DESCEND","keysOnly":true}}"#,
            b64("f"),
            b64("g")
        ),
    ]);
    assert_eq!(beta.json()["kvs"][0]["key"], foo);
    assert!(beta.json()["kvs"][0].get("value").is_none());
    let txn = ok(
        "kv/txn",
        &format!(
            r#"{{"compare":[{{"target":"CREATE","key":"{foo}","createRevision":"2"}}],"success":[{{"requestPut":{{"key":"{foo}","value":"{}"}}}}]}}"#,
            b64("baz")
        ),
    );
    assert_eq!(txn["succeeded"], true);
    assert!(txn["responses"][0]["response_put"].is_object(), "{txn}");
    let del = ok(
        "kv/deleterange",
        &format!(r#"{{"key":"{foo}","prev_kv":true}}"#),
    );
    assert_eq!(
        (
            del["deleted"].as_str(),
            del["prev_kvs"][0]["value"].as_str()
        ),
        (Some("1"), Some(b64("baz").as_str()))
    );
    ok("kv/compaction", r#"{"revision":"2"}"#);

    // Lease.
    let grant = ok("lease/grant", r#"{"TTL":"60","ID":"7"}"#);
    assert_eq!(
        (grant["ID"].as_str(), grant["TTL"].as_str()),
        (Some("7"), Some("60"))
    );
    let ttl = ok("kv/lease/timetolive", r#"{"ID":"7"}"#);
    assert_eq!(ttl["grantedTTL"], "60");
    assert_eq!(ok("lease/leases", "{}")["leases"][0]["ID"], "7");
    // keepalive is a stream: one answer per request, ended with the body.
    let kept = curl(&[
        &format!("{ep}/v3/lease/keepalive"),
        "-XPOST",
        "-d",
        r#"{"ID":"7"}"#,
    ]);
    let line: Value = serde_json::from_str(kept.body.lines().next().unwrap()).unwrap();
    assert_eq!(line["result"]["TTL"], "60");
    ok("lease/revoke", r#"{"ID":"7"}"#);

    // Cluster and maintenance.
    let members = ok("cluster/member/list", "{}");
    assert_eq!(members["members"][0]["name"], "n1");
    assert!(members["members"][0]["peerURLs"][0]
        .as_str()
        .unwrap()
        .starts_with("http://127.0.0.1:"));
    let status = ok("maintenance/status", "{}");
    assert!(
        status["dbSize"].is_string() && status["version"].is_string(),
        "{status}"
    );
    assert!(ok("maintenance/hash", "{}")["hash"].is_number());
    assert!(ok("maintenance/hashkv", "{}")["hash"].is_number());
    assert_eq!(
        ok("maintenance/alarm", r#"{"action":"GET"}"#).get("alarms"),
        None
    );
    ok("maintenance/defragment", "{}");
    let snapshot = curl(&[
        &format!("{ep}/v3/maintenance/snapshot"),
        "-XPOST",
        "-d",
        "{}",
    ]);
    let first: Value = serde_json::from_str(snapshot.body.lines().next().unwrap()).unwrap();
    assert!(first["result"]["blob"].is_string(), "{first}");

    // Lock and election.
    let lease = ok("lease/grant", r#"{"TTL":"60"}"#)["ID"]
        .as_str()
        .unwrap()
        .to_string();
    let lock = ok(
        "lock/lock",
        &format!(r#"{{"name":"{}","lease":"{lease}"}}"#, b64("mylock")),
    );
    let key = lock["key"].as_str().unwrap().to_string();
    ok("lock/unlock", &format!(r#"{{"key":"{key}"}}"#));
    let campaign = ok(
        "election/campaign",
        &format!(
            r#"{{"name":"{}","lease":"{lease}","value":"{}"}}"#,
            b64("e"),
            b64("v1")
        ),
    );
    let leader_key = campaign["leader"].clone();
    ok(
        "election/proclaim",
        &format!(r#"{{"leader":{leader_key},"value":"{}"}}"#, b64("v2")),
    );
    let leader = ok("election/leader", &format!(r#"{{"name":"{}"}}"#, b64("e")));
    assert_eq!(leader["kv"]["value"], b64("v2"));
    let observe = Background::start(&[
        &format!("{ep}/v3/election/observe"),
        "-XPOST",
        "-d",
        &format!(r#"{{"name":"{}"}}"#, b64("e")),
    ]);
    let observed: Value = serde_json::from_str(&observe.lines(1)[0]).unwrap();
    assert_eq!(observed["result"]["kv"]["value"], b64("v2"));
    ok("election/resign", &format!(r#"{{"leader":{leader_key}}}"#));

    // Auth: a token in the Authorization header.
    ok("auth/user/add", r#"{"name":"root","password":"pw"}"#);
    ok("auth/user/grant", r#"{"user":"root","role":"root"}"#);
    ok("auth/enable", "{}");
    let anonymous = v3(&ep, "kv/range", &format!(r#"{{"key":"{foo}"}}"#), &[]);
    assert_eq!(
        (anonymous.status, anonymous.body.as_str()),
        (
            400,
            r#"{"error":"etcdserver: user name is empty","message":"etcdserver: user name is empty","code":3}"#
        )
    );
    let token = ok("auth/authenticate", r#"{"name":"root","password":"pw"}"#)["token"]
        .as_str()
        .unwrap()
        .to_string();
    let header = format!("Authorization: {token}");
    let authed = v3(
        &ep,
        "kv/put",
        &format!(r#"{{"key":"{foo}","value":"{bar}"}}"#),
        &["-H", &header],
    );
    assert_eq!(authed.status, 200, "{authed:?}");
    let wrong = v3(&ep, "kv/range", "{}", &["-H", "Authorization: nosuchtoken"]);
    assert_eq!(
        (wrong.status, wrong.json()["code"].as_i64()),
        (401, Some(16))
    );
    let users = v3(&ep, "auth/user/list", "{}", &["-H", &header]).json();
    assert_eq!(users["users"][0], "root");
    assert_eq!(v3(&ep, "auth/disable", "{}", &["-H", &header]).status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn gateway_errors_are_etcds() {
    let cluster = Cluster::start(1).await;
    let ep = cluster.endpoint(0);
    let missing = v3(&ep, "lease/revoke", r#"{"ID":"12345"}"#, &[]);
    assert_eq!(
        (missing.status, missing.body.as_str()),
        (
            404,
            r#"{"error":"etcdserver: requested lease not found","message":"etcdserver: requested lease not found","code":5}"#
        )
    );
    let bad = v3(&ep, "kv/put", r#"{"key":"%%%"}"#, &[]);
    assert_eq!((bad.status, bad.json()["code"].as_i64()), (400, Some(3)));
    let malformed = v3(&ep, "kv/put", r#"{"key":"#, &[]);
    assert_eq!(malformed.status, 400);
    let empty_key = v3(&ep, "kv/put", r#"{"value":"eA=="}"#, &[]);
    assert_eq!(
        empty_key.json()["message"],
        "etcdserver: key is not provided"
    );
    // Unknown fields are ignored, as etcd 3.4's gateway does.
    let extra = v3(&ep, "kv/range", r#"{"key":"eA==","nosuch":1}"#, &[]);
    assert_eq!(extra.status, 200);
    assert_eq!(v3(&ep, "kv/nosuch", "{}", &[]).status, 404);
    assert_eq!(v3(&ep, "alpha", "{}", &[]).status, 404);
    assert_eq!(curl(&[&format!("{ep}/v3/kv/range")]).status, 405);
    assert_eq!(
        curl(&[&format!("{ep}/v3alpha/kv/range"), "-XPOST", "-d", "{}"]).status,
        404
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_curl_watch_streams_events_while_etcdctl_writes() {
    let cluster = Cluster::start(1).await;
    let ep = cluster.endpoint(0);
    let watch = Background::start(&[
        &format!("{ep}/v3/watch"),
        "-XPOST",
        "-d",
        &format!(
            r#"{{"create_request":{{"key":"{}","prev_kv":true}}}}"#,
            b64("foo")
        ),
    ]);
    for v in ["bar", "baz", "qux"] {
        stdout_ok(
            &["put"],
            &etcdctl(&cluster.endpoints(), &["put", "foo", v]).await,
        );
    }
    let lines = watch.lines(4);
    let created: Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(created["result"]["created"], true);
    let values: Vec<String> = lines[1..]
        .iter()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["result"]["events"][0]["kv"]["value"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(values, [b64("bar"), b64("baz"), b64("qux")]);
    let last: Value = serde_json::from_str(&lines[3]).unwrap();
    assert_eq!(last["result"]["events"][0]["prev_kv"]["value"], b64("baz"));
}

#[tokio::test(flavor = "multi_thread")]
async fn cors_headers_follow_the_cors_flag() {
    let any = Cluster::start(1).await;
    let r = curl(&[&format!("{}/version", any.endpoint(0))]);
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    assert_eq!(
        r.header("access-control-allow-methods"),
        Some("POST, GET, OPTIONS, PUT, DELETE")
    );
    assert_eq!(
        r.header("access-control-allow-headers"),
        Some("accept, content-type, authorization")
    );
    let preflight = curl(&["-XOPTIONS", &format!("{}/v3/kv/range", any.endpoint(0))]);
    assert_eq!((preflight.status, preflight.body.as_str()), (200, ""));
    drop(any);

    let options = common::ClusterOptions {
        extra_args: vec!["--cors".into(), "http://app.example:8080".into()],
        ..Default::default()
    };
    let one = Cluster::start_with(1, options).await;
    let url = format!("{}/v2/keys/", one.endpoint(0));
    let allowed = curl(&["-H", "Origin: http://app.example:8080", &url]);
    assert_eq!(
        allowed.header("access-control-allow-origin"),
        Some("http://app.example:8080")
    );
    let other = curl(&["-H", "Origin: http://evil.example", &url]);
    assert_eq!(other.header("access-control-allow-origin"), None);
    assert_eq!(other.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn livez_and_readyz_report_etcds_checks() {
    let mut cluster = Cluster::start(3).await;
    let ep = cluster.endpoint(0);
    let livez = curl(&[&format!("{ep}/livez")]);
    assert_eq!((livez.status, livez.body.as_str()), (200, "ok\n"));
    assert_eq!(
        livez.header("content-type"),
        Some("text/plain; charset=utf-8")
    );
    let verbose = curl(&[&format!("{ep}/readyz?verbose")]);
    assert_eq!(
        (verbose.status, verbose.body.as_str()),
        (200, "[+]data_corruption ok\n[+]serializable_read ok\n[+]linearizable_read ok\n[+]non_learner ok\nok\n")
    );
    let excluded = curl(&[&format!("{ep}/readyz?verbose&exclude=linearizable_read")]);
    assert!(!excluded.body.contains("linearizable_read"), "{excluded:?}");
    assert_eq!(
        curl(&[&format!("{ep}/readyz/serializable_read")]).body,
        "ok\n"
    );
    assert_eq!(curl(&[&format!("{ep}/readyz/nosuch")]).status, 404);

    // Without a quorum: alive, not ready.
    cluster.kill(1);
    cluster.kill(2);
    let livez = curl(&[&format!("{ep}/livez")]);
    assert_eq!(livez.status, 200);
    let readyz = curl(&[&format!("{ep}/readyz")]);
    assert_eq!(readyz.status, 503, "{readyz:?}");
    assert!(
        readyz.body.contains("[+]serializable_read ok\n"),
        "{readyz:?}"
    );
    assert!(
        readyz.body.contains("[-]linearizable_read failed: "),
        "{readyz:?}"
    );
    assert!(readyz.body.ends_with("\n\n"), "{readyz:?}");
}

#[tokio::test(flavor = "multi_thread")]
// The curl is reaped on the normal path; a panic before fails the test.
#[allow(clippy::zombie_processes)]
async fn hostile_v2_requests_leave_the_member_serving() {
    let cluster = Cluster::start(1).await;
    let eps = cluster.endpoints();
    let base = format!("{}/v2/keys", cluster.endpoint(0));

    // A v3 key 5,000 levels deep, listed recursively: no stack overflow.
    let deep = format!("/deep{}", "/a".repeat(5000));
    stdout_ok(&["put"], &etcdctl(&eps, &["put", &deep, "x"]).await);
    let listed = curl(&[&format!("{base}/deep?recursive=true")]);
    assert_eq!(listed.status, 200);
    assert!(
        listed.body.len() < 64 * 1024,
        "the listing stops at 64 levels"
    );

    // Twenty in-order creations at once all land, named in order.
    let mut handles = Vec::new();
    for i in 0..20 {
        let url = format!("{base}/jobs");
        handles.push(std::thread::spawn(move || {
            curl(&[&url, "-XPOST", "-d", &format!("value=job{i}")])
        }));
    }
    let created: Vec<Reply> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(created.iter().all(|r| r.status == 201), "{created:?}");
    let list = curl(&[&format!("{base}/jobs?sorted=true")]).json();
    let nodes = list["node"]["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 20);
    let indexes: Vec<i64> = nodes
        .iter()
        .map(|n| n["createdIndex"].as_i64().unwrap())
        .collect();
    assert!(
        indexes.windows(2).all(|w| w[0] < w[1]),
        "names sort as creations: {indexes:?}"
    );

    // Malformed forms and parameters are v2 errors, not crashes.
    for (query, code) in [
        ("prevExist=maybe", 209),
        ("prevIndex=-1", 203),
        ("waitIndex=x&wait=true", 203),
    ] {
        let r = curl(&[&format!("{base}/k?{query}"), "-XPUT", "-d", "value=v"]);
        assert_eq!(r.json()["errorCode"].as_i64(), Some(code), "{query}: {r:?}");
    }
    // A gateway stream fed an object one byte per frame still decodes.
    let mut child = Command::new("curl")
        .args([
            "-s",
            "-N",
            "--max-time",
            "10",
            "-XPOST",
            "-T",
            "-",
            &format!("{}/v3/watch", cluster.endpoint(0)),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write as _;
        let mut stdin = child.stdin.take().unwrap();
        for b in br#"{"create_request":{"key":"Zm9v"}}"#.iter() {
            stdin.write_all(&[*b]).unwrap();
            stdin.flush().unwrap();
        }
    }
    let line = BufReader::new(child.stdout.take().unwrap())
        .lines()
        .next()
        .unwrap()
        .unwrap();
    let _ = child.kill();
    assert_eq!(
        serde_json::from_str::<Value>(&line).unwrap()["result"]["created"],
        true
    );
    assert_eq!(
        curl(&[&format!("{}/health", cluster.endpoint(0))]).status,
        200
    );
}
