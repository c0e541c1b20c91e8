//! The transaction state machine of one coordinator, as Kafka's TransactionCoordinator and
//! TransactionMetadata run it for transaction version 1: per transactional id, its producer
//! id and epoch, timeout, state (Empty, Ongoing, PrepareCommit, PrepareAbort, CompleteCommit,
//! CompleteAbort, Dead, PrepareEpochFence) and partitions.
//!
//! Plain logic without I/O or clocks: each request takes the current time and returns either an
//! answer or a [`Transition`] — the metadata to record in `__transaction_state` — which the
//! runtime appends and then completes (`complete`) or gives up (`abandon`). While one is being
//! written the transactional id is busy (CONCURRENT_TRANSACTIONS), as Kafka's pending state.
//! Loading a coordinator is replaying the same records (`replay`).
//!
//! Invariants: a transactional id's epoch never decreases for a producer id; at most one
//! transition is in flight per id; only Ongoing has partitions that are not yet ended.

use std::collections::{BTreeSet, HashMap};

pub const NONE: i16 = 0;
pub const INVALID_REQUEST: i16 = 42;
pub const INVALID_PRODUCER_EPOCH: i16 = 47;
pub const INVALID_TXN_STATE: i16 = 48;
pub const INVALID_PRODUCER_ID_MAPPING: i16 = 49;
pub const INVALID_TRANSACTION_TIMEOUT: i16 = 50;
pub const CONCURRENT_TRANSACTIONS: i16 = 51;
pub const PRODUCER_FENCED: i16 = 90;

pub const NO_PRODUCER_ID: i64 = -1;
pub const NO_PRODUCER_EPOCH: i16 = -1;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TxnState {
    Empty,
    Ongoing,
    PrepareCommit,
    PrepareAbort,
    CompleteCommit,
    CompleteAbort,
    Dead,
    PrepareEpochFence,
}

impl TxnState {
    pub const ALL: [TxnState; 8] = [
        TxnState::Empty,
        TxnState::Ongoing,
        TxnState::PrepareCommit,
        TxnState::PrepareAbort,
        TxnState::CompleteCommit,
        TxnState::CompleteAbort,
        TxnState::Dead,
        TxnState::PrepareEpochFence,
    ];

    /// The `TransactionStatus` code in `__transaction_state`.
    pub fn code(self) -> i8 {
        match self {
            TxnState::Empty => 0,
            TxnState::Ongoing => 1,
            TxnState::PrepareCommit => 2,
            TxnState::PrepareAbort => 3,
            TxnState::CompleteCommit => 4,
            TxnState::CompleteAbort => 5,
            TxnState::Dead => 6,
            TxnState::PrepareEpochFence => 7,
        }
    }

    pub fn from_code(code: i8) -> Option<TxnState> {
        TxnState::ALL.into_iter().find(|s| s.code() == code)
    }

    /// The name DescribeTransactions and ListTransactions use.
    pub fn name(self) -> &'static str {
        match self {
            TxnState::Empty => "Empty",
            TxnState::Ongoing => "Ongoing",
            TxnState::PrepareCommit => "PrepareCommit",
            TxnState::PrepareAbort => "PrepareAbort",
            TxnState::CompleteCommit => "CompleteCommit",
            TxnState::CompleteAbort => "CompleteAbort",
            TxnState::Dead => "Dead",
            TxnState::PrepareEpochFence => "PrepareEpochFence",
        }
    }

    pub fn from_name(name: &str) -> Option<TxnState> {
        TxnState::ALL.into_iter().find(|s| s.name() == name)
    }

    /// The states a transition into this one may come from (Kafka's `validPreviousStates`).
    fn valid_previous(self) -> &'static [TxnState] {
        use TxnState::*;
        match self {
            Empty => &[Empty, CompleteCommit, CompleteAbort],
            Ongoing => &[Ongoing, Empty, CompleteCommit, CompleteAbort],
            PrepareCommit => &[Ongoing],
            PrepareAbort => &[Ongoing, PrepareEpochFence],
            CompleteCommit => &[PrepareCommit],
            CompleteAbort => &[PrepareAbort],
            Dead => &[Empty, CompleteAbort, CompleteCommit],
            PrepareEpochFence => &[Ongoing],
        }
    }
}

