//! The I/O-free part of `shardlog tune`: the measured points of a producer-settings sweep
//! (batch.size × linger.ms × compression.type, at a fixed offered rate and at maximum rate) and
//! what is made of them: the Pareto frontier per mode, the CSV table, the SVG plot of throughput
//! against p99 latency, and the recommended setting for a p99 latency budget.
//!
//! Invariants: points with errors, or with a non-finite throughput or p99, are never on a
//! frontier and never recommended; frontiers are per mode (a "max" run is never compared with a
//! "rate" run); the SVG holds exactly one `<circle` per point, escaped text and no NaN.

use std::cmp::Ordering;
use std::fmt::Write as _;

/// One measured setting of a tuning sweep.
#[derive(Clone, Debug, PartialEq)]
pub struct TunePoint {
    pub batch_size: usize,
    pub linger_ms: u64,
    /// "none", "gzip", "snappy", "lz4" or "zstd".
    pub compression: String,
    /// "max" for the as-fast-as-possible run, otherwise "rate".
    pub mode: String,
    /// Offered records per second in "rate" mode; None in "max" mode.
    pub offered_msgs_per_sec: Option<f64>,
    pub mb_per_sec: f64,
    pub msgs_per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub errors: u64,
}

impl TunePoint {
    /// "batch.size=65536 linger.ms=5 compression.type=lz4" style label.
    pub fn label(&self) -> String {
        format!(
            "batch.size={} linger.ms={} compression.type={}",
            self.batch_size, self.linger_ms, self.compression
        )
    }

    /// "64K/5ms" (with "/lz4" appended when compressed), for labels on the plot.
    fn short_label(&self) -> String {
        let batch = match self.batch_size {
            b if b >= 1 << 20 && b % (1 << 20) == 0 => format!("{}M", b >> 20),
            b if b >= 1 << 10 && b % (1 << 10) == 0 => format!("{}K", b >> 10),
            b => b.to_string(),
        };
        let mut label = format!("{batch}/{}ms", self.linger_ms);
        if self.compression != "none" {
            let _ = write!(label, "/{}", self.compression);
        }
        label
    }

    /// Whether the point may be on a frontier or recommended at all.
    fn usable(&self) -> bool {
        self.errors == 0 && self.mb_per_sec.is_finite() && self.p99_ms.is_finite()
    }

    /// At least as fast and at least as quick at p99 as `other`, and strictly better in one.
    fn dominates(&self, other: &TunePoint) -> bool {
        self.mb_per_sec >= other.mb_per_sec
            && self.p99_ms <= other.p99_ms
            && (self.mb_per_sec > other.mb_per_sec || self.p99_ms < other.p99_ms)
    }
}

/// Indices of the points on the Pareto frontier among those of one mode: no other point of the
/// same mode has both higher-or-equal throughput (mb_per_sec) and lower-or-equal p99, with at
/// least one strictly better. Points with errors > 0 are never on the frontier (nor do they
/// dominate others). Equal points are all kept. Returned sorted by throughput ascending.
pub fn pareto_frontier(points: &[TunePoint], mode: &str) -> Vec<usize> {
    let candidates: Vec<usize> = points
        .iter()
        .enumerate()
        .filter(|(_, p)| p.mode == mode && p.usable())
        .map(|(i, _)| i)
        .collect();
    let mut frontier: Vec<usize> = candidates
        .iter()
        .copied()
        .filter(|&i| !candidates.iter().any(|&j| points[j].dominates(&points[i])))
        .collect();
    frontier.sort_by(|&a, &b| {
        let (p, q) = (&points[a], &points[b]);
        p.mb_per_sec
            .total_cmp(&q.mb_per_sec)
            .then(p.p99_ms.total_cmp(&q.p99_ms))
    });
    frontier
}

/// The distinct modes, in order of first appearance.
fn modes(points: &[TunePoint]) -> Vec<&str> {
    let mut modes: Vec<&str> = Vec::new();
    for p in points {
        if !modes.contains(&p.mode.as_str()) {
            modes.push(&p.mode);
        }
    }
    modes
}

/// For each point, whether it is on its own mode's frontier.
fn frontier_flags(points: &[TunePoint]) -> Vec<bool> {
    let mut flags = vec![false; points.len()];
    for mode in modes(points) {
        for i in pareto_frontier(points, mode) {
            flags[i] = true;
        }
    }
    flags
}

const CSV_HEADER: &str = "mode,offered_msgs_per_sec,batch_size,linger_ms,compression,mb_per_sec,\
msgs_per_sec,p50_ms,p99_ms,p999_ms,max_ms,errors,pareto";

