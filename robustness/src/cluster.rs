//! Real kvd members on 127.0.0.1, each behind its peer proxy: start,
//! kill -9, SIGSTOP/SIGCONT, restart on the same data dir, failpoints,
//! partitions, and replacing a member (remove, wipe, add, start again).

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use etcd_client::{Client, ConnectOptions, GetOptions};

use crate::history::Kv;
use crate::proxy::{Faults, LinkRule, PeerPorts, PeerProxy};

/// Heartbeat of every member, milliseconds.
pub const HEARTBEAT_MS: u64 = 50;
/// Election timeout of every member, milliseconds.
pub const ELECTION_MS: u64 = 500;

/// One member process.
pub struct Member {
    /// `--name`.
    pub name: String,
    /// Client port (TCP).
    pub client_port: u16,
    /// Real peer port (UDP, where the member listens).
    pub peer_port: u16,
    /// Its proxy's port (UDP, what the others dial).
    pub proxy: PeerProxy,
    /// `--data-dir`.
    pub data_dir: PathBuf,
    /// stdout + stderr.
    pub log: PathBuf,
    /// The flags it runs with.
    args: Vec<String>,
    child: Option<Child>,
}

impl Member {
    /// `http://127.0.0.1:<client port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// The advertised peer URL (its proxy).
    pub fn peer_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.proxy.port)
    }
}