/// What `__transaction_state` records about a transactional id (plus the previous producer
/// id and epoch, kept in memory for retries of InitProducerId).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxnMetadata {
    pub producer_id: i64,
    pub last_producer_id: i64,
    pub producer_epoch: i16,
    pub last_producer_epoch: i16,
    pub timeout_ms: i32,
    pub state: TxnState,
    pub partitions: BTreeSet<(String, i32)>,
    /// When the ongoing transaction started (-1: none).
    pub start_ms: i64,
    pub last_update_ms: i64,
}

/// Kafka's `isEpochExhausted`: the epoch leaves no room for the bump a fence needs.
pub fn epoch_exhausted(epoch: i16) -> bool {
    epoch >= i16::MAX - 1
}

/// A change to record before it takes effect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    pub transactional_id: String,
    pub to: TxnMetadata,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Txn {
    pub meta: TxnMetadata,
    /// The transition being written, if any.
    pub pending: Option<TxnState>,
    /// A fence whose record failed to be written: the next fence reuses its epoch.
    fence_failed: bool,
}

/// What InitProducerId leads to.
#[derive(Debug, PartialEq, Eq)]
pub enum Init {
    /// Record this; once written the producer gets its id and epoch.
    Write(Transition),
    /// The previous producer's transaction is open: it is aborted under a bumped epoch
    /// (this transition to PrepareAbort, then markers), and the caller is told
    /// CONCURRENT_TRANSACTIONS so it retries once the abort completed.
    FenceAndAbort(Transition),
    /// A new producer id is needed first: call again with one.
    NeedProducerId,
    Error(i16),
}

/// What EndTxn (or AddPartitionsToTxn) leads to.
#[derive(Debug, PartialEq, Eq)]
pub enum Change {
    Write(Transition),
    /// Nothing to record: answered at once with this code.
    Answer(i16),
}

#[derive(Clone, Copy, Debug)]
pub struct TxnConfig {
    /// `transaction.max.timeout.ms`.
    pub max_timeout_ms: i32,
    /// `transactional.id.expiration.ms`.
    pub id_expiration_ms: i64,
}

impl Default for TxnConfig {
    fn default() -> Self {
        TxnConfig {
            max_timeout_ms: 900_000,
            id_expiration_ms: 604_800_000,
        }
    }
}

/// The transactional ids of one coordinator.
#[derive(Debug, Default)]
pub struct Transactions {
    pub config: TxnConfig,
    txns: HashMap<String, Txn>,
}

impl Transactions {
    pub fn new(config: TxnConfig) -> Transactions {
        Transactions {
            config,
            txns: HashMap::new(),
        }
    }

    pub fn get(&self, id: &str) -> Option<&Txn> {
        self.txns.get(id)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &Txn)> {
        self.txns.iter()
    }

    fn begin(&mut self, id: &str, to: TxnMetadata) -> Transition {
        if let Some(t) = self.txns.get_mut(id) {
            t.pending = Some(to.state);
        }
        Transition {
            transactional_id: id.to_string(),
            to,
        }
    }

