//! The shard's side of transactions: routing calls to the coordinator of a transactional id
//! (the shard owning its `__transaction_state` slot), creating that topic on first use, and
//! the verification a partition asks for before a transaction's first write to it.

use std::rc::Rc;

use super::{Shard, ShardRequest, ShardResponse};
use crate::partition::producer_state::ProducerError;
use crate::partition::{AppendError, Partition};
use crate::txn::coordinator::{TxnAnswer, TxnCall, COORDINATOR_NOT_AVAILABLE, TXN_TOPIC};

impl Shard {
    /// The transactional id's `__transaction_state` slot and the shard coordinating it.
    pub fn txn_coordinator_of(&self, transactional_id: &str) -> (i32, usize) {
        self.slot_of(
            TXN_TOPIC,
            transactional_id,
            self.config.txn_topic_partitions,
        )
    }

    /// The id's `__transaction_state` partition, if this shard owns it.
    pub fn txn_partition(&self, transactional_id: &str) -> Option<Rc<Partition>> {
        let (slot, _) = self.txn_coordinator_of(transactional_id);
        self.local_partition(TXN_TOPIC, slot)
    }

    /// Creates `__transaction_state` on first use (compacted, its own segment size).
    pub async fn ensure_txn_topic(self: &Rc<Self>) -> bool {
        let (partitions, segment_bytes) = (
            self.config.txn_topic_partitions,
            self.config.txn_topic_segment_bytes,
        );
        self.ensure_internal_topic(TXN_TOPIC, partitions, segment_bytes)
            .await
    }

    /// Serves a call here, the id's coordinator shard.
    pub(super) async fn serve_txn(self: &Rc<Self>, id: &str, call: TxnCall) -> TxnAnswer {
        let txns = Rc::clone(&self.txns);
        txns.serve(self, id, call).await
    }

    /// Runs a call on the transactional id's coordinator.
    pub async fn txn_call(self: &Rc<Self>, id: &str, call: TxnCall) -> TxnAnswer {
        if !self.ensure_txn_topic().await {
            return TxnAnswer::Code(COORDINATOR_NOT_AVAILABLE);
        }
        let (_, to) = self.txn_coordinator_of(id);
        if to == self.id {
            return self.serve_txn(id, call).await;
        }
        match self.call(to, ShardRequest::Txn(id.to_string(), call)).await {
            Some(ShardResponse::Txn(answer)) => answer,
            _ => TxnAnswer::Code(COORDINATOR_NOT_AVAILABLE),
        }
    }

    /// Every shard's transactions.
    pub async fn list_transactions(self: &Rc<Self>) -> Vec<crate::txn::coordinator::TxnSummary> {
        let mut all = self.txns.list();
        for s in (0..self.count).filter(|s| *s != self.id) {
            if let Some(ShardResponse::Transactions(t)) =
                self.call(s, ShardRequest::ListTransactions).await
            {
                all.extend(t);
            }
        }
        all.sort_by(|a, b| a.transactional_id.cmp(&b.transactional_id));
        all
    }

    /// Whether the partition is in the ongoing transaction of `transactional_id` for this
    /// producer (KIP-890 part 1): the partition's first write of a transaction asks.
    pub(super) async fn verify_in_transaction(
        self: &Rc<Self>,
        transactional_id: &str,
        producer_id: i64,
        epoch: i16,
        topic: &str,
        partition: i32,
    ) -> Result<(), AppendError> {
        let call = TxnCall::Verify {
            producer_id,
            epoch,
            partitions: vec![(topic.to_string(), partition)],
        };
        let not_in = |why: String| {
            Err(AppendError::Producer(ProducerError::InvalidTxnState {
                message: why,
                unverified: true,
            }))
        };
        match self.txn_call(transactional_id, call).await {
            TxnAnswer::Codes(Ok(codes)) if codes.iter().all(|c| *c == 0) => Ok(()),
            TxnAnswer::Codes(Ok(_)) => not_in(format!(
                "{topic}-{partition} is not in the ongoing transaction of {transactional_id}"
            )),
            TxnAnswer::Codes(Err(crate::txn::state::PRODUCER_FENCED)) => {
                Err(AppendError::Producer(ProducerError::StaleEpoch {
                    producer_id,
                    epoch,
                    current: epoch.saturating_add(1),
                }))
            }
            TxnAnswer::Codes(Err(crate::txn::state::INVALID_PRODUCER_ID_MAPPING)) => not_in(
                format!("producer {producer_id} does not hold transactional id {transactional_id}"),
            ),
            _ => Err(AppendError::VerificationUnavailable(format!(
                "the coordinator of {transactional_id} could not verify {topic}-{partition}"
            ))),
        }
    }
}
