//! Shards: one pinned glommio executor per core, each owning outright the partitions placed on
//! it. Owns the per-shard state (metadata snapshot, partition logs), the cross-shard mesh and
//! the routing of partition work to owners.
//!
//! Invariants: a partition's log is touched only by its owning shard; other shards reach it by
//! a message on the mesh. Shard 0 alone changes topic metadata (see `admin`) and every shard
//! installs the snapshots it broadcasts in version order.

pub mod admin;
pub mod ops;

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
pub use ops::{FetchData, OpError, OpKind, OpOutcome, OpResult, PartitionOp};

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
    ListGroups,
}

pub enum ShardResponse {
    Partitions(Vec<OpOutcome>),
    Admin(admin::AdminResponse),
    Group(GroupAnswer),
    Groups(Vec<(String, String, crate::group::state::State)>),
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
}

impl Shard {
    pub fn new(
        id: usize,
        count: usize,
        config: Rc<BrokerConfig>,
        senders: Senders<ShardMessage>,
    ) -> Rc<Shard> {
        let group_config = config.group_config;
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

    /// The group's `__consumer_offsets` partition and the shard that owns it (its
    /// coordinator).
    fn coordinator_of(&self, group: &str) -> (i32, usize) {
        let meta = self.metadata();
        // The topic's real partition count, as Kafka uses once the topic exists.
        let slots = meta
            .topics
            .get(OFFSETS_TOPIC)
            .map_or(self.config.offsets_topic_partitions, |t| {
                t.shards.len() as i32
            });
        let slot = partition_for(group, slots);
        let shard = meta
            .shard_of(OFFSETS_TOPIC, slot)
            .unwrap_or_else(|| crate::metadata::place_partition(OFFSETS_TOPIC, slot, self.count));
        (slot, shard)
    }

    /// Creates `__consumer_offsets` on first use, as Kafka does (compacted, 100 MiB segments).
    async fn ensure_offsets_topic(self: &Rc<Self>) -> bool {
        if self.metadata().topics.contains_key(OFFSETS_TOPIC) {
            return true;
        }
        let configs = [
            ("cleanup.policy", "compact"),
            ("segment.bytes", "104857600"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let topic = admin::NewTopic {
            name: OFFSETS_TOPIC.to_string(),
            partitions: self.config.offsets_topic_partitions,
            replication_factor: -1,
            configs,
        };
        let req = admin::AdminRequest::CreateTopics {
            topics: vec![topic],
            validate_only: false,
        };
        admin::request(self, req).await;
        self.metadata().topics.contains_key(OFFSETS_TOPIC)
    }

    /// Serves a group call here, the group's coordinator shard.
    async fn serve_group(&self, group: &str, call: GroupCall) -> GroupAnswer {
        let (slot, _) = self.coordinator_of(group);
        let partition = self.local_partition(OFFSETS_TOPIC, slot);
        self.groups.serve(group, call, partition).await
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
                    Ok(_) => Ok(OpResult::MarkerWritten),
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
                                    crate::storage::log::Fetched::File(_) => offsets.last_stable,
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
                if timestamp < -4 {
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
        Box::new(move || {
            Box::pin(async move {
                me.verify_in_transaction(&transactional_id, &topic, partition)
                    .await
            })
        })
    }

    /// Whether the partition is in the ongoing transaction of `transactional_id`.
    async fn verify_in_transaction(
        &self,
        transactional_id: &str,
        topic: &str,
        partition: i32,
    ) -> Result<(), crate::partition::AppendError> {
        Err(crate::partition::AppendError::VerificationUnavailable(
            format!("no transaction coordinator for {transactional_id} ({topic}-{partition})"),
        ))
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
                                ShardResponse::Partitions(me.execute_local(ops).await)
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
                ShardResponse::Partitions(self.execute_local(prepared).await)
            }
            ShardRequest::WaitForData { parts, wait } => {
                self.wait_local(&parts, wait).await;
                ShardResponse::Done
            }
            ShardRequest::Admin(req) => ShardResponse::Admin(admin::serve(self, req).await),
            ShardRequest::Group(group, call) => {
                ShardResponse::Group(self.serve_group(&group, call).await)
            }
            ShardRequest::ListGroups => ShardResponse::Groups(self.groups.list()),
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
                    Ok(ShardResponse::Partitions(r)) => r,
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