    /// InitProducerId with a transactional id. `fresh` is a new producer id when the caller
    /// has one (asked for with `Init::NeedProducerId`).
    pub fn init_producer_id(
        &mut self,
        id: &str,
        timeout_ms: i32,
        expected: Option<(i64, i16)>,
        fresh: Option<i64>,
        now: i64,
    ) -> Init {
        if id.is_empty() {
            return Init::Error(INVALID_REQUEST);
        }
        if timeout_ms <= 0 || timeout_ms > self.config.max_timeout_ms {
            return Init::Error(INVALID_TRANSACTION_TIMEOUT);
        }
        if !self.txns.contains_key(id) {
            let Some(producer_id) = fresh else {
                return Init::NeedProducerId;
            };
            let meta = TxnMetadata {
                producer_id,
                last_producer_id: NO_PRODUCER_ID,
                producer_epoch: NO_PRODUCER_EPOCH,
                last_producer_epoch: NO_PRODUCER_EPOCH,
                timeout_ms,
                state: TxnState::Empty,
                partitions: BTreeSet::new(),
                start_ms: -1,
                last_update_ms: now,
            };
            self.txns.insert(
                id.to_string(),
                Txn {
                    meta,
                    pending: None,
                    fence_failed: false,
                },
            );
        }
        let Some(t) = self.txns.get(id) else {
            return Init::Error(CONCURRENT_TRANSACTIONS);
        };
        if t.pending.is_some() {
            return Init::Error(CONCURRENT_TRANSACTIONS);
        }
        let m = t.meta.clone();
        // Kafka's isValidProducerId: a new id, the current id, or a retry after a rotation.
        let valid = expected.is_none_or(|(pid, epoch)| {
            m.producer_epoch == NO_PRODUCER_EPOCH
                || pid == m.producer_id
                || (pid == m.last_producer_id && epoch_exhausted(epoch))
        });
        if !valid {
            return Init::Error(PRODUCER_FENCED);
        }
        match m.state {
            TxnState::PrepareAbort | TxnState::PrepareCommit => {
                Init::Error(CONCURRENT_TRANSACTIONS)
            }
            TxnState::Empty | TxnState::CompleteAbort | TxnState::CompleteCommit => {
                if epoch_exhausted(m.producer_epoch)
                    && expected.is_none_or(|(_, e)| e == m.producer_epoch)
                {
                    let Some(producer_id) = fresh else {
                        return Init::NeedProducerId;
                    };
                    let to = TxnMetadata {
                        producer_id,
                        last_producer_id: m.producer_id,
                        producer_epoch: 0,
                        last_producer_epoch: if expected.is_some() {
                            m.producer_epoch
                        } else {
                            NO_PRODUCER_EPOCH
                        },
                        timeout_ms,
                        state: TxnState::Empty,
                        partitions: BTreeSet::new(),
                        start_ms: -1,
                        last_update_ms: now,
                    };
                    return Init::Write(self.begin(id, to));
                }
                let bumped = m.producer_epoch + 1;
                let (epoch, last_epoch) = match expected {
                    // A new producer (or a restart): bump.
                    None => (bumped, NO_PRODUCER_EPOCH),
                    // Recovering after an error, and nobody else initialised since: bump.
                    Some((_, e))
                        if m.producer_epoch == NO_PRODUCER_EPOCH || e == m.producer_epoch =>
                    {
                        (bumped, m.producer_epoch)
                    }
                    // A retry of a bump whose answer was lost: the same epoch again.
                    Some((_, e)) if e == m.last_producer_epoch => {
                        (m.producer_epoch, m.last_producer_epoch)
                    }
                    Some(_) => return Init::Error(PRODUCER_FENCED),
                };
                let to = TxnMetadata {
                    producer_epoch: epoch,
                    last_producer_epoch: last_epoch,
                    timeout_ms,
                    state: TxnState::Empty,
                    partitions: BTreeSet::new(),
                    start_ms: -1,
                    last_update_ms: now,
                    ..m
                };
                Init::Write(self.begin(id, to))
            }
            TxnState::Ongoing => match self.fence(id, now) {
                Some(t) => Init::FenceAndAbort(t),
                None => Init::Error(CONCURRENT_TRANSACTIONS),
            },
            TxnState::Dead | TxnState::PrepareEpochFence => Init::Error(CONCURRENT_TRANSACTIONS),
        }
    }

    /// Aborts an Ongoing transaction under a bumped epoch (Kafka's prepareFenceProducerEpoch
    /// followed by an abort not from the client): the producer that held it is fenced.
    fn fence(&mut self, id: &str, now: i64) -> Option<Transition> {
        let t = self.txns.get(id)?;
        if t.meta.state != TxnState::Ongoing || t.pending.is_some() {
            return None;
        }
        let epoch = if t.fence_failed || t.meta.producer_epoch == i16::MAX {
            t.meta.producer_epoch
        } else {
            t.meta.producer_epoch + 1
        };
        let to = TxnMetadata {
            producer_epoch: epoch,
            last_producer_epoch: NO_PRODUCER_EPOCH,
            state: TxnState::PrepareAbort,
            last_update_ms: now,
            ..t.meta.clone()
        };
        Some(self.begin(id, to))
    }

    fn check_producer(&self, id: &str, producer_id: i64, epoch: i16) -> Result<&Txn, i16> {
        let t = self.txns.get(id).ok_or(INVALID_PRODUCER_ID_MAPPING)?;
        if t.meta.producer_id != producer_id {
            return Err(INVALID_PRODUCER_ID_MAPPING);
        }
        if t.meta.producer_epoch != epoch {
            return Err(PRODUCER_FENCED);
        }
        Ok(t)
    }

