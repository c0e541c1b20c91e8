//! The controller quorum: raft-rs (`raft` 0.7, `RawNode`) behind one narrow interface, so that
//! it could be replaced. The rest of the broker sees metadata record batches going in
//! ([`Quorum::propose`]) and coming out committed, in order ([`Round::committed`]), peer
//! messages as opaque bytes, and what must be on disk before what may be sent.
//!
//! Nothing here does I/O. The runtime takes a [`Round`] and must handle it in this order:
//! send `send_now` (a leader's appends may go out before its own copy is durable), write
//! `append` and `hard_state` to disk with fdatasync, then send `after_persist` (votes and
//! acknowledgements that promise what is on disk), then apply `committed`. A crash at any
//! point loses nothing a peer was promised. A node restarts from what it persisted
//! ([`Persisted`]), and its committed batches come out again from the first, which is how the
//! metadata image is rebuilt: loading is replaying.
//!
//! raft-rs keeps its log in `MemStorage` (uncontended, on the controller's one shard).
//! Snapshots and log compaction are not done yet.

use protobuf::Message as _;
use raft::prelude::{ConfState, Entry, EntryType, Message};
use raft::storage::MemStorage;
use raft::{Config, RawNode, StateRole};

use super::image::{decode_batch, encode_batch, MetadataRecord};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuorumSettings {
    pub node_id: u64,
    /// Every voter's node id, this one included (`controller.quorum.voters`).
    pub voters: Vec<u64>,
    /// Ticks without a leader before a follower stands for election.
    pub election_ticks: usize,
    pub heartbeat_ticks: usize,
}

/// One entry of the raft log as the runtime stores it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogEntry {
    pub index: u64,
    pub term: u64,
    /// A metadata record batch, or empty for raft's own entries (a new leader's no-op).
    pub data: Vec<u8>,
}

/// raft's promises: the current term, the vote given in it, and how far the log is committed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HardState {
    pub term: u64,
    pub vote: u64,
    pub commit: u64,
}

/// What a node had on disk when it stopped.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Persisted {
    pub entries: Vec<LogEntry>,
    pub hard_state: HardState,
}

