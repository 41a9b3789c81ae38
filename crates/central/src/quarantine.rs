//! Poison inputs (SPEC section 4): an input that panics the router's `apply` would crash both
//! sides at once, and again each time it is resent.
//!
//! The side's machine applies every ordered input through `catch_panic`. When the router
//! panics, its state is suspect: the input's identity is appended to the side's suspect file and synced,
//! and the side stops. At start the side reads the file back (`read_quarantine`): an input
//! recorded during two crashes is quarantined, and the synchronizer orders a placeholder in its
//! place whenever this side is enabled, which both sides skip. Records count together by the
//! input's PG and bytes, whatever numbers they name: after both sides crash, the PG sends the
//! same input again under a new incarnation's numbers.
//!
//! The file holds one line per crash, in the form `Suspect` displays and parses:
//! `pg 3 incarnation 1766000000000 input 57 hash 0123456789abcdef` for a PG's input, or
//! `synchronizer hash 0123456789abcdef` for an input the synchronizer ordered itself (a
//! TimeTick), which has no number to skip it by and is only reported.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Seek, SeekFrom, Write};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use tandem_mds::quarantine::QUARANTINED_INPUTS_MAX;
use tandem_mds::{input_hash, QuarantineKey, QuarantinedInput, Source};
use tandem_model::ids::PgId;
use tandem_model::input::Input;
use thiserror::Error;
use tracing::warn;

/// The suspect file's name in the side's data directory.
pub const SUSPECT_FILE: &str = "suspect-inputs";
/// The crashes an input must have been in flight during to be quarantined.
pub const CRASHES_TO_QUARANTINE: usize = 2;
/// The most bytes read from the end of the suspect file: the latest crashes are the ones that
/// matter, and an old or damaged file cannot slow a start.
pub const SUSPECT_FILE_BYTES_MAX: u64 = 64 * 1024;
/// The shortest line a PG input's record can be: one-digit numbers and a 16-digit hash.
const SUSPECT_PG_LINE_BYTES_MIN: u64 =
    "pg 1 incarnation 1 input 1 hash 0123456789abcdef".len() as u64;
/// A malformed line is quoted in the warning up to this many characters.
const MALFORMED_LINE_QUOTED_CHARS_MAX: usize = 80;

// The bounded read never yields more quarantined inputs than the synchronizer holds.
const _: () = assert!(
    SUSPECT_FILE_BYTES_MAX / (CRASHES_TO_QUARANTINE as u64 * SUSPECT_PG_LINE_BYTES_MIN)
        <= QUARANTINED_INPUTS_MAX as u64
);

#[derive(Debug, Error)]
pub enum QuarantineError {
    #[error("{what} the suspect file {path}: {source}")]
    File {
        what: &'static str,
        path: String,
        source: std::io::Error,
    },
}

/// The identity of the input that was being applied when the router panicked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Suspect {
    /// A PG's input.
    Pg(QuarantineKey),
    /// An input the synchronizer ordered itself, known by its bytes' hash alone.
    Synchronizer { input_hash: u64 },
}

impl Suspect {
    /// The identity of `input`, ordered from `source`.
    pub fn of(source: &Source, input: &Input) -> Suspect {
        let input_hash = input_hash(input);
        match *source {
            Source::Pg {
                pg,
                incarnation,
                input_no,
            } => Suspect::Pg(QuarantineKey {
                pg,
                incarnation,
                input_no,
                input_hash,
            }),
            // Neither has a PG's number to skip it by: both are reported by their bytes.
            Source::Synchronizer | Source::Admin { .. } => Suspect::Synchronizer { input_hash },
        }
    }
}

impl std::fmt::Display for Suspect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Suspect::Pg(key) => write!(
                f,
                "pg {} incarnation {} input {} hash {:016x}",
                key.pg, key.incarnation, key.input_no, key.input_hash
            ),
            Suspect::Synchronizer { input_hash } => {
                write!(f, "synchronizer hash {input_hash:016x}")
            }
        }
    }
}

impl std::str::FromStr for Suspect {
    type Err = ();

