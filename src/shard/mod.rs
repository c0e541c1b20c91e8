//! Shards: one pinned glommio executor per core, each owning outright the partitions placed on
//! it. Owns the per-shard state (metadata snapshot, partition logs), the cross-shard mesh and
//! the routing of partition work to owners.
//!
//! Invariants: a partition's log is touched only by its owning shard; other shards reach it by
//! a message on the mesh. Shard 0 alone changes topic metadata (see `admin`) and every shard
//! installs the snapshots it broadcasts in version order.

pub mod admin;
pub mod ops;
mod txn;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use event_listener::Event;
use futures::channel::oneshot;
use glommio::channels::channel_mesh::{Receivers, Senders};

use crate::config::BrokerConfig;
use crate::group::coordinator::{Coordinator, GroupAnswer, GroupCall};
use crate::group::records::partition_for;
use crate::metadata::MetadataSnapshot;
use crate::partition::{Acks, Entry, Partition, PartitionSettings, Ticket};
use crate::storage::{LogSettings, PartitionLog};
pub use ops::{FetchData, OpError, OpKind, OpOutcome, OpResult, PartitionOp, SentOutcome};

/// A request from one shard to another.
pub enum ShardRequest {
    Partitions(Vec<PartitionOp>),
    /// Resolves once any listed partition has data past the offset, or at the deadline.
    WaitForData {
        parts: Vec<(String, i32, i64)>,
        wait: Duration,
    },
    Admin(admin::AdminRequest),
    ApplyMetadata(MetadataSnapshot),
    /// For the coordinator of a group on this shard.
    Group(String, GroupCall),
    /// For the coordinator of a transactional id on this shard.
    Txn(String, crate::txn::coordinator::TxnCall),
    ListTransactions,
    ListGroups,
    /// For shard 0: a block of producer ids.
    AllocateProducerIds,
}

pub enum ShardResponse {
    /// Fetched records as bytes or file ranges: a shard's buffers never leave it.
    Partitions(Vec<SentOutcome>),
    Admin(admin::AdminResponse),
    Group(GroupAnswer),
    Txn(crate::txn::coordinator::TxnAnswer),
    Transactions(Vec<crate::txn::coordinator::TxnSummary>),
    Groups(Vec<(String, String, crate::group::state::State)>),
    ProducerIds(Option<crate::txn::producer_ids::Block>),
    Done,
}

pub struct ShardMessage {
    pub request: ShardRequest,
    pub reply: oneshot::Sender<ShardResponse>,
}

type TopicId = [u8; 16];

/// Kafka's internal topic of committed offsets and group metadata.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";
type PartitionKey = (String, i32);

pub struct Shard {
    pub id: usize,
    pub count: usize,
    pub config: Rc<BrokerConfig>,
    pub advertised_port: Cell<u16>,
    metadata: RefCell<Rc<MetadataSnapshot>>,
    /// Every topic's resolved log settings, for the installed snapshot (handlers read them per
    /// request; resolving them means parsing the topic's config map).
    log_configs: RefCell<HashMap<String, Rc<crate::config::LogConfig>>>,
    /// Owned partitions, each with the id of the topic it belongs to.
    partitions: RefCell<HashMap<PartitionKey, (Rc<Partition>, TopicId)>>,
    /// Notified whenever any partition of this shard has new data.
    pub data_appended: Rc<Event>,
    senders: Senders<ShardMessage>,
    /// Shard 0 only: serialises metadata changes.
    pub admin_lock: glommio::sync::Semaphore,
    /// Serialises snapshot installs on this shard (the start-up one can meet the first change).
    apply_lock: glommio::sync::Semaphore,
    /// Set when the broker is stopping; connections stop reading new requests.
    pub stopping: Cell<bool>,
    pub stop_event: Event,
    pub in_flight: Cell<usize>,
    /// Coordinator of the groups whose `__consumer_offsets` slot this shard owns.
    pub groups: Rc<Coordinator>,
    /// Coordinator of the transactional ids whose `__transaction_state` slot this shard owns.
    pub txns: Rc<crate::txn::coordinator::TxnCoordinator>,
    /// This shard's block of producer ids, and the turn to refill it.
    producer_ids: crate::txn::producer_ids::Ids,
    producer_id_refill: glommio::sync::Semaphore,
    /// Shard 0 only: the broker's record of producer id blocks handed out.
    producer_id_blocks: Option<crate::txn::producer_ids::Allocator>,
    /// Bytes this shard's partitions hold read ahead of their readers.
    read_ahead_held: Rc<Cell<usize>>,
}

