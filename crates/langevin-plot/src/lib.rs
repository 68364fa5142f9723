//! langevin-plot: PNG line charts (optionally with error bars), histograms, traces and reliability diagrams with a bundled font.
//!
//! Everything here writes a PNG file and returns `Result<(), PlotError>`.
//! Rendering is pure Rust ([`plotters`] bitmap backend with its `ab_glyph`
//! text path); the DejaVu Sans font is bundled (`assets/DejaVuSans.ttf`,
//! Bitstream Vera licence in `assets/DejaVuSans-LICENSE.txt`) and registered
//! at first use, so no system font or font library is needed.
//!
//! Data conventions, shared by all functions:
//! - non-finite values (NaN, ±Inf) are skipped; a line is broken where a point
//!   is skipped; on a logarithmic axis non-positive values are skipped too;
//! - input with nothing left to draw is a [`PlotError::EmptyData`], lengths
//!   that must agree are a [`PlotError::InvalidInput`]; nothing panics;
//! - the parent folder of the output path is created when missing.
//!
//! ```no_run
//! use langevin_plot::{LineChart, Series};
//! let steps: Vec<f64> = (1..=100).map(f64::from).collect();
//! let loss: Vec<f64> = steps.iter().map(|s| 1.0 / s).collect();
//! LineChart::new("training loss", "step", "loss")
//!     .log_y(true)
//!     .series(Series::line("sgld", steps, loss))
//!     .save_png("target/plots/loss.png")?;
//! # Ok::<(), langevin_plot::PlotError>(())
//! ```

use std::error::Error as StdError;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::chart::SeriesAnno;
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use thiserror::Error;

mod util;
use util::{decimate_minmax, fmt_tick, nice_range, Axis};

/// The bundled font (DejaVu Sans 2.37, Bitstream Vera licence).
static FONT_BYTES: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");

/// Font family name used for all text.
const FONT: &str = "sans-serif";

/// Typed error of this crate.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum PlotError {
    /// Nothing to draw (no series/groups, or every value non-finite).
    #[error("{path}: nothing to plot: {what}")]
    EmptyData { path: PathBuf, what: String },

    /// Inconsistent or invalid arguments (length mismatch, zero bins, ...).
    #[error("{path}: invalid plot input: {reason}")]
    InvalidInput { path: PathBuf, reason: String },

    /// Creating the output folder, drawing or encoding the PNG failed.
    #[error("{path}: writing plot failed: {message}")]
    Write { path: PathBuf, message: String },

    /// The bundled font could not be parsed (should never happen).
    #[error("the bundled font could not be loaded")]
    Font,
}

/// Result alias with [`PlotError`].
pub type Result<T, E = PlotError> = std::result::Result<T, E>;

/// How a [`Series`] is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Style {
    /// Connected line (broken at skipped points).
    #[default]
    Line,
    /// Markers only.
    Points,
    /// Line with markers.
    LinePoints,
}

/// One labelled curve of a [`LineChart`].
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub label: String,
    pub x: Vec<f64>,
    pub y: Vec<f64>,
    pub style: Style,
}

impl Series {
    /// A series drawn as a line.
    pub fn line(label: impl Into<String>, x: impl Into<Vec<f64>>, y: impl Into<Vec<f64>>) -> Self {
        Self::with_style(label, x, y, Style::Line)
    }

    /// A series drawn as markers.
    pub fn points(
        label: impl Into<String>,
        x: impl Into<Vec<f64>>,
        y: impl Into<Vec<f64>>,
    ) -> Self {
        Self::with_style(label, x, y, Style::Points)
    }

    /// A series drawn as a line with markers.
    pub fn line_points(
        label: impl Into<String>,
        x: impl Into<Vec<f64>>,
        y: impl Into<Vec<f64>>,
    ) -> Self {
        Self::with_style(label, x, y, Style::LinePoints)
    }

    /// A line against the index `0, 1, 2, ...` (for example a trace).
    pub fn line_y(label: impl Into<String>, y: impl Into<Vec<f64>>) -> Self {
        let y = y.into();
        let x = (0..y.len()).map(|i| i as f64).collect::<Vec<_>>();
        Self::with_style(label, x, y, Style::Line)
    }

    /// A series with an explicit [`Style`].
    pub fn with_style(
        label: impl Into<String>,
        x: impl Into<Vec<f64>>,
        y: impl Into<Vec<f64>>,
        style: Style,
    ) -> Self {
        Self {
            label: label.into(),
            x: x.into(),
            y: y.into(),
            style,
        }
    }
}

/// A line/scatter chart of several [`Series`], optionally log-scaled.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LineChart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub log_x: bool,
    pub log_y: bool,
    pub series: Vec<Series>,
}

impl LineChart {
    /// An empty chart; add curves with [`LineChart::series`].
    pub fn new(
        title: impl Into<String>,
        x_label: impl Into<String>,
        y_label: impl Into<String>,
    ) -> Self {
        Self {
            title: title.into(),
            x_label: x_label.into(),
            y_label: y_label.into(),
            ..Self::default()
        }
    }

