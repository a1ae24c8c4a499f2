//! TLS on both listeners, so the service can face the internet without a proxy.
//!
//! rustls over aws-lc-rs, the provider reqwest already brings, so the binary carries one TLS
//! stack. Certificates and keys are PEM files read once at start: a missing file or a PEM
//! that does not parse stops the start with a message naming the file, never serving
//! plain text by mistake.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// How long a client may take over its TLS handshake before it is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Handshaken connections waiting for the server to take them.
const ACCEPT_QUEUE: usize = 64;

/// A certificate chain and its private key, as PEM file paths.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Makes aws-lc-rs the process's rustls provider. rustls picks one by itself only while a
/// single provider is compiled in; saying so here keeps the choice when a dependency
/// brings another. Installing twice is harmless: the first choice stays.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// The PEM contents of both files, checked: the chain has a certificate, the key parses
/// and belongs to it.
pub struct TlsPem {
    pub cert: Vec<u8>,
    pub key: Vec<u8>,
}

impl TlsFiles {
    /// Reads and checks both files.
    pub fn load(&self) -> anyhow::Result<TlsPem> {
        let pem = TlsPem {
            cert: read(&self.cert, "certificate")?,
            key: read(&self.key, "private key")?,
        };
        pem.server_config()
            .with_context(|| format!("{} with {}", self.cert.display(), self.key.display()))?;
        Ok(pem)
    }
}

impl TlsPem {
    /// A rustls server configuration offering `alpn` protocols.
    pub fn server_config_with_alpn(&self, alpn: &[&[u8]]) -> anyhow::Result<Arc<ServerConfig>> {
        let mut config = self.server_config()?;
        config.alpn_protocols = alpn.iter().map(|protocol| protocol.to_vec()).collect();
        Ok(Arc::new(config))
    }

    fn server_config(&self) -> anyhow::Result<ServerConfig> {
        let chain = CertificateDer::pem_slice_iter(&self.cert)
            .collect::<Result<Vec<_>, _>>()
            .context("the certificate file is not valid PEM")?;
        anyhow::ensure!(
            !chain.is_empty(),
            "the certificate file holds no PEM certificate"
        );
        let key = PrivateKeyDer::from_pem_slice(&self.key)
            .context("the private key file holds no PEM private key")?;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("no TLS protocol version available")?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .context("the private key does not fit the certificate")
    }
}

fn read(path: &Path, what: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read the TLS {what} {}", path.display()))
}

/// A listener that hands axum TLS connections. Handshakes run in their own tasks, so one
/// slow or silent client holds up nobody; failed handshakes are dropped with a debug line.
pub struct TlsListener {
    connections: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local_addr: SocketAddr,
    acceptor: JoinHandle<()>,
}

impl TlsListener {
    pub fn new(listener: TcpListener, config: Arc<ServerConfig>) -> std::io::Result<TlsListener> {
        let local_addr = listener.local_addr()?;
        let (sender, connections) = mpsc::channel(ACCEPT_QUEUE);
        let acceptor = tokio::spawn(accept_loop(listener, TlsAcceptor::from(config), sender));
        Ok(TlsListener {
            connections,
            local_addr,
            acceptor,
        })
    }
}

impl Drop for TlsListener {
    /// The server dropped the listener to stop accepting: close the socket with it.
    fn drop(&mut self) {
        self.acceptor.abort();
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    sender: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors and the like: pause rather than spin.
                tracing::warn!(error = %error, "cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let sender = sender.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(stream)) => {
                    let _ = sender.send((stream, peer)).await;
                }
                Ok(Err(error)) => tracing::debug!(error = %error, "tls handshake failed"),
                Err(_) => tracing::debug!("tls handshake timed out"),
            }
        });
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.connections.recv().await {
            Some(connection) => connection,
            // The accept loop only ends when this listener is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local_addr)
    }
}
