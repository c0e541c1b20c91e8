//! A partition: the one owner (on its shard) of a partition's log, its producer state, its
//! transaction index and its offsets — log start <= last stable offset (LSO) <= high
//! watermark (HW) <= log end offset (LEO), four values kept apart and checked.
//!
//! Appends arrive with a [`Ticket`] taken in arrival order (so requests from one connection
//! keep their order even when one waits) and are admitted strictly in ticket order once the
//! queue has room. One appender task drains the queue in rounds: it checks every batch of a
//! round against the producer state (duplicates, sequences, epochs, transactions), writes the
//! accepted ones in one storage round, and applies the round's state changes only once the
//! write succeeded. `acks=1` is answered when the write completes; `acks=-1` when the high
//! watermark passes the batch.
//!
//! How the high watermark advances is the flush rule (`shardlog.log.durability`): under
//! `sync` (the default) a syncer task fdatasyncs behind the appender and the HW follows what
//! is synced, so `acks=-1` means "on disk" and readers never see what a power loss could take
//! back; under `write` the HW follows the log end. Replication will change only this: the HW
//! will follow what the in-sync replicas hold.

pub mod epoch_cache;
pub mod producer_state;
pub mod replica;
pub mod snapshot;

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::rc::Rc;

use event_listener::Event;
use futures::channel::oneshot;
use futures::future::LocalBoxFuture;

use crate::record::{self, BatchView, ValidatedBatches};
use crate::storage::log::Fetched;
use crate::storage::txn_index::AbortedTxn;
use crate::storage::{now_ms, Bound, PartitionLog, Position, StorageError};
use producer_state::{
    Decision, Draft, Marker, Origin, ProducerBatch, ProducerError, ProducerState,
};

/// When data counts as durable enough to pass the high watermark.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// After fdatasync (the default): acks=-1 is answered from disk.
    Sync,
    /// After the write completes (Kafka's own default, which never fsyncs on its own).
    Write,
}

/// The replication level a producer asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Acks {
    /// acks=0 and acks=1: the leader's log has it.
    Leader,
    /// acks=-1: the high watermark passed it.
    All,
}

/// Which records a reader may see.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isolation {
    /// Below the high watermark.
    ReadUncommitted,
    /// Below the last stable offset.
    ReadCommitted,
}

impl Isolation {
    /// From a request's `isolation_level` field.
    pub fn from_level(level: i8) -> Isolation {
        if level == 1 {
            Isolation::ReadCommitted
        } else {
            Isolation::ReadUncommitted
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub struct PartitionSettings {
    pub durability: Durability,
    pub max_pending_bytes: usize,
    pub write_buffer_bytes: usize,
}

/// What an append writes.
pub enum Entry {
    /// Batches from a producer (or a coordinator writing its records).
    Data {
        batches: ValidatedBatches,
        origin: Origin,
    },
    /// A transaction marker (a control batch) for one producer.
    Marker(Marker),
}

impl Entry {
    fn batches(&self) -> ValidatedBatches {
        match self {
            Entry::Data { batches, .. } => batches.clone(),
            Entry::Marker(m) => ValidatedBatches::trusted(record::control::marker_batch(
                m.producer_id,
                m.epoch,
                m.coordinator_epoch,
                m.commit,
                m.timestamp,
            )),
        }
    }

    fn producer_batch(&self) -> Option<ProducerBatch> {
        match self {
            Entry::Data { batches, .. } => batches.first().as_ref().and_then(ProducerBatch::of),
            Entry::Marker(_) => None,
        }
    }
}

/// Where an append landed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Appended {
    pub base_offset: i64,
    pub log_append_time: i64,
    pub log_start_offset: i64,
}

/// Why an append failed; the Kafka edge picks the error code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AppendError {
    Storage(StorageError),
    Producer(ProducerError),
    /// The transaction coordinator could not say whether the partition is in the producer's
    /// transaction (it is loading, moving, or unreachable): retriable.
    VerificationUnavailable(String),
}

impl std::fmt::Display for AppendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AppendError::Storage(e) => write!(f, "{e}"),
            AppendError::Producer(e) => write!(f, "{e}"),
            AppendError::VerificationUnavailable(m) => write!(f, "{m}"),
        }
    }
}

