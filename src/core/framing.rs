//! Length-delimited fields over async byte streams (a u32 big-endian
//! length, then the bytes), read with a bound and without trusting the
//! length: the peer transport's Raft frames and the snapshot stream's
//! records both use it.

use tokio::io::{AsyncRead, AsyncReadExt};

/// A field's buffer starts at most this large and grows only as its bytes
/// arrive, so a peer's claimed length is never allocated up front.
const INITIAL_CAPACITY: usize = 64 * 1024;

/// Why input from a peer was refused; its connection is then closed.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// A length prefix above the limit (nothing of it was allocated).
    #[error("frame of {len} bytes is over the {max}-byte limit")]
    TooLarge {
        /// The length the peer claimed.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The stream ended or failed inside a frame.
    #[error("stream ended inside a frame: {0}")]
    Truncated(#[from] std::io::Error),
    /// The frame's bytes are not an `eraftpb.Message`.
    #[error("undecodable raft message: {0}")]
    Undecodable(#[from] protobuf::ProtobufError),
    /// A stream kind byte kvd does not know.
    #[error("unknown stream kind {0}")]
    UnknownStream(u8),
    /// A snapshot record naming a keyspace that does not exist.
    #[error("snapshot record for unknown keyspace {0}")]
    UnknownKeyspace(u8),
}

/// Reads one length-delimited field (u32 big-endian length, then the
/// bytes) of at most `max` bytes. The buffer grows only as bytes arrive, so
/// a peer that claims 4 GiB and sends nothing costs nothing. `Ok(None)` when
/// the stream ends cleanly before a length.
///
/// # Errors
/// [`FrameError::TooLarge`] or [`FrameError::Truncated`].
pub async fn read_field<R: AsyncRead + Unpin>(
    r: &mut R,
    max: usize,
) -> Result<Option<Vec<u8>>, FrameError> {
    let mut len = [0u8; 4];
    let first = r.read(&mut len).await?;
    if first == 0 {
        return Ok(None);
    }
    r.read_exact(&mut len[first..]).await?;
    let n = u32::from_be_bytes(len) as usize;
    if n > max {
        return Err(FrameError::TooLarge { len: n, max });
    }
    let mut buf = Vec::with_capacity(n.min(INITIAL_CAPACITY));
    let got = (&mut *r).take(n as u64).read_to_end(&mut buf).await?;
    if got < n {
        return Err(FrameError::Truncated(
            std::io::ErrorKind::UnexpectedEof.into(),
        ));
    }
    Ok(Some(buf))
}
