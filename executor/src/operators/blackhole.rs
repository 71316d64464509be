//! `StreamBlackholeSink`: the `blackhole` sink connector. Drops every chunk
//! (its input counts still show in the metrics), for benchmarks and for
//! queries run only for their side effects.

use crate::chunk::Chunk;
use crate::error::ExecResult;
use crate::operator::{Operator, Output};

pub struct BlackholeSink;

impl Operator for BlackholeSink {
    fn on_chunk(&mut self, _input: usize, _chunk: Chunk, _out: &mut Output) -> ExecResult<()> {
        Ok(())
    }

    fn on_watermark(&mut self, _watermark: i64, _out: &mut Output) -> ExecResult<()> {
        Ok(())
    }
}
