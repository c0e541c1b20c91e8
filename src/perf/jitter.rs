//! `shardlog perf jitter`: the machine's own scheduling floor. One thread pinned to each CPU
//! spins on the monotonic clock for the run; a gap between two consecutive readings longer
//! than [`GAP`] is time that thread did not run (the hypervisor took the vCPU, an interrupt,
//! another task). No program on these CPUs can answer faster than the gaps let it run.
//!
//! Besides the gap counts, the gaps are turned into the delay that work due at a random
//! instant would see (an instant inside a gap waits for the rest of it): its percentiles are
//! the floor under the open-loop percentiles of `perf produce`. All CPUs share one clock, so
//! the same is computed for work that needs every one of them (a record goes through the
//! client's CPU and the broker's): it waits at least for the longer of the gaps covering its
//! instant, and gaps on different CPUs at different times each delay it, so its floor is above
//! either CPU's.

use std::time::{Duration, Instant};

use super::producer::pin_to;

/// Readings further apart than this count as a gap.
const GAP: Duration = Duration::from_micros(10);

/// A time the spinning thread did not run: from `at` (since the shared start) for `len`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gap {
    pub at: Duration,
    pub len: Duration,
}

/// One CPU's gaps over a run.
#[derive(Clone, Debug, Default)]
pub struct Gaps {
    pub cpu: usize,
    pub run: Duration,
    /// Every gap longer than [`GAP`], in time order.
    pub gaps: Vec<Gap>,
}

impl Gaps {
    pub fn lost(&self) -> Duration {
        self.gaps.iter().map(|g| g.len).sum()
    }

    /// Gaps longer than `d`, per second of the run.
    pub fn per_second_over(&self, d: Duration) -> f64 {
        let n = self.gaps.iter().filter(|g| g.len > d).count();
        n as f64 / self.run.as_secs_f64().max(1e-9)
    }

    /// The delay that work due at a uniformly random instant sees at quantile `q`: the least
    /// `x` for which the share of instants delayed by more than `x` (those within a gap more
    /// than `x` before its end) is at most `1 - q`.
    pub fn delay_at(&self, q: f64) -> Duration {
        delay_at(std::slice::from_ref(self), q)
    }

    /// The figures both reports give, in % and ms.
    fn figures(&self) -> Figures {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        Figures {
            lost_pct: 100.0 * self.lost().as_secs_f64() / self.run.as_secs_f64().max(1e-9),
            over_100us: self.per_second_over(Duration::from_micros(100)),
            over_1ms: self.per_second_over(Duration::from_millis(1)),
            over_5ms: self.per_second_over(Duration::from_millis(5)),
            max_ms: ms(self.gaps.iter().map(|g| g.len).max().unwrap_or_default()),
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

/// The delay at quantile `q` of work due at a uniformly random instant that needs every CPU
/// of `all` (measured over the same run): the least `x` for which the instants more than `x`
/// before the end of a gap on any of them make up at most `1 - q` of the run.
pub fn delay_at(all: &[Gaps], q: f64) -> Duration {
    let run = all.iter().map(|g| g.run).max().unwrap_or_default();
    let mut spans: Vec<(f64, f64)> = all
        .iter()
        .flat_map(|g| g.gaps.iter())
        .map(|g| (g.at.as_secs_f64(), (g.at + g.len).as_secs_f64()))
        .collect();
    spans.sort_by(|a, b| a.0.total_cmp(&b.0));
    // The share of the run delayed by more than x: the union of [start, end - x].
    let over = |x: f64| -> f64 {
        let (mut covered, mut reach) = (0.0, f64::NEG_INFINITY);
        for &(start, end) in &spans {
            let end = end - x;
            if end <= start {
                continue;
            }
            if end > reach {
                covered += end - start.max(reach);
                reach = end;
            }
        }
        covered / run.as_secs_f64().max(1e-9)
    };
    let longest = spans.iter().map(|(s, e)| e - s).fold(0.0, f64::max);
    let (mut lo, mut hi) = (0.0, longest);
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

/// The line for work that needs every one of the measured CPUs.
pub fn combined_text(all: &[Gaps]) -> String {
    let cpus: Vec<String> = all.iter().map(|g| g.cpu.to_string()).collect();
    let [p99, p999, p9999] = [0.99, 0.999, 0.9999].map(|q| delay_at(all, q).as_secs_f64() * 1e3);
    format!(
        "cpus {} together: delay of work due at a random instant that needs all of them: p99 \
         {p99:.3} p99.9 {p999:.3} p99.99 {p9999:.3} ms",
        cpus.join("+")
    )
}

/// Spins on each of `cpus` at once for `run` and returns each one's gaps, all timed from one
/// start.
pub fn measure(cpus: &[usize], run: Duration) -> anyhow::Result<Vec<Gaps>> {
    let start = Instant::now();
    let threads: Vec<_> = cpus
        .iter()
        .map(|&cpu| {
            std::thread::spawn(move || {
                pin_to(&[cpu], 0);
                spin(cpu, start, run)
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

fn spin(cpu: usize, start: Instant, run: Duration) -> Gaps {
    let mut last = Instant::now();
    let mut gaps = Vec::new();
    loop {
        let now = Instant::now();
        let len = now - last;
        if len > GAP {
            gaps.push(Gap {
                at: last - start,
                len,
            });
        }
        last = now;
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
            gaps: (0..10).map(|i| gap(i * 1000, 5.0)).collect(),
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

    fn gap(at_ms: u64, len_ms: f64) -> Gap {
        Gap {
            at: Duration::from_millis(at_ms),
            len: Duration::from_secs_f64(len_ms / 1000.0),
        }
    }

    fn ms(d: Duration) -> f64 {
        d.as_secs_f64() * 1000.0
    }

    #[test]
    fn work_needing_both_cpus_waits_for_the_gaps_of_either() {
        // CPU 0 and CPU 1 each lose ten 5 ms gaps in 10 s, at different times: alone each
        // has a p99.9 of 4 ms; together twice the instants are delayed, so p99.9 is 4.5 ms.
        let run = Duration::from_secs(10);
        let cpu0 = Gaps {
            cpu: 0,
            run,
            gaps: (0..10).map(|i| gap(i * 1000, 5.0)).collect(),
        };
        let cpu1 = Gaps {
            cpu: 1,
            run,
            gaps: (0..10).map(|i| gap(i * 1000 + 500, 5.0)).collect(),
        };
        assert!((ms(cpu1.delay_at(0.999)) - 4.0).abs() < 0.01);
        let both = [cpu0.clone(), cpu1];
        assert!((ms(delay_at(&both, 0.999)) - 4.5).abs() < 0.01);
        // Gaps at the same instants overlap: the union counts them once.
        let same = [cpu0.clone(), Gaps { cpu: 1, ..cpu0 }];
        assert!((ms(delay_at(&same, 0.999)) - 4.0).abs() < 0.01);
        assert!(combined_text(&both).starts_with("cpus 0+1 together"));
    }

    #[test]
    fn a_short_run_measures_something() {
        let g = measure(&[0], Duration::from_millis(50)).unwrap();
        assert_eq!(g.len(), 1);
        assert!(g[0].run >= Duration::from_millis(50));
        assert!(g[0].lost() < g[0].run);
    }
}
