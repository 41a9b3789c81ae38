//! `IdTrie`: a persistent (copy-on-write) radix trie over integer keys, iterated in key order.
//!
//! Configuration ids are small integers chosen densely by their authors, and the hot path looks
//! rows up by them on every input. A radix trie answers such a lookup with one pointer per level
//! and no key comparisons; the upper levels of a table of 100,000 rows fit in a few kilobytes and
//! stay in cache, so a lookup costs about one cache miss (the leaf) where a balanced tree costs
//! one per level plus a binary search in each node.
//!
//! Nodes are shared through `Arc`: cloning the trie is O(1), and a write copies only the nodes on
//! its path that a clone still shares. Empty nodes are pruned on removal, so a table whose keys
//! slide upward (router call keys, timers) keeps only the nodes its live keys need. The trie
//! spans only the range its keys occupy: it grows a level when a key falls outside, and drops
//! root levels left with a single child, so its height follows the width of the key window.

use std::sync::Arc;

/// A key that maps to an integer in an order-preserving way: `a < b` exactly when
/// `a.index() < b.index()`.
pub trait DenseKey: Copy + Ord {
    fn index(&self) -> u64;
}

const BITS: u32 = 5;
const FANOUT: usize = 1 << BITS;
const MASK: u64 = (FANOUT as u64) - 1;
/// Levels needed for any 64-bit key.
const HEIGHT_MAX: usize = 64usize.div_ceil(BITS as usize);

// A branch is padded to a leaf's size; branches are about one node in 32, so boxing the leaf
// slots would cost an extra pointer on every lookup for little memory.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
enum Node<K, V> {
    Branch {
        children: [Option<Arc<Node<K, V>>>; FANOUT],
        /// Bit i is set when child i exists, so that a walk skips empty slots in one step.
        occupied: u32,
    },
    Leaf {
        slots: [Option<(K, V)>; FANOUT],
        /// Bit i is set when slot i holds a row.
        occupied: u32,
    },
}

impl<K, V> Node<K, V> {
    fn branch() -> Self {
        Node::Branch {
            children: std::array::from_fn(|_| None),
            occupied: 0,
        }
    }

    fn leaf() -> Self {
        Node::Leaf {
            slots: std::array::from_fn(|_| None),
            occupied: 0,
        }
    }

    fn is_empty(&self) -> bool {
        self.occupied() == 0
    }

    #[inline]
    fn occupied(&self) -> u32 {
        match self {
            Node::Branch { occupied, .. } | Node::Leaf { occupied, .. } => *occupied,
        }
    }
}

/// The first set bit of `occupied` at or after `from`, if any.
#[inline]
fn next_occupied(occupied: u32, from: usize) -> Option<usize> {
    if from >= FANOUT {
        return None;
    }
    let rest = occupied >> from;
    (rest != 0).then(|| from + rest.trailing_zeros() as usize)
}

/// `Arc::make_mut` without its compare-and-swap, for the `Arc`s this module and [`crate::table`]
/// keep private: a write costs one of these per trie level, and the swap was a tenth of the
/// router's instructions.
///
/// No `Weak` is ever made to these allocations, so a strong count of one, seen through the
/// `&mut Arc` that holds it, proves that nothing else can reach the value: no other thread can
/// clone an `Arc` it does not hold.
#[inline]
pub(crate) fn unique_mut<T: Clone>(arc: &mut Arc<T>) -> &mut T {
    #[cold]
    fn copy<T: Clone>(arc: &mut Arc<T>) {
        *arc = Arc::new(T::clone(arc));
    }
    if Arc::strong_count(arc) != 1 {
        copy(arc);
    } else {
        // Pairs with the release decrement of a clone dropped on another thread (a snapshot's
        // exporter), so its reads of the value happen before the writes that follow.
        std::sync::atomic::fence(std::sync::atomic::Ordering::Acquire);
    }
    // SAFETY: the count is one and no `Weak` exists (see above), so this `Arc` is the only
    // path to the value, and the `&mut` borrow of it is exclusive for the returned lifetime.
    unsafe { &mut *Arc::as_ptr(arc).cast_mut() }
}

/// Asks the processor to start loading the cache line at `address` without waiting for it. A
/// hint only: it never faults and changes nothing.
#[inline(always)]
pub(crate) fn prefetch(address: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch instruction reads no memory architecturally and cannot fault, whatever
    // the address.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(address as *const i8);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = address;
}

