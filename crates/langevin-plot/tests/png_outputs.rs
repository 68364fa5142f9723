//! Every public function writes a valid, non-blank PNG; bad input gives a
//! typed error naming the path, never a panic.

use std::path::PathBuf;

use langevin_plot::{
    histograms_png, marginals_grid_png, reliability_png, scatter2d_png, trace_grid_png,
    ErrorBarChart, ErrorSeries, LineChart, PlotError, Series,
};

fn out(name: &str) -> PathBuf {
    let p = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("langevin-plot-tests")
        .join(name);
    let _ = std::fs::remove_file(&p);
    p
}

/// Decoded RGB(A) image.
struct Image {
    width: usize,
    height: usize,
    channels: usize,
    data: Vec<u8>,
}

impl Image {
    fn pixel(&self, x: usize, y: usize) -> &[u8] {
        let i = (y * self.width + x) * self.channels;
        &self.data[i..i + 3]
    }
    /// Pixels in rows `y0..y1` that are clearly not white.
    fn ink(&self, y0: usize, y1: usize) -> usize {
        (y0..y1.min(self.height))
            .flat_map(|y| (0..self.width).map(move |x| (x, y)))
            .filter(|&(x, y)| self.pixel(x, y).iter().any(|&c| c < 200))
            .count()
    }
    /// Pixels whose colour is saturated (data marks, not the grey/black frame).
    fn coloured(&self) -> usize {
        (0..self.height)
            .flat_map(|y| (0..self.width).map(move |x| (x, y)))
            .filter(|&(x, y)| {
                let p = self.pixel(x, y);
                let (mx, mn) = (*p.iter().max().unwrap(), *p.iter().min().unwrap());
                mx - mn > 60
            })
            .count()
    }
}

/// Checks the PNG signature, decodes the file and checks it is not blank.
fn load_png(path: &PathBuf) -> Image {
    let bytes = std::fs::read(path).expect("png written");
    assert!(
        bytes.len() > 1000,
        "{} is only {} bytes",
        path.display(),
        bytes.len()
    );
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "PNG signature");
    let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    let mut reader = decoder.read_info().expect("png header");
    let mut data = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut data).expect("png frame");
    let channels = match info.color_type {
        png::ColorType::Rgb => 3,
        png::ColorType::Rgba => 4,
        other => panic!("unexpected colour type {other:?}"),
    };
    data.truncate(info.buffer_size());
    let img = Image {
        width: info.width as usize,
        height: info.height as usize,
        channels,
        data,
    };
    // Background is white, and there is substantial drawing on it.
    assert_eq!(img.pixel(0, 0), &[255, 255, 255], "white background");
    let ink = img.ink(0, img.height);
    let total = img.width * img.height;
    assert!(
        ink > total / 200,
        "image looks blank: {ink} inked pixels of {total}"
    );
    assert!(ink < total * 9 / 10, "image looks filled: {ink} of {total}");
    img
}

fn gaussian_like(n: usize, shift: f64) -> Vec<f64> {
    // Deterministic, roughly bell-shaped: sum of three uniform-ish sequences.
    (0..n)
        .map(|i| {
            let u = |k: u64| ((i as u64 * k + 12345) % 1000) as f64 / 1000.0;
            u(7919) + u(104729) + u(1299709) - 1.5 + shift
        })
        .collect()
}

#[test]
fn line_chart_with_text_and_log_axes() {
    let x: Vec<f64> = (1..=200).map(f64::from).collect();
    let y1: Vec<f64> = x.iter().map(|v| 1.0 / v).collect();
    let y2: Vec<f64> = x.iter().map(|v| 1.0 / v.sqrt()).collect();
    let path = out("line.png");
    LineChart::new("Loss against step", "step", "loss")
        .log_x(true)
        .log_y(true)
        .series(Series::line("1/t", x.clone(), y1))
        .series(Series::points("1/sqrt(t)", x.clone(), y2.clone()))
        .series(Series::line_points(
            "shifted",
            x.clone(),
            y2.iter().map(|v| v * 2.0).collect::<Vec<_>>(),
        ))
        .save_png(&path)
        .unwrap();
    let img = load_png(&path);
    assert_eq!((img.width, img.height), (1000, 650));
    // The caption sits in the top band: text was rasterised with the font.
    assert!(img.ink(0, 40) > 200, "no title text: {}", img.ink(0, 40));
    assert!(img.coloured() > 1000, "no coloured data marks");
}