/// Asks the transaction coordinator whether the partition is in the producer's ongoing
/// transaction; called only when the batch would start a transaction here.
/// It is given the batch's producer id and epoch.
pub type Verifier = Box<dyn FnOnce(i64, i16) -> LocalBoxFuture<'static, Result<(), AppendError>>>;

type Reply = oneshot::Sender<Result<Appended, AppendError>>;

struct Pending {
    entry: Entry,
    guard: Option<u64>,
    bytes: usize,
    acks: Acks,
    reply: Reply,
    /// When it was queued (`timing` on), for the time it waits for its round.
    queued: Option<std::time::Instant>,
}

/// A place in a partition's arrival order. Dropping one unused gives up its place.
pub struct Ticket {
    partition: Rc<Partition>,
    number: u64,
    used: bool,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if !self.used {
            self.partition.abandon(self.number);
        }
    }
}

/// The four offsets at one instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Offsets {
    pub log_start: i64,
    pub last_stable: i64,
    pub high_watermark: i64,
    pub log_end: i64,
}

pub struct Partition {
    pub topic: String,
    pub partition: i32,
    pub log: Rc<PartitionLog>,
    settings: PartitionSettings,
    producers: RefCell<ProducerState>,
    high_watermark: Cell<Position>,
    /// Positions of the first batch of the transactions that started since the partition
    /// opened (for zero-copy reads cut at the last stable offset).
    txn_positions: RefCell<HashMap<i64, Position>>,
    queue: RefCell<VecDeque<Pending>>,
    queued_bytes: Cell<usize>,
    next_ticket: Cell<u64>,
    admitted: Cell<u64>,
    abandoned: RefCell<BTreeSet<u64>>,
    /// Fires when the queue shrinks or the admitted ticket moves.
    queue_changed: Event,
    appender_wake: Event,
    appender_running: Cell<bool>,
    appender_done: Event,
    syncer_wake: Event,
    syncer_running: Cell<bool>,
    syncer_done: Event,
    /// Rounds written and not yet covered by the high watermark: the offset after each and
    /// when its write completed (only while the latency report is on).
    written_at: RefCell<VecDeque<(i64, std::time::Instant)>>,
    /// acks=-1 answers waiting for the high watermark, by the offset it must reach.
    waiting: RefCell<BTreeMap<i64, Vec<(Reply, Appended)>>>,
    /// Notified (on the owning shard) whenever any partition's high watermark moves.
    data_appended: Rc<Event>,
    closing: Cell<bool>,
}

impl Partition {
    /// Opens the partition around its recovered log: restores the producer state from the
    /// newest usable snapshot and replays the log after it (rebuilding transaction indexes
    /// on the way), makes the recovered log durable, and starts the appender and the syncer.
    pub async fn open(
        log: Rc<PartitionLog>,
        settings: PartitionSettings,
        data_appended: Rc<Event>,
    ) -> Result<Rc<Partition>, StorageError> {
        let end = log.sync().await?;
        let producers = recover_producers(&log).await?;
        let partition = Rc::new(Partition {
            topic: log.topic.clone(),
            partition: log.partition,
            log,
            settings,
            producers: RefCell::new(producers),
            high_watermark: Cell::new(end),
            txn_positions: RefCell::new(HashMap::new()),
            queue: RefCell::new(VecDeque::new()),
            queued_bytes: Cell::new(0),
            next_ticket: Cell::new(0),
            admitted: Cell::new(0),
            abandoned: RefCell::new(BTreeSet::new()),
            queue_changed: Event::new(),
            appender_wake: Event::new(),
            appender_running: Cell::new(true),
            appender_done: Event::new(),
            syncer_wake: Event::new(),
            syncer_running: Cell::new(true),
            syncer_done: Event::new(),
            written_at: RefCell::new(VecDeque::new()),
            waiting: RefCell::new(BTreeMap::new()),
            data_appended,
            closing: Cell::new(false),
        });
        partition
            .producers
            .borrow_mut()
            .on_high_watermark(end.offset);
        partition.offsets();
        glommio::spawn_local(Rc::clone(&partition).run_appender()).detach();
        glommio::spawn_local(Rc::clone(&partition).run_syncer()).detach();
        Ok(partition)
    }

