//! The lessor: the in-memory clocks of granted leases.
//!
//! Lease records (id → granted TTL) and lease → key attachments are
//! replicated state, written by the state machine (`mvcc::Applier`). Their
//! deadlines are local: every member starts a lease's clock when it applies
//! the grant, and the **leader** alone decides expiry, by proposing a revoke
//! through Raft.
//!
//! A keep-alive is not a Raft entry (etcd's `LeaseRenew` is not one
//! either): it rides on a ReadIndex request whose context names the lease,
//! and the leader restarts the lease's clock when it receives that request,
//! from its own client or forwarded by a follower (raft-rs forwards a
//! follower's ReadIndex to the leader). The keep-alive is answered only
//! once the ReadIndex is confirmed by a quorum, so an answered renewal was
//! seen by a member that was leader after the client asked. The guarantees
//! this keeps: a member that becomes leader restarts every clock at the
//! full TTL (as etcd's `Promote` does without checkpoints), so a lease never
//! expires earlier than its last answered renewal plus its TTL across a
//! leader change; only the leader's clocks are exact, so followers forward
//! `LeaseTimeToLive` to the leader. What is given up: under a leader change
//! every lease gets its full TTL again (etcd 3.4 alike; 3.5's optional
//! checkpoints bound this).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::core::types::LeaseId;

/// etcd's `MaxLeaseTTL`: 9,000,000,000 seconds.
pub const MAX_LEASE_TTL: i64 = 9_000_000_000;

/// How long the leader waits for a proposed revoke before proposing it again.
const REVOKE_RETRY: Duration = Duration::from_secs(3);

/// One lease's clock.
#[derive(Debug, Clone)]
struct Clock {
    /// Granted TTL, seconds.
    ttl: i64,
    /// When the lease expires unless renewed.
    deadline: Instant,
    /// When this member (as leader) last proposed its revoke.
    revoking_since: Option<Instant>,
}

/// Lease clocks of this member, shared by the Raft task and the API.
#[derive(Debug, Default)]
pub struct Lessor {
    /// Clocks by lease id.
    clocks: Mutex<HashMap<LeaseId, Clock>>,
}

impl Lessor {
    /// Starts the clock of a granted (or loaded) lease at its full TTL.
    pub fn granted(&self, id: LeaseId, ttl: i64) {
        self.with(|c| {
            c.insert(
                id,
                Clock {
                    ttl,
                    deadline: Instant::now() + secs(ttl),
                    revoking_since: None,
                },
            );
        });
    }

    /// Restarts a lease's clock (an applied keep-alive); its granted TTL in
    /// seconds, or `None` when the lease does not exist.
    pub fn renewed(&self, id: LeaseId) -> Option<i64> {
        self.with(|c| {
            c.get_mut(&id).map(|clock| {
                clock.deadline = Instant::now() + secs(clock.ttl);
                clock.revoking_since = None;
                clock.ttl
            })
        })
    }

    /// Restarts a lease's clock as the leader does for a keep-alive, unless
    /// it is already past its deadline (its revoke is then on its way, and
    /// etcd's `Renew` refuses an expired lease too).
    pub fn renew_unexpired(&self, id: LeaseId) {
        let now = Instant::now();
        self.with(|c| {
            if let Some(clock) = c.get_mut(&id) {
                if clock.deadline > now {
                    clock.deadline = now + secs(clock.ttl);
                }
            }
        });
    }

    /// The granted TTL of a lease this member knows, seconds.
    pub fn granted_ttl(&self, id: LeaseId) -> Option<i64> {
        self.with(|c| c.get(&id).map(|clock| clock.ttl))
    }

    /// Replaces every clock by those of `leases` (id, granted TTL in
    /// seconds), each started at its full TTL (an installed snapshot).
    pub fn reset(&self, leases: impl IntoIterator<Item = (LeaseId, i64)>) {
        let now = Instant::now();
        self.with(|c| {
            c.clear();
            for (id, ttl) in leases {
                c.insert(
                    id,
                    Clock {
                        ttl,
                        deadline: now + secs(ttl),
                        revoking_since: None,
                    },
                );
            }
        });
    }

