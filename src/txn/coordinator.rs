//! The transaction coordinator of one shard: the transactional ids whose `__transaction_state`
//! partition (`records::partition_for`) this shard owns. The decisions are the state machine's
//! (`state::Transactions`); this runtime records its transitions in the partition (appended
//! with acks=all before they take effect), writes the commit and abort markers to the
//! transaction's partitions through their shards, aborts timed-out transactions, expires idle
//! transactional ids, and at start-up reloads the partition and finishes every transaction
//! whose end was recorded but whose markers may not all have been written.
//!
//! Everything here runs on the coordinating shard; other shards reach it with `TxnCall`s.
//! EndTxn is answered once the transaction completed (its markers written and recorded), so a
//! client's next transaction never meets CONCURRENT_TRANSACTIONS from this one; if that takes
//! longer than `END_TXN_WAIT`, it is answered anyway (the end is recorded and will complete).

use std::cell::RefCell;
use std::collections::HashSet;
use std::rc::Rc;
use std::time::Duration;

use event_listener::Event;

use super::records;
use super::state::{
    self, Change, Init, Transactions, Transition, TxnConfig, TxnMetadata, TxnState,
};
use crate::partition::producer_state::{Marker, Origin};
use crate::partition::{Acks, Entry};
use crate::record::builder::{BatchBuilder, Codec};
use crate::shard::{OpError, OpKind, PartitionOp, Shard};

/// Kafka's internal topic of transaction state.
pub const TXN_TOPIC: &str = "__transaction_state";
/// The coordinator epoch markers carry (the leader epoch of `__transaction_state`; one broker).
pub const COORDINATOR_EPOCH: i32 = 0;
const END_TXN_WAIT: Duration = Duration::from_secs(10);
const MARKER_RETRY: Duration = Duration::from_millis(100);

pub const COORDINATOR_NOT_AVAILABLE: i16 = 15;

/// A request for the coordinator of one transactional id.
pub enum TxnCall {
    InitProducerId {
        timeout_ms: i32,
        expected: Option<(i64, i16)>,
    },
    AddPartitions {
        producer_id: i64,
        epoch: i16,
        partitions: Vec<(String, i32)>,
    },
    /// Whether the partitions are in the producer's ongoing transaction.
    Verify {
        producer_id: i64,
        epoch: i16,
        partitions: Vec<(String, i32)>,
    },
    EndTxn {
        producer_id: i64,
        epoch: i16,
        commit: bool,
    },
    Describe,
}

pub enum TxnAnswer {
    Producer {
        code: i16,
        producer_id: i64,
        epoch: i16,
    },
    Code(i16),
    /// A request-level error, or one code per partition.
    Codes(Result<Vec<i16>, i16>),
    Describe(Option<TxnMetadata>),
}

/// A transaction as ListTransactions shows it.
#[derive(Clone, Debug)]
pub struct TxnSummary {
    pub transactional_id: String,
    pub producer_id: i64,
    pub state: TxnState,
    pub start_ms: i64,
}

pub struct TxnCoordinator {
    state: RefCell<Transactions>,
    /// Transactional ids whose markers are being written.
    completing: RefCell<HashSet<String>>,
    /// Fires whenever a transaction completes.
    completed: Event,
    /// `transaction.abort.timed.out.transaction.cleanup.interval.ms` and
    /// `transaction.remove.expired.transaction.cleanup.interval.ms`.
    abort_check: Duration,
    expire_check: Duration,
}

fn now_ms() -> i64 {
    crate::storage::now_ms()
}

impl TxnCoordinator {
    pub fn new(config: TxnConfig, abort_check: Duration, expire_check: Duration) -> Rc<Self> {
        Rc::new(TxnCoordinator {
            state: RefCell::new(Transactions::new(config)),
            completing: RefCell::new(HashSet::new()),
            completed: Event::new(),
            abort_check,
            expire_check,
        })
    }

    /// Every transaction this shard coordinates.
    pub fn list(&self) -> Vec<TxnSummary> {
        self.state
            .borrow()
            .iter()
            .map(|(id, t)| TxnSummary {
                transactional_id: id.clone(),
                producer_id: t.meta.producer_id,
                state: t.meta.state,
                start_ms: t.meta.start_ms,
            })
            .collect()
    }

