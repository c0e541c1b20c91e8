//! The group coordinator of one shard: the groups whose `__consumer_offsets` partition
//! (Kafka's rule, `records::partition_for`) this shard owns, each a rebalance state machine
//! (`state::Group`) plus its committed offsets. Requests reach it from any shard as
//! [`GroupCall`]s; a JoinGroup or SyncGroup that must wait for the rebalance parks on a
//! oneshot until the state machine answers it, and a timer task ticks the groups at their
//! next deadline (initial delay, rebalance and session timeouts).
//!
//! Everything here runs on the coordinating shard only; no state is shared across shards.
//! Committed offsets are records in the group's `__consumer_offsets` partition (which this
//! shard owns), appended and fdatasync'ed before a commit is acknowledged, and read back into
//! memory when the shard starts (`load`). Deleted offsets and groups are written as
//! tombstones. Group metadata (generation, protocol, leader, members and their assignments) is
//! recorded each time a group settles (Stable or Empty) in a new shape (for a completed
//! SyncGroup, before its answers go out) and restored at start, so a restarted broker keeps
//! the group's generation and static members. Offsets expire after
//! `offsets.retention.minutes`: those of an Empty group counted from when it became empty,
//! those of a group that never had members (simple commits) from their commit.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::time::{Duration, Instant};

use event_listener::Event;
use futures::channel::oneshot;

use super::records::{GroupValue, Key, MemberValue, OffsetValue};
use super::state::{
    self, Group, GroupConfig, JoinRequest, JoinResponse, Ms, Reply, State, SyncRequest,
    SyncResponse, Waiter,
};
use crate::partition::producer_state::Origin;
use crate::partition::producer_state::ProducerError;
use crate::partition::{self, Acks, Partition};
use crate::record::builder::{BatchBuilder, Codec, ProducerFields};

/// A request for the coordinator of `group`.
pub enum GroupCall {
    Join(JoinRequest),
    Sync(SyncRequest),
    Heartbeat {
        member_id: String,
        instance_id: Option<String>,
        generation: i32,
    },
    Leave(Vec<(String, Option<String>)>),
    Commit {
        member_id: String,
        instance_id: Option<String>,
        generation: i32,
        /// (topic, partition, offset, leader epoch, metadata)
        offsets: Vec<(String, i32, i64, i32, String)>,
    },
    /// A transactional producer's offsets: pending until its transaction's marker.
    TxnCommit {
        transactional_id: String,
        producer_id: i64,
        epoch: i16,
        member_id: String,
        instance_id: Option<String>,
        generation: i32,
        /// (topic, partition, offset, leader epoch, metadata)
        offsets: Vec<(String, i32, i64, i32, String)>,
    },
    /// `partitions: None`: every committed offset of the group. With `require_stable`, a
    /// partition with a transactional commit pending answers UNSTABLE_OFFSET_COMMIT.
    FetchOffsets {
        partitions: Option<Vec<(String, i32)>>,
        require_stable: bool,
    },
    Describe,
    Delete,
    DeleteOffsets(Vec<(String, i32)>),
}

/// A member as DescribeGroups shows it.
pub struct MemberSummary {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub metadata: bytes::Bytes,
    pub assignment: bytes::Bytes,
}

pub struct GroupSummary {
    pub state: State,
    pub protocol_type: String,
    pub protocol: String,
    pub members: Vec<MemberSummary>,
}

pub enum GroupAnswer {
    Join(JoinResponse),
    Sync(SyncResponse),
    Code(i16),
    /// A group-level error, then one per member or partition.
    Codes(i16, Vec<i16>),
    /// A group-level error, then each partition with its offset or its error.
    Offsets(i16, Vec<(String, i32, Result<Option<OffsetValue>, i16>)>),
    Describe(GroupSummary),
}

/// A transaction's offsets for a group, each with where its record lies.
type PendingOffsets = BTreeMap<(String, i32), (OffsetValue, i64)>;

/// A group and what it has committed.
struct Entry {
    group: Group,
    offsets: BTreeMap<(String, i32), OffsetValue>,
    /// Where in `__consumer_offsets` each committed offset's record lies: a transaction's
    /// offsets replace a commit only if written after it (as Kafka's appendedBatchOffset).
    written_at: HashMap<(String, i32), i64>,
    /// Offsets of open transactions, by producer id, with where each record lies.
    pending_txn: HashMap<i64, PendingOffsets>,
    /// The group's `__consumer_offsets` partition.
    log: Option<Rc<Partition>>,
    /// The shape last recorded as group metadata.
    recorded: Option<Shape>,
    /// Wall-clock time the group last settled in a new shape (became Empty, for expiry).
    settled_ms: i64,
}

/// What a group metadata record captures: a new one is written when this changes.
#[derive(Clone, Debug, PartialEq)]
struct Shape {
    generation: i32,
    state: State,
    members: Vec<String>,
}

