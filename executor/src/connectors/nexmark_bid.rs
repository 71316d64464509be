//! Nexmark bids written straight into Arrow buffers.
//!
//! Bids are 92% of the Nexmark events, and the `nexmark` crate builds each
//! one as a struct of `String`s (its `extra` one character at a time, its
//! channel and URL cloned) that the source then copies into Arrow arrays:
//! half of a bid's cost. This is the crate's `Bid::new` (0.2.0) step for
//! step — the same random draws from the same `SmallRng` (rand 0.8, the
//! crate's), in the same order, with the same types — writing the values
//! into the column buffers instead. The test below checks it against the
//! crate, which stays the reference: a new crate version must be checked
//! again (the version is pinned).

use std::sync::{Arc, OnceLock};

use datafusion::arrow::array::{
    ArrayRef, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use datafusion::arrow::buffer::{Buffer, OffsetBuffer, ScalarBuffer};
use datafusion::arrow::datatypes::SchemaRef;
use nexmark::config::NexmarkConfig;
use rand08::rngs::SmallRng;
use rand08::{Rng, SeedableRng};

use super::row_split::RowCursor;
use super::{SplitPositions, SplitRead};
use crate::error::{ExecError, ExecResult};

/// The crate's `HOT_AUCTION_RATIO`, `HOT_BIDDER_RATIO` (constants there).
const HOT_RATIO: usize = 100;
/// The crate's `CHANNEL_NUMBER`.
const CHANNELS: usize = 10_000;
/// Index of `extra` among the bid columns.
const EXTRA: usize = 6;

/// The crate's `CHANNEL_URL_MAP` (private there), built the same way.
fn channel_url_map() -> &'static [(String, String)] {
    static MAP: OnceLock<Vec<(String, String)>> = OnceLock::new();
    MAP.get_or_init(|| {
        (0..CHANNELS)
            .map(|i| {
                let mut url = base_url(i as u64);
                let mut rng = SmallRng::seed_from_u64(i as u64);
                if rng.gen_range(0..10) > 0 {
                    url.push_str("&channel_id=");
                    url.push_str(&i64::abs((i as i32).reverse_bits() as i64).to_string());
                }
                (format!("channel-{i}"), url)
            })
            .collect()
    })
}

/// The crate's `get_base_url`.
fn base_url(seed: u64) -> String {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut part = || -> String {
        let len = rng.gen_range(3usize..5);
        (0..len)
            .map(|_| {
                if rng.gen_range(0..13) == 0 {
                    '_'
                } else {
                    rng.gen_range(b'a'..=b'z') as char
                }
            })
            .collect()
    };
    let (a, b, c) = (part(), part(), part());
    format!("https://www.nexmark.com/{a}/{b}/{c}/item.htm?query=1")
}

/// Growing string column: values and offsets.
#[derive(Default)]
struct Strings {
    values: Vec<u8>,
    offsets: Vec<i32>,
}

impl Strings {
    fn with_capacity(rows: usize, bytes: usize) -> Strings {
        let mut offsets = Vec::with_capacity(rows + 1);
        offsets.push(0);
        Strings {
            values: Vec::with_capacity(bytes),
            offsets,
        }
    }

    fn push(&mut self, s: &[u8]) {
        self.values.extend_from_slice(s);
        self.end_value();
    }

    fn end_value(&mut self) {
        self.offsets.push(self.values.len() as i32);
    }

    fn finish(self) -> ExecResult<ArrayRef> {
        // Offsets grow and the values are ASCII (checked by `try_new`).
        let offsets = OffsetBuffer::new(ScalarBuffer::from(self.offsets));
        Ok(Arc::new(StringArray::try_new(
            offsets,
            Buffer::from_vec(self.values),
            None,
        )?))
    }
}

/// The bid columns of one batch, in the order of the `BID` columns:
/// auction, bidder, price, channel, url, date_time, extra.
struct BidColumns {
    auction: Vec<i64>,
    bidder: Vec<i64>,
    price: Vec<i64>,
    channel: Strings,
    url: Strings,
    date_time: Vec<i64>,
    extra: Strings,
}

