//! `Table`: an ordered, persistent (copy-on-write) map that knows the exact encoded size of its
//! rows.
//!
//! Cloning a table is O(1): it shares every node with the original, and later writes copy only
//! the nodes they touch. That is how the router takes a consistent snapshot at a sequence number
//! without stopping: the snapshot is a clone of the state, exported on another thread while the
//! live state keeps changing.
//!
//! Iteration is in key order, so exports and digests are canonical.

pub use crate::trie::{DenseKey, OutOfOrder};
use crate::trie::{IdTrie, IdTrieBuilder};
use imbl::OrdMap;
use std::ops::RangeBounds;
use tandem_model::codec::Encode;
use tandem_model::ids::*;

/// The accessors every table kind derives the same way from its `len` and `iter`.
macro_rules! derived_accessors {
    () => {
        pub fn is_empty(&self) -> bool {
            self.len() == 0
        }

        pub fn keys(&self) -> impl Iterator<Item = &K> {
            self.iter().map(|(k, _)| k)
        }

        pub fn values(&self) -> impl Iterator<Item = &V> {
            self.iter().map(|(_, v)| v)
        }

        /// Recomputes the byte count from the rows (for invariant checks).
        pub fn recount_bytes(&self) -> u64 {
            self.iter().map(|(k, v)| row_len(k, v)).sum()
        }
    };
}

#[derive(Clone, Debug)]
pub struct Table<K: Ord + Clone, V: Clone> {
    rows: OrdMap<K, V>,
    /// Sum of `key.encoded_len() + value.encoded_len()` over all rows.
    bytes: u64,
}

impl<K: Ord + Clone, V: Clone> Default for Table<K, V> {
    fn default() -> Self {
        Table {
            rows: OrdMap::new(),
            bytes: 0,
        }
    }
}

impl<K: Ord + Clone + Encode, V: Clone + Encode> Table<K, V> {
    derived_accessors!();

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// The encoded size of all rows (without record framing).
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    #[inline]
    pub fn get(&self, key: &K) -> Option<&V> {
        self.rows.get(key)
    }

    #[inline]
    pub fn contains(&self, key: &K) -> bool {
        self.rows.contains_key(key)
    }

    /// Inserts or replaces a row, returning the previous one.
    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        let key_len = key.encoded_len() as u64;
        let value_len = value.encoded_len() as u64;
        let previous = self.rows.insert(key, value);
        match &previous {
            // The key is equal, so only the value's length changes.
            Some(old) => self.bytes = self.bytes - old.encoded_len() as u64 + value_len,
            None => self.bytes += key_len + value_len,
        }
        previous
    }

    pub fn remove(&mut self, key: &K) -> Option<V> {
        let removed = self.rows.remove(key)?;
        self.bytes -= (key.encoded_len() + removed.encoded_len()) as u64;
        Some(removed)
    }

    /// Changes a row in place; returns `None` when there is no such row. The row's size is
    /// re-measured, which costs nothing for fixed-width rows (the length is a constant).
    #[inline]
    pub fn update<R>(&mut self, key: &K, f: impl FnOnce(&mut V) -> R) -> Option<R> {
        let row = self.rows.get_mut(key)?;
        let before = row.encoded_len();
        let result = f(row);
        let after = row.encoded_len();
        self.bytes = self.bytes + after as u64 - before as u64;
        Some(result)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.rows.iter()
    }

    pub fn range<R: RangeBounds<K>>(&self, range: R) -> impl Iterator<Item = (&K, &V)> {
        self.rows.range(range)
    }

    /// The row with the smallest key. A walk down the tree, cheaper than a range cursor.
    #[inline]
    pub fn first(&self) -> Option<(&K, &V)> {
        self.rows.get_min().map(|(k, v)| (k, v))
    }

    /// The first row in key order within `range`.
    #[inline]
    pub fn first_in<R: RangeBounds<K>>(&self, range: R) -> Option<(&K, &V)> {
        self.rows.range(range).next()
    }

    /// The first row with a key greater than `after` (the whole table when `None`).
    pub fn next_after(&self, after: Option<&K>) -> Option<(&K, &V)> {
        match after {
            Some(key) => self
                .rows
                .range((
                    std::ops::Bound::Excluded(key.clone()),
                    std::ops::Bound::Unbounded,
                ))
                .next(),
            None => self.rows.iter().next(),
        }
    }

    /// Builds a table from rows in strictly ascending key order. Returns the offending index if
    /// the order is broken.
    pub fn from_sorted(rows: Vec<(K, V)>) -> Result<Self, usize> {
        build_from_sorted::<TableRows<K, V>>(rows)
    }
}

/// Builds a table from rows in strictly ascending key order, one row at a time, as a state
/// import decodes them.
pub trait TableBuilder: Default {
    type Key;
    type Value;
    type Table;
    /// Adds a row after every row pushed before; a key not above the last one is refused.
    fn push(&mut self, key: Self::Key, value: Self::Value) -> Result<(), OutOfOrder>;
    /// Rows pushed so far.
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    fn finish(self) -> Self::Table;
}

/// Any table from rows in strictly ascending key order, through its builder; the offending
/// index otherwise.
fn build_from_sorted<B: TableBuilder>(rows: Vec<(B::Key, B::Value)>) -> Result<B::Table, usize> {
    let mut builder = B::default();
    for (i, (key, value)) in rows.into_iter().enumerate() {
        builder.push(key, value).map_err(|OutOfOrder| i)?;
    }
    Ok(builder.finish())
}