#[test]
fn text_is_rendered_with_the_bundled_font() {
    // Same data, with and without title/labels: the text adds ink.
    let x = vec![0.0, 1.0, 2.0];
    let y = vec![1.0, 0.0, 1.0];
    let (a, b) = (out("text_on.png"), out("text_off.png"));
    LineChart::new("A fairly long title with glyphs", "x label", "y label")
        .series(Series::line("legend", x.clone(), y.clone()))
        .save_png(&a)
        .unwrap();
    LineChart::new("", "", "")
        .series(Series::line("", x, y))
        .save_png(&b)
        .unwrap();
    let (a, b) = (load_png(&a), load_png(&b));
    let (ia, ib) = (a.ink(0, a.height), b.ink(0, b.height));
    assert!(ia > ib + 1500, "text added too little ink: {ia} vs {ib}");
}

#[test]
fn line_chart_skips_non_finite_and_breaks_lines() {
    let x: Vec<f64> = (0..50).map(f64::from).collect();
    let mut y: Vec<f64> = x.iter().map(|v| v.sin()).collect();
    y[10] = f64::NAN;
    y[20] = f64::INFINITY;
    y[30] = f64::NEG_INFINITY;
    let path = out("nan_line.png");
    LineChart::new("with gaps", "x", "y")
        .series(Series::line("sin", x.clone(), y))
        .save_png(&path)
        .unwrap();
    load_png(&path);

    // Log axis with non-positive values: those are skipped.
    let ylog: Vec<f64> = x.iter().map(|v| v - 10.0).collect();
    let path = out("log_skip.png");
    LineChart::new("log", "x", "y")
        .log_y(true)
        .series(Series::line_y("v", ylog))
        .save_png(&path)
        .unwrap();
    load_png(&path);
}

#[test]
fn line_chart_errors() {
    let path = out("err_line.png");
    // Slices and borrowed vectors are accepted too.
    let (x, y) = (vec![1.0, 2.0], vec![3.0, 4.0]);
    let chart = LineChart::new("t", "x", "y").series(Series::line("a", &x[..], &y[..]));
    assert_eq!(chart.series[0].x, x);
    assert_eq!(chart.series[0].style, langevin_plot::Style::Line);

    let e = LineChart::new("t", "x", "y").save_png(&path).unwrap_err();
    assert!(matches!(e, PlotError::EmptyData { .. }), "{e}");
    assert!(
        e.to_string().contains("err_line.png"),
        "error names the path: {e}"
    );

    let e = LineChart::new("t", "x", "y")
        .series(Series::line("a", vec![1.0, 2.0], vec![1.0]))
        .save_png(&path)
        .unwrap_err();
    assert!(matches!(e, PlotError::InvalidInput { .. }), "{e}");

    let e = LineChart::new("t", "x", "y")
        .series(Series::line("a", vec![f64::NAN], vec![1.0]))
        .save_png(&path)
        .unwrap_err();
    assert!(matches!(e, PlotError::EmptyData { .. }), "{e}");

    let e = LineChart::new("t", "x", "y")
        .log_y(true)
        .series(Series::line("a", vec![1.0, 2.0], vec![0.0, -1.0]))
        .save_png(&path)
        .unwrap_err();
    assert!(matches!(e, PlotError::EmptyData { .. }), "{e}");
    assert!(!path.exists(), "no file written on error");
}

#[test]
fn constant_and_single_point_data_render() {
    let path = out("constant.png");
    LineChart::new("constant", "x", "y")
        .series(Series::line("c", vec![1.0, 2.0, 3.0], vec![5.0, 5.0, 5.0]))
        .series(Series::points("one", vec![2.0], vec![5.0]))
        .save_png(&path)
        .unwrap();
    load_png(&path);
    let path = out("constant_hist.png");
    histograms_png(&path, "constant", "x", &[("c".into(), vec![0.0; 10])], 20).unwrap();
    load_png(&path);
}

