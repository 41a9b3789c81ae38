//! `tandem sim` as users run it: a scan of seeds reports its totals as JSON, and `--replay`
//! runs one seed again, printing its whole trace and the same trace hash every time.

use serde_json::Value;
use std::process::{Command, Output};

fn tandem_sim(args: &[&str]) -> Output {
    let output = Command::new(env!("CARGO_BIN_EXE_tandem"))
        .arg("sim")
        .args(args)
        .output()
        .expect("tandem runs");
    assert!(
        output.status.success(),
        "tandem sim {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn json(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout).expect("the summary is JSON")
}

#[test]
fn a_scan_reports_its_seeds_and_faults() {
    let summary = json(&tandem_sim(&[
        "--seeds",
        "3",
        "--from",
        "11",
        "--keep-going",
    ]));
    assert_eq!(summary["seeds"], 3);
    assert_eq!(summary["failed"], Value::Array(Vec::new()));
    assert!(summary["route_requests"].as_u64().unwrap() > 0, "{summary}");
    assert!(summary["faults"].as_object().is_some_and(|f| !f.is_empty()));
}

#[test]
fn a_replay_prints_the_whole_trace_and_repeats_exactly() {
    // Seed 11 pauses a distributor and a PG: the trace shows each stop and each waking.
    let first = tandem_sim(&["--replay", "11"]);
    let trace = String::from_utf8_lossy(&first.stderr);
    for line in [
        "distributor 0 stops",
        "distributor 0 goes on",
        "PG 0 stops",
        "PG 0 goes on",
        "heal everything",
    ] {
        assert!(trace.contains(line), "{line:?} missing from the trace");
    }
    let summary = json(&first);
    assert_eq!(summary["faults"]["PG paused"], 1, "{summary}");
    assert_eq!(summary["faults"]["distributor paused"], 1, "{summary}");
    let second = tandem_sim(&["--replay", "11"]);
    assert_eq!(summary["trace_hash"], json(&second)["trace_hash"]);
    assert_eq!(first.stderr, second.stderr);
}