impl Entry {
    fn new(id: &str, config: GroupConfig) -> Entry {
        Entry {
            group: Group::new(id, config),
            offsets: BTreeMap::new(),
            written_at: HashMap::new(),
            pending_txn: HashMap::new(),
            log: None,
            recorded: None,
            settled_ms: now_wall_ms(),
        }
    }

    fn shape(&self) -> Shape {
        Shape {
            generation: self.group.generation(),
            state: self.group.state(),
            members: self.group.members().map(|m| m.id.clone()).collect(),
        }
    }

    /// A producer's transaction ended: its pending offsets become the committed ones (each
    /// unless a commit written after it is there) or are dropped.
    fn end_txn(&mut self, producer_id: i64, commit: bool) {
        let Some(pending) = self.pending_txn.remove(&producer_id) else {
            return;
        };
        if !commit {
            return;
        }
        for (tp, (value, at)) in pending {
            if self.written_at.get(&tp).is_none_or(|&w| w < at) {
                self.offsets.insert(tp.clone(), value);
                self.written_at.insert(tp, at);
            }
        }
    }

    fn has_pending(&self, tp: &(String, i32)) -> bool {
        self.pending_txn.values().any(|p| p.contains_key(tp))
    }

    /// The offsets past retention at `now`: none while the group has members; all once it
    /// has been Empty that long; for a group that never had members, each one that old.
    fn expired_offsets(&self, retention_ms: i64, now: i64) -> Vec<(String, i32)> {
        if self.group.state() != State::Empty {
            return Vec::new();
        }
        let had_members = self.group.protocol_type().is_some();
        self.offsets
            .iter()
            .filter(|(_, v)| {
                let since = if had_members {
                    self.settled_ms
                } else {
                    v.commit_timestamp
                };
                since.saturating_add(retention_ms) <= now
            })
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// The group metadata record of the group as it is now.
    fn metadata(&self, now_ms: i64) -> GroupValue {
        let g = &self.group;
        let protocol = g.protocol().unwrap_or_default();
        GroupValue {
            protocol_type: g.protocol_type().unwrap_or_default().to_string(),
            generation: g.generation(),
            protocol: g.protocol().map(str::to_string),
            leader: g.leader().map(str::to_string),
            state_timestamp: now_ms,
            members: g
                .members()
                .map(|m| MemberValue {
                    member_id: m.id.clone(),
                    instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    rebalance_timeout_ms: m.rebalance_timeout_ms.min(i32::MAX as Ms) as i32,
                    session_timeout_ms: m.session_timeout_ms.min(i32::MAX as Ms) as i32,
                    subscription: m
                        .protocols
                        .iter()
                        .find(|(n, _)| n == protocol)
                        .map(|(_, b)| b.clone())
                        .unwrap_or_default(),
                    assignment: m.assignment.clone(),
                })
                .collect(),
        }
    }
}

pub struct Coordinator {
    config: GroupConfig,
    /// `offsets.retention.minutes` in ms, and how often expiry runs.
    offsets_retention_ms: i64,
    offsets_retention_check: Duration,
    /// Group metadata records are collected and written by one caller at a time, so a newer
    /// shape is never appended before an older one.
    metadata_writes: glommio::sync::Semaphore,
    /// Commits (and deletes) hold it shared, expiry exclusively: an expired offset's
    /// tombstone never lands after a newer commit of the same partition.
    offsets_lock: glommio::sync::RwLock<()>,
    groups: RefCell<HashMap<String, Entry>>,
    waiters: RefCell<HashMap<Waiter, oneshot::Sender<Reply>>>,
    next_waiter: Cell<Waiter>,
    closed: Cell<bool>,
    /// Notified when a deadline may have moved earlier.
    deadlines_changed: Event,
    epoch: Instant,
}

fn now_wall_ms() -> i64 {
    crate::storage::now_ms()
}

impl Coordinator {
    pub fn new(
        config: GroupConfig,
        offsets_retention_ms: i64,
        offsets_retention_check: Duration,
    ) -> Rc<Coordinator> {
        Rc::new(Coordinator {
            config,
            offsets_retention_ms,
            offsets_retention_check,
            metadata_writes: glommio::sync::Semaphore::new(1),
            offsets_lock: glommio::sync::RwLock::new(()),
            groups: RefCell::new(HashMap::new()),
            waiters: RefCell::new(HashMap::new()),
            next_waiter: Cell::new(0),
            closed: Cell::new(false),
            deadlines_changed: Event::new(),
            epoch: Instant::now(),
        })
    }

    fn now(&self) -> Ms {
        self.epoch.elapsed().as_millis() as Ms
    }

