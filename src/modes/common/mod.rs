//! What the client modes (`member`, and `ctl`, `backup`, `proxy` as they
//! arrive) share: the connection flags and the client they build
//! (`connection`), one-line error wording (`describe`), Go durations
//! (`duration`), and the printers, one per response type and output format
//! (`output`), as etcdctl's `printer.go` has them.

pub mod connection;
pub mod describe;
pub mod duration;
pub mod output;
