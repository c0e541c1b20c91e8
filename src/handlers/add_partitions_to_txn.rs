//! AddPartitionsToTxn: adds partitions to a producer's ongoing transaction (starting it). v0-3
//! carry one transaction from the producer; v4+ (brokers, KIP-890) carry several, each
//! possibly `verify_only` (only whether the partitions are in it). Unknown partitions fail
//! with UNKNOWN_TOPIC_OR_PARTITION and the others of that transaction with
//! OPERATION_NOT_ATTEMPTED; PRODUCER_FENCED is INVALID_PRODUCER_EPOCH before v2.

use std::rc::Rc;

use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::{AddPartitionsToTxnRequest, AddPartitionsToTxnResponse};

use super::init_producer_id::fenced_for_version;
use crate::protocol::error;
use crate::shard::Shard;
use crate::txn::coordinator::{TxnAnswer, TxnCall};

pub async fn handle(
    shard: &Rc<Shard>,
    version: i16,
    request: AddPartitionsToTxnRequest,
) -> AddPartitionsToTxnResponse {
    let mut r = AddPartitionsToTxnResponse::default();
    if version <= 3 {
        r.results_by_topic_v3_and_below = add(
            shard,
            version,
            request.v3_and_below_transactional_id.0.as_str(),
            request.v3_and_below_producer_id.0,
            request.v3_and_below_producer_epoch,
            false,
            &request.v3_and_below_topics,
        )
        .await;
        return r;
    }
    for t in request.transactions {
        let mut result = AddPartitionsToTxnResult::default();
        result.topic_results = add(
            shard,
            version,
            t.transactional_id.0.as_str(),
            t.producer_id.0,
            t.producer_epoch,
            t.verify_only,
            &t.topics,
        )
        .await;
        result.transactional_id = t.transactional_id;
        r.results_by_transaction.push(result);
    }
    r
}

/// One transaction's partitions: added (or verified), with a code per partition.
async fn add(
    shard: &Rc<Shard>,
    version: i16,
    id: &str,
    producer_id: i64,
    epoch: i16,
    verify_only: bool,
    topics: &[AddPartitionsToTxnTopic],
) -> Vec<AddPartitionsToTxnTopicResult> {
    let meta = shard.metadata();
    let wanted: Vec<(String, i32)> = topics
        .iter()
        .flat_map(|t| t.partitions.iter().map(|p| (t.name.0.to_string(), *p)))
        .collect();
    let known = |(t, p): &(String, i32)| meta.shard_of(t, *p).is_some();
    let codes: Vec<i16> = if !wanted.iter().all(known) {
        wanted
            .iter()
            .map(|p| {
                if known(p) {
                    error::OPERATION_NOT_ATTEMPTED
                } else {
                    error::UNKNOWN_TOPIC_OR_PARTITION
                }
            })
            .collect()
    } else {
        let call = if verify_only {
            TxnCall::Verify {
                producer_id,
                epoch,
                partitions: wanted.clone(),
            }
        } else {
            TxnCall::AddPartitions {
                producer_id,
                epoch,
                partitions: wanted.clone(),
            }
        };
        match shard.txn_call(id, call).await {
            TxnAnswer::Codes(Ok(codes)) => codes,
            TxnAnswer::Codes(Err(code)) | TxnAnswer::Code(code) => vec![code; wanted.len()],
            _ => vec![error::COORDINATOR_NOT_AVAILABLE; wanted.len()],
        }
    };
    let mut codes = codes.into_iter();
    topics
        .iter()
        .map(|t| {
            let mut topic = AddPartitionsToTxnTopicResult::default();
            topic.name = t.name.clone();
            topic.results_by_partition = t
                .partitions
                .iter()
                .map(|p| {
                    let mut part = AddPartitionsToTxnPartitionResult::default();
                    part.partition_index = *p;
                    let code = codes.next().unwrap_or(error::COORDINATOR_NOT_AVAILABLE);
                    part.partition_error_code = fenced_for_version(code, version, 2);
                    part
                })
                .collect();
            topic
        })
        .collect()
}
