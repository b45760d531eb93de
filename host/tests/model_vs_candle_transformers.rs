//! The paged model against candle-transformers' qwen3 on identical weights (f32, CPU).

mod common;

use candle_core::{DType, Device, Tensor, D};
use candle_nn::VarBuilder;
use candle_transformers::models::qwen3;
use common::{max_abs_diff, tiny_dir};
use nanohost::bench::teacher::teacher_forced_logits;
use nanohost::engine::kv_policy::HostJob;
use nanohost::engine::kv_pool::{KvPool, PoolSize};
use nanohost::engine::runner::PackedBatch;
use nanohost::engine::sampler::argmax;
use nanohost::engine::sequence::{SamplingParams, Sequence};
use nanohost::model::ModelSource;
use nanohost_kernels::KvSpan;
use std::path::Path;

const TOL: f32 = 1e-4;

struct Oracle {
    model: qwen3::Model,
    embed: Tensor,
}

impl Oracle {
    fn load(dir: &Path) -> Self {
        let cfg: qwen3::Config =
            serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap())
                .unwrap();
        let vb = unsafe {
            VarBuilder::from_mmaped_safetensors(
                &[dir.join("model.safetensors")],
                DType::F32,
                &Device::Cpu,
            )
            .unwrap()
        };
        let embed = vb
            .get(
                (cfg.vocab_size, cfg.hidden_size),
                "model.embed_tokens.weight",
            )
            .unwrap();
        Oracle {
            model: qwen3::Model::new(&cfg, vb).unwrap(),
            embed,
        }
    }

    /// Logits of every position of `tokens`, continuing the oracle's cache at `offset`.
    fn logits(&mut self, tokens: &[u32], offset: usize) -> Vec<Vec<f32>> {
        let input = Tensor::new(tokens, &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let h = self
            .model
            .forward(&input, offset)
            .unwrap()
            .squeeze(0)
            .unwrap();
        h.matmul(&self.embed.t().unwrap())
            .unwrap()
            .to_vec2()
            .unwrap()
    }
}

fn prompt(seed: u32, len: usize) -> Vec<u32> {
    (0..len as u32)
        .map(|i| (i.wrapping_mul(2654435761).wrapping_add(seed * 97)) % 10_000)
        .collect()
}

/// Sequences whose context is one private run of consecutive blocks, starting at `first_block`.
fn seq_with_blocks(id: u64, tokens: Vec<u32>, first_block: u32, blocks: u32) -> Sequence {
    let mut s = Sequence::new(id, tokens, SamplingParams::default());
    s.context = vec![KvSpan {
        first: 0,
        blocks: (first_block..first_block + blocks).collect(),
        len: s.len(),
        shift: 0,
    }];
    plan_from(&mut s, 0);
    s
}

/// One job computing tokens `from..` (those not yet in the pool).
fn plan_from(s: &mut Sequence, from: usize) {
    s.context[0].len = s.len();
    s.pending = vec![HostJob::tail(&s.context, &s.tokens, from)];
    s.logits_job = Some(0);
}

#[test]
fn batched_prefill_and_decode_logits_match_the_reference() {
    let (_tmp, dir) = tiny_dir();
    let loaded = ModelSource::Dir(dir.clone())
        .load(&Device::Cpu, DType::F32)
        .unwrap();
    let model = &loaded.model;
    let pool = KvPool::new(
        model.config(),
        PoolSize::Blocks(64),
        16,
        DType::F32,
        &Device::Cpu,
    )
    .unwrap();

    let lens = [37usize, 5, 64];
    let mut seqs: Vec<Sequence> = lens
        .iter()
        .enumerate()
        .map(|(i, &l)| seq_with_blocks(i as u64, prompt(i as u32, l), 20 * i as u32, 20))
        .collect();
    let mut oracles: Vec<Oracle> = lens.iter().map(|_| Oracle::load(&dir)).collect();

    // Prefill all three in one packed batch, logits for every row (teacher forcing).
    let mut batch = PackedBatch::pack(seqs.iter(), 16, 0).unwrap();
    batch.logit_rows = (0..batch.tokens.len() as u32).collect();
    let ours = model
        .forward(&batch.as_forward(), &pool)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    let mut row = 0;
    let mut worst: f32 = 0.0;
    for (s, oracle) in seqs.iter_mut().zip(&mut oracles) {
        let want = oracle.logits(&s.tokens, 0);
        for w in &want {
            worst = worst.max(max_abs_diff(&ours[row], w));
            row += 1;
        }
        let next = argmax(&ours[row - 1]);
        assert_eq!(
            next,
            argmax(want.last().unwrap()),
            "greedy token after prefill of seq {}",
            s.id
        );
        s.tokens.push(next);
    }
    eprintln!("prefill: largest logit difference {worst:e}");
    assert!(worst <= TOL, "prefill logits differ by {worst}");
    let spread = ours[0].iter().cloned().fold(f32::MIN, f32::max)
        - ours[0].iter().cloned().fold(f32::MAX, f32::min);
    assert!(
        spread > 1.0,
        "logits are nearly flat ({spread}); the comparison would prove little"
    );

    // 24 decode steps: the reference decodes greedily with its own KV cache; nanohost replays
    // the same tokens batched (the teacher-forcing tool the GPU check uses), logits compared at
    // every step.
    let prompts: Vec<Vec<u32>> = seqs
        .iter()
        .map(|s| s.tokens[..s.prompt_len].to_vec())
        .collect();
    let mut continuations: Vec<Vec<u32>> =
        seqs.iter().map(|s| vec![s.tokens[s.prompt_len]]).collect();
    let mut want: Vec<Vec<Vec<f32>>> = vec![Vec::new(); seqs.len()];
    for _ in 0..24 {
        for (i, oracle) in oracles.iter_mut().enumerate() {
            let pos = prompts[i].len() + continuations[i].len() - 1;
            let logits = oracle
                .logits(&continuations[i][continuations[i].len() - 1..], pos)
                .pop()
                .unwrap();
            continuations[i].push(argmax(&logits));
            want[i].push(logits);
        }
    }
    let forced: Vec<Vec<u32>> = continuations.iter().map(|c| c[..24].to_vec()).collect();
    let ours = teacher_forced_logits(model, &prompts, &forced, 16)
        .unwrap()
        .to_vec3::<f32>()
        .unwrap();
    for (i, seq_logits) in ours.iter().enumerate() {
        for step in 0..24 {
            let got = &seq_logits[step + 1];
            let diff = max_abs_diff(got, &want[i][step]);
            assert!(
                diff <= TOL,
                "decode step {step}, seq {i}: logits differ by {diff}"
            );
            assert_eq!(
                argmax(got),
                continuations[i][step + 1],
                "decode step {step}, seq {i}: greedy tokens differ"
            );
        }
    }
}