    /// AddPartitionsToTxn (and AddOffsetsToTxn, for the group's offsets partition).
    pub fn add_partitions(
        &mut self,
        id: &str,
        producer_id: i64,
        epoch: i16,
        partitions: &[(String, i32)],
        now: i64,
    ) -> Change {
        let t = match self.check_producer(id, producer_id, epoch) {
            Ok(t) => t,
            Err(code) => return Change::Answer(code),
        };
        if t.pending.is_some() {
            return Change::Answer(CONCURRENT_TRANSACTIONS);
        }
        let m = &t.meta;
        match m.state {
            TxnState::PrepareCommit | TxnState::PrepareAbort => {
                Change::Answer(CONCURRENT_TRANSACTIONS)
            }
            TxnState::Dead | TxnState::PrepareEpochFence => Change::Answer(CONCURRENT_TRANSACTIONS),
            TxnState::Ongoing if partitions.iter().all(|p| m.partitions.contains(p)) => {
                Change::Answer(NONE)
            }
            state => {
                let start_ms = if state == TxnState::Ongoing {
                    m.start_ms
                } else {
                    now
                };
                let mut all = m.partitions.clone();
                all.extend(partitions.iter().cloned());
                let to = TxnMetadata {
                    state: TxnState::Ongoing,
                    partitions: all,
                    start_ms,
                    last_update_ms: now,
                    ..m.clone()
                };
                Change::Write(self.begin(id, to))
            }
        }
    }

    /// AddPartitionsToTxn with `verify_only` (and a transactional Produce's first write to a
    /// partition): whether each partition is in the producer's ongoing transaction.
    pub fn verify(
        &self,
        id: &str,
        producer_id: i64,
        epoch: i16,
        partitions: &[(String, i32)],
    ) -> Result<Vec<i16>, i16> {
        let t = self.check_producer(id, producer_id, epoch)?;
        if t.pending.is_some()
            || matches!(
                t.meta.state,
                TxnState::PrepareCommit | TxnState::PrepareAbort
            )
        {
            return Err(CONCURRENT_TRANSACTIONS);
        }
        Ok(partitions
            .iter()
            .map(|p| {
                if t.meta.state == TxnState::Ongoing && t.meta.partitions.contains(p) {
                    NONE
                } else {
                    INVALID_TXN_STATE
                }
            })
            .collect())
    }

    /// EndTxn from the client.
    pub fn end_txn(
        &mut self,
        id: &str,
        producer_id: i64,
        epoch: i16,
        commit: bool,
        now: i64,
    ) -> Change {
        let t = match self.check_producer(id, producer_id, epoch) {
            Ok(t) => t,
            Err(code) => return Change::Answer(code),
        };
        if t.pending.is_some() {
            return Change::Answer(CONCURRENT_TRANSACTIONS);
        }
        let same = |s: TxnState| {
            if s == TxnState::CompleteCommit || s == TxnState::PrepareCommit {
                commit
            } else {
                !commit
            }
        };
        match t.meta.state {
            TxnState::Ongoing => {
                let to = TxnMetadata {
                    state: if commit {
                        TxnState::PrepareCommit
                    } else {
                        TxnState::PrepareAbort
                    },
                    last_update_ms: now,
                    ..t.meta.clone()
                };
                Change::Write(self.begin(id, to))
            }
            // A retry of an EndTxn that completed.
            s @ (TxnState::CompleteCommit | TxnState::CompleteAbort) if same(s) => {
                Change::Answer(NONE)
            }
            // A retry of an EndTxn whose markers are being written.
            s @ (TxnState::PrepareCommit | TxnState::PrepareAbort) if same(s) => {
                Change::Answer(CONCURRENT_TRANSACTIONS)
            }
            TxnState::Dead | TxnState::PrepareEpochFence => Change::Answer(CONCURRENT_TRANSACTIONS),
            _ => Change::Answer(INVALID_TXN_STATE),
        }
    }

    /// The markers of a PrepareCommit/PrepareAbort transaction are written: record the end.
    pub fn markers_written(&mut self, id: &str, now: i64) -> Option<Transition> {
        let t = self.txns.get(id)?;
        if t.pending.is_some() {
            return None;
        }
        let state = match t.meta.state {
            TxnState::PrepareCommit => TxnState::CompleteCommit,
            TxnState::PrepareAbort => TxnState::CompleteAbort,
            _ => return None,
        };
        let to = TxnMetadata {
            state,
            partitions: BTreeSet::new(),
            last_update_ms: now,
            ..t.meta.clone()
        };
        Some(self.begin(id, to))
    }

