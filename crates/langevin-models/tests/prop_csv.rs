//! Property tests of the CSV reader (`langevin_models::data`).
//!
//! * Round trip: a random table of finite numbers, with column names that may
//!   hold commas, quotes, spaces and newlines, written by a naive CSV writer
//!   (random quoting, `\n` or `\r\n`, blank lines between rows), parses back to
//!   the same names, values and file lines.
//! * Corruption: one cell made non-numeric, non-finite or empty, or one row
//!   made ragged, gives the error naming the file, the physical line of that row
//!   and (for a cell) the column, exactly.

use langevin_models::data::{load_csv_str, load_csv_str_columns, Columns};
use proptest::prelude::*;
use proptest::sample::Index;

/// One table and how to write it.
#[derive(Debug, Clone)]
struct Table {
    /// Column names (distinct, no leading or trailing whitespace).
    names: Vec<String>,
    /// Row-major cells.
    rows: Vec<Vec<f64>>,
    /// Which column is the target.
    target: usize,
    /// Per cell: 0 `{}`, 1 `{:e}`, 2 `{:?}`, 3 quoted `{}`.
    style: Vec<Vec<u8>>,
    /// Blank (or whitespace-only) lines written before each data row.
    blanks: Vec<u8>,
    crlf: bool,
}

fn finite_f64() -> impl Strategy<Value = f64> {
    use proptest::num::f64::{NEGATIVE, NORMAL, POSITIVE, SUBNORMAL, ZERO};
    prop_oneof![
        3 => POSITIVE | NEGATIVE | NORMAL | SUBNORMAL | ZERO,
        1 => -1e3f64..1e3,
        1 => (-1000i32..1000).prop_map(f64::from),
    ]
}

fn table() -> impl Strategy<Value = Table> {
    (2usize..6, 1usize..9)
        .prop_flat_map(|(d, n)| {
            (
                // The base may hold commas, quotes, spaces, newlines; the column
                // index appended makes names distinct and ends them on a digit.
                prop::collection::vec("[a-zA-Z_][a-zA-Z0-9_ ,\"\n]{0,6}", d),
                prop::collection::vec(prop::collection::vec(finite_f64(), d), n),
                0..d,
                prop::collection::vec(prop::collection::vec(0u8..4, d), n),
                prop::collection::vec(prop_oneof![4 => Just(0u8), 1 => 1u8..3], n),
                any::<bool>(),
            )
        })
        .prop_map(|(bases, rows, target, style, blanks, crlf)| Table {
            names: bases
                .iter()
                .enumerate()
                .map(|(j, b)| format!("{b}{j}"))
                .collect(),
            rows,
            target,
            style,
            blanks,
            crlf,
        })
}

