//! The client port's connections: plain TCP (h2c), TLS over TCP, and the
//! member's in-process link to itself (the lock and election services'
//! client, etcd's `v3client`), all handed to one axum server as
//! [`ClientIo`], each with a [`ClientConn`] saying who is on the other end.
//!
//! TLS handshakes run on their own tasks (at most
//! [`MAX_HANDSHAKES`] at once, each within [`HANDSHAKE_TIMEOUT`]), so a
//! client that stalls its handshake holds no one else up; accepted
//! connections wait in a bounded queue.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use tokio::io::{AsyncRead, AsyncWrite, DuplexStream, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use crate::core::tls::{common_name, ServerTls};

/// Most TLS handshakes in progress at once on one port.
pub const MAX_HANDSHAKES: usize = 256;
/// Longest a TLS handshake may take.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Accepted connections waiting for the server to take them.
const ACCEPT_QUEUE: usize = 64;
/// Buffer of each direction of an in-process connection, bytes.
const LOCAL_BUFFER: usize = 256 * 1024;

/// One client connection's byte stream.
pub enum ClientIo {
    /// h2c over TCP.
    Plain(TcpStream),
    /// TLS over TCP.
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    /// The member's own client, in process.
    Local(DuplexStream),
    /// A Unix domain socket (`kvd proxy --listen-addr unix://PATH`).
    Unix(tokio::net::UnixStream),
}

/// Who is on the other end of a client connection: the request
/// extension `ConnectInfo<ClientConn>` every service can read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientConn {
    /// The remote address (`None` in process).
    pub remote: Option<SocketAddr>,
    /// The Common Name of the client certificate the handshake verified
    /// against the trusted CA (etcd's user of a TLS client), if any.
    pub common_name: Option<String>,
    /// The member's own in-process client.
    pub local: bool,
    /// The connection came over TLS (handshake completed).
    pub tls: bool,
}

impl Connected<IncomingStream<'_, ClientListener>> for ClientConn {
    fn connect_info(stream: IncomingStream<'_, ClientListener>) -> Self {
        stream.remote_addr().clone()
    }
}

/// A stream of accepted client connections for `axum::serve`.
pub struct ClientListener {
    accepted: mpsc::Receiver<(ClientIo, ClientConn)>,
    local_addr: SocketAddr,
}

impl Listener for ClientListener {
    type Io = ClientIo;
    type Addr = ClientConn;

