//! One module per mode of the `kvd` binary: argument parsing and presentation
//! only; the work happens in `core`.

pub mod member;
pub mod serve;
