//! Who gets a connection on the peer port, and for how long.
//!
//! Every bound here is there because the peer port is open to anyone who
//! can send UDP to it, before any certificate is seen:
//! - an Initial packet from an address not yet validated gets QUIC's
//!   stateless retry and holds nothing ([`Transport::accept_loop`]);
//! - a handshake must end within [`HANDSHAKE_TIMEOUT`] (quinn's idle timer
//!   alone restarts with every packet the sender sends);
//! - a validated address may have [`MAX_HANDSHAKES_PER_ADDRESS`] handshakes
//!   in flight, and an IPv6 /64 [`MAX_HANDSHAKES_PER_NET64`], so that a
//!   host stalling handshakes from its address (or from the /64 a host
//!   usually holds) cannot take the slots members reconnect into;
//! - all connections share [`MAX_INBOUND_CONNECTIONS`] slots;
//! - with pins, a certificate no member holds (a stranger) moves to one of
//!   [`MAX_STRANGERS`] slots of its own for [`STRANGER_LIFETIME`];
//! - refusals are warned about at most once a second per kind, with their
//!   count.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::OwnedSemaphorePermit;

use super::{frame, pins, Transport};

/// Concurrent inbound peer connections; more are refused at once. Each peer
/// uses one for Raft messages plus short-lived ones for snapshots and
/// member-list requests, so this is far above any real cluster's need.
pub(super) const MAX_INBOUND_CONNECTIONS: usize = 256;
/// Connections open at once from strangers (with pins, a certificate no
/// member holds), besides [`MAX_INBOUND_CONNECTIONS`]: they may only ask
/// for the member list, so they never hold the members' slots.
pub(super) const MAX_STRANGERS: usize = 16;
/// How long a stranger's connection may stay open.
const STRANGER_LIFETIME: Duration = Duration::from_secs(10);
/// How long a peer's handshake may take, from its validated Initial on:
/// the peer port's idle timeout (a member on any link finishes in a few
/// round trips).
const HANDSHAKE_TIMEOUT: Duration = super::tls::IDLE_TIMEOUT;
/// Handshakes in flight from one address; more are refused at once. A
/// member dials each peer once at a time (plus a snapshot or member-list
/// connection now and then), so even a cluster whose members all share one
/// address (a local cluster on 127.0.0.1) stays far below it, while a host
/// that stalls handshakes holds at most this many slots, each for at most
/// [`HANDSHAKE_TIMEOUT`].
pub(super) const MAX_HANDSHAKES_PER_ADDRESS: usize = 16;
/// Handshakes in flight from one IPv6 /64 (a host is usually given a whole
/// /64, and may send from any address in it); a subnet shared by several
/// members has room for each.
pub(super) const MAX_HANDSHAKES_PER_NET64: usize = 64;
/// Least time between two warnings about refused handshakes or
/// connections of one kind (the others are counted into the next one), so
/// that a flood does not flood the log.
const REFUSAL_WARNING_EVERY: Duration = Duration::from_secs(1);

/// What a handshake counts against: its address, and for IPv6 its /64.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Sender {
    Address(IpAddr),
    Net64(u64),
}

/// Handshakes in flight by [`Sender`]. Entries exist only while a
/// handshake runs, and each handshake also holds an inbound slot, so the
/// map holds at most 2 × [`MAX_INBOUND_CONNECTIONS`] entries.
#[derive(Clone, Default)]
pub(super) struct Handshakes(Arc<Mutex<HashMap<Sender, usize>>>);

/// One handshake counted in [`Handshakes`] until dropped.
pub(super) struct Handshake {
    handshakes: Handshakes,
    senders: Vec<Sender>,
}

impl Handshakes {
    /// Counts a handshake from `addr`, or `None` when its address (or its
    /// IPv6 /64) already has as many in flight as it may.
    pub(super) fn begin(&self, addr: IpAddr) -> Option<Handshake> {
        let senders = senders(addr);
        let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let full = senders
            .iter()
            .any(|s| map.get(s).copied().unwrap_or(0) >= bound(*s));
        if full {
            return None;
        }
        for s in &senders {
            *map.entry(*s).or_insert(0) += 1;
        }
        Some(Handshake {
            handshakes: self.clone(),
            senders,
        })
    }

