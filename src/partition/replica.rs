//! Replication state of one partition, as a state machine without I/O: on the leader, the
//! followers' log end offsets (LEO), the in-sync replica set (ISR) and the high watermark (HW);
//! on a follower, what to truncate when the leader reports a diverging epoch (KIP-101, KIP-279).
//! Time comes in as a value; the runtime turns the returned effects into AlterPartition
//! requests, HW moves and Fetch answers.
//!
//! Kafka's rules, kept here:
//! - HW = the smallest LEO over the leader and every replica of the *maximal* ISR (the committed
//!   ISR plus one being added; a replica being removed still counts until the controller
//!   commits), and over caught-up replicas about to join. It never decreases, never passes a
//!   counted replica's LEO, and does not move while the committed ISR is smaller than
//!   `min.insync.replicas` (KIP-966).
//! - A follower's LEO is the offset it fetches from, and a follower fetches from the end of what
//!   it has fdatasynced, so a replica counts toward HW only with its data on disk.
//! - A replica is caught up when its LEO equals the leader's, or when it reached the leader's
//!   LEO at most `replica.lag.time.max.ms` ago; an ISR member that is not leaves the ISR, and a
//!   replica whose LEO reaches both HW and the start of the leader's epoch joins it. One ISR
//!   change is in flight at a time, applied only when the controller commits it.
//! - The leader is always in the ISR; leader and partition epochs never decrease.

use std::collections::{BTreeMap, BTreeSet};

use super::epoch_cache::{LeaderEpochCache, UNDEFINED_EPOCH, UNDEFINED_OFFSET};

/// Kafka's "no offset known yet" for a replica the leader has not heard from.
pub const UNKNOWN_OFFSET: i64 = -1;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplicationSettings {
    /// `replica.lag.time.max.ms`
    pub replica_lag_time_max_ms: i64,
    /// `min.insync.replicas`
    pub min_insync_replicas: usize,
}

/// What the leader knows about one follower.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FollowerProgress {
    pub log_end_offset: i64,
    pub last_fetch_ms: i64,
    /// The leader's LEO when this follower last fetched.
    pub last_fetch_leader_end: i64,
    /// The last time this follower's LEO reached the leader's.
    pub last_caught_up_ms: i64,
}

impl FollowerProgress {
    fn caught_up(&self, leader_end: i64, now_ms: i64, lag_max_ms: i64) -> bool {
        self.log_end_offset == leader_end || now_ms - self.last_caught_up_ms <= lag_max_ms
    }
}

/// An ISR change for the controller (AlterPartition): the ISR wanted and the partition epoch it
/// was computed from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IsrProposal {
    pub isr: Vec<i32>,
    pub partition_epoch: i32,
}

/// What an input changed, for the runtime to act on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Effects {
    /// The HW moved to this offset.
    pub high_watermark: Option<i64>,
    /// Send this AlterPartition.
    pub propose_isr: Option<IsrProposal>,
}

/// Why acks=all cannot be taken on now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NotEnoughReplicas {
    pub isr: usize,
    pub min_insync_replicas: usize,
}

/// What a broker brings to a leadership it was just given.
#[derive(Clone, Copy, Debug)]
pub struct LeaderStart<'a> {
    pub leader_id: i32,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    pub replicas: &'a [i32],
    pub isr: &'a [i32],
    /// Its log end: where the new epoch starts writing.
    pub epoch_start_offset: i64,
    /// Its log end as far as it counts for HW (what is fdatasynced, under the default rule).
    pub leader_end: i64,
    /// The HW it had as a follower, at most `leader_end`.
    pub high_watermark: i64,
}