    /// Logarithmic (base 10) x axis.
    pub fn log_x(mut self, on: bool) -> Self {
        self.log_x = on;
        self
    }

    /// Logarithmic (base 10) y axis.
    pub fn log_y(mut self, on: bool) -> Self {
        self.log_y = on;
        self
    }

    /// Adds a curve.
    pub fn series(mut self, series: Series) -> Self {
        self.series.push(series);
        self
    }

    /// Renders the chart to a 1000x650 PNG at `path`.
    pub fn save_png(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let ax = Axis::new(self.log_x);
        let ay = Axis::new(self.log_y);
        if self.series.is_empty() {
            return Err(empty(path, "the chart has no series"));
        }
        // Transformed, finite points per series (None = a skipped point).
        let mut curves: Vec<Vec<Option<(f64, f64)>>> = Vec::with_capacity(self.series.len());
        for s in &self.series {
            if s.x.len() != s.y.len() {
                return Err(invalid(
                    path,
                    format!(
                        "series `{}`: x has {} values but y has {}",
                        s.label,
                        s.x.len(),
                        s.y.len()
                    ),
                ));
            }
            curves.push(
                s.x.iter()
                    .zip(&s.y)
                    .map(|(&x, &y)| Some((ax.map(x)?, ay.map(y)?)))
                    .collect(),
            );
        }
        let xs = curves.iter().flatten().flatten().map(|p| p.0);
        let ys = curves.iter().flatten().flatten().map(|p| p.1);
        let (Some(xr), Some(yr)) = (nice_range(xs, 0.0), nice_range(ys, 0.05)) else {
            return Err(empty(
                path,
                "no finite point in any series (non-positive values are skipped on a log axis)",
            ));
        };
        render(path, (1000, 650), |root| {
            let mut chart = ChartBuilder::on(&root)
                .caption(&self.title, (FONT, 26))
                .margin(15)
                .x_label_area_size(50)
                .y_label_area_size(80)
                .build_cartesian_2d(xr.0..xr.1, yr.0..yr.1)?;
            let xf = |v: &f64| ax.fmt(*v);
            let yf = |v: &f64| ay.fmt(*v);
            chart
                .configure_mesh()
                .x_desc(self.x_label.as_str())
                .y_desc(self.y_label.as_str())
                .x_labels(ax.label_count(xr))
                .y_labels(ay.label_count(yr))
                .x_label_formatter(&xf)
                .y_label_formatter(&yf)
                .axis_desc_style((FONT, 18))
                .label_style((FONT, 14))
                .light_line_style(RGBColor(235, 235, 235))
                .draw()?;
            let width = 1000;
            for (i, (s, pts)) in self.series.iter().zip(&curves).enumerate() {
                let color = palette(i);
                let line = matches!(s.style, Style::Line | Style::LinePoints);
                let marks = matches!(s.style, Style::Points | Style::LinePoints);
                if line {
                    for seg in segments(pts) {
                        let seg = decimate_minmax(&seg, 2 * width);
                        chart.draw_series(LineSeries::new(seg, color.stroke_width(2)))?;
                    }
                }
                if marks {
                    let r = if pts.len() > 2000 { 2 } else { 4 };
                    chart.draw_series(
                        pts.iter()
                            .flatten()
                            .map(|&p| Circle::new(p, r, color.mix(0.8).filled())),
                    )?;
                }
                if !s.label.is_empty() {
                    // An invisible element carries the legend entry.
                    let anno = chart.draw_series(std::iter::empty::<Circle<(f64, f64), i32>>())?;
                    set_legend(anno, &s.label, color, line, marks);
                }
            }
            if self.series.iter().any(|s| !s.label.is_empty()) {
                draw_legend(&mut chart)?;
            }
            Ok(())
        })
    }
}

/// One labelled curve of an [`ErrorBarChart`]: points `(x, y)` joined by a line, each
/// with a vertical error bar from `y - err` to `y + err`.
#[derive(Debug, Clone, PartialEq)]
pub struct ErrorSeries {
    pub label: String,
    pub x: Vec<f64>,
    pub y: Vec<f64>,
    /// Half-length of each bar (non-finite or negative: no bar at that point).
    pub err: Vec<f64>,
}

impl ErrorSeries {
    /// A curve with error bars.
    pub fn new(
        label: impl Into<String>,
        x: impl Into<Vec<f64>>,
        y: impl Into<Vec<f64>>,
        err: impl Into<Vec<f64>>,
    ) -> Self {
        Self {
            label: label.into(),
            x: x.into(),
            y: y.into(),
            err: err.into(),
        }
    }
}

/// A chart of points with vertical error bars (for example accuracy ± standard error
/// against a size), several labelled [`ErrorSeries`], optionally with a logarithmic x
/// axis and a fixed y range. Points with a non-finite x or y are skipped (the line
/// breaks there). Series 11-20 reuse the first ten colours, darker, with square markers.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ErrorBarChart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub log_x: bool,
    /// Fixed y range; by default the range of all bars, padded.
    pub y_range: Option<(f64, f64)>,
    pub series: Vec<ErrorSeries>,
}

