//! Telling the app that its credential changed, for apps that cannot watch a file.
//!
//! Fired once per new credential (not on renewals, which only move `expires_at`), in a task of
//! its own: a slow or failing hook is logged and counted, and never holds up rotation. Nothing
//! sent carries the password: the app reads that from the file.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// One configured notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hook {
    /// Run a command (no shell), killed after `timeout`. It gets `VAULT_ROTATOR_SECRET`,
    /// `VAULT_ROTATOR_USERNAME`, `VAULT_ROTATOR_FILE` and `VAULT_ROTATOR_EXPIRES_AT`.
    Exec {
        command: Vec<String>,
        timeout: Duration,
    },
    /// Send a signal to the process whose pid is in `pid_file` (needs `shareProcessNamespace`).
    Signal { pid_file: PathBuf, signal: String },
    /// POST a small JSON body to a URL, retried a few times.
    Http {
        url: String,
        timeout: Duration,
        retries: u32,
    },
}

impl Hook {
    pub fn kind(&self) -> &'static str {
        match self {
            Hook::Exec { .. } => "exec",
            Hook::Signal { .. } => "signal",
            Hook::Http { .. } => "http",
        }
    }
}

/// What a hook is told about the change.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Change {
    pub secret: String,
    pub username: Option<String>,
    pub expires_at: Option<String>,
    pub file: String,
}

#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("exec {command:?}: {reason}")]
    Exec { command: String, reason: String },
    #[error("signal via {pid_file}: {reason}")]
    Signal { pid_file: PathBuf, reason: String },
    #[error("POST {url}: {reason}")]
    Http { url: String, reason: String },
}

/// Parses a signal name as written in config: `HUP`, `SIGHUP`, `USR1`, ...
pub fn parse_signal(name: &str) -> Option<nix::sys::signal::Signal> {
    let upper = name.trim().to_ascii_uppercase();
    let full = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    full.parse().ok()
}

/// Told each hook's outcome: the secret, the hook's kind, and whether it succeeded. The caller
/// (the secret worker) counts them in its `State`; a callback keeps `notify` below `state`.
pub type Outcome = Arc<dyn Fn(&str, &'static str, bool) + Send + Sync>;

/// Fires every hook for `change` in the background, reporting each outcome to `outcome`.
pub fn fire(hooks: &[Hook], change: Change, outcome: Outcome) {
    for hook in hooks {
        let hook = hook.clone();
        let change = change.clone();
        let outcome = outcome.clone();
        tokio::spawn(async move {
            let result = run(&hook, &change).await;
            outcome(&change.secret, hook.kind(), result.is_ok());
            match result {
                Ok(()) => {
                    tracing::info!(secret = %change.secret, hook = hook.kind(), "notified the app of the new credential")
                }
                Err(e) => {
                    tracing::warn!(secret = %change.secret, hook = hook.kind(), error = %e, "notifying the app failed")
                }
            }
        });
    }
}

pub async fn run(hook: &Hook, change: &Change) -> Result<(), HookError> {
    match hook {
        Hook::Exec { command, timeout } => exec(command, *timeout, change).await,
        Hook::Signal { pid_file, signal } => send_signal(pid_file, signal),
        Hook::Http {
            url,
            timeout,
            retries,
        } => post(url, *timeout, *retries, change).await,
    }
}

async fn exec(command: &[String], timeout: Duration, change: &Change) -> Result<(), HookError> {
    let err = |reason: String| HookError::Exec {
        command: command.join(" "),
        reason,
    };
    let (program, args) = command
        .split_first()
        .ok_or_else(|| err("empty command".into()))?;
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .env("VAULT_ROTATOR_SECRET", &change.secret)
        .env(
            "VAULT_ROTATOR_USERNAME",
            change.username.as_deref().unwrap_or(""),
        )
        .env("VAULT_ROTATOR_FILE", &change.file)
        .env(
            "VAULT_ROTATOR_EXPIRES_AT",
            change.expires_at.as_deref().unwrap_or(""),
        )
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| err(e.to_string()))?;
    match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(status)) if status.success() => Ok(()),
        Ok(Ok(status)) => Err(err(format!("exited with {status}"))),
        Ok(Err(e)) => Err(err(e.to_string())),
        Err(_) => {
            let _ = child.kill().await;
            Err(err(format!(
                "killed after {}",
                humantime::format_duration(timeout)
            )))
        }
    }
}

