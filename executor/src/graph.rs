//! The stream graph: what the planner hands to the runtime. Nodes are
//! sources, operators and sinks, each with a parallelism; edges say how rows
//! move between the subtasks of two nodes.

use std::fmt::Write;
use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;

use datafusion::physical_expr::PhysicalExpr;

use crate::operator::OperatorFactory;
use crate::table::Table;

/// How rows move along an edge.
#[derive(Debug, Clone)]
pub enum Partitioning {
    /// Subtask i sends to subtask i (same parallelism on both ends).
    Forward,
    /// By key group of the given expressions over the upstream output.
    Hash(Vec<Arc<dyn PhysicalExpr>>),
    /// Everything to subtask 0.
    Single,
    /// Every row to every subtask.
    Broadcast,
}

pub enum NodeKind {
    /// Reads a table: its current contents, then its changes.
    TableSource(Arc<Table>),
    Operator(Arc<dyn OperatorFactory>),
    /// Applies the changes to a result table.
    ResultSink(Arc<Table>),
}

pub struct Node {
    pub id: usize,
    /// Operator name as shown by EXPLAIN, e.g. `StreamHashAgg`.
    pub name: String,
    /// Details shown by EXPLAIN, e.g. `group=[k] aggs=[count(*)]`.
    pub detail: String,
    pub parallelism: usize,
    pub kind: NodeKind,
    pub schema: SchemaRef,
    /// A source: the columns the query reads (the others may arrive as
    /// NULL); `None`: all.
    pub read_columns: Option<Vec<usize>>,
}

#[derive(Debug, Clone)]
pub struct Edge {
    pub from: usize,
    pub to: usize,
    /// Which input of `to` this edge feeds (0 = left/first).
    pub input: usize,
    pub partitioning: Partitioning,
}

#[derive(Default)]
pub struct StreamGraph {
    pub nodes: Vec<Node>,
    pub edges: Vec<Edge>,
}

impl StreamGraph {
    pub fn add_node(
        &mut self,
        name: impl Into<String>,
        detail: impl Into<String>,
        parallelism: usize,
        schema: SchemaRef,
        kind: NodeKind,
    ) -> usize {
        let id = self.nodes.len();
        self.nodes.push(Node {
            id,
            name: name.into(),
            detail: detail.into(),
            parallelism,
            kind,
            schema,
            read_columns: None,
        });
        id
    }

    pub fn connect(&mut self, from: usize, to: usize, input: usize, partitioning: Partitioning) {
        self.edges.push(Edge {
            from,
            to,
            input,
            partitioning,
        });
    }

    pub fn inputs_of(&self, node: usize) -> Vec<&Edge> {
        let mut v: Vec<&Edge> = self.edges.iter().filter(|e| e.to == node).collect();
        v.sort_by_key(|e| e.input);
        v
    }

    /// Schema of the rows arriving at `input` of `node`.
    pub fn input_schema(&self, node: usize, input: usize) -> Option<SchemaRef> {
        self.edges
            .iter()
            .find(|e| e.to == node && e.input == input)
            .map(|e| self.nodes[e.from].schema.clone())
    }

    pub fn outputs_of(&self, node: usize) -> Vec<&Edge> {
        self.edges.iter().filter(|e| e.from == node).collect()
    }

    /// The nodes whose output leaves the graph: the result table's sink,
    /// or a connector's sink operator (`StreamFileSink`, ...).
    pub fn sinks(&self) -> Vec<usize> {
        self.nodes
            .iter()
            .filter(|n| {
                matches!(n.kind, NodeKind::ResultSink(_))
                    || (matches!(n.kind, NodeKind::Operator(_)) && self.outputs_of(n.id).is_empty())
            })
            .map(|n| n.id)
            .collect()
    }

    /// Why this graph cannot resume from a checkpoint of `previous` (the
    /// same plan at other parallelisms): a connector source whose splits
    /// depend on the parallelism (`SourceConnector::can_rescale`; `file`,
    /// `nexmark` and `datagen` keep a position per split, which any number
    /// of subtasks can take over). Checked before a query is rescaled, so
    /// that a refused rescale changes nothing. A checkpoint written before
    /// positions were kept per split is refused when the query starts
    /// (`runtime/spawn.rs`).
    pub fn rescale_error(&self, previous: &StreamGraph) -> Option<crate::ExecError> {
        self.nodes.iter().find_map(|n| {
            let NodeKind::TableSource(table) = &n.kind else {
                return None;
            };
            let connector = table.connector()?;
            let old = previous.nodes.get(n.id)?.parallelism;
            (old != n.parallelism && !connector.can_rescale())
                .then(|| connector_rescale_error(connector.name(), &n.name))
        })
    }

