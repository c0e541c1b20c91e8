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
    let (node, host, port) = if known {
        (BrokerId(c.node_id), str_bytes(&c.advertised_host), port)
    } else {
        (BrokerId(-1), str_bytes(""), -1)
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
                co.node_id = node;
                co.host = host.clone();
                co.port = port;
                co
            })
            .collect();
    } else {
        r.error_code = code;
        if version >= 1 {
            r.error_message = message;
        }
        r.node_id = node;
        r.host = host;
        r.port = port;
    }
    r
}
