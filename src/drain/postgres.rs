//! The PostgreSQL check: a small client of the wire protocol (v3), just enough for one query.
//!
//! An optional TLS upgrade (`SSLRequest`), a startup message, SCRAM-SHA-256 (the server's
//! signature is checked too) or a cleartext password, one simple query whose answer is one
//! row, `Terminate`. Hand-written because tokio-postgres, with its protocol, types and
//! Unicode tables, added 0.38 MB to the binary (see the README); HMAC, PBKDF2 and SHA-256 come
//! from ring, base64 from the crate reqwest already brings.
//!
//! `pg_stat_activity` lists every session to every role, the user name included, so the old
//! user can count its own sessions without `pg_read_all_stats`.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use ring::{digest, hmac, pbkdf2, rand::SecureRandom};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::url::{DrainCheck, TlsMode};
use super::{tls, DrainError};
use crate::credential::SecretValue;

const QUERY: &str = "SELECT count(*) FROM pg_stat_activity \
                     WHERE usename = current_user AND pid <> pg_backend_pid()";

/// Protocol 3.0, and the magic number of an `SSLRequest`.
const PROTOCOL: i32 = 196_608;
const SSL_REQUEST: i32 = 80_877_103;
/// Longest message accepted: the answers here are a few hundred bytes.
const MAX_MESSAGE: usize = 1 << 20;

pub async fn sessions(
    check: &DrainCheck,
    user: &str,
    password: &SecretValue,
) -> Result<u64, DrainError> {
    let mut tcp = TcpStream::connect((check.host.as_str(), check.port))
        .await
        .map_err(|source| DrainError::Connect {
            addr: check.addr(),
            source,
        })?;
    let Some(config) = tls::client_config(check)? else {
        return count(&mut tcp, check, user, password).await;
    };
    let mut request = Vec::with_capacity(8);
    request.extend_from_slice(&8i32.to_be_bytes());
    request.extend_from_slice(&SSL_REQUEST.to_be_bytes());
    tcp.write_all(&request).await.map_err(lost)?;
    let mut answer = [0u8; 1];
    tcp.read_exact(&mut answer).await.map_err(lost)?;
    match answer[0] {
        b'S' => {
            let mut stream = tls::connect(check, config, tcp).await?;
            count(&mut stream, check, user, password).await
        }
        b'N' if check.tls == TlsMode::Prefer => count(&mut tcp, check, user, password).await,
        b'N' => Err(DrainError::NoTls { addr: check.addr() }),
        _ => Err(DrainError::Protocol(
            "unexpected answer to SSLRequest".into(),
        )),
    }
}

async fn count<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut S,
    check: &DrainCheck,
    user: &str,
    password: &SecretValue,
) -> Result<u64, DrainError> {
    let mut startup = Vec::with_capacity(128);
    startup.extend_from_slice(&PROTOCOL.to_be_bytes());
    for (key, value) in [
        ("user", user),
        ("database", check.dbname.as_deref().unwrap_or("postgres")),
        ("application_name", "vault-rotator drain check"),
    ] {
        startup.extend_from_slice(key.as_bytes());
        startup.push(0);
        startup.extend_from_slice(value.as_bytes());
        startup.push(0);
    }
    startup.push(0);
    send(io, None, &startup).await?;
    authenticate(io, password).await?;
    // ParameterStatus, BackendKeyData and friends until ReadyForQuery.
    loop {
        let (tag, body) = receive(io).await?;
        match tag {
            b'Z' => break,
            b'E' => return Err(server_error(&body, false)),
            _ => {}
        }
    }
    let mut query = QUERY.as_bytes().to_vec();
    query.push(0);
    send(io, Some(b'Q'), &query).await?;
    let mut value = None;
    loop {
        let (tag, body) = receive(io).await?;
        match tag {
            b'D' if value.is_none() => value = Some(first_column(&body)?),
            b'E' => return Err(server_error(&body, false)),
            b'Z' => break,
            _ => {}
        }
    }
    // Polite, not needed: the server notices the closed socket anyway.
    let _ = send(io, Some(b'X'), &[]).await;
    value
        .ok_or_else(|| DrainError::Protocol("no row".into()))?
        .trim()
        .parse()
        .map_err(|_| DrainError::Protocol("the count is not a number".into()))
}

