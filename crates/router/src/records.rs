//! State records: the router's whole state as a versioned stream of framed, checksummed records.
//!
//! ```text
//! record  = payload_len: u32 | kind: u8 | payload | checksum: u64 (xxh3-64 of kind and payload)
//! stream  = Header, Scalars, TableChunk*, End
//! Header  = magic "TNDMRTR1" | format version: u16 | last sequence number: u64
//! Chunk   = table id: u16 | row count: u32 | (key, value) * row count   (at most ROWS_PER_RECORD)
//! End     = total rows: u64
//! ```
//!
//! Tables appear in a fixed order, rows in key order, so the stream is canonical: equal states
//! give equal bytes, and the digest (xxh3-128 of the stream) compares states. Because every row's
//! length is known, [`state_size`] is exact without encoding anything.
//!
//! Import checks every frame, the order of tables and keys, and then every relationship between
//! objects ([`crate::views::check_invariants`]); any failure leaves nothing behind.

use crate::state::{Scalars, State};
use crate::table::RowTable;
use tandem_model::codec::{DecodeError, Encode, Reader};
use thiserror::Error;
use xxhash_rust::xxh3::{xxh3_64, Xxh3};

/// The version of the state-record format. A receiver refuses any other version.
pub const STATE_FORMAT_VERSION: u16 = 2;
pub const MAGIC: &[u8; 8] = b"TNDMRTR1";
/// The most rows in one table chunk record.
pub const ROWS_PER_RECORD: usize = 512;
/// The largest payload a record may declare; a larger length is corrupt.
pub const RECORD_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Length prefix, kind byte and checksum.
pub const RECORD_OVERHEAD_BYTES: u64 = 4 + 1 + 8;
const CHUNK_HEADER_BYTES: u64 = 2 + 4;
const HEADER_PAYLOAD_BYTES: u64 = 8 + 2 + 8;
const END_PAYLOAD_BYTES: u64 = 8;

const KIND_HEADER: u8 = 1;
const KIND_SCALARS: u8 = 2;
const KIND_CHUNK: u8 = 3;
const KIND_END: u8 = 4;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ImportError {
    #[error("record {index}: {source}")]
    Decode { index: usize, source: DecodeError },
    #[error("record {index}: checksum mismatch")]
    Checksum { index: usize },
    #[error("record {index}: payload of {len} bytes exceeds the limit of {RECORD_BYTES_MAX}")]
    RecordTooLarge { index: usize, len: usize },
    #[error("not a router state stream (bad magic)")]
    BadMagic,
    #[error("state format version {found} is not supported (this build reads version {expected})")]
    Version { found: u16, expected: u16 },
    #[error("record {index}: unexpected record kind {kind}")]
    UnexpectedKind { index: usize, kind: u8 },
    #[error("record {index}: unknown table {table}")]
    UnknownTable { index: usize, table: u16 },
    #[error("table {table}: tables out of order or repeated")]
    TableOrder { table: u16 },
    #[error("table {table}: keys out of order at row {row}")]
    KeyOrder { table: u16, row: usize },
    #[error("the stream ended before its End record")]
    Truncated,
    #[error("{trailing} bytes after the End record")]
    Trailing { trailing: usize },
    #[error("End record counts {declared} rows, the stream held {found}")]
    RowCount { declared: u64, found: u64 },
    #[error("relationship broken: {0}")]
    Invariant(String),
}

/// Calls `$m!` with every table of [`State`]: its id in the stream and its field name. The order
/// is the stream's order; a new table gets the next id at the end.
macro_rules! for_each_table {
    ($m:ident, $($args:tt)*) => {
        $m!($($args)*;
            1 pgs, 2 peripherals, 3 routing_clients, 4 agents, 5 skill_groups, 6 services,
            7 service_members, 8 call_types, 9 dialed_numbers, 10 dialed_number_index, 11 scripts,
            12 call_type_maps, 13 labels, 14 label_index, 15 reference_counts, 16 agent_rt,
            17 agent_skill_group_rt, 18 skill_group_rt, 19 call_type_rt, 20 service_rt,
            21 peripheral_rt, 23 calls, 24 router_calls, 25 requests,
            27 timers, 28 node_state
        )
    };
}

