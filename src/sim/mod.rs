//! A seeded, deterministic simulator of a replicated cluster (in the spirit of TigerBeetle's
//! VOPR): three brokers and an active controller, each driven through the project's own state
//! machines without I/O ([`Controller`], [`LeaderReplication`], [`LeaderEpochCache`], the
//! truncation rules), over a virtual clock and a network that drops, delays and reorders
//! messages, cuts brokers off, crashes them (losing what they had not synced), shuts them
//! down cleanly (leaderships moved away first) and fails the controller over. The quorum itself is raft-rs's job and is taken as given here: the active
//! controller's records commit in order.
//!
//! An acks=all producer writes throughout. Checked after every step: at most one leader per
//! partition and leader epoch; the committed prefix (everything below any HW a leader
//! announced) never changes and is in every new leader's log; no replica's log disagrees with
//! it below that replica's HW; a leader's HW never passes an ISR member's log end; no
//! acknowledged write is ever lost. At the end the faults stop and every partition must have a
//! leader whose log holds every acknowledged write. The same seed replays the same run.

use std::collections::BTreeMap;

use crate::cluster::controller::{
    AlterPartition, Controller, ControllerError, ControllerSettings, Heartbeat, NewTopic,
};
use crate::cluster::image::{PartitionState, TopicId, NO_LEADER};
use crate::partition::epoch_cache::{LeaderEpochCache, UNDEFINED_EPOCH};
use crate::partition::replica::{
    self, Effects, LeaderReplication, LeaderStart, ReplicationSettings,
};

const TOPIC: TopicId = [0x51; 16];
const PARTITIONS: i32 = 2;
const BROKERS: i32 = 3;
const HEARTBEAT_MS: i64 = 300;
const TICK_MS: i64 = 100;
/// A follower whose fetch found nothing waits this long before the next one.
const FETCH_IDLE_MS: i64 = 40;
/// An unanswered fetch or ISR change is given up after this long.
const REQUEST_TIMEOUT_MS: i64 = 1_000;
const MAX_ENTRIES_PER_FETCH: usize = 64;
/// Simulated time after the faults stop, for the cluster to settle.
const HEAL_MS: i64 = 6_000;
const MAX_EVENTS: usize = 400_000;
const CONTROLLER_SETTINGS: ControllerSettings = ControllerSettings {
    session_timeout_ms: 1_500,
    unclean_leader_election: false,
};

/// SplitMix64: small, fast and good enough to pick faults.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + (self.next_u64() % (hi - lo + 1) as u64) as i64
    }

    /// True with probability `pct` percent.
    pub fn chance(&mut self, pct: u64) -> bool {
        self.next_u64() % 100 < pct
    }
}

/// How hostile one run is; drawn from the seed.
#[derive(Clone, Copy, Debug)]
pub struct Faults {
    pub run_ms: i64,
    pub drop_pct: u64,
    pub max_delay_ms: i64,
    /// Mean time between broker crashes, cut-offs and controller failovers.
    pub crash_every_ms: i64,
    pub cut_every_ms: i64,
    pub failover_every_ms: i64,
    pub produce_every_ms: i64,
}

impl Faults {
    pub fn draw(rng: &mut Rng) -> Self {
        Self {
            run_ms: rng.range(3_000, 8_000),
            drop_pct: rng.range(0, 8) as u64,
            max_delay_ms: rng.range(1, 40),
            crash_every_ms: rng.range(500, 4_000),
            cut_every_ms: rng.range(500, 6_000),
            failover_every_ms: rng.range(1_000, 8_000),
            produce_every_ms: rng.range(2, 20),
        }
    }
}

/// What a finished run saw.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    pub events: usize,
    pub acked: usize,
    pub crashes: usize,
    pub leader_changes: usize,
    pub truncations: usize,
    pub clean_shutdowns: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Node {
    Broker(i32),
    Controller,
    Client,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    epoch: i32,
    value: u64,
}