/// The CSV header line and one row per point; columns:
/// mode,offered_msgs_per_sec,batch_size,linger_ms,compression,mb_per_sec,msgs_per_sec,p50_ms,
/// p99_ms,p999_ms,max_ms,errors,pareto
/// (offered empty in max mode; pareto is 1 if the point is on its mode's frontier else 0; floats
/// with 3 decimals). Ends with a newline.
pub fn csv(points: &[TunePoint]) -> String {
    let mut out = format!("{CSV_HEADER}\n");
    for (p, on_frontier) in points.iter().zip(frontier_flags(points)) {
        let offered = p
            .offered_msgs_per_sec
            .map(|r| format!("{r:.3}"))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "{},{offered},{},{},{},{:.3},{:.3},{:.3},{:.3},{:.3},{:.3},{},{}",
            csv_field(&p.mode),
            p.batch_size,
            p.linger_ms,
            csv_field(&p.compression),
            p.mb_per_sec,
            p.msgs_per_sec,
            p.p50_ms,
            p.p99_ms,
            p.p999_ms,
            p.max_ms,
            p.errors,
            u8::from(on_frontier),
        );
    }
    out
}

/// A text field, quoted only when it holds a separator, quote or line break.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// The recommended point for a p99 latency budget: among points with errors == 0 and
/// p99_ms <= budget_ms, in any mode, the one with the highest mb_per_sec, ties broken by lower
/// p99 (then by the earlier index). None if none fits.
pub fn recommend(points: &[TunePoint], budget_ms: f64) -> Option<usize> {
    points
        .iter()
        .enumerate()
        .filter(|(_, p)| p.usable() && p.p99_ms <= budget_ms)
        .reduce(|best, cand| {
            let order = cand.1.mb_per_sec.total_cmp(&best.1.mb_per_sec);
            match order.then(best.1.p99_ms.total_cmp(&cand.1.p99_ms)) {
                Ordering::Greater => cand,
                _ => best,
            }
        })
        .map(|(i, _)| i)
}

const WIDTH: f64 = 860.0;
const HEIGHT: f64 = 520.0;
const LEFT: f64 = 80.0;
const TOP: f64 = 50.0;
const PLOT_W: f64 = 580.0;
const PLOT_H: f64 = 390.0;
const COLOURS: [&str; 5] = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e"];
/// Latencies are clamped to this before taking the logarithm.
const MIN_LATENCY_MS: f64 = 0.001;

/// The x axis: p99 latency on a log scale spanning whole decades 10^lo ..= 10^hi ms.
struct LogAxis {
    lo: i32,
    hi: i32,
}

impl LogAxis {
    fn fit(points: &[TunePoint]) -> LogAxis {
        let (min, max) = points
            .iter()
            .filter(|p| p.p99_ms.is_finite())
            .map(|p| p.p99_ms.max(MIN_LATENCY_MS).log10())
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
                (lo.min(v), hi.max(v))
            });
        if min > max {
            return LogAxis { lo: -1, hi: 3 };
        }
        let lo = min.floor() as i32;
        LogAxis {
            lo,
            hi: (max.ceil() as i32).max(lo + 1),
        }
    }

    /// Pixel column of a latency; out-of-range values land on an edge.
    fn x(&self, ms: f64) -> f64 {
        // `f64::max` returns the other operand for NaN, so NaN lands on the left edge.
        self.x_of_log(ms.max(MIN_LATENCY_MS).log10())
    }

    fn x_of_log(&self, log: f64) -> f64 {
        let frac = (log - f64::from(self.lo)) / f64::from(self.hi - self.lo);
        LEFT + frac.clamp(0.0, 1.0) * PLOT_W
    }

    /// (log10 of the value, label): decades, plus 2 and 5 when the span is short.
    fn ticks(&self) -> Vec<(f64, String)> {
        let span = self.hi - self.lo;
        let mantissas: &[f64] = if span <= 2 { &[1.0, 2.0, 5.0] } else { &[1.0] };
        let every = usize::try_from((span + 9) / 10).unwrap_or(1).max(1);
        let mut ticks = Vec::new();
        for k in (self.lo..=self.hi).step_by(every) {
            let count = if k < self.hi { mantissas.len() } else { 1 };
            for &m in &mantissas[..count] {
                let decimals = usize::try_from(-k).unwrap_or(0);
                let value = m * 10f64.powi(k);
                ticks.push((f64::from(k) + m.log10(), format!("{value:.decimals$}")));
            }
        }
        ticks
    }
}

