//! kvd: a distributed, strongly consistent key-value store that speaks the
//! etcd v3 API on the wire.
//!
//! - [`core`]: storage, Raft, transport and the gRPC/HTTP services.
//! - [`modes`]: the five faces of the binary (`serve` for now).
//! - [`fuzz`]: entry points of the fuzz targets and the corpus test.

pub mod core;
pub mod fuzz;
pub mod modes;