#[derive(Clone, Debug)]
enum FetchOutcome {
    Records {
        from: i64,
        entries: Vec<Entry>,
        high_watermark: i64,
    },
    Diverging {
        epoch: i32,
        end_offset: i64,
    },
    Error(&'static str),
}

#[derive(Clone, Debug)]
enum Msg {
    Register {
        incarnation: [u8; 16],
    },
    Registered {
        epoch: i64,
    },
    Heartbeat(Heartbeat),
    HeartbeatReply {
        /// The broker asked to shut down and leads nothing now: it may stop.
        shutdown_ok: bool,
        partitions: Vec<PartitionState>,
        /// Records the controller had applied when it answered.
        applied: u64,
    },
    /// The broker's registration is stale or unknown: register again.
    Reregister,
    AlterPartition(AlterPartition),
    AlterPartitionReply {
        partition: i32,
        result: Result<PartitionState, ControllerError>,
    },
    Fetch {
        partition: i32,
        seq: u64,
        current_leader_epoch: i32,
        fetch_offset: i64,
        last_fetched_epoch: i32,
    },
    FetchReply {
        partition: i32,
        seq: u64,
        outcome: FetchOutcome,
    },
    Produce {
        partition: i32,
        value: u64,
    },
    ProduceReply {
        partition: i32,
        value: u64,
        result: Result<i64, &'static str>,
    },
}

#[derive(Clone, Debug)]
enum Event {
    Deliver {
        from: Node,
        to: Node,
        msg: Msg,
    },
    Heartbeat(i32),
    Tick(i32),
    ControllerTick,
    /// A broker's fdatasync of one partition's log up to `len` completed.
    Synced {
        broker: i32,
        partition: i32,
        len: usize,
        generation: u64,
    },
    /// A follower's next fetch is due (after an idle answer, an error or a timeout).
    FetchDue {
        broker: i32,
        partition: i32,
        seq: u64,
    },
    AlterTimeout {
        broker: i32,
        partition: i32,
        seq: u64,
    },
    Produce,
    Crash,
    Restart(i32),
    Cut,
    Heal(i32),
    Failover,
    StopFaults,
}

enum Role {
    None,
    Leader(LeaderReplication),
    Follower { leader: i32, leader_epoch: i32 },
}

/// One broker's copy of one partition.
struct Replica {
    /// Survives a crash up to `synced`.
    log: Vec<Entry>,
    synced: usize,
    cache: LeaderEpochCache,
    high_watermark: i64,
    /// Bumped whenever the log is cut, so that a sync of the old one does not count.
    generation: u64,
    // Lost in a crash:
    known: Option<PartitionState>,
    role: Role,
    /// Produce requests waiting for the HW: (offset, value).
    waiting: Vec<(i64, u64)>,
    /// The fetch in flight (its sequence number), or none.
    fetch_seq: u64,
    fetching: bool,
    /// The ISR change in flight, resent until the controller answers (as Kafka's
    /// AlterPartitionManager does), and its sequence number.
    alter: Option<AlterPartition>,
    alter_seq: u64,
}

impl Replica {
    fn new() -> Self {
        Self {
            log: Vec::new(),
            synced: 0,
            cache: LeaderEpochCache::new(),
            high_watermark: 0,
            generation: 0,
            known: None,
            role: Role::None,
            waiting: Vec::new(),
            fetch_seq: 0,
            fetching: false,
            alter: None,
            alter_seq: 0,
        }
    }

    fn len(&self) -> i64 {
        self.log.len() as i64
    }

    fn truncate(&mut self, to: i64) {
        let to = to.max(0) as usize;
        if to < self.log.len() {
            self.log.truncate(to);
            self.generation += 1;
        }
        self.synced = self.synced.min(self.log.len());
        self.cache.truncate_from_end(self.len());
        self.high_watermark = self.high_watermark.min(self.len());
    }
}

struct Broker {
    alive: bool,
    /// Shutting down cleanly: heartbeats ask for it until the controller says it may stop.
    stopping: bool,
    incarnation: u64,
    epoch: Option<i64>,
    metadata_applied: u64,
    replicas: BTreeMap<i32, Replica>,
}

struct Sim {
    now: i64,
    seq: u64,
    rng: Rng,
    faults: Faults,
    faults_on: bool,
    queue: BTreeMap<(i64, u64), Event>,
    controller: Controller,
    brokers: BTreeMap<i32, Broker>,
    /// Brokers cut off from everyone.
    cut: BTreeMap<i32, ()>,
    settings: ReplicationSettings,
    /// Per partition, everything below the highest HW any leader announced.
    committed: BTreeMap<i32, Vec<Entry>>,
    /// Per (partition, leader epoch), the broker that led it.
    leaders: BTreeMap<(i32, i32), i32>,
    /// Acknowledged writes: (partition, offset, value).
    acked: Vec<(i32, i64, u64)>,
    next_value: u64,
    outcome: Outcome,
    /// Print every event (`SIM_TRACE=1`), to follow a failing seed.
    trace: bool,
}

/// Runs one seed; `Err` names the first broken invariant.
pub fn run(seed: u64) -> Result<Outcome, String> {
    let mut rng = Rng::new(seed);
    let faults = Faults::draw(&mut rng);
    let mut sim = Sim {
        now: 0,
        seq: 0,
        rng,
        faults,
        faults_on: true,
        queue: BTreeMap::new(),
        controller: Controller::new(Default::default(), CONTROLLER_SETTINGS, 0),
        brokers: BTreeMap::new(),
        cut: BTreeMap::new(),
        settings: ReplicationSettings {
            replica_lag_time_max_ms: 1_000,
            min_insync_replicas: 2,
        },
        committed: BTreeMap::new(),
        leaders: BTreeMap::new(),
        acked: Vec::new(),
        next_value: 1,
        outcome: Outcome::default(),
        trace: std::env::var_os("SIM_TRACE").is_some(),
    };
    sim.start()?;
    sim.finish()?;
    Ok(sim.outcome)
}

impl Sim {
    fn at(&mut self, delay: i64, event: Event) {
        self.seq += 1;
        self.queue
            .insert((self.now + delay.max(0), self.seq), event);
    }

    fn jitter(&mut self, mean: i64) -> i64 {
        self.rng.range(mean / 2, mean * 3 / 2)
    }

    fn send(&mut self, from: Node, to: Node, msg: Msg) {
        let cut = |n: Node| matches!(n, Node::Broker(b) if self.cut.contains_key(&b));
        if cut(from) || cut(to) || (self.faults_on && self.rng.chance(self.faults.drop_pct)) {
            return;
        }
        let delay = if self.faults_on {
            self.rng.range(1, self.faults.max_delay_ms)
        } else {
            1
        };
        self.at(delay, Event::Deliver { from, to, msg });
    }