    fn from_str(line: &str) -> Result<Suspect, ()> {
        let words: Vec<&str> = line.split_whitespace().collect();
        let number = |word: &str| word.parse::<u64>().map_err(|_| ());
        // Exactly 16 hex digits, as written: a shorter hash is a torn or edited line.
        let hash = |word: &str| {
            if word.len() == 16 {
                u64::from_str_radix(word, 16).map_err(|_| ())
            } else {
                Err(())
            }
        };
        match words[..] {
            ["pg", pg, "incarnation", incarnation, "input", input_no, "hash", input_hash] => {
                Ok(Suspect::Pg(QuarantineKey {
                    pg: PgId(pg.parse().map_err(|_| ())?),
                    incarnation: number(incarnation)?,
                    input_no: number(input_no)?,
                    input_hash: hash(input_hash)?,
                }))
            }
            ["synchronizer", "hash", input_hash] => Ok(Suspect::Synchronizer {
                input_hash: hash(input_hash)?,
            }),
            _ => Err(()),
        }
    }
}

/// What a side's suspect file says at start.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Quarantine {
    /// PG inputs recorded during at least `CRASHES_TO_QUARANTINE` crashes, under any numbers:
    /// never applied again.
    pub inputs: BTreeSet<QuarantinedInput>,
    /// Inputs the synchronizer ordered itself, recorded as often, by hash. They have no number
    /// to skip them by, so they are only reported.
    pub synchronizer_inputs: BTreeSet<u64>,
    /// Lines that are no record; each was ignored with a warning.
    pub malformed_lines: usize,
}

/// Appends `suspect` to the suspect file at `path` and syncs it, with its directory, so that
/// the record outlives the crash that follows.
pub fn record_suspect(path: &Path, suspect: &Suspect) -> Result<(), QuarantineError> {
    let failed = |what| {
        move |source| QuarantineError::File {
            what,
            path: path.display().to_string(),
            source,
        }
    };
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(failed("opening"))?;
    writeln!(file, "{suspect}").map_err(failed("writing"))?;
    file.sync_all().map_err(failed("syncing"))?;
    // The file may have just been created: its directory entry must be durable too.
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(failed("syncing the directory of"))?;
    }
    Ok(())
}

/// Reads the suspect file at `path` (its last `SUSPECT_FILE_BYTES_MAX` bytes): what is
/// quarantined. A missing file quarantines nothing.
pub fn read_quarantine(path: &Path) -> Result<Quarantine, QuarantineError> {
    let failed = |what| {
        move |source| QuarantineError::File {
            what,
            path: path.display().to_string(),
            source,
        }
    };
    let mut file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Quarantine::default()),
        Err(e) => return Err(failed("opening")(e)),
    };
    let len = file.metadata().map_err(failed("reading"))?.len();
    // From one byte before the bound, so that a line starting exactly at it is kept whole.
    let start = len.saturating_sub(SUSPECT_FILE_BYTES_MAX + 1);
    file.seek(SeekFrom::Start(start))
        .map_err(failed("reading"))?;
    let mut bytes = Vec::new();
    file.take(SUSPECT_FILE_BYTES_MAX + 1)
        .read_to_end(&mut bytes)
        .map_err(failed("reading"))?;
    let mut text = String::from_utf8_lossy(&bytes).into_owned();
    if start > 0 {
        // The read began inside the file: what precedes the first line break is a fragment.
        let fragment = text.find('\n').map_or(text.len(), |at| at + 1);
        text.drain(..fragment);
    }
    let mut crashes: BTreeMap<Crashed, usize> = BTreeMap::new();
    let mut quarantine = Quarantine::default();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        match line.parse::<Suspect>() {
            Ok(suspect) => *crashes.entry(Crashed::of(suspect)).or_default() += 1,
            Err(()) => {
                quarantine.malformed_lines += 1;
                let quoted: String = line.chars().take(MALFORMED_LINE_QUOTED_CHARS_MAX).collect();
                warn!(path = %path.display(), "ignoring a malformed suspect record: {quoted:?}");
            }
        }
    }
    for (suspect, count) in crashes {
        if count < CRASHES_TO_QUARANTINE {
            continue;
        }
        match suspect {
            Crashed::Pg(input) => {
                quarantine.inputs.insert(input);
            }
            Crashed::Synchronizer(input_hash) => {
                quarantine.synchronizer_inputs.insert(input_hash);
            }
        }
    }
    Ok(quarantine)
}

/// What crash records count together by: the input, not the numbers it came under.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Crashed {
    Pg(QuarantinedInput),
    Synchronizer(u64),
}

