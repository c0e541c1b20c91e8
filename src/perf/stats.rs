//! Results of a load run: counts, bytes, elapsed time and HDR histograms in microseconds: each
//! record's latency, and (where the load generator knows it) each request's round trip, from
//! its send to its answer. The gap between the two is time a record spent waiting in the
//! producer. Per-thread stats merge into one; reports print as text, JSON or a CSV row.

use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;

/// Latencies are recorded in microseconds, up to an hour, 3 significant digits.
fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("static histogram bounds are valid")
}

#[derive(Clone, Debug)]
pub struct Stats {
    pub messages: u64,
    pub bytes: u64,
    pub errors: u64,
    pub elapsed: Duration,
    pub latency_us: Histogram<u64>,
    /// Request sent to answer read; empty where the client does not report it.
    pub round_trip_us: Histogram<u64>,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            messages: 0,
            bytes: 0,
            errors: 0,
            elapsed: Duration::ZERO,
            latency_us: new_histogram(),
            round_trip_us: new_histogram(),
        }
    }
}

/// Runs `threads` load threads at once, `body(index)` on each, and merges their results.
pub fn run_threads<F>(threads: usize, body: F) -> anyhow::Result<Stats>
where
    F: Fn(usize) -> anyhow::Result<Stats> + Send + Sync + 'static,
{
    let body = std::sync::Arc::new(body);
    let handles: Vec<_> = (0..threads.max(1))
        .map(|i| {
            let body = std::sync::Arc::clone(&body);
            std::thread::spawn(move || body(i))
        })
        .collect();
    let mut total = Stats::default();
    for h in handles {
        let stats = h
            .join()
            .map_err(|_| anyhow::anyhow!("a load thread panicked"))??;
        total.merge(&stats);
    }
    Ok(total)
}

/// The percentiles every report shows.
pub const PERCENTILES: [(f64, &str); 5] = [
    (50.0, "p50"),
    (90.0, "p90"),
    (99.0, "p99"),
    (99.9, "p99.9"),
    (99.99, "p99.99"),
];

impl Stats {
    pub fn record_latency(&mut self, latency: Duration) {
        let us = (latency.as_micros() as u64).clamp(1, self.latency_us.high());
        self.latency_us.saturating_record(us);
    }

    pub fn record_round_trip(&mut self, round_trip: Duration) {
        let us = (round_trip.as_micros() as u64).clamp(1, self.round_trip_us.high());
        self.round_trip_us.saturating_record(us);
    }

    /// Adds another thread's results; the run lasted as long as the longest of them.
    pub fn merge(&mut self, other: &Stats) {
        self.messages += other.messages;
        self.bytes += other.bytes;
        self.errors += other.errors;
        self.elapsed = self.elapsed.max(other.elapsed);
        // Same bounds on both sides, so adding cannot fail.
        let _ = self.latency_us.add(&other.latency_us);
        let _ = self.round_trip_us.add(&other.round_trip_us);
    }

    pub fn mb_per_sec(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.elapsed.as_secs_f64().max(1e-9)
    }