#[test]
fn histograms() {
    let groups = vec![
        ("prior".to_string(), gaussian_like(5000, 0.0)),
        ("posterior".to_string(), gaussian_like(2000, 1.0)),
        (
            "with NaN".to_string(),
            vec![f64::NAN, 0.5, 0.6, f64::INFINITY],
        ),
    ];
    let path = out("hist.png");
    histograms_png(&path, "Overlaid histograms", "theta", &groups, 40).unwrap();
    let img = load_png(&path);
    assert!(img.coloured() > 5000);

    let e = histograms_png(&path, "t", "x", &[], 10).unwrap_err();
    assert!(matches!(e, PlotError::EmptyData { .. }), "{e}");
    let e = histograms_png(&path, "t", "x", &groups, 0).unwrap_err();
    assert!(matches!(e, PlotError::InvalidInput { .. }), "{e}");
    let e = histograms_png(&path, "t", "x", &[("a".into(), vec![f64::NAN])], 10).unwrap_err();
    assert!(matches!(e, PlotError::EmptyData { .. }), "{e}");
}

#[test]
fn trace_grid() {
    let names: Vec<String> = (0..3).map(|i| format!("theta[{i}]")).collect();
    // 3 parameters x 4 chains x 50 000 draws: exercises the decimation.
    let traces: Vec<Vec<Vec<f64>>> = (0..3)
        .map(|p| {
            (0..4)
                .map(|c| gaussian_like(50_000 + c * 7, p as f64))
                .collect()
        })
        .collect();
    let path = out("trace.png");
    trace_grid_png(&path, "Traces", &names, &traces).unwrap();
    let img = load_png(&path);
    assert_eq!(img.height, 50 + 3 * 170);
    assert!(img.coloured() > 10_000);

    // Non-finite draws are skipped (the line breaks there); a chain that is
    // entirely NaN is allowed when another chain has finite draws.
    let mut gappy = vec![gaussian_like(500, 0.0), vec![f64::NAN; 300]];
    gappy[0][100] = f64::NAN;
    gappy[0][200] = f64::INFINITY;
    let path2 = out("trace_nan.png");
    trace_grid_png(&path2, "gappy", &names[..1], &[gappy]).unwrap();
    load_png(&path2);

    let e = trace_grid_png(&path, "t", &names[..2], &traces).unwrap_err();
    assert!(matches!(e, PlotError::InvalidInput { .. }), "{e}");
    let e = trace_grid_png(&path, "t", &[], &[]).unwrap_err();
    assert!(matches!(e, PlotError::EmptyData { .. }), "{e}");
    let e = trace_grid_png(&path, "t", &names[..1], &[vec![vec![]]]).unwrap_err();
    assert!(matches!(e, PlotError::EmptyData { .. }), "{e}");
}

#[test]
fn marginals_grid() {
    let names: Vec<String> = (0..5).map(|i| format!("w{i}")).collect();
    let draws: Vec<Vec<f64>> = (0..5).map(|p| gaussian_like(3000, p as f64)).collect();
    let path = out("marginals.png");
    marginals_grid_png(&path, "Marginals", &names, &draws, 30).unwrap();
    let img = load_png(&path);
    assert!(img.coloured() > 5000);

    let e = marginals_grid_png(&path, "t", &names, &draws, 0).unwrap_err();
    assert!(matches!(e, PlotError::InvalidInput { .. }), "{e}");
    let e = marginals_grid_png(&path, "t", &names[..1], &draws, 10).unwrap_err();
    assert!(matches!(e, PlotError::InvalidInput { .. }), "{e}");
}

#[test]
fn reliability() {
    let conf: Vec<f64> = (0..10).map(|i| 0.05 + 0.1 * i as f64).collect();
    let acc: Vec<f64> = conf.iter().map(|c| c * 0.9).collect();
    let mut counts: Vec<usize> = (0..10).map(|i| 10 + 30 * i).collect();
    counts[0] = 0; // empty bin is skipped
    let path = out("reliability.png");
    reliability_png(&path, "Reliability", &conf, &acc, &counts).unwrap();
    let img = load_png(&path);
    assert!(img.coloured() > 2000);

    let e = reliability_png(&path, "t", &conf, &acc[..3], &counts).unwrap_err();
    assert!(matches!(e, PlotError::InvalidInput { .. }), "{e}");
    let e = reliability_png(&path, "t", &conf, &acc, &[0; 10]).unwrap_err();
    assert!(matches!(e, PlotError::EmptyData { .. }), "{e}");
}

