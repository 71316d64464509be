//! The bounded channel between two subtasks. Unlike a plain mpsc channel,
//! a barrier can be put at its head (`send_priority`), overtaking the data
//! queued in it; the receiver then gets the barrier together with a copy of
//! the chunks it overtook (the channel state of an unaligned checkpoint),
//! which stay queued and are processed as usual.

use std::collections::VecDeque;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::Mutex;

use crate::chunk::Chunk;
use crate::message::{Barrier, Message};

enum Item {
    Msg(Message),
    /// A barrier that jumped the queue, and how many data chunks behind it
    /// it overtook.
    Priority(Barrier, usize),
}

struct State {
    queue: VecDeque<Item>,
    capacity: usize,
    sender_alive: bool,
    receiver_alive: bool,
    rx_waker: Option<Waker>,
    tx_waker: Option<Waker>,
}

struct Shared {
    state: Mutex<State>,
    /// Queued aligned barriers that carry a timeout: lets the receiver skip
    /// looking into the queue on every poll (the common case is none).
    timed_barriers: AtomicUsize,
}

fn is_timed_barrier(item: &Item) -> bool {
    matches!(item, Item::Msg(Message::Barrier(b)) if b.alignment_deadline().is_some())
}

pub(crate) struct Sender {
    shared: Arc<Shared>,
}

pub(crate) struct Receiver {
    shared: Arc<Shared>,
}

/// The channel's peer is gone.
#[derive(Debug)]
pub(crate) struct Closed;

/// What a receiver gets.
pub(crate) enum Received {
    Msg(Message),
    Priority {
        barrier: Barrier,
        overtaken: Vec<Chunk>,
    },
}

pub(crate) fn channel(capacity: usize) -> (Sender, Receiver) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            queue: VecDeque::new(),
            capacity: capacity.max(1),
            sender_alive: true,
            receiver_alive: true,
            rx_waker: None,
            tx_waker: None,
        }),
        timed_barriers: AtomicUsize::new(0),
    });
    (
        Sender {
            shared: shared.clone(),
        },
        Receiver { shared },
    )
}

impl Sender {
    /// Ready when the channel has room for one more message.
    pub(crate) fn poll_ready(&self, cx: &mut Context<'_>) -> Poll<Result<(), Closed>> {
        let mut st = self.shared.state.lock();
        if !st.receiver_alive {
            return Poll::Ready(Err(Closed));
        }
        if st.queue.len() < st.capacity {
            return Poll::Ready(Ok(()));
        }
        st.tx_waker = Some(cx.waker().clone());
        Poll::Pending
    }

    /// Enqueues after [`Sender::poll_ready`] said there is room.
    pub(crate) fn push(&self, msg: Message) -> Result<(), Closed> {
        let mut st = self.shared.state.lock();
        if !st.receiver_alive {
            return Err(Closed);
        }
        let item = Item::Msg(msg);
        if is_timed_barrier(&item) {
            self.shared.timed_barriers.fetch_add(1, Ordering::Relaxed);
        }
        st.queue.push_back(item);
        if let Some(w) = st.rx_waker.take() {
            w.wake();
        }
        Ok(())
    }

    #[cfg(test)]
    pub(crate) async fn send(&self, msg: Message) -> Result<(), Closed> {
        std::future::poll_fn(|cx| self.poll_ready(cx)).await?;
        self.push(msg)
    }

    /// Puts a barrier ahead of every queued message (after barriers that
    /// jumped the queue before it), whatever the capacity.
    pub(crate) fn send_priority(&self, barrier: Barrier) -> Result<(), Closed> {
        let mut st = self.shared.state.lock();
        if !st.receiver_alive {
            return Err(Closed);
        }
        let at = st
            .queue
            .iter()
            .take_while(|i| matches!(i, Item::Priority(..)))
            .count();
        let overtaken = st
            .queue
            .iter()
            .skip(at)
            .filter(|i| matches!(i, Item::Msg(Message::Data(_))))
            .count();
        st.queue.insert(at, Item::Priority(barrier, overtaken));
        if let Some(w) = st.rx_waker.take() {
            w.wake();
        }
        Ok(())
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        let mut st = self.shared.state.lock();
        st.sender_alive = false;
        if let Some(w) = st.rx_waker.take() {
            w.wake();
        }
    }
}

