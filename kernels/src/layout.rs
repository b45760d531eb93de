//! Where a sequence's keys and values live in the pool, as the ops see it.

/// An ordered run of a sequence's context: the first `len` slots of `blocks`, in order
/// (slot `j` lives in `blocks[j / block_size]` at offset `j % block_size`).
///
/// A context is a list of spans so that a shared prefix ending in a partly filled block can be
/// followed by a sequence's own blocks without copying.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KvSpan {
    pub blocks: Vec<u32>,
    pub len: usize,
}

/// One sequence of a packed batch: its query rows `q_start..q_start + q_len` in the packed
/// query tensor, and the context they attend to.
///
/// The query rows are the *last* `q_len` entries of the context (their own keys are written to
/// the pool before attention runs), so query row `i` sees the first `kv_len - q_len + i + 1`
/// context entries: causal attention over a cached prefix plus the new tokens. Decode is the case
/// `q_len == 1`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SeqAttention {
    pub q_start: usize,
    pub q_len: usize,
    pub context: Vec<KvSpan>,
}

impl SeqAttention {
    /// Number of context entries (cached plus new).
    pub fn kv_len(&self) -> usize {
        self.context.iter().map(|s| s.len).sum()
    }

    /// Pool slots `(block, offset)` of the context, in order, at most `limit` of them.
    pub(crate) fn slots(&self, block_size: usize, limit: usize) -> impl Iterator<Item = (usize, usize)> + '_ {
        self.context
            .iter()
            .flat_map(move |span| (0..span.len).map(move |j| (span.blocks[j / block_size] as usize, j % block_size)))
            .take(limit)
    }

    /// Checks the description against the pool before any memory is touched.
    pub(crate) fn validate(&self, block_size: usize, num_blocks: usize, num_q_rows: usize) -> Result<(), String> {
        if self.q_start + self.q_len > num_q_rows {
            return Err(format!(
                "query rows {}..{} exceed the {num_q_rows} packed rows",
                self.q_start,
                self.q_start + self.q_len
            ));
        }
        if self.q_len > self.kv_len() {
            return Err(format!("{} query rows but only {} context entries", self.q_len, self.kv_len()));
        }
        for span in &self.context {
            if span.len > span.blocks.len() * block_size {
                return Err(format!(
                    "span of {} tokens does not fit its {} blocks of {block_size}",
                    span.len,
                    span.blocks.len()
                ));
            }
            if let Some(b) = span.blocks.iter().find(|&&b| b as usize >= num_blocks) {
                return Err(format!("block {b} is outside the pool of {num_blocks} blocks"));
            }
        }
        Ok(())
    }
}

/// The pool slot (`block * block_size + offset`) of context entry `index`, or `None` when the
/// context is shorter.
pub fn context_slot(context: &[KvSpan], index: usize, block_size: usize) -> Option<u32> {
    let mut start = 0;
    for span in context {
        if index < start + span.len {
            let j = index - start;
            let block = *span.blocks.get(j / block_size)?;
            return Some(block * block_size as u32 + (j % block_size) as u32);
        }
        start += span.len;
    }
    None
}
