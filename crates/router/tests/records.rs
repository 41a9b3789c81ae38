//! State records: export, import, digest, size, snapshot, alarm.

mod common;
use common::*;
use tandem_model::domain::AgentState;
use tandem_model::input::{Input, OrderedInput};
use tandem_model::output::{EventCode, Output};
use tandem_model::script::{NodeKind, SelectRule};
use tandem_router::records::{
    digest, export, export_into, export_pieces, export_to, import, import_with_digest, state_size,
    StateImport, RECORD_OVERHEAD_BYTES,
};
use tandem_router::{ImportError, Router};

/// A router with agents, calls in every phase, queued and waiting requests, timers and cached
/// answers: every table has rows.
fn busy_harness() -> Harness {
    let mut h = Harness::new(vec![
        node(0, NodeKind::Start { next: 1 }),
        node(
            1,
            NodeKind::Select {
                rule: SelectRule::Rotary,
                skill_groups: vec![SG1, SG2],
                none_next: 2,
            },
        ),
        node(
            2,
            NodeKind::Queue {
                skill_groups: vec![SG1, SG2],
                priority: 3,
                timeout_s: 100,
                timeout_next: 3,
            },
        ),
        node(3, NodeKind::Default),
    ]);
    h.login(A1, AgentState::Ready);
    h.login(A2, AgentState::NotReady);
    h.login(A4, AgentState::Ready);
    h.handled_call(1, SG1, A1, 1_000, 2_000, 500, 0);
    let call = call_key(2);
    h.input(Input::CallArrived {
        call,
        skill_group: Some(SG2),
        call_type: Some(CT),
        service: Some(SERVICE),
        router_call_key: None,
    });
    h.input(Input::CallOffered {
        call,
        agent: A4,
        skill_group: None,
    });
    h.input(Input::CallAnswered { call });
    h.input(Input::CallHeld { call });
    h.request(1);
    h.request(2);
    h.request(3);
    h.advance(1_000);
    h
}

#[test]
fn export_import_round_trips_exactly() {
    let h = busy_harness();
    let state = h.router.snapshot();
    assert!(
        state.skill_group_rt.values().any(|g| !g.queue.is_empty())
            && !state.timers.is_empty()
            && !state.calls.is_empty()
    );
    let bytes = export(&state);
    assert_eq!(bytes.len() as u64, state_size(&state));
    assert_eq!(bytes.len() as u64, h.router.state_size());
    let imported = import(&bytes).unwrap();
    assert!(imported == state);
    let rebuilt = Router::from_state(imported).unwrap();
    assert_eq!(rebuilt.digest(), h.router.digest());
    // The transfer's import computes the same digest beside the invariant check.
    let (imported, digest) = import_with_digest(&bytes).unwrap();
    assert!(imported == state);
    assert_eq!(digest, h.router.digest());

    // The streamed records, and an export into a reused buffer, are the same bytes.
    let mut streamed = Vec::new();
    let mut records = 0;
    export_to(&state, &mut |record| {
        streamed.extend_from_slice(record);
        records += 1;
    });
    assert_eq!(streamed, bytes);
    assert!(records > 3);
    let mut reused = vec![0xAA; 10];
    export_into(&state, &mut reused);
    assert_eq!(reused, bytes);

    // Pieces of whole records, each at least the size asked for but the last, the sink taking
    // some buffers and leaving others.
    for piece_bytes in [0, 1, 300, 4_096, usize::MAX] {
        let mut pieces = Vec::new();
        let mut taken = 0;
        export_pieces(&state, piece_bytes, &mut |piece| {
            pieces.push(piece.clone());
            if taken % 2 == 0 {
                *piece = Vec::new();
            }
            taken += 1;
        });
        assert_eq!(pieces.concat(), bytes, "pieces of {piece_bytes}");
        let last = pieces.len() - 1;
        assert!(pieces[..last]
            .iter()
            .all(|p| p.len() >= piece_bytes.min(bytes.len())));
    }
}

