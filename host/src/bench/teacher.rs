//! Logits under teacher forcing: each sequence's prompt is prefilled (all sequences in one
//! batch), then its given continuation is fed one token per decode step. The logits at the last
//! prompt position and after each continuation token are returned, for comparison with another
//! implementation on the same weights.

use crate::engine::kv_policy::HostJob;
use crate::engine::kv_pool::{KvPool, PoolSize};
use crate::engine::runner::PackedBatch;
use crate::engine::sequence::{SamplingParams, Sequence};
use crate::model::Qwen3;
use anyhow::{bail, Result};
use candle_core::Tensor;
use nanohost_kernels::KvSpan;

/// `[sequences, continuation + 1, vocab]` f32 logits. Continuations must have equal lengths.
pub fn teacher_forced_logits(
    model: &Qwen3,
    prompts: &[Vec<u32>],
    continuations: &[Vec<u32>],
    block_size: usize,
) -> Result<Tensor> {
    let steps = continuations.first().map_or(0, Vec::len);
    if prompts.len() != continuations.len() || continuations.iter().any(|c| c.len() != steps) {
        bail!("teacher forcing needs one continuation per prompt, all of the same length");
    }
    let per_seq = prompts
        .iter()
        .map(|p| (p.len() + steps).div_ceil(block_size))
        .max()
        .unwrap_or(1);
    let pool = KvPool::new(
        model.config(),
        PoolSize::Blocks(per_seq * prompts.len()),
        block_size,
        model.dtype(),
        model.device(),
    )?;
    let mut seqs: Vec<Sequence> = prompts
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let mut s = Sequence::new(i as u64, p.clone(), SamplingParams::default());
            s.context = vec![KvSpan {
                first: 0,
                blocks: ((i * per_seq) as u32..((i + 1) * per_seq) as u32).collect(),
                len: 0,
                shift: 0,
            }];
            s
        })
        .collect();
    let mut per_step = Vec::with_capacity(steps + 1);
    for step in 0..=steps {
        for (s, c) in seqs.iter_mut().zip(continuations) {
            if step > 0 {
                s.tokens.push(c[step - 1]);
            }
            s.context[0].len = s.len();
            // The whole prompt first, then one forced token per step.
            let from = if step == 0 { 0 } else { s.len() - 1 };
            s.pending = vec![HostJob::tail(&s.context, &s.tokens, from)];
            s.logits_job = Some(0);
        }
        let batch = PackedBatch::pack(seqs.iter(), block_size, 0)?;
        per_step.push(
            model
                .forward(&batch.as_forward(), &pool)?
                .to_dtype(candle_core::DType::F32)?,
        );
    }
    // [steps + 1, sequences, vocab] -> [sequences, steps + 1, vocab]
    Ok(Tensor::stack(&per_step, 0)?.transpose(0, 1)?.contiguous()?)
}