/// Answers the server's authentication requests until it says OK.
async fn authenticate<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut S,
    password: &SecretValue,
) -> Result<(), DrainError> {
    let mut scram: Option<Scram> = None;
    loop {
        let (tag, body) = receive(io).await?;
        match tag {
            b'E' => return Err(server_error(&body, true)),
            b'R' => {}
            _ => {
                return Err(DrainError::Protocol(
                    "unexpected message during login".into(),
                ))
            }
        }
        let kind = be_i32(&body, 0)?;
        let data = &body[4..];
        match kind {
            0 => return Ok(()),
            3 => {
                let mut clear = password.expose().as_bytes().to_vec();
                clear.push(0);
                send(io, Some(b'p'), &clear).await?;
            }
            10 => {
                let offered = data.split(|&b| b == 0).any(|m| m == b"SCRAM-SHA-256");
                if !offered {
                    return Err(DrainError::Auth(
                        "the server offers no SASL mechanism the check speaks (SCRAM-SHA-256)"
                            .into(),
                    ));
                }
                let s = Scram::new()?;
                let first = s.client_first();
                let mut msg = b"SCRAM-SHA-256\0".to_vec();
                msg.extend_from_slice(&(first.len() as i32).to_be_bytes());
                msg.extend_from_slice(first.as_bytes());
                send(io, Some(b'p'), &msg).await?;
                scram = Some(s);
            }
            11 => {
                let s = scram
                    .as_mut()
                    .ok_or_else(|| DrainError::Protocol("SASL continue before start".into()))?;
                let last = s.client_final(password, data)?;
                send(io, Some(b'p'), last.as_bytes()).await?;
            }
            12 => {
                let s = scram
                    .as_ref()
                    .ok_or_else(|| DrainError::Protocol("SASL final before start".into()))?;
                s.verify_server(data)?;
            }
            5 => {
                return Err(DrainError::Auth(
                    "the server asks for an MD5 password, which the check does not speak (use scram-sha-256)".into(),
                ))
            }
            other => {
                return Err(DrainError::Auth(format!(
                    "the server asks for authentication method {other}, which the check does not speak"
                )))
            }
        }
    }
}

/// SCRAM-SHA-256 (RFC 5802, RFC 7677) without channel binding, as libpq does by default.
struct Scram {
    nonce: String,
    /// `client-first-message-bare`, then the rest of the auth message once known.
    auth_message: String,
    salted: Option<[u8; 32]>,
}

impl Scram {
    fn new() -> Result<Scram, DrainError> {
        let mut raw = [0u8; 18];
        ring::rand::SystemRandom::new()
            .fill(&mut raw)
            .map_err(|_| DrainError::Protocol("no randomness for the SCRAM nonce".into()))?;
        let nonce = B64.encode(raw);
        Ok(Scram {
            auth_message: format!("n=,r={nonce}"),
            nonce,
            salted: None,
        })
    }

    /// PostgreSQL takes the user from the startup message, so `n=` stays empty.
    fn client_first(&self) -> String {
        format!("n,,{}", self.auth_message)
    }

    fn client_final(
        &mut self,
        password: &SecretValue,
        server_first: &[u8],
    ) -> Result<String, DrainError> {
        let bad = || DrainError::Protocol("malformed SCRAM server-first message".into());
        let text = std::str::from_utf8(server_first).map_err(|_| bad())?;
        let (mut nonce, mut salt, mut iterations) = (None, None, None);
        for part in text.split(',') {
            match part.split_at_checked(2) {
                Some(("r=", v)) => nonce = Some(v),
                Some(("s=", v)) => salt = Some(B64.decode(v).map_err(|_| bad())?),
                Some(("i=", v)) => iterations = v.parse::<u32>().ok(),
                _ => {}
            }
        }
        let (nonce, salt, iterations) = (
            nonce.ok_or_else(bad)?,
            salt.ok_or_else(bad)?,
            iterations.ok_or_else(bad)?,
        );
        // The server's nonce must extend ours, or this is not our exchange.
        if !nonce.starts_with(&self.nonce) || iterations == 0 {
            return Err(bad());
        }
        let iterations = std::num::NonZeroU32::new(iterations).ok_or_else(bad)?;
        let mut salted = [0u8; 32];
        // SASLprep is left out: Vault's generated passwords are ASCII, which it leaves alone.
        pbkdf2::derive(
            pbkdf2::PBKDF2_HMAC_SHA256,
            iterations,
            &salt,
            password.expose().as_bytes(),
            &mut salted,
        );
        let without_proof = format!("c=biws,r={nonce}");
        self.auth_message = format!("{},{text},{without_proof}", self.auth_message);
        let client_key = hmac_sha256(&salted, b"Client Key");
        let stored_key = digest::digest(&digest::SHA256, &client_key);
        let signature = hmac_sha256(stored_key.as_ref(), self.auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(signature)
            .map(|(a, b)| a ^ b)
            .collect();
        self.salted = Some(salted);
        Ok(format!("{without_proof},p={}", B64.encode(proof)))
    }

    /// The server proves it knew the password too: no answer from an impostor counts.
    fn verify_server(&self, server_final: &[u8]) -> Result<(), DrainError> {
        let salted = self
            .salted
            .ok_or_else(|| DrainError::Protocol("SASL final before continue".into()))?;
        let text = std::str::from_utf8(server_final).unwrap_or_default();
        let given = text
            .strip_prefix("v=")
            .and_then(|v| B64.decode(v.trim_end_matches(char::from(0))).ok());
        let server_key = hmac_sha256(&salted, b"Server Key");
        let expected = hmac_sha256(&server_key, self.auth_message.as_bytes());
        match given {
            Some(g) if g == expected => Ok(()),
            _ => Err(DrainError::Auth(
                "the server's SCRAM signature is wrong".into(),
            )),
        }
    }
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data);
    let mut out = [0u8; 32];
    out.copy_from_slice(tag.as_ref());
    out
}

