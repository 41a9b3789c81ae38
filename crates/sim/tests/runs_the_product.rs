//! The simulation runs the product's own decisions, not a copy of them. Each process kind's
//! decisions live in a sans-IO machine that the process and the simulation both drive (the
//! side's `SideMachine`, the logger's `LoggerSession`), so no file of this crate may match on
//! what only such a machine should read, or call what only it should call. A failure here names
//! the line: move the decision into the machine, and carry out its effect instead.

use std::path::{Path, PathBuf};

/// What the simulation's sources must not contain, and why.
const FORBIDDEN: &[(&str, &str)] = &[
    (
        "Action::",
        "the synchronizer's actions are carried out by the side's machine",
    ),
    (
        "SideToLogger::",
        "the side's messages to its logger are read by the logger's session",
    ),
    (
        "LoggerToSide::",
        "the logger's messages to its side are read by the side's machine",
    ),
    ("apply_into(", "the router is applied by the side's machine"),
    (
        "apply_batch(",
        "the router is applied by the side's machine",
    ),
    (
        "sort_outputs(",
        "an input's outputs are sorted by the side's machine",
    ),
    (
        "on_pg_message(",
        "a PG's message is handled by the side's machine",
    ),
    (
        "to_pgs(",
        "the synchronizer's actions for PGs are addressed by the side's machine",
    ),
    (
        "order_drop(",
        "drop decisions are ordered by the side's machine",
    ),
    (
        "on_transfer_received(",
        "a received state is taken by the side's machine",
    ),
    (
        "begin_transfer(",
        "a transfer's cut is taken by the side's machine",
    ),
    ("copy_gap(", "a gap is recovered by the logger's session"),
    (
        "gap_source(",
        "a gap's source is decided by the logger's session",
    ),
    (
        "write_batches(",
        "batches are written by the logger's session",
    ),
    (
        "take_configuration(",
        "a gap's configuration is taken by the logger's session",
    ),
    ("close_gap(", "a gap is closed by the logger's session"),
];

fn sources(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("the crate's sources can be listed") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            sources(&path, found);
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
}

#[test]
fn the_simulation_holds_no_decision_of_a_process() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    files.sort();
    assert!(files.len() >= 5, "the simulation's sources: {files:?}");
    let mut found = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("a source file reads");
        for (number, line) in text.lines().enumerate() {
            let code = line.trim_start();
            if code.starts_with("//") {
                continue;
            }
            for (pattern, why) in FORBIDDEN {
                if code.contains(pattern) {
                    found.push(format!(
                        "{}:{}: `{pattern}`: {why}",
                        file.strip_prefix(&src).unwrap_or(file).display(),
                        number + 1
                    ));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "the simulation makes decisions that belong to a process's machine:\n{}",
        found.join("\n")
    );
}

/// The check above would pass on sources it cannot see: it must see the ones that drive the
/// machines.
#[test]
fn the_check_reads_the_files_that_drive_the_machines() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let sides = std::fs::read_to_string(src.join("world/sides.rs")).expect("sides.rs reads");
    assert!(sides.contains("SideMachine"));
    let loggers = std::fs::read_to_string(src.join("world/loggers.rs")).expect("loggers.rs reads");
    assert!(loggers.contains("LoggerSession"));
}
