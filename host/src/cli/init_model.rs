use crate::model::preset::{parameter_count, write_preset, Preset, PRESET_NAMES};
use anyhow::Result;
use clap::Args;
use std::path::PathBuf;

#[derive(Args)]
pub struct InitModelArgs {
    #[arg(long, value_parser = PRESET_NAMES)]
    preset: String,
    /// Output directory (created if missing).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Seed of the random weights of `qwen3-0.6b` (`tiny` has one trained set).
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

pub fn run(a: InitModelArgs) -> Result<()> {
    let preset = Preset::from_name(&a.preset)?;
    write_preset(preset, a.seed, &a.out)?;
    let weights = match preset {
        Preset::Tiny => "trained weights".to_string(),
        Preset::Qwen3_0_6B => format!("seed {}", a.seed),
    };
    println!(
        "wrote preset {} ({weights}, {} parameters) to {}",
        preset.name(),
        parameter_count(&preset.config()),
        a.out.display()
    );
    Ok(())
}
