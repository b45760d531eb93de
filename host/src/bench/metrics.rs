//! What one timed point measured, as a result record with the prototype's keys and nanohost's
//! measured additions. Definitions are in the README ("Result keys").

use crate::engine::sequence::Sequence;
use crate::engine::StepReport;
use serde_json::{json, Map, Value};
use std::time::{Duration, Instant};

/// Bytes through B, KB, MB, GB, TB (divided by 1024), two decimals, as the prototype printed.
pub fn format_bytes(bytes: u64) -> String {
    let mut v = bytes as f64;
    for unit in ["B", "KB", "MB", "GB"] {
        if v < 1024.0 {
            return format!("{v:.2} {unit}");
        }
        v /= 1024.0;
    }
    format!("{v:.2} TB")
}

/// The `q`-quantile (0..=1) of `xs` by nearest rank; 0 for no samples.
pub fn quantile(xs: &mut [f64], q: f64) -> f64 {
    if xs.is_empty() {
        return 0.0;
    }
    xs.sort_by(|a, b| a.total_cmp(b));
    let rank = ((q * xs.len() as f64).ceil() as usize).clamp(1, xs.len());
    xs[rank - 1]
}

/// Peak resident memory of this process so far (Linux `VmHWM`), 0 where unknown.
pub fn peak_rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

pub struct RunRecord<'a> {
    pub seqs: &'a [Sequence],
    pub steps: &'a [StepReport],
    pub started: Instant,
    pub elapsed: Duration,
    pub peak_blocks: usize,
    pub peak_reported_blocks: usize,
    pub bytes_per_block: usize,
    pub preemptions: usize,
    /// Device memory in use (driver) before the timed call and its peak at step boundaries;
    /// `None` on the CPU.
    pub device_memory_before: Option<u64>,
    pub peak_device_memory: Option<u64>,
}