impl Crashed {
    fn of(suspect: Suspect) -> Crashed {
        match suspect {
            Suspect::Pg(key) => Crashed::Pg(key.input()),
            Suspect::Synchronizer { input_hash } => Crashed::Synchronizer(input_hash),
        }
    }
}

/// Why applying an input failed: it panicked the router, whose state is now suspect.
#[derive(Debug, Error)]
pub enum Poisoned {
    #[error("applying the input `{suspect}` panicked ({message}); it is recorded as suspect")]
    Recorded { suspect: Suspect, message: String },
    #[error(
        "applying the input `{suspect}` panicked ({message}), and recording it failed: {error}"
    )]
    Unrecorded {
        suspect: Suspect,
        message: String,
        error: QuarantineError,
    },
}

/// The reason code that makes an AgentLogout the planted poison input (`poison-input`).
#[cfg(feature = "poison-input")]
pub const POISON_REASON_CODE: u16 = u16::MAX;

/// Panics on the planted poison input, as the router would on a real one: the fault the
/// whole-system tests inject to see a poison input quarantined.
#[cfg(feature = "poison-input")]
pub fn panic_on_poison(input: &Input) {
    if matches!(
        input,
        Input::AgentLogout {
            reason_code: POISON_REASON_CODE,
            ..
        }
    ) {
        panic!("the planted poison input");
    }
}

/// Runs `apply`, catching a panic: then its message is returned, and nothing `apply` touched
/// may be used again (unwind safety is asserted on that ground).
pub fn catch_panic<R>(apply: impl FnOnce() -> R) -> Result<R, String> {
    catch_unwind(AssertUnwindSafe(apply)).map_err(|payload| {
        payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".to_string())
    })
}

