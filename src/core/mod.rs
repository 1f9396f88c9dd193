//! Everything the modes share: configuration, storage, Raft, transport and
//! the etcd v3 API services. Nothing here reads argv or the environment.

pub mod alarm;
pub mod api;
pub mod auth;
pub mod budget;
pub mod client;
pub mod config;
pub mod errors;
pub mod failpoints;
pub mod framing;
pub mod lease;
pub mod members;
pub mod metrics;
pub mod mvcc;
pub mod proxy;
pub mod raft;
pub mod server;
pub mod snapshot;
pub mod storage;
pub mod tls;
pub mod transport;
pub mod types;
pub mod urls;
pub mod watch;
