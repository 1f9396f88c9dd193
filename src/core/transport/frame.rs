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
/// QUIC application close code: a snapshot's receiver has staged it (and
/// handed it to Raft); its sender may report it delivered.
pub const CLOSE_SNAPSHOT_STAGED: u32 = 3;

/// The largest Raft message frame for `--max-request-bytes`, bytes.
pub fn max_frame(max_request_bytes: usize) -> usize {
    max_request_bytes.saturating_add(FRAME_OVERHEAD)
}

/// Reads and decodes one Raft message frame of at most `max` bytes:
/// the message and its encoded size in bytes (what it counts against the
/// Raft queue's byte budget); `Ok(None)` at a clean end of stream.
///
/// # Errors
/// As [`read_field`], and [`FrameError::Undecodable`].
pub async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    max: usize,
) -> Result<Option<(Message, usize)>, FrameError> {
    match read_field(r, max).await? {
        Some(bytes) => Ok(Some((Message::parse_from_bytes(&bytes)?, bytes.len()))),
        None => Ok(None),
    }
}

/// Time a new stream has to deliver its kind byte and first frame (an
/// honest member sends them at once); then the connection is closed.
pub const FIRST_FRAME_DEADLINE: std::time::Duration = std::time::Duration::from_secs(5);

/// Reads a new stream's kind byte (one of `kinds`) and first frame of at
/// most `max` bytes, within [`FIRST_FRAME_DEADLINE`] and holding one of
/// the `unadmitted` permits meanwhile: the kind, the message and its size
/// in bytes; `None` when the stream ended, failed or ran out of time (the
/// connection is then closed).
pub(super) async fn first_frame(
    conn: &quinn::Connection,
    stream: &mut quinn::RecvStream,
    unadmitted: &tokio::sync::Semaphore,
    kinds: &[u8],
    max: usize,
) -> Option<(u8, (Message, usize))> {
    let read = async {
        let _permit = unadmitted.acquire().await.ok()?;
        let mut kind = [0u8; 1];
        stream.read_exact(&mut kind).await.ok()?;
        if !kinds.contains(&kind[0]) {
            refuse(conn, &FrameError::UnknownStream(kind[0]));
            return None;
        }
        match read_frame(stream, max).await {
            Ok(Some(frame)) => Some((kind[0], frame)),
            Ok(None) => None,
            Err(e) => {
                refuse(conn, &e);
                None
            }
        }
    };
    match tokio::time::timeout(FIRST_FRAME_DEADLINE, read).await {
        Ok(first) => first,
        Err(_) => {
            tracing::warn!(
                remote = %conn.remote_address(),
                "closing peer connection: no first frame within {FIRST_FRAME_DEADLINE:?}"
            );
            conn.close(CLOSE_MALFORMED.into(), b"too slow");
            None
        }
    }
}

/// Logs bad input from a peer and closes its connection; the member keeps
/// serving everyone else.
pub(super) fn refuse(conn: &quinn::Connection, e: &FrameError) {
    // A frame cut short by a connection already closed (a member shutting
    // down closes its own) is not malformed; anything else is, even when
    // the sender closed right after it.
    if let (FrameError::Truncated(_), Some(reason)) = (e, conn.close_reason()) {
        tracing::debug!(
            remote = %conn.remote_address(),
            "peer connection closed inside a frame ({e}): {reason}"
        );
        return;
    }
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
