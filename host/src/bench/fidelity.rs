//! What a strategy costs in output, on any workload: the tested plugin and the standard plugin
//! run the same prompts greedily through the same batched engine; the share of generated
//! positions where they chose the same token, the requests whose whole output agrees, and the
//! largest logit difference at the first generated position (where both saw exactly the same
//! tokens, so any difference comes from the strategy's KV).

use crate::engine::kv_pool::KvPool;
use crate::engine::scheduler::SchedulerConfig;
use crate::engine::sequence::SamplingParams;
use crate::engine::Engine;
use crate::model::LoadedModel;
use crate::plugin::Plugin;
use crate::workload::Point;
use anyhow::Result;
use nanohost_strategy_api::PluginOption;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Fidelity {
    pub reference: String,
    pub greedy_token_agreement: f64,
    pub requests_with_identical_output: usize,
    pub requests: usize,
    pub first_token_max_logit_diff: f32,
}

/// Every request's greedy output and its first generated position's logits.
fn greedy(
    plugin: &Plugin,
    options: &[PluginOption],
    loaded: &LoadedModel,
    pool: &KvPool,
    sched: SchedulerConfig,
    point: &Point,
    max_tokens: usize,
) -> Result<Vec<(Vec<u32>, Vec<f32>)>> {
    let mut engine = Engine::new(
        &loaded.model,
        pool,
        Box::new(plugin.new_policy(pool, options)?),
        sched,
        0,
    );
    engine.logits = Some(Vec::new());
    let params = SamplingParams {
        temperature: 0.0,
        max_tokens,
        ignore_eos: true,
    };
    // Outputs do not depend on when requests arrive: a trace's arrival times would only make
    // both greedy runs wait as long as the timed one did.
    let prompts: Vec<_> = point
        .prompts
        .iter()
        .map(|p| crate::workload::Prompt {
            arrival: None,
            ..p.clone()
        })
        .collect();
    let done = super::waves::run_waves(&mut engine, &prompts, params, |_, _, _| Ok(()))?;
    let logits = engine.logits.take().unwrap_or_default();
    Ok(done
        .iter()
        .map(|s| {
            let first = logits
                .iter()
                .find(|(id, i, _)| *id == s.id && *i == 0)
                .map(|(_, _, l)| l.clone())
                .unwrap_or_default();
            (s.output().to_vec(), first)
        })
        .collect())
}

/// `options`: the tested plugin's (the reference runs with none).
#[allow(clippy::too_many_arguments)]
pub fn compare_to_reference(
    tested: &Plugin,
    options: &[PluginOption],
    reference: &Plugin,
    loaded: &LoadedModel,
    pool: &KvPool,
    sched: SchedulerConfig,
    point: &Point,
    max_tokens: usize,
) -> Result<Fidelity> {
    let got = greedy(tested, options, loaded, pool, sched, point, max_tokens)?;
    let want = greedy(reference, &[], loaded, pool, sched, point, max_tokens)?;
    let (mut same, mut total, mut identical_requests, mut worst) = (0usize, 0usize, 0usize, 0f32);
    for ((out_a, first_a), (out_b, first_b)) in got.iter().zip(&want) {
        same += out_a.iter().zip(out_b).filter(|(a, b)| a == b).count();
        total += out_b.len();
        identical_requests += usize::from(out_a == out_b);
        worst = first_a
            .iter()
            .zip(first_b)
            .map(|(a, b)| (a - b).abs())
            .fold(worst, f32::max);
    }
    Ok(Fidelity {
        reference: reference.info.name.to_string(),
        greedy_token_agreement: if total == 0 {
            1.0
        } else {
            same as f64 / total as f64
        },
        requests_with_identical_output: identical_requests,
        requests: want.len(),
        first_token_max_logit_diff: worst,
    })
}
