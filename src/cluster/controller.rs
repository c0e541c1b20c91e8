//! The active controller's decisions, without I/O (KRaft's `QuorumController` logic): broker
//! registration, sessions and fencing, controlled shutdown, topic creation with placement, ISR
//! changes (AlterPartition), leader elections, producer id blocks.
//!
//! Every operation reads the current [`ClusterImage`] and returns a [`ControllerResult`]: the
//! records to append to the metadata log and the answer to give once they are committed. The
//! runtime must [`Controller::replay`] an operation's records before the next operation, so
//! each decision sees the ones before it; a controller that loses its leadership is rebuilt from
//! the committed records. Sessions (when each broker last heartbeated) are the one state kept
//! outside the records, as in Kafka: a new active controller starts every session afresh.
//!
//! Rules kept: leaders are elected from the ISR only, in replica order, among brokers that are
//! unfenced and not shutting down (unclean election, off by default, takes any such replica);
//! a partition's ISR never becomes empty (its last member stays, and the partition has no
//! leader while that broker is away); every change bumps the partition epoch, and a change of
//! leader the leader epoch.

use std::collections::BTreeMap;

use super::image::{
    BrokerRegistration, ClusterImage, Endpoint, MetadataRecord, PartitionState, TopicId, NO_LEADER,
};
use super::placement::{self, BrokerSlot, PlacementError};

/// Producer ids handed to a broker at a time (Kafka's block size).
pub const PRODUCER_ID_BLOCK: i64 = 1000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ControllerSettings {
    /// `broker.session.timeout.ms`
    pub session_timeout_ms: i64,
    /// `unclean.leader.election.enable`
    pub unclean_leader_election: bool,
}

impl Default for ControllerSettings {
    fn default() -> Self {
        Self {
            session_timeout_ms: 9_000,
            unclean_leader_election: false,
        }
    }
}

/// Records to commit, and the answer once they are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ControllerResult<T> {
    pub records: Vec<MetadataRecord>,
    pub response: T,
}

impl<T> ControllerResult<T> {
    fn new(records: Vec<MetadataRecord>, response: T) -> Self {
        Self { records, response }
    }
}

/// Why the controller refused; the Kafka edge picks the code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ControllerError {
    StaleBrokerEpoch,
    DuplicateBrokerRegistration,
    BrokerIdNotRegistered,
    UnknownTopicOrPartition,
    TopicAlreadyExists(String),
    InvalidTopic(String),
    InvalidPartitions(String),
    InvalidReplicationFactor(String),
    InvalidReplicaAssignment(String),
    NotLeaderOrFollower,
    FencedLeaderEpoch,
    InvalidUpdateVersion,
    InvalidRequest(String),
    IneligibleReplica(String),
    ElectionNotNeeded,
    PreferredLeaderNotAvailable,
    EligibleLeadersNotAvailable,
}

impl From<PlacementError> for ControllerError {
    fn from(e: PlacementError) -> Self {
        match e {
            PlacementError::InvalidPartitions(m) => ControllerError::InvalidPartitions(m),
            PlacementError::InvalidReplicationFactor(m) => {
                ControllerError::InvalidReplicationFactor(m)
            }
        }
    }
}

/// A broker's heartbeat.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Heartbeat {
    pub broker_id: i32,
    pub broker_epoch: i64,
    /// How many metadata records the broker has applied.
    pub metadata_applied: u64,
    pub want_shutdown: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeartbeatReply {
    pub fenced: bool,
    /// The broker has caught up with the metadata log as of its registration.
    pub caught_up: bool,
    /// A broker shutting down may exit: it leads nothing any more.
    pub shutdown_ok: bool,
}

/// A topic to create. `assignment`, when given, is the replicas of each partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewTopic {
    pub name: String,
    pub id: TopicId,
    pub partitions: i32,
    pub replication_factor: i16,
    pub assignment: Option<Vec<Vec<i32>>>,
}

/// An ISR change from a partition's leader.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AlterPartition {
    pub broker_id: i32,
    pub broker_epoch: i64,
    pub topic_id: TopicId,
    pub partition: i32,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    pub new_isr: Vec<i32>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ElectionType {
    Preferred,
    Unclean,
}

#[derive(Clone, Debug)]
pub struct Controller {
    image: ClusterImage,
    /// Per broker, when its session ends unless it heartbeats.
    sessions: BTreeMap<i32, i64>,
    settings: ControllerSettings,
}

