//! Running a point's prompts on one engine: wave by wave (the chunked-reuse batches), each wave
//! added once the previous one has finished, so a strategy's retained state carries over.

use crate::engine::sequence::{SamplingParams, Sequence};
use crate::engine::Engine;
use crate::workload::{Check, Prompt};
use anyhow::Result;

/// Runs every wave of `prompts` with `params` (a prompt's own `max_tokens` wins) and calls
/// `after_wave` with each wave's finished sequences; returns them all, wave by wave, each wave
/// in prompt order. Forced prompts (perplexity) are teacher-forced. A prompt
/// that continues an earlier one is that one's whole sequence (prompt and output) followed by
/// its own tokens.
pub fn run_waves(
    engine: &mut Engine,
    prompts: &[Prompt],
    params: SamplingParams,
    mut after_wave: impl FnMut(&Engine, usize, &[Sequence]) -> Result<()>,
) -> Result<Vec<Sequence>> {
    let mut all: Vec<Sequence> = Vec::new();
    let mut seq_of_prompt = std::collections::HashMap::new();
    for wave in 0..=prompts.iter().map(|p| p.wave).max().unwrap_or(0) {
        for (i, p) in prompts.iter().enumerate().filter(|(_, p)| p.wave == wave) {
            let params = SamplingParams {
                max_tokens: p.max_tokens.unwrap_or(params.max_tokens),
                ..params
            };
            let tokens = match p.continues {
                None => p.tokens.clone(),
                Some(j) => {
                    let earlier = seq_of_prompt
                        .get(&j)
                        .and_then(|id| all.iter().find(|s| s.id == *id));
                    let Some(earlier) = earlier else {
                        anyhow::bail!(
                            "prompt {i} continues prompt {j}, which has not run in an earlier wave"
                        )
                    };
                    [earlier.tokens.as_slice(), &p.tokens].concat()
                }
            };
            let id = match &p.check {
                Some(Check::Forced(forced)) => {
                    engine.add_forced_request(tokens, forced.clone(), params)?
                }
                _ => engine.add_chunked_request(tokens, p.chunks.clone(), params)?,
            };
            seq_of_prompt.insert(i, id);
        }
        let mut done = engine.run_to_completion()?;
        // In the order they were added (prompt order within the wave), whatever order they
        // finished in, so two strategies' outputs pair request by request.
        done.sort_by_key(|s| s.id);
        after_wave(engine, wave, &done)?;
        all.extend(done);
    }
    Ok(all)
}
