//! The MySQL/MariaDB check: a small client of the wire protocol, just enough for one query.
//!
//! Handshake v10, an optional TLS upgrade, `mysql_native_password` or the fast path of
//! `caching_sha2_password` (its full path only over TLS, where the password may be sent as
//! is), one `COM_QUERY` whose answer is one row, `COM_QUIT`. Hand-written because a full
//! client (`mysql_async`) brings far more code than this check needs; see the README for
//! the sizes. SHA-1 and SHA-256 come from ring, already in the tree through rustls.
//!
//! A user without the `PROCESS` privilege sees only its own threads in
//! `information_schema.processlist`: exactly what the count needs.

use ring::digest;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::url::{DrainCheck, TlsMode};
use super::{tls, DrainError};
use crate::credential::SecretValue;

const QUERY: &str = "SELECT COUNT(*) FROM information_schema.processlist \
                     WHERE user = SUBSTRING_INDEX(CURRENT_USER(), '@', 1) AND id <> CONNECTION_ID()";

// Capability flags (the protocol's names).
const LONG_PASSWORD: u32 = 0x1;
const CONNECT_WITH_DB: u32 = 0x8;
const PROTOCOL_41: u32 = 0x200;
const SSL: u32 = 0x800;
const TRANSACTIONS: u32 = 0x2000;
const SECURE_CONNECTION: u32 = 0x8000;
const PLUGIN_AUTH: u32 = 0x8_0000;

const MAX_PACKET: u32 = 1 << 24;
/// utf8mb4_general_ci: a user name is UTF-8.
const CHARSET: u8 = 45;
const NATIVE: &str = "mysql_native_password";
const CACHING_SHA2: &str = "caching_sha2_password";

pub async fn sessions(
    check: &DrainCheck,
    user: &str,
    password: &SecretValue,
) -> Result<u64, DrainError> {
    let tcp = TcpStream::connect((check.host.as_str(), check.port))
        .await
        .map_err(|source| DrainError::Connect {
            addr: check.addr(),
            source,
        })?;
    let mut plain = Packets { io: tcp, seq: 0 };
    let hello = Hello::parse(&plain.read().await?)?;
    let mut caps = LONG_PASSWORD | PROTOCOL_41 | TRANSACTIONS | SECURE_CONNECTION | PLUGIN_AUTH;
    if check.dbname.is_some() {
        caps |= CONNECT_WITH_DB;
    }
    let server_tls = hello.caps & SSL != 0;
    let config = match (tls::client_config(check)?, server_tls) {
        (Some(config), true) => Some(config),
        (Some(_), false) if check.tls != TlsMode::Prefer => {
            return Err(DrainError::NoTls { addr: check.addr() })
        }
        _ => None,
    };
    let Some(config) = config else {
        return login_and_count(plain, &hello, caps, false, check, user, password).await;
    };
    caps |= SSL;
    plain.write(&client_caps(caps)).await?;
    let stream = tls::connect(check, config, plain.io).await?;
    let secure = Packets {
        io: stream,
        seq: plain.seq,
    };
    login_and_count(secure, &hello, caps, true, check, user, password).await
}

async fn login_and_count<S: AsyncRead + AsyncWrite + Unpin>(
    mut p: Packets<S>,
    hello: &Hello,
    caps: u32,
    secure: bool,
    check: &DrainCheck,
    user: &str,
    password: &SecretValue,
) -> Result<u64, DrainError> {
    let plugin = hello.plugin.as_str();
    let plugin = if plugin == CACHING_SHA2 {
        CACHING_SHA2
    } else {
        NATIVE
    };
    let mut response = client_caps(caps);
    response.extend_from_slice(user.as_bytes());
    response.push(0);
    let auth = scramble(plugin, password.expose().as_bytes(), &hello.nonce);
    response.push(auth.len() as u8);
    response.extend_from_slice(&auth);
    if let Some(db) = &check.dbname {
        response.extend_from_slice(db.as_bytes());
        response.push(0);
    }
    response.extend_from_slice(plugin.as_bytes());
    response.push(0);
    p.write(&response).await?;
    authenticate(&mut p, plugin, secure, password).await?;
    p.seq = 0;
    let mut query = vec![0x03];
    query.extend_from_slice(QUERY.as_bytes());
    p.write(&query).await?;
    let count = read_single_value(&mut p).await?;
    p.seq = 0;
    // Polite, not needed: the server would notice the closed socket anyway.
    let _ = p.write(&[0x01]).await;
    count
        .trim()
        .parse()
        .map_err(|_| DrainError::Protocol("the count is not a number".into()))
}