/// Builds a [`Table`]: its few rows are gathered, then put in the map at once.
pub struct TableRows<K, V> {
    rows: Vec<(K, V)>,
    bytes: u64,
}

impl<K, V> Default for TableRows<K, V> {
    fn default() -> Self {
        TableRows {
            rows: Vec::new(),
            bytes: 0,
        }
    }
}

impl<K: Ord + Clone + Encode, V: Clone + Encode> TableBuilder for TableRows<K, V> {
    type Key = K;
    type Value = V;
    type Table = Table<K, V>;

    fn push(&mut self, key: K, value: V) -> Result<(), OutOfOrder> {
        if self.rows.last().is_some_and(|(last, _)| *last >= key) {
            return Err(OutOfOrder);
        }
        self.bytes += row_len(&key, &value);
        self.rows.push((key, value));
        Ok(())
    }

    fn len(&self) -> usize {
        self.rows.len()
    }

    fn finish(self) -> Table<K, V> {
        Table {
            rows: self.rows.into_iter().collect(),
            bytes: self.bytes,
        }
    }
}

/// What the state-record export and import need of every kind of table.
pub trait RowTable: Default + Sized {
    type Key: Ord + Clone + Encode;
    type Value: Clone + Encode;
    /// Builds the table from rows in key order, as an import decodes them.
    type Builder: TableBuilder<Key = Self::Key, Value = Self::Value, Table = Self>;
    fn row_count(&self) -> usize;
    /// The encoded size of all rows (without record framing).
    fn row_bytes(&self) -> u64;
    fn rows(&self) -> impl Iterator<Item = (&Self::Key, &Self::Value)>;
}

/// Implements [`RowTable`] for a table kind through its inherent methods of the same meaning.
macro_rules! row_table {
    ($table:ident, $builder:ident, $($bound:tt)+) => {
        impl<$($bound)+, V: Clone + Encode> RowTable for $table<K, V> {
            type Key = K;
            type Value = V;
            type Builder = $builder<K, V>;
            fn row_count(&self) -> usize {
                self.len()
            }
            fn row_bytes(&self) -> u64 {
                self.bytes()
            }
            fn rows(&self) -> impl Iterator<Item = (&K, &V)> {
                self.iter()
            }
        }
    };
}

row_table!(Table, TableRows, K: Ord + Clone + Encode);

fn row_len<K: Encode, V: Encode>(key: &K, value: &V) -> u64 {
    (key.encoded_len() + value.encoded_len()) as u64
}

/// The most keys a table's change log holds between two drains; past it the log only says
/// that everything may have changed. A drain every TimeTick sees far fewer.
pub const CHANGE_LOG_KEYS_MAX: usize = 1 << 18;

/// The keys written (inserted, updated or removed) since the log was last drained, for a table
/// whose changes the real-time feed follows. Off by default; it is no part of the table's
/// value: not encoded, not compared, not in the digest.
#[derive(Clone, Debug)]
pub struct ChangeLog<K> {
    on: bool,
    keys: Vec<K>,
    /// More than `CHANGE_LOG_KEYS_MAX` keys were written since the last drain.
    overflowed: bool,
}

/// What a drained change log says.
#[derive(Debug, PartialEq, Eq)]
pub enum Changes<K> {
    /// These keys (sorted, each once) may have changed; no other did.
    Keys(Vec<K>),
    /// Too many keys were written to list: any row may have changed.
    All,
}

impl<K> Default for ChangeLog<K> {
    fn default() -> Self {
        ChangeLog {
            on: false,
            keys: Vec::new(),
            overflowed: false,
        }
    }
}

impl<K: Ord + Clone> ChangeLog<K> {
    #[inline]
    fn record(&mut self, key: &K) {
        if self.on && !self.overflowed {
            if self.keys.len() < CHANGE_LOG_KEYS_MAX {
                self.keys.push(key.clone());
            } else {
                self.overflowed = true;
                self.keys = Vec::new();
            }
        }
    }

    fn set(&mut self, on: bool) {
        self.on = on;
        self.keys.clear();
        self.overflowed = false;
    }

    fn drain(&mut self) -> Changes<K> {
        if std::mem::take(&mut self.overflowed) {
            return Changes::All;
        }
        let mut keys = std::mem::take(&mut self.keys);
        keys.sort_unstable();
        keys.dedup();
        Changes::Keys(keys)
    }
}

/// A table keyed by a dense id: the same interface as [`Table`] over an [`IdTrie`], whose
/// lookups cost one pointer per level and no comparisons. Cloning is O(1) as well.
#[derive(Clone, Debug)]
pub struct IdTable<K, V> {
    rows: IdTrie<K, V>,
    bytes: u64,
    changes: ChangeLog<K>,
}

impl<K, V> Default for IdTable<K, V> {
    fn default() -> Self {
        IdTable {
            rows: IdTrie::default(),
            bytes: 0,
            changes: ChangeLog::default(),
        }
    }
}

impl<K: DenseKey + Encode, V: Clone + Encode> IdTable<K, V> {
    derived_accessors!();

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    #[inline]
    pub fn get(&self, key: &K) -> Option<&V> {
        self.rows.get(key)
    }

    #[inline]
    pub fn contains(&self, key: &K) -> bool {
        self.rows.get(key).is_some()
    }

    /// See [`IdTrie::prefetch_leaf`].
    #[inline]
    pub fn prefetch_leaf(&self, key: &K) {
        self.rows.prefetch_leaf(key)
    }

