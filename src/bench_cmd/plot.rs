//! The benchmark's figures (plotters, SVG only): grouped bars, one group
//! per workload and one bar per engine or peer, on a log scale because
//! the engines differ by orders of magnitude.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Result};
use plotters::prelude::*;

use super::{Plan, Summary, Workload};

/// `FILE.svg` -> `FILE-nano.svg`, beside it.
pub(super) fn nano_path(path: &Path) -> PathBuf {
    let stem = path
        .file_stem()
        .map_or("bench".into(), |s| s.to_string_lossy().into_owned());
    path.with_file_name(format!("{stem}-nano.svg"))
}

/// M instructions/s of every workload to `path`; ns per operation of the
/// nanobenchmarks to `nano`.
pub(super) fn draw(
    path: &Path,
    nano: &Path,
    plan: &Plan,
    workloads: &[Workload],
    summaries: &[Summary],
) -> Result<()> {
    let runners: Vec<String> = plan.runners.iter().map(|r| r.name().to_owned()).collect();
    let find = |w: &str, r: &str| summaries.iter().find(|s| s.workload == w && s.runner == r);
    let groups: Vec<String> = workloads.iter().map(|w| w.name.clone()).collect();
    bars(
        path,
        "Guest M instructions/s (log scale; kvm and qemu: the interpreter's count / their wall time)",
        "M instructions/s",
        &groups,
        &runners,
        |g, r| find(&groups[g], &runners[r]).and_then(|s| s.mips),
    )?;
    let nano_workloads: Vec<&Workload> = workloads.iter().filter(|w| w.nano.is_some()).collect();
    let nano_groups: Vec<String> = nano_workloads
        .iter()
        .map(|w| w.nano.map_or("", |(op, _)| op).to_owned())
        .collect();
    bars(
        nano,
        "Nanobenchmarks: wall ns per operation (log scale; boot included)",
        "ns per operation",
        &nano_groups,
        &runners,
        |g, r| find(&nano_workloads[g].name, &runners[r]).and_then(|s| s.ns_per_op),
    )
}

fn bars(
    path: &Path,
    title: &str,
    y_label: &str,
    groups: &[String],
    series: &[String],
    value: impl Fn(usize, usize) -> Option<f64>,
) -> Result<()> {
    let fail = |e: &dyn std::fmt::Display| anyhow!("drawing {}: {e}", path.display());
    let values: Vec<f64> = (0..groups.len())
        .flat_map(|g| (0..series.len()).map(move |r| (g, r)))
        .filter_map(|(g, r)| value(g, r))
        .filter(|v| *v > 0.0)
        .collect();
    let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = values.iter().copied().fold(0.0, f64::max);
    let (lo, hi) = if values.is_empty() {
        (1.0, 10.0)
    } else {
        // Headroom above the tallest bar for the legend.
        (lo / 2.0, hi * 20.0)
    };
    let group_px = (series.len() as u32 * 26 + 50).max(150);
    let width = (groups.len() as u32 * group_px + 120).max(640);
    let root = SVGBackend::new(path, (width, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| fail(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(80)
        .build_cartesian_2d(0.0..groups.len().max(1) as f64, (lo..hi).log_scale())
        .map_err(|e| fail(&e))?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .y_desc(y_label)
        .y_label_formatter(&|v| format!("{v}"))
        .draw()
        .map_err(|e| fail(&e))?;
    let slot = 0.8 / series.len().max(1) as f64;
    for (r, name) in series.iter().enumerate() {
        let color = Palette99::pick(r).to_rgba();
        let rects: Vec<_> = (0..groups.len())
            .filter_map(|g| {
                let v = value(g, r).filter(|v| *v > 0.0)?;
                let x0 = g as f64 + 0.1 + r as f64 * slot;
                Some(Rectangle::new(
                    [(x0, lo), (x0 + slot * 0.9, v)],
                    color.filled(),
                ))
            })
            .collect();
        let has_values = !rects.is_empty();
        chart
            .draw_series(rects)
            .map_err(|e| fail(&e))?
            .label(if has_values {
                name.clone()
            } else {
                format!("{name} (no figures)")
            })
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .border_style(BLACK)
        .background_style(WHITE.mix(0.9))
        .draw()
        .map_err(|e| fail(&e))?;
    // The workloads' names under their groups.
    for (g, name) in groups.iter().enumerate() {
        let (x, y) = chart.backend_coord(&(g as f64 + 0.5, lo));
        let style =
            TextStyle::from(("sans-serif", 12)).pos(plotters::style::text_anchor::Pos::new(
                plotters::style::text_anchor::HPos::Center,
                plotters::style::text_anchor::VPos::Top,
            ));
        root.draw(&Text::new(name.as_str(), (x, y + 8), style))
            .map_err(|e| fail(&e))?;
    }
    root.present().map_err(|e| fail(&e))?;
    Ok(())
}