#[test]
fn scatter() {
    let a: Vec<(f64, f64)> = gaussian_like(3000, 0.0)
        .into_iter()
        .zip(gaussian_like(3000, 0.5).into_iter().rev())
        .collect();
    let mut b: Vec<(f64, f64)> = a.iter().map(|&(x, y)| (x + 2.0, -y)).collect();
    b.push((f64::NAN, 1.0));
    let path = out("scatter.png");
    scatter2d_png(
        &path,
        "Samples",
        &[("chain 1".into(), a), ("chain 2".into(), b)],
    )
    .unwrap();
    let img = load_png(&path);
    assert!(img.coloured() > 5000);

    let e = scatter2d_png(&path, "t", &[]).unwrap_err();
    assert!(matches!(e, PlotError::EmptyData { .. }), "{e}");
    let e = scatter2d_png(&path, "t", &[("a".into(), vec![(f64::NAN, 0.0)])]).unwrap_err();
    assert!(matches!(e, PlotError::EmptyData { .. }), "{e}");
}

#[test]
fn unwritable_path_is_an_error() {
    // A file cannot be a parent folder.
    let file = out("plain_file");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(&file, b"x").unwrap();
    let path = file.join("sub").join("p.png");
    let e = LineChart::new("t", "x", "y")
        .series(Series::line("a", vec![0.0, 1.0], vec![0.0, 1.0]))
        .save_png(&path)
        .unwrap_err();
    assert!(matches!(e, PlotError::Write { .. }), "{e}");
    assert!(e.to_string().contains("plain_file"), "{e}");
}

#[test]
fn error_bar_chart() {
    let x = vec![1000.0, 8000.0, 32000.0];
    let path = out("errorbars.png");
    ErrorBarChart::new("Accuracy against length", "tokens", "accuracy")
        .log_x(true)
        .y_range(0.0, 1.0)
        .series(ErrorSeries::new(
            "a",
            x.clone(),
            vec![0.9, 0.5, 0.2],
            vec![0.05, 0.09, 0.07],
        ))
        .series(ErrorSeries::new(
            "b (no bar at the middle, last point skipped)",
            x.clone(),
            vec![0.1, 0.3, f64::NAN],
            vec![0.05, f64::NAN, 0.1],
        ))
        .save_png(&path)
        .unwrap();
    let img = load_png(&path);
    assert_eq!((img.width, img.height), (1100, 700));
    assert!(img.coloured() > 1000, "no coloured data marks");
    // The bars add coloured pixels: the same chart without them has fewer.
    let bare = out("errorbars_bare.png");
    ErrorBarChart::new("Accuracy against length", "tokens", "accuracy")
        .log_x(true)
        .y_range(0.0, 1.0)
        .series(ErrorSeries::new(
            "a",
            x.clone(),
            vec![0.9, 0.5, 0.2],
            vec![0.0; 3],
        ))
        .series(ErrorSeries::new(
            "b (no bar at the middle, last point skipped)",
            x.clone(),
            vec![0.1, 0.3, f64::NAN],
            vec![0.0; 3],
        ))
        .save_png(&bare)
        .unwrap();
    assert!(img.coloured() > load_png(&bare).coloured() + 100);
    // Errors, not panics.
    let bad = out("errorbars_bad.png");
    let e = ErrorBarChart::new("", "", "")
        .series(ErrorSeries::new("a", x.clone(), vec![1.0], vec![0.1]))
        .save_png(&bad)
        .unwrap_err();
    assert!(matches!(e, PlotError::InvalidInput { .. }), "{e}");
    let e = ErrorBarChart::new("", "", "")
        .y_range(1.0, 0.0)
        .series(ErrorSeries::new("a", x.clone(), vec![1.0; 3], vec![0.1; 3]))
        .save_png(&bad)
        .unwrap_err();
    assert!(matches!(e, PlotError::InvalidInput { .. }), "{e}");
    let e = ErrorBarChart::new("", "", "").save_png(&bad).unwrap_err();
    assert!(matches!(e, PlotError::EmptyData { .. }), "{e}");
    let e = ErrorBarChart::new("", "", "")
        .log_x(true)
        .series(ErrorSeries::new("a", vec![-1.0], vec![1.0], vec![0.1]))
        .save_png(&bad)
        .unwrap_err();
    assert!(matches!(e, PlotError::EmptyData { .. }), "{e}");
}