/// The y axis: throughput in MB/s, linear from 0 to `top` in steps of 1, 2 or 5 × 10^k.
struct LinearAxis {
    step: f64,
    top: f64,
}

impl LinearAxis {
    fn fit(points: &[TunePoint]) -> LinearAxis {
        let max = points
            .iter()
            .map(|p| p.mb_per_sec)
            .filter(|v| v.is_finite())
            .fold(0.0, f64::max);
        let max = if max > 0.0 { max.max(0.001) } else { 1.0 };
        let raw = max / 5.0;
        let magnitude = 10f64.powf(raw.log10().floor());
        let step = match raw / magnitude {
            n if n <= 1.0 => magnitude,
            n if n <= 2.0 => 2.0 * magnitude,
            n if n <= 5.0 => 5.0 * magnitude,
            _ => 10.0 * magnitude,
        };
        LinearAxis {
            step,
            top: (max / step).ceil() * step,
        }
    }

    /// Pixel row of a throughput; NaN or out-of-range values land on an edge.
    fn y(&self, mb: f64) -> f64 {
        let frac = if mb.is_nan() {
            0.0
        } else {
            (mb / self.top).clamp(0.0, 1.0)
        };
        TOP + PLOT_H * (1.0 - frac)
    }

    fn ticks(&self) -> Vec<(f64, String)> {
        let decimals = (-self.step.log10().floor()).max(0.0) as usize;
        let count = (self.top / self.step).round() as u32;
        (0..=count)
            .map(|i| f64::from(i) * self.step)
            .map(|v| (v, format!("{v:.decimals$}")))
            .collect()
    }
}

/// Escapes the XML special characters of text placed in the document.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// The colour of a mode: its place among the modes, cycling through the palette.
fn colour(modes: &[&str], mode: &str) -> &'static str {
    COLOURS[modes.iter().position(|m| *m == mode).unwrap_or(0) % COLOURS.len()]
}

/// A figure for a tooltip: fixed decimals, "n/a" when not finite.
fn fig(v: f64, decimals: usize) -> String {
    if v.is_finite() {
        format!("{v:.decimals$}")
    } else {
        "n/a".to_string()
    }
}

fn tooltip(p: &TunePoint) -> String {
    let mut tip = format!("{} ({}", p.label(), p.mode);
    if let Some(rate) = p.offered_msgs_per_sec {
        let _ = write!(tip, ", offered {} msg/s", fig(rate, 0));
    }
    let _ = write!(
        tip,
        ")\n{} MB/s, {} msg/s\np50 {} ms, p99 {} ms, p99.9 {} ms, max {} ms\nerrors {}",
        fig(p.mb_per_sec, 3),
        fig(p.msgs_per_sec, 0),
        fig(p.p50_ms, 3),
        fig(p.p99_ms, 3),
        fig(p.p999_ms, 3),
        fig(p.max_ms, 3),
        p.errors
    );
    tip
}

/// Attributes centring a `<text>` on its x.
const CENTRED: &str = r#"text-anchor="middle""#;

/// Appends a `<text>` element at `(x, y)`; `content` must already be escaped.
fn text(out: &mut String, (x, y): (f64, f64), attrs: &str, content: &str) {
    let _ = writeln!(
        out,
        r#"<text x="{x:.1}" y="{y:.1}" {attrs}>{content}</text>"#
    );
}

/// Appends a light grid line from `(x1, y1)` to `(x2, y2)`.
fn grid(out: &mut String, (x1, y1): (f64, f64), (x2, y2): (f64, f64)) {
    let _ = writeln!(
        out,
        r##"<line x1="{x1:.1}" y1="{y1:.1}" x2="{x2:.1}" y2="{y2:.1}" stroke="#ddd"/>"##
    );
}