    /// See [`IdTrie::prefetch_slot`].
    #[inline]
    pub fn prefetch_slot(&self, key: &K, lines_max: usize) {
        self.rows.prefetch_slot(key, lines_max)
    }

    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        self.changes.record(&key);
        let added = row_len(&key, &value);
        let previous = self.rows.insert(key, value);
        if let Some(old) = &previous {
            self.bytes -= row_len(&key, old);
        }
        self.bytes += added;
        previous
    }

    pub fn remove(&mut self, key: &K) -> Option<V> {
        let removed = self.rows.remove(key)?;
        self.changes.record(key);
        self.bytes -= row_len(key, &removed);
        Some(removed)
    }

    /// Changes a row in place; returns `None` when there is no such row.
    #[inline]
    pub fn update<R>(&mut self, key: &K, f: impl FnOnce(&mut V) -> R) -> Option<R> {
        let row = self.rows.get_mut(key)?;
        self.changes.record(key);
        let before = row.encoded_len();
        let result = f(row);
        let after = row.encoded_len();
        self.bytes = self.bytes + after as u64 - before as u64;
        Some(result)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.rows.iter()
    }

    /// The row with the smallest key.
    pub fn first(&self) -> Option<(&K, &V)> {
        self.rows.first()
    }

    /// The first row with a key greater than `after` (the whole table when `None`).
    pub fn next_after(&self, after: Option<&K>) -> Option<(&K, &V)> {
        match after {
            Some(key) => self.rows.first_after(key),
            None => self.rows.iter().next(),
        }
    }

    /// Rows in key order from `start` on.
    pub fn iter_from(&self, start: &K) -> impl Iterator<Item = (&K, &V)> {
        self.rows.iter_from(start.index())
    }

    /// Starts (or stops) logging the keys written, with an empty log.
    pub fn log_changes(&mut self, on: bool) {
        self.changes.set(on);
    }

    /// The keys written since the last drain (nothing when logging is off).
    pub fn drain_changes(&mut self) -> Changes<K> {
        self.changes.drain()
    }

    pub fn from_sorted(rows: Vec<(K, V)>) -> Result<Self, usize> {
        build_from_sorted::<IdTableBuilder<K, V>>(rows)
    }
}

/// Builds an [`IdTable`]: each row goes straight into its trie leaf.
pub struct IdTableBuilder<K, V> {
    rows: IdTrieBuilder<K, V>,
    bytes: u64,
}

impl<K, V> Default for IdTableBuilder<K, V> {
    fn default() -> Self {
        IdTableBuilder {
            rows: IdTrieBuilder::default(),
            bytes: 0,
        }
    }
}

impl<K: DenseKey + Encode, V: Clone + Encode> TableBuilder for IdTableBuilder<K, V> {
    type Key = K;
    type Value = V;
    type Table = IdTable<K, V>;

    #[inline]
    fn push(&mut self, key: K, value: V) -> Result<(), OutOfOrder> {
        let len = row_len(&key, &value);
        self.rows.push(key, value)?;
        self.bytes += len;
        Ok(())
    }

    fn len(&self) -> usize {
        self.rows.len()
    }

    fn finish(self) -> IdTable<K, V> {
        IdTable {
            rows: self.rows.finish(),
            bytes: self.bytes,
            changes: ChangeLog::default(),
        }
    }
}

row_table!(IdTable, IdTableBuilder, K: DenseKey + Encode);

impl<K: DenseKey, V: Clone + PartialEq> PartialEq for IdTable<K, V> {
    fn eq(&self, other: &Self) -> bool {
        self.bytes == other.bytes && self.rows == other.rows
    }
}

/// A key made of an owner and a part within it, ordered owner first: all rows of one owner sort
/// together.
pub trait GroupKey: Ord + Clone {
    type Owner: DenseKey;
    fn owner(&self) -> Self::Owner;
}

/// Agent_Skill_Group_Real_Time rows belong to their agent.
impl GroupKey for (AgentId, SkillGroupId) {
    type Owner = AgentId;
    #[inline]
    fn owner(&self) -> AgentId {
        self.0
    }
}

/// A call type's script mappings belong to the call type: routing reads them all at once.
impl GroupKey for (CallTypeId, ScriptId) {
    type Owner = CallTypeId;
    #[inline]
    fn owner(&self) -> CallTypeId {
        self.0
    }
}

/// Dialed numbers are indexed per routing client, then by their digits.
impl GroupKey for (RoutingClientId, String) {
    type Owner = RoutingClientId;
    #[inline]
    fn owner(&self) -> RoutingClientId {
        self.0
    }
}

/// Timers, keyed by (due time in ms, sequence), are grouped by their due millisecond.
impl GroupKey for (u64, u64) {
    type Owner = u64;
    #[inline]
    fn owner(&self) -> u64 {
        self.0
    }
}

impl DenseKey for u64 {
    #[inline]
    fn index(&self) -> u64 {
        *self
    }
}

/// One owner's rows, in key order.
type GroupRows<K, V> = Vec<(K, V)>;

/// Lines of an owner's rows that a prefetch requests: an agent's five member rows of 128 bytes.
const GROUP_PREFETCH_LINES_MAX: usize = 10;

