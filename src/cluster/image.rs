//! The cluster metadata as records, and the image they build (KRaft's `MetadataImage`): brokers
//! (endpoints, rack, epoch, fenced, shutting down), topics and their partitions (replicas, ISR,
//! leader, leader epoch, partition epoch), and the next producer id block.
//!
//! The controller's log holds [`MetadataRecord`]s; every node replays them in order with
//! [`ClusterImage::apply`], so every node that applied the same records holds the same image.
//! Invariants, asserted on apply: a partition's leader is -1 (none) or a member of its ISR,
//! the ISR is a non-empty subset of the replicas, and leader and partition epochs never go back.
//!
//! One controller operation's records travel as one batch ([`encode_batch`]): `SLMR`, u16
//! version (1), u32 CRC-32 (IEEE) of the payload, then an rkyv archive of the records,
//! validated before use, so that a batch is applied whole or refused whole.

use std::collections::BTreeMap;

use rkyv::rancor::Error as RkyvError;

pub type TopicId = [u8; 16];

/// Kafka's "no leader".
pub const NO_LEADER: i32 = -1;

#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Endpoint {
    pub listener: String,
    pub host: String,
    pub port: u16,
}

#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct BrokerRegistration {
    pub id: i32,
    /// Rises with every registration of any broker; a request with an older one is stale.
    pub epoch: i64,
    /// Names one run of the broker process, so that a restart is told from a duplicate.
    pub incarnation: [u8; 16],
    pub endpoints: Vec<Endpoint>,
    pub rack: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct PartitionState {
    pub topic_id: TopicId,
    pub partition: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    pub leader: i32,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
}

impl PartitionState {
    fn check(&self) {
        assert!(!self.isr.is_empty(), "{self:?}: empty ISR");
        assert!(
            self.isr.iter().all(|r| self.replicas.contains(r)),
            "{self:?}: an ISR member is not a replica"
        );
        assert!(
            self.leader == NO_LEADER || self.isr.contains(&self.leader),
            "{self:?}: the leader is not in the ISR"
        );
    }
}