impl Shard {
    pub fn new(
        id: usize,
        count: usize,
        config: Rc<BrokerConfig>,
        senders: Senders<ShardMessage>,
        producer_id_blocks: Option<crate::txn::producer_ids::Allocator>,
    ) -> Rc<Shard> {
        let group_config = config.group_config;
        let txn_config = (
            config.txn_config,
            Duration::from_millis(config.txn_abort_check_ms),
            Duration::from_millis(config.txn_expire_check_ms),
        );
        let offsets_retention = (
            config.offsets_retention_ms,
            Duration::from_millis(config.offsets_retention_check_ms),
        );
        Rc::new(Shard {
            id,
            count,
            advertised_port: Cell::new(config.advertised_port.unwrap_or(config.listen_port)),
            config,
            metadata: RefCell::new(Rc::new(MetadataSnapshot::default())),
            log_configs: RefCell::new(HashMap::new()),
            partitions: RefCell::new(HashMap::new()),
            data_appended: Rc::new(Event::new()),
            senders,
            admin_lock: glommio::sync::Semaphore::new(1),
            apply_lock: glommio::sync::Semaphore::new(1),
            stopping: Cell::new(false),
            stop_event: Event::new(),
            in_flight: Cell::new(0),
            groups: Coordinator::new(group_config, offsets_retention.0, offsets_retention.1),
            txns: crate::txn::coordinator::TxnCoordinator::new(
                txn_config.0,
                txn_config.1,
                txn_config.2,
            ),
            producer_ids: Default::default(),
            producer_id_refill: glommio::sync::Semaphore::new(1),
            producer_id_blocks,
            read_ahead_held: Rc::new(Cell::new(0)),
        })
    }

    /// The metadata version a handler works against for its whole run.
    pub fn metadata(&self) -> Rc<MetadataSnapshot> {
        Rc::clone(&self.metadata.borrow())
    }

    pub fn log_settings(&self) -> LogSettings {
        LogSettings {
            write_buffer_bytes: self.config.write_buffer_bytes,
            hot_tail_bytes: self.config.hot_tail_bytes,
            max_pending_bytes: self.config.partition_max_pending_bytes,
            preallocate_bytes: self.config.preallocate_bytes,
            read_ahead: crate::storage::read_ahead::ReadAheadSettings {
                partition_bytes: self.config.read_ahead_bytes,
                shard_bytes: self.config.read_ahead_shard_bytes,
                shard_held: Rc::clone(&self.read_ahead_held),
                idle: Duration::from_millis(self.config.read_ahead_idle_ms),
            },
        }
    }

    /// A topic's resolved log settings (`None` for an unknown topic).
    pub fn log_config(&self, topic: &str) -> Option<Rc<crate::config::LogConfig>> {
        self.log_configs.borrow().get(topic).cloned()
    }

    pub fn partition_settings(&self) -> PartitionSettings {
        PartitionSettings {
            durability: self.config.durability,
            max_pending_bytes: self.config.partition_max_pending_bytes,
            write_buffer_bytes: self.config.write_buffer_bytes,
        }
    }

    pub fn local_partition(&self, topic: &str, partition: i32) -> Option<Rc<Partition>> {
        self.partitions
            .borrow()
            .get(&(topic.to_string(), partition))
            .map(|(l, _)| Rc::clone(l))
    }

    pub fn local_partitions(&self) -> Vec<Rc<Partition>> {
        self.partitions
            .borrow()
            .values()
            .map(|(l, _)| Rc::clone(l))
            .collect()
    }

    /// The slot (partition) of `key` in internal topic `topic` by Kafka's hash rule, and the
    /// shard that owns it (the key's coordinator). `default_partitions` is the configured
    /// partition count, used until the topic exists (then its real count is).
    fn slot_of(&self, topic: &str, key: &str, default_partitions: i32) -> (i32, usize) {
        let meta = self.metadata();
        let slots = meta
            .topics
            .get(topic)
            .map_or(default_partitions, |t| t.shards.len() as i32);
        let slot = partition_for(key, slots);
        let shard = meta
            .shard_of(topic, slot)
            .unwrap_or_else(|| crate::metadata::place_partition(topic, slot, self.count));
        (slot, shard)
    }