/// The configuration values `Bid::new` reads.
#[derive(Clone)]
struct Params {
    person_proportion: usize,
    auction_proportion: usize,
    denominator: usize,
    active_people: usize,
    person_id_lead: usize,
    in_flight_auctions: usize,
    auction_id_lead: usize,
    hot_auction_ratio: usize,
    hot_bidder_ratio: usize,
    hot_channel_ratio: usize,
    first_auction_id: usize,
    first_person_id: usize,
    avg_bid_byte_size: usize,
    hot: Vec<(String, String)>,
    base_time: u64,
    /// Microseconds between events (one rate: `first_rate == next_rate`).
    inter_event_delay: f32,
}

impl Params {
    fn new(cfg: &NexmarkConfig) -> ExecResult<Params> {
        if cfg.first_rate != cfg.next_rate || cfg.out_of_order_group_size != 1 {
            return Err(ExecError::internal(
                "nexmark bids: only one event rate, in order, is supported",
            ));
        }
        Ok(Params {
            person_proportion: cfg.person_proportion,
            auction_proportion: cfg.auction_proportion,
            denominator: cfg.person_proportion + cfg.auction_proportion + cfg.bid_proportion,
            active_people: cfg.active_people,
            person_id_lead: cfg.person_id_lead,
            in_flight_auctions: cfg.in_flight_auctions,
            auction_id_lead: cfg.auction_id_lead,
            hot_auction_ratio: cfg.hot_auction_ratio,
            hot_bidder_ratio: cfg.hot_bidder_ratio,
            hot_channel_ratio: cfg.hot_channel_ratio,
            first_auction_id: cfg.first_auction_id,
            first_person_id: cfg.first_person_id,
            avg_bid_byte_size: cfg.avg_bid_byte_size,
            hot: cfg
                .hot_channels
                .iter()
                .cloned()
                .zip(cfg.hot_urls.iter().cloned())
                .collect(),
            base_time: cfg.base_time,
            inter_event_delay: cfg.us_per_unit as f32 / cfg.first_rate as f32
                * cfg.num_event_generators as f32,
        })
    }

    /// `Person::last_id`.
    fn person_last_id(&self, event_id: usize) -> usize {
        let epoch = event_id / self.denominator;
        let offset = (event_id % self.denominator).min(self.person_proportion - 1);
        epoch * self.person_proportion + offset
    }

    /// `Person::next_id`.
    fn person_next_id(&self, event_id: usize, rng: &mut SmallRng) -> usize {
        let people = self.person_last_id(event_id) + 1;
        let active = people.min(self.active_people);
        people - active + rng.gen_range(0..active + self.person_id_lead)
    }

    /// `Auction::last_id` (for a bid's event id).
    fn auction_last_id(&self, event_id: usize) -> usize {
        let mut epoch = event_id / self.denominator;
        let mut offset = event_id % self.denominator;
        if offset < self.person_proportion {
            epoch -= 1;
            offset = self.auction_proportion - 1;
        } else if self.person_proportion + self.auction_proportion <= offset {
            offset = self.auction_proportion - 1;
        } else {
            offset -= self.person_proportion;
        }
        epoch * self.auction_proportion + offset
    }

    /// `Auction::next_id`.
    fn auction_next_id(&self, event_id: usize, rng: &mut SmallRng) -> usize {
        let max_auction = self.auction_last_id(event_id);
        let min_auction = max_auction.saturating_sub(self.in_flight_auctions);
        min_auction + rng.gen_range(0..max_auction - min_auction + 1 + self.auction_id_lead)
    }

    /// `GeneratorConfig::event_timestamp` with one rate.
    fn timestamp(&self, event_number: usize) -> u64 {
        self.base_time + ((event_number as f32 * self.inter_event_delay) / 1000.0).round() as u64
    }

    /// The event number of bid `offset` (`EventGenerator::global_offset`).
    fn event_number(&self, offset: u64) -> usize {
        let bids = self.denominator - self.person_proportion - self.auction_proportion;
        let offset = offset as usize;
        offset / bids * self.denominator
            + self.person_proportion
            + self.auction_proportion
            + offset % bids
    }

