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
use crate::protocol::error::{self, KafkaError};
use crate::storage::log::Fetched;
use crate::storage::{LogSettings, PartitionLog};
pub use ops::{FetchData, OpKind, OpOutcome, OpResult, PartitionOp};

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
    partitions: RefCell<HashMap<PartitionKey, (Rc<PartitionLog>, TopicId)>>,
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

    pub fn local_partition(&self, topic: &str, partition: i32) -> Option<Rc<PartitionLog>> {
        self.partitions
            .borrow()
            .get(&(topic.to_string(), partition))
            .map(|(l, _)| Rc::clone(l))
    }

    pub fn local_partitions(&self) -> Vec<Rc<PartitionLog>> {
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
        let log = self.local_partition(OFFSETS_TOPIC, slot);
        self.groups.serve(group, call, log).await
    }

    /// Reads the committed offsets of this shard's `__consumer_offsets` partitions.
    pub async fn load_group_offsets(&self) {
        let logs: Vec<Rc<PartitionLog>> = self
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
                None => results[i] = Some(Err((unknown_partition(&op.topic, op.partition), None))),
            }
        }
        let mut waits = Vec::new();
        for (shard, (indexes, ops)) in per_shard.into_iter().enumerate() {
            if ops.is_empty() {
                continue;
            }
            let me = Rc::clone(self);
            waits.push(async move {
                let outcomes = if shard == me.id {
                    me.execute_local(ops).await
                } else {
                    let n = ops.len();
                    match me.call(shard, ShardRequest::Partitions(ops)).await {
                        Some(ShardResponse::Partitions(r)) => r,
                        _ => (0..n)
                            .map(|_| {
                                Err((
                                    KafkaError::new(
                                        error::UNKNOWN_SERVER_ERROR,
                                        "shard did not answer",
                                    ),
                                    None,
                                ))
                            })
                            .collect(),
                    }
                };
                (indexes, outcomes)
            });
        }
        for (indexes, outcomes) in futures::future::join_all(waits).await {
            for (i, o) in indexes.into_iter().zip(outcomes) {
                results[i] = Some(o);
            }
        }
        results
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|| {
                    Err((
                        KafkaError::new(error::UNKNOWN_SERVER_ERROR, "no result"),
                        None,
                    ))
                })
            })
            .collect()
    }

    /// Runs ops on partitions this shard owns, concurrently.
    pub async fn execute_local(&self, ops: Vec<PartitionOp>) -> Vec<OpOutcome> {
        futures::future::join_all(ops.into_iter().map(|op| self.execute_op(op))).await
    }

    /// A fetch read: file ranges for data on disk when `shardlog.fetch.zero.copy` is on,
    /// otherwise bytes read into memory.
    async fn read(
        &self,
        log: &PartitionLog,
        offset: i64,
        max_bytes: usize,
    ) -> Result<Fetched, KafkaError> {
        if self.config.fetch_zero_copy {
            log.read_slice(offset, max_bytes).await
        } else {
            log.read(offset, max_bytes).await.map(Fetched::Memory)
        }
    }

    async fn execute_op(&self, op: PartitionOp) -> OpOutcome {
        let Some(log) = self.local_partition(&op.topic, op.partition) else {
            return Err((unknown_partition(&op.topic, op.partition), None));
        };
        let marks = |log: &PartitionLog| Some((log.high_watermark(), log.log_start_offset()));
        match op.kind {
            OpKind::Produce { batches, sync } => match log.append(batches, sync).await {
                Ok(o) => Ok(OpResult::Produce {
                    base_offset: o.base_offset,
                    log_append_time: o.log_append_time,
                    log_start_offset: o.log_start_offset,
                }),
                Err(e) => Err((e, marks(&log))),
            },
            OpKind::Fetch { offset, max_bytes } => match self.read(&log, offset, max_bytes).await {
                Ok(records) => Ok(OpResult::Fetch(FetchData {
                    records,
                    high_watermark: log.high_watermark(),
                    log_start_offset: log.log_start_offset(),
                })),
                Err(e) => Err((e, marks(&log))),
            },
            OpKind::ListOffsets { timestamp } => {
                let found = match timestamp {
                    -1 => Ok(Some((log.high_watermark(), -1))),
                    -2 | -4 => Ok(Some((log.log_start_offset(), -1))),
                    -3 => log.max_timestamp_offset().await,
                    t if t >= 0 => log.offset_for_timestamp(t).await,
                    t => Err(KafkaError::new(
                        error::INVALID_REQUEST,
                        format!("unknown timestamp {t}"),
                    )),
                };
                match found {
                    Ok(Some((offset, timestamp))) => Ok(OpResult::Offset { offset, timestamp }),
                    Ok(None) => Ok(OpResult::Offset {
                        offset: -1,
                        timestamp: -1,
                    }),
                    Err(e) => Err((e, marks(&log))),
                }
            }
            OpKind::DeleteRecords { offset } => match log.delete_records(offset).await {
                Ok(low) => Ok(OpResult::LowWatermark(low)),
                Err(e) => Err((e, marks(&log))),
            },
            OpKind::Info => Ok(OpResult::Info {
                high_watermark: log.high_watermark(),
                log_start_offset: log.log_start_offset(),
            }),
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
                    glommio::spawn_local(async move {
                        let response = me.serve(msg.request).await;
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
                ShardResponse::Partitions(self.execute_local(ops).await)
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
        let doomed: Vec<((String, i32), Rc<PartitionLog>)> = self
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
        for (key, log) in doomed {
            self.partitions.borrow_mut().remove(&key);
            if let Err(e) = log.close().await {
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
                if let Some(log) = self.local_partition(&t.name, p) {
                    if log.config() != config {
                        log.set_config(config.clone());
                    }
                    continue;
                }
                let dir = crate::storage::partition_dir(&log_dir, &t.name, p);
                // Open only a directory made for this very topic; anything else there is
                // left over from a deleted topic of the same name.
                let stored = crate::storage::log::stored_topic_id(&dir).await;
                let same_topic = stored == Some(crate::storage::log::topic_id_text(t.id));
                let settings = self.log_settings();
                let events = Rc::clone(&self.data_appended);
                let opened = if same_topic {
                    PartitionLog::open(
                        &log_dir,
                        &t.name,
                        p,
                        config.clone(),
                        settings,
                        events,
                        clean,
                    )
                    .await
                } else {
                    PartitionLog::create(
                        &log_dir,
                        &t.name,
                        t.id,
                        p,
                        config.clone(),
                        settings,
                        events,
                    )
                    .await
                };
                match opened {
                    Ok(log) => {
                        self.partitions
                            .borrow_mut()
                            .insert((t.name.clone(), p), (log, t.id));
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
        let logs = self.local_partitions();
        let mut ok = true;
        for log in logs {
            if let Err(e) = log.close().await {
                tracing::error!("closing {}: {e}", log.dir.display());
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
            for log in self.local_partitions() {
                log.enforce_retention(now).await;
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
            for log in self.local_partitions() {
                if self.stopping.get() {
                    return;
                }
                crate::storage::cleaner::clean_if_due(&log, limits, crate::storage::now_ms()).await;
            }
        }
    }
}

pub fn unknown_partition(topic: &str, partition: i32) -> KafkaError {
    KafkaError::new(
        error::UNKNOWN_TOPIC_OR_PARTITION,
        format!("This server does not host this topic-partition: {topic}-{partition}"),
    )
}
