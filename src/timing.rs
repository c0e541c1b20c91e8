//! Where a Produce request waits, per shard (`shardlog.latency.report.ms`): HDR histograms of
//! the stages of the produce path, recorded on the shard's own thread (one set per executor
//! thread, never shared), and reported as one log line per shard and interval, then cleared.
//!
//! The stages follow Kafka's request metrics: `read` is the time from a Produce request's
//! length prefix to the rest of its frame; `request` its time from then on in the broker (its
//! frame read to its response written, Kafka's TotalTimeMs less the read); `queue` is an
//! append's wait for its partition's write round (rounds run one at a time); `write` is a
//! round's O_DIRECT write on io_uring; `sync` an fdatasync (`shardlog.log.durability=sync`);
//! `durable` a round's time from its write completing to the high watermark covering it (what
//! a tailing consumer waits for beyond acks=1; `sync` durability only); `send` a response's wait for the socket once it is ready (Kafka's ResponseQueueTimeMs plus
//! ResponseSendTimeMs). Recording is off unless the report is on, and then costs one clock
//! read and one histogram increment per stage.

use std::cell::{Cell, RefCell};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    Read,
    Request,
    Queue,
    Write,
    Sync,
    Durable,
    Send,
}

impl Stage {
    const ALL: [Stage; 7] = [
        Stage::Read,
        Stage::Request,
        Stage::Queue,
        Stage::Write,
        Stage::Sync,
        Stage::Durable,
        Stage::Send,
    ];

    fn name(self) -> &'static str {
        match self {
            Stage::Read => "read",
            Stage::Request => "request",
            Stage::Queue => "queue",
            Stage::Write => "write",
            Stage::Sync => "sync",
            Stage::Durable => "durable",
            Stage::Send => "send",
        }
    }
}

/// The longest time recorded (longer ones count as this).
const MAX_US: u64 = 60_000_000;

/// One shard's histograms, microseconds, one per stage.
pub struct Timings {
    stages: Vec<Histogram<u64>>,
}

impl Default for Timings {
    fn default() -> Self {
        let stages = Stage::ALL
            .iter()
            .map(|_| {
                // 1 us to 60 s at 3 significant digits: valid bounds, so this cannot fail.
                Histogram::new_with_bounds(1, MAX_US, 3).expect("valid histogram bounds")
            })
            .collect();
        Timings { stages }
    }
}

impl Timings {
    pub fn record(&mut self, stage: Stage, took: Duration) {
        let us = (took.as_micros() as u64).clamp(1, MAX_US);
        self.stages[stage as usize].saturating_record(us);
    }

    /// One line: per stage with anything recorded, its count and p50/p99/p99.9/max in ms.
    /// `None` when nothing was recorded.
    pub fn summary(&self) -> Option<String> {
        let ms = |us: u64| us as f64 / 1000.0;
        let parts: Vec<String> = Stage::ALL
            .iter()
            .zip(&self.stages)
            .filter(|(_, h)| !h.is_empty())
            .map(|(stage, h)| {
                format!(
                    "{} n={} p50={:.3} p99={:.3} p99.9={:.3} max={:.3}",
                    stage.name(),
                    h.len(),
                    ms(h.value_at_quantile(0.5)),
                    ms(h.value_at_quantile(0.99)),
                    ms(h.value_at_quantile(0.999)),
                    ms(h.max()),
                )
            })
            .collect();
        (!parts.is_empty()).then(|| parts.join("; "))
    }

    pub fn clear(&mut self) {
        self.stages.iter_mut().for_each(Histogram::reset);
    }
}

thread_local! {
    static ON: Cell<bool> = const { Cell::new(false) };
    static TIMINGS: RefCell<Timings> = RefCell::new(Timings::default());
}

/// Turns recording on for this thread (the shard's executor).
pub fn enable() {
    ON.with(|on| on.set(true));
}

/// The start of a stage: the time now if recording is on.
pub fn start() -> Option<Instant> {
    ON.with(Cell::get).then(Instant::now)
}

/// Records a stage that began at `since` (from [`start`]); nothing when recording is off.
pub fn record(stage: Stage, since: Option<Instant>) {
    if let Some(since) = since {
        TIMINGS.with(|t| t.borrow_mut().record(stage, since.elapsed()));
    }
}

/// This thread's summary since the last one, clearing the histograms.
pub fn take_summary() -> Option<String> {
    TIMINGS.with(|t| {
        let mut t = t.borrow_mut();
        let line = t.summary();
        t.clear();
        line
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_lists_recorded_stages_in_ms() {
        let mut t = Timings::default();
        assert_eq!(t.summary(), None);
        for us in 1..=1000 {
            t.record(Stage::Write, Duration::from_micros(us));
        }
        t.record(Stage::Request, Duration::from_secs(120));
        let line = t.summary().unwrap();
        // Longer times count as the maximum (60 s, to the histogram's 3 digits).
        assert!(line.starts_with("request n=1 p50=600"), "{line}");
        assert!(line.contains("write n=1000 p50=0.500"), "{line}");
        assert!(!line.contains("sync"), "{line}");
        t.clear();
        assert_eq!(t.summary(), None);
    }

    #[test]
    fn nothing_is_recorded_while_off() {
        // A fresh thread starts with recording off.
        std::thread::spawn(|| {
            assert!(start().is_none());
            record(Stage::Queue, start());
            assert_eq!(take_summary(), None);
            enable();
            let t = start();
            assert!(t.is_some());
            record(Stage::Queue, t);
            let line = take_summary().unwrap();
            assert!(line.starts_with("queue n=1 "), "{line}");
            assert_eq!(take_summary(), None, "taking the summary clears it");
        })
        .join()
        .unwrap();
    }
}
