//! Node selection for an upstream: its nodes on `ferry_core::pick` (priority groups, smooth
//! weighted round robin, a consistent-hash ring keyed by `host:port`, least connections).
//! State lives as long as the upstream's compiled form, so writes elsewhere do not reset it.

use ferry_config::upstream::{Balancer as Kind, Node};
use ferry_core::pick::{Algorithm, Member, Picker};

/// One upstream's balancer.
pub struct Balancer {
    pub nodes: Vec<Node>,
    pub picker: Picker,
}

impl Balancer {
    pub fn new(nodes: Vec<Node>, kind: &Kind) -> Balancer {
        let algorithm = match kind {
            Kind::RoundRobin => Algorithm::RoundRobin,
            Kind::Chash(_) => Algorithm::Chash,
            Kind::LeastConn => Algorithm::LeastConn,
        };
        let members: Vec<Member> = nodes
            .iter()
            .map(|n| Member {
                id: n.authority(),
                weight: n.weight,
                priority: n.priority,
            })
            .collect();
        Balancer {
            picker: Picker::new(&members, algorithm, false),
            nodes,
        }
    }

    /// True when no node can ever be picked.
    pub fn is_empty(&self) -> bool {
        self.picker.is_empty()
    }

    /// The next node for a request that already tried `tried` (node indexes), hashing `key`
    /// for `chash`. `None` when every node was tried.
    pub fn pick(&self, tried: &[usize], key: Option<&[u8]>) -> Option<usize> {
        self.picker.pick(|i| tried.contains(&i), key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(port: u16, weight: u32, priority: i64) -> Node {
        Node {
            host: "127.0.0.1".into(),
            port,
            weight,
            priority,
        }
    }

    #[test]
    fn nodes_by_weight_priority_and_tries() {
        let b = Balancer::new(
            vec![node(1, 5, 0), node(2, 1, 0), node(3, 1, 0), node(4, 0, 0)],
            &Kind::RoundRobin,
        );
        let picks: Vec<usize> = (0..7).map(|_| b.pick(&[], None).unwrap()).collect();
        assert_eq!(picks, vec![0, 0, 1, 0, 2, 0, 0]);
        assert_eq!(b.pick(&[0, 1, 2], None), None);
        let b = Balancer::new(vec![node(1, 1, 0), node(2, 1, 10)], &Kind::RoundRobin);
        assert_eq!(b.pick(&[], None), Some(1));
        assert_eq!(b.pick(&[1], None), Some(0));
        // an upstream's weight-0 nodes are never used, even alone
        assert!(Balancer::new(vec![node(1, 0, 0)], &Kind::RoundRobin).is_empty());
    }
}
