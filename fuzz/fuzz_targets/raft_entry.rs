//! Fuzz target: `kvd::fuzz::raft_entry` (see src/fuzz.rs for what it feeds and checks).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| kvd::fuzz::raft_entry(data));
