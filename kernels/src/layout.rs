//! Where a sequence's keys and values live in the pool, as the ops see it.

use crate::cascade::SharedGroup;

/// An ordered run of a sequence's context: `len` consecutive slots of `blocks` from slot
/// `first` of `blocks[0]` (entry `j` lives in `blocks[(first + j) / block_size]` at offset
/// `(first + j) % block_size`).
///
/// A context is a list of spans so that a shared prefix ending in a partly filled block can be
/// followed by a sequence's own blocks without copying, and so that a sliding window can start
/// inside a block. `shift` is how many positions later the
/// span sits than the position its keys were rotated for: attention rotates them by that much
/// (0 for keys computed in place).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KvSpan {
    pub blocks: Vec<u32>,
    pub first: usize,
    pub len: usize,
    pub shift: i32,
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

    /// Checks the description against the pool before any memory is touched.
    pub(crate) fn validate(
        &self,
        block_size: usize,
        num_blocks: usize,
        num_q_rows: usize,
    ) -> Result<(), String> {
        if self.q_start + self.q_len > num_q_rows {
            return Err(format!(
                "query rows {}..{} exceed the {num_q_rows} packed rows",
                self.q_start,
                self.q_start + self.q_len
            ));
        }
        if self.q_len > self.kv_len() {
            return Err(format!(
                "{} query rows but only {} context entries",
                self.q_len,
                self.kv_len()
            ));
        }
        for span in &self.context {
            if span.first >= block_size.max(1)
                || span.first + span.len > span.blocks.len() * block_size
            {
                return Err(format!(
                    "span of {} tokens from slot {} does not fit its {} blocks of {block_size}",
                    span.len,
                    span.first,
                    span.blocks.len()
                ));
            }
            if let Some(b) = span.blocks.iter().find(|&&b| b as usize >= num_blocks) {
                return Err(format!(
                    "block {b} is outside the pool of {num_blocks} blocks"
                ));
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
            let j = span.first + index - start;
            let block = *span.blocks.get(j / block_size)?;
            return Some(block * block_size as u32 + (j % block_size) as u32);
        }
        start += span.len;
    }
    None
}

/// A batch's attention description, flattened once per step into one `u32` tensor on the
/// device that runs the ops, so every layer reuses it (and a CUDA graph can replay it).
///
/// Sections, in order (see `MetaLayout::offsets`): `row_seq[rows]`, `row_visible[rows]`,
/// `row_skip[rows]`, `seq_start[num_seqs + 1]`, `group_row_start[num_groups + 1]`,
/// `group_seq[num_groups]`, `group_len[num_groups]`, `items[2 * num_items]`,
/// `group_rows[group_rows]`, `tiled[3 * num_tiled]`, `row_list[row_list]`, then each sequence's
/// context slots (`block * block_size + offset`).
/// Query row `r` belongs to sequence `row_seq[r]` and attends to the first `row_visible[r]` of
/// that sequence's slots; the first `row_skip[r]` of them come from its group's shared pass.
/// Group `g` holds query rows `group_rows[group_row_start[g]..group_row_start[g + 1]]`, and its
/// shared entries are the first `group_len[g]` slots of sequence `group_seq[g]`; `items` lists
/// the (group, chunk of [`SHARED_CHUNK`](crate::SHARED_CHUNK) entries) pairs of the shared pass. `tiled` lists
/// (sequence, first row, rows) of the prefills the GPU attends in tiles of rows (see
/// [`TILED_MIN_ROWS`]); when there are any, `row_list` holds the other rows, which the per-row
/// kernel runs over (the CPU attends every row one by one and reads neither).
pub struct AttentionBatch {
    pub(crate) meta: candle_core::Tensor,
    pub(crate) layout: MetaLayout,
    /// RoPE base of the model, needed to re-rotate shifted spans.
    pub(crate) rope_theta: Option<f64>,
}

