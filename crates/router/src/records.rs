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
//! Import ([`StateImport`]) reads the stream in pieces as they arrive and checks each record as
//! it completes (its checksum, the order of tables and keys, each row's encoding, and that the
//! stream is the canonical one, so that its hash is the rebuilt state's digest), decoding the
//! rows straight into the tables; then it checks every relationship between objects
//! ([`crate::views::check_invariants`]). Any failure leaves nothing behind.

use crate::state::{Scalars, State};
use crate::table::{OutOfOrder, RowTable, TableBuilder};
use tandem_model::codec::{DecodeError, Encode, Reader};
use thiserror::Error;
use xxhash_rust::xxh3::{xxh3_64, Xxh3};

/// The version of the state-record format. A receiver refuses any other version.
pub const STATE_FORMAT_VERSION: u16 = 4;
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

/// Writes records into `buffer`. With a sink, the buffer is handed to it whenever it holds at
/// least `flush_bytes` of whole records, and cleared afterwards; without one, the records
/// accumulate in the buffer, which is the export.
struct RecordWriter<F: FnMut(&mut Vec<u8>)> {
    buffer: Vec<u8>,
    /// Where the record being written starts in `buffer`.
    start: usize,
    flush_bytes: usize,
    sink: Option<F>,
}

impl<F: FnMut(&mut Vec<u8>)> RecordWriter<F> {
    /// Starts a record: reserves the length prefix and writes the kind.
    fn begin(&mut self, kind: u8) {
        self.start = self.buffer.len();
        self.buffer.extend_from_slice(&[0, 0, 0, 0, kind]);
    }

    fn finish(&mut self) {
        let record = &mut self.buffer[self.start..];
        let payload_len = (record.len() - 5) as u32;
        record[..4].copy_from_slice(&payload_len.to_le_bytes());
        let checksum = xxh3_64(&record[4..]);
        self.buffer.extend_from_slice(&checksum.to_le_bytes());
        if self.buffer.len() >= self.flush_bytes {
            self.flush();
        }
    }