    /// (group id, protocol type, state) of every group this shard coordinates.
    pub fn list(&self) -> Vec<(String, String, State)> {
        self.groups
            .borrow()
            .iter()
            .filter(|(_, e)| e.group.state() != State::Dead)
            .map(|(id, e)| {
                let protocol_type = e.group.protocol_type().unwrap_or_default().to_string();
                (id.clone(), protocol_type, e.group.state())
            })
            .collect()
    }

    /// Sends every reply to the request waiting for it.
    fn dispatch(&self, replies: Vec<Reply>) {
        let mut waiters = self.waiters.borrow_mut();
        for reply in replies {
            let waiter = match &reply {
                Reply::Join(w, _) | Reply::Sync(w, _) => *w,
            };
            if let Some(tx) = waiters.remove(&waiter) {
                let _ = tx.send(reply);
            }
        }
    }

    fn park(&self) -> (Waiter, oneshot::Receiver<Reply>) {
        let waiter = self.next_waiter.get();
        self.next_waiter.set(waiter + 1);
        let (tx, rx) = oneshot::channel();
        if !self.closed.get() {
            self.waiters.borrow_mut().insert(waiter, tx);
        }
        (waiter, rx)
    }

    /// The broker is stopping: every parked JoinGroup/SyncGroup is answered
    /// COORDINATOR_NOT_AVAILABLE now (clients retry elsewhere or later), and none parks again.
    pub fn close(&self) {
        self.closed.set(true);
        self.waiters.borrow_mut().clear();
    }

    /// Runs `f` on the group (created empty if `create` and unknown), dispatching the replies it
    /// produces and waking the timer task.
    fn with_group<R>(
        &self,
        id: &str,
        create: bool,
        log: Option<&Rc<Partition>>,
        f: impl FnOnce(&mut Entry, Ms) -> (R, Vec<Reply>),
    ) -> Option<R> {
        let now = self.now();
        let (result, replies) = {
            let mut groups = self.groups.borrow_mut();
            if create && !groups.contains_key(id) {
                groups.insert(id.to_string(), Entry::new(id, self.config));
            }
            let entry = groups.get_mut(id)?;
            if entry.log.is_none() {
                entry.log = log.cloned();
            }
            f(entry, now)
        };
        self.dispatch(replies);
        self.deadlines_changed.notify(usize::MAX);
        Some(result)
    }

    /// Serves one call; `log` is the group's `__consumer_offsets` partition (on this shard).
    /// Serves one call; `log` is the group's `__consumer_offsets` partition (on this shard);
    /// `verify` checks a transactional commit's partition is in the producer's transaction.
    pub async fn serve(
        &self,
        group_id: &str,
        call: GroupCall,
        log: Option<Rc<Partition>>,
        verify: Option<partition::Verifier>,
    ) -> GroupAnswer {
        let answer = self.answer(group_id, call, log, verify).await;
        self.record_group_changes().await;
        answer
    }

    /// Writes a group metadata record for every group that settled (Stable or Empty) in a
    /// shape not yet recorded. A group that never had members has nothing to record.
    async fn record_group_changes(&self) {
        let Ok(_permit) = self.metadata_writes.acquire_permit(1).await else {
            return;
        };
        let now = now_wall_ms();
        let mut writes: Vec<(Rc<Partition>, bytes::Bytes, bytes::Bytes)> = Vec::new();
        for (id, e) in self.groups.borrow_mut().iter_mut() {
            if !matches!(e.group.state(), State::Stable | State::Empty) {
                continue;
            }
            let shape = e.shape();
            if e.recorded.as_ref() == Some(&shape) {
                continue;
            }
            let first_and_empty = e.recorded.is_none() && shape.state == State::Empty;
            e.recorded = Some(shape);
            e.settled_ms = now;
            if let (false, Some(log)) = (first_and_empty, &e.log) {
                writes.push((Rc::clone(log), group_key(id), e.metadata(now).encode()));
            }
        }
        for (log, key, value) in writes {
            persist_code(Some(&log), vec![(key, Some(value))]).await;
        }
    }