fn table_size(table: &impl RowTable) -> u64 {
    let chunks = table.row_count().div_ceil(ROWS_PER_RECORD) as u64;
    table.row_bytes() + chunks * (RECORD_OVERHEAD_BYTES + CHUNK_HEADER_BYTES)
}

/// Whether a table's size changes only with the configuration: the configuration tables, and
/// the real-time tables with one fixed-width row per configured object.
const fn sized_by_configuration(table: u16) -> bool {
    matches!(table, 1..=17 | 19..=21)
}

/// The exact length of [`export`]'s output, computed from the tables' byte counts in O(tables).
pub fn state_size(state: &State) -> u64 {
    configuration_size(state) + live_size(state)
}

/// The part of [`state_size`] that changes only when the configuration does: the framing, the
/// scalars (fixed width apart from the settings) and the tables [`sized_by_configuration`]. The
/// router keeps it per configuration version, so the size check on every input sums only the
/// live tables.
pub fn configuration_size(state: &State) -> u64 {
    let mut size = RECORD_OVERHEAD_BYTES + HEADER_PAYLOAD_BYTES;
    size += RECORD_OVERHEAD_BYTES + state.scalars.encoded_len() as u64;
    size += RECORD_OVERHEAD_BYTES + END_PAYLOAD_BYTES;
    macro_rules! add_tables {
        ($state:ident, $size:ident; $($id:literal $field:ident),*) => {
            $( if sized_by_configuration($id) { $size += table_size(&$state.$field); } )*
        };
    }
    for_each_table!(add_tables, state, size);
    size
}

/// The part of [`state_size`] that events change: the skill group rows, calls, routing and timers.
pub fn live_size(state: &State) -> u64 {
    let mut size = 0;
    macro_rules! add_tables {
        ($state:ident, $size:ident; $($id:literal $field:ident),*) => {
            $( if !sized_by_configuration($id) { $size += table_size(&$state.$field); } )*
        };
    }
    for_each_table!(add_tables, state, size);
    size
}

/// Each table's name, row count and exact share of the state size (rows plus framing), in
/// stream order: what makes the state as big as it is.
pub fn table_sizes(state: &State) -> Vec<(&'static str, u64, u64)> {
    let mut sizes = Vec::new();
    macro_rules! collect_sizes {
        ($state:ident, $sizes:ident; $($id:literal $field:ident),*) => {
            $( $sizes.push((stringify!($field), $state.$field.len() as u64, table_size(&$state.$field))); )*
        };
    }
    for_each_table!(collect_sizes, state, sizes);
    sizes
}

/// Writes records into `buffer`. With a sink, each finished record is handed to it and the
/// buffer is reused; without one, the records accumulate in the buffer, which is the export.
struct RecordWriter<F: FnMut(&[u8])> {
    buffer: Vec<u8>,
    /// Where the record being written starts in `buffer`.
    start: usize,
    sink: Option<F>,
}

impl<F: FnMut(&[u8])> RecordWriter<F> {
    /// Starts a record: reserves the length prefix and writes the kind.
    fn begin(&mut self, kind: u8) {
        if self.sink.is_some() {
            self.buffer.clear();
        }
        self.start = self.buffer.len();
        self.buffer.extend_from_slice(&[0, 0, 0, 0, kind]);
    }

    fn finish(&mut self) {
        let record = &mut self.buffer[self.start..];
        let payload_len = (record.len() - 5) as u32;
        record[..4].copy_from_slice(&payload_len.to_le_bytes());
        let checksum = xxh3_64(&record[4..]);
        self.buffer.extend_from_slice(&checksum.to_le_bytes());
        if let Some(sink) = &mut self.sink {
            sink(&self.buffer);
        }
    }

