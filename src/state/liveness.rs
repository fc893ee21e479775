//! Liveness: whether each secret's task still runs, and whether the agent's event loop
//! answers a ping. `/health` asks from the probe server's own thread.

use std::sync::mpsc::RecvTimeoutError;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use tokio::sync::mpsc::error::TrySendError;

use super::State;

/// How long `/health` waits for the agent's event loop to answer a ping.
pub const LIVENESS_TIMEOUT: Duration = Duration::from_secs(1);

/// Where the agent's liveness task sends its answer to one ping.
pub type LivenessReply = std::sync::mpsc::Sender<()>;
/// Registered with [`State::set_liveness`]; the probe thread sends pings through it.
pub type LivenessTx = tokio::sync::mpsc::Sender<LivenessReply>;
/// Handed to [`serve_liveness`], running on the agent's runtime.
pub type LivenessRx = tokio::sync::mpsc::Receiver<LivenessReply>;

impl State {
    /// Reports a secret's task as started (`true`) or stopped (`false`). Once a task has
    /// started, the secret fails liveness while none of its tasks runs. Prefer
    /// [`State::task_guard`], which also reports a task that ends by panicking.
    pub fn mark_task_alive(&self, name: &str, alive: bool) {
        self.with_entry(name, |entry| {
            let tasks = &mut entry.tasks;
            if alive {
                tasks.started = true;
                tasks.running += 1;
            } else {
                tasks.running = tasks.running.saturating_sub(1);
            }
        });
    }

    /// Marks the task alive now and stopped when the guard drops, however the task ends.
    pub fn task_guard(self: &Arc<Self>, name: &str) -> TaskGuard {
        self.mark_task_alive(name, true);
        TaskGuard {
            state: self.clone(),
            name: name.to_string(),
        }
    }

    /// Registers the agent's ping responder (see [`serve_liveness`]); replaces any earlier one.
    pub fn set_liveness(&self, tx: LivenessTx) {
        *self.liveness.lock().unwrap_or_else(PoisonError::into_inner) = Some(tx);
    }

    /// Liveness: no secret's task has died, and the agent's event loop answers a ping within
    /// [`LIVENESS_TIMEOUT`]. Never depends on Vault. Without a registered responder only the
    /// task flags count. Blocks up to the timeout: call it from the probe thread, never from
    /// async code on the agent's runtime.
    pub fn alive(&self) -> Result<(), String> {
        self.alive_within(LIVENESS_TIMEOUT)
    }

    /// [`State::alive`] with an explicit wait.
    pub fn alive_within(&self, timeout: Duration) -> Result<(), String> {
        self.tasks_alive()?;
        self.event_loop_alive(timeout)
    }

    fn tasks_alive(&self) -> Result<(), String> {
        match self.lock().secrets.iter().find(|e| e.tasks.dead()) {
            Some(e) => Err(format!("secret {:?}: its task has stopped", e.status.name)),
            None => Ok(()),
        }
    }

    /// A ping costs nothing while idle: no timer ticks, the responder sleeps on its channel.
    fn event_loop_alive(&self, timeout: Duration) -> Result<(), String> {
        let Some(tx) = self
            .liveness
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
        else {
            return Ok(());
        };
        let (reply_tx, reply_rx) = std::sync::mpsc::channel();
        match tx.try_send(reply_tx) {
            Ok(()) => {}
            // Earlier pings are still unanswered: the loop is stuck, not merely slow.
            Err(TrySendError::Full(_)) => {
                return Err("the agent's event loop is not answering pings".into())
            }
            Err(TrySendError::Closed(_)) => {
                return Err("the agent's liveness responder has stopped".into())
            }
        }
        match reply_rx.recv_timeout(timeout) {
            Ok(()) => Ok(()),
            Err(RecvTimeoutError::Timeout) => Err(format!(
                "the agent's event loop did not answer within {}",
                humantime::format_duration(timeout)
            )),
            Err(RecvTimeoutError::Disconnected) => {
                Err("the agent's liveness responder has stopped".into())
            }
        }
    }
}

/// Answers every ping until the sender side is dropped. Spawn it on the agent's runtime: if
/// that runtime is blocked or dead, pings go unanswered and `/health` fails.
pub async fn serve_liveness(mut rx: LivenessRx) {
    while let Some(reply) = rx.recv().await {
        // The prober may have given up waiting; that is its business.
        let _ = reply.send(());
    }
}

/// Reports a task stopped when dropped; see [`State::task_guard`].
pub struct TaskGuard {
    state: Arc<State>,
    name: String,
}

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.state.mark_task_alive(&self.name, false);
    }
}
