//! A running member's place in the cluster: publishing its name and client
//! URLs through Raft once it starts (etcd's `publish`), and noticing that it
//! was removed while it could not hear of it.

use std::time::Duration;

use crate::core::members;
use crate::core::raft::proposal::{MemberAttributes, Op};
use crate::core::raft::NodeHandle;
use crate::core::storage::Storage;
use crate::core::transport::Transport;

/// A member cut off from the cluster (no leader for a while) asks its peers
/// for the member list; when a peer that has applied more than this member
/// no longer lists it, it was removed while it could not hear of it, and it
/// stops (etcd: peers answer a removed member "410 Gone" and it exits).
pub async fn watch_for_removal(
    node: NodeHandle,
    transport: Transport,
    storage: Storage,
    election_timeout: Duration,
) {
    let me = node.status.member_id.0;
    let mut leaderless_since: Option<tokio::time::Instant> = None;
    loop {
        tokio::time::sleep(election_timeout).await;
        if node.status.leader().is_some() {
            leaderless_since = None;
            continue;
        }
        let since = *leaderless_since.get_or_insert_with(tokio::time::Instant::now);
        if since.elapsed() < 2 * election_timeout {
            continue;
        }
        let applied = node.applied.borrow().0;
        let peers: Vec<String> = members::list(&storage)
            .unwrap_or_default()
            .into_iter()
            .filter(|m| m.id != me)
            .flat_map(|m| m.peer_ur_ls)
            .collect();
        for url in peers {
            let Ok(resp) = transport.fetch_members(std::slice::from_ref(&url)).await else {
                continue;
            };
            let their_applied = resp.header.as_ref().map_or(0, |h| h.revision.max(0) as u64);
            if their_applied > applied && !resp.members.iter().any(|m| m.id == me) {
                tracing::warn!(
                    "{url} no longer lists this member: it was removed from the cluster"
                );
                node.status.removed.send_replace(true);
                return;
            }
        }
    }
}

/// Publishes this member's name and client URLs through Raft, retrying
/// until it is applied (etcd's `publishV3`).
pub async fn publish(node: NodeHandle, attrs: MemberAttributes, timeout: Duration) {
    loop {
        match node.propose(Op::Publish(attrs.clone()), timeout).await {
            Ok(_) => {
                tracing::info!("published member attributes");
                return;
            }
            Err(crate::core::errors::EtcdError::MemberNotFound) => {
                tracing::warn!("not publishing member attributes: this member was removed");
                return;
            }
            Err(e) => {
                tracing::debug!("publish: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}
