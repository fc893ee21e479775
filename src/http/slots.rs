//! The cap on concurrent connections. At the cap, a new connection closes the oldest one
//! instead of being refused: refusing would let a client that keeps `max` connections open
//! (and reopens each one the moment it is closed) lock kubelet out indefinitely, while
//! kubelet's probe, sent whole and answered at once, is never the oldest for long.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::oneshot;

/// The connections being served, oldest first.
pub(super) struct Slots {
    max: usize,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    next_id: u64,
    /// Dropping a sender tells its connection to close.
    held: VecDeque<(u64, oneshot::Sender<()>)>,
}

/// One connection's slot, freed on drop.
pub(super) struct Ticket {
    id: u64,
    slots: Arc<Slots>,
    /// Resolves when the slot was taken away to make room for a newer connection.
    pub(super) evicted: oneshot::Receiver<()>,
}

impl Slots {
    pub(super) fn new(max: usize) -> Arc<Slots> {
        Arc::new(Slots {
            max: max.max(1),
            inner: Mutex::default(),
        })
    }

    /// A slot for a new connection, closing the oldest ones when the cap is reached.
    /// Returns how many were evicted.
    pub(super) fn admit(self: &Arc<Self>) -> (Ticket, usize) {
        let mut inner = self.lock();
        let mut evicted = 0;
        while inner.held.len() >= self.max {
            // Dropping the sender wakes the connection's `evicted` receiver.
            inner.held.pop_front();
            evicted += 1;
        }
        let id = inner.next_id;
        inner.next_id += 1;
        let (tx, rx) = oneshot::channel();
        inner.held.push_back((id, tx));
        let ticket = Ticket {
            id,
            slots: self.clone(),
            evicted: rx,
        };
        (ticket, evicted)
    }

    /// Connections holding a slot now.
    #[cfg(test)]
    fn held(&self) -> usize {
        self.lock().held.len()
    }

    /// A panic elsewhere cannot leave this queue inconsistent: keep serving.
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.slots.lock().held.retain(|(id, _)| *id != self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_evicted(ticket: &mut Ticket) -> bool {
        !matches!(
            ticket.evicted.try_recv(),
            Err(oneshot::error::TryRecvError::Empty)
        )
    }

    #[test]
    fn at_the_cap_the_oldest_connection_is_evicted() {
        let slots = Slots::new(2);
        let (mut first, n) = slots.admit();
        assert_eq!(n, 0);
        let (mut second, _) = slots.admit();
        assert_eq!(slots.held(), 2);
        assert!(!is_evicted(&mut first) && !is_evicted(&mut second));

        let (mut third, n) = slots.admit();
        assert_eq!(n, 1);
        assert_eq!(slots.held(), 2, "never over the cap");
        assert!(is_evicted(&mut first), "the oldest goes");
        assert!(!is_evicted(&mut second) && !is_evicted(&mut third));

        // The evicted connection's ticket, dropped when it closes, frees nothing twice.
        drop(first);
        assert_eq!(slots.held(), 2);
    }

    #[test]
    fn slots_are_freed_when_connections_end() {
        let slots = Slots::new(2);
        let (first, _) = slots.admit();
        let (_second, _) = slots.admit();
        drop(first);
        assert_eq!(slots.held(), 1);
        let (_third, n) = slots.admit();
        assert_eq!(n, 0, "a free slot evicts no one");
        assert_eq!(slots.held(), 2);
    }
}
