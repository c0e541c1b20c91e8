//! Where a topic's replicas go: Kafka's `AdminUtils.assignReplicasToBrokers`. Partition p's
//! first replica (its preferred leader) is broker `(p + start) mod n` of the broker list, and
//! its other replicas follow at a shift that grows by one every n partitions, so that partition
//! 0 of every topic does not land on the same broker and followers spread evenly. With
//! `start = shift = 0` this is the seeds' rule: replica j of partition i on broker (i + j) mod n.
//! When every broker has a rack the list alternates racks and no two replicas share a rack
//! while a rack without one is left.
//!
//! Pure: the caller picks the start index and the shift (at random in the controller, fixed in
//! tests), so the same inputs give the same assignment.

use std::collections::{BTreeMap, BTreeSet};

/// A broker as placement sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokerSlot {
    pub id: i32,
    pub rack: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PlacementError {
    /// INVALID_REPLICATION_FACTOR
    InvalidReplicationFactor(String),
    /// INVALID_PARTITIONS
    InvalidPartitions(String),
}

/// Replicas for partitions `first_partition..first_partition + partitions`, by partition. `start`
/// and `shift` are Kafka's random start index and replica shift (any value; reduced mod n).
pub fn assign_replicas(
    brokers: &[BrokerSlot],
    partitions: i32,
    replication_factor: i16,
    first_partition: i32,
    start: usize,
    shift: usize,
) -> Result<Vec<Vec<i32>>, PlacementError> {
    if partitions <= 0 {
        return Err(PlacementError::InvalidPartitions(
            "Number of partitions must be larger than 0.".into(),
        ));
    }
    if replication_factor <= 0 {
        return Err(PlacementError::InvalidReplicationFactor(
            "Replication factor must be larger than 0.".into(),
        ));
    }
    let rf = replication_factor as usize;
    if rf > brokers.len() {
        return Err(PlacementError::InvalidReplicationFactor(format!(
            "Replication factor: {rf} larger than available brokers: {}.",
            brokers.len()
        )));
    }
    let with_racks = brokers.iter().filter(|b| b.rack.is_some()).count();
    let starts = starts(brokers.len(), partitions, first_partition, start, shift);
    if with_racks == brokers.len() {
        let (ids, rack_of) = rack_alternated(brokers);
        Ok(rack_aware(&ids, &rack_of, rf, starts))
    } else if with_racks == 0 {
        let mut ids: Vec<i32> = brokers.iter().map(|b| b.id).collect();
        ids.sort_unstable();
        Ok(rack_unaware(&ids, rf, starts))
    } else {
        Err(PlacementError::InvalidReplicationFactor(
            "Not all brokers have rack information for replica rack aware assignment.".into(),
        ))
    }
}

/// Kafka's `replicaIndex`: the k-th follower's index, at a shift of 1..n-1 from the first.
fn replica_index(first: usize, shift: usize, k: usize, n: usize) -> usize {
    (first + 1 + (shift + k) % (n - 1).max(1)) % n
}

/// Per partition, in order: the index of its first replica in a list of `n` brokers and the
/// replica shift in force for it (one more every `n` partitions).
fn starts(
    n: usize,
    partitions: i32,
    first_partition: i32,
    start: usize,
    shift: usize,
) -> Vec<(usize, usize)> {
    let first_partition = first_partition.max(0) as usize;
    let mut shift = shift % n;
    (first_partition..first_partition + partitions as usize)
        .map(|p| {
            if p > 0 && p % n == 0 {
                shift += 1;
            }
            ((p + start % n) % n, shift)
        })
        .collect()
}

fn rack_unaware(ids: &[i32], rf: usize, starts: Vec<(usize, usize)>) -> Vec<Vec<i32>> {
    let n = ids.len();
    starts
        .into_iter()
        .map(|(first, shift)| {
            std::iter::once(ids[first])
                .chain((0..rf - 1).map(|k| ids[replica_index(first, shift, k, n)]))
                .collect()
        })
        .collect()
}

/// The brokers ordered rack by rack in turn (racks sorted, brokers sorted within a rack).
fn rack_alternated(brokers: &[BrokerSlot]) -> (Vec<i32>, BTreeMap<i32, String>) {
    let mut by_rack: BTreeMap<String, Vec<i32>> = BTreeMap::new();
    let mut rack_of = BTreeMap::new();
    for b in brokers {
        let rack = b.rack.clone().unwrap_or_default();
        by_rack.entry(rack.clone()).or_default().push(b.id);
        rack_of.insert(b.id, rack);
    }
    for ids in by_rack.values_mut() {
        ids.sort_unstable();
    }
    let mut iters: Vec<_> = by_rack.into_values().map(|v| v.into_iter()).collect();
    let mut out = Vec::with_capacity(brokers.len());
    let mut rack = 0;
    while out.len() < brokers.len() {
        if let Some(id) = iters[rack].next() {
            out.push(id);
        }
        rack = (rack + 1) % iters.len();
    }
    (out, rack_of)
}

