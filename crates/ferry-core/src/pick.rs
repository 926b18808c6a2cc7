//! Choosing one of several weighted targets, pure and unit-tested, shared by upstream nodes
//! and `ai-proxy-multi` instances: members grouped by `priority` (a lower group only once
//! every member of the higher ones is skipped), then smooth weighted round robin (nginx's), a
//! consistent-hash ring (160 points per weight unit, over all members so that skipping one
//! moves only its keys), or least connections. The caller says what to skip (tried in this
//! request, unhealthy, out of budget); state lives as long as the picker.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// How a member is chosen within its priority group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    RoundRobin,
    Chash,
    LeastConn,
}

/// One candidate: its ring identity (stable across builds), weight and priority.
#[derive(Debug, Clone)]
pub struct Member {
    pub id: String,
    pub weight: u32,
    pub priority: i64,
}

/// A picker over a fixed list of members.
pub struct Picker {
    /// Effective weights (0: never picked).
    weights: Vec<u32>,
    /// Member indexes by priority group, highest priority first (weight-0 members left out).
    groups: Vec<Vec<usize>>,
    state: State,
    /// In-flight requests per member (least_conn), kept by the caller.
    pub active: Vec<AtomicUsize>,
}

enum State {
    RoundRobin(Mutex<Vec<i64>>),
    /// Sorted (point, member) pairs per group.
    Chash(Vec<Vec<(u64, usize)>>),
    LeastConn,
}

