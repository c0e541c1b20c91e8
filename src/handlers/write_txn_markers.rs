//! WriteTxnMarkers: writes commit or abort markers to partitions, as a transaction
//! coordinator asks a partition leader to (this broker's own coordinators write them
//! directly). A marker for a `__consumer_offsets` partition also completes the producer's
//! pending transactional offsets there.

use std::rc::Rc;

use kafka_protocol::messages::write_txn_markers_response::{
    WritableTxnMarkerPartitionResult, WritableTxnMarkerResult, WritableTxnMarkerTopicResult,
};
use kafka_protocol::messages::{WriteTxnMarkersRequest, WriteTxnMarkersResponse};

use crate::partition::producer_state::Marker;
use crate::protocol::error::{self, KafkaError};
use crate::shard::{OpKind, PartitionOp, Shard};

pub async fn handle(
    shard: &Rc<Shard>,
    _version: i16,
    request: WriteTxnMarkersRequest,
) -> WriteTxnMarkersResponse {
    let now = crate::storage::now_ms();
    let mut ops = Vec::new();
    for m in &request.markers {
        let marker = Marker {
            producer_id: m.producer_id.0,
            epoch: m.producer_epoch,
            coordinator_epoch: m.coordinator_epoch,
            commit: m.transaction_result,
            timestamp: now,
        };
        for t in &m.topics {
            for &p in &t.partition_indexes {
                ops.push(PartitionOp {
                    topic: t.name.0.to_string(),
                    partition: p,
                    kind: OpKind::WriteMarker(marker),
                });
            }
        }
    }
    let mut outcomes = shard.run_partition_ops(ops).await.into_iter();
    let mut r = WriteTxnMarkersResponse::default();
    for m in request.markers {
        let mut result = WritableTxnMarkerResult::default();
        result.producer_id = m.producer_id;
        for t in m.topics {
            let mut topic = WritableTxnMarkerTopicResult::default();
            topic.name = t.name;
            for p in t.partition_indexes {
                let mut part = WritableTxnMarkerPartitionResult::default();
                part.partition_index = p;
                part.error_code = match outcomes.next() {
                    Some(Ok(_)) => error::NONE,
                    Some(Err((e, _))) => KafkaError::from(&e).code,
                    None => error::NOT_LEADER_OR_FOLLOWER,
                };
                topic.partitions.push(part);
            }
            result.topics.push(topic);
        }
        r.markers.push(result);
    }
    r
}