impl ErrorBarChart {
    /// An empty chart; add curves with [`ErrorBarChart::series`].
    pub fn new(
        title: impl Into<String>,
        x_label: impl Into<String>,
        y_label: impl Into<String>,
    ) -> Self {
        Self {
            title: title.into(),
            x_label: x_label.into(),
            y_label: y_label.into(),
            ..Self::default()
        }
    }

    /// Logarithmic (base 10) x axis.
    pub fn log_x(mut self, on: bool) -> Self {
        self.log_x = on;
        self
    }

    /// Fixed y range `lo..hi` (`lo < hi`, both finite).
    pub fn y_range(mut self, lo: f64, hi: f64) -> Self {
        self.y_range = Some((lo, hi));
        self
    }

    /// Adds a curve.
    pub fn series(mut self, series: ErrorSeries) -> Self {
        self.series.push(series);
        self
    }

    /// Renders the chart to a 1100x700 PNG at `path` (legend on the right).
    pub fn save_png(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let ax = Axis::new(self.log_x);
        if self.series.is_empty() {
            return Err(empty(path, "the chart has no series"));
        }
        if let Some((lo, hi)) = self.y_range {
            if !(lo.is_finite() && hi.is_finite() && lo < hi) {
                return Err(invalid(
                    path,
                    format!("y range {lo}..{hi} is not increasing"),
                ));
            }
        }
        // Per series: drawable points (x transformed) with their bar ends.
        type Pt = Option<((f64, f64), Option<(f64, f64)>)>;
        let mut curves: Vec<Vec<Pt>> = Vec::with_capacity(self.series.len());
        for s in &self.series {
            if s.x.len() != s.y.len() || s.err.len() != s.y.len() {
                return Err(invalid(
                    path,
                    format!(
                        "series `{}`: x, y and err have {}, {} and {} values",
                        s.label,
                        s.x.len(),
                        s.y.len(),
                        s.err.len()
                    ),
                ));
            }
            curves.push(
                s.x.iter()
                    .zip(&s.y)
                    .zip(&s.err)
                    .map(|((&x, &y), &e)| {
                        let x = ax.map(x)?;
                        y.is_finite().then_some(())?;
                        let bar = (e.is_finite() && e >= 0.0).then_some((y - e, y + e));
                        Some(((x, y), bar))
                    })
                    .collect(),
            );
        }
        let pts = || curves.iter().flatten().flatten();
        let xr = nice_range(pts().map(|p| p.0 .0), 0.06);
        let yr = match self.y_range {
            Some(r) => Some(r),
            None => nice_range(
                pts().flat_map(|&((_, y), bar)| {
                    let (lo, hi) = bar.unwrap_or((y, y));
                    [y, lo, hi]
                }),
                0.05,
            ),
        };
        let (Some(xr), Some(yr)) = (xr, yr) else {
            return Err(empty(
                path,
                "no finite point in any series (non-positive x is skipped on a log axis)",
            ));
        };
        let size = (1100, 700);
        let legend_w = 20
            + 8 * self
                .series
                .iter()
                .map(|s| s.label.chars().count())
                .max()
                .unwrap_or(0) as u32;
        render(path, size, |root| {
            let (plot_area, legend_area) =
                root.split_horizontally(size.0 - legend_w.clamp(120, size.0 / 2));
            let mut chart = ChartBuilder::on(&plot_area)
                .caption(&self.title, (FONT, 24))
                .margin(15)
                .x_label_area_size(50)
                .y_label_area_size(70)
                .build_cartesian_2d(xr.0..xr.1, yr.0..yr.1)?;
            let xf = |v: &f64| ax.fmt(*v);
            chart
                .configure_mesh()
                .x_desc(self.x_label.as_str())
                .y_desc(self.y_label.as_str())
                .x_labels(ax.label_count(xr))
                .y_labels(10)
                .x_label_formatter(&xf)
                .y_label_formatter(&|v| fmt_tick(*v))
                .axis_desc_style((FONT, 18))
                .label_style((FONT, 14))
                .light_line_style(RGBColor(235, 235, 235))
                .draw()?;
            for (i, pts) in curves.iter().enumerate() {
                let color = error_series_color(i);
                let line: Vec<Option<(f64, f64)>> = pts.iter().map(|p| p.map(|p| p.0)).collect();
                for seg in segments(&line) {
                    chart.draw_series(LineSeries::new(seg, color.stroke_width(2)))?;
                }
                for &((x, y), bar) in pts.iter().flatten() {
                    if let Some((lo, hi)) = bar {
                        let style = color.stroke_width(2);
                        chart.draw_series(std::iter::once(PathElement::new(
                            vec![(x, lo), (x, hi)],
                            style,
                        )))?;
                        for end in [lo, hi] {
                            chart.draw_series(std::iter::once(
                                EmptyElement::at((x, end))
                                    + PathElement::new(vec![(-5, 0), (5, 0)], style),
                            ))?;
                        }
                    }
                    if (i / 10).is_multiple_of(2) {
                        chart.draw_series(std::iter::once(Circle::new(
                            (x, y),
                            5,
                            color.filled(),
                        )))?;
                    } else {
                        chart.draw_series(std::iter::once(
                            EmptyElement::at((x, y))
                                + Rectangle::new([(-5, -5), (5, 5)], color.filled()),
                        ))?;
                    }
                }
            }
            // The legend, in its own column.
            let labelled: Vec<(usize, &ErrorSeries)> = self
                .series
                .iter()
                .enumerate()
                .filter(|(_, s)| !s.label.is_empty())
                .collect();
            for (row, (i, s)) in labelled.into_iter().enumerate() {
                let y = 60 + 24 * row as i32;
                let color = error_series_color(i);
                legend_area.draw(&PathElement::new(
                    vec![(4, y), (28, y)],
                    color.stroke_width(2),
                ))?;
                if (i / 10).is_multiple_of(2) {
                    legend_area.draw(&Circle::new((16, y), 5, color.filled()))?;
                } else {
                    legend_area
                        .draw(&Rectangle::new([(11, y - 5), (21, y + 5)], color.filled()))?;
                }
                legend_area.draw(&Text::new(
                    s.label.as_str(),
                    (36, y - 8),
                    (FONT, 14).into_font(),
                ))?;
            }
            Ok(())
        })
    }
}

