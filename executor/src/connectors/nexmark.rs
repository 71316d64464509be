//! The `nexmark` source connector: the Nexmark benchmark's events of one
//! type (person, auction or bid), made by the `nexmark` crate (0.2.0, the
//! generator of the shared bench harness) in the source subtasks.
//!
//! Options (RisingWave's names): `nexmark.table.type` (`person`, `auction`
//! or `bid`, required); `nexmark.event.num`, the number of events of all
//! types whose rows of this type are emitted (default: no end);
//! `nexmark.max.chunk.size`, rows per batch (default 8192);
//! `nexmark.min.event.gap.in.ns`, the least time between two events of any
//! type over all subtasks (default 0: no pacing).
//!
//! Determinism: the crate derives every event from its number, and its
//! timestamps from the base time, fixed here at 2025-01-01 00:00:00 UTC, the
//! time the harness's CSV files are re-based to; the rows are then the same
//! as in those files. With `nexmark.event.num = N` a table has the rows of
//! its type among events 0..N (1 person, 3 auctions, 46 bids in every 50).
//!
//! Splits: the rows of a type, numbered 0, 1, ..., are dealt out round-robin:
//! subtask `i` of `p` emits rows `i`, `i + p`, `i + 2p`, ... A subtask's
//! position `k` is row `i + k * p`, where the crate's generator starts
//! directly (no replay), so a restore costs nothing; after a change of
//! parallelism the rows other layouts emitted are skipped (`row_split.rs`).
//! Every subtask's rows are in event-time order, and all subtasks advance
//! through event time together.
//!
//! Rows are built column by column from the crate's events, except bids,
//! which `nexmark_bid.rs` writes straight into Arrow buffers (the crate's
//! `Bid::new` step for step, checked against it).

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, Int64Array, RecordBatch, StringBuilder, TimestampMicrosecondArray,
};
use datafusion::arrow::datatypes::{DataType, SchemaRef, TimeUnit};
use nexmark::config::NexmarkConfig;
use nexmark::event::{Auction, Bid, Event, EventType, Person};
use nexmark::EventGenerator;

use super::nexmark_bid::BidSplit;
use super::row_split::{split_id, RowCursor};
use super::{bad_option, ConnectorOptions, OpenSplit, SourceConnector, SplitPositions, SplitRead};
use crate::error::{ExecError, ExecResult};

/// The time of event 0: 2025-01-01 00:00:00.000 UTC, in ms since the epoch
/// (the base time of the bench harness's CSV files).
pub const NEXMARK_BASE_TIME_MS: u64 = 1_735_689_600_000;

/// Rows per batch unless `nexmark.max.chunk.size` says otherwise.
pub const NEXMARK_CHUNK_ROWS: usize = super::SOURCE_BATCH_ROWS;

/// Largest `nexmark.max.chunk.size`.
pub const NEXMARK_CHUNK_ROWS_MAX: usize = 1 << 16;

const OPTIONS: &str = "connector, nexmark.table.type, nexmark.event.num, \
                       nexmark.max.chunk.size, nexmark.min.event.gap.in.ns";

/// The event type a source emits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NexmarkTable {
    Person,
    Auction,
    Bid,
}

impl NexmarkTable {
    fn event_type(self) -> EventType {
        match self {
            NexmarkTable::Person => EventType::Person,
            NexmarkTable::Auction => EventType::Auction,
            NexmarkTable::Bid => EventType::Bid,
        }
    }

    fn name(self) -> &'static str {
        match self {
            NexmarkTable::Person => "person",
            NexmarkTable::Auction => "auction",
            NexmarkTable::Bid => "bid",
        }
    }

    /// Its columns: (name, type), in the bench harness's order.
    fn columns(self) -> Vec<(&'static str, DataType)> {
        match self {
            NexmarkTable::Person => column_types(PERSON),
            NexmarkTable::Auction => column_types(AUCTION),
            NexmarkTable::Bid => column_types(BID),
        }
    }

    /// Its events among the first `events` events of all types.
    fn rows_in(self, events: u64, cfg: &NexmarkConfig) -> u64 {
        let (p, a, b) = (
            cfg.person_proportion as u64,
            cfg.auction_proportion as u64,
            cfg.bid_proportion as u64,
        );
        let (cycles, rest) = (events / (p + a + b), events % (p + a + b));
        let (before, share) = match self {
            NexmarkTable::Person => (0, p),
            NexmarkTable::Auction => (p, a),
            NexmarkTable::Bid => (p + a, b),
        };
        cycles * share + rest.saturating_sub(before).min(share)
    }

    /// Its share of all events.
    fn share(self, cfg: &NexmarkConfig) -> f64 {
        let part = match self {
            NexmarkTable::Person => cfg.person_proportion,
            NexmarkTable::Auction => cfg.auction_proportion,
            NexmarkTable::Bid => cfg.bid_proportion,
        };
        part as f64 / (cfg.person_proportion + cfg.auction_proportion + cfg.bid_proportion) as f64
    }
}