/// Reads the server's answers to the login until it says OK (or no).
async fn authenticate<S: AsyncRead + AsyncWrite + Unpin>(
    p: &mut Packets<S>,
    mut plugin: &str,
    secure: bool,
    password: &SecretValue,
) -> Result<(), DrainError> {
    // Bounded: a server that keeps switching plugins is not one to talk to.
    for _ in 0..4 {
        let packet = p.read().await?;
        match packet.first() {
            Some(0x00) => return Ok(()),
            Some(0xFF) => return Err(server_error(&packet, true)),
            Some(0xFE) => {
                // Auth switch: another plugin, a new nonce.
                let rest = &packet[1..];
                let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
                let name = String::from_utf8_lossy(&rest[..end]).into_owned();
                let nonce = nonce20(rest.get(end + 1..).unwrap_or_default());
                plugin = match name.as_str() {
                    NATIVE => NATIVE,
                    CACHING_SHA2 => CACHING_SHA2,
                    other => {
                        return Err(DrainError::Auth(format!(
                            "the server asks for the auth plugin `{other}`, which the check does not speak (it speaks {NATIVE} and {CACHING_SHA2})"
                        )))
                    }
                };
                p.write(&scramble(plugin, password.expose().as_bytes(), &nonce))
                    .await?;
            }
            Some(0x01) if plugin == CACHING_SHA2 => match packet.get(1) {
                // Fast path: the server had the user cached; an OK follows.
                Some(0x03) => {}
                Some(0x04) if secure => {
                    let mut clear = password.expose().as_bytes().to_vec();
                    clear.push(0);
                    p.write(&clear).await?;
                }
                Some(0x04) => {
                    return Err(DrainError::Auth(
                        "caching_sha2_password wants a full login, which the check does only over TLS (ssl-mode=REQUIRED or stricter); it works without once the server has cached the user".into(),
                    ))
                }
                _ => return Err(DrainError::Protocol("unexpected auth data".into())),
            },
            _ => return Err(DrainError::Protocol("unexpected answer to the login".into())),
        }
    }
    Err(DrainError::Protocol("too many auth round trips".into()))
}

/// A result set of one column and one row: its value as text.
async fn read_single_value<S: AsyncRead + AsyncWrite + Unpin>(
    p: &mut Packets<S>,
) -> Result<String, DrainError> {
    let first = p.read().await?;
    match first.first() {
        Some(0xFF) => return Err(server_error(&first, false)),
        Some(0x00) | None => return Err(DrainError::Protocol("no result set".into())),
        _ => {}
    }
    let columns = lenenc(&mut &first[..]).unwrap_or(0);
    for _ in 0..columns {
        p.read().await?;
    }
    let mut value = None;
    // Rows until an EOF (0xFE, short) or an error.
    loop {
        let packet = p.read().await?;
        match packet.first() {
            Some(0xFE) if packet.len() < 9 => {
                if value.is_some() {
                    break;
                }
                // The EOF that ends the column definitions.
                continue;
            }
            Some(0xFF) => return Err(server_error(&packet, false)),
            _ if value.is_none() => {
                let mut rest = &packet[..];
                let len =
                    lenenc(&mut rest).ok_or_else(|| DrainError::Protocol("bad row".into()))?;
                let len = usize::try_from(len).unwrap_or(usize::MAX);
                let text = rest
                    .get(..len)
                    .ok_or_else(|| DrainError::Protocol("short row".into()))?;
                value = Some(String::from_utf8_lossy(text).into_owned());
            }
            _ => {}
        }
    }
    value.ok_or_else(|| DrainError::Protocol("no row".into()))
}

/// The server's first packet, the parts the login needs.
struct Hello {
    caps: u32,
    nonce: [u8; 20],
    plugin: String,
}

