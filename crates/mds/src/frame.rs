//! The one frame codec of every tandem link: a length, a checksum, and a MessagePack payload.
//!
//! ```text
//! +----------------+----------------------+---------------------------+
//! | length: u32 LE | xxh3-64 of payload LE | payload (MessagePack), length |
//! +----------------+----------------------+---------------------------+
//! ```
//!
//! Reading is two steps, as in mini-redis: `check` says whether a whole frame is buffered (an
//! incomplete frame is an expected condition, not an error), then `decode` verifies the checksum
//! and parses it. A length beyond `FRAME_PAYLOAD_BYTES_MAX` is refused before anything is
//! buffered for it, so a corrupt or hostile length cannot make a reader allocate.
//!
//! MessagePack (rmp-serde, structs as arrays) rather than postcard: the payloads carry
//! configuration changes and route answers whose serde form is internally or adjacently tagged
//! (as their TOML needs), which only a self-describing format can read back.

use serde::{de::DeserializeOwned, Serialize};
use thiserror::Error;
use xxhash_rust::xxh3::xxh3_64;

/// Bytes before the payload: the length (4) and the checksum (8).
pub const FRAME_HEADER_BYTES: usize = 12;
/// The largest payload a frame may carry. An ordered batch is bounded far below this
/// (`ORDERED_BATCH_MESSAGES_MAX` messages of bounded size); state records travel in frames of
/// their own, each far smaller.
pub const FRAME_PAYLOAD_BYTES_MAX: usize = 4 << 20;
/// The largest payload of a frame on the links that carry bulk messages, and only there: a
/// whole contact-center configuration (a logger's answer to a cold-starting side, an export to
/// an administrator or a distributor, a side's gap to its logger; 100,000 agents take about 5.5 MB, a
/// million about 55 MB), and the end of a state transfer with the side's output replay logs
/// (up to `OUTPUT_REPLAY_LOG_MAX` outputs per PG).
pub const BULK_FRAME_PAYLOAD_BYTES_MAX: usize = 256 << 20;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("a frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge { len: usize, max: usize },
    #[error("frame checksum mismatch: the header says {expected:016x}, the payload hashes to {actual:016x}")]
    Checksum { expected: u64, actual: u64 },
    #[error("malformed frame payload: {0}")]
    Malformed(String),
    #[error("{0} bytes left over after the message in a frame")]
    Trailing(usize),
}

/// Appends `message` to `out` as one frame. On error (`TooLarge`) `out` is left as it was.
pub fn encode<T: Serialize>(message: &T, out: &mut Vec<u8>) -> Result<(), FrameError> {
    encode_with_max(message, out, FRAME_PAYLOAD_BYTES_MAX)
}

/// `encode` with a payload bound of `max` bytes.
pub fn encode_with_max<T: Serialize>(
    message: &T,
    out: &mut Vec<u8>,
    max: usize,
) -> Result<(), FrameError> {
    let start = out.len();
    out.extend_from_slice(&[0u8; FRAME_HEADER_BYTES]);
    let mut buffer = std::mem::take(out);
    if let Err(e) = rmp_serde::encode::write(&mut buffer, message) {
        // Writing into a growable vector fails only for types MessagePack cannot express,
        // which the protocol does not use; report it rather than panic.
        buffer.truncate(start);
        *out = buffer;
        return Err(FrameError::Malformed(e.to_string()));
    }
    let len = buffer.len() - start - FRAME_HEADER_BYTES;
    if len > max {
        buffer.truncate(start);
        *out = buffer;
        return Err(FrameError::TooLarge { len, max });
    }
    let checksum = xxh3_64(&buffer[start + FRAME_HEADER_BYTES..]);
    buffer[start..start + 4].copy_from_slice(&(len as u32).to_le_bytes());
    buffer[start + 4..start + FRAME_HEADER_BYTES].copy_from_slice(&checksum.to_le_bytes());
    *out = buffer;
    Ok(())
}

/// The length of the whole frame at the start of `buffer` once all of it is there; `None` while
/// more bytes are needed. A length beyond the limit is an error at once.
pub fn check(buffer: &[u8]) -> Result<Option<usize>, FrameError> {
    check_with_max(buffer, FRAME_PAYLOAD_BYTES_MAX)
}

/// `check` with a payload bound of `max` bytes.
pub fn check_with_max(buffer: &[u8], max: usize) -> Result<Option<usize>, FrameError> {
    let Some(header) = buffer.get(..FRAME_HEADER_BYTES) else {
        return Ok(None);
    };
    let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) as usize;
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    let total = FRAME_HEADER_BYTES + len;
    Ok((buffer.len() >= total).then_some(total))
}

/// Decodes the frame at the start of `buffer`: the message and the bytes it took, or `None`
/// while the frame is incomplete.
pub fn decode<T: DeserializeOwned>(buffer: &[u8]) -> Result<Option<(T, usize)>, FrameError> {
    decode_with_max(buffer, FRAME_PAYLOAD_BYTES_MAX)
}

