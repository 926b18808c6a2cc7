//! The recent writes of a store, kept in memory so a follower can apply only what changed:
//! a bounded window of [`Change`]s in revision order. A follower that fell behind the window
//! is told so and takes a whole snapshot instead.

use super::Change;
use std::collections::VecDeque;
use std::sync::Mutex;

/// Changes kept, at most.
pub const WINDOW: usize = 4096;

/// A bounded, ordered window of changes.
#[derive(Debug)]
pub struct ChangeLog {
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// The revision before the oldest change kept (every later change is kept).
    base: u64,
    changes: VecDeque<Change>,
}

impl ChangeLog {
    /// A log that starts at `revision` (nothing before it can be served).
    pub fn new(revision: u64) -> ChangeLog {
        ChangeLog {
            inner: Mutex::new(Inner {
                base: revision,
                changes: VecDeque::new(),
            }),
        }
    }

    /// Records a committed change; called in commit order.
    pub fn push(&self, c: Change) {
        if let Ok(mut g) = self.inner.lock() {
            if g.changes.len() == WINDOW
                && let Some(old) = g.changes.pop_front()
            {
                g.base = old.revision;
            }
            g.changes.push_back(c);
        }
    }

    /// The changes after `rev`; `None` when some of them are no longer kept.
    pub fn since(&self, rev: u64) -> Option<Vec<Change>> {
        let g = self.inner.lock().ok()?;
        if rev < g.base {
            return None;
        }
        Some(
            g.changes
                .iter()
                .filter(|c| c.revision > rev)
                .cloned()
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::Kind;

    fn ch(revision: u64) -> Change {
        Change {
            revision,
            kind: Kind::Routes,
            id: revision.to_string(),
            record: None,
        }
    }

    #[test]
    fn serves_the_window_and_refuses_what_fell_out() {
        let log = ChangeLog::new(10);
        assert_eq!(log.since(10), Some(vec![]));
        assert_eq!(log.since(9), None, "before the log started");
        for r in 11..11 + WINDOW as u64 + 5 {
            log.push(ch(r));
        }
        let last = 10 + WINDOW as u64 + 5;
        assert_eq!(log.since(last - 2).unwrap().len(), 2);
        assert_eq!(log.since(last).unwrap().len(), 0);
        assert_eq!(
            log.since(10),
            None,
            "the first changes fell out of the window"
        );
        assert_eq!(log.since(15).map(|v| v.len()), Some(WINDOW));
    }
}