    /// The four offsets, checked against each other.
    pub fn offsets(&self) -> Offsets {
        let log_start = self.log.log_start_offset();
        let log_end = self.log.log_end_offset();
        let high_watermark = self.high_watermark.get().offset;
        let unstable = self.producers.borrow().first_unstable_offset();
        let last_stable = unstable
            .map_or(high_watermark, |u| u.min(high_watermark))
            .max(log_start);
        assert!(
            log_start <= last_stable && last_stable <= high_watermark && high_watermark <= log_end,
            "{}-{}: offsets out of order: log start {log_start}, LSO {last_stable}, HW \
             {high_watermark}, LEO {log_end}",
            self.topic,
            self.partition
        );
        Offsets {
            log_start,
            last_stable,
            high_watermark,
            log_end,
        }
    }

    pub fn high_watermark(&self) -> i64 {
        self.high_watermark.get().offset
    }

    pub fn last_stable_offset(&self) -> i64 {
        self.offsets().last_stable
    }

    pub fn log_start_offset(&self) -> i64 {
        self.log.log_start_offset()
    }

    /// How far a reader at `isolation` may read.
    pub fn bound(&self, isolation: Isolation) -> Bound {
        let hw = self.high_watermark.get();
        match isolation {
            Isolation::ReadUncommitted => hw.into(),
            Isolation::ReadCommitted => {
                let lso = self.offsets().last_stable;
                if lso == hw.offset {
                    hw.into()
                } else {
                    Bound {
                        offset: lso,
                        position: self
                            .txn_positions
                            .borrow()
                            .get(&lso)
                            .map(|p| (p.segment, p.position)),
                    }
                }
            }
        }
    }

    /// Records from `offset` a reader at `isolation` may see: file ranges for data on disk
    /// when `zero_copy`, otherwise this shard's buffers (hot tail, read-ahead).
    pub async fn read(
        &self,
        offset: i64,
        max_bytes: usize,
        isolation: Isolation,
        zero_copy: bool,
    ) -> Result<Fetched, StorageError> {
        let bound = self.bound(isolation);
        if zero_copy {
            self.log.read_slice(offset, max_bytes, bound).await
        } else {
            let now = std::time::Instant::now();
            self.log.read_buffered(offset, max_bytes, bound, now).await
        }
    }

    /// Aborted transactions overlapping [`from`, `upper`) (Fetch under read_committed).
    pub fn aborted_txns(&self, from: i64, upper: i64) -> Vec<AbortedTxn> {
        self.log.aborted_txns(from, upper)
    }

    /// The producers of this partition (DescribeProducers).
    pub fn producers(&self) -> Vec<producer_state::ProducerEntry> {
        self.producers.borrow().entries().cloned().collect()
    }

    /// The first offset of each live producer's last batch (compaction keeps those).
    pub fn producer_last_batches(&self) -> Vec<i64> {
        self.producers.borrow().last_batch_offsets()
    }

    /// Forgets producers idle for `expiration_ms` (`producer.id.expiration.ms`).
    pub fn expire_producers(&self, now: i64, expiration_ms: i64) -> usize {
        self.producers.borrow_mut().expire(now, expiration_ms)
    }

    /// Kafka's ListOffsets for a timestamp (-1 latest, -2 earliest, -3 max timestamp, -4
    /// earliest local, -5 latest tiered, or a time): (offset, timestamp), or `None` when no
    /// record qualifies. With no tiered storage, -4 is the log start and -5 has no answer
    /// (offset -1), as in Kafka with remote storage off.
    /// Nothing at or past what `isolation` may read is ever answered.
    pub async fn offset_for(
        &self,
        timestamp: i64,
        isolation: Isolation,
    ) -> Result<Option<(i64, i64)>, StorageError> {
        let fetchable = self.bound(isolation).offset;
        let found = match timestamp {
            -1 => return Ok(Some((fetchable, -1))),
            -2 | -4 => return Ok(Some((self.log_start_offset(), -1))),
            -5 => return Ok(None),
            -3 => self.log.max_timestamp_offset().await?,
            t => self.log.offset_for_timestamp(t.max(0)).await?,
        };
        Ok(found.filter(|&(o, _)| o < fetchable))
    }

