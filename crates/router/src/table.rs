//! `Table`: an ordered, persistent (copy-on-write) map that knows the exact encoded size of its
//! rows.
//!
//! Cloning a table is O(1): it shares every node with the original, and later writes copy only
//! the nodes they touch. That is how the router takes a consistent snapshot at a sequence number
//! without stopping: the snapshot is a clone of the state, exported on another thread while the
//! live state keeps changing.
//!
//! Iteration is in key order, so exports and digests are canonical.

use imbl::OrdMap;
use std::ops::RangeBounds;
use tandem_model::codec::Encode;

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
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
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

    pub fn keys(&self) -> impl Iterator<Item = &K> {
        self.rows.keys()
    }

    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.rows.values()
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

    /// Builds a table from rows in strictly ascending key order (as a state import reads them).
    /// Returns the offending index if the order is broken.
    pub fn from_sorted(rows: Vec<(K, V)>) -> Result<Self, usize> {
        for (i, pair) in rows.windows(2).enumerate() {
            if pair[0].0 >= pair[1].0 {
                return Err(i + 1);
            }
        }
        let bytes = rows
            .iter()
            .map(|(k, v)| (k.encoded_len() + v.encoded_len()) as u64)
            .sum();
        Ok(Table {
            rows: rows.into_iter().collect(),
            bytes,
        })
    }

    /// Recomputes the byte count from the rows (for invariant checks).
    pub fn recount_bytes(&self) -> u64 {
        self.rows
            .iter()
            .map(|(k, v)| (k.encoded_len() + v.encoded_len()) as u64)
            .sum()
    }
}

impl<K: Ord + Clone + PartialEq, V: Clone + PartialEq> PartialEq for Table<K, V> {
    fn eq(&self, other: &Self) -> bool {
        self.bytes == other.bytes && self.rows == other.rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
