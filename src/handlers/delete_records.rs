//! DeleteRecords: moves each partition's log start offset forward (-1: to the high watermark);
//! segments wholly below it are deleted.

use std::rc::Rc;

use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::{DeleteRecordsRequest, DeleteRecordsResponse};

use crate::shard::{OpKind, OpResult, Shard};

pub async fn handle(
    shard: &Rc<Shard>,
    _version: i16,
    request: DeleteRecordsRequest,
) -> DeleteRecordsResponse {
    let ops = super::ops_per_partition(
        &request.topics,
        |t| (&t.name, &t.partitions),
        |p| {
            (
                p.partition_index,
                OpKind::DeleteRecords { offset: p.offset },
            )
        },
    );
    let mut outcomes = shard.run_partition_ops(ops).await.into_iter();
    let mut response = DeleteRecordsResponse::default();
    for t in request.topics {
        let mut topic = DeleteRecordsTopicResult::default();
        topic.name = t.name;
        for p in t.partitions {
            let mut part = DeleteRecordsPartitionResult::default();
            part.partition_index = p.partition_index;
            match outcomes.next() {
                Some(Ok(OpResult::LowWatermark(low))) => part.low_watermark = low,
                Some(Err((e, _))) => {
                    part.error_code = crate::protocol::error::KafkaError::from(&e).code;
                    part.low_watermark = -1;
                }
                _ => part.error_code = crate::protocol::error::UNKNOWN_SERVER_ERROR,
            }
            topic.partitions.push(part);
        }
        response.topics.push(topic);
    }
    response
}