/// A table whose rows are stored with their owner: all of an agent's Agent_Skill_Group_Real_Time
/// rows sit in one small sorted vector found by one [`IdTrie`] lookup of the agent, which is what
/// every agent event needs, and the timers due in one millisecond share one vector. Iteration is
/// in key order, exactly as a [`Table`] over the same keys would iterate.
///
/// The vector sits in the trie's leaf itself, so the rows are one pointer away from the leaf;
/// a leaf that a snapshot shares is copied with its vectors on the next write to it.
#[derive(Clone, Debug)]
pub struct GroupedTable<K: GroupKey, V> {
    owners: IdTrie<K::Owner, GroupRows<K, V>>,
    len: usize,
    bytes: u64,
    changes: ChangeLog<K>,
}

impl<K: GroupKey, V> Default for GroupedTable<K, V> {
    fn default() -> Self {
        GroupedTable {
            owners: IdTrie::default(),
            len: 0,
            bytes: 0,
            changes: ChangeLog::default(),
        }
    }
}

impl<K: GroupKey + Encode, V: Clone + Encode> GroupedTable<K, V> {
    derived_accessors!();

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// See [`IdTrie::prefetch_leaf`].
    #[inline]
    pub fn prefetch_leaf(&self, owner: K::Owner) {
        self.owners.prefetch_leaf(&owner)
    }

    /// See [`IdTrie::prefetch_slot`]: the slot holds the vector of the owner's rows.
    #[inline]
    pub fn prefetch_slot(&self, owner: K::Owner, lines_max: usize) {
        self.owners.prefetch_slot(&owner, lines_max)
    }

    /// Starts loading an owner's rows (reads the vector in the leaf's slot).
    #[inline]
    pub fn prefetch_rows(&self, owner: K::Owner) {
        crate::trie::prefetch_bytes(self.of(owner), GROUP_PREFETCH_LINES_MAX);
    }

    /// An owner's rows, in key order (empty for an owner without rows).
    #[inline]
    pub fn of(&self, owner: K::Owner) -> &[(K, V)] {
        self.owners
            .get(&owner)
            .map(|rows| rows.as_slice())
            .unwrap_or(&[])
    }

    #[inline]
    pub fn get(&self, key: &K) -> Option<&V> {
        let rows = self.of(key.owner());
        let at = rows.binary_search_by(|(k, _)| k.cmp(key)).ok()?;
        Some(&rows[at].1)
    }

    #[inline]
    pub fn contains(&self, key: &K) -> bool {
        self.get(key).is_some()
    }

    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        self.changes.record(&key);
        let key_len = key.encoded_len() as u64;
        let added = key_len + value.encoded_len() as u64;
        let owner = key.owner();
        if self.owners.get(&owner).is_none() {
            self.owners.insert(owner, Vec::new());
        }
        let rows = self.owners.get_mut(&owner).expect("inserted above");
        // Keys mostly arrive in order (timer sequences grow), so look at the end first.
        let position = match rows.last() {
            Some((last, _)) if *last < key => Err(rows.len()),
            None => Err(0),
            _ => rows.binary_search_by(|(k, _)| k.cmp(&key)),
        };
        let previous = match position {
            Ok(at) => Some(std::mem::replace(&mut rows[at].1, value)),
            Err(at) => {
                rows.insert(at, (key, value));
                None
            }
        };
        match &previous {
            Some(old) => self.bytes -= key_len + old.encoded_len() as u64,
            None => self.len += 1,
        }
        self.bytes += added;
        previous
    }

    pub fn remove(&mut self, key: &K) -> Option<V> {
        let owner = key.owner();
        let at = self.of(owner).binary_search_by(|(k, _)| k.cmp(key)).ok()?;
        self.changes.record(key);
        let rows = self.owners.get_mut(&owner).expect("found above");
        let (_, removed) = rows.remove(at);
        if rows.is_empty() {
            self.owners.remove(&owner);
        }
        self.len -= 1;
        self.bytes -= row_len(key, &removed);
        Some(removed)
    }

    /// Changes a row in place; returns `None` when there is no such row.
    #[inline]
    pub fn update<R>(&mut self, key: &K, f: impl FnOnce(&mut V) -> R) -> Option<R> {
        // Look first, so that a miss copies no shared node.
        let at = self
            .of(key.owner())
            .binary_search_by(|(k, _)| k.cmp(key))
            .ok()?;
        self.changes.record(key);
        let rows = self.owners.get_mut(&key.owner())?;
        let row = &mut rows[at].1;
        let before = row.encoded_len();
        let result = f(row);
        let after = row.encoded_len();
        self.bytes = self.bytes + after as u64 - before as u64;
        Some(result)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.owners
            .iter()
            .flat_map(|(_, rows)| rows.iter().map(|(k, v)| (k, v)))
    }

    /// Starts (or stops) logging the keys written, with an empty log.
    pub fn log_changes(&mut self, on: bool) {
        self.changes.set(on);
    }

    /// The keys written since the last drain (nothing when logging is off).
    pub fn drain_changes(&mut self) -> Changes<K> {
        self.changes.drain()
    }

    /// The row of `owner` that `compare` finds, by binary search over the owner's rows:
    /// `compare` orders a row's key against the key sought, which need not be built (a
    /// borrowed string, for instance).
    #[inline]
    pub fn find(&self, owner: K::Owner, compare: impl Fn(&K) -> std::cmp::Ordering) -> Option<&V> {
        let rows = self.of(owner);
        let at = rows.binary_search_by(|(k, _)| compare(k)).ok()?;
        Some(&rows[at].1)
    }

    /// The row with the smallest key.
    #[inline]
    pub fn first(&self) -> Option<(&K, &V)> {
        let (_, rows) = self.owners.first()?;
        rows.first().map(|(k, v)| (k, v))
    }

    /// The smallest owner's index, without a walk (the earliest due time of the timers).
    #[inline]
    pub fn first_owner_index(&self) -> Option<u64> {
        self.owners.min_index()
    }

    /// The first row with a key greater than `after` (the whole table when `None`).
    pub fn next_after(&self, after: Option<&K>) -> Option<(&K, &V)> {
        let Some(after) = after else {
            return self.first();
        };
        let rows = self.of(after.owner());
        let at = rows.partition_point(|(k, _)| k <= after);
        if let Some((k, v)) = rows.get(at) {
            return Some((k, v));
        }
        let (_, rows) = self.owners.first_after(&after.owner())?;
        rows.first().map(|(k, v)| (k, v))
    }

    pub fn from_sorted(rows: Vec<(K, V)>) -> Result<Self, usize> {
        build_from_sorted::<GroupedTableBuilder<K, V>>(rows)
    }
}

