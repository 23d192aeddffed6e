//! A map from message id to a small value, for the queue's in-memory index. Ids come from one
//! counter and mostly arrive in order, so they are kept in chunks of `CHUNK` consecutive ids (a
//! bit per slot says which are present), each chunk boxed in a B-tree by its first id. A B-tree
//! of single entries filled in order leaves its nodes about half full (a node splits as it
//! fills at its right edge): about 49 bytes a 16-byte value, where a chunk holds one in
//! about 18. A chunk goes as its last entry does.

use std::collections::BTreeMap;

const CHUNK: usize = 16;

#[derive(Clone)]
struct Chunk<V> {
    present: u16,
    slots: [V; CHUNK],
}

pub(super) struct ById<V> {
    chunks: BTreeMap<i64, Box<Chunk<V>>>,
    len: usize,
}

impl<V> Default for ById<V> {
    fn default() -> Self {
        Self {
            chunks: BTreeMap::new(),
            len: 0,
        }
    }
}

/// The chunk an id is in (its first id over `CHUNK`), and its slot there.
fn place(id: i64) -> (i64, usize) {
    (
        id.div_euclid(CHUNK as i64),
        id.rem_euclid(CHUNK as i64) as usize,
    )
}

impl<V: Copy + Default> ById<V> {
    pub(super) fn len(&self) -> usize {
        self.len
    }

    pub(super) fn get(&self, id: &i64) -> Option<&V> {
        let (chunk, slot) = place(*id);
        let c = self.chunks.get(&chunk)?;
        (c.present & (1 << slot) != 0).then(|| &c.slots[slot])
    }

    /// Set `id`'s value; the one it replaces, if any.
    pub(super) fn insert(&mut self, id: i64, value: V) -> Option<V> {
        let (chunk, slot) = place(id);
        let c = self.chunks.entry(chunk).or_insert_with(|| {
            Box::new(Chunk {
                present: 0,
                slots: [V::default(); CHUNK],
            })
        });
        let old = (c.present & (1 << slot) != 0).then_some(c.slots[slot]);
        c.present |= 1 << slot;
        c.slots[slot] = value;
        if old.is_none() {
            self.len += 1;
        }
        old
    }

    pub(super) fn remove(&mut self, id: &i64) -> Option<V> {
        let (chunk, slot) = place(*id);
        let c = self.chunks.get_mut(&chunk)?;
        if c.present & (1 << slot) == 0 {
            return None;
        }
        c.present &= !(1 << slot);
        let value = c.slots[slot];
        if c.present == 0 {
            self.chunks.remove(&chunk);
        }
        self.len -= 1;
        Some(value)
    }

    /// The lowest id present.
    pub(super) fn first_id(&self) -> Option<i64> {
        let (chunk, c) = self.chunks.first_key_value()?;
        Some(chunk * CHUNK as i64 + i64::from(c.present.trailing_zeros()))
    }

    /// Bytes held: the chunks, and the B-tree's entries (its nodes counted half full).
    pub(super) fn bytes(&self) -> usize {
        use std::mem::size_of;
        self.chunks.len() * (size_of::<Chunk<V>>() + 2 * (size_of::<i64>() + size_of::<usize>()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn it_answers_as_a_b_tree_map_does_whatever_the_order_of_inserts_and_removes() {
        // GIVEN a map and a B-tree map given the same random inserts and removes, ids spread
        // over a few chunks (negative ones too) and clustered as a queue's are
        let mut ours: ById<(i64, u16)> = ById::default();
        let mut theirs: BTreeMap<i64, (i64, u16)> = BTreeMap::new();
        for step in 0..20_000i64 {
            let id = rand::random::<i64>().rem_euclid(200) - 40;
            if rand::random::<bool>() {
                // THEN each insert replaces the same value
                assert_eq!(ours.insert(id, (step, 1)), theirs.insert(id, (step, 1)));
            } else {
                // AND each remove takes the same one
                assert_eq!(ours.remove(&id), theirs.remove(&id));
            }
            // AND the length, the first id and a lookup agree after each step
            assert_eq!(ours.len(), theirs.len());
            assert_eq!(ours.first_id(), theirs.keys().next().copied());
            assert_eq!(ours.get(&id), theirs.get(&id));
        }
        // AND once all are removed no chunk is left
        for id in theirs.keys() {
            ours.remove(id);
        }
        assert_eq!(
            (ours.len(), ours.chunks.len(), ours.first_id()),
            (0, 0, None)
        );
    }
}
