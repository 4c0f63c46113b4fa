//! The golden corpus of inbound mail (`tests/corpus/classify/NAME.eml` beside `NAME.json`, the
//! expected classification): every message, with LF and with CRLF line ends, must classify as
//! expected. A mismatch writes `NAME.actual.json` beside it (diff, and rename it when the change
//! is intended). Garbage and mutations of the corpus never panic.

use std::fs;
use std::path::{Path, PathBuf};

use nurture::mail::classify::classify;
use proptest::prelude::*;

const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/corpus/classify");

fn corpus() -> Vec<(PathBuf, Vec<u8>)> {
    let mut files: Vec<(PathBuf, Vec<u8>)> = fs::read_dir(CORPUS)
        .expect("the corpus folder exists")
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "eml"))
        .map(|path| {
            let raw = fs::read(&path).unwrap();
            (path, raw)
        })
        .collect();
    files.sort();
    files
}

fn with_line_ends(raw: &[u8], crlf: bool) -> Vec<u8> {
    let lf: Vec<u8> = String::from_utf8_lossy(raw)
        .replace("\r\n", "\n")
        .into_bytes();
    if !crlf {
        return lf;
    }
    String::from_utf8_lossy(&lf)
        .replace('\n', "\r\n")
        .into_bytes()
}

fn expected_path(eml: &Path, suffix: &str) -> PathBuf {
    eml.with_extension(suffix)
}

#[test]
fn the_corpus_classifies_as_expected_with_lf_and_crlf() {
    let files = corpus();
    assert!(
        files.len() >= 80,
        "the corpus is too small: {}",
        files.len()
    );
    let mut mismatches = Vec::new();
    for (path, raw) in &files {
        let expected = fs::read_to_string(expected_path(path, "json")).unwrap_or_default();
        for crlf in [false, true] {
            let actual =
                serde_json::to_string_pretty(&classify(&with_line_ends(raw, crlf))).unwrap() + "\n";
            if actual != expected {
                fs::write(expected_path(path, "actual.json"), &actual).unwrap();
                mismatches.push(format!(
                    "{} ({})",
                    path.file_name().unwrap().to_string_lossy(),
                    if crlf { "CRLF" } else { "LF" }
                ));
                break;
            }
        }
    }
    assert!(
        mismatches.is_empty(),
        "classification differs (see the .actual.json files):\n{}",
        mismatches.join("\n")
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn arbitrary_bytes_never_panic(raw in proptest::collection::vec(any::<u8>(), 0..2000)) {
        let _ = classify(&raw);
    }

    #[test]
    fn mutated_corpus_mail_never_panics(
        index in 0usize..1000,
        cuts in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..20),
        truncate in any::<usize>(),
    ) {
        let files = corpus();
        let mut raw = files[index % files.len()].1.clone();
        for (at, byte) in cuts {
            if !raw.is_empty() {
                let at = at % raw.len();
                raw[at] = byte;
            }
        }
        if !raw.is_empty() {
            raw.truncate(truncate % raw.len() + 1);
        }
        let _ = classify(&raw);
    }
}