    /// Per node, a fingerprint of what determines its state and output: its
    /// operator, details, output columns and input exchanges, and the
    /// fingerprints of its inputs (so a node is equal only if everything
    /// below it is). Checkpoints record them: a checkpoint or savepoint is
    /// restored only into a plan with the same fingerprints, and an
    /// upgrade keeps the state of the nodes whose fingerprint it finds in
    /// the old plan.
    pub fn fingerprints(&self) -> Vec<String> {
        fn fp(graph: &StreamGraph, id: usize, out: &mut Vec<Option<u64>>) -> u64 {
            if let Some(f) = out[id] {
                return f;
            }
            let n = &graph.nodes[id];
            // A sink's details name where its output goes (the query's
            // result table): a clone of the query has the same plan.
            let detail = if graph.outputs_of(id).is_empty() {
                ""
            } else {
                n.detail.as_str()
            };
            let mut text = format!("{}|{detail}|", n.name);
            for f in n.schema.fields() {
                let _ = write!(text, "{}:{},", f.name(), f.data_type());
            }
            for e in graph.inputs_of(id) {
                let part = match &e.partitioning {
                    Partitioning::Hash(k) => format!(
                        "hash({})",
                        k.iter()
                            .map(|x| display_expr(x.as_ref()))
                            .collect::<Vec<_>>()
                            .join(",")
                    ),
                    other => format!("{other:?}"),
                };
                let _ = write!(text, "|{}:{part}:{:016x}", e.input, fp(graph, e.from, out));
            }
            let f = crate::keys::stable_hash(text.as_bytes());
            out[id] = Some(f);
            f
        }
        let mut out = vec![None; self.nodes.len()];
        (0..self.nodes.len())
            .map(|i| format!("{:016x}", fp(self, i, &mut out)))
            .collect()
    }

    /// Tables read by this graph.
    pub fn source_tables(&self) -> Vec<Arc<Table>> {
        self.nodes
            .iter()
            .filter_map(|n| match &n.kind {
                NodeKind::TableSource(t) => Some(t.clone()),
                _ => None,
            })
            .collect()
    }

    /// Indented tree from the sinks down, with parallelism and exchanges.
    /// A node feeding several consumers is marked `[node N]`, shown in full
    /// under the first and as `(shared, shown above)` under the others.
    pub fn explain(&self) -> String {
        let mut out = String::new();
        let mut shown = vec![false; self.nodes.len()];
        for sink in self.sinks() {
            self.explain_node(sink, 0, &mut shown, &mut out);
        }
        out
    }

    fn explain_node(&self, id: usize, depth: usize, shown: &mut [bool], out: &mut String) {
        let node = &self.nodes[id];
        let pad = "  ".repeat(depth);
        let mut detail = if node.detail.is_empty() {
            String::new()
        } else {
            format!(" {}", node.detail)
        };
        if let Some(cols) = &node.read_columns {
            let names: Vec<&str> = cols
                .iter()
                .filter_map(|c| node.schema.fields().get(*c).map(|f| f.name().as_str()))
                .collect();
            let _ = write!(detail, " reads=[{}]", names.join(", "));
        }
        let shared = self.outputs_of(id).len() > 1;
        let mark = if shared {
            format!(" [node {id}]")
        } else {
            String::new()
        };
        if std::mem::replace(&mut shown[id], true) && shared {
            let _ = writeln!(out, "{pad}{}{mark} (shared, shown above)", node.name);
            return;
        }
        let _ = writeln!(
            out,
            "{pad}{}{detail}{mark} (parallelism={})",
            node.name, node.parallelism
        );
        for edge in self.inputs_of(id) {
            let ex = match &edge.partitioning {
                Partitioning::Forward => "forward".to_string(),
                Partitioning::Hash(keys) => format!(
                    "hash({})",
                    keys.iter()
                        .map(|k| display_expr(k.as_ref()))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                Partitioning::Single => "single".to_string(),
                Partitioning::Broadcast => "broadcast".to_string(),
            };
            let _ = writeln!(out, "{pad}  └─ Exchange {ex}");
            self.explain_node(edge.from, depth + 2, shown, out);
        }
    }
}

/// A physical expression without DataFusion's `@index` column suffixes.
pub fn display_expr(expr: &dyn PhysicalExpr) -> String {
    let text = expr.to_string();
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '@' && chars.peek().is_some_and(|n| n.is_ascii_digit()) {
            while chars.peek().is_some_and(|n| n.is_ascii_digit()) {
                chars.next();
            }
        } else {
            out.push(c);
        }
    }
    out
}

impl Partitioning {
    pub fn is_forward(&self) -> bool {
        matches!(self, Partitioning::Forward)
    }
}

/// A connector source asked to resume at another parallelism than a
/// checkpoint that cannot be split across it.
pub fn connector_rescale_error(connector: &str, node: &str) -> crate::ExecError {
    crate::ExecError::user(
        crate::SqlState::FEATURE_NOT_SUPPORTED,
        format!("a {connector} source ({node}) cannot change its parallelism from a checkpoint"),
    )
}
