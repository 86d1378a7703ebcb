//! A connection's outgoing side: responses are appended by the request tasks
//! as they finish and written by one writer task, so every response finished
//! in the same scheduler pass leaves in one `write`.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;

use corekv_engine::notify::Notify;
use futures::{AsyncWrite, AsyncWriteExt};

/// The queue between request tasks and the writer.
#[derive(Debug, Default)]
pub struct Outbox {
    buf: RefCell<Vec<u8>>,
    /// For ordered protocols (RESP): the sequence number to write next and
    /// the responses that finished ahead of it.
    next: Cell<u64>,
    early: RefCell<BTreeMap<u64, Vec<u8>>>,
    /// Requests accepted whose response has not been queued yet.
    inflight: Cell<usize>,
    /// No more requests will be accepted; the writer ends once all is written.
    closing: Cell<bool>,
    /// The peer stopped reading (write failed): drop responses.
    broken: Cell<bool>,
    /// Wakes the writer.
    wake_writer: Notify,
    /// Wakes the reader when a request finishes (in-flight limit) or the writer stops.
    progress: Notify,
}

impl Outbox {
    /// A new outbox.
    pub fn new() -> Outbox {
        Outbox::default()
    }

    /// Counts a request as in flight.
    pub fn begin(&self) {
        self.inflight.set(self.inflight.get() + 1);
    }

    /// Requests in flight.
    pub fn inflight(&self) -> usize {
        self.inflight.get()
    }

    /// Queues an unordered response (binary protocol) and ends its request.
    pub fn finish_unordered(&self, bytes: &[u8]) {
        if !self.broken.get() {
            self.buf.borrow_mut().extend_from_slice(bytes);
        }
        self.end_request();
    }

    /// Queues the response of the request with sequence number `seq` (RESP):
    /// written once every earlier one is.
    pub fn finish_ordered(&self, seq: u64, bytes: Vec<u8>) {
        if !self.broken.get() {
            if seq == self.next.get() {
                let mut buf = self.buf.borrow_mut();
                if buf.is_empty() && bytes.capacity() >= buf.capacity() {
                    // Take the reply's buffer instead of copying it, unless
                    // the writer's recycled buffer is larger: replacing that
                    // would make every reply pipelined behind this one grow
                    // the small buffer again, copy by copy (measured: 2% of
                    // a node's CPU under `redis-benchmark -P 16`).
                    *buf = bytes;
                } else {
                    buf.extend_from_slice(&bytes);
                }
                let mut next = seq + 1;
                let mut early = self.early.borrow_mut();
                while let Some(b) = early.remove(&next) {
                    buf.extend_from_slice(&b);
                    next += 1;
                }
                self.next.set(next);
            } else {
                self.early.borrow_mut().insert(seq, bytes);
            }
        }
        self.end_request();
    }

    /// Appends bytes outside any request (a final error before closing).
    pub fn push_raw(&self, bytes: &[u8]) {
        if !self.broken.get() {
            self.buf.borrow_mut().extend_from_slice(bytes);
            self.wake_writer.notify();
        }
    }

    fn end_request(&self) {
        self.inflight.set(self.inflight.get().saturating_sub(1));
        self.wake_writer.notify();
        self.progress.notify();
    }

    /// No more requests: the writer exits after the in-flight ones are written.
    pub fn close(&self) {
        self.closing.set(true);
        self.wake_writer.notify();
    }

    /// Whether the peer can no longer be written to.
    pub fn is_broken(&self) -> bool {
        self.broken.get()
    }

    /// Waits until fewer than `max` requests are in flight; false if the
    /// peer can no longer be written to (the connection should end).
    pub async fn room(&self, max: usize) -> bool {
        while self.inflight.get() >= max && !self.broken.get() {
            self.progress.notified().await;
        }
        !self.broken.get()
    }

    /// Waits until a request finishes or the writer stops.
    pub async fn progressed(&self) {
        self.progress.notified().await;
    }

    /// The writer task: drains the outbox into `w` until closed and empty.
    pub async fn run_writer<W: AsyncWrite + Unpin>(&self, mut w: W) {
        let mut spare = Vec::new();
        loop {
            if self.buf.borrow().is_empty() {
                if self.closing.get() && self.inflight.get() == 0 {
                    break;
                }
                self.wake_writer.notified().await;
                continue;
            }
            std::mem::swap(&mut *self.buf.borrow_mut(), &mut spare);
            if w.write_all(&spare).await.is_err() || w.flush().await.is_err() {
                self.broken.set(true);
                self.buf.borrow_mut().clear();
                self.progress.notify();
                break;
            }
            spare.clear();
            if spare.capacity() > 1 << 20 {
                spare = Vec::new();
            }
        }
        let _ = w.close().await;
        self.progress.notify();
    }
}
