//! One module per mode of the `kvd` binary: argument parsing and
//! presentation only; the work happens in `core`. `common` holds what the
//! client modes share (connection flags, error wording, durations, the
//! printers), and [`ExitCode`] is every mode's exit status.

pub mod backup;
pub mod common;
pub mod ctl;
pub mod member;
pub mod proxy;
pub mod serve;

/// The exit status of every mode: kvd's own (0 ok, 1 error, 2 bad usage)
/// and, for the etcdctl-compatible commands, etcdctl's (`ctlv3/command/
/// error.go`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitCode(pub u8);

impl ExitCode {
    /// Success.
    pub const OK: ExitCode = ExitCode(0);
    /// A failed request or a runtime error (etcdctl's `ExitError`).
    pub const ERROR: ExitCode = ExitCode(1);
    /// Bad usage or an unusable configuration (clap's code too).
    pub const USAGE: ExitCode = ExitCode(2);
    /// etcdctl's `ExitBadConnection`.
    pub const BAD_CONNECTION: ExitCode = ExitCode(2);
    /// etcdctl's `ExitInvalidInput` (txn, watch input).
    pub const INVALID_INPUT: ExitCode = ExitCode(3);
    /// etcdctl's `ExitBadFeature` (a valid flag with an unsupported value).
    pub const BAD_FEATURE: ExitCode = ExitCode(4);
    /// etcdctl's `ExitInterrupted` (e.g. a canceled watch).
    pub const INTERRUPTED: ExitCode = ExitCode(5);
    /// etcdctl's `ExitIO`.
    pub const IO: ExitCode = ExitCode(6);
    /// etcdctl's `ExitBadArgs`.
    pub const BAD_ARGS: ExitCode = ExitCode(128);
}

impl From<ExitCode> for std::process::ExitCode {
    fn from(code: ExitCode) -> Self {
        std::process::ExitCode::from(code.0)
    }
}