/// The first column of a `DataRow`, as text.
fn first_column(body: &[u8]) -> Result<String, DrainError> {
    let bad = || DrainError::Protocol("malformed row".into());
    let columns = body.get(..2).ok_or_else(bad)?;
    if u16::from_be_bytes([columns[0], columns[1]]) == 0 {
        return Err(bad());
    }
    let len = be_i32(body, 2)?;
    let len = usize::try_from(len).map_err(|_| bad())?; // -1 is NULL
    let value = body.get(6..6 + len).ok_or_else(bad)?;
    Ok(String::from_utf8_lossy(value).into_owned())
}

/// An `ErrorResponse`: its SQLSTATE and message. 28xxx is a refused login.
fn server_error(body: &[u8], during_login: bool) -> DrainError {
    let (mut code, mut message) = (String::new(), String::new());
    for field in body.split(|&b| b == 0) {
        match field.split_first() {
            Some((b'C', v)) => code = String::from_utf8_lossy(v).into_owned(),
            Some((b'M', v)) => message = String::from_utf8_lossy(v).into_owned(),
            _ => {}
        }
    }
    let text = format!("{code}: {message}");
    if during_login || code.starts_with("28") {
        DrainError::Auth(text)
    } else {
        DrainError::Query(text)
    }
}

fn be_i32(b: &[u8], at: usize) -> Result<i32, DrainError> {
    b.get(at..at + 4)
        .map(|v| i32::from_be_bytes([v[0], v[1], v[2], v[3]]))
        .ok_or_else(|| DrainError::Protocol("short message".into()))
}

/// One message out: a tag (none for the startup message), the length, the body.
async fn send<S: AsyncWrite + Unpin>(
    io: &mut S,
    tag: Option<u8>,
    body: &[u8],
) -> Result<(), DrainError> {
    let len = i32::try_from(body.len() + 4)
        .map_err(|_| DrainError::Protocol("message too large".into()))?;
    let mut frame = Vec::with_capacity(body.len() + 5);
    frame.extend(tag);
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(body);
    io.write_all(&frame).await.map_err(lost)?;
    io.flush().await.map_err(lost)
}

/// One message in: its tag and body.
async fn receive<S: AsyncRead + Unpin>(io: &mut S) -> Result<(u8, Vec<u8>), DrainError> {
    let mut head = [0u8; 5];
    io.read_exact(&mut head).await.map_err(lost)?;
    let len = i32::from_be_bytes([head[1], head[2], head[3], head[4]]);
    let len = usize::try_from(len)
        .ok()
        .filter(|l| (4..=MAX_MESSAGE).contains(l))
        .ok_or_else(|| DrainError::Protocol("bad message length".into()))?;
    let mut body = vec![0u8; len - 4];
    io.read_exact(&mut body).await.map_err(lost)?;
    Ok((head[0], body))
}

fn lost(e: std::io::Error) -> DrainError {
    DrainError::Protocol(format!("connection lost: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677's example exchange (user "user", password "pencil"), with the user left out
    /// of the messages the way PostgreSQL's SCRAM does it replaced by the RFC's own bare
    /// message, so the proof and the server's signature must come out as the RFC says.
    #[test]
    fn scram_matches_rfc_7677() {
        let mut s = Scram {
            nonce: "rOprNGfwEbeRWgbNEkqO".into(),
            auth_message: "n=user,r=rOprNGfwEbeRWgbNEkqO".into(),
            salted: None,
        };
        let server_first =
            b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
        let last = s
            .client_final(&SecretValue::new("pencil"), server_first)
            .expect("valid server-first");
        assert_eq!(
            last,
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        s.verify_server(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
            .expect("the RFC's server signature");
        assert!(s.verify_server(b"v=AAAA").is_err());
    }

    #[test]
    fn a_foreign_nonce_is_refused() {
        let mut s = Scram::new().expect("nonce");
        let err = s
            .client_final(&SecretValue::new("pw"), b"r=someone-else,s=QUJD,i=4096")
            .expect_err("not our nonce");
        assert!(matches!(err, DrainError::Protocol(_)));
    }

    #[test]
    fn rows_and_errors_are_read() {
        let mut row = 1u16.to_be_bytes().to_vec();
        row.extend_from_slice(&1i32.to_be_bytes());
        row.push(b'3');
        assert_eq!(first_column(&row).unwrap(), "3");
        let mut null = 1u16.to_be_bytes().to_vec();
        null.extend_from_slice(&(-1i32).to_be_bytes());
        assert!(first_column(&null).is_err());
        let e = server_error(
            b"SFATAL\0C28P01\0Mpassword authentication failed for user \"v\"\0\0",
            false,
        );
        assert!(
            matches!(&e, DrainError::Auth(m) if m.starts_with("28P01: password")),
            "{e}"
        );
    }
}
