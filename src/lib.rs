//! kvd: a distributed, strongly consistent key-value store that speaks the
//! etcd v3 API on the wire.
//!
//! - [`core`]: storage, Raft, transport and the gRPC/HTTP services.
//! - [`modes`]: the five faces of the binary (`serve` for now).

pub mod core;
pub mod modes;