impl Persisted {
    /// Applies a round's writes, as the runtime's disk would: `append` replaces the log from its
    /// first index on.
    pub fn write(&mut self, round: &Round) {
        if let Some(first) = round.append.first() {
            self.entries.retain(|e| e.index < first.index);
            self.entries.extend(round.append.iter().cloned());
        }
        if let Some(hs) = round.hard_state {
            self.hard_state = hs;
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outgoing {
    pub to: u64,
    pub bytes: Vec<u8>,
}

/// A committed batch: its log index and records (or why they could not be read).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Committed {
    pub index: u64,
    pub records: Result<Vec<MetadataRecord>, String>,
}

/// One step of work for the runtime, to be handled in field order (see the module doc).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Round {
    pub send_now: Vec<Outgoing>,
    /// Log entries to write, replacing whatever the log holds from the first one's index on.
    pub append: Vec<LogEntry>,
    pub hard_state: Option<HardState>,
    pub after_persist: Vec<Outgoing>,
    pub committed: Vec<Committed>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum QuorumError {
    /// Only the leader takes proposals; the leader's id if one is known.
    NotLeader(Option<u64>),
    /// A peer's message could not be read.
    BadMessage(String),
    /// raft refused (a misconfiguration, a message for another group).
    Raft(String),
}

pub struct Quorum {
    node: RawNode<MemStorage>,
}

impl Quorum {
    pub fn new(settings: &QuorumSettings, persisted: &Persisted) -> Result<Self, QuorumError> {
        let raft_err = |e: raft::Error| QuorumError::Raft(e.to_string());
        let storage =
            MemStorage::new_with_conf_state(ConfState::from((settings.voters.clone(), vec![])));
        {
            let mut core = storage.wl();
            let entries: Vec<Entry> = persisted.entries.iter().map(to_raft_entry).collect();
            core.append(&entries).map_err(raft_err)?;
            core.set_hardstate(HardStateProto {
                term: persisted.hard_state.term,
                vote: persisted.hard_state.vote,
                commit: persisted.hard_state.commit,
                ..Default::default()
            });
        }
        let config = Config {
            id: settings.node_id,
            election_tick: settings.election_ticks,
            heartbeat_tick: settings.heartbeat_ticks,
            // Every committed batch comes out again after a restart: the image is replayed.
            applied: 0,
            check_quorum: true,
            pre_vote: true,
            ..Default::default()
        };
        config.validate().map_err(raft_err)?;
        let node = RawNode::new(&config, storage, &logger()).map_err(raft_err)?;
        Ok(Self { node })
    }

    pub fn tick(&mut self) {
        self.node.tick();
    }

    /// A message from a peer.
    pub fn step(&mut self, bytes: &[u8]) -> Result<(), QuorumError> {
        let msg =
            Message::parse_from_bytes(bytes).map_err(|e| QuorumError::BadMessage(e.to_string()))?;
        self.node
            .step(msg)
            .map_err(|e| QuorumError::Raft(e.to_string()))
    }

    /// Proposes one operation's records, to commit together.
    pub fn propose(&mut self, records: &[MetadataRecord]) -> Result<(), QuorumError> {
        if !self.is_leader() {
            return Err(QuorumError::NotLeader(self.leader()));
        }
        self.node
            .propose(Vec::new(), encode_batch(records))
            .map_err(|e| match e {
                raft::Error::ProposalDropped => QuorumError::NotLeader(self.leader()),
                e => QuorumError::Raft(e.to_string()),
            })
    }

    pub fn is_leader(&self) -> bool {
        self.node.raft.state == StateRole::Leader
    }

    /// The leader's node id, if this node knows one.
    pub fn leader(&self) -> Option<u64> {
        Some(self.node.raft.leader_id).filter(|&id| id != raft::INVALID_ID)
    }

    pub fn term(&self) -> u64 {
        self.node.raft.term
    }

    /// The work raft has for the runtime, if any.
    pub fn round(&mut self) -> Option<Round> {
        if !self.node.has_ready() {
            return None;
        }
        let mut ready = self.node.ready();
        let mut round = Round {
            send_now: outgoing(ready.take_messages()),
            ..Round::default()
        };
        let mut committed = ready.take_committed_entries();
        if !ready.entries().is_empty() {
            round.append = ready.entries().iter().map(from_raft_entry).collect();
            // raft-rs reads its log back from here; the runtime's disk gets the same entries.
            // raft hands out entries that follow its log, so this cannot fail short of a bug.
            if let Err(e) = self.node.mut_store().wl().append(ready.entries()) {
                tracing::error!("controller quorum: raft's own entries did not append: {e}");
            }
        }
        if let Some(hs) = ready.hs() {
            round.hard_state = Some(HardState {
                term: hs.term,
                vote: hs.vote,
                commit: hs.commit,
            });
            self.node.mut_store().wl().set_hardstate(hs.clone());
        }
        round.after_persist = outgoing(ready.take_persisted_messages());
        let mut light = self.node.advance(ready);
        if let Some(commit) = light.commit_index() {
            self.node.mut_store().wl().mut_hard_state().commit = commit;
            let hs = round.hard_state.get_or_insert_with(|| {
                let hs = self.node.store().rl().hard_state().clone();
                HardState {
                    term: hs.term,
                    vote: hs.vote,
                    commit,
                }
            });
            hs.commit = commit;
        }
        round.after_persist.extend(outgoing(light.take_messages()));
        committed.extend(light.take_committed_entries());
        round.committed = committed
            .into_iter()
            .filter(|e| e.get_entry_type() == EntryType::EntryNormal && !e.data.is_empty())
            .map(|e| Committed {
                index: e.index,
                records: decode_batch(&e.data),
            })
            .collect();
        self.node.advance_apply();
        Some(round)
    }
}

type HardStateProto = raft::prelude::HardState;

fn outgoing(messages: Vec<Message>) -> Vec<Outgoing> {
    messages
        .into_iter()
        .filter_map(|m| {
            let to = m.to;
            // Encoding a message built in memory does not fail.
            m.write_to_bytes().ok().map(|bytes| Outgoing { to, bytes })
        })
        .collect()
}

fn to_raft_entry(e: &LogEntry) -> Entry {
    Entry {
        index: e.index,
        term: e.term,
        data: e.data.clone().into(),
        ..Default::default()
    }
}

fn from_raft_entry(e: &Entry) -> LogEntry {
    LogEntry {
        index: e.index,
        term: e.term,
        data: e.data.to_vec(),
    }
}

/// raft-rs logs through slog; its lines go to `tracing` under the `raft` target.
fn logger() -> slog::Logger {
    slog::Logger::root(TracingDrain, slog::o!())
}

struct TracingDrain;

impl slog::Drain for TracingDrain {
    type Ok = ();
    type Err = slog::Never;

    fn log(&self, record: &slog::Record, _: &slog::OwnedKVList) -> Result<(), slog::Never> {
        match record.level() {
            slog::Level::Critical | slog::Level::Error => {
                tracing::error!(target: "raft", "{}", record.msg())
            }
            slog::Level::Warning => tracing::warn!(target: "raft", "{}", record.msg()),
            slog::Level::Info => tracing::debug!(target: "raft", "{}", record.msg()),
            _ => tracing::trace!(target: "raft", "{}", record.msg()),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;

    /// Three nodes in memory, with a network that delivers everything except to and from the
    /// nodes that are down.
    struct Group {
        nodes: BTreeMap<u64, Quorum>,
        disks: BTreeMap<u64, Persisted>,
        down: BTreeSet<u64>,
        /// Per node, the batches it saw committed, in order.
        applied: BTreeMap<u64, Vec<(u64, Vec<MetadataRecord>)>>,
    }

    fn settings(id: u64) -> QuorumSettings {
        QuorumSettings {
            node_id: id,
            voters: vec![1, 2, 3],
            election_ticks: 10,
            heartbeat_ticks: 2,
        }
    }

    impl Group {
        fn new() -> Self {
            let mut g = Group {
                nodes: BTreeMap::new(),
                disks: BTreeMap::new(),
                down: BTreeSet::new(),
                applied: BTreeMap::new(),
            };
            for id in 1..=3 {
                g.disks.insert(id, Persisted::default());
                g.start(id);
            }
            g
        }

        fn start(&mut self, id: u64) {
            let q = Quorum::new(&settings(id), &self.disks[&id]).expect("a valid configuration");
            self.nodes.insert(id, q);
            self.applied.insert(id, Vec::new());
            self.down.remove(&id);
        }

        fn crash(&mut self, id: u64) {
            self.nodes.remove(&id);
            self.down.insert(id);
        }

        /// Ticks every live node once and delivers until nothing moves.
        fn step(&mut self) {
            for q in self.nodes.values_mut() {
                q.tick();
            }
            for _ in 0..100 {
                let mut mail = Vec::new();
                for (&id, q) in self.nodes.iter_mut() {
                    while let Some(round) = q.round() {
                        let disk = self.disks.get_mut(&id).expect("disk");
                        disk.write(&round);
                        mail.extend(round.send_now.iter().chain(&round.after_persist).cloned());
                        for c in round.committed {
                            let records = c.records.expect("a batch this test wrote");
                            self.applied
                                .get_mut(&id)
                                .expect("node")
                                .push((c.index, records));
                        }
                    }
                }
                if mail.is_empty() {
                    return;
                }
                for m in mail {
                    if let Some(q) = self.nodes.get_mut(&m.to) {
                        q.step(&m.bytes).expect("a message from a peer");
                    }
                }
            }
        }

        fn leader(&self) -> Option<u64> {
            self.nodes
                .iter()
                .find(|(_, q)| q.is_leader())
                .map(|(&id, _)| id)
        }

        fn elect(&mut self) -> u64 {
            for _ in 0..200 {
                self.step();
                if let Some(l) = self.leader() {
                    return l;
                }
            }
            panic!("no leader after 200 ticks");
        }
    }

    fn batch(n: i64) -> Vec<MetadataRecord> {
        vec![MetadataRecord::ProducerIds {
            broker_id: 1,
            next: n,
        }]
    }

    #[test]
    fn a_quorum_elects_commits_fails_over_and_replays() {
        let mut g = Group::new();
        let first = g.elect();
        for n in 1..=3 {
            g.nodes.get_mut(&first).unwrap().propose(&batch(n)).unwrap();
        }
        g.step();
        g.step();
        for id in 1..=3 {
            let seen: Vec<_> = g.applied[&id].iter().map(|(_, r)| r.clone()).collect();
            assert_eq!(seen, vec![batch(1), batch(2), batch(3)], "node {id}");
        }
        let follower = (1..=3).find(|&id| id != first).unwrap();
        assert_eq!(
            g.nodes.get_mut(&follower).unwrap().propose(&batch(9)),
            Err(QuorumError::NotLeader(Some(first)))
        );

        // The leader dies: the other two elect one of themselves and go on.
        g.crash(first);
        let mut second = None;
        for _ in 0..300 {
            g.step();
            second = g.leader();
            if second.is_some() {
                break;
            }
        }
        let second = second.expect("a new leader");
        assert_ne!(second, first);
        g.nodes
            .get_mut(&second)
            .unwrap()
            .propose(&batch(4))
            .unwrap();
        g.step();
        g.step();
        assert_eq!(
            g.applied[&second].last().map(|(_, r)| r.clone()),
            Some(batch(4))
        );

        // The old leader comes back from its disk: first it replays what it had committed,
        // before hearing from anyone, then it catches up.
        g.start(first);
        let replay = g.nodes.get_mut(&first).unwrap().round().expect("a replay");
        let replayed: Vec<_> = replay
            .committed
            .into_iter()
            .map(|c| c.records.unwrap())
            .collect();
        assert_eq!(replayed, vec![batch(1), batch(2), batch(3)]);
        g.applied
            .get_mut(&first)
            .unwrap()
            .extend(replayed.into_iter().enumerate().map(|(i, r)| (i as u64, r)));
        for _ in 0..50 {
            g.step();
        }
        let seen: Vec<_> = g.applied[&first].iter().map(|(_, r)| r.clone()).collect();
        assert_eq!(seen, vec![batch(1), batch(2), batch(3), batch(4)]);
        assert!(g.nodes[&first].term() >= g.nodes[&second].term());
    }

    #[test]
    fn a_bad_message_is_refused_not_a_panic() {
        let mut q = Quorum::new(&settings(1), &Persisted::default()).unwrap();
        assert!(matches!(
            q.step(&[0xff, 0x01, 0x02]),
            Err(QuorumError::BadMessage(_))
        ));
        let bad = QuorumSettings {
            election_ticks: 1,
            heartbeat_ticks: 2,
            ..settings(1)
        };
        assert!(matches!(
            Quorum::new(&bad, &Persisted::default()),
            Err(QuorumError::Raft(_))
        ));
    }
}
