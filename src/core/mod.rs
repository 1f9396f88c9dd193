//! Everything the modes share: configuration, storage, Raft, transport and
//! the etcd v3 API services. Nothing here reads argv or the environment.

pub mod api;
pub mod config;
pub mod errors;
pub mod lease;
pub mod members;
pub mod metrics;
pub mod mvcc;
pub mod node;
pub mod proposal;
pub mod raft_log;
pub mod raft_logging;
pub mod server;
pub mod snapshot;
pub mod storage;
pub mod transport;
pub mod watch;
