//! DescribeTransactions: the state of transactional ids, from their coordinators
//! (TRANSACTIONAL_ID_NOT_FOUND for ids no coordinator knows).

use std::rc::Rc;

use kafka_protocol::messages::describe_transactions_response::{TopicData, TransactionState};
use kafka_protocol::messages::{
    DescribeTransactionsRequest, DescribeTransactionsResponse, ProducerId,
};

use crate::protocol::{error, str_bytes, topic_name};
use crate::shard::Shard;
use crate::txn::coordinator::{TxnAnswer, TxnCall};

pub async fn handle(
    shard: &Rc<Shard>,
    _version: i16,
    request: DescribeTransactionsRequest,
) -> DescribeTransactionsResponse {
    let mut r = DescribeTransactionsResponse::default();
    for id in request.transactional_ids {
        let mut s = TransactionState::default();
        s.producer_id = ProducerId(-1);
        s.producer_epoch = -1;
        s.transaction_start_time_ms = -1;
        s.transaction_state = str_bytes("");
        match shard.txn_call(id.0.as_str(), TxnCall::Describe).await {
            TxnAnswer::Describe(Some(m)) => {
                s.transaction_state = str_bytes(m.state.name());
                s.transaction_timeout_ms = m.timeout_ms;
                s.transaction_start_time_ms = m.start_ms;
                s.producer_id = ProducerId(m.producer_id);
                s.producer_epoch = m.producer_epoch;
                let mut topics: Vec<TopicData> = Vec::new();
                for (t, p) in m.partitions {
                    match topics.last_mut() {
                        Some(last) if last.topic.0.as_str() == t => last.partitions.push(p),
                        _ => {
                            let mut d = TopicData::default();
                            d.topic = topic_name(&t);
                            d.partitions.push(p);
                            topics.push(d);
                        }
                    }
                }
                s.topics = topics;
            }
            TxnAnswer::Describe(None) => s.error_code = error::TRANSACTIONAL_ID_NOT_FOUND,
            TxnAnswer::Code(code) => s.error_code = code,
            _ => s.error_code = error::COORDINATOR_NOT_AVAILABLE,
        }
        s.transactional_id = id;
        r.transaction_states.push(s);
    }
    r
}
