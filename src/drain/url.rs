//! The `--drain-check` URL: which database, where, and how strict its TLS is.
//!
//! `postgres://HOST[:PORT][/DB][?sslmode=MODE&sslrootcert=FILE]`
//! `mysql://HOST[:PORT][/DB][?ssl-mode=MODE&ssl-ca=FILE]` (also `mariadb://`)
//!
//! The modes are the clients' own (libpq's `sslmode`, the MySQL client's `--ssl-mode`), so an
//! operator can copy them from the app's settings. The URL carries no user or password: the
//! check logs in as the old credential, and a password in a flag would end up in `ps`,
//! manifests and `/status`.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// Which database speaks at the address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Database {
    Postgres,
    Mysql,
}

/// How much TLS the check insists on, weakest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// Plain TCP.
    Disable,
    /// TLS when the server offers it, unverified; plain otherwise.
    Prefer,
    /// TLS or fail; the certificate is not verified (libpq's `require` without a root file).
    Require,
    /// TLS, and the certificate chains to a trusted root; the host name is not checked.
    VerifyCa,
    /// TLS, a trusted chain, and a certificate for the host in the URL.
    VerifyFull,
}

/// A validated `--drain-check` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrainCheck {
    pub database: Database,
    pub host: String,
    pub port: u16,
    /// The database to log in to: PostgreSQL needs one (default `postgres`); MySQL may have none.
    pub dbname: Option<String>,
    pub tls: TlsMode,
    /// Roots to verify the server against instead of the system's and Mozilla's.
    pub root_cert: Option<PathBuf>,
    /// The URL as given, for logs and `/status` (it holds no secret).
    text: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UrlError {
    #[error("not a URL ({0})")]
    Syntax(String),
    #[error("unknown scheme `{0}` (use postgres://, postgresql://, mysql:// or mariadb://)")]
    Scheme(String),
    #[error("must not carry a user or password: the check logs in as the old credential (give host, port and database only)")]
    UserInfo,
    #[error("needs a host")]
    NoHost,
    #[error("unknown parameter `{0}` (allowed: {1})")]
    Param(String, &'static str),
    #[error("`{key}={value}` is not a TLS mode (use {allowed})")]
    Mode {
        key: &'static str,
        value: String,
        allowed: &'static str,
    },
    #[error("`{0}` is given twice")]
    Twice(String),
}

impl DrainCheck {
    /// `host:port`, for errors and TLS server names.
    pub fn addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Display for DrainCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl FromStr for DrainCheck {
    type Err = UrlError;

    fn from_str(text: &str) -> Result<DrainCheck, UrlError> {
        let url = ::url::Url::parse(text).map_err(|e| UrlError::Syntax(e.to_string()))?;
        let database = match url.scheme() {
            "postgres" | "postgresql" => Database::Postgres,
            "mysql" | "mariadb" => Database::Mysql,
            other => return Err(UrlError::Scheme(other.to_string())),
        };
        if !url.username().is_empty() || url.password().is_some() {
            return Err(UrlError::UserInfo);
        }
        let host = match url.host() {
            Some(::url::Host::Ipv6(ip)) => ip.to_string(),
            Some(h) => h.to_string(),
            None => return Err(UrlError::NoHost),
        };
        if host.is_empty() {
            return Err(UrlError::NoHost);
        }
        let port = url.port().unwrap_or(match database {
            Database::Postgres => 5432,
            Database::Mysql => 3306,
        });
        let path = url.path().trim_start_matches('/');
        let dbname = match percent_decode(path) {
            d if d.is_empty() => None,
            d => Some(d),
        };
        let (tls, root_cert) = tls_params(database, &url)?;
        Ok(DrainCheck {
            database,
            host,
            port,
            dbname,
            tls,
            root_cert,
            text: text.to_string(),
        })
    }
}

/// The TLS mode and root file from the query, in the spelling of `database`'s own client.
fn tls_params(
    database: Database,
    url: &::url::Url,
) -> Result<(TlsMode, Option<PathBuf>), UrlError> {
    let (mode_key, root_key, allowed_params, allowed_modes) = match database {
        Database::Postgres => (
            "sslmode",
            "sslrootcert",
            "sslmode, sslrootcert",
            "disable, prefer, require, verify-ca or verify-full",
        ),
        Database::Mysql => (
            "ssl-mode",
            "ssl-ca",
            "ssl-mode, ssl-ca",
            "DISABLED, PREFERRED, REQUIRED, VERIFY_CA or VERIFY_IDENTITY",
        ),
    };
    // The clients' defaults: libpq prefers TLS, and so does the MySQL client.
    let mut mode = None;
    let mut root = None;
    for (key, value) in url.query_pairs() {
        if key == mode_key {
            if mode.is_some() {
                return Err(UrlError::Twice(key.into_owned()));
            }
            mode = Some(parse_mode(database, &value).ok_or_else(|| UrlError::Mode {
                key: mode_key,
                value: value.clone().into_owned(),
                allowed: allowed_modes,
            })?);
        } else if key == root_key {
            if root.is_some() {
                return Err(UrlError::Twice(key.into_owned()));
            }
            root = Some(PathBuf::from(value.into_owned()));
        } else {
            return Err(UrlError::Param(key.into_owned(), allowed_params));
        }
    }
    Ok((mode.unwrap_or(TlsMode::Prefer), root))
}

fn parse_mode(database: Database, value: &str) -> Option<TlsMode> {
    Some(match database {
        Database::Postgres => match value {
            "disable" => TlsMode::Disable,
            "prefer" => TlsMode::Prefer,
            "require" => TlsMode::Require,
            "verify-ca" => TlsMode::VerifyCa,
            "verify-full" => TlsMode::VerifyFull,
            _ => return None,
        },
        // The MySQL client takes its modes in any case.
        Database::Mysql => match value.to_ascii_uppercase().as_str() {
            "DISABLED" => TlsMode::Disable,
            "PREFERRED" => TlsMode::Prefer,
            "REQUIRED" => TlsMode::Require,
            "VERIFY_CA" => TlsMode::VerifyCa,
            "VERIFY_IDENTITY" => TlsMode::VerifyFull,
            _ => return None,
        },
    })
}

fn percent_decode(s: &str) -> String {
    ::url::form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<DrainCheck, UrlError> {
        s.parse()
    }

    #[test]
    fn postgres_with_every_part() {
        let c =
            parse("postgres://db.internal:6432/app?sslmode=verify-full&sslrootcert=/etc/ca.pem")
                .expect("valid");
        assert_eq!(c.database, Database::Postgres);
        assert_eq!(c.host, "db.internal");
        assert_eq!(c.port, 6432);
        assert_eq!(c.dbname.as_deref(), Some("app"));
        assert_eq!(c.tls, TlsMode::VerifyFull);
        assert_eq!(c.root_cert, Some(PathBuf::from("/etc/ca.pem")));
        assert_eq!(c.addr(), "db.internal:6432");
        assert_eq!(
            c.to_string(),
            "postgres://db.internal:6432/app?sslmode=verify-full&sslrootcert=/etc/ca.pem"
        );
    }

    #[test]
    fn defaults_are_the_clients_own() {
        let pg = parse("postgresql://db").expect("valid");
        assert_eq!((pg.port, pg.tls, pg.dbname), (5432, TlsMode::Prefer, None));
        let my = parse("mysql://db").expect("valid");
        assert_eq!(
            (my.database, my.port, my.tls),
            (Database::Mysql, 3306, TlsMode::Prefer)
        );
        let maria = parse("mariadb://127.0.0.1:3307/app").expect("valid");
        assert_eq!((maria.database, maria.port), (Database::Mysql, 3307));
    }

    #[test]
    fn every_mode_in_each_spelling() {
        for (pg, my, mode) in [
            ("disable", "DISABLED", TlsMode::Disable),
            ("prefer", "preferred", TlsMode::Prefer),
            ("require", "REQUIRED", TlsMode::Require),
            ("verify-ca", "verify_ca", TlsMode::VerifyCa),
            ("verify-full", "VERIFY_IDENTITY", TlsMode::VerifyFull),
        ] {
            assert_eq!(
                parse(&format!("postgres://h/d?sslmode={pg}")).map(|c| c.tls),
                Ok(mode)
            );
            assert_eq!(
                parse(&format!("mysql://h/d?ssl-mode={my}")).map(|c| c.tls),
                Ok(mode)
            );
        }
    }

    #[test]
    fn a_user_or_password_is_refused() {
        for url in [
            "postgres://app:hunter2@db/app",
            "postgres://app@db/app",
            "mysql://:hunter2@db/app",
        ] {
            let err = parse(url).expect_err(url);
            assert_eq!(err, UrlError::UserInfo, "{url}");
            assert!(!err.to_string().contains("hunter2"));
        }
    }

    #[test]
    fn mistakes_are_named() {
        assert!(matches!(parse("redis://db"), Err(UrlError::Scheme(s)) if s == "redis"));
        assert!(matches!(
            parse("db:5432"),
            Err(UrlError::Scheme(_) | UrlError::Syntax(_))
        ));
        assert!(matches!(parse("postgres:///app"), Err(UrlError::NoHost)));
        assert!(
            matches!(parse("postgres://db/app?ssl-mode=require"), Err(UrlError::Param(k, _)) if k == "ssl-mode")
        );
        assert!(
            matches!(parse("mysql://db/app?sslmode=require"), Err(UrlError::Param(k, _)) if k == "sslmode")
        );
        assert!(
            matches!(parse("postgres://db/app?sslmode=on"), Err(UrlError::Mode { value, .. }) if value == "on")
        );
        assert!(matches!(
            parse("postgres://db/app?sslmode=require&sslmode=disable"),
            Err(UrlError::Twice(_))
        ));
        assert!(matches!(
            parse("postgres://db:99999/app"),
            Err(UrlError::Syntax(_))
        ));
    }

    #[test]
    fn ipv6_and_encoded_names() {
        let c = parse("postgres://[::1]:5433/my%20db").expect("valid");
        assert_eq!(c.host, "::1");
        assert_eq!(c.addr(), "[::1]:5433");
        assert_eq!(c.dbname.as_deref(), Some("my db"));
    }
}