/// Builds a [`GroupedTable`]: the current owner's rows gather in a reused vector, and each
/// owner's finished run is moved into a vector of exactly its length in the owner's leaf slot.
pub struct GroupedTableBuilder<K: GroupKey, V> {
    owners: IdTrieBuilder<K::Owner, GroupRows<K, V>>,
    /// The rows of the owner being read.
    run: Vec<(K, V)>,
    len: usize,
    bytes: u64,
}

impl<K: GroupKey, V> Default for GroupedTableBuilder<K, V> {
    fn default() -> Self {
        GroupedTableBuilder {
            owners: IdTrieBuilder::default(),
            run: Vec::new(),
            len: 0,
            bytes: 0,
        }
    }
}

impl<K: GroupKey + Encode, V: Clone + Encode> GroupedTableBuilder<K, V> {
    fn end_run(&mut self) {
        let Some((first, _)) = self.run.first() else {
            return;
        };
        let owner = first.owner();
        let group: GroupRows<K, V> = self.run.drain(..).collect();
        let pushed = self.owners.push(owner, group);
        debug_assert!(
            pushed.is_ok(),
            "owners ascend with their keys, which push checked"
        );
    }
}

impl<K: GroupKey + Encode, V: Clone + Encode> TableBuilder for GroupedTableBuilder<K, V> {
    type Key = K;
    type Value = V;
    type Table = GroupedTable<K, V>;

    #[inline]
    fn push(&mut self, key: K, value: V) -> Result<(), OutOfOrder> {
        let last_owner = match self.run.last() {
            Some((last, _)) if *last >= key => return Err(OutOfOrder),
            Some((last, _)) => Some(last.owner()),
            None => None,
        };
        if last_owner.is_some_and(|owner| owner != key.owner()) {
            self.end_run();
        }
        self.bytes += row_len(&key, &value);
        self.len += 1;
        self.run.push((key, value));
        Ok(())
    }

    fn len(&self) -> usize {
        self.len
    }

    fn finish(mut self) -> GroupedTable<K, V> {
        self.end_run();
        GroupedTable {
            owners: self.owners.finish(),
            len: self.len,
            bytes: self.bytes,
            changes: ChangeLog::default(),
        }
    }
}

row_table!(GroupedTable, GroupedTableBuilder, K: GroupKey + Encode);

impl<K: GroupKey, V: Clone + PartialEq> PartialEq for GroupedTable<K, V> {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len && self.bytes == other.bytes && self.owners == other.owners
    }
}

/// A key made of a partition (a dense id) and a 64-bit number within it, ordered partition
/// first. Within one partition, `a < b` exactly when `a.index_in_partition() <
/// b.index_in_partition()`.
pub trait PartitionKey: Ord + Copy {
    type Partition: DenseKey;
    fn partition(&self) -> Self::Partition;
    fn index_in_partition(&self) -> u64;
}

/// A peripheral's call ids are its own numbering: calls are partitioned by peripheral.
impl PartitionKey for PeripheralCallKey {
    type Partition = PeripheralId;
    #[inline]
    fn partition(&self) -> PeripheralId {
        self.peripheral
    }
    #[inline]
    fn index_in_partition(&self) -> u64 {
        self.call_id
    }
}

/// A routing client numbers its requests from one in each PG incarnation: requests are
/// partitioned by (routing client, incarnation), packed into one integer in the same order.
impl PartitionKey for RouteRequestKey {
    type Partition = u64;
    #[inline]
    fn partition(&self) -> u64 {
        ((self.routing_client.0 as u64) << 32) | self.pg_incarnation as u64
    }
    #[inline]
    fn index_in_partition(&self) -> u64 {
        self.request_id
    }
}

