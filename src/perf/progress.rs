//! The one-line live progress display of `shardlog perf`: load threads add what was
//! acknowledged (or read) to a shared counter, and a display thread rewrites one line on the
//! terminal once a second. Nothing is shown when stderr is not a terminal or the result is
//! wanted as JSON, so piped output stays clean.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A counter shared by the load threads of one run; cloning shares it.
#[derive(Clone, Debug, Default)]
pub struct Progress {
    done: Arc<AtomicU64>,
}

impl Progress {
    /// Counts `records` more as done.
    pub fn add(&self, records: u64) {
        self.done.fetch_add(records, Ordering::Relaxed);
    }

    pub fn done(&self) -> u64 {
        self.done.load(Ordering::Relaxed)
    }

    /// Shows a live line for this counter on stderr until the returned guard is dropped, if
    /// stderr is a terminal and `quiet` is false.
    pub fn display(&self, what: &str, total: u64, record_size: usize, quiet: bool) -> Display {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = (!quiet && std::io::stderr().is_terminal()).then(|| {
            let (progress, stop, what) = (self.clone(), stop.clone(), what.to_string());
            std::thread::spawn(move || show(&progress, &stop, &what, total, record_size))
        });
        Display { stop, thread }
    }
}

/// Stops the live line (and clears it) when dropped.
pub struct Display {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Display {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn show(progress: &Progress, stop: &AtomicBool, what: &str, total: u64, record_size: usize) {
    let start = Instant::now();
    let (mut last, mut last_at) = (0u64, start);
    let mut err = std::io::stderr();
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
        if last_at.elapsed() < Duration::from_secs(1) {
            continue;
        }
        let done = progress.done();
        let rate = (done - last) as f64 / last_at.elapsed().as_secs_f64();
        (last, last_at) = (done, Instant::now());
        let _ = write!(
            err,
            "\r{what}: {done}/{total} records ({:.0}%), {:.0} msg/s, {:.1} MB/s, {:.0} s   ",
            done as f64 * 100.0 / total.max(1) as f64,
            rate,
            rate * record_size as f64 / 1e6,
            start.elapsed().as_secs_f64()
        );
        let _ = err.flush();
    }
    let _ = write!(err, "\r{:79}\r", "");
}