    /// DeleteRecords: moves the log start to `offset` (-1: the high watermark).
    pub async fn delete_records(&self, offset: i64) -> Result<i64, StorageError> {
        let hw = self.high_watermark();
        let target = if offset == -1 { hw } else { offset };
        self.log.delete_records(target, hw).await
    }

    pub async fn enforce_retention(&self, now: i64) {
        self.log.enforce_retention(now, self.high_watermark()).await;
    }

    /// A place in the arrival order, to be used by `append` (taken synchronously where the
    /// order is decided: as a request's parts are dispatched).
    pub fn reserve(self: &Rc<Self>) -> Ticket {
        let number = self.next_ticket.get();
        self.next_ticket.set(number + 1);
        Ticket {
            partition: Rc::clone(self),
            number,
            used: false,
        }
    }

    fn abandon(&self, number: u64) {
        if self.admitted.get() == number {
            self.pass(number);
        } else if number > self.admitted.get() {
            self.abandoned.borrow_mut().insert(number);
        }
    }

    /// Lets the ticket after `number` in (skipping abandoned ones).
    fn pass(&self, number: u64) {
        let mut next = number + 1;
        let mut abandoned = self.abandoned.borrow_mut();
        while abandoned.remove(&next) {
            next += 1;
        }
        self.admitted.set(next);
        self.queue_changed.notify(usize::MAX);
    }

    /// Appends in ticket order and waits for `acks`. Producers faster than the disk wait for
    /// room in the queue here, strictly in ticket order, so a small batch never overtakes a
    /// large one waiting for room. A transactional batch that would start a transaction on
    /// this partition is first verified with `verify` (KIP-890 part 1).
    pub async fn append(
        &self,
        mut ticket: Ticket,
        entry: Entry,
        acks: Acks,
        verify: Option<Verifier>,
    ) -> Result<Appended, AppendError> {
        let bytes = match &entry {
            Entry::Data { batches, .. } => batches.records.len(),
            Entry::Marker(_) => record::HEADER_LEN,
        };
        loop {
            let changed = self.queue_changed.listen();
            if self.closing.get() {
                return Err(AppendError::Storage(StorageError::Closing));
            }
            let queued = self.queued_bytes.get();
            let fits = queued == 0 || queued + bytes <= self.settings.max_pending_bytes;
            if self.admitted.get() == ticket.number && fits {
                break;
            }
            changed.await;
        }
        // Our turn. If this future is dropped from here on, the unused ticket passes the turn.
        let number = ticket.number;
        let starts_txn = entry
            .producer_batch()
            .filter(|b| b.transactional && !self.producers.borrow().in_transaction(b.producer_id));
        let guard = match (starts_txn, verify) {
            (Some(b), Some(verify)) => {
                let guard = self
                    .producers
                    .borrow_mut()
                    .verification_guard(b.producer_id, b.epoch);
                if let Err(e) = verify(b.producer_id, b.epoch).await {
                    ticket.used = true;
                    self.pass(number);
                    return Err(e);
                }
                Some(guard)
            }
            _ => None,
        };
        if self.log.is_fenced() {
            ticket.used = true;
            self.pass(number);
            return Err(AppendError::Storage(StorageError::Fenced));
        }
        let (tx, rx) = oneshot::channel();
        self.queue.borrow_mut().push_back(Pending {
            entry,
            guard,
            bytes,
            acks,
            reply: tx,
            queued: crate::timing::start(),
        });
        self.queued_bytes.set(self.queued_bytes.get() + bytes);
        ticket.used = true;
        self.pass(number);
        self.appender_wake.notify(1);
        rx.await
            .unwrap_or(Err(AppendError::Storage(StorageError::Closing)))
    }

    /// Appends now, behind whatever is queued (coordinators writing their own records).
    pub async fn append_now(
        self: &Rc<Self>,
        entry: Entry,
        acks: Acks,
        verify: Option<Verifier>,
    ) -> Result<Appended, AppendError> {
        let ticket = self.reserve();
        self.append(ticket, entry, acks, verify).await
    }

