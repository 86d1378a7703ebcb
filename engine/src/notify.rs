//! A single-threaded broadcast event: tasks wait for "something changed".
//!
//! The engine lives on one executor, so a `Cell` generation counter and a list
//! of wakers is all the synchronisation it needs. A waiter captures the
//! generation when it starts waiting; any later `notify` releases it, so a
//! notification between the check and the wait cannot be missed.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

/// A broadcast event.
#[derive(Debug, Default)]
pub struct Notify {
    generation: Cell<u64>,
    waiters: RefCell<Vec<Waker>>,
}

impl Notify {
    /// A new event.
    pub fn new() -> Notify {
        Notify::default()
    }

    /// Wakes every task waiting now.
    pub fn notify(&self) {
        self.generation.set(self.generation.get().wrapping_add(1));
        for w in self.waiters.borrow_mut().drain(..) {
            w.wake();
        }
    }

    /// A future that completes at the next `notify` after this call.
    pub fn notified(&self) -> Notified<'_> {
        Notified {
            n: self,
            generation: self.generation.get(),
        }
    }
}

/// The future returned by [`Notify::notified`].
#[derive(Debug)]
pub struct Notified<'a> {
    n: &'a Notify,
    generation: u64,
}

impl Future for Notified<'_> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.n.generation.get() != self.generation {
            return Poll::Ready(());
        }
        let mut w = self.n.waiters.borrow_mut();
        if !w.iter().any(|x| x.will_wake(cx.waker())) {
            w.push(cx.waker().clone());
        }
        Poll::Pending
    }
}

/// Holds a busy flag set; clears it and notifies waiters when dropped, so a
/// cancelled task cannot leave the flag set and everyone else waiting.
#[derive(Debug)]
pub struct BusyGuard<'a> {
    flag: &'a Cell<bool>,
    done: &'a Notify,
}

impl<'a> BusyGuard<'a> {
    /// Sets `flag` if it is clear; `None` if someone else holds it.
    pub fn try_take(flag: &'a Cell<bool>, done: &'a Notify) -> Option<BusyGuard<'a>> {
        if flag.get() {
            return None;
        }
        flag.set(true);
        Some(BusyGuard { flag, done })
    }
}

impl Drop for BusyGuard<'_> {
    fn drop(&mut self) {
        self.flag.set(false);
        self.done.notify();
    }
}