/// A cluster of members, all behind proxies.
pub struct Cluster {
    /// The members, by index (a replaced member keeps its index).
    pub members: Vec<Member>,
    /// Link faults, shared with the proxies.
    pub faults: Arc<Faults>,
    kvd: PathBuf,
    dir: PathBuf,
    token: String,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for m in &mut self.members {
            if let Some(mut c) = m.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

/// A port free for TCP and UDP on 127.0.0.1 right now, and never handed
/// out before by this process (ports picked before they are bound must
/// not collide).
pub fn free_port() -> anyhow::Result<u16> {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    for _ in 0..1000 {
        let tcp = TcpListener::bind("127.0.0.1:0")?;
        let port = tcp.local_addr()?.port();
        if UdpSocket::bind(("127.0.0.1", port)).is_err() {
            continue;
        }
        let mut given = GIVEN.lock().map_err(|_| anyhow!("port list poisoned"))?;
        if !given.contains(&port) {
            given.push(port);
            return Ok(port);
        }
    }
    bail!("no free port")
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

impl Cluster {
    /// Starts `size` members under `dir` with `extra` flags and waits for
    /// a leader.
    ///
    /// # Errors
    /// Ports, processes, or no leader within 30 s.
    pub async fn start(
        kvd: &Path,
        dir: &Path,
        size: usize,
        extra: &[String],
    ) -> anyhow::Result<Cluster> {
        let faults = Arc::new(Faults::default());
        let peers: PeerPorts = Arc::new(RwLock::new(HashMap::new()));
        let token = format!("robust-{}", std::process::id());
        let mut planned = Vec::new();
        for i in 0..size {
            let (client_port, peer_port) = (free_port()?, free_port()?);
            let proxy = PeerProxy::start(
                addr(free_port()?),
                addr(peer_port),
                i,
                peers.clone(),
                faults.clone(),
            )
            .await?;
            if let Ok(mut p) = peers.write() {
                p.insert(peer_port, i);
            }
            planned.push((client_port, peer_port, proxy));
        }
        let initial: Vec<String> = planned
            .iter()
            .enumerate()
            .map(|(i, (_, _, proxy))| format!("n{}=http://127.0.0.1:{}", i + 1, proxy.port))
            .collect();
        let initial = initial.join(",");
        let mut members = Vec::new();
        for (i, (client_port, peer_port, proxy)) in planned.into_iter().enumerate() {
            let name = format!("n{}", i + 1);
            let data_dir = dir.join(&name);
            let mut args = member_args(&name, &data_dir, client_port, peer_port, proxy.port);
            args.extend([
                "--initial-cluster".into(),
                initial.clone(),
                "--initial-cluster-state".into(),
                "new".into(),
                "--initial-cluster-token".into(),
                token.clone(),
            ]);
            args.extend(extra.iter().cloned());
            members.push(Member {
                log: dir.join(format!("{name}.log")),
                name,
                client_port,
                peer_port,
                proxy,
                data_dir,
                args,
                child: None,
            });
        }
        let mut cluster = Cluster {
            members,
            faults,
            kvd: kvd.to_path_buf(),
            dir: dir.to_path_buf(),
            token,
        };
        for i in 0..size {
            cluster.spawn(i)?;
        }
        cluster.wait_leader(Duration::from_secs(30)).await?;
        Ok(cluster)
    }

    fn spawn(&mut self, i: usize) -> anyhow::Result<()> {
        let m = &mut self.members[i];
        let log = OpenOptions::new().create(true).append(true).open(&m.log)?;
        let child = Command::new(&self.kvd)
            .arg("serve")
            .args(&m.args)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("start {}", m.name))?;
        m.child = Some(child);
        Ok(())
    }

    /// Client URLs of every member.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(Member::endpoint).collect()
    }

    /// Whether member `i`'s process is running.
    pub fn alive(&mut self, i: usize) -> bool {
        match self.members[i].child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// kill -9.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts member `i` again on its data dir (after a kill or a crash).
    ///
    /// # Errors
    /// The process cannot be started.
    pub fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        self.kill(i);
        self.spawn(i)
    }

    /// SIGSTOP (`stop = true`) or SIGCONT.
    pub fn signal_stop(&mut self, i: usize, stop: bool) {
        if let Some(c) = self.members[i].child.as_ref() {
            let sig = if stop { "-STOP" } else { "-CONT" };
            let _ = Command::new("kill")
                .args([sig, &c.id().to_string()])
                .status();
        }
    }

    /// Sets failpoint `name` of member `i` to `actions` (e.g. `return`).
    ///
    /// # Errors
    /// The member refused or could not be reached.
    pub async fn set_failpoint(&self, i: usize, name: &str, actions: &str) -> anyhow::Result<()> {
        let url = format!("{}/debug/failpoints/{name}", self.members[i].endpoint());
        let body = actions.to_string();
        tokio::task::spawn_blocking(move || {
            ureq::put(&url)
                .timeout(Duration::from_secs(5))
                .send_string(&body)
                .map(|_| ())
                .map_err(|e| anyhow!("set failpoint {url}: {e}"))
        })
        .await?
    }

    /// Cuts member `i` off from every other member, both ways.
    pub fn isolate(&self, i: usize) {
        for j in 0..self.members.len() {
            if j != i {
                let rule = LinkRule {
                    blackhole: true,
                    ..LinkRule::default()
                };
                self.faults.set(i, j, rule);
                self.faults.set(j, i, rule);
            }
        }
    }

    /// The same rule on every link.
    pub fn all_links(&self, rule: LinkRule) {
        for i in 0..self.members.len() {
            for j in 0..self.members.len() {
                if i != j {
                    self.faults.set(i, j, rule);
                }
            }
        }
    }

    /// A client of member `i` only.
    ///
    /// # Errors
    /// The crate refused the endpoint.
    pub async fn client(&self, i: usize) -> anyhow::Result<Client> {
        connect(&[self.members[i].endpoint()]).await
    }

    /// (member id, leader id, revision) as member `i` reports them.
    ///
    /// # Errors
    /// The member did not answer within 2 s.
    pub async fn status(&self, i: usize) -> anyhow::Result<(u64, u64, i64)> {
        let mut c = self.client(i).await?;
        let s = tokio::time::timeout(Duration::from_secs(2), c.status())
            .await
            .map_err(|_| anyhow!("status of {}: timed out", self.members[i].name))??;
        let h = s.header().ok_or_else(|| anyhow!("status without header"))?;
        Ok((h.member_id(), s.leader(), h.revision()))
    }

    /// The index of the leader every live member agrees on.
    ///
    /// # Errors
    /// No agreement within `timeout`.
    pub async fn wait_leader(&mut self, timeout: Duration) -> anyhow::Result<usize> {
        let deadline = Instant::now() + timeout;
        let mut last = anyhow!("no member");
        while Instant::now() < deadline {
            match self.leader_once().await {
                Ok(i) => return Ok(i),
                Err(e) => last = e,
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(last.context("waiting for a leader"))
    }

    async fn leader_once(&mut self) -> anyhow::Result<usize> {
        let mut ids = Vec::new();
        let mut leader = None;
        for i in 0..self.members.len() {
            if !self.alive(i) {
                continue;
            }
            let (id, l, _) = self.status(i).await?;
            if l == 0 || leader.is_some_and(|x| x != l) {
                bail!("members do not agree on a leader");
            }
            leader = Some(l);
            ids.push((i, id));
        }
        let l = leader.ok_or_else(|| anyhow!("no live member"))?;
        ids.iter()
            .find(|(_, id)| *id == l)
            .map(|(i, _)| *i)
            .ok_or_else(|| anyhow!("the leader is not a live member"))
    }

    /// Every key-value member `i` holds, with its revision (serializable).
    ///
    /// # Errors
    /// The member did not answer within 5 s.
    pub async fn dump(&self, i: usize) -> anyhow::Result<(i64, Vec<Kv>)> {
        let mut c = self.client(i).await?;
        let r = tokio::time::timeout(
            Duration::from_secs(5),
            c.get(
                "\0",
                Some(GetOptions::new().with_from_key().with_serializable()),
            ),
        )
        .await
        .map_err(|_| anyhow!("dump of {}: timed out", self.members[i].name))??;
        let kvs = r
            .kvs()
            .iter()
            .map(|kv| Kv {
                key: String::from_utf8_lossy(kv.key()).into_owned(),
                value: String::from_utf8_lossy(kv.value()).into_owned(),
                mod_revision: kv.mod_revision(),
            })
            .collect();
        Ok((r.header().map_or(0, |h| h.revision()), kvs))
    }

    /// Opens a watch on every key from `start` on member `i` and returns
    /// the compact revision it answers (0 when it delivers events instead).
    ///
    /// # Errors
    /// The member did not answer within 5 s.
    pub async fn watch_compacted(&self, i: usize, start: i64) -> anyhow::Result<i64> {
        let mut c = self.client(i).await?;
        let options = etcd_client::WatchOptions::new()
            .with_start_revision(start)
            .with_from_key();
        let work = async {
            let mut stream = c.watch("\0", Some(options)).await?;
            while let Some(r) = stream.message().await? {
                if r.compact_revision() > 0 {
                    return Ok(r.compact_revision());
                }
                if !r.events().is_empty() {
                    return Ok(0);
                }
            }
            Ok::<i64, anyhow::Error>(0)
        };
        tokio::time::timeout(Duration::from_secs(5), work)
            .await
            .map_err(|_| anyhow!("watch on {}: no answer", self.members[i].name))?
    }

    /// Replaces member `i`: removes it from the cluster, kills it, wipes
    /// its data dir, adds it back (a new member id, the same peer URL) and
    /// starts it with `--initial-cluster-state existing`.
    ///
    /// # Errors
    /// Any step failing.
    pub async fn replace(&mut self, i: usize) -> anyhow::Result<()> {
        let (id, _, _) = self.status(i).await?;
        let other = (0..self.members.len())
            .find(|&j| j != i)
            .ok_or_else(|| anyhow!("no other member"))?;
        let mut c = connect(&[self.members[other].endpoint()]).await?;
        c.member_remove(id).await?;
        self.kill(i);
        let _ = std::fs::remove_dir_all(&self.members[i].data_dir);
        let url = self.members[i].peer_url();
        let added = c.member_add([url], None).await?;
        let members = added.member_list();
        let initial: Vec<String> = self
            .members
            .iter()
            .enumerate()
            .filter(|(j, _)| {
                members
                    .iter()
                    .any(|m| m.peer_urls().contains(&self.members[*j].peer_url()))
            })
            .map(|(_, m)| format!("{}={}", m.name, m.peer_url()))
            .collect();
        let m = &mut self.members[i];
        let mut args = member_args(
            &m.name,
            &m.data_dir,
            m.client_port,
            m.peer_port,
            m.proxy.port,
        );
        args.extend([
            "--initial-cluster".into(),
            initial.join(","),
            "--initial-cluster-state".into(),
            "existing".into(),
            "--initial-cluster-token".into(),
            self.token.clone(),
        ]);
        m.args = args;
        self.spawn(i)
    }

    /// The directory holding every member's data and log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

fn member_args(name: &str, data_dir: &Path, client: u16, peer: u16, proxy: u16) -> Vec<String> {
    let client_url = format!("http://127.0.0.1:{client}");
    vec![
        "--name".into(),
        name.into(),
        "--data-dir".into(),
        data_dir.display().to_string(),
        "--listen-client-urls".into(),
        client_url.clone(),
        "--advertise-client-urls".into(),
        client_url,
        "--listen-peer-urls".into(),
        format!("http://127.0.0.1:{peer}"),
        "--initial-advertise-peer-urls".into(),
        format!("http://127.0.0.1:{proxy}"),
        "--heartbeat-interval".into(),
        HEARTBEAT_MS.to_string(),
        "--election-timeout".into(),
        ELECTION_MS.to_string(),
    ]
}

/// A client of `endpoints` with short timeouts.
///
/// # Errors
/// The crate refused the endpoints.
pub async fn connect(endpoints: &[String]) -> anyhow::Result<Client> {
    let options = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(1))
        .with_timeout(Duration::from_secs(3));
    Ok(Client::connect(endpoints, Some(options)).await?)
}