/// Starts loading the cache lines of `value`, at most `lines_max` of them from its start.
#[inline(always)]
pub(crate) fn prefetch_bytes<T: ?Sized>(value: &T, lines_max: usize) {
    let start = value as *const T as *const u8;
    let len = std::mem::size_of_val(value);
    // The lines the value's bytes span, counted from the line its first byte is in.
    let lines = ((start as usize % 64 + len).div_ceil(64)).min(lines_max);
    for line in 0..lines {
        prefetch(start.wrapping_add(line * 64));
    }
}

/// The digit of `index` at `level` (0 is the leaf level).
#[inline]
fn digit(index: u64, level: usize) -> usize {
    let shift = BITS as usize * level;
    if shift >= 64 {
        0
    } else {
        ((index >> shift) & MASK) as usize
    }
}

/// The low bits that a trie of `height` levels spans.
#[inline]
fn span_mask(height: usize) -> u64 {
    let bits = BITS as usize * height;
    if bits >= 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    }
}

#[derive(Clone, Debug)]
pub struct IdTrie<K, V> {
    root: Option<Arc<Node<K, V>>>,
    height: usize,
    /// The high bits every key shares (the low bits the trie spans are zero): the trie covers
    /// only the range its keys occupy, so keys that slide upward in time (timers, router call
    /// keys) need as few levels as the width of their window, not of their magnitude.
    base: u64,
    len: usize,
    /// The smallest key's index (meaningful when `len > 0`): timers ask for the earliest due
    /// time on every input, and this answers without a walk.
    min_index: u64,
}

impl<K, V> Default for IdTrie<K, V> {
    fn default() -> Self {
        IdTrie {
            root: None,
            height: 0,
            base: 0,
            len: 0,
            min_index: 0,
        }
    }
}

impl<K: DenseKey, V: Clone> IdTrie<K, V> {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether the trie's span holds `index`.
    #[inline]
    fn fits(&self, index: u64) -> bool {
        self.root.is_some() && index & !span_mask(self.height) == self.base
    }

    /// The smallest key's index, if any.
    #[inline]
    pub fn min_index(&self) -> Option<u64> {
        (self.len > 0).then_some(self.min_index)
    }

    /// The row with the smallest key.
    #[inline]
    pub fn first(&self) -> Option<(&K, &V)> {
        self.iter_from(self.min_index()?).next()
    }

    #[inline]
    pub fn get(&self, key: &K) -> Option<&V> {
        let index = key.index();
        match self.leaf_of(index)? {
            Node::Leaf { slots, .. } => slots[digit(index, 0)].as_ref().map(|(_, v)| v),
            Node::Branch { .. } => unreachable!("level 0 holds only leaves"),
        }
    }

    /// The leaf that would hold `key`, found through the branches alone (no read of the leaf).
    #[inline]
    fn leaf_of(&self, index: u64) -> Option<&Node<K, V>> {
        if !self.fits(index) {
            return None;
        }
        let mut node = self.root.as_deref()?;
        let mut level = self.height - 1;
        while level > 0 {
            let Node::Branch { children, .. } = node else {
                unreachable!("levels above 0 hold only branches")
            };
            node = children[digit(index, level)].as_deref()?;
            level -= 1;
        }
        Some(node)
    }

    /// Starts loading the first cache line of the leaf that holds `key` (its reference count and
    /// kind), reading only branches.
    #[inline]
    pub fn prefetch_leaf(&self, key: &K) {
        if let Some(leaf) = self.leaf_of(key.index()) {
            // The allocation's first line holds the reference counts, just before the node.
            let node = leaf as *const Node<K, V> as *const u8;
            prefetch(node.wrapping_sub(16));
            prefetch(node);
        }
    }

    /// Starts loading the first `lines_max` cache lines of the slot of `key`. Reads the leaf's
    /// kind, so it is best called once [`IdTrie::prefetch_leaf`] had time to bring that in.
    #[inline]
    pub fn prefetch_slot(&self, key: &K, lines_max: usize) {
        let index = key.index();
        if let Some(Node::Leaf { slots, .. }) = self.leaf_of(index) {
            prefetch_bytes(&slots[digit(index, 0)], lines_max);
        }
    }

