//! Backups against real members: `Maintenance.Snapshot` through the
//! etcd-client crate, `kvd backup save` → `restore` → a 3-member cluster
//! with the same history and HashKV (taken while writes go on), the
//! migration from a real etcd 3.4 and back (`etcdctl snapshot status`,
//! `save` and `restore` on kvd's files), corrupt and truncated files refused
//! and named, `--dir --keep` retention, and the offline copy refused while
//! a member runs.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

mod common;

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use common::start_etcd;
use common::{wait_for, wait_single_ready, Cluster, ClusterOptions, MemberPlan, Server, TestDir};
use etcd_client::{Client, GetOptions, LeaseTimeToLiveOptions, PutOptions, Txn, TxnOp};
use sha2::{Digest, Sha256};

/// Runs `kvd <args>` (no inherited KVD_/ETCDCTL_ variables) to completion.
async fn kvd(args: &[&str]) -> Output {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_kvd"));
    for (key, _) in std::env::vars_os() {
        let k = key.to_string_lossy();
        if k.starts_with("KVD_") || k.starts_with("ETCDCTL_") {
            cmd.env_remove(&key);
        }
    }
    cmd.args(args).kill_on_drop(true);
    match tokio::time::timeout(Duration::from_secs(120), cmd.output()).await {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => panic!("kvd {args:?}: {e}"),
        Err(_) => panic!("kvd {args:?} did not finish within 120s"),
    }
}