/// The leader's side of one partition's replication.
#[derive(Clone, Debug)]
pub struct LeaderReplication {
    leader_id: i32,
    leader_epoch: i32,
    partition_epoch: i32,
    /// The log end offset when this leader's epoch began: a replica joins the ISR only once it
    /// holds everything before it.
    epoch_start_offset: i64,
    isr: BTreeSet<i32>,
    /// An ISR change sent to the controller and not yet answered.
    pending: Option<BTreeSet<i32>>,
    followers: BTreeMap<i32, FollowerProgress>,
    /// The leader's own LEO as far as it counts (fdatasynced under the default flush rule).
    leader_end: i64,
    high_watermark: i64,
    settings: ReplicationSettings,
}

impl LeaderReplication {
    /// This broker became leader as `start` says. ISR members start as caught up now, the
    /// others as never; no follower's LEO is known yet, so the HW stays put until every ISR
    /// member has fetched.
    pub fn new(start: LeaderStart<'_>, now_ms: i64, settings: ReplicationSettings) -> Self {
        let LeaderStart {
            leader_id,
            leader_epoch,
            partition_epoch,
            replicas,
            isr,
            epoch_start_offset,
            leader_end,
            high_watermark,
        } = start;
        assert!(
            isr.contains(&leader_id),
            "leader {leader_id} is not in the ISR {isr:?}"
        );
        assert!(
            high_watermark <= leader_end && leader_end <= epoch_start_offset,
            "HW {high_watermark}, durable end {leader_end}, log end {epoch_start_offset}"
        );
        let followers = replicas
            .iter()
            .filter(|&&r| r != leader_id)
            .map(|&r| {
                let caught_up = if isr.contains(&r) {
                    now_ms
                } else {
                    i64::MIN / 2
                };
                let progress = FollowerProgress {
                    log_end_offset: UNKNOWN_OFFSET,
                    last_fetch_ms: i64::MIN / 2,
                    last_fetch_leader_end: UNKNOWN_OFFSET,
                    last_caught_up_ms: caught_up,
                };
                (r, progress)
            })
            .collect();
        Self {
            leader_id,
            leader_epoch,
            partition_epoch,
            epoch_start_offset,
            isr: isr.iter().copied().collect(),
            pending: None,
            followers,
            leader_end,
            high_watermark,
            settings,
        }
    }

    pub fn leader_epoch(&self) -> i32 {
        self.leader_epoch
    }

    pub fn partition_epoch(&self) -> i32 {
        self.partition_epoch
    }

    pub fn high_watermark(&self) -> i64 {
        self.high_watermark
    }

    pub fn isr(&self) -> Vec<i32> {
        self.isr.iter().copied().collect()
    }

    pub fn follower(&self, replica: i32) -> Option<FollowerProgress> {
        self.followers.get(&replica).copied()
    }

    /// acks=all is refused before the append while the committed ISR is below
    /// `min.insync.replicas` (NOT_ENOUGH_REPLICAS).
    pub fn check_acks_all(&self) -> Result<(), NotEnoughReplicas> {
        if self.isr.len() < self.settings.min_insync_replicas {
            return Err(NotEnoughReplicas {
                isr: self.isr.len(),
                min_insync_replicas: self.settings.min_insync_replicas,
            });
        }
        Ok(())
    }

    /// The leader's own log end (as it counts for HW) moved, by an append or a sync.
    pub fn on_leader_end(&mut self, leader_end: i64, now_ms: i64) -> Effects {
        assert!(
            leader_end >= self.high_watermark,
            "the leader's log end {leader_end} went below HW {}",
            self.high_watermark
        );
        self.leader_end = leader_end;
        Effects {
            high_watermark: self.advance_high_watermark(now_ms),
            propose_isr: None,
        }
    }