    async fn run_appender(self: Rc<Self>) {
        loop {
            if self.queue.borrow().is_empty() {
                if self.closing.get() {
                    break;
                }
                if self.log.roll_requested() {
                    self.roll(now_ms()).await;
                    continue;
                }
                // Idle: the rest of the lead of zeros, a step at a time, looking at the queue
                // between steps.
                if self.log.zero_fill_step(true).await {
                    continue;
                }
                let wake = self.appender_wake.listen();
                if self.queue.borrow().is_empty()
                    && !self.closing.get()
                    && !self.log.roll_requested()
                {
                    wake.await;
                }
                continue;
            }
            // Zeros ahead of the log end first, one step at a time, so the round's write
            // lands on written blocks (`shardlog.log.preallocate.bytes`).
            self.log.zero_fill_step(false).await;
            let round = self.take_round();
            self.write_round(round).await;
        }
        self.appender_running.set(false);
        self.appender_done.notify(usize::MAX);
        self.syncer_wake.notify(usize::MAX);
    }

    /// Takes queued appends: at least one, then more while they fit in a write buffer.
    fn take_round(&self) -> Vec<Pending> {
        let mut queue = self.queue.borrow_mut();
        let mut round = Vec::new();
        let mut total = 0;
        while let Some(p) = queue.front() {
            if !round.is_empty() && total + p.bytes > self.settings.write_buffer_bytes {
                break;
            }
            total += p.bytes;
            round.extend(queue.pop_front());
        }
        self.queued_bytes.set(self.queued_bytes.get() - total);
        self.queue_changed.notify(usize::MAX);
        round
    }

    /// Rolls the active segment with a snapshot of the producer state at its end.
    async fn roll(&self, now: i64) -> bool {
        let end = self.log.log_end_offset();
        let snapshot = snapshot::encode(&self.producers.borrow(), end);
        match self.log.roll(now, Some(snapshot)).await {
            Ok(durable) => {
                self.durable_to(durable);
                true
            }
            Err(e) => {
                tracing::error!("{}: cannot roll segment: {e}", self.log.dir.display());
                false
            }
        }
    }