/// Overlaid, semi-transparent histograms of several groups on shared bins,
/// normalised to densities (so groups of different sizes compare).
pub fn histograms_png(
    path: impl AsRef<Path>,
    title: &str,
    x_label: &str,
    groups: &[(String, Vec<f64>)],
    bins: usize,
) -> Result<()> {
    let path = path.as_ref();
    if bins == 0 {
        return Err(invalid(path, "bins must be at least 1"));
    }
    if groups.is_empty() {
        return Err(empty(path, "no groups"));
    }
    let Some((lo, hi)) = nice_range(groups.iter().flat_map(|g| g.1.iter().copied()), 0.0) else {
        return Err(empty(path, "no finite value in any group"));
    };
    let hists: Vec<Vec<f64>> = groups
        .iter()
        .map(|(_, v)| util::density_histogram(v, lo, hi, bins))
        .collect();
    let ymax = hists.iter().flatten().fold(0.0f64, |m, &v| m.max(v));
    let ymax = if ymax > 0.0 { ymax * 1.08 } else { 1.0 };
    render(path, (1000, 650), |root| {
        let mut chart = ChartBuilder::on(&root)
            .caption(title, (FONT, 26))
            .margin(15)
            .x_label_area_size(50)
            .y_label_area_size(80)
            .build_cartesian_2d(lo..hi, 0.0..ymax)?;
        chart
            .configure_mesh()
            .x_desc(x_label)
            .y_desc("density")
            .x_label_formatter(&|v| fmt_tick(*v))
            .y_label_formatter(&|v| fmt_tick(*v))
            .axis_desc_style((FONT, 18))
            .label_style((FONT, 14))
            .light_line_style(RGBColor(235, 235, 235))
            .draw()?;
        let w = (hi - lo) / bins as f64;
        for (i, ((label, _), h)) in groups.iter().zip(&hists).enumerate() {
            let color = palette(i);
            let bars = h
                .iter()
                .enumerate()
                .filter(|(_, &d)| d > 0.0)
                .map(|(b, &d)| {
                    let x0 = lo + b as f64 * w;
                    Rectangle::new([(x0, 0.0), (x0 + w, d)], color.mix(0.35).filled())
                });
            chart.draw_series(bars)?;
            // Step outline so overlapping groups stay distinguishable.
            let mut outline = Vec::with_capacity(2 * bins + 2);
            outline.push((lo, 0.0));
            for (b, &d) in h.iter().enumerate() {
                outline.push((lo + b as f64 * w, d));
                outline.push((lo + (b + 1) as f64 * w, d));
            }
            outline.push((hi, 0.0));
            chart
                .draw_series(LineSeries::new(outline, color.stroke_width(2)))?
                .label(label.as_str())
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 6), (x + 20, y + 6)], color.mix(0.5).filled())
                });
        }
        draw_legend(&mut chart)?;
        Ok(())
    })
}