    fn start(&mut self) -> Result<(), String> {
        // Brokers register; once all are unfenced the topic is created.
        for id in 1..=BROKERS {
            let replicas = (0..PARTITIONS).map(|p| (p, Replica::new())).collect();
            self.brokers.insert(
                id,
                Broker {
                    alive: true,
                    stopping: false,
                    incarnation: 1,
                    epoch: None,
                    metadata_applied: 0,
                    replicas,
                },
            );
        }
        let mut events = Vec::new();
        for id in 1..=BROKERS {
            let r = self
                .controller
                .register_broker(id, incarnation(id, 1), vec![], None, 0)
                .map_err(|e| format!("registration: {e:?}"))?;
            self.controller.replay(&r.records);
            self.brokers.get_mut(&id).expect("broker").epoch = Some(r.response);
        }
        for id in 1..=BROKERS {
            let hb = Heartbeat {
                broker_id: id,
                broker_epoch: self.brokers[&id].epoch.unwrap_or(-1),
                metadata_applied: self.controller.image().applied,
                want_shutdown: false,
            };
            let r = self
                .controller
                .heartbeat(hb, 0)
                .map_err(|e| format!("heartbeat: {e:?}"))?;
            self.controller.replay(&r.records);
        }
        let topic = NewTopic {
            name: "sim".into(),
            id: TOPIC,
            partitions: PARTITIONS,
            replication_factor: BROKERS as i16,
            assignment: None,
        };
        let (start, shift) = (self.rng.range(0, 2) as usize, self.rng.range(0, 2) as usize);
        let r = self
            .controller
            .create_topic(&topic, start, shift)
            .map_err(|e| format!("create topic: {e:?}"))?;
        self.controller.replay(&r.records);
        for id in 1..=BROKERS {
            events.push((self.rng.range(0, HEARTBEAT_MS), Event::Heartbeat(id)));
            events.push((self.rng.range(0, TICK_MS), Event::Tick(id)));
        }
        events.push((TICK_MS, Event::ControllerTick));
        events.push((1, Event::Produce));
        let f = self.faults;
        events.push((self.rng.range(0, f.crash_every_ms * 2), Event::Crash));
        events.push((self.rng.range(0, f.cut_every_ms * 2), Event::Cut));
        events.push((self.rng.range(0, f.failover_every_ms * 2), Event::Failover));
        events.push((f.run_ms, Event::StopFaults));
        for (d, e) in events {
            self.at(d, e);
        }
        let end = f.run_ms + HEAL_MS;
        while let Some((&(at, seq), _)) = self.queue.first_key_value() {
            if at > end {
                break;
            }
            let event = self.queue.remove(&(at, seq)).expect("queued");
            self.now = at;
            self.outcome.events += 1;
            if self.outcome.events > MAX_EVENTS {
                return Err(format!("more than {MAX_EVENTS} events by {at} ms"));
            }
            if self.trace {
                eprintln!("{at:>6} {event:?}");
            }
            self.handle(event)?;
            self.check()?;
        }
        Ok(())
    }

    fn handle(&mut self, event: Event) -> Result<(), String> {
        match event {
            Event::Deliver { from, to, msg } => match to {
                Node::Controller => self.at_controller(from, msg),
                Node::Broker(b) if self.brokers[&b].alive => self.at_broker(b, from, msg)?,
                Node::Broker(_) => {}
                Node::Client => self.at_client(msg)?,
            },
            Event::Heartbeat(b) => {
                if self.brokers[&b].alive {
                    self.heartbeat(b);
                    self.at(HEARTBEAT_MS, Event::Heartbeat(b));
                }
            }
            Event::Tick(b) => {
                if self.brokers[&b].alive {
                    let now = self.now;
                    for p in 0..PARTITIONS {
                        let effects = match &mut self.replica(b, p).role {
                            Role::Leader(l) => l.on_tick(now),
                            _ => continue,
                        };
                        self.leader_effects(b, p, effects)?;
                    }
                    self.at(TICK_MS, Event::Tick(b));
                }
            }
            Event::ControllerTick => {
                let r = self.controller.tick(self.now);
                self.controller.replay(&r.records);
                self.at(TICK_MS, Event::ControllerTick);
            }
            Event::Synced {
                broker,
                partition,
                len,
                generation,
            } => self.synced(broker, partition, len, generation)?,
            Event::FetchDue {
                broker,
                partition,
                seq,
            } => {
                let alive = self.brokers[&broker].alive;
                let r = self.replica(broker, partition);
                if alive && r.fetch_seq == seq {
                    r.fetching = false;
                    self.fetch(broker, partition);
                }
            }
            Event::AlterTimeout {
                broker,
                partition,
                seq,
            } => {
                let r = self.replica(broker, partition);
                if r.alter_seq == seq && matches!(r.role, Role::Leader(_)) {
                    self.send_alter(broker, partition);
                }
            }
            Event::Produce => {
                self.produce();
                let d = self.jitter(self.faults.produce_every_ms);
                self.at(d.max(1), Event::Produce);
            }
            Event::Crash => {
                if self.faults_on {
                    let b = self.rng.range(1, BROKERS as i64) as i32;
                    if self.rng.chance(30) {
                        self.begin_shutdown(b);
                    } else if self.brokers[&b].alive {
                        self.crash(b);
                        let d = self.rng.range(100, 2_000);
                        self.at(d, Event::Restart(b));
                    }
                    let d = self.jitter(self.faults.crash_every_ms);
                    self.at(d, Event::Crash);
                }
            }
            Event::Restart(b) => self.restart(b),
            Event::Cut => {
                if self.faults_on {
                    let b = self.rng.range(1, BROKERS as i64) as i32;
                    if self.cut.insert(b, ()).is_none() {
                        let d = self.rng.range(200, 3_000);
                        self.at(d, Event::Heal(b));
                    }
                    let d = self.jitter(self.faults.cut_every_ms);
                    self.at(d, Event::Cut);
                }
            }
            Event::Heal(b) => {
                self.cut.remove(&b);
            }
            Event::Failover => {
                if self.faults_on {
                    // A new active controller: the committed records, fresh sessions.
                    let image = self.controller.image().clone();
                    self.controller = Controller::new(image, CONTROLLER_SETTINGS, self.now);
                    let d = self.jitter(self.faults.failover_every_ms);
                    self.at(d, Event::Failover);
                }
            }
            Event::StopFaults => {
                self.faults_on = false;
                self.cut.clear();
                for b in 1..=BROKERS {
                    if !self.brokers[&b].alive {
                        self.restart(b);
                    }
                }
            }
        }
        Ok(())
    }