    /// The row for `key`, made unique (copied from a clone that shares it) for writing.
    #[inline]
    pub fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        let index = key.index();
        if !self.fits(index) {
            return None;
        }
        let mut node = unique_mut(self.root.as_mut()?);
        let mut level = self.height - 1;
        loop {
            match node {
                Node::Branch { children, .. } => {
                    node = unique_mut(children[digit(index, level)].as_mut()?);
                    level -= 1;
                }
                Node::Leaf { slots, .. } => {
                    return slots[digit(index, 0)].as_mut().map(|(_, v)| v);
                }
            }
        }
    }

    /// Inserts or replaces a row, returning the previous value.
    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        let index = key.index();
        if self.root.is_none() {
            self.height = 1;
            self.base = index & !span_mask(1);
            self.root = Some(Arc::new(Node::leaf()));
        }
        self.grow_to_span(index);
        let mut node = unique_mut(self.root.as_mut().expect("created above"));
        let mut level = self.height - 1;
        loop {
            match node {
                Node::Branch { children, occupied } => {
                    let d = digit(index, level);
                    let child = &mut children[d];
                    if child.is_none() {
                        *occupied |= 1 << d;
                        *child = Some(Arc::new(if level == 1 {
                            Node::leaf()
                        } else {
                            Node::branch()
                        }));
                    }
                    node = unique_mut(child.as_mut().expect("filled above"));
                    level -= 1;
                }
                Node::Leaf { slots, occupied } => {
                    let d = digit(index, 0);
                    let previous = slots[d].replace((key, value)).map(|(_, v)| v);
                    if previous.is_none() {
                        *occupied |= 1 << d;
                        if self.len == 0 || index < self.min_index {
                            self.min_index = index;
                        }
                        self.len += 1;
                    }
                    return previous;
                }
            }
        }
    }

    /// Adds root levels until the trie's span holds `index` (the trie must not be empty).
    fn grow_to_span(&mut self, index: u64) {
        while !self.fits(index) {
            // The old root becomes one child of a taller root, at its keys' digit there.
            let old = self.root.take().expect("a trie that grows has a root");
            let d = digit(self.base, self.height);
            let mut children: [Option<Arc<Node<K, V>>>; FANOUT] = std::array::from_fn(|_| None);
            children[d] = Some(old);
            self.root = Some(Arc::new(Node::Branch {
                children,
                occupied: 1 << d,
            }));
            self.height += 1;
            self.base &= !span_mask(self.height);
        }
    }

    /// Hangs a filled leaf whose first slot is `start` (a multiple of the fanout) in the trie,
    /// where no leaf is yet: one walk down per leaf instead of one per row.
    fn attach_leaf(&mut self, start: u64, leaf: Arc<Node<K, V>>, rows: usize, min_index: u64) {
        debug_assert_eq!(start & MASK, 0);
        if self.root.is_none() {
            self.root = Some(leaf);
            self.height = 1;
            self.base = start;
            self.len = rows;
            self.min_index = min_index;
            return;
        }
        self.grow_to_span(start);
        let mut node = unique_mut(self.root.as_mut().expect("grown above"));
        let mut level = self.height - 1;
        loop {
            let Node::Branch { children, occupied } = node else {
                unreachable!("a leaf's start differs from every other leaf's, so a root leaf grew")
            };
            let d = digit(start, level);
            *occupied |= 1 << d;
            if level == 1 {
                debug_assert!(children[d].is_none(), "each leaf is attached once");
                children[d] = Some(leaf);
                break;
            }
            let child = children[d].get_or_insert_with(|| Arc::new(Node::branch()));
            node = unique_mut(child);
            level -= 1;
        }
        if self.len == 0 || min_index < self.min_index {
            self.min_index = min_index;
        }
        self.len += rows;
    }

    pub fn remove(&mut self, key: &K) -> Option<V> {
        let index = key.index();
        if !self.fits(index) {
            return None;
        }
        // Look first, so that a miss copies no shared node.
        self.get(key)?;
        let root = self.root.as_mut()?;
        let removed = remove_from(root, index, self.height - 1);
        if removed.is_some() {
            self.len -= 1;
            if root.is_empty() {
                self.root = None;
                self.height = 0;
            } else {
                self.collapse_root();
                if index == self.min_index {
                    let next = self.iter_from(index + 1).next().map(|(k, _)| k.index());
                    self.min_index = next.expect("a non-empty trie has a smallest key");
                }
            }
        }
        removed
    }

    /// Drops root levels with a single child, so that a window of keys that has slid upward
    /// keeps the height its width needs.
    fn collapse_root(&mut self) {
        while self.height > 1 {
            let Some(Node::Branch { occupied, .. }) = self.root.as_deref() else {
                return;
            };
            if occupied.count_ones() != 1 {
                return;
            }
            let d = occupied.trailing_zeros() as usize;
            let root = unique_mut(self.root.as_mut().expect("matched above"));
            let Node::Branch { children, .. } = root else {
                unreachable!("matched above")
            };
            let child = children[d].take().expect("its bit is set");
            self.height -= 1;
            self.base |= (d as u64) << (BITS as usize * self.height);
            self.root = Some(child);
        }
    }

    /// Rows in key order.
    pub fn iter(&self) -> Iter<'_, K, V> {
        self.iter_from(0)
    }

    /// Rows in key order from the first key whose index is at least `start`.
    pub fn iter_from(&self, start: u64) -> Iter<'_, K, V> {
        let mut iter = Iter {
            stack: [(None, 0); HEIGHT_MAX],
            depth: 0,
        };
        let Some(root) = self.root.as_deref() else {
            return iter;
        };
        // Keys below the span start at its beginning; keys above it find nothing.
        let start = if start & !span_mask(self.height) == self.base {
            start
        } else if start < self.base {
            self.base
        } else {
            return iter;
        };
        // Descend along `start`'s digits; each level resumes after the child taken.
        let mut node = root;
        let mut level = self.height - 1;
        loop {
            let d = digit(start, level);
            match node {
                Node::Branch { children, .. } => match children[d].as_deref() {
                    Some(child) => {
                        iter.stack[iter.depth] = (Some(node), d + 1);
                        iter.depth += 1;
                        node = child;
                        level -= 1;
                    }
                    None => {
                        iter.stack[iter.depth] = (Some(node), d + 1);
                        iter.depth += 1;
                        return iter;
                    }
                },
                Node::Leaf { .. } => {
                    iter.stack[iter.depth] = (Some(node), d);
                    iter.depth += 1;
                    return iter;
                }
            }
        }
    }

    /// The first row whose key is greater than `key`.
    pub fn first_after(&self, key: &K) -> Option<(&K, &V)> {
        let index = key.index();
        if index == u64::MAX {
            return None;
        }
        self.iter_from(index + 1).next()
    }

    /// Builds a trie from rows in strictly ascending key order; the offending index otherwise.
    #[cfg(test)]
    pub fn from_sorted(rows: impl IntoIterator<Item = (K, V)>) -> Result<Self, usize> {
        let mut builder = IdTrieBuilder::default();
        for (i, (key, value)) in rows.into_iter().enumerate() {
            builder.push(key, value).map_err(|OutOfOrder| i)?;
        }
        Ok(builder.finish())
    }
}

