//! Re-rotating stored keys. RoPE rotates each pair (x[i], x[i + d/2]) by position x frequency, and
//! rotations compose, so a key stored rotated for position p is the key for position p + s after
//! one more rotation by s: exact up to f32 rounding, with no need to recompute the token. This is
//! what lets a chunk's KV computed at one place in a prompt be attended at another. The angle is
//! formed in f64 (shift x frequency can be large) and applied in f32.

use crate::elem::Elem;
use candle_core::{Result, Tensor};

/// The rotation by `shift` positions for one head size and RoPE base.
pub struct Rotation {
    cos: Vec<f32>,
    sin: Vec<f32>,
}

impl Rotation {
    /// Frequencies as the model's tables use them: `1 / theta^(2i / head_dim)`.
    pub fn new(shift: i32, head_dim: usize, theta: f64) -> Self {
        let (mut cos, mut sin) = (
            Vec::with_capacity(head_dim / 2),
            Vec::with_capacity(head_dim / 2),
        );
        for i in (0..head_dim).step_by(2) {
            let inv_freq = (1.0 / theta.powf(i as f64 / head_dim as f64)) as f32;
            let angle = shift as f64 * inv_freq as f64;
            cos.push(angle.cos() as f32);
            sin.push(angle.sin() as f32);
        }
        Rotation { cos, sin }
    }

    /// `out` = `key` rotated (halves convention, as `rms_norm_rope`).
    pub(crate) fn apply<T: Elem>(&self, key: &[T], out: &mut [f32]) {
        let half = self.cos.len();
        for i in 0..half {
            let (a, b) = (key[i].to_f32(), key[i + half].to_f32());
            out[i] = a * self.cos[i] - b * self.sin[i];
            out[i + half] = a * self.sin[i] + b * self.cos[i];
        }
    }
}

/// Keys `[tokens, heads, head_dim]` (f32, on the CPU) rotated by `shift` positions: the op the
/// attention applies to every key of a shifted span, on its own for checks and tools.
pub fn rerotate_keys(keys: &Tensor, shift: i32, theta: f64) -> Result<Tensor> {
    let (_, _, head_dim) = keys.dims3()?;
    let rot = Rotation::new(shift, head_dim, theta);
    let data = keys.flatten_all()?.to_vec1::<f32>()?;
    let mut out = vec![0f32; data.len()];
    for (k, o) in data.chunks(head_dim).zip(out.chunks_mut(head_dim)) {
        rot.apply(k, o);
    }
    Tensor::from_vec(out, keys.shape(), keys.device())
}