fn rack_aware(
    ids: &[i32],
    rack_of: &BTreeMap<i32, String>,
    rf: usize,
    starts: Vec<(usize, usize)>,
) -> Vec<Vec<i32>> {
    let n = ids.len();
    let racks = rack_of.values().collect::<BTreeSet<_>>().len();
    starts
        .into_iter()
        .map(|(first, shift)| {
            let mut replicas = vec![ids[first]];
            let mut racks_used = BTreeSet::from([&rack_of[&ids[first]]]);
            let mut k = 0;
            while replicas.len() < rf {
                let broker = ids[replica_index(first, shift * racks, k, n)];
                let rack = &rack_of[&broker];
                // Skip a broker whose rack already has a replica while some rack has none, and
                // one that already has a replica while some broker has none.
                if (!racks_used.contains(rack) || racks_used.len() == racks)
                    && (!replicas.contains(&broker) || replicas.len() == n)
                {
                    replicas.push(broker);
                    racks_used.insert(rack);
                }
                k += 1;
            }
            replicas
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn brokers(ids: &[i32]) -> Vec<BrokerSlot> {
        ids.iter()
            .map(|&id| BrokerSlot { id, rack: None })
            .collect()
    }

    #[test]
    fn fixed_start_gives_the_seeds_rule() {
        let a = assign_replicas(&brokers(&[1, 2, 3]), 6, 3, 0, 0, 0).unwrap();
        // Replica j of partition i on broker (i + j) mod n for the first n partitions, then the
        // followers shift by one.
        assert_eq!(
            a,
            vec![
                vec![1, 2, 3],
                vec![2, 3, 1],
                vec![3, 1, 2],
                vec![1, 3, 2],
                vec![2, 1, 3],
                vec![3, 2, 1],
            ]
        );
    }

    #[test]
    fn matches_kafkas_published_example() {
        // AdminUtils' doc comment: 5 brokers, 10 partitions, RF 3, start index 0, shift 0.
        let a = assign_replicas(&brokers(&[0, 1, 2, 3, 4]), 10, 3, 0, 0, 0).unwrap();
        let firsts: Vec<i32> = a.iter().map(|r| r[0]).collect();
        assert_eq!(firsts, vec![0, 1, 2, 3, 4, 0, 1, 2, 3, 4]);
        let seconds: Vec<i32> = a.iter().map(|r| r[1]).collect();
        assert_eq!(seconds, vec![1, 2, 3, 4, 0, 2, 3, 4, 0, 1]);
        let thirds: Vec<i32> = a.iter().map(|r| r[2]).collect();
        assert_eq!(thirds, vec![2, 3, 4, 0, 1, 3, 4, 0, 1, 2]);
    }

    #[test]
    fn every_partition_gets_distinct_brokers_and_leaders_spread() {
        for start in 0..4 {
            for shift in 0..4 {
                let a = assign_replicas(&brokers(&[5, 6, 7, 8]), 12, 3, 0, start, shift).unwrap();
                for r in &a {
                    assert_eq!(r.iter().collect::<BTreeSet<_>>().len(), 3, "{r:?}");
                }
                let mut leaders = BTreeMap::new();
                for r in &a {
                    *leaders.entry(r[0]).or_insert(0) += 1;
                }
                assert!(leaders.values().all(|&c| c == 3), "{leaders:?}");
            }
        }
    }

    #[test]
    fn racks_are_alternated_and_not_shared() {
        let racked = |id: i32, rack: &str| BrokerSlot {
            id,
            rack: Some(rack.into()),
        };
        let bs = vec![
            racked(0, "a"),
            racked(1, "a"),
            racked(2, "b"),
            racked(3, "b"),
            racked(4, "c"),
            racked(5, "c"),
        ];
        assert_eq!(rack_alternated(&bs).0, vec![0, 2, 4, 1, 3, 5]);
        let rack = |id: i32| bs.iter().find(|b| b.id == id).unwrap().rack.clone();
        for start in 0..6 {
            let a = assign_replicas(&bs, 12, 3, 0, start, start + 1).unwrap();
            for r in &a {
                let racks: BTreeSet<_> = r.iter().map(|&id| rack(id)).collect();
                assert_eq!(racks.len(), 3, "{r:?}");
            }
        }
    }

    #[test]
    fn bad_requests_get_kafkas_errors() {
        assert!(matches!(
            assign_replicas(&brokers(&[1]), 1, 3, 0, 0, 0),
            Err(PlacementError::InvalidReplicationFactor(m)) if m.contains("larger than available brokers: 1")
        ));
        assert!(matches!(
            assign_replicas(&brokers(&[1]), 0, 1, 0, 0, 0),
            Err(PlacementError::InvalidPartitions(_))
        ));
        let mixed = vec![
            BrokerSlot {
                id: 1,
                rack: Some("a".into()),
            },
            BrokerSlot { id: 2, rack: None },
        ];
        assert!(assign_replicas(&mixed, 1, 1, 0, 0, 0).is_err());
        // Added partitions continue the pattern where the topic left off.
        let all = assign_replicas(&brokers(&[1, 2, 3]), 6, 2, 0, 1, 2).unwrap();
        let tail = assign_replicas(&brokers(&[1, 2, 3]), 3, 2, 3, 1, 2).unwrap();
        assert_eq!(&all[3..], &tail[..]);
    }
}
