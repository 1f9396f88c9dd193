//! Starting members without `--initial-cluster`, and under systemd: a
//! 3-member cluster bootstrapped by a discovery URL that another kvd serves
//! (and a fourth member refused: the cluster is full), one bootstrapped by
//! DNS SRV records from a DNS server the test runs (then found by `kvd
//! ctl`, `kvd member` and `kvd backup` through `_etcd-client` records), and
//! `READY=1` / `STOPPING=1` on a fake `NOTIFY_SOCKET`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

mod common;

use std::path::Path;
use std::time::Duration;

use common::{
    etcdctl, free_port, stdout_ok, wait_for, Server, ServerSpec, TestDir, ELECTION_MS, HEARTBEAT_MS,
};

/// `kvd serve` flags of member `name` on its own ports, without any
/// bootstrap flag; returns them with its client URL.
fn member_args(dir: &Path, name: &str, client: u16, peer: u16) -> (Vec<String>, String) {
    let client_url = format!("http://127.0.0.1:{client}");
    let peer_url = format!("http://127.0.0.1:{peer}");
    let args = vec![
        format!("--name={name}"),
        format!("--data-dir={}", dir.join(name).display()),
        format!("--listen-client-urls={client_url}"),
        format!("--advertise-client-urls={client_url}"),
        format!("--listen-peer-urls={peer_url}"),
        format!("--initial-advertise-peer-urls={peer_url}"),
        format!("--heartbeat-interval={HEARTBEAT_MS}"),
        format!("--election-timeout={ELECTION_MS}"),
    ];
    (args, client_url)
}