    async fn answer(
        &self,
        group_id: &str,
        call: GroupCall,
        log: Option<Rc<Partition>>,
        verify: Option<partition::Verifier>,
    ) -> GroupAnswer {
        match call {
            GroupCall::Join(mut req) => {
                let (waiter, rx) = self.park();
                req.waiter = waiter;
                self.with_group(group_id, true, log.as_ref(), |e, now| {
                    ((), e.group.join(req, now))
                });
                match rx.await {
                    Ok(Reply::Join(_, r)) => GroupAnswer::Join(r),
                    _ => GroupAnswer::Code(state::COORDINATOR_NOT_AVAILABLE),
                }
            }
            GroupCall::Sync(req) => {
                let (waiter, rx) = self.park();
                // The answers are held back (an empty list to dispatch) until the group's new
                // metadata is on disk, as Kafka's storeGroup precedes the SyncGroup answers.
                let answers = self.with_group(group_id, false, log.as_ref(), |e, now| {
                    (e.group.sync(waiter, req, now), Vec::new())
                });
                let Some(answers) = answers else {
                    self.waiters.borrow_mut().remove(&waiter);
                    return GroupAnswer::Code(state::UNKNOWN_MEMBER_ID);
                };
                if !answers.is_empty() {
                    self.record_group_changes().await;
                }
                self.dispatch(answers);
                match rx.await {
                    Ok(Reply::Sync(_, r)) => GroupAnswer::Sync(r),
                    _ => GroupAnswer::Code(state::COORDINATOR_NOT_AVAILABLE),
                }
            }
            GroupCall::Heartbeat {
                member_id,
                instance_id,
                generation,
            } => GroupAnswer::Code(
                self.with_group(group_id, false, log.as_ref(), |e, now| {
                    let code =
                        e.group
                            .heartbeat(&member_id, instance_id.as_deref(), generation, now);
                    (code, Vec::new())
                })
                .unwrap_or(state::UNKNOWN_MEMBER_ID),
            ),
            GroupCall::Leave(members) => {
                let n = members.len();
                self.with_group(group_id, false, log.as_ref(), |e, now| {
                    let (codes, replies) = e.group.leave(&members, now);
                    (GroupAnswer::Codes(state::NONE, codes), replies)
                })
                .unwrap_or_else(|| {
                    GroupAnswer::Codes(state::NONE, vec![state::UNKNOWN_MEMBER_ID; n])
                })
            }
            GroupCall::Commit {
                member_id,
                instance_id,
                generation,
                offsets,
            } => {
                let n = offsets.len();
                let code = self
                    .with_group(group_id, true, log.as_ref(), |e, _| {
                        let code =
                            e.group
                                .check_commit(&member_id, instance_id.as_deref(), generation);
                        (code, Vec::new())
                    })
                    .unwrap_or(state::COORDINATOR_NOT_AVAILABLE);
                if code != state::NONE {
                    return GroupAnswer::Codes(code, vec![code; n]);
                }
                let ts = now_wall_ms();
                let values: Vec<((String, i32), OffsetValue)> = offsets
                    .into_iter()
                    .map(|(topic, partition, offset, leader_epoch, metadata)| {
                        let value = OffsetValue {
                            offset,
                            leader_epoch,
                            metadata,
                            commit_timestamp: ts,
                        };
                        ((topic, partition), value)
                    })
                    .collect();
                let records = values
                    .iter()
                    .map(|((t, p), v)| (offset_key(group_id, t, *p), Some(v.encode())))
                    .collect();
                let _shared = self.offsets_lock.read().await;
                let base = match persist(log.as_ref(), records, None, None).await {
                    Ok(base) => base,
                    Err(code) => return GroupAnswer::Codes(code, vec![code; n]),
                };
                self.with_group(group_id, true, log.as_ref(), |e, _| {
                    for (i, (tp, v)) in values.into_iter().enumerate() {
                        e.written_at.insert(tp.clone(), base + i as i64);
                        e.offsets.insert(tp, v);
                    }
                    ((), Vec::new())
                });
                GroupAnswer::Codes(state::NONE, vec![state::NONE; n])
            }
            GroupCall::TxnCommit {
                transactional_id: _,
                producer_id,
                epoch,
                member_id,
                instance_id,
                generation,
                offsets,
            } => {
                let n = offsets.len();
                let code = self
                    .with_group(group_id, true, log.as_ref(), |e, _| {
                        let code = e.group.check_txn_commit(
                            &member_id,
                            instance_id.as_deref(),
                            generation,
                        );
                        (code, Vec::new())
                    })
                    .unwrap_or(state::COORDINATOR_NOT_AVAILABLE);
                if code != state::NONE {
                    return GroupAnswer::Codes(code, vec![code; n]);
                }
                let ts = now_wall_ms();
                let values: Vec<((String, i32), OffsetValue)> = offsets
                    .into_iter()
                    .map(|(topic, partition, offset, leader_epoch, metadata)| {
                        let value = OffsetValue {
                            offset,
                            leader_epoch,
                            metadata,
                            commit_timestamp: ts,
                        };
                        ((topic, partition), value)
                    })
                    .collect();
                let records = values
                    .iter()
                    .map(|((t, p), v)| (offset_key(group_id, t, *p), Some(v.encode())))
                    .collect();
                let producer = ProducerFields {
                    producer_id,
                    epoch,
                    base_sequence: -1,
                    transactional: true,
                };
                let _shared = self.offsets_lock.read().await;
                let base = match persist(log.as_ref(), records, Some(producer), verify).await {
                    Ok(base) => base,
                    Err(code) => return GroupAnswer::Codes(code, vec![code; n]),
                };
                self.with_group(group_id, true, log.as_ref(), |e, _| {
                    let pending = e.pending_txn.entry(producer_id).or_default();
                    for (i, (tp, v)) in values.into_iter().enumerate() {
                        pending.insert(tp, (v, base + i as i64));
                    }
                    ((), Vec::new())
                });
                GroupAnswer::Codes(state::NONE, vec![state::NONE; n])
            }
            GroupCall::FetchOffsets {
                partitions,
                require_stable,
            } => {
                let groups = self.groups.borrow();
                let entry = groups.get(group_id);
                let parts: Vec<(String, i32)> = match partitions {
                    Some(parts) => parts,
                    None => entry
                        .into_iter()
                        .flat_map(|e| e.offsets.keys().cloned())
                        .collect(),
                };
                let found = parts
                    .into_iter()
                    .map(|tp| {
                        let v = match entry {
                            Some(e) if require_stable && e.has_pending(&tp) => {
                                Err(UNSTABLE_OFFSET_COMMIT)
                            }
                            Some(e) => Ok(e.offsets.get(&tp).cloned()),
                            None => Ok(None),
                        };
                        (tp.0, tp.1, v)
                    })
                    .collect();
                GroupAnswer::Offsets(state::NONE, found)
            }
            GroupCall::Describe => {
                let groups = self.groups.borrow();
                let Some(e) = groups.get(group_id) else {
                    return GroupAnswer::Describe(GroupSummary {
                        state: State::Dead,
                        protocol_type: String::new(),
                        protocol: String::new(),
                        members: Vec::new(),
                    });
                };
                let g = &e.group;
                // As Kafka: protocol, metadata and assignments only once the group is Stable.
                let stable = g.state() == State::Stable;
                let protocol = if stable {
                    g.protocol().unwrap_or_default().to_string()
                } else {
                    String::new()
                };
                let members = g
                    .members()
                    .map(|m| MemberSummary {
                        member_id: m.id.clone(),
                        instance_id: m.instance_id.clone(),
                        client_id: m.client_id.clone(),
                        client_host: m.client_host.clone(),
                        metadata: m
                            .protocols
                            .iter()
                            .find(|(n, _)| stable && *n == protocol)
                            .map(|(_, b)| b.clone())
                            .unwrap_or_default(),
                        assignment: if stable {
                            m.assignment.clone()
                        } else {
                            bytes::Bytes::new()
                        },
                    })
                    .collect();
                GroupAnswer::Describe(GroupSummary {
                    state: g.state(),
                    protocol_type: g.protocol_type().unwrap_or_default().to_string(),
                    protocol,
                    members,
                })
            }
            GroupCall::Delete => {
                let doomed = {
                    let groups = self.groups.borrow();
                    match groups.get(group_id) {
                        None => return GroupAnswer::Code(GROUP_ID_NOT_FOUND),
                        Some(e) if e.group.state() == State::Dead => {
                            return GroupAnswer::Code(GROUP_ID_NOT_FOUND)
                        }
                        Some(e) if e.group.state() != State::Empty => {
                            return GroupAnswer::Code(NON_EMPTY_GROUP)
                        }
                        Some(e) => e.offsets.keys().cloned().collect::<Vec<_>>(),
                    }
                };
                // Dead while the tombstones are written: a join meanwhile is refused rather
                // than parked on a group about to vanish.
                if let Some(e) = self.groups.borrow_mut().get_mut(group_id) {
                    e.group.mark_dead();
                }
                let tombstones = doomed
                    .iter()
                    .map(|(t, p)| (offset_key(group_id, t, *p), None))
                    .chain([(group_key(group_id), None)])
                    .collect();
                let code = persist_code(log.as_ref(), tombstones).await;
                let mut groups = self.groups.borrow_mut();
                if code == state::NONE {
                    groups.remove(group_id);
                } else if let Some(e) = groups.get_mut(group_id) {
                    e.group.revive();
                }
                GroupAnswer::Code(code)
            }
            GroupCall::DeleteOffsets(parts) => {
                let busy = match self.groups.borrow().get(group_id) {
                    None => return GroupAnswer::Codes(GROUP_ID_NOT_FOUND, Vec::new()),
                    Some(e) => e.group.state() != State::Empty,
                };
                // While the group has members its offsets stay (Kafka checks the members'
                // subscriptions; every member may consume any topic here).
                if busy {
                    return GroupAnswer::Codes(
                        state::NONE,
                        vec![GROUP_SUBSCRIBED_TO_TOPIC; parts.len()],
                    );
                }
                let tombstones = parts
                    .iter()
                    .map(|(t, p)| (offset_key(group_id, t, *p), None))
                    .collect();
                let code = persist_code(log.as_ref(), tombstones).await;
                if code != state::NONE {
                    return GroupAnswer::Codes(code, Vec::new());
                }
                if let Some(e) = self.groups.borrow_mut().get_mut(group_id) {
                    for k in &parts {
                        e.offsets.remove(k);
                    }
                }
                GroupAnswer::Codes(state::NONE, vec![state::NONE; parts.len()])
            }
        }
    }