/// The sizes that place each section of the flattened metadata, known on the host without
/// reading the device.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct MetaLayout {
    pub rows: usize,
    pub num_seqs: usize,
    pub num_groups: usize,
    /// Query rows that belong to a group.
    pub group_rows: usize,
    /// Query rows of the largest group.
    pub max_group_rows: usize,
    pub num_items: usize,
    /// Chunks of the longest shared part.
    pub max_chunks: usize,
    /// Sequences attended by the tiled prefill kernel.
    pub num_tiled: usize,
    /// Query rows of the longest of them.
    pub max_tiled_rows: usize,
    /// Length of the `row_list` section: the rows left to the per-row kernel when some
    /// sequence is tiled, else 0 (every row).
    pub row_list: usize,
    /// The most entries one query row attends outside a shared group, rounded up by
    /// [`row_keys_bucket`]: split-KV divides it, and a CUDA graph captured for one bucket serves
    /// every step whose rows fit it with the same launch shape an eager step would use.
    pub max_row_keys: usize,
    /// Context slots of all sequences.
    pub num_slots: usize,
    /// Of those, the shared entries of group members (each member's context begins with its
    /// group's `len` slots): constant while a run's groups are, so part of a graph's shape.
    pub shared_slots: usize,
    /// Room for slots: the slots section is this long (`num_slots` of it used), so that steps
    /// with different context lengths share one layout (see [`MetaLayout::widen`]). When some
    /// span is shifted, a `shifts` section of this length (one `i32` per slot, as `u32` bits)
    /// follows.
    pub slot_capacity: usize,
    pub shifted: bool,
    /// Some row reads a slot that another sequence's row writes in this step (sequences placed
    /// together sharing what they compute): the fused input-and-attention kernel, which writes
    /// and reads keys in one launch, would race, so it is not used.
    pub cross_row_reads: bool,
}

/// Query rows from which a sequence's prefill is attended in tiles of rows on the GPU (each key
/// read once per tile instead of once per row), unless it has a shifted span or rows in a
/// cascade group, which the per-row kernel handles.
pub const TILED_MIN_ROWS: usize = 16;

/// The smallest power of two at or above `keys`, at least 256: few distinct values over a run,
/// so that few CUDA graphs cover it.
pub fn row_keys_bucket(keys: usize) -> usize {
    keys.next_power_of_two().max(256)
}

/// Where each section starts (in `u32`s from the start of the metadata).
pub(crate) struct Offsets {
    pub row_seq: usize,
    pub row_visible: usize,
    pub row_skip: usize,
    pub seq_start: usize,
    pub group_row_start: usize,
    pub group_seq: usize,
    pub group_len: usize,
    pub items: usize,
    pub group_rows: usize,
    pub tiled: usize,
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    pub row_list: usize,
    pub slots: usize,
    pub shifts: usize,
}

impl MetaLayout {
    /// `u32`s in the whole metadata: every section, the shifts only when some span is shifted.
    pub fn total_len(&self) -> usize {
        self.offsets().shifts + if self.shifted { self.slot_capacity } else { 0 }
    }

    /// Makes room for `slot_capacity` slots. Steps of one shape (rows, sequences, groups,
    /// shifted or not, row-key bucket) then share one layout whatever their context lengths, so a
    /// CUDA graph reads the same offsets every replay. The flattened metadata stays compact
    /// (shifts right after the used slots); [`MetaLayout::pieces`] says where its parts go.
    pub fn widen(&mut self, slot_capacity: usize) -> candle_core::Result<()> {
        if slot_capacity < self.num_slots {
            candle_core::bail!(
                "attention batch: room for {slot_capacity} slots cannot hold {}",
                self.num_slots
            );
        }
        self.slot_capacity = slot_capacity;
        Ok(())
    }

    /// The slot room of a decode step widened for a CUDA graph: every row at its row-key bucket
    /// of own entries, plus the groups' shared entries.
    pub fn graph_slot_capacity(&self) -> usize {
        self.rows * self.max_row_keys + self.shared_slots
    }

