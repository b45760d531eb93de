//! Qwen3 as a differentiable function of its weights, for training the embedded model.
//!
//! The same layer order and math as [`crate::model::qwen3`] (RMSNorm, per-head q/k RMSNorm
//! before half-rotation RoPE, GQA attention, SiLU-gated MLP, tied LM head), written with plain
//! candle ops so that autograd reaches every weight; the inference model's fused kernels have
//! no backward. Whole sequences only: a batch `[B, T]` with one causal mask, no KV cache.
//!
//! Only the first `trained_vocab` rows of the embedding are weights here: the byte-level
//! tokenizer uses no more, and the LM head over 10,240 rows would cost more than every layer
//! together. [`Net::export`] adds the untrained rows back.

use crate::model::config::Qwen3Config;
use crate::model::weights::expected_tensors;
use crate::rng::Rng;
use anyhow::Result;
use candle_core::{DType, Device, Tensor, Var, D};
use std::collections::BTreeMap;

pub struct Net {
    pub cfg: Qwen3Config,
    pub trained_vocab: usize,
    /// Weights by their Hugging Face name; the embedding holds `trained_vocab` rows.
    pub vars: BTreeMap<String, Var>,
    pub device: Device,
    cos: Tensor,
    sin: Tensor,
}

pub const EMBED: &str = "model.embed_tokens.weight";

/// Standard deviation of the untrained embedding rows: small next to the trained ones, so no
/// token the tokenizer never produces wins an argmax, yet distinct, so random-id workloads still
/// see different inputs.
const UNTRAINED_ROW_STD: f32 = 0.02;

/// Initial q/k norm weight: scores of aligned unit-RMS heads reach about 23 instead of 5.7.
const QK_NORM_INIT: f32 = 2.0;

fn uniform(rng: &mut Rng, len: usize, std: f32) -> Vec<f32> {
    let half_width = std * 3f32.sqrt();
    (0..len)
        .map(|_| ((rng.next_f64() as f32) * 2.0 - 1.0) * half_width)
        .collect()
}

impl Net {
    /// Fresh weights from `seed`: norms at 1, matrices uniform with std 0.02, output
    /// projections scaled down by the depth (GPT-2's residual scaling).
    pub fn init(
        cfg: &Qwen3Config,
        trained_vocab: usize,
        seed: u64,
        max_len: usize,
        dev: &Device,
    ) -> Result<Self> {
        let mut vars = BTreeMap::new();
        let depth_scale = 1.0 / (2.0 * cfg.num_hidden_layers as f32).sqrt();
        for (name, mut shape) in expected_tensors(cfg) {
            if name == EMBED {
                shape[0] = trained_vocab;
            }
            let len: usize = shape.iter().product();
            let values = if name.ends_with("q_norm.weight") || name.ends_with("k_norm.weight") {
                // q and k are RMS-normalised per head, so a score is at most head_dim times the
                // product of these weights over sqrt(head_dim): at 1 (5.7 for head_dim 32) no
                // head can attend sharply, and induction waits for the weights to grow.
                vec![QK_NORM_INIT; len]
            } else if name.ends_with("norm.weight") {
                vec![1f32; len]
            } else if name == EMBED {
                // Every row shares one direction as large as its own random part: the residual
                // stream then has a component independent of the token, which q and k (Qwen3 has
                // no projection biases) need to form purely positional heads (attend to the
                // previous token), the first half of the induction circuit that lookup needs.
                let h = shape[1];
                let shared = uniform(
                    &mut Rng::derive(seed, "shared embedding direction"),
                    h,
                    0.02,
                );
                let mut v = uniform(&mut Rng::derive(seed, &name), len, 0.02);
                v.iter_mut()
                    .enumerate()
                    .for_each(|(i, x)| *x += shared[i % h]);
                v
            } else {
                let std = if name.ends_with("o_proj.weight") || name.ends_with("down_proj.weight") {
                    0.02 * depth_scale
                } else {
                    0.02
                };
                uniform(&mut Rng::derive(seed, &name), len, std)
            };
            vars.insert(
                name,
                Var::from_tensor(&Tensor::from_vec(values, shape, dev)?)?,
            );
        }
        let (cos, sin) = rope_tables(cfg, max_len, dev)?;
        Ok(Net {
            cfg: cfg.clone(),
            trained_vocab,
            vars,
            device: dev.clone(),
            cos,
            sin,
        })
    }

