//! Test harness: real `kvd serve` processes on 127.0.0.1, driven over the wire
//! with the `etcd-client` crate and with `etcdctl`, as a user would.
//!
//! A [`Cluster`] starts N members on free ports (client port TCP, peer port
//! UDP and TCP both checked free), each with its data dir under one temporary
//! directory and its stdout/stderr in `<tmp>/<name>.log`. Members are killed
//! with SIGKILL on drop; when a test panics, the tail of every member's log is
//! printed and the temporary directory is kept for inspection.
//!
//! Setting `KVD_TEST_ETCD=/usr/bin/etcd` runs the same tests against a real
//! etcd (same flags, no `serve` subcommand): that is how the expectations in
//! these tests were checked, and how `tests/golden/record.sh` records goldens.

#![allow(dead_code)]

pub mod dns;
pub mod pki;
pub mod proxy;
pub mod raw;

use std::collections::HashSet;
use std::fmt::Debug;
use std::fs::{File, OpenOptions};
use std::future::Future;
use std::io::Write;
use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use etcd_client::{Client, ConnectOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Raft heartbeat interval given to every test member, milliseconds.
pub const HEARTBEAT_MS: u64 = 50;
/// Raft election timeout given to every test member, milliseconds.
pub const ELECTION_MS: u64 = 500;
/// How long a cluster may take to elect a leader after (re)start.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Per-request timeout of clients made by the harness.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Poll interval of the wait-for-condition helpers.
pub const POLL: Duration = Duration::from_millis(50);

// ---------------------------------------------------------------------------
// Which server runs
// ---------------------------------------------------------------------------

/// The program under test: `kvd serve` by default, or a real etcd when
/// `KVD_TEST_ETCD` names its binary.
#[derive(Debug, Clone)]
pub struct ServerBinary {
    pub program: PathBuf,
    /// Arguments placed before the flags (`serve` for kvd, none for etcd).
    pub prefix: Vec<String>,
    pub is_etcd: bool,
}

pub fn server_binary() -> ServerBinary {
    match std::env::var_os("KVD_TEST_ETCD") {
        Some(path) if !path.is_empty() => ServerBinary {
            program: PathBuf::from(path),
            prefix: Vec::new(),
            is_etcd: true,
        },
        _ => ServerBinary {
            program: PathBuf::from(env!("CARGO_BIN_EXE_kvd")),
            prefix: vec!["serve".to_string()],
            is_etcd: false,
        },
    }
}

/// True when the suite runs against a real etcd instead of kvd.
pub fn against_etcd() -> bool {
    server_binary().is_etcd
}

// ---------------------------------------------------------------------------
// Ports
// ---------------------------------------------------------------------------

fn handed_out() -> &'static Mutex<HashSet<u16>> {
    static PORTS: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    PORTS.get_or_init(|| Mutex::new(HashSet::new()))
}

/// A port on 127.0.0.1 that is free for both TCP and UDP right now and was
/// never handed out before in this test process.
pub fn free_port() -> u16 {
    for _ in 0..1000 {
        let tcp = TcpListener::bind("127.0.0.1:0").expect("bind tcp port 0");
        let port = tcp.local_addr().expect("local addr").port();
        let Ok(udp) = UdpSocket::bind(("127.0.0.1", port)) else {
            continue;
        };
        let mut set = handed_out().lock().unwrap_or_else(|e| e.into_inner());
        if set.insert(port) {
            drop(udp);
            drop(tcp);
            return port;
        }
    }
    panic!("no free port found");
}

/// Serializes tests of one test binary that must not share the CPU with the
/// other tests of that binary (the ones that assert a bound on recovery time).
/// Hold the guard for the whole test.
pub async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    SERIAL.lock().await
}

fn unique_token() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "kvd-test-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

// ---------------------------------------------------------------------------
// One server process
// ---------------------------------------------------------------------------

/// How to start one server process; kept so that it can be restarted with
/// exactly the same flags, environment and data dir.
#[derive(Debug, Clone)]
pub struct ServerSpec {
    pub binary: ServerBinary,
    /// Flags after the subcommand.
    pub args: Vec<String>,
    /// Extra environment (all inherited `KVD_*`/`ETCD_*` variables are removed).
    pub envs: Vec<(String, String)>,
    pub cwd: PathBuf,
    /// Where stdout and stderr go (appended across restarts).
    pub log_path: PathBuf,
}

