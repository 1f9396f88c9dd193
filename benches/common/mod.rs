//! What the benchmarks share: free ports, `/metrics` scraping, and a
//! single-member server (kvd or etcd) in a temp dir.

#![allow(dead_code)] // each bench uses a different subset

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use etcd_client::Client;

/// A port free for both TCP (clients) and UDP (QUIC peers) on 127.0.0.1.
pub fn free_port() -> u16 {
    loop {
        let t = TcpListener::bind("127.0.0.1:0").expect("bind tcp");
        let port = t.local_addr().expect("addr").port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// One sample of a Prometheus metric on `GET /metrics` (0 when absent,
/// -1 when the server does not answer).
pub fn metric(port: u16, name: &str) -> f64 {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return -1.0;
    };
    let _ = write!(s, "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    body.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// A single-member server process, killed on drop.
pub struct Server {
    /// The process.
    pub child: Child,
    /// Its client port.
    pub client_port: u16,
    /// Its data dir, removed on drop.
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Resident memory of the server process, bytes.
    pub fn rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("read /proc/<pid>/status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|kb| kb.parse::<u64>().ok())
            .map(|kb| kb * 1024)
            .expect("VmRSS in /proc/<pid>/status")
    }
}

/// Starts `bin` (kvd, or etcd when `is_etcd`) as a one-member cluster on
/// free ports with etcd's flags.
pub fn start(bin: &str, is_etcd: bool) -> Server {
    let dir = tempfile::tempdir().expect("tempdir");
    let (c, p) = (free_port(), free_port());
    let data = dir.path().join("data");
    let mut cmd = Command::new(bin);
    if !is_etcd {
        cmd.arg("serve");
    }
    cmd.args([
        "--name",
        "b1",
        "--data-dir",
        data.to_str().expect("utf-8 path"),
    ])
    .args(["--listen-client-urls", &format!("http://127.0.0.1:{c}")])
    .args(["--advertise-client-urls", &format!("http://127.0.0.1:{c}")])
    .args(["--listen-peer-urls", &format!("http://127.0.0.1:{p}")])
    .args([
        "--initial-advertise-peer-urls",
        &format!("http://127.0.0.1:{p}"),
    ])
    .args(["--initial-cluster", &format!("b1=http://127.0.0.1:{p}")]);
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn server");
    Server {
        child,
        client_port: c,
        _dir: dir,
    }
}

/// A client on `port` once a put goes through (20 s at most).
pub async fn connect(port: u16) -> Client {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(mut c) = Client::connect([format!("127.0.0.1:{port}")], None).await {
            if c.put("warmup", "x", None).await.is_ok() {
                return c;
            }
        }
        assert!(
            Instant::now() < deadline,
            "server on {port} did not come up"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