    /// A transition's record was written: it takes effect.
    pub fn complete(&mut self, t: &Transition) {
        let Some(txn) = self.txns.get_mut(&t.transactional_id) else {
            return;
        };
        assert!(
            t.to.state.valid_previous().contains(&txn.meta.state),
            "{}: no transition from {:?} to {:?}",
            t.transactional_id,
            txn.meta.state,
            t.to.state
        );
        if t.to.producer_id == txn.meta.producer_id {
            assert!(
                t.to.producer_epoch >= txn.meta.producer_epoch,
                "a producer's epoch never decreases"
            );
        }
        txn.pending = None;
        txn.fence_failed = false;
        if t.to.state == TxnState::Dead {
            self.txns.remove(&t.transactional_id);
        } else {
            txn.meta = t.to.clone();
        }
    }

    /// A transition's record could not be written: nothing changes (a new id that was never
    /// recorded is forgotten).
    pub fn abandon(&mut self, t: &Transition) {
        let Some(txn) = self.txns.get_mut(&t.transactional_id) else {
            return;
        };
        txn.pending = None;
        if t.to.state == TxnState::PrepareAbort
            && txn.meta.state == TxnState::Ongoing
            && t.to.producer_epoch != txn.meta.producer_epoch
        {
            // A fence that was not recorded still fences in memory (as Kafka bumps the epoch
            // before writing); the next attempt reuses the epoch rather than bumping again.
            txn.meta.producer_epoch = t.to.producer_epoch;
            txn.fence_failed = true;
        }
        if txn.meta.producer_epoch == NO_PRODUCER_EPOCH && txn.meta.state == TxnState::Empty {
            self.txns.remove(&t.transactional_id);
        }
    }

    /// Ongoing transactions past their timeout at `now`, aborted under a bumped epoch (the
    /// producer is fenced), as Kafka's abortTimedOutTransactions.
    pub fn time_out(&mut self, now: i64) -> Vec<Transition> {
        let due: Vec<String> = self
            .txns
            .iter()
            .filter(|(_, t)| {
                t.pending.is_none()
                    && t.meta.state == TxnState::Ongoing
                    && t.meta.start_ms.saturating_add(t.meta.timeout_ms as i64) < now
            })
            .map(|(id, _)| id.clone())
            .collect();
        due.iter().filter_map(|id| self.fence(id, now)).collect()
    }

    /// Transactional ids idle for `transactional.id.expiration.ms` with no transaction open:
    /// each gets a tombstone (a transition to Dead).
    pub fn expire(&mut self, now: i64) -> Vec<Transition> {
        let expiration = self.config.id_expiration_ms;
        let due: Vec<String> = self
            .txns
            .iter()
            .filter(|(_, t)| {
                t.pending.is_none()
                    && matches!(
                        t.meta.state,
                        TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort
                    )
                    && t.meta.last_update_ms.saturating_add(expiration) <= now
            })
            .map(|(id, _)| id.clone())
            .collect();
        due.into_iter()
            .map(|id| {
                let to = TxnMetadata {
                    state: TxnState::Dead,
                    partitions: BTreeSet::new(),
                    last_update_ms: now,
                    ..self.txns[&id].meta.clone()
                };
                self.begin(&id, to)
            })
            .collect()
    }

    /// Loading: the newest record of a transactional id (`None`: its tombstone).
    pub fn replay(&mut self, id: &str, record: Option<TxnMetadata>) {
        match record {
            Some(meta) if meta.state != TxnState::Dead => {
                self.txns.insert(
                    id.to_string(),
                    Txn {
                        meta,
                        pending: None,
                        fence_failed: false,
                    },
                );
            }
            _ => {
                self.txns.remove(id);
            }
        }
    }

