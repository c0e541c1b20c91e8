//! The group coordinator of one shard: the groups whose `__consumer_offsets` partition
//! (Kafka's rule, `records::partition_for`) this shard owns, each a rebalance state machine
//! (`state::Group`) plus its committed offsets. Requests reach it from any shard as
//! [`GroupCall`]s; a JoinGroup or SyncGroup that must wait for the rebalance parks on a
//! oneshot until the state machine answers it, and a timer task ticks the groups at their
//! next deadline (initial delay, rebalance and session timeouts).
//!
//! Everything here runs on the coordinating shard only; no state is shared across shards.
//! Committed offsets are held in memory (persisting them to `__consumer_offsets` is the
//! next step of the consumer-group work).

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::time::{Duration, Instant};

use event_listener::Event;
use futures::channel::oneshot;

use super::records::OffsetValue;
use super::state::{
    self, Group, GroupConfig, JoinRequest, JoinResponse, Ms, Reply, State, SyncRequest,
    SyncResponse, Waiter,
};

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
    /// `None`: every committed offset of the group.
    FetchOffsets(Option<Vec<(String, i32)>>),
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
    Offsets(i16, Vec<(String, i32, Option<OffsetValue>)>),
    Describe(GroupSummary),
}

/// A group and what it has committed.
struct Entry {
    group: Group,
    offsets: BTreeMap<(String, i32), OffsetValue>,
}

pub struct Coordinator {
    config: GroupConfig,
    groups: RefCell<HashMap<String, Entry>>,
    waiters: RefCell<HashMap<Waiter, oneshot::Sender<Reply>>>,
    next_waiter: Cell<Waiter>,
    /// Notified when a deadline may have moved earlier.
    deadlines_changed: Event,
    epoch: Instant,
}

fn now_wall_ms() -> i64 {
    crate::storage::now_ms()
}

impl Coordinator {
    pub fn new(config: GroupConfig) -> Rc<Coordinator> {
        Rc::new(Coordinator {
            config,
            groups: RefCell::new(HashMap::new()),
            waiters: RefCell::new(HashMap::new()),
            next_waiter: Cell::new(0),
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
        self.waiters.borrow_mut().insert(waiter, tx);
        (waiter, rx)
    }

    /// Runs `f` on the group (created empty if `create` and unknown), dispatching the replies it
    /// produces and waking the timer task.
    fn with_group<R>(
        &self,
        id: &str,
        create: bool,
        f: impl FnOnce(&mut Entry, Ms) -> (R, Vec<Reply>),
    ) -> Option<R> {
        let now = self.now();
        let (result, replies) = {
            let mut groups = self.groups.borrow_mut();
            if create && !groups.contains_key(id) {
                groups.insert(
                    id.to_string(),
                    Entry {
                        group: Group::new(id, self.config),
                        offsets: BTreeMap::new(),
                    },
                );
            }
            let entry = groups.get_mut(id)?;
            f(entry, now)
        };
        self.dispatch(replies);
        self.deadlines_changed.notify(usize::MAX);
        Some(result)
    }

    pub async fn serve(&self, group_id: &str, call: GroupCall) -> GroupAnswer {
        match call {
            GroupCall::Join(mut req) => {
                let (waiter, rx) = self.park();
                req.waiter = waiter;
                self.with_group(group_id, true, |e, now| ((), e.group.join(req, now)));
                match rx.await {
                    Ok(Reply::Join(_, r)) => GroupAnswer::Join(r),
                    _ => GroupAnswer::Code(state::COORDINATOR_NOT_AVAILABLE),
                }
            }
            GroupCall::Sync(req) => {
                let (waiter, rx) = self.park();
                let known = self.with_group(group_id, false, |e, now| {
                    ((), e.group.sync(waiter, req, now))
                });
                if known.is_none() {
                    self.waiters.borrow_mut().remove(&waiter);
                    return GroupAnswer::Code(state::UNKNOWN_MEMBER_ID);
                }
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
                self.with_group(group_id, false, |e, now| {
                    let code =
                        e.group
                            .heartbeat(&member_id, instance_id.as_deref(), generation, now);
                    (code, Vec::new())
                })
                .unwrap_or(state::UNKNOWN_MEMBER_ID),
            ),
            GroupCall::Leave(members) => {
                let n = members.len();
                self.with_group(group_id, false, |e, now| {
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
                self.with_group(group_id, true, |e, _| {
                    let code = e
                        .group
                        .check_commit(&member_id, instance_id.as_deref(), generation);
                    if code != state::NONE {
                        return (GroupAnswer::Codes(code, vec![code; n]), Vec::new());
                    }
                    let ts = now_wall_ms();
                    for (topic, partition, offset, leader_epoch, metadata) in offsets {
                        e.offsets.insert(
                            (topic, partition),
                            OffsetValue {
                                offset,
                                leader_epoch,
                                metadata,
                                commit_timestamp: ts,
                            },
                        );
                    }
                    (
                        GroupAnswer::Codes(state::NONE, vec![state::NONE; n]),
                        Vec::new(),
                    )
                })
                .unwrap_or_else(|| GroupAnswer::Codes(state::NONE, Vec::new()))
            }
            GroupCall::FetchOffsets(wanted) => {
                let groups = self.groups.borrow();
                let stored = groups.get(group_id).map(|e| &e.offsets);
                let found = match wanted {
                    Some(parts) => parts
                        .into_iter()
                        .map(|(t, p)| {
                            let v = stored.and_then(|s| s.get(&(t.clone(), p)).cloned());
                            (t, p, v)
                        })
                        .collect(),
                    None => stored
                        .into_iter()
                        .flatten()
                        .map(|((t, p), v)| (t.clone(), *p, Some(v.clone())))
                        .collect(),
                };
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
                let protocol = g.protocol().unwrap_or_default().to_string();
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
                            .find(|(n, _)| *n == protocol)
                            .map(|(_, b)| b.clone())
                            .unwrap_or_default(),
                        assignment: m.assignment.clone(),
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
                let mut groups = self.groups.borrow_mut();
                let code = match groups.get(group_id).map(|e| e.group.state()) {
                    None | Some(State::Dead) => GROUP_ID_NOT_FOUND,
                    Some(State::Empty) => {
                        groups.remove(group_id);
                        state::NONE
                    }
                    Some(_) => NON_EMPTY_GROUP,
                };
                GroupAnswer::Code(code)
            }
            GroupCall::DeleteOffsets(parts) => {
                let mut groups = self.groups.borrow_mut();
                let Some(e) = groups.get_mut(group_id) else {
                    return GroupAnswer::Codes(GROUP_ID_NOT_FOUND, Vec::new());
                };
                // Offsets of partitions the group still consumes stay (Kafka checks the
                // subscription; a group with members keeps all of them here).
                let busy = e.group.state() != State::Empty;
                let codes = parts
                    .into_iter()
                    .map(|k| {
                        if busy {
                            GROUP_SUBSCRIBED_TO_TOPIC
                        } else {
                            e.offsets.remove(&k);
                            state::NONE
                        }
                    })
                    .collect();
                GroupAnswer::Codes(state::NONE, codes)
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

pub const GROUP_ID_NOT_FOUND: i16 = 69;
pub const NON_EMPTY_GROUP: i16 = 68;
pub const GROUP_SUBSCRIBED_TO_TOPIC: i16 = 86;