/// stdout of a successful `kvd` run; panics with stderr otherwise.
fn ok(args: &[&str], out: &Output) -> String {
    assert!(
        out.status.success(),
        "kvd {args:?} failed with {}: stdout {:?} stderr {:?}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

async fn kvd_ok(args: &[&str]) -> String {
    ok(args, &kvd(args).await)
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// A history with overwrites and deletes on both sides of a compaction, a
/// txn, a lease with two keys; returns the lease id.
async fn write_history(c: &mut Client) -> i64 {
    // Before the compaction at 20: a key changed twice (only its newest
    // put survives it), and a key put then deleted (nothing survives).
    c.put("early/a", "1", None).await.expect("put");
    c.put("early/a", "2", None).await.expect("put");
    c.put("early/b", "1", None).await.expect("put");
    c.delete("early/b", None).await.expect("delete");
    for i in 0..40 {
        c.put(format!("key/{i:02}"), format!("value-{i}"), None)
            .await
            .expect("put");
    }
    c.put("key/01", "again", None).await.expect("put");
    c.delete("key/02", None).await.expect("delete");
    c.txn(Txn::new().and_then(vec![
        TxnOp::put("txn/a", "1", None),
        TxnOp::put("txn/b", "2", None),
        TxnOp::delete("key/03", None),
    ]))
    .await
    .expect("txn");
    let lease = c.lease_grant(600, None).await.expect("grant").id();
    for k in ["leased/1", "leased/2"] {
        c.put(k, "x", Some(PutOptions::new().with_lease(lease)))
            .await
            .expect("put with lease");
    }
    c.compact(20, None).await.expect("compact");
    c.put("after/compaction", "y", None).await.expect("put");
    c.delete("key/04", None).await.expect("delete");
    lease
}

/// Every key with all its fields, at `rev` (0: the current revision).
async fn all_kvs(c: &mut Client, rev: i64) -> Vec<(String, String, i64, i64, i64, i64)> {
    let resp = c
        .get(
            "",
            Some(GetOptions::new().with_all_keys().with_revision(rev)),
        )
        .await
        .expect("get all");
    resp.kvs()
        .iter()
        .map(|kv| {
            (
                String::from_utf8_lossy(kv.key()).into_owned(),
                String::from_utf8_lossy(kv.value()).into_owned(),
                kv.create_revision(),
                kv.mod_revision(),
                kv.version(),
                kv.lease(),
            )
        })
        .collect()
}

/// (hash, compact revision, hashed revision) of HashKV at `rev`.
async fn hash_kv(c: &mut Client, rev: i64) -> (u32, i64) {
    let h = c.hash_kv(rev).await.expect("hash_kv");
    (h.hash(), h.compact_version())
}

/// The revision `kvd backup status` reads from a file.
async fn file_revision(file: &Path) -> i64 {
    let args = ["backup", "status", path_str(file), "-w", "json"];
    let out = kvd_ok(&args).await;
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("status json");
    v["revision"].as_i64().expect("revision")
}

/// Restores `file` into the member `m` will start as.
fn restore_into(file: &Path, m: &MemberPlan) {
    let args = [
        "backup",
        "restore",
        path_str(file),
        "--data-dir",
        path_str(&m.data_dir),
        "--name",
        &m.name,
        "--initial-cluster",
        &m.initial_cluster,
        "--initial-cluster-token",
        &m.token,
        "--initial-advertise-peer-urls",
        &m.peer_url,
    ];
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kvd"))
        .args(args)
        .output()
        .expect("run kvd backup restore");
    let text = ok(&args, &out);
    assert!(text.starts_with("Restored "), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_snapshot_stream_is_etcds_chunks_then_its_sha256() {
    let cluster = Cluster::start(1).await;
    let mut c = cluster.client(0).await;
    for i in 0..300 {
        c.put(format!("k{i:04}"), vec![b'v'; 400], None)
            .await
            .expect("put");
    }
    let mut stream = c.snapshot().await.expect("snapshot");
    let mut blobs = Vec::new();
    while let Some(msg) = stream.message().await.expect("message") {
        assert!(msg.header().is_none(), "etcd sends no header");
        blobs.push((msg.blob().to_vec(), msg.remaining_bytes()));
    }
    let (sha, last_remaining) = blobs.pop().expect("the checksum message");
    assert_eq!(last_remaining, 0);
    assert_eq!(sha.len(), 32);
    let total: u64 = blobs.iter().map(|(b, _)| b.len() as u64).sum();
    let mut sent = 0;
    for (blob, remaining) in &blobs {
        sent += blob.len() as u64;
        assert_eq!(
            *remaining,
            total - sent,
            "bytes still to come after each chunk"
        );
    }
    // etcd's chunks: 32 KiB each but the last.
    let (last, full) = blobs.split_last().expect("chunks");
    assert!(full.iter().all(|(b, _)| b.len() == 32 * 1024));
    assert!(!last.0.is_empty() && last.0.len() <= 32 * 1024);
    assert!(
        blobs.len() > 3,
        "a database of {total} bytes comes in 32 KiB chunks"
    );
    let data: Vec<u8> = blobs.into_iter().flat_map(|(b, _)| b).collect();
    assert_eq!(Sha256::digest(&data).as_slice(), sha.as_slice());
    assert_eq!(data.len() % 4096, 0, "whole bbolt pages");
}

#[tokio::test(flavor = "multi_thread")]
async fn save_under_writes_then_restore_three_members_with_the_same_history() {
    if common::against_etcd() {
        return; // restores kvd data dirs
    }
    let dir = TestDir::new();
    let source = Cluster::start(3).await;
    let mut c = source.client(0).await;
    let lease = write_history(&mut c).await;
    // Writes go on while the snapshot is taken: it must be one point in time.
    let writer = {
        let mut c = c.clone();
        tokio::spawn(async move {
            for i in 0.. {
                if c.put(format!("busy/{i}"), "w", None).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let file = dir.path().join("cluster.db");
    let endpoints = source.endpoints().join(",");
    let args = ["backup", "save", path_str(&file), "--endpoints", &endpoints];
    let out = kvd_ok(&args).await;
    writer.abort();
    assert!(
        out.starts_with(&format!("Snapshot saved at {}\n", file.display())),
        "{out}"
    );
    assert!(!dir.path().join("cluster.db.part").exists());
    let rev = file_revision(&file).await;
    assert!(out.contains(&format!("revision {rev}, ")), "{out}");
    let want_hash = hash_kv(&mut c, rev).await;
    let want_kvs = all_kvs(&mut c, rev).await;
    assert!(want_kvs.iter().any(|kv| kv.0.starts_with("busy/")));

    let restored =
        Cluster::spawn_prepared(3, ClusterOptions::default(), |m| restore_into(&file, m));
    let mut restored = restored;
    restored.wait_ready().await;
    for i in 0..3 {
        let mut r = restored.client(i).await;
        let status = wait_for(
            "the member applied its log",
            Duration::from_secs(10),
            || {
                let mut r = r.clone();
                async move {
                    let h = r.hash_kv(0).await.map_err(|e| e.to_string())?;
                    Ok::<_, String>(h)
                }
            },
        )
        .await;
        assert_eq!(
            (status.hash(), status.compact_version()),
            want_hash,
            "member {i}"
        );
        assert_eq!(status.header().map(|h| h.revision()), Some(rev));
        assert_eq!(all_kvs(&mut r, 0).await, want_kvs, "member {i}");
    }
    let mut r = restored.client(1).await;
    // The compaction and the lease came along.
    let err = r
        .get("key/05", Some(GetOptions::new().with_revision(10)))
        .await
        .expect_err("compacted");
    assert!(err
        .to_string()
        .contains("required revision has been compacted"));
    let ttl = r
        .lease_time_to_live(lease, Some(LeaseTimeToLiveOptions::new().with_keys()))
        .await
        .expect("ttl");
    assert!(ttl.ttl() > 0);
    assert_eq!(ttl.keys().len(), 2);
    // History continues from the snapshot's revision.
    let put = r.put("new", "1", None).await.expect("put");
    assert_eq!(put.header().map(|h| h.revision()), Some(rev + 1));
}

async fn etcdctl_ok(endpoint: &str, args: &[&str]) -> String {
    let out = common::etcdctl(&[endpoint.to_string()], args).await;
    common::stdout_ok(args, &out)
}

/// etcdctl's commands on files (`snapshot status`, `snapshot restore`).
fn etcdctl_offline(args: &[&str]) -> String {
    let out = std::process::Command::new(common::etcdctl_path())
        .env("ETCDCTL_API", "3")
        .args(args)
        .output()
        .expect("run etcdctl");
    common::stdout_ok(args, &out)
}

#[tokio::test(flavor = "multi_thread")]
async fn migration_from_etcd_and_back_keeps_keys_revisions_and_leases() {
    if common::against_etcd() {
        return;
    }
    let Some(etcd) = common::etcd_or_skip() else {
        return;
    };
    let dir = TestDir::new();
    let (mut etcd_server, etcd_endpoint) = start_etcd(
        &etcd,
        dir.path(),
        "e1",
        &dir.path().join("e1"),
        common::free_port(),
    )
    .await;
    let mut e = common::connect(std::slice::from_ref(&etcd_endpoint)).await;
    let lease = write_history(&mut e).await;
    let want_kvs = all_kvs(&mut e, 0).await;
    let want_hash = hash_kv(&mut e, 0).await;
    let from_etcd = dir.path().join("from-etcd.db");
    etcdctl_ok(&etcd_endpoint, &["snapshot", "save", path_str(&from_etcd)]).await;
    etcd_server.kill();

    // etcd → kvd: one command.
    let kvd_cluster = Cluster::spawn_prepared(1, ClusterOptions::default(), |m| {
        restore_into(&from_etcd, m)
    });
    let mut kvd_cluster = kvd_cluster;
    kvd_cluster.wait_ready().await;
    let mut k = kvd_cluster.client(0).await;
    assert_eq!(all_kvs(&mut k, 0).await, want_kvs);
    assert_eq!(hash_kv(&mut k, 0).await, want_hash);
    let ttl = k
        .lease_time_to_live(lease, Some(LeaseTimeToLiveOptions::new().with_keys()))
        .await
        .expect("the lease came along");
    assert_eq!(ttl.keys().len(), 2);

    // kvd's files read by etcd's own tools, in every format.
    let from_kvd = dir.path().join("from-kvd.db");
    etcdctl_ok(
        &kvd_cluster.endpoint(0),
        &["snapshot", "save", path_str(&from_kvd)],
    )
    .await;
    for format in ["simple", "json", "table", "fields"] {
        let theirs = etcdctl_offline(&["snapshot", "status", path_str(&from_kvd), "-w", format]);
        let args = ["backup", "status", path_str(&from_kvd), "-w", format];
        assert_eq!(kvd_ok(&args).await, theirs, "-w {format}");
    }

    // kvd → etcd: etcdctl restores kvd's snapshot and etcd serves it.
    let back = dir.path().join("e2");
    let (peer, token) = (common::free_port(), "etcd-cluster");
    let peer_url = format!("http://127.0.0.1:{peer}");
    etcdctl_offline(&[
        "snapshot",
        "restore",
        path_str(&from_kvd),
        "--data-dir",
        path_str(&back),
        "--name",
        "e2",
        "--initial-cluster",
        &format!("e2={peer_url}"),
        "--initial-cluster-token",
        token,
        "--initial-advertise-peer-urls",
        &peer_url,
    ]);
    // The restored etcd must use the peer URL it was restored with.
    let (_back_server, client_url) = start_etcd(&etcd, dir.path(), "e2", &back, peer).await;
    let mut e2 = common::connect(&[client_url]).await;
    assert_eq!(all_kvs(&mut e2, 0).await, want_kvs);
    assert_eq!(hash_kv(&mut e2, 0).await, want_hash);
}

#[tokio::test(flavor = "multi_thread")]
async fn corrupt_truncated_and_misplaced_restores_are_refused_and_leave_nothing() {
    if common::against_etcd() {
        return;
    }
    let dir = TestDir::new();
    let cluster = Cluster::start(1).await;
    let mut c = cluster.client(0).await;
    write_history(&mut c).await;
    let good = dir.path().join("good.db");
    let endpoint = cluster.endpoint(0);
    kvd_ok(&["backup", "save", path_str(&good), "--endpoints", &endpoint]).await;
    let bytes = std::fs::read(&good).expect("read snapshot");
    let body = bytes.len() - 32;

    let flipped = dir.path().join("flipped.db");
    let mut b = bytes.clone();
    b[body / 2] ^= 0x40;
    std::fs::write(&flipped, &b).expect("write");

    let truncated = dir.path().join("truncated.db");
    std::fs::write(&truncated, &bytes[..bytes.len() - 1000]).expect("write");

    // Damaged inside, with a checksum that matches the damage: the
    // structure checks still catch it (page 3 is the root bucket, page 4
    // the first bucket's root).
    let mut rehashed = Vec::new();
    for page in [3usize, 4] {
        let mut b = bytes[..body].to_vec();
        b[page * 4096 + 8] = 0x40; // page flags: neither leaf nor branch
        let sha = Sha256::digest(&b);
        b.extend_from_slice(&sha);
        let path = dir.path().join(format!("page{page}.db"));
        std::fs::write(&path, &b).expect("write");
        rehashed.push(path);
    }

    let cases: Vec<(&Path, &str)> = vec![
        (&flipped, "sha256 mismatch"),
        (&truncated, "snapshot missing hash"),
        (&rehashed[0], "page 3"),
        (&rehashed[1], "page 4"),
    ];
    for (file, why) in cases {
        let target = dir.path().join("restored");
        let args = [
            "backup",
            "restore",
            path_str(file),
            "--data-dir",
            path_str(&target),
        ];
        let out = kvd(&args).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{file:?}: {stderr}");
        assert!(
            stderr.contains(&format!("snapshot file {}", file.display())) && stderr.contains(why),
            "{file:?}: {stderr}"
        );
        assert!(!target.exists(), "{file:?} left a data dir behind");
    }
    // status reads every page too.
    let out = kvd(&["backup", "status", path_str(&rehashed[1])]).await;
    assert_eq!(out.status.code(), Some(1));

    // A data dir that holds anything is never overwritten.
    let busy = dir.path().join("busy");
    std::fs::create_dir(&busy).expect("mkdir");
    std::fs::write(busy.join("keep.txt"), "mine").expect("write");
    let out = kvd(&[
        "backup",
        "restore",
        path_str(&good),
        "--data-dir",
        path_str(&busy),
    ])
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not empty"));
    assert_eq!(
        std::fs::read_to_string(busy.join("keep.txt")).unwrap(),
        "mine"
    );

    // A save that cannot reach anyone leaves no file, partial or not.
    let nowhere = dir.path().join("nowhere.db");
    let dead = format!("127.0.0.1:{}", common::free_port());
    let out = kvd(&["backup", "save", path_str(&nowhere), "--endpoints", &dead]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(!nowhere.exists() && !dir.path().join("nowhere.db.part").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn save_into_a_dir_keeps_the_newest_n() {
    let dir = TestDir::new();
    let cluster = Cluster::start(1).await;
    let mut c = cluster.client(0).await;
    let backups = dir.path().join("backups");
    std::fs::create_dir(&backups).expect("mkdir");
    std::fs::write(backups.join("notes.txt"), "not a snapshot").expect("write");
    let endpoint = cluster.endpoint(0);
    let mut saved = Vec::new();
    for i in 0..4 {
        let put = c.put(format!("k{i}"), "v", None).await.expect("put");
        let rev = put.header().expect("header").revision();
        let args = [
            "backup",
            "save",
            "--dir",
            path_str(&backups),
            "--keep",
            "2",
            "--endpoints",
            &endpoint,
            "-w",
            "json",
        ];
        let out = kvd_ok(&args).await;
        let v: serde_json::Value = serde_json::from_str(out.trim()).expect("json");
        assert_eq!(v["revision"].as_i64(), Some(rev));
        let path = v["path"].as_str().expect("path").to_string();
        assert!(path.ends_with(&format!("-rev{rev}.db")), "{path}");
        let removed = v["removed"].as_array().expect("removed").len();
        assert_eq!(removed, usize::from(i >= 2), "save {i}");
        saved.push(path);
    }
    let mut names: Vec<String> = std::fs::read_dir(&backups)
        .expect("list")
        .map(|e| e.expect("entry").path().display().to_string())
        .collect();
    names.sort();
    let mut want = saved[2..].to_vec();
    want.push(backups.join("notes.txt").display().to_string());
    want.sort();
    assert_eq!(names, want);
    // --keep belongs with --dir.
    let out = kvd(&["backup", "save", "x.db", "--keep", "2"]).await;
    assert_eq!(out.status.code(), Some(2));
}

#[tokio::test(flavor = "multi_thread")]
async fn offline_copy_waits_for_the_member_to_stop_and_starts_as_it() {
    if common::against_etcd() {
        return;
    }
    let dir = TestDir::new();
    let mut cluster = Cluster::start(1).await;
    let mut c = cluster.client(0).await;
    write_history(&mut c).await;
    let want = all_kvs(&mut c, 0).await;
    let data_dir = cluster.members[0].data_dir.clone();
    let copy = dir.path().join("copy");
    let args = [
        "backup",
        "--data-dir",
        path_str(&data_dir),
        "--backup-dir",
        path_str(&copy),
    ];
    let out = kvd(&args).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("in use by a running member"),
        "{out:?}"
    );
    assert!(!copy.exists() || std::fs::read_dir(&copy).unwrap().next().is_none());
    cluster.members[0].server.terminate();
    assert!(cluster.members[0]
        .server
        .wait_exit(Duration::from_secs(20))
        .is_some());
    let text = kvd_ok(&args).await;
    assert!(text.starts_with("Copied data dir "), "{text}");
    // The copy starts as the same member, with the same data.
    let mut spec = cluster.members[0].server.spec.clone();
    for a in spec.args.iter_mut() {
        if Path::new(a.as_str()) == data_dir {
            *a = path_str(&copy).to_string();
        }
    }
    let mut server = Server::start(spec);
    wait_single_ready(&mut server, cluster.members[0].client_port).await;
    let mut c = common::connect(&[cluster.endpoint(0)]).await;
    assert_eq!(all_kvs(&mut c, 0).await, want);
}

#[tokio::test(flavor = "multi_thread")]
async fn users_roles_and_auth_survive_a_backup_into_kvd_and_into_etcd() {
    if common::against_etcd() {
        return;
    }
    let dir = TestDir::new();
    let cluster = Cluster::start(1).await;
    let mut c = cluster.client(0).await;
    c.user_add("root", "rootpw", None).await.unwrap();
    c.user_grant_role("root", "root").await.unwrap();
    c.role_add("reader").await.unwrap();
    c.role_grant_permission(
        "reader",
        etcd_client::Permission::read("pub/").with_prefix(),
    )
    .await
    .unwrap();
    c.user_add("alice", "alicepw", None).await.unwrap();
    c.user_grant_role("alice", "reader").await.unwrap();
    c.put("pub/a", "1", None).await.unwrap();
    c.put("priv/b", "2", None).await.unwrap();
    c.auth_enable().await.unwrap();
    let file = dir.path().join("auth.db");
    kvd_ok(&[
        "backup",
        "save",
        path_str(&file),
        "--endpoints",
        &cluster.endpoint(0),
        "--user",
        "root:rootpw",
    ])
    .await;
    drop(cluster);

    let login = |endpoint: String, user: &'static str, pw: &'static str| async move {
        etcd_client::Client::connect(
            [endpoint],
            Some(etcd_client::ConnectOptions::new().with_user(user, pw)),
        )
        .await
    };
    let mut restored =
        Cluster::spawn_prepared(1, ClusterOptions::default(), |m| restore_into(&file, m));
    // The restored member has auth on: the harness's anonymous status
    // checks fail, so wait for a login instead.
    let endpoint = restored.endpoint(0);
    let mut alice = common::wait_for("restored member", Duration::from_secs(30), || {
        let e = endpoint.clone();
        async move {
            login(e, "alice", "alicepw")
                .await
                .map_err(|e| e.to_string())
        }
    })
    .await;
    assert_eq!(
        alice.get("pub/a", None).await.unwrap().kvs()[0].value(),
        b"1"
    );
    assert!(alice.get("priv/b", None).await.is_err());
    assert!(login(endpoint.clone(), "alice", "wrong").await.is_err());
    let mut anon = common::connect(std::slice::from_ref(&endpoint)).await;
    assert!(anon.get("pub/a", None).await.is_err());
    restored.assert_running();

    // etcd restores the same file with its users and roles.
    let Some(etcd) = common::etcd_or_skip() else {
        return;
    };
    let back = dir.path().join("e-auth");
    let peer = common::free_port();
    let peer_url = format!("http://127.0.0.1:{peer}");
    etcdctl_offline(&[
        "snapshot",
        "restore",
        path_str(&file),
        "--data-dir",
        path_str(&back),
        "--name",
        "ea",
        "--initial-cluster",
        &format!("ea={peer_url}"),
        "--initial-cluster-token",
        "etcd-cluster",
        "--initial-advertise-peer-urls",
        &peer_url,
    ]);
    let (_server, url) = start_etcd(&etcd, dir.path(), "ea", &back, peer).await;
    let users = etcdctl_ok(&url, &["--user", "root:rootpw", "user", "list"]).await;
    assert_eq!(users, "alice\nroot\n");
    let mut alice = login(url.clone(), "alice", "alicepw").await.unwrap();
    assert_eq!(
        alice.get("pub/a", None).await.unwrap().kvs()[0].value(),
        b"1"
    );
    assert!(alice.get("priv/b", None).await.is_err());
}