impl Controller {
    /// The controller that just became active over `image`: every registered broker gets a
    /// full session from now.
    pub fn new(image: ClusterImage, settings: ControllerSettings, now_ms: i64) -> Self {
        let sessions = image
            .brokers
            .keys()
            .map(|&id| (id, now_ms + settings.session_timeout_ms))
            .collect();
        Self {
            image,
            sessions,
            settings,
        }
    }

    pub fn image(&self) -> &ClusterImage {
        &self.image
    }

    pub fn replay(&mut self, records: &[MetadataRecord]) {
        for r in records {
            self.image.apply(r);
        }
    }

    pub fn register_broker(
        &mut self,
        id: i32,
        incarnation: [u8; 16],
        endpoints: Vec<Endpoint>,
        rack: Option<String>,
        now_ms: i64,
    ) -> Result<ControllerResult<i64>, ControllerError> {
        if let Some(old) = self.image.broker(id) {
            let live = self.sessions.get(&id).is_some_and(|&end| end > now_ms) && !old.fenced;
            if old.registration.incarnation != incarnation && live {
                return Err(ControllerError::DuplicateBrokerRegistration);
            }
        }
        let epoch = self.image.last_broker_epoch + 1;
        let mut records = vec![MetadataRecord::RegisterBroker(BrokerRegistration {
            id,
            epoch,
            incarnation,
            endpoints,
            rack,
        })];
        // A broker that comes back (it crashed, or restarted before its session ended) may
        // have lost what it had not synced: it leaves every ISR and leadership, as if fenced.
        records.extend(self.remove_broker(id));
        self.sessions
            .insert(id, now_ms + self.settings.session_timeout_ms);
        Ok(ControllerResult::new(records, epoch))
    }

    pub fn heartbeat(
        &mut self,
        hb: Heartbeat,
        now_ms: i64,
    ) -> Result<ControllerResult<HeartbeatReply>, ControllerError> {
        let broker = self.check_broker(hb.broker_id, hb.broker_epoch)?.clone();
        self.sessions
            .insert(hb.broker_id, now_ms + self.settings.session_timeout_ms);
        let caught_up = hb.metadata_applied >= broker.registered_at;
        let mut records = Vec::new();
        if hb.want_shutdown {
            if !broker.shutting_down {
                records.push(MetadataRecord::BrokerShuttingDown {
                    id: hb.broker_id,
                    epoch: hb.broker_epoch,
                });
                records.extend(self.remove_broker(hb.broker_id));
            }
        } else if broker.fenced && caught_up && !broker.shutting_down {
            // (A broker that asked to shut down stays shutting down until it registers again,
            // whatever an older heartbeat arriving late says.)
            records.push(MetadataRecord::UnfenceBroker {
                id: hb.broker_id,
                epoch: hb.broker_epoch,
            });
            records.extend(self.elect_where_leaderless(hb.broker_id));
        }
        let leads_nothing = !self.image.partitions().any(|p| p.leader == hb.broker_id);
        // May stop only if nothing changes with this heartbeat: what its records do is not in
        // the image yet.
        let reply = HeartbeatReply {
            fenced: broker.fenced && records.is_empty(),
            caught_up,
            shutdown_ok: broker.shutting_down && leads_nothing && records.is_empty(),
        };
        Ok(ControllerResult::new(records, reply))
    }

    /// Fences the brokers whose sessions ended.
    pub fn tick(&self, now_ms: i64) -> ControllerResult<Vec<i32>> {
        let expired: Vec<i32> = self
            .image
            .brokers
            .iter()
            .filter(|(id, b)| !b.fenced && self.sessions.get(id).is_none_or(|&end| end <= now_ms))
            .map(|(&id, _)| id)
            .collect();
        let mut records = Vec::new();
        let mut scratch = None;
        for &id in &expired {
            let epoch = self.image.brokers[&id].registration.epoch;
            // Each fence sees the ones before it.
            let image = scratch.get_or_insert_with(|| self.image.clone());
            let mut fence = vec![MetadataRecord::FenceBroker { id, epoch }];
            fence.extend(removal(image, id, self.settings.unclean_leader_election));
            for r in &fence {
                image.apply(r);
            }
            records.extend(fence);
        }
        ControllerResult::new(records, expired)
    }