    fn table(&mut self, id: u16, table: &impl RowTable) -> u64 {
        let mut rows = table.rows().peekable();
        while rows.peek().is_some() {
            self.begin(KIND_CHUNK);
            id.encode(&mut self.buffer);
            let count_at = self.buffer.len();
            0u32.encode(&mut self.buffer);
            let mut count = 0u32;
            for (key, value) in rows.by_ref().take(ROWS_PER_RECORD) {
                key.encode(&mut self.buffer);
                value.encode(&mut self.buffer);
                count += 1;
            }
            self.buffer[count_at..count_at + 4].copy_from_slice(&count.to_le_bytes());
            self.finish();
        }
        table.row_count() as u64
    }

    fn state(mut self, state: &State) -> Vec<u8> {
        self.begin(KIND_HEADER);
        self.buffer.extend_from_slice(MAGIC);
        STATE_FORMAT_VERSION.encode(&mut self.buffer);
        state.scalars.last_seq.encode(&mut self.buffer);
        self.finish();
        self.begin(KIND_SCALARS);
        state.scalars.encode(&mut self.buffer);
        self.finish();
        let mut total_rows = 0u64;
        macro_rules! write_tables {
            ($state:ident, $writer:ident, $total:ident; $($id:literal $field:ident),*) => {
                $( $total += $writer.table($id, &$state.$field); )*
            };
        }
        for_each_table!(write_tables, state, self, total_rows);
        self.begin(KIND_END);
        total_rows.encode(&mut self.buffer);
        self.finish();
        self.buffer
    }
}

/// Streams the state's records to `sink`, one record per call: how a state transfer sends a
/// snapshot, without ever holding the whole stream.
pub fn export_to(state: &State, sink: &mut impl FnMut(&[u8])) {
    RecordWriter {
        buffer: Vec::with_capacity(1 << 16),
        start: 0,
        sink: Some(sink),
    }
    .state(state);
}

/// The whole state as one byte vector, written in place.
pub fn export(state: &State) -> Vec<u8> {
    let mut out = Vec::new();
    export_into(state, &mut out);
    out
}

/// The whole state written in place into `out`, replacing its contents. A sender that exports
/// again and again reuses one buffer, whose memory the system has already mapped.
pub fn export_into(state: &State, out: &mut Vec<u8>) {
    let size = state_size(state) as usize;
    let mut buffer = std::mem::take(out);
    buffer.clear();
    buffer.reserve(size);
    *out = RecordWriter::<fn(&[u8])> {
        buffer,
        start: 0,
        sink: None,
    }
    .state(state);
    debug_assert_eq!(out.len(), size);
}

/// xxh3-128 of the export stream, computed without holding the stream in memory.
pub fn digest(state: &State) -> u128 {
    let mut hasher = Xxh3::new();
    export_to(state, &mut |record| hasher.update(record));
    hasher.digest128()
}

/// Splits a stream into its records, checking lengths and checksums.
pub struct RecordReader<'a> {
    bytes: &'a [u8],
    offset: usize,
    index: usize,
}

impl<'a> RecordReader<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        RecordReader {
            bytes,
            offset: 0,
            index: 0,
        }
    }

    /// The next record's kind and payload; `None` at the end of the bytes.
    pub fn next_record(&mut self) -> Result<Option<(u8, &'a [u8])>, ImportError> {
        if self.offset == self.bytes.len() {
            return Ok(None);
        }
        let index = self.index;
        let mut reader = Reader::new(&self.bytes[self.offset..]);
        let decode = |source| ImportError::Decode { index, source };
        let len = u32::decode(&mut reader).map_err(decode)? as usize;
        if len > RECORD_BYTES_MAX {
            return Err(ImportError::RecordTooLarge { index, len });
        }
        let body = reader.take(1 + len).map_err(decode)?;
        let checksum = u64::decode(&mut reader).map_err(decode)?;
        if xxh3_64(body) != checksum {
            return Err(ImportError::Checksum { index });
        }
        self.offset += 4 + 1 + len + 8;
        self.index += 1;
        Ok(Some((body[0], &body[1..])))
    }

    pub fn index(&self) -> usize {
        self.index
    }
}