/// A key that is not above the key before it, in rows that must ascend strictly.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutOfOrder;

/// Builds an [`IdTrie`] from rows in strictly ascending key order, one row at a time: each row
/// goes straight into the leaf being filled, and a full leaf is hung in the trie with one walk
/// down. No row is moved after it is placed, and no list of all rows is ever held.
pub struct IdTrieBuilder<K, V> {
    trie: IdTrie<K, V>,
    /// The leaf being filled, not yet in the trie.
    leaf: Option<FillingLeaf<K, V>>,
    /// The index of the last row pushed.
    last: Option<u64>,
}

/// A leaf an [`IdTrieBuilder`] fills.
struct FillingLeaf<K, V> {
    /// The index of its first slot.
    start: u64,
    node: Arc<Node<K, V>>,
    rows: usize,
    /// The index of its first row.
    min_index: u64,
}

impl<K, V> Default for IdTrieBuilder<K, V> {
    fn default() -> Self {
        IdTrieBuilder {
            trie: IdTrie::default(),
            leaf: None,
            last: None,
        }
    }
}

impl<K: DenseKey, V: Clone> IdTrieBuilder<K, V> {
    /// Rows pushed so far.
    pub fn len(&self) -> usize {
        self.trie.len + self.leaf.as_ref().map_or(0, |leaf| leaf.rows)
    }