    pub fn msgs_per_sec(&self) -> f64 {
        self.messages as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn ms(us: u64) -> f64 {
        us as f64 / 1000.0
    }

    pub fn text(&self, what: &str) -> String {
        let mut s = format!(
            "{what}: {} messages, {:.1} MB/s, {:.0} msg/s in {:.2} s",
            self.messages,
            self.mb_per_sec(),
            self.msgs_per_sec(),
            self.elapsed.as_secs_f64()
        );
        for (label, h) in [
            ("latency", &self.latency_us),
            ("request round trip", &self.round_trip_us),
        ] {
            if !h.is_empty() {
                let _ = write!(s, "; {label} ms");
                for (q, name) in PERCENTILES {
                    let _ = write!(s, " {name} {:.3}", Self::ms(h.value_at_quantile(q / 100.0)));
                }
                let _ = write!(s, " max {:.3}", Self::ms(h.max()));
            }
        }
        if self.errors > 0 {
            let _ = write!(s, "; {} errors", self.errors);
        }
        s
    }

    pub fn json(&self, what: &str) -> String {
        let mut s = format!(
            "{{\"what\":\"{what}\",\"messages\":{},\"bytes\":{},\"errors\":{},\"seconds\":{:.6},\"mb_per_sec\":{:.3},\"msgs_per_sec\":{:.1}",
            self.messages,
            self.bytes,
            self.errors,
            self.elapsed.as_secs_f64(),
            self.mb_per_sec(),
            self.msgs_per_sec()
        );
        // The round trip goes first: scripts that match a percentile's key greedily
        // (perf/lib.sh's `field`) find the record latency's.
        if !self.round_trip_us.is_empty() {
            s.push_str(",\"round_trip_ms\":");
            s.push_str(&Self::percentiles_json(&self.round_trip_us));
        }
        if !self.latency_us.is_empty() {
            s.push_str(",\"latency_ms\":");
            s.push_str(&Self::percentiles_json(&self.latency_us));
        }
        s.push('}');
        s
    }

    /// `{"p50":..,...,"max":..}` in milliseconds.
    fn percentiles_json(h: &Histogram<u64>) -> String {
        let mut s = String::from("{");
        for (q, name) in PERCENTILES {
            let _ = write!(
                s,
                "\"{name}\":{:.3},",
                Self::ms(h.value_at_quantile(q / 100.0))
            );
        }
        let _ = write!(s, "\"max\":{:.3}}}", Self::ms(h.max()));
        s
    }

    pub const CSV_HEADER: &'static str =
        "mb_per_sec,msgs_per_sec,p50_ms,p90_ms,p99_ms,p99_9_ms,p99_99_ms,max_ms,errors";

    /// One CSV row matching `CSV_HEADER`.
    pub fn csv_row(&self) -> String {
        let mut s = format!("{:.3},{:.1}", self.mb_per_sec(), self.msgs_per_sec());
        for (q, _) in PERCENTILES {
            let _ = write!(
                s,
                ",{:.3}",
                Self::ms(self.latency_us.value_at_quantile(q / 100.0))
            );
        }
        let _ = write!(s, ",{:.3},{}", Self::ms(self.latency_us.max()), self.errors);
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merging_adds_counts_and_histograms() {
        let mut a = Stats {
            messages: 10,
            bytes: 1000,
            elapsed: Duration::from_secs(1),
            ..Default::default()
        };
        let mut b = Stats {
            messages: 30,
            bytes: 3000,
            elapsed: Duration::from_secs(2),
            ..Default::default()
        };
        for ms in 1..=100 {
            a.record_latency(Duration::from_millis(ms));
            b.record_latency(Duration::from_millis(ms + 100));
        }
        a.merge(&b);
        assert_eq!(
            (a.messages, a.bytes, a.elapsed),
            (40, 4000, Duration::from_secs(2))
        );
        assert_eq!(a.latency_us.len(), 200);
        let p50 = a.latency_us.value_at_quantile(0.5);
        assert!(
            (99_000..=101_000).contains(&p50),
            "median of 1..200 ms is about 100 ms, got {p50} us"
        );
        assert!(a.latency_us.max() >= 199_000);
        assert_eq!(a.mb_per_sec(), 0.002);
        assert_eq!(a.msgs_per_sec(), 20.0);
    }

    #[test]
    fn csv_row_matches_its_header() {
        let mut s = Stats {
            messages: 4,
            bytes: 4_000_000,
            elapsed: Duration::from_secs(2),
            ..Default::default()
        };
        s.record_latency(Duration::from_micros(1500));
        let row = s.csv_row();
        assert_eq!(row.split(',').count(), Stats::CSV_HEADER.split(',').count());
        assert!(row.starts_with("2.000,2.0,1.500,"), "{row}");
        assert!(row.ends_with(",0"), "{row}");
    }

    #[test]
    fn json_is_well_formed() {
        let mut s = Stats {
            messages: 1,
            bytes: 10,
            elapsed: Duration::from_secs(1),
            ..Default::default()
        };
        s.record_latency(Duration::from_millis(2));
        let j = s.json("produce");
        assert!(
            j.starts_with("{\"what\":\"produce\"") && j.ends_with("}}"),
            "{j}"
        );
        assert_eq!(j.matches('{').count(), j.matches('}').count());
        assert!(j.contains("\"p99\":2.000"), "{j}");
    }

    #[test]
    fn round_trip_comes_before_latency_in_json() {
        let mut s = Stats {
            messages: 1,
            elapsed: Duration::from_secs(1),
            ..Default::default()
        };
        s.record_latency(Duration::from_millis(3));
        s.record_round_trip(Duration::from_millis(1));
        let j = s.json("produce");
        let (rt, lat) = (j.find("round_trip_ms"), j.find("latency_ms"));
        assert!(rt.is_some() && rt < lat, "{j}");
        // perf/lib.sh's `field` takes the last match of a key: the record latency's.
        let last_p99 = j.rfind("\"p99\":").map(|i| &j[i..i + 9]);
        assert_eq!(last_p99, Some("\"p99\":3.0"), "{j}");
        assert!(s
            .text("produce")
            .contains("request round trip ms p50 1.000"));
    }
}