    /// Handshakes in flight from `addr`'s address.
    #[cfg(test)]
    fn in_flight(&self, addr: IpAddr) -> usize {
        let map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        map.get(&senders(addr)[0]).copied().unwrap_or(0)
    }
}

impl Drop for Handshake {
    fn drop(&mut self) {
        let mut map = self
            .handshakes
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for s in &self.senders {
            if let Some(n) = map.get_mut(s) {
                *n -= 1;
                if *n == 0 {
                    map.remove(s);
                }
            }
        }
    }
}

/// What a handshake from `addr` counts against: the address (an
/// IPv4-mapped IPv6 address as its IPv4 one), and for IPv6 its /64.
fn senders(addr: IpAddr) -> Vec<Sender> {
    match addr {
        IpAddr::V4(_) => vec![Sender::Address(addr)],
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => vec![Sender::Address(IpAddr::V4(v4))],
            None => vec![
                Sender::Address(addr),
                Sender::Net64((u128::from(v6) >> 64) as u64),
            ],
        },
    }
}

fn bound(sender: Sender) -> usize {
    match sender {
        Sender::Address(_) => MAX_HANDSHAKES_PER_ADDRESS,
        Sender::Net64(_) => MAX_HANDSHAKES_PER_NET64,
    }
}

/// Paces the warnings about one kind of refusal: at most one per
/// [`REFUSAL_WARNING_EVERY`], carrying the number refused since the last.
#[derive(Default)]
struct RefusalWarnings {
    last: Option<Instant>,
    refused: u64,
}

impl RefusalWarnings {
    /// Counts one refusal; `Some(refusals since the last warning, this one
    /// included)` when it is time to warn.
    fn refused(&mut self) -> Option<u64> {
        self.refused += 1;
        let now = Instant::now();
        if self
            .last
            .is_some_and(|at| now.duration_since(at) < REFUSAL_WARNING_EVERY)
        {
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.refused))
    }
}

impl Transport {
    /// Accepts peer connections until the endpoint closes, within the
    /// bounds of the module's docs.
    pub(super) async fn accept_loop(self) {
        let (mut over_bound, mut no_slot) =
            (RefusalWarnings::default(), RefusalWarnings::default());
        while let Some(incoming) = self.endpoint.accept().await {
            // A handshake holds a slot for up to the idle timeout: only a
            // sender that has shown it receives at its address (QUIC's
            // stateless retry, one round trip) may start one, so that
            // packets from forged or silent addresses hold nothing.
            if !incoming.remote_address_validated() {
                if let Err(e) = incoming.retry() {
                    e.into_incoming().refuse();
                }
                continue;
            }
            let remote = incoming.remote_address();
            let Some(handshake) = self.handshakes.begin(remote.ip()) else {
                if let Some(refused) = over_bound.refused() {
                    tracing::warn!(
                        %remote,
                        refused,
                        "refusing a peer handshake: its address already has \
                         {MAX_HANDSHAKES_PER_ADDRESS} in flight (or its IPv6 /64 \
                         {MAX_HANDSHAKES_PER_NET64})"
                    );
                }
                incoming.refuse();
                continue;
            };
            let Ok(permit) = self.inbound.clone().try_acquire_owned() else {
                if let Some(refused) = no_slot.refused() {
                    tracing::warn!(
                        %remote,
                        refused,
                        "refusing a peer connection: {MAX_INBOUND_CONNECTIONS} already open"
                    );
                }
                incoming.refuse();
                continue;
            };
            let this = self.clone();
            self.rt.spawn(async move {
                // A timed-out handshake is dropped, which closes it.
                let handshaken = tokio::time::timeout(HANDSHAKE_TIMEOUT, incoming).await;
                drop(handshake);
                match handshaken {
                    Ok(Ok(conn)) => this.serve_connection(conn, permit).await,
                    Ok(Err(e)) => tracing::debug!("peer handshake failed: {e}"),
                    Err(_) => tracing::debug!(%remote, "peer handshake timed out"),
                }
            });
        }
    }