    fn flush(&mut self) {
        if let Some(sink) = &mut self.sink {
            if !self.buffer.is_empty() {
                sink(&mut self.buffer);
                self.buffer.clear();
            }
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
        self.flush();
        self.buffer
    }
}

/// The buffer a streamed export writes its records into before it hands them on.
const STREAM_BUFFER_BYTES: usize = 1 << 16;

/// Streams the state's records to `sink`, one record per call: how the digest reads a
/// snapshot, without ever holding the whole stream.
pub fn export_to(state: &State, sink: &mut impl FnMut(&[u8])) {
    RecordWriter {
        buffer: Vec::with_capacity(STREAM_BUFFER_BYTES),
        start: 0,
        flush_bytes: 0,
        sink: Some(|record: &mut Vec<u8>| sink(record)),
    }
    .state(state);
}

/// Streams the state's records to `sink` in pieces of whole records, each at least
/// `piece_bytes` long but the last: how a state transfer sends a snapshot. The sink may take
/// the piece's buffer and leave another in its place (`std::mem::replace`), so the records are
/// written once, straight into the buffers that go to the socket; whatever buffer is left is
/// cleared and written on.
pub fn export_pieces(state: &State, piece_bytes: usize, sink: &mut impl FnMut(&mut Vec<u8>)) {
    RecordWriter {
        buffer: Vec::with_capacity(piece_bytes.clamp(STREAM_BUFFER_BYTES, RECORD_BYTES_MAX)),
        start: 0,
        flush_bytes: piece_bytes,
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
    *out = RecordWriter::<fn(&mut Vec<u8>)> {
        buffer,
        start: 0,
        flush_bytes: usize::MAX,
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

/// The bytes of a record's length prefix.
const LENGTH_BYTES: usize = 4;
/// The bytes of a record's checksum.
const CHECKSUM_BYTES: usize = 8;

/// The whole length of the record that `bytes` starts with, once its length prefix is there;
/// `None` while fewer bytes than the prefix have arrived. A length beyond the limit is an error
/// at once, before any byte is set aside for it.
fn record_len(bytes: &[u8], index: usize) -> Result<Option<usize>, ImportError> {
    let Some(prefix) = bytes.first_chunk::<LENGTH_BYTES>() else {
        return Ok(None);
    };
    let len = u32::from_le_bytes(*prefix) as usize;
    if len > RECORD_BYTES_MAX {
        return Err(ImportError::RecordTooLarge { index, len });
    }
    Ok(Some(LENGTH_BYTES + 1 + len + CHECKSUM_BYTES))
}

/// Where a streamed import stands: which record it expects next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    Header,
    Scalars,
    Tables,
    Ended,
}

/// Why the rows of one chunk do not decode.
enum RowsError {
    Decode(DecodeError),
    /// The row at this index in its table is not above the row before it.
    OutOfOrder {
        row: usize,
    },
}

/// One table being rebuilt, whatever its kind: decodes the rows of its chunks straight into
/// the table's builder, and puts the finished table in its place in the state.
trait TableImport: Send {
    fn read_rows(&mut self, rows: &mut Reader<'_>, count: u32) -> Result<(), RowsError>;
    fn place(self: Box<Self>, state: &mut State);
}

struct TableImportOf<T: RowTable> {
    builder: T::Builder,
    /// The table's field in the state.
    slot: fn(&mut State) -> &mut T,
}

impl<T: RowTable> TableImport for TableImportOf<T>
where
    T::Builder: Send,
{
    #[inline]
    fn read_rows(&mut self, rows: &mut Reader<'_>, count: u32) -> Result<(), RowsError> {
        for _ in 0..count {
            let key = T::Key::decode(rows).map_err(RowsError::Decode)?;
            let value = T::Value::decode(rows).map_err(RowsError::Decode)?;
            let row = self.builder.len();
            self.builder
                .push(key, value)
                .map_err(|OutOfOrder| RowsError::OutOfOrder { row })?;
        }
        Ok(())
    }

    fn place(self: Box<Self>, state: &mut State) {
        *(self.slot)(state) = self.builder.finish();
    }
}

fn importing<T: RowTable + 'static>(slot: fn(&mut State) -> &mut T) -> Box<dyn TableImport>
where
    T::Builder: Send,
{
    Box::new(TableImportOf {
        builder: T::Builder::default(),
        slot,
    })
}

/// The import of table `table`, or `None` for an id no table has.
fn table_import(table: u16) -> Option<Box<dyn TableImport>> {
    macro_rules! start {
        ($table:ident; $($id:literal $field:ident),*) => {
            match $table {
                $( $id => Some(importing(|state: &mut State| &mut state.$field)), )*
                _ => None,
            }
        };
    }
    for_each_table!(start, table)
}

/// A state rebuilt from its records as they arrive, in pieces of any size: how a state transfer
/// receives, decoding each record while the next ones are still on the way, so that no copy of
/// the whole stream is ever held. [`StateImport::finish`] then checks every relationship
/// between objects; any failure leaves nothing behind.
///
/// Every record is checked as it completes: its length, its checksum, the order of tables and
/// keys and each row's encoding. Only the one stream that [`export`] writes for the state it
/// decodes to is accepted (each table in chunks of [`ROWS_PER_RECORD`] rows but its last, the
/// header's sequence number equal to the scalars'; the row codec is canonical), so the xxh3-128
/// of the bytes read is the rebuilt state's [`digest`], computed without exporting it again.
///
/// The result and the error reported depend only on the bytes, never on how they were cut:
/// the error is the first one in stream order.
pub struct StateImport {
    stage: Stage,
    /// The start of a record that a piece cut off, completed from the next pieces; at most one
    /// record of at most [`RECORD_BYTES_MAX`] bytes.
    partial: Vec<u8>,
    /// The xxh3-128 of the records read so far.
    hasher: Xxh3,
    /// The index of the next record in the stream.
    index: usize,
    /// The sequence number in the header, which the scalars must repeat.
    header_seq: u64,
    state: State,
    /// The table being rebuilt: its id and its import.
    table: Option<(u16, Box<dyn TableImport>)>,
    /// Whether the last chunk held [`ROWS_PER_RECORD`] rows: only a table's last chunk holds
    /// fewer.
    last_chunk_full: bool,
    /// Rows read in all tables.
    rows: u64,
    /// Bytes after the End record.
    trailing: usize,
}

impl Default for StateImport {
    fn default() -> Self {
        StateImport::new()
    }
}

impl StateImport {
    pub fn new() -> StateImport {
        StateImport {
            stage: Stage::Header,
            partial: Vec::new(),
            hasher: Xxh3::new(),
            index: 0,
            header_seq: 0,
            state: State::default(),
            table: None,
            last_chunk_full: false,
            rows: 0,
            trailing: 0,
        }
    }

    /// Reads the next piece of the stream: every record it completes is checked and decoded
    /// into the state. After an error the import is spoilt: feed it nothing more.
    pub fn feed(&mut self, mut bytes: &[u8]) -> Result<(), ImportError> {
        while !bytes.is_empty() {
            if self.stage == Stage::Ended {
                self.trailing += bytes.len();
                return Ok(());
            }
            if self.partial.is_empty() {
                // The common case: whole records in the piece are read where they lie.
                match record_len(bytes, self.index)? {
                    Some(len) if len <= bytes.len() => {
                        let (record, rest) = bytes.split_at(len);
                        self.read_record(record)?;
                        bytes = rest;
                    }
                    len => {
                        self.partial.reserve(len.unwrap_or(LENGTH_BYTES));
                        self.partial.extend_from_slice(bytes);
                        return Ok(());
                    }
                }
            } else {
                // Complete the record begun in an earlier piece: first its length, then the rest.
                let wanted = record_len(&self.partial, self.index)?.unwrap_or(LENGTH_BYTES);
                let taken = (wanted - self.partial.len()).min(bytes.len());
                self.partial.reserve(wanted - self.partial.len());
                self.partial.extend_from_slice(&bytes[..taken]);
                bytes = &bytes[taken..];
                if record_len(&self.partial, self.index)? == Some(self.partial.len()) {
                    let record = std::mem::take(&mut self.partial);
                    self.read_record(&record)?;
                    // Keep the buffer for the next record cut in two.
                    self.partial = record;
                    self.partial.clear();
                }
            }
        }
        Ok(())
    }

    /// Checks and decodes one whole record.
    fn read_record(&mut self, record: &[u8]) -> Result<(), ImportError> {
        let index = self.index;
        let (body, checksum) = record[LENGTH_BYTES..].split_at(record.len() - LENGTH_BYTES - 8);
        let checksum = u64::from_le_bytes(checksum.try_into().expect("8 bytes"));
        if xxh3_64(body) != checksum {
            return Err(ImportError::Checksum { index });
        }
        self.hasher.update(record);
        self.index += 1;
        let (kind, payload) = (body[0], &body[1..]);
        let decode = |source| ImportError::Decode { index, source };
        match (self.stage, kind) {
            (Stage::Header, KIND_HEADER) => {
                let mut reader = Reader::new(payload);
                if reader.take(8).map_err(decode)? != MAGIC {
                    return Err(ImportError::BadMagic);
                }
                let version = u16::decode(&mut reader).map_err(decode)?;
                if version != STATE_FORMAT_VERSION {
                    return Err(ImportError::Version {
                        found: version,
                        expected: STATE_FORMAT_VERSION,
                    });
                }
                self.header_seq = u64::decode(&mut reader).map_err(decode)?;
                reader.finish().map_err(decode)?;
                self.stage = Stage::Scalars;
            }
            (Stage::Scalars, KIND_SCALARS) => {
                let scalars = Scalars::from_bytes(payload).map_err(decode)?;
                if scalars.last_seq != self.header_seq {
                    return Err(decode(DecodeError::Invalid(
                        "the header's sequence number differs from the scalars'",
                    )));
                }
                self.state.scalars = scalars;
                self.stage = Stage::Tables;
            }
            (Stage::Tables, KIND_CHUNK) => self.read_chunk(index, payload)?,
            (Stage::Tables, KIND_END) => {
                let declared = u64::from_bytes(payload).map_err(decode)?;
                if declared != self.rows {
                    return Err(ImportError::RowCount {
                        declared,
                        found: self.rows,
                    });
                }
                self.end_table();
                self.stage = Stage::Ended;
            }
            (_, kind) => return Err(ImportError::UnexpectedKind { index, kind }),
        }
        Ok(())
    }

    fn read_chunk(&mut self, index: usize, payload: &[u8]) -> Result<(), ImportError> {
        let decode = |source| ImportError::Decode { index, source };
        let mut reader = Reader::new(payload);
        let table = u16::decode(&mut reader).map_err(decode)?;
        let count = u32::decode(&mut reader).map_err(decode)?;
        let current = self.table.as_ref().map(|(current, _)| *current);
        if current.is_some_and(|current| table < current) {
            return Err(ImportError::TableOrder { table });
        }
        if count as usize > ROWS_PER_RECORD || count == 0 {
            if !is_table(table) {
                return Err(ImportError::UnknownTable { index, table });
            }
            return Err(decode(DecodeError::Invalid(
                "a chunk holds 1..=ROWS_PER_RECORD rows",
            )));
        }
        if current == Some(table) && !self.last_chunk_full {
            return Err(decode(DecodeError::Invalid(
                "only the last chunk of a table holds fewer than ROWS_PER_RECORD rows",
            )));
        }
        if current != Some(table) {
            let import = table_import(table).ok_or(ImportError::UnknownTable { index, table })?;
            self.end_table();
            self.table = Some((table, import));
        }
        self.last_chunk_full = count as usize == ROWS_PER_RECORD;
        self.rows += count as u64;
        let (_, import) = self.table.as_mut().expect("started above");
        import
            .read_rows(&mut reader, count)
            .map_err(|error| match error {
                RowsError::Decode(source) => decode(source),
                RowsError::OutOfOrder { row } => ImportError::KeyOrder { table, row },
            })?;
        reader.finish().map_err(decode)
    }

    /// Puts the table being rebuilt in its place in the state.
    fn end_table(&mut self) {
        if let Some((_, import)) = self.table.take() {
            import.place(&mut self.state);
        }
    }

    /// Bytes fed so far that belong to a record not yet complete.
    pub fn pending_bytes(&self) -> usize {
        self.partial.len()
    }

    /// The digest of the stream read, which is the rebuilt state's [`digest`]; an error unless
    /// the stream ended exactly with its End record. Cheap: a receiver compares it with the
    /// sender's before it spends time on [`StateImport::finish`].
    pub fn digest(&self) -> Result<u128, ImportError> {
        if !self.partial.is_empty() {
            let wanted = record_len(&self.partial, self.index)?.unwrap_or(LENGTH_BYTES);
            return Err(ImportError::Decode {
                index: self.index,
                source: DecodeError::Truncated {
                    offset: self.partial.len(),
                    needed: wanted - self.partial.len(),
                },
            });
        }
        if self.stage != Stage::Ended {
            return Err(ImportError::Truncated);
        }
        if self.trailing > 0 {
            return Err(ImportError::Trailing {
                trailing: self.trailing,
            });
        }
        Ok(self.hasher.digest128())
    }

    /// The rebuilt state and its digest, once the whole stream was read and every relationship
    /// between objects checks out ([`crate::views::check_invariants`]).
    pub fn finish(self) -> Result<(State, u128), ImportError> {
        let digest = self.digest()?;
        let state = self.state;
        crate::views::check_invariants(&state).map_err(ImportError::Invariant)?;
        debug_assert_eq!(
            digest,
            crate::records::digest(&state),
            "only the canonical stream is accepted, so its hash is the state's digest"
        );
        Ok((state, digest))
    }
}

fn is_table(table: u16) -> bool {
    macro_rules! known {
        ($table:ident; $($id:literal $field:ident),*) => {
            matches!($table, $($id)|*)
        };
    }
    for_each_table!(known, table)
}

/// Rebuilds a state from its records. Nothing is kept unless everything checks out.
pub fn import(bytes: &[u8]) -> Result<State, ImportError> {
    import_with_digest(bytes).map(|(state, _)| state)
}

/// [`import`], and the rebuilt state's [`digest`] (the hash of `bytes`, which import accepts
/// only in the form [`export`] writes).
pub fn import_with_digest(bytes: &[u8]) -> Result<(State, u128), ImportError> {
    let mut import = StateImport::new();
    import.feed(bytes)?;
    import.finish()
}