    /// Adds a row after every row pushed before; a key not above the last one is refused and
    /// changes nothing.
    #[inline]
    pub fn push(&mut self, key: K, value: V) -> Result<(), OutOfOrder> {
        let index = key.index();
        if self.last.is_some_and(|last| last >= index) {
            return Err(OutOfOrder);
        }
        self.last = Some(index);
        let start = index & !MASK;
        if self.leaf.as_ref().is_none_or(|leaf| leaf.start != start) {
            self.hang_leaf();
            self.leaf = Some(FillingLeaf {
                start,
                node: Arc::new(Node::leaf()),
                rows: 0,
                min_index: index,
            });
        }
        let leaf = self.leaf.as_mut().expect("started above");
        let Node::Leaf { slots, occupied } = unique_mut(&mut leaf.node) else {
            unreachable!("the builder's leaf is a leaf")
        };
        let d = digit(index, 0);
        slots[d] = Some((key, value));
        *occupied |= 1 << d;
        leaf.rows += 1;
        Ok(())
    }

    fn hang_leaf(&mut self) {
        if let Some(leaf) = self.leaf.take() {
            self.trie
                .attach_leaf(leaf.start, leaf.node, leaf.rows, leaf.min_index);
        }
    }

    pub fn finish(mut self) -> IdTrie<K, V> {
        self.hang_leaf();
        self.trie
    }
}

fn remove_from<K: Clone, V: Clone>(
    node: &mut Arc<Node<K, V>>,
    index: u64,
    level: usize,
) -> Option<V> {
    match unique_mut(node) {
        Node::Branch { children, occupied } => {
            let d = digit(index, level);
            let child = children[d].as_mut()?;
            let removed = remove_from(child, index, level - 1);
            if removed.is_some() && child.is_empty() {
                children[d] = None;
                *occupied &= !(1 << d);
            }
            removed
        }
        Node::Leaf { slots, occupied } => {
            let d = digit(index, 0);
            let removed = slots[d].take().map(|(_, v)| v);
            if removed.is_some() {
                *occupied &= !(1 << d);
            }
            removed
        }
    }
}

