//! `langevin thermo` matrix files: one reader for every subcommand; a UTF-8
//! byte-order mark at the start of a file (as spreadsheet programs write it) is
//! accepted, and errors still name the file and the line.

mod common;

use common::{expect_no_output as expect_bad_input, langevin, write};

const BOM: &str = "\u{feff}";

#[test]
fn bom_matrix_and_vector_files_give_the_same_solution_as_plain_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let plain_m = write(t, "a.csv", "2,0.5\n0.5,1\n");
    let plain_v = write(t, "b.csv", "1\n-1\n");
    let bom_m = write(t, "a_bom.csv", format!("{BOM}2,0.5\n0.5,1\n"));
    let bom_v = write(t, "b_bom.csv", format!("{BOM}1\n-1\n"));
    let mut solutions = Vec::new();
    for (m, v, name) in [(&plain_m, &plain_v, "plain"), (&bom_m, &bom_v, "bom")] {
        let out = t.join(name);
        let args = [
            "thermo",
            "solve",
            "--matrix",
            m,
            "--vector",
            v,
            "--analog-time",
            "60",
            "--out",
            out.to_str().unwrap(),
        ];
        let o = langevin(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(0), "langevin {args:?}: {err}");
        solutions.push(std::fs::read_to_string(out.join("solution.csv")).unwrap());
    }
    assert_eq!(solutions[0], solutions[1]);
    assert_eq!(solutions[0].lines().count(), 2);
}

#[test]
fn bom_files_keep_file_and_line_in_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let out = t.join("out");
    let o = out.to_str().unwrap();
    // The BOM is not part of the first number, and line numbers are unchanged.
    let text = write(t, "text_bom.csv", format!("{BOM}2,0.5\n0.5,x\n"));
    expect_bad_input(
        &["thermo", "solve", "--matrix", &text, "--out", o],
        &out,
        &["text_bom.csv:2: column 2: `x` is not a number"],
    );
    let first = write(t, "first_bom.csv", format!("{BOM}y,0.5\n0.5,1\n"));
    expect_bad_input(
        &["thermo", "inv", "--matrix", &first, "--out", o],
        &out,
        &["first_bom.csv:1: column 1: `y` is not a number"],
    );
    // The SPU subcommand reads its matrix with the same reader.
    let nonsquare = write(t, "nonsquare_bom.csv", format!("{BOM}2,0,0\n0,2,0\n"));
    expect_bad_input(
        &["thermo", "spu", "--matrix", &nonsquare, "--out", o],
        &out,
        &["nonsquare_bom.csv", "must be square", "2 rows of 3 values"],
    );
    let ragged = write(t, "ragged_bom.csv", format!("{BOM}2,1\n1\n"));
    expect_bad_input(
        &["thermo", "spu", "--matrix", &ragged, "--out", o],
        &out,
        &["ragged_bom.csv:2", "ragged row"],
    );
    // A BOM-only file has no data.
    let empty = write(t, "empty_bom.csv", BOM);
    expect_bad_input(
        &["thermo", "sample", "--matrix", &empty, "--out", o],
        &out,
        &["empty_bom.csv", "no data"],
    );
}
