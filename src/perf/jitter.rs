//! `shardlog perf jitter`: the machine's own scheduling floor. One thread pinned to each CPU
//! spins on the monotonic clock for the run; a gap between two consecutive readings longer
//! than [`GAP`] is time that thread did not run (the hypervisor took the vCPU, an interrupt,
//! another task). No program on these CPUs can answer faster than the gaps let it run.
//!
//! Besides the gap counts, the gaps are turned into the delay that work due at a random
//! instant would see (an instant inside a gap waits for the rest of it): its percentiles are
//! the floor under the open-loop percentiles of `perf produce`.

use std::time::{Duration, Instant};

use super::producer::pin_to;

/// Readings further apart than this count as a gap.
const GAP: Duration = Duration::from_micros(10);

/// One CPU's gaps over a run.
#[derive(Clone, Debug, Default)]
pub struct Gaps {
    pub cpu: usize,
    pub run: Duration,
    /// Every gap longer than [`GAP`].
    pub gaps: Vec<Duration>,
}

impl Gaps {
    pub fn lost(&self) -> Duration {
        self.gaps.iter().sum()
    }

    /// Gaps longer than `d`, per second of the run.
    pub fn per_second_over(&self, d: Duration) -> f64 {
        let n = self.gaps.iter().filter(|g| **g > d).count();
        n as f64 / self.run.as_secs_f64().max(1e-9)
    }

    /// The delay that work due at a uniformly random instant sees at quantile `q`: the least
    /// `x` for which the share of instants delayed by more than `x` (the summed `gap - x` of
    /// the gaps over `x`, over the run) is at most `1 - q`.
    pub fn delay_at(&self, q: f64) -> Duration {
        let run = self.run.as_secs_f64();
        let over = |x: f64| -> f64 {
            self.gaps
                .iter()
                .map(|g| (g.as_secs_f64() - x).max(0.0))
                .sum::<f64>()
                / run.max(1e-9)
        };
        let (mut lo, mut hi) = (
            0.0,
            self.gaps.iter().max().map_or(0.0, Duration::as_secs_f64),
        );
        if over(lo) <= 1.0 - q {
            return Duration::ZERO;
        }
        for _ in 0..60 {
            let mid = (lo + hi) / 2.0;
            if over(mid) <= 1.0 - q {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        Duration::from_secs_f64(hi)
    }

    /// The figures both reports give, in % and ms.
    fn figures(&self) -> Figures {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        Figures {
            lost_pct: 100.0 * self.lost().as_secs_f64() / self.run.as_secs_f64().max(1e-9),
            over_100us: self.per_second_over(Duration::from_micros(100)),
            over_1ms: self.per_second_over(Duration::from_millis(1)),
            over_5ms: self.per_second_over(Duration::from_millis(5)),
            max_ms: ms(self.gaps.iter().max().copied().unwrap_or_default()),
            delay_ms: [0.99, 0.999, 0.9999].map(|q| ms(self.delay_at(q))),
        }
    }

    pub fn text(&self) -> String {
        let cpu = self.cpu;
        let Figures {
            lost_pct,
            over_100us,
            over_1ms,
            over_5ms,
            max_ms,
            delay_ms: [p99, p999, p9999],
        } = self.figures();
        format!(
            "cpu {cpu}: {lost_pct:.2}% of the time lost in gaps; gaps/s over 0.1 ms \
             {over_100us:.1}, over 1 ms {over_1ms:.1}, over 5 ms {over_5ms:.2}; longest \
             {max_ms:.3} ms; delay of work due at a random instant: p99 {p99:.3} p99.9 \
             {p999:.3} p99.99 {p9999:.3} ms"
        )
    }

    pub fn json(&self) -> String {
        let f = self.figures();
        let delay = format!(
            "{{\"p99\":{:.3},\"p99.9\":{:.3},\"p99.99\":{:.3}}}",
            f.delay_ms[0], f.delay_ms[1], f.delay_ms[2]
        );
        format!(
            "{{\"what\":\"jitter\",\"cpu\":{},\"lost_pct\":{:.3},\"gaps_per_sec_over_1ms\":{:.2},\
             \"gaps_per_sec_over_5ms\":{:.2},\"max_ms\":{:.3},\"delay_ms\":{delay}}}",
            self.cpu, f.lost_pct, f.over_1ms, f.over_5ms, f.max_ms
        )
    }
}

struct Figures {
    lost_pct: f64,
    over_100us: f64,
    over_1ms: f64,
    over_5ms: f64,
    max_ms: f64,
    /// At p99, p99.9 and p99.99.
    delay_ms: [f64; 3],
}

/// Spins on each of `cpus` at once for `run` and returns each one's gaps.
pub fn measure(cpus: &[usize], run: Duration) -> anyhow::Result<Vec<Gaps>> {
    let threads: Vec<_> = cpus
        .iter()
        .map(|&cpu| {
            std::thread::spawn(move || {
                pin_to(&[cpu], 0);
                spin(cpu, run)
            })
        })
        .collect();
    threads
        .into_iter()
        .map(|t| {
            t.join()
                .map_err(|_| anyhow::anyhow!("a jitter thread panicked"))
        })
        .collect()
}

fn spin(cpu: usize, run: Duration) -> Gaps {
    let start = Instant::now();
    let mut last = start;
    let mut gaps = Vec::new();
    loop {
        let now = Instant::now();
        let gap = now - last;
        last = now;
        if gap > GAP {
            gaps.push(gap);
        }
        if now - start >= run {
            return Gaps {
                cpu,
                run: now - start,
                gaps,
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delay_percentiles_follow_the_gaps() {
        // Ten 5 ms gaps in 10 s: instants inside them are 0.5% of the run, delayed by up to
        // 5 ms, so p99 is no delay at all, and p99.9 the last part of a gap.
        let g = Gaps {
            cpu: 0,
            run: Duration::from_secs(10),
            gaps: vec![Duration::from_millis(5); 10],
        };
        assert_eq!(g.delay_at(0.99), Duration::ZERO);
        // Share delayed over x is 10 * (5 ms - x) / 10 s = 0.001 at x = 4 ms.
        let p999 = g.delay_at(0.999).as_secs_f64() * 1000.0;
        assert!((p999 - 4.0).abs() < 0.01, "{p999}");
        assert_eq!(g.lost(), Duration::from_millis(50));
        assert_eq!(g.per_second_over(Duration::from_millis(1)), 1.0);
        assert_eq!(g.per_second_over(Duration::from_millis(5)), 0.0);
        assert!(g.text().contains("longest 5.000 ms"), "{}", g.text());
    }

    #[test]
    fn a_short_run_measures_something() {
        let g = measure(&[0], Duration::from_millis(50)).unwrap();
        assert_eq!(g.len(), 1);
        assert!(g[0].run >= Duration::from_millis(50));
        assert!(g[0].lost() < g[0].run);
    }
}