/// A column of an event type: how to read it from one event.
enum Value<T> {
    Int(fn(&T) -> i64),
    Text(for<'a> fn(&'a T) -> &'a str),
    /// Milliseconds since the epoch.
    Time(fn(&T) -> u64),
}

impl<T> Value<T> {
    fn data_type(&self) -> DataType {
        match self {
            Value::Int(_) => DataType::Int64,
            Value::Text(_) => DataType::Utf8,
            Value::Time(_) => DataType::Timestamp(TimeUnit::Microsecond, None),
        }
    }
}

type Columns<T> = &'static [(&'static str, Value<T>)];

fn column_types<T>(columns: Columns<T>) -> Vec<(&'static str, DataType)> {
    columns.iter().map(|(n, v)| (*n, v.data_type())).collect()
}

// The columns of the bench harness's DDL (queries/flink/ddl.sql), in order.
const PERSON: Columns<Person> = &[
    ("id", Value::Int(|e| e.id as i64)),
    ("name", Value::Text(|e| &e.name)),
    ("email_address", Value::Text(|e| &e.email_address)),
    ("credit_card", Value::Text(|e| &e.credit_card)),
    ("city", Value::Text(|e| &e.city)),
    ("state", Value::Text(|e| &e.state)),
    ("date_time", Value::Time(|e| e.date_time)),
    ("extra", Value::Text(|e| &e.extra)),
];

const AUCTION: Columns<Auction> = &[
    ("id", Value::Int(|e| e.id as i64)),
    ("item_name", Value::Text(|e| &e.item_name)),
    ("description", Value::Text(|e| &e.description)),
    ("initial_bid", Value::Int(|e| e.initial_bid as i64)),
    ("reserve", Value::Int(|e| e.reserve as i64)),
    ("date_time", Value::Time(|e| e.date_time)),
    ("expires", Value::Time(|e| e.expires)),
    ("seller", Value::Int(|e| e.seller as i64)),
    ("category", Value::Int(|e| e.category as i64)),
    ("extra", Value::Text(|e| &e.extra)),
];

const BID: Columns<Bid> = &[
    ("auction", Value::Int(|e| e.auction as i64)),
    ("bidder", Value::Int(|e| e.bidder as i64)),
    ("price", Value::Int(|e| e.price as i64)),
    ("channel", Value::Text(|e| &e.channel)),
    ("url", Value::Text(|e| &e.url)),
    ("date_time", Value::Time(|e| e.date_time)),
    ("extra", Value::Text(|e| &e.extra)),
];

/// One event type's rows, read from the crate's events.
trait NexmarkRow: Sized + Send + 'static {
    fn columns() -> Columns<Self>;
    fn from_event(event: Event) -> Option<Self>;
}

impl NexmarkRow for Person {
    fn columns() -> Columns<Self> {
        PERSON
    }
    fn from_event(event: Event) -> Option<Self> {
        match event {
            Event::Person(e) => Some(e),
            _ => None,
        }
    }
}

impl NexmarkRow for Auction {
    fn columns() -> Columns<Self> {
        AUCTION
    }
    fn from_event(event: Event) -> Option<Self> {
        match event {
            Event::Auction(e) => Some(e),
            _ => None,
        }
    }
}

impl NexmarkRow for Bid {
    fn columns() -> Columns<Self> {
        BID
    }
    fn from_event(event: Event) -> Option<Self> {
        match event {
            Event::Bid(e) => Some(e),
            _ => None,
        }
    }
}

