//! Catch-up of a new member by Raft snapshot: how long a learner added to a
//! one-member cluster takes to reach the leader's applied index when the
//! state is (1) 1 GiB of values and (2) 100,000 small keys, and whether any
//! election happened meanwhile (the leader's
//! `etcd_server_leader_changes_seen_total` must not move).
//!
//! The leader runs with `--snapshot-count 100`, so its log is compacted
//! long before the learner joins and only a snapshot can catch it up.
//! Run with `make bench` (or `cargo bench --bench snapshot_catchup`).
//! `KVD_BENCH_SNAPSHOT_MIB` overrides the 1 GiB (e.g. 64 for a quick run).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use etcd_client::{Client, MemberAddOptions};

mod common;
use common::{free_port, metric};

struct Member {
    child: Child,
    client: u16,
    peer: u16,
}

impl Drop for Member {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(
    dir: &std::path::Path,
    name: &str,
    client: u16,
    peer: u16,
    cluster: &str,
    state: &str,
) -> Member {
    let data = dir.join(name);
    let child = Command::new(env!("CARGO_BIN_EXE_kvd"))
        .args([
            "serve",
            "--name",
            name,
            "--data-dir",
            data.to_str().expect("path"),
        ])
        .args([
            "--listen-client-urls",
            &format!("http://127.0.0.1:{client}"),
        ])
        .args([
            "--advertise-client-urls",
            &format!("http://127.0.0.1:{client}"),
        ])
        .args(["--listen-peer-urls", &format!("http://127.0.0.1:{peer}")])
        .args([
            "--initial-advertise-peer-urls",
            &format!("http://127.0.0.1:{peer}"),
        ])
        .args([
            "--initial-cluster",
            cluster,
            "--initial-cluster-state",
            state,
        ])
        .args(["--snapshot-count", "100", "--max-request-bytes", "2097152"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn kvd");
    Member {
        child,
        client,
        peer,
    }
}

async fn connect(port: u16) -> Client {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(mut c) = Client::connect([format!("127.0.0.1:{port}")], None).await {
            if c.status().await.is_ok() {
                return c;
            }
        }
        assert!(
            Instant::now() < deadline,
            "member on {port} did not come up"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn run_case(label: &str, keys: usize, value_bytes: usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ac, ap) = (free_port(), free_port());
    let leader = spawn(
        dir.path(),
        "a",
        ac,
        ap,
        &format!("a=http://127.0.0.1:{ap}"),
        "new",
    );
    let mut a = connect(leader.client).await;
    let t = Instant::now();
    common::put_values(&a, "snap", keys, value_bytes, 16).await;
    let load_s = t.elapsed().as_secs_f64();
    let elections_before = metric(leader.client, "etcd_server_leader_changes_seen_total");

    let (bc, bp) = (free_port(), free_port());
    a.member_add(
        [format!("http://127.0.0.1:{bp}")],
        Some(MemberAddOptions::new().with_is_learner()),
    )
    .await
    .expect("member add");
    let target = a.status().await.expect("status").raft_index();
    let start = Instant::now();
    let learner = spawn(
        dir.path(),
        "b",
        bc,
        bp,
        &format!("a=http://127.0.0.1:{},b=http://127.0.0.1:{bp}", leader.peer),
        "existing",
    );
    let mut b = connect(learner.client).await;
    loop {
        if let Ok(s) = b.status().await {
            if s.raft_applied_index() >= target {
                break;
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(600),
            "learner did not catch up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let catch_up = start.elapsed();
    let count = b
        .get(
            "snap/",
            Some(
                etcd_client::GetOptions::new()
                    .with_prefix()
                    .with_count_only()
                    .with_serializable(),
            ),
        )
        .await
        .expect("count")
        .count();
    let elections =
        metric(leader.client, "etcd_server_leader_changes_seen_total") - elections_before;
    let snapshots = metric(learner.client, "kvd_snapshots_applied_total");
    let _ = learner.peer;
    println!(
        "{label:<22} keys {keys:>7} x {value_bytes:>8} B  load {load_s:>6.1} s  catch-up {:>6.2} s  snapshots applied {snapshots}  keys on learner {count:>7}  elections during catch-up {elections}",
        catch_up.as_secs_f64()
    );
    assert_eq!(count as usize, keys, "learner holds every key");
    assert!(snapshots >= 1.0, "the learner caught up by snapshot");
}

#[tokio::main]
async fn main() {
    let mib: usize = std::env::var("KVD_BENCH_SNAPSHOT_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    println!("snapshot catch-up of a new learner (leader --snapshot-count 100):");
    run_case(&format!("{mib} MiB of values"), mib, 1024 * 1024).await;
    run_case("100,000 keys", 100_000, 100).await;
}
