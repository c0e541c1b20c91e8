//! Latency distributions as HDR-style percentile plots: `.hgrm` text (HdrHistogram's
//! percentile distribution format, which its own plotters read) and SVG, with the percentile
//! on a log scale of 1/(1-p) (50% … 99.999%) and latency in milliseconds on a log scale. The
//! axes are fixed, so plots of two runs can be laid side by side or drawn into one
//! (`shardlog perf plot`).

use std::fmt::Write as _;

use hdrhistogram::Histogram;

use super::tune_report::escape;

/// One distribution: (percentile in %, latency in ms) points, rising.
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// The percentile distribution of a histogram in microseconds, as points in ms.
pub fn series(name: &str, hist: &Histogram<u64>) -> Series {
    let points = hist
        .iter_quantiles(5)
        .filter(|v| v.count_since_last_iteration() > 0 || v.quantile_iterated_to() == 0.0)
        .map(|v| {
            (
                v.quantile_iterated_to() * 100.0,
                v.value_iterated_to() as f64 / 1000.0,
            )
        })
        .collect();
    Series {
        name: name.to_string(),
        points,
    }
}

/// HdrHistogram's `.hgrm` text: value (ms), percentile (0–1), count, 1/(1-percentile).
pub fn hgrm(hist: &Histogram<u64>) -> String {
    let mut out = String::from("       Value     Percentile TotalCount 1/(1-Percentile)\n\n");
    let mut total = 0u64;
    for v in hist.iter_quantiles(5) {
        total += v.count_since_last_iteration();
        let q = v.quantile_iterated_to();
        let inverse = if q < 1.0 {
            1.0 / (1.0 - q)
        } else {
            f64::INFINITY
        };
        let _ = writeln!(
            out,
            "{:12.3} {:14.12} {:10} {:14.2}",
            v.value_iterated_to() as f64 / 1000.0,
            q,
            total,
            inverse
        );
    }
    let _ = writeln!(
        out,
        "#[Mean    = {:12.3}, StdDeviation   = {:12.3}]",
        hist.mean() / 1000.0,
        hist.stdev() / 1000.0
    );
    let _ = writeln!(
        out,
        "#[Max     = {:12.3}, Total count    = {:12}]",
        hist.max() as f64 / 1000.0,
        hist.len()
    );
    out
}

/// Reads the points of a `.hgrm` file (lines of value, percentile, count, inverse).
pub fn parse_hgrm(name: &str, text: &str) -> anyhow::Result<Series> {
    let mut points = Vec::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() != 4 {
            continue;
        }
        let (Ok(value), Ok(q)) = (fields[0].parse::<f64>(), fields[1].parse::<f64>()) else {
            continue;
        };
        points.push((q * 100.0, value));
    }
    if points.is_empty() {
        anyhow::bail!("{name}: no percentile lines (value percentile count 1/(1-p)) found");
    }
    Ok(Series {
        name: name.to_string(),
        points,
    })
}

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 420.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 170.0;
const TOP: f64 = 30.0;
const BOTTOM: f64 = 50.0;
/// The x axis runs from 0% to 99.999% (1/(1-p) from 1 to 10^5).
const X_DECADES: f64 = 5.0;
/// The y axis runs from 10 µs to 10 s.
const Y_MIN_MS: f64 = 0.01;
const Y_DECADES: f64 = 6.0;
const COLOURS: [&str; 6] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
];

fn x_of(percentile: f64) -> f64 {
    let inverse = 1.0 / (1.0 - (percentile / 100.0).min(0.999_999_9));
    let decades = inverse.log10().clamp(0.0, X_DECADES);
    LEFT + decades / X_DECADES * (WIDTH - LEFT - RIGHT)
}

fn y_of(ms: f64) -> f64 {
    let decades = (ms.max(Y_MIN_MS) / Y_MIN_MS).log10().clamp(0.0, Y_DECADES);
    HEIGHT - BOTTOM - decades / Y_DECADES * (HEIGHT - TOP - BOTTOM)
}