/// Import in pieces cut anywhere (inside a length prefix, a row, a checksum) rebuilds the same
/// state with the same digest as import in one piece, and reports the same error for the same
/// damage.
#[test]
fn import_in_pieces_of_any_size_gives_the_same_state_digest_and_errors() {
    let state = busy_harness().router.snapshot();
    let bytes = export(&state);
    let mut damaged = bytes.clone();
    damaged[bytes.len() / 3] ^= 0x01;
    let whole_error = import(&damaged).unwrap_err();
    for piece_bytes in [1, 2, 3, 5, 13, 64, 1_000, 4_096, bytes.len()] {
        let mut import = StateImport::new();
        for piece in bytes.chunks(piece_bytes) {
            import.feed(piece).unwrap();
        }
        assert_eq!(import.pending_bytes(), 0);
        let expected = import.digest().unwrap();
        let (imported, digest_read) = import.finish().unwrap();
        assert!(imported == state, "pieces of {piece_bytes}");
        assert_eq!(digest_read, expected);
        assert_eq!(digest_read, digest(&state));

        let mut import = StateImport::new();
        let error = damaged
            .chunks(piece_bytes)
            .try_for_each(|piece| import.feed(piece))
            .and_then(|()| import.finish().map(|_| ()))
            .unwrap_err();
        assert_eq!(error, whole_error, "pieces of {piece_bytes}");
    }
}

/// The records of `bytes`, each as its own byte vector.
fn split_records(bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut records = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        records.push(bytes[at..at + 4 + 1 + len + 8].to_vec());
        at += 4 + 1 + len + 8;
    }
    records
}

/// A stream that decodes to a state but is not the one export writes for it is refused: the
/// hash of the stream read is the digest only because import takes the canonical stream alone.
#[test]
fn a_stream_other_than_the_canonical_export_is_refused() {
    let state = busy_harness().router.snapshot();
    let bytes = export(&state);
    let records = split_records(&bytes);

    // The reference counts (table 15, rows of 13 bytes) cut into a chunk of one row and a
    // chunk of the rest: the same rows, chunked differently.
    let at = records
        .iter()
        .position(|r| r[4] == 3 && u16::from_le_bytes([r[5], r[6]]) == 15)
        .unwrap();
    let payload = &records[at][5..records[at].len() - 8];
    let count = u32::from_le_bytes(payload[2..6].try_into().unwrap());
    assert!(count >= 2);
    let rows = &payload[6..];
    let chunk = |count: u32, rows: &[u8]| {
        let mut payload = 15u16.to_le_bytes().to_vec();
        payload.extend_from_slice(&count.to_le_bytes());
        payload.extend_from_slice(rows);
        record(3, &payload)
    };
    let mut rechunked = records.clone();
    rechunked.splice(
        at..=at,
        [chunk(1, &rows[..13]), chunk(count - 1, &rows[13..])],
    );
    assert!(matches!(
        import(&rechunked.concat()),
        Err(ImportError::Decode { index, .. }) if index == at + 1
    ));

    // A header whose sequence number is not the scalars'.
    let mut header = records[0][5..records[0].len() - 8].to_vec();
    header[10] ^= 1;
    let mut other_header = records.clone();
    other_header[0] = record(1, &header);
    assert!(matches!(
        import(&other_header.concat()),
        Err(ImportError::Decode { index: 1, .. })
    ));
}

#[test]
fn an_imported_router_behaves_identically() {
    let mut original = busy_harness();
    let copy = Router::from_state(import(&export(original.router.state())).unwrap()).unwrap();
    let mut twin = Harness {
        router: copy,
        seq: original.seq,
        now_ms: original.now_ms,
        outputs: vec![],
    };
    original.outputs.clear();
    for h in [&mut original, &mut twin] {
        h.login(A3, AgentState::Ready);
        h.request(4);
        h.input(Input::CallEnded {
            call: call_key(2),
            after_call: tandem_model::AfterCall::WorkReady,
        });
        h.advance(120_000);
    }
    assert_eq!(original.outputs, twin.outputs);
    assert_eq!(original.router.digest(), twin.router.digest());
}

#[test]
fn state_size_is_exact_as_the_state_changes() {
    let mut h = busy_harness();
    for _ in 0..50 {
        h.advance(3_000);
        h.request(h.seq + 100);
        assert_eq!(h.router.state_size(), export(h.router.state()).len() as u64);
    }
    assert!(h.router.state_size_max() >= h.router.state_size());
}

#[test]
fn a_snapshot_is_unaffected_by_later_input() {
    let mut h = busy_harness();
    let snapshot = h.router.snapshot();
    let bytes_then = export(&snapshot);
    h.login(A3, AgentState::Ready);
    h.advance(200_000);
    h.request(77);
    assert_eq!(export(&snapshot), bytes_then);
    assert_ne!(export(h.router.state()), bytes_then);
}

/// One framed record, as the export writes it.
fn record(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = (payload.len() as u32).to_le_bytes().to_vec();
    out.push(kind);
    out.extend_from_slice(payload);
    let checksum = xxhash_rust::xxh3::xxh3_64(&out[4..]);
    out.extend_from_slice(&checksum.to_le_bytes());
    out
}

