//! Replays, through the fuzz targets' bodies (`tandem::fuzzing`), every committed corpus file
//! (`fuzz/corpus/TARGET/`), every crash once found and fixed (`fuzz/regressions/TARGET/`) and a
//! set of valid seeds built here, on the stable toolchain. A long fuzzing run is
//! `scripts/fuzz.sh`; `TANDEM_WRITE_FUZZ_SEEDS=1 cargo test --test fuzz_corpora` writes the
//! seeds into the corpora to start it from.

use std::path::{Path, PathBuf};
use tandem::fuzzing::TARGETS;
use tandem_mds::frame;
use tandem_mds::{AdminRequest, PgToSide, PublicHello, TransferMessage};
use tandem_model::config::ContactCenter;
use tandem_model::ids::PgId;
use tandem_pg::LoadParams;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

fn framed<T: serde::Serialize>(message: &T) -> Vec<u8> {
    let mut out = Vec::new();
    frame::encode(message, &mut out).unwrap();
    out
}

fn example() -> ContactCenter {
    ContactCenter::from_toml_str(tandem::demo::EXAMPLE_CONTACT_CENTER).unwrap()
}

/// Valid inputs of each target: what the fuzzer mutates first.
fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let cc = example();
    let mut seeds = vec![
        (
            "frame",
            framed(&TransferMessage::Open {
                nonce: 7,
                a_receives: true,
            }),
        ),
        (
            "public_link",
            framed(&PublicHello::RtTest {
                command: "status".into(),
            }),
        ),
        (
            "public_link",
            framed(&PublicHello::Pg {
                pg: PgId(1),
                incarnation: 1,
            }),
        ),
        ("public_link", framed(&PgToSide::Heartbeat)),
        ("public_link", framed(&AdminRequest::Report)),
        (
            "topology_toml",
            include_bytes!("../../../examples/tandem.toml").to_vec(),
        ),
        (
            "contact_center_toml",
            tandem::demo::EXAMPLE_CONTACT_CENTER.as_bytes().to_vec(),
        ),
        (
            "ws_client_message",
            br#"{"subscribe": {"table": "agents", "filter": {"peripheral_id": 5000}}}"#.to_vec(),
        ),
        (
            "ws_client_message",
            br#"{"unsubscribe": {"table": "skill_groups"}}"#.to_vec(),
        ),
    ];
    // The PG simulator's first inputs, as a PG sends them.
    let mut sim = tandem_pg::TrafficSim::new(&cc, LoadParams::default(), 1_795_255_200_000);
    let mut inputs = Vec::new();
    sim.poll(1_795_255_260_000, &mut inputs);
    for (n, ordered) in inputs.into_iter().take(40).enumerate() {
        let message = PgToSide::Input {
            incarnation: 1,
            input_no: n as u64 + 1,
            input: ordered.input,
        };
        seeds.push(("pg_input", framed(&message)));
    }
    // A small state's records.
    let router = tandem_router::Router::from_contact_center(&cc, 1_795_255_200_000).unwrap();
    seeds.push((
        "state_records",
        tandem_router::records::export(&router.snapshot()),
    ));
    // A configuration change: the first agent renamed.
    let mut agent = cc.agents[0].clone();
    agent.name = "Renamed".into();
    let change = tandem_model::config::ConfigChange {
        ops: vec![tandem_model::config::ConfigOp::Upsert(
            tandem_model::config::ConfigObject::Agent(agent),
        )],
        author: "seed".into(),
    };
    seeds.push(("config_change_json", serde_json::to_vec(&change).unwrap()));
    seeds.push((
        "logger_peer",
        framed(&tandem_logger::peer::PeerRequest::Progress),
    ));
    seeds
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| entries.filter_map(|e| Some(e.ok()?.path())).collect())
        .unwrap_or_default();
    files.sort();
    files
}

#[test]
fn every_corpus_file_and_regression_replays_without_a_panic() {
    if std::env::var_os("TANDEM_WRITE_FUZZ_SEEDS").is_some() {
        for (n, (target, bytes)) in seeds().into_iter().enumerate() {
            let dir = fuzz_dir().join("corpus").join(target);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join(format!("seed-{n:03}")), bytes).unwrap();
        }
    }
    for (target, bytes) in seeds() {
        let (_, run) = TARGETS.iter().find(|(name, _)| *name == target).unwrap();
        run(&bytes);
    }
    for (target, run) in TARGETS {
        let corpus = files(&fuzz_dir().join("corpus").join(target));
        assert!(
            !corpus.is_empty(),
            "fuzz/corpus/{target} holds no inputs: run scripts/fuzz.sh {target}"
        );
        let regressions = files(&fuzz_dir().join("regressions").join(target));
        for path in corpus.iter().chain(&regressions) {
            let bytes = std::fs::read(path).unwrap();
            // A panic names the file that caused it.
            let outcome = std::panic::catch_unwind(|| run(&bytes));
            assert!(outcome.is_ok(), "{target}: {} panicked", path.display());
        }
        println!(
            "{target}: {} corpus files, {} regressions",
            corpus.len(),
            regressions.len()
        );
    }
}