impl Hello {
    fn parse(packet: &[u8]) -> Result<Hello, DrainError> {
        let bad = || DrainError::Protocol("malformed server greeting".into());
        match packet.first() {
            Some(10) => {}
            Some(0xFF) => return Err(server_error(packet, false)),
            _ => {
                return Err(DrainError::Protocol(
                    "not a MySQL protocol v10 server".into(),
                ))
            }
        }
        let rest = &packet[1..];
        let version_end = rest.iter().position(|&b| b == 0).ok_or_else(bad)?;
        let rest = rest.get(version_end + 1..).ok_or_else(bad)?;
        // connection id (4), nonce part 1 (8), filler (1), caps low (2), charset (1),
        // status (2), caps high (2), nonce length (1), reserved (10), nonce part 2.
        let fixed = rest.get(..31).ok_or_else(bad)?;
        let caps = u32::from(u16::from_le_bytes([fixed[13], fixed[14]]))
            | u32::from(u16::from_le_bytes([fixed[18], fixed[19]])) << 16;
        if caps & PROTOCOL_41 == 0 || caps & SECURE_CONNECTION == 0 {
            return Err(DrainError::Protocol(
                "server too old (no protocol 4.1)".into(),
            ));
        }
        let nonce_len = usize::from(fixed[20]).max(21);
        let part2_len = (nonce_len - 8).max(13);
        let part2 = rest.get(31..31 + part2_len).ok_or_else(bad)?;
        let mut nonce = [0u8; 20];
        nonce[..8].copy_from_slice(&fixed[4..12]);
        nonce[8..].copy_from_slice(&part2[..12]);
        let tail = rest.get(31 + part2_len..).unwrap_or_default();
        let end = tail.iter().position(|&b| b == 0).unwrap_or(tail.len());
        let plugin = if caps & PLUGIN_AUTH != 0 {
            String::from_utf8_lossy(&tail[..end]).into_owned()
        } else {
            NATIVE.to_string()
        };
        Ok(Hello {
            caps,
            nonce,
            plugin,
        })
    }
}

/// The fixed head of a handshake response (and the whole of an SSL request).
fn client_caps(caps: u32) -> Vec<u8> {
    let mut b = Vec::with_capacity(64);
    b.extend_from_slice(&caps.to_le_bytes());
    b.extend_from_slice(&MAX_PACKET.to_le_bytes());
    b.push(CHARSET);
    b.extend_from_slice(&[0; 23]);
    b
}

/// The first 20 bytes of an auth switch's plugin data (it may carry a trailing NUL).
fn nonce20(data: &[u8]) -> [u8; 20] {
    let mut nonce = [0u8; 20];
    let n = data.len().min(20);
    nonce[..n].copy_from_slice(&data[..n]);
    nonce
}

/// The proof of the password for `plugin`; an empty password proves itself with nothing.
fn scramble(plugin: &str, password: &[u8], nonce: &[u8; 20]) -> Vec<u8> {
    if password.is_empty() {
        return Vec::new();
    }
    let (alg, stage1_then_nonce) = if plugin == CACHING_SHA2 {
        (&digest::SHA256, false)
    } else {
        (&digest::SHA1_FOR_LEGACY_USE_ONLY, true)
    };
    let h1 = digest::digest(alg, password);
    let h2 = digest::digest(alg, h1.as_ref());
    let mut ctx = digest::Context::new(alg);
    // native: SHA1(nonce + SHA1(SHA1(pw))); caching_sha2: SHA256(SHA256(SHA256(pw)) + nonce).
    if stage1_then_nonce {
        ctx.update(nonce);
        ctx.update(h2.as_ref());
    } else {
        ctx.update(h2.as_ref());
        ctx.update(nonce);
    }
    let h3 = ctx.finish();
    h1.as_ref()
        .iter()
        .zip(h3.as_ref())
        .map(|(a, b)| a ^ b)
        .collect()
}

/// A length-encoded integer, advancing `b` past it.
fn lenenc(b: &mut &[u8]) -> Option<u64> {
    let (&first, rest) = b.split_first()?;
    let width = match first {
        0..=0xFA => {
            *b = rest;
            return Some(u64::from(first));
        }
        0xFC => 2,
        0xFD => 3,
        0xFE => 8,
        _ => return None,
    };
    let bytes = rest.get(..width)?;
    let mut v = [0u8; 8];
    v[..width].copy_from_slice(bytes);
    *b = &rest[width..];
    Some(u64::from_le_bytes(v))
}

/// An ERR packet as an error: 1045 (access denied) and friends are a refused login.
fn server_error(packet: &[u8], during_login: bool) -> DrainError {
    let code = packet
        .get(1..3)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .unwrap_or(0);
    let mut msg = packet.get(3..).unwrap_or_default();
    if msg.first() == Some(&b'#') {
        msg = msg.get(6..).unwrap_or_default();
    }
    let text = format!("{code}: {}", String::from_utf8_lossy(msg));
    if during_login || matches!(code, 1044 | 1045 | 1698) {
        DrainError::Auth(text)
    } else {
        DrainError::Query(text)
    }
}