/// `decode` with a payload bound of `max` bytes.
pub fn decode_with_max<T: DeserializeOwned>(
    buffer: &[u8],
    max: usize,
) -> Result<Option<(T, usize)>, FrameError> {
    let Some(total) = check_with_max(buffer, max)? else {
        return Ok(None);
    };
    let expected = u64::from_le_bytes(buffer[4..FRAME_HEADER_BYTES].try_into().expect("8 bytes"));
    let payload = &buffer[FRAME_HEADER_BYTES..total];
    let actual = xxh3_64(payload);
    if actual != expected {
        return Err(FrameError::Checksum { expected, actual });
    }
    let mut cursor = std::io::Cursor::new(payload);
    let message = rmp_serde::decode::from_read(&mut cursor)
        .map_err(|e| FrameError::Malformed(e.to_string()))?;
    let rest = payload.len() - cursor.position() as usize;
    if rest != 0 {
        return Err(FrameError::Trailing(rest));
    }
    Ok(Some((message, total)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    enum Sample {
        Small(u64),
        Text(String),
        Bytes(Vec<u8>),
    }

    #[test]
    fn frames_round_trip_back_to_back_and_report_their_length() {
        let mut buffer = Vec::new();
        encode(&Sample::Small(7), &mut buffer).unwrap();
        encode(&Sample::Text("Paired Enabled".into()), &mut buffer).unwrap();
        let (first, used): (Sample, usize) = decode(&buffer).unwrap().unwrap();
        assert_eq!(first, Sample::Small(7));
        let (second, used_second): (Sample, usize) = decode(&buffer[used..]).unwrap().unwrap();
        assert_eq!(second, Sample::Text("Paired Enabled".into()));
        assert_eq!(used + used_second, buffer.len());
    }

    #[test]
    fn a_configuration_sized_frame_passes_only_where_its_bound_is_raised() {
        let big = Sample::Bytes(vec![7; FRAME_PAYLOAD_BYTES_MAX + 1]);
        let mut buffer = Vec::new();
        assert!(matches!(
            encode(&big, &mut buffer),
            Err(FrameError::TooLarge { .. })
        ));
        assert!(buffer.is_empty());
        encode_with_max(&big, &mut buffer, BULK_FRAME_PAYLOAD_BYTES_MAX).unwrap();
        assert!(matches!(
            decode::<Sample>(&buffer),
            Err(FrameError::TooLarge { .. })
        ));
        let (back, used): (Sample, usize) = decode_with_max(&buffer, BULK_FRAME_PAYLOAD_BYTES_MAX)
            .unwrap()
            .unwrap();
        assert_eq!(back, big);
        assert_eq!(used, buffer.len());
    }

    #[test]
    fn an_incomplete_frame_asks_for_more_bytes_at_every_cut() {
        let mut buffer = Vec::new();
        encode(&Sample::Text("x".repeat(100)), &mut buffer).unwrap();
        for cut in 0..buffer.len() {
            assert_eq!(
                decode::<Sample>(&buffer[..cut]).unwrap(),
                None,
                "cut at {cut}"
            );
        }
        assert!(decode::<Sample>(&buffer).unwrap().is_some());
    }

    #[test]
    fn a_flipped_bit_anywhere_is_a_checksum_or_length_error() {
        let mut buffer = Vec::new();
        encode(&Sample::Bytes(vec![1, 2, 3, 4, 5]), &mut buffer).unwrap();
        for byte in 4..buffer.len() {
            let mut corrupt = buffer.clone();
            corrupt[byte] ^= 0x10;
            assert!(
                matches!(decode::<Sample>(&corrupt), Err(FrameError::Checksum { .. })),
                "byte {byte}"
            );
        }
    }

    #[test]
    fn an_oversized_length_is_refused_before_its_bytes_arrive() {
        let mut header = vec![0u8; FRAME_HEADER_BYTES];
        header[..4].copy_from_slice(&((FRAME_PAYLOAD_BYTES_MAX + 1) as u32).to_le_bytes());
        assert_eq!(
            check(&header),
            Err(FrameError::TooLarge {
                len: FRAME_PAYLOAD_BYTES_MAX + 1,
                max: FRAME_PAYLOAD_BYTES_MAX
            })
        );
    }

    #[test]
    fn an_oversized_message_is_not_written() {
        let mut buffer = vec![9u8];
        let error = encode(
            &Sample::Bytes(vec![0; FRAME_PAYLOAD_BYTES_MAX]),
            &mut buffer,
        );
        assert!(matches!(error, Err(FrameError::TooLarge { .. })));
        assert_eq!(buffer, vec![9u8]);
    }

    #[test]
    fn trailing_bytes_inside_a_frame_are_refused() {
        let mut payload = rmp_serde::to_vec(&Sample::Small(1)).unwrap();
        payload.push(0);
        let mut frame = (payload.len() as u32).to_le_bytes().to_vec();
        frame.extend_from_slice(&xxh3_64(&payload).to_le_bytes());
        frame.extend_from_slice(&payload);
        assert_eq!(decode::<Sample>(&frame), Err(FrameError::Trailing(1)));
    }

    /// Route answers name their target in an adjacently tagged form (as the configuration TOML
    /// writes it): the frame format must carry it.
    #[test]
    fn tagged_model_types_cross_a_frame() {
        use tandem_model::config::LabelTarget;
        use tandem_model::ids::AgentId;
        use tandem_model::output::{AnswerKind, RouteAnswer};
        let answer = RouteAnswer {
            kind: AnswerKind::Label,
            label: "8001".into(),
            label_id: None,
            target: Some(LabelTarget::Agent(AgentId(7))),
        };
        let mut bytes = Vec::new();
        encode(&answer, &mut bytes).unwrap();
        let (back, used) = decode::<RouteAnswer>(&bytes).unwrap().unwrap();
        assert_eq!(back, answer);
        assert_eq!(used, bytes.len());
    }

    proptest! {
        /// Arbitrary bytes never panic the decoder: it answers with a message, a need for more
        /// bytes, or an error.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode::<Sample>(&bytes);
        }
    }
}
