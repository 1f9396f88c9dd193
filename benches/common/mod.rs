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
    /// Its peer port (0 when unknown).
    pub peer_port: u16,
    /// Its data dir, removed on drop.
    _dir: tempfile::TempDir,
    /// The command that started it (program, arguments), for restarts.
    command: Option<(String, Vec<String>)>,
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
        rss_of(self.child.id()).expect("VmRSS in /proc/<pid>/status")
    }
}

/// Puts `keys` keys `<prefix>/<8 digits>` with values of `value_bytes`
/// bytes, from `writers` concurrent clients of `c`'s connection.
pub async fn put_values(c: &Client, prefix: &str, keys: usize, value_bytes: usize, writers: usize) {
    let mut tasks = Vec::new();
    for w in 0..writers {
        let mut kv = c.kv_client();
        let value = vec![b'x'; value_bytes];
        let prefix = prefix.to_string();
        tasks.push(tokio::spawn(async move {
            for i in (w..keys).step_by(writers) {
                kv.put(format!("{prefix}/{i:08}"), value.clone(), None)
                    .await
                    .expect("put");
            }
        }));
    }
    for t in tasks {
        t.await.expect("writer");
    }
}

/// Resident memory of process `pid`, bytes (`None` once it is gone).
pub fn rss_of(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|kb| kb.parse::<u64>().ok())
        .map(|kb| kb * 1024)
}

/// CPU time (user + system) process `pid` has used so far, from
/// `/proc/<pid>/stat` (fields 14 and 15, in clock ticks of 10 ms:
/// `sysconf(_SC_CLK_TCK)` is 100 on Linux).
pub fn cpu_of(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces: count after its ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
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
        peer_port: p,
        _dir: dir,
        command: None,
    }
}

/// A client on `port` once a put goes through (20 s at most).
pub async fn connect(port: u16) -> Client {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(c) = put_through(port).await {
            return c;
        }
        assert!(
            Instant::now() < deadline,
            "server on {port} did not come up"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A client on `port` if a put goes through now.
async fn put_through(port: u16) -> Option<Client> {
    let mut c = Client::connect([format!("127.0.0.1:{port}")], None)
        .await
        .ok()?;
    c.put("warmup", "x", None).await.ok()?;
    Some(c)
}

/// A cluster of server processes (kvd or etcd) on free ports, killed and
/// removed on drop.
pub struct Cluster {
    /// The members, in `--initial-cluster` order.
    pub members: Vec<Server>,
}

impl Cluster {
    /// Client endpoints (`127.0.0.1:port`), one per member.
    pub fn endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| format!("127.0.0.1:{}", m.client_port))
            .collect()
    }

    /// Resident memory of every member, bytes.
    pub fn rss(&self) -> Vec<u64> {
        self.members.iter().map(Server::rss).collect()
    }

    /// CPU (user + system) all members have used so far.
    pub fn cpu(&self) -> Duration {
        self.members
            .iter()
            .filter_map(|m| cpu_of(m.child.id()))
            .sum()
    }
}

/// Bytes allocated under `path` on disk (blocks × 512, as `du` counts;
/// a directory is walked).
pub fn dir_bytes(path: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    if !meta.is_dir() {
        return meta.blocks() * 512;
    }
    std::fs::read_dir(path)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| dir_bytes(&e.path()))
                .sum()
        })
        .unwrap_or(0)
}

/// Starts `bin` with `args`, its standard error appended to `log` (so a
/// member that does not come up can say why).
fn spawn(bin: &str, args: &[String], log: &std::path::Path) -> Child {
    let stderr = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("server log");
    Command::new(bin)
        .args(args)
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("spawn server")
}

/// Waits until a put goes through `m` (20 s at most); otherwise panics with
/// whether the process is still running and the end of its log.
async fn connect_member(m: &mut Server) {
    let port = m.client_port;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if put_through(port).await.is_some() {
            return;
        }
        if Instant::now() >= deadline {
            let state = match m.child.try_wait() {
                Ok(Some(status)) => format!("exited: {status}"),
                _ => "still running".to_string(),
            };
            let log = std::fs::read_to_string(m._dir.path().join("server.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            panic!(
                "server on {port} did not come up ({state}); its log ends:\n{}",
                tail.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

impl Server {
    /// Kills the process with SIGKILL and starts it again on the same data
    /// dir and ports (members of [`start_cluster`] only).
    pub fn kill_and_restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let (bin, args) = self.command.as_ref().expect("a cluster member");
        self.child = spawn(bin, args, &self._dir.path().join("server.log"));
    }

    /// This member's data dir.
    pub fn data_dir(&self) -> std::path::PathBuf {
        self._dir.path().join("data")
    }
}

/// Starts `n` members of `bin` (kvd, or etcd when `is_etcd`) as a new
/// cluster on free ports with etcd's flags plus `extra` (the same for
/// every member), and waits until a put goes through.
pub async fn start_cluster(bin: &str, is_etcd: bool, n: usize, extra: &[&str]) -> Cluster {
    let ports: Vec<(u16, u16)> = (0..n).map(|_| (free_port(), free_port())).collect();
    let initial = ports
        .iter()
        .enumerate()
        .map(|(i, (_, p))| format!("m{i}=http://127.0.0.1:{p}"))
        .collect::<Vec<_>>()
        .join(",");
    let mut members = Vec::new();
    for (i, (c, p)) in ports.iter().enumerate() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        let mut args: Vec<String> = Vec::new();
        if !is_etcd {
            args.push("serve".into());
        }
        for (flag, value) in [
            ("--name", format!("m{i}")),
            ("--data-dir", data.to_str().expect("utf-8 path").to_string()),
            ("--listen-client-urls", format!("http://127.0.0.1:{c}")),
            ("--advertise-client-urls", format!("http://127.0.0.1:{c}")),
            ("--listen-peer-urls", format!("http://127.0.0.1:{p}")),
            (
                "--initial-advertise-peer-urls",
                format!("http://127.0.0.1:{p}"),
            ),
            ("--initial-cluster", initial.clone()),
            ("--initial-cluster-state", "new".to_string()),
        ] {
            args.push(flag.into());
            args.push(value);
        }
        args.extend(extra.iter().map(|a| a.to_string()));
        let log = dir.path().join("server.log");
        members.push(Server {
            child: spawn(bin, &args, &log),
            client_port: *c,
            peer_port: *p,
            _dir: dir,
            command: Some((bin.to_string(), args)),
        });
    }
    for m in &mut members {
        connect_member(m).await;
    }
    Cluster { members }
}