    /// Serves one call on this, the id's coordinating shard.
    pub async fn serve(self: &Rc<Self>, shard: &Rc<Shard>, id: &str, call: TxnCall) -> TxnAnswer {
        match call {
            TxnCall::InitProducerId {
                timeout_ms,
                expected,
            } => self.init_producer_id(shard, id, timeout_ms, expected).await,
            TxnCall::AddPartitions {
                producer_id,
                epoch,
                partitions,
            } => {
                let change = self.state.borrow_mut().add_partitions(
                    id,
                    producer_id,
                    epoch,
                    &partitions,
                    now_ms(),
                );
                TxnAnswer::Code(match change {
                    Change::Answer(code) => code,
                    Change::Write(t) => self.record(shard, t).await,
                })
            }
            TxnCall::Verify {
                producer_id,
                epoch,
                partitions,
            } => TxnAnswer::Codes(
                self.state
                    .borrow()
                    .verify(id, producer_id, epoch, &partitions),
            ),
            TxnCall::EndTxn {
                producer_id,
                epoch,
                commit,
            } => {
                let change =
                    self.state
                        .borrow_mut()
                        .end_txn(id, producer_id, epoch, commit, now_ms());
                TxnAnswer::Code(match change {
                    Change::Answer(code) => code,
                    Change::Write(t) => match self.record(shard, t).await {
                        state::NONE => {
                            self.start_completing(shard, id);
                            self.wait_completed(id).await;
                            state::NONE
                        }
                        code => code,
                    },
                })
            }
            TxnCall::Describe => {
                TxnAnswer::Describe(self.state.borrow().get(id).map(|t| t.meta.clone()))
            }
        }
    }

    async fn init_producer_id(
        self: &Rc<Self>,
        shard: &Rc<Shard>,
        id: &str,
        timeout_ms: i32,
        expected: Option<(i64, i16)>,
    ) -> TxnAnswer {
        let failed = |code| TxnAnswer::Producer {
            code,
            producer_id: -1,
            epoch: -1,
        };
        let mut fresh = None;
        loop {
            let decision =
                self.state
                    .borrow_mut()
                    .init_producer_id(id, timeout_ms, expected, fresh, now_ms());
            match decision {
                Init::NeedProducerId => match shard.next_producer_id().await {
                    Some(pid) => fresh = Some(pid),
                    None => return failed(COORDINATOR_NOT_AVAILABLE),
                },
                Init::Error(code) => return failed(code),
                Init::Write(t) => {
                    let (producer_id, epoch) = (t.to.producer_id, t.to.producer_epoch);
                    return match self.record(shard, t).await {
                        state::NONE => TxnAnswer::Producer {
                            code: state::NONE,
                            producer_id,
                            epoch,
                        },
                        code => failed(code),
                    };
                }
                Init::FenceAndAbort(t) => {
                    if self.record(shard, t).await == state::NONE {
                        self.start_completing(shard, id);
                    }
                    return failed(state::CONCURRENT_TRANSACTIONS);
                }
            }
        }
    }

    /// Records a transition in `__transaction_state` and lets it take effect, or gives it up
    /// if it cannot be written. The code to answer with.
    async fn record(&self, shard: &Rc<Shard>, t: Transition) -> i16 {
        let value = (t.to.state != TxnState::Dead).then(|| records::encode_value(&t.to));
        let written = persist(shard, &t.transactional_id, value).await;
        let mut state = self.state.borrow_mut();
        if written {
            state.complete(&t);
            state::NONE
        } else {
            state.abandon(&t);
            COORDINATOR_NOT_AVAILABLE
        }
    }

    /// Writes the markers of a transaction whose end is recorded, then records its completion
    /// (in the background; at most one run per transactional id).
    fn start_completing(self: &Rc<Self>, shard: &Rc<Shard>, id: &str) {
        if !self.completing.borrow_mut().insert(id.to_string()) {
            return;
        }
        let (me, shard, id) = (Rc::clone(self), Rc::clone(shard), id.to_string());
        glommio::spawn_local(async move {
            me.complete(&shard, &id).await;
            me.completing.borrow_mut().remove(&id);
            me.completed.notify(usize::MAX);
        })
        .detach();
    }

    async fn complete(&self, shard: &Rc<Shard>, id: &str) {
        let Some(meta) = self.state.borrow().get(id).map(|t| t.meta.clone()) else {
            return;
        };
        let commit = match meta.state {
            TxnState::PrepareCommit => true,
            TxnState::PrepareAbort => false,
            _ => return,
        };
        let marker = Marker {
            producer_id: meta.producer_id,
            epoch: meta.producer_epoch,
            coordinator_epoch: COORDINATOR_EPOCH,
            commit,
            timestamp: now_ms(),
        };
        let mut left: Vec<(String, i32)> = meta.partitions.iter().cloned().collect();
        while !left.is_empty() {
            if shard.stopping.get() {
                return; // the next start finishes it
            }
            let ops = left
                .iter()
                .map(|(topic, partition)| PartitionOp {
                    topic: topic.clone(),
                    partition: *partition,
                    kind: OpKind::WriteMarker(marker),
                })
                .collect();
            let outcomes = shard.run_partition_ops(ops).await;
            let mut retry = Vec::new();
            for (p, outcome) in left.into_iter().zip(outcomes) {
                match outcome {
                    Ok(_) => {}
                    // A partition deleted meanwhile needs no marker (as Kafka drops it).
                    Err((OpError::UnknownPartition { .. }, _)) => {}
                    Err((e, _)) => {
                        tracing::warn!(
                            "transaction {id}: marker for {}-{} not written ({e}), retrying",
                            p.0,
                            p.1
                        );
                        retry.push(p);
                    }
                }
            }
            left = retry;
            if !left.is_empty() {
                glommio::timer::sleep(MARKER_RETRY).await;
            }
        }
        loop {
            let done = self.state.borrow_mut().markers_written(id, now_ms());
            let Some(done) = done else {
                return;
            };
            if self.record(shard, done).await == state::NONE || shard.stopping.get() {
                return;
            }
            glommio::timer::sleep(MARKER_RETRY).await;
        }
    }