#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum MetadataRecord {
    /// A broker (re)registered; it starts fenced.
    RegisterBroker(BrokerRegistration),
    /// The broker may lead and be in ISRs again.
    UnfenceBroker {
        id: i32,
        epoch: i64,
    },
    /// The broker missed its session: it leads nothing and joins no ISR until unfenced.
    FenceBroker {
        id: i32,
        epoch: i64,
    },
    /// The broker asked to shut down: its leaderships are being moved away. It stays so until
    /// it registers again.
    BrokerShuttingDown {
        id: i32,
        epoch: i64,
    },
    Topic {
        name: String,
        id: TopicId,
    },
    /// A partition's whole state: created, or changed (ISR, leader, replicas).
    Partition(PartitionState),
    RemoveTopic {
        id: TopicId,
    },
    /// Producer ids below `next` are handed out.
    ProducerIds {
        broker_id: i32,
        next: i64,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokerState {
    pub registration: BrokerRegistration,
    pub fenced: bool,
    pub shutting_down: bool,
    /// How many records the image held once this registration was applied: a broker whose
    /// metadata reached it has caught up and may be unfenced.
    pub registered_at: u64,
}

impl BrokerState {
    /// May lead a partition and be added to an ISR.
    pub fn eligible(&self) -> bool {
        !self.fenced && !self.shutting_down
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicImage {
    pub name: String,
    pub id: TopicId,
    pub partitions: BTreeMap<i32, PartitionState>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterImage {
    pub brokers: BTreeMap<i32, BrokerState>,
    pub topics: BTreeMap<TopicId, TopicImage>,
    pub topic_ids: BTreeMap<String, TopicId>,
    /// The highest broker epoch handed out.
    pub last_broker_epoch: i64,
    pub next_producer_id: i64,
    /// Records applied.
    pub applied: u64,
}

impl ClusterImage {
    pub fn broker(&self, id: i32) -> Option<&BrokerState> {
        self.brokers.get(&id)
    }

    pub fn eligible(&self, id: i32) -> bool {
        self.broker(id).is_some_and(BrokerState::eligible)
    }

    pub fn topic_by_name(&self, name: &str) -> Option<&TopicImage> {
        self.topics.get(self.topic_ids.get(name)?)
    }

    pub fn partition(&self, topic_id: &TopicId, partition: i32) -> Option<&PartitionState> {
        self.topics.get(topic_id)?.partitions.get(&partition)
    }

    pub fn partitions(&self) -> impl Iterator<Item = &PartitionState> {
        self.topics.values().flat_map(|t| t.partitions.values())
    }

    pub fn apply(&mut self, record: &MetadataRecord) {
        self.applied += 1;
        match record {
            MetadataRecord::RegisterBroker(r) => {
                self.last_broker_epoch = self.last_broker_epoch.max(r.epoch);
                self.brokers.insert(
                    r.id,
                    BrokerState {
                        registration: r.clone(),
                        fenced: true,
                        shutting_down: false,
                        registered_at: self.applied,
                    },
                );
            }
            MetadataRecord::UnfenceBroker { id, epoch } => {
                if let Some(b) = self.broker_at(*id, *epoch) {
                    b.fenced = false;
                }
            }
            MetadataRecord::FenceBroker { id, epoch } => {
                if let Some(b) = self.broker_at(*id, *epoch) {
                    b.fenced = true;
                }
            }
            MetadataRecord::BrokerShuttingDown { id, epoch } => {
                if let Some(b) = self.broker_at(*id, *epoch) {
                    b.shutting_down = true;
                }
            }
            MetadataRecord::Topic { name, id } => {
                self.topic_ids.insert(name.clone(), *id);
                self.topics.insert(
                    *id,
                    TopicImage {
                        name: name.clone(),
                        id: *id,
                        partitions: BTreeMap::new(),
                    },
                );
            }
            MetadataRecord::Partition(p) => {
                p.check();
                let Some(topic) = self.topics.get_mut(&p.topic_id) else {
                    return;
                };
                if let Some(old) = topic.partitions.get(&p.partition) {
                    assert!(
                        p.leader_epoch >= old.leader_epoch
                            && p.partition_epoch > old.partition_epoch,
                        "epochs went back: {old:?} then {p:?}"
                    );
                }
                topic.partitions.insert(p.partition, p.clone());
            }
            MetadataRecord::RemoveTopic { id } => {
                if let Some(t) = self.topics.remove(id) {
                    self.topic_ids.remove(&t.name);
                }
            }
            MetadataRecord::ProducerIds { next, .. } => {
                self.next_producer_id = self.next_producer_id.max(*next);
            }
        }
    }

    fn broker_at(&mut self, id: i32, epoch: i64) -> Option<&mut BrokerState> {
        self.brokers
            .get_mut(&id)
            .filter(|b| b.registration.epoch == epoch)
    }
}

const BATCH: crate::sealed::Seal = crate::sealed::Seal {
    magic: b"SLMR",
    version: 1,
    what: "metadata record batch",
};

/// One operation's records as the metadata log stores them.
pub fn encode_batch(records: &[MetadataRecord]) -> Vec<u8> {
    // Serializing plain values into memory cannot fail.
    let payload = rkyv::to_bytes::<RkyvError>(&records.to_vec())
        .map(|v| v.to_vec())
        .unwrap_or_default();
    BATCH.wrap(&payload)
}

/// Reads a batch; the error names what is wrong with it.
pub fn decode_batch(bytes: &[u8]) -> Result<Vec<MetadataRecord>, String> {
    let aligned = BATCH.open(bytes)?;
    rkyv::from_bytes::<Vec<MetadataRecord>, RkyvError>(&aligned)
        .map_err(|e| format!("malformed metadata batch: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_round_trip_and_damage_is_refused() {
        let records = vec![
            MetadataRecord::RegisterBroker(BrokerRegistration {
                id: 2,
                epoch: 7,
                incarnation: [9; 16],
                endpoints: vec![Endpoint {
                    listener: "PLAINTEXT".into(),
                    host: "127.0.0.2".into(),
                    port: 9092,
                }],
                rack: Some("r1".into()),
            }),
            MetadataRecord::Topic {
                name: "t".into(),
                id: [1; 16],
            },
            MetadataRecord::Partition(PartitionState {
                topic_id: [1; 16],
                partition: 0,
                replicas: vec![2, 1, 3],
                isr: vec![2, 1],
                leader: 2,
                leader_epoch: 4,
                partition_epoch: 9,
            }),
            MetadataRecord::ProducerIds {
                broker_id: 2,
                next: 1000,
            },
        ];
        let bytes = encode_batch(&records);
        assert_eq!(decode_batch(&bytes), Ok(records));
        let mut damaged = bytes.clone();
        let last = damaged.len() - 1;
        damaged[last] ^= 1;
        assert!(decode_batch(&damaged).unwrap_err().contains("checksum"));
        assert!(decode_batch(&bytes[..5]).is_err());
        assert_eq!(decode_batch(&encode_batch(&[])), Ok(vec![]));
    }
}
