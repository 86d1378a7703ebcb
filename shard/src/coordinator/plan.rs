//! Which nodes a request goes to: the key's replicas, the ones it is moving
//! to, and the healthy nodes a sloppy quorum may fall back on.

use crate::topology::{NodeId, NodeStatus, Ring, Token};

/// One node a request may go to, with what the coordinator believes of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replica {
    /// The node.
    pub node: NodeId,
    /// Its data center (LOCAL_QUORUM counts only the coordinator's).
    pub dc: String,
    /// The failure detector's view: a node believed down is not sent to
    /// (its write becomes a hint) and does not count as alive.
    pub believed_down: bool,
    /// A node the key's range is moving to (a joining node, or the new owner
    /// of a leaving node's range). It gets every write, and each one adds an
    /// acknowledgement to what the level requires, so that `W` of the acks
    /// always come from the key's future replicas; it serves no reads yet.
    pub pending: bool,
}

/// The nodes of one request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReplicaPlan {
    /// The key's replicas in preference order (natural ones, then pending).
    pub replicas: Vec<Replica>,
    /// Nodes beyond the preference list, clockwise, believed alive: where a
    /// sloppy quorum sends a down replica's write (with a hint for it).
    pub fallbacks: Vec<Replica>,
}

impl ReplicaPlan {
    /// The plan for `token` with `n` replicas on `ring`, or during a move from
    /// `ring` to `next`: the replicas of `ring`, plus the nodes of `next`'s
    /// list that `ring`'s does not have, as pending. Placement is rack-aware
    /// (the same as the plain list without racks).
    pub fn new(
        ring: &Ring,
        next: Option<&Ring>,
        token: Token,
        n: usize,
        believed_down: impl Fn(&NodeId) -> bool,
    ) -> Self {
        let down = |node: &crate::topology::Node| node.status == NodeStatus::Down || believed_down(&node.id);
        let mut replicas: Vec<Replica> = ring
            .preference_list_rack_aware(token, n)
            .into_iter()
            .map(|node| Replica {
                node: node.id.clone(),
                dc: node.dc.clone(),
                believed_down: down(node),
                pending: false,
            })
            .collect();
        if let Some(next) = next {
            for node in next.preference_list_rack_aware(token, n) {
                if !replicas.iter().any(|r| r.node == node.id) {
                    replicas.push(Replica {
                        node: node.id.clone(),
                        dc: node.dc.clone(),
                        believed_down: down(node),
                        pending: true,
                    });
                }
            }
        }
        // A node leaving the ring would carry its hints away with it.
        let staying = |id: &NodeId| next.is_none_or(|next| next.node(id).is_some());
        let fallbacks = ring
            .preference_list_rack_aware(token, ring.nodes().len())
            .into_iter()
            .filter(|node| !replicas.iter().any(|r| r.node == node.id) && !down(node) && staying(&node.id))
            .map(|node| Replica {
                node: node.id.clone(),
                dc: node.dc.clone(),
                believed_down: false,
                pending: false,
            })
            .collect();
        ReplicaPlan { replicas, fallbacks }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::Node;

    fn ring(ids: &[&str]) -> Ring {
        Ring::new(ids.iter().map(|id| Node::new(*id, "x:1")).collect(), 8).unwrap()
    }

    #[test]
    fn plan_marks_down_pending_and_fallbacks() {
        let old = ring(&["a", "b", "c", "d", "e"]);
        let new = ring(&["a", "b", "c", "d", "e", "f"]);
        for token in (0..200u64).map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15)) {
            let natural: Vec<_> = old.preference_list(token, 3).iter().map(|n| n.id.clone()).collect();
            let plan = ReplicaPlan::new(&old, Some(&new), token, 3, |id| id.0 == "b");
            assert_eq!(
                plan.replicas.len(),
                if new.preference_list(token, 3).iter().any(|n| n.id.0 == "f") {
                    4
                } else {
                    3
                }
            );
            for (r, id) in plan.replicas.iter().zip(&natural) {
                assert_eq!(&r.node, id);
                assert!(!r.pending);
                assert_eq!(r.believed_down, id.0 == "b");
            }
            if let Some(extra) = plan.replicas.get(3) {
                assert!(extra.pending);
                assert_eq!(extra.node.0, "f");
            }
            assert!(plan
                .fallbacks
                .iter()
                .all(|f| f.node.0 != "b" && !natural.contains(&f.node)));
            // Fallbacks come from the current ring: all but the natural replicas and the down node.
            let b_natural = natural.iter().any(|n| n.0 == "b");
            assert_eq!(plan.fallbacks.len() + 3 + usize::from(!b_natural), 5);
        }
    }
}
