//! ListTransactions: every transaction the broker coordinates, filtered by state names,
//! producer ids and (v1, KIP-994) a minimum running time; unknown state names are listed back.

use std::rc::Rc;

use kafka_protocol::messages::list_transactions_response::TransactionState;
use kafka_protocol::messages::{
    ListTransactionsRequest, ListTransactionsResponse, ProducerId, TransactionalId,
};

use crate::protocol::str_bytes;
use crate::shard::Shard;
use crate::txn::state::TxnState;

pub async fn handle(
    shard: &Rc<Shard>,
    version: i16,
    request: ListTransactionsRequest,
) -> ListTransactionsResponse {
    let mut r = ListTransactionsResponse::default();
    let mut states = Vec::new();
    for name in &request.state_filters {
        match TxnState::from_name(name.as_str()) {
            Some(s) => states.push(s),
            None => r.unknown_state_filters.push(name.clone()),
        }
    }
    if !r.unknown_state_filters.is_empty() && states.is_empty() {
        return r;
    }
    let pids: Vec<i64> = request.producer_id_filters.iter().map(|p| p.0).collect();
    let now = crate::storage::now_ms();
    let min_duration = if version >= 1 {
        request.duration_filter
    } else {
        -1
    };
    for t in shard.list_transactions().await {
        let state_ok = states.is_empty() || states.contains(&t.state);
        let pid_ok = pids.is_empty() || pids.contains(&t.producer_id);
        let duration_ok = min_duration < 0 || (t.start_ms >= 0 && now - t.start_ms > min_duration);
        if state_ok && pid_ok && duration_ok {
            let mut s = TransactionState::default();
            s.transactional_id = TransactionalId(str_bytes(&t.transactional_id));
            s.producer_id = ProducerId(t.producer_id);
            s.transaction_state = str_bytes(t.state.name());
            r.transaction_states.push(s);
        }
    }
    r
}