    /// Where the compact metadata of a (possibly widened) layout goes in a buffer of
    /// [`MetaLayout::total_len`]: (range of the compact metadata, offset in the buffer). The
    /// rest of the buffer is never read.
    pub fn pieces(&self) -> Vec<(std::ops::Range<usize>, usize)> {
        let used = self.offsets().slots + self.num_slots;
        let mut pieces = vec![(0..used, 0)];
        if self.shifted {
            pieces.push((used..used + self.num_slots, self.offsets().shifts));
        }
        pieces
    }

    pub(crate) fn offsets(&self) -> Offsets {
        let (r, s, g) = (self.rows, self.num_seqs, self.num_groups);
        let seq_start = 3 * r;
        let group_row_start = seq_start + s + 1;
        let group_seq = group_row_start + g + 1;
        let group_len = group_seq + g;
        let items = group_len + g;
        let group_rows = items + 2 * self.num_items;
        let tiled = group_rows + self.group_rows;
        let row_list = tiled + 3 * self.num_tiled;
        let slots = row_list + self.row_list;
        let shifts = slots + self.slot_capacity;
        Offsets {
            row_seq: 0,
            row_visible: r,
            row_skip: 2 * r,
            seq_start,
            group_row_start,
            group_seq,
            group_len,
            items,
            group_rows,
            tiled,
            row_list,
            slots,
            shifts,
        }
    }
}

impl AttentionBatch {
    /// Checks every sequence and group against the pool, then flattens and uploads.
    pub fn new(
        seqs: &[SeqAttention],
        groups: &[SharedGroup],
        rows: usize,
        block_size: usize,
        num_blocks: usize,
        device: &candle_core::Device,
    ) -> candle_core::Result<Self> {
        let (meta, layout) = Self::flatten(seqs, groups, rows, block_size, num_blocks)?;
        let len = meta.len();
        Self::from_meta(candle_core::Tensor::from_vec(meta, len, device)?, layout)
    }

    /// A batch whose flattened description (from [`AttentionBatch::flatten`]) is already on the
    /// device, e.g. as a view into one upload of all of a step's integer inputs.
    pub fn from_meta(meta: candle_core::Tensor, layout: MetaLayout) -> candle_core::Result<Self> {
        if meta.dtype() != candle_core::DType::U32 || meta.dims1()? < layout.total_len() {
            candle_core::bail!(
                "attention batch: metadata must be u32 and hold every section of its layout"
            );
        }
        Ok(AttentionBatch {
            meta,
            layout,
            rope_theta: None,
        })
    }

    /// The model's RoPE base, with which shifted spans' keys are re-rotated.
    pub fn with_rope_theta(mut self, theta: f64) -> Self {
        self.rope_theta = Some(theta);
        self
    }

    pub fn layout(&self) -> MetaLayout {
        self.layout
    }

