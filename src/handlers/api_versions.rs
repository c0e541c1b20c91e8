//! ApiVersions: advertises exactly the table in `crate::protocol::SUPPORTED`.

use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiVersionsRequest, ApiVersionsResponse};

use crate::protocol::{self, error};

fn api_list() -> Vec<ApiVersion> {
    protocol::SUPPORTED
        .iter()
        .filter_map(|&(key, _, _)| {
            let (min, max) = protocol::version_range(key)?;
            let mut v = ApiVersion::default();
            v.api_key = key as i16;
            v.min_version = min;
            v.max_version = max;
            Some(v)
        })
        .collect()
}

pub fn handle(_version: i16, _request: ApiVersionsRequest) -> ApiVersionsResponse {
    let mut r = ApiVersionsResponse::default();
    r.api_keys = api_list();
    r.finalized_features_epoch = -1;
    r
}

/// The answer to a too-new ApiVersions request, sent in the v0 format.
pub fn unsupported_version() -> kafka_protocol::messages::ResponseKind {
    let mut r = ApiVersionsResponse::default();
    r.error_code = error::UNSUPPORTED_VERSION;
    r.api_keys = api_list();
    kafka_protocol::messages::ResponseKind::ApiVersions(r)
}