/// Waits until `endpoint` lists `n` started members.
async fn wait_members(endpoint: &str, n: usize) -> String {
    wait_for("the members to start", Duration::from_secs(30), || async {
        let out = etcdctl(&[endpoint.to_string()], &["member", "list"]).await;
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        // Published: every member shows its own name and client URL.
        let published = !text.contains(", , ");
        if out.status.success() && text.matches(", started, ").count() == n && published {
            Ok(text)
        } else {
            Err(format!("{text}{}", String::from_utf8_lossy(&out.stderr)))
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cluster_bootstraps_from_a_discovery_url_served_by_kvd() {
    let dir = TestDir::new();
    let (host_args, host) = member_args(dir.path(), "host", free_port(), free_port());
    let _host = Server::start(ServerSpec::new(
        host_args,
        dir.path(),
        &dir.path().join("host.log"),
    ));
    let url = format!("{host}/v2/keys/discovery/6c007a14875d53d9bf0ef5a6fc0257c817f0fb83");
    // The seeds' way of making a discovery URL for 3 members.
    wait_for("the host to serve", Duration::from_secs(20), || async {
        let out = std::process::Command::new("curl")
            .args([
                "-s",
                "-f",
                "-X",
                "PUT",
                &format!("{url}/_config/size"),
                "-d",
                "value=3",
            ])
            .output()
            .unwrap();
        if out.status.success() {
            Ok(())
        } else {
            Err("not yet".to_string())
        }
    })
    .await;

    let mut members = Vec::new();
    let mut endpoints = Vec::new();
    for name in ["m1", "m2", "m3"] {
        let (mut args, client) = member_args(dir.path(), name, free_port(), free_port());
        args.push(format!("--discovery={url}"));
        members.push(Server::start(ServerSpec::new(
            args,
            dir.path(),
            &dir.path().join(format!("{name}.log")),
        )));
        endpoints.push(client);
    }
    let list = wait_members(&endpoints[0], 3).await;
    for name in ["m1", "m2", "m3"] {
        assert!(list.contains(&format!(", {name}, ")), "{list}");
    }
    stdout_ok(&["put"], &etcdctl(&endpoints, &["put", "k", "v"]).await);
    let got = etcdctl(&[endpoints[2].clone()], &["get", "k"]).await;
    assert_eq!(stdout_ok(&["get"], &got), "k\nv\n");

    // The registrations, as the host shows them.
    let out = std::process::Command::new("curl")
        .args(["-s", &url])
        .output()
        .unwrap();
    let listing: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        listing["node"]["nodes"].as_array().unwrap().len(),
        3,
        "{listing}"
    );

    // A fourth member finds the cluster full.
    let (mut args, _) = member_args(dir.path(), "m4", free_port(), free_port());
    args.push(format!("--discovery={url}"));
    let out = ServerSpec::new(args, dir.path(), &dir.path().join("m4.log"))
        .run_to_exit(Duration::from_secs(20));
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr)
            .trim_end()
            .lines()
            .last(),
        Some("error: failed to join discovery cluster (discovery: cluster is full)")
    );

    // A discovery URL without a size.
    let (mut args, _) = member_args(dir.path(), "m5", free_port(), free_port());
    args.push(format!("--discovery={host}/v2/keys/discovery/nosize"));
    let out = ServerSpec::new(args, dir.path(), &dir.path().join("m5.log"))
        .run_to_exit(Duration::from_secs(20));
    assert!(String::from_utf8_lossy(&out.stderr).contains("discovery: size key not found"));

    // Restarted with data, a member reads the list again, registers nothing.
    members[0].kill();
    members[0].restart();
    wait_members(&endpoints[0], 3).await;
    assert!(members[0].log().contains("restart=true"));
    let out = std::process::Command::new("curl")
        .args(["-s", &url])
        .output()
        .unwrap();
    let listing: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        listing["node"]["nodes"].as_array().unwrap().len(),
        3,
        "{listing}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cluster_bootstraps_from_dns_srv_records() {
    let dir = TestDir::new();
    let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
    let dns = common::dns::start(vec![
        (
            "_etcd-server._tcp.kvd.test.".to_string(),
            ports
                .iter()
                .enumerate()
                .map(|(i, p)| (format!("m{}.kvd.test.", i + 1), p.1))
                .collect(),
        ),
        (
            "_etcd-client._tcp.kvd.test.".to_string(),
            ports
                .iter()
                .map(|p| ("127.0.0.1.".to_string(), p.0))
                .collect(),
        ),
    ]);
    let resolver = ("KVD_DNS_SERVER".to_string(), dns.addr.to_string());
    let mut members = Vec::new();
    for (i, (client, peer)) in ports.iter().enumerate() {
        let name = format!("m{}", i + 1);
        let (mut args, _) = member_args(dir.path(), &name, *client, *peer);
        args.push("--discovery-srv=kvd.test".to_string());
        let mut spec = ServerSpec::new(args, dir.path(), &dir.path().join(format!("{name}.log")));
        spec.envs.push(resolver.clone());
        members.push(Server::start(spec));
    }
    let first = format!("http://127.0.0.1:{}", ports[0].0);
    let list = wait_members(&first, 3).await;
    for name in ["m1", "m2", "m3"] {
        assert!(list.contains(&format!(", {name}, ")), "{list}");
    }

    // The client modes find the members through _etcd-client records.
    let kvd = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_kvd"))
            .args(args)
            .env("KVD_DNS_SERVER", dns.addr.to_string())
            .env_remove("ETCDCTL_ENDPOINTS")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "kvd {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    kvd(&["ctl", "--discovery-srv", "kvd.test", "put", "srv", "found"]);
    assert_eq!(
        kvd(&["ctl", "-d", "kvd.test", "get", "srv"]),
        "srv\nfound\n"
    );
    assert_eq!(
        kvd(&["ctl", "-d", "kvd.test", "endpoint", "health", "-w", "json"])
            .matches("\"health\":true")
            .count(),
        3
    );
    assert_eq!(
        kvd(&["member", "list", "--discovery-srv", "kvd.test"])
            .lines()
            .count(),
        3
    );
    let backup = dir.path().join("srv.db");
    kvd(&[
        "backup",
        "save",
        "--discovery-srv",
        "kvd.test",
        &backup.to_string_lossy(),
    ]);
    assert!(backup.metadata().unwrap().len() > 0);

    // No records for the domain: etcd's error.
    let (mut args, _) = member_args(dir.path(), "m9", free_port(), free_port());
    args.push("--discovery-srv=nothing.test".to_string());
    let mut spec = ServerSpec::new(args, dir.path(), &dir.path().join("m9.log"));
    spec.envs.push(resolver);
    let out = spec.run_to_exit(Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("error querying DNS SRV records for _etcd-server-ssl"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn systemd_hears_ready_then_stopping() {
    let dir = TestDir::new();
    let socket_path = dir.path().join("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let (args, client) = member_args(dir.path(), "n1", free_port(), free_port());
    let mut spec = ServerSpec::new(args, dir.path(), &dir.path().join("n1.log"));
    spec.envs.push((
        "NOTIFY_SOCKET".to_string(),
        socket_path.to_string_lossy().to_string(),
    ));
    let mut server = Server::start(spec);
    let mut buf = [0u8; 256];
    let n = socket.recv(&mut buf).expect("READY=1 within 20s");
    assert_eq!(String::from_utf8_lossy(&buf[..n]).trim(), "READY=1");
    // Ready means serving.
    let put = etcdctl(&[client], &["put", "ready", "yes"]).await;
    assert_eq!(stdout_ok(&["put"], &put), "OK\n");
    server.terminate();
    let n = socket.recv(&mut buf).expect("STOPPING=1 on SIGTERM");
    assert_eq!(String::from_utf8_lossy(&buf[..n]).trim(), "STOPPING=1");
    assert_eq!(
        server
            .wait_exit(Duration::from_secs(10))
            .and_then(|s| s.code()),
        Some(0)
    );
}
