//! Newtypes for the numbers that cross module boundaries, so that a member
//! id is never passed where a lease id or a log index is expected. Inside a
//! module (and on the wire) they are the plain integers etcd and raft-rs
//! use; `.0` gets at the number.

use std::fmt;

/// A main revision of the key-value store (etcd's `revision`): 1 on an
/// empty store, one more per Raft entry that writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Revision(pub i64);

/// A member id (the Raft node id; etcd prints it in hex).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct MemberId(pub u64);

/// A cluster id (fixed at bootstrap; etcd prints it in hex).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ClusterId(pub u64);

/// An index in the Raft log (e.g. the applied index).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct LogIndex(pub u64);

/// A lease id (etcd's `LeaseID`; 0 means "no lease").
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct LeaseId(pub i64);

impl fmt::Display for Revision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Display for LogIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Hex, as etcd and etcdctl print member ids.
impl fmt::Display for MemberId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:x}", self.0)
    }
}

/// Hex, as etcd and etcdctl print cluster ids.
impl fmt::Display for ClusterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:x}", self.0)
    }
}

/// Hex, as etcd and etcdctl print lease ids.
impl fmt::Display for LeaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:x}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_print_in_hex_numbers_in_decimal() {
        assert_eq!(MemberId(0x8e9e_05c5).to_string(), "8e9e05c5");
        assert_eq!(ClusterId(255).to_string(), "ff");
        assert_eq!(LeaseId(0x694d_7a1b).to_string(), "694d7a1b");
        assert_eq!(Revision(12).to_string(), "12");
        assert_eq!(LogIndex(7).to_string(), "7");
    }
}