#[test]
fn prefill_over_a_cached_prefix_matches_a_full_prefill() {
    let (_tmp, dir) = tiny_dir();
    let loaded = ModelSource::Dir(dir.clone())
        .load(&Device::Cpu, DType::F32)
        .unwrap();
    let model = &loaded.model;
    let pool = KvPool::new(
        model.config(),
        PoolSize::Blocks(16),
        16,
        DType::F32,
        &Device::Cpu,
    )
    .unwrap();
    let tokens = prompt(9, 70);
    // First 45 tokens (ending mid-block), then the remaining 25 attend to them from the pool.
    let mut s = seq_with_blocks(0, tokens[..45].to_vec(), 3, 5);
    PackedBatch::pack([&s], 16, 0)
        .map(|b| model.forward(&b.as_forward(), &pool).unwrap())
        .unwrap();
    s.tokens = tokens.clone();
    plan_from(&mut s, 45);
    let mut batch = PackedBatch::pack([&s], 16, 0).unwrap();
    batch.logit_rows = (0..25).collect();
    let ours = model
        .forward(&batch.as_forward(), &pool)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    let want = Oracle::load(&dir).logits(&tokens, 0);
    let worst = (0..25)
        .map(|i| max_abs_diff(&ours[i], &want[45 + i]))
        .fold(0.0, f32::max);
    assert!(
        worst <= TOL,
        "cached-prefix prefill logits differ by {worst}"
    );
}

#[test]
fn bf16_and_f16_checkpoints_load_and_agree_with_f32() {
    let (_tmp, dir) = tiny_dir();
    let f32_model = ModelSource::Dir(dir.clone())
        .load(&Device::Cpu, DType::F32)
        .unwrap();
    let tensors =
        candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu).unwrap();
    let tokens = prompt(3, 20);
    let run = |m: &nanohost::model::Qwen3| {
        let pool = KvPool::new(
            m.config(),
            PoolSize::Blocks(4),
            16,
            DType::F32,
            &Device::Cpu,
        )
        .unwrap();
        let s = seq_with_blocks(0, tokens.clone(), 0, 2);
        let b = PackedBatch::pack([&s], 16, 0).unwrap();
        m.forward(&b.as_forward(), &pool).unwrap()
    };
    let reference = run(&f32_model.model);
    for dtype in [DType::BF16, DType::F16] {
        let converted: std::collections::HashMap<String, Tensor> = tensors
            .iter()
            .map(|(k, v)| (k.clone(), v.to_dtype(dtype).unwrap()))
            .collect();
        candle_core::safetensors::save(&converted, dir.join("model.safetensors")).unwrap();
        let m = ModelSource::Dir(dir.clone())
            .load(&Device::Cpu, DType::F32)
            .unwrap();
        let logits = run(&m.model);
        let diff = (&logits - &reference)
            .unwrap()
            .abs()
            .unwrap()
            .max_keepdim(D::Minus1)
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        // The trained model's logits span tens of units: drift is judged against that range.
        let scale = reference
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(
            diff < 0.03 * scale,
            "{dtype:?} checkpoint drifted by {diff} (logits up to {scale})"
        );
        // `tiny` ships in f16, so only bf16 rounds its weights.
        if dtype == DType::BF16 {
            assert!(diff > 0.0, "{dtype:?} checkpoint was not actually rounded");
        }
    }
}
