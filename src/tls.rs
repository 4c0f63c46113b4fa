//! TLS for the sockets nurture opens itself: implicit-TLS SMTP (`smtps://`) and IMAP.
//!
//! rustls with the `ring` provider named explicitly (lettre links `ring` too, and rustls
//! panics when it has to choose a process-wide provider on its own). The server's certificate is
//! verified against the Mozilla roots plus an optional PEM file of extra CAs; there is no way
//! to turn verification off.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore, crypto};

/// A client configuration trusting the Mozilla roots and the certificates in `ca_file` (if
/// not empty). Errors name the file and what is wrong with it.
pub fn client_config(ca_file: &str) -> Result<Arc<ClientConfig>, String> {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if !ca_file.is_empty() {
        let certificates = CertificateDer::pem_file_iter(ca_file)
            .map_err(|e| format!("{ca_file}: {e}"))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("{ca_file}: {e}"))?;
        if certificates.is_empty() {
            return Err(format!("{ca_file}: no certificate in it"));
        }
        for certificate in certificates {
            roots
                .add(certificate)
                .map_err(|e| format!("{ca_file}: {e}"))?;
        }
    }
    let config = ClientConfig::builder_with_provider(Arc::new(crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Runs the TLS handshake on `socket`, verifying the certificate for `host` (a name or an IP
/// address).
pub async fn connect(
    config: Arc<ClientConfig>,
    host: &str,
    socket: TcpStream,
) -> io::Result<TlsSocket> {
    let name = ServerName::try_from(host.to_owned())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("`{host}`: {e}")))?;
    let stream = TlsConnector::from(config).connect(name, socket).await?;
    Ok(TlsSocket(stream))
}

/// An encrypted TCP connection: what lettre's SMTP client and async-imap read and write.
#[derive(Debug)]
pub struct TlsSocket(TlsStream<TcpStream>);

impl AsyncRead for TlsSocket {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsSocket {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl lettre::transport::smtp::client::AsyncTokioStream for TlsSocket {
    fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.0.get_ref().0.peer_addr()
    }
}

/// A connection that is encrypted or not, as configured: one type for clients (async-imap)
/// that are generic over their stream.
#[derive(Debug)]
pub enum MaybeTls {
    Plain(TcpStream),
    Tls(Box<TlsSocket>),
}

impl AsyncRead for MaybeTls {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(socket) => Pin::new(socket).poll_read(cx, buf),
            MaybeTls::Tls(socket) => Pin::new(socket.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for MaybeTls {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MaybeTls::Plain(socket) => Pin::new(socket).poll_write(cx, buf),
            MaybeTls::Tls(socket) => Pin::new(socket.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(socket) => Pin::new(socket).poll_flush(cx),
            MaybeTls::Tls(socket) => Pin::new(socket.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(socket) => Pin::new(socket).poll_shutdown(cx),
            MaybeTls::Tls(socket) => Pin::new(socket.as_mut()).poll_shutdown(cx),
        }
    }
}
