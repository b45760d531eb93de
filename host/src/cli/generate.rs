use super::model_args::ModelArgs;
use crate::engine::{
    kv_pool::{KvPool, PoolSize, DEFAULT_BLOCK_SIZE},
    scheduler::SchedulerConfig,
    sequence::SamplingParams,
    Engine,
};
use anyhow::Result;
use clap::Args;

#[derive(Args)]
pub struct GenerateArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[arg(long)]
    prompt: String,
    #[arg(long, default_value_t = 32)]
    max_tokens: usize,
    /// 0 = greedy.
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// The strategy plugin placing the KV.
    #[arg(long, default_value = "plugins/libstandard.so")]
    plugin: std::path::PathBuf,
    /// Stop at the model's end-of-sequence token.
    #[arg(long)]
    stop_at_eos: bool,
}

pub fn run(a: GenerateArgs) -> Result<()> {
    let plugin = crate::plugin::load_plugin(&a.plugin)?;
    let (loaded, compute) = a.model.load()?;
    let prompt = crate::model::tokenizer::encode(&loaded.tokenizer, &a.prompt, "the prompt")?;
    let cfg = loaded.model.config();
    let blocks = (prompt.len() + a.max_tokens).div_ceil(DEFAULT_BLOCK_SIZE);
    let pool = KvPool::new(
        cfg,
        PoolSize::Blocks(blocks),
        DEFAULT_BLOCK_SIZE,
        loaded.model.dtype(),
        &compute.device,
    )?;
    let policy = Box::new(plugin.new_policy(&pool, &[])?);
    let graphs = crate::model::DecodeGraphs::new(&loaded.model, 1, crate::model::GraphMode::On);
    let mut engine = Engine::new(
        &loaded.model,
        &pool,
        policy,
        SchedulerConfig::default(),
        a.seed,
    )
    .with_graphs(&graphs);
    let params = SamplingParams {
        temperature: a.temperature,
        max_tokens: a.max_tokens,
        ignore_eos: !a.stop_at_eos,
    };
    engine.add_request(prompt.clone(), params)?;
    let start = std::time::Instant::now();
    let done = engine.run_to_completion()?;
    let out = done[0].output();
    let text = loaded
        .tokenizer
        .decode(out, false)
        .map_err(|e| anyhow::anyhow!("decoding: {e}"))?;
    println!("{}{}", a.prompt, text);
    eprintln!(
        "{} prompt tokens, {} generated in {:.3}s, token ids {:?}",
        prompt.len(),
        out.len(),
        start.elapsed().as_secs_f64(),
        out
    );
    Ok(())
}