    /// `Event::new` + `Bid::new` for event `event_number`, into `out`;
    /// `extra` (the last draws) only when `with_extra`.
    fn write_bid(&self, event_number: usize, out: &mut BidColumns, with_extra: bool) {
        let event_id = event_number; // first_event_id = 0
        let rng = &mut SmallRng::seed_from_u64(event_id as u64);
        let auction = if 0 < rng.gen_range(0..self.hot_auction_ratio) {
            (self.auction_last_id(event_id) / HOT_RATIO) * HOT_RATIO
        } else {
            self.auction_next_id(event_id, rng)
        };
        let bidder = if 0 < rng.gen_range(0..self.hot_bidder_ratio) {
            (self.person_last_id(event_id) / HOT_RATIO) * HOT_RATIO + 1
        } else {
            self.person_next_id(event_id, rng)
        };
        // `gen_price`.
        let price = (10.0_f32.powf(rng.gen::<f32>() * 6.0) * 100.0).round() as usize;
        let (channel, url) = if rng.gen_range(0..self.hot_channel_ratio) > 0 {
            &self.hot[rng.gen_range(0..self.hot.len())]
        } else {
            // `SliceRandom::choose`: an index drawn as u32 for short slices.
            let map = channel_url_map();
            &map[rng.gen_range(0..map.len() as u32) as usize]
        };
        out.auction.push((auction + self.first_auction_id) as i64);
        out.bidder.push((bidder + self.first_person_id) as i64);
        out.price.push(price as i64);
        out.channel.push(channel.as_bytes());
        out.url.push(url.as_bytes());
        out.date_time
            .push(self.timestamp(event_number) as i64 * 1000);
        // `gen_next_extra(8 + 8 + 8 + 8, avg_bid_byte_size)`.
        let current_size = 8 + 8 + 8 + 8;
        if with_extra && current_size <= self.avg_bid_byte_size {
            let desired = self.avg_bid_byte_size - current_size;
            let delta = (desired + 2) / 5;
            let min_size = desired - delta;
            let size = min_size
                + if delta == 0 {
                    0
                } else {
                    rng.gen_range(0..2 * delta)
                };
            let values = &mut out.extra.values;
            values.reserve(size);
            for _ in 0..size {
                values.push(rng.gen_range(b'a'..=b'z'));
            }
        }
        out.extra.end_value();
    }
}

/// The bids of one subtask: the bid offsets its cursor gives.
pub(super) struct BidSplit {
    params: Params,
    cursor: RowCursor,
    chunk_rows: usize,
    /// The offsets of the batch being built (reused).
    offsets: Vec<u64>,
    /// Each column of the schema: its index in the bid columns.
    fields: Vec<usize>,
    /// Whether `extra` is among them: its ~70 random letters are most of
    /// a bid's cost, and nothing is drawn after them.
    with_extra: bool,
    schema: SchemaRef,
}

impl BidSplit {
    pub(super) fn new(
        cfg: &NexmarkConfig,
        cursor: RowCursor,
        chunk_rows: usize,
        fields: Vec<usize>,
        schema: SchemaRef,
    ) -> ExecResult<BidSplit> {
        Ok(BidSplit {
            params: Params::new(cfg)?,
            cursor,
            chunk_rows,
            offsets: Vec::with_capacity(chunk_rows),
            with_extra: fields.contains(&EXTRA),
            fields,
            schema,
        })
    }
}

