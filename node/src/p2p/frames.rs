//! Length-prefixed postcard frames on libp2p streams, with size limits and deadlines so a
//! slow or hostile peer cannot hold a task or memory.

use std::time::Duration;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use niso_protocol::federation::{FrameError, MAX_FRAME, decode_frame, encode_frame};
use serde::{Deserialize, Serialize};

/// How long one frame may take to arrive or leave.
pub const FRAME_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("stream I/O failed")]
    Io(#[from] std::io::Error),
    #[error("peer sent a frame of {0} bytes, more than {MAX_FRAME}")]
    TooLarge(usize),
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("peer took too long")]
    Timeout,
}

pub async fn write_frame<T: Serialize>(
    stream: &mut (impl AsyncWrite + Unpin),
    value: &T,
) -> Result<(), WireError> {
    let bytes = encode_frame(value)?;
    tokio::time::timeout(FRAME_TIMEOUT, async {
        stream.write_all(&bytes).await?;
        stream.flush().await
    })
    .await
    .map_err(|_| WireError::Timeout)??;
    Ok(())
}

pub async fn read_frame<T: for<'de> Deserialize<'de>>(
    stream: &mut (impl AsyncRead + Unpin),
    max: usize,
) -> Result<T, WireError> {
    tokio::time::timeout(FRAME_TIMEOUT, async {
        let mut len = [0u8; 4];
        stream.read_exact(&mut len).await?;
        let len = u32::from_be_bytes(len) as usize;
        if len > max.min(MAX_FRAME) {
            return Err(WireError::TooLarge(len));
        }
        let mut body = vec![0u8; len];
        stream.read_exact(&mut body).await?;
        Ok(decode_frame(&body)?)
    })
    .await
    .map_err(|_| WireError::Timeout)?
}
