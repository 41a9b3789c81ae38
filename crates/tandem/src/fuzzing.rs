//! The bodies of the fuzz targets: one function per decoder of outside input, taking any bytes.
//! `fuzz/fuzz_targets/*.rs` calls them under cargo-fuzz (libFuzzer, nightly), and
//! `tests/fuzz_corpora.rs` replays every committed corpus file and every crash once found
//! through the same functions on the stable toolchain. Each one must return for every input:
//! a decoder may refuse bytes with an error, never panic, and what it accepts must encode back
//! to what decodes to the same value.

use std::sync::OnceLock;
use tandem_mds::frame::{self, FRAME_PAYLOAD_BYTES_MAX};
use tandem_mds::protocol::SideToDistributor;
use tandem_mds::{
    AdminReply, AdminRequest, LoggerToSide, PeerMessage, PgToSide, PublicHello, SideToLogger,
    SideToPg, TransferMessage,
};
use tandem_model::config::{ConfigChange, ContactCenter};
use tandem_model::input::{Input, OrderedInput};
use tandem_model::topology::Topology;
use tandem_router::Router;

/// A fuzz target's body.
pub type Target = fn(&[u8]);

/// Every target, by the name its corpus directory has.
pub const TARGETS: [(&str, Target); 9] = [
    ("frame", frame),
    ("public_link", public_link),
    ("pg_input", pg_input),
    ("state_records", state_records),
    ("topology_toml", topology_toml),
    ("contact_center_toml", contact_center_toml),
    ("ws_client_message", ws_client_message),
    ("config_change_json", config_change_json),
    ("logger_peer", logger_peer),
];

/// Decodes `bytes` as a frame of `T`; a message it accepts must survive a round trip.
fn frame_of<T>(bytes: &[u8])
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    if let Ok(Some((message, used))) = frame::decode_with_max::<T>(bytes, FRAME_PAYLOAD_BYTES_MAX) {
        assert!(used <= bytes.len());
        let mut again = Vec::new();
        frame::encode(&message, &mut again).expect("a decoded message encodes");
        let (back, _) = frame::decode::<T>(&again)
            .expect("a re-encoded message decodes")
            .expect("whole");
        assert_eq!(back, message);
    }
}

/// The frame codec under every message type of the private link and the state transfer.
pub fn frame(bytes: &[u8]) {
    frame_of::<PeerMessage>(bytes);
    frame_of::<TransferMessage>(bytes);
}

/// What the public listener reads: a hello, then a PG's, a logger's or an administrator's
/// messages; and what their clients read back.
pub fn public_link(bytes: &[u8]) {
    frame_of::<PublicHello>(bytes);
    frame_of::<PgToSide>(bytes);
    frame_of::<LoggerToSide>(bytes);
    frame_of::<AdminRequest>(bytes);
    frame_of::<SideToPg>(bytes);
    frame_of::<SideToLogger>(bytes);
    frame_of::<SideToDistributor>(bytes);
    frame_of::<AdminReply>(bytes);
}

/// A router built from the example contact center, for the targets that apply input.
fn example_router() -> Router {
    static CONTACT_CENTER: OnceLock<ContactCenter> = OnceLock::new();
    let cc = CONTACT_CENTER.get_or_init(|| {
        ContactCenter::from_toml_str(crate::demo::EXAMPLE_CONTACT_CENTER)
            .expect("the example contact center is valid")
    });
    Router::from_contact_center(cc, 1_795_255_200_000).expect("the example builds a router")
}

/// A PG's input as a side takes it off the wire, then ordered and applied by a router: bad
/// content (unknown agents, illegal transitions) is refused by the router, never a panic.
pub fn pg_input(bytes: &[u8]) {
    let Ok(Some((PgToSide::Input { input, .. }, _))) =
        frame::decode_with_max::<PgToSide>(bytes, FRAME_PAYLOAD_BYTES_MAX)
    else {
        return;
    };
    apply(input);
}

fn apply(input: Input) {
    let mut router = example_router();
    let ordered = OrderedInput {
        time_ms: 1_795_255_201_000,
        input,
    };
    router.apply(1, &ordered);
    router
        .check_invariants()
        .expect("the router's invariants hold after any input");
}

/// A state transfer's records, as the receiving side imports them.
pub fn state_records(bytes: &[u8]) {
    if let Ok(state) = tandem_router::records::import(bytes) {
        let exported = tandem_router::records::export(&state);
        assert_eq!(
            tandem_router::records::import(&exported).map(|s| tandem_router::records::digest(&s)),
            Ok(tandem_router::records::digest(&state)),
        );
    }
}

/// The topology every process reads.
pub fn topology_toml(bytes: &[u8]) {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return;
    };
    if let Ok(topology) = toml::from_str::<Topology>(text) {
        let _ = topology.validate();
    }
}

/// A contact-center configuration, as `tandem init`, `check-config` and the loggers read it.
pub fn contact_center_toml(bytes: &[u8]) {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return;
    };
    if let Ok(cc) = ContactCenter::from_toml_str(text) {
        // A configuration that validates builds a router.
        Router::from_contact_center(&cc, 1_795_255_200_000).expect("a valid configuration builds");
    }
}

/// What a WebSocket client sends a distributor.
pub fn ws_client_message(bytes: &[u8]) {
    if let Ok(text) = std::str::from_utf8(bytes) {
        let _ = tandem_distributor::rtclient::parse_client_message(text);
    }
}

/// `POST /api/config`'s body and `tandem config apply`'s file, applied by a router.
pub fn config_change_json(bytes: &[u8]) {
    if let Ok(change) = serde_json::from_slice::<ConfigChange>(bytes) {
        apply(Input::ConfigChange(change));
    }
}

/// What a logger reads from its peer logger, and the answers it reads back.
pub fn logger_peer(bytes: &[u8]) {
    frame_of::<tandem_logger::peer::PeerRequest>(bytes);
    frame_of::<tandem_logger::peer::PeerReply>(bytes);
}
