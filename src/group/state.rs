//! The classic consumer-group rebalance protocol as a state machine with no I/O: its inputs are
//! requests (JoinGroup, SyncGroup, Heartbeat, LeaveGroup) and clock ticks, its outputs are the
//! answers — some at once, some later (a JoinGroup waits for the rebalance to complete, a
//! follower's SyncGroup for the leader's assignment). A waiting request is named by a
//! [`Waiter`] token the caller chooses; its answer comes back as a [`Reply`] from whichever
//! later input completes it. Time is milliseconds on a clock the caller supplies, so tests
//! drive it with a simulated one.
//!
//! States, as Kafka's GroupCoordinator has them:
//! - `Empty`: no members (offsets may still be committed by a "simple" consumer);
//! - `PreparingRebalance`: waiting for every member to (re)join, for at most the rebalance
//!   timeout (an empty group first waits `group.initial.rebalance.delay.ms`, extended while
//!   new members keep coming, up to the rebalance timeout);
//! - `CompletingRebalance`: joined; waiting for the leader's SyncGroup with the assignment;
//! - `Stable`: assignment handed out; members heartbeat;
//! - `Dead`: removed (DeleteGroups); every request is refused.
//!
//! Invariants: a member is in `members` or in `pending` (the MEMBER_ID_REQUIRED round trip),
//! never both; a static member's instance id maps to exactly one member id; the leader, if
//! any, is a member; a Join/Sync waiter is answered exactly once.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use bytes::Bytes;

/// Milliseconds on the caller's monotonic clock.
pub type Ms = u64;
/// Names a request waiting for its answer (chosen by the caller).
pub type Waiter = u64;

pub const NONE: i16 = 0;
pub const COORDINATOR_NOT_AVAILABLE: i16 = 15;
pub const ILLEGAL_GENERATION: i16 = 22;
pub const INCONSISTENT_GROUP_PROTOCOL: i16 = 23;
pub const UNKNOWN_MEMBER_ID: i16 = 25;
pub const INVALID_SESSION_TIMEOUT: i16 = 26;
pub const REBALANCE_IN_PROGRESS: i16 = 27;
pub const MEMBER_ID_REQUIRED: i16 = 79;
pub const FENCED_INSTANCE_ID: i16 = 82;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

impl State {
    /// The name Kafka reports (DescribeGroups, ListGroups).
    pub fn name(self) -> &'static str {
        match self {
            State::Empty => "Empty",
            State::PreparingRebalance => "PreparingRebalance",
            State::CompletingRebalance => "CompletingRebalance",
            State::Stable => "Stable",
            State::Dead => "Dead",
        }
    }
}

/// Broker settings that shape a group.
#[derive(Clone, Copy, Debug)]
pub struct GroupConfig {
    /// `group.initial.rebalance.delay.ms` (Kafka's default 3000).
    pub initial_rebalance_delay_ms: Ms,
    /// `group.min.session.timeout.ms` (6000) and `group.max.session.timeout.ms` (1800000).
    pub min_session_timeout_ms: Ms,
    pub max_session_timeout_ms: Ms,
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
            initial_rebalance_delay_ms: 3000,
            min_session_timeout_ms: 6000,
            max_session_timeout_ms: 1_800_000,
        }
    }
}