    /// Checks every sequence and group against the pool and flattens the description (layout
    /// above).
    pub fn flatten(
        seqs: &[SeqAttention],
        groups: &[SharedGroup],
        rows: usize,
        block_size: usize,
        num_blocks: usize,
    ) -> candle_core::Result<(Vec<u32>, MetaLayout)> {
        let mut row_seq = vec![u32::MAX; rows];
        let mut row_visible = vec![0u32; rows];
        let mut seq_start = Vec::with_capacity(seqs.len() + 1);
        let shifted = seqs
            .iter()
            .any(|s| s.context.iter().any(|span| span.shift != 0));
        let total: usize = seqs.iter().map(SeqAttention::kv_len).sum();
        let (mut slots, mut shifts) = (
            Vec::with_capacity(total),
            Vec::with_capacity(if shifted { total } else { 0 }),
        );
        for (i, s) in seqs.iter().enumerate() {
            s.validate(block_size, num_blocks, rows).map_err(|e| {
                candle_core::Error::Msg(format!("attention batch: sequence {i}: {e}"))
            })?;
            let past = s.kv_len() - s.q_len;
            for r in 0..s.q_len {
                if row_seq[s.q_start + r] != u32::MAX {
                    candle_core::bail!(
                        "attention batch: query row {} belongs to two sequences",
                        s.q_start + r
                    );
                }
                row_seq[s.q_start + r] = i as u32;
                row_visible[s.q_start + r] = (past + r + 1) as u32;
            }
            seq_start.push(slots.len() as u32);
            // Block by block (this runs for every context entry of every step).
            for span in &s.context {
                // A span may hold more blocks than its entries need (room reserved ahead).
                let end = span.first + span.len;
                for (k, &b) in span
                    .blocks
                    .iter()
                    .take(end.div_ceil(block_size))
                    .enumerate()
                {
                    let base = b * block_size as u32;
                    let from = span.first.saturating_sub(k * block_size).min(block_size);
                    slots.extend(
                        base + from as u32..base + (end - k * block_size).min(block_size) as u32,
                    );
                }
            }
            if shifted {
                shifts.extend(
                    s.context
                        .iter()
                        .flat_map(|span| std::iter::repeat_n(span.shift as u32, span.len)),
                );
            }
        }
        seq_start.push(slots.len() as u32);
        if let Some(r) = row_seq.iter().position(|&s| s == u32::MAX) {
            candle_core::bail!("attention batch: query row {r} belongs to no sequence");
        }
        let shared =
            crate::cascade::GroupTables::build(groups, seqs, &seq_start, &slots, &shifts, rows)
                .map_err(|e| candle_core::Error::Msg(format!("attention batch: {e}")))?;
        let (tiled, row_list) = tiles(seqs, &shared.row_skip);
        // Over the rows the per-row kernel runs: all of them, or the listed ones.
        let own_keys = |r: usize| (row_visible[r] - shared.row_skip[r]) as usize;
        let max_row_keys = if tiled.is_empty() {
            (0..rows).map(own_keys).max()
        } else {
            row_list.iter().map(|&r| own_keys(r as usize)).max()
        }
        .unwrap_or(0);
        let layout = MetaLayout {
            rows,
            num_seqs: seqs.len(),
            num_groups: groups.len(),
            group_rows: shared.group_rows.len(),
            max_group_rows: shared.max_group_rows,
            num_items: shared.items.len() / 2,
            max_chunks: shared.max_chunks,
            num_tiled: tiled.len() / 3,
            max_tiled_rows: tiled.chunks(3).map(|t| t[2] as usize).max().unwrap_or(0),
            row_list: row_list.len(),
            max_row_keys: row_keys_bucket(max_row_keys),
            num_slots: slots.len(),
            shared_slots: groups.iter().map(|g| g.seqs.len() * g.len).sum(),
            slot_capacity: slots.len(),
            shifted,
            cross_row_reads: false,
        };
        let mut meta = row_seq;
        meta.reserve(layout.total_len() - meta.len());
        for part in [
            row_visible,
            shared.row_skip,
            seq_start,
            shared.group_row_start,
            shared.group_seq,
            shared.group_len,
            shared.items,
            shared.group_rows,
            tiled,
            row_list,
            slots,
            shifts,
        ] {
            meta.extend(part);
        }
        debug_assert_eq!(meta.len(), layout.total_len());
        Ok((meta, layout))
    }
}