/// Reference counts are partitioned by the kind of object referred to, and numbered within it
/// by its key's ids (two ids packed high and low, in the order the derived `Ord` compares them).
impl PartitionKey for tandem_model::config::ObjectRef {
    type Partition = u64;
    #[inline]
    fn partition(&self) -> u64 {
        use tandem_model::config::ObjectRef::*;
        match self {
            Pg(_) => 0,
            Peripheral(_) => 1,
            RoutingClient(_) => 2,
            Agent(_) => 3,
            SkillGroup(_) => 4,
            SkillGroupMember(..) => 5,
            Service(_) => 6,
            ServiceMember(..) => 7,
            CallType(_) => 8,
            DialedNumber(_) => 9,
            Script(_) => 10,
            CallTypeMap(..) => 11,
            Label(_) => 12,
        }
    }
    #[inline]
    fn index_in_partition(&self) -> u64 {
        use tandem_model::config::ObjectRef::*;
        let pair = |high: u32, low: u32| ((high as u64) << 32) | low as u64;
        match *self {
            Pg(id) => id.0 as u64,
            Peripheral(id) => id.0 as u64,
            RoutingClient(id) => id.0 as u64,
            Agent(id) => id.0 as u64,
            SkillGroup(id) => id.0 as u64,
            SkillGroupMember(agent, group) => pair(agent.0, group.0),
            Service(id) => id.0 as u64,
            ServiceMember(service, group) => pair(service.0, group.0),
            CallType(id) => id.0 as u64,
            DialedNumber(id) => id.0 as u64,
            Script(id) => id.0 as u64,
            CallTypeMap(call_type, script) => pair(call_type.0, script.0),
            Label(id) => id.0 as u64,
        }
    }
}

/// A key within its partition's trie: ordered and indexed by its number in the partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct InPartition<K>(K);

impl<K: PartitionKey> DenseKey for InPartition<K> {
    #[inline]
    fn index(&self) -> u64 {
        self.0.index_in_partition()
    }
}

/// A table keyed by numbers that each partition assigns on its own: calls by the peripheral's
/// call id, route requests by the routing client's request id. Each partition's rows sit in an
/// [`IdTrie`] over its numbers, found by one small trie lookup of the partition; numbers that
/// grow over time keep each partition's trie as shallow as the window of live rows. A lookup
/// costs one pointer per level and no comparisons, where an ordered map over the composite key
/// compares keys at every level. Iteration is in key order; cloning is O(1).
#[derive(Clone, Debug)]
pub struct PartitionedTable<K: PartitionKey, V> {
    partitions: IdTrie<K::Partition, IdTrie<InPartition<K>, V>>,
    len: usize,
    bytes: u64,
}

impl<K: PartitionKey, V> Default for PartitionedTable<K, V> {
    fn default() -> Self {
        PartitionedTable {
            partitions: IdTrie::default(),
            len: 0,
            bytes: 0,
        }
    }
}

impl<K: PartitionKey + Encode, V: Clone + Encode> PartitionedTable<K, V> {
    derived_accessors!();

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    #[inline]
    pub fn get(&self, key: &K) -> Option<&V> {
        self.partitions
            .get(&key.partition())?
            .get(&InPartition(*key))
    }

    /// See [`IdTrie::prefetch_leaf`].
    #[inline]
    pub fn prefetch_leaf(&self, key: &K) {
        if let Some(rows) = self.partitions.get(&key.partition()) {
            rows.prefetch_leaf(&InPartition(*key))
        }
    }

    /// See [`IdTrie::prefetch_slot`].
    #[inline]
    pub fn prefetch_slot(&self, key: &K, lines_max: usize) {
        if let Some(rows) = self.partitions.get(&key.partition()) {
            rows.prefetch_slot(&InPartition(*key), lines_max)
        }
    }

    #[inline]
    pub fn contains(&self, key: &K) -> bool {
        self.get(key).is_some()
    }

    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        let added = row_len(&key, &value);
        let partition = key.partition();
        let rows = match self.partitions.get_mut(&partition) {
            Some(rows) => rows,
            None => {
                self.partitions.insert(partition, IdTrie::default());
                self.partitions.get_mut(&partition).expect("inserted above")
            }
        };
        let previous = rows.insert(InPartition(key), value);
        match &previous {
            Some(old) => self.bytes -= row_len(&key, old),
            None => self.len += 1,
        }
        self.bytes += added;
        previous
    }

    pub fn remove(&mut self, key: &K) -> Option<V> {
        let partition = key.partition();
        // Look first, so that a miss copies no shared node.
        self.get(key)?;
        let rows = self.partitions.get_mut(&partition)?;
        let removed = rows.remove(&InPartition(*key))?;
        if rows.is_empty() {
            self.partitions.remove(&partition);
        }
        self.len -= 1;
        self.bytes -= row_len(key, &removed);
        Some(removed)
    }

    /// Changes a row in place; returns `None` when there is no such row.
    #[inline]
    pub fn update<R>(&mut self, key: &K, f: impl FnOnce(&mut V) -> R) -> Option<R> {
        self.get(key)?;
        let row = self
            .partitions
            .get_mut(&key.partition())?
            .get_mut(&InPartition(*key))?;
        let before = row.encoded_len();
        let result = f(row);
        let after = row.encoded_len();
        self.bytes = self.bytes + after as u64 - before as u64;
        Some(result)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.partitions
            .iter()
            .flat_map(|(_, rows)| rows.iter().map(|(k, v)| (&k.0, v)))
    }

    /// One partition's rows in key order, from the key numbered `start` on.
    pub fn iter_partition_from(
        &self,
        partition: K::Partition,
        start: u64,
    ) -> impl Iterator<Item = (&K, &V)> {
        self.partitions
            .get(&partition)
            .into_iter()
            .flat_map(move |rows| rows.iter_from(start).map(|(k, v)| (&k.0, v)))
    }

    pub fn from_sorted(rows: Vec<(K, V)>) -> Result<Self, usize> {
        build_from_sorted::<PartitionedTableBuilder<K, V>>(rows)
    }
}

/// The rows of one partition, being built.
type PartitionBuilder<K, V> = IdTrieBuilder<InPartition<K>, V>;

