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
    if prompts.iter().any(|p| p.arrival.is_some()) {
        let done = run_arrivals(engine, prompts, params)?;
        after_wave(engine, 0, &done)?;
        return Ok(done);
    }
    let mut all: Vec<Sequence> = Vec::new();
    let mut seq_of_prompt = std::collections::HashMap::new();
    for wave in 0..=prompts.iter().map(|p| p.wave).max().unwrap_or(0) {
        for (i, p) in prompts.iter().enumerate().filter(|(_, p)| p.wave == wave) {
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
            seq_of_prompt.insert(i, add(engine, p, tokens, params)?);
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

/// Adds prompt `p` as `tokens` (its own, or its history and its own): teacher-forced where it
/// checks forced output, with its own output length where it sets one.
fn add(
    engine: &mut Engine,
    p: &Prompt,
    tokens: Vec<u32>,
    params: SamplingParams,
) -> Result<crate::engine::sequence::SeqId> {
    let params = SamplingParams {
        max_tokens: p.max_tokens.unwrap_or(params.max_tokens),
        ..params
    };
    match &p.check {
        Some(Check::Forced(forced)) => engine.add_forced_request(tokens, forced.clone(), params),
        _ => engine.add_chunked_request(tokens, p.chunks.clone(), params),
    }
}

/// Requests with arrival times (a trace): each added when its time comes, counted from this
/// call, the engine stepping in between and waiting when it has nothing to do; a request's
/// time to first token and latency count from its arrival. Returns them in prompt order.
fn run_arrivals(
    engine: &mut Engine,
    prompts: &[Prompt],
    params: SamplingParams,
) -> Result<Vec<Sequence>> {
    let mut order: Vec<usize> = (0..prompts.len()).collect();
    order.sort_by(|&a, &b| {
        let at = |i: usize| prompts[i].arrival.unwrap_or(0.0);
        at(a).total_cmp(&at(b))
    });
    let start = std::time::Instant::now();
    let mut next = 0;
    let mut ids = vec![0; prompts.len()];
    loop {
        let now = start.elapsed().as_secs_f64();
        while let Some(&i) = order
            .get(next)
            .filter(|&&i| prompts[i].arrival.unwrap_or(0.0) <= now)
        {
            ids[i] = add(engine, &prompts[i], prompts[i].tokens.clone(), params)?;
            next += 1;
        }
        if engine.step()?.is_none() {
            let Some(&i) = order.get(next) else { break };
            let wait = prompts[i].arrival.unwrap_or(0.0) - start.elapsed().as_secs_f64();
            if wait > 0.0 {
                std::thread::sleep(std::time::Duration::from_secs_f64(wait));
            }
        }
    }
    let mut done = engine.run_to_completion()?;
    done.sort_by_key(|s| ids.iter().position(|&id| id == s.id));
    Ok(done)
}
