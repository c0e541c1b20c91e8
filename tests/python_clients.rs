//! Runs the Python-client suite (kafka-python and confluent-kafka, from a virtualenv that
//! `tests/python/run.sh` creates on first use) against the real broker binary, so that
//! `cargo test` covers a second, independent client family.

use std::process::Command;

#[test]
fn python_clients_suite() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/run.sh");
    let status = Command::new("bash")
        .arg(script)
        .env("SHARDLOG_BIN", env!("CARGO_BIN_EXE_shardlog"))
        .env("PYTHONUNBUFFERED", "1")
        .status()
        .expect("run tests/python/run.sh");
    assert!(
        status.success(),
        "the Python client suite failed ({status}); see its output above"
    );
}