#[derive(Clone, Debug)]
pub struct JoinRequest {
    pub waiter: Waiter,
    /// Empty for a member that has none yet.
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: Ms,
    pub rebalance_timeout_ms: Ms,
    pub protocol_type: String,
    /// (name, metadata) in the member's order of preference.
    pub protocols: Vec<(String, Bytes)>,
    /// JoinGroup v4+: a new member first gets its id back with MEMBER_ID_REQUIRED.
    pub require_known_member_id: bool,
    /// JoinGroup v9+: a static leader rejoining may be told to keep its assignment.
    pub supports_skip_assignment: bool,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct JoinResponse {
    pub error: i16,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: String,
    pub member_id: String,
    /// For the leader only: (member id, instance id, metadata for the chosen protocol).
    pub members: Vec<(String, Option<String>, Bytes)>,
    /// A static leader that rejoined without change keeps the assignment it made (v9+).
    pub skip_assignment: bool,
}

/// A JoinGroup answer carrying only an error.
fn join_failure(member_id: &str, error: i16) -> JoinResponse {
    JoinResponse {
        error,
        generation: -1,
        member_id: member_id.to_string(),
        ..Default::default()
    }
}

fn sync_failure(error: i16) -> SyncResponse {
    SyncResponse {
        error,
        ..Default::default()
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct SyncResponse {
    pub error: i16,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignment: Bytes,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Reply {
    Join(Waiter, JoinResponse),
    Sync(Waiter, SyncResponse),
}

#[derive(Clone, Debug)]
pub struct Member {
    pub id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: Ms,
    pub rebalance_timeout_ms: Ms,
    pub protocols: Vec<(String, Bytes)>,
    pub assignment: Bytes,
    awaiting_join: Option<Waiter>,
    awaiting_sync: Option<Waiter>,
    last_heard: Ms,
}

impl Member {
    fn metadata(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(n, _)| n == protocol)
            .map(|(_, m)| m.clone())
            .unwrap_or_default()
    }
}

/// What a SyncGroup asks, beyond its waiter.
#[derive(Clone, Debug)]
pub struct SyncRequest {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    /// The leader's assignment: (member id, assignment).
    pub assignments: Vec<(String, Bytes)>,
}

/// The timer an in-progress join runs against.
#[derive(Clone, Copy, Debug)]
enum JoinTimer {
    /// An empty group's first join: completes at `at` unless members kept arriving (then it
    /// extends by the delay while `budget` lasts).
    Initial { at: Ms, budget: Ms, arrived: bool },
    /// Completes once every member rejoined, or at `at` without the missing ones.
    Rebalance { at: Ms },
}

pub struct Group {
    pub id: String,
    config: GroupConfig,
    state: State,
    generation: i32,
    protocol_type: Option<String>,
    protocol: Option<String>,
    leader: Option<String>,
    members: BTreeMap<String, Member>,
    /// Members given an id with MEMBER_ID_REQUIRED, expected back by the deadline.
    pending: BTreeMap<String, Ms>,
    statics: HashMap<String, String>,
    join_timer: Option<JoinTimer>,
    /// After a join completes: members that must SyncGroup by the deadline.
    pending_sync: BTreeSet<String>,
    sync_deadline: Option<Ms>,
}

impl Group {
    pub fn new(id: &str, config: GroupConfig) -> Group {
        Group {
            id: id.to_string(),
            config,
            state: State::Empty,
            generation: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: BTreeMap::new(),
            pending: BTreeMap::new(),
            statics: HashMap::new(),
            join_timer: None,
            pending_sync: BTreeSet::new(),
            sync_deadline: None,
        }
    }

    /// A group as its last metadata record left it (a broker restart): Stable with its members
    /// and their assignments, each expected to heartbeat within its session timeout from
    /// `now`; or Empty at its generation.
    pub fn restore(
        id: &str,
        config: GroupConfig,
        stored: &super::records::GroupValue,
        now: Ms,
    ) -> Group {
        let mut group = Group::new(id, config);
        group.generation = stored.generation;
        group.protocol_type = Some(stored.protocol_type.clone());
        group.protocol = stored.protocol.clone();
        group.leader = stored.leader.clone();
        let protocol = stored.protocol.clone().unwrap_or_default();
        for m in &stored.members {
            if let Some(instance) = &m.instance_id {
                group.statics.insert(instance.clone(), m.member_id.clone());
            }
            let member = Member {
                id: m.member_id.clone(),
                instance_id: m.instance_id.clone(),
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                session_timeout_ms: m.session_timeout_ms.max(0) as Ms,
                rebalance_timeout_ms: m.rebalance_timeout_ms.max(0) as Ms,
                protocols: vec![(protocol.clone(), m.subscription.clone())],
                assignment: m.assignment.clone(),
                awaiting_join: None,
                awaiting_sync: None,
                last_heard: now,
            };
            group.members.insert(m.member_id.clone(), member);
        }
        group.state = if group.members.is_empty() {
            State::Empty
        } else {
            State::Stable
        };
        group
    }

    pub fn state(&self) -> State {
        self.state
    }

    pub fn generation(&self) -> i32 {
        self.generation
    }

    pub fn protocol_type(&self) -> Option<&str> {
        self.protocol_type.as_deref()
    }

    pub fn protocol(&self) -> Option<&str> {
        self.protocol.as_deref()
    }

    pub fn leader(&self) -> Option<&str> {
        self.leader.as_deref()
    }

    pub fn members(&self) -> impl Iterator<Item = &Member> {
        self.members.values()
    }

    /// Marks the group deleted (DeleteGroups on an empty group).
    pub fn mark_dead(&mut self) {
        self.state = State::Dead;
    }

    /// Undoes `mark_dead` when the delete could not be recorded.
    pub fn revive(&mut self) {
        if self.state == State::Dead {
            self.state = State::Empty;
        }
    }

    /// The earliest time `tick` has something to do.
    pub fn next_deadline(&self) -> Option<Ms> {
        let join = self.join_timer.map(|t| match t {
            JoinTimer::Initial { at, .. } | JoinTimer::Rebalance { at } => at,
        });
        let sessions = self
            .members
            .values()
            .filter(|m| m.awaiting_join.is_none() && m.awaiting_sync.is_none())
            .map(|m| m.last_heard + m.session_timeout_ms);
        let pending = self.pending.values().copied();
        join.into_iter()
            .chain(sessions)
            .chain(pending)
            .chain(self.sync_deadline)
            .min()
    }

    /// Checks a request's member against the group: NONE, UNKNOWN_MEMBER_ID or
    /// FENCED_INSTANCE_ID (a static member's old id).
    fn check_member(&self, member_id: &str, instance_id: Option<&str>) -> i16 {
        if let Some(instance) = instance_id {
            match self.statics.get(instance) {
                Some(current) if current != member_id => return FENCED_INSTANCE_ID,
                None => return UNKNOWN_MEMBER_ID,
                _ => {}
            }
        }
        if self.members.contains_key(member_id) {
            NONE
        } else {
            UNKNOWN_MEMBER_ID
        }
    }

    fn join_error(req: &JoinRequest, error: i16) -> Reply {
        Reply::Join(req.waiter, join_failure(&req.member_id, error))
    }

    /// Protocols every member (and the joiner) supports.
    fn supports(&self, protocol_type: &str, protocols: &[(String, Bytes)]) -> bool {
        if protocol_type.is_empty() || protocols.is_empty() {
            return false;
        }
        if self.members.is_empty() {
            return true;
        }
        self.protocol_type.as_deref() == Some(protocol_type)
            && protocols.iter().any(|(p, _)| {
                self.members
                    .values()
                    .all(|m| m.protocols.iter().any(|(q, _)| q == p))
            })
    }

    pub fn join(&mut self, req: JoinRequest, now: Ms) -> Vec<Reply> {
        if self.state == State::Dead {
            return vec![Self::join_error(&req, COORDINATOR_NOT_AVAILABLE)];
        }
        if req.session_timeout_ms < self.config.min_session_timeout_ms
            || req.session_timeout_ms > self.config.max_session_timeout_ms
        {
            return vec![Self::join_error(&req, INVALID_SESSION_TIMEOUT)];
        }
        if !self.supports(&req.protocol_type, &req.protocols) {
            return vec![Self::join_error(&req, INCONSISTENT_GROUP_PROTOCOL)];
        }
        if req.member_id.is_empty() {
            let new_id = format!("{}-{}", req.client_id, uuid::Uuid::new_v4());
            if let Some(instance) = req.instance_id.clone() {
                return self.static_join(req, instance, new_id, now);
            }
            if req.require_known_member_id {
                self.pending
                    .insert(new_id.clone(), now + req.session_timeout_ms);
                return vec![Reply::Join(
                    req.waiter,
                    JoinResponse {
                        error: MEMBER_ID_REQUIRED,
                        generation: -1,
                        member_id: new_id,
                        ..Default::default()
                    },
                )];
            }
            return self.add_member_and_rebalance(req, new_id, now);
        }
        if self.pending.remove(&req.member_id).is_some() {
            let id = req.member_id.clone();
            return self.add_member_and_rebalance(req, id, now);
        }
        let error = self.check_member(&req.member_id, req.instance_id.as_deref());
        if error != NONE {
            return vec![Self::join_error(&req, error)];
        }
        let unchanged = self.members[&req.member_id].protocols == req.protocols;
        match self.state {
            State::PreparingRebalance => self.update_member_and_rebalance(req, now),
            State::CompletingRebalance if unchanged => {
                let id = req.member_id.clone();
                vec![Reply::Join(req.waiter, self.join_response(&id, NONE))]
            }
            State::Stable if unchanged && self.leader.as_deref() != Some(&req.member_id) => {
                let mut r = self.join_response(&req.member_id, NONE);
                r.members.clear();
                vec![Reply::Join(req.waiter, r)]
            }
            State::CompletingRebalance | State::Stable => {
                self.update_member_and_rebalance(req, now)
            }
            State::Empty | State::Dead => vec![Self::join_error(&req, UNKNOWN_MEMBER_ID)],
        }
    }

    /// KIP-345: a static member (re)joining with no member id. A known instance gets a fresh
    /// member id that fences the old one; in a stable group with unchanged protocols it keeps
    /// its assignment and no rebalance happens.
    fn static_join(
        &mut self,
        req: JoinRequest,
        instance: String,
        new_id: String,
        now: Ms,
    ) -> Vec<Reply> {
        let Some(old_id) = self.statics.get(&instance).cloned() else {
            self.statics.insert(instance, new_id.clone());
            return self.add_member_and_rebalance(req, new_id, now);
        };
        let mut replies = Vec::new();
        let Some(mut member) = self.members.remove(&old_id) else {
            self.statics.insert(instance, new_id.clone());
            return self.add_member_and_rebalance(req, new_id, now);
        };
        // The old incarnation's waiting requests are fenced.
        if let Some(w) = member.awaiting_join.take() {
            replies.push(Reply::Join(w, join_failure(&old_id, FENCED_INSTANCE_ID)));
        }
        if let Some(w) = member.awaiting_sync.take() {
            replies.push(Reply::Sync(w, sync_failure(FENCED_INSTANCE_ID)));
        }
        member.id = new_id.clone();
        member.last_heard = now;
        self.members.insert(new_id.clone(), member);
        self.statics.insert(instance, new_id.clone());
        if self.pending_sync.remove(&old_id) {
            self.pending_sync.insert(new_id.clone());
        }
        let was_leader = self.leader.as_deref() == Some(&old_id);
        if was_leader {
            self.leader = Some(new_id.clone());
        }
        // Kafka rebalances only if the rejoin changes the protocol the group would choose (the
        // metadata itself, which carries owned partitions, differs after any restart).
        if let Some(m) = self.members.get_mut(&new_id) {
            m.protocols = req.protocols.clone();
            m.session_timeout_ms = req.session_timeout_ms;
            m.rebalance_timeout_ms = req.rebalance_timeout_ms;
        }
        let unchanged = self.select_protocol() == self.protocol;
        match self.state {
            State::Stable if unchanged => {
                let mut r = self.join_response(&new_id, NONE);
                if was_leader && req.supports_skip_assignment {
                    // v9+: the leader gets the members but keeps the assignment it made.
                    r.skip_assignment = true;
                } else if was_leader {
                    // Before v9 the client would run its assignor again: it is told the
                    // previous leader id and so acts as a follower.
                    r.leader = old_id;
                    r.members.clear();
                }
                replies.push(Reply::Join(req.waiter, r));
                replies
            }
            _ => {
                let req = JoinRequest {
                    member_id: new_id,
                    ..req
                };
                replies.extend(self.update_member_and_rebalance(req, now));
                replies
            }
        }
    }

    fn join_response(&self, member_id: &str, error: i16) -> JoinResponse {
        let leader = self.leader.clone().unwrap_or_default();
        let protocol = self.protocol.clone().unwrap_or_default();
        let members = if leader == member_id {
            self.members
                .values()
                .map(|m| (m.id.clone(), m.instance_id.clone(), m.metadata(&protocol)))
                .collect()
        } else {
            Vec::new()
        };
        JoinResponse {
            error,
            generation: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol.clone(),
            leader,
            member_id: member_id.to_string(),
            members,
            skip_assignment: false,
        }
    }

    fn add_member_and_rebalance(&mut self, req: JoinRequest, id: String, now: Ms) -> Vec<Reply> {
        let member = Member {
            id: id.clone(),
            instance_id: req.instance_id.clone(),
            client_id: req.client_id.clone(),
            client_host: req.client_host.clone(),
            session_timeout_ms: req.session_timeout_ms,
            rebalance_timeout_ms: req.rebalance_timeout_ms,
            protocols: req.protocols.clone(),
            assignment: Bytes::new(),
            awaiting_join: Some(req.waiter),
            awaiting_sync: None,
            last_heard: now,
        };
        if self.members.is_empty() {
            self.protocol_type = Some(req.protocol_type.clone());
        }
        if self.leader.is_none() {
            self.leader = Some(id.clone());
        }
        self.members.insert(id, member);
        if let Some(JoinTimer::Initial { arrived, .. }) = &mut self.join_timer {
            *arrived = true;
        }
        let mut replies = self.prepare_rebalance(now);
        replies.extend(self.try_complete_join(now));
        replies
    }

    fn update_member_and_rebalance(&mut self, req: JoinRequest, now: Ms) -> Vec<Reply> {
        let mut replies = Vec::new();
        if let Some(m) = self.members.get_mut(&req.member_id) {
            if let Some(old) = m.awaiting_join.replace(req.waiter) {
                // A second join from the same member replaces the first.
                replies.push(Reply::Join(
                    old,
                    join_failure(&req.member_id, REBALANCE_IN_PROGRESS),
                ));
            }
            m.protocols = req.protocols;
            m.session_timeout_ms = req.session_timeout_ms;
            m.rebalance_timeout_ms = req.rebalance_timeout_ms;
            m.client_id = req.client_id;
            m.client_host = req.client_host;
            m.last_heard = now;
        }
        replies.extend(self.prepare_rebalance(now));
        replies.extend(self.try_complete_join(now));
        replies
    }

    /// Moves to PreparingRebalance (if not there already), failing pending syncs.
    fn prepare_rebalance(&mut self, now: Ms) -> Vec<Reply> {
        let mut replies = Vec::new();
        match self.state {
            State::PreparingRebalance | State::Dead => return replies,
            State::CompletingRebalance => {
                for m in self.members.values_mut() {
                    if let Some(w) = m.awaiting_sync.take() {
                        replies.push(Reply::Sync(w, sync_failure(REBALANCE_IN_PROGRESS)));
                    }
                }
            }
            _ => {}
        }
        self.pending_sync.clear();
        self.sync_deadline = None;
        let rebalance_timeout = self.rebalance_timeout();
        self.join_timer = Some(if self.state == State::Empty {
            let delay = self.config.initial_rebalance_delay_ms;
            JoinTimer::Initial {
                at: now + delay,
                budget: rebalance_timeout.saturating_sub(delay),
                arrived: false,
            }
        } else {
            JoinTimer::Rebalance {
                at: now + rebalance_timeout,
            }
        });
        self.state = State::PreparingRebalance;
        replies
    }

    fn rebalance_timeout(&self) -> Ms {
        self.members
            .values()
            .map(|m| m.rebalance_timeout_ms)
            .max()
            .unwrap_or(0)
    }

    /// Completes the join if every member has rejoined and nothing is pending (a normal
    /// rebalance; the initial delay only completes on its timer).
    fn try_complete_join(&mut self, now: Ms) -> Vec<Reply> {
        let all_joined =
            self.members.values().all(|m| m.awaiting_join.is_some()) && self.pending.is_empty();
        match self.join_timer {
            Some(JoinTimer::Rebalance { .. }) if all_joined => self.complete_join(now),
            _ => Vec::new(),
        }
    }

    /// Ends PreparingRebalance: members that did not rejoin are dropped (static ones are kept
    /// until their session expires), the next generation starts, every joined member gets its
    /// answer, and the leader gets the member list.
    fn complete_join(&mut self, now: Ms) -> Vec<Reply> {
        let gone: Vec<String> = self
            .members
            .values()
            .filter(|m| m.awaiting_join.is_none() && m.instance_id.is_none())
            .map(|m| m.id.clone())
            .collect();
        for id in gone {
            self.remove_member(&id);
        }
        if !self.members.is_empty() && self.members.values().all(|m| m.awaiting_join.is_none()) {
            // Only static members that have not rejoined: wait for them another rebalance
            // timeout rather than start a generation nobody joined.
            self.join_timer = Some(JoinTimer::Rebalance {
                at: now + self.rebalance_timeout(),
            });
            return Vec::new();
        }
        self.join_timer = None;
        self.generation += 1;
        if self.members.is_empty() {
            self.state = State::Empty;
            self.protocol = None;
            self.leader = None;
            return Vec::new();
        }
        self.protocol = self.select_protocol();
        self.state = State::CompletingRebalance;
        // The leader must be a member that rejoined: it computes the assignment.
        let rejoined = |id: &String| {
            self.members
                .get(id)
                .is_some_and(|m| m.awaiting_join.is_some())
        };
        if !self.leader.as_ref().is_some_and(rejoined) {
            self.leader = self.members.keys().find(|id| rejoined(id)).cloned();
        }
        let mut replies = Vec::new();
        let ids: Vec<String> = self.members.keys().cloned().collect();
        for id in &ids {
            let waiter = self
                .members
                .get_mut(id)
                .and_then(|m| m.awaiting_join.take());
            if let Some(w) = waiter {
                replies.push(Reply::Join(w, self.join_response(id, NONE)));
            }
            if let Some(m) = self.members.get_mut(id) {
                m.last_heard = now;
            }
        }
        self.pending_sync = ids.into_iter().collect();
        self.sync_deadline = Some(now + self.rebalance_timeout());
        replies
    }

    /// The protocol every member supports that most members prefer (each votes for its
    /// first supported choice); ties go to the leader's preference order.
    fn select_protocol(&self) -> Option<String> {
        let first = self.members.values().next()?;
        let candidates: Vec<&String> = first
            .protocols
            .iter()
            .map(|(p, _)| p)
            .filter(|p| {
                self.members
                    .values()
                    .all(|m| m.protocols.iter().any(|(q, _)| q == *p))
            })
            .collect();
        let mut votes: HashMap<&String, usize> = HashMap::new();
        for m in self.members.values() {
            if let Some((p, _)) = m.protocols.iter().find(|(p, _)| candidates.contains(&p)) {
                *votes.entry(p).or_default() += 1;
            }
        }
        let leader = self
            .leader
            .as_ref()
            .and_then(|l| self.members.get(l))
            .unwrap_or(first);
        let order = |p: &String| {
            leader
                .protocols
                .iter()
                .position(|(q, _)| q == p)
                .unwrap_or(usize::MAX)
        };
        candidates
            .into_iter()
            .max_by(|a, b| {
                votes
                    .get(a)
                    .cmp(&votes.get(b))
                    .then(order(b).cmp(&order(a)))
            })
            .cloned()
    }

    fn remove_member(&mut self, id: &str) -> Option<Member> {
        let m = self.members.remove(id)?;
        if let Some(instance) = &m.instance_id {
            if self.statics.get(instance).is_some_and(|cur| cur == id) {
                self.statics.remove(instance);
            }
        }
        self.pending_sync.remove(id);
        if self.leader.as_deref() == Some(id) {
            self.leader = self.members.keys().next().cloned();
        }
        Some(m)
    }

    /// After members left or expired: rebalance, or finish a join they were holding up.
    fn members_changed(&mut self, now: Ms) -> Vec<Reply> {
        match self.state {
            State::Stable | State::CompletingRebalance => {
                if self.members.is_empty() {
                    let mut replies = self.prepare_rebalance(now);
                    replies.extend(self.complete_join(now));
                    replies
                } else {
                    let mut replies = self.prepare_rebalance(now);
                    replies.extend(self.try_complete_join(now));
                    replies
                }
            }
            State::PreparingRebalance => {
                if self.members.is_empty() {
                    self.complete_join(now)
                } else {
                    self.try_complete_join(now)
                }
            }
            State::Empty | State::Dead => Vec::new(),
        }
    }

    /// A pending member id went away: only a join waiting for it may now complete.
    fn pending_changed(&mut self, now: Ms) -> Vec<Reply> {
        if self.state == State::PreparingRebalance {
            self.try_complete_join(now)
        } else {
            Vec::new()
        }
    }

    pub fn sync(&mut self, waiter: Waiter, req: SyncRequest, now: Ms) -> Vec<Reply> {
        let error = |e| vec![Reply::Sync(waiter, sync_failure(e))];
        if self.state == State::Dead {
            return error(COORDINATOR_NOT_AVAILABLE);
        }
        let e = self.check_member(&req.member_id, req.instance_id.as_deref());
        if e != NONE {
            return error(e);
        }
        if req.generation != self.generation {
            return error(ILLEGAL_GENERATION);
        }
        let type_mismatch = req
            .protocol_type
            .as_ref()
            .is_some_and(|t| Some(t) != self.protocol_type.as_ref());
        let name_mismatch = req
            .protocol_name
            .as_ref()
            .is_some_and(|n| Some(n) != self.protocol.as_ref());
        if type_mismatch || name_mismatch {
            return error(INCONSISTENT_GROUP_PROTOCOL);
        }
        if let Some(m) = self.members.get_mut(&req.member_id) {
            m.last_heard = now;
        }
        match self.state {
            State::Empty | State::Dead => error(UNKNOWN_MEMBER_ID),
            State::PreparingRebalance => error(REBALANCE_IN_PROGRESS),
            State::Stable => {
                let assignment = self.members[&req.member_id].assignment.clone();
                vec![Reply::Sync(waiter, self.sync_response(assignment))]
            }
            State::CompletingRebalance => {
                self.pending_sync.remove(&req.member_id);
                let mut replies = Vec::new();
                if let Some(m) = self.members.get_mut(&req.member_id) {
                    if let Some(old) = m.awaiting_sync.replace(waiter) {
                        replies.push(Reply::Sync(old, sync_failure(REBALANCE_IN_PROGRESS)));
                    }
                }
                if self.leader.as_deref() == Some(&req.member_id) {
                    let given: HashMap<String, Bytes> = req.assignments.into_iter().collect();
                    for m in self.members.values_mut() {
                        m.assignment = given.get(&m.id).cloned().unwrap_or_default();
                    }
                    self.state = State::Stable;
                    self.pending_sync.clear();
                    self.sync_deadline = None;
                    let ids: Vec<String> = self.members.keys().cloned().collect();
                    for id in ids {
                        let Some(m) = self.members.get_mut(&id) else {
                            continue;
                        };
                        if let Some(w) = m.awaiting_sync.take() {
                            let assignment = m.assignment.clone();
                            replies.push(Reply::Sync(w, self.sync_response(assignment)));
                        }
                    }
                }
                replies
            }
        }
    }

    fn sync_response(&self, assignment: Bytes) -> SyncResponse {
        SyncResponse {
            error: NONE,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol.clone(),
            assignment,
        }
    }

    pub fn heartbeat(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        now: Ms,
    ) -> i16 {
        if self.state == State::Dead {
            return COORDINATOR_NOT_AVAILABLE;
        }
        let e = self.check_member(member_id, instance_id);
        if e != NONE {
            return e;
        }
        if generation != self.generation {
            return ILLEGAL_GENERATION;
        }
        if let Some(m) = self.members.get_mut(member_id) {
            m.last_heard = now;
        }
        match self.state {
            State::PreparingRebalance => REBALANCE_IN_PROGRESS,
            State::Empty => UNKNOWN_MEMBER_ID,
            _ => NONE,
        }
    }

    /// LeaveGroup for each (member id, instance id); one error per member.
    pub fn leave(
        &mut self,
        leaving: &[(String, Option<String>)],
        now: Ms,
    ) -> (Vec<i16>, Vec<Reply>) {
        let mut errors = Vec::new();
        let mut replies = Vec::new();
        let mut changed = false;
        let mut pending_changed = false;
        for (member_id, instance_id) in leaving {
            if self.state == State::Dead {
                errors.push(COORDINATOR_NOT_AVAILABLE);
                continue;
            }
            if instance_id.is_none() && self.pending.remove(member_id).is_some() {
                errors.push(NONE);
                pending_changed = true;
                continue;
            }
            // A static member may leave by instance id alone.
            let id = match instance_id {
                Some(i) => match self.statics.get(i) {
                    Some(cur) if member_id.is_empty() || cur == member_id => cur.clone(),
                    Some(_) => {
                        errors.push(FENCED_INSTANCE_ID);
                        continue;
                    }
                    None => {
                        errors.push(UNKNOWN_MEMBER_ID);
                        continue;
                    }
                },
                None => member_id.clone(),
            };
            match self.remove_member(&id) {
                Some(mut m) => {
                    if let Some(w) = m.awaiting_join.take() {
                        replies.push(Reply::Join(w, join_failure(&id, UNKNOWN_MEMBER_ID)));
                    }
                    if let Some(w) = m.awaiting_sync.take() {
                        replies.push(Reply::Sync(w, sync_failure(UNKNOWN_MEMBER_ID)));
                    }
                    errors.push(NONE);
                    changed = true;
                }
                None => errors.push(UNKNOWN_MEMBER_ID),
            }
        }
        if changed {
            replies.extend(self.members_changed(now));
        } else if pending_changed {
            replies.extend(self.pending_changed(now));
        }
        (errors, replies)
    }

    /// Advances timers to `now`: the initial delay, the rebalance timeout, members whose
    /// session expired, pending member ids never used, members that did not sync in time.
    pub fn tick(&mut self, now: Ms) -> Vec<Reply> {
        let mut replies = Vec::new();
        // Sessions: members not waiting on a join or sync that were not heard from in time.
        let expired: Vec<String> = self
            .members
            .values()
            .filter(|m| {
                m.awaiting_join.is_none()
                    && m.awaiting_sync.is_none()
                    && now >= m.last_heard + m.session_timeout_ms
            })
            .map(|m| m.id.clone())
            .collect();
        let pending_expired: Vec<String> = self
            .pending
            .iter()
            .filter(|(_, at)| now >= **at)
            .map(|(id, _)| id.clone())
            .collect();
        for id in &pending_expired {
            self.pending.remove(id);
        }
        let mut changed = false;
        for id in expired {
            if let Some(mut m) = self.remove_member(&id) {
                if let Some(w) = m.awaiting_sync.take() {
                    replies.push(Reply::Sync(w, sync_failure(UNKNOWN_MEMBER_ID)));
                }
                changed = true;
            }
        }
        // Members that did not send SyncGroup within the rebalance timeout.
        if self.state == State::CompletingRebalance && self.sync_deadline.is_some_and(|d| now >= d)
        {
            let late: Vec<String> = self.pending_sync.iter().cloned().collect();
            for id in late {
                if let Some(mut m) = self.remove_member(&id) {
                    if let Some(w) = m.awaiting_sync.take() {
                        replies.push(Reply::Sync(w, sync_failure(UNKNOWN_MEMBER_ID)));
                    }
                    changed = true;
                }
            }
            self.sync_deadline = None;
        }
        if changed {
            replies.extend(self.members_changed(now));
        } else if !pending_expired.is_empty() {
            replies.extend(self.pending_changed(now));
        }
        match self.join_timer {
            Some(JoinTimer::Initial {
                at,
                budget,
                arrived,
            }) if now >= at => {
                if arrived && budget > 0 {
                    let step = self.config.initial_rebalance_delay_ms.min(budget);
                    self.join_timer = Some(JoinTimer::Initial {
                        at: at + step,
                        budget: budget - step,
                        arrived: false,
                    });
                } else {
                    replies.extend(self.complete_join(now));
                }
            }
            Some(JoinTimer::Rebalance { at }) if now >= at => {
                replies.extend(self.complete_join(now))
            }
            _ => {}
        }
        replies
    }

    /// Whether an OffsetCommit from this member at this generation is accepted: NONE, or the
    /// error Kafka gives. A commit with a negative generation comes from a consumer outside
    /// any group membership and is accepted only while the group has no members.
    /// A TxnOffsetCommit's checks (Kafka's validateOffsetCommit for transactional commits):
    /// one without member or generation is accepted in any live state; otherwise the member
    /// and generation must match, with no rebalance check.
    pub fn check_txn_commit(
        &self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
    ) -> i16 {
        if self.state == State::Dead {
            return COORDINATOR_NOT_AVAILABLE;
        }
        if generation < 0
            && (self.state == State::Empty || (member_id.is_empty() && instance_id.is_none()))
        {
            return NONE;
        }
        let e = self.check_member(member_id, instance_id);
        if e != NONE {
            e
        } else if generation != self.generation {
            ILLEGAL_GENERATION
        } else {
            NONE
        }
    }

    pub fn check_commit(&self, member_id: &str, instance_id: Option<&str>, generation: i32) -> i16 {
        if self.state == State::Dead {
            return COORDINATOR_NOT_AVAILABLE;
        }
        if self.state == State::Empty {
            return if generation < 0 {
                NONE
            } else {
                UNKNOWN_MEMBER_ID
            };
        }
        let e = self.check_member(member_id, instance_id);
        if e != NONE {
            e
        } else if generation != self.generation {
            ILLEGAL_GENERATION
        } else if self.state == State::CompletingRebalance {
            // Between the join and the assignment nobody owns partitions yet.
            REBALANCE_IN_PROGRESS
        } else {
            // Members commit what they had before giving partitions up (Stable), or while the
            // rebalance gathers them (PreparingRebalance), at their generation.
            NONE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SESSION: Ms = 10_000;
    const REBALANCE: Ms = 30_000;
    const DELAY: Ms = 3_000;

    fn group() -> Group {
        Group::new(
            "g",
            GroupConfig {
                initial_rebalance_delay_ms: DELAY,
                ..GroupConfig::default()
            },
        )
    }

    fn join_req(waiter: Waiter, member_id: &str, protocols: &[&str]) -> JoinRequest {
        JoinRequest {
            waiter,
            member_id: member_id.to_string(),
            instance_id: None,
            client_id: "c".into(),
            client_host: "/127.0.0.1".into(),
            session_timeout_ms: SESSION,
            rebalance_timeout_ms: REBALANCE,
            protocol_type: "consumer".into(),
            protocols: protocols
                .iter()
                .map(|p| (p.to_string(), Bytes::from(format!("meta-{p}"))))
                .collect(),
            require_known_member_id: true,
            supports_skip_assignment: true,
        }
    }

    fn joined(replies: &[Reply], waiter: Waiter) -> JoinResponse {
        replies
            .iter()
            .find_map(|r| match r {
                Reply::Join(w, j) if *w == waiter => Some(j.clone()),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no join answer for {waiter} in {replies:?}"))
    }

    fn synced(replies: &[Reply], waiter: Waiter) -> SyncResponse {
        replies
            .iter()
            .find_map(|r| match r {
                Reply::Sync(w, s) if *w == waiter => Some(s.clone()),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no sync answer for {waiter} in {replies:?}"))
    }

    /// The MEMBER_ID_REQUIRED round trip: the member id to rejoin with.
    fn member_id(g: &mut Group, waiter: Waiter, now: Ms) -> String {
        let r = g.join(join_req(waiter, "", &["range"]), now);
        let j = joined(&r, waiter);
        assert_eq!(j.error, MEMBER_ID_REQUIRED);
        assert!(j.member_id.starts_with("c-"));
        j.member_id
    }

    fn sync_req(member: &str, generation: i32, assignments: Vec<(String, Bytes)>) -> SyncRequest {
        SyncRequest {
            member_id: member.to_string(),
            instance_id: None,
            generation,
            protocol_type: Some("consumer".into()),
            protocol_name: Some("range".into()),
            assignments,
        }
    }

    /// A stable group with the given members (joined in order, the first leads).
    fn stable(n: usize) -> (Group, Vec<String>, Ms) {
        let mut g = group();
        let mut now = 0;
        let ids: Vec<String> = (0..n)
            .map(|i| member_id(&mut g, 100 + i as u64, now))
            .collect();
        for (i, id) in ids.iter().enumerate() {
            assert!(g.join(join_req(i as u64, id, &["range"]), now).is_empty());
        }
        assert_eq!(g.state(), State::PreparingRebalance);
        // Members that arrived during the initial delay extend it once.
        now += DELAY;
        let mut r = g.tick(now);
        if r.is_empty() && n > 1 {
            now += DELAY;
            r = g.tick(now);
        }
        assert_eq!(r.len(), n);
        assert_eq!(g.state(), State::CompletingRebalance);
        let leader = g.leader().unwrap().to_string();
        let assignments = ids
            .iter()
            .map(|id| (id.clone(), Bytes::from(format!("a-{id}"))))
            .collect();
        for id in ids.iter().filter(|id| **id != leader) {
            assert!(g.sync(7, sync_req(id, 1, vec![]), now).is_empty());
        }
        let r = g.sync(8, sync_req(&leader, 1, assignments), now);
        assert_eq!(r.len(), n);
        assert_eq!(g.state(), State::Stable);
        (g, ids, now)
    }

    #[test]
    fn a_lone_member_is_assigned_after_the_initial_delay() {
        let mut g = group();
        assert_eq!(g.state(), State::Empty);
        let id = member_id(&mut g, 1, 0);
        assert!(g.join(join_req(2, &id, &["range"]), 0).is_empty());
        assert_eq!(g.state(), State::PreparingRebalance);
        assert_eq!(g.next_deadline(), Some(DELAY));
        assert!(g.tick(DELAY - 1).is_empty());
        let r = g.tick(DELAY);
        let j = joined(&r, 2);
        assert_eq!(
            (j.error, j.generation, j.leader.as_str()),
            (NONE, 1, id.as_str())
        );
        assert_eq!(j.protocol_name.as_deref(), Some("range"));
        assert_eq!(j.members.len(), 1, "the leader gets the member list");
        assert_eq!(g.state(), State::CompletingRebalance);
        let r = g.sync(
            3,
            sync_req(&id, 1, vec![(id.clone(), Bytes::from_static(b"p0"))]),
            DELAY,
        );
        assert_eq!(synced(&r, 3).assignment, Bytes::from_static(b"p0"));
        assert_eq!(g.state(), State::Stable);
    }

    #[test]
    fn members_arriving_during_the_delay_extend_it_within_the_rebalance_timeout() {
        let mut g = group();
        let a = member_id(&mut g, 1, 0);
        g.join(join_req(2, &a, &["range"]), 0);
        let b = member_id(&mut g, 3, 2_000);
        g.join(join_req(4, &b, &["range"]), 2_000);
        // A member arrived: the first deadline extends by another delay.
        assert!(g.tick(DELAY).is_empty());
        let r = g.tick(2 * DELAY);
        assert_eq!(joined(&r, 2).generation, 1);
        assert_eq!(joined(&r, 4).generation, 1);
        assert_eq!(joined(&r, 2).members.len() + joined(&r, 4).members.len(), 2);
    }

    #[test]
    fn a_new_member_triggers_a_rebalance_that_completes_when_all_rejoined() {
        let (mut g, ids, now) = stable(2);
        let c = member_id(&mut g, 50, now);
        assert!(g.join(join_req(51, &c, &["range"]), now).is_empty());
        assert_eq!(g.state(), State::PreparingRebalance);
        assert_eq!(g.heartbeat(&ids[0], None, 1, now), REBALANCE_IN_PROGRESS);
        assert!(g
            .join(join_req(52, &ids[0], &["range"]), now + 10)
            .is_empty());
        let r = g.join(join_req(53, &ids[1], &["range"]), now + 20);
        assert_eq!(r.len(), 3, "every waiting join is answered: {r:?}");
        assert!(r
            .iter()
            .all(|x| matches!(x, Reply::Join(_, j) if j.generation == 2 && j.error == NONE)));
        assert_eq!(g.state(), State::CompletingRebalance);
        assert_eq!(g.heartbeat(&ids[0], None, 2, now + 30), NONE);
    }

    #[test]
    fn members_that_do_not_rejoin_are_dropped_at_the_rebalance_timeout() {
        let (mut g, ids, now) = stable(3);
        g.join(join_req(60, &ids[1], &["range", "roundrobin"]), now);
        g.join(join_req(61, &ids[2], &["range", "roundrobin"]), now);
        assert_eq!(g.state(), State::PreparingRebalance);
        // ids[0] keeps heartbeating but never rejoins.
        let mut t = now;
        while t + 3_000 < now + REBALANCE {
            t += 3_000;
            assert_eq!(g.heartbeat(&ids[0], None, 1, t), REBALANCE_IN_PROGRESS);
            assert!(g.tick(t).is_empty());
        }
        let r = g.tick(now + REBALANCE);
        assert_eq!(r.len(), 2);
        assert_eq!(g.members().count(), 2);
        assert_eq!(g.generation(), 2);
        assert_eq!(
            g.heartbeat(&ids[0], None, 2, now + REBALANCE),
            UNKNOWN_MEMBER_ID
        );
    }

    #[test]
    fn session_timeout_evicts_a_silent_member_and_rebalances() {
        let (mut g, ids, now) = stable(2);
        for t in (now..=now + SESSION + 3_000).step_by(3_000) {
            assert_eq!(g.heartbeat(&ids[0], None, 1, t), NONE);
            g.tick(t);
        }
        assert_eq!(g.state(), State::PreparingRebalance, "ids[1] went silent");
        assert_eq!(g.members().count(), 1);
        let r = g.join(join_req(70, &ids[0], &["range"]), now + SESSION + 4_000);
        assert_eq!(joined(&r, 70).generation, 2);
        assert_eq!(joined(&r, 70).leader, ids[0]);
    }

    #[test]
    fn a_restored_group_is_stable_until_its_members_go_silent() {
        use crate::group::records::{GroupValue, MemberValue};
        let member = |id: &str, instance: Option<&str>| MemberValue {
            member_id: id.into(),
            instance_id: instance.map(str::to_string),
            client_id: "c".into(),
            client_host: "/127.0.0.1".into(),
            rebalance_timeout_ms: REBALANCE as i32,
            session_timeout_ms: SESSION as i32,
            subscription: Bytes::from_static(b"sub"),
            assignment: Bytes::from(format!("a-{id}")),
        };
        let stored = GroupValue {
            protocol_type: "consumer".into(),
            generation: 7,
            protocol: Some("range".into()),
            leader: Some("m1".into()),
            state_timestamp: 0,
            members: vec![member("m1", None), member("m2", Some("static-2"))],
        };
        let mut g = Group::restore("g", GroupConfig::default(), &stored, 1_000);
        assert_eq!(g.state(), State::Stable);
        assert_eq!(g.generation(), 7);
        assert_eq!(g.heartbeat("m1", None, 7, 2_000), NONE);
        assert_eq!(g.heartbeat("m1", None, 6, 2_000), ILLEGAL_GENERATION);
        assert_eq!(g.check_commit("m2", Some("static-2"), 7), NONE);
        // A static member rejoining with a new id keeps its assignment, no rebalance.
        let r = g.join(
            JoinRequest {
                instance_id: Some("static-2".into()),
                ..join_req(5, "", &["range"])
            },
            3_000,
        );
        assert_eq!(joined(&r, 5).error, NONE);
        assert_eq!(g.state(), State::Stable);
        // Nobody heartbeats: the session timeout empties the group.
        let mut t = 3_000;
        while g.state() != State::Empty {
            t += 1_000;
            g.tick(t);
            assert!(t < 3_000 + SESSION + REBALANCE + 10_000, "{:?}", g.state());
        }
        assert_eq!(g.generation(), 8);
        let empty = GroupValue {
            members: Vec::new(),
            ..stored
        };
        assert_eq!(
            Group::restore("g", GroupConfig::default(), &empty, 0).state(),
            State::Empty
        );
    }

    #[test]
    fn the_leader_leaving_mid_rebalance_hands_leadership_on() {
        let (mut g, ids, now) = stable(3);
        let leader = g.leader().unwrap().to_string();
        let others: Vec<&String> = ids.iter().filter(|i| **i != leader).collect();
        g.join(join_req(80, others[0], &["range", "roundrobin"]), now);
        g.join(join_req(81, others[1], &["range", "roundrobin"]), now);
        assert_eq!(g.state(), State::PreparingRebalance);
        // The leader leaves instead of rejoining: the join completes without it.
        let (errors, r) = g.leave(&[(leader.clone(), None)], now + 1);
        assert_eq!(errors, vec![NONE]);
        assert_eq!(r.len(), 2);
        let new_leader = g.leader().unwrap().to_string();
        assert_ne!(new_leader, leader);
        let lead = r.iter().find_map(|x| match x {
            Reply::Join(_, j) if j.member_id == new_leader => Some(j.clone()),
            _ => None,
        });
        assert_eq!(lead.unwrap().members.len(), 2);
        assert_eq!(g.state(), State::CompletingRebalance);
    }

    #[test]
    fn the_leader_leaving_before_sync_fails_waiting_followers() {
        let (mut g, ids, now) = stable(2);
        g.join(join_req(90, &ids[0], &["range", "roundrobin"]), now);
        g.join(join_req(91, &ids[1], &["range", "roundrobin"]), now);
        assert_eq!(g.state(), State::CompletingRebalance);
        let leader = g.leader().unwrap().to_string();
        let follower = ids.iter().find(|i| **i != leader).unwrap().clone();
        assert!(g.sync(92, sync_req(&follower, 2, vec![]), now).is_empty());
        let (_, r) = g.leave(&[(leader, None)], now + 1);
        assert_eq!(synced(&r, 92).error, REBALANCE_IN_PROGRESS);
        assert_eq!(g.state(), State::PreparingRebalance);
        let r = g.join(join_req(93, &follower, &["range"]), now + 2);
        assert_eq!(joined(&r, 93).leader, follower);
    }

    #[test]
    fn the_last_member_leaving_empties_the_group() {
        let (mut g, ids, now) = stable(1);
        let (errors, _) = g.leave(&[(ids[0].clone(), None), ("nobody".into(), None)], now);
        assert_eq!(errors, vec![NONE, UNKNOWN_MEMBER_ID]);
        assert_eq!(g.state(), State::Empty);
        assert_eq!(g.generation(), 2);
        assert_eq!(
            g.check_commit("", None, -1),
            NONE,
            "simple commits once empty"
        );
        assert_eq!(g.check_commit(&ids[0], None, 1), UNKNOWN_MEMBER_ID);
    }

    #[test]
    fn unused_member_ids_expire_and_unknown_ids_are_refused() {
        let mut g = group();
        let id = member_id(&mut g, 1, 0);
        assert_eq!(g.next_deadline(), Some(SESSION));
        g.tick(SESSION);
        let r = g.join(join_req(2, &id, &["range"]), SESSION + 1);
        assert_eq!(joined(&r, 2).error, UNKNOWN_MEMBER_ID);
    }

    #[test]
    fn protocols_must_be_shared_and_the_most_preferred_wins() {
        let (mut g, ids, now) = stable(1);
        let r = g.join(join_req(1, "", &["sticky"]), now);
        assert_eq!(joined(&r, 1).error, INCONSISTENT_GROUP_PROTOCOL);
        let mut other = join_req(2, "", &["range"]);
        other.protocol_type = "connect".into();
        assert_eq!(
            joined(&g.join(other, now), 2).error,
            INCONSISTENT_GROUP_PROTOCOL
        );
        // Two members prefer cooperative-sticky, one range: cooperative-sticky wins.
        let b = member_id(&mut g, 3, now);
        let c = member_id(&mut g, 4, now);
        g.join(join_req(5, &ids[0], &["range", "cooperative-sticky"]), now);
        g.join(join_req(6, &b, &["cooperative-sticky", "range"]), now);
        let r = g.join(join_req(7, &c, &["cooperative-sticky", "range"]), now);
        assert_eq!(
            joined(&r, 7).protocol_name.as_deref(),
            Some("cooperative-sticky")
        );
        let leader = joined(&r, 5);
        assert_eq!(
            leader
                .members
                .iter()
                .find(|m| m.0 == b)
                .map(|m| m.2.clone()),
            Some(Bytes::from_static(b"meta-cooperative-sticky"))
        );
    }

    #[test]
    fn sync_checks_member_generation_and_state() {
        let (mut g, ids, now) = stable(2);
        assert_eq!(
            synced(&g.sync(1, sync_req("x", 1, vec![]), now), 1).error,
            UNKNOWN_MEMBER_ID
        );
        assert_eq!(
            synced(&g.sync(2, sync_req(&ids[0], 7, vec![]), now), 2).error,
            ILLEGAL_GENERATION
        );
        let stable_answer = synced(&g.sync(3, sync_req(&ids[0], 1, vec![]), now), 3);
        assert_eq!(
            stable_answer.assignment,
            Bytes::from(format!("a-{}", ids[0]))
        );
        g.join(join_req(4, &ids[0], &["range", "roundrobin"]), now);
        assert_eq!(g.state(), State::PreparingRebalance);
        assert_eq!(
            synced(&g.sync(5, sync_req(&ids[1], 1, vec![]), now), 5).error,
            REBALANCE_IN_PROGRESS
        );
    }

    #[test]
    fn a_follower_rejoining_unchanged_in_stable_keeps_the_generation() {
        let (mut g, ids, now) = stable(2);
        let leader = g.leader().unwrap().to_string();
        let follower = ids.iter().find(|i| **i != leader).unwrap();
        let r = g.join(join_req(1, follower, &["range"]), now);
        assert_eq!((joined(&r, 1).error, joined(&r, 1).generation), (NONE, 1));
        assert_eq!(g.state(), State::Stable);
        // The leader rejoining forces a rebalance (it may want to reassign).
        assert!(g.join(join_req(2, &leader, &["range"]), now).is_empty());
        assert_eq!(g.state(), State::PreparingRebalance);
    }

    #[test]
    fn members_that_never_sync_are_removed_after_the_rebalance_timeout() {
        let (mut g, ids, now) = stable(2);
        g.join(join_req(1, &ids[0], &["range", "roundrobin"]), now);
        g.join(join_req(2, &ids[1], &["range", "roundrobin"]), now);
        assert_eq!(g.state(), State::CompletingRebalance);
        let leader = g.leader().unwrap().to_string();
        let follower = ids.iter().find(|i| **i != leader).unwrap().clone();
        assert!(g.sync(3, sync_req(&follower, 2, vec![]), now).is_empty());
        // The leader never sends its assignment.
        let r = g.tick(now + REBALANCE);
        assert_eq!(synced(&r, 3).error, REBALANCE_IN_PROGRESS);
        assert_eq!(g.members().count(), 1);
        assert_eq!(g.state(), State::PreparingRebalance);
    }

    #[test]
    fn static_members_rejoin_without_a_rebalance_and_fence_their_old_id() {
        let mut g = group();
        let mut req = join_req(1, "", &["range"]);
        req.instance_id = Some("host-1".into());
        let r = g.join(req.clone(), 0);
        assert!(r.is_empty(), "static members skip MEMBER_ID_REQUIRED");
        let r = g.tick(DELAY);
        let first = joined(&r, 1);
        assert_eq!(first.generation, 1);
        let old = first.member_id.clone();
        let mut s = sync_req(&old, 1, vec![(old.clone(), Bytes::from_static(b"p0"))]);
        s.instance_id = Some("host-1".into());
        g.sync(2, s, DELAY);
        assert_eq!(g.state(), State::Stable);
        // Restarted with the same instance id: same generation, no rebalance.
        let r = g.join(JoinRequest { waiter: 3, ..req }, DELAY + 100);
        let again = joined(&r, 3);
        assert_eq!((again.error, again.generation), (NONE, 1));
        assert_ne!(again.member_id, old);
        assert!(
            again.skip_assignment,
            "the leader keeps the assignment it made"
        );
        assert_eq!(g.state(), State::Stable);
        assert_eq!(
            g.heartbeat(&old, Some("host-1"), 1, DELAY + 200),
            FENCED_INSTANCE_ID
        );
        assert_eq!(
            g.heartbeat(&again.member_id, Some("host-1"), 1, DELAY + 200),
            NONE
        );
        assert_eq!(g.check_commit(&old, Some("host-1"), 1), FENCED_INSTANCE_ID);
        let mut s = sync_req(&again.member_id, 1, vec![]);
        s.instance_id = Some("host-1".into());
        assert_eq!(
            synced(&g.sync(4, s, DELAY + 300), 4).assignment,
            Bytes::from_static(b"p0")
        );
        // Leaving by instance id alone.
        let (errors, _) = g.leave(&[(String::new(), Some("host-1".into()))], DELAY + 400);
        assert_eq!(errors, vec![NONE]);
        assert_eq!(g.state(), State::Empty);
    }

    #[test]
    fn commits_follow_membership_and_generation() {
        let (mut g, ids, now) = stable(2);
        assert_eq!(g.check_commit(&ids[0], None, 1), NONE);
        assert_eq!(g.check_commit(&ids[0], None, 0), ILLEGAL_GENERATION);
        assert_eq!(g.check_commit("stranger", None, 1), UNKNOWN_MEMBER_ID);
        assert_eq!(g.check_commit("", None, -1), UNKNOWN_MEMBER_ID);
        g.join(join_req(1, &ids[0], &["range", "roundrobin"]), now);
        assert_eq!(
            g.check_commit(&ids[1], None, 1),
            NONE,
            "revoking members commit"
        );
        g.join(join_req(2, &ids[1], &["range", "roundrobin"]), now);
        assert_eq!(g.state(), State::CompletingRebalance);
        assert_eq!(g.check_commit(&ids[1], None, 2), REBALANCE_IN_PROGRESS);
    }

    #[test]
    fn session_timeouts_outside_the_broker_bounds_are_refused() {
        let mut g = group();
        let mut req = join_req(1, "", &["range"]);
        req.session_timeout_ms = 1_000;
        assert_eq!(joined(&g.join(req, 0), 1).error, INVALID_SESSION_TIMEOUT);
    }

    #[test]
    fn a_dead_group_refuses_everything() {
        let mut g = group();
        g.mark_dead();
        assert_eq!(
            joined(&g.join(join_req(1, "", &["range"]), 0), 1).error,
            COORDINATOR_NOT_AVAILABLE
        );
        assert_eq!(g.heartbeat("m", None, 1, 0), COORDINATOR_NOT_AVAILABLE);
        assert_eq!(g.check_commit("", None, -1), COORDINATOR_NOT_AVAILABLE);
    }

    #[test]
    fn an_unused_member_id_expiring_does_not_disturb_a_stable_group() {
        let (mut g, ids, now) = stable(2);
        let _unused = member_id(&mut g, 1, now);
        for t in (now..=now + SESSION + 3_000).step_by(3_000) {
            for id in &ids {
                assert_eq!(g.heartbeat(id, None, 1, t), NONE);
            }
            assert!(g.tick(t).is_empty());
        }
        assert_eq!((g.state(), g.generation()), (State::Stable, 1));
    }

    #[test]
    fn a_static_leader_that_does_not_rejoin_hands_leadership_to_one_that_did() {
        let mut g = group();
        let mut a = join_req(1, "", &["range"]);
        a.instance_id = Some("a".into());
        let mut b = join_req(2, "", &["range"]);
        b.instance_id = Some("b".into());
        g.join(a.clone(), 0);
        g.join(b.clone(), 0);
        assert!(
            g.tick(DELAY).is_empty(),
            "b arrived during the delay: it extends"
        );
        let r = g.tick(2 * DELAY);
        let leader = g.leader().unwrap().to_string();
        let (ja, jb) = (joined(&r, 1), joined(&r, 2));
        let follower = if ja.member_id == leader { jb } else { ja };
        // A third member joins; only the follower rejoins, the static leader stays silent.
        let c = member_id(&mut g, 3, 2 * DELAY);
        g.join(join_req(4, &c, &["range"]), 2 * DELAY);
        let mut rejoin = a.clone();
        rejoin.member_id = follower.member_id.clone();
        rejoin.instance_id = g
            .members()
            .find(|m| m.id == follower.member_id)
            .and_then(|m| m.instance_id.clone());
        rejoin.waiter = 5;
        g.join(rejoin, 2 * DELAY);
        // The old leader stays alive (heartbeats) but never rejoins.
        let leader_instance = g
            .members()
            .find(|m| m.id == leader)
            .and_then(|m| m.instance_id.clone());
        let mut t = 2 * DELAY;
        while t + 3_000 < 2 * DELAY + REBALANCE {
            t += 3_000;
            let hb = g.heartbeat(&leader, leader_instance.as_deref(), 1, t);
            assert_eq!(hb, REBALANCE_IN_PROGRESS);
            assert!(g.tick(t).is_empty());
        }
        let r = g.tick(2 * DELAY + REBALANCE);
        let new_leader = g.leader().unwrap().to_string();
        assert_ne!(new_leader, leader, "the silent static member may not lead");
        assert_eq!(g.members().count(), 3, "static members are kept");
        let lead = r
            .iter()
            .find_map(|x| match x {
                Reply::Join(_, j) if j.member_id == new_leader => Some(j.clone()),
                _ => None,
            })
            .expect("the new leader is answered");
        assert_eq!(lead.members.len(), 3);
    }
}
