//! Node selection for an upstream, pure and unit-tested: nodes grouped by `priority` (a lower
//! group only once every node of the higher one failed in this request), then smooth weighted
//! round robin (nginx's), a consistent-hash ring (160 points per weight unit), or least
//! connections. State lives as long as the upstream's compiled form, so writes elsewhere do
//! not reset it.

use ferry_config::upstream::{Balancer as Kind, Node};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// One upstream's balancer.
pub struct Balancer {
    pub nodes: Vec<Node>,
    /// Node indexes by priority group, highest priority first (weight-0 nodes left out).
    groups: Vec<Vec<usize>>,
    picker: Picker,
    /// In-flight requests per node (least_conn).
    pub active: Vec<AtomicUsize>,
}

enum Picker {
    RoundRobin(Mutex<Vec<i64>>),
    /// Sorted (point, node) pairs per group.
    Chash(Vec<Vec<(u64, usize)>>),
    LeastConn,
}

/// FNV-1a (stable across processes and versions, so every Ferry node hashes a key to the same
/// upstream node), finished with a mix: FNV spreads short keys poorly in the high bits.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h = ferry_core::hash::fnv1a(bytes);
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^ (h >> 33)
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

impl Balancer {
    pub fn new(nodes: Vec<Node>, kind: &Kind) -> Balancer {
        let mut prios: Vec<i64> = nodes
            .iter()
            .filter(|n| n.weight > 0)
            .map(|n| n.priority)
            .collect();
        prios.sort_unstable_by(|a, b| b.cmp(a));
        prios.dedup();
        let groups: Vec<Vec<usize>> = prios
            .iter()
            .map(|p| {
                (0..nodes.len())
                    .filter(|i| nodes[*i].priority == *p && nodes[*i].weight > 0)
                    .collect()
            })
            .collect();
        let picker = match kind {
            Kind::RoundRobin => Picker::RoundRobin(Mutex::new(vec![0; nodes.len()])),
            Kind::LeastConn => Picker::LeastConn,
            Kind::Chash(_) => Picker::Chash(
                groups
                    .iter()
                    .map(|g| {
                        let div = g.iter().fold(0, |acc, i| gcd(acc, nodes[*i].weight)).max(1);
                        let mut ring = Vec::new();
                        for i in g {
                            let n = &nodes[*i];
                            for p in 0..(n.weight / div).min(1000) * 160 {
                                let point = fnv1a(format!("{}#{p}", n.authority()).as_bytes());
                                ring.push((point, *i));
                            }
                        }
                        ring.sort_unstable();
                        ring
                    })
                    .collect(),
            ),
        };
        let active = nodes.iter().map(|_| AtomicUsize::new(0)).collect();
        Balancer {
            nodes,
            groups,
            picker,
            active,
        }
    }