    async fn accept(&mut self) -> (ClientIo, ClientConn) {
        match self.accepted.recv().await {
            Some(conn) => conn,
            // The accepting task ended (shutdown): no more connections.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<ClientConn> {
        Ok(ClientConn {
            remote: Some(self.local_addr),
            ..ClientConn::default()
        })
    }
}

/// Accepts on `tcp`, speaking TLS when `tls` is given, until the returned
/// listener is dropped.
pub fn accept_tcp(
    tcp: TcpListener,
    tls: Option<Arc<ServerTls>>,
) -> std::io::Result<ClientListener> {
    let local_addr = tcp.local_addr()?;
    let (tx, accepted) = mpsc::channel(ACCEPT_QUEUE);
    let handshakes = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
    tokio::spawn(async move {
        loop {
            let (stream, remote) = match tcp.accept().await {
                Ok(conn) => conn,
                Err(e) => {
                    // EMFILE and friends: wait, as axum's own listener does.
                    tracing::warn!("cannot accept a client connection: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            if tx.is_closed() {
                return;
            }
            // TCP_NODELAY: a watch event or a small response must not wait
            // for the previous segment's ACK (etcd's gRPC-Go sets it too).
            if let Err(e) = stream.set_nodelay(true) {
                tracing::debug!("cannot set TCP_NODELAY on a client connection: {e}");
            }
            let conn = ClientConn {
                remote: Some(remote),
                ..ClientConn::default()
            };
            let Some(tls) = tls.clone() else {
                if tx.send((ClientIo::Plain(stream), conn)).await.is_err() {
                    return;
                }
                continue;
            };
            let Ok(permit) = handshakes.clone().try_acquire_owned() else {
                tracing::warn!(%remote, "too many TLS handshakes in progress; closing a connection");
                continue;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                let _permit = permit;
                if let Some(accepted) = handshake(stream, conn, &tls).await {
                    let _ = tx.send(accepted).await;
                }
            });
        }
    });
    Ok(ClientListener {
        accepted,
        local_addr,
    })
}

async fn handshake(
    stream: TcpStream,
    mut conn: ClientConn,
    tls: &ServerTls,
) -> Option<(ClientIo, ClientConn)> {
    let config = match tls.config() {
        Ok(config) => config,
        Err(e) => {
            tracing::warn!("no TLS configuration: {e}");
            return None;
        }
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let remote = conn.remote;
    conn.tls = true;
    let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            // etcd logs refused handshakes ("rejected connection").
            tracing::warn!(remote = ?remote, "rejected connection: {e}");
            return None;
        }
        Err(_) => {
            tracing::warn!(remote = ?remote, "rejected connection: TLS handshake timed out");
            return None;
        }
    };
    // The verifier only lets certificates signed by the trusted CA through,
    // so a certificate present here is a verified one; its CN names the
    // user only with --client-cert-auth (etcd's AuthInfoFromTLS).
    if !tls.cn_is_user() {
        return Some((ClientIo::Tls(Box::new(stream)), conn));
    }
    conn.common_name = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(common_name);
    Some((ClientIo::Tls(Box::new(stream)), conn))
}

/// Accepts on a Unix domain socket (no TLS: the file's permissions guard
/// it) until the returned listener is dropped.
pub fn accept_unix(unix: tokio::net::UnixListener) -> ClientListener {
    let (tx, accepted) = mpsc::channel(ACCEPT_QUEUE);
    tokio::spawn(async move {
        loop {
            match unix.accept().await {
                Ok((stream, _)) => {
                    let conn = ClientConn {
                        local: false,
                        ..ClientConn::default()
                    };
                    if tx.send((ClientIo::Unix(stream), conn)).await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    tracing::warn!("cannot accept a client connection: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    });
    ClientListener {
        accepted,
        local_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
    }
}

/// Opens in-process connections to the member's own client services.
#[derive(Clone)]
pub struct LocalConnector(mpsc::Sender<(ClientIo, ClientConn)>);

impl LocalConnector {
    /// A new in-process connection; its other end goes to the server.
    ///
    /// # Errors
    /// `NotConnected` once the server has stopped.
    pub async fn connect(&self) -> std::io::Result<DuplexStream> {
        let (ours, theirs) = tokio::io::duplex(LOCAL_BUFFER);
        let conn = ClientConn {
            local: true,
            ..ClientConn::default()
        };
        self.0
            .send((ClientIo::Local(theirs), conn))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::NotConnected, "server stopped"))?;
        Ok(ours)
    }
}

/// The listener of in-process connections and the connector that feeds it.
pub fn local() -> (ClientListener, LocalConnector) {
    let (tx, accepted) = mpsc::channel(ACCEPT_QUEUE);
    let listener = ClientListener {
        accepted,
        local_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
    };
    (listener, LocalConnector(tx))
}

macro_rules! each_io {
    ($self:ident, $io:ident => $e:expr) => {
        match $self.get_mut() {
            ClientIo::Plain($io) => $e,
            ClientIo::Tls($io) => $e,
            ClientIo::Local($io) => $e,
            ClientIo::Unix($io) => $e,
        }
    };
}

impl AsyncRead for ClientIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        each_io!(self, io => Pin::new(io).poll_read(cx, buf))
    }
}

impl AsyncWrite for ClientIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        each_io!(self, io => Pin::new(io).poll_write(cx, buf))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        each_io!(self, io => Pin::new(io).poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        each_io!(self, io => Pin::new(io).poll_shutdown(cx))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        each_io!(self, io => Pin::new(io).poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            ClientIo::Plain(io) => io.is_write_vectored(),
            ClientIo::Tls(io) => io.is_write_vectored(),
            ClientIo::Local(io) => io.is_write_vectored(),
            ClientIo::Unix(io) => io.is_write_vectored(),
        }
    }
}