    pub fn create_topic(
        &self,
        topic: &NewTopic,
        start: usize,
        shift: usize,
    ) -> Result<ControllerResult<Vec<PartitionState>>, ControllerError> {
        crate::metadata::validate_topic_name(&topic.name).map_err(ControllerError::InvalidTopic)?;
        if self.image.topic_ids.contains_key(&topic.name)
            || self.image.topics.contains_key(&topic.id)
        {
            return Err(ControllerError::TopicAlreadyExists(format!(
                "Topic '{}' already exists.",
                topic.name
            )));
        }
        let assignment = match &topic.assignment {
            Some(a) => {
                self.check_assignment(a, None)?;
                a.clone()
            }
            None => placement::assign_replicas(
                &self.placement_brokers(),
                topic.partitions,
                topic.replication_factor,
                0,
                start,
                shift,
            )?,
        };
        let partitions = self.new_partitions(&topic.id, 0, assignment)?;
        let mut records = vec![MetadataRecord::Topic {
            name: topic.name.clone(),
            id: topic.id,
        }];
        records.extend(partitions.iter().cloned().map(MetadataRecord::Partition));
        Ok(ControllerResult::new(records, partitions))
    }

    /// Grows a topic to `total` partitions (CreatePartitions).
    pub fn create_partitions(
        &self,
        name: &str,
        total: i32,
        assignment: Option<Vec<Vec<i32>>>,
        shift: usize,
    ) -> Result<ControllerResult<Vec<PartitionState>>, ControllerError> {
        let topic = self
            .image
            .topic_by_name(name)
            .ok_or(ControllerError::UnknownTopicOrPartition)?;
        let existing = topic.partitions.len() as i32;
        if total <= existing {
            return Err(ControllerError::InvalidPartitions(format!(
                "Topic currently has {existing} partitions, which is higher than the requested {total}."
            )));
        }
        let rf = topic
            .partitions
            .values()
            .next()
            .map_or(1, |p| p.replicas.len());
        let assignment = match assignment {
            Some(a) => {
                if a.len() as i32 != total - existing {
                    return Err(ControllerError::InvalidReplicaAssignment(format!(
                        "Increasing the number of partitions by {} but {} assignments provided.",
                        total - existing,
                        a.len()
                    )));
                }
                self.check_assignment(&a, Some(rf))?;
                a
            }
            None => {
                let brokers = self.placement_brokers();
                let first = topic.partitions.get(&0).map(|p| p.replicas[0]);
                let start = brokers
                    .iter()
                    .position(|b| Some(b.id) == first)
                    .unwrap_or(0);
                placement::assign_replicas(
                    &brokers,
                    total - existing,
                    rf as i16,
                    existing,
                    start,
                    shift,
                )?
            }
        };
        let partitions = self.new_partitions(&topic.id, existing, assignment)?;
        let records = partitions
            .iter()
            .cloned()
            .map(MetadataRecord::Partition)
            .collect();
        Ok(ControllerResult::new(records, partitions))
    }

    pub fn delete_topic(&self, name: &str) -> Result<ControllerResult<TopicId>, ControllerError> {
        let topic = self
            .image
            .topic_by_name(name)
            .ok_or(ControllerError::UnknownTopicOrPartition)?;
        Ok(ControllerResult::new(
            vec![MetadataRecord::RemoveTopic { id: topic.id }],
            topic.id,
        ))
    }

    pub fn alter_partition(
        &self,
        req: &AlterPartition,
    ) -> Result<ControllerResult<PartitionState>, ControllerError> {
        self.check_broker(req.broker_id, req.broker_epoch)?;
        let p = self
            .image
            .partition(&req.topic_id, req.partition)
            .ok_or(ControllerError::UnknownTopicOrPartition)?;
        if p.leader != req.broker_id {
            return Err(ControllerError::NotLeaderOrFollower);
        }
        if req.leader_epoch != p.leader_epoch {
            return Err(ControllerError::FencedLeaderEpoch);
        }
        if req.partition_epoch != p.partition_epoch {
            return Err(ControllerError::InvalidUpdateVersion);
        }
        if !req.new_isr.contains(&p.leader) {
            return Err(ControllerError::InvalidRequest(
                "the new ISR does not contain the leader".into(),
            ));
        }
        for r in &req.new_isr {
            if !p.replicas.contains(r) {
                return Err(ControllerError::InvalidRequest(format!(
                    "broker {r} is not a replica of the partition"
                )));
            }
            if !p.isr.contains(r) && !self.image.eligible(*r) {
                return Err(ControllerError::IneligibleReplica(format!(
                    "broker {r} is fenced or shutting down"
                )));
            }
        }
        let isr = in_replica_order(&p.replicas, &req.new_isr);
        match changed(p, isr, p.leader) {
            Some(next) => Ok(ControllerResult::new(
                vec![MetadataRecord::Partition(next.clone())],
                next,
            )),
            None => Ok(ControllerResult::new(Vec::new(), p.clone())),
        }
    }

