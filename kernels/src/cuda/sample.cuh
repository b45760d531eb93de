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
// alone: 34 us at batch 1 on an H200), each taking a contiguous chunk, in one pass: its maximum
// m_g, the first index of it, and (sampling) s_g = sum exp((x - m_g) * inv_temp), each thread
// keeping its sum relative to its running maximum (rescaled when the maximum moves), the
// threads' sums combined in f64. The last block of the row to finish (a completion counter, left
// at zero) merges them with one warp, a lane per two chunks: the row's maximum M, and, sampling,
// a scan of the chunks' sums s_g exp((m_g - M) * inv_temp) finds the chunk where the running sum
// passes u * total, which the block then walks in order. (A first version made a second pass for
// the sums, in f64 exp, and merged with one thread: a latency workload step at batch 1 ran about
// 0.045 ms slower sampling at temperature 0.6 than greedy.)
//
// Logits are read SAMPLE_VEC at a time (16 bytes), SAMPLE_UNROLL such loads issued before any is
// used, and a vector's maximum moves the running sum at most once: with one 2-byte load and one
// branch per logit, batch 64 sampled at temperature 0.6 cost 21 us a step more than greedy on an
// H200, in two waves of blocks (results/gpu-h200-2026-11-29-sampling/, call 1). The weights
// exp((x - m) * inv_temp) are the hardware's exp2 of (x - m) * inv_temp * log2 e, summed as a
// tree a vector at a time: with the library's exp2f and one running sum, ncu counted 26
// instructions a logit and 31.7 us for batch 64's 9.7 M logits (12 greedy), bound by the
// latency of each warp's chain, not by memory (results/gpu-h200-2026-11-29-sampling/).
constexpr int SAMPLE_UNROLL = 4;
constexpr uint32_t SAMPLE_MAX_PARTS = 64;  // chunks a row: two per lane of the merging warp
template <typename T>
constexpr uint32_t SAMPLE_VEC = 16 / sizeof(T);

// f(i0, v) for the vectors of [lo, hi) (lo a multiple of the vector size V) numbered first,
// first + step, ... from lo / V, in that order; v[j] is element i0 + j as f32, -inf past hi.
// `aligned`: the row starts on 16 bytes, so a whole vector is one load; the vectors wholly
// inside [lo, hi) then take a path with no bounds check.
template <typename T, typename F>
__device__ inline void vectors_of(const T* x, bool aligned, uint32_t lo, uint32_t hi, uint32_t first, uint32_t step, F&& f) {
  constexpr uint32_t V = SAMPLE_VEC<T>;
  using P = Pack<T, V>;
  // Loads stay packed until used: 4 registers a vector in flight rather than V.
  auto use = [&](uint32_t i0, const P& p) {
    float v[V];
#pragma unroll
    for (uint32_t j = 0; j < V; ++j) v[j] = to_f(p.v[j]);
    f(i0, v);
  };
  const uint32_t whole = aligned ? (hi - lo) / V : 0, q_end = (hi - lo + V - 1) / V;
  const P* xv = reinterpret_cast<const P*>(x + lo);
  uint32_t q = first;
  for (; q + (SAMPLE_UNROLL - 1) * step < whole; q += SAMPLE_UNROLL * step) {
    P p[SAMPLE_UNROLL];
#pragma unroll
    for (int u = 0; u < SAMPLE_UNROLL; ++u) p[u] = xv[q + u * step];
#pragma unroll
    for (int u = 0; u < SAMPLE_UNROLL; ++u) use(lo + (q + u * step) * V, p[u]);
  }
  for (; q < q_end; q += step) {
    const uint32_t i0 = lo + q * V;
    P p;
    if (q < whole) {
      p = xv[q];
    } else {
#pragma unroll
      for (uint32_t j = 0; j < V; ++j) p.v[j] = i0 + j < hi ? x[i0 + j] : from_f<T>(-INFINITY);
    }
    use(i0, p);
  }
}

// Inclusive prefix sum over the warp's lanes.
__device__ inline double warp_scan(double v) {
  const int lane = threadIdx.x & 31;
  for (int off = 1; off < 32; off <<= 1) {
    const double o = __shfl_up_sync(0xffffffffu, v, off);
    if (lane >= off) v += o;
  }
  return v;
}