/// Builds a [`PartitionedTable`]: one trie builder for the partition being read, hung in the
/// trie of partitions when the next partition starts.
pub struct PartitionedTableBuilder<K: PartitionKey, V> {
    partitions: IdTrieBuilder<K::Partition, IdTrie<InPartition<K>, V>>,
    /// The partition being read and its rows.
    current: Option<(K::Partition, PartitionBuilder<K, V>)>,
    last: Option<K>,
    len: usize,
    bytes: u64,
}

impl<K: PartitionKey, V> Default for PartitionedTableBuilder<K, V> {
    fn default() -> Self {
        PartitionedTableBuilder {
            partitions: IdTrieBuilder::default(),
            current: None,
            last: None,
            len: 0,
            bytes: 0,
        }
    }
}

impl<K: PartitionKey + Encode, V: Clone + Encode> PartitionedTableBuilder<K, V> {
    fn end_partition(&mut self) {
        if let Some((partition, rows)) = self.current.take() {
            let pushed = self.partitions.push(partition, rows.finish());
            debug_assert!(
                pushed.is_ok(),
                "partitions ascend with their keys, which push checked"
            );
        }
    }
}

impl<K: PartitionKey + Encode, V: Clone + Encode> TableBuilder for PartitionedTableBuilder<K, V> {
    type Key = K;
    type Value = V;
    type Table = PartitionedTable<K, V>;

    #[inline]
    fn push(&mut self, key: K, value: V) -> Result<(), OutOfOrder> {
        if self.last.is_some_and(|last| last >= key) {
            return Err(OutOfOrder);
        }
        self.last = Some(key);
        let partition = key.partition();
        if self
            .current
            .as_ref()
            .is_none_or(|(current, _)| *current != partition)
        {
            self.end_partition();
            self.current = Some((partition, IdTrieBuilder::default()));
        }
        let len = row_len(&key, &value);
        let (_, rows) = self.current.as_mut().expect("started above");
        // Within a partition, numbers ascend exactly as keys do.
        rows.push(InPartition(key), value)?;
        self.bytes += len;
        self.len += 1;
        Ok(())
    }

    fn len(&self) -> usize {
        self.len
    }

    fn finish(mut self) -> PartitionedTable<K, V> {
        self.end_partition();
        PartitionedTable {
            partitions: self.partitions.finish(),
            len: self.len,
            bytes: self.bytes,
        }
    }
}

row_table!(PartitionedTable, PartitionedTableBuilder, K: PartitionKey + Encode);

impl<K: PartitionKey, V: Clone + PartialEq> PartialEq for PartitionedTable<K, V> {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len && self.bytes == other.bytes && self.partitions == other.partitions
    }
}

macro_rules! dense_ids {
    ($($id:ty),*) => {
        $( impl DenseKey for $id {
            #[inline]
            fn index(&self) -> u64 {
                self.0 as u64
            }
        } )*
    };
}
dense_ids!(
    PgId,
    PeripheralId,
    RoutingClientId,
    AgentId,
    SkillGroupId,
    ServiceId,
    CallTypeId,
    DialedNumberId,
    ScriptId,
    LabelId,
    RouterCallKey
);