    pub fn elect_leaders(
        &self,
        partitions: &[(TopicId, i32)],
        election: ElectionType,
    ) -> ControllerResult<Vec<Result<i32, ControllerError>>> {
        let mut records = Vec::new();
        let mut answers = Vec::new();
        for (topic_id, partition) in partitions {
            let Some(p) = self.image.partition(topic_id, *partition) else {
                answers.push(Err(ControllerError::UnknownTopicOrPartition));
                continue;
            };
            let outcome = match election {
                ElectionType::Preferred => {
                    let preferred = p.replicas[0];
                    if p.leader == preferred {
                        Err(ControllerError::ElectionNotNeeded)
                    } else if p.isr.contains(&preferred) && self.image.eligible(preferred) {
                        Ok((p.isr.clone(), preferred))
                    } else {
                        Err(ControllerError::PreferredLeaderNotAvailable)
                    }
                }
                ElectionType::Unclean => {
                    if p.leader != NO_LEADER {
                        Err(ControllerError::ElectionNotNeeded)
                    } else {
                        elect(&self.image, p, None, true)
                            .ok_or(ControllerError::EligibleLeadersNotAvailable)
                    }
                }
            };
            answers.push(outcome.map(|(isr, leader)| {
                records.extend(changed(p, isr, leader).map(MetadataRecord::Partition));
                leader
            }));
        }
        ControllerResult::new(records, answers)
    }

    /// Partitions whose leader is not their first replica though that one could lead (what
    /// `auto.leader.rebalance.enable` moves back).
    pub fn imbalanced(&self) -> Vec<(TopicId, i32)> {
        self.image
            .partitions()
            .filter(|p| {
                let preferred = p.replicas[0];
                p.leader != preferred
                    && p.isr.contains(&preferred)
                    && self.image.eligible(preferred)
            })
            .map(|p| (p.topic_id, p.partition))
            .collect()
    }

    pub fn allocate_producer_ids(
        &self,
        broker_id: i32,
        broker_epoch: i64,
    ) -> Result<ControllerResult<(i64, i64)>, ControllerError> {
        self.check_broker(broker_id, broker_epoch)?;
        let first = self.image.next_producer_id;
        Ok(ControllerResult::new(
            vec![MetadataRecord::ProducerIds {
                broker_id,
                next: first + PRODUCER_ID_BLOCK,
            }],
            (first, PRODUCER_ID_BLOCK),
        ))
    }

    fn check_broker(
        &self,
        id: i32,
        epoch: i64,
    ) -> Result<&super::image::BrokerState, ControllerError> {
        let b = self
            .image
            .broker(id)
            .ok_or(ControllerError::BrokerIdNotRegistered)?;
        if b.registration.epoch != epoch {
            return Err(ControllerError::StaleBrokerEpoch);
        }
        Ok(b)
    }

    /// Unfenced brokers not shutting down, for placement.
    fn placement_brokers(&self) -> Vec<BrokerSlot> {
        self.image
            .brokers
            .values()
            .filter(|b| b.eligible())
            .map(|b| BrokerSlot {
                id: b.registration.id,
                rack: b.registration.rack.clone(),
            })
            .collect()
    }

    fn check_assignment(
        &self,
        assignment: &[Vec<i32>],
        rf: Option<usize>,
    ) -> Result<(), ControllerError> {
        let invalid = |m: String| Err(ControllerError::InvalidReplicaAssignment(m));
        let Some(first) = assignment.first() else {
            return invalid("The manual partition assignment is empty.".into());
        };
        let rf = rf.unwrap_or(first.len());
        for (i, replicas) in assignment.iter().enumerate() {
            if replicas.is_empty() || replicas.len() != rf {
                return invalid(format!(
                    "The manual partition assignment specifies partition {i} with {} replicas, \
                     but replication factor {rf} was expected.",
                    replicas.len()
                ));
            }
            let mut seen = replicas.clone();
            seen.sort_unstable();
            seen.dedup();
            if seen.len() != replicas.len() {
                return invalid(format!(
                    "The manual partition assignment specifies the same broker twice for partition {i}."
                ));
            }
            if let Some(b) = replicas.iter().find(|b| self.image.broker(**b).is_none()) {
                return invalid(format!(
                    "The manual partition assignment includes broker {b}, but no broker with that id is registered."
                ));
            }
        }
        Ok(())
    }