    /// Whether this member's clock of a lease ran out or its revoke is
    /// under way (as leader, a keep-alive then answers "not found", as
    /// etcd's `Renew` does for an expired lease).
    pub fn expired(&self, id: LeaseId) -> bool {
        let now = Instant::now();
        self.with(|c| {
            c.get(&id)
                .is_none_or(|clock| clock.deadline <= now || clock.revoking_since.is_some())
        })
    }

    /// Forgets a revoked lease.
    pub fn revoked(&self, id: LeaseId) {
        self.with(|c| {
            c.remove(&id);
        });
    }

    /// Restarts every clock at its full TTL (this member became leader).
    pub fn promote(&self) {
        let now = Instant::now();
        self.with(|c| {
            for clock in c.values_mut() {
                clock.deadline = now + secs(clock.ttl);
                clock.revoking_since = None;
            }
        });
    }

    /// Leases past their deadline whose revoke is not already under way
    /// (marked as under way now).
    pub fn take_expired(&self) -> Vec<LeaseId> {
        let now = Instant::now();
        self.with(|c| {
            let mut out = Vec::new();
            for (id, clock) in c.iter_mut() {
                let retry = clock
                    .revoking_since
                    .is_none_or(|t| now.duration_since(t) > REVOKE_RETRY);
                if clock.deadline <= now && retry {
                    clock.revoking_since = Some(now);
                    out.push(*id);
                }
            }
            out
        })
    }

    /// (granted TTL, remaining TTL) in seconds, the remaining part truncated
    /// as etcd's `int64(le.Remaining().Seconds())`; `None` for an unknown
    /// lease.
    pub fn time_to_live(&self, id: LeaseId) -> Option<(i64, i64)> {
        let now = Instant::now();
        self.with(|c| {
            c.get(&id).map(|clock| {
                let left = clock.deadline.saturating_duration_since(now);
                let remaining = left.as_secs() as i64;
                (clock.ttl, remaining)
            })
        })
    }

    fn with<T>(&self, f: impl FnOnce(&mut HashMap<LeaseId, Clock>) -> T) -> T {
        match self.clocks.lock() {
            Ok(mut g) => f(&mut g),
            Err(poisoned) => f(&mut poisoned.into_inner()),
        }
    }
}

fn secs(ttl: i64) -> Duration {
    Duration::from_secs(ttl.max(0) as u64)
}

/// etcd's minimum lease TTL for these timings, seconds (etcd
/// `server.go`): `(3 × election ticks / 2)` heartbeats, with integer tick
/// arithmetic, rounded up to whole seconds, so that a lease outlives a
/// leader election.
pub fn min_ttl(heartbeat: Duration, election_timeout: Duration) -> i64 {
    let tick_ms = heartbeat.as_millis().max(1);
    let election_ticks = election_timeout.as_millis() / tick_ms;
    let min_ms = (3 * election_ticks / 2) * tick_ms;
    min_ms.div_ceil(1000).max(1) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_resets_the_clocks_and_only_live_clocks_renew() {
        let lessor = Lessor::default();
        lessor.granted(LeaseId(1), 0);
        lessor.granted(LeaseId(2), 60);
        // A lease past its deadline stays expired: its revoke is coming.
        lessor.renew_unexpired(LeaseId(1));
        assert!(lessor.expired(LeaseId(1)));
        assert!(!lessor.expired(LeaseId(2)));
        assert!(lessor.expired(LeaseId(3)), "an unknown lease");
        // A snapshot without lease 2 and with lease 3.
        lessor.reset([(LeaseId(3), 30)]);
        assert_eq!(lessor.granted_ttl(LeaseId(2)), None);
        assert_eq!(lessor.granted_ttl(LeaseId(3)), Some(30));
        assert!(!lessor.expired(LeaseId(3)));
    }

    #[test]
    fn min_ttl_follows_etcds_tick_arithmetic() {
        let ms = Duration::from_millis;
        // 1000 / 100 = 10 ticks; 15 ticks × 100 ms = 1.5 s → 2 s.
        assert_eq!(min_ttl(ms(100), ms(1000)), 2);
        // 1400 / 200 = 7 ticks; 10 ticks × 200 ms = 2 s (not ⌈2.1⌉ = 3).
        assert_eq!(min_ttl(ms(200), ms(1400)), 2);
        assert_eq!(min_ttl(ms(50), ms(500)), 1);
    }
}