    /// A follower fetched from `fetch_offset` (its LEO). The caller has checked that the
    /// replica is one of this partition's and that the offset is within the leader's log.
    pub fn on_follower_fetch(&mut self, replica: i32, fetch_offset: i64, now_ms: i64) -> Effects {
        let leader_end = self.leader_end;
        let Some(f) = self.followers.get_mut(&replica) else {
            return Effects::default();
        };
        let caught_up_at = if fetch_offset >= leader_end {
            now_ms
        } else if fetch_offset >= f.last_fetch_leader_end {
            f.last_fetch_ms
        } else {
            f.last_caught_up_ms
        };
        *f = FollowerProgress {
            log_end_offset: fetch_offset,
            last_fetch_ms: now_ms,
            last_fetch_leader_end: leader_end,
            last_caught_up_ms: f.last_caught_up_ms.max(caught_up_at),
        };
        let propose_isr = self.maybe_expand(replica);
        Effects {
            high_watermark: self.advance_high_watermark(now_ms),
            propose_isr,
        }
    }

    /// Time passed: ISR members that fell behind for longer than `replica.lag.time.max.ms` are
    /// proposed for removal.
    pub fn on_tick(&mut self, now_ms: i64) -> Effects {
        let mut effects = Effects::default();
        if self.pending.is_none() {
            let lagging: Vec<i32> = self
                .isr
                .iter()
                .copied()
                .filter(|r| *r != self.leader_id)
                .filter(|r| {
                    self.followers.get(r).is_some_and(|f| {
                        !f.caught_up(
                            self.leader_end,
                            now_ms,
                            self.settings.replica_lag_time_max_ms,
                        )
                    })
                })
                .collect();
            if !lagging.is_empty() {
                let wanted: BTreeSet<i32> = self
                    .isr
                    .iter()
                    .copied()
                    .filter(|r| !lagging.contains(r))
                    .collect();
                effects.propose_isr = Some(self.propose(wanted));
            }
        }
        effects.high_watermark = self.advance_high_watermark(now_ms);
        effects
    }

    /// The controller committed an ISR (ours or its own, e.g. after fencing a broker) at
    /// `partition_epoch`. The leader stays in it.
    pub fn on_isr_committed(&mut self, isr: &[i32], partition_epoch: i32, now_ms: i64) -> Effects {
        assert!(
            partition_epoch >= self.partition_epoch,
            "partition epoch went back from {} to {partition_epoch}",
            self.partition_epoch
        );
        assert!(isr.contains(&self.leader_id), "the leader left the ISR");
        self.isr = isr.iter().copied().collect();
        self.partition_epoch = partition_epoch;
        self.pending = None;
        Effects {
            high_watermark: self.advance_high_watermark(now_ms),
            propose_isr: None,
        }
    }

    /// The controller refused the change in flight on its merits, so it applied nothing
    /// (INELIGIBLE_REPLICA, INVALID_REQUEST): the next fetch or tick computes a new one. Any
    /// other outcome must not come here. A change that was lost or timed out is sent again, and
    /// one refused because the partition moved on (a stale partition or leader epoch, another
    /// leader) stays pending until the metadata that says what happened arrives
    /// ([`Self::on_isr_committed`]): the controller may have applied it before and the answer
    /// been lost, so until then the replicas it adds keep counting toward HW. That is what
    /// keeps HW at or below the log end of every member of the controller's ISR, from which
    /// the next leader is chosen.
    pub fn on_isr_rejected(&mut self) {
        self.pending = None;
    }

    fn maybe_expand(&mut self, replica: i32) -> Option<IsrProposal> {
        if self.pending.is_some() || self.isr.contains(&replica) {
            return None;
        }
        let end = self.followers.get(&replica)?.log_end_offset;
        if end < self.high_watermark || end < self.epoch_start_offset {
            return None;
        }
        let mut wanted = self.isr.clone();
        wanted.insert(replica);
        Some(self.propose(wanted))
    }

    fn propose(&mut self, wanted: BTreeSet<i32>) -> IsrProposal {
        debug_assert!(wanted.contains(&self.leader_id));
        self.pending = Some(wanted.clone());
        IsrProposal {
            isr: wanted.into_iter().collect(),
            partition_epoch: self.partition_epoch,
        }
    }

    /// The committed ISR plus a member being added.
    fn maximal_isr(&self) -> BTreeSet<i32> {
        match &self.pending {
            Some(p) => self.isr.union(p).copied().collect(),
            None => self.isr.clone(),
        }
    }