    fn new_partitions(
        &self,
        topic_id: &TopicId,
        first: i32,
        assignment: Vec<Vec<i32>>,
    ) -> Result<Vec<PartitionState>, ControllerError> {
        assignment
            .into_iter()
            .zip(first..)
            .map(|(replicas, partition)| {
                let isr: Vec<i32> = replicas
                    .iter()
                    .copied()
                    .filter(|r| self.image.eligible(*r))
                    .collect();
                let Some(&leader) = isr.first() else {
                    return Err(ControllerError::InvalidReplicaAssignment(format!(
                        "All brokers specified in the manual partition assignment for partition \
                         {partition} are fenced or in controlled shutdown."
                    )));
                };
                Ok(PartitionState {
                    topic_id: *topic_id,
                    partition,
                    replicas,
                    isr,
                    leader,
                    leader_epoch: 0,
                    partition_epoch: 0,
                })
            })
            .collect()
    }

    /// The partition changes that take `broker` out of every ISR and leadership.
    fn remove_broker(&self, broker: i32) -> Vec<MetadataRecord> {
        removal(&self.image, broker, self.settings.unclean_leader_election)
    }

    /// Leaders for the partitions that had none and that `broker`, now back, can lead.
    fn elect_where_leaderless(&self, broker: i32) -> Vec<MetadataRecord> {
        self.image
            .partitions()
            .filter(|p| p.leader == NO_LEADER && p.isr.contains(&broker))
            .filter_map(|p| {
                let leader = p
                    .replicas
                    .iter()
                    .copied()
                    .find(|r| p.isr.contains(r) && (*r == broker || self.image.eligible(*r)))?;
                changed(p, p.isr.clone(), leader).map(MetadataRecord::Partition)
            })
            .collect()
    }
}

fn removal(image: &ClusterImage, broker: i32, unclean: bool) -> Vec<MetadataRecord> {
    image
        .partitions()
        .filter(|p| p.replicas.contains(&broker))
        .filter_map(|p| {
            let mut isr: Vec<i32> = p.isr.iter().copied().filter(|r| *r != broker).collect();
            if isr.is_empty() {
                isr = p.isr.clone();
            }
            let leader_ok = p.leader != broker && p.leader != NO_LEADER;
            let (isr, leader) = if leader_ok {
                (isr, p.leader)
            } else {
                let shrunk = PartitionState {
                    isr: isr.clone(),
                    ..p.clone()
                };
                elect(image, &shrunk, Some(broker), unclean).unwrap_or((isr, NO_LEADER))
            };
            changed(p, isr, leader).map(MetadataRecord::Partition)
        })
        .collect()
}

/// A leader for `p` from its ISR (in replica order, eligible, not `exclude`), or with `unclean`
/// from any eligible replica, which then makes up the ISR alone.
fn elect(
    image: &ClusterImage,
    p: &PartitionState,
    exclude: Option<i32>,
    unclean: bool,
) -> Option<(Vec<i32>, i32)> {
    let ok = |r: &i32| Some(*r) != exclude && image.eligible(*r);
    if let Some(&leader) = p.replicas.iter().find(|r| p.isr.contains(r) && ok(r)) {
        return Some((p.isr.clone(), leader));
    }
    if unclean {
        let leader = *p.replicas.iter().find(|r| ok(r))?;
        return Some((vec![leader], leader));
    }
    None
}

fn in_replica_order(replicas: &[i32], members: &[i32]) -> Vec<i32> {
    replicas
        .iter()
        .copied()
        .filter(|r| members.contains(r))
        .collect()
}