    fn replica(&mut self, b: i32, p: i32) -> &mut Replica {
        self.brokers
            .get_mut(&b)
            .and_then(|br| br.replicas.get_mut(&p))
            .expect("every broker holds every partition")
    }

    fn crash(&mut self, b: i32) {
        self.outcome.crashes += 1;
        let broker = self.brokers.get_mut(&b).expect("broker");
        broker.alive = false;
        broker.stopping = false;
        broker.epoch = None;
        broker.metadata_applied = 0;
        for r in broker.replicas.values_mut() {
            let synced = r.synced as i64;
            r.truncate(synced);
            r.generation += 1;
            r.known = None;
            r.role = Role::None;
            r.waiting.clear();
            r.fetching = false;
            r.fetch_seq += 1;
            r.alter = None;
            r.alter_seq += 1;
        }
        // Its connections die with it.
        self.queue.retain(|_, e| match e {
            Event::Deliver { from, to, .. } => *from != Node::Broker(b) && *to != Node::Broker(b),
            _ => true,
        });
    }

    fn restart(&mut self, b: i32) {
        let broker = self.brokers.get_mut(&b).expect("broker");
        if broker.alive {
            return;
        }
        broker.alive = true;
        broker.incarnation += 1;
        let inc = incarnation(b, broker.incarnation);
        self.send(
            Node::Broker(b),
            Node::Controller,
            Msg::Register { incarnation: inc },
        );
        self.at(HEARTBEAT_MS, Event::Heartbeat(b));
        self.at(TICK_MS, Event::Tick(b));
    }

    fn heartbeat(&mut self, b: i32) {
        let broker = &self.brokers[&b];
        let msg = match broker.epoch {
            None => Msg::Register {
                incarnation: incarnation(b, broker.incarnation),
            },
            Some(epoch) => Msg::Heartbeat(Heartbeat {
                broker_id: b,
                broker_epoch: epoch,
                metadata_applied: broker.metadata_applied,
                want_shutdown: broker.stopping,
            }),
        };
        self.send(Node::Broker(b), Node::Controller, msg);
    }

    /// A SIGTERM: the broker asks the controller to move its leaderships away, and stops once
    /// it leads nothing, its logs synced.
    fn begin_shutdown(&mut self, b: i32) {
        let broker = self.brokers.get_mut(&b).expect("broker");
        if broker.alive && broker.epoch.is_some() && !broker.stopping {
            broker.stopping = true;
            self.heartbeat(b);
        }
    }

    fn stop_cleanly(&mut self, b: i32) -> Result<(), String> {
        if let Some(p) = self.controller.image().partitions().find(|p| p.leader == b) {
            return Err(format!(
                "broker {b} was let shut down while it leads partition {}",
                p.partition
            ));
        }
        self.outcome.clean_shutdowns += 1;
        for r in self
            .brokers
            .get_mut(&b)
            .expect("broker")
            .replicas
            .values_mut()
        {
            r.synced = r.log.len();
        }
        self.crash(b);
        self.outcome.crashes -= 1;
        let d = self.rng.range(100, 2_000);
        self.at(d, Event::Restart(b));
        Ok(())
    }

    fn at_controller(&mut self, from: Node, msg: Msg) {
        let Node::Broker(b) = from else { return };
        match msg {
            Msg::Register { incarnation } => {
                if let Ok(r) =
                    self.controller
                        .register_broker(b, incarnation, vec![], None, self.now)
                {
                    self.controller.replay(&r.records);
                    self.send(from, Node::Broker(b), Msg::Registered { epoch: r.response });
                }
            }
            Msg::Heartbeat(hb) => match self.controller.heartbeat(hb, self.now) {
                Ok(r) => {
                    self.controller.replay(&r.records);
                    let partitions = self.controller.image().partitions().cloned().collect();
                    let reply = Msg::HeartbeatReply {
                        shutdown_ok: r.response.shutdown_ok,
                        partitions,
                        applied: self.controller.image().applied,
                    };
                    self.send(Node::Controller, from, reply);
                }
                Err(ControllerError::StaleBrokerEpoch | ControllerError::BrokerIdNotRegistered) => {
                    self.send(Node::Controller, from, Msg::Reregister);
                }
                Err(_) => {}
            },
            Msg::AlterPartition(req) => {
                let result = self.controller.alter_partition(&req).map(|r| {
                    self.controller.replay(&r.records);
                    r.response
                });
                let reply = Msg::AlterPartitionReply {
                    partition: req.partition,
                    result,
                };
                self.send(Node::Controller, from, reply);
            }
            _ => {}
        }
    }

