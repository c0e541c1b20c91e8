//! Runs the kafkajs suite (`tests/node`, kafkajs from npm, installed by `tests/node/run.sh` on
//! first use) against the real broker binary with the machine's Node.js, so that `cargo test`
//! covers a third, independent client implementation.

use std::process::Command;

#[test]
fn kafkajs_suite() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/node/run.sh");
    let status = Command::new("bash")
        .arg(script)
        .env("SHARDLOG_BIN", env!("CARGO_BIN_EXE_shardlog"))
        .status()
        .expect("run tests/node/run.sh");
    assert!(
        status.success(),
        "the kafkajs suite failed ({status}); see its output above"
    );
}