/// A `nexmark` source: which events, how many, how fast.
#[derive(Debug)]
pub struct NexmarkSource {
    pub table: NexmarkTable,
    /// Events of all types to generate; `None`: no end.
    pub event_num: Option<u64>,
    pub chunk_rows: usize,
    /// Least nanoseconds between two events of any type (0: no pacing).
    pub min_event_gap_ns: u64,
    /// The source's columns: their index among the event type's columns.
    fields: Vec<usize>,
}

impl NexmarkSource {
    /// A source from its `WITH` options, for a table with `schema`: every
    /// column must be a column of the event type (any subset, any order),
    /// with its type (SQLSTATE 42P16 otherwise).
    pub fn from_options(
        options: &std::collections::BTreeMap<String, String>,
        schema: &SchemaRef,
    ) -> ExecResult<Arc<NexmarkSource>> {
        let mut o = ConnectorOptions::new("nexmark", options);
        let table = match o
            .take("nexmark.table.type")
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("person") => NexmarkTable::Person,
            Some("auction") => NexmarkTable::Auction,
            Some("bid") => NexmarkTable::Bid,
            Some(other) => {
                return Err(bad_option(format!(
                    "invalid value for option \"nexmark.table.type\": \"{other}\" (expected 'person', 'auction' or 'bid')"
                )))
            }
            None => {
                return Err(ExecError::User {
                    sqlstate: crate::SqlState::INVALID_PARAMETER_VALUE,
                    message: "a nexmark source needs the option \"nexmark.table.type\"".into(),
                    hint: Some("Set it to 'person', 'auction' or 'bid'.".into()),
                })
            }
        };
        let event_num = o.take_u64("nexmark.event.num")?;
        let chunk_rows = match o.take_u64("nexmark.max.chunk.size")? {
            None => NEXMARK_CHUNK_ROWS,
            Some(n) if n >= 1 && n as usize <= NEXMARK_CHUNK_ROWS_MAX => n as usize,
            Some(n) => {
                return Err(bad_option(format!(
                    "nexmark.max.chunk.size must be between 1 and {NEXMARK_CHUNK_ROWS_MAX}, got {n}"
                )))
            }
        };
        let min_event_gap_ns = o.take_u64("nexmark.min.event.gap.in.ns")?.unwrap_or(0);
        o.finish(OPTIONS)?;
        let columns = table.columns();
        let expected = || {
            columns
                .iter()
                .map(|(n, t)| format!("{n} {}", sql_type(t)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut fields = Vec::with_capacity(schema.fields().len());
        for f in schema.fields() {
            let Some(i) = columns.iter().position(|(n, _)| *n == f.name().as_str()) else {
                return Err(ExecError::User {
                    sqlstate: crate::SqlState::INVALID_TABLE_DEFINITION,
                    message: format!(
                        "a nexmark {} source has no column \"{}\"",
                        table.name(),
                        f.name()
                    ),
                    hint: Some(format!(
                        "Its columns are: {}. Declare any of them.",
                        expected()
                    )),
                });
            };
            if f.data_type() != &columns[i].1 {
                return Err(ExecError::User {
                    sqlstate: crate::SqlState::INVALID_TABLE_DEFINITION,
                    message: format!(
                        "column \"{}\" of a nexmark {} source must be {}, not {}",
                        f.name(),
                        table.name(),
                        sql_type(&columns[i].1),
                        sql_type(f.data_type())
                    ),
                    hint: Some(format!("Its columns are: {}.", expected())),
                });
            }
            fields.push(i);
        }
        Ok(Arc::new(NexmarkSource {
            table,
            event_num,
            chunk_rows,
            min_event_gap_ns,
            fields,
        }))
    }

    fn config() -> NexmarkConfig {
        NexmarkConfig {
            base_time: NEXMARK_BASE_TIME_MS,
            ..NexmarkConfig::default()
        }
    }

    /// Rows of the source (`None`: no end).
    fn total_rows(&self) -> Option<u64> {
        Some(self.table.rows_in(self.event_num?, &Self::config()))
    }

    fn split<T: NexmarkRow>(&self, cursor: RowCursor, schema: &SchemaRef) -> Box<dyn SplitRead> {
        let generator =
            EventGenerator::new(Self::config()).with_type_filter(self.table.event_type());
        let columns = T::columns();
        Box::new(NexmarkSplit::<T> {
            cursor,
            template: generator.clone(),
            generator,
            chunk_rows: self.chunk_rows,
            columns: self.fields.iter().map(|&i| &columns[i].1).collect(),
            schema: schema.clone(),
            rows: Vec::with_capacity(self.chunk_rows),
            offsets: Vec::with_capacity(self.chunk_rows),
        })
    }
}

fn sql_type(t: &DataType) -> &'static str {
    match t {
        DataType::Int64 => "bigint",
        DataType::Utf8 => "text",
        DataType::Timestamp(TimeUnit::Microsecond, None) => "timestamp",
        _ => "another type",
    }
}

impl SourceConnector for NexmarkSource {
    fn name(&self) -> &'static str {
        "nexmark"
    }

