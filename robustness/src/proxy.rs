//! A userspace UDP proxy in front of each member's peer port (this kernel
//! has no netem), as etcd's robustness suite puts a proxy between members.
//! Members advertise the proxy's address, so every packet between two
//! members crosses the receiving member's proxy, which can drop, lose or
//! delay it.
//!
//! A member's QUIC endpoint sends from its own peer port, so the proxy of
//! member `j` knows which member `i` a datagram comes from; the link
//! `i → j` is the connection `i` dials to `j` (both packet directions of
//! it). Blackholing `i → j` alone is a one-way partition at the Raft level:
//! `i`'s messages no longer reach `j`, while `j → i` (its own connection,
//! through `i`'s proxy) still works.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use rand::Rng;
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

/// What happens to the packets of one link.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LinkRule {
    /// Drop every packet.
    pub blackhole: bool,
    /// Probability of dropping a packet (0.0 – 1.0).
    pub loss: f64,
    /// Added delay, milliseconds.
    pub delay_ms: u64,
    /// Uniform jitter around the delay (±), milliseconds.
    pub jitter_ms: u64,
}

/// The fault rules of every link, by (from member, to member).
#[derive(Debug, Default)]
pub struct Faults {
    rules: Mutex<HashMap<(usize, usize), LinkRule>>,
}

impl Faults {
    /// Sets the rule of link `from → to`.
    pub fn set(&self, from: usize, to: usize, rule: LinkRule) {
        if let Ok(mut r) = self.rules.lock() {
            r.insert((from, to), rule);
        }
    }

    /// Clears every rule.
    pub fn heal(&self) {
        if let Ok(mut r) = self.rules.lock() {
            r.clear();
        }
    }

    fn get(&self, from: usize, to: usize) -> LinkRule {
        self.rules
            .lock()
            .ok()
            .and_then(|r| r.get(&(from, to)).copied())
            .unwrap_or_default()
    }
}

/// Which member sends from which UDP port (members' real peer ports).
pub type PeerPorts = Arc<RwLock<HashMap<u16, usize>>>;

/// One proxy: listens on `port`, forwards to a member's real peer port.
pub struct PeerProxy {
    /// The port members dial (the advertised peer port).
    pub port: u16,
    task: JoinHandle<()>,
}

impl Drop for PeerProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl PeerProxy {
    /// Starts the proxy of member `me` on `listen`, forwarding to `target`.
    ///
    /// # Errors
    /// The socket cannot be bound.
    pub async fn start(
        listen: SocketAddr,
        target: SocketAddr,
        me: usize,
        peers: PeerPorts,
        faults: Arc<Faults>,
    ) -> anyhow::Result<PeerProxy> {
        let socket = Arc::new(UdpSocket::bind(listen).await?);
        let port = socket.local_addr()?.port();
        let task = tokio::spawn(run(socket, target, me, peers, faults));
        Ok(PeerProxy { port, task })
    }
}

async fn run(
    socket: Arc<UdpSocket>,
    target: SocketAddr,
    me: usize,
    peers: PeerPorts,
    faults: Arc<Faults>,
) {
    let mut upstreams: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
    // Reply relays end with this task (the proxy dropped).
    let mut relays = tokio::task::JoinSet::new();
    let mut buf = vec![0u8; 65_536];
    loop {
        let Ok((n, src)) = socket.recv_from(&mut buf).await else {
            return;
        };
        let from = peers.read().ok().and_then(|p| p.get(&src.port()).copied());
        let upstream = match upstreams.get(&src) {
            Some(u) => u.clone(),
            None => {
                let Ok(u) = UdpSocket::bind("127.0.0.1:0").await else {
                    continue;
                };
                if u.connect(target).await.is_err() {
                    continue;
                }
                let u = Arc::new(u);
                upstreams.insert(src, u.clone());
                relays.spawn(replies(
                    u.clone(),
                    socket.clone(),
                    src,
                    from,
                    me,
                    faults.clone(),
                ));
                u
            }
        };
        let rule = from.map(|f| faults.get(f, me)).unwrap_or_default();
        match fate(rule) {
            Fate::Drop => {}
            Fate::Now => {
                let _ = upstream.send(&buf[..n]).await;
            }
            Fate::Later(delay) => {
                let data = buf[..n].to_vec();
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    let _ = upstream.send(&data).await;
                });
            }
        }
    }
}

/// Relays the member's answers on one flow back to its sender.
async fn replies(
    upstream: Arc<UdpSocket>,
    socket: Arc<UdpSocket>,
    src: SocketAddr,
    from: Option<usize>,
    me: usize,
    faults: Arc<Faults>,
) {
    let mut buf = vec![0u8; 65_536];
    loop {
        // An error here is an ICMP "port unreachable" for an earlier
        // datagram (the member was not listening yet, or was down): the
        // flow goes on.
        let Ok(n) = upstream.recv(&mut buf).await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let rule = from.map(|f| faults.get(f, me)).unwrap_or_default();
        match fate(rule) {
            Fate::Drop => {}
            Fate::Now => {
                let _ = socket.send_to(&buf[..n], src).await;
            }
            Fate::Later(delay) => {
                let data = buf[..n].to_vec();
                let socket = socket.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    let _ = socket.send_to(&data, src).await;
                });
            }
        }
    }
}

/// What happens to one datagram.
enum Fate {
    Drop,
    Now,
    Later(Duration),
}

/// Draws one datagram's fate under `rule`.
fn fate(rule: LinkRule) -> Fate {
    let mut rng = rand::thread_rng();
    if rule.blackhole || (rule.loss > 0.0 && rng.gen::<f64>() < rule.loss) {
        return Fate::Drop;
    }
    if rule.delay_ms == 0 && rule.jitter_ms == 0 {
        return Fate::Now;
    }
    let low = rule.delay_ms.saturating_sub(rule.jitter_ms);
    let high = rule.delay_ms + rule.jitter_ms;
    Fate::Later(Duration::from_millis(rng.gen_range(low..=high)))
}
