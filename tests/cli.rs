//! The command-line client against a real broker: topic create/list/describe/delete, produce
//! from stdin with a key separator, consume from the beginning, the end and an offset, one
//! partition or all, with a count.

mod common;

use std::io::Write;
use std::process::{Command, Output, Stdio};

use common::*;

fn cli(bootstrap: &str, args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_shardlog"));
    cmd.args(&args[..1]);
    // Subcommands with an action (`topic create`) take --bootstrap after the action.
    let split = if args[0] == "topic" { 2 } else { 1 };
    cmd.args(&args[1..split])
        .args(["--bootstrap", bootstrap])
        .args(&args[split..]);
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("run shardlog");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write stdin");
    }
    child.wait_with_output().expect("wait")
}

fn ok(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn topic_produce_consume_round_trip() {
    let mut broker = Broker::start(&[], 1);
    let b = broker.bootstrap();

    let out = ok(
        cli(
            &b,
            &[
                "topic",
                "create",
                "cli-topic",
                "--partitions",
                "3",
                "--config",
                "retention.ms=86400000",
            ],
            None,
        ),
        "create",
    );
    assert!(
        out.contains("created topic cli-topic with 3 partitions"),
        "{out}"
    );
    let dup = cli(&b, &["topic", "create", "cli-topic"], None);
    assert!(
        !dup.status.success(),
        "creating an existing topic must fail"
    );
    assert!(
        String::from_utf8_lossy(&dup.stderr).contains("error 36"),
        "TOPIC_ALREADY_EXISTS named"
    );
    let bad = cli(&b, &["topic", "create", "bad/name"], None);
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("error 17"),
        "INVALID_TOPIC_EXCEPTION named"
    );

    let list = ok(cli(&b, &["topic", "list"], None), "list");
    assert!(
        list.lines()
            .any(|l| l.starts_with("cli-topic\t3 partitions")),
        "{list}"
    );

    ok(
        cli(
            &b,
            &[
                "produce",
                "cli-topic",
                "--partition",
                "1",
                "--key-separator",
                ":",
            ],
            Some("a:1\nb:2\nc:3\n"),
        ),
        "produce",
    );
    ok(
        cli(
            &b,
            &[
                "produce",
                "cli-topic",
                "--partition",
                "2",
                "--compression",
                "zstd",
            ],
            Some("plain\n"),
        ),
        "produce zstd",
    );

    let all = ok(cli(&b, &["consume", "cli-topic"], None), "consume all");
    let mut lines: Vec<&str> = all.lines().collect();
    lines.sort();
    assert_eq!(
        lines,
        vec!["1\t0\ta\t1", "1\t1\tb\t2", "1\t2\tc\t3", "2\t0\t\tplain"]
    );

    let from_offset = ok(
        cli(
            &b,
            &[
                "consume",
                "cli-topic",
                "--partition",
                "1",
                "--from",
                "1",
                "--count",
                "2",
            ],
            None,
        ),
        "from offset",
    );
    assert_eq!(
        from_offset.lines().collect::<Vec<_>>(),
        vec!["1\t1\tb\t2", "1\t2\tc\t3"]
    );

    // From the end: only what arrives afterwards.
    let tail = std::thread::spawn({
        let b = b.clone();
        move || {
            ok(
                cli(
                    &b,
                    &[
                        "consume",
                        "cli-topic",
                        "--partition",
                        "1",
                        "--from",
                        "end",
                        "--count",
                        "1",
                        "--timeout-ms",
                        "10000",
                    ],
                    None,
                ),
                "from end",
            )
        }
    });
    std::thread::sleep(std::time::Duration::from_millis(700));
    ok(
        cli(
            &b,
            &[
                "produce",
                "cli-topic",
                "--partition",
                "1",
                "--key-separator",
                ":",
            ],
            Some("d:4\n"),
        ),
        "produce more",
    );
    assert_eq!(
        tail.join().expect("tail").lines().collect::<Vec<_>>(),
        vec!["1\t3\td\t4"]
    );

    let describe = ok(
        cli(&b, &["topic", "describe", "cli-topic"], None),
        "describe",
    );
    assert!(
        describe.contains("partition 1: log start 0, last stable offset 4, high watermark 4"),
        "{describe}"
    );
    assert!(
        describe.contains("retention.ms=86400000 (override)"),
        "{describe}"
    );

    ok(cli(&b, &["topic", "delete", "cli-topic"], None), "delete");
    let list = ok(cli(&b, &["topic", "list"], None), "list after delete");
    assert!(!list.contains("cli-topic"), "{list}");
    broker.terminate();
}
