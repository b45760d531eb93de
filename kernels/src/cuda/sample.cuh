// Sampling on the device.
#pragma once
#include "common.cuh"

// (value, index) pairs reduced to the larger value, the smaller index on ties: the first
// occurrence of the maximum, whatever order the pairs are combined in.
__device__ inline void take_better(float& v, uint32_t& i, float ov, uint32_t oi) {
  if (ov > v || (ov == v && oi < i)) { v = ov; i = oi; }
}

// Block-wide reductions through shared memory (blockDim.x a multiple of 32, at most 1024); every
// thread gets the result.
__device__ inline void block_argmax(float& v, uint32_t& i) {
  __shared__ float sv[32];
  __shared__ uint32_t si[32];
  for (int off = 16; off > 0; off >>= 1)
    take_better(v, i, __shfl_xor_sync(0xffffffffu, v, off), __shfl_xor_sync(0xffffffffu, i, off));
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  if (lane == 0) { sv[warp] = v; si[warp] = i; }
  __syncthreads();
  v = lane < warps ? sv[lane] : -INFINITY;
  i = lane < warps ? si[lane] : 0xffffffffu;
  for (int off = 16; off > 0; off >>= 1)
    take_better(v, i, __shfl_xor_sync(0xffffffffu, v, off), __shfl_xor_sync(0xffffffffu, i, off));
  __syncthreads();  // sv/si may be reused by the caller's next reduction
}

__device__ inline double block_sum(double s) {
  __shared__ double ss[32];
  for (int off = 16; off > 0; off >>= 1) s += __shfl_xor_sync(0xffffffffu, s, off);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  if (lane == 0) ss[warp] = s;
  __syncthreads();
  s = lane < warps ? ss[lane] : 0.0;
  for (int off = 16; off > 0; off >>= 1) s += __shfl_xor_sync(0xffffffffu, s, off);
  __syncthreads();
  return s;
}

// One token per row of logits (any storage type: the model's own, so no f32 copy of [rows,
// vocab] is made). Greedy when inv_temp == 0: the first index of the maximum. Otherwise the
// inverse CDF of softmax(logits * inv_temp) at u[row].
//
// A row is split over gridDim.x blocks (one block per row read 300 KB of Qwen3's vocabulary
// alone: 34 us at batch 1 on an H200), each taking a contiguous chunk with coalesced loads: its
// maximum m_g, first index of it, and s_g = sum exp((x - m_g) * inv_temp) in f64. The last
// block of the row to finish (a completion counter, left at zero) merges them: the row's
// maximum M, and, sampling, the chunk where the scaled running sum sum s_g exp((m_g - M) *
// inv_temp) passes u * total, which it then walks in order.
constexpr int SAMPLE_UNROLL = 8;

// f(i, x[i] as f32) for i = first, first + step, ... < end, in that order, with the loads of
// SAMPLE_UNROLL of them issued before any is used.
template <typename T, typename F>
__device__ inline void strided_of(const T* x, uint32_t first, uint32_t end, uint32_t step, F&& f) {
  uint32_t i = first;
  for (; i + (SAMPLE_UNROLL - 1) * step < end; i += SAMPLE_UNROLL * step) {
    float v[SAMPLE_UNROLL];
#pragma unroll
    for (int u = 0; u < SAMPLE_UNROLL; ++u) v[u] = to_f(x[i + u * step]);
#pragma unroll
    for (int u = 0; u < SAMPLE_UNROLL; ++u) f(i + u * step, v[u]);
  }
  for (; i < end; i += step) f(i, to_f(x[i]));
}

