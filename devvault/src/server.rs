//! HTTP framing: the listener (plain or TLS), hyper connection handling,
//! common response headers, fault injection and the request log.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::controls::{FaultAction, LogEntry};
use crate::envelope;
use crate::exchange::HttpOut;
use crate::router;
use crate::state::State;
use crate::util;

/// Vault's default `max_request_size`.
const MAX_REQUEST: usize = 32 * 1024 * 1024;

/// Response body: complete, or deliberately broken after some bytes.
pub enum DvBody {
    Full(Option<Bytes>),
    /// Sends the bytes, then fails so hyper aborts the connection mid-response.
    Broken(Option<Bytes>),
}

impl Body for DvBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            DvBody::Full(b) => Poll::Ready(
                b.take()
                    .filter(|b| !b.is_empty())
                    .map(|b| Ok(Frame::data(b))),
            ),
            DvBody::Broken(b) => match b.take() {
                Some(bytes) => Poll::Ready(Some(Ok(Frame::data(bytes)))),
                None => Poll::Ready(Some(Err(std::io::Error::other(
                    "devvault fault: connection dropped",
                )))),
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, DvBody::Full(None)) || matches!(self, DvBody::Full(Some(b)) if b.is_empty())
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            DvBody::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            DvBody::Full(None) => SizeHint::with_exact(0),
            DvBody::Broken(_) => SizeHint::default(),
        }
    }
}

/// Returned by the service to make hyper close the connection with no response.
#[derive(Debug, thiserror::Error)]
#[error("devvault fault: connection reset")]
pub struct ResetFault;

/// Accepts connections forever.
pub async fn serve(state: Arc<State>, listener: TcpListener, tls: Option<TlsAcceptor>) {
    loop {
        let (stream, _peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| handle(state.clone(), req));
            let result = match tls {
                Some(acceptor) => match acceptor.accept(stream).await {
                    Ok(s) => {
                        http1::Builder::new()
                            .serve_connection(TokioIo::new(s), svc)
                            .await
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "TLS handshake failed");
                        return;
                    }
                },
                None => {
                    http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await
                }
            };
            if let Err(e) = result {
                tracing::debug!(error = %e, "connection ended with error");
            }
        });
    }
}

fn finish(
    out: HttpOut,
    namespace: Option<String>,
    broken_after: Option<usize>,
) -> Response<DvBody> {
    let mut b = Response::builder().status(out.status);
    let mut has_ct = false;
    for (k, v) in &out.headers {
        if k.eq_ignore_ascii_case("content-type") {
            has_ct = true;
        }
        b = b.header(k.as_str(), v.as_str());
    }
    if !has_ct {
        b = b.header("Content-Type", "application/json");
    }
    b = b.header("Cache-Control", "no-store");
    if let Some(ns) = namespace {
        b = b.header("X-Vault-Namespace", ns);
    }
    let body = match broken_after {
        Some(n) => {
            b = b.header("Content-Length", out.body.len().to_string());
            let n = n.min(out.body.len().saturating_sub(1));
            DvBody::Broken(Some(Bytes::from(out.body).slice(..n)))
        }
        None => DvBody::Full(Some(Bytes::from(out.body))),
    };
    b.body(body).unwrap_or_else(|_| {
        let mut r = Response::new(DvBody::Full(None));
        *r.status_mut() = hyper::StatusCode::INTERNAL_SERVER_ERROR;
        r
    })
}