    /// Reads a `__consumer_offsets` partition from its start and installs the offsets it
    /// holds (the newest record of each key wins; a tombstone removes the key).
    pub async fn load(&self, log: &Rc<Partition>) {
        let mut metadata: HashMap<String, GroupValue> = HashMap::new();
        let mut offset = log.log_start_offset();
        let end = log.high_watermark();
        let mut loaded = 0usize;
        while offset < end {
            let bytes = match log
                .log
                .read(offset, 1 << 20, crate::storage::Bound::END)
                .await
            {
                Ok(b) if !b.is_empty() => b,
                Ok(_) => break,
                Err(e) => {
                    tracing::error!("{}: cannot read offsets: {e}", log.log.dir.display());
                    break;
                }
            };
            // Compaction leaves gaps, even at a batch's end: go on after the batch, not after
            // its last record.
            let (batches, _) = crate::record::valid_prefix(&bytes);
            if batches.is_empty() {
                break;
            }
            let mut at = 0;
            for view in batches {
                let batch = bytes.slice(at..at + view.len());
                at += view.len();
                offset = offset.max(view.next_offset());
                if view.is_control() {
                    let marker = crate::record::control::read_marker(view.bytes);
                    if let Some(m) = marker.filter(|m| m.kind <= crate::record::control::COMMIT) {
                        let commit = m.kind == crate::record::control::COMMIT;
                        for e in self.groups.borrow_mut().values_mut() {
                            if e.log.as_ref().is_some_and(|l| Rc::ptr_eq(l, log)) {
                                e.end_txn(view.producer_id(), commit);
                            }
                        }
                    }
                    continue;
                }
                let txn_producer = view.is_transactional().then(|| view.producer_id());
                match crate::client::decode_records(batch) {
                    Ok(records) => {
                        loaded += self.load_records(log, records, txn_producer, &mut metadata)
                    }
                    Err(e) => {
                        tracing::error!("{}: damaged offsets batch: {e}", log.log.dir.display());
                    }
                }
            }
        }
        let now = self.now();
        for (id, stored) in metadata {
            let mut groups = self.groups.borrow_mut();
            let entry = groups
                .entry(id.clone())
                .or_insert_with(|| Entry::new(&id, self.config));
            entry.group = Group::restore(&id, self.config, &stored, now);
            entry.log = Some(Rc::clone(log));
            entry.recorded = Some(entry.shape());
            if stored.state_timestamp > 0 {
                entry.settled_ms = stored.state_timestamp;
            }
        }
        self.deadlines_changed.notify(usize::MAX);
        // Groups whose offsets were all deleted are gone.
        self.groups.borrow_mut().retain(|_, e| {
            !e.offsets.is_empty() || !e.pending_txn.is_empty() || e.group.state() != State::Empty
        });
        if loaded > 0 {
            tracing::info!(
                "{}: loaded {loaded} committed offsets",
                log.log.dir.display()
            );
        }
    }