    /// One round: check every append against the producer state, write the accepted ones
    /// together, then apply their state changes and answer.
    async fn write_round(&self, round: Vec<Pending>) {
        for p in &round {
            crate::timing::record(crate::timing::Stage::Queue, p.queued);
        }
        let start = self.log.log_end_offset();
        let mut draft = Draft::default();
        let mut next = start;
        let mut accepted: Vec<(Pending, ValidatedBatches)> = Vec::new();
        let mut duplicates: Vec<(Pending, i64, i64)> = Vec::new();
        {
            let state = self.producers.borrow();
            for p in round {
                let batches = p.entry.batches();
                let checked = match &p.entry {
                    Entry::Data { origin, .. } => match p.entry.producer_batch() {
                        Some(b) => draft.check_batch(&state, &b, *origin, p.guard, next),
                        None => Ok(Decision::Append),
                    },
                    Entry::Marker(m) => draft
                        .check_marker(&state, m, Origin::Coordinator, next)
                        .map(|()| Decision::Append),
                };
                match checked {
                    Ok(Decision::Append) => {
                        next += batches.offset_count;
                        accepted.push((p, batches));
                    }
                    Ok(Decision::Duplicate {
                        first_offset,
                        last_offset,
                    }) => duplicates.push((p, first_offset, last_offset)),
                    Err(e) => {
                        let _ = p.reply.send(Err(AppendError::Producer(e)));
                    }
                }
            }
        }
        if accepted.is_empty() {
            let log_start = self.log.log_start_offset();
            for (p, first, last) in duplicates {
                self.answer(p, first, last, -1, log_start);
            }
            return;
        }
        let now = now_ms();
        let bytes = accepted.iter().map(|(_, b)| b.records.len()).sum();
        // A round that is not written fails whole, its duplicates too (their originals may
        // be in it).
        let fail = |accepted: Vec<(Pending, ValidatedBatches)>,
                    duplicates: Vec<(Pending, i64, i64)>,
                    e: StorageError| {
            let e = AppendError::Storage(e);
            let all = accepted.into_iter().map(|(p, _)| p);
            for p in all.chain(duplicates.into_iter().map(|d| d.0)) {
                let _ = p.reply.send(Err(e.clone()));
            }
        };
        if self.log.roll_due(bytes, next - start, now) && !self.roll(now).await {
            fail(
                accepted,
                duplicates,
                StorageError::Io("cannot roll segment".into()),
            );
            return;
        }
        let items: Vec<&ValidatedBatches> = accepted.iter().map(|(_, b)| b).collect();
        let written = match self.log.append_round(&items).await {
            Ok(w) => w,
            Err(e) => {
                fail(accepted, duplicates, e);
                return;
            }
        };
        assert_eq!(
            written.starts.first().map(|s| s.offset),
            Some(start),
            "a round is written where its offsets were planned"
        );
        assert_eq!(
            written.end.offset, next,
            "a round ends where it was planned to"
        );
        let aborted = {
            let mut state = self.producers.borrow_mut();
            let aborted = state.apply(draft);
            let mut positions = self.txn_positions.borrow_mut();
            for ((p, _), at) in accepted.iter().zip(&written.starts) {
                let began = p.entry.producer_batch().is_some_and(|b| {
                    state.get(b.producer_id).and_then(|e| e.txn_first_offset) == Some(at.offset)
                });
                if began {
                    positions.insert(at.offset, *at);
                }
            }
            aborted
        };
        for txn in aborted {
            self.txn_positions.borrow_mut().remove(&txn.first_offset);
            self.log.add_aborted_txn(txn);
        }
        let (append_time, log_start) = (written.log_append_time, written.log_start_offset);
        for ((p, b), at) in accepted.into_iter().zip(&written.starts) {
            self.answer(
                p,
                at.offset,
                at.offset + b.offset_count - 1,
                append_time,
                log_start,
            );
        }
        for (p, first, last) in duplicates {
            self.answer(p, first, last, -1, log_start);
        }
        match self.settings.durability {
            Durability::Write => self.durable_to(written.end),
            Durability::Sync => {
                if let Some(now) = crate::timing::start() {
                    self.written_at
                        .borrow_mut()
                        .push_back((written.end.offset, now));
                }
                self.syncer_wake.notify(1);
            }
        }
    }

    /// Answers an append whose batch spans [first, last] once its acks level is reached.
    fn answer(&self, p: Pending, first: i64, last: i64, append_time: i64, log_start: i64) {
        let appended = Appended {
            base_offset: first,
            log_append_time: append_time,
            log_start_offset: log_start,
        };
        if p.acks == Acks::Leader || self.high_watermark() > last {
            let _ = p.reply.send(Ok(appended));
        } else {
            self.waiting
                .borrow_mut()
                .entry(last + 1)
                .or_default()
                .push((p.reply, appended));
        }
    }

    /// Data up to `to` is durable under the flush rule: the high watermark moves there.
    fn durable_to(&self, to: Position) {
        if to.offset <= self.high_watermark() {
            return;
        }
        self.high_watermark.set(to);
        {
            let mut written = self.written_at.borrow_mut();
            while let Some(&(_, at)) = written.front().filter(|(end, _)| *end <= to.offset) {
                crate::timing::record(crate::timing::Stage::Durable, Some(at));
                written.pop_front();
            }
        }
        self.producers.borrow_mut().on_high_watermark(to.offset);
        let ready: Vec<(Reply, Appended)> = {
            let mut waiting = self.waiting.borrow_mut();
            let later = waiting.split_off(&(to.offset + 1));
            std::mem::replace(&mut *waiting, later)
                .into_values()
                .flatten()
                .collect()
        };
        for (reply, appended) in ready {
            let _ = reply.send(Ok(appended));
        }
        self.offsets();
        self.data_appended.notify(usize::MAX);
    }