    /// The group's `__consumer_offsets` partition and the shard that owns it (its
    /// coordinator).
    pub fn coordinator_of(&self, group: &str) -> (i32, usize) {
        self.slot_of(OFFSETS_TOPIC, group, self.config.offsets_topic_partitions)
    }

    /// Creates an internal topic on first use, as Kafka does (compacted).
    pub async fn ensure_internal_topic(
        self: &Rc<Self>,
        name: &str,
        partitions: i32,
        segment_bytes: u64,
    ) -> bool {
        if self.metadata().topics.contains_key(name) {
            return true;
        }
        let configs = [
            ("cleanup.policy", "compact".to_string()),
            ("segment.bytes", segment_bytes.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let topic = admin::NewTopic {
            name: name.to_string(),
            partitions,
            replication_factor: -1,
            configs,
        };
        let req = admin::AdminRequest::CreateTopics {
            topics: vec![topic],
            validate_only: false,
        };
        admin::request(self, req).await;
        self.metadata().topics.contains_key(name)
    }

    /// Creates `__consumer_offsets` on first use (compacted, 100 MiB segments).
    pub async fn ensure_offsets_topic(self: &Rc<Self>) -> bool {
        let partitions = self.config.offsets_topic_partitions;
        self.ensure_internal_topic(OFFSETS_TOPIC, partitions, 104_857_600)
            .await
    }

    /// Serves a group call here, the group's coordinator shard. A transactional commit
    /// verifies, before its first write to the group's partition in a transaction, that the
    /// partition is in the transaction.
    async fn serve_group(self: &Rc<Self>, group: &str, call: GroupCall) -> GroupAnswer {
        let (slot, _) = self.coordinator_of(group);
        let partition = self.local_partition(OFFSETS_TOPIC, slot);
        let verify = match &call {
            GroupCall::TxnCommit {
                transactional_id, ..
            } => Some(self.verifier(transactional_id.clone(), OFFSETS_TOPIC, slot)),
            _ => None,
        };
        self.groups.serve(group, call, partition, verify).await
    }

    /// Reads the committed offsets of this shard's `__consumer_offsets` partitions.
    pub async fn load_group_offsets(&self) {
        let logs: Vec<Rc<Partition>> = self
            .local_partitions()
            .into_iter()
            .filter(|l| l.topic == OFFSETS_TOPIC)
            .collect();
        for log in logs {
            self.groups.load(&log).await;
        }
    }

    /// Runs a group request on the group's coordinator shard.
    pub async fn group_call(self: &Rc<Self>, group: &str, call: GroupCall) -> GroupAnswer {
        if !self.ensure_offsets_topic().await {
            return GroupAnswer::Code(crate::group::state::COORDINATOR_NOT_AVAILABLE);
        }
        let (_, to) = self.coordinator_of(group);
        if to == self.id {
            return self.serve_group(group, call).await;
        }
        match self
            .call(to, ShardRequest::Group(group.to_string(), call))
            .await
        {
            Some(ShardResponse::Group(answer)) => answer,
            _ => GroupAnswer::Code(crate::group::state::COORDINATOR_NOT_AVAILABLE),
        }
    }

    /// Every shard's groups: (group id, protocol type, state).
    pub async fn list_groups(self: &Rc<Self>) -> Vec<(String, String, crate::group::state::State)> {
        let mut all = self.groups.list();
        for s in (0..self.count).filter(|s| *s != self.id) {
            if let Some(ShardResponse::Groups(g)) = self.call(s, ShardRequest::ListGroups).await {
                all.extend(g);
            }
        }
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// Sends a request to shard `to` and waits for its answer.
    pub async fn call(&self, to: usize, request: ShardRequest) -> Option<ShardResponse> {
        let (tx, rx) = oneshot::channel();
        let msg = ShardMessage { request, reply: tx };
        if self.senders.send_to(to, msg).await.is_err() {
            return None;
        }
        rx.await.ok()
    }

    /// Runs each op on the shard that owns its partition; results come back in op order.
    pub async fn run_partition_ops(self: &Rc<Self>, ops: Vec<PartitionOp>) -> Vec<OpOutcome> {
        self.dispatch(ops).await.results(self).await
    }

    /// Sends each op to the shard that owns its partition, in op order: local appends take
    /// their place in line before this returns, remote ones are in the shard's channel (whose
    /// receiver takes their places in the order they arrive). Awaiting the results is the
    /// second step, so a caller can release the next request of its connection in between.
    pub async fn dispatch(self: &Rc<Self>, ops: Vec<PartitionOp>) -> Dispatched {
        let meta = self.metadata();
        let mut results: Vec<Option<OpOutcome>> = (0..ops.len()).map(|_| None).collect();
        let mut per_shard: Vec<(Vec<usize>, Vec<PartitionOp>)> =
            (0..self.count).map(|_| (Vec::new(), Vec::new())).collect();
        for (i, op) in ops.into_iter().enumerate() {
            match meta.shard_of(&op.topic, op.partition) {
                Some(s) => {
                    per_shard[s].0.push(i);
                    per_shard[s].1.push(op);
                }
                None => {
                    results[i] = Some(Err((
                        OpError::UnknownPartition {
                            topic: op.topic,
                            partition: op.partition,
                        },
                        None,
                    )))
                }
            }
        }
        let mut local = None;
        let mut remote = Vec::new();
        for (shard, (indexes, ops)) in per_shard.into_iter().enumerate() {
            if ops.is_empty() {
                continue;
            }
            if shard == self.id {
                local = Some((indexes, self.prepare(ops)));
                continue;
            }
            let (tx, rx) = oneshot::channel();
            let msg = ShardMessage {
                request: ShardRequest::Partitions(ops),
                reply: tx,
            };
            let sent = self.senders.send_to(shard, msg).await.is_ok();
            remote.push((indexes, sent.then_some(rx)));
        }
        Dispatched {
            results,
            local,
            remote,
        }
    }

    /// Takes the places in line of the appends among `ops` (all on this shard), in order.
    fn prepare(self: &Rc<Self>, ops: Vec<PartitionOp>) -> Vec<Prepared> {
        ops.into_iter()
            .map(|op| {
                let partition = self.local_partition(&op.topic, op.partition);
                let ticket = match (&op.kind, &partition) {
                    (OpKind::Produce { .. } | OpKind::WriteMarker(_), Some(p)) => Some(p.reserve()),
                    _ => None,
                };
                Prepared {
                    op,
                    partition,
                    ticket,
                }
            })
            .collect()
    }

    /// Runs prepared ops on partitions this shard owns, concurrently.
    async fn execute_local(self: &Rc<Self>, ops: Vec<Prepared>) -> Vec<OpOutcome> {
        futures::future::join_all(ops.into_iter().map(|op| self.execute_op(op))).await
    }

    async fn execute_op(self: &Rc<Self>, prepared: Prepared) -> OpOutcome {
        let Prepared {
            op,
            partition,
            ticket,
        } = prepared;
        let Some(p) = partition else {
            return Err((
                OpError::UnknownPartition {
                    topic: op.topic,
                    partition: op.partition,
                },
                None,
            ));
        };
        let failed = |e: OpError, p: &Partition| Err((e, Some(p.offsets())));
        match op.kind {
            OpKind::Produce {
                batches,
                acks,
                transactional_id,
            } => {
                let Some(ticket) = ticket else {
                    return failed(OpError::ShardUnavailable, &p);
                };
                let verify = transactional_id.map(|id| self.verifier(id, &op.topic, op.partition));
                let entry = Entry::Data {
                    batches,
                    origin: crate::partition::producer_state::Origin::Client,
                };
                let acks = if acks == -1 { Acks::All } else { Acks::Leader };
                match p.append(ticket, entry, acks, verify).await {
                    Ok(a) => Ok(OpResult::Produce {
                        base_offset: a.base_offset,
                        log_append_time: a.log_append_time,
                        log_start_offset: a.log_start_offset,
                    }),
                    Err(e) => failed(e.into(), &p),
                }
            }
            OpKind::WriteMarker(marker) => {
                let Some(ticket) = ticket else {
                    return failed(OpError::ShardUnavailable, &p);
                };
                match p
                    .append(ticket, Entry::Marker(marker), Acks::All, None)
                    .await
                {
                    Ok(_) => {
                        if op.topic == OFFSETS_TOPIC {
                            self.groups.end_txn(&p, marker.producer_id, marker.commit);
                        }
                        Ok(OpResult::MarkerWritten)
                    }
                    Err(e) => failed(e.into(), &p),
                }
            }
            OpKind::Fetch {
                offset,
                max_bytes,
                isolation,
            } => {
                let zero_copy = self.config.fetch_zero_copy;
                match p.read(offset, max_bytes, isolation, zero_copy).await {
                    Ok(records) => {
                        let offsets = p.offsets();
                        let aborted = (isolation == crate::partition::Isolation::ReadCommitted)
                            .then(|| {
                                let upper = match &records {
                                    crate::storage::log::Fetched::Memory(b) => {
                                        crate::client::batches_end(b).unwrap_or(offsets.last_stable)
                                    }
                                    crate::storage::log::Fetched::File(_)
                                    | crate::storage::log::Fetched::Buffers(_) => {
                                        offsets.last_stable
                                    }
                                };
                                p.aborted_txns(offset, upper)
                                    .into_iter()
                                    .map(|t| (t.producer_id, t.first_offset))
                                    .collect()
                            });
                        Ok(OpResult::Fetch(FetchData {
                            records,
                            offsets,
                            aborted,
                        }))
                    }
                    Err(e) => failed(e.into(), &p),
                }
            }
            OpKind::ListOffsets {
                timestamp,
                isolation,
            } => {
                if timestamp < -5 {
                    return failed(
                        OpError::Invalid(format!("unknown timestamp {timestamp}")),
                        &p,
                    );
                }
                match p.offset_for(timestamp, isolation).await {
                    Ok(Some((offset, timestamp))) => Ok(OpResult::Offset { offset, timestamp }),
                    Ok(None) => Ok(OpResult::Offset {
                        offset: -1,
                        timestamp: -1,
                    }),
                    Err(e) => failed(e.into(), &p),
                }
            }
            OpKind::DeleteRecords { offset } => match p.delete_records(offset).await {
                Ok(low) => Ok(OpResult::LowWatermark(low)),
                Err(e) => failed(e.into(), &p),
            },
            OpKind::Info => Ok(OpResult::Info(p.offsets())),
            OpKind::Producers => Ok(OpResult::Producers(p.producers())),
        }
    }

    /// Asks the transaction coordinator of `transactional_id` whether the partition is in the
    /// producer's ongoing transaction (KIP-890 part 1 verification).
    fn verifier(
        self: &Rc<Self>,
        transactional_id: String,
        topic: &str,
        partition: i32,
    ) -> crate::partition::Verifier {
        let (me, topic) = (Rc::clone(self), topic.to_string());
        Box::new(move |producer_id, epoch| {
            Box::pin(async move {
                me.verify_in_transaction(&transactional_id, producer_id, epoch, &topic, partition)
                    .await
            })
        })
    }

    /// A producer id never handed out before (from this shard's block, refilled from shard 0
    /// when it runs out); `None` if shard 0 cannot record a new block.
    pub async fn next_producer_id(&self) -> Option<i64> {
        loop {
            if let Some(id) = self.producer_ids.take() {
                return Some(id);
            }
            let _turn = self.producer_id_refill.acquire_permit(1).await.ok()?;
            if let Some(id) = self.producer_ids.take() {
                return Some(id);
            }
            let block = if self.id == 0 {
                self.allocate_producer_ids().await
            } else {
                match self.call(0, ShardRequest::AllocateProducerIds).await {
                    Some(ShardResponse::ProducerIds(b)) => b,
                    _ => None,
                }
            }?;
            self.producer_ids.refill(block);
        }
    }

    /// Shard 0: records and hands out the next block of producer ids.
    async fn allocate_producer_ids(&self) -> Option<crate::txn::producer_ids::Block> {
        let allocator = self.producer_id_blocks.as_ref()?;
        match allocator.allocate().await {
            Ok(block) => Some(block),
            Err(e) => {
                tracing::error!("cannot record a producer id block: {e}");
                None
            }
        }
    }

    /// True if any of these local partitions has a high watermark past the given one (or is
    /// gone, which the next read reports).
    fn has_data(&self, parts: &[(String, i32, i64)]) -> bool {
        parts.iter().any(|(t, p, seen)| {
            self.local_partition(t, *p)
                .is_none_or(|l| l.high_watermark() > *seen)
        })
    }

    /// Waits on this shard until one of `parts` (all local) has data past the high watermark
    /// given with it, the broker stops, or `wait` passes.
    pub async fn wait_local(&self, parts: &[(String, i32, i64)], wait: Duration) {
        let deadline = Instant::now() + wait;
        loop {
            let listener = self.data_appended.listen();
            let stop = self.stop_event.listen();
            if self.has_data(parts) || self.stopping.get() {
                return;
            }
            let now = Instant::now();
            if now >= deadline {
                return;
            }
            let woken = futures_lite::future::or(listener, stop);
            futures_lite::future::or(woken, glommio::timer::sleep(deadline - now)).await;
        }
    }

    /// Serves requests from the other shards until their senders close.
    pub fn spawn_mesh_receivers(self: &Rc<Self>, mut receivers: Receivers<ShardMessage>) {
        for (_, rx) in receivers.streams() {
            let me = Rc::clone(self);
            glommio::spawn_local(async move {
                while let Some(msg) = rx.recv().await {
                    let me = Rc::clone(&me);
                    // Appends take their places in line here, in the order they arrive.
                    let request = match msg.request {
                        ShardRequest::Partitions(ops) => Served::Prepared(me.prepare(ops)),
                        other => Served::Other(other),
                    };
                    glommio::spawn_local(async move {
                        let response = match request {
                            Served::Prepared(ops) => {
                                let outcomes = me.execute_local(ops).await;
                                let sent = outcomes.into_iter().map(ops::sent);
                                ShardResponse::Partitions(futures::future::join_all(sent).await)
                            }
                            Served::Other(request) => me.serve(request).await,
                        };
                        let _ = msg.reply.send(response);
                    })
                    .detach();
                }
            })
            .detach();
        }
    }

    async fn serve(self: &Rc<Self>, request: ShardRequest) -> ShardResponse {
        match request {
            ShardRequest::Partitions(ops) => {
                let prepared = self.prepare(ops);
                let outcomes = self.execute_local(prepared).await;
                let sent = outcomes.into_iter().map(ops::sent);
                ShardResponse::Partitions(futures::future::join_all(sent).await)
            }
            ShardRequest::WaitForData { parts, wait } => {
                self.wait_local(&parts, wait).await;
                ShardResponse::Done
            }
            ShardRequest::Admin(req) => ShardResponse::Admin(admin::serve(self, req).await),
            ShardRequest::Txn(id, call) => ShardResponse::Txn(self.serve_txn(&id, call).await),
            ShardRequest::ListTransactions => ShardResponse::Transactions(self.txns.list()),
            ShardRequest::Group(group, call) => {
                ShardResponse::Group(self.serve_group(&group, call).await)
            }
            ShardRequest::ListGroups => ShardResponse::Groups(self.groups.list()),
            ShardRequest::AllocateProducerIds => {
                ShardResponse::ProducerIds(self.allocate_producer_ids().await)
            }
            ShardRequest::ApplyMetadata(snapshot) => {
                self.apply_metadata(snapshot, true).await;
                ShardResponse::Done
            }
        }
    }

    /// Installs a metadata snapshot: opens or creates the partitions this shard now owns,
    /// closes and deletes those of removed topics, and updates topic configs.
    pub async fn apply_metadata(&self, snapshot: MetadataSnapshot, clean: bool) {
        let _installing = self.apply_lock.acquire_permit(1).await;
        if snapshot.version < self.metadata.borrow().version {
            return;
        }
        let snapshot = Rc::new(snapshot);
        let log_dir = self.config.log_dir.clone();
        // Partitions to drop: topic gone, or recreated under a new id.
        let doomed: Vec<((String, i32), Rc<Partition>)> = self
            .partitions
            .borrow()
            .iter()
            .filter(|((t, p), (_, id))| {
                snapshot
                    .topics
                    .get(t)
                    .is_none_or(|m| m.id != *id || *p >= m.partition_count())
            })
            .map(|(k, (l, _))| (k.clone(), Rc::clone(l)))
            .collect();
        for (key, partition) in doomed {
            self.partitions.borrow_mut().remove(&key);
            let log = &partition.log;
            if let Err(e) = partition.close().await {
                tracing::warn!("closing {}: {e}", log.dir.display());
            }
            let dir = log.dir.clone();
            let removed = glommio::executor()
                .spawn_blocking(move || std::fs::remove_dir_all(dir))
                .await;
            if let Err(e) = removed {
                tracing::warn!("removing {}: {e}", log.dir.display());
            }
        }
        let mut configs = HashMap::new();
        for t in snapshot.topics.values() {
            let config = t.configs.log_config(&self.config.log_defaults);
            configs.insert(t.name.clone(), Rc::new(config.clone()));
            for (p, &owner) in t.shards.iter().enumerate() {
                let p = p as i32;
                if owner != self.id {
                    continue;
                }
                if let Some(partition) = self.local_partition(&t.name, p) {
                    if partition.log.config() != config {
                        partition.log.set_config(config.clone());
                    }
                    continue;
                }
                let dir = crate::storage::partition_dir(&log_dir, &t.name, p);
                // Open only a directory made for this very topic; anything else there is
                // left over from a deleted topic of the same name.
                let stored = crate::storage::log::stored_topic_id(&dir).await;
                let same_topic = stored == Some(crate::storage::log::topic_id_text(t.id));
                let settings = self.log_settings();
                let opened = if same_topic {
                    PartitionLog::open(&log_dir, &t.name, p, config.clone(), settings, clean).await
                } else {
                    PartitionLog::create(&log_dir, &t.name, t.id, p, config.clone(), settings).await
                };
                let events = Rc::clone(&self.data_appended);
                let opened = match opened {
                    Ok(log) => Partition::open(log, self.partition_settings(), events)
                        .await
                        .map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                };
                match opened {
                    Ok(partition) => {
                        self.partitions
                            .borrow_mut()
                            .insert((t.name.clone(), p), (partition, t.id));
                    }
                    Err(e) => tracing::error!("cannot open partition {}: {e}", dir.display()),
                }
            }
        }
        *self.log_configs.borrow_mut() = configs;
        *self.metadata.borrow_mut() = snapshot;
    }

    /// Closes every local partition (flush, indexes, trimmed tails). Returns false on failure.
    pub async fn close_partitions(&self) -> bool {
        let mut ok = true;
        for partition in self.local_partitions() {
            if let Err(e) = partition.close().await {
                tracing::error!("closing {}: {e}", partition.log.dir.display());
                ok = false;
            }
        }
        ok
    }

    /// Forgets idle producers (`producer.id.expiration.ms`), every
    /// `producer.id.expiration.check.interval.ms`.
    pub async fn run_producer_expiry(self: Rc<Self>) {
        let every = Duration::from_millis(self.config.producer_id_expiration_check_ms);
        while !self.stopping.get() {
            let listener = self.stop_event.listen();
            futures_lite::future::or(listener, glommio::timer::sleep(every)).await;
            let now = crate::storage::now_ms();
            for p in self.local_partitions() {
                let gone = p.expire_producers(now, self.config.producer_id_expiration_ms);
                if gone > 0 {
                    tracing::info!("{}: {gone} idle producers expired", p.log.dir.display());
                }
            }
        }
    }

    /// Releases the read-ahead memory of readers gone idle (`shardlog.read.ahead.idle.ms`),
    /// checking a few times per idle period.
    pub async fn run_read_ahead_release(self: Rc<Self>) {
        let every = Duration::from_millis((self.config.read_ahead_idle_ms / 4).clamp(10, 1000));
        while !self.stopping.get() {
            let listener = self.stop_event.listen();
            futures_lite::future::or(listener, glommio::timer::sleep(every)).await;
            let now = std::time::Instant::now();
            for p in self.local_partitions() {
                let released = p.log.release_idle_read_ahead(now);
                if released > 0 {
                    tracing::info!(
                        "{}: released {released} bytes of read-ahead of idle readers",
                        p.log.dir.display()
                    );
                }
            }
        }
    }

    /// Logs where this shard's Produce requests waited, every `shardlog.latency.report.ms`.
    pub async fn run_latency_report(self: Rc<Self>) {
        let every = Duration::from_millis(self.config.latency_report_ms);
        while !self.stopping.get() {
            let listener = self.stop_event.listen();
            futures_lite::future::or(listener, glommio::timer::sleep(every)).await;
            if let Some(line) = crate::timing::take_summary() {
                tracing::info!("shard {} produce path (ms): {line}", self.id);
            }
        }
    }

    /// Periodic retention on this shard's partitions.
    pub async fn run_retention(self: Rc<Self>) {
        let every = Duration::from_millis(self.config.retention_check_interval_ms);
        while !self.stopping.get() {
            let listener = self.stop_event.listen();
            futures_lite::future::or(listener, glommio::timer::sleep(every)).await;
            if self.stopping.get() {
                break;
            }
            let now = crate::storage::now_ms();
            for partition in self.local_partitions() {
                partition.enforce_retention(now).await;
            }
        }
    }
}

impl Shard {
    /// Log compaction of this shard's compacted partitions, every `log.cleaner.backoff.ms`.
    pub async fn run_cleaner(self: Rc<Self>) {
        if !self.config.cleaner_enable {
            return;
        }
        let every = Duration::from_millis(self.config.cleaner_backoff_ms);
        let limits = crate::storage::cleaner::CleanerLimits {
            map_budget: self.config.cleaner_dedupe_buffer_bytes / self.count.max(1),
            io_bytes_per_sec: self.config.cleaner_io_bytes_per_sec / self.count.max(1) as f64,
        };
        while !self.stopping.get() {
            let listener = self.stop_event.listen();
            futures_lite::future::or(listener, glommio::timer::sleep(every)).await;
            for partition in self.local_partitions() {
                if self.stopping.get() {
                    return;
                }
                let now = crate::storage::now_ms();
                let bounds = crate::storage::cleaner::CleanBounds {
                    upper: partition.last_stable_offset(),
                    keep_batches: partition.producer_last_batches().into_iter().collect(),
                };
                crate::storage::cleaner::clean_if_due(&partition.log, limits, now, bounds).await;
            }
        }
    }
}

/// An op with its partition found and its place in line taken (appends).
struct Prepared {
    op: PartitionOp,
    partition: Option<Rc<Partition>>,
    ticket: Option<Ticket>,
}

/// A mesh request as its receiver takes it: partition ops are prepared on arrival.
enum Served {
    Prepared(Vec<Prepared>),
    Other(ShardRequest),
}

/// Ops sent to their shards, their results still to come.
pub struct Dispatched {
    results: Vec<Option<OpOutcome>>,
    local: Option<(Vec<usize>, Vec<Prepared>)>,
    /// Per remote shard: the ops' indexes and the reply (`None`: the send failed).
    remote: Vec<(Vec<usize>, Option<oneshot::Receiver<ShardResponse>>)>,
}

impl Dispatched {
    /// Waits for every op's result, in op order.
    pub async fn results(self, shard: &Rc<Shard>) -> Vec<OpOutcome> {
        let Dispatched {
            mut results,
            local,
            remote,
        } = self;
        let local = async {
            match local {
                Some((indexes, ops)) => vec![(indexes, shard.execute_local(ops).await)],
                None => Vec::new(),
            }
        };
        let remote = futures::future::join_all(remote.into_iter().map(|(indexes, rx)| async {
            let outcomes = match rx {
                Some(rx) => match rx.await {
                    Ok(ShardResponse::Partitions(r)) => r.into_iter().map(ops::received).collect(),
                    _ => Vec::new(),
                },
                None => Vec::new(),
            };
            (indexes, outcomes)
        }));
        let (local, remote) = futures::join!(local, remote);
        for (indexes, outcomes) in local.into_iter().chain(remote) {
            for (i, o) in indexes.into_iter().zip(outcomes) {
                results[i] = Some(o);
            }
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or(Err((OpError::ShardUnavailable, None))))
            .collect()
    }
}

pub fn unknown_partition(topic: &str, partition: i32) -> crate::protocol::error::KafkaError {
    crate::protocol::error::KafkaError::new(
        crate::protocol::error::UNKNOWN_TOPIC_OR_PARTITION,
        format!("This server does not host this topic-partition: {topic}-{partition}"),
    )
}
