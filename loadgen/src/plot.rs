//! SVG plots of a run: latency by percentile (HdrHistogram style, x axis
//! in "nines") and throughput over time.

use std::path::Path;

use plotters::prelude::*;

use crate::report::{Histograms, Summary};
use crate::stats::percentile_curve;

const SIZE: (u32, u32) = (960, 540);

/// A named, coloured line of (x, y) points.
type Curve = (&'static str, RGBColor, Vec<(f64, f64)>);

fn err(e: impl std::fmt::Display) -> String {
    format!("plot: {e}")
}

pub fn latency(path: &Path, summary: &Summary, h: &Histograms<'_>) -> Result<(), String> {
    let mut curves: Vec<Curve> = vec![("produce", BLUE, percentile_curve(h.produce))];
    if let Some(e) = h.end_to_end {
        curves.push(("end to end", GREEN, percentile_curve(e)));
    }
    if let Some(f) = h.fdatasync {
        curves.push(("disk: 4 KiB write + fdatasync", RED, percentile_curve(f)));
    }
    let x_max = curves.iter().flat_map(|(_, _, c)| c.iter().map(|p| p.0)).fold(10.0, f64::max).max(10.0);
    let y_max = curves.iter().flat_map(|(_, _, c)| c.iter().map(|p| p.1)).fold(0.1, f64::max) * 1.1;
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let size = if summary.record_bytes == summary.record_bytes_max {
        format!("{} B", summary.record_bytes)
    } else {
        format!("{}..{} B", summary.record_bytes, summary.record_bytes_max)
    };
    let title = format!(
        "{} latency by percentile — {} partitions, {size}, acks {}, rate {}",
        summary.topic,
        summary.partitions,
        summary.acks,
        summary.rate.map_or_else(|| "max".to_string(), |r| format!("{r:.0}/s"))
    );
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d((1f64..x_max).log_scale(), 0f64..y_max)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("latency (ms)")
        .x_label_formatter(&|x| format!("{}%", trim(100.0 - 100.0 / x)))
        .draw()
        .map_err(err)?;
    for (name, color, points) in curves {
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))
            .map_err(err)?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    chart.configure_series_labels().background_style(WHITE).border_style(BLACK).draw().map_err(err)?;
    root.present().map_err(err)
}

fn trim(p: f64) -> String {
    let s = format!("{p:.4}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

pub fn throughput(path: &Path, summary: &Summary) -> Result<(), String> {
    let produced: Vec<(f64, f64)> = summary.timeline.iter().map(|s| (s.second as f64, s.produced as f64)).collect();
    let consumed: Vec<(f64, f64)> = summary.timeline.iter().map(|s| (s.second as f64, s.consumed as f64)).collect();
    let x_max = (summary.timeline.len() as f64).max(1.0);
    let y_max = produced.iter().chain(&consumed).map(|p| p.1).fold(1.0, f64::max) * 1.1;
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("{} throughput over time (warm-up: first {:.0} s)", summary.topic, summary.warmup_s),
            ("sans-serif", 18),
        )
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(80)
        .build_cartesian_2d(0f64..x_max, 0f64..y_max)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("second")
        .y_desc("records/s")
        .y_label_formatter(&|v| if *v >= 1e6 { format!("{:.2} M", v / 1e6) } else { format!("{:.0} k", v / 1e3) })
        .draw()
        .map_err(err)?;
    chart
        .draw_series(LineSeries::new(produced, BLUE.stroke_width(2)))
        .map_err(err)?
        .label("produced (acknowledged)")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE.stroke_width(2)));
    if summary.consumers > 0 {
        chart
            .draw_series(LineSeries::new(consumed, GREEN.stroke_width(2)))
            .map_err(err)?
            .label("consumed")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], GREEN.stroke_width(2)));
    }
    chart.configure_series_labels().background_style(WHITE).border_style(BLACK).draw().map_err(err)?;
    root.present().map_err(err)
}
