//! The devvault dev server as a child process on a free loopback port.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

pub struct DevVault {
    addr: String,
    root_token: String,
    child: Child,
}

impl DevVault {
    /// Starts `devvault --listen 127.0.0.1:0 --root-token root` plus `extra_args`, and waits for
    /// its `devvault listening on <addr>` line.
    pub fn start(extra_args: &[&str]) -> DevVault {
        let bin = crate::bins::workspace_bin("devvault", "devvault");
        let root_token = "root".to_string();
        let mut child = Command::new(bin)
            .args(["--listen", "127.0.0.1:0", "--root-token", &root_token])
            .args(extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn devvault");
        let stdout = child.stdout.take().expect("devvault stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read devvault ready line");
        let addr = line
            .trim()
            .strip_prefix("devvault listening on ")
            .unwrap_or_else(|| panic!("unexpected devvault first line: {line:?}"))
            .to_string();
        DevVault {
            addr,
            root_token,
            child,
        }
    }

    /// Base address, e.g. `http://127.0.0.1:41234`.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    pub fn root_token(&self) -> &str {
        &self.root_token
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for DevVault {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