/// Chunks that claim many rows but carry none are refused before any memory is set aside for
/// the rows they claim: a well-framed stream of a few megabytes cannot make import reserve
/// gigabytes.
#[test]
fn row_counts_are_claims_until_the_rows_decode() {
    let bytes = export(busy_harness().router.state());
    // Keep the header and scalars records.
    let mut prefix_len = 0;
    for _ in 0..2 {
        let len = u32::from_le_bytes(bytes[prefix_len..prefix_len + 4].try_into().unwrap());
        prefix_len += 4 + 1 + len as usize + 8;
    }
    let mut stream = bytes[..prefix_len].to_vec();
    let chunks = 1_000_000u64;
    for _ in 0..chunks {
        let mut payload = 23u16.to_le_bytes().to_vec(); // the calls table
        payload.extend_from_slice(&512u32.to_le_bytes());
        stream.extend_from_slice(&record(3, &payload));
    }
    stream.extend_from_slice(&record(4, &(chunks * 512).to_le_bytes()));
    assert!(matches!(
        import(&stream),
        Err(ImportError::Decode { index: 2, .. })
    ));
}

#[test]
fn corrupt_truncated_or_foreign_streams_are_refused() {
    let bytes = export(busy_harness().router.state());
    // A flipped byte anywhere in a record fails its checksum (or its framing).
    for position in [10, 40, bytes.len() / 2, bytes.len() - 9] {
        let mut corrupt = bytes.clone();
        corrupt[position] ^= 0x40;
        assert!(import(&corrupt).is_err(), "flip at {position} accepted");
    }
    assert!(matches!(
        import(&bytes[..bytes.len() - 1]),
        Err(ImportError::Decode { .. })
    ));
    assert!(import(&bytes[..bytes.len() - (RECORD_OVERHEAD_BYTES as usize + 8)]).is_err());
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(import(&longer).is_err());
    assert!(import(b"not a state").is_err());
    // Cut at every record boundary and inside every record: never accepted.
    let mut boundaries = vec![0];
    for record in split_records(&bytes) {
        boundaries.push(boundaries.last().unwrap() + record.len());
    }
    for pair in boundaries.windows(2) {
        for cut in [pair[0], pair[0] + 3, (pair[0] + pair[1]) / 2, pair[1] - 1] {
            assert!(import(&bytes[..cut]).is_err(), "cut at {cut} accepted");
        }
    }
    // Another format version is named in the error.
    let mut other = bytes.clone();
    other[5 + 8] = 9;
    let checksum_at = 5 + 18;
    let checksum = xxhash_rust::xxh3::xxh3_64(&other[4..checksum_at]);
    other[checksum_at..checksum_at + 8].copy_from_slice(&checksum.to_le_bytes());
    assert_eq!(
        import(&other).err(),
        Some(ImportError::Version {
            found: 9,
            expected: tandem_router::STATE_FORMAT_VERSION
        })
    );
}

#[test]
fn two_routers_fed_the_same_inputs_are_byte_identical() {
    let a = busy_harness();
    let b = busy_harness();
    assert_eq!(a.outputs, b.outputs);
    assert_eq!(export(a.router.state()), export(b.router.state()));
    assert_eq!(a.router.digest(), b.router.digest());
}

#[test]
fn the_state_size_alarm_is_raised_once_with_hysteresis() {
    let mut cc = contact_center(script_with(NodeKind::Default));
    cc.settings.state_size_alarm_mb = 1;
    let mut router = Router::from_contact_center(&cc, T0).unwrap();
    let size = router.state_size();
    assert!(size < 1_000_000);
    // Grow the state past 1 MB with cached route requests (each evicted only after 10 s).
    let mut events = Vec::new();
    let mut seq = 0;
    while seq < 40_000 {
        seq += 1;
        let out = router.apply(
            seq,
            &OrderedInput {
                time_ms: T0,
                input: Input::RouteRequest(tandem_model::RouteRequest {
                    key: key(seq),
                    dialed_number: DIGITS.into(),
                    ani: "x".repeat(40),
                    caller_entered_digits: String::new(),
                    call_variables: vec!["y".repeat(40); 10],
                }),
            },
        );
        events.extend(out.into_iter().filter_map(|o| match o {
            Output::Event(e)
                if matches!(
                    e.code,
                    EventCode::StateSizeAlarm | EventCode::StateSizeAlarmCleared
                ) =>
            {
                Some(e)
            }
            _ => None,
        }));
    }
    // Default answers are cached but the requests finish at once; the cache is what grows.
    assert!(router.state_size() > 1_000_000, "{}", router.state_size());
    assert_eq!(events.len(), 1, "{events:?}");
    assert!(
        events[0].message.starts_with("The router state size of "),
        "{}",
        events[0].message
    );
    assert!(
        events[0]
            .message
            .ends_with("has grown beyond the alarm limit of 1 MB"),
        "{}",
        events[0].message
    );
    // Eviction (twice the client timeout) shrinks the state and clears the alarm, once.
    let mut cleared = 0;
    for i in 1..=20 {
        let out = router.apply(
            seq + i,
            &OrderedInput {
                time_ms: T0 + 10_000 + i * 100,
                input: Input::TimeTick,
            },
        );
        cleared += out
            .iter()
            .filter(|o| matches!(o, Output::Event(e) if e.code == EventCode::StateSizeAlarmCleared))
            .count();
        assert!(!out
            .iter()
            .any(|o| matches!(o, Output::Event(e) if e.code == EventCode::StateSizeAlarm)));
    }
    assert!(router.state().requests.is_empty());
    assert_eq!(cleared, 1);
    assert!(router.state_size() < size * 2);
}

