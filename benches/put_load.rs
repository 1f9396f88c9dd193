//! Put load against a real member: throughput, latency and fsyncs per put.
//!
//! Starts `kvd serve` (single member, temp data dir, free ports), runs
//! `CLIENTS` concurrent writers over `CONNS` connections for `PUTS` puts in
//! all, and reads `/metrics` before and after to count fsyncs
//! (`etcd_disk_wal_fsync_duration_seconds_count`) and applied entries. With
//! `/usr/bin/etcd` present (Debian `etcd-server`) the same load runs
//! against etcd too, side by side. Run with `make bench`.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use etcd_client::Client;

const CLIENTS: usize = 100;
const CONNS: usize = 10;
const PUTS: usize = 20_000;
const VALUE_BYTES: usize = 256;

fn free_port() -> u16 {
    loop {
        let t = TcpListener::bind("127.0.0.1:0").expect("bind tcp");
        let port = t.local_addr().expect("addr").port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

fn metric(port: u16, name: &str) -> f64 {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect /metrics");
    write!(s, "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").expect("write");
    let mut body = String::new();
    s.read_to_string(&mut body).expect("read");
    body.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

struct Server {
    child: Child,
    client_port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(bin: &str, is_etcd: bool) -> Server {
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
        "--listen-client-urls",
        &format!("http://127.0.0.1:{c}"),
        "--advertise-client-urls",
        &format!("http://127.0.0.1:{c}"),
        "--listen-peer-urls",
        &format!("http://127.0.0.1:{p}"),
        "--initial-advertise-peer-urls",
        &format!("http://127.0.0.1:{p}"),
        "--initial-cluster",
        &format!("b1=http://127.0.0.1:{p}"),
    ]);
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

async fn connect(port: u16) -> Client {
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

struct Figures {
    puts_per_s: f64,
    p50: Duration,
    p99: Duration,
    fsyncs: f64,
    applied: f64,
}

async fn load(port: u16) -> Figures {
    let mut conns = Vec::new();
    for _ in 0..CONNS {
        conns.push(connect(port).await);
    }
    let fsync0 = metric(port, "etcd_disk_wal_fsync_duration_seconds_count");
    let applied0 = metric(port, "etcd_server_proposals_applied_total");
    let value = vec![b'v'; VALUE_BYTES];
    let start = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..CLIENTS {
        let mut kv = conns[i % CONNS].kv_client();
        let value = value.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(PUTS / CLIENTS);
            for j in 0..PUTS / CLIENTS {
                let t = Instant::now();
                kv.put(format!("bench/{i}/{j}"), value.clone(), None)
                    .await
                    .expect("put");
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.expect("writer"));
    }
    let elapsed = start.elapsed();
    lat.sort();
    let fsyncs = metric(port, "etcd_disk_wal_fsync_duration_seconds_count") - fsync0;
    let applied = metric(port, "etcd_server_proposals_applied_total") - applied0;
    Figures {
        puts_per_s: lat.len() as f64 / elapsed.as_secs_f64(),
        p50: lat[lat.len() / 2],
        p99: lat[lat.len() * 99 / 100],
        fsyncs,
        applied,
    }
}

fn report(name: &str, f: &Figures) {
    println!(
        "{name:<5} {:>9.0} puts/s  p50 {:>7.2} ms  p99 {:>7.2} ms  fsyncs {:>6}  applied {:>6}  puts/fsync {:>6.1}",
        f.puts_per_s,
        f.p50.as_secs_f64() * 1e3,
        f.p99.as_secs_f64() * 1e3,
        f.fsyncs,
        f.applied,
        PUTS as f64 / f.fsyncs.max(1.0),
    );
}

#[tokio::main]
async fn main() {
    println!("put load: {PUTS} puts of {VALUE_BYTES} B, {CLIENTS} clients over {CONNS} connections, 1 member");
    let kvd = start(env!("CARGO_BIN_EXE_kvd"), false);
    let f = load(kvd.client_port).await;
    report("kvd", &f);
    drop(kvd);
    if std::path::Path::new("/usr/bin/etcd").exists() {
        let etcd = start("/usr/bin/etcd", true);
        let f = load(etcd.client_port).await;
        report("etcd", &f);
    } else {
        println!("etcd: /usr/bin/etcd not found (apt-get install etcd-server to compare)");
    }
}