/// MCMC trace plots: one panel per parameter (stacked), one colour per chain.
/// `traces[p][c]` holds the draws of parameter `p` in chain `c`. Long traces
/// are decimated to a min/max envelope per pixel column, which keeps their look.
pub fn trace_grid_png(
    path: impl AsRef<Path>,
    title: &str,
    names: &[String],
    traces: &[Vec<Vec<f64>>],
) -> Result<()> {
    let path = path.as_ref();
    check_names(path, names.len(), traces.len())?;
    if traces.is_empty() {
        return Err(empty(path, "no parameters"));
    }
    let shown = traces.len().min(MAX_PANELS);
    let mut ranges = Vec::with_capacity(shown);
    for (p, chains) in traces.iter().take(shown).enumerate() {
        let n = chains.iter().map(Vec::len).max().unwrap_or(0);
        let yr = nice_range(chains.iter().flatten().copied(), 0.05);
        match yr {
            Some(yr) => ranges.push(((0.0, (n.max(2) - 1) as f64), yr)),
            None => {
                return Err(empty(
                    path,
                    format!("parameter `{}` has no finite draw", names[p]),
                ))
            }
        }
    }
    let title = panel_title(title, shown, traces.len());
    let (w, ph) = (1000u32, 170u32);
    render(path, (w, 50 + ph * shown as u32), |root| {
        let root = root.titled(&title, (FONT, 26))?;
        let panels = root.split_evenly((shown, 1));
        for (p, area) in panels.iter().enumerate() {
            let ((x0, x1), (y0, y1)) = ranges[p];
            let mut chart = ChartBuilder::on(area)
                .margin(8)
                .margin_right(30)
                .x_label_area_size(if p + 1 == shown { 35 } else { 20 })
                .y_label_area_size(80)
                .build_cartesian_2d(x0..x1, y0..y1)?;
            chart
                .configure_mesh()
                .y_desc(names[p].as_str())
                .x_desc(if p + 1 == shown { "iteration" } else { "" })
                .x_labels(8)
                .y_labels(4)
                .x_label_formatter(&|v| fmt_tick(*v))
                .y_label_formatter(&|v| fmt_tick(*v))
                .axis_desc_style((FONT, 15))
                .label_style((FONT, 12))
                .light_line_style(RGBColor(240, 240, 240))
                .draw()?;
            for (c, draws) in traces[p].iter().enumerate() {
                let pts: Vec<Option<(f64, f64)>> = draws
                    .iter()
                    .enumerate()
                    .map(|(i, &v)| v.is_finite().then_some((i as f64, v)))
                    .collect();
                let color = palette(c).mix(if traces[p].len() > 1 { 0.75 } else { 1.0 });
                for seg in segments(&pts) {
                    let seg = decimate_minmax(&seg, 2 * w as usize);
                    chart.draw_series(LineSeries::new(seg, color.stroke_width(1)))?;
                }
            }
        }
        Ok(())
    })
}

/// Marginal histograms, one panel per parameter in a grid (up to 4 columns).
/// `draws[p]` holds the pooled draws of parameter `p`.
pub fn marginals_grid_png(
    path: impl AsRef<Path>,
    title: &str,
    names: &[String],
    draws: &[Vec<f64>],
    bins: usize,
) -> Result<()> {
    let path = path.as_ref();
    check_names(path, names.len(), draws.len())?;
    if bins == 0 {
        return Err(invalid(path, "bins must be at least 1"));
    }
    if draws.is_empty() {
        return Err(empty(path, "no parameters"));
    }
    let shown = draws.len().min(MAX_PANELS);
    let mut panels_data = Vec::with_capacity(shown);
    for (p, d) in draws.iter().take(shown).enumerate() {
        let Some((lo, hi)) = nice_range(d.iter().copied(), 0.0) else {
            return Err(empty(
                path,
                format!("parameter `{}` has no finite draw", names[p]),
            ));
        };
        let h = util::density_histogram(d, lo, hi, bins);
        let ymax = h.iter().fold(0.0f64, |m, &v| m.max(v)) * 1.1;
        panels_data.push((lo, hi, h, if ymax > 0.0 { ymax } else { 1.0 }));
    }
    let cols = match shown {
        1 => 1,
        2 | 4 => 2,
        3 | 5 | 6 | 9 => 3,
        _ => 4,
    };
    let rows = shown.div_ceil(cols);
    let title = panel_title(title, shown, draws.len());
    let (pw, ph) = (340u32, 260u32);
    render(path, (pw * cols as u32, 50 + ph * rows as u32), |root| {
        let root = root.titled(&title, (FONT, 26))?;
        let areas = root.split_evenly((rows, cols));
        for (p, (lo, hi, h, ymax)) in panels_data.iter().enumerate() {
            let mut chart = ChartBuilder::on(&areas[p])
                .caption(names[p].as_str(), (FONT, 16))
                .margin(8)
                .x_label_area_size(28)
                .y_label_area_size(50)
                .build_cartesian_2d(*lo..*hi, 0.0..*ymax)?;
            chart
                .configure_mesh()
                .x_labels(5)
                .y_labels(4)
                .x_label_formatter(&|v| fmt_tick(*v))
                .y_label_formatter(&|v| fmt_tick(*v))
                .label_style((FONT, 13))
                .light_line_style(RGBColor(240, 240, 240))
                .draw()?;
            let w = (hi - lo) / bins as f64;
            let color = palette(0);
            chart.draw_series(
                h.iter()
                    .enumerate()
                    .filter(|(_, &d)| d > 0.0)
                    .map(|(b, &d)| {
                        let x0 = lo + b as f64 * w;
                        Rectangle::new([(x0, 0.0), (x0 + w, d)], color.mix(0.6).filled())
                    }),
            )?;
        }
        Ok(())
    })
}