/// The framing: a 3-byte length, a sequence number, the payload.
struct Packets<S> {
    io: S,
    seq: u8,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Packets<S> {
    async fn read(&mut self) -> Result<Vec<u8>, DrainError> {
        let mut head = [0u8; 4];
        self.io.read_exact(&mut head).await.map_err(lost)?;
        let len = u32::from_le_bytes([head[0], head[1], head[2], 0]);
        if len == 0xFF_FFFF {
            // A split packet: far more than a one-row answer needs.
            return Err(DrainError::Protocol("oversized packet".into()));
        }
        self.seq = head[3].wrapping_add(1);
        let mut body = vec![0u8; len as usize];
        self.io.read_exact(&mut body).await.map_err(lost)?;
        Ok(body)
    }

    async fn write(&mut self, payload: &[u8]) -> Result<(), DrainError> {
        let len = u32::try_from(payload.len())
            .ok()
            .filter(|l| *l < 0xFF_FFFF)
            .ok_or_else(|| DrainError::Protocol("packet too large".into()))?;
        let mut frame = Vec::with_capacity(payload.len() + 4);
        frame.extend_from_slice(&len.to_le_bytes()[..3]);
        frame.push(self.seq);
        frame.extend_from_slice(payload);
        self.seq = self.seq.wrapping_add(1);
        self.io.write_all(&frame).await.map_err(lost)?;
        self.io.flush().await.map_err(lost)
    }
}

fn lost(e: std::io::Error) -> DrainError {
    DrainError::Protocol(format!("connection lost: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn native_password_proof_matches_the_protocol() {
        // SHA1(pw) XOR SHA1(nonce + SHA1(SHA1(pw))), worked out independently below.
        let nonce = *b"abcdefghijklmnopqrst";
        let got = scramble(NATIVE, b"secret", &nonce);
        let sha1 = |d: &[u8]| digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, d);
        let h1 = sha1(b"secret");
        let h2 = sha1(h1.as_ref());
        let h3 = sha1(&[&nonce[..], h2.as_ref()].concat());
        let want: Vec<u8> = h1
            .as_ref()
            .iter()
            .zip(h3.as_ref())
            .map(|(a, b)| a ^ b)
            .collect();
        assert_eq!(got, want);
        assert_eq!(got.len(), 20);
        assert!(scramble(NATIVE, b"", &nonce).is_empty());
        assert_eq!(scramble(CACHING_SHA2, b"secret", &nonce).len(), 32);
    }

    #[test]
    fn lenenc_widths() {
        let mut b: &[u8] = &[0x05, 0xFF];
        assert_eq!(lenenc(&mut b), Some(5));
        assert_eq!(b, &[0xFF]);
        let mut b: &[u8] = &[0xFC, 0x01, 0x02];
        assert_eq!(lenenc(&mut b), Some(0x0201));
        let mut b: &[u8] = &[0xFD, 0x01, 0x00];
        assert_eq!(lenenc(&mut b), None, "short");
        let mut b: &[u8] = &[0xFB];
        assert_eq!(lenenc(&mut b), None, "NULL is no number");
    }

    #[test]
    fn a_greeting_is_read() {
        let mut g = vec![10];
        g.extend_from_slice(b"10.11.6-MariaDB\0");
        g.extend_from_slice(&7u32.to_le_bytes());
        g.extend_from_slice(b"ABCDEFGH\0");
        let caps = PROTOCOL_41 | SECURE_CONNECTION | PLUGIN_AUTH | SSL;
        g.extend_from_slice(&(caps as u16).to_le_bytes());
        g.push(45);
        g.extend_from_slice(&2u16.to_le_bytes());
        g.extend_from_slice(&((caps >> 16) as u16).to_le_bytes());
        g.push(21);
        g.extend_from_slice(&[0; 10]);
        g.extend_from_slice(b"IJKLMNOPQRST\0");
        g.extend_from_slice(b"mysql_native_password\0");
        let h = Hello::parse(&g).expect("parses");
        assert_eq!(&h.nonce, b"ABCDEFGHIJKLMNOPQRST");
        assert_eq!(h.plugin, NATIVE);
        assert_eq!(h.caps, caps);
        assert!(Hello::parse(&g[..20]).is_err());
        assert!(Hello::parse(&[9, 0]).is_err());
    }

    #[test]
    fn errors_do_not_echo_more_than_the_server_said() {
        let mut p = vec![0xFF];
        p.extend_from_slice(&1045u16.to_le_bytes());
        p.extend_from_slice(b"#28000Access denied for user 'v-app'@'127.0.0.1'");
        let e = server_error(&p, false);
        assert!(
            matches!(&e, DrainError::Auth(m) if m.starts_with("1045: Access denied")),
            "{e}"
        );
    }
}