    fn is_bounded(&self) -> bool {
        self.event_num.is_some()
    }

    fn open_splits(
        &self,
        subtask: usize,
        parallelism: usize,
        schema: &SchemaRef,
        from: &SplitPositions,
        _columns: &[usize],
    ) -> ExecResult<Vec<OpenSplit>> {
        let cursor = RowCursor::new(subtask, parallelism, self.total_rows(), from);
        let reader = match self.table {
            NexmarkTable::Person => self.split::<Person>(cursor, schema),
            NexmarkTable::Auction => self.split::<Auction>(cursor, schema),
            // Bids (92% of the events) skip the crate's per-event strings.
            NexmarkTable::Bid => Box::new(BidSplit::new(
                &Self::config(),
                cursor,
                self.chunk_rows,
                self.fields.clone(),
                schema.clone(),
            )?),
        };
        Ok(vec![OpenSplit { reader, skip: 0 }])
    }

    fn legacy_positions(
        &self,
        subtask: usize,
        parallelism: usize,
        _schema: &SchemaRef,
        rows: u64,
    ) -> ExecResult<SplitPositions> {
        Ok([(split_id(parallelism as u64, subtask as u64), rows)].into())
    }

    fn rows_per_second(&self, parallelism: usize) -> Option<f64> {
        if self.min_event_gap_ns == 0 {
            return None;
        }
        let events = 1e9 / self.min_event_gap_ns as f64;
        Some(events * self.table.share(&Self::config()) / parallelism as f64)
    }
}

/// The rows of one subtask.
struct NexmarkSplit<T: 'static> {
    cursor: RowCursor,
    /// A generator of the type at offset 0.
    template: EventGenerator,
    /// The generator of the next rows, while they follow one step.
    generator: EventGenerator,
    chunk_rows: usize,
    /// How to read each column of the schema from an event.
    columns: Vec<&'static Value<T>>,
    schema: SchemaRef,
    /// The events of the batch being built (reused).
    rows: Vec<T>,
    /// Their offsets among the events of the type (reused).
    offsets: Vec<u64>,
}

impl<T: NexmarkRow> SplitRead for NexmarkSplit<T> {
    fn read(&mut self, max_rows: usize) -> ExecResult<Option<RecordBatch>> {
        self.cursor
            .next_rows(self.chunk_rows.min(max_rows), &mut self.offsets);
        if self.offsets.is_empty() {
            return Ok(None);
        }
        self.rows.clear();
        for (k, &offset) in self.offsets.iter().enumerate() {
            if self.generator.offset() != offset {
                // A new run of rows one step apart (after skipped ones).
                let step = match self.offsets.get(k + 1) {
                    Some(next) => next - offset,
                    None => 1,
                };
                self.generator = self.template.clone().with_offset(offset).with_step(step);
            }
            let event = self.generator.next().and_then(T::from_event);
            let row = event.ok_or_else(|| {
                ExecError::internal("nexmark generator gave an event of another type")
            })?;
            self.rows.push(row);
        }
        let rows = &self.rows;
        let arrays: Vec<ArrayRef> = self
            .columns
            .iter()
            .map(|value| -> ArrayRef {
                match value {
                    Value::Int(f) => Arc::new(Int64Array::from_iter_values(rows.iter().map(f))),
                    Value::Text(f) => {
                        let bytes = rows.iter().map(|r| f(r).len()).sum();
                        let mut b = StringBuilder::with_capacity(rows.len(), bytes);
                        for r in rows {
                            b.append_value(f(r));
                        }
                        Arc::new(b.finish())
                    }
                    Value::Time(f) => Arc::new(TimestampMicrosecondArray::from_iter_values(
                        rows.iter().map(|r| f(r) as i64 * 1000),
                    )),
                }
            })
            .collect();
        Ok(Some(RecordBatch::try_new(self.schema.clone(), arrays)?))
    }