/// FNV-1a (stable across processes and versions, so every Ferry node hashes a key to the same
/// member), finished with a mix: FNV spreads short keys poorly in the high bits.
pub fn hash(bytes: &[u8]) -> u64 {
    let mut h = crate::hash::fnv1a(bytes);
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^ (h >> 33)
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

impl Picker {
    /// `zero_share`: a group whose members all have weight 0 shares its traffic equally (APISIX's
    /// `ai-proxy-multi`); otherwise weight-0 members are never picked (upstream nodes).
    pub fn new(members: &[Member], algorithm: Algorithm, zero_share: bool) -> Picker {
        let mut prios: Vec<i64> = members.iter().map(|m| m.priority).collect();
        prios.sort_unstable_by(|a, b| b.cmp(a));
        prios.dedup();
        let mut weights: Vec<u32> = members.iter().map(|m| m.weight).collect();
        if zero_share {
            for p in &prios {
                let group = || (0..members.len()).filter(|i| members[*i].priority == *p);
                if group().all(|i| weights[i] == 0) {
                    for i in group() {
                        weights[i] = 1;
                    }
                }
            }
        }
        let groups: Vec<Vec<usize>> = prios
            .iter()
            .map(|p| {
                (0..members.len())
                    .filter(|i| members[*i].priority == *p && weights[*i] > 0)
                    .collect::<Vec<_>>()
            })
            .filter(|g| !g.is_empty())
            .collect();
        let state = match algorithm {
            Algorithm::RoundRobin => State::RoundRobin(Mutex::new(vec![0; members.len()])),
            Algorithm::LeastConn => State::LeastConn,
            Algorithm::Chash => State::Chash(
                groups
                    .iter()
                    .map(|g| {
                        let div = g.iter().fold(0, |acc, i| gcd(acc, weights[*i])).max(1);
                        let mut ring = Vec::new();
                        for i in g {
                            for p in 0..(weights[*i] / div).min(1000) * 160 {
                                let point = hash(format!("{}#{p}", members[*i].id).as_bytes());
                                ring.push((point, *i));
                            }
                        }
                        ring.sort_unstable();
                        ring
                    })
                    .collect(),
            ),
        };
        Picker {
            active: members.iter().map(|_| AtomicUsize::new(0)).collect(),
            weights,
            groups,
            state,
        }
    }

    /// True when no member can ever be picked.
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// Member `i` can be picked at all (its effective weight is not 0).
    pub fn pickable(&self, i: usize) -> bool {
        self.weights.get(i).is_some_and(|w| *w > 0)
    }

    /// The next member, leaving out those `skip` names, hashing `key` for `chash`. `None` when
    /// every pickable member is skipped.
    pub fn pick(&self, skip: impl Fn(usize) -> bool, key: Option<&[u8]>) -> Option<usize> {
        let (gi, members) = self
            .groups
            .iter()
            .enumerate()
            .find(|(_, g)| g.iter().any(|i| !skip(*i)))?;
        match &self.state {
            State::RoundRobin(state) => {
                let mut cur = state.lock().ok()?;
                let mut total = 0i64;
                let mut best: Option<usize> = None;
                for &i in members.iter().filter(|i| !skip(**i)) {
                    let w = i64::from(self.weights[i]);
                    cur[i] += w;
                    total += w;
                    if best.is_none_or(|b| cur[i] > cur[b]) {
                        best = Some(i);
                    }
                }
                let b = best?;
                cur[b] -= total;
                Some(b)
            }
            State::LeastConn => members
                .iter()
                .filter(|i| !skip(**i))
                .min_by(|a, b| {
                    // fewest in flight per unit of weight; ties by index
                    let la = (self.active[**a].load(Ordering::Relaxed) as u64 + 1)
                        * u64::from(self.weights[**b]);
                    let lb = (self.active[**b].load(Ordering::Relaxed) as u64 + 1)
                        * u64::from(self.weights[**a]);
                    la.cmp(&lb)
                })
                .copied(),
            State::Chash(rings) => {
                let ring = &rings[gi];
                let h = hash(key.unwrap_or_default());
                let start = ring.partition_point(|(p, _)| *p < h);
                // walk the ring from the key's point to the first member not skipped
                (0..ring.len())
                    .map(|k| ring[(start + k) % ring.len()].1)
                    .find(|i| !skip(*i))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(spec: &[(u32, i64)]) -> Vec<Member> {
        spec.iter()
            .enumerate()
            .map(|(i, (weight, priority))| Member {
                id: format!("m{i}"),
                weight: *weight,
                priority: *priority,
            })
            .collect()
    }

    fn none(_: usize) -> bool {
        false
    }

    #[test]
    fn round_robin_follows_weights_exactly_and_smoothly() {
        let b = Picker::new(
            &members(&[(5, 0), (1, 0), (1, 0), (0, 0)]),
            Algorithm::RoundRobin,
            true,
        );
        let picks: Vec<usize> = (0..7).map(|_| b.pick(none, None).unwrap()).collect();
        let count = |n| picks.iter().filter(|p| **p == n).count();
        assert_eq!((count(0), count(1), count(2), count(3)), (5, 1, 1, 0));
        // smooth: the heavy member is not picked five times in a row
        assert_eq!(picks, vec![0, 0, 1, 0, 2, 0, 0]);
        // a retry skips what was tried; a weight-0 sibling is not a retry target
        assert_eq!(
            b.pick(|i| i == 0, None).map(|i| i == 1 || i == 2),
            Some(true)
        );
        assert_eq!(b.pick(|i| i < 3, None), None);
        assert!(!b.pickable(3));
    }

    #[test]
    fn eight_two_over_ten_requests() {
        let b = Picker::new(&members(&[(8, 0), (2, 0)]), Algorithm::RoundRobin, true);
        for _ in 0..3 {
            let picks: Vec<usize> = (0..10).map(|_| b.pick(none, None).unwrap()).collect();
            assert_eq!(picks.iter().filter(|p| **p == 0).count(), 8);
        }
    }

    #[test]
    fn priority_groups_fall_back_in_order() {
        let b = Picker::new(
            &members(&[(1, 0), (1, 10), (1, -5)]),
            Algorithm::RoundRobin,
            false,
        );
        assert_eq!(b.pick(none, None), Some(1));
        assert_eq!(b.pick(|i| i == 1, None), Some(0));
        assert_eq!(b.pick(|i| i != 2, None), Some(2));
        assert_eq!(b.pick(|_| true, None), None);
        assert!(Picker::new(&[], Algorithm::RoundRobin, false).is_empty());
        // all-zero groups share when asked to, and are empty otherwise
        let zeros = members(&[(0, 1), (0, 0)]);
        assert_eq!(
            Picker::new(&zeros, Algorithm::RoundRobin, true).pick(none, None),
            Some(0)
        );
        assert!(Picker::new(&zeros, Algorithm::RoundRobin, false).is_empty());
    }

    #[test]
    fn chash_is_sticky_spreads_and_moves_only_skipped_keys() {
        let ms = members(&[(1, 0), (1, 0), (2, 0)]);
        let b = Picker::new(&ms, Algorithm::Chash, false);
        let mut seen = [0usize; 3];
        for k in 0..3000 {
            let key = format!("user-{k}");
            let a = b.pick(none, Some(key.as_bytes())).unwrap();
            assert_eq!(b.pick(none, Some(key.as_bytes())), Some(a), "sticky");
            if k < 50 {
                let again = Picker::new(&ms, Algorithm::Chash, false);
                assert_eq!(again.pick(none, Some(key.as_bytes())), Some(a), "stable");
            }
            let next = b.pick(|i| i == a, Some(key.as_bytes())).unwrap();
            assert_ne!(next, a, "a skipped member's keys move");
            // skipping another member never moves this key
            let other = (a + 1) % 3;
            assert_eq!(b.pick(|i| i == other, Some(key.as_bytes())), Some(a));
            seen[a] += 1;
        }
        // weight 2 gets about half
        assert!(seen[2] > 1200 && seen[2] < 1800, "{seen:?}");
        assert!(seen[0] > 500 && seen[1] > 500, "{seen:?}");
    }

    #[test]
    fn least_conn_prefers_the_idle_member() {
        let b = Picker::new(&members(&[(1, 0), (1, 0)]), Algorithm::LeastConn, false);
        b.active[0].store(3, Ordering::Relaxed);
        assert_eq!(b.pick(none, None), Some(1));
        b.active[1].store(5, Ordering::Relaxed);
        assert_eq!(b.pick(none, None), Some(0));
    }
}
