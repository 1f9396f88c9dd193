//! The faults, one per scenario of the CI profile (the soak profile draws
//! them at random): process kills and pauses, crashes at failpoints of the
//! write path, network faults through the peer proxies, and membership
//! changes. Each fault is injected, held, healed, and says what it did.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};

use crate::cluster::Cluster;
use crate::proxy::LinkRule;

/// A fault to inject into a running cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// kill -9 of the leader, restarted after a while.
    KillLeader,
    /// kill -9 of a follower, restarted after a while.
    KillFollower,
    /// kill -9 of the only member of a one-member cluster.
    KillSingle,
    /// SIGSTOP of the leader, SIGCONT after a few election timeouts.
    StopLeader,
    /// A crash at a failpoint of a member (then a restart).
    Crash(Failpoint, Target),
    /// A follower cut off until the log moved past it, so that it catches
    /// up from a snapshot; with `crash`, it crashes half way through
    /// applying that snapshot and must finish it after a restart.
    FollowerSnapshot { crash: bool },
    /// The leader cut off from everyone, then healed.
    IsolateLeader,
    /// 50% loss on every peer link.
    PacketLoss,
    /// 75 ± 50 ms delay on every peer link.
    Delay,
    /// The leader's messages to one follower dropped, not the other way.
    OneWayPartition,
    /// A follower removed, wiped, added back and restarted.
    ReplaceMember,
}

/// A failpoint of kvd (see `core::failpoints`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failpoint {
    /// Before the Raft log fsync.
    BeforeFsync,
    /// After the Raft log fsync, before sending persisted messages.
    AfterFsync,
    /// Before the applied index joins an entry's transaction.
    BeforeAppliedIndex,
    /// During physical compaction, before `compact_done`.
    Compaction,
}

impl Failpoint {
    fn name(self) -> &'static str {
        match self {
            Failpoint::BeforeFsync => "raft_before_fsync",
            Failpoint::AfterFsync => "raft_after_fsync",
            Failpoint::BeforeAppliedIndex => "apply_before_applied_index",
            Failpoint::Compaction => "compaction_before_done",
        }
    }
}

/// Which member a fault hits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The leader.
    Leader,
    /// A follower.
    Follower,
}

impl Fault {
    /// A short name for reports.
    pub fn describe(self) -> String {
        match self {
            Fault::KillLeader => "kill -9 leader".into(),
            Fault::KillFollower => "kill -9 follower".into(),
            Fault::KillSingle => "kill -9 single member".into(),
            Fault::StopLeader => "SIGSTOP/SIGCONT leader".into(),
            Fault::Crash(fp, t) => format!("crash at {} on the {t:?}", fp.name()).to_lowercase(),
            Fault::FollowerSnapshot { crash: false } => "follower cut off until snapshot".into(),
            Fault::FollowerSnapshot { crash: true } => "crash during snapshot apply".into(),
            Fault::IsolateLeader => "leader isolated".into(),
            Fault::PacketLoss => "50% peer packet loss".into(),
            Fault::Delay => "75±50 ms peer delay".into(),
            Fault::OneWayPartition => "one-way partition leader→follower".into(),
            Fault::ReplaceMember => "member replace".into(),
        }
    }

    /// Members the cluster needs, and flags they need (a small
    /// `--snapshot-count` where snapshots matter).
    pub fn cluster(self) -> (usize, Vec<String>) {
        match self {
            Fault::KillSingle => (1, Vec::new()),
            Fault::FollowerSnapshot { .. } => (3, vec!["--snapshot-count".into(), "100".into()]),
            _ => (3, Vec::new()),
        }
    }

    /// Injects the fault, holds it, heals it; returns what happened.
    ///
    /// # Errors
    /// The fault could not be injected (e.g. a failpoint never hit): the
    /// scenario fails, since it did not test what it claims.
    pub async fn inject(self, c: &mut Cluster, hold: Duration) -> anyhow::Result<String> {
        match self {
            Fault::KillLeader | Fault::KillFollower | Fault::KillSingle => {
                let i = pick(c, self == Fault::KillFollower).await?;
                c.kill(i);
                tokio::time::sleep(hold).await;
                c.restart(i)?;
                Ok(format!("killed and restarted {}", c.members[i].name))
            }
            Fault::StopLeader => {
                let i = pick(c, false).await?;
                c.signal_stop(i, true);
                tokio::time::sleep(hold).await;
                c.signal_stop(i, false);
                Ok(format!("paused {} for {hold:?}", c.members[i].name))
            }
            Fault::Crash(fp, target) => {
                let i = pick(c, target == Target::Follower).await?;
                c.set_failpoint(i, fp.name(), "return").await?;
                wait_exit(c, i, Duration::from_secs(15))
                    .await
                    .map_err(|e| {
                        anyhow!(
                            "failpoint {} on {} not hit: {e}",
                            fp.name(),
                            c.members[i].name
                        )
                    })?;
                tokio::time::sleep(Duration::from_millis(500)).await;
                c.restart(i)?;
                Ok(format!(
                    "{} crashed at {}, restarted",
                    c.members[i].name,
                    fp.name()
                ))
            }
            Fault::FollowerSnapshot { crash } => follower_snapshot(c, crash).await,
            Fault::IsolateLeader => {
                let i = pick(c, false).await?;
                c.isolate(i);
                tokio::time::sleep(hold).await;
                c.faults.heal();
                Ok(format!("isolated {} for {hold:?}", c.members[i].name))
            }
            Fault::PacketLoss => {
                c.all_links(LinkRule {
                    loss: 0.5,
                    ..LinkRule::default()
                });
                tokio::time::sleep(hold).await;
                c.faults.heal();
                Ok(format!("50% loss for {hold:?}"))
            }
            Fault::Delay => {
                c.all_links(LinkRule {
                    delay_ms: 75,
                    jitter_ms: 50,
                    ..LinkRule::default()
                });
                tokio::time::sleep(hold).await;
                c.faults.heal();
                Ok(format!("75±50 ms delay for {hold:?}"))
            }
            Fault::OneWayPartition => {
                let l = pick(c, false).await?;
                let f = (0..c.members.len())
                    .find(|&j| j != l)
                    .ok_or_else(|| anyhow!("no follower"))?;
                c.faults.set(
                    l,
                    f,
                    LinkRule {
                        blackhole: true,
                        ..LinkRule::default()
                    },
                );
                tokio::time::sleep(hold).await;
                c.faults.heal();
                Ok(format!(
                    "{} could not reach {} for {hold:?}",
                    c.members[l].name, c.members[f].name
                ))
            }
            Fault::ReplaceMember => {
                let i = pick(c, true).await?;
                c.replace(i).await?;
                Ok(format!("replaced {}", c.members[i].name))
            }
        }
    }
}