    /// Installs one batch's records read back at load (a transactional batch's offsets stay
    /// pending for `txn_producer` until its marker). Returns how many offsets it held.
    fn load_records(
        &self,
        log: &Rc<Partition>,
        records: Vec<crate::client::Consumed>,
        txn_producer: Option<i64>,
        metadata: &mut HashMap<String, GroupValue>,
    ) -> usize {
        let mut loaded = 0;
        for r in records {
            let Some(key) = r.key else { continue };
            let (group, topic, partition) = match Key::decode(&key) {
                Ok(Key::Offset {
                    group,
                    topic,
                    partition,
                }) => (group, topic, partition),
                Ok(Key::Group { group }) => {
                    match r.value.map(|v| GroupValue::decode(&v)) {
                        Some(Ok(v)) => {
                            metadata.insert(group, v);
                        }
                        Some(Err(e)) => tracing::warn!("{}: {e}", log.log.dir.display()),
                        None => {
                            metadata.remove(&group);
                        }
                    }
                    continue;
                }
                Err(_) => continue,
            };
            let mut groups = self.groups.borrow_mut();
            let entry = groups
                .entry(group.clone())
                .or_insert_with(|| Entry::new(&group, self.config));
            entry.log = Some(Rc::clone(log));
            let tp = (topic, partition);
            match (r.value.map(|v| OffsetValue::decode(&v)), txn_producer) {
                (Some(Ok(v)), Some(pid)) => {
                    entry
                        .pending_txn
                        .entry(pid)
                        .or_default()
                        .insert(tp, (v, r.offset));
                }
                (Some(Ok(v)), None) => {
                    entry.written_at.insert(tp.clone(), r.offset);
                    entry.offsets.insert(tp, v);
                    loaded += 1;
                }
                (Some(Err(e)), _) => tracing::warn!("{}: {e}", log.log.dir.display()),
                (None, _) => {
                    entry.offsets.remove(&tp);
                    entry.written_at.remove(&tp);
                }
            }
        }
        loaded
    }

