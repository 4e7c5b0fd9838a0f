//! When an operation also sweeps expired state.

use std::ops::{Deref, DerefMut};

/// The fewest operations between two sweeps.
pub(crate) const MIN_OPS_BETWEEN_SWEEPS: usize = 256;

/// State swept by the operations themselves, with no background task.
///
/// A sweep visits every entry, so sweeping every fixed number of operations would cost
/// O(entries) per operation with many keys. Instead the next sweep comes after as many
/// operations as entries survived the last one (at least [`MIN_OPS_BETWEEN_SWEEPS`]): a
/// sweep costs O(1) per operation amortized, and an expired entry is gone at the latest
/// `max(256, n) + 1` operations after it expired, `n` being the number of entries held
/// then.
pub(crate) struct Swept<T> {
    data: T,
    ops_left: usize,
}

impl<T> Swept<T> {
    pub(crate) fn new(data: T) -> Self {
        Swept {
            data,
            ops_left: MIN_OPS_BETWEEN_SWEEPS,
        }
    }

    /// Counts one operation; `true` when this one must sweep (then call [`Swept::swept`]).
    pub(crate) fn due(&mut self) -> bool {
        match self.ops_left.checked_sub(1) {
            Some(left) => {
                self.ops_left = left;
                false
            }
            None => true,
        }
    }

    /// Records a sweep that left `remaining` entries.
    pub(crate) fn swept(&mut self, remaining: usize) {
        self.ops_left = remaining.max(MIN_OPS_BETWEEN_SWEEPS);
    }
}

impl<T> Deref for Swept<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.data
    }
}

impl<T> DerefMut for Swept<T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.data
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_sweep_comes_after_the_minimum_and_later_ones_scale_with_the_entries() {
        let mut s = Swept::new(());
        let first = (1..).find(|_| s.due()).unwrap_or(0);
        assert_eq!(first, MIN_OPS_BETWEEN_SWEEPS + 1);
        s.swept(10_000);
        let next = (1..).find(|_| s.due()).unwrap_or(0);
        assert_eq!(next, 10_001);
        s.swept(3);
        let small = (1..).find(|_| s.due()).unwrap_or(0);
        assert_eq!(small, MIN_OPS_BETWEEN_SWEEPS + 1);
    }
}
