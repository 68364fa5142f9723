//! Numeric helpers: axis transforms, ranges, tick labels, histograms, decimation.

/// A linear or base-10 logarithmic axis. Data are mapped to plot
/// coordinates (`log10` for a log axis) and tick labels mapped back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Axis {
    Linear,
    Log,
}

impl Axis {
    pub(crate) fn new(log: bool) -> Self {
        if log {
            Axis::Log
        } else {
            Axis::Linear
        }
    }

    /// Plot coordinate of a data value; `None` when it cannot be drawn
    /// (non-finite, or non-positive on a log axis).
    pub(crate) fn map(self, v: f64) -> Option<f64> {
        match self {
            Axis::Linear => v.is_finite().then_some(v),
            Axis::Log => (v.is_finite() && v > 0.0).then(|| v.log10()),
        }
    }

    /// How many tick labels to ask plotters for over the plot range `r`. On
    /// a log axis spanning a decade or more this lands the ticks on whole
    /// decades (plotters picks steps of 1, 2, 5 x 10^k within the count).
    pub(crate) fn label_count(self, r: (f64, f64)) -> usize {
        let span = r.1 - r.0;
        match self {
            Axis::Log if span >= 1.0 => (span.floor() as usize + 1).clamp(2, 12),
            Axis::Log => 5,
            Axis::Linear => 10,
        }
    }

    /// Tick label of a plot coordinate.
    pub(crate) fn fmt(self, v: f64) -> String {
        match self {
            Axis::Linear => fmt_tick(v),
            Axis::Log => fmt_tick_log(v),
        }
    }
}

/// Range of the finite values of `values`, widened by `pad` times its span on
/// both sides; a degenerate (single-value) range is widened to a visible one.
/// `None` when there is no finite value or the span overflows.
pub(crate) fn nice_range(values: impl IntoIterator<Item = f64>, pad: f64) -> Option<(f64, f64)> {
    let (lo, hi) = values
        .into_iter()
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    if lo > hi {
        return None;
    }
    let span = hi - lo;
    if !span.is_finite() {
        return None;
    }
    if span <= f64::EPSILON * lo.abs().max(hi.abs()).max(f64::MIN_POSITIVE) * 16.0 {
        let half = if lo == 0.0 { 1.0 } else { 0.1 * lo.abs() };
        return Some((lo - half, hi + half));
    }
    Some((lo - pad * span, hi + pad * span))
}

/// Compact tick label: about four significant digits, trailing zeros
/// trimmed, scientific notation for very large or small magnitudes.
pub(crate) fn fmt_tick(v: f64) -> String {
    if !v.is_finite() {
        return format!("{v}");
    }
    let a = v.abs();
    if a < 1e-12 {
        return "0".to_string();
    }
    if !(1e-3..1e5).contains(&a) {
        let s = format!("{v:.2e}");
        let (mant, exp) = s.split_once('e').unwrap_or((&s, "0"));
        return format!("{}e{exp}", trim_zeros(mant));
    }
    let decimals = (3 - a.log10().floor() as i32).clamp(0, 6) as usize;
    let s = format!("{v:.decimals$}");
    let s = trim_zeros(&s);
    if s == "-0" {
        "0".to_string()
    } else {
        s.to_string()
    }
}

/// Tick label of a log10 plot coordinate: the data value `10^v`.
pub(crate) fn fmt_tick_log(v: f64) -> String {
    let r = v.round();
    if (v - r).abs() < 1e-6 {
        if (-3.0..=4.0).contains(&r) {
            fmt_tick(10f64.powf(r))
        } else {
            format!("1e{}", r as i64)
        }
    } else {
        // Off-decade ticks of a short log axis: three significant digits.
        let x = 10f64.powf(v);
        let decimals = (2 - x.log10().floor() as i32).clamp(0, 12) as usize;
        if (1e-3..1e5).contains(&x) {
            trim_zeros(&format!("{x:.decimals$}")).to_string()
        } else {
            fmt_tick(x)
        }
    }
}

fn trim_zeros(s: &str) -> &str {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        s
    }
}

/// Histogram of the finite values of `values` in `bins` equal bins over
/// `[lo, hi]` (values outside are ignored, `hi` falls in the last bin),
/// normalised to a density over all finite values: the bar areas sum to the
/// fraction of finite values inside `[lo, hi]`.
pub(crate) fn density_histogram(values: &[f64], lo: f64, hi: f64, bins: usize) -> Vec<f64> {
    let mut counts = vec![0usize; bins];
    let width = (hi - lo) / bins as f64;
    let mut n = 0usize;
    for &v in values.iter().filter(|v| v.is_finite()) {
        n += 1;
        if v < lo || v > hi {
            continue;
        }
        let b = (((v - lo) / width) as usize).min(bins - 1);
        counts[b] += 1;
    }
    if n == 0 {
        return vec![0.0; bins];
    }
    let norm = 1.0 / (n as f64 * width);
    counts.iter().map(|&c| c as f64 * norm).collect()
}

