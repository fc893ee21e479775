//! The PostgreSQL check, through tokio-postgres over a TCP stream (and rustls) of our own.
//!
//! `pg_stat_activity` lists every session to every role, the user name included, so the old
//! user can count its own sessions without `pg_read_all_stats`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_postgres::config::SslMode;
use tokio_postgres::error::SqlState;
use tokio_postgres::tls::{ChannelBinding, NoTls, TlsConnect};
use tokio_postgres::SimpleQueryMessage;

use super::url::{DrainCheck, TlsMode};
use super::{tls, DrainError};
use crate::credential::SecretValue;

const QUERY: &str = "SELECT count(*) FROM pg_stat_activity \
                     WHERE usename = current_user AND pid <> pg_backend_pid()";

pub async fn sessions(
    check: &DrainCheck,
    user: &str,
    password: &SecretValue,
) -> Result<u64, DrainError> {
    let mut config = tokio_postgres::Config::new();
    config
        .user(user)
        .password(password.expose())
        .dbname(check.dbname.as_deref().unwrap_or("postgres"))
        .application_name("vault-rotator drain check")
        .ssl_mode(match check.tls {
            TlsMode::Disable => SslMode::Disable,
            TlsMode::Prefer => SslMode::Prefer,
            _ => SslMode::Require,
        });
    let tcp = TcpStream::connect((check.host.as_str(), check.port))
        .await
        .map_err(|source| DrainError::Connect {
            addr: check.addr(),
            source,
        })?;
    match tls::client_config(check)? {
        None => count(check, &config, tcp, NoTls).await,
        Some(tls) => {
            let connector = Rustls {
                check: check.clone(),
                config: tls,
            };
            count(check, &config, tcp, connector).await
        }
    }
}

async fn count<T>(
    check: &DrainCheck,
    config: &tokio_postgres::Config,
    tcp: TcpStream,
    tls: T,
) -> Result<u64, DrainError>
where
    T: TlsConnect<TcpStream>,
    T::Stream: Send + 'static,
{
    let (client, connection) = config
        .connect_raw(tcp, tls)
        .await
        .map_err(|e| classify(check, e))?;
    // The connection future drives the socket; it ends once the client is dropped.
    let query = async move {
        let rows = client.simple_query(QUERY).await;
        drop(client);
        rows
    };
    let (rows, _) = tokio::join!(query, connection);
    let rows = rows.map_err(|e| DrainError::Query(e.to_string()))?;
    rows.iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(row) => row.get(0).map(str::to_string),
            _ => None,
        })
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| DrainError::Protocol("no count in the answer".into()))
}

fn classify(check: &DrainCheck, e: tokio_postgres::Error) -> DrainError {
    match e.code() {
        Some(c)
            if *c == SqlState::INVALID_PASSWORD
                || *c == SqlState::INVALID_AUTHORIZATION_SPECIFICATION =>
        {
            DrainError::Auth(e.to_string())
        }
        _ => {
            // tokio-postgres's Display says only "error performing TLS handshake"; the
            // cause (an unknown issuer, a wrong name) is in the source.
            let mut text = e.to_string();
            if let Some(src) = std::error::Error::source(&e) {
                text = format!("{text}: {src}");
            }
            if text.contains("TLS") || text.contains("tls") {
                DrainError::Tls {
                    addr: check.addr(),
                    reason: text,
                }
            } else if text.contains("server does not support TLS") {
                DrainError::NoTls { addr: check.addr() }
            } else {
                DrainError::Protocol(text)
            }
        }
    }
}

/// tokio-postgres's TLS hook, on the shared rustls configuration.
struct Rustls {
    check: DrainCheck,
    config: Arc<rustls::ClientConfig>,
}

impl TlsConnect<TcpStream> for Rustls {
    type Stream = Stream;
    type Error = DrainError;
    type Future = Pin<Box<dyn Future<Output = Result<Stream, DrainError>> + Send>>;

    fn connect(self, tcp: TcpStream) -> Self::Future {
        Box::pin(async move {
            let stream = tls::connect(&self.check, self.config, tcp).await?;
            Ok(Stream(Box::new(stream)))
        })
    }
}

/// A rustls stream as tokio-postgres wants it. No channel binding: SCRAM-SHA-256 without
/// `-PLUS` is what libpq does by default too, and the check's own TLS already says whom it
/// talks to when verification is on.
struct Stream(Box<tokio_rustls::client::TlsStream<TcpStream>>);

impl tokio_postgres::tls::TlsStream for Stream {
    fn channel_binding(&self) -> ChannelBinding {
        ChannelBinding::none()
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut *self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.0).poll_shutdown(cx)
    }
}
