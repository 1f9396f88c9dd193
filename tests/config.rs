//! Configuration of `kvd serve`: flags, the YAML file (`--config`), `KVD_*`
//! environment overrides, and refusal of bad configurations with one clear
//! error line and exit code 2 (bad usage).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

mod common;

use std::path::Path;
use std::time::Duration;

use common::{free_port, single_member_args, wait_single_ready, Server, ServerSpec, TestDir};

/// A bad configuration must be refused this fast (no waiting for peers).
const REFUSE_WITHIN: Duration = Duration::from_secs(20);

/// The flag that names the YAML file (etcd only knows `--config-file`; kvd
/// accepts both).
fn config_flag() -> &'static str {
    if common::against_etcd() {
        "--config-file"
    } else {
        "--config"
    }
}

/// True (and says so) when running against etcd, whose exit codes, messages
/// and environment variables (`ETCD_*`) differ from kvd's by design.
fn kvd_only(test: &str) -> bool {
    if common::against_etcd() {
        eprintln!("{test}: kvd-specific behaviour, not checked against etcd");
        return true;
    }
    false
}

/// Runs `kvd serve <args>` expecting it to refuse to start: exit code 2 and
/// no panic. Returns the non-empty lines of stderr.
fn expect_refused(dir: &Path, label: &str, args: Vec<String>) -> Vec<String> {
    let spec = ServerSpec::new(args.clone(), dir, &dir.join(format!("{label}.log")));
    let output = spec.run_to_exit(REFUSE_WITHIN);
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    assert_eq!(
        output.status.code(),
        Some(2),
        "{label}: expected exit code 2 (bad usage) for {args:?}, got {}; stderr:\n{stderr}",
        output.status
    );
    assert!(!stderr.contains("panicked"), "{label}: panicked:\n{stderr}");
    stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect()
}

/// Asserts a refusal printed exactly one line, mentioning all of `needles`.
fn assert_one_clear_line(label: &str, lines: &[String], needles: &[&str]) {
    assert_eq!(
        lines.len(),
        1,
        "{label}: expected one error line on stderr, got {lines:#?}"
    );
    let line = lines[0].to_lowercase();
    for needle in needles {
        assert!(
            line.contains(&needle.to_lowercase()),
            "{label}: error line {:?} should mention {needle:?}",
            lines[0]
        );
    }
}

fn yaml_config(
    data_dir: &Path,
    name: &str,
    client_port: u16,
    peer_port: u16,
    token: &str,
) -> String {
    format!(
        "name: {name}\n\
         data-dir: {data}\n\
         listen-client-urls: http://127.0.0.1:{client_port}\n\
         advertise-client-urls: http://127.0.0.1:{client_port}\n\
         listen-peer-urls: http://127.0.0.1:{peer_port}\n\
         initial-advertise-peer-urls: http://127.0.0.1:{peer_port}\n\
         initial-cluster: {name}=http://127.0.0.1:{peer_port}\n\
         initial-cluster-state: new\n\
         initial-cluster-token: {token}\n\
         heartbeat-interval: {hb}\n\
         election-timeout: {et}\n",
        data = data_dir.display(),
        hb = common::HEARTBEAT_MS,
        et = common::ELECTION_MS,
    )
}

