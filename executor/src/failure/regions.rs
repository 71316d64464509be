//! Failover regions: the subtasks of a query joined by pipelined edges.
//! Every edge in Weir is pipelined, so a region is a connected group of
//! subtasks: a forward edge joins subtask i to subtask i, any other edge
//! joins every upstream subtask to every downstream one. A forward-only
//! pipeline of parallel lanes has one region per lane; an exchange merges
//! the lanes it connects into one.

use crate::graph::StreamGraph;

/// Region of each subtask: `regions[node][subtask]`, numbered from 0 in
/// order of first appearance.
pub fn regions(graph: &StreamGraph) -> Vec<Vec<usize>> {
    let offsets: Vec<usize> = graph
        .nodes
        .iter()
        .scan(0, |acc, n| {
            let at = *acc;
            *acc += n.parallelism;
            Some(at)
        })
        .collect();
    let total: usize = graph.nodes.iter().map(|n| n.parallelism).sum();
    let mut parent: Vec<usize> = (0..total).collect();
    fn find(p: &mut [usize], mut x: usize) -> usize {
        while p[x] != x {
            p[x] = p[p[x]];
            x = p[x];
        }
        x
    }
    let mut union = |a: usize, b: usize| {
        let (ra, rb) = (find(&mut parent, a), find(&mut parent, b));
        if ra != rb {
            parent[ra.max(rb)] = ra.min(rb);
        }
    };
    for e in &graph.edges {
        let up = graph.nodes[e.from].parallelism;
        let down = graph.nodes[e.to].parallelism;
        if e.partitioning.is_forward() {
            for i in 0..up.min(down) {
                union(offsets[e.from] + i, offsets[e.to] + i);
            }
        } else {
            for u in 0..up {
                for d in 0..down {
                    union(offsets[e.from] + u, offsets[e.to] + d);
                }
            }
        }
    }
    let mut numbering = std::collections::HashMap::new();
    graph
        .nodes
        .iter()
        .map(|n| {
            (0..n.parallelism)
                .map(|s| {
                    let root = find(&mut parent, offsets[n.id] + s);
                    let next = numbering.len();
                    *numbering.entry(root).or_insert(next)
                })
                .collect()
        })
        .collect()
}

/// How many regions a graph has.
pub fn region_count(regions: &[Vec<usize>]) -> usize {
    regions.iter().flatten().copied().max().map_or(0, |m| m + 1)
}
