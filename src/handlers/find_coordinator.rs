//! FindCoordinator: on a single broker the coordinator of every group and transactional id is
//! this broker. Batched keys from v4. (Clients read this API's presence as a broker feature:
//! librdkafka, for one, compresses with lz4 only when it is advertised.)

use std::rc::Rc;

use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};

use crate::protocol::{error, str_bytes};
use crate::shard::Shard;

/// Kafka's coordinator key types: consumer groups and transactional ids.
const GROUP: i8 = 0;
const TRANSACTION: i8 = 1;

pub async fn handle(
    shard: &Rc<Shard>,
    version: i16,
    request: FindCoordinatorRequest,
) -> FindCoordinatorResponse {
    let c = &shard.config;
    let port = shard.advertised_port.get() as i32;
    let known = matches!(request.key_type, GROUP | TRANSACTION);
    let (code, message) = if known {
        (error::NONE, None)
    } else {
        (
            error::INVALID_REQUEST,
            Some(str_bytes(&format!(
                "unknown coordinator key type {}",
                request.key_type
            ))),
        )
    };
    let mut r = FindCoordinatorResponse::default();
    if version >= 4 {
        r.coordinators = request
            .coordinator_keys
            .iter()
            .map(|key| {
                let mut co = Coordinator::default();
                co.key = key.clone();
                co.error_code = code;
                co.error_message = message.clone();
                if known {
                    co.node_id = BrokerId(c.node_id);
                    co.host = str_bytes(&c.advertised_host);
                    co.port = port;
                } else {
                    co.node_id = BrokerId(-1);
                    co.port = -1;
                }
                co
            })
            .collect();
    } else {
        r.error_code = code;
        if version >= 1 {
            r.error_message = message;
        }
        if known {
            r.node_id = BrokerId(c.node_id);
            r.host = str_bytes(&c.advertised_host);
            r.port = port;
        } else {
            r.node_id = BrokerId(-1);
            r.port = -1;
        }
    }
    r
}