/// The leader, or a follower, once the cluster agrees on a leader.
async fn pick(c: &mut Cluster, follower: bool) -> anyhow::Result<usize> {
    let leader = c.wait_leader(Duration::from_secs(20)).await?;
    if !follower {
        return Ok(leader);
    }
    (0..c.members.len())
        .find(|&i| i != leader)
        .ok_or_else(|| anyhow!("no follower"))
}

async fn wait_exit(c: &mut Cluster, i: usize, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if !c.alive(i) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("still running after {timeout:?}")
}

/// Cuts a follower off until the leader's log moved far past it (so it
/// needs a snapshot), then heals; with `crash`, the follower crashes half
/// way through applying the snapshot and is restarted.
async fn follower_snapshot(c: &mut Cluster, crash: bool) -> anyhow::Result<String> {
    let leader = pick(c, false).await?;
    let f = pick(c, true).await?;
    let name = c.members[f].name.clone();
    if crash {
        c.set_failpoint(f, "snapshot_apply_during", "return")
            .await?;
    }
    let (_, _, from) = c.status(leader).await?;
    c.isolate(f);
    // --snapshot-count 100: the log is compacted once 200 entries were
    // applied past the last compaction; 500 revisions is plenty.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, _, now) = c.status(leader).await?;
        if now > from + 500 {
            break;
        }
        if Instant::now() > deadline {
            bail!("the workload did not move the log past {name} in 30 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    c.faults.heal();
    if crash {
        wait_exit(c, f, Duration::from_secs(20))
            .await
            .map_err(|e| anyhow!("{name} did not crash applying the snapshot: {e}"))?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        c.restart(f)?;
        return Ok(format!(
            "{name} cut off, crashed applying the snapshot, restarted"
        ));
    }
    // The follower must catch up by snapshot: its metric says so.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if snapshots_applied(c, f).await? > 0 {
            return Ok(format!("{name} cut off, caught up from a snapshot"));
        }
        if Instant::now() > deadline {
            bail!("{name} did not apply a snapshot within 20 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `kvd_snapshot_applied_total` (or kvd's name for it) of member `i`.
async fn snapshots_applied(c: &Cluster, i: usize) -> anyhow::Result<u64> {
    let url = format!("{}/metrics", c.members[i].endpoint());
    let text = tokio::task::spawn_blocking(move || {
        ureq::get(&url)
            .timeout(Duration::from_secs(2))
            .call()
            .map_err(|e| anyhow!("{e}"))?
            .into_string()
            .map_err(|e| anyhow!("{e}"))
    })
    .await??;
    Ok(text
        .lines()
        .filter(|l| l.contains("snapshot") && l.contains("appl") && !l.starts_with('#'))
        .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum())
}

/// The CI profile: every fault once, fixed seeds.
pub fn ci() -> Vec<(String, Fault)> {
    let list = [
        ("kill-leader", Fault::KillLeader),
        ("kill-follower", Fault::KillFollower),
        ("kill-single", Fault::KillSingle),
        ("stop-leader", Fault::StopLeader),
        (
            "crash-before-fsync",
            Fault::Crash(Failpoint::BeforeFsync, Target::Leader),
        ),
        (
            "crash-after-fsync",
            Fault::Crash(Failpoint::AfterFsync, Target::Follower),
        ),
        (
            "crash-before-applied-index",
            Fault::Crash(Failpoint::BeforeAppliedIndex, Target::Leader),
        ),
        (
            "crash-during-compaction",
            Fault::Crash(Failpoint::Compaction, Target::Follower),
        ),
        (
            "follower-snapshot",
            Fault::FollowerSnapshot { crash: false },
        ),
        (
            "crash-during-snapshot-apply",
            Fault::FollowerSnapshot { crash: true },
        ),
        ("isolate-leader", Fault::IsolateLeader),
        ("packet-loss", Fault::PacketLoss),
        ("delay", Fault::Delay),
        ("one-way-partition", Fault::OneWayPartition),
        ("replace-member", Fault::ReplaceMember),
    ];
    list.into_iter().map(|(n, f)| (n.to_string(), f)).collect()
}

/// Faults the soak profile draws from (3-member clusters).
pub fn soak_faults() -> Vec<Fault> {
    ci().into_iter()
        .map(|(_, f)| f)
        .filter(|f| f.cluster().0 == 3 && !matches!(f, Fault::FollowerSnapshot { .. }))
        .collect()
}