/// Runs `apply` for one ordered input. If it panics, the identity `suspect` gives is appended
/// to the suspect file at `path` (see `record_suspect`) and the panic is returned: whatever
/// `apply` changed is suspect, so the caller must stop rather than go on.
pub fn apply_guarded<R>(
    path: &Path,
    suspect: impl FnOnce() -> Suspect,
    apply: impl FnOnce() -> R,
) -> Result<R, Poisoned> {
    let message = match catch_panic(apply) {
        Ok(result) => return Ok(result),
        Err(message) => message,
    };
    let suspect = suspect();
    Err(match record_suspect(path, &suspect) {
        Ok(()) => Poisoned::Recorded { suspect, message },
        Err(error) => Poisoned::Unrecorded {
            suspect,
            message,
            error,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use tandem_model::ids::AgentId;

    /// A fresh directory of this test's own under the system's temporary directory.
    fn test_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("tandem-quarantine-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// A PG input record: agent `input_no`'s logout, numbered `input_no`.
    fn pg_suspect(input_no: u64) -> Suspect {
        pg_suspect_under(1_766_000_000_000, input_no, input_no as u32)
    }

    fn pg_suspect_under(incarnation: u64, input_no: u64, agent: u32) -> Suspect {
        Suspect::of(
            &Source::Pg {
                pg: PgId(3),
                incarnation,
                input_no,
            },
            &Input::AgentLogout {
                agent: AgentId(agent),
                reason_code: 0,
            },
        )
    }

    fn quarantined(suspect: Suspect) -> QuarantinedInput {
        match suspect {
            Suspect::Pg(key) => key.input(),
            Suspect::Synchronizer { .. } => unreachable!("a PG suspect"),
        }
    }

    /// Both sides crashed on an input and restarted from configuration, so the PG sent it again
    /// under a new incarnation: the two records are of one input.
    #[test]
    fn records_of_one_input_under_new_numbers_count_together() {
        let dir = test_dir("renumbered");
        let path = dir.join(SUSPECT_FILE);
        record_suspect(&path, &pg_suspect_under(1_766_000_000_000, 501, 7)).unwrap();
        record_suspect(&path, &pg_suspect_under(1_766_000_005_000, 3, 7)).unwrap();
        // The same numbers with other bytes are another input.
        record_suspect(&path, &pg_suspect_under(1_766_000_005_000, 3, 8)).unwrap();
        let quarantine = read_quarantine(&path).unwrap();
        assert_eq!(
            quarantine.inputs,
            BTreeSet::from([quarantined(pg_suspect_under(1, 1, 7))])
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn records_read_back_as_written() {
        for suspect in [
            pg_suspect(57),
            Suspect::of(&Source::Synchronizer, &Input::TimeTick),
        ] {
            assert_eq!(suspect.to_string().parse::<Suspect>(), Ok(suspect));
        }
        assert_eq!(
            pg_suspect(57).to_string(),
            format!(
                "pg 3 incarnation 1766000000000 input 57 hash {:016x}",
                input_hash(&Input::AgentLogout {
                    agent: AgentId(57),
                    reason_code: 0
                })
            )
        );
    }

    #[test]
    fn an_input_recorded_during_two_crashes_is_quarantined_and_one_during_one_is_not() {
        let dir = test_dir("two-crashes");
        let path = dir.join(SUSPECT_FILE);
        assert_eq!(read_quarantine(&path).unwrap(), Quarantine::default());
        let tick = Suspect::of(&Source::Synchronizer, &Input::TimeTick);
        for suspect in [pg_suspect(57), pg_suspect(58), pg_suspect(57), tick, tick] {
            record_suspect(&path, &suspect).unwrap();
        }
        let quarantine = read_quarantine(&path).unwrap();
        assert_eq!(
            quarantine.inputs,
            BTreeSet::from([quarantined(pg_suspect(57))])
        );
        assert_eq!(
            quarantine.synchronizer_inputs,
            BTreeSet::from([input_hash(&Input::TimeTick)])
        );
        assert_eq!(quarantine.malformed_lines, 0);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn malformed_lines_are_ignored_and_counted() {
        let dir = test_dir("malformed");
        let path = dir.join(SUSPECT_FILE);
        let good = pg_suspect(9).to_string();
        let torn = &good[..good.len() - 3];
        let text = format!(
            "{good}\nnonsense\n{torn}\npg x incarnation 1 input 1 hash 0123456789abcdef\n\n{good}\n"
        );
        std::fs::write(&path, text).unwrap();
        let quarantine = read_quarantine(&path).unwrap();
        assert_eq!(quarantine.malformed_lines, 3);
        assert_eq!(quarantine.inputs.len(), 1, "the two whole records count");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn only_the_end_of_a_large_file_is_read() {
        let dir = test_dir("large");
        let path = dir.join(SUSPECT_FILE);
        let old = pg_suspect(1).to_string();
        let line_bytes = old.len() as u64 + 1;
        let mut text = String::new();
        // Two records of input 1, then enough of input 2 to push them out of the bound.
        for _ in 0..2 {
            text.push_str(&format!("{old}\n"));
        }
        for _ in 0..SUSPECT_FILE_BYTES_MAX / line_bytes + 1 {
            text.push_str(&format!("{}\n", pg_suspect(2)));
        }
        std::fs::write(&path, &text).unwrap();
        let quarantine = read_quarantine(&path).unwrap();
        assert_eq!(
            quarantine.inputs,
            BTreeSet::from([quarantined(pg_suspect(2))])
        );
        assert_eq!(
            quarantine.malformed_lines, 0,
            "the read starts at a line break"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_panic_inside_apply_is_caught_recorded_and_reported() {
        let dir = test_dir("panic");
        let path = dir.join(SUSPECT_FILE);
        let mut applied = 0;
        assert_eq!(
            apply_guarded(
                &path,
                || pg_suspect(1),
                || {
                    applied += 1;
                    applied
                }
            )
            .unwrap(),
            1
        );
        assert!(!path.exists(), "an input that applies is not recorded");
        for crash in 1..=2 {
            let poisoned = apply_guarded(
                &path,
                || pg_suspect(5),
                || -> u32 { panic!("poison input") },
            )
            .unwrap_err();
            match &poisoned {
                Poisoned::Recorded { suspect, message } => {
                    assert_eq!(*suspect, pg_suspect(5));
                    assert_eq!(message, "poison input");
                }
                other => panic!("not recorded: {other}"),
            }
            let quarantined = read_quarantine(&path).unwrap().inputs.len();
            assert_eq!(quarantined, usize::from(crash == 2), "after crash {crash}");
        }
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_panic_that_cannot_be_recorded_says_so() {
        let dir = test_dir("unrecorded");
        // A directory where the file should be: appending to it fails.
        let path = dir.join(SUSPECT_FILE);
        std::fs::create_dir_all(&path).unwrap();
        let poisoned =
            apply_guarded(&path, || pg_suspect(5), || panic!("poison input")).unwrap_err();
        assert!(
            matches!(poisoned, Poisoned::Unrecorded { .. }),
            "{poisoned}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