impl Receiver {
    /// The next message; `None` once the sender is gone and the queue empty.
    pub(crate) fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Received>> {
        let mut st = self.shared.state.lock();
        match st.queue.pop_front() {
            Some(item) => {
                if let Some(w) = st.tx_waker.take() {
                    w.wake();
                }
                if is_timed_barrier(&item) {
                    self.shared.timed_barriers.fetch_sub(1, Ordering::Relaxed);
                }
                Poll::Ready(Some(match item {
                    Item::Msg(m) => Received::Msg(m),
                    Item::Priority(barrier, n) => Received::Priority {
                        barrier,
                        overtaken: st
                            .queue
                            .iter()
                            .filter_map(|i| match i {
                                Item::Msg(Message::Data(c)) => Some(c.clone()),
                                _ => None,
                            })
                            .take(n)
                            .collect(),
                    },
                }))
            }
            None if !st.sender_alive => Poll::Ready(None),
            None => {
                st.rx_waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }

    /// Ready when a barrier that jumped the queue is at the head.
    pub(crate) fn poll_priority(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let mut st = self.shared.state.lock();
        if matches!(st.queue.front(), Some(Item::Priority(..))) {
            return Poll::Ready(());
        }
        st.rx_waker = Some(cx.waker().clone());
        Poll::Pending
    }

    /// The first aligned barrier queued in the channel, if it has a
    /// deadline to switch to unaligned.
    pub(crate) fn queued_barrier(&self) -> Option<Barrier> {
        if self.shared.timed_barriers.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let st = self.shared.state.lock();
        st.queue.iter().find_map(|i| match i {
            Item::Msg(Message::Barrier(b)) if b.alignment_deadline().is_some() => Some(*b),
            _ => None,
        })
    }

    /// Aligned barrier timed out: takes the barrier of `epoch` out of the
    /// queue if it is there, with copies of the data chunks queued before
    /// it (which it thereby overtakes).
    pub(crate) fn pull_barrier_forward(&mut self, epoch: u64) -> Option<Vec<Chunk>> {
        let mut st = self.shared.state.lock();
        let pos = st
            .queue
            .iter()
            .position(|i| matches!(i, Item::Msg(Message::Barrier(b)) if b.epoch == epoch))?;
        if st.queue.remove(pos).as_ref().is_some_and(is_timed_barrier) {
            self.shared.timed_barriers.fetch_sub(1, Ordering::Relaxed);
        }
        if let Some(w) = st.tx_waker.take() {
            w.wake();
        }
        Some(
            st.queue
                .iter()
                .take(pos)
                .filter_map(|i| match i {
                    Item::Msg(Message::Data(c)) => Some(c.clone()),
                    _ => None,
                })
                .collect(),
        )
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let mut st = self.shared.state.lock();
        st.receiver_alive = false;
        st.queue.clear();
        if let Some(w) = st.tx_waker.take() {
            w.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{BarrierKind, CheckpointMode};
    use datafusion::arrow::array::{Int64Array, RecordBatch};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use std::future::poll_fn;

    fn chunk(v: i64) -> Chunk {
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, true)]));
        Chunk::inserts(
            RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(vec![v]))]).unwrap(),
        )
    }

    fn value(c: &Chunk) -> i64 {
        c.batch
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap()
            .value(0)
    }

    fn barrier(epoch: u64) -> Barrier {
        Barrier {
            epoch,
            kind: BarrierKind::Checkpoint,
            mode: CheckpointMode::Unaligned,
            full: true,
            aligned_timeout: None,
            triggered_at: None,
        }
    }

    async fn recv(rx: &mut Receiver) -> Option<Received> {
        poll_fn(|cx| rx.poll_recv(cx)).await
    }

    #[tokio::test]
    async fn priority_barrier_overtakes_queued_data_and_reports_it() {
        let (tx, mut rx) = channel(8);
        for v in 1..=3 {
            tx.send(Message::Data(chunk(v))).await.unwrap();
        }
        tx.send_priority(barrier(7)).unwrap();
        // Sent after the barrier: not overtaken.
        tx.send(Message::Data(chunk(4))).await.unwrap();
        match recv(&mut rx).await {
            Some(Received::Priority { barrier, overtaken }) => {
                assert_eq!(barrier.epoch, 7);
                assert_eq!(
                    overtaken.iter().map(value).collect::<Vec<_>>(),
                    vec![1, 2, 3]
                );
            }
            _ => panic!("expected the priority barrier first"),
        }
        // The overtaken data is still delivered, in order.
        let mut seen = Vec::new();
        drop(tx);
        while let Some(r) = recv(&mut rx).await {
            match r {
                Received::Msg(Message::Data(c)) => seen.push(value(&c)),
                _ => panic!("unexpected message"),
            }
        }
        assert_eq!(seen, vec![1, 2, 3, 4]);
    }

    #[tokio::test]
    async fn priority_send_ignores_capacity() {
        let (tx, mut rx) = channel(1);
        tx.send(Message::Data(chunk(1))).await.unwrap();
        // Full: a data send would wait, a priority barrier does not.
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        assert!(tx.poll_ready(&mut cx).is_pending());
        tx.send_priority(barrier(1)).unwrap();
        assert!(matches!(rx.poll_priority(&mut cx), Poll::Ready(())));
    }

    #[tokio::test]
    async fn aligned_barrier_pulled_forward() {
        let (tx, mut rx) = channel(8);
        tx.send(Message::Data(chunk(1))).await.unwrap();
        tx.send(Message::Data(chunk(2))).await.unwrap();
        tx.send(Message::Barrier(barrier(3))).await.unwrap();
        tx.send(Message::Data(chunk(9))).await.unwrap();
        assert!(rx.pull_barrier_forward(4).is_none());
        let overtaken = rx.pull_barrier_forward(3).unwrap();
        assert_eq!(overtaken.iter().map(value).collect::<Vec<_>>(), vec![1, 2]);
        drop(tx);
        let mut seen = Vec::new();
        while let Some(Received::Msg(m)) = recv(&mut rx).await {
            if let Message::Data(c) = m {
                seen.push(value(&c));
            } else {
                panic!("barrier should be gone");
            }
        }
        assert_eq!(seen, vec![1, 2, 9]);
    }
}
