//! The leads file the import benchmarks read: rows shaped like a real export (names, company,
//! source, two tags, time zone, score and two attributes).

use std::io::{BufWriter, Write};
use std::path::Path;

/// Writes `rows` leads to `path`, addressed `{prefix}{i}@example{i % 97}.com`.
pub fn write(path: &Path, rows: usize, prefix: &str) {
    let file = std::fs::File::create(path).expect("create the CSV");
    let mut out = BufWriter::new(file);
    writeln!(
        out,
        "email,first_name,last_name,company,source,tags,timezone,score,plan,country"
    )
    .expect("write the CSV");
    let zones = ["Europe/Berlin", "America/New_York", "Asia/Tokyo"];
    for i in 0..rows {
        writeln!(
            out,
            "{prefix}{i}@example{}.com,Ana{},Ortiz,Company {} Ltd,website-form,trial;newsletter,{},{},pro,DE",
            i % 97,
            i % 1000,
            i % 5000,
            zones[i % zones.len()],
            i % 100,
        )
        .expect("write the CSV");
    }
    out.flush().expect("write the CSV");
}
