//! `SIGHUP`: the new configuration's secrets replace the old ones, the workers of changed or
//! removed secrets retire (handing over or revoking), and new ones start.

use std::collections::BTreeMap;

use super::{secret_info, sink_for, Agent, Retiring};
use crate::config::{Config, SecretConfig};
use crate::logging::LogHandle;
use crate::secret::Retire;

impl Agent {
    /// What a reload changes whether or not the workers run: the log level, and a warning for
    /// what only a restart changes.
    fn reload_settings(&self, new: &Config, log: Option<&LogHandle>) {
        if let Some(log) = log {
            if let Err(e) = log.set_level(&new.log_level) {
                tracing::warn!(error = %e, "SIGHUP: log level not changed");
            }
        }
        if new.vault != self.cfg.vault || new.auth != self.cfg.auth {
            tracing::warn!("SIGHUP: [vault] and [auth] changes take effect on restart; secrets and log level are reloaded now");
        }
    }

    /// A reload during the start splay: no worker runs yet, so the new secrets simply replace
    /// the old ones, and readiness waits for exactly the new set.
    pub(super) fn reload_before_start(&mut self, new: Config, log: Option<&LogHandle>) {
        self.reload_settings(&new, log);
        for old in &self.cfg.secrets {
            if !new.secrets.iter().any(|s| s.name == old.name) {
                self.state.remove_secret(&old.name);
            }
        }
        let mut secrets = Vec::with_capacity(new.secrets.len());
        for s in new.secrets {
            match sink_for(&s) {
                Ok(_) => {
                    self.state.add_secret(secret_info(&s));
                    secrets.push(s);
                }
                Err(e) => tracing::error!(secret = %s.name, error = %e, "SIGHUP: cannot start"),
            }
        }
        self.cfg.secrets = secrets;
        self.cfg.log_level = new.log_level;
        tracing::info!("SIGHUP: configuration reloaded before the first request");
    }

    pub(super) fn reload(&mut self, new: Config, log: Option<&LogHandle>) {
        self.reload_settings(&new, log);
        let wanted: BTreeMap<String, SecretConfig> = new
            .secrets
            .iter()
            .map(|s| (s.name.clone(), s.clone()))
            .collect();
        self.retiring.retain(|r| !r.task.is_finished());
        let names: Vec<String> = self.running.keys().cloned().collect();
        for name in names {
            let old = &self.running[&name].cfg;
            let how = match wanted.get(&name) {
                Some(w) if w == old => continue,
                Some(w) => {
                    if w.output.path() != old.output.path() {
                        // The configured file is another one now: not ready until it exists.
                        self.state.forget_credential(&name);
                    }
                    Retire::Replaced
                }
                None => Retire::Removed,
            };
            if let Some(r) = self.running.remove(&name) {
                let _ = r.retire.send(how);
                tracing::info!(secret = %name, ?how, "SIGHUP: retired");
                self.retiring.push(Retiring {
                    name: name.clone(),
                    stop: r.stop,
                    retire: r.retire,
                    task: r.task,
                });
            }
            if how == Retire::Removed {
                self.state.remove_secret(&name);
                // Earlier workers of this name still handing over have nothing to hand
                // over to any more.
                for r in &self.retiring {
                    if r.name == name && *r.retire.borrow() == Retire::Replaced {
                        let _ = r.retire.send(Retire::Removed);
                    }
                }
            }
        }
        for (name, s) in wanted {
            if !self.running.contains_key(&name) {
                for r in &self.retiring {
                    if r.name == name && *r.retire.borrow() == Retire::Removed {
                        let _ = r.retire.send(Retire::Replaced);
                    }
                }
                match self.start(s) {
                    Ok(()) => tracing::info!(secret = %name, "SIGHUP: started"),
                    Err(e) => tracing::error!(secret = %name, error = %e, "SIGHUP: cannot start"),
                }
            }
        }
        self.cfg.secrets = new.secrets;
        self.cfg.log_level = new.log_level;
    }
}