    /// Serves one inbound connection, holding `slot` (an inbound permit)
    /// until it ends.
    async fn serve_connection(self, conn: quinn::Connection, slot: OwnedSemaphorePermit) {
        // With pins, a certificate no member holds (while every member has
        // published its own) may ask who is in the cluster (a removed
        // member learns it was removed so), but not speak Raft, and only
        // in a slot of its own for a short while.
        let stranger = self.fingerprint.is_some()
            && !pins::may_be_a_member(&self.storage, pins::peer_fingerprint(&conn).as_deref());
        let _slot = if stranger {
            drop(slot);
            match self.strangers.clone().try_acquire_owned() {
                Ok(own) => own,
                Err(_) => return conn.close(0u32.into(), b"too many strangers"),
            }
        } else {
            slot
        };
        let time_up = tokio::time::sleep(STRANGER_LIFETIME);
        tokio::pin!(time_up);
        loop {
            tokio::select! {
                () = &mut time_up, if stranger => {
                    return conn.close(0u32.into(), b"time is up");
                }
                uni = conn.accept_uni() => match uni {
                    Ok(_) if stranger => {
                        tracing::warn!(
                            remote = %conn.remote_address(),
                            "refusing a peer: its certificate is pinned for no member"
                        );
                        conn.close(frame::CLOSE_MALFORMED.into(), b"not a member");
                        return;
                    }
                    Ok(stream) => {
                        let this = self.clone();
                        let conn = conn.clone();
                        self.rt.spawn(async move { this.receive_uni(conn, stream).await });
                    }
                    Err(_) => return,
                },
                bi = conn.accept_bi() => match bi {
                    Ok((send, recv)) => {
                        let this = self.clone();
                        self.rt.spawn(async move { this.answer_bi(send, recv).await });
                    }
                    Err(_) => return,
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sender_has_a_bounded_number_of_handshakes_in_flight() {
        let handshakes = Handshakes::default();
        let a: IpAddr = "192.0.2.1".parse().expect("addr");
        let b: IpAddr = "192.0.2.2".parse().expect("addr");
        let mut held: Vec<Handshake> = (0..MAX_HANDSHAKES_PER_ADDRESS)
            .map(|_| handshakes.begin(a).expect("within the bound"))
            .collect();
        assert!(handshakes.begin(a).is_none(), "one past the bound");
        // Another sender is not affected.
        let other = handshakes.begin(b).expect("another address");
        held.pop();
        assert_eq!(handshakes.in_flight(a), MAX_HANDSHAKES_PER_ADDRESS - 1);
        assert!(
            handshakes.begin(a).is_some(),
            "a finished handshake frees one"
        );
        drop(held);
        drop(other);
        assert_eq!(handshakes.in_flight(a), 0);
        assert!(
            handshakes.0.lock().expect("lock").is_empty(),
            "no entry left"
        );
    }

    #[test]
    fn an_ipv6_slash_64_has_a_bound_of_its_own() {
        let handshakes = Handshakes::default();
        // One address of a /64: the per-address bound.
        let one: IpAddr = "2001:db8:0:1::1".parse().expect("addr");
        let mut held: Vec<Handshake> = (0..MAX_HANDSHAKES_PER_ADDRESS)
            .map(|_| handshakes.begin(one).expect("within the bound"))
            .collect();
        assert!(handshakes.begin(one).is_none());
        // Other addresses of the same /64, up to the /64's bound.
        let mut i = 2u32;
        while held.len() < MAX_HANDSHAKES_PER_NET64 {
            let addr: IpAddr = format!("2001:db8:0:1::{i:x}").parse().expect("addr");
            held.push(handshakes.begin(addr).expect("within the /64's bound"));
            i += 1;
        }
        let same_64: IpAddr = "2001:db8:0:1:ffff::1".parse().expect("addr");
        assert!(handshakes.begin(same_64).is_none(), "the /64 is full");
        let next_64: IpAddr = "2001:db8:0:2::1".parse().expect("addr");
        assert!(handshakes.begin(next_64).is_some());
        // An IPv4-mapped address counts as its IPv4 address.
        let v4: IpAddr = "198.51.100.7".parse().expect("addr");
        let mapped: IpAddr = "::ffff:198.51.100.7".parse().expect("addr");
        let one_v4 = handshakes.begin(v4).expect("v4");
        assert_eq!(handshakes.in_flight(mapped), 1);
        drop((held, one_v4));
        assert!(
            handshakes.0.lock().expect("lock").is_empty(),
            "no entry left"
        );
    }
}
