//! `langevin emt index` and `ask --bank` with the real SmolLM2-135M-Instruct (fetched by
//! scripts/fetch-smollm2.sh). `#[ignore]`d by default (the README's test command needs
//! no model); `.ci/run` fetches the model and runs them:
//! `cargo test -p langevin-cli --test cli_emt_real -- --ignored`. A missing model fails,
//! naming every place looked.

mod common;

use common::{expect, langevin, path_str, write};
use langevin_emt::needle::make_items;
use langevin_emt::{Llama, LlamaConfig, MemoryBank, MemoryOptions};

fn run(args: &[&str]) -> (i32, String, String) {
    let o = langevin(args);
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn json(args: &[&str]) -> serde_json::Value {
    let (code, out, err) = run(args);
    assert_eq!(code, 0, "{args:?}: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

#[test]
#[ignore = "needs the model (scripts/fetch-smollm2.sh); .ci/run runs it"]
fn a_saved_bank_gives_the_answer_and_citations_of_its_document() {
    // Fail, not skip, without the model.
    langevin_emt::find_model(None).unwrap_or_else(|e| panic!("{e}"));
    let tmp = common::tempdir();
    let t = tmp.path();
    let items = make_items(2, 20, 0).unwrap();
    let doc = write(
        t,
        "doc.txt",
        format!("{} {}", items[0].document, items[1].document),
    );
    let question = format!("Where does {} live?", items[0].name);
    let bank = t.join("doc.bank");
    let b = path_str(&bank);
    let index = json(&["emt", "index", &doc, "--out", b, "--json", "--threads", "1"]);
    assert!(index["memories"].as_u64().unwrap() > 100, "{index}");
    assert_eq!(index["bytes"], std::fs::metadata(&bank).unwrap().len());
    let ask = |source: &[&str]| {
        let v = json(
            &[
                &[
                    "emt",
                    "ask",
                    "--question",
                    &question,
                    "--json",
                    "--max-tokens",
                    "24",
                ][..],
                source,
            ]
            .concat(),
        );
        (v["answer"].clone(), v["citations"].clone())
    };
    let from_doc = ask(&["--memory", &doc]);
    let from_bank = ask(&["--bank", b]);
    eprintln!("--memory: {from_doc:?}\n--bank:   {from_bank:?}");
    assert!(!from_doc.0.as_str().unwrap().is_empty());
    assert!(!from_doc.1.as_array().unwrap().is_empty());
    assert_eq!(from_bank, from_doc);
    // The bank made with the quantized weights serves the dequantized model too.
    let (code, _, err) = run(&[
        "emt",
        "ask",
        "--question",
        &question,
        "--bank",
        b,
        "--dequantize",
    ]);
    assert_eq!(code, 0, "{err}");

    // A bank of another (random, tiny) model: refused, naming the file and both models.
    let tiny = Llama::random(&LlamaConfig::tiny(), 1).unwrap();
    let other = MemoryBank::build(&tiny, &[1, 2, 3, 4], &[], &MemoryOptions::default()).unwrap();
    let other_path = t.join("other.bank");
    other.save(&other_path, &tiny).unwrap();
    expect(
        &[
            "emt",
            "ask",
            "--question",
            &question,
            "--bank",
            path_str(&other_path),
        ],
        2,
        &[
            path_str(&other_path),
            "was made with another model",
            "2 layers",
            "30 layers",
        ],
    );
    // A truncated bank: refused, naming the file.
    let bytes = std::fs::read(&bank).unwrap();
    let cut = t.join("cut.bank");
    std::fs::write(&cut, &bytes[..bytes.len() - 1000]).unwrap();
    expect(
        &[
            "emt",
            "ask",
            "--question",
            &question,
            "--bank",
            path_str(&cut),
        ],
        2,
        &[path_str(&cut), "truncated or corrupt"],
    );
}
