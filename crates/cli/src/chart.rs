//! The outage chart of `palisade load`: latency over time (log scale, p50, p99 and max
//! per 100 ms; a bucket in which no call completed is left empty, never drawn at zero)
//! and errors per second by kind, the phases shaded and named, the moments each
//! outage was detected and recovered marked. Drawn with plotters' SVG backend (no
//! system dependency).

use plotters::prelude::*;

/// One timed call: when it started (ms since the epoch), its latency (µs) and its
/// outcome (a provenance, or an error kind).
#[derive(Debug, Clone)]
pub(crate) struct Call {
    pub(crate) at_ms: u64,
    pub(crate) latency_us: u64,
    pub(crate) outcome: String,
}

/// A named span of the run, as fractions of its duration.
pub(crate) type Phase = (&'static str, f64, f64);

/// What the chart shows.
pub(crate) struct ChartInput<'a> {
    pub(crate) mode: &'a str,
    pub(crate) start_ms: u64,
    pub(crate) duration_ms: u64,
    pub(crate) calls: &'a [Call],
    pub(crate) phases: &'a [Phase],
    /// Moments to mark (ms since the epoch) and their labels (`detected`, `recovered`).
    pub(crate) marks: &'a [(u64, &'static str)],
}

impl Call {
    /// Whether the call answered (from any backend) rather than failed.
    pub(crate) fn is_ok(&self) -> bool {
        OUTCOMES_OK.contains(&self.outcome.as_str())
    }
}

const BUCKET_MS: u64 = 100;
const OUTCOMES_OK: [&str; 3] = ["distributed", "local", "local_degraded"];
const PHASE_COLORS: [RGBColor; 6] = [
    RGBColor(232, 245, 233),
    RGBColor(255, 235, 238),
    RGBColor(255, 248, 225),
    RGBColor(227, 242, 253),
    RGBColor(243, 229, 245),
    RGBColor(227, 242, 253),
];

fn percentile(sorted: &[u64], p: f64) -> u64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// p50, p99 and max latency (ms) of each 100 ms bucket with at least one call.
fn latency_buckets(input: &ChartInput<'_>) -> Vec<Option<[f64; 3]>> {
    let n = (input.duration_ms / BUCKET_MS).max(1) as usize;
    let mut buckets: Vec<Vec<u64>> = vec![Vec::new(); n];
    for c in input.calls {
        if let Some(i) = c.at_ms.checked_sub(input.start_ms).map(|d| (d / BUCKET_MS) as usize) {
            if let Some(b) = buckets.get_mut(i) {
                b.push(c.latency_us);
            }
        }
    }
    buckets
        .into_iter()
        .map(|mut b| {
            if b.is_empty() {
                return None;
            }
            b.sort_unstable();
            let ms = |us: u64| (us as f64 / 1000.0).max(0.01);
            Some([
                ms(percentile(&b, 0.5)),
                ms(percentile(&b, 0.99)),
                ms(*b.last().unwrap_or(&0)),
            ])
        })
        .collect()
}

/// Errors per second by kind, per whole second of the run.
fn error_rates(input: &ChartInput<'_>) -> Vec<(String, Vec<u64>)> {
    let secs = input.duration_ms.div_ceil(1000).max(1) as usize;
    let mut kinds: Vec<(String, Vec<u64>)> = Vec::new();
    for c in input.calls {
        if c.is_ok() {
            continue;
        }
        let Some(s) = c.at_ms.checked_sub(input.start_ms).map(|d| (d / 1000) as usize) else {
            continue;
        };
        if s >= secs {
            continue;
        }
        let i = match kinds.iter().position(|(k, _)| *k == c.outcome) {
            Some(i) => i,
            None => {
                kinds.push((c.outcome.clone(), vec![0; secs]));
                kinds.len() - 1
            }
        };
        kinds[i].1[s] += 1;
    }
    kinds.sort_by(|a, b| a.0.cmp(&b.0));
    kinds
}

/// The chart as an SVG document.
pub(crate) fn render(input: &ChartInput<'_>) -> Result<String, String> {
    let mut svg = String::new();
    draw(input, &mut svg).map_err(|e| e.to_string())?;
    Ok(svg)
}

