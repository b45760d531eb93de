//! Cascade attention's shared level: sequences whose contexts begin in the same pool slots form
//! a group, and those entries are attended once for all of the group's query rows, not once per
//! sequence. Each row's own entries are attended as usual and the two partial softmaxes are
//! merged by log-sum-exp (natural log throughout, CPU and CUDA alike), which is exact up to
//! rounding. On the GPU this turns a shared prefix from a per-sequence read of global memory into
//! one read per group (and a matrix product on tensor cores for 16-bit storage).

use crate::elem::Elem;
use crate::layout::SeqAttention;
use crate::paged_attention::{Dims, Partial, Sections};
use rayon::prelude::*;

/// Shared entries per work item of the GPU's shared pass (two key tiles). Short items keep every
/// SM busy when there are few groups and KV heads (the pass is latency-bound, not bound by its
/// tensor-core math); each chunk leaves a partial softmax that the per-row pass merges, so
/// shorter chunks cost more merging (64 was slower than 128 at prefix 2048, batch 64 on an H200).
pub const SHARED_CHUNK: usize = 128;

/// Sequences of a batch (indices into its [`SeqAttention`] list) whose contexts begin with the
/// same `len` pool slots. Every query row of a member must see at least those entries.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SharedGroup {
    pub seqs: Vec<usize>,
    pub len: usize,
}

/// The group sections of the flattened metadata (see `AttentionBatch`).
pub(crate) struct GroupTables {
    pub row_skip: Vec<u32>,
    pub group_row_start: Vec<u32>,
    pub group_seq: Vec<u32>,
    pub group_len: Vec<u32>,
    pub items: Vec<u32>,
    pub group_rows: Vec<u32>,
    pub max_group_rows: usize,
    pub max_chunks: usize,
}

impl GroupTables {
    /// Checks each group (members exist, are in one group only, hold the same slots and see
    /// all of them) and lays out its tables.
    pub fn build(
        groups: &[SharedGroup],
        seqs: &[SeqAttention],
        seq_start: &[u32],
        slots: &[u32],
        shifts: &[u32],
        rows: usize,
    ) -> Result<Self, String> {
        let mut t = GroupTables {
            row_skip: vec![0; rows],
            group_row_start: vec![0],
            group_seq: Vec::new(),
            group_len: Vec::new(),
            items: Vec::new(),
            group_rows: Vec::new(),
            max_group_rows: 0,
            max_chunks: 0,
        };
        let mut in_group = vec![false; seqs.len()];
        for (g, group) in groups.iter().enumerate() {
            let (Some(&leader), true) = (group.seqs.first(), group.len > 0) else {
                return Err(format!(
                    "shared group {g} is empty ({} sequences, {} entries)",
                    group.seqs.len(),
                    group.len
                ));
            };
            let mut lead: Option<&[u32]> = None;
            for &s in &group.seqs {
                let seq = seqs.get(s).ok_or(format!(
                    "shared group {g} names sequence {s}, but the batch has {}",
                    seqs.len()
                ))?;
                if std::mem::replace(in_group.get_mut(s).expect("checked"), true) {
                    return Err(format!("sequence {s} is in two shared groups"));
                }
                let sees = seq.kv_len() - seq.q_len + 1;
                if sees < group.len {
                    return Err(format!("shared group {g}: the first query row of sequence {s} sees {sees} entries, fewer than the {} shared", group.len));
                }
                let own = &slots[seq_start[s] as usize..][..group.len];
                // `shifts` is empty when no span of the batch is shifted.
                let first = seq_start[s] as usize;
                if shifts
                    .get(first..first + group.len)
                    .is_some_and(|sh| sh.iter().any(|&x| x != 0))
                {
                    return Err(format!("shared group {g}: sequence {s} has shifted keys in the shared entries; the shared pass attends keys as stored"));
                }
                if *lead.get_or_insert(own) != own {
                    return Err(format!("shared group {g}: sequence {s} does not hold its first {} entries in the slots sequence {leader} does", group.len));
                }
                for r in seq.q_start..seq.q_start + seq.q_len {
                    t.row_skip[r] = group.len as u32;
                    t.group_rows.push(r as u32);
                }
            }
            let members =
                t.group_rows.len() - *t.group_row_start.last().expect("starts with 0") as usize;
            t.max_group_rows = t.max_group_rows.max(members);
            t.group_row_start.push(t.group_rows.len() as u32);
            t.group_seq.push(leader as u32);
            t.group_len.push(group.len as u32);
            let chunks = group.len.div_ceil(SHARED_CHUNK);
            t.max_chunks = t.max_chunks.max(chunks);
            t.items
                .extend((0..chunks as u32).flat_map(|c| [g as u32, c]));
        }
        Ok(t)
    }
}

/// The shared pass on the CPU: per (group, KV head), each shared key and value is read once and
/// applied to every query head of every member row. Returns one partial per (row, query head),
/// `None` for rows outside any group.
pub(crate) fn shared_partials<T: Elem>(
    q: &[T],
    k: &[T],
    v: &[T],
    m: &Sections,
    d: &Dims,
    scale: f32,
) -> Vec<Option<Partial>> {
    let group = d.heads / d.kv_heads;
    let kv_row = d.kv_heads * d.head_dim;
    let work: Vec<(usize, usize)> = (0..m.group_len.len())
        .flat_map(|g| (0..d.kv_heads).map(move |h| (g, h)))
        .collect();
    let done: Vec<(usize, usize, Vec<Partial>)> = work
        .into_par_iter()
        .map(|(g, kvh)| {
            let rows =
                &m.group_rows[m.group_row_start[g] as usize..m.group_row_start[g + 1] as usize];
            let shared = &m.slots[m.seq_start[m.group_seq[g] as usize] as usize..]
                [..m.group_len[g] as usize];
            let queries: Vec<Vec<f32>> = rows
                .iter()
                .flat_map(|&r| {
                    (0..group).map(move |i| (r as usize * d.heads + kvh * group + i) * d.head_dim)
                })
                .map(|at| {
                    q[at..at + d.head_dim]
                        .iter()
                        .map(|x| x.to_f32() * scale)
                        .collect()
                })
                .collect();
            let mut states: Vec<Partial> =
                queries.iter().map(|_| Partial::new(d.head_dim)).collect();
            for &slot in shared {
                let base = slot as usize * kv_row + kvh * d.head_dim;
                let (key, value) = (&k[base..base + d.head_dim], &v[base..base + d.head_dim]);
                for (state, qv) in states.iter_mut().zip(&queries) {
                    state.push(qv, key, value);
                }
            }
            (g, kvh, states)
        })
        .collect();
    let mut out: Vec<Option<Partial>> = (0..m.row_seq.len() * d.heads).map(|_| None).collect();
    for (g, kvh, states) in done {
        let rows = &m.group_rows[m.group_row_start[g] as usize..m.group_row_start[g + 1] as usize];
        for (i, state) in states.into_iter().enumerate() {
            out[rows[i / group] as usize * d.heads + kvh * group + i % group] = Some(state);
        }
    }
    out
}
