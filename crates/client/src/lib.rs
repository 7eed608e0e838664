//! # Ben client: the app side of the sidecar protocol
//!
//! ```no_run
//! # async fn demo() -> Result<(), ben_client::ClientError> {
//! let mut c = ben_client::Client::connect(".ben/sidecar.sock", "shop_web").await?;
//! let acc = c.send(&[serde_json::json!({"verb": "GET", "url": "/"})]).await?;
//! println!("accepted {}", acc.accepted);
//! while let Some(signal) = c.signals.recv().await {
//!     println!("signal {} for {:?}", signal.name, signal.key);
//! }
//! # Ok(()) }
//! ```
//!
//! Protocol (documented so any language can implement it): 4-byte
//! big-endian length + protobuf `ben.v1.AppFrame`. The app sends `Hello`,
//! the sidecar attests the process through the kernel and answers
//! `Welcome` (with the BEE) or `Refused`; the app then sends `Records`
//! batches carrying its BEE and gets `Accepted` per batch; `Signal` frames
//! arrive whenever a playbook fires for the app; a new `Welcome` replaces
//! the BEE when it is rotated.

use ben_wire::{frame::MAX_FRAME, pb};
use prost::Message;
use std::path::Path;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;
use tokio::sync::{mpsc, Mutex};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to the sidecar at {path}: {source} (is `ben up` running?)")]
    Connect {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the sidecar refused: {0}")]
    Refused(String),
    #[error("connection error: {0}")]
    Io(#[from] std::io::Error),
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("the connection closed")]
    Closed,
    /// The peer went away while sending a frame (a process killed mid-write):
    /// a disconnect, not a malformed frame.
    #[error("the connection closed in the middle of a {of}-byte frame ({got} bytes arrived)")]
    CutOff { got: usize, of: usize },
}

/// Reads one frame; `Ok(None)` on a clean end of stream.
pub async fn read_frame(
    r: &mut (impl AsyncReadExt + Unpin),
) -> Result<Option<pb::AppFrame>, ClientError> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let n = u32::from_be_bytes(len) as usize;
    if n > MAX_FRAME {
        return Err(ClientError::Protocol(format!(
            "frame of {n} bytes is over the {MAX_FRAME}-byte limit"
        )));
    }
    let mut buf = vec![0u8; n];
    let mut got = 0;
    while got < n {
        match r.read(&mut buf[got..]).await? {
            0 => return Err(ClientError::CutOff { got, of: n }),
            k => got += k,
        }
    }
    pb::AppFrame::decode(buf.as_slice())
        .map(Some)
        .map_err(|e| ClientError::Protocol(format!("not an AppFrame: {e}")))
}

pub async fn write_frame(
    w: &mut (impl AsyncWriteExt + Unpin),
    f: &pb::AppFrame,
) -> Result<(), ClientError> {
    w.write_all(&ben_wire::frame::encode(f)).await?;
    Ok(())
}

fn frame(body: pb::app_frame::Body) -> pb::AppFrame {
    pb::AppFrame { body: Some(body) }
}

/// A connected, attested app.
pub struct Client {
    writer: OwnedWriteHalf,
    welcome: Arc<Mutex<pb::Welcome>>,
    accepted: mpsc::Receiver<Result<pb::Accepted, ClientError>>,
    /// Signals addressed to this app.
    pub signals: mpsc::Receiver<pb::Signal>,
    batch: u64,
}

impl Client {
    /// Connects and attests as `app`.
    pub async fn connect(path: impl AsRef<Path>, app: &str) -> Result<Client, ClientError> {
        let p = path.as_ref();
        let stream = UnixStream::connect(p)
            .await
            .map_err(|source| ClientError::Connect {
                path: p.display().to_string(),
                source,
            })?;
        let (mut reader, mut writer) = stream.into_split();
        write_frame(
            &mut writer,
            &frame(pb::app_frame::Body::Hello(pb::Hello {
                app: app.to_string(),
            })),
        )
        .await?;
        let welcome = match read_frame(&mut reader).await? {
            Some(pb::AppFrame {
                body: Some(pb::app_frame::Body::Welcome(w)),
            }) => w,
            Some(pb::AppFrame {
                body: Some(pb::app_frame::Body::Refused(r)),
            }) => return Err(ClientError::Refused(r.reason)),
            Some(_) => return Err(ClientError::Protocol("expected Welcome or Refused".into())),
            None => return Err(ClientError::Closed),
        };
        let welcome = Arc::new(Mutex::new(welcome));
        let (acc_tx, accepted) = mpsc::channel(64);
        let (sig_tx, signals) = mpsc::channel(1024);
        tokio::spawn(demux(reader, welcome.clone(), acc_tx, sig_tx));
        Ok(Client {
            writer,
            welcome,
            accepted,
            signals,
            batch: 0,
        })
    }

    /// The current Welcome (BEE subject, expiry, intent version).
    pub async fn welcome(&self) -> pb::Welcome {
        self.welcome.lock().await.clone()
    }

    /// Sends a batch of records and waits for the sidecar's answer.
    pub async fn send(
        &mut self,
        records: &[serde_json::Value],
    ) -> Result<pb::Accepted, ClientError> {
        let raw: Vec<Vec<u8>> = records
            .iter()
            .map(|r| serde_json::to_vec(r).unwrap_or_default())
            .collect();
        self.send_raw(raw).await
    }

    /// Sends pre-encoded records (any bytes: the sidecar reports bad ones).
    pub async fn send_raw(&mut self, records: Vec<Vec<u8>>) -> Result<pb::Accepted, ClientError> {
        self.batch += 1;
        let bee = self.welcome.lock().await.bee.clone();
        let f = frame(pb::app_frame::Body::Records(pb::Records {
            batch: self.batch,
            records,
            bee,
        }));
        if let Err(e) = write_frame(&mut self.writer, &f).await {
            // The sidecar may have refused and closed already: its reason
            // is more useful than "broken pipe".
            return match tokio::time::timeout(
                std::time::Duration::from_millis(500),
                self.accepted.recv(),
            )
            .await
            {
                Ok(Some(Err(refused @ ClientError::Refused(_)))) => Err(refused),
                _ => Err(e),
            };
        }
        match self.accepted.recv().await {
            Some(r) => r,
            None => Err(ClientError::Closed),
        }
    }

    /// Sends one raw frame (for protocol tests).
    pub async fn send_frame_bytes(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        self.writer.write_all(bytes).await?;
        Ok(())
    }
}

async fn demux(
    mut reader: OwnedReadHalf,
    welcome: Arc<Mutex<pb::Welcome>>,
    acc: mpsc::Sender<Result<pb::Accepted, ClientError>>,
    sig: mpsc::Sender<pb::Signal>,
) {
    loop {
        let f = match read_frame(&mut reader).await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => {
                let _ = acc.send(Err(e)).await;
                break;
            }
        };
        match f.body {
            Some(pb::app_frame::Body::Accepted(a)) => {
                let _ = acc.send(Ok(a)).await;
            }
            Some(pb::app_frame::Body::Signal(s)) => {
                let _ = sig.send(s).await;
            }
            Some(pb::app_frame::Body::Welcome(w)) => {
                *welcome.lock().await = w;
            }
            Some(pb::app_frame::Body::Refused(r)) => {
                let _ = acc.send(Err(ClientError::Refused(r.reason))).await;
                break;
            }
            _ => {
                let _ = acc
                    .send(Err(ClientError::Protocol(
                        "unexpected frame from the sidecar".into(),
                    )))
                    .await;
                break;
            }
        }
    }
}