impl SplitRead for BidSplit {
    fn read(&mut self, max_rows: usize) -> ExecResult<Option<RecordBatch>> {
        self.cursor
            .next_rows(self.chunk_rows.min(max_rows), &mut self.offsets);
        let n = self.offsets.len();
        if n == 0 {
            return Ok(None);
        }
        let mut out = BidColumns {
            auction: Vec::with_capacity(n),
            bidder: Vec::with_capacity(n),
            price: Vec::with_capacity(n),
            channel: Strings::with_capacity(n, n * 12),
            url: Strings::with_capacity(n, n * 96),
            date_time: Vec::with_capacity(n),
            extra: Strings::with_capacity(n, n * 84),
        };
        for &offset in &self.offsets {
            let event_number = self.params.event_number(offset);
            self.params
                .write_bid(event_number, &mut out, self.with_extra);
        }
        let mut columns: [Option<ArrayRef>; 7] = [
            Some(Arc::new(Int64Array::from(out.auction))),
            Some(Arc::new(Int64Array::from(out.bidder))),
            Some(Arc::new(Int64Array::from(out.price))),
            Some(out.channel.finish()?),
            Some(out.url.finish()?),
            Some(Arc::new(TimestampMicrosecondArray::from(out.date_time))),
            Some(out.extra.finish()?),
        ];
        let arrays = self
            .fields
            .iter()
            .map(|&i| {
                columns[i]
                    .take()
                    .ok_or_else(|| ExecError::internal("nexmark bid column declared twice"))
            })
            .collect::<ExecResult<Vec<_>>>()?;
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
    use datafusion::arrow::array::AsArray;
    use datafusion::arrow::datatypes::{
        DataType, Field, Int64Type, Schema, TimeUnit, TimestampMicrosecondType,
    };
    use nexmark::event::{Event, EventType};
    use nexmark::EventGenerator;

    use super::super::row_split::split_id;
    use super::*;

    /// The cursor of bid offsets `first`, `first + step`, ... (`rows` of
    /// them).
    fn cursor(first: u64, step: u64, rows: usize) -> RowCursor {
        let (subtask, k) = (first % step, first / step);
        RowCursor::new(
            subtask as usize,
            step as usize,
            Some(first + step * (rows as u64 - 1) + 1),
            &[(split_id(step, subtask), k)].into(),
        )
    }

    fn cfg() -> NexmarkConfig {
        NexmarkConfig {
            base_time: super::super::nexmark::NEXMARK_BASE_TIME_MS,
            ..NexmarkConfig::default()
        }
    }

    /// The same bids as the crate, from `first` by `step`.
    fn check(first: u64, step: u64, rows: usize) {
        let t = DataType::Timestamp(TimeUnit::Microsecond, None);
        let names = [
            ("auction", DataType::Int64),
            ("bidder", DataType::Int64),
            ("price", DataType::Int64),
            ("channel", DataType::Utf8),
            ("url", DataType::Utf8),
            ("date_time", t),
            ("extra", DataType::Utf8),
        ];
        let schema = Arc::new(Schema::new(
            names
                .iter()
                .map(|(n, t)| Field::new(*n, t.clone(), true))
                .collect::<Vec<_>>(),
        ));
        let mut split = BidSplit::new(
            &cfg(),
            cursor(first, step, rows),
            1000,
            (0..7).collect(),
            schema,
        )
        .unwrap();
        let mut crate_bids = EventGenerator::new(cfg())
            .with_type_filter(EventType::Bid)
            .with_offset(first)
            .with_step(step);
        let mut seen = 0;
        while let Some(b) = split.next_batch().unwrap() {
            let int = |i: usize| b.column(i).as_primitive::<Int64Type>().clone();
            let text = |i: usize| b.column(i).as_string::<i32>().clone();
            let (auction, bidder, price) = (int(0), int(1), int(2));
            let (channel, url, extra) = (text(3), text(4), text(6));
            let ts = b.column(5).as_primitive::<TimestampMicrosecondType>();
            for r in 0..b.num_rows() {
                let Some(Event::Bid(want)) = crate_bids.next() else {
                    panic!("not a bid")
                };
                let got = (
                    auction.value(r) as usize,
                    bidder.value(r) as usize,
                    price.value(r) as usize,
                    channel.value(r),
                    url.value(r),
                    ts.value(r) as u64 / 1000,
                    extra.value(r),
                );
                let want = (
                    want.auction,
                    want.bidder,
                    want.price,
                    want.channel.as_str(),
                    want.url.as_str(),
                    want.date_time,
                    want.extra.as_str(),
                );
                assert_eq!(got, want, "bid offset {}", first + (seen as u64) * step);
                seen += 1;
            }
        }
        assert_eq!(seen, rows);
    }

    #[test]
    fn the_same_bids_as_the_crate() {
        check(0, 1, 30_000);
        // Far into the stream (ids past the in-flight and active windows,
        // timestamps far from the base), by a step.
        check(45_000_001, 3, 10_000);
    }

    #[test]
    fn without_extra_the_other_columns_are_the_same() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("price", DataType::Int64, true),
            Field::new("url", DataType::Utf8, true),
        ]));
        let mut split =
            BidSplit::new(&cfg(), cursor(7, 2, 5000), 5000, vec![2, 4], schema).unwrap();
        assert!(!split.with_extra);
        let b = split.next_batch().unwrap().unwrap();
        let want: Vec<(usize, String)> = EventGenerator::new(cfg())
            .with_type_filter(EventType::Bid)
            .with_offset(7)
            .with_step(2)
            .take(5000)
            .map(|e| match e {
                Event::Bid(b) => (b.price, b.url),
                _ => panic!("not a bid"),
            })
            .collect();
        let got: Vec<(usize, String)> = (0..b.num_rows())
            .map(|r| {
                (
                    b.column(0).as_primitive::<Int64Type>().value(r) as usize,
                    b.column(1).as_string::<i32>().value(r).to_string(),
                )
            })
            .collect();
        assert_eq!(got, want);
    }
}