/// Reliability diagram: per-bin accuracy against mean confidence (with the
/// diagonal of perfect calibration and the expected calibration error, ECE,
/// in the legend) above a panel of bin counts. Bins with zero count or
/// non-finite values are skipped.
pub fn reliability_png(
    path: impl AsRef<Path>,
    title: &str,
    bin_confidence: &[f64],
    bin_accuracy: &[f64],
    bin_counts: &[usize],
) -> Result<()> {
    let path = path.as_ref();
    let n = bin_confidence.len();
    if bin_accuracy.len() != n || bin_counts.len() != n {
        return Err(invalid(
            path,
            format!(
                "bin_confidence, bin_accuracy and bin_counts must have equal lengths, got {}, {} and {}",
                n,
                bin_accuracy.len(),
                bin_counts.len()
            ),
        ));
    }
    let bins: Vec<(f64, f64, usize)> = (0..n)
        .filter(|&i| {
            bin_counts[i] > 0 && bin_confidence[i].is_finite() && bin_accuracy[i].is_finite()
        })
        .map(|i| (bin_confidence[i], bin_accuracy[i], bin_counts[i]))
        .collect();
    if bins.is_empty() {
        return Err(empty(
            path,
            "no bin with a positive count and finite values",
        ));
    }
    let total: usize = bins.iter().map(|b| b.2).sum();
    let ece: f64 = bins
        .iter()
        .map(|&(c, a, k)| k as f64 / total as f64 * (a - c).abs())
        .sum();
    let max_count = bins.iter().map(|b| b.2).max().unwrap_or(1) as f64;
    // Bar width: the spacing of the bins if they look equal-width, else 1/n.
    let bw = 0.8 / n.max(1) as f64;
    let cmin = bins.iter().fold(f64::INFINITY, |m, b| m.min(b.0));
    let cmax = bins.iter().fold(f64::NEG_INFINITY, |m, b| m.max(b.0));
    let x0 = (cmin - bw).min(0.0);
    let x1 = (cmax + bw).max(1.0);
    render(path, (800, 900), |root| {
        let root = root.titled(title, (FONT, 26))?;
        let (top, bottom) = root.split_vertically(620);
        let mut chart = ChartBuilder::on(&top)
            .margin(15)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(x0..x1, 0.0..1.0)?;
        chart
            .configure_mesh()
            .x_desc("confidence")
            .y_desc("accuracy")
            .x_label_formatter(&|v| fmt_tick(*v))
            .y_label_formatter(&|v| fmt_tick(*v))
            .axis_desc_style((FONT, 18))
            .label_style((FONT, 14))
            .light_line_style(RGBColor(235, 235, 235))
            .draw()?;
        let grey = RGBColor(120, 120, 120);
        chart
            .draw_series(DashedLineSeries::new(
                vec![(0.0, 0.0), (1.0, 1.0)],
                8,
                6,
                grey.stroke_width(2),
            ))?
            .label("perfect calibration")
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], grey));
        let gap = RGBColor(214, 39, 40);
        chart
            .draw_series(bins.iter().map(|&(c, a, _)| {
                let (lo, hi) = if a < c { (a, c) } else { (c, a) };
                Rectangle::new(
                    [(c - bw / 2.0, lo), (c + bw / 2.0, hi)],
                    gap.mix(0.3).filled(),
                )
            }))?
            .label(format!("gap (ECE = {ece:.4})"))
            .legend(move |(x, y)| {
                Rectangle::new([(x, y - 6), (x + 20, y + 6)], gap.mix(0.3).filled())
            });
        let color = palette(0);
        let anno = chart.draw_series(LineSeries::new(
            bins.iter().map(|&(c, a, _)| (c, a)),
            color.stroke_width(2),
        ))?;
        set_legend(anno, "model", color, true, true);
        chart.draw_series(
            bins.iter()
                .map(|&(c, a, _)| Circle::new((c, a), 5, color.filled())),
        )?;
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .label_font((FONT, 14))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.4))
            .draw()?;

        let mut counts = ChartBuilder::on(&bottom)
            .margin(15)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(x0..x1, 0.0..max_count * 1.1)?;
        counts
            .configure_mesh()
            .x_desc("confidence")
            .y_desc("count")
            .y_labels(4)
            .x_label_formatter(&|v| fmt_tick(*v))
            .y_label_formatter(&|v| fmt_tick(*v))
            .axis_desc_style((FONT, 16))
            .label_style((FONT, 13))
            .light_line_style(RGBColor(240, 240, 240))
            .draw()?;
        counts.draw_series(bins.iter().map(|&(c, _, k)| {
            Rectangle::new(
                [(c - bw / 2.0, 0.0), (c + bw / 2.0, k as f64)],
                color.mix(0.6).filled(),
            )
        }))?;
        Ok(())
    })
}