/// The invariant check that import runs finds every reference count that differs from the
/// references: counts of agents (which the members' references make, counted in runs, plus a
/// label's), of skill groups, missing and extra counts.
#[test]
fn reference_counts_that_differ_from_the_references_are_refused() {
    use tandem_model::config::{Label, LabelTarget, ObjectRef};
    use tandem_model::domain::LabelKind;
    use tandem_model::ids::{AgentId, LabelId};
    let mut cc = contact_center(script_with(NodeKind::Default));
    // A3 is in two skill groups and a label names it: its count adds both kinds of reference.
    cc.labels.push(Label {
        id: LabelId(950),
        routing_client: RC,
        label: "agent-a3".into(),
        kind: LabelKind::Normal,
        target: Some(LabelTarget::Agent(A3)),
    });
    let state = Router::from_contact_center(&cc, T0).unwrap().snapshot();
    assert_eq!(state.reference_counts.get(&ObjectRef::Agent(A3)), Some(&3));
    assert!(import(&export(&state)).is_ok());

    let changed = |change: &dyn Fn(&mut tandem_router::State)| {
        let mut state = state.clone();
        change(&mut state);
        import(&export(&state))
    };
    let refused = |result: Result<tandem_router::State, ImportError>| {
        assert!(
            matches!(result, Err(ImportError::Invariant(ref message)) if message.contains("reference")),
            "{:?}",
            result.err()
        );
    };
    for agent in [A1, A3, A4] {
        let stored = *state
            .reference_counts
            .get(&ObjectRef::Agent(agent))
            .unwrap();
        for wrong in [stored - 1, stored + 1] {
            refused(changed(&|s| {
                s.reference_counts.insert(ObjectRef::Agent(agent), wrong);
            }));
        }
        refused(changed(&|s| {
            s.reference_counts.remove(&ObjectRef::Agent(agent));
        }));
    }
    // Counts of agents nothing refers to, below and above the agents referred to.
    for agent in [AgentId(1), AgentId(2_000), AgentId(u32::MAX)] {
        refused(changed(&|s| {
            s.reference_counts.insert(ObjectRef::Agent(agent), 1);
        }));
    }
    refused(changed(&|s| {
        let stored = *s.reference_counts.get(&ObjectRef::SkillGroup(SG1)).unwrap();
        s.reference_counts
            .insert(ObjectRef::SkillGroup(SG1), stored + 1);
    }));
    refused(changed(&|s| {
        s.reference_counts.remove(&ObjectRef::SkillGroup(SG2));
    }));
}

proptest::proptest! {
    /// A stream damaged anywhere (a byte changed, then cut short or not, fed in pieces of any
    /// size) is refused without a panic, and with the same error however it is cut in pieces.
    #[test]
    fn a_damaged_stream_is_refused_without_a_panic(
        position in 0.0f64..1.0,
        flip in 1u8..=255,
        keep in 0.0f64..1.2,
        piece_bytes in 1usize..5_000,
    ) {
        let bytes = export(busy_harness().router.state());
        let mut damaged = bytes.clone();
        let at = ((bytes.len() as f64 * position) as usize).min(bytes.len() - 1);
        damaged[at] ^= flip;
        damaged.truncate((bytes.len() as f64 * keep) as usize);
        let whole = import(&damaged).map(|_| ());
        proptest::prop_assert!(whole.is_err());
        let mut import = StateImport::new();
        let in_pieces = damaged
            .chunks(piece_bytes)
            .try_for_each(|piece| import.feed(piece))
            .and_then(|()| import.finish().map(|_| ()));
        proptest::prop_assert_eq!(in_pieces, whole);
    }
}
