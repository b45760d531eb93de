//! `nanohost train-preset`: trains the embedded `tiny` model from scratch, reproducibly.

use crate::model::preset::Preset;
use crate::model::tokenizer::SPECIAL_TOKENS;
use crate::train::{train, write_log, Recipe, Stage};
use anyhow::{Context, Result};
use clap::Args;
use std::path::PathBuf;

#[derive(Args)]
pub struct TrainPresetArgs {
    /// Output directory: model.safetensors, config.json, tokenizer.json and train_log.json.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// A recipe JSON (seed, stages, learning rate...) instead of the shipped one.
    #[arg(long, value_name = "FILE")]
    recipe: Option<PathBuf>,
    /// Scale every stage's step count (for quick trials of a recipe).
    #[arg(long, default_value_t = 1.0)]
    step_scale: f64,
    /// cpu (deterministic, the default) or cuda[:N] (much faster; not bit-identical to cpu).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Continue from a trained model (a train-preset output directory) instead of fresh
    /// weights: the recipe's schedule runs again from there, with a fresh optimizer.
    #[arg(long, value_name = "DIR")]
    init: Option<PathBuf>,
}

/// The recipe of the shipped `tiny` weights.
pub fn shipped_recipe() -> Recipe {
    Recipe {
        seed: 0,
        // Short documents until in-context copying appears (about step 1,100), then the lengths
        // the retrieval workload asks.
        stages: vec![
            Stage {
                len: 128,
                steps: 1600,
            },
            Stage {
                len: 512,
                steps: 600,
            },
            Stage {
                len: 1024,
                steps: 400,
            },
            Stage {
                len: 2048,
                steps: 300,
            },
        ],
        tokens_per_step: 4096,
        lr: 1.5e-3,
        warmup: 30,
        weight_decay: 0.05,
        grad_clip: 1.0,
        eval_every: 200,
        shape: None,
        rope_theta: None,
        mix: crate::train::data::MIX,
    }
}

pub fn run(a: TrainPresetArgs) -> Result<()> {
    let mut recipe = match &a.recipe {
        Some(p) => serde_json::from_slice(
            &std::fs::read(p).with_context(|| format!("cannot read recipe {}", p.display()))?,
        )
        .with_context(|| format!("recipe {} is not a valid recipe JSON", p.display()))?,
        None => shipped_recipe(),
    };
    for s in &mut recipe.stages {
        s.steps = ((s.steps as f64 * a.step_scale).round() as usize).max(1);
    }
    let mut cfg = Preset::Tiny.config();
    if let Some((layers, hidden, intermediate)) = recipe.shape {
        (
            cfg.num_hidden_layers,
            cfg.hidden_size,
            cfg.intermediate_size,
        ) = (layers, hidden, intermediate);
    }
    if let Some(theta) = recipe.rope_theta {
        cfg.rope_theta = theta;
    }
    let trained_vocab = crate::model::tokenizer::BYTE_TOKENS as usize + SPECIAL_TOKENS.len();
    std::fs::create_dir_all(&a.out)
        .with_context(|| format!("cannot create {}", a.out.display()))?;
    let compute = crate::device::select(Some(&a.device), Some("f32"))?;
    let save = |net: &crate::train::net::Net, log: &crate::train::TrainLog| -> Result<()> {
        crate::model::preset::write_trained(&cfg, &net.export(recipe.seed)?, &a.out)?;
        write_log(&a.out.join("train_log.json"), log)
    };
    let init_weights = match &a.init {
        Some(dir) => {
            let file = dir.join(crate::model::weights::SINGLE_FILE);
            let weights = crate::model::weights::load_weights(
                dir,
                &cfg,
                &candle_core::Device::Cpu,
                candle_core::DType::F32,
            )
            .with_context(|| {
                format!(
                    "--init {}: not a trained model of this recipe's shape",
                    dir.display()
                )
            })?;
            let init = crate::train::Init {
                path: dir.display().to_string(),
                sha256: crate::plugin::load::sha256_file(&file)?,
            };
            Some((weights, init))
        }
        None => None,
    };
    let (net, log) = train(
        &cfg,
        trained_vocab,
        &recipe,
        &compute.device,
        init_weights.as_ref().map(|(w, i)| (w, i.clone())),
        |line| eprintln!("{line}"),
        |net, log| {
            save(net, log)?;
            eprintln!("  checkpoint: {}", a.out.display());
            Ok(())
        },
    )?;
    save(&net, &log)?;
    println!("trained in {:.0} s; wrote {}", log.seconds, a.out.display());
    Ok(())
}