/// 2-D scatter plot of several labelled point clouds (semi-transparent
/// markers, smaller when there are many points).
pub fn scatter2d_png(
    path: impl AsRef<Path>,
    title: &str,
    groups: &[(String, Vec<(f64, f64)>)],
) -> Result<()> {
    let path = path.as_ref();
    if groups.is_empty() {
        return Err(empty(path, "no groups"));
    }
    let finite = |&&(x, y): &&(f64, f64)| x.is_finite() && y.is_finite();
    let all = || groups.iter().flat_map(|g| g.1.iter().filter(finite));
    let (Some(xr), Some(yr)) = (
        nice_range(all().map(|p| p.0), 0.05),
        nice_range(all().map(|p| p.1), 0.05),
    ) else {
        return Err(empty(path, "no finite point in any group"));
    };
    let total = all().count();
    let (radius, alpha) = match total {
        0..=2_000 => (4, 0.7),
        2_001..=20_000 => (2, 0.5),
        _ => (1, 0.35),
    };
    render(path, (900, 800), |root| {
        let mut chart = ChartBuilder::on(&root)
            .caption(title, (FONT, 26))
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(70)
            .build_cartesian_2d(xr.0..xr.1, yr.0..yr.1)?;
        chart
            .configure_mesh()
            .x_label_formatter(&|v| fmt_tick(*v))
            .y_label_formatter(&|v| fmt_tick(*v))
            .label_style((FONT, 14))
            .light_line_style(RGBColor(235, 235, 235))
            .draw()?;
        for (i, (label, pts)) in groups.iter().enumerate() {
            let color = palette(i);
            chart
                .draw_series(
                    pts.iter()
                        .filter(finite)
                        .map(|&p| Circle::new(p, radius, color.mix(alpha).filled())),
                )?
                .label(label.as_str())
                .legend(move |(x, y)| Circle::new((x + 10, y), 5, color.filled()));
        }
        draw_legend(&mut chart)?;
        Ok(())
    })
}

// ---------------------------------------------------------------- helpers

/// Most panels drawn by the grid functions; the title says when more exist.
const MAX_PANELS: usize = 32;

type Chart<'a, 'b> =
    ChartContext<'a, BitMapBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

fn draw_legend<'a, 'b: 'a>(
    chart: &mut Chart<'a, 'b>,
) -> std::result::Result<(), Box<dyn StdError>> {
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .label_font((FONT, 15))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .draw()?;
    Ok(())
}

/// Dot plot comparing labelled items (e.g. methods) on several metrics: one
/// panel per metric, the items on the vertical axis (first at the top), one
/// dot per item at its value, with the value printed next to it. Non-finite
/// values are left out of their panel (the item keeps its row); a panel with
/// no finite value is an [`PlotError::EmptyData`].
pub fn metric_dots_png(
    path: impl AsRef<Path>,
    title: &str,
    items: &[String],
    metrics: &[(String, Vec<f64>)],
) -> Result<()> {
    let path = path.as_ref();
    if items.is_empty() {
        return Err(empty(path, "no items"));
    }
    if metrics.is_empty() {
        return Err(empty(path, "no metrics"));
    }
    let n = items.len();
    let mut ranges = Vec::with_capacity(metrics.len());
    for (name, values) in metrics {
        if values.len() != n {
            return Err(invalid(
                path,
                format!("metric `{name}` has {} values for {n} items", values.len()),
            ));
        }
        let Some((lo, hi)) = nice_range(values.iter().copied(), 0.15) else {
            return Err(empty(path, format!("metric `{name}` has no finite value")));
        };
        ranges.push((lo, hi));
    }
    let cols = metrics.len().min(4);
    let rows = metrics.len().div_ceil(cols);
    let label_w = 20 + 9 * items.iter().map(|s| s.chars().count()).max().unwrap_or(4) as u32;
    let (pw, ph) = (300 + label_w, 90 + 36 * n as u32);
    render(path, (pw * cols as u32, 50 + ph * rows as u32), |root| {
        let root = root.titled(title, (FONT, 24))?;
        let areas = root.split_evenly((rows, cols));
        for (m, ((name, values), (lo, hi))) in metrics.iter().zip(&ranges).enumerate() {
            // Row 0 at the top: item i sits at segment n - 1 - i.
            let mut chart = ChartBuilder::on(&areas[m])
                .caption(name.as_str(), (FONT, 18))
                .margin(10)
                .x_label_area_size(30)
                .y_label_area_size(label_w)
                .build_cartesian_2d(*lo..*hi, (0..n).into_segmented())?;
            let label = |v: &SegmentValue<usize>| match v {
                SegmentValue::CenterOf(k) if *k < n => items[n - 1 - *k].clone(),
                _ => String::new(),
            };
            chart
                .configure_mesh()
                .x_labels(5)
                .y_labels(n)
                .x_label_formatter(&|v| fmt_tick(*v))
                .y_label_formatter(&label)
                .label_style((FONT, 14))
                .light_line_style(RGBColor(240, 240, 240))
                .draw()?;
            let grey = RGBColor(200, 200, 200);
            for i in 0..n {
                let y = SegmentValue::CenterOf(n - 1 - i);
                chart.draw_series(LineSeries::new(
                    vec![(*lo, y.clone()), (*hi, y)],
                    grey.stroke_width(1),
                ))?;
            }
            for (i, &v) in values.iter().enumerate() {
                if !v.is_finite() {
                    continue;
                }
                let y = SegmentValue::CenterOf(n - 1 - i);
                let color = palette(i);
                chart.draw_series(std::iter::once(Circle::new(
                    (v, y.clone()),
                    7,
                    color.filled(),
                )))?;
                chart.draw_series(std::iter::once(
                    EmptyElement::at((v, y))
                        + Text::new(fmt_tick(v), (9, -20), (FONT, 13).into_font()),
                ))?;
            }
        }
        Ok(())
    })
}