fn decode_rows<K: Ord + Clone + Encode, V: Clone + Encode>(
    payload_rows: &mut Reader<'_>,
    count: u32,
    rows: &mut Vec<(K, V)>,
) -> Result<(), DecodeError> {
    for _ in 0..count {
        let key = K::decode(payload_rows)?;
        let value = V::decode(payload_rows)?;
        rows.push((key, value));
    }
    Ok(())
}

/// Rebuilds a state from its records, checking every frame, the order of tables and keys and
/// each row's encoding; [`import`] then checks the relationships.
fn decode_state(bytes: &[u8]) -> Result<State, ImportError> {
    let mut records = RecordReader::new(bytes);
    let decode_at = |index: usize| move |source| ImportError::Decode { index, source };

    let (kind, payload) = records.next_record()?.ok_or(ImportError::Truncated)?;
    if kind != KIND_HEADER {
        return Err(ImportError::UnexpectedKind { index: 0, kind });
    }
    let mut reader = Reader::new(payload);
    if reader.take(8).map_err(decode_at(0))? != MAGIC {
        return Err(ImportError::BadMagic);
    }
    let version = u16::decode(&mut reader).map_err(decode_at(0))?;
    if version != STATE_FORMAT_VERSION {
        return Err(ImportError::Version {
            found: version,
            expected: STATE_FORMAT_VERSION,
        });
    }
    let _last_seq = u64::decode(&mut reader).map_err(decode_at(0))?;
    reader.finish().map_err(decode_at(0))?;

    let (kind, payload) = records.next_record()?.ok_or(ImportError::Truncated)?;
    if kind != KIND_SCALARS {
        return Err(ImportError::UnexpectedKind { index: 1, kind });
    }
    let scalars = Scalars::from_bytes(payload).map_err(decode_at(1))?;

    // First pass: check every frame and the order of the tables, and note each table's chunks.
    let mut chunks: Vec<Chunk<'_>> = Vec::new();
    let mut last_table = 0u16;
    let mut total_rows = 0u64;
    loop {
        let index = records.index();
        let (kind, payload) = records.next_record()?.ok_or(ImportError::Truncated)?;
        match kind {
            KIND_CHUNK => {
                let mut reader = Reader::new(payload);
                let table = u16::decode(&mut reader).map_err(decode_at(index))?;
                let count = u32::decode(&mut reader).map_err(decode_at(index))?;
                if table < last_table {
                    return Err(ImportError::TableOrder { table });
                }
                if !is_table(table) {
                    return Err(ImportError::UnknownTable { index, table });
                }
                if count as usize > ROWS_PER_RECORD || count == 0 {
                    return Err(ImportError::Decode {
                        index,
                        source: DecodeError::Invalid("a chunk holds 1..=ROWS_PER_RECORD rows"),
                    });
                }
                last_table = table;
                total_rows += count as u64;
                chunks.push(Chunk {
                    table,
                    index,
                    count,
                    rows: reader,
                });
            }
            KIND_END => {
                let declared = u64::from_bytes(payload).map_err(decode_at(index))?;
                if declared != total_rows {
                    return Err(ImportError::RowCount {
                        declared,
                        found: total_rows,
                    });
                }
                break;
            }
            kind => return Err(ImportError::UnexpectedKind { index, kind }),
        }
    }
    if records.offset != bytes.len() {
        return Err(ImportError::Trailing {
            trailing: bytes.len() - records.offset,
        });
    }

    // Second pass: decode and build the tables, split between this thread and one other (for a
    // large state). The split is fixed, so the result (and the error reported first) never
    // depends on timing.
    let build = |state: &mut State, background: bool| -> Result<(), ImportError> {
        macro_rules! build_tables {
            ($state:ident, $chunks:ident, $background:ident; $($id:literal $field:ident),*) => {
                $(
                    if built_in_background($id) == $background {
                        $state.$field = build_table(table_chunks(&$chunks, $id), $id)?;
                    }
                )*
            };
        }
        for_each_table!(build_tables, state, chunks, background);
        Ok(())
    };
    let mut state = State {
        scalars,
        ..State::default()
    };
    let (other, own) = crate::join(
        bytes.len() as u64 >= crate::PARALLEL_STATE_BYTES_MIN,
        || {
            let mut other = State::default();
            build(&mut other, true).map(|()| other)
        },
        || build(&mut state, false),
    );
    own?;
    let mut other = other?;
    macro_rules! take_background_tables {
        ($state:ident, $other:ident; $($id:literal $field:ident),*) => {
            $(
                if built_in_background($id) {
                    $state.$field = std::mem::take(&mut $other.$field);
                }
            )*
        };
    }
    for_each_table!(take_background_tables, state, other);
    Ok(state)
}