    /// The weights of a trained model (`tensors`, by Hugging Face name, as [`Net::export`] or a
    /// checkpoint gives them), to train further: every tensor of `cfg`'s shapes, the embedding cut
    /// back to the `trained_vocab` rows that training sees.
    pub fn from_weights(
        cfg: &Qwen3Config,
        trained_vocab: usize,
        tensors: &std::collections::HashMap<String, Tensor>,
        max_len: usize,
        dev: &Device,
    ) -> Result<Self> {
        let mut vars = BTreeMap::new();
        for (name, shape) in expected_tensors(cfg) {
            let t = tensors
                .get(&name)
                .ok_or_else(|| anyhow::anyhow!("the initial weights lack {name}"))?;
            if t.dims() != shape.as_slice() {
                anyhow::bail!(
                    "initial weight {name} has shape {:?}, the recipe's model {shape:?}",
                    t.dims()
                );
            }
            let t = match name == EMBED {
                true => t.narrow(0, 0, trained_vocab)?,
                false => t.clone(),
            };
            let t = t.to_dtype(DType::F32)?.to_device(dev)?;
            vars.insert(name, Var::from_tensor(&t)?);
        }
        let (cos, sin) = rope_tables(cfg, max_len, dev)?;
        Ok(Net {
            cfg: cfg.clone(),
            trained_vocab,
            vars,
            device: dev.clone(),
            cos,
            sin,
        })
    }

    fn w(&self, name: &str) -> &Tensor {
        self.vars
            .get(name)
            .unwrap_or_else(|| panic!("no weight {name}"))
            .as_tensor()
    }

    /// Logits over the trained vocabulary, `[B, T, trained_vocab]`.
    pub fn forward(&self, tokens: &Tensor) -> Result<Tensor> {
        let (b, t) = tokens.dims2()?;
        let c = &self.cfg;
        let (nh, nkv, hd) = (c.num_attention_heads, c.num_key_value_heads, c.head_dim);
        let eps = c.rms_norm_eps;
        let mut x = self.w(EMBED).index_select(&tokens.flatten_all()?, 0)?; // [B*T, H]
        let mask = causal_mask(t, &self.device)?;
        let (cos, sin) = (self.cos.narrow(0, 0, t)?, self.sin.narrow(0, 0, t)?);
        for l in 0..c.num_hidden_layers {
            let p = format!("model.layers.{l}");
            let w = |n: &str| self.w(&format!("{p}.{n}"));
            let h = rms_norm(&x, w("input_layernorm.weight"), eps)?;
            let heads = |proj: &str, n: usize| -> Result<Tensor> {
                Ok(h.matmul(&w(proj).t()?)?
                    .reshape((b, t, n, hd))?
                    .transpose(1, 2)?
                    .contiguous()?)
            };
            let q = rope(
                &rms_norm(
                    &heads("self_attn.q_proj.weight", nh)?,
                    w("self_attn.q_norm.weight"),
                    eps,
                )?,
                &cos,
                &sin,
            )?;
            let k = rope(
                &rms_norm(
                    &heads("self_attn.k_proj.weight", nkv)?,
                    w("self_attn.k_norm.weight"),
                    eps,
                )?,
                &cos,
                &sin,
            )?;
            let v = heads("self_attn.v_proj.weight", nkv)?;
            let (k, v) = (repeat_kv(&k, nh / nkv)?, repeat_kv(&v, nh / nkv)?);
            let scores = (q.matmul(&k.t()?)? * (1.0 / (hd as f64).sqrt()))?.broadcast_add(&mask)?;
            let attn = softmax_last(&scores)?.matmul(&v)?; // [B, nh, T, hd]
            let attn = attn.transpose(1, 2)?.reshape((b * t, nh * hd))?;
            x = (x + attn.matmul(&w("self_attn.o_proj.weight").t()?)?)?;
            let h = rms_norm(&x, w("post_attention_layernorm.weight"), eps)?;
            let gate = h.matmul(&w("mlp.gate_proj.weight").t()?)?;
            let up = h.matmul(&w("mlp.up_proj.weight").t()?)?;
            let act = (candle_nn::ops::silu(&gate)? * up)?;
            x = (x + act.matmul(&w("mlp.down_proj.weight").t()?)?)?;
        }
        let x = rms_norm(&x, self.w("model.norm.weight"), eps)?;
        Ok(x.matmul(&self.w(EMBED).t()?)?
            .reshape((b, t, self.trained_vocab))?)
    }

    /// Every tensor of the full model, the embedding padded to the config's vocabulary with
    /// small random rows (from `seed`).
    pub fn export(&self, seed: u64) -> Result<BTreeMap<String, Tensor>> {
        let mut out = BTreeMap::new();
        for (name, var) in &self.vars {
            let t = var.as_tensor().to_device(&Device::Cpu)?;
            let t = if name == EMBED {
                let h = self.cfg.hidden_size;
                let rest = self.cfg.vocab_size - self.trained_vocab;
                let pad = Tensor::from_vec(
                    uniform(
                        &mut Rng::derive(seed, "untrained embedding rows"),
                        rest * h,
                        UNTRAINED_ROW_STD,
                    ),
                    (rest, h),
                    &Device::Cpu,
                )?;
                Tensor::cat(&[&t, &pad], 0)?
            } else {
                t
            };
            out.insert(name.clone(), t);
        }
        Ok(out)
    }
}