template <typename T>
__device__ void sample_rows(const T* logits, const float* u, uint32_t* out, float* part_max, uint32_t* part_arg,
                            double* part_sum, uint32_t* done, uint32_t vocab, float inv_temp) {
  const uint32_t g = blockIdx.x, parts = gridDim.x, row = blockIdx.y, t = threadIdx.x, n = blockDim.x;
  const T* xr = logits + (size_t)row * vocab;
  auto strided = [&](uint32_t first, uint32_t end, uint32_t step, auto&& f) { strided_of(xr, first, end, step, f); };
  const uint32_t chunk = (vocab + parts - 1) / parts;
  auto lo_of = [&](uint32_t c) { return min(c * chunk, vocab); };
  auto hi_of = [&](uint32_t c) { return min(c * chunk + chunk, vocab); };
  const uint32_t lo = lo_of(g), hi = hi_of(g);
  float best = -INFINITY;
  uint32_t bi = 0xffffffffu;
  // Strided passes over the chunk, SAMPLE_UNROLL loads in flight per thread: one at a time, a
  // row of 151,936 logits split 17 ways at batch 64 took 34 us on an H200 (a load's latency per
  // 256 logits; results/gpu-h200-2026-11-28-timeline/).
  strided(lo + t, hi, n, [&](uint32_t i, float v) { take_better(best, bi, v, i); });
  block_argmax(best, bi);
  double s = 0.0;
  if (inv_temp != 0.f) {
    strided(lo + t, hi, n, [&](uint32_t, float v) { s += exp(((double)v - best) * inv_temp); });
    s = block_sum(s);
  }
  const size_t at = (size_t)row * parts;
  __shared__ bool last;
  if (t == 0) {
    last = true;
    if (parts > 1) {
      part_max[at + g] = best;
      part_arg[at + g] = bi;
      part_sum[at + g] = s;
      __threadfence();
      last = atomicAdd(done + row, 1u) == parts - 1;
      if (last) done[row] = 0u;
    }
  }
  __syncthreads();
  if (!last) return;
  __threadfence();
  // The merge: `parts` is at most 64, one thread does it.
  __shared__ uint32_t pick, walk;
  __shared__ double remain;
  if (t == 0) {
    float M = best;
    uint32_t arg = bi;
    if (parts > 1) {
      M = -INFINITY;
      for (uint32_t c = 0; c < parts; ++c) take_better(M, arg, __ldcg(part_max + at + c), __ldcg(part_arg + at + c));
    }
    pick = arg;
    if (inv_temp != 0.f) {
      auto scaled = [&](uint32_t c) {
        return parts > 1 ? __ldcg(part_sum + at + c) * exp(((double)__ldcg(part_max + at + c) - M) * inv_temp) : s;
      };
      double total = 0.0;
      for (uint32_t c = 0; c < parts; ++c) total += scaled(c);
      const double target = (double)u[row] * total;
      double before = 0.0;
      walk = parts - 1;
      for (uint32_t c = 0; c < parts; ++c) {
        const double sc = scaled(c);
        if (sc > 0.0 && target < before + sc) { walk = c; break; }
        before += sc;
      }
      // What is left of the target, in units of the chunk's own maximum.
      const double m_walk = parts > 1 ? (double)__ldcg(part_max + at + walk) : (double)M;
      remain = (target - before) / exp((m_walk - M) * inv_temp);
      out[row] = arg;  // if rounding leaves the target past the chunk's end
    }
  }
  __syncthreads();
  if (inv_temp == 0.f) {
    if (t == 0) out[row] = pick;
    return;
  }
  // Walk chunk `walk` in order: each thread sums a contiguous piece, the pieces are scanned,
  // and the thread whose piece holds the target walks it.
  const uint32_t wlo = lo_of(walk), whi = hi_of(walk);
  const float m_walk = parts > 1 ? __ldcg(part_max + at + walk) : best;
  const uint32_t piece = (whi - wlo + n - 1) / n, plo = min(wlo + t * piece, whi), phi = min(plo + piece, whi);
  __shared__ double scan[1024];
  double local = 0.0;
  for (uint32_t i = plo; i < phi; ++i) local += exp(((double)to_f(xr[i]) - m_walk) * inv_temp);
  scan[t] = local;
  __syncthreads();
  if (t == 0) {  // exclusive scan; n additions are cheap next to the exp pass
    double acc = 0.0;
    for (uint32_t i = 0; i < n; ++i) { const double v = scan[i]; scan[i] = acc; acc += v; }
  }
  __syncthreads();
  const double start = scan[t];
  if (local > 0.0 && remain >= start && remain < start + local) {
    double c = start;
    for (uint32_t i = plo; i < phi; ++i) {
      c += exp(((double)to_f(xr[i]) - m_walk) * inv_temp);
      if (remain < c) { out[row] = i; return; }
    }
    out[row] = phi - 1;
  }
}

#define INSTANTIATE_SAMPLE(T, NAME)                                                                   \
  extern "C" __global__ void sample_rows_##NAME(const T* logits, const float* u, uint32_t* out,      \
                                                float* part_max, uint32_t* part_arg, double* part_sum, \
                                                uint32_t* done, uint32_t vocab, float inv_temp) {     \
    pdl_enter();                                                                                     \
    sample_rows<T>(logits, u, out, part_max, part_arg, part_sum, done, vocab, inv_temp);             \
  }
FOR_FLOAT_TYPES(INSTANTIATE_SAMPLE)
