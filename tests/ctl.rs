//! `kvd ctl` against etcdctl 3.4 on the same cluster state: each command
//! run by both, stdout and exit code compared byte for byte (stderr: the
//! last `Error:` line, etcdctl's client also logs retries there).
//! Commands that change state run on twin keys prepared identically, so
//! their outputs match once the key names are swapped. Also: `watch --
//! COMMAND` with etcdctl's `ETCD_WATCH_*` variables, and a canceled watch's
//! exit code.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

mod common;

use std::process::Output;
use std::time::Duration;

use common::{wait_for, Cluster, TestDir};

/// `kvd ctl --endpoints=<ep> <args>` with `stdin`.
async fn kvd_ctl(endpoint: &str, args: &[&str], stdin: Option<&str>) -> Output {
    run(env!("CARGO_BIN_EXE_kvd"), &["ctl"], endpoint, args, stdin).await
}

async fn etcdctl(endpoint: &str, args: &[&str], stdin: Option<&str>) -> Output {
    let program = common::etcdctl_path();
    run(program.to_str().unwrap(), &[], endpoint, args, stdin).await
}

async fn run(
    program: &str,
    prefix: &[&str],
    endpoint: &str,
    args: &[&str],
    stdin: Option<&str>,
) -> Output {
    use tokio::io::AsyncWriteExt as _;
    let mut cmd = tokio::process::Command::new(program);
    for (key, _) in std::env::vars_os() {
        let k = key.to_string_lossy();
        if k.starts_with("ETCDCTL_") || k.starts_with("KVD_") {
            cmd.env_remove(&key);
        }
    }
    cmd.env("ETCDCTL_API", "3")
        .args(prefix)
        .arg(format!("--endpoints={endpoint}"))
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().expect("spawn");
    let mut pipe = child.stdin.take().expect("stdin");
    if let Some(input) = stdin {
        pipe.write_all(input.as_bytes()).await.expect("write stdin");
    }
    drop(pipe);
    tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("finished in time")
        .expect("ran")
}

/// (exit code, stdout, the last `Error:` line of stderr).
fn outcome(o: &Output) -> (Option<i32>, String, String) {
    let stderr = String::from_utf8_lossy(&o.stderr);
    let error = stderr
        .lines()
        .rev()
        .find(|l| l.starts_with("Error:"))
        .unwrap_or_default()
        .to_string();
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        error,
    )
}

/// Runs `args` with both tools; panics with both outcomes when they differ.
async fn same(endpoint: &str, args: &[&str], stdin: Option<&str>) {
    let theirs = outcome(&etcdctl(endpoint, args, stdin).await);
    let ours = outcome(&kvd_ctl(endpoint, args, stdin).await);
    assert_eq!(ours, theirs, "kvd ctl {args:?} differs from etcdctl");
}

/// Runs `etcdctl` with `args` naming key `a` and `kvd ctl` with `b` (twin
/// keys with the same history); compares with `b` written back as `a`.
async fn twins(endpoint: &str, args: &[&str], stdin: Option<&str>, a: &str, b: &str) {
    let named = |twin: &str| -> (Vec<String>, Option<String>) {
        (
            args.iter().map(|x| x.replace("TWIN", twin)).collect(),
            stdin.map(|s| s.replace("TWIN", twin)),
        )
    };
    let (their_args, their_stdin) = named(a);
    let their_args: Vec<&str> = their_args.iter().map(String::as_str).collect();
    let theirs = outcome(&etcdctl(endpoint, &their_args, their_stdin.as_deref()).await);
    let (our_args, our_stdin) = named(b);
    let our_args: Vec<&str> = our_args.iter().map(String::as_str).collect();
    let ours = outcome(&kvd_ctl(endpoint, &our_args, our_stdin.as_deref()).await);
    let ours = (ours.0, ours.1.replace(b, a), ours.2.replace(b, a));
    assert_eq!(ours, theirs, "kvd ctl {args:?} differs from etcdctl");
}

