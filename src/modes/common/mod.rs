//! What the client modes (`member`, `backup`, and `ctl`, `proxy` as they
//! arrive) share: the connection flags and the client they build
//! (`connection`), one-line error wording (`describe`), Go durations
//! (`duration`), the printers, one per response type and output format
//! (`output`), as etcdctl's `printer.go` has them, and progress bars
//! (`progress`).

pub mod connection;
pub mod describe;
pub mod discovery;
pub mod duration;
pub mod output;
pub mod progress;
