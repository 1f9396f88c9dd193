//! Fuzz target: `kvd::fuzz::v2_form` (see src/fuzz.rs for what it feeds and checks).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| kvd::fuzz::v2_form(data));
