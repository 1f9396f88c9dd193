//! Fuzz target: `kvd::fuzz::gateway_json` (see src/fuzz.rs for what it feeds and checks).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| kvd::fuzz::gateway_json(data));
