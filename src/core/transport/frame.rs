//! Raft message frames on a peer's `R` stream: one length-delimited
//! `eraftpb.Message` each (see `core::framing`), bounded by
//! `--max-request-bytes` plus room for a batch.

use protobuf::Message as _;
use raft::eraftpb::Message;
use tokio::io::AsyncRead;

use crate::core::framing::{read_field, FrameError};

/// Room a Raft message frame may take beyond the largest client request:
/// raft-rs batches entries up to 1 MiB (`max_size_per_msg`) but always sends
/// at least one, so a frame holds at most one request plus that much.
const FRAME_OVERHEAD: usize = 2 * 1024 * 1024;
/// QUIC application error code when closing a connection over bad input.
pub const CLOSE_MALFORMED: u32 = 2;

/// The largest Raft message frame for `--max-request-bytes`, bytes.
pub fn max_frame(max_request_bytes: usize) -> usize {
    max_request_bytes.saturating_add(FRAME_OVERHEAD)
}

/// Reads and decodes one Raft message frame of at most `max` bytes;
/// `Ok(None)` at a clean end of stream.
///
/// # Errors
/// As [`read_field`], and [`FrameError::Undecodable`].
pub async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    max: usize,
) -> Result<Option<Message>, FrameError> {
    match read_field(r, max).await? {
        Some(bytes) => Ok(Some(Message::parse_from_bytes(&bytes)?)),
        None => Ok(None),
    }
}

/// Logs bad input from a peer and closes its connection; the member keeps
/// serving everyone else.
pub(super) fn refuse(conn: &quinn::Connection, e: &FrameError) {
    tracing::warn!(
        remote = %conn.remote_address(),
        "closing peer connection: {e}"
    );
    conn.close(CLOSE_MALFORMED.into(), b"malformed frame");
}

pub(super) fn encode_frame(m: &Message, buf: &mut Vec<u8>) -> bool {
    match m.write_to_bytes() {
        Ok(bytes) => {
            buf.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
            buf.extend_from_slice(&bytes);
            true
        }
        Err(e) => {
            tracing::error!("cannot encode raft message: {e}");
            false
        }
    }
}