// ---------------------------------------------------------------------------
// Refused configurations
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn unknown_yaml_key_is_refused() {
    if kvd_only("unknown_yaml_key_is_refused") {
        return;
    }
    let dir = TestDir::new();
    let path = dir.path().join("kvd.yaml");
    let mut yaml = yaml_config(
        &dir.path().join("data"),
        "n1",
        free_port(),
        free_port(),
        "tok",
    );
    yaml.push_str("bogus-key: 1\n");
    common::write_file(&path, &yaml);
    let lines = expect_refused(
        dir.path(),
        "unknown-yaml-key",
        vec![config_flag().into(), path.to_string_lossy().into()],
    );
    assert_one_clear_line("unknown YAML key", &lines, &["bogus-key"]);
    assert!(
        !dir.path().join("data").exists(),
        "nothing created for a refused config"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn own_name_missing_from_initial_cluster_is_refused() {
    if kvd_only("own_name_missing_from_initial_cluster_is_refused") {
        return;
    }
    let dir = TestDir::new();
    let (client_port, peer_port, other_peer) = (free_port(), free_port(), free_port());
    let mut args = single_member_args(
        "n9",
        &dir.path().join("data"),
        client_port,
        peer_port,
        "tok",
    );
    let at = args
        .iter()
        .position(|a| a == "--initial-cluster")
        .expect("flag")
        + 1;
    args[at] = format!("n1=http://127.0.0.1:{other_peer}");
    let lines = expect_refused(dir.path(), "name-missing", args);
    assert_one_clear_line("own name missing from --initial-cluster", &lines, &["n9"]);
    assert!(
        !dir.path().join("data").exists(),
        "nothing created for a refused config"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn unparsable_urls_are_refused() {
    if kvd_only("unparsable_urls_are_refused") {
        return;
    }
    let dir = TestDir::new();
    let (client_port, peer_port) = (free_port(), free_port());
    let base = single_member_args(
        "n1",
        &dir.path().join("data"),
        client_port,
        peer_port,
        "tok",
    );
    let cases = [
        ("--listen-client-urls", "http://127.0.0.1:notaport"),
        ("--advertise-client-urls", "http//127.0.0.1:2379"),
        ("--listen-peer-urls", "::not a url::"),
    ];
    for (flag, bad) in cases {
        let mut args = base.clone();
        let at = args.iter().position(|a| a == flag).expect("flag") + 1;
        args[at] = bad.to_string();
        let label = format!("bad-url{flag}");
        let lines = expect_refused(dir.path(), &label, args);
        assert_one_clear_line(&label, &lines, &[bad]);
    }
}

/// A data dir belongs to one cluster: starting it with another cluster's
/// token or initial membership is refused, and does not damage it.
#[tokio::test(flavor = "multi_thread")]
async fn data_dir_of_another_cluster_is_refused() {
    if kvd_only("data_dir_of_another_cluster_is_refused") {
        return;
    }
    let dir = TestDir::new();
    let (client_port, peer_port) = (free_port(), free_port());
    let data_dir = dir.path().join("n1");
    let args_a = single_member_args("n1", &data_dir, client_port, peer_port, "token-a");
    let log = dir.path().join("n1.log");
    let mut server = Server::start(ServerSpec::new(args_a.clone(), dir.path(), &log));
    wait_single_ready(&mut server, client_port).await;
    let endpoint = vec![format!("http://127.0.0.1:{client_port}")];
    let mut client = common::connect(&endpoint).await;
    client.put("kept", "yes", None).await.expect("put");
    server.kill();

    // Another token.
    let mut args_b = args_a.clone();
    let at = args_b
        .iter()
        .position(|a| a == "--initial-cluster-token")
        .expect("flag")
        + 1;
    args_b[at] = "token-b".into();
    let lines = expect_refused(dir.path(), "other-token", args_b);
    let last = lines.last().expect("an error line").to_lowercase();
    assert!(
        last.contains("cluster"),
        "error should mention the cluster: {lines:#?}"
    );

    // Another initial cluster (one more member).
    let mut args_c = args_a.clone();
    let at = args_c
        .iter()
        .position(|a| a == "--initial-cluster")
        .expect("flag")
        + 1;
    args_c[at] = format!(
        "n1=http://127.0.0.1:{peer_port},n2=http://127.0.0.1:{}",
        free_port()
    );
    let lines = expect_refused(dir.path(), "other-initial-cluster", args_c);
    let last = lines.last().expect("an error line").to_lowercase();
    assert!(
        last.contains("cluster"),
        "error should mention the cluster: {lines:#?}"
    );

    // The original configuration still starts, with its data.
    server.restart();
    wait_single_ready(&mut server, client_port).await;
    let mut client = common::connect(&endpoint).await;
    let resp = client.get("kept", None).await.expect("get");
    assert_eq!(resp.kvs().len(), 1, "data survived the refused starts");
    assert_eq!(resp.kvs()[0].value(), b"yes");
}

// ---------------------------------------------------------------------------
// Working configurations
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn yaml_config_starts_a_working_member() {
    let dir = TestDir::new();
    let (client_port, peer_port) = (free_port(), free_port());
    let data_dir = dir.path().join("from-yaml");
    let path = dir.path().join("kvd.yaml");
    common::write_file(
        &path,
        &yaml_config(
            &data_dir,
            "yaml-member",
            client_port,
            peer_port,
            "yaml-token",
        ),
    );
    let mut server = Server::start(ServerSpec::new(
        vec![config_flag().into(), path.to_string_lossy().into()],
        dir.path(),
        &dir.path().join("server.log"),
    ));
    wait_single_ready(&mut server, client_port).await;

    let mut client = common::connect(&[format!("http://127.0.0.1:{client_port}")]).await;
    client.put("from", "yaml", None).await.expect("put");
    let resp = client.get("from", None).await.expect("get");
    assert_eq!(resp.kvs()[0].value(), b"yaml");
    let members = client.member_list().await.expect("member list");
    assert_eq!(members.members().len(), 1);
    assert_eq!(members.members()[0].name(), "yaml-member");
    assert_eq!(
        members.members()[0].peer_urls(),
        [format!("http://127.0.0.1:{peer_port}")]
    );
    assert!(data_dir.is_dir(), "data dir from the YAML file is used");
}

#[tokio::test(flavor = "multi_thread")]
async fn data_dir_from_environment_is_honoured() {
    if kvd_only("data_dir_from_environment_is_honoured") {
        return;
    }
    let dir = TestDir::new();
    let (client_port, peer_port) = (free_port(), free_port());
    let env_dir = dir.path().join("env-data");
    let mut args = single_member_args("n1", &env_dir, client_port, peer_port, "env-token");
    let at = args.iter().position(|a| a == "--data-dir").expect("flag");
    args.drain(at..at + 2);
    let cwd = dir.path().join("cwd");
    std::fs::create_dir(&cwd).expect("mkdir");
    let mut spec = ServerSpec::new(args, &cwd, &dir.path().join("server.log"));
    spec.envs
        .push(("KVD_DATA_DIR".into(), env_dir.to_string_lossy().into()));
    let mut server = Server::start(spec);
    wait_single_ready(&mut server, client_port).await;

    let endpoint = vec![format!("http://127.0.0.1:{client_port}")];
    let mut client = common::connect(&endpoint).await;
    client.put("env", "dir", None).await.expect("put");
    assert!(env_dir.is_dir(), "KVD_DATA_DIR is used");
    assert!(
        std::fs::read_dir(&env_dir)
            .expect("read env dir")
            .next()
            .is_some(),
        "data written under KVD_DATA_DIR"
    );
    let in_cwd: Vec<_> = std::fs::read_dir(&cwd).expect("read cwd").collect();
    assert!(
        in_cwd.is_empty(),
        "nothing written to the working directory: {in_cwd:?}"
    );

    // Restarted with the same environment, the data is there.
    server.restart();
    wait_single_ready(&mut server, client_port).await;
    let mut client = common::connect(&endpoint).await;
    let resp = client.get("env", None).await.expect("get");
    assert_eq!(resp.kvs().len(), 1);
    assert_eq!(resp.kvs()[0].value(), b"dir");
}

/// The scheduling policy (`sched(7)`: 0 SCHED_OTHER, 3 SCHED_BATCH) of each
/// thread of process `pid`, by thread name.
fn thread_policies(pid: u32) -> Vec<(String, u32)> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).expect("tasks") {
        let stat =
            std::fs::read_to_string(task.expect("task").path().join("stat")).expect("task stat");
        let (head, rest) = stat.rsplit_once(')').expect("comm");
        let name = head.split_once('(').expect("comm").1.to_string();
        // Fields after the name start at field 3 (state); policy is 41.
        let policy = rest
            .split_whitespace()
            .nth(41 - 3)
            .expect("policy field")
            .parse()
            .expect("policy");
        out.push((name, policy));
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn member_threads_run_under_batch_scheduling_unless_turned_off() {
    if kvd_only("member_threads_run_under_batch_scheduling_unless_turned_off") {
        return;
    }
    const SCHED_OTHER: u32 = 0;
    const SCHED_BATCH: u32 = 3;
    // A sandbox may refuse the policy (the member then keeps the default
    // one, by design): only what this machine allows is checked.
    let batch_allowed = std::process::Command::new("chrt")
        .args(["-b", "0", "true"])
        .status()
        .is_ok_and(|s| s.success());
    let mut cases = vec![(Some("--batch-scheduling=false"), SCHED_OTHER)];
    if batch_allowed {
        cases.push((None, SCHED_BATCH));
    } else {
        eprintln!(
            "this machine refuses SCHED_BATCH (chrt -b): checking --batch-scheduling=false only"
        );
    }
    for (extra, want) in cases {
        let dir = TestDir::new();
        let (client_port, peer_port) = (free_port(), free_port());
        let mut args = single_member_args(
            "n1",
            &dir.path().join("data"),
            client_port,
            peer_port,
            "sched-token",
        );
        args.extend(extra.map(String::from));
        let mut server = Server::start(ServerSpec::new(
            args,
            dir.path(),
            &dir.path().join("server.log"),
        ));
        wait_single_ready(&mut server, client_port).await;
        let mut client = common::connect(&[format!("http://127.0.0.1:{client_port}")]).await;
        client.put("k", "v", None).await.expect("put");

        let threads = thread_policies(server.pid().expect("running"));
        for name in ["raft", "tokio-rt-worker", "fjall:worker"] {
            assert!(
                threads.iter().any(|(n, _)| n == name),
                "no {name} thread in {threads:?}"
            );
        }
        assert!(
            threads.iter().all(|(_, policy)| *policy == want),
            "with {extra:?} every thread's policy is {want}: {threads:?}"
        );
    }
}