impl RunRecord<'_> {
    pub fn to_json(&self) -> Map<String, Value> {
        let secs = self.elapsed.as_secs_f64();
        let input: usize = self.seqs.iter().map(|s| s.prompt_len).sum();
        let output: usize = self.seqs.iter().map(|s| s.output().len()).sum();
        let reused: usize = self.seqs.iter().map(|s| s.cached_at_admission).sum();
        let rate = |tokens: usize, d: Duration| {
            if d.is_zero() {
                0.0
            } else {
                tokens as f64 / d.as_secs_f64()
            }
        };
        let (mut pre_tok, mut pre_t, mut dec_tok, mut dec_t) =
            (0, Duration::ZERO, 0, Duration::ZERO);
        for s in self.steps {
            if s.prefill {
                (pre_tok, pre_t) = (pre_tok + s.tokens_computed, pre_t + s.duration);
            } else {
                (dec_tok, dec_t) = (dec_tok + s.tokens_computed, dec_t + s.duration);
            }
        }
        // From the request's arrival (for requests of later waves) or the timed call's start.
        let mut ttft: Vec<f64> = self
            .seqs
            .iter()
            .filter_map(|s| {
                s.token_times
                    .first()
                    .map(|t| ms(*t - s.arrived.max(self.started)))
            })
            .collect();
        let mut itl: Vec<f64> = self
            .seqs
            .iter()
            .flat_map(|s| s.token_times.windows(2).map(|w| ms(w[1] - w[0])))
            .collect();
        // vLLM's serving metrics, each over requests: time per output token after the first,
        // and end-to-end latency from arrival to the last token.
        let mut tpot: Vec<f64> = self
            .seqs
            .iter()
            .filter(|s| s.token_times.len() > 1)
            .map(|s| {
                let n = s.token_times.len();
                ms(s.token_times[n - 1] - s.token_times[0]) / (n - 1) as f64
            })
            .collect();
        let mut e2el: Vec<f64> = self
            .seqs
            .iter()
            .filter_map(|s| {
                s.token_times
                    .last()
                    .map(|t| ms(*t - s.arrived.max(self.started)))
            })
            .collect();
        let peak_kv = (self.peak_blocks * self.bytes_per_block) as u64;
        let mut m = Map::new();
        let mut put = |k: &str, v: Value| {
            m.insert(k.to_string(), v);
        };
        put("num_sequences", json!(self.seqs.len()));
        put("total_input_tokens", json!(input));
        put("total_output_tokens", json!(output));
        put("total_tokens", json!(input + output));
        put("time_seconds", json!(secs));
        put(
            "throughput_tokens_per_sec",
            json!((input + output) as f64 / secs),
        );
        put(
            "output_throughput_tokens_per_sec",
            json!(output as f64 / secs),
        );
        put("memory_used_bytes", json!(peak_kv));
        put("memory_used_formatted", json!(format_bytes(peak_kv)));
        put("output_tokens_generated", json!(output));
        put("output_tokens_sha256", json!(output_digest(self.seqs)));
        put("prefill_tokens_computed", json!(pre_tok));
        put("prefill_tokens_reused", json!(reused));
        // Under its generic name too: what any strategy reused, whatever its own counters say.
        put("tokens_reused", json!(reused));
        put("prefill_tokens_per_sec", json!(rate(pre_tok, pre_t)));
        put("decode_tokens_per_sec", json!(rate(dec_tok, dec_t)));
        let mut decode_ms: Vec<f64> = self
            .steps
            .iter()
            .filter(|s| !s.prefill)
            .map(|s| ms(s.duration))
            .collect();
        put(
            "decode_ms_per_step_p50",
            json!(quantile(&mut decode_ms, 0.5)),
        );
        put(
            "decode_ms_per_step_p90",
            json!(quantile(&mut decode_ms, 0.9)),
        );
        put(
            "time_to_first_token_ms_mean",
            json!(ttft.iter().sum::<f64>() / ttft.len().max(1) as f64),
        );
        put(
            "time_to_first_token_ms_p50",
            json!(quantile(&mut ttft, 0.5)),
        );
        put("inter_token_latency_ms_p50", json!(quantile(&mut itl, 0.5)));
        put(
            "inter_token_latency_ms_p99",
            json!(quantile(&mut itl, 0.99)),
        );
        put("request_throughput", json!(self.seqs.len() as f64 / secs));
        for (name, xs) in [
            ("ttft", &mut ttft),
            ("tpot", &mut tpot),
            ("itl", &mut itl),
            ("e2el", &mut e2el),
        ] {
            let mean = xs.iter().sum::<f64>() / xs.len().max(1) as f64;
            put(&format!("mean_{name}_ms"), json!(mean));
            put(&format!("median_{name}_ms"), json!(quantile(xs, 0.5)));
            put(&format!("p99_{name}_ms"), json!(quantile(xs, 0.99)));
        }
        put("peak_kv_bytes", json!(peak_kv));
        put("peak_kv_blocks", json!(self.peak_blocks));
        put(
            "peak_kv_bytes_reported_by_strategy",
            json!((self.peak_reported_blocks * self.bytes_per_block) as u64),
        );
        put("peak_process_memory_bytes", json!(peak_rss_bytes()));
        put("preemptions", json!(self.preemptions));
        if let (Some(before), Some(peak)) = (self.device_memory_before, self.peak_device_memory) {
            put("peak_device_memory_bytes", json!(peak));
            put(
                "device_memory_growth_bytes",
                json!(peak.saturating_sub(before)),
            );
        }
        m
    }
}

/// SHA-256 over every sequence's generated token ids (in request order, each sequence's count
/// first): two runs generated the same tokens exactly when the digests match.
pub fn output_digest(seqs: &[Sequence]) -> String {
    use sha2::{Digest, Sha256};
    let mut ordered: Vec<&Sequence> = seqs.iter().collect();
    ordered.sort_by_key(|s| s.id);
    let mut h = Sha256::new();
    for s in ordered {
        h.update((s.output().len() as u64).to_le_bytes());
        for t in s.output() {
            h.update(t.to_le_bytes());
        }
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_format_like_the_prototype() {
        assert_eq!(format_bytes(0), "0.00 B");
        assert_eq!(format_bytes(1536), "1.50 KB");
        assert_eq!(format_bytes(114_688 * 256), "28.00 MB");
    }

    #[test]
    fn quantiles_by_nearest_rank() {
        let mut xs: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&mut xs, 0.5), 50.0);
        assert_eq!(quantile(&mut xs, 0.99), 99.0);
        assert_eq!(quantile(&mut [], 0.5), 0.0);
    }
}