    /// The flush rule's task: fdatasyncs whatever the appender wrote (one sync at a time,
    /// each covering every write completed before it began) and moves the high watermark.
    async fn run_syncer(self: Rc<Self>) {
        loop {
            let wake = self.syncer_wake.listen();
            if self.high_watermark() >= self.log.log_end_offset() {
                if self.closing.get() && !self.appender_running.get() {
                    break;
                }
                wake.await;
                continue;
            }
            match self.log.sync().await {
                Ok(durable) => self.durable_to(durable),
                Err(e) => {
                    // Nothing written after the failure is acknowledged as durable.
                    let e = AppendError::Storage(e);
                    let failed: Vec<_> = std::mem::take(&mut *self.waiting.borrow_mut())
                        .into_values()
                        .flatten()
                        .collect();
                    for (reply, _) in failed {
                        let _ = reply.send(Err(e.clone()));
                    }
                    if self.closing.get() && !self.appender_running.get() {
                        break;
                    }
                    wake.await;
                }
            }
        }
        self.syncer_running.set(false);
        self.syncer_done.notify(usize::MAX);
    }

    /// Stops taking appends, lets the queue drain and the syncer catch up, then closes the
    /// log with a producer snapshot at its end, so a clean restart replays nothing.
    pub async fn close(&self) -> std::io::Result<()> {
        self.closing.set(true);
        self.queue_changed.notify(usize::MAX);
        self.appender_wake.notify(usize::MAX);
        while self.appender_running.get() {
            let done = self.appender_done.listen();
            if !self.appender_running.get() {
                break;
            }
            done.await;
        }
        self.syncer_wake.notify(usize::MAX);
        while self.syncer_running.get() {
            let done = self.syncer_done.listen();
            if !self.syncer_running.get() {
                break;
            }
            done.await;
        }
        let end = self.log.log_end_offset();
        let snapshot = snapshot::encode(&self.producers.borrow(), end);
        self.log.close(Some(snapshot)).await
    }
}

/// The producer state of a recovered log: the newest snapshot at or below where recovery
/// must start (and not past the log end), then every batch after it replayed.
async fn recover_producers(log: &PartitionLog) -> Result<ProducerState, StorageError> {
    let end = log.log_end_offset();
    let limit = end.min(log.replay_from());
    let mut restored = None;
    for (offset, bytes) in log.snapshots().await {
        if offset > end {
            log.remove_snapshot(offset).await;
            continue;
        }
        if offset > limit || restored.is_some() {
            continue;
        }
        match bytes
            .map_err(|e| e.to_string())
            .and_then(|b| snapshot::decode(&b))
        {
            Ok(file) => restored = Some((snapshot::restore(file), offset)),
            Err(e) => tracing::warn!(
                "{}: producer snapshot at {offset} unusable ({e}), trying an older one",
                log.dir.display()
            ),
        }
    }
    let (mut state, from) =
        restored.unwrap_or_else(|| (ProducerState::default(), log.log_start_offset()));
    let mut offset = from.max(log.log_start_offset());
    let mut replayed = 0usize;
    while offset < end {
        let bytes = log.read(offset, 4 << 20, Bound::END).await?;
        let (batches, _) = record::valid_prefix(&bytes);
        if batches.is_empty() {
            break;
        }
        for view in batches {
            replay_batch(log, &mut state, &view);
            offset = view.next_offset();
            replayed += 1;
        }
    }
    if replayed > 0 {
        tracing::info!(
            "{}: producer state rebuilt from offset {from} ({replayed} batches, {} producers)",
            log.dir.display(),
            state.len()
        );
    }
    Ok(state)
}

fn replay_batch(log: &PartitionLog, state: &mut ProducerState, view: &BatchView<'_>) {
    let Some(b) = ProducerBatch::of(view) else {
        return;
    };
    let mut draft = Draft::default();
    let offset = view.base_offset();
    if view.is_control() {
        let Some(control) = record::control::read_marker(view.bytes) else {
            return;
        };
        if !matches!(
            control.kind,
            record::control::ABORT | record::control::COMMIT
        ) {
            return;
        }
        let marker = Marker {
            producer_id: b.producer_id,
            epoch: b.epoch,
            coordinator_epoch: control.coordinator_epoch,
            commit: control.kind == record::control::COMMIT,
            timestamp: view.max_timestamp(),
        };
        let _ = draft.check_marker(state, &marker, Origin::Replication, offset);
    } else {
        let _ = draft.check_batch(state, &b, Origin::Replication, None, offset);
    }
    for txn in state.apply(draft) {
        log.add_aborted_txn(txn);
    }
}