    fn at_broker(&mut self, b: i32, from: Node, msg: Msg) -> Result<(), String> {
        match msg {
            Msg::Registered { epoch } => {
                self.brokers.get_mut(&b).expect("broker").epoch = Some(epoch);
            }
            Msg::Reregister => {
                self.brokers.get_mut(&b).expect("broker").epoch = None;
            }
            Msg::HeartbeatReply {
                shutdown_ok,
                partitions,
                applied,
            } => {
                let broker = self.brokers.get_mut(&b).expect("broker");
                broker.metadata_applied = broker.metadata_applied.max(applied);
                if broker.stopping && shutdown_ok {
                    return self.stop_cleanly(b);
                }
                for p in partitions {
                    self.metadata(b, p)?;
                }
            }
            Msg::AlterPartitionReply { partition, result } => {
                let now = self.now;
                let r = self.replica(b, partition);
                if r.alter.is_none() {
                    return Ok(());
                }
                let effects = match (&mut r.role, result) {
                    (Role::Leader(l), Ok(p)) if p.leader_epoch == l.leader_epoch() => {
                        r.alter = None;
                        r.alter_seq += 1;
                        if p.partition_epoch > l.partition_epoch() {
                            l.on_isr_committed(&p.isr, p.partition_epoch, now)
                        } else {
                            Effects::default()
                        }
                    }
                    // The broker registered again: the retry goes with its new epoch.
                    (_, Err(ControllerError::StaleBrokerEpoch)) => Effects::default(),
                    // Refused on its merits, so nothing was applied: back to the committed ISR.
                    (
                        Role::Leader(l),
                        Err(
                            ControllerError::IneligibleReplica(_)
                            | ControllerError::InvalidRequest(_),
                        ),
                    ) => {
                        r.alter = None;
                        r.alter_seq += 1;
                        l.on_isr_rejected();
                        Effects::default()
                    }
                    // The partition moved on (a new partition or leader epoch, another leader):
                    // the controller may well have applied this change before, and the reply
                    // was lost, so it stays pending, its members counted toward HW, until the
                    // metadata that says what happened arrives (Kafka keeps its pending ISR
                    // state too). Reverting here let a deposed leader move HW past the log
                    // of the replica the controller had made leader (seed 9181).
                    (Role::Leader(_), Err(_)) => {
                        r.alter = None;
                        r.alter_seq += 1;
                        Effects::default()
                    }
                    _ => Effects::default(),
                };
                self.leader_effects(b, partition, effects)?;
            }
            Msg::Fetch {
                partition,
                seq,
                current_leader_epoch,
                fetch_offset,
                last_fetched_epoch,
            } => {
                let Node::Broker(f) = from else {
                    return Ok(());
                };
                let now = self.now;
                let r = self.replica(b, partition);
                let (outcome, effects) = match &mut r.role {
                    Role::Leader(l) if current_leader_epoch < l.leader_epoch() => {
                        (FetchOutcome::Error("FENCED_LEADER_EPOCH"), None)
                    }
                    Role::Leader(l) if current_leader_epoch > l.leader_epoch() => {
                        (FetchOutcome::Error("UNKNOWN_LEADER_EPOCH"), None)
                    }
                    Role::Leader(l) => {
                        let len = r.log.len() as i64;
                        match replica::diverging_epoch(
                            &r.cache,
                            len,
                            fetch_offset,
                            last_fetched_epoch,
                        ) {
                            Some((epoch, end_offset)) => {
                                (FetchOutcome::Diverging { epoch, end_offset }, None)
                            }
                            None if fetch_offset > len => {
                                (FetchOutcome::Error("OFFSET_OUT_OF_RANGE"), None)
                            }
                            None => {
                                let effects = l.on_follower_fetch(f, fetch_offset, now);
                                let from = fetch_offset as usize;
                                let to = (from + MAX_ENTRIES_PER_FETCH).min(r.log.len());
                                let outcome = FetchOutcome::Records {
                                    from: fetch_offset,
                                    entries: r.log[from..to].to_vec(),
                                    high_watermark: l.high_watermark(),
                                };
                                (outcome, Some(effects))
                            }
                        }
                    }
                    _ => (FetchOutcome::Error("NOT_LEADER_OR_FOLLOWER"), None),
                };
                if let Some(effects) = effects {
                    self.leader_effects(b, partition, effects)?;
                }
                let reply = Msg::FetchReply {
                    partition,
                    seq,
                    outcome,
                };
                self.send(Node::Broker(b), from, reply);
            }
            Msg::FetchReply {
                partition,
                seq,
                outcome,
            } => self.fetched(b, partition, seq, outcome)?,
            Msg::Produce { partition, value } => {
                let r = self.replica(b, partition);
                let result = match &r.role {
                    Role::Leader(l) => match l.check_acks_all() {
                        Ok(()) => {
                            let offset = r.log.len() as i64;
                            r.log.push(Entry {
                                epoch: l.leader_epoch(),
                                value,
                            });
                            r.waiting.push((offset, value));
                            None
                        }
                        Err(_) => Some(Err("NOT_ENOUGH_REPLICAS")),
                    },
                    _ => Some(Err("NOT_LEADER_OR_FOLLOWER")),
                };
                match result {
                    Some(result) => {
                        let reply = Msg::ProduceReply {
                            partition,
                            value,
                            result,
                        };
                        self.send(Node::Broker(b), Node::Client, reply);
                    }
                    None => self.schedule_sync(b, partition),
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn schedule_sync(&mut self, b: i32, p: i32) {
        let r = self.replica(b, p);
        let (len, generation) = (r.log.len(), r.generation);
        let d = self.rng.range(0, 3);
        self.at(
            d,
            Event::Synced {
                broker: b,
                partition: p,
                len,
                generation,
            },
        );
    }

    fn synced(&mut self, b: i32, p: i32, len: usize, generation: u64) -> Result<(), String> {
        if !self.brokers[&b].alive {
            return Ok(());
        }
        let now = self.now;
        let r = self.replica(b, p);
        if r.generation != generation {
            return Ok(());
        }
        r.synced = r.synced.max(len.min(r.log.len()));
        let synced = r.synced as i64;
        match &mut r.role {
            Role::Leader(l) => {
                let effects = l.on_leader_end(synced, now);
                self.leader_effects(b, p, effects)?;
            }
            Role::Follower { .. } => self.fetch(b, p),
            Role::None => {}
        }
        Ok(())
    }

    /// The controller's view of a partition reached broker `b`.
    fn metadata(&mut self, b: i32, p: PartitionState) -> Result<(), String> {
        let now = self.now;
        let settings = self.settings;
        let partition = p.partition;
        let r = self.replica(b, partition);
        if r.known
            .as_ref()
            .is_some_and(|k| k.partition_epoch >= p.partition_epoch)
        {
            return Ok(());
        }
        r.known = Some(p.clone());
        let mut became_leader = false;
        let effects = match &mut r.role {
            Role::Leader(l) if p.leader == b && l.leader_epoch() == p.leader_epoch => {
                if p.partition_epoch > l.partition_epoch() {
                    r.alter = None;
                    r.alter_seq += 1;
                    l.on_isr_committed(&p.isr, p.partition_epoch, now)
                } else {
                    Effects::default()
                }
            }
            _ if p.leader == b => {
                r.alter = None;
                r.cache.assign(p.leader_epoch, r.log.len() as i64);
                let durable = r.synced as i64;
                let start = LeaderStart {
                    leader_id: b,
                    leader_epoch: p.leader_epoch,
                    partition_epoch: p.partition_epoch,
                    replicas: &p.replicas,
                    isr: &p.isr,
                    epoch_start_offset: r.log.len() as i64,
                    leader_end: durable,
                    high_watermark: r.high_watermark.min(durable),
                };
                r.role = Role::Leader(LeaderReplication::new(start, now, settings));
                became_leader = true;
                Effects::default()
            }
            Role::Follower {
                leader,
                leader_epoch,
            } if *leader == p.leader && *leader_epoch == p.leader_epoch => Effects::default(),
            _ => {
                let waiting = std::mem::take(&mut r.waiting);
                r.alter = None;
                r.role = if p.leader != NO_LEADER && p.replicas.contains(&b) {
                    Role::Follower {
                        leader: p.leader,
                        leader_epoch: p.leader_epoch,
                    }
                } else {
                    Role::None
                };
                r.fetching = false;
                r.fetch_seq += 1;
                for (_, value) in waiting {
                    let reply = Msg::ProduceReply {
                        partition,
                        value,
                        result: Err("NOT_LEADER_OR_FOLLOWER"),
                    };
                    self.send(Node::Broker(b), Node::Client, reply);
                }
                self.fetch(b, partition);
                Effects::default()
            }
        };
        if became_leader {
            self.became_leader(b, partition, p.leader_epoch)?;
        }
        self.leader_effects(b, partition, effects)
    }

    fn became_leader(&mut self, b: i32, p: i32, epoch: i32) -> Result<(), String> {
        self.outcome.leader_changes += 1;
        if let Some(other) = self.leaders.insert((p, epoch), b) {
            if other != b {
                return Err(format!(
                    "partition {p} epoch {epoch} led by both {other} and {b}"
                ));
            }
        }
        let committed = self.committed.get(&p).cloned().unwrap_or_default();
        let log = &self.replica(b, p).log;
        if log.len() < committed.len() || log[..committed.len()] != committed[..] {
            return Err(format!(
                "broker {b} leads partition {p} at epoch {epoch} without the committed prefix \
                 ({} entries; it has {})",
                committed.len(),
                log.len()
            ));
        }
        Ok(())
    }

    fn leader_effects(&mut self, b: i32, p: i32, effects: Effects) -> Result<(), String> {
        if let Some(hw) = effects.high_watermark {
            self.commit(b, p, hw)?;
        }
        if let Some(proposal) = effects.propose_isr {
            let r = self.replica(b, p);
            let Role::Leader(l) = &r.role else {
                return Ok(());
            };
            r.alter = Some(AlterPartition {
                broker_id: b,
                broker_epoch: -1,
                topic_id: TOPIC,
                partition: p,
                leader_epoch: l.leader_epoch(),
                partition_epoch: proposal.partition_epoch,
                new_isr: proposal.isr,
            });
            self.send_alter(b, p);
        }
        Ok(())
    }

    /// Sends (again) the ISR change in flight, with the broker's current epoch.
    fn send_alter(&mut self, b: i32, p: i32) {
        let epoch = self.brokers[&b].epoch;
        let r = self.replica(b, p);
        r.alter_seq += 1;
        let seq = r.alter_seq;
        let Some(req) = r.alter.as_mut() else {
            return;
        };
        if let Some(epoch) = epoch {
            req.broker_epoch = epoch;
            let msg = Msg::AlterPartition(req.clone());
            self.send(Node::Broker(b), Node::Controller, msg);
        }
        self.at(
            REQUEST_TIMEOUT_MS,
            Event::AlterTimeout {
                broker: b,
                partition: p,
                seq,
            },
        );
    }

    /// Leader `b` moved partition `p`'s HW to `hw`: the committed prefix grows, waiting
    /// producers are answered.
    fn commit(&mut self, b: i32, p: i32, hw: i64) -> Result<(), String> {
        let r = self.replica(b, p);
        r.high_watermark = hw;
        let log = r.log.clone();
        let (done, waiting): (Vec<_>, Vec<_>) = r.waiting.drain(..).partition(|(o, _)| *o < hw);
        r.waiting = waiting;
        let committed = self.committed.entry(p).or_default();
        let n = committed.len().min(hw as usize);
        if log[..n] != committed[..n] {
            return Err(format!(
                "leader {b} of partition {p} moved HW to {hw} over a log that differs from \
                 the committed prefix"
            ));
        }
        if hw as usize > committed.len() {
            *committed = log[..hw as usize].to_vec();
        }
        for (offset, value) in done {
            let reply = Msg::ProduceReply {
                partition: p,
                value,
                result: Ok(offset),
            };
            self.send(Node::Broker(b), Node::Client, reply);
        }
        Ok(())
    }

    fn fetch(&mut self, b: i32, p: i32) {
        let r = self.replica(b, p);
        let Role::Follower {
            leader,
            leader_epoch,
        } = r.role
        else {
            return;
        };
        if r.fetching {
            return;
        }
        if r.synced < r.log.len() {
            // A follower fetches from the end of what it has synced.
            self.schedule_sync(b, p);
            return;
        }
        r.fetching = true;
        r.fetch_seq += 1;
        let seq = r.fetch_seq;
        let msg = Msg::Fetch {
            partition: p,
            seq,
            current_leader_epoch: leader_epoch,
            fetch_offset: r.log.len() as i64,
            last_fetched_epoch: r.log.last().map_or(UNDEFINED_EPOCH, |e| e.epoch),
        };
        self.send(Node::Broker(b), Node::Broker(leader), msg);
        self.at(
            REQUEST_TIMEOUT_MS,
            Event::FetchDue {
                broker: b,
                partition: p,
                seq,
            },
        );
    }

    fn fetched(&mut self, b: i32, p: i32, seq: u64, outcome: FetchOutcome) -> Result<(), String> {
        let r = self.replica(b, p);
        if r.fetch_seq != seq || !r.fetching || !matches!(r.role, Role::Follower { .. }) {
            return Ok(());
        }
        r.fetching = false;
        r.fetch_seq += 1;
        let seq = r.fetch_seq;
        let again = match outcome {
            FetchOutcome::Records {
                from,
                entries,
                high_watermark,
            } => {
                if from != r.len() {
                    Some(0)
                } else {
                    for e in &entries {
                        r.cache.assign(e.epoch, r.len());
                        r.log.push(*e);
                    }
                    r.high_watermark = r.high_watermark.max(high_watermark.min(r.len()));
                    if entries.is_empty() {
                        Some(FETCH_IDLE_MS)
                    } else {
                        None
                    }
                }
            }
            FetchOutcome::Diverging { epoch, end_offset } => {
                let t =
                    replica::truncation_for(&r.cache, r.len(), r.high_watermark, epoch, end_offset);
                r.truncate(t.to);
                self.outcome.truncations += 1;
                Some(0)
            }
            // The leader's log and the follower's agree up to the fetch offset once the epochs
            // say so, so a fetch past the leader's end means the epoch rules failed.
            FetchOutcome::Error("OFFSET_OUT_OF_RANGE") => {
                return Err(format!(
                    "broker {b} fetched partition {p} past its leader's end"
                ));
            }
            FetchOutcome::Error(_) => Some(FETCH_IDLE_MS),
        };
        match again {
            Some(0) => self.fetch(b, p),
            Some(d) => {
                self.replica(b, p).fetch_seq = seq;
                self.at(
                    d,
                    Event::FetchDue {
                        broker: b,
                        partition: p,
                        seq,
                    },
                );
            }
            None => self.schedule_sync(b, p),
        }
        Ok(())
    }

    fn produce(&mut self) {
        let p = self.rng.range(0, PARTITIONS as i64 - 1) as i32;
        let Some(leader) = self
            .controller
            .image()
            .partition(&TOPIC, p)
            .map(|s| s.leader)
            .filter(|&l| l != NO_LEADER)
        else {
            return;
        };
        let value = self.next_value;
        self.next_value += 1;
        self.send(
            Node::Client,
            Node::Broker(leader),
            Msg::Produce {
                partition: p,
                value,
            },
        );
    }

    fn at_client(&mut self, msg: Msg) -> Result<(), String> {
        if let Msg::ProduceReply {
            partition,
            value,
            result: Ok(offset),
        } = msg
        {
            let committed = self.committed.get(&partition).cloned().unwrap_or_default();
            if committed.get(offset as usize).map(|e| e.value) != Some(value) {
                return Err(format!(
                    "value {value} acknowledged at {partition}/{offset} but not committed there"
                ));
            }
            self.acked.push((partition, offset, value));
            self.outcome.acked += 1;
        }
        Ok(())
    }

    /// The invariants that must hold after every step.
    fn check(&self) -> Result<(), String> {
        for (&b, broker) in &self.brokers {
            for (&p, r) in &broker.replicas {
                let committed = self.committed.get(&p).map_or(&[][..], Vec::as_slice);
                let upto = (r.high_watermark as usize).min(committed.len());
                if r.log.len() < r.high_watermark as usize || r.log[..upto] != committed[..upto] {
                    return Err(format!(
                        "broker {b} partition {p}: log disagrees with the committed prefix \
                         below its HW {}",
                        r.high_watermark
                    ));
                }
                if let Role::Leader(l) = &r.role {
                    for m in l.isr() {
                        let member = &self.brokers[&m].replicas[&p];
                        if member.synced < l.high_watermark() as usize {
                            return Err(format!(
                                "partition {p}: leader {b}'s HW {} is past ISR member {m}'s \
                                 synced log end {}",
                                l.high_watermark(),
                                member.synced
                            ));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// With the faults over, no broker may still wait to shut down, and every partition must
    /// have a leader whose log holds every acknowledged write where it was acknowledged.
    fn finish(&self) -> Result<(), String> {
        if let Some((b, _)) = self.brokers.iter().find(|(_, br)| br.alive && br.stopping) {
            return Err(format!(
                "broker {b} asked to shut down and was never let stop"
            ));
        }
        for p in 0..PARTITIONS {
            let state = self
                .controller
                .image()
                .partition(&TOPIC, p)
                .ok_or("the topic vanished")?;
            if state.leader == NO_LEADER {
                return Err(format!(
                    "partition {p} has no leader after the faults stopped"
                ));
            }
            let log = &self.brokers[&state.leader].replicas[&p].log;
            for &(ap, offset, value) in &self.acked {
                if ap == p && log.get(offset as usize).map(|e| e.value) != Some(value) {
                    return Err(format!(
                        "acknowledged value {value} at {p}/{offset} is not in leader {}'s log",
                        state.leader
                    ));
                }
            }
        }
        Ok(())
    }
}

fn incarnation(broker: i32, n: u64) -> [u8; 16] {
    let mut id = [0; 16];
    id[..4].copy_from_slice(&broker.to_be_bytes());
    id[8..].copy_from_slice(&n.to_be_bytes());
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_replays_the_same_run() {
        assert_eq!(run(7), run(7));
        assert!(run(7).is_ok(), "{:?}", run(7));
    }

    #[test]
    fn a_run_acknowledges_writes() {
        let out = run(1).expect("seed 1");
        assert!(out.acked > 0, "{out:?}");
    }
}

#[cfg(test)]
mod sweep {
    use super::{run, Outcome};

    /// `SIM_SEEDS` (10,000) seeds from `SIM_FIRST_SEED` (0), on every CPU; a failing seed is
    /// replayed with `SIM_FIRST_SEED=<seed> SIM_SEEDS=1`.
    #[test]
    fn many_seeds_keep_the_invariants() {
        let var = |name: &str, default: u64| {
            std::env::var(name)
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(default)
        };
        let (first, seeds) = (var("SIM_FIRST_SEED", 0), var("SIM_SEEDS", 10_000));
        let workers = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
        let started = std::time::Instant::now();
        let results: Vec<(Outcome, Vec<(u64, String)>)> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..workers)
                .map(|w| {
                    scope.spawn(move || {
                        let mut total = Outcome::default();
                        let mut failures = Vec::new();
                        for seed in (first + w..first + seeds).step_by(workers as usize) {
                            match run(seed) {
                                Ok(o) => {
                                    total.events += o.events;
                                    total.acked += o.acked;
                                    total.crashes += o.crashes;
                                    total.leader_changes += o.leader_changes;
                                    total.truncations += o.truncations;
                                    total.clean_shutdowns += o.clean_shutdowns;
                                }
                                Err(e) => failures.push((seed, e)),
                            }
                        }
                        (total, failures)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("a simulation thread panicked"))
                .collect()
        });
        let mut failures: Vec<(u64, String)> = results
            .iter()
            .flat_map(|(_, f)| f.iter().cloned())
            .collect();
        failures.sort();
        let sum = |f: fn(&Outcome) -> usize| results.iter().map(|(o, _)| f(o)).sum::<usize>();
        eprintln!(
            "{seeds} seeds in {:.1} s: {} events, {} writes acknowledged, {} crashes, {} clean \
             shutdowns, {} leaderships, {} truncations; {} failed",
            started.elapsed().as_secs_f64(),
            sum(|o| o.events),
            sum(|o| o.acked),
            sum(|o| o.crashes),
            sum(|o| o.clean_shutdowns),
            sum(|o| o.leader_changes),
            sum(|o| o.truncations),
            failures.len()
        );
        for (seed, e) in failures.iter().take(10) {
            eprintln!("seed {seed}: {e}");
        }
        assert!(failures.is_empty(), "{} seeds failed", failures.len());
        assert!(sum(|o| o.acked) > 0 && sum(|o| o.truncations) > 0);
        assert!(seeds < 100 || sum(|o| o.clean_shutdowns) > 0);
    }
}