/// The partition with a new ISR and leader, its epochs bumped; `None` if nothing changes.
fn changed(p: &PartitionState, isr: Vec<i32>, leader: i32) -> Option<PartitionState> {
    let isr = in_replica_order(&p.replicas, &isr);
    if isr == p.isr && leader == p.leader {
        return None;
    }
    Some(PartitionState {
        isr,
        leader,
        leader_epoch: p.leader_epoch + i32::from(leader != p.leader),
        partition_epoch: p.partition_epoch + 1,
        ..p.clone()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: TopicId = [7; 16];

    thread_local! {
        /// Every record a test committed, in order (each test runs on its own thread).
        static LOG: std::cell::RefCell<Vec<MetadataRecord>> = const { std::cell::RefCell::new(Vec::new()) };
    }

    fn run<T>(c: &mut Controller, r: ControllerResult<T>) -> T {
        LOG.with(|l| l.borrow_mut().extend(r.records.iter().cloned()));
        c.replay(&r.records);
        r.response
    }

    /// Loading is replaying: the committed records rebuild the controller's image exactly.
    fn assert_replays(c: &Controller) {
        let mut image = ClusterImage::default();
        LOG.with(|l| l.borrow().iter().for_each(|r| image.apply(r)));
        assert_eq!(&image, c.image());
    }

    /// Three brokers registered and unfenced at time 0; their epochs.
    fn three() -> (Controller, BTreeMap<i32, i64>) {
        let mut c = Controller::new(ClusterImage::default(), ControllerSettings::default(), 0);
        let mut epochs = BTreeMap::new();
        for id in 1..=3 {
            let r = c
                .register_broker(id, [id as u8; 16], vec![], None, 0)
                .unwrap();
            let epoch = run(&mut c, r);
            epochs.insert(id, epoch);
        }
        for (&id, &epoch) in &epochs {
            let hb = heartbeat(&mut c, id, epoch, 0);
            assert!(!hb.fenced);
        }
        (c, epochs)
    }

    fn heartbeat(c: &mut Controller, id: i32, epoch: i64, now: i64) -> HeartbeatReply {
        let applied = c.image().applied;
        let hb = Heartbeat {
            broker_id: id,
            broker_epoch: epoch,
            metadata_applied: applied,
            want_shutdown: false,
        };
        let r = c.heartbeat(hb, now).unwrap();
        run(c, r)
    }

    /// Broker `id`'s session ends (the others heartbeat), then it registers again: its new
    /// epoch, at 9.6 s.
    fn fence_and_register_again(c: &mut Controller, epochs: &BTreeMap<i32, i64>, id: i32) -> i64 {
        for (&other, &epoch) in epochs {
            if other != id {
                heartbeat(c, other, epoch, 8_000);
            }
        }
        let r = c.tick(9_500);
        run(c, r);
        let r = c
            .register_broker(id, [id as u8; 16], vec![], None, 9_600)
            .unwrap();
        run(c, r)
    }

    fn topic(c: &mut Controller, partitions: i32) -> Vec<PartitionState> {
        let t = NewTopic {
            name: "t".into(),
            id: T,
            partitions,
            replication_factor: 3,
            assignment: None,
        };
        let r = c.create_topic(&t, 0, 0).unwrap();
        run(c, r)
    }

    #[test]
    fn a_topic_gets_the_placement_rule_and_full_isrs() {
        let (mut c, _) = three();
        let ps = topic(&mut c, 6);
        assert_eq!(ps[0].replicas, vec![1, 2, 3]);
        assert_eq!(ps[1].replicas, vec![2, 3, 1]);
        assert_eq!(ps[3].replicas, vec![1, 3, 2]);
        for p in &ps {
            assert_eq!(p.leader, p.replicas[0]);
            assert_eq!(p.isr, p.replicas);
        }
        let again = NewTopic {
            name: "t".into(),
            id: [8; 16],
            partitions: 1,
            replication_factor: 1,
            assignment: None,
        };
        assert!(matches!(
            c.create_topic(&again, 0, 0),
            Err(ControllerError::TopicAlreadyExists(_))
        ));
    }

    #[test]
    fn an_expired_session_fences_and_moves_leaders_within_the_isr() {
        let (mut c, epochs) = three();
        topic(&mut c, 3);
        heartbeat(&mut c, 2, epochs[&2], 5_000);
        heartbeat(&mut c, 3, epochs[&3], 5_000);
        let r = c.tick(9_500);
        assert_eq!(r.response, vec![1]);
        run(&mut c, r);
        let ps: Vec<_> = c.image().partitions().cloned().collect();
        for p in &ps {
            assert!(!p.isr.contains(&1), "{p:?}");
            assert_ne!(p.leader, 1);
        }
        // Partition 0 (replicas 1,2,3) was led by 1: now by 2, one leader epoch later.
        assert_eq!(ps[0].leader, 2);
        assert_eq!((ps[0].leader_epoch, ps[0].partition_epoch), (1, 1));
        // Partition 1 (2,3,1) kept its leader: only the ISR changed.
        assert_eq!(
            (ps[1].leader, ps[1].leader_epoch, ps[1].partition_epoch),
            (2, 0, 1)
        );
    }

    #[test]
    fn the_last_isr_member_stays_and_leads_again_when_back() {
        let (mut c, epochs) = three();
        topic(&mut c, 1);
        // 2 and 3 fall out of the ISR (the leader, 1, says so).
        let p = c.image().partitions().next().unwrap().clone();
        let r = c
            .alter_partition(&AlterPartition {
                broker_id: 1,
                broker_epoch: epochs[&1],
                topic_id: T,
                partition: 0,
                leader_epoch: p.leader_epoch,
                partition_epoch: p.partition_epoch,
                new_isr: vec![1],
            })
            .unwrap();
        run(&mut c, r);
        for id in [2, 3] {
            heartbeat(&mut c, id, epochs[&id], 8_000);
        }
        let r = c.tick(9_000);
        run(&mut c, r);
        let p = c.image().partitions().next().unwrap().clone();
        assert_eq!(
            (p.leader, p.isr.clone()),
            (NO_LEADER, vec![1]),
            "no unclean election"
        );
        // 1 registers again and catches up: it leads again.
        let r = c.register_broker(1, [9; 16], vec![], None, 10_000).unwrap();
        let epoch = run(&mut c, r);
        assert!(!heartbeat(&mut c, 1, epoch, 10_001).fenced);
        let p = c.image().partitions().next().unwrap();
        assert_eq!(p.leader, 1);
        assert!(p.leader_epoch > 1);
        assert_replays(&c);
    }

    #[test]
    fn alter_partition_is_checked_like_kafka() {
        let (mut c, epochs) = three();
        topic(&mut c, 1);
        let base = AlterPartition {
            broker_id: 1,
            broker_epoch: epochs[&1],
            topic_id: T,
            partition: 0,
            leader_epoch: 0,
            partition_epoch: 0,
            new_isr: vec![1, 2],
        };
        let stale = AlterPartition {
            broker_epoch: epochs[&1] - 1,
            ..base.clone()
        };
        assert_eq!(
            c.alter_partition(&stale),
            Err(ControllerError::StaleBrokerEpoch)
        );
        let follower = AlterPartition {
            broker_id: 2,
            broker_epoch: epochs[&2],
            ..base.clone()
        };
        assert_eq!(
            c.alter_partition(&follower),
            Err(ControllerError::NotLeaderOrFollower)
        );
        let old_epoch = AlterPartition {
            partition_epoch: 5,
            ..base.clone()
        };
        assert_eq!(
            c.alter_partition(&old_epoch),
            Err(ControllerError::InvalidUpdateVersion)
        );
        let no_leader = AlterPartition {
            new_isr: vec![2, 3],
            ..base.clone()
        };
        assert!(matches!(
            c.alter_partition(&no_leader),
            Err(ControllerError::InvalidRequest(_))
        ));
        let r = c.alter_partition(&base).unwrap();
        let p = run(&mut c, r);
        assert_eq!((p.isr.clone(), p.partition_epoch), (vec![1, 2], 1));
        // The same request again is now stale.
        assert_eq!(
            c.alter_partition(&base),
            Err(ControllerError::InvalidUpdateVersion)
        );
        // A fenced broker cannot be added back.
        heartbeat(&mut c, 1, epochs[&1], 8_000);
        heartbeat(&mut c, 2, epochs[&2], 8_000);
        let r = c.tick(9_500);
        run(&mut c, r);
        let add3 = AlterPartition {
            partition_epoch: 1,
            new_isr: vec![1, 2, 3],
            ..base
        };
        assert!(matches!(
            c.alter_partition(&add3),
            Err(ControllerError::IneligibleReplica(_))
        ));
    }

    #[test]
    fn controlled_shutdown_moves_leaderships_first() {
        let (mut c, epochs) = three();
        topic(&mut c, 3);
        let hb = Heartbeat {
            broker_id: 2,
            broker_epoch: epochs[&2],
            metadata_applied: c.image().applied,
            want_shutdown: true,
        };
        let r = c.heartbeat(hb, 100).unwrap();
        assert!(!r.response.shutdown_ok, "it still leads partition 1");
        run(&mut c, r);
        assert!(c
            .image()
            .partitions()
            .all(|p| p.leader != 2 && !p.isr.contains(&2)));
        let r = c.heartbeat(hb, 200).unwrap();
        assert!(r.response.shutdown_ok);
        assert!(r.records.is_empty());
        assert_replays(&c);
    }

    #[test]
    fn a_late_heartbeat_does_not_undo_a_shutdown() {
        let (mut c, epochs) = three();
        topic(&mut c, 1);
        // 1 is fenced, comes back as a new registration and asks to shut down before it has
        // caught up; then an older heartbeat of it (sent before it asked) arrives.
        let e1 = fence_and_register_again(&mut c, &epochs, 1);
        let shutdown = Heartbeat {
            broker_id: 1,
            broker_epoch: e1,
            metadata_applied: 0,
            want_shutdown: true,
        };
        let r = c.heartbeat(shutdown, 9_700).unwrap();
        run(&mut c, r);
        let late = Heartbeat {
            want_shutdown: false,
            metadata_applied: c.image().applied,
            ..shutdown
        };
        let r = c.heartbeat(late, 9_710).unwrap();
        assert!(
            r.records.is_empty(),
            "no unfencing of a broker shutting down"
        );
        assert!(c.image().broker(1).unwrap().shutting_down);
        assert!(c.image().partitions().all(|p| p.leader != 1));
        assert_replays(&c);
    }

    #[test]
    fn preferred_and_unclean_elections() {
        let (mut c, epochs) = three();
        topic(&mut c, 1);
        // 1 is fenced: 2 leads. Back and caught up, 1 is the preferred leader again.
        let e1 = fence_and_register_again(&mut c, &epochs, 1);
        heartbeat(&mut c, 1, e1, 9_700);
        let p = c.image().partitions().next().unwrap().clone();
        assert_eq!(p.leader, 2);
        let r = c.elect_leaders(&[(T, 0)], ElectionType::Preferred);
        assert_eq!(
            r.response,
            vec![Err(ControllerError::PreferredLeaderNotAvailable)]
        );
        // 1 rejoins the ISR, then a preferred election moves the leadership to it.
        let r = c
            .alter_partition(&AlterPartition {
                broker_id: 2,
                broker_epoch: epochs[&2],
                topic_id: T,
                partition: 0,
                leader_epoch: p.leader_epoch,
                partition_epoch: p.partition_epoch,
                new_isr: vec![1, 2, 3],
            })
            .unwrap();
        run(&mut c, r);
        assert_eq!(c.imbalanced(), vec![(T, 0)]);
        let r = c.elect_leaders(&[(T, 0)], ElectionType::Preferred);
        assert_eq!(run(&mut c, r), vec![Ok(1)]);
        assert!(c.imbalanced().is_empty());
        let r = c.elect_leaders(&[(T, 0)], ElectionType::Unclean);
        assert_eq!(r.response, vec![Err(ControllerError::ElectionNotNeeded)]);
        assert_replays(&c);
    }

    #[test]
    fn a_duplicate_registration_is_refused_while_the_session_lives() {
        let (mut c, _) = three();
        assert_eq!(
            c.register_broker(1, [42; 16], vec![], None, 100),
            Err(ControllerError::DuplicateBrokerRegistration)
        );
        assert!(
            c.register_broker(1, [1; 16], vec![], None, 100).is_ok(),
            "the same process"
        );
        let r = c.tick(20_000);
        run(&mut c, r);
        assert!(c.register_broker(1, [42; 16], vec![], None, 20_001).is_ok());
    }

    #[test]
    fn producer_id_blocks_do_not_overlap() {
        let (mut c, epochs) = three();
        let r = c.allocate_producer_ids(1, epochs[&1]).unwrap();
        let a = run(&mut c, r);
        let r = c.allocate_producer_ids(2, epochs[&2]).unwrap();
        let b = run(&mut c, r);
        assert_eq!(a, (0, PRODUCER_ID_BLOCK));
        assert_eq!(b, (PRODUCER_ID_BLOCK, PRODUCER_ID_BLOCK));
    }

    #[test]
    fn replaying_the_records_gives_the_same_image() {
        let (mut c, epochs) = three();
        topic(&mut c, 4);
        heartbeat(&mut c, 1, epochs[&1], 8_000);
        heartbeat(&mut c, 2, epochs[&2], 8_000);
        let r = c.tick(9_500);
        run(&mut c, r);
        let r = c.register_broker(3, [5; 16], vec![], None, 9_600).unwrap();
        let e3 = run(&mut c, r);
        heartbeat(&mut c, 3, e3, 9_700);
        let r = c.elect_leaders(&[(T, 2)], ElectionType::Preferred);
        run(&mut c, r);
        assert_replays(&c);
    }
}
