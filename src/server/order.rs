//! The order of one connection's Produce requests: each takes a [`Turn`] as its frame is read,
//! and dispatches its appends to the partitions only once every earlier request of the
//! connection has dispatched its own. A request that waits (decompressing to check keys,
//! backpressure) therefore never lets a later one overtake it, so an idempotent producer's
//! pipelined batches reach each partition in the order they were sent.
//!
//! Invariant: `dispatched` is the number of the oldest turn not yet finished; turns finish in
//! any order (a request that fails validation has nothing to wait for) but `dispatched` only
//! passes finished ones.

use std::cell::{Cell, RefCell};
use std::collections::BTreeSet;
use std::rc::Rc;

use event_listener::Event;

#[derive(Default)]
pub struct ConnectionOrder {
    next: Cell<u64>,
    dispatched: Cell<u64>,
    finished_early: RefCell<BTreeSet<u64>>,
    moved: Event,
}

impl ConnectionOrder {
    /// The next request's turn, in the order frames are read.
    pub fn take(self: &Rc<Self>) -> Turn {
        let number = self.next.get();
        self.next.set(number + 1);
        Turn {
            order: Rc::clone(self),
            number,
        }
    }

    fn finish(&self, number: u64) {
        if number != self.dispatched.get() {
            self.finished_early.borrow_mut().insert(number);
            return;
        }
        let mut next = number + 1;
        let mut early = self.finished_early.borrow_mut();
        while early.remove(&next) {
            next += 1;
        }
        self.dispatched.set(next);
        self.moved.notify(usize::MAX);
    }
}

/// A request's place in its connection's order; dropping it lets the next request go.
pub struct Turn {
    order: Rc<ConnectionOrder>,
    number: u64,
}

impl Turn {
    /// Waits until every earlier request of the connection has dispatched.
    pub async fn wait(&self) {
        loop {
            let moved = self.order.moved.listen();
            if self.order.dispatched.get() == self.number {
                return;
            }
            moved.await;
        }
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        self.order.finish(self.number);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turns_pass_in_order_whatever_order_they_finish() {
        let order = Rc::new(ConnectionOrder::default());
        let (a, b, c) = (order.take(), order.take(), order.take());
        drop(c);
        assert_eq!(
            order.dispatched.get(),
            0,
            "a later turn finishing first waits"
        );
        drop(b);
        assert_eq!(order.dispatched.get(), 0);
        drop(a);
        assert_eq!(order.dispatched.get(), 3);
        let d = order.take();
        assert_eq!(d.number, 3);
        glommio::LocalExecutor::default().run(async { d.wait().await });
    }
}