/// RMSNorm over the last dimension, in f32.
fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> Result<Tensor> {
    let ms = x.sqr()?.mean_keepdim(D::Minus1)?;
    Ok(x.broadcast_div(&(ms + eps)?.sqrt()?)?.broadcast_mul(w)?)
}

/// Softmax over the last dimension; the max is a constant for autograd (it cancels).
fn softmax_last(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let e = x.broadcast_sub(&max)?.exp()?;
    Ok(e.broadcast_div(&e.sum_keepdim(D::Minus1)?)?)
}

/// `[B, kv, T, hd]` → `[B, kv * rep, T, hd]`, each KV head serving `rep` query heads in order.
fn repeat_kv(x: &Tensor, rep: usize) -> Result<Tensor> {
    if rep == 1 {
        return Ok(x.clone());
    }
    let (b, kv, t, hd) = x.dims4()?;
    Ok(x.unsqueeze(2)?
        .broadcast_as((b, kv, rep, t, hd))?
        .reshape((b, kv * rep, t, hd))?)
}

/// Half-rotation RoPE (Qwen3, Llama): `x * cos + rotate_half(x) * sin`, on `[B, n, T, hd]`.
fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let hd = x.dim(D::Minus1)?;
    let (x1, x2) = (
        x.narrow(D::Minus1, 0, hd / 2)?,
        x.narrow(D::Minus1, hd / 2, hd / 2)?,
    );
    let rotated = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
    Ok((x.broadcast_mul(cos)? + rotated.broadcast_mul(sin)?)?)
}

/// cos and sin `[T, hd]` (each frequency twice, for the two halves), from the same table
/// [`crate::model::rope::Rope`] computes for inference.
fn rope_tables(cfg: &Qwen3Config, max_len: usize, dev: &Device) -> Result<(Tensor, Tensor)> {
    let table =
        crate::model::rope::Rope::new(cfg.head_dim, cfg.rope_theta, max_len, DType::F32, dev)?;
    let half = cfg.head_dim / 2;
    let t = table.table();
    let (cos, sin) = (t.narrow(1, 0, half)?, t.narrow(1, half, half)?);
    Ok((
        Tensor::cat(&[&cos, &cos], 1)?,
        Tensor::cat(&[&sin, &sin], 1)?,
    ))
}

fn causal_mask(t: usize, dev: &Device) -> Result<Tensor> {
    let m: Vec<f32> = (0..t * t)
        .map(|i| {
            if i % t > i / t {
                f32::NEG_INFINITY
            } else {
                0.0
            }
        })
        .collect();
    Ok(Tensor::from_vec(m, (t, t), dev)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::preset::Preset;

    /// The training forward is the inference model: same logits on the same weights.
    #[test]
    fn training_forward_matches_the_inference_model() {
        let cfg = Preset::Tiny.config();
        let net = Net::init(&cfg, 259, 7, 64, &Device::Cpu).unwrap();
        // Perturb the norms too, so their use is checked.
        for (name, var) in &net.vars {
            if name.ends_with("norm.weight") {
                let n = var.as_tensor().dim(0).unwrap();
                let bump =
                    Tensor::from_vec(uniform(&mut Rng::derive(3, name), n, 0.3), n, &Device::Cpu)
                        .unwrap();
                var.set(&(var.as_tensor() + bump).unwrap()).unwrap();
            }
        }
        let weights: std::collections::HashMap<String, Tensor> =
            net.export(1).unwrap().into_iter().collect();
        let model = crate::model::Qwen3::new(&cfg, weights, &Device::Cpu, DType::F32).unwrap();
        let prompt: Vec<u32> = (0..40u32).map(|i| (i * 37 + 11) % 259).collect();
        let want = crate::bench::teacher::teacher_forced_logits(
            &model,
            &[prompt[..30].to_vec()],
            &[prompt[30..].to_vec()],
            16,
        )
        .unwrap();
        let got = net
            .forward(&Tensor::from_vec(prompt.clone(), (1, 40), &Device::Cpu).unwrap())
            .unwrap();
        // Inference returns the logits at the last prompt position and after each forced token.
        let got = got.narrow(1, 29, 11).unwrap().squeeze(0).unwrap();
        let want = want.squeeze(0).unwrap().narrow(1, 0, 259).unwrap();
        let diff = (got - want)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(diff < 1e-3, "max logit difference {diff}");
    }
}