fn draw(input: &ChartInput<'_>, out: &mut String) -> Result<(), Box<dyn std::error::Error>> {
    let lat = latency_buckets(input);
    let errors = error_rates(input);
    let dur_s = input.duration_ms as f64 / 1000.0;
    let top = lat.iter().flatten().map(|b| b[2]).fold(1.0f64, f64::max) * 2.0;
    let err_top = errors
        .iter()
        .flat_map(|(_, v)| v.iter())
        .copied()
        .max()
        .unwrap_or(0)
        .max(1) as f64
        * 1.15;
    let x_of = |ms: u64| ms.saturating_sub(input.start_ms) as f64 / 1000.0;

    let root = SVGBackend::with_string(out, (1000, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let (upper, lower) = root.split_vertically(380);

    let mut chart = ChartBuilder::on(&upper)
        .caption(
            format!("palisade load, mode {}: latency per 100 ms", input.mode),
            ("sans-serif", 16),
        )
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..dur_s, (0.01f64..top).log_scale())?;
    for ((name, from, to), color) in input.phases.iter().zip(PHASE_COLORS) {
        let (a, b) = (from * dur_s, to * dur_s);
        chart.draw_series(std::iter::once(Rectangle::new([(a, 0.01), (b, top)], color.filled())))?;
        chart.draw_series(std::iter::once(Text::new(
            name.to_string(),
            (a + dur_s * 0.005, top / 1.6),
            ("sans-serif", 12),
        )))?;
    }
    // The grid over the shaded phases.
    chart
        .configure_mesh()
        .x_desc("seconds")
        .y_desc("latency (ms, log)")
        .y_label_formatter(&|v| format!("{v}"))
        .light_line_style(RGBColor(240, 240, 240))
        .draw()?;
    let series: [(&str, usize, RGBColor); 3] = [
        ("p50", 0, RGBColor(46, 125, 50)),
        ("p99", 1, RGBColor(21, 101, 192)),
        ("max", 2, RGBColor(198, 40, 40)),
    ];
    for (label, idx, color) in series {
        // One line per run of non-empty buckets: a gap stays a gap.
        let mut runs: Vec<Vec<(f64, f64)>> = vec![Vec::new()];
        for (i, b) in lat.iter().enumerate() {
            match b {
                Some(v) => runs.last_mut().map_or((), |r| r.push(((i as f64 + 0.5) * 0.1, v[idx]))),
                None => runs.push(Vec::new()),
            }
        }
        let mut first = true;
        for run in runs.into_iter().filter(|r| !r.is_empty()) {
            let drawn = chart.draw_series(LineSeries::new(run, color.stroke_width(1)))?;
            if std::mem::take(&mut first) {
                drawn
                    .label(label)
                    .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], color));
            }
        }
    }
    for (at, label) in input.marks {
        let x = x_of(*at);
        let color = if *label == "detected" {
            RGBColor(230, 81, 0)
        } else {
            RGBColor(0, 105, 92)
        };
        chart.draw_series(std::iter::once(PathElement::new([(x, 0.01), (x, top)], color)))?;
        chart.draw_series(std::iter::once(Text::new(
            label.to_string(),
            (x + dur_s * 0.003, 0.02),
            ("sans-serif", 10).into_font().color(&color),
        )))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()?;

    let mut chart = ChartBuilder::on(&lower)
        .caption("errors per second, by kind", ("sans-serif", 14))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..dur_s, 0f64..err_top)?;
    for ((_, from, to), color) in input.phases.iter().zip(PHASE_COLORS) {
        chart.draw_series(std::iter::once(Rectangle::new(
            [(from * dur_s, 0.0), (to * dur_s, err_top)],
            color.filled(),
        )))?;
    }
    chart
        .configure_mesh()
        .x_desc("seconds")
        .y_desc("errors / s")
        .light_line_style(RGBColor(240, 240, 240))
        .draw()?;
    for (i, (kind, per_s)) in errors.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let points = per_s.iter().enumerate().map(|(s, n)| (s as f64 + 0.5, *n as f64));
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))?
            .label(kind.clone())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], color));
    }
    if !errors.is_empty() {
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperRight)
            .draw()?;
    }
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(at_ms: u64, latency_us: u64, outcome: &str) -> Call {
        Call {
            at_ms,
            latency_us,
            outcome: outcome.to_owned(),
        }
    }

    #[test]
    fn empty_buckets_stay_empty_and_percentiles_are_per_bucket() {
        let calls = [
            call(1_000, 1_000, "distributed"),
            call(1_050, 3_000, "distributed"),
            // Nothing completes between 1 100 and 1 300 ms.
            call(1_320, 500_000, "timeout"),
        ];
        let input = ChartInput {
            mode: "strict",
            start_ms: 1_000,
            duration_ms: 400,
            calls: &calls,
            phases: &[],
            marks: &[],
        };
        let b = latency_buckets(&input);
        assert_eq!(b.len(), 4);
        assert_eq!(
            b[0],
            Some([3.0, 3.0, 3.0]),
            "p50 of two rounds up; p99 and max are the slow one"
        );
        assert_eq!(b[1], None, "a bucket without calls is not drawn at zero");
        assert_eq!(b[2], None);
        assert_eq!(b[3], Some([500.0, 500.0, 500.0]));
        let e = error_rates(&input);
        assert_eq!(e, vec![("timeout".to_owned(), vec![1])]);
    }

    #[test]
    fn the_chart_names_its_axes_phases_series_and_marks() {
        let calls: Vec<Call> = (0..200)
            .map(|i| {
                call(
                    10_000 + i * 10,
                    200 + i * 10,
                    if i % 7 == 0 { "unavailable" } else { "distributed" },
                )
            })
            .collect();
        let phases = [("healthy", 0.0, 0.5), ("down", 0.5, 1.0)];
        let svg = render(&ChartInput {
            mode: "degraded",
            start_ms: 10_000,
            duration_ms: 2_000,
            calls: &calls,
            phases: &phases,
            marks: &[(11_000, "detected"), (11_500, "recovered")],
        })
        .unwrap();
        for text in [
            "latency (ms, log)",
            "errors / s",
            "healthy",
            "down",
            "p50",
            "p99",
            "max",
            "unavailable",
            "detected",
            "recovered",
            "mode degraded",
        ] {
            assert!(svg.contains(text), "the chart lacks {text:?}");
        }
    }
}