#[tokio::test(flavor = "multi_thread")]
async fn reads_print_as_etcdctl_prints_them() {
    let cluster = Cluster::start(3).await;
    let mut c = cluster.client(0).await;
    for (k, v) in [
        ("a", "1"),
        ("b", "2"),
        ("a", "3"),
        ("c/x", "x y"),
        ("c/y", "<&>"),
    ] {
        c.put(k, v, None).await.expect("put");
    }
    let lease = c.lease_grant(600, None).await.expect("grant").id();
    c.put(
        "leased",
        "v",
        Some(etcd_client::PutOptions::new().with_lease(lease)),
    )
    .await
    .expect("put");
    let ep = cluster.endpoint(0);
    let hex = format!("{lease:x}");
    let reads: Vec<Vec<&str>> = vec![
        vec!["get", "a"],
        vec!["get", "a", "-w", "json"],
        vec!["get", "a", "-w", "fields"],
        vec!["get", "a", "-w", "table"],
        vec!["get", "", "--prefix"],
        vec!["get", "", "--from-key", "-w", "json"],
        vec!["get", "c/", "--prefix", "--hex"],
        vec!["get", "c/", "--prefix", "--keys-only"],
        vec!["get", "c/", "--prefix", "--print-value-only"],
        vec!["get", "a", "z", "--limit", "2", "-w", "json"],
        vec!["get", "a", "--rev", "2"],
        vec!["get", "a", "--rev", "999"],
        vec!["get", "", "--prefix", "--sort-by=VALUE", "--order=DESCEND"],
        vec![
            "get",
            "",
            "--prefix",
            "--sort-by=MODIFY",
            "--order=ASCEND",
            "-w",
            "fields",
        ],
        vec!["get", "a", "--consistency=s"],
        vec!["get"],
        vec!["get", "a", "--prefix", "--from-key"],
        vec!["lease", "timetolive", &hex],
        vec!["lease", "timetolive", &hex, "--keys"],
        vec!["lease", "timetolive", &hex, "--keys", "-w", "json"],
        vec!["lease", "timetolive", &hex, "--keys", "-w", "fields"],
        vec!["lease", "timetolive", "1234", "-w", "json"],
        vec!["lease", "list", "-w", "json"],
        vec!["lease", "list", "-w", "fields"],
        vec!["lease", "keep-alive", "--once", &hex, "-w", "json"],
        vec!["lease", "timetolive", "1234"],
        vec!["lease", "timetolive", "zz"],
        vec!["lease", "list"],
        vec!["lease", "grant"],
        vec!["lease", "grant", "abc"],
        vec!["endpoint", "status"],
        vec!["endpoint", "status", "-w", "table"],
        vec!["endpoint", "status", "--cluster"],
        vec!["endpoint", "status", "-w", "json"],
        vec!["endpoint", "status", "-w", "fields"],
        vec!["endpoint", "hashkv", "-w", "json"],
        vec!["endpoint", "hashkv", "-w", "fields"],
        vec!["alarm", "list", "-w", "json"],
        vec!["alarm", "list", "-w", "table"],
        vec!["endpoint", "hashkv"],
        vec!["endpoint", "hashkv", "-w", "table"],
        vec!["endpoint", "hashkv", "--cluster", "-w", "table"],
        vec!["alarm", "list"],
        vec!["member", "list"],
        vec!["member", "list", "-w", "table"],
        vec!["put"],
        vec!["del"],
        vec!["watch"],
        vec!["compaction"],
    ];
    for args in &reads {
        same(&ep, args, None).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn writes_print_as_etcdctl_prints_them() {
    let cluster = Cluster::start(1).await;
    let mut c = cluster.client(0).await;
    for twin in ["e", "k"] {
        for i in 0..3 {
            c.put(format!("{twin}/x"), format!("v{i}"), None)
                .await
                .expect("put");
        }
        c.put(format!("{twin}/y"), "y", None).await.expect("put");
    }
    let ep = cluster.endpoint(0);
    let writes: Vec<(Vec<&str>, Option<&str>)> = vec![
        (vec!["put", "TWIN/x", "new"], None),
        (vec!["put", "TWIN/x", "newer", "--prev-kv"], None),
        (vec!["put", "TWIN/x", "--prev-kv"], Some("from stdin\n")),
        (vec!["put", "TWIN/x", "v", "--lease=zz"], None),
        (vec!["put", "TWIN/x", "--ignore-value", "--prev-kv"], None),
        (vec!["del", "TWIN/nothing"], None),
        (vec!["del", "TWIN/y", "--prev-kv"], None),
        (
            vec!["txn"],
            Some("mod(\"TWIN/x\") > \"0\"\n\nput TWIN/x t\nget TWIN/x\n\ndel TWIN/x\n\n"),
        ),
        (
            vec!["txn"],
            Some("value(\"TWIN/x\") = \"nope\"\n\nput TWIN/x t\n\nget TWIN/x\ndel TWIN/zz\n\n"),
        ),
        (vec!["del", "TWIN/", "--prefix"], None),
    ];
    for (args, stdin) in &writes {
        twins(&ep, args, *stdin, "e", "k").await;
    }
    // Lease ids differ between runs: compare with the id written back.
    let theirs = outcome(&etcdctl(&ep, &["lease", "grant", "60"], None).await);
    let ours = outcome(&kvd_ctl(&ep, &["lease", "grant", "60"], None).await);
    let id_of = |out: &str| {
        out.split_whitespace()
            .nth(1)
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(theirs.0, ours.0);
    assert_eq!(
        ours.1.replace(&id_of(&ours.1), "ID"),
        theirs.1.replace(&id_of(&theirs.1), "ID")
    );
    for out in [&theirs.1, &ours.1] {
        let id = id_of(out);
        let revoked_theirs = outcome(&etcdctl(&ep, &["lease", "revoke", &id], None).await);
        assert_eq!(revoked_theirs.1, format!("lease {id} revoked\n"));
    }
    same(&ep, &["lease", "revoke", "1234"], None).await;
    let rev = c
        .get("e/x", None)
        .await
        .expect("get")
        .header()
        .unwrap()
        .revision();
    let theirs = outcome(&etcdctl(&ep, &["compaction", &(rev - 2).to_string()], None).await);
    let ours = outcome(&kvd_ctl(&ep, &["compaction", &(rev - 1).to_string()], None).await);
    assert_eq!(
        theirs.1.replace(&(rev - 2).to_string(), "R"),
        ours.1.replace(&(rev - 1).to_string(), "R")
    );
    same(&ep, &["compaction", "1"], None).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_runs_a_command_per_event_and_a_canceled_watch_exits_5() {
    let dir = TestDir::new();
    let cluster = Cluster::start(1).await;
    let ep = cluster.endpoint(0);
    let log = dir.path().join("events.log");
    let script = format!(
        "echo \"$ETCD_WATCH_REVISION $ETCD_WATCH_EVENT_TYPE $ETCD_WATCH_KEY $ETCD_WATCH_VALUE\" >> {}",
        log.display()
    );
    let mut watcher = tokio::process::Command::new(env!("CARGO_BIN_EXE_kvd"))
        .args([
            "ctl",
            &format!("--endpoints={ep}"),
            "watch",
            "w",
            "--",
            "sh",
            "-c",
            &script,
        ])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn watch");
    let mut c = cluster.client(0).await;
    // The watch is in place once an event shows up in the log.
    let first = wait_for("the watch sees a put", Duration::from_secs(10), || {
        let mut c = c.clone();
        let log = log.clone();
        async move {
            c.put("w", "v 1", None).await.map_err(|e| e.to_string())?;
            match std::fs::read_to_string(&log) {
                Ok(text) if !text.is_empty() => Ok(text),
                _ => Err("no event yet".to_string()),
            }
        }
    })
    .await;
    assert!(first.contains(" \"PUT\" \"w\" \"v 1\""), "{first}");
    let deleted = c.delete("w", None).await.expect("delete");
    let rev = deleted.header().unwrap().revision();
    let text = wait_for(
        "the delete reaches the command",
        Duration::from_secs(10),
        || {
            let log = log.clone();
            async move {
                let text = std::fs::read_to_string(&log).map_err(|e| e.to_string())?;
                if text.contains("DELETE") {
                    Ok(text)
                } else {
                    Err("no delete yet".to_string())
                }
            }
        },
    )
    .await;
    assert!(
        text.contains(&format!("{rev} \"DELETE\" \"w\" \"\"")),
        "{text}"
    );
    let _ = watcher.kill().await;

    // A watch from a compacted revision is canceled: exit 5, as etcdctl.
    c.compact(rev, None).await.expect("compact");
    for tool in ["etcdctl", "kvd"] {
        let out = if tool == "kvd" {
            kvd_ctl(&ep, &["watch", "w", "--rev", "1"], None).await
        } else {
            etcdctl(&ep, &["watch", "w", "--rev", "1"], None).await
        };
        assert_eq!(out.status.code(), Some(5), "{tool}: {out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(
                "watch was canceled (etcdserver: mvcc: required revision has been compacted)"
            ),
            "{tool}: {stderr}"
        );
        assert!(
            stderr.contains("Error: watch is canceled by the server"),
            "{tool}: {stderr}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn lock_runs_a_command_holding_the_lock_and_completion_scripts_exist() {
    let cluster = Cluster::start(1).await;
    let ep = cluster.endpoint(0);
    // A failing command: etcdctl's error text and exit code.
    same(&ep, &["lock", "job", "--", "sh", "-c", "exit 3"], None).await;
    same(&ep, &["lock"], None).await;
    same(&ep, &["elect", "e"], None).await;
    same(&ep, &["elect", "-l", "e", "proposal"], None).await;
    // The command sees the lock's key (name/lease id) and revision.
    let script = "echo \"$ETCD_LOCK_KEY $ETCD_LOCK_REV\"";
    let out = kvd_ctl(&ep, &["lock", "job", "--", "sh", "-c", script], None).await;
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    let (key, rev) = text.trim().split_once(' ').expect("key and revision");
    assert!(
        key.starts_with("job/") && rev.parse::<i64>().unwrap() > 1,
        "{text}"
    );
    // The lock is free again: a second holder gets it at once.
    let again = kvd_ctl(&ep, &["lock", "job", "--", "true"], None).await;
    assert!(again.status.success(), "{again:?}");
    for shell in ["bash", "zsh", "fish"] {
        let out = kvd_ctl(&ep, &["completion", shell], None).await;
        assert!(out.status.success());
        let script = String::from_utf8_lossy(&out.stdout);
        assert!(
            script.contains("kvd") && script.contains("lease"),
            "{shell}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn v2_era_commands_map_directories_onto_keys() {
    let dir = TestDir::new();
    let cluster = Cluster::start(1).await;
    let ep = cluster.endpoint(0);
    let ok = |o: &Output| {
        assert!(o.status.success(), "{o:?}");
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    assert_eq!(
        ok(&kvd_ctl(&ep, &["set", "/app/a", "1"], None).await),
        "1\n"
    );
    assert_eq!(ok(&kvd_ctl(&ep, &["mk", "/app/b", "2"], None).await), "2\n");
    let exists = kvd_ctl(&ep, &["mk", "/app/b", "3"], None).await;
    assert_eq!(exists.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&exists.stderr)
        .starts_with("Error:  105: Key already exists (/app/b) ["));
    ok(&kvd_ctl(&ep, &["mkdir", "/app/sub"], None).await);
    ok(&kvd_ctl(&ep, &["set", "/app/deep/x", "x"], None).await);
    assert_eq!(
        ok(&kvd_ctl(&ep, &["ls", "/app"], None).await),
        "/app/a\n/app/b\n/app/deep\n/app/sub\n"
    );
    assert_eq!(
        ok(&kvd_ctl(&ep, &["ls", "/app", "--recursive"], None).await),
        "/app/a\n/app/b\n/app/deep/x\n/app/sub\n"
    );
    assert_eq!(
        ok(&kvd_ctl(&ep, &["update", "/app/a", "11"], None).await),
        "11\n"
    );
    let missing = kvd_ctl(&ep, &["update", "/app/none", "1"], None).await;
    assert_eq!(missing.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&missing.stderr).contains(" 100: Key not found (/app/none)"));
    // A TTL is a lease.
    ok(&kvd_ctl(&ep, &["set", "/app/t", "v", "--ttl", "60"], None).await);
    let mut c = cluster.client(0).await;
    let t = c.get("/app/t", None).await.expect("get");
    assert_ne!(t.kvs()[0].lease(), 0);
    // exec-watch runs the command with v2's variables.
    let log = dir.path().join("exec.log");
    let script = format!(
        "echo \"$ETCD_WATCH_ACTION $ETCD_WATCH_KEY $ETCD_WATCH_VALUE\" >> {}",
        log.display()
    );
    let mut watcher = tokio::process::Command::new(env!("CARGO_BIN_EXE_kvd"))
        .args([
            "ctl",
            &format!("--endpoints={ep}"),
            "exec-watch",
            "--recursive",
            "/app",
            "--",
            "sh",
            "-c",
            &script,
        ])
        .kill_on_drop(true)
        .spawn()
        .expect("spawn exec-watch");
    let text = wait_for(
        "exec-watch runs the command",
        Duration::from_secs(10),
        || {
            let mut c = c.clone();
            let log = log.clone();
            async move {
                c.put("/app/w", "seen", None)
                    .await
                    .map_err(|e| e.to_string())?;
                std::fs::read_to_string(&log).map_err(|e| e.to_string())
            }
        },
    )
    .await;
    assert!(text.starts_with("set /app/w seen\n"), "{text}");
    let _ = watcher.kill().await;
    // rm: a key, an empty directory, a whole tree.
    ok(&kvd_ctl(&ep, &["rm", "/app/a"], None).await);
    ok(&kvd_ctl(&ep, &["rm", "/app/sub", "--dir"], None).await);
    ok(&kvd_ctl(&ep, &["rm", "/app", "--recursive"], None).await);
    let gone = c
        .get("/app", Some(etcd_client::GetOptions::new().with_prefix()))
        .await
        .expect("get");
    assert!(gone.kvs().is_empty());
    let again = kvd_ctl(&ep, &["rm", "/app/a"], None).await;
    assert_eq!(again.status.code(), Some(4));
}

#[tokio::test(flavor = "multi_thread")]
async fn users_roles_and_auth_print_as_etcdctl_prints_them() {
    let cluster = Cluster::start(3).await;
    let e = &cluster.endpoint(0);
    // Changes, on twin users and roles (a… for etcdctl, b… for kvd ctl).
    for f in ["simple", "json", "fields", "table"] {
        let user = format!("TWINu-{f}");
        let role = format!("TWINr-{f}");
        twins(
            e,
            &["-w", f, "user", "add", &format!("{user}:pw")],
            None,
            "qetc",
            "qkvd",
        )
        .await;
        twins(e, &["-w", f, "role", "add", &role], None, "qetc", "qkvd").await;
        for grant in [
            vec!["readwrite", "foo", "--prefix"],
            vec!["read", "k1"],
            vec!["write", "z", "--from-key"],
            vec!["READ", "m", "n"],
        ] {
            let mut args = vec!["-w", f, "role", "grant-permission", &role];
            args.extend(grant);
            twins(e, &args, None, "qetc", "qkvd").await;
        }
        twins(
            e,
            &["-w", f, "user", "grant-role", &user, &role],
            None,
            "qetc",
            "qkvd",
        )
        .await;
        twins(e, &["-w", f, "user", "get", &user], None, "qetc", "qkvd").await;
        twins(e, &["-w", f, "role", "get", &role], None, "qetc", "qkvd").await;
        twins(
            e,
            &["-w", f, "user", "get", &user, "--detail"],
            None,
            "qetc",
            "qkvd",
        )
        .await;
        twins(
            e,
            &[
                "-w",
                f,
                "role",
                "revoke-permission",
                &role,
                "foo",
                "--prefix",
            ],
            None,
            "qetc",
            "qkvd",
        )
        .await;
        twins(
            e,
            &[
                "-w",
                f,
                "role",
                "revoke-permission",
                &role,
                "z",
                "--from-key",
            ],
            None,
            "qetc",
            "qkvd",
        )
        .await;
        twins(
            e,
            &["-w", f, "role", "revoke-permission", &role, "k1"],
            None,
            "qetc",
            "qkvd",
        )
        .await;
        twins(
            e,
            &["-w", f, "user", "revoke-role", &user, &role],
            None,
            "qetc",
            "qkvd",
        )
        .await;
        twins(
            e,
            &["-w", f, "user", "passwd", &user, "--interactive=false"],
            Some("newpw\n"),
            "qetc",
            "qkvd",
        )
        .await;
    }
    // Errors and argument errors.
    for args in [
        vec!["user", "add"],
        vec!["user", "add", ":x"],
        vec!["user", "get", "nobody"],
        vec!["role", "get", "nothing"],
        vec!["user", "grant-role", "nobody", "x"],
        vec!["role", "grant-permission", "r", "bogus", "k"],
        vec![
            "role",
            "grant-permission",
            "r",
            "read",
            "k",
            "--prefix",
            "--from-key",
        ],
        vec![
            "role",
            "grant-permission",
            "r",
            "read",
            "k",
            "l",
            "--prefix",
        ],
        vec!["role", "grant-permission", "r"],
        vec!["role", "revoke-permission", "r"],
        vec!["auth", "enable"],
    ] {
        same(e, &args, None).await;
    }
    // Lists: etcdctl first adds its own, then kvd ctl; both then list all.
    for f in ["simple", "json", "fields", "table"] {
        same(e, &["-w", f, "user", "list"], None).await;
        same(e, &["-w", f, "role", "list"], None).await;
    }
    // Enabling and disabling auth (root made by etcdctl, role root created
    // by the command as etcdctl does).
    let ours = kvd_ctl(e, &["user", "add", "root:rootpw"], None).await;
    assert!(ours.status.success());
    let enabled = kvd_ctl(e, &["auth", "enable"], None).await;
    assert_eq!(
        String::from_utf8_lossy(&enabled.stdout),
        "Authentication Enabled\n"
    );
    same(e, &["get", "foo"], None).await;
    same(e, &["--user", "root:wrong", "get", "foo"], None).await;
    same(e, &["--user", "root:rootpw", "put", "foo", "1"], None).await;
    same(
        e,
        &["--user", "root", "--password", "rootpw", "get", "foo"],
        None,
    )
    .await;
    let disabled = kvd_ctl(e, &["--user", "root:rootpw", "auth", "disable"], None).await;
    assert_eq!(
        String::from_utf8_lossy(&disabled.stdout),
        "Authentication Disabled\n"
    );
    same(e, &["auth", "disable"], None).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn make_mirror_copies_a_prefix_then_follows_it() {
    let source = Cluster::start(1).await;
    let dest = Cluster::start(1).await;
    let mut s = source.client(0).await;
    for i in 0..2500 {
        s.put(format!("/src/k{i:04}"), format!("v{i}"), None)
            .await
            .unwrap();
    }
    s.put("/other/x", "no", None).await.unwrap();
    let mut mirror = tokio::process::Command::new(env!("CARGO_BIN_EXE_kvd"))
        .args([
            "ctl",
            &format!("--endpoints={}", source.endpoint(0)),
            "make-mirror",
            "--prefix",
            "/src/",
            "--dest-prefix",
            "/dst/",
            &dest.endpoint(0),
        ])
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut d = dest.client(0).await;
    let count = |want: i64| {
        let mut d = d.clone();
        async move {
            let got = d
                .get(
                    "/dst/",
                    Some(
                        etcd_client::GetOptions::new()
                            .with_prefix()
                            .with_count_only(),
                    ),
                )
                .await
                .map_err(|e| e.to_string())?
                .count();
            if got == want {
                Ok(())
            } else {
                Err(format!("{got} of {want} keys"))
            }
        }
    };
    wait_for("the first copy", Duration::from_secs(60), || count(2500)).await;
    // Then changes: a txn of three ops arrives as one destination revision.
    let txn = etcd_client::Txn::new().and_then([
        etcd_client::TxnOp::put("/src/new1", "a", None),
        etcd_client::TxnOp::put("/src/new2", "b", None),
        etcd_client::TxnOp::delete("/src/k0000", None),
    ]);
    s.txn(txn).await.unwrap();
    wait_for("the txn", Duration::from_secs(20), || count(2501)).await;
    let new2 = d.get("/dst/new2", None).await.unwrap();
    let new1 = d.get("/dst/new1", None).await.unwrap();
    assert_eq!(new2.kvs()[0].value(), b"b");
    assert_eq!(new1.kvs()[0].mod_revision(), new2.kvs()[0].mod_revision());
    assert!(d.get("/dst/k0000", None).await.unwrap().kvs().is_empty());
    assert!(d.get("/other/x", None).await.unwrap().kvs().is_empty());
    assert!(mirror.try_wait().unwrap().is_none(), "make-mirror ended");
    mirror.kill().await.unwrap();
    // Argument errors as etcdctl's.
    same(&source.endpoint(0), &["make-mirror"], None).await;
    same(&source.endpoint(0), &["make-mirror", "a", "b"], None).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn check_datascale_passes_and_the_checks_refuse_as_etcdctl_does() {
    let cluster = Cluster::start(1).await;
    let e = &cluster.endpoint(0);
    let out = kvd_ctl(e, &["check", "datascale", "--auto-compact"], None).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(text.starts_with("Start data scale check for work load [10000 key-value pairs, 1024 bytes per key-value, 50 concurrent clients].\n"), "{text}");
    assert!(
        text.contains("\nPASS: Approximate system memory used : "),
        "{text}"
    );
    // Its keys are gone.
    let mut c = cluster.client(0).await;
    let left = c
        .get(
            "/etcdctl-check-datascale/",
            Some(
                etcd_client::GetOptions::new()
                    .with_prefix()
                    .with_count_only(),
            ),
        )
        .await
        .unwrap();
    assert_eq!(left.count(), 0);
    // Refusals, compared with etcdctl: an unknown load, a used prefix.
    same(e, &["check", "perf", "--load", "huge"], None).await;
    same(e, &["check", "datascale", "--load", "huge"], None).await;
    c.put("/used/k", "v", None).await.unwrap();
    same(e, &["check", "perf", "--prefix", "/used/"], None).await;
    same(e, &["check", "datascale", "--prefix", "/used/"], None).await;
    // DNS discovery that finds nothing fails as etcdctl's does.
    let ours = kvd_ctl(e, &["-d", "nosuch.invalid", "get", "foo"], None).await;
    assert_eq!(ours.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&ours.stderr)
        .starts_with("Error: dns lookup errors: lookup _etcd-client-ssl._tcp.nosuch.invalid"));
}

#[tokio::test(flavor = "multi_thread")]
async fn kvd_ctl_behaves_as_etcdctl_against_a_real_etcd() {
    let Some(etcd) = common::etcd_or_skip() else {
        return;
    };
    let dir = TestDir::new();
    let (mut server, url) = common::start_etcd(
        &etcd,
        dir.path(),
        "e1",
        &dir.path().join("e1"),
        common::free_port(),
    )
    .await;
    let e = &url;
    let mut c = common::connect(std::slice::from_ref(e)).await;
    for (k, v) in [("a", "1"), ("b", "2"), ("c", "3"), ("dir/x", "4")] {
        c.put(k, v, None).await.unwrap();
    }
    c.put("b", "22", None).await.unwrap();
    // Reads, in every format.
    for f in ["simple", "json", "fields"] {
        for args in [
            vec!["get", "a"],
            vec!["get", "a", "--prefix"],
            vec!["get", "a", "z"],
            vec!["get", "b", "--rev", "6"],
            vec!["get", "", "--from-key", "--keys-only"],
            vec![
                "get",
                "a",
                "--from-key",
                "--limit",
                "2",
                "--sort-by",
                "VALUE",
                "--order",
                "DESCEND",
            ],
            vec!["endpoint", "status"],
            vec!["endpoint", "hashkv"],
        ] {
            let mut all = vec!["-w", f];
            all.extend(args);
            same(e, &all, None).await;
        }
    }
    // (etcdctl 3.4 panics on `-w fields alarm list`: etcd's answer has no header.)
    same(e, &["alarm", "list"], None).await;
    same(e, &["-w", "json", "alarm", "list"], None).await;
    same(e, &["-w", "table", "endpoint", "status"], None).await;
    same(e, &["-w", "table", "member", "list"], None).await;
    same(e, &["get", "b", "--rev", "100"], None).await;
    // Writes on twin keys (simple: the headers of two writes differ in
    // revision).
    for f in ["simple"] {
        twins(
            e,
            &["-w", f, "put", &format!("TWIN-{f}"), "v", "--prev-kv"],
            None,
            "qetc",
            "qkvd",
        )
        .await;
        twins(
            e,
            &["-w", f, "put", &format!("TWIN-{f}"), "w", "--prev-kv"],
            None,
            "qetc",
            "qkvd",
        )
        .await;
        twins(
            e,
            &["-w", f, "del", &format!("TWIN-{f}"), "--prev-kv"],
            None,
            "qetc",
            "qkvd",
        )
        .await;
    }
    let txn = "value(\"TWIN-t\") = \"x\"\n\nput TWIN-t y\n\nget TWIN-t\n\n";
    twins(e, &["txn"], Some(txn), "qetc", "qkvd").await;
    // Users and roles.
    twins(e, &["user", "add", "TWIN-u:pw"], None, "qetc", "qkvd").await;
    twins(e, &["role", "add", "TWIN-r"], None, "qetc", "qkvd").await;
    twins(
        e,
        &[
            "role",
            "grant-permission",
            "TWIN-r",
            "read",
            "k",
            "--prefix",
        ],
        None,
        "qetc",
        "qkvd",
    )
    .await;
    twins(e, &["role", "get", "TWIN-r"], None, "qetc", "qkvd").await;
    twins(
        e,
        &["-w", "json", "user", "get", "TWIN-u"],
        None,
        "qetc",
        "qkvd",
    )
    .await;
    // Errors.
    same(e, &["lease", "revoke", "123"], None).await;
    same(e, &["compaction", "1000"], None).await;
    same(e, &["user", "get", "nobody"], None).await;
    server.kill();
}