/// Quote a field when it needs it (or when asked), doubling inner quotes.
fn quote(s: &str, force: bool) -> String {
    if force || s.contains([',', '"', '\n', '\r']) || s.trim() != s {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn cell_text(v: f64, style: u8) -> String {
    match style {
        0 => format!("{v}"),
        1 => format!("{v:e}"),
        2 => format!("{v:?}"),
        _ => quote(&format!("{v}"), true),
    }
}

/// What a corruption replaces one row or one cell with.
#[derive(Debug, Clone)]
enum Corruption {
    /// Replace the cell with this (non-numeric) text.
    Text(&'static str),
    /// Replace the cell with this non-finite number.
    NonFinite(&'static str),
    /// Empty the cell.
    Empty,
    /// Append this many extra fields to the row.
    Extra(usize),
    /// Drop the row's last field.
    Missing,
}

fn corruption() -> impl Strategy<Value = Corruption> {
    prop_oneof![
        prop::sample::select(vec!["abc", "1.2.3", "--1", "0x10", "1e", "one", "1,5"])
            .prop_map(Corruption::Text),
        prop::sample::select(vec![
            "NaN",
            "nan",
            "inf",
            "-inf",
            "+inf",
            "infinity",
            "-Infinity",
        ])
        .prop_map(Corruption::NonFinite),
        Just(Corruption::Empty),
        (1usize..3).prop_map(Corruption::Extra),
        Just(Corruption::Missing),
    ]
}

/// Writes the table (naive CSV); returns the text and each data row's
/// 1-based physical line. `bad` replaces cell (row, col) by raw text, or
/// reshapes a row.
fn write(t: &Table, bad: Option<(usize, usize, &Corruption)>) -> (String, Vec<usize>) {
    let eol = if t.crlf { "\r\n" } else { "\n" };
    let mut text = String::new();
    let mut line = 1;
    let header: Vec<String> = t.names.iter().map(|n| quote(n, false)).collect();
    let header = header.join(",");
    line += header.matches('\n').count();
    text.push_str(&header);
    text.push_str(eol);
    line += 1;
    let mut lines = Vec::new();
    for (i, row) in t.rows.iter().enumerate() {
        for b in 0..t.blanks[i] {
            text.push_str(if b % 2 == 0 { "" } else { "   " });
            text.push_str(eol);
            line += 1;
        }
        let mut cells: Vec<String> = row
            .iter()
            .zip(&t.style[i])
            .map(|(&v, &s)| cell_text(v, s))
            .collect();
        if let Some((r, c, k)) = bad {
            if r == i {
                match k {
                    Corruption::Text(s) => cells[c] = quote(s, false),
                    Corruption::NonFinite(s) => cells[c] = (*s).to_string(),
                    Corruption::Empty => cells[c] = String::new(),
                    Corruption::Extra(e) => cells.extend((0..*e).map(|_| "1".to_string())),
                    Corruption::Missing => {
                        cells.pop();
                    }
                }
            }
        }
        text.push_str(&cells.join(","));
        text.push_str(eol);
        lines.push(line);
        line += 1;
    }
    (text, lines)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn round_trip(t in table()) {
        let (text, lines) = write(&t, None);
        let target = &t.names[t.target];
        let ds = load_csv_str("t.csv", &text, target)
            .map_err(|e| TestCaseError::fail(format!("{e}\n{text:?}")))?;
        let features: Vec<&String> =
            t.names.iter().enumerate().filter(|(j, _)| *j != t.target).map(|(_, n)| n).collect();
        prop_assert_eq!(ds.feature_names.iter().collect::<Vec<_>>(), features.clone());
        prop_assert_eq!(&ds.target_name, target);
        prop_assert_eq!(ds.n(), t.rows.len());
        prop_assert_eq!(&ds.lines, &lines, "{:?}", text);
        let want_x: Vec<f64> = t
            .rows
            .iter()
            .flat_map(|r| r.iter().enumerate().filter(|(j, _)| *j != t.target).map(|(_, v)| *v))
            .collect();
        let want_y: Vec<f64> = t.rows.iter().map(|r| r[t.target]).collect();
        // Bit-exact (Rust's float formatting round-trips), and -0.0 stays -0.0.
        let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        prop_assert_eq!(bits(&ds.x), bits(&want_x));
        prop_assert_eq!(bits(&ds.y), bits(&want_y));
        prop_assert_eq!(&ds.source, "t.csv");

        // A chosen feature order reads the same cells.
        let rev: Vec<String> = features.iter().rev().map(|s| (*s).clone()).collect();
        let ds2 = load_csv_str_columns(
            "t.csv",
            &text,
            Columns { features: Some(&rev), target: None, require_target: false },
        )
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert!(!ds2.has_target());
        let d = features.len();
        for i in 0..ds.n() {
            for k in 0..d {
                prop_assert_eq!(ds2.x[i * d + k].to_bits(), ds.x[i * d + (d - 1 - k)].to_bits());
            }
        }
    }

    #[test]
    fn corruption_names_line_and_column(
        t in table(),
        row in any::<Index>(),
        col in any::<Index>(),
        k in corruption(),
    ) {
        let r = row.index(t.rows.len());
        let c = col.index(t.names.len());
        let (text, lines) = write(&t, Some((r, c, &k)));
        let line = lines[r];
        let err = load_csv_str("t.csv", &text, &t.names[t.target]);
        let msg = match err {
            Ok(_) => return Err(TestCaseError::fail(format!("{k:?} at ({r}, {c}) accepted: {text:?}"))),
            Err(e) => {
                prop_assert!(e.is_bad_input(), "{}", e);
                e.to_string()
            }
        };
        let d = t.names.len();
        let want = match &k {
            Corruption::Text(s) => {
                format!("t.csv:{line}: column `{}`: `{s}` is not a number", t.names[c])
            }
            Corruption::NonFinite(s) => {
                format!("t.csv:{line}: column `{}`: `{s}` is not a finite number", t.names[c])
            }
            Corruption::Empty => format!(
                "t.csv:{line}: column `{}`: empty cell (missing values are not supported)",
                t.names[c]
            ),
            Corruption::Extra(e) => {
                format!("t.csv:{line}: row has {} fields but the header has {d}", d + e)
            }
            Corruption::Missing => {
                format!("t.csv:{line}: row has {} fields but the header has {d}", d - 1)
            }
        };
        prop_assert_eq!(msg, want, "{:?}", text);
    }
}

/// The reader's fixed cases: a quoted header with a comma, a quote and a
/// newline, CRLF endings and blank lines.
#[test]
fn quoted_names_and_line_numbers() {
    let text = "\"a,b\",\"say \"\"hi\"\"\",\"multi\nline\"\r\n1,2,3\r\n\r\n4,5,6\r\n";
    let ds = load_csv_str("q.csv", text, "say \"hi\"").unwrap();
    assert_eq!(ds.feature_names, vec!["a,b", "multi\nline"]);
    assert_eq!(ds.x, vec![1.0, 3.0, 4.0, 6.0]);
    assert_eq!(ds.y, vec![2.0, 5.0]);
    assert_eq!(ds.lines, vec![3, 5]);
    let bad = text.replace("4,5,6", "4,x,6");
    let e = load_csv_str("q.csv", &bad, "say \"hi\"").unwrap_err();
    assert_eq!(
        e.to_string(),
        "q.csv:5: column `say \"hi\"`: `x` is not a number"
    );
}
