//! End to end with `etcdctl` 3.4 (Debian package `etcd-client`) and plain
//! HTTP: what an operator sees. Outputs are compared with goldens recorded
//! from a real etcd 3.4.23 by `tests/golden/record.sh`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

mod common;

use std::process::Output;
use std::time::Duration;

use common::{
    against_etcd, check_golden, etcdctl, etcdctl_with_stdin, free_port, golden_path, http_get,
    recording, shell_words, stdout_ok, wait_for, Cluster, Server, ServerSpec, TestDir,
};

// ---------------------------------------------------------------------------
// The golden etcdctl sequence
// ---------------------------------------------------------------------------

/// One etcdctl invocation of the golden sequence.
struct Step {
    args: &'static [&'static str],
    /// Fed to stdin (interactive `etcdctl txn`).
    stdin: Option<&'static str>,
}

const fn run(args: &'static [&'static str]) -> Step {
    Step { args, stdin: None }
}

const fn txn(args: &'static [&'static str], stdin: &'static str) -> Step {
    Step {
        args,
        stdin: Some(stdin),
    }
}

/// Revisions in comments are those of a fresh store (starts at 1).
const GOLDEN_STEPS: &[Step] = &[
    run(&["put", "foo", "bar"]),  // 2
    run(&["put", "foo", "baz"]),  // 3
    run(&["put", "foo1", "v1"]),  // 4
    run(&["put", "foo2", "v2"]),  // 5
    run(&["put", "foo3", "v3"]),  // 6
    run(&["put", "zoo", "z"]),    // 7
    run(&["put", "greeting", "hello world"]), // 8
    run(&["get", "foo"]),
    run(&["get", "foo", "-w", "json"]),
    run(&["get", "foo", "-w", "fields"]),
    run(&["get", "foo", "--rev=2"]),
    run(&["get", "foo", "--rev=2", "-w", "json"]),
    run(&["get", "foo", "--prefix"]),
    run(&["get", "foo", "--prefix", "--limit=2"]),
    run(&["get", "foo", "--prefix", "--limit=2", "-w", "json"]),
    run(&["get", "foo", "--prefix", "--keys-only"]),
    run(&["get", "foo", "--prefix", "--print-value-only"]),
    run(&["get", "foo1", "--from-key"]),
    run(&["get", "foo", "foo3"]),
    run(&["get", "foo", "--prefix", "--sort-by=MODIFY", "--order=DESCEND"]),
    run(&["get", "foo", "--prefix", "--sort-by=VALUE", "--order=DESCEND"]),
    run(&["get", "foo", "--prefix", "--sort-by=CREATE", "--order=DESCEND", "--limit=3"]),
    run(&["get", "foo", "--prefix", "--sort-by=KEY", "--order=DESCEND"]),
    run(&["get", "foo", "--prefix", "-w", "json"]),
    run(&["get", "foo", "--consistency=s"]),
    run(&["get", "greeting", "--hex"]),
    run(&["get", "", "--prefix", "--keys-only"]),
    run(&["get", "nothing"]),
    run(&["get", "nothing", "-w", "json"]),
    // 9: success branch
    txn(
        &["txn"],
        "value(\"foo\") = \"baz\"\n\nput foo qux\nget foo1\n\nput foo nope\n\n",
    ),
    // failure branch, read only: no new revision
    txn(
        &["txn"],
        "mod(\"foo1\") > \"100\"\n\nput foo x\n\nget foo --prefix --limit=1\nget zoo\n\n",
    ),
    // 10: several compares, several writes, one revision
    txn(
        &["txn", "-w", "json"],
        "ver(\"foo\") = \"3\"\ncreate(\"foo\") = \"2\"\nval(\"foo2\") = \"v2\"\n\nput foo2 v2b --prev-kv\ndel foo3 --prev-kv\nget foo2\n\nget foo\n\n",
    ),
    // duplicate key in one branch
    txn(&["txn"], "\nput foo a\ndel foo --prefix\n\n\n"),
    run(&["get", "foo", "--prefix", "-w", "json"]),
    run(&["compaction", "5"]),
    run(&["get", "foo", "--rev=4"]),
    run(&["get", "foo1", "--rev=5"]),
    run(&["get", "foo", "--rev=1000"]),
    run(&["compaction", "5"]),
    run(&["compaction", "3"]),
    run(&["compaction", "1000"]),
    run(&["del", "foo", "--prefix"]), // 11
    run(&["del", "nothing"]),
    run(&["del", "zoo", "--prev-kv"]), // 12
    run(&["put", "foo", "x", "--prev-kv"]), // 13
    run(&["put", "foo", "y", "--prev-kv"]), // 14
    run(&["put", "", "x"]),
    run(&["put", "foo", "v", "--lease=1234"]),
    run(&["put", "newkey", "--ignore-value"]),
    run(&["put", "foo", "--ignore-value"]), // 15
    run(&["get", "foo", "-w", "json"]),
    run(&["del", "", "--prefix"]), // 16
    run(&["get", "", "--from-key"]),
    run(&["get", "foo", "--rev=15"]),
];