impl ServerSpec {
    pub fn new(args: Vec<String>, cwd: &Path, log_path: &Path) -> Self {
        ServerSpec {
            binary: server_binary(),
            args,
            envs: Vec::new(),
            cwd: cwd.to_path_buf(),
            log_path: log_path.to_path_buf(),
        }
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.binary.program);
        cmd.args(&self.binary.prefix).args(&self.args);
        for (key, _) in std::env::vars_os() {
            let k = key.to_string_lossy();
            if k.starts_with("KVD_") || k.starts_with("ETCD_") || k.starts_with("ETCDCTL_") {
                cmd.env_remove(&key);
            }
        }
        cmd.env("RUST_BACKTRACE", "1");
        // Plain logs: they end up in files and in test failure output.
        cmd.env("NO_COLOR", "1");
        for (k, v) in &self.envs {
            cmd.env(k, v);
        }
        cmd.current_dir(&self.cwd);
        cmd
    }

    /// Runs the server to completion (it is expected to exit by itself, e.g.
    /// on a bad configuration) with stdout and stderr captured separately.
    /// Kills it and panics if it is still running after `timeout`.
    pub fn run_to_exit(&self, timeout: Duration) -> Output {
        let out_path = self.log_path.with_extension("stdout");
        let err_path = self.log_path.with_extension("stderr");
        let mut cmd = self.command();
        cmd.stdin(Stdio::null())
            .stdout(File::create(&out_path).expect("create stdout file"))
            .stderr(File::create(&err_path).expect("create stderr file"));
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {:?}: {e}", self.binary.program));
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "server with args {:?} did not exit within {timeout:?}; stderr:\n{}",
                    self.args,
                    std::fs::read_to_string(&err_path).unwrap_or_default()
                );
            }
            std::thread::sleep(POLL);
        };
        Output {
            status,
            stdout: std::fs::read(&out_path).unwrap_or_default(),
            stderr: std::fs::read(&err_path).unwrap_or_default(),
        }
    }
}

/// A running (or killed) server process. Killed with SIGKILL on drop.
pub struct Server {
    pub spec: ServerSpec,
    child: Option<Child>,
    starts: u32,
    /// Set when an owner (a [`Cluster`]) already printed this log on panic.
    log_printed: bool,
}

impl Server {
    /// Starts the process; stdout and stderr are appended to `spec.log_path`.
    pub fn start(spec: ServerSpec) -> Server {
        let mut server = Server {
            spec,
            child: None,
            starts: 0,
            log_printed: false,
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "server already running");
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.spec.log_path)
            .expect("open log file");
        self.starts += 1;
        writeln!(
            log,
            "=== harness: start #{} of {:?} {:?} {:?}",
            self.starts, self.spec.binary.program, self.spec.binary.prefix, self.spec.args
        )
        .expect("write log file");
        let mut cmd = self.spec.command();
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log file"))
            .stderr(log);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {:?}: {e}", self.spec.binary.program));
        self.child = Some(child);
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL and reap. No-op when not running.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            if let Ok(mut log) = OpenOptions::new().append(true).open(&self.spec.log_path) {
                let _ = writeln!(log, "=== harness: killed with SIGKILL");
            }
        }
    }

    /// Sends SIGTERM (a graceful stop); see [`Server::wait_exit`]. No-op
    /// when not running.
    pub fn terminate(&mut self) {
        if let Some(child) = self.child.as_ref() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
        }
    }

    /// Starts the process again with the same flags, environment and data dir.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// True while the process has been started, not killed, and not exited.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            None => false,
            Some(child) => matches!(child.try_wait(), Ok(None)),
        }
    }

    /// True when the harness started the process and did not kill it (it may
    /// still have exited by itself: see [`Server::exit_status`]).
    pub fn is_started(&self) -> bool {
        self.child.is_some()
    }

    /// Exit status if the process exited by itself.
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Waits (polling) until the process exits, up to `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.exit_status() {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(POLL);
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.spec.log_path).unwrap_or_default()
    }

    /// Resident memory of the running process, bytes (`VmRSS` in
    /// `/proc/<pid>/status`); `None` when it is not running.
    pub fn rss_bytes(&self) -> Option<u64> {
        let pid = self.child.as_ref()?.id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    }

    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.log(), lines)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() && !self.log_printed {
            eprintln!(
                "----- tail of {} -----\n{}\n----- end -----",
                self.spec.log_path.display(),
                self.log_tail(80)
            );
        }
    }
}

pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

// ---------------------------------------------------------------------------
// Cluster
// ---------------------------------------------------------------------------

/// One member of a test cluster.
pub struct Member {
    pub name: String,
    pub client_port: u16,
    pub peer_port: u16,
    pub data_dir: PathBuf,
    pub server: Server,
    /// The harness's TLS material when the client URL is https.
    pub tls: Option<ClientFiles>,
}

impl Member {
    /// `http://127.0.0.1:<client port>` (`https://` with TLS).
    pub fn endpoint(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.client_port)
    }
}

