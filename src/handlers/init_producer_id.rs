//! InitProducerId: without a transactional id, a producer id never handed out before (epoch
//! 0), as Kafka "blindly" gives idempotent producers; with one, the id's transaction
//! coordinator bumps the epoch (fencing the previous producer and aborting its open
//! transaction), or rotates to a new producer id when the epoch is exhausted. v3+ carries the
//! producer's current id and epoch (KIP-360). PRODUCER_FENCED is INVALID_PRODUCER_EPOCH
//! before v4, as Kafka answers older clients.

use std::rc::Rc;

use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};

use crate::protocol::error;
use crate::shard::Shard;
use crate::txn::coordinator::{TxnAnswer, TxnCall};

pub async fn handle(
    shard: &Rc<Shard>,
    version: i16,
    request: InitProducerIdRequest,
) -> InitProducerIdResponse {
    let (code, producer_id, epoch) = match request.transactional_id {
        None => match shard.next_producer_id().await {
            Some(id) => (error::NONE, id, 0),
            None => (error::COORDINATOR_NOT_AVAILABLE, -1, -1),
        },
        Some(id) => {
            let expected = (version >= 3 && request.producer_id.0 >= 0)
                .then_some((request.producer_id.0, request.producer_epoch));
            let call = TxnCall::InitProducerId {
                timeout_ms: request.transaction_timeout_ms,
                expected,
            };
            match shard.txn_call(id.0.as_str(), call).await {
                TxnAnswer::Producer {
                    code,
                    producer_id,
                    epoch,
                } => (code, producer_id, epoch),
                TxnAnswer::Code(code) => (code, -1, -1),
                _ => (error::COORDINATOR_NOT_AVAILABLE, -1, -1),
            }
        }
    };
    let mut r = InitProducerIdResponse::default();
    r.error_code = fenced_for_version(code, version, 4);
    r.producer_id = ProducerId(producer_id);
    r.producer_epoch = epoch;
    r
}

/// PRODUCER_FENCED (v`since`+) is INVALID_PRODUCER_EPOCH for older request versions.
pub fn fenced_for_version(code: i16, version: i16, since: i16) -> i16 {
    if code == error::PRODUCER_FENCED && version < since {
        error::INVALID_PRODUCER_EPOCH
    } else {
        code
    }
}