impl<K: Ord + Clone + PartialEq, V: Clone + PartialEq> PartialEq for Table<K, V> {
    fn eq(&self, other: &Self) -> bool {
        self.bytes == other.bytes && self.rows == other.rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn change_logs_list_the_keys_written_once_each_and_say_when_too_many() {
        let mut t: IdTable<u64, u64> = IdTable::default();
        t.insert(5, 1);
        assert_eq!(t.drain_changes(), Changes::Keys(vec![]), "off by default");
        t.log_changes(true);
        t.insert(9, 1);
        t.insert(3, 1);
        t.update(&9, |v| *v += 1);
        t.update(&4, |v| *v += 1); // no such row: nothing written
        t.remove(&5);
        t.remove(&6); // no such row
        assert_eq!(t.drain_changes(), Changes::Keys(vec![3, 5, 9]));
        assert_eq!(t.drain_changes(), Changes::Keys(vec![]));
        for k in 0..=CHANGE_LOG_KEYS_MAX as u64 {
            t.update(&9, |v| *v = k);
        }
        assert_eq!(t.drain_changes(), Changes::All);
        assert_eq!(t.drain_changes(), Changes::Keys(vec![]));

        let mut g: GroupedTable<(u64, u64), u32> = GroupedTable::default();
        g.log_changes(true);
        g.insert((1, 2), 0);
        g.insert((1, 1), 0);
        g.update(&(1, 2), |v| *v += 1);
        g.remove(&(1, 1));
        assert_eq!(g.drain_changes(), Changes::Keys(vec![(1, 1), (1, 2)]));
        // A clone of a logging table compares equal whatever its log holds.
        g.insert((2, 1), 0);
        let mut other = g.clone();
        other.log_changes(false);
        assert!(other == g);
    }

    #[test]
    fn bytes_track_inserts_updates_and_removes() {
        let mut t: Table<u32, String> = Table::default();
        t.insert(1, "abc".into());
        assert_eq!(t.bytes(), 4 + 4 + 3);
        t.insert(1, "abcdef".into());
        assert_eq!(t.bytes(), 4 + 4 + 6);
        t.update(&1, |v| v.push('g'));
        assert_eq!(t.bytes(), 4 + 4 + 7);
        t.insert(2, String::new());
        assert_eq!(t.bytes(), t.recount_bytes());
        t.remove(&1);
        assert_eq!(t.bytes(), 8);
        assert_eq!(t.bytes(), t.recount_bytes());
    }

    #[test]
    fn clone_is_a_snapshot() {
        let mut t: Table<u32, u64> = Table::default();
        for i in 0..10_000 {
            t.insert(i, i as u64);
        }
        let snapshot = t.clone();
        t.update(&5, |v| *v = 99);
        t.remove(&6);
        assert_eq!(snapshot.get(&5), Some(&5));
        assert_eq!(snapshot.get(&6), Some(&6));
        assert_eq!(t.get(&5), Some(&99));
        assert_eq!(snapshot.len(), 10_000);
    }

    #[test]
    fn partitioned_table_iterates_in_key_order_and_snapshots() {
        let key = |peripheral, call_id| PeripheralCallKey {
            peripheral: PeripheralId(peripheral),
            call_id,
        };
        let mut t: PartitionedTable<PeripheralCallKey, u64> = PartitionedTable::default();
        // Interleaved partitions and numbers far apart, so the tries grow and collapse.
        for i in 0..2_000u64 {
            t.insert(key((i % 3) as u32 + 1, i * 7919 % 100_003), i);
        }
        assert_eq!(t.len(), 2_000);
        let keys: Vec<_> = t.keys().copied().collect();
        assert!(keys.windows(2).all(|pair| pair[0] < pair[1]));
        assert_eq!(t.bytes(), t.recount_bytes());

        let snapshot = t.clone();
        let first = keys[0];
        t.update(&first, |v| *v = u64::MAX);
        for k in &keys[1..=1_000] {
            assert!(t.remove(k).is_some());
        }
        assert_eq!(t.remove(&keys[1]), None);
        assert_eq!(t.len(), 1_000);
        assert_eq!(t.bytes(), t.recount_bytes());
        assert_eq!(t.get(&first), Some(&u64::MAX));
        assert_ne!(snapshot.get(&first), Some(&u64::MAX));
        assert_eq!(snapshot.len(), 2_000);
        assert!(keys.iter().all(|k| snapshot.contains(k)));

        // Emptying a partition drops it, and a rebuild from sorted rows is equal.
        for k in keys.iter().filter(|k| k.peripheral == PeripheralId(2)) {
            t.remove(k);
        }
        assert!(t.keys().all(|k| k.peripheral != PeripheralId(2)));
        let rows: Vec<_> = t.iter().map(|(k, v)| (*k, *v)).collect();
        assert_eq!(PartitionedTable::from_sorted(rows).unwrap(), t);
        assert!(
            PartitionedTable::<PeripheralCallKey, u64>::from_sorted(vec![
                (key(2, 1), 0),
                (key(1, 5), 0)
            ])
            .is_err()
        );
    }

    #[test]
    fn request_partitions_order_like_the_key() {
        let key = |client, incarnation, request_id| RouteRequestKey {
            routing_client: RoutingClientId(client),
            pg_incarnation: incarnation,
            request_id,
        };
        let keys = [
            key(1, 1, 9),
            key(1, 2, 1),
            key(2, 0, 3),
            key(2, 0, 4),
            key(3, u32::MAX, 0),
        ];
        for pair in keys.windows(2) {
            assert!(pair[0].partition() <= pair[1].partition());
        }
        let mut t: PartitionedTable<RouteRequestKey, ()> = PartitionedTable::default();
        for k in keys.iter().rev() {
            t.insert(*k, ());
        }
        assert!(t.keys().copied().eq(keys.iter().copied()));
    }

    #[test]
    fn object_ref_partitions_order_like_the_key() {
        use tandem_model::config::ObjectRef::*;
        let mut refs = vec![
            Label(LabelId(1)),
            Pg(PgId(u32::MAX)),
            Agent(AgentId(7)),
            SkillGroupMember(AgentId(7), SkillGroupId(2)),
            SkillGroupMember(AgentId(3), SkillGroupId(9)),
            Peripheral(PeripheralId(1)),
            RoutingClient(RoutingClientId(4)),
            SkillGroup(SkillGroupId(8)),
            Service(ServiceId(2)),
            ServiceMember(ServiceId(2), SkillGroupId(1)),
            CallType(CallTypeId(5)),
            DialedNumber(DialedNumberId(6)),
            Script(ScriptId(3)),
            CallTypeMap(CallTypeId(5), ScriptId(u32::MAX)),
            CallTypeMap(CallTypeId(6), ScriptId(0)),
            Agent(AgentId(u32::MAX)),
        ];
        refs.sort();
        for pair in refs.windows(2) {
            let order =
                |r: &tandem_model::config::ObjectRef| (r.partition(), r.index_in_partition());
            assert!(order(&pair[0]) < order(&pair[1]), "{pair:?}");
        }
        let mut t: PartitionedTable<tandem_model::config::ObjectRef, u32> =
            PartitionedTable::default();
        for r in refs.iter().rev() {
            t.insert(*r, 1);
        }
        assert!(t.keys().copied().eq(refs.iter().copied()));
    }

    #[test]
    fn from_sorted_rejects_disorder() {
        assert!(Table::<u32, u32>::from_sorted(vec![(1, 1), (1, 2)]).is_err());
        assert!(Table::<u32, u32>::from_sorted(vec![(2, 1), (1, 2)]).is_err());
        assert_eq!(
            Table::<u32, u32>::from_sorted(vec![(1, 1), (2, 2)])
                .unwrap()
                .bytes(),
            16
        );
    }
}