/// One table chunk record: its table, its index in the stream, and its undecoded rows.
struct Chunk<'a> {
    table: u16,
    index: usize,
    count: u32,
    rows: Reader<'a>,
}

fn is_table(table: u16) -> bool {
    macro_rules! known {
        ($table:ident; $($id:literal $field:ident),*) => {
            matches!($table, $($id)|*)
        };
    }
    for_each_table!(known, table)
}

/// The tables a second thread decodes on import: the agents, their member rows, the call type
/// and service rows and the calls, about half of the work for a large contact center.
const fn built_in_background(table: u16) -> bool {
    matches!(table, 4 | 17 | 19 | 20 | 23)
}

/// The chunks of one table (tables are contiguous in the stream).
fn table_chunks<'c, 'a>(chunks: &'c [Chunk<'a>], table: u16) -> &'c [Chunk<'a>] {
    let start = chunks.partition_point(|c| c.table < table);
    let end = chunks.partition_point(|c| c.table <= table);
    &chunks[start..end]
}

/// The fewest bytes any row encodes to: every key is at least one 4-byte id.
const ROW_BYTES_MIN: usize = 4;

fn build_table<T: RowTable>(chunks: &[Chunk<'_>], table: u16) -> Result<T, ImportError> {
    let mut rows = Vec::new();
    for chunk in chunks {
        let mut reader = chunk.rows.clone();
        // Room for the rows the chunk claims, but never more than its bytes can hold: a count
        // is only a claim until the rows decode.
        rows.reserve((chunk.count as usize).min(reader.remaining() / ROW_BYTES_MIN));
        let decode = |source| ImportError::Decode {
            index: chunk.index,
            source,
        };
        decode_rows(&mut reader, chunk.count, &mut rows).map_err(decode)?;
        reader.finish().map_err(decode)?;
    }
    T::from_sorted_rows(rows).map_err(|row| ImportError::KeyOrder { table, row })
}

/// Rebuilds a state from its records. Nothing is kept unless everything checks out.
pub fn import(bytes: &[u8]) -> Result<State, ImportError> {
    let state = decode_state(bytes)?;
    crate::views::check_invariants(&state).map_err(ImportError::Invariant)?;
    Ok(state)
}

/// [`import`], and the rebuilt state's [`digest`]: the invariant check and the digest both
/// only read the state, so for a large state they run on two threads at once.
pub fn import_with_digest(bytes: &[u8]) -> Result<(State, u128), ImportError> {
    let state = decode_state(bytes)?;
    let (checked, digest) = crate::join(
        bytes.len() as u64 >= crate::PARALLEL_STATE_BYTES_MIN,
        || crate::views::check_invariants(&state).map_err(ImportError::Invariant),
        || digest(&state),
    );
    checked?;
    Ok((state, digest))
}