// Exclusive prefix sum over the block (blockDim.x a multiple of 32, at most 1024).
__device__ inline double block_exclusive_scan(double v) {
  __shared__ double warp_total[32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const double incl = warp_scan(v);
  if (lane == 31) warp_total[warp] = incl;
  __syncthreads();
  double before = 0.0;
  for (int w = 0; w < warp; ++w) before += warp_total[w];
  __syncthreads();
  return before + incl - v;
}

template <typename T>
__device__ void sample_rows(const T* logits, const float* u, uint32_t* out, float* part_max, uint32_t* part_arg,
                            double* part_sum, uint32_t* done, uint32_t vocab, float inv_temp) {
  const uint32_t g = blockIdx.x, parts = gridDim.x, row = blockIdx.y, t = threadIdx.x, n = blockDim.x;
  const bool sampling = inv_temp != 0.f;
  const T* xr = logits + (size_t)row * vocab;
  constexpr uint32_t V = SAMPLE_VEC<T>;
  // Chunks are whole vectors, so that every chunk but the row's last starts and ends on one.
  const uint32_t chunk = ((vocab + parts - 1) / parts + V - 1) / V * V;
  const bool aligned = reinterpret_cast<uintptr_t>(xr) % 16 == 0;
  const float c2 = inv_temp * LOG2E;  // exp(x * inv_temp) = exp2(x * c2)
  // exp((x - m) * inv_temp); NaN logits weigh nothing, as -inf ones do.
  auto weight = [&](float x, float m) { return x > -INFINITY ? fast_exp2((x - m) * c2) : 0.f; };
  // The sum of weights over a vector, as a tree: a NaN sum (rare) is taken again, one weight
  // at a time.
  auto vector_weight = [&](const float (&v)[V], float m) {
    float w[V];
#pragma unroll
    for (uint32_t j = 0; j < V; ++j) w[j] = fast_exp2((v[j] - m) * c2);
#pragma unroll
    for (uint32_t h = V / 2; h > 0; h /= 2)
#pragma unroll
      for (uint32_t j = 0; j < h; ++j) w[j] += w[j + h];
    if (!isnan(w[0])) return w[0];
    float sum = 0.f;
#pragma unroll
    for (uint32_t j = 0; j < V; ++j) sum += weight(v[j], m);
    return sum;
  };
  auto lo_of = [&](uint32_t c) { return min(c * chunk, vocab); };
  auto hi_of = [&](uint32_t c) { return min(c * chunk + chunk, vocab); };
  float best = -INFINITY;
  uint32_t bi = 0xffffffffu;
  float s = 0.f;  // sum of exp((x - best) * inv_temp) over this thread's logits so far
  // The vector's maximum and the first index of it, taken only if above the running maximum
  // (this thread's vectors come in index order, so the running index is the first occurrence).
  auto take_vector_max = [&](uint32_t i0, const float (&v)[V]) {
    float vm = v[0];
#pragma unroll
    for (uint32_t j = 1; j < V; ++j) vm = fmaxf(vm, v[j]);
    if (vm > best) {
      uint32_t at = V - 1;
#pragma unroll
      for (int j = V - 1; j >= 0; --j) at = v[j] == vm ? j : at;
      if (sampling) s *= fast_exp2((best - vm) * c2);  // 0 while best is -inf: s is 0 then
      best = vm, bi = i0 + at;
    }
    return vm;
  };
  if (sampling) {
    vectors_of(xr, aligned, lo_of(g), hi_of(g), t, n, [&](uint32_t i0, const float (&v)[V]) {
      if (take_vector_max(i0, v) == -INFINITY) return;  // (-inf - -inf would make the sum NaN)
      s += vector_weight(v, best);
    });
  } else {
    vectors_of(xr, aligned, lo_of(g), hi_of(g), t, n, [&](uint32_t i0, const float (&v)[V]) { take_vector_max(i0, v); });
  }
  const float mine = best;
  block_argmax(best, bi);
  double sum = 0.0;
  if (sampling) sum = block_sum(s > 0.f ? (double)s * exp(((double)mine - best) * inv_temp) : 0.0);
  const size_t at = (size_t)row * parts;
  __shared__ bool last;
  if (t == 0) {
    part_max[at + g] = best;
    part_arg[at + g] = bi;
    part_sum[at + g] = sum;
    last = true;
    if (parts > 1) {
      __threadfence();
      last = atomicAdd(done + row, 1u) == parts - 1;
      if (last) done[row] = 0u;
    }
  }
  __syncthreads();
  if (!last) return;
  __threadfence();
  // The merge, by warp 0: lane l takes chunks 2l and 2l + 1 (every block's partials, this
  // one's included, are in global memory; __ldcg reads them from L2).
  __shared__ uint32_t walk;
  __shared__ double remain;
  if (t < 32) {
    const uint32_t c0 = 2 * t, c1 = 2 * t + 1;
    const float m0 = c0 < parts ? __ldcg(part_max + at + c0) : -INFINITY, m1 = c1 < parts ? __ldcg(part_max + at + c1) : -INFINITY;
    uint32_t arg = c0 < parts ? __ldcg(part_arg + at + c0) : 0xffffffffu;
    float M = m0;
    take_better(M, arg, m1, c1 < parts ? __ldcg(part_arg + at + c1) : 0xffffffffu);
    for (int off = 16; off > 0; off >>= 1)
      take_better(M, arg, __shfl_xor_sync(0xffffffffu, M, off), __shfl_xor_sync(0xffffffffu, arg, off));
    if (!sampling) {
      if (t == 0) out[row] = arg;
    } else {
      auto scaled = [&](uint32_t c, float m) { return c < parts ? __ldcg(part_sum + at + c) * exp(((double)m - M) * inv_temp) : 0.0; };
      const double sc0 = scaled(c0, m0), sc1 = scaled(c1, m1);
      const double incl = warp_scan(sc0 + sc1), before0 = incl - sc0 - sc1;
      const double total = __shfl_sync(0xffffffffu, incl, 31), target = (double)u[row] * total;
      const bool in0 = sc0 > 0.0 && target < before0 + sc0, in1 = !in0 && sc1 > 0.0 && target < before0 + sc0 + sc1;
      const uint32_t hits = __ballot_sync(0xffffffffu, in0 || in1);
      if (t == 0) out[row] = arg;  // if rounding leaves the target past the last chunk's end
      if (hits == 0u) {
        if (t == 0) walk = 0xffffffffu;
      } else if (t == (uint32_t)(__ffs(hits) - 1)) {
        walk = in0 ? c0 : c1;
        // What is left of the target, in units of the chunk's own maximum.
        const double from = in0 ? before0 : before0 + sc0;
        remain = (target - from) / exp(((double)(in0 ? m0 : m1) - M) * inv_temp);
      }
    }
  }
  if (!sampling) return;  // uniform across the block
  __syncthreads();
  if (walk == 0xffffffffu) return;
  // Walk chunk `walk` in order: each thread sums a contiguous piece, the pieces are scanned,
  // and the thread whose piece holds the target walks it. Both passes over a piece go in index
  // order, SAMPLE_UNROLL loads issued before any is used: one load at a time, a piece of 36
  // logits at batch 64 waited out 36 L2 round trips twice (temperature 0.6 cost about 20 us a
  // step more than greedy there; results/gpu-h200-2026-11-28-async-launch/).
  const uint32_t wlo = lo_of(walk), whi = hi_of(walk);
  const float m_walk = __ldcg(part_max + at + walk);
  // Pieces of whole vectors: piece p is vectors [p * piece, (p + 1) * piece) of the chunk.
  const uint32_t piece = ((whi - wlo + V - 1) / V + n - 1) / n;
  const uint32_t plo = min(wlo + t * piece * V, whi), phi = min(plo + piece * V, whi);
  double local = 0.0;
  auto each = [&](auto&& f) { vectors_of(xr, aligned, plo, phi, 0u, 1u, f); };
  each([&](uint32_t, const float (&v)[V]) { local += vector_weight(v, m_walk); });
  const double start = block_exclusive_scan(local);
  if (local > 0.0 && remain >= start && remain < start + local) {
    double c = start;
    uint32_t hit = phi - 1;
    bool found = false;
    each([&](uint32_t i0, const float (&v)[V]) {
#pragma unroll
      for (uint32_t j = 0; j < V; ++j) {
        c += weight(v[j], m_walk);
        if (!found && remain < c) found = true, hit = i0 + j;
      }
    });
    out[row] = hit;
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