/// An SVG of the series' percentile curves, with a legend.
pub fn svg(title: &str, series: &[Series]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        s,
        r#"<rect width="100%" height="100%" fill="white"/><text x="{LEFT}" y="18" font-size="14">{}</text>"#,
        escape(title)
    );
    for (i, label) in ["0%", "90%", "99%", "99.9%", "99.99%", "99.999%"]
        .iter()
        .enumerate()
    {
        let x = LEFT + i as f64 / X_DECADES * (WIDTH - LEFT - RIGHT);
        let _ = writeln!(
            s,
            r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{:.1}" stroke="#ddd"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{label}</text>"##,
            HEIGHT - BOTTOM,
            HEIGHT - BOTTOM + 16.0
        );
    }
    for (i, label) in ["0.01", "0.1", "1", "10", "100", "1000", "10000"]
        .iter()
        .enumerate()
    {
        let y = HEIGHT - BOTTOM - i as f64 / Y_DECADES * (HEIGHT - TOP - BOTTOM);
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{label}</text>"##,
            WIDTH - RIGHT,
            LEFT - 6.0,
            y + 4.0
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">percentile</text><text x="16" y="{:.1}" transform="rotate(-90 16 {:.1})" text-anchor="middle">latency (ms)</text>"#,
        (LEFT + WIDTH - RIGHT) / 2.0,
        HEIGHT - 12.0,
        (TOP + HEIGHT - BOTTOM) / 2.0,
        (TOP + HEIGHT - BOTTOM) / 2.0
    );
    for (i, series) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let points: Vec<String> = series
            .points
            .iter()
            .map(|&(p, ms)| format!("{:.1},{:.1}", x_of(p), y_of(ms)))
            .collect();
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{colour}" stroke-width="2" points="{}"/>"#,
            points.join(" ")
        );
        let y = TOP + 14.0 + i as f64 * 18.0;
        let x = WIDTH - RIGHT + 12.0;
        let _ = writeln!(
            s,
            r#"<line x1="{x:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="{colour}" stroke-width="2"/><text x="{:.1}" y="{y:.1}">{}</text>"#,
            y - 4.0,
            x + 20.0,
            y - 4.0,
            x + 26.0,
            escape(&series.name)
        );
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn histogram() -> Histogram<u64> {
        let mut h = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).unwrap();
        for us in 1..=10_000u64 {
            h.record(100 + us % 900).unwrap();
        }
        h.record(50_000).unwrap();
        h
    }

    #[test]
    fn hgrm_round_trips_through_the_parser() {
        let h = histogram();
        let parsed = parse_hgrm("run", &hgrm(&h)).unwrap();
        let (last_p, last_ms) = *parsed.points.last().unwrap();
        assert!((last_p - 100.0).abs() < 1e-6);
        assert!((last_ms - 50.0).abs() < 0.1, "{last_ms}");
        assert!(parsed
            .points
            .windows(2)
            .all(|w| w[0].0 <= w[1].0 && w[0].1 <= w[1].1));
        assert!(parse_hgrm("empty", "nothing here").is_err());
    }

    #[test]
    fn svg_has_a_curve_and_a_legend_entry_per_series() {
        let h = histogram();
        let out = svg("t <&>", &[series("a", &h), series("b", &h)]);
        assert_eq!(out.matches("<polyline").count(), 2);
        assert!(out.contains(">a</text>") && out.contains(">b</text>"));
        assert!(out.contains("t &lt;&amp;&gt;"));
        assert!(out.starts_with("<svg") && out.trim_end().ends_with("</svg>"));
    }

    #[test]
    fn axes_are_fixed_and_monotonic() {
        assert!(x_of(50.0) < x_of(99.0) && x_of(99.0) < x_of(99.99));
        assert!((x_of(0.0) - LEFT).abs() < 1e-9);
        assert!(y_of(0.1) > y_of(1.0) && y_of(1.0) > y_of(10.0));
    }
}