    fn positions(&self, out: &mut Vec<(u64, u64)>) {
        self.cursor.positions(out);
    }

    fn position(&self) -> u64 {
        self.cursor.position()
    }

    fn hold_at(&mut self, target: Option<&SplitPositions>) {
        self.cursor.hold_at(target);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use datafusion::arrow::array::AsArray;
    use datafusion::arrow::datatypes::{Field, Int64Type, Schema};

    use super::*;

    fn schema(cols: &[(&str, DataType)]) -> SchemaRef {
        Arc::new(Schema::new(
            cols.iter()
                .map(|(n, t)| Field::new(*n, t.clone(), true))
                .collect::<Vec<_>>(),
        ))
    }

    fn source(options: &[(&str, &str)], schema: &SchemaRef) -> ExecResult<Arc<NexmarkSource>> {
        let mut o: BTreeMap<String, String> = options
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        o.insert("connector".into(), "nexmark".into());
        NexmarkSource::from_options(&o, schema)
    }

    fn all_rows(src: &NexmarkSource, s: &SchemaRef, subtask: usize, par: usize) -> Vec<i64> {
        let mut split = src.open(subtask, par, s, 0).unwrap().splits.remove(0);
        let mut out = Vec::new();
        while let Some(b) = split.next_batch().unwrap() {
            out.extend(b.column(0).as_primitive::<Int64Type>().values().iter());
        }
        out
    }

    #[test]
    fn counts_follow_the_proportions() {
        let cfg = NexmarkSource::config();
        assert_eq!(NexmarkTable::Person.rows_in(1_000_000, &cfg), 20_000);
        assert_eq!(NexmarkTable::Auction.rows_in(1_000_000, &cfg), 60_000);
        assert_eq!(NexmarkTable::Bid.rows_in(1_000_000, &cfg), 920_000);
        // 53 events: one full cycle, then person, 2 auctions.
        assert_eq!(NexmarkTable::Person.rows_in(53, &cfg), 2);
        assert_eq!(NexmarkTable::Auction.rows_in(53, &cfg), 5);
        assert_eq!(NexmarkTable::Bid.rows_in(53, &cfg), 46);
    }

    #[test]
    fn splits_deal_the_rows_out_and_resume_at_a_position() {
        let s = schema(&[
            ("price", DataType::Int64),
            (
                "date_time",
                DataType::Timestamp(TimeUnit::Microsecond, None),
            ),
        ]);
        let src = source(
            &[
                ("nexmark.table.type", "bid"),
                ("nexmark.event.num", "1006"),
                ("nexmark.max.chunk.size", "7"),
            ],
            &s,
        )
        .unwrap();
        let whole = all_rows(&src, &s, 0, 1);
        assert_eq!(whole.len(), 920 + 2);
        let (a, b) = (all_rows(&src, &s, 0, 2), all_rows(&src, &s, 1, 2));
        let dealt: Vec<i64> = (0..whole.len())
            .map(|i| if i % 2 == 0 { a[i / 2] } else { b[i / 2] })
            .collect();
        assert_eq!(dealt, whole);
        // Position 100 of subtask 1 of 2 is row 201.
        let mut split = src.open(1, 2, &s, 100).unwrap().splits.remove(0);
        let batch = split.next_batch().unwrap().unwrap();
        assert_eq!(
            batch.column(0).as_primitive::<Int64Type>().value(0),
            whole[201]
        );
    }

    /// Part of the rows at parallelism 1, the rest at 3 (the crate's
    /// generator restarted after skipped rows): each row once, the same
    /// rows as in one pass.
    #[test]
    fn a_checkpoint_resumes_at_another_parallelism() {
        let ts = DataType::Timestamp(TimeUnit::Microsecond, None);
        for (table, cols) in [
            (
                "person",
                vec![("id", DataType::Int64), ("date_time", ts.clone())],
            ),
            (
                "bid",
                vec![
                    ("price", DataType::Int64),
                    ("bidder", DataType::Int64),
                    ("date_time", ts.clone()),
                ],
            ),
        ] {
            let s = schema(&cols);
            let src = source(
                &[
                    ("nexmark.table.type", table),
                    ("nexmark.event.num", "20000"),
                    ("nexmark.max.chunk.size", "16"),
                ],
                &s,
            )
            .unwrap();
            // Each row's values, event time first.
            let times = |b: &RecordBatch| -> Vec<Vec<i64>> {
                let t = b.num_columns() - 1;
                (0..b.num_rows())
                    .map(|r| {
                        let mut v = vec![b
                            .column(t)
                            .as_primitive::<datafusion::arrow::datatypes::TimestampMicrosecondType>(
                            )
                            .value(r)];
                        v.extend((0..t).map(|c| b.column(c).as_primitive::<Int64Type>().value(r)));
                        v
                    })
                    .collect()
            };
            let mut whole: Vec<Vec<i64>> = Vec::new();
            let mut one = src
                .open_splits(0, 1, &s, &SplitPositions::new(), &[])
                .unwrap()
                .remove(0)
                .reader;
            while let Some(b) = one.next_batch().unwrap() {
                whole.extend(times(&b));
            }
            let mut first = src
                .open_splits(0, 1, &s, &SplitPositions::new(), &[])
                .unwrap()
                .remove(0)
                .reader;
            let mut got = times(&first.read(37).unwrap().unwrap());
            got.extend(times(&first.read(30).unwrap().unwrap()));
            let mut from = Vec::new();
            first.positions(&mut from);
            let from: SplitPositions = from.into_iter().collect();
            for subtask in 0..3 {
                let mut r = src
                    .open_splits(subtask, 3, &s, &from, &[])
                    .unwrap()
                    .remove(0)
                    .reader;
                let mut mine = Vec::new();
                while let Some(b) = r.next_batch().unwrap() {
                    mine.extend(times(&b));
                }
                assert!(
                    mine.windows(2).all(|w| w[0][0] <= w[1][0]),
                    "in event-time order"
                );
                got.extend(mine);
            }
            got.sort();
            whole.sort();
            assert_eq!(got.len(), whole.len(), "{table}");
            assert_eq!(got, whole, "{table}");
        }
    }

    #[test]
    fn rows_are_the_crates_events_at_the_harness_base_time() {
        let s = schema(&[
            (
                "date_time",
                DataType::Timestamp(TimeUnit::Microsecond, None),
            ),
            ("id", DataType::Int64),
            ("name", DataType::Utf8),
        ]);
        let src = source(
            &[
                ("nexmark.table.type", "person"),
                ("nexmark.event.num", "50"),
            ],
            &s,
        )
        .unwrap();
        let mut split = src.open(0, 1, &s, 0).unwrap().splits.remove(0);
        let batch = split.next_batch().unwrap().unwrap();
        assert_eq!(batch.num_rows(), 1);
        // The crate's own test of event 0.
        assert_eq!(batch.column(2).as_string::<i32>().value(0), "vicky noris");
        assert_eq!(batch.column(1).as_primitive::<Int64Type>().value(0), 1000);
        let ts = batch
            .column(0)
            .as_primitive::<datafusion::arrow::datatypes::TimestampMicrosecondType>();
        assert_eq!(ts.value(0), NEXMARK_BASE_TIME_MS as i64 * 1000);
        assert!(split.next_batch().unwrap().is_none());
    }

    #[test]
    fn bad_definitions_are_refused() {
        let bid = schema(&[("price", DataType::Int64)]);
        let code = |r: ExecResult<Arc<NexmarkSource>>| r.unwrap_err().sqlstate().code().to_owned();
        assert_eq!(code(source(&[], &bid)), "22023");
        assert_eq!(
            code(source(&[("nexmark.table.type", "bids")], &bid)),
            "22023"
        );
        assert_eq!(
            code(source(
                &[("nexmark.table.type", "bid"), ("nexmark.colour", "red")],
                &bid
            )),
            "22023"
        );
        assert_eq!(
            code(source(
                &[("nexmark.table.type", "bid"), ("nexmark.event.num", "-1")],
                &bid
            )),
            "22023"
        );
        let wrong_type = schema(&[("price", DataType::Int32)]);
        assert_eq!(
            code(source(&[("nexmark.table.type", "bid")], &wrong_type)),
            "42P16"
        );
        assert_eq!(
            code(source(&[("nexmark.table.type", "person")], &bid)),
            "42P16"
        );
    }
}
