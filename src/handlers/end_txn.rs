//! EndTxn: commits or aborts the producer's ongoing transaction. Answered once the
//! coordinator recorded the end and wrote the markers (see `txn::coordinator`).
//! PRODUCER_FENCED is INVALID_PRODUCER_EPOCH before v2.

use std::rc::Rc;

use kafka_protocol::messages::{EndTxnRequest, EndTxnResponse};

use super::init_producer_id::fenced_for_version;
use crate::protocol::error;
use crate::shard::Shard;
use crate::txn::coordinator::{TxnAnswer, TxnCall};

pub async fn handle(shard: &Rc<Shard>, version: i16, request: EndTxnRequest) -> EndTxnResponse {
    let call = TxnCall::EndTxn {
        producer_id: request.producer_id.0,
        epoch: request.producer_epoch,
        commit: request.committed,
    };
    let code = match shard
        .txn_call(request.transactional_id.0.as_str(), call)
        .await
    {
        TxnAnswer::Code(code) => code,
        _ => error::COORDINATOR_NOT_AVAILABLE,
    };
    let mut r = EndTxnResponse::default();
    r.error_code = fenced_for_version(code, version, 2);
    // v5 (transaction version 2) names the producer the transaction ended with; under version 1
    // that is the same producer and epoch.
    r.producer_id = request.producer_id;
    r.producer_epoch = request.producer_epoch;
    r
}