async fn handle(state: Arc<State>, req: Request<Incoming>) -> Result<Response<DvBody>, ResetFault> {
    let started = Instant::now();
    let arrived = SystemTime::now();
    let method = req.method().as_str().to_string();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let headers = req.headers().clone();
    let namespace = headers
        .get("x-vault-namespace")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = match Limited::new(req.into_body(), MAX_REQUEST).collect().await {
        Ok(c) => c.to_bytes(),
        Err(_) => {
            let out = HttpOut {
                status: 413,
                headers: Vec::new(),
                body: envelope::error_body(&["http: request body too large".to_string()], None),
            };
            return Ok(finish(out, namespace, None));
        }
    };

    if let Some(rest) = path.strip_prefix("/__devvault") {
        let out =
            crate::controls::handle(&state, &method, rest.trim_start_matches('/'), &query, &body)
                .await;
        return Ok(finish(out, None, None));
    }

    let fault = if path.starts_with("/v1/") {
        state.controls.take_fault(&method, &path)
    } else {
        None
    };
    if let Some(f) = &fault {
        if f.latency_ms > 0 {
            tokio::time::sleep(Duration::from_millis(f.latency_ms)).await;
        }
    }
    let log = |status: u16| {
        state.controls.record(LogEntry {
            seq: 0,
            ts_ms: util::unix_millis(arrived),
            mono_ms: started.duration_since(state.started).as_millis() as u64,
            method: method.clone(),
            path: path.clone(),
            query: query.clone(),
            status,
            duration_ms: started.elapsed().as_millis() as u64,
            fault: fault.as_ref().map(|f| f.id),
        })
    };

    if let Some(f) = &fault {
        match f.action {
            FaultAction::Reset => {
                log(0);
                return Err(ResetFault);
            }
            FaultAction::Status => {
                let body = match &f.body {
                    None => envelope::error_body(&[], None),
                    Some(serde_json::Value::String(s)) => s.clone().into_bytes(),
                    Some(v) => {
                        let mut b = serde_json::to_vec(v).unwrap_or_default();
                        b.push(b'\n');
                        b
                    }
                };
                let out = HttpOut {
                    status: f.status,
                    headers: f
                        .headers
                        .iter()
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect(),
                    body,
                };
                log(f.status);
                return Ok(finish(out, namespace, None));
            }
            FaultAction::InvalidJson => {
                log(200);
                let out = HttpOut {
                    status: 200,
                    headers: Vec::new(),
                    body: b"{\"request_id\": this is not JSON".to_vec(),
                };
                return Ok(finish(out, namespace, None));
            }
            FaultAction::Oversize => {
                log(200);
                // Capped at 1 GiB so a typo cannot make the allocation abort the process.
                let n = (f.size_mb.min(1024) as usize).saturating_mul(1024 * 1024);
                let mut body = Vec::with_capacity(n + 32);
                body.extend_from_slice(b"{\"data\":{\"padding\":\"");
                body.resize(n.max(body.len()), b'A');
                body.extend_from_slice(b"\"}}\n");
                return Ok(finish(
                    HttpOut {
                        status: 200,
                        headers: Vec::new(),
                        body,
                    },
                    namespace,
                    None,
                ));
            }
            FaultAction::Latency | FaultAction::Drop | FaultAction::Truncate => {}
        }
    }

    let out = match path.strip_prefix("/v1/") {
        Some(logical) => router::handle_v1(&state, &method, logical, &query, &headers, &body).await,
        None => HttpOut {
            status: 404,
            headers: Vec::new(),
            body: envelope::error_body(&[], None),
        },
    };
    log(out.status);
    tracing::debug!(method = %method, path = %path, status = out.status, "request");
    let mut out = out;
    let broken = match fault.as_ref().map(|f| f.action) {
        Some(FaultAction::Drop) => Some(
            fault
                .as_ref()
                .and_then(|f| f.after_bytes)
                .unwrap_or(out.body.len() / 2),
        ),
        Some(FaultAction::Truncate) => {
            let half = out.body.len() / 2;
            out.body.truncate(half);
            None
        }
        _ => None,
    };
    Ok(finish(out, namespace, broken))
}

/// Loads PEM certificate chain and key into a TLS acceptor (HTTP/1.1 only).
pub fn tls_acceptor(cert: &str, key: &str) -> Result<TlsAcceptor, crate::error::StartError> {
    use crate::error::StartError;
    use tokio_rustls::rustls::{self, pki_types::CertificateDer};
    let read = |p: &str| {
        std::fs::read(p).map_err(|e| StartError::TlsFile {
            path: p.to_string(),
            source: e,
        })
    };
    let cert_pem = read(cert)?;
    let key_pem = read(key)?;
    let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|e| StartError::TlsFile {
            path: cert.to_string(),
            source: e,
        })?;
    let key = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .map_err(|e| StartError::TlsFile {
            path: key.to_string(),
            source: e,
        })?
        .ok_or_else(|| StartError::NoKey(key.to_string()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| StartError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| StartError::Tls(e.to_string()))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(cfg)))
}

#[allow(dead_code)]
fn _assert_infallible(_: Infallible) {}