/// The PEM files a TLS client of the harness uses: the CA that signed the
/// servers' certificates, and a client certificate and key.
#[derive(Debug, Clone)]
pub struct ClientFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl ClientFiles {
    /// etcd-client's TLS options for these files.
    pub fn options(&self) -> etcd_client::TlsOptions {
        let read = |p: &Path| std::fs::read(p).unwrap_or_else(|e| panic!("read {p:?}: {e}"));
        etcd_client::TlsOptions::new()
            .ca_certificate(etcd_client::Certificate::from_pem(read(&self.ca)))
            .identity(etcd_client::Identity::from_pem(
                read(&self.cert),
                read(&self.key),
            ))
    }

    /// etcdctl's flags for these files.
    pub fn etcdctl_args(&self) -> Vec<String> {
        vec![
            format!("--cacert={}", self.ca.display()),
            format!("--cert={}", self.cert.display()),
            format!("--key={}", self.key.display()),
        ]
    }
}

/// Options for [`Cluster::start_with`].
#[derive(Debug, Clone, Default)]
pub struct ClusterOptions {
    /// Flags appended to every member's command line.
    pub extra_args: Vec<String>,
    /// With TLS material: client URLs are https (the server's own TLS
    /// flags go in `extra_args`) and the harness talks TLS with these.
    pub client_tls: Option<ClientFiles>,
}

/// What a member of a cluster about to start will be started with.
pub struct MemberPlan {
    pub name: String,
    pub data_dir: PathBuf,
    pub peer_url: String,
    pub initial_cluster: String,
    pub token: String,
}

/// N members of one cluster, bootstrapped together with `--initial-cluster`.
pub struct Cluster {
    pub members: Vec<Member>,
    pub token: String,
    dir: Option<tempfile::TempDir>,
}

impl Cluster {
    /// Starts `size` members and waits until they agree on a leader.
    pub async fn start(size: usize) -> Cluster {
        Self::start_with(size, ClusterOptions::default()).await
    }

    pub async fn start_with(size: usize, options: ClusterOptions) -> Cluster {
        let mut cluster = Self::spawn(size, options);
        cluster.wait_ready().await;
        cluster
    }

    /// Starts the processes without waiting for a leader.
    pub fn spawn(size: usize, options: ClusterOptions) -> Cluster {
        Self::spawn_prepared(size, options, |_| {})
    }

