//! `metric_dots_png`: a valid PNG for a method comparison; bad input is a
//! typed error, never a panic.

use std::path::PathBuf;

use langevin_plot::{metric_dots_png, PlotError};

fn out(name: &str) -> PathBuf {
    let p = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("langevin-plot-tests")
        .join(name);
    let _ = std::fs::remove_file(&p);
    p
}

#[test]
fn metric_dots_writes_a_png_and_skips_non_finite_values() {
    let items: Vec<String> = ["map", "sghmc", "vi", "laplace-diag-ggn"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let metrics = vec![
        ("test NLL".to_string(), vec![0.13, 0.134, 0.129, 0.131]),
        (
            "test accuracy".to_string(),
            vec![0.967, 0.967, 0.933, 0.967],
        ),
        ("ECE".to_string(), vec![0.1, 0.085, f64::NAN, 0.09]),
        ("seconds".to_string(), vec![1.4, 6.4, 0.8, 0.5]),
    ];
    let p = out("compare.png");
    metric_dots_png(&p, "iris_virginica", &items, &metrics).unwrap();
    let bytes = std::fs::read(&p).unwrap();
    assert!(bytes.len() > 1000);
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
}

#[test]
fn metric_dots_errors() {
    let items = vec!["a".to_string(), "b".to_string()];
    let p = out("bad.png");
    assert!(matches!(
        metric_dots_png(&p, "t", &items, &[("m".into(), vec![1.0])]),
        Err(PlotError::InvalidInput { .. })
    ));
    assert!(matches!(
        metric_dots_png(
            &p,
            "t",
            &items,
            &[("m".into(), vec![f64::NAN, f64::INFINITY])]
        ),
        Err(PlotError::EmptyData { .. })
    ));
    assert!(matches!(
        metric_dots_png(&p, "t", &[], &[("m".into(), vec![])]),
        Err(PlotError::EmptyData { .. })
    ));
    assert!(matches!(
        metric_dots_png(&p, "t", &items, &[]),
        Err(PlotError::EmptyData { .. })
    ));
}