/// Attaches a legend entry drawn as a line, a marker, or both.
fn set_legend<'a, DB: DrawingBackend + 'a>(
    anno: &mut SeriesAnno<'a, DB>,
    label: &str,
    color: RGBColor,
    line: bool,
    marks: bool,
) {
    let anno = anno.label(label);
    match (line, marks) {
        (true, false) => anno.legend(move |(x, y)| {
            PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
        }),
        (false, true) => anno.legend(move |(x, y)| Circle::new((x + 10, y), 4, color.filled())),
        _ => anno.legend(move |(x, y)| {
            EmptyElement::at((x, y))
                + PathElement::new(vec![(0, 0), (20, 0)], color.stroke_width(2))
                + Circle::new((10, 0), 4, color.filled())
        }),
    };
}

/// Splits a curve at skipped points into maximal runs of drawable points.
fn segments(pts: &[Option<(f64, f64)>]) -> Vec<Vec<(f64, f64)>> {
    let mut out = Vec::new();
    let mut cur = Vec::new();
    for p in pts {
        match p {
            Some(p) => cur.push(*p),
            None if !cur.is_empty() => out.push(std::mem::take(&mut cur)),
            None => {}
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

fn panel_title(title: &str, shown: usize, total: usize) -> String {
    if shown < total {
        format!("{title} (first {shown} of {total} parameters)")
    } else {
        title.to_string()
    }
}

fn check_names(path: &Path, names: usize, data: usize) -> Result<()> {
    if names != data {
        return Err(invalid(
            path,
            format!("{names} names for {data} parameters"),
        ));
    }
    Ok(())
}

fn empty(path: &Path, what: impl Into<String>) -> PlotError {
    PlotError::EmptyData {
        path: path.to_path_buf(),
        what: what.into(),
    }
}

fn invalid(path: &Path, reason: impl Into<String>) -> PlotError {
    PlotError::InvalidInput {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Registers the bundled font with plotters once per process.
fn ensure_font() -> Result<()> {
    static INIT: OnceLock<bool> = OnceLock::new();
    let ok = *INIT.get_or_init(|| {
        plotters::style::register_font(FONT, FontStyle::Normal, FONT_BYTES).is_ok()
            && plotters::style::register_font(FONT, FontStyle::Bold, FONT_BYTES).is_ok()
    });
    if ok {
        Ok(())
    } else {
        Err(PlotError::Font)
    }
}

/// Colour of series `i` of an [`ErrorBarChart`]: the palette, darker for series 10-19
/// (which are also drawn with square markers), so that up to 20 series stay apart.
fn error_series_color(i: usize) -> RGBColor {
    let c = palette(i);
    if (i / 10).is_multiple_of(2) {
        c
    } else {
        let dark = |v: u8| (v as f64 * 0.55) as u8;
        RGBColor(dark(c.0), dark(c.1), dark(c.2))
    }
}

/// A qualitative palette (matplotlib's tab10), cycled.
fn palette(i: usize) -> RGBColor {
    const TAB10: [RGBColor; 10] = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
        RGBColor(127, 127, 127),
        RGBColor(188, 189, 34),
        RGBColor(23, 190, 207),
    ];
    TAB10[i % TAB10.len()]
}

/// Creates the parent folder, draws on a white canvas and writes the PNG.
fn render<F>(path: &Path, size: (u32, u32), draw: F) -> Result<()>
where
    F: FnOnce(DrawingArea<BitMapBackend<'_>, Shift>) -> std::result::Result<(), Box<dyn StdError>>,
{
    ensure_font()?;
    let write_err = |message: String| PlotError::Write {
        path: path.to_path_buf(),
        message,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| write_err(format!("cannot create folder {}: {e}", dir.display())))?;
    }
    let root = BitMapBackend::new(path, size).into_drawing_area();
    root.fill(&WHITE).map_err(|e| write_err(e.to_string()))?;
    draw(root.clone()).map_err(|e| write_err(e.to_string()))?;
    root.present().map_err(|e| write_err(e.to_string()))?;
    Ok(())
}