    /// A marker was written to `log` (a `__consumer_offsets` partition of this shard): the
    /// producer's pending offsets in the groups stored there are committed or dropped.
    pub fn end_txn(&self, log: &Rc<Partition>, producer_id: i64, commit: bool) {
        for e in self.groups.borrow_mut().values_mut() {
            if e.log.as_ref().is_some_and(|l| Rc::ptr_eq(l, log)) {
                e.end_txn(producer_id, commit);
            }
        }
    }

    /// Ticks every group at its next deadline, for as long as the shard runs.
    pub async fn run_timers(self: Rc<Self>) {
        loop {
            let changed = self.deadlines_changed.listen();
            let next = self
                .groups
                .borrow()
                .values()
                .filter_map(|e| e.group.next_deadline())
                .min();
            let now = self.now();
            match next {
                Some(at) if at <= now => {
                    let mut replies = Vec::new();
                    for e in self.groups.borrow_mut().values_mut() {
                        if e.group.next_deadline().is_some_and(|d| d <= now) {
                            replies.extend(e.group.tick(now));
                        }
                    }
                    self.dispatch(replies);
                    self.record_group_changes().await;
                }
                Some(at) => {
                    let wait = glommio::timer::sleep(Duration::from_millis(at - now));
                    futures_lite::future::or(wait, changed).await;
                }
                None => changed.await,
            }
        }
    }
}

impl Coordinator {
    /// Expires committed offsets every `offsets.retention.check.interval.ms`, as Kafka does
    /// since KIP-211: all offsets of a group Empty for `offsets.retention.minutes`; for a
    /// group that never had members, each offset that old. A group left with no offsets and
    /// no members is deleted.
    pub async fn run_offset_expiry(self: Rc<Self>) {
        while !self.closed.get() {
            glommio::timer::sleep(self.offsets_retention_check).await;
            self.expire_offsets(now_wall_ms()).await;
        }
    }