    /// Transactions whose end was recorded but whose markers may not all be written (after a
    /// load): their markers are (re)sent.
    pub fn preparing(&self) -> Vec<String> {
        self.txns
            .iter()
            .filter(|(_, t)| {
                t.pending.is_none()
                    && matches!(
                        t.meta.state,
                        TxnState::PrepareCommit | TxnState::PrepareAbort
                    )
            })
            .map(|(id, _)| id.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: &str = "tx";

    fn parts(names: &[(&str, i32)]) -> Vec<(String, i32)> {
        names.iter().map(|(t, p)| (t.to_string(), *p)).collect()
    }

    /// Runs a request's transition to completion.
    fn written(txns: &mut Transactions, t: Transition) -> TxnMetadata {
        txns.complete(&t);
        t.to
    }

    fn init(txns: &mut Transactions, pid: i64, now: i64) -> TxnMetadata {
        match txns.init_producer_id(T, 60_000, None, Some(pid), now) {
            Init::Write(t) => written(txns, t),
            other => panic!("{other:?}"),
        }
    }

    fn begin_txn(txns: &mut Transactions, m: &TxnMetadata, now: i64) {
        match txns.add_partitions(T, m.producer_id, m.producer_epoch, &parts(&[("a", 0)]), now) {
            Change::Write(t) => {
                written(txns, t);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_new_id_needs_a_producer_id_then_starts_at_epoch_0() {
        let mut txns = Transactions::default();
        assert_eq!(
            txns.init_producer_id(T, 60_000, None, None, 0),
            Init::NeedProducerId
        );
        let m = init(&mut txns, 7, 0);
        assert_eq!(
            (m.producer_id, m.producer_epoch, m.state),
            (7, 0, TxnState::Empty)
        );
        // A restart of the producer bumps the epoch under the same id.
        let m = init(&mut txns, 999, 1);
        assert_eq!((m.producer_id, m.producer_epoch), (7, 1));
        assert_eq!(
            txns.init_producer_id(T, 0, None, None, 2),
            Init::Error(INVALID_TRANSACTION_TIMEOUT)
        );
        assert_eq!(
            txns.init_producer_id(T, 900_001, None, None, 2),
            Init::Error(INVALID_TRANSACTION_TIMEOUT)
        );
        assert_eq!(
            txns.init_producer_id("", 1000, None, None, 2),
            Init::Error(INVALID_REQUEST)
        );
    }

    #[test]
    fn the_full_commit_and_abort_cycles() {
        let mut txns = Transactions::default();
        let m = init(&mut txns, 1, 0);
        for commit in [true, false] {
            begin_txn(&mut txns, &m, 10);
            let t = txns.get(T).unwrap();
            assert_eq!((t.meta.state, t.meta.start_ms), (TxnState::Ongoing, 10));
            // Adding the same partitions again records nothing.
            assert_eq!(
                txns.add_partitions(T, 1, 0, &parts(&[("a", 0)]), 11),
                Change::Answer(NONE)
            );
            let Change::Write(prepare) = txns.end_txn(T, 1, 0, commit, 20) else {
                panic!()
            };
            // While the prepare record is written, everything else waits.
            assert_eq!(
                txns.add_partitions(T, 1, 0, &parts(&[("b", 0)]), 20),
                Change::Answer(CONCURRENT_TRANSACTIONS)
            );
            written(&mut txns, prepare);
            let expected = if commit {
                TxnState::PrepareCommit
            } else {
                TxnState::PrepareAbort
            };
            assert_eq!(txns.get(T).unwrap().meta.state, expected);
            assert_eq!(txns.preparing(), vec![T.to_string()]);
            // A retry of the same EndTxn while the markers go out; the other result is wrong.
            assert_eq!(
                txns.end_txn(T, 1, 0, commit, 21),
                Change::Answer(CONCURRENT_TRANSACTIONS)
            );
            assert_eq!(
                txns.end_txn(T, 1, 0, !commit, 21),
                Change::Answer(INVALID_TXN_STATE)
            );
            assert_eq!(
                txns.init_producer_id(T, 60_000, None, None, 21),
                Init::Error(CONCURRENT_TRANSACTIONS)
            );
            let done = txns.markers_written(T, 30).unwrap();
            let m2 = written(&mut txns, done);
            assert!(m2.partitions.is_empty());
            assert_eq!(
                m2.state,
                if commit {
                    TxnState::CompleteCommit
                } else {
                    TxnState::CompleteAbort
                }
            );
            assert_eq!(txns.end_txn(T, 1, 0, commit, 31), Change::Answer(NONE));
            assert_eq!(
                txns.end_txn(T, 1, 0, !commit, 31),
                Change::Answer(INVALID_TXN_STATE)
            );
        }
        // EndTxn with nothing begun.
        let m = init(&mut txns, 1, 40);
        assert_eq!(
            txns.end_txn(T, 1, m.producer_epoch, true, 41),
            Change::Answer(INVALID_TXN_STATE)
        );
    }

    #[test]
    fn fencing_a_producer_with_an_open_transaction() {
        let mut txns = Transactions::default();
        let old = init(&mut txns, 5, 0);
        begin_txn(&mut txns, &old, 1);
        // A second producer with the same id: the open transaction is aborted under epoch 1.
        let Init::FenceAndAbort(abort) = txns.init_producer_id(T, 60_000, None, None, 2) else {
            panic!()
        };
        assert_eq!(
            (abort.to.state, abort.to.producer_epoch),
            (TxnState::PrepareAbort, 1)
        );
        written(&mut txns, abort);
        // The old producer is fenced everywhere.
        assert_eq!(
            txns.add_partitions(T, 5, 0, &parts(&[("a", 1)]), 3),
            Change::Answer(PRODUCER_FENCED)
        );
        assert_eq!(
            txns.end_txn(T, 5, 0, true, 3),
            Change::Answer(PRODUCER_FENCED)
        );
        assert_eq!(
            txns.verify(T, 5, 0, &parts(&[("a", 0)])),
            Err(PRODUCER_FENCED)
        );
        // The new one retries until the abort completed, then gets epoch 2.
        assert_eq!(
            txns.init_producer_id(T, 60_000, None, None, 3),
            Init::Error(CONCURRENT_TRANSACTIONS)
        );
        let done = txns.markers_written(T, 4).unwrap();
        written(&mut txns, done);
        let new = init(&mut txns, 0, 5);
        assert_eq!((new.producer_id, new.producer_epoch), (5, 2));
    }

    #[test]
    fn a_fence_whose_record_failed_does_not_bump_again() {
        let mut txns = Transactions::default();
        let m = init(&mut txns, 5, 0);
        begin_txn(&mut txns, &m, 1);
        let Init::FenceAndAbort(abort) = txns.init_producer_id(T, 60_000, None, None, 2) else {
            panic!()
        };
        txns.abandon(&abort);
        assert_eq!(txns.get(T).unwrap().meta.state, TxnState::Ongoing);
        let Init::FenceAndAbort(again) = txns.init_producer_id(T, 60_000, None, None, 3) else {
            panic!()
        };
        assert_eq!(again.to.producer_epoch, abort.to.producer_epoch);
    }

    #[test]
    fn expected_producer_and_epoch_from_init_v3() {
        let mut txns = Transactions::default();
        let m = init(&mut txns, 5, 0);
        // Recovering after an error with the current epoch: bump, remembering the last.
        let Init::Write(t) = txns.init_producer_id(T, 60_000, Some((5, 0)), None, 1) else {
            panic!()
        };
        let bumped = written(&mut txns, t);
        assert_eq!(
            (bumped.producer_epoch, bumped.last_producer_epoch),
            (1, m.producer_epoch)
        );
        // The same request again (its answer was lost): the same epoch, no second bump.
        let Init::Write(t) = txns.init_producer_id(T, 60_000, Some((5, 0)), None, 2) else {
            panic!()
        };
        assert_eq!(written(&mut txns, t).producer_epoch, 1);
        // Another producer id, or a stale epoch: fenced.
        assert_eq!(
            txns.init_producer_id(T, 60_000, Some((6, 1)), None, 3),
            Init::Error(PRODUCER_FENCED)
        );
        let Init::Write(t) = txns.init_producer_id(T, 60_000, None, None, 3) else {
            panic!()
        };
        written(&mut txns, t);
        assert_eq!(
            txns.init_producer_id(T, 60_000, Some((5, 0)), None, 4),
            Init::Error(PRODUCER_FENCED)
        );
    }

    #[test]
    fn epoch_exhaustion_rotates_to_a_new_producer_id() {
        let mut txns = Transactions::default();
        init(&mut txns, 5, 0);
        txns.txns.get_mut(T).unwrap().meta.producer_epoch = i16::MAX - 1;
        assert_eq!(
            txns.init_producer_id(T, 60_000, None, None, 1),
            Init::NeedProducerId
        );
        let Init::Write(t) = txns.init_producer_id(T, 60_000, None, Some(77), 1) else {
            panic!()
        };
        let m = written(&mut txns, t);
        assert_eq!(
            (m.producer_id, m.producer_epoch, m.last_producer_id),
            (77, 0, 5)
        );
        // A retry from the old producer id after the rotation is still accepted as valid.
        txns.txns.get_mut(T).unwrap().meta.last_producer_epoch = i16::MAX - 1;
        assert!(matches!(
            txns.init_producer_id(T, 60_000, Some((5, i16::MAX - 1)), None, 2),
            Init::Write(_)
        ));
    }

    #[test]
    fn timeouts_abort_and_fence() {
        let mut txns = Transactions::default();
        let m = init(&mut txns, 5, 0);
        begin_txn(&mut txns, &m, 1_000);
        assert!(txns.time_out(61_000).is_empty(), "not yet past 60 s");
        let aborts = txns.time_out(61_001);
        assert_eq!(aborts.len(), 1);
        assert_eq!(
            (aborts[0].to.state, aborts[0].to.producer_epoch),
            (TxnState::PrepareAbort, 1)
        );
        assert!(txns.time_out(61_002).is_empty(), "one abort at a time");
        written(&mut txns, aborts[0].clone());
        assert_eq!(
            txns.end_txn(T, 5, 0, true, 61_003),
            Change::Answer(PRODUCER_FENCED),
            "the timed-out producer is fenced"
        );
    }

    #[test]
    fn idle_ids_expire_but_not_while_a_transaction_is_open() {
        let mut txns = Transactions::new(TxnConfig {
            max_timeout_ms: 900_000,
            id_expiration_ms: 10_000,
        });
        let m = init(&mut txns, 5, 0);
        assert!(txns.expire(9_999).is_empty());
        begin_txn(&mut txns, &m, 1);
        assert!(txns.expire(1_000_000).is_empty(), "Ongoing never expires");
        let Change::Write(t) = txns.end_txn(T, 5, 0, false, 2) else {
            panic!()
        };
        written(&mut txns, t);
        let done = txns.markers_written(T, 3).unwrap();
        written(&mut txns, done);
        let dead = txns.expire(10_003);
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].to.state, TxnState::Dead);
        txns.complete(&dead[0]);
        assert!(txns.get(T).is_none());
    }

    #[test]
    fn verification_answers_per_partition() {
        let mut txns = Transactions::default();
        let m = init(&mut txns, 5, 0);
        assert_eq!(
            txns.verify(T, 5, 0, &parts(&[("a", 0)])),
            Ok(vec![INVALID_TXN_STATE]),
            "no transaction open"
        );
        begin_txn(&mut txns, &m, 1);
        assert_eq!(
            txns.verify(T, 5, 0, &parts(&[("a", 0), ("a", 1)])),
            Ok(vec![NONE, INVALID_TXN_STATE])
        );
        assert_eq!(
            txns.verify(T, 6, 0, &parts(&[("a", 0)])),
            Err(INVALID_PRODUCER_ID_MAPPING)
        );
        assert_eq!(
            txns.verify("nope", 5, 0, &parts(&[])),
            Err(INVALID_PRODUCER_ID_MAPPING)
        );
    }

    #[test]
    fn replaying_the_records_gives_the_same_state() {
        let mut live = Transactions::default();
        let mut log: Vec<Transition> = Vec::new();
        let record = |txns: &mut Transactions, log: &mut Vec<Transition>, t: Transition| {
            txns.complete(&t);
            log.push(t);
        };
        let Init::Write(t) = live.init_producer_id(T, 60_000, None, Some(3), 0) else {
            panic!()
        };
        record(&mut live, &mut log, t);
        let Change::Write(t) = live.add_partitions(T, 3, 0, &parts(&[("a", 0), ("b", 2)]), 1)
        else {
            panic!()
        };
        record(&mut live, &mut log, t);
        let Change::Write(t) = live.end_txn(T, 3, 0, true, 2) else {
            panic!()
        };
        record(&mut live, &mut log, t);
        let mut loaded = Transactions::default();
        for t in &log {
            let bytes = super::super::records::encode_value(&t.to);
            let back = super::super::records::decode_value(bytes).unwrap();
            loaded.replay(&t.transactional_id, Some(back));
        }
        let (a, b) = (&live.get(T).unwrap().meta, &loaded.get(T).unwrap().meta);
        assert_eq!(
            (
                a.producer_id,
                a.producer_epoch,
                a.state,
                &a.partitions,
                a.start_ms
            ),
            (
                b.producer_id,
                b.producer_epoch,
                b.state,
                &b.partitions,
                b.start_ms
            )
        );
        // A loaded PrepareCommit has its markers sent again.
        assert_eq!(loaded.preparing(), vec![T.to_string()]);
        loaded.replay(T, None);
        assert!(loaded.get(T).is_none());
    }
}