    fn advance_high_watermark(&mut self, now_ms: i64) -> Option<i64> {
        if self.isr.len() < self.settings.min_insync_replicas {
            return None;
        }
        let maximal = self.maximal_isr();
        let lag = self.settings.replica_lag_time_max_ms;
        let candidate = self
            .followers
            .iter()
            .filter(|(r, f)| maximal.contains(r) || f.caught_up(self.leader_end, now_ms, lag))
            .map(|(_, f)| f.log_end_offset)
            .fold(self.leader_end, i64::min);
        if candidate <= self.high_watermark {
            return None;
        }
        self.high_watermark = candidate;
        Some(candidate)
    }
}

/// The leader's check of a follower's `LastFetchedEpoch` (KIP-320): where the follower's last
/// epoch ends in the leader's log. `Some((epoch, end_offset))` is a diverging epoch for the
/// follower to truncate by, `None` means its log agrees up to the fetch offset.
pub fn diverging_epoch(
    cache: &LeaderEpochCache,
    log_end: i64,
    fetch_offset: i64,
    last_fetched_epoch: i32,
) -> Option<(i32, i64)> {
    if last_fetched_epoch == UNDEFINED_EPOCH {
        return None;
    }
    let (epoch, end) = cache.end_offset_for(last_fetched_epoch, log_end);
    (end < fetch_offset || epoch < last_fetched_epoch).then_some((epoch, end))
}

/// Where a follower truncates on a diverging epoch, and whether that is the end of it (or the
/// follower must fetch again with its new last epoch, because it did not know the epoch the
/// leader named).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Truncation {
    pub to: i64,
    pub complete: bool,
}

