//! Running a point's prompts on one engine: wave by wave (the chunked-reuse batches), each wave
//! added once the previous one has finished, so a strategy's retained state carries over.

use crate::engine::sequence::{SamplingParams, Sequence};
use crate::engine::Engine;
use crate::workload::Prompt;
use anyhow::Result;

/// Runs every wave of `prompts` with `params` (a prompt's own `max_tokens` wins) and calls
/// `after_wave` with each wave's finished sequences; returns them all, wave by wave.
pub fn run_waves(engine: &mut Engine, prompts: &[Prompt], params: SamplingParams, mut after_wave: impl FnMut(&Engine, usize, &[Sequence]) -> Result<()>) -> Result<Vec<Sequence>> {
    let mut all = Vec::new();
    for wave in 0..=prompts.iter().map(|p| p.wave).max().unwrap_or(0) {
        for p in prompts.iter().filter(|p| p.wave == wave) {
            let params = SamplingParams { max_tokens: p.max_tokens.unwrap_or(params.max_tokens), ..params };
            engine.add_chunked_request(p.tokens.clone(), p.chunks.clone(), params)?;
        }
        let done = engine.run_to_completion()?;
        after_wave(engine, wave, &done)?;
        all.extend(done);
    }
    Ok(all)
}
