//! AddOffsetsToTxn: adds the group's `__consumer_offsets` partition to the producer's ongoing
//! transaction, so its TxnOffsetCommit becomes part of it (and its marker completes the
//! offsets). PRODUCER_FENCED is INVALID_PRODUCER_EPOCH before v2.

use std::rc::Rc;

use kafka_protocol::messages::{AddOffsetsToTxnRequest, AddOffsetsToTxnResponse};

use super::init_producer_id::fenced_for_version;
use crate::protocol::error;
use crate::shard::{Shard, OFFSETS_TOPIC};
use crate::txn::coordinator::{TxnAnswer, TxnCall};

pub async fn handle(
    shard: &Rc<Shard>,
    version: i16,
    request: AddOffsetsToTxnRequest,
) -> AddOffsetsToTxnResponse {
    let mut r = AddOffsetsToTxnResponse::default();
    let group = request.group_id.0.as_str();
    if group.is_empty() {
        r.error_code = error::INVALID_GROUP_ID;
        return r;
    }
    if !shard.ensure_offsets_topic().await {
        r.error_code = error::COORDINATOR_NOT_AVAILABLE;
        return r;
    }
    let (slot, _) = shard.coordinator_of(group);
    let call = TxnCall::AddPartitions {
        producer_id: request.producer_id.0,
        epoch: request.producer_epoch,
        partitions: vec![(OFFSETS_TOPIC.to_string(), slot)],
    };
    let code = match shard
        .txn_call(request.transactional_id.0.as_str(), call)
        .await
    {
        TxnAnswer::Code(code) => code,
        _ => error::COORDINATOR_NOT_AVAILABLE,
    };
    r.error_code = fenced_for_version(code, version, 2);
    r
}