/// Reduces a long polyline to at most about `max_points` points by keeping,
/// in each run of consecutive points, the ones with the smallest and largest
/// `y` (in their original order). For a trace drawn on a bitmap this is
/// visually lossless: each pixel column still spans the same `y` envelope.
pub(crate) fn decimate_minmax(pts: &[(f64, f64)], max_points: usize) -> Vec<(f64, f64)> {
    let buckets = max_points / 2;
    if pts.len() <= max_points || buckets == 0 {
        return pts.to_vec();
    }
    let mut out = Vec::with_capacity(2 * buckets + 2);
    let n = pts.len();
    for b in 0..buckets {
        let start = b * n / buckets;
        let end = ((b + 1) * n / buckets).max(start + 1);
        let chunk = &pts[start..end];
        let (mut imin, mut imax) = (0, 0);
        for (i, p) in chunk.iter().enumerate() {
            if p.1 < chunk[imin].1 {
                imin = i;
            }
            if p.1 > chunk[imax].1 {
                imax = i;
            }
        }
        let (first, second) = if imin <= imax {
            (imin, imax)
        } else {
            (imax, imin)
        };
        out.push(chunk[first]);
        if second != first {
            out.push(chunk[second]);
        }
    }
    // Keep the true end points so the line spans the full x range.
    if out.first() != pts.first() {
        out.insert(0, pts[0]);
    }
    if out.last() != pts.last() {
        out.push(pts[n - 1]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tick_labels() {
        assert_eq!(fmt_tick(0.0), "0");
        assert_eq!(fmt_tick(0.30000000000000004), "0.3");
        assert_eq!(fmt_tick(-2.5), "-2.5");
        assert_eq!(fmt_tick(12345.6), "12346");
        assert_eq!(fmt_tick(0.0123), "0.0123");
        assert_eq!(fmt_tick(1.5e-4), "1.5e-4");
        assert_eq!(fmt_tick(2e6), "2e6");
        assert_eq!(fmt_tick(-1e-15), "0");
        assert_eq!(fmt_tick_log(-2.0), "0.01");
        assert_eq!(fmt_tick_log(3.0), "1000");
        assert_eq!(fmt_tick_log(-7.0), "1e-7");
        assert_eq!(fmt_tick_log(0.5), "3.16");
        assert_eq!(fmt_tick_log(0.4), "2.51");
        assert_eq!(fmt_tick_log(-1.5), "0.0316");
        assert_eq!(Axis::Log.label_count((-2.0, 1.3)), 4);
        assert_eq!(Axis::Log.label_count((0.2, 0.9)), 5);
        assert_eq!(Axis::Log.label_count((-40.0, 0.0)), 12);
    }

    #[test]
    fn axis_mapping_skips_undrawable_values() {
        assert_eq!(Axis::Linear.map(-1.0), Some(-1.0));
        assert_eq!(Axis::Linear.map(f64::NAN), None);
        assert_eq!(Axis::Log.map(100.0), Some(2.0));
        assert_eq!(Axis::Log.map(0.0), None);
        assert_eq!(Axis::Log.map(-3.0), None);
        assert_eq!(Axis::Log.map(f64::INFINITY), None);
    }

    #[test]
    fn ranges() {
        assert_eq!(nice_range([f64::NAN, f64::INFINITY], 0.1), None);
        assert_eq!(nice_range(Vec::new(), 0.1), None);
        assert_eq!(nice_range([1.0, 3.0, f64::NAN], 0.0), Some((1.0, 3.0)));
        assert_eq!(nice_range([1.0, 3.0], 0.5), Some((0.0, 4.0)));
        // Degenerate ranges are widened.
        assert_eq!(nice_range([0.0, 0.0], 0.1), Some((-1.0, 1.0)));
        let (lo, hi) = nice_range([5.0], 0.1).unwrap();
        assert!(lo < 5.0 && hi > 5.0);
        // Overflowing span.
        assert_eq!(nice_range([-f64::MAX, f64::MAX], 0.0), None);
    }

    #[test]
    fn histogram_is_a_density() {
        let v: Vec<f64> = (0..1000).map(|i| i as f64 / 999.0).collect();
        let h = density_histogram(&v, 0.0, 1.0, 10);
        assert_eq!(h.len(), 10);
        let area: f64 = h.iter().map(|d| d * 0.1).sum();
        assert!((area - 1.0).abs() < 1e-12, "area {area}");
        // Uniform data: each bin holds 100 of 1000 values, density 1.
        for d in &h {
            assert!((d - 1.0).abs() < 1e-12, "{h:?}");
        }
        // Non-finite values are ignored; the maximum lands in the last bin.
        let h = density_histogram(&[0.0, 1.0, f64::NAN], 0.0, 1.0, 2);
        assert_eq!(h, vec![1.0, 1.0]);
        assert_eq!(density_histogram(&[f64::NAN], 0.0, 1.0, 3), vec![0.0; 3]);
    }

    #[test]
    fn decimation_keeps_envelope_and_ends() {
        let pts: Vec<(f64, f64)> = (0..10_000)
            .map(|i| (i as f64, ((i * 7919) % 1000) as f64))
            .collect();
        let d = decimate_minmax(&pts, 200);
        assert!(d.len() <= 204, "{}", d.len());
        assert_eq!(d.first(), pts.first());
        assert_eq!(d.last(), pts.last());
        let max = d.iter().fold(f64::MIN, |m, p| m.max(p.1));
        let min = d.iter().fold(f64::MAX, |m, p| m.min(p.1));
        assert_eq!((min, max), (0.0, 999.0));
        // x stays in order.
        assert!(d.windows(2).all(|w| w[0].0 < w[1].0));
        // Short input is returned unchanged.
        assert_eq!(decimate_minmax(&pts[..10], 200), pts[..10].to_vec());
    }
}