    /// As [`Self::spawn`], but first calls `prepare` for each member (e.g.
    /// to restore its data dir from a snapshot) before any process starts.
    pub fn spawn_prepared(
        size: usize,
        options: ClusterOptions,
        mut prepare: impl FnMut(&MemberPlan),
    ) -> Cluster {
        let dir = tempfile::Builder::new()
            .prefix("kvd-test-")
            .tempdir()
            .expect("create temp dir");
        let token = unique_token();
        let ports: Vec<(u16, u16)> = (0..size).map(|_| (free_port(), free_port())).collect();
        let initial_cluster = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| format!("n{}=http://127.0.0.1:{peer}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        let mut members = Vec::new();
        for (i, (client_port, peer_port)) in ports.into_iter().enumerate() {
            let name = format!("n{}", i + 1);
            let data_dir = dir.path().join(&name);
            let scheme = if options.client_tls.is_some() {
                "https"
            } else {
                "http"
            };
            let client_url = format!("{scheme}://127.0.0.1:{client_port}");
            let peer_url = format!("http://127.0.0.1:{peer_port}");
            let mut args: Vec<String> = [
                "--name",
                &name,
                "--data-dir",
                &data_dir.to_string_lossy(),
                "--listen-client-urls",
                &client_url,
                "--advertise-client-urls",
                &client_url,
                "--listen-peer-urls",
                &peer_url,
                "--initial-advertise-peer-urls",
                &peer_url,
                "--initial-cluster",
                &initial_cluster,
                "--initial-cluster-state",
                "new",
                "--initial-cluster-token",
                &token,
                "--heartbeat-interval",
                &HEARTBEAT_MS.to_string(),
                "--election-timeout",
                &ELECTION_MS.to_string(),
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            args.extend(options.extra_args.iter().cloned());
            prepare(&MemberPlan {
                name: name.clone(),
                data_dir: data_dir.clone(),
                peer_url: peer_url.clone(),
                initial_cluster: initial_cluster.clone(),
                token: token.clone(),
            });
            let log_path = dir.path().join(format!("{name}.log"));
            let spec = ServerSpec::new(args, dir.path(), &log_path);
            members.push(Member {
                name,
                client_port,
                peer_port,
                data_dir,
                server: Server::start(spec),
                tls: options.client_tls.clone(),
            });
        }
        Cluster {
            members,
            token,
            dir: Some(dir),
        }
    }

    pub fn size(&self) -> usize {
        self.members.len()
    }

    /// The temporary directory holding every member's data dir and log.
    pub fn dir(&self) -> &Path {
        self.dir.as_ref().expect("temp dir").path()
    }

    pub fn endpoint(&self, i: usize) -> String {
        self.members[i].endpoint()
    }

    /// Client URLs of all members, dead or alive.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(Member::endpoint).collect()
    }

    /// A client connected to member `i` only.
    pub async fn client(&self, i: usize) -> Client {
        connect_tls(&[self.endpoint(i)], self.members[i].tls.as_ref()).await
    }

    /// SIGKILL member `i` (and reap it).
    pub fn kill(&mut self, i: usize) {
        self.members[i].server.kill();
    }

    /// Start member `i` again with the same flags and data dir.
    pub fn restart(&mut self, i: usize) {
        self.members[i].server.restart();
    }

    pub fn kill_all(&mut self) {
        for m in &mut self.members {
            m.server.kill();
        }
    }

    /// Starts every member that is not running.
    pub fn start_all(&mut self) {
        for m in &mut self.members {
            if !m.server.is_running() {
                m.server.restart();
            }
        }
    }

    /// Indexes of the members the harness has started and not killed.
    pub fn live(&self) -> Vec<usize> {
        (0..self.size())
            .filter(|&i| self.members[i].server.is_started())
            .collect()
    }

    /// Panics (with its log) if a member that should be running has exited.
    pub fn assert_running(&mut self) {
        for m in &mut self.members {
            if m.server.is_started() {
                if let Some(status) = m.server.exit_status() {
                    panic!(
                        "member {} exited unexpectedly with {status}; log tail:\n{}",
                        m.name,
                        m.server.log_tail(60)
                    );
                }
            }
        }
    }

    /// Waits until every live member reports the same leader, which is itself
    /// a live member; returns that leader's index.
    pub async fn wait_ready(&mut self) -> usize {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            self.assert_running();
            let last = match self.try_leader().await {
                Ok(leader) => return leader,
                Err(why) => why,
            };
            if Instant::now() > deadline {
                panic!("cluster not ready within {READY_TIMEOUT:?}: {last}");
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The index of the current leader (waits, with a deadline, until the
    /// live members agree on one).
    pub async fn leader_index(&mut self) -> usize {
        self.wait_ready().await
    }

    /// Member id (as in response headers) of member `i`, asked from itself.
    pub async fn member_id(&self, i: usize) -> u64 {
        let status = status_of_tls(&self.endpoint(i), self.members[i].tls.as_ref())
            .await
            .unwrap_or_else(|e| panic!("status of member {i}: {e}"));
        status.0
    }

    async fn try_leader(&self) -> Result<usize, String> {
        let live = self.live();
        if live.is_empty() {
            return Err("no live member".into());
        }
        let mut leader = None;
        let mut ids = Vec::new();
        for &i in &live {
            let (member_id, leader_id) =
                status_of_tls(&self.endpoint(i), self.members[i].tls.as_ref())
                    .await
                    .map_err(|e| format!("status of {}: {e}", self.members[i].name))?;
            if leader_id == 0 {
                return Err(format!("{} reports no leader", self.members[i].name));
            }
            match leader {
                None => leader = Some(leader_id),
                Some(l) if l != leader_id => {
                    return Err(format!(
                        "members disagree on the leader ({l:x} vs {leader_id:x})"
                    ))
                }
                Some(_) => {}
            }
            ids.push((i, member_id));
        }
        let leader = leader.expect("at least one live member");
        ids.iter()
            .find(|(_, id)| *id == leader)
            .map(|(i, _)| *i)
            .ok_or_else(|| format!("leader {leader:x} is not a live member"))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Members print their own log tails when panicking (Server::drop).
        let panicking = std::thread::panicking();
        for m in &mut self.members {
            m.server.kill();
            if panicking {
                eprintln!(
                    "----- tail of {} ({}) -----\n{}\n----- end -----",
                    m.name,
                    m.server.spec.log_path.display(),
                    m.server.log_tail(80)
                );
                m.server.log_printed = true;
            }
        }
        if panicking {
            if let Some(dir) = self.dir.take() {
                let kept = dir.keep();
                eprintln!("test cluster files kept in {}", kept.display());
            }
        }
    }
}

/// (member_id from the header, leader) of the member at `endpoint`.
async fn status_of(endpoint: &str) -> Result<(u64, u64), String> {
    status_of_tls(endpoint, None).await
}

/// As [`status_of`], over TLS with `tls` when given.
async fn status_of_tls(endpoint: &str, tls: Option<&ClientFiles>) -> Result<(u64, u64), String> {
    let fut = async {
        let mut client = connect_tls(&[endpoint.to_string()], tls).await;
        client.status().await
    };
    match tokio::time::timeout(Duration::from_secs(2), fut).await {
        Err(_) => Err("timed out".into()),
        Ok(Err(e)) => Err(e.to_string()),
        Ok(Ok(status)) => {
            let member_id = status.header().map(|h| h.member_id()).unwrap_or(0);
            Ok((member_id, status.leader()))
        }
    }
}

/// A client for `endpoints`, with connect and request timeouts. Connecting
/// is lazy, so this succeeds even when no endpoint is up yet.
pub async fn connect(endpoints: &[String]) -> Client {
    connect_tls(endpoints, None).await
}

/// As [`connect`], over TLS with `tls` when given.
pub async fn connect_tls(endpoints: &[String], tls: Option<&ClientFiles>) -> Client {
    let mut options = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(2))
        .with_timeout(REQUEST_TIMEOUT);
    if let Some(tls) = tls {
        options = options.with_tls(tls.options());
    }
    Client::connect(endpoints, Some(options))
        .await
        .unwrap_or_else(|e| panic!("connect to {endpoints:?}: {e}"))
}

// ---------------------------------------------------------------------------
// Waiting
// ---------------------------------------------------------------------------

/// Polls `check` until it returns `Ok`, or panics with the last error after
/// `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let last = match tokio::time::timeout(Duration::from_secs(5), check()).await {
            Ok(Ok(value)) => return value,
            Ok(Err(e)) => e,
            Err(_) => "check timed out".to_string(),
        };
        if Instant::now() > deadline {
            panic!("{what}: not reached within {timeout:?}; last: {last}");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Waits (up to `timeout`) until a serializable read of `key` through
/// `client` finds it: the member behind `client` has applied it.
pub async fn wait_until_held(client: &Client, key: &str, what: &str, timeout: Duration) {
    wait_for(what, timeout, || {
        let mut c = client.clone();
        async move {
            let got = c
                .get(
                    key,
                    Some(etcd_client::GetOptions::new().with_serializable()),
                )
                .await
                .map_err(|e| e.to_string())?;
            if got.kvs().is_empty() {
                Err("not yet".to_string())
            } else {
                Ok(())
            }
        }
    })
    .await;
}

// ---------------------------------------------------------------------------
// Assertions on errors
// ---------------------------------------------------------------------------

/// Asserts that `result` is a gRPC error with exactly this code and message.
#[track_caller]
pub fn assert_status<T: Debug>(
    result: Result<T, etcd_client::Error>,
    code: tonic::Code,
    message: &str,
) {
    match result {
        Err(etcd_client::Error::GRpcStatus(status)) => {
            assert_eq!(
                (status.code(), status.message()),
                (code, message),
                "unexpected gRPC status {status:?}"
            );
        }
        Err(other) => panic!("expected gRPC status {code:?} {message:?}, got error {other:?}"),
        Ok(value) => panic!("expected gRPC status {code:?} {message:?}, got success {value:?}"),
    }
}

// ---------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    /// Header names lowercased.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == &name.to_ascii_lowercase())
            .map(|(_, v)| v.as_str())
    }
}

/// A counter or gauge from the member's `/metrics` on client port `port`
/// (0 when absent).
pub async fn metric(port: u16, name: &str) -> f64 {
    let resp = http_get(port, "/metrics").await.expect("GET /metrics");
    resp.body
        .lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// A plain HTTP/1.1 GET on 127.0.0.1:`port` (the client port).
pub async fn http_get(port: u16, path: &str) -> Result<HttpResponse, String> {
    let fut = async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: kvd-tests\r\nAccept: */*\r\nConnection: close\r\n\r\n"
        );
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| format!("write: {e}"))?;
        let mut raw = Vec::new();
        stream
            .read_to_end(&mut raw)
            .await
            .map_err(|e| format!("read: {e}"))?;
        parse_http_response(&raw)
    };
    tokio::time::timeout(Duration::from_secs(5), fut)
        .await
        .map_err(|_| "http request timed out".to_string())?
}

fn parse_http_response(raw: &[u8]) -> Result<HttpResponse, String> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| format!("no header end in {:?}", String::from_utf8_lossy(raw)))?;
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut body = raw[split + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked"));
    if chunked {
        body = dechunk(&body)?;
    }
    Ok(HttpResponse {
        status,
        headers,
        body: String::from_utf8_lossy(&body).to_string(),
    })
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let line_end = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("bad chunk header")?;
        let size_text = String::from_utf8_lossy(&data[..line_end]).to_string();
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|e| format!("bad chunk size {size_text:?}: {e}"))?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        if data.len() < size {
            return Err("truncated chunk".into());
        }
        out.extend_from_slice(&data[..size]);
        data = data.get(size + 2..).unwrap_or_default();
    }
}

// ---------------------------------------------------------------------------
// etcdctl
// ---------------------------------------------------------------------------

/// Path of the `etcdctl` 3.4 binary (Debian package `etcd-client`).
pub fn etcdctl_path() -> PathBuf {
    std::env::var_os("ETCDCTL_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/etcdctl"))
}

/// Runs `etcdctl --endpoints=<endpoints> <args>` with `ETCDCTL_API=3`.
pub async fn etcdctl(endpoints: &[String], args: &[&str]) -> Output {
    etcdctl_with_stdin(endpoints, args, None).await
}

/// As [`etcdctl`], feeding `stdin` (for `etcdctl txn`).
pub async fn etcdctl_with_stdin(
    endpoints: &[String],
    args: &[&str],
    stdin: Option<&str>,
) -> Output {
    let mut cmd = tokio::process::Command::new(etcdctl_path());
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("ETCDCTL_") {
            cmd.env_remove(&key);
        }
    }
    cmd.env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={}", endpoints.join(",")))
        .arg("--dial-timeout=5s")
        .arg("--command-timeout=15s")
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {:?}: {e}", etcdctl_path()));
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("stdin pipe");
        pipe.write_all(input.as_bytes())
            .await
            .expect("write etcdctl stdin");
        drop(pipe);
    }
    match tokio::time::timeout(Duration::from_secs(60), child.wait_with_output()).await {
        Ok(Ok(output)) => output,
        Ok(Err(e)) => panic!("etcdctl {args:?}: {e}"),
        Err(_) => panic!("etcdctl {args:?} did not finish within 60s"),
    }
}

/// stdout of a successful etcdctl run; panics with stderr otherwise.
pub fn stdout_ok(args: &[&str], output: &Output) -> String {
    assert!(
        output.status.success(),
        "etcdctl {args:?} failed with {}: stdout {:?} stderr {:?}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).to_string()
}

// ---------------------------------------------------------------------------
// Misc
// ---------------------------------------------------------------------------

/// Path of a file under `tests/`.
pub fn tests_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join(rel)
}

/// A temporary directory that is kept (and its path printed) if the test panics.
pub struct TestDir {
    dir: Option<tempfile::TempDir>,
}

impl TestDir {
    pub fn new() -> TestDir {
        TestDir {
            dir: Some(
                tempfile::Builder::new()
                    .prefix("kvd-test-")
                    .tempdir()
                    .expect("create temp dir"),
            ),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.as_ref().expect("temp dir").path()
    }
}

impl Default for TestDir {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if let Some(dir) = self.dir.take() {
                eprintln!("test files kept in {}", dir.keep().display());
            }
        }
    }
}

/// Flags for a single-member cluster named `name` on the given ports.
pub fn single_member_args(
    name: &str,
    data_dir: &Path,
    client_port: u16,
    peer_port: u16,
    token: &str,
) -> Vec<String> {
    let client_url = format!("http://127.0.0.1:{client_port}");
    let peer_url = format!("http://127.0.0.1:{peer_port}");
    vec![
        "--name".into(),
        name.into(),
        "--data-dir".into(),
        data_dir.to_string_lossy().into(),
        "--listen-client-urls".into(),
        client_url.clone(),
        "--advertise-client-urls".into(),
        client_url,
        "--listen-peer-urls".into(),
        peer_url.clone(),
        "--initial-advertise-peer-urls".into(),
        peer_url.clone(),
        "--initial-cluster".into(),
        format!("{name}={peer_url}"),
        "--initial-cluster-state".into(),
        "new".into(),
        "--initial-cluster-token".into(),
        token.into(),
        "--heartbeat-interval".into(),
        HEARTBEAT_MS.to_string(),
        "--election-timeout".into(),
        ELECTION_MS.to_string(),
    ]
}

/// The etcd binary for side-by-side tests (`KVD_ETCD_BIN`, or Debian's
/// `/usr/bin/etcd`), if installed.
pub fn etcd_binary() -> Option<PathBuf> {
    let path = std::env::var_os("KVD_ETCD_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/etcd"));
    path.exists().then_some(path)
}

/// The etcd binary, or `None` after saying the test skips its etcd part.
/// CI installs etcd and sets `KVD_REQUIRE_ETCD`: there a missing binary
/// fails the test instead of letting it pass by skipping.
pub fn etcd_or_skip() -> Option<PathBuf> {
    let found = etcd_binary();
    if found.is_none() {
        assert!(
            std::env::var_os("KVD_REQUIRE_ETCD").is_none(),
            "no etcd binary, and KVD_REQUIRE_ETCD is set"
        );
        eprintln!("SKIPPED: no etcd binary (apt install etcd-server, or set KVD_ETCD_BIN)");
    }
    found
}

/// A single-member etcd named `name` on `peer_port`, its data in
/// `data_dir`, its log in `dir`; returns it and its client URL.
pub async fn start_etcd(
    binary: &Path,
    dir: &Path,
    name: &str,
    data_dir: &Path,
    peer_port: u16,
) -> (Server, String) {
    let client_port = free_port();
    let args = single_member_args(name, data_dir, client_port, peer_port, "etcd-cluster");
    let mut spec = ServerSpec::new(args, dir, &dir.join(format!("{name}.log")));
    spec.binary = ServerBinary {
        program: binary.to_path_buf(),
        prefix: Vec::new(),
        is_etcd: true,
    };
    let mut server = Server::start(spec);
    wait_single_ready(&mut server, client_port).await;
    (server, format!("http://127.0.0.1:{client_port}"))
}

/// Waits until the single server listening on `client_port` reports a leader.
pub async fn wait_single_ready(server: &mut Server, client_port: u16) {
    let endpoint = format!("http://127.0.0.1:{client_port}");
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Some(status) = server.exit_status() {
            panic!(
                "server exited with {status}; log tail:\n{}",
                server.log_tail(60)
            );
        }
        let last = match status_of(&endpoint).await {
            Ok((_, leader)) if leader != 0 => return,
            Ok(_) => "no leader".to_string(),
            Err(e) => e,
        };
        if Instant::now() > deadline {
            panic!("server not ready within {READY_TIMEOUT:?}: {last}");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Shorthand: `String` from bytes.
pub fn s(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).to_string()
}

pub fn write_file(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

// ---------------------------------------------------------------------------
// Membership changes (tests/member.rs)
// ---------------------------------------------------------------------------

/// Ports and a data dir chosen for a member that is about to be added to a
/// running [`Cluster`]; nothing runs yet.
#[derive(Debug, Clone)]
pub struct PlannedMember {
    pub name: String,
    pub client_port: u16,
    pub peer_port: u16,
    pub data_dir: PathBuf,
}

impl PlannedMember {
    /// `http://127.0.0.1:<peer port>`, the URL to give MemberAdd.
    pub fn peer_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.peer_port)
    }

    /// `http://127.0.0.1:<client port>`
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }
}

impl Cluster {
    /// Free ports and a fresh (not yet existing) data dir under the
    /// cluster's directory for a new member called `name`. The same name
    /// may be planned again (a member replaced after losing its data): each
    /// plan gets its own data dir.
    pub fn plan_member(&self, name: &str) -> PlannedMember {
        let mut data_dir = self.dir().join(name);
        let mut n = 1;
        while data_dir.exists() || self.members.iter().any(|m| m.data_dir == data_dir) {
            n += 1;
            data_dir = self.dir().join(format!("{name}.{n}"));
        }
        PlannedMember {
            name: name.to_string(),
            client_port: free_port(),
            peer_port: free_port(),
            data_dir,
        }
    }

    /// Starts `planned` as a member that joins this running cluster. `join_args`
    /// are the flags `kvd member add` printed for it (`--name`,
    /// `--initial-cluster`, `--initial-advertise-peer-urls`,
    /// `--initial-cluster-state existing`); the harness adds its own (data
    /// dir, listen and advertise URLs, token, timings), then `extra_args`.
    /// The member is appended to [`Cluster::members`]; returns its index.
    /// Does not wait for it.
    pub fn start_joining(
        &mut self,
        planned: &PlannedMember,
        join_args: &[String],
        extra_args: &[String],
    ) -> usize {
        let client_url = planned.endpoint();
        let peer_url = planned.peer_url();
        let mut args: Vec<String> = join_args.to_vec();
        args.extend(
            [
                "--data-dir",
                &planned.data_dir.to_string_lossy(),
                "--listen-client-urls",
                &client_url,
                "--advertise-client-urls",
                &client_url,
                "--listen-peer-urls",
                &peer_url,
                "--initial-cluster-token",
                &self.token,
                "--heartbeat-interval",
                &HEARTBEAT_MS.to_string(),
                "--election-timeout",
                &ELECTION_MS.to_string(),
            ]
            .iter()
            .map(|s| s.to_string()),
        );
        args.extend(extra_args.iter().cloned());
        let mut log_path = self.dir().join(format!("{}.log", planned.name));
        let mut n = 1;
        while log_path.exists() {
            n += 1;
            log_path = self.dir().join(format!("{}.{n}.log", planned.name));
        }
        let spec = ServerSpec::new(args, self.dir(), &log_path);
        self.members.push(Member {
            name: planned.name.clone(),
            client_port: planned.client_port,
            peer_port: planned.peer_port,
            data_dir: planned.data_dir.clone(),
            server: Server::start(spec),
            tls: None,
        });
        self.members.len() - 1
    }

    /// Client URLs of the members the harness has started and not killed.
    pub fn live_endpoints(&self) -> Vec<String> {
        self.live().into_iter().map(|i| self.endpoint(i)).collect()
    }
}

/// Runs the `kvd` binary (never etcd, whatever `KVD_TEST_ETCD` says) with
/// `args` to completion, stdout and stderr captured. Panics if it runs for
/// more than 60 s.
pub async fn kvd_cli(args: &[&str]) -> Output {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_kvd"));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("KVD_") {
            cmd.env_remove(&key);
        }
    }
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = cmd.spawn().expect("spawn kvd");
    match tokio::time::timeout(Duration::from_secs(60), child.wait_with_output()).await {
        Ok(Ok(output)) => output,
        Ok(Err(e)) => panic!("kvd {args:?}: {e}"),
        Err(_) => panic!("kvd {args:?} did not finish within 60s"),
    }
}

/// Whether goldens are being re-recorded (`KVD_GOLDEN_RECORD=1`, against a
/// real etcd: see tests/golden/record.sh).
pub fn recording() -> bool {
    std::env::var_os("KVD_GOLDEN_RECORD").is_some_and(|v| v == "1")
}

/// The path of golden file `name` under tests/golden/.
pub fn golden_path(name: &str) -> PathBuf {
    tests_path(&format!("golden/{name}"))
}

/// Writes the golden `name` (when recording against etcd) or asserts that
/// `actual` equals it; on a difference the actual text is written beside the
/// build's temp files and the differing lines are shown.
pub fn check_golden(name: &str, actual: &str) {
    let path = golden_path(name);
    if recording() {
        assert!(
            against_etcd(),
            "record goldens against a real etcd (KVD_TEST_ETCD=/usr/bin/etcd)"
        );
        write_file(&path, actual);
        eprintln!("recorded {}", path.display());
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("read golden {}: {e}", path.display()));
    if expected != actual {
        let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("actual-{name}"));
        write_file(&out, actual);
        let diff: Vec<String> = expected
            .lines()
            .zip(actual.lines())
            .enumerate()
            .filter(|(_, (e, a))| e != a)
            .take(10)
            .map(|(n, (e, a))| format!("line {}:\n  expected: {e}\n  actual:   {a}", n + 1))
            .collect();
        panic!(
            "output differs from golden {} (actual written to {}; {} vs {} lines):\n{}",
            path.display(),
            out.display(),
            expected.lines().count(),
            actual.lines().count(),
            diff.join("\n")
        );
    }
}

/// `args` as one shell-like line, for transcripts (quoted when empty or
/// containing a space).
pub fn shell_words(args: &[&str]) -> String {
    args.iter()
        .map(|a| {
            if a.is_empty() || a.contains(' ') {
                format!("{a:?}")
            } else {
                a.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The store's current revision, from the header of a linearizable read of
/// a key nobody writes.
pub async fn current_revision(c: &Client) -> i64 {
    c.kv_client()
        .get("\u{1}kvd-test-revision-probe", None)
        .await
        .expect("get for revision")
        .header()
        .expect("header")
        .revision()
}