/// The `tiled` section ((sequence, first row, rows) per tiled prefill) and the `row_list`
/// section (every other row, ascending; empty when nothing is tiled).
fn tiles(seqs: &[SeqAttention], row_skip: &[u32]) -> (Vec<u32>, Vec<u32>) {
    let mut tiled = Vec::new();
    for (i, s) in seqs.iter().enumerate() {
        let rows = s.q_start..s.q_start + s.q_len;
        // Shifted spans too: the tile re-rotates their keys in shared memory.
        if s.q_len >= TILED_MIN_ROWS && rows.clone().all(|r| row_skip[r] == 0) {
            tiled.extend([i as u32, s.q_start as u32, s.q_len as u32]);
        }
    }
    if tiled.is_empty() {
        return (tiled, Vec::new());
    }
    let mut is_tiled = vec![false; row_skip.len()];
    for t in tiled.chunks(3) {
        is_tiled[t[1] as usize..(t[1] + t[2]) as usize].fill(true);
    }
    let row_list = (0..row_skip.len() as u32)
        .filter(|&r| !is_tiled[r as usize])
        .collect();
    (tiled, row_list)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seq(q_start: usize, q_len: usize, kv_len: usize, shift: i32) -> SeqAttention {
        let blocks = (0..kv_len.div_ceil(16) as u32).collect();
        SeqAttention {
            q_start,
            q_len,
            context: vec![KvSpan {
                blocks,
                first: 0,
                len: kv_len,
                shift,
            }],
        }
    }

    /// A span starting inside a block lists its slots from there, across blocks in order, and
    /// context_slot agrees with the flattened list.
    #[test]
    fn spans_from_inside_a_block() {
        let context = vec![
            KvSpan {
                blocks: vec![5],
                first: 0,
                len: 2,
                shift: 0,
            },
            KvSpan {
                blocks: vec![7, 2, 9],
                first: 3,
                len: 7,
                shift: 0,
            },
        ];
        let seqs = [SeqAttention {
            q_start: 0,
            q_len: 1,
            context: context.clone(),
        }];
        let (meta, l) = AttentionBatch::flatten(&seqs, &[], 1, 4, 16).unwrap();
        let want = [20, 21, 31, 8, 9, 10, 11, 36, 37];
        assert_eq!(
            &meta[l.offsets().slots..l.offsets().slots + l.num_slots],
            &want
        );
        for (i, &w) in want.iter().enumerate() {
            assert_eq!(context_slot(&context, i, 4), Some(w));
        }
        let overfull = [SeqAttention {
            q_start: 0,
            q_len: 1,
            context: vec![KvSpan {
                blocks: vec![1],
                first: 3,
                len: 2,
                shift: 0,
            }],
        }];
        assert!(AttentionBatch::flatten(&overfull, &[], 1, 4, 16).is_err());
    }

    /// Prefills of at least TILED_MIN_ROWS rows are tiled, shifted or not; the other rows, and
    /// only they, go to the per-row kernel, and only they size the row-key bucket.
    #[test]
    fn long_prefills_are_tiled_and_the_rest_listed() {
        let seqs = [
            seq(0, 1, 300, 0),
            seq(1, 20, 600, 0),
            seq(21, 16, 16, 5),
            seq(37, 15, 15, 0),
            seq(52, 16, 40, 0),
        ];
        let (meta, l) = AttentionBatch::flatten(&seqs, &[], 68, 16, 64).unwrap();
        let o = l.offsets();
        assert_eq!((l.num_tiled, l.max_tiled_rows, l.row_list), (3, 20, 1 + 15));
        assert_eq!(
            &meta[o.tiled..o.row_list],
            &[1, 1, 20, 2, 21, 16, 4, 52, 16]
        );
        let listed: Vec<u32> = std::iter::once(0).chain(37..52).collect();
        assert_eq!(&meta[o.row_list..o.slots], listed.as_slice());
        assert_eq!(l.max_row_keys, 300usize.next_power_of_two());
        // Decode only: nothing tiled, no list, the per-row kernel takes every row.
        let (_, d) =
            AttentionBatch::flatten(&[seq(0, 1, 40, 0), seq(1, 1, 9, 0)], &[], 2, 16, 64).unwrap();
        assert_eq!((d.num_tiled, d.row_list), (0, 0));
    }
}