/// Normalizes what differs between any two clusters: ids and Raft terms.
fn normalize(step: &Step, stdout: &str) -> String {
    let json = step.args.windows(2).any(|w| w == ["-w", "json"]);
    let fields = step.args.windows(2).any(|w| w == ["-w", "fields"]);
    if json {
        let mut value: serde_json::Value = serde_json::from_str(stdout.trim())
            .unwrap_or_else(|e| panic!("etcdctl {:?}: bad json {stdout:?}: {e}", step.args));
        zero_ids(&mut value);
        return format!("{value}\n");
    }
    if fields {
        return stdout
            .lines()
            .map(|line| {
                for field in ["\"ClusterID\"", "\"MemberID\"", "\"RaftTerm\""] {
                    if line.starts_with(field) {
                        return format!("{field} : <normalized>");
                    }
                }
                line.to_string()
            })
            .collect::<Vec<_>>()
            .join("\n")
            + if stdout.ends_with('\n') { "\n" } else { "" };
    }
    stdout.to_string()
}

fn zero_ids(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                if matches!(key.as_str(), "cluster_id" | "member_id" | "raft_term") {
                    *v = serde_json::Value::from(0);
                } else {
                    zero_ids(v);
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(zero_ids),
        _ => {}
    }
}

/// One step as text: the command, its normalized stdout, the `Error:` lines
/// of its stderr (the rest of stderr is client logging with timestamps) and
/// its exit code.
fn transcript(step: &Step, output: &Output) -> String {
    let mut text = format!("$ etcdctl {}\n", shell_words(step.args));
    if let Some(stdin) = step.stdin {
        text.push_str("<<<\n");
        text.push_str(stdin);
        text.push_str(">>>\n");
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    text.push_str(&normalize(step, &stdout));
    if !stdout.is_empty() && !stdout.ends_with('\n') {
        text.push_str("\n[no newline at end of stdout]\n");
    }
    for line in String::from_utf8_lossy(&output.stderr).lines() {
        if line.starts_with("Error:") {
            text.push_str(&format!("stderr: {line}\n"));
        }
    }
    text.push_str(&format!(
        "[exit {}]\n\n",
        output.status.code().unwrap_or(-1)
    ));
    text
}

/// The golden sequence through a 3-member cluster (1 member when recording
/// from etcd: outputs do not depend on the size once ids are normalized).
#[tokio::test(flavor = "multi_thread")]
async fn etcdctl_golden_sequence() {
    let size = if recording() { 1 } else { 3 };
    let cluster = Cluster::start(size).await;
    let endpoints = cluster.endpoints();
    let mut text = String::new();
    for step in GOLDEN_STEPS {
        let output = etcdctl_with_stdin(&endpoints, step.args, step.stdin).await;
        text.push_str(&transcript(step, &output));
    }
    check_golden("etcdctl_sequence.txt", &text);
}

/// The same sequence through `kvd proxy` (its read cache on) gives the
/// same transcript as from the members.
#[tokio::test(flavor = "multi_thread")]
async fn etcdctl_golden_sequence_through_the_proxy() {
    if recording() || against_etcd() {
        return;
    }
    let cluster = Cluster::start(3).await;
    let dir = TestDir::new();
    let proxy = common::proxy::start_proxy(dir.path(), "proxy", &cluster.endpoints(), &[]).await;
    let mut text = String::new();
    for step in GOLDEN_STEPS {
        let output = etcdctl_with_stdin(&proxy.endpoints(), step.args, step.stdin).await;
        text.push_str(&transcript(step, &output));
    }
    check_golden("etcdctl_sequence.txt", &text);
}

/// Each member in turn serves the whole sequence's reads: a second pass of
/// the read-only steps through every single endpoint gives the same output.
#[tokio::test(flavor = "multi_thread")]
async fn etcdctl_reads_agree_on_every_member() {
    let cluster = Cluster::start(3).await;
    let all = cluster.endpoints();
    for args in [
        &["put", "a", "1"][..],
        &["put", "b", "2"],
        &["put", "a", "3"],
    ] {
        assert_eq!(stdout_ok(args, &etcdctl(&all[..1], args).await), "OK\n");
    }
    let reads: &[&[&str]] = &[
        &["get", "a"],
        &["get", "", "--prefix"],
        &["get", "a", "--rev=2"],
        &["get", "a", "--consistency=s"],
    ];
    for args in reads {
        let expected = stdout_ok(args, &etcdctl(&all[..1], args).await);
        for endpoint in &all[1..] {
            if args.contains(&"--consistency=s") {
                // A serializable read on a follower may lag: wait for it.
                let endpoint = vec![endpoint.clone()];
                let expected = expected.clone();
                wait_for(
                    "serializable read catches up",
                    Duration::from_secs(10),
                    || {
                        let endpoint = endpoint.clone();
                        let expected = expected.clone();
                        async move {
                            let out = etcdctl(&endpoint, args).await;
                            let got = String::from_utf8_lossy(&out.stdout).to_string();
                            if got == expected {
                                Ok(())
                            } else {
                                Err(format!("got {got:?}"))
                            }
                        }
                    },
                )
                .await;
            } else {
                let got = stdout_ok(args, &etcdctl(std::slice::from_ref(endpoint), args).await);
                assert_eq!(got, expected, "etcdctl {args:?} via {endpoint}");
            }
        }
    }
    assert_eq!(
        stdout_ok(&["get", "a"], &etcdctl(&all[2..], &["get", "a"]).await),
        "a\n3\n"
    );
}

// ---------------------------------------------------------------------------
// A member started with defaults
// ---------------------------------------------------------------------------

/// `kvd serve` given only a data dir and client/peer URLs (on free ports, not
/// 2379/2380, so tests can run in parallel) is a working single-member cluster.
#[tokio::test(flavor = "multi_thread")]
async fn serve_with_only_data_dir_and_urls() {
    let dir = TestDir::new();
    let (client_port, peer_port) = (free_port(), free_port());
    let client_url = format!("http://127.0.0.1:{client_port}");
    let peer_url = format!("http://127.0.0.1:{peer_port}");
    let data_dir = dir.path().join("data");
    let args: Vec<String> = vec![
        "--data-dir".into(),
        data_dir.to_string_lossy().into(),
        "--listen-client-urls".into(),
        client_url.clone(),
        "--advertise-client-urls".into(),
        client_url.clone(),
        // Only where to listen for peers: the advertised peer URL and the
        // initial cluster keep their defaults (default=http://localhost:2380),
        // as with etcd, which insists that the two agree.
        "--listen-peer-urls".into(),
        peer_url,
    ];
    let mut server = Server::start(ServerSpec::new(
        args,
        dir.path(),
        &dir.path().join("server.log"),
    ));
    common::wait_single_ready(&mut server, client_port).await;

    let endpoints = vec![client_url];
    let out = etcdctl(&endpoints, &["put", "foo", "bar"]).await;
    assert_eq!(stdout_ok(&["put"], &out), "OK\n");
    let out = etcdctl(&endpoints, &["get", "foo"]).await;
    assert_eq!(stdout_ok(&["get"], &out), "foo\nbar\n");
    let out = etcdctl(&endpoints, &["member", "list"]).await;
    let list = stdout_ok(&["member", "list"], &out);
    let fields: Vec<&str> = list.trim().split(", ").collect();
    assert_eq!(fields.len(), 6, "one member: {list:?}");
    assert_eq!(fields[1], "started");
    assert_eq!(fields[2], "default", "default member name");
    assert!(data_dir.is_dir(), "data written to --data-dir");
    assert!(
        !dir.path().join("default.kvd").exists() && !dir.path().join("default.etcd").exists(),
        "no default data dir when --data-dir is given"
    );
}

// ---------------------------------------------------------------------------
// Membership and status
// ---------------------------------------------------------------------------

/// Rows of an etcdctl `-w table` output, as (header → cell) maps.
fn parse_table(table: &str) -> Vec<std::collections::HashMap<String, String>> {
    let rows: Vec<Vec<String>> = table
        .lines()
        .filter(|l| l.starts_with('|'))
        .map(|l| {
            l.trim_matches('|')
                .split('|')
                .map(|cell| cell.trim().to_string())
                .collect()
        })
        .collect();
    let (header, body) = rows.split_first().expect("table header");
    body.iter()
        .map(|row| header.iter().cloned().zip(row.iter().cloned()).collect())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn endpoint_status_and_member_list_show_members_and_the_leader() {
    let mut cluster = Cluster::start(3).await;
    let leader = cluster.leader_index().await;
    let endpoints = cluster.endpoints();

    // member list (simple format): id, status, name, peer URLs, client URLs, is learner
    let out = etcdctl(&endpoints, &["member", "list"]).await;
    let list = stdout_ok(&["member", "list"], &out);
    let mut listed = Vec::new();
    for line in list.lines() {
        let f: Vec<&str> = line.split(", ").collect();
        assert_eq!(f.len(), 6, "member list line {line:?}");
        assert_eq!(f[1], "started", "{line}");
        assert_eq!(f[5], "false", "not a learner: {line}");
        listed.push((
            f[0].to_string(),
            f[2].to_string(),
            f[3].to_string(),
            f[4].to_string(),
        ));
    }
    listed.sort_by(|a, b| a.1.cmp(&b.1));
    assert_eq!(listed.len(), 3, "{list}");
    for (i, m) in cluster.members.iter().enumerate() {
        assert_eq!(listed[i].1, m.name);
        assert_eq!(listed[i].2, format!("http://127.0.0.1:{}", m.peer_port));
        assert_eq!(listed[i].3, m.endpoint());
        assert_eq!(
            u64::from_str_radix(&listed[i].0, 16).expect("hex member id"),
            cluster.member_id(i).await,
            "member list id of {} matches its response headers",
            m.name
        );
    }

    // endpoint status as a table, through all endpoints.
    let out = etcdctl(&endpoints, &["endpoint", "status", "-w", "table"]).await;
    let table = stdout_ok(&["endpoint", "status"], &out);
    let rows = parse_table(&table);
    assert_eq!(rows.len(), 3, "{table}");
    let leaders: Vec<&String> = rows
        .iter()
        .filter(|r| r["IS LEADER"] == "true")
        .map(|r| &r["ENDPOINT"])
        .collect();
    assert_eq!(leaders.len(), 1, "exactly one leader:\n{table}");
    assert_eq!(
        leaders[0],
        &cluster.endpoint(leader),
        "the ENDPOINT column echoes --endpoints"
    );
    for row in &rows {
        assert!(["true", "false"].contains(&row["IS LEADER"].as_str()));
        assert_eq!(row["IS LEARNER"], "false");
        assert!(row["RAFT TERM"].parse::<u64>().expect("raft term") >= 1);
        assert!(row["RAFT INDEX"].parse::<u64>().expect("raft index") >= 1);
        assert!(
            listed.iter().any(|m| m.0 == row["ID"]),
            "id {} is a member",
            row["ID"]
        );
        assert_eq!(row["ERRORS"], "");
    }

    // --cluster discovers every member's advertised client URL from one endpoint.
    let out = etcdctl(
        &endpoints[2..],
        &["endpoint", "status", "--cluster", "-w", "table"],
    )
    .await;
    let table = stdout_ok(&["endpoint", "status", "--cluster"], &out);
    let rows = parse_table(&table);
    let mut seen: Vec<String> = rows.iter().map(|r| r["ENDPOINT"].clone()).collect();
    seen.sort();
    let mut expected = endpoints.clone();
    expected.sort();
    assert_eq!(seen, expected, "advertised client URLs");
    assert_eq!(rows.iter().filter(|r| r["IS LEADER"] == "true").count(), 1);

    // Simple format: the 5th column is IS LEADER.
    let out = etcdctl(&endpoints, &["endpoint", "status"]).await;
    let simple = stdout_ok(&["endpoint", "status"], &out);
    let flags: Vec<String> = simple
        .lines()
        .map(|l| l.split(", ").nth(4).expect("IS LEADER column").to_string())
        .collect();
    assert_eq!(flags.iter().filter(|f| *f == "true").count(), 1, "{simple}");

    // endpoint health: every member healthy.
    let out = etcdctl(&endpoints, &["endpoint", "health"]).await;
    assert!(out.status.success(), "endpoint health: {out:?}");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(text.matches("is healthy").count(), 3, "{text}");

    // After the leader is killed, the new leader is the one shown.
    cluster.kill(leader);
    let new_leader = cluster.wait_ready().await;
    assert_ne!(new_leader, leader);
    let live: Vec<String> = cluster
        .live()
        .into_iter()
        .map(|i| cluster.endpoint(i))
        .collect();
    let out = etcdctl(&live, &["endpoint", "status", "-w", "table"]).await;
    let table = stdout_ok(&["endpoint", "status"], &out);
    let rows = parse_table(&table);
    let leaders: Vec<&String> = rows
        .iter()
        .filter(|r| r["IS LEADER"] == "true")
        .map(|r| &r["ENDPOINT"])
        .collect();
    assert_eq!(leaders, [&cluster.endpoint(new_leader)]);
}

// ---------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("not json: {text:?}: {e}"))
}

/// `GET /version` and `GET /health` have etcd's shapes.
#[tokio::test(flavor = "multi_thread")]
async fn http_version_and_health_have_etcd_shapes() {
    let mut cluster = Cluster::start(3).await;
    let leader = cluster.leader_index().await;

    let version = http_get(cluster.members[0].client_port, "/version")
        .await
        .expect("GET /version");
    assert_eq!(version.status, 200);
    assert!(
        version
            .header("content-type")
            .unwrap_or("")
            .starts_with("application/json"),
        "{version:?}"
    );
    let health = http_get(cluster.members[1].client_port, "/health")
        .await
        .expect("GET /health");
    assert_eq!(health.status, 200, "{health:?}");

    // Kill the leader and one follower: the survivor, a follower, loses its leader.
    let survivor = (0..3).find(|&i| i != leader).expect("a follower");
    for i in 0..3 {
        if i != survivor {
            cluster.kill(i);
        }
    }
    let port = cluster.members[survivor].client_port;
    let unhealthy = wait_for(
        "/health reports no leader",
        Duration::from_secs(20),
        || async move {
            let resp = http_get(port, "/health").await?;
            if resp.status == 200 {
                Err(format!("still healthy: {resp:?}"))
            } else {
                Ok(resp)
            }
        },
    )
    .await;

    if recording() {
        check_golden("http_version.json", &version.body);
        check_golden("http_health.json", &health.body);
        check_golden(
            "http_health_no_leader.json",
            &format!("{}\n{}", unhealthy.status, unhealthy.body),
        );
        return;
    }

    // /version: the same keys as etcd, string values.
    let golden = json(&std::fs::read_to_string(golden_path("http_version.json")).expect("golden"));
    let got = json(&version.body);
    let keys = |v: &serde_json::Value| -> Vec<String> {
        let mut k: Vec<String> = v
            .as_object()
            .expect("json object")
            .keys()
            .cloned()
            .collect();
        k.sort();
        k
    };
    assert_eq!(keys(&got), keys(&golden), "/version keys: {}", version.body);
    assert_eq!(keys(&got), ["etcdcluster", "etcdserver"]);
    for (key, value) in got.as_object().expect("object") {
        assert!(
            value.as_str().is_some_and(|s| !s.is_empty()),
            "/version {key} is a non-empty string: {}",
            version.body
        );
    }

    // /health: exactly etcd's body.
    let golden = json(&std::fs::read_to_string(golden_path("http_health.json")).expect("golden"));
    assert_eq!(json(&health.body), golden, "/health body {:?}", health.body);
    assert_eq!(json(&health.body)["health"], "true");

    let golden =
        std::fs::read_to_string(golden_path("http_health_no_leader.json")).expect("golden");
    let (status, body) = golden.split_once('\n').expect("status line");
    assert_eq!(unhealthy.status.to_string(), status, "{unhealthy:?}");
    assert_eq!(
        json(&unhealthy.body),
        json(body),
        "/health without a leader"
    );
}
