//! TLS on the coordinator's ports: rustls on the ring provider, with certificates that
//! can be swapped while the process runs.
//!
//! Both ports accept their TCP connections here ([`incoming`]): each accepted socket reads
//! the *current* server configuration from a [`TlsCell`], so a SIGHUP that swaps the
//! certificate (or the client CA) changes what new connections see while open ones —
//! worker streams, watches — keep the session they began with. Each connection is handed
//! on as a [`Conn`] with its [`PeerInfo`]: tonic gets it through [`Connected`], axum
//! through its `ConnectInfo`, and the gate reads the verified client certificate's SAN
//! URIs from it.
//!
//! Without `--tls-cert` the same path serves plain TCP, so there is one way in.

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
pub(crate) use tokio_rustls::rustls;
use tonic::transport::server::Connected;

/// How long a new connection may take to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections accepted but not yet taken by the server.
const ACCEPT_QUEUE: usize = 64;

/// The files of a server identity.
#[derive(Clone, Debug)]
pub(crate) struct ServerFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// mTLS: client certificates are verified against this CA (and may be absent: a
    /// caller may use a token instead).
    pub client_ca: Option<PathBuf>,
}

/// The ring provider, the one crypto provider of every TLS configuration here.
pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

pub(crate) fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no PEM certificate in it", path.display()));
    }
    Ok(certs)
}

pub(crate) fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| {
        format!(
            "{}: {e} (want a PEM private key: PKCS#8, PKCS#1 or SEC1)",
            path.display()
        )
    })
}

/// A server configuration from the files, offering `alpn` (`h2` on the gRPC port,
/// `http/1.1` on the HTTP one).
pub(crate) fn server_config(
    files: &ServerFiles,
    alpn: &[&[u8]],
) -> Result<Arc<rustls::ServerConfig>, String> {
    let certs = read_certs(&files.cert)?;
    let key = read_key(&files.key)?;
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in read_certs(ca)? {
                roots
                    .add(cert)
                    .map_err(|e| format!("{}: {e}", ca.display()))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                roots.into(),
                provider(),
            )
            .allow_unauthenticated()
            .build()
            .map_err(|e| format!("{}: {e}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| format!("{} and {}: {e}", files.cert.display(), files.key.display()))?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// A client configuration for a standby's HTTP connections to the leader: the system
/// roots and `--tls-ca`, and this coordinator's certificate as its client identity.
pub(crate) fn client_config(
    credentials: &agentmesh_discovery::ClientCredentials,
) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(
        agentmesh_discovery::credentials::system_roots()
            .iter()
            .cloned(),
    );
    if let Some(ca) = &credentials.tls_ca {
        for cert in read_certs(ca)? {
            roots
                .add(cert)
                .map_err(|e| format!("{}: {e}", ca.display()))?;
        }
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    // hyper-rustls offers the ALPN protocols itself (http/1.1 here).
    let config = match (&credentials.tls_cert, &credentials.tls_key) {
        (Some(cert), Some(key)) => builder
            .with_client_auth_cert(read_certs(cert)?, read_key(key)?)
            .map_err(|e| format!("{}: {e}", cert.display()))?,
        _ => builder.with_no_client_auth(),
    };
    Ok(config)
}

/// The server configuration new connections get; `None` serves plain TCP. Swapped on
/// reload; read once per accepted connection.
#[derive(Clone, Default)]
pub(crate) struct TlsCell(Arc<RwLock<Option<Arc<rustls::ServerConfig>>>>);

impl TlsCell {
    pub fn new(config: Option<Arc<rustls::ServerConfig>>) -> TlsCell {
        TlsCell(Arc::new(RwLock::new(config)))
    }

    pub fn current(&self) -> Option<Arc<rustls::ServerConfig>> {
        self.0.read().expect("tls cell").clone()
    }

    pub fn set(&self, config: Option<Arc<rustls::ServerConfig>>) {
        *self.0.write().expect("tls cell") = config;
    }
}

/// What the edges know about the other end of a connection.
#[derive(Clone, Debug)]
pub(crate) struct PeerInfo {
    /// The SAN URIs of the client certificate the handshake verified (empty without one).
    pub certificate_uris: Arc<[String]>,
}

/// An accepted connection: plain TCP, or TLS over it.
pub(crate) enum Conn {
    Plain(TcpStream, PeerInfo),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>, PeerInfo),
}

impl Conn {
    pub fn peer(&self) -> &PeerInfo {
        match self {
            Conn::Plain(_, peer) | Conn::Tls(_, peer) => peer,
        }
    }
}

impl Connected for Conn {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> PeerInfo {
        self.peer().clone()
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s, _) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s, _) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s, _) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s, _) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s, _) => Pin::new(s).poll_write_vectored(cx, bufs),
            Conn::Tls(s, _) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Conn::Plain(s, _) => s.is_write_vectored(),
            Conn::Tls(s, _) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s, _) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s, _) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s, _) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s, _) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// The SAN URIs of a verified end-entity certificate.
fn certificate_uris(certs: Option<&[CertificateDer<'_>]>) -> Arc<[String]> {
    let Some(leaf) = certs.and_then(|c| c.first()) else {
        return Arc::from(Vec::new());
    };
    match webpki::EndEntityCert::try_from(leaf) {
        Ok(cert) => cert.valid_uri_names().map(str::to_string).collect(),
        Err(_) => Arc::from(Vec::new()),
    }
}

/// Accepts connections on `listener` until the receiver is dropped: each is plain, or
/// TLS with the cell's configuration at the moment it was accepted (handshakes run in
/// their own tasks, so a slow one holds up nobody). Sockets get TCP_NODELAY.
pub(crate) fn incoming(listener: TcpListener, tls: TlsCell) -> mpsc::Receiver<Conn> {
    let (tx, rx) = mpsc::channel(ACCEPT_QUEUE);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                () = tx.closed() => return,
                accepted = listener.accept() => accepted,
            };
            let (stream, remote) = match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of descriptors, or a connection reset before it was taken:
                    // the listener itself is fine.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let Some(config) = tls.current() else {
                let peer = PeerInfo {
                    certificate_uris: Arc::from(Vec::new()),
                };
                if tx.send(Conn::Plain(stream, peer)).await.is_err() {
                    return;
                }
                continue;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                let acceptor = tokio_rustls::TlsAcceptor::from(config);
                let stream =
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => stream,
                        Ok(Err(e)) => {
                            tracing::debug!(%remote, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%remote, "TLS handshake timed out");
                            return;
                        }
                    };
                let uris = certificate_uris(stream.get_ref().1.peer_certificates());
                let peer = PeerInfo {
                    certificate_uris: uris,
                };
                let _ = tx.send(Conn::Tls(Box::new(stream), peer)).await;
            });
        }
    });
    rx
}

/// The accepted connections as an axum listener: `axum::serve` takes them one by one,
/// and the handlers see each one's [`PeerInfo`] as `ConnectInfo`.
pub(crate) struct ConnListener {
    pub conns: mpsc::Receiver<Conn>,
}

impl axum::serve::Listener for ConnListener {
    type Io = Conn;
    type Addr = PeerInfo;

    async fn accept(&mut self) -> (Conn, PeerInfo) {
        match self.conns.recv().await {
            Some(conn) => {
                let peer = conn.peer().clone();
                (conn, peer)
            }
            // The acceptor is gone: nothing more will come.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<PeerInfo> {
        Ok(PeerInfo {
            certificate_uris: Arc::from(Vec::new()),
        })
    }
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, ConnListener>>
    for PeerInfo
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, ConnListener>) -> PeerInfo {
        stream.remote_addr().clone()
    }
}