/// An in-order walk: a stack of nodes with the next slot to visit in each.
pub struct Iter<'a, K, V> {
    stack: [(Option<&'a Node<K, V>>, usize); HEIGHT_MAX],
    depth: usize,
}

impl<'a, K, V> Iterator for Iter<'a, K, V> {
    type Item = (&'a K, &'a V);

    fn next(&mut self) -> Option<Self::Item> {
        while self.depth > 0 {
            let top = self.depth - 1;
            let (node, from) = self.stack[top];
            let node = node.expect("entries below depth are set");
            let Some(next) = next_occupied(node.occupied(), from) else {
                self.depth -= 1;
                continue;
            };
            self.stack[top].1 = next + 1;
            match node {
                Node::Leaf { slots, .. } => {
                    if let Some((k, v)) = &slots[next] {
                        return Some((k, v));
                    }
                }
                Node::Branch { children, .. } => {
                    if let Some(child) = children[next].as_deref() {
                        self.stack[self.depth] = (Some(child), 0);
                        self.depth += 1;
                    }
                }
            }
        }
        None
    }
}

impl<K: DenseKey, V: Clone + PartialEq> PartialEq for IdTrie<K, V> {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len
            && self
                .iter()
                .zip(other.iter())
                .all(|((ka, va), (kb, vb))| ka == kb && va == vb)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u64, u32),
        Remove(u64),
        Update(u64, u32),
        Snapshot,
    }

    fn key() -> impl Strategy<Value = u64> {
        prop_oneof![0u64..70, 0u64..5_000, any::<u64>(), Just(u64::MAX)]
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (key(), any::<u32>()).prop_map(|(k, v)| Op::Insert(k, v)),
            2 => key().prop_map(Op::Remove),
            2 => (key(), any::<u32>()).prop_map(|(k, v)| Op::Update(k, v)),
            1 => Just(Op::Snapshot),
        ]
    }

    proptest! {
        #[test]
        fn behaves_as_an_ordered_map(ops in proptest::collection::vec(op(), 0..300), probe in key()) {
            let mut trie: IdTrie<u64, u32> = IdTrie::default();
            let mut model: BTreeMap<u64, u32> = BTreeMap::new();
            let mut snapshots: Vec<(IdTrie<u64, u32>, BTreeMap<u64, u32>)> = Vec::new();
            for op in ops {
                match op {
                    Op::Insert(k, v) => prop_assert_eq!(trie.insert(k, v), model.insert(k, v)),
                    Op::Remove(k) => prop_assert_eq!(trie.remove(&k), model.remove(&k)),
                    Op::Update(k, v) => {
                        let a = trie.get_mut(&k).map(|x| std::mem::replace(x, v));
                        let b = model.get_mut(&k).map(|x| std::mem::replace(x, v));
                        prop_assert_eq!(a, b);
                    }
                    Op::Snapshot => snapshots.push((trie.clone(), model.clone())),
                }
                prop_assert_eq!(trie.len(), model.len());
            }
            prop_assert!(trie.iter().map(|(k, v)| (*k, *v)).eq(model.iter().map(|(k, v)| (*k, *v))));
            prop_assert!(trie.iter_from(probe).map(|(k, _)| *k).eq(model.range(probe..).map(|(k, _)| *k)));
            prop_assert_eq!(trie.first_after(&probe).map(|(k, _)| *k), model.range(probe..).find(|(k, _)| **k > probe).map(|(k, _)| *k));
            prop_assert_eq!(trie.get(&probe), model.get(&probe));
            prop_assert_eq!(trie.min_index(), model.keys().next().copied());
            prop_assert_eq!(trie.first().map(|(k, _)| *k), model.keys().next().copied());
            // Every snapshot still holds exactly what the map held when it was taken.
            for (snapshot, expected) in &snapshots {
                prop_assert!(snapshot.iter().map(|(k, v)| (*k, *v)).eq(expected.iter().map(|(k, v)| (*k, *v))));
            }
        }
    }

    /// A prefetch walks the trie without writing it: on an empty trie, for keys outside its span
    /// and for absent keys it requests nothing and changes nothing.
    #[test]
    fn prefetch_reads_only() {
        let mut trie: IdTrie<u64, [u64; 40]> = IdTrie::default();
        trie.prefetch_leaf(&7);
        trie.prefetch_slot(&7, usize::MAX);
        for k in (0..5_000u64).step_by(3) {
            trie.insert(k, [k; 40]);
        }
        let before = trie.clone();
        for k in [0, 1, 2, 3, 4_998, 4_999, 1 << 40, u64::MAX] {
            trie.prefetch_leaf(&k);
            trie.prefetch_slot(&k, 0);
            trie.prefetch_slot(&k, 3);
            trie.prefetch_slot(&k, usize::MAX);
        }
        assert!(trie == before);
        assert_eq!(trie.len(), 1_667);
    }

    #[test]
    fn removing_every_key_prunes_every_node() {
        let mut trie: IdTrie<u64, u64> = IdTrie::default();
        for k in 0..10_000u64 {
            trie.insert(k * 7, k);
        }
        for k in 0..10_000u64 {
            assert_eq!(trie.remove(&(k * 7)), Some(k));
        }
        assert!(trie.root.is_none());
        assert_eq!(trie.iter().count(), 0);
    }

    #[test]
    fn a_sliding_window_of_keys_keeps_a_small_height() {
        // Timers due within about 30 s of "now", keyed by their due time in ms since 1970.
        let mut trie: IdTrie<u64, u64> = IdTrie::default();
        let start = 1_795_255_200_000u64;
        let mut heights = 0u64;
        for t in 0..200_000u64 {
            trie.insert(start + t * 7 + 30_000, t);
            if t >= 4_000 {
                assert_eq!(
                    trie.remove(&(start + (t - 4_000) * 7 + 30_000)),
                    Some(t - 4_000)
                );
            }
            // 4,000 keys over a span of 28,000 ms need 4 levels (32^3 < 28,000 < 32^4), one or
            // two more while the window straddles a boundary of a higher digit.
            assert!(trie.height <= 6, "height {} at step {t}", trie.height);
            heights += trie.height as u64;
        }
        // Not the 9 levels that keys of 41 bits would need from zero.
        assert!(
            heights as f64 / 200_000.0 < 4.5,
            "mean height {}",
            heights as f64 / 200_000.0
        );
        assert_eq!(trie.len(), 4_000);
        assert_eq!(trie.min_index(), Some(start + 196_000 * 7 + 30_000));
    }

    #[test]
    fn from_sorted_rejects_disorder() {
        assert_eq!(
            IdTrie::<u64, ()>::from_sorted([(1, ()), (1, ())]).err(),
            Some(1)
        );
        assert_eq!(
            IdTrie::<u64, ()>::from_sorted([(2, ()), (1, ())]).err(),
            Some(1)
        );
        assert_eq!(
            IdTrie::<u64, ()>::from_sorted([(1, ()), (2, ())])
                .unwrap()
                .len(),
            2
        );
    }
}
