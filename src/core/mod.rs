//! Everything the modes share: configuration, storage, Raft, transport and
//! the etcd v3 API services.

pub mod config;
pub mod server;