    /// Waits (a bounded time) until the transaction is no longer being completed.
    async fn wait_completed(&self, id: &str) {
        let deadline = std::time::Instant::now() + END_TXN_WAIT;
        loop {
            let completed = self.completed.listen();
            if !self.completing.borrow().contains(id) {
                return;
            }
            let now = std::time::Instant::now();
            if now >= deadline {
                return;
            }
            futures_lite::future::or(completed, glommio::timer::sleep(deadline - now)).await;
        }
    }

    /// Reads this shard's `__transaction_state` partitions (the newest record of each
    /// transactional id wins; a tombstone removes it).
    pub async fn load(&self, shard: &Rc<Shard>) {
        let partitions: Vec<_> = shard
            .local_partitions()
            .into_iter()
            .filter(|p| p.topic == TXN_TOPIC)
            .collect();
        let mut loaded = 0usize;
        for p in partitions {
            let mut offset = p.log_start_offset();
            let end = p.high_watermark();
            while offset < end {
                let bytes = match p
                    .log
                    .read(offset, 1 << 20, crate::storage::Bound::END)
                    .await
                {
                    Ok(b) if !b.is_empty() => b,
                    Ok(_) => break,
                    Err(e) => {
                        tracing::error!("{}: cannot read: {e}", p.log.dir.display());
                        break;
                    }
                };
                if let Some(next) = crate::client::batches_end(&bytes) {
                    offset = offset.max(next);
                }
                let Ok(records) = crate::client::decode_records(bytes) else {
                    tracing::error!("{}: damaged batch at {offset}", p.log.dir.display());
                    break;
                };
                let mut state = self.state.borrow_mut();
                for r in records {
                    offset = offset.max(r.offset + 1);
                    let Some(id) = r.key.and_then(|k| records::decode_key(k).ok()) else {
                        continue;
                    };
                    match r.value.map(records::decode_value) {
                        Some(Ok(meta)) => state.replay(&id, Some(meta)),
                        Some(Err(e)) => {
                            tracing::warn!("{}: transaction {id}: {e}", p.log.dir.display())
                        }
                        None => state.replay(&id, None),
                    }
                    loaded += 1;
                }
            }
        }
        if loaded > 0 {
            tracing::info!(
                "shard {}: loaded {} transactional ids",
                shard.id,
                self.state.borrow().iter().count()
            );
        }
    }

    /// After start-up: finishes the transactions whose end was recorded, then aborts timed
    /// out transactions and expires idle ids, for as long as the shard runs.
    pub async fn run(self: Rc<Self>, shard: Rc<Shard>) {
        for id in self.state.borrow().preparing() {
            self.start_completing(&shard, &id);
        }
        let mut next_expiry = std::time::Instant::now() + self.expire_check;
        while !shard.stopping.get() {
            let stop = shard.stop_event.listen();
            futures_lite::future::or(stop, glommio::timer::sleep(self.abort_check)).await;
            if shard.stopping.get() {
                break;
            }
            let aborts = self.state.borrow_mut().time_out(now_ms());
            for t in aborts {
                let id = t.transactional_id.clone();
                tracing::info!("transaction {id} timed out: aborting it and fencing its producer");
                if self.record(&shard, t).await == state::NONE {
                    self.start_completing(&shard, &id);
                }
            }
            if std::time::Instant::now() >= next_expiry {
                next_expiry = std::time::Instant::now() + self.expire_check;
                let expired = self.state.borrow_mut().expire(now_ms());
                for t in expired {
                    tracing::info!("transactional id {} expired", t.transactional_id);
                    self.record(&shard, t).await;
                }
            }
        }
    }
}

/// Appends a `__transaction_state` record (a `None` value is a tombstone) to the id's partition
/// on this shard and waits until it is durable.
async fn persist(shard: &Rc<Shard>, id: &str, value: Option<bytes::Bytes>) -> bool {
    let Some(partition) = shard.txn_partition(id) else {
        return false;
    };
    let now = now_ms();
    let mut batch = BatchBuilder::new(now);
    batch.push_record(now, Some(&records::encode_key(id)), value.as_deref());
    let Ok(bytes) = batch.finish(Codec::None) else {
        return false;
    };
    let Ok(batches) = crate::record::validate_batches(bytes, usize::MAX) else {
        return false;
    };
    let entry = Entry::Data {
        batches,
        origin: Origin::Coordinator,
    };
    match partition.append_now(entry, Acks::All, None).await {
        Ok(_) => true,
        Err(e) => {
            tracing::error!("transaction {id}: cannot record its state: {e}");
            false
        }
    }
}