    /// True when no node can ever be picked.
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// The next node for a request that already tried `tried` (node indexes), hashing `key`
    /// for `chash`. `None` when every node was tried.
    pub fn pick(&self, tried: &[usize], key: Option<&[u8]>) -> Option<usize> {
        let group = self
            .groups
            .iter()
            .enumerate()
            .find(|(_, g)| g.iter().any(|i| !tried.contains(i)))?;
        let (gi, nodes) = group;
        match &self.picker {
            Picker::RoundRobin(state) => {
                let mut cur = state.lock().ok()?;
                let mut total = 0i64;
                let mut best: Option<usize> = None;
                for &i in nodes.iter().filter(|i| !tried.contains(i)) {
                    let w = i64::from(self.nodes[i].weight);
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
            Picker::LeastConn => nodes
                .iter()
                .filter(|i| !tried.contains(i))
                .min_by(|a, b| {
                    // fewest in flight per unit of weight; ties by index
                    let la = (self.active[**a].load(Ordering::Relaxed) as u64 + 1)
                        * u64::from(self.nodes[**b].weight);
                    let lb = (self.active[**b].load(Ordering::Relaxed) as u64 + 1)
                        * u64::from(self.nodes[**a].weight);
                    la.cmp(&lb)
                })
                .copied(),
            Picker::Chash(rings) => {
                let ring = &rings[gi];
                let h = fnv1a(key.unwrap_or_default());
                let start = ring.partition_point(|(p, _)| *p < h);
                // walk the ring from the key's point to the first node not tried yet
                (0..ring.len())
                    .map(|k| ring[(start + k) % ring.len()].1)
                    .find(|i| !tried.contains(i))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_config::upstream::HashOn;

    fn node(port: u16, weight: u32, priority: i64) -> Node {
        Node {
            host: "127.0.0.1".into(),
            port,
            weight,
            priority,
        }
    }

    #[test]
    fn round_robin_follows_weights_exactly_and_smoothly() {
        let b = Balancer::new(
            vec![node(1, 5, 0), node(2, 1, 0), node(3, 1, 0), node(4, 0, 0)],
            &Kind::RoundRobin,
        );
        let picks: Vec<usize> = (0..7).map(|_| b.pick(&[], None).unwrap()).collect();
        let count = |n| picks.iter().filter(|p| **p == n).count();
        assert_eq!((count(0), count(1), count(2), count(3)), (5, 1, 1, 0));
        // smooth: the heavy node is not picked five times in a row
        assert_eq!(picks, vec![0, 0, 1, 0, 2, 0, 0]);
        // a retry skips what was tried
        assert_eq!(b.pick(&[0], None).map(|i| i == 1 || i == 2), Some(true));
        assert_eq!(b.pick(&[0, 1, 2], None), None);
    }

    #[test]
    fn priority_groups_fall_back_in_order() {
        let b = Balancer::new(
            vec![node(1, 1, 0), node(2, 1, 10), node(3, 1, -5)],
            &Kind::RoundRobin,
        );
        assert_eq!(b.pick(&[], None), Some(1));
        assert_eq!(b.pick(&[1], None), Some(0));
        assert_eq!(b.pick(&[1, 0], None), Some(2));
        assert_eq!(b.pick(&[1, 0, 2], None), None);
        assert!(Balancer::new(vec![], &Kind::RoundRobin).is_empty());
    }

    #[test]
    fn chash_is_sticky_and_spreads() {
        let nodes = vec![node(1, 1, 0), node(2, 1, 0), node(3, 2, 0)];
        let b = Balancer::new(nodes.clone(), &Kind::Chash(HashOn::Consumer));
        let mut seen = [0usize; 3];
        for k in 0..3000 {
            let key = format!("user-{k}");
            let a = b.pick(&[], Some(key.as_bytes())).unwrap();
            assert_eq!(b.pick(&[], Some(key.as_bytes())), Some(a), "sticky");
            let again = Balancer::new(nodes.clone(), &Kind::Chash(HashOn::Consumer));
            if k < 50 {
                assert_eq!(
                    again.pick(&[], Some(key.as_bytes())),
                    Some(a),
                    "stable across builds"
                );
            }
            let next = b.pick(&[a], Some(key.as_bytes())).unwrap();
            assert_ne!(next, a, "a retry walks on");
            seen[a] += 1;
        }
        // weight 2 gets about half
        assert!(seen[2] > 1200 && seen[2] < 1800, "{seen:?}");
        assert!(seen[0] > 500 && seen[1] > 500, "{seen:?}");
    }

    #[test]
    fn least_conn_prefers_the_idle_node() {
        let b = Balancer::new(vec![node(1, 1, 0), node(2, 1, 0)], &Kind::LeastConn);
        b.active[0].store(3, Ordering::Relaxed);
        assert_eq!(b.pick(&[], None), Some(1));
        b.active[1].store(5, Ordering::Relaxed);
        assert_eq!(b.pick(&[], None), Some(0));
    }
}