/// A self-contained SVG document: throughput (MB/s, linear from 0) against p99 latency (ms, log
/// scale), one circle per point coloured by mode, each mode's frontier filled, labelled and
/// joined by a polyline, every point with a tooltip. Never panics; clamps p99 to 0.001 ms.
pub fn svg(points: &[TunePoint], title: &str) -> String {
    let (xa, ya) = (LogAxis::fit(points), LinearAxis::fit(points));
    let at = |p: &TunePoint| (xa.x(p.p99_ms), ya.y(p.mb_per_sec));
    let modes = modes(points);
    let (bottom, right, centre) = (TOP + PLOT_H, LEFT + PLOT_W, LEFT + PLOT_W / 2.0);
    let mut out = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">
<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>
"#
    );
    let bold = r#"text-anchor="middle" font-size="16" font-weight="bold""#;
    text(&mut out, (WIDTH / 2.0, 28.0), bold, &escape(title));
    for (log, label) in xa.ticks() {
        let x = xa.x_of_log(log);
        grid(&mut out, (x, TOP), (x, bottom));
        text(&mut out, (x, bottom + 18.0), CENTRED, &label);
    }
    for (value, label) in ya.ticks() {
        let y = ya.y(value);
        grid(&mut out, (LEFT, y), (right, y));
        text(
            &mut out,
            (LEFT - 8.0, y + 4.0),
            r#"text-anchor="end""#,
            &label,
        );
    }
    let _ = writeln!(
        out,
        r##"<rect x="{LEFT}" y="{TOP}" width="{PLOT_W}" height="{PLOT_H}" fill="none" stroke="#333"/>"##
    );
    text(
        &mut out,
        (centre, bottom + 42.0),
        CENTRED,
        "p99 latency (ms, log scale)",
    );
    let _ = writeln!(
        out,
        r#"<text transform="translate(24,{:.1}) rotate(-90)" {CENTRED}>throughput (MB/s)</text>"#,
        TOP + PLOT_H / 2.0
    );
    if points.is_empty() {
        text(&mut out, (centre, TOP + PLOT_H / 2.0), CENTRED, "no points");
    }
    for &mode in &modes {
        let frontier = pareto_frontier(points, mode);
        if frontier.len() < 2 {
            continue;
        }
        let line: Vec<String> = frontier
            .iter()
            .map(|&i| at(&points[i]))
            .map(|(x, y)| format!("{x:.1},{y:.1}"))
            .collect();
        let _ = writeln!(
            out,
            r#"<polyline points="{}" fill="none" stroke="{}" stroke-width="1.5"/>"#,
            line.join(" "),
            colour(&modes, mode)
        );
    }
    for (p, on_frontier) in points.iter().zip(frontier_flags(points)) {
        let ((x, y), c) = (at(p), colour(&modes, &p.mode));
        let (r, fill) = if on_frontier {
            (6.0, c)
        } else {
            (3.5, "white")
        };
        let _ = writeln!(
            out,
            r#"<circle cx="{x:.1}" cy="{y:.1}" r="{r}" fill="{fill}" stroke="{c}" stroke-width="1.5"><title>{}</title></circle>"#,
            escape(&tooltip(p))
        );
        if on_frontier {
            let attrs = format!(r#"font-size="10" fill="{c}""#);
            text(
                &mut out,
                (x + 8.0, y - 6.0),
                &attrs,
                &escape(&p.short_label()),
            );
        }
    }
    let legend_x = right + 20.0;
    for (i, &mode) in modes.iter().enumerate() {
        let y = TOP + 10.0 + 20.0 * i as f64;
        let _ = writeln!(
            out,
            r#"<rect x="{legend_x:.1}" y="{y:.1}" width="12" height="12" fill="{}"/>"#,
            colour(&modes, mode)
        );
        text(&mut out, (legend_x + 18.0, y + 10.0), "", &escape(mode));
    }
    let note_y = TOP + 30.0 + 20.0 * modes.len() as f64;
    let small = r#"font-size="10""#;
    text(
        &mut out,
        (legend_x, note_y),
        small,
        "filled, joined: Pareto frontier",
    );
    text(
        &mut out,
        (legend_x, note_y + 14.0),
        small,
        "hollow: dominated or errors",
    );
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(mode: &str, batch_size: usize, mb: f64, p99: f64, errors: u64) -> TunePoint {
        TunePoint {
            batch_size,
            linger_ms: 5,
            compression: "none".to_string(),
            mode: mode.to_string(),
            offered_msgs_per_sec: (mode == "rate").then_some(10_000.0),
            mb_per_sec: mb,
            msgs_per_sec: mb * 1000.0,
            p50_ms: p99 / 2.0,
            p99_ms: p99,
            p999_ms: p99 * 2.0,
            max_ms: p99 * 3.0,
            errors,
        }
    }

    fn sample() -> Vec<TunePoint> {
        vec![
            point("rate", 16384, 10.0, 5.0, 0), // 0: fast p99, low throughput: frontier
            point("rate", 65536, 20.0, 10.0, 0), // 1: frontier
            point("rate", 32768, 15.0, 12.0, 0), // 2: dominated by 1
            point("rate", 65536, 20.0, 10.0, 0), // 3: equal to 1: both kept
            point("rate", 1 << 20, 30.0, 8.0, 2), // 4: would dominate 1-3 but has errors
            point("max", 131072, 100.0, 1.0, 0), // 5: alone in its mode
        ]
    }

    #[test]
    fn frontier_excludes_dominated_and_errored_points_per_mode() {
        let points = sample();
        assert_eq!(pareto_frontier(&points, "rate"), vec![0, 1, 3]);
        assert_eq!(pareto_frontier(&points, "max"), vec![5]);
        assert!(pareto_frontier(&points, "other").is_empty());
        assert!(pareto_frontier(&[], "rate").is_empty());
    }

    #[test]
    fn labels() {
        let mut p = point("rate", 65536, 1.0, 1.0, 0);
        p.compression = "lz4".to_string();
        assert_eq!(
            p.label(),
            "batch.size=65536 linger.ms=5 compression.type=lz4"
        );
        assert_eq!(p.short_label(), "64K/5ms/lz4");
        assert_eq!(point("max", 1 << 20, 1.0, 1.0, 0).short_label(), "1M/5ms");
        assert_eq!(point("max", 1000, 1.0, 1.0, 0).short_label(), "1000/5ms");
    }

    #[test]
    fn csv_has_header_rows_and_pareto_column() {
        let text = csv(&sample());
        let lines: Vec<&str> = text.lines().collect();
        assert!(text.ends_with('\n'));
        assert_eq!(lines.len(), 7);
        assert_eq!(lines[0], CSV_HEADER);
        assert_eq!(
            lines[0],
            "mode,offered_msgs_per_sec,batch_size,linger_ms,compression,mb_per_sec,msgs_per_sec,\
             p50_ms,p99_ms,p999_ms,max_ms,errors,pareto"
        );
        assert_eq!(
            lines[2],
            "rate,10000.000,65536,5,none,20.000,20000.000,5.000,10.000,20.000,30.000,0,1"
        );
        assert!(lines[3].ends_with(",0,0"));
        assert!(lines[5].ends_with(",2,0"));
        assert_eq!(
            lines[6],
            "max,,131072,5,none,100.000,100000.000,0.500,1.000,2.000,3.000,0,1"
        );
        assert_eq!(csv(&[]), format!("{CSV_HEADER}\n"));
    }

    #[test]
    fn svg_is_well_formed_and_escaped() {
        let points = sample();
        let doc = svg(&points, "a < b & c");
        assert!(doc.starts_with("<svg"));
        assert!(doc.ends_with("</svg>\n"));
        assert_eq!(doc.matches("<circle").count(), points.len());
        assert!(doc.contains("a &lt; b &amp; c"));
        assert!(!doc.contains("a < b"));
        assert!(doc.contains("64K/5ms"));
        assert!(!doc.contains("NaN"));
    }

    #[test]
    fn svg_survives_degenerate_input() {
        let empty = svg(&[], "empty");
        assert!(empty.starts_with("<svg") && empty.ends_with("</svg>\n"));
        assert_eq!(empty.matches("<circle").count(), 0);
        let single = vec![point("rate", 16384, 0.0, 0.0, 0)];
        let equal = vec![
            point("max", 16384, 5.0, 2.0, 0),
            point("max", 32768, 5.0, 2.0, 0),
        ];
        let odd = vec![
            point("rate", 1, f64::NAN, f64::NAN, 0),
            point("max", 1, 1.0, f64::INFINITY, 0),
        ];
        for points in [single, equal, odd] {
            let doc = svg(&points, "t");
            assert_eq!(doc.matches("<circle").count(), points.len());
            assert!(!doc.contains("NaN"));
        }
    }

    #[test]
    fn recommend_picks_fastest_within_budget() {
        let points = sample();
        assert_eq!(recommend(&points, 10.0), Some(5));
        let rate_only = &points[..5];
        assert_eq!(recommend(rate_only, 10.0), Some(1));
        assert_eq!(recommend(rate_only, 9.0), Some(0));
        assert_eq!(recommend(rate_only, 4.9), None);
        let mut tie = vec![
            point("rate", 1, 20.0, 9.0, 0),
            point("rate", 2, 20.0, 3.0, 0),
        ];
        assert_eq!(recommend(&tie, 10.0), Some(1));
        tie[1].errors = 1;
        assert_eq!(recommend(&tie, 10.0), Some(0));
        assert_eq!(recommend(&[], 100.0), None);
    }
}