fn send_signal(pid_file: &std::path::Path, signal: &str) -> Result<(), HookError> {
    let err = |reason: String| HookError::Signal {
        pid_file: pid_file.to_path_buf(),
        reason,
    };
    let sig =
        parse_signal(signal).ok_or_else(|| err(format!("{signal:?} is not a signal name")))?;
    let text = std::fs::read_to_string(pid_file).map_err(|e| err(e.to_string()))?;
    let pid: i32 = text
        .trim()
        .parse()
        .map_err(|_| err(format!("{:?} is not a process id", text.trim())))?;
    if pid <= 1 {
        return Err(err(format!("refusing to signal pid {pid}")));
    }
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig)
        .map_err(|e| err(format!("pid {pid}: {e}")))
}

async fn post(
    url: &str,
    timeout: Duration,
    retries: u32,
    change: &Change,
) -> Result<(), HookError> {
    let err = |reason: String| HookError::Http {
        url: url.to_string(),
        reason,
    };
    let client = reqwest::Client::builder()
        .timeout(timeout)
        .build()
        .map_err(|e| err(e.to_string()))?;
    let body = serde_json::json!({
        "event": "credential_changed",
        "secret": change.secret,
        "username": change.username,
        "expires_at": change.expires_at,
        "file": change.file,
        "time": humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
    });
    let mut last = String::new();
    for attempt in 0..=retries {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(500) * 2u32.pow(attempt.min(6) - 1)).await;
        }
        match client.post(url).json(&body).send().await {
            Ok(r) if r.status().is_success() => return Ok(()),
            Ok(r) => last = format!("HTTP {}", r.status().as_u16()),
            Err(e) => last = e.to_string(),
        }
    }
    Err(err(format!("{last} (after {} attempts)", retries + 1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change() -> Change {
        Change {
            secret: "db".into(),
            username: Some("v-app-1".into()),
            expires_at: None,
            file: "/x/db.json".into(),
        }
    }

    #[test]
    fn signal_names_parse() {
        assert_eq!(parse_signal("HUP"), Some(nix::sys::signal::Signal::SIGHUP));
        assert_eq!(
            parse_signal("sigusr1"),
            Some(nix::sys::signal::Signal::SIGUSR1)
        );
        assert_eq!(parse_signal("NOPE"), None);
    }

    #[tokio::test]
    async fn exec_gets_the_change_in_its_environment_and_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let script = format!(
            "printf '%s %s' \"$VAULT_ROTATOR_SECRET\" \"$VAULT_ROTATOR_USERNAME\" > {}",
            out.display()
        );
        let hook = Hook::Exec {
            command: vec!["sh".into(), "-c".into(), script],
            timeout: Duration::from_secs(5),
        };
        run(&hook, &change()).await.unwrap();
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "db v-app-1");
        let slow = Hook::Exec {
            command: vec!["sleep".into(), "5".into()],
            timeout: Duration::from_millis(100),
        };
        let e = run(&slow, &change()).await.unwrap_err().to_string();
        assert!(e.contains("killed after"), "{e}");
        let failing = Hook::Exec {
            command: vec!["false".into()],
            timeout: Duration::from_secs(5),
        };
        assert!(run(&failing, &change())
            .await
            .unwrap_err()
            .to_string()
            .contains("exited"));
    }

    #[tokio::test]
    async fn signal_reaches_the_process_in_the_pid_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid_file = dir.path().join("app.pid");
        std::fs::write(&pid_file, child.id().to_string()).unwrap();
        let hook = Hook::Signal {
            pid_file: pid_file.clone(),
            signal: "TERM".into(),
        };
        run(&hook, &change()).await.unwrap();
        let status = child.wait().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(15));
        std::fs::write(&pid_file, "1").unwrap();
        assert!(run(&hook, &change()).await.is_err(), "never signals init");
    }
}