    async fn expire_offsets(&self, now: i64) {
        let Ok(_exclusive) = self.offsets_lock.write().await else {
            return;
        };
        let retention = self.offsets_retention_ms;
        // Groups with offsets to expire, and Empty groups with none left (which go, as in
        // Kafka's cleanup).
        let doomed: Vec<(String, Rc<Partition>)> = self
            .groups
            .borrow()
            .iter()
            .filter(|(_, e)| {
                let empty = e.group.state() == State::Empty && e.offsets.is_empty();
                empty || !e.expired_offsets(retention, now).is_empty()
            })
            .filter_map(|(id, e)| Some((id.clone(), Rc::clone(e.log.as_ref()?))))
            .collect();
        for (id, log) in doomed {
            // Looked at again: the group may have changed while an earlier one was written.
            let (expired, all) = match self.groups.borrow().get(&id) {
                Some(e) => {
                    let expired = e.expired_offsets(retention, now);
                    let all = expired.len() == e.offsets.len();
                    (expired, all)
                }
                None => continue,
            };
            let mut tombstones: Vec<_> = expired
                .iter()
                .map(|(t, p)| (offset_key(&id, t, *p), None))
                .collect();
            if all {
                tombstones.push((group_key(&id), None));
            }
            if persist_code(Some(&log), tombstones).await != state::NONE {
                continue;
            }
            if !expired.is_empty() {
                tracing::info!("group {id}: {} committed offsets expired", expired.len());
            }
            let mut groups = self.groups.borrow_mut();
            if let Some(e) = groups.get_mut(&id) {
                // An offset committed again while the tombstones were written stays.
                let still = e.expired_offsets(retention, now);
                for k in expired.iter().filter(|k| still.contains(k)) {
                    e.offsets.remove(k);
                }
                if e.offsets.is_empty() && e.group.state() == State::Empty {
                    groups.remove(&id);
                }
            }
        }
    }
}

fn group_key(group: &str) -> bytes::Bytes {
    Key::Group {
        group: group.to_string(),
    }
    .encode()
}

fn offset_key(group: &str, topic: &str, partition: i32) -> bytes::Bytes {
    Key::Offset {
        group: group.to_string(),
        topic: topic.to_string(),
        partition,
    }
    .encode()
}

async fn persist_code(
    log: Option<&Rc<Partition>>,
    records: Vec<(bytes::Bytes, Option<bytes::Bytes>)>,
) -> i16 {
    persist(log, records, None, None)
        .await
        .err()
        .unwrap_or(state::NONE)
}

/// Appends records (a `None` value is a tombstone) to the group's `__consumer_offsets`
/// partition, as `producer`'s if given (a transactional commit, verified with `verify`), and
/// waits until they are fdatasync'ed. The offset of the first record, or the error code.
async fn persist(
    log: Option<&Rc<Partition>>,
    records: Vec<(bytes::Bytes, Option<bytes::Bytes>)>,
    producer: Option<ProducerFields>,
    verify: Option<partition::Verifier>,
) -> Result<i64, i16> {
    let Some(log) = log else {
        return Err(state::COORDINATOR_NOT_AVAILABLE);
    };
    if records.is_empty() {
        return Ok(log.high_watermark());
    }
    let now = now_wall_ms();
    let mut batch = BatchBuilder::new(now).producer(producer.unwrap_or(ProducerFields::NONE));
    for (key, value) in &records {
        batch.push_record(now, Some(key), value.as_deref());
    }
    let Ok(bytes) = batch.finish(Codec::None) else {
        return Err(state::COORDINATOR_NOT_AVAILABLE);
    };
    let Ok(validated) = crate::record::validate_batches(bytes, usize::MAX) else {
        return Err(state::COORDINATOR_NOT_AVAILABLE);
    };
    let entry = partition::Entry::Data {
        batches: validated,
        origin: Origin::Coordinator,
    };
    match log.append_now(entry, Acks::All, verify).await {
        Ok(a) => Ok(a.base_offset),
        Err(partition::AppendError::Producer(e)) => Err(match e {
            ProducerError::StaleEpoch { .. } => INVALID_PRODUCER_EPOCH,
            ProducerError::InvalidTxnState { .. } => INVALID_TXN_STATE,
            ProducerError::OutOfOrder { .. } | ProducerError::CoordinatorFenced { .. } => {
                INVALID_PRODUCER_EPOCH
            }
        }),
        Err(e) => {
            tracing::error!("{}: cannot record offsets: {e}", log.log.dir.display());
            Err(state::COORDINATOR_NOT_AVAILABLE)
        }
    }
}

pub const GROUP_ID_NOT_FOUND: i16 = 69;
pub const INVALID_PRODUCER_EPOCH: i16 = 47;
pub const INVALID_TXN_STATE: i16 = 48;
pub const UNSTABLE_OFFSET_COMMIT: i16 = 88;
pub const NON_EMPTY_GROUP: i16 = 68;
pub const GROUP_SUBSCRIBED_TO_TOPIC: i16 = 86;

#[cfg(test)]
mod tests {
    use super::*;

    fn offset(commit_timestamp: i64) -> OffsetValue {
        OffsetValue {
            offset: 1,
            leader_epoch: -1,
            metadata: String::new(),
            commit_timestamp,
        }
    }

    #[test]
    fn offsets_expire_by_commit_time_or_by_time_empty() {
        // Simple commits only: each offset by its own commit time.
        let mut simple = Entry::new("g", GroupConfig::default());
        simple.offsets.insert(("t".into(), 0), offset(1_000));
        simple.offsets.insert(("t".into(), 1), offset(5_000));
        assert!(simple.expired_offsets(10_000, 10_999).is_empty());
        assert_eq!(
            simple.expired_offsets(10_000, 11_000),
            vec![("t".into(), 0)]
        );
        assert_eq!(simple.expired_offsets(10_000, 15_000).len(), 2);

        // A group that had members: all at once, counted from when it became empty.
        let stored = GroupValue {
            protocol_type: "consumer".into(),
            generation: 3,
            protocol: None,
            leader: None,
            state_timestamp: 20_000,
            members: Vec::new(),
        };
        let mut emptied = Entry::new("g", GroupConfig::default());
        emptied.group = Group::restore("g", GroupConfig::default(), &stored, 0);
        emptied.settled_ms = 20_000;
        emptied.offsets.insert(("t".into(), 0), offset(1_000));
        emptied.offsets.insert(("t".into(), 1), offset(19_000));
        assert!(emptied.expired_offsets(10_000, 29_999).is_empty());
        assert_eq!(emptied.expired_offsets(10_000, 30_000).len(), 2);

        // Never while it has members.
        let member = MemberValue {
            member_id: "m".into(),
            instance_id: None,
            client_id: "c".into(),
            client_host: "h".into(),
            rebalance_timeout_ms: 1,
            session_timeout_ms: 1,
            subscription: bytes::Bytes::new(),
            assignment: bytes::Bytes::new(),
        };
        let busy_stored = GroupValue {
            members: vec![member],
            ..stored
        };
        emptied.group = Group::restore("g", GroupConfig::default(), &busy_stored, 0);
        assert!(emptied.expired_offsets(10_000, i64::MAX).is_empty());
    }
}