/// The follower's side of a diverging epoch `(leader_epoch, leader_end)`, given its own epoch
/// cache, log end and high watermark (Kafka's `AbstractFetcherThread` rule).
pub fn truncation_for(
    cache: &LeaderEpochCache,
    log_end: i64,
    high_watermark: i64,
    leader_epoch: i32,
    leader_end: i64,
) -> Truncation {
    if leader_end == UNDEFINED_OFFSET {
        return Truncation {
            to: high_watermark.min(log_end),
            complete: true,
        };
    }
    let (epoch, end) = cache.end_offset_for(leader_epoch, log_end);
    if epoch == UNDEFINED_EPOCH {
        Truncation {
            to: leader_end.min(log_end),
            complete: true,
        }
    } else if epoch != leader_epoch {
        Truncation {
            to: end.min(log_end),
            complete: false,
        }
    } else {
        Truncation {
            to: end.min(leader_end).min(log_end),
            complete: true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SETTINGS: ReplicationSettings = ReplicationSettings {
        replica_lag_time_max_ms: 30_000,
        min_insync_replicas: 2,
    };

    fn start<'a>(isr: &'a [i32], replicas: &'a [i32], end: i64, hw: i64) -> LeaderStart<'a> {
        LeaderStart {
            leader_id: 1,
            leader_epoch: 5,
            partition_epoch: 7,
            replicas,
            isr,
            epoch_start_offset: end,
            leader_end: end,
            high_watermark: hw,
        }
    }

    fn leader(isr: &[i32], end: i64) -> LeaderReplication {
        LeaderReplication::new(start(isr, &[1, 2, 3], end, 0), 0, SETTINGS)
    }

    #[test]
    fn high_watermark_is_the_smallest_isr_log_end() {
        let mut l = leader(&[1, 2, 3], 0);
        assert_eq!(
            l.on_leader_end(100, 1).high_watermark,
            None,
            "no follower fetched yet"
        );
        assert_eq!(l.on_follower_fetch(2, 60, 2).high_watermark, None);
        assert_eq!(l.on_follower_fetch(3, 40, 3).high_watermark, Some(40));
        assert_eq!(l.on_follower_fetch(3, 100, 4).high_watermark, Some(60));
        assert_eq!(l.on_follower_fetch(2, 100, 5).high_watermark, Some(100));
        assert_eq!(l.high_watermark(), 100);
    }

    #[test]
    fn a_lagging_follower_leaves_and_a_caught_up_one_rejoins() {
        let mut l = leader(&[1, 2, 3], 0);
        l.on_leader_end(10, 0);
        l.on_follower_fetch(2, 10, 0);
        l.on_follower_fetch(3, 10, 0);
        assert_eq!(l.high_watermark(), 10);
        l.on_leader_end(50, 1_000);
        l.on_follower_fetch(2, 50, 1_000);
        assert_eq!(l.on_tick(30_000).propose_isr, None, "within the lag");
        let shrink = l.on_tick(31_001).propose_isr.expect("shrink");
        assert_eq!(shrink.isr, vec![1, 2]);
        assert_eq!(shrink.partition_epoch, 7);
        assert_eq!(l.on_tick(40_000).propose_isr, None, "one change in flight");
        assert_eq!(
            l.high_watermark(),
            10,
            "3 still counts until the shrink commits"
        );
        assert_eq!(
            l.on_isr_committed(&[1, 2], 8, 40_001).high_watermark,
            Some(50)
        );
        // 3 catches up past HW and the epoch start: it is proposed back.
        let expand = l
            .on_follower_fetch(3, 50, 41_000)
            .propose_isr
            .expect("expand");
        assert_eq!(expand.isr, vec![1, 2, 3]);
        assert_eq!(expand.partition_epoch, 8);
    }

    #[test]
    fn below_min_insync_acks_all_is_refused_and_hw_waits() {
        let mut l = leader(&[1], 0);
        assert_eq!(
            l.check_acks_all(),
            Err(NotEnoughReplicas {
                isr: 1,
                min_insync_replicas: 2
            })
        );
        assert_eq!(l.on_leader_end(10, 0).high_watermark, None);
        let expand = l
            .on_follower_fetch(2, 0, 1)
            .propose_isr
            .expect("2 reached HW 0");
        assert_eq!(expand.isr, vec![1, 2]);
        l.on_isr_committed(&[1, 2], 8, 2);
        assert!(l.check_acks_all().is_ok());
        assert_eq!(l.on_follower_fetch(2, 10, 3).high_watermark, Some(10));
    }

    #[test]
    fn a_replica_joins_only_after_the_start_of_the_leaders_epoch() {
        let mut l = LeaderReplication::new(start(&[1], &[1, 2], 30, 20), 0, SETTINGS);
        assert_eq!(l.on_follower_fetch(2, 25, 1).propose_isr, None);
        assert!(l.on_follower_fetch(2, 30, 2).propose_isr.is_some());
    }

    #[test]
    fn divergence_and_truncation_follow_kafka() {
        // Leader: epochs 1 at 0, 3 at 10; LEO 20. A follower that wrote epoch 2 from 8 to 15.
        let mut leader_cache = LeaderEpochCache::new();
        leader_cache.assign(1, 0);
        leader_cache.assign(3, 10);
        let mut follower_cache = LeaderEpochCache::new();
        follower_cache.assign(1, 0);
        follower_cache.assign(2, 8);
        assert_eq!(diverging_epoch(&leader_cache, 20, 15, 2), Some((1, 10)));
        // Its own epoch 1 ends at 8, before the leader's end of it: truncate to 8, then done.
        let t = truncation_for(&follower_cache, 15, 5, 1, 10);
        assert_eq!(
            t,
            Truncation {
                to: 8,
                complete: true
            }
        );
        follower_cache.truncate_from_end(8);
        assert_eq!(diverging_epoch(&leader_cache, 20, 8, 1), None);
        assert_eq!(diverging_epoch(&leader_cache, 20, 20, 3), None);
        assert_eq!(
            diverging_epoch(&leader_cache, 20, 12, UNDEFINED_EPOCH),
            None
        );
    }
}
