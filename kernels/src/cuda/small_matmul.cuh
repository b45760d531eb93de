// The few-row matmul of small-batch decode.
#pragma once
#include "common.cuh"

// out[r][n] = sum_k x[r][k] w[n][k] for rows <= MR (decode at small batch): a pure stream of the
// weight, with 16-byte loads, each chunk of x (from cache) serving all rows.
//
// The grid is persistent (as many blocks as fit at once, cuda.rs): a block walks column groups
// blockIdx.x, + gridDim.x, ..., and each warp keeps the next pass's loads in flight while it
// multiplies the current one. One warp per column with a grid of one block per 8 columns ran
// in waves (80 registers: 3 blocks per SM, so a 4,096-column projection took two waves and a
// tail) and idled between a column and the next. S warps share a column, each taking a
// contiguous 1/S of k (split-K), reduced in shared memory: a projection with few columns (1,024
// for Qwen3-0.6B's o_proj and down_proj) would otherwise keep too few loads in flight. On an
// H200, in a replayed chain at one row (results/gpu-h200-2026-11-28-chain/): qkv_proj 4.40 ->
// 3.6 us, gate_up_proj 5.16 -> 4.9, o_proj 2.69 -> 2.7 and down_proj 4.64 -> 3.7 (with split 2).
//
// GLU: the weight is a gate/up pair of halves ([2n, k]: gate rows, then up rows) and the output
// is silu(gate) * up, [rows, n]: a block's warps take gate and up columns of the same outputs,
// which meet in shared memory (this saves the SwiGLU kernel, and a round trip of [rows, 2n]).
template <typename T, int MR, int S, bool GLU>
__device__ void small_matmul(const T* x, const T* w, T* out, uint32_t rows, uint32_t n, uint32_t k) {
  constexpr int V = 16 / sizeof(T);      // elements per 16-byte load
  constexpr int CH = 4;                  // loads per lane per pass
  constexpr uint32_t PASS = 32 * V * CH; // elements of k one pass of a warp covers
  constexpr int BLOCK_WARPS = 8, COLS = BLOCK_WARPS / S, OUTS = GLU ? COLS / 2 : COLS;  // outputs per group
  static_assert(!GLU || COLS >= 2, "a gate and an up column per output in each block");
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, part = warp % S;
  const uint32_t kc = (k / V + S - 1) / S * V;  // each warp's share of k, whole 16-byte loads
  const uint32_t k0 = min(k, part * kc), k1 = min(k, k0 + kc);
  // Passes per column, equal for every warp of the block (the split-K reduction syncs it).
  const uint32_t passes = max(1u, (kc + PASS - 1) / PASS);
  const uint32_t groups = (n + OUTS - 1) / OUTS;
  const uint32_t items = blockIdx.x < groups ? ((groups - 1 - blockIdx.x) / gridDim.x + 1) * passes : 0;
  // Item i: pass i % passes of column group blockIdx.x + (i / passes) * gridDim.x. The output
  // column the warp works for; under GLU its weight row is that (gate) or n + that (up).
  auto output = [&](uint32_t i) { return (blockIdx.x + (i / passes) * gridDim.x) * OUTS + (GLU ? warp / S / 2 : warp / S); };
  const uint32_t half = GLU ? (warp / S) % 2 : 0;
  auto first_k = [&](uint32_t i) { return k0 + (i % passes) * PASS + lane * V; };
  auto load = [&](Pack<T, V>* dst, uint32_t i) {
    const uint32_t col = output(i), c0 = first_k(i);
    if (col >= n) return;
    const T* wr = w + ((size_t)col + half * n) * k;
#pragma unroll
    for (int u = 0; u < CH; ++u)
      if (c0 + u * 32 * V < k1) dst[u] = *reinterpret_cast<const Pack<T, V>*>(wr + c0 + u * 32 * V);
  };
  Pack<T, V> cur[CH], next[CH];
  // Weights depend on no kernel: the first two passes are loaded before waiting for the kernel
  // before, and land while it finishes.
  if (items) load(cur, 0);
  if (items > 1) load(next, 1);
  pdl_enter();
  float acc[MR];
#pragma unroll
  for (int r = 0; r < MR; ++r) acc[r] = 0.f;
  __shared__ float partial[BLOCK_WARPS][MR];
  for (uint32_t i = 0; i < items; ++i) {
    const uint32_t col = output(i), c0 = first_k(i);
    if (col < n) {
#pragma unroll
      for (int u = 0; u < CH; ++u) {
        const uint32_t c = c0 + u * 32 * V;
        if (c >= k1) break;
#pragma unroll
        for (int r = 0; r < MR; ++r) {
          if (r >= (int)rows) break;
          float xf[V];
          load_f<V>(x + (size_t)r * k + c, xf);
#pragma unroll
          for (int e = 0; e < V; ++e) acc[r] += xf[e] * to_f(cur[u].v[e]);
        }
      }
    }
    if (i % passes == passes - 1) {  // the column's last pass: reduce, write, start afresh
#pragma unroll
      for (int r = 0; r < MR; ++r) {
        for (int off = 16; off > 0; off >>= 1) acc[r] += __shfl_xor_sync(0xffffffffu, acc[r], off);
      }
      if constexpr (GLU) {
        // Every warp's per-row sums into shared memory; the first OUTS x MR lanes of warp 0
        // add the S parts of each gate and up column and apply the gate.
        if (lane == 0)
#pragma unroll
          for (int r = 0; r < MR; ++r) partial[warp][r] = acc[r];
        __syncthreads();
        const uint32_t o = lane / MR, r = lane % MR, oc = (blockIdx.x + (i / passes) * gridDim.x) * OUTS + o;
        if (warp == 0 && o < OUTS && r < rows && oc < n) {
          float g = 0.f, u = 0.f;
#pragma unroll
          for (int p = 0; p < S; ++p) g += partial[(2 * o) * S + p][r], u += partial[(2 * o + 1) * S + p][r];
          out[(size_t)r * n + oc] = from_f<T>(silu_times(g, u));
        }
        __syncthreads();  // before the next column group writes `partial`
      } else if constexpr (S == 1) {
        if (lane == 0 && col < n)
#pragma unroll
          for (int r = 0; r < MR; ++r)
            if (r < (int)rows) out[(size_t)r * n + col] = from_f<T>(acc[r]);
      } else {
        if (lane == 0)
#pragma unroll
          for (int r = 0; r < MR; ++r) partial[warp][r] = acc[r];
        __syncthreads();
        if (part == 0 && lane < MR && lane < (int)rows && col < n) {
          float a = 0.f;
#pragma unroll
          for (int p = 0; p < S; ++p) a += partial[warp + p][lane];
          out[(size_t)lane * n + col] = from_f<T>(a);
        }
        __syncthreads();  // before the next column group writes `partial`
      }
#pragma unroll
      for (int r = 0; r < MR; ++r) acc[r] = 0.f;
    }
#pragma unroll
    for (int u = 0; u < CH; ++u) cur[u] = next[u];
    if (i + 2 < items) load(next, i + 2);
  }
}

// One-row kernels are held to 64 registers so that 4 blocks fit an SM (a 4,096-column projection
// in one pass of the grid; ptxas spills 16-32 bytes); more rows would spill more, and keep 3.
#define INSTANTIATE_SMALL_MATMUL_M(T, NAME, M, S, GLU, KIND)                                                     \
  extern "C" __global__ void __launch_bounds__(256, (M) == 1 ? 4 : 3) KIND##_##NAME##_m##M##_s##S(const T* x, const T* w, T* out, \
                                                               uint32_t rows, uint32_t n, uint32_t k) { \
    small_matmul<T, M, S, GLU>(x, w, out, rows, n, k);                                               \
  }
#define INSTANTIATE_SMALL_MATMUL_S(T, NAME, S, GLU, KIND) \
  INSTANTIATE_SMALL_MATMUL_M(T, NAME, 1, S, GLU, KIND)    \
  INSTANTIATE_SMALL_MATMUL_M(T, NAME, 2, S, GLU, KIND)    \
  INSTANTIATE_SMALL_MATMUL_M(T, NAME, 4, S, GLU, KIND)    \
  INSTANTIATE_SMALL_MATMUL_M(T, NAME, 8, S, GLU, KIND)
// small_matmul_<type>_m<rows>_s<split>, and small_matmul_glu_... (split at most 4).
#define INSTANTIATE_SMALL_MATMUL(T, NAME)                           \
  INSTANTIATE_SMALL_MATMUL_S(T, NAME, 1, false, small_matmul)       \
  INSTANTIATE_SMALL_MATMUL_S(T, NAME, 2, false, small_matmul)       \
  INSTANTIATE_SMALL_MATMUL_S(T, NAME, 4, false, small_matmul)       \
  INSTANTIATE_SMALL_MATMUL_S(T, NAME, 8, false, small_matmul)       \
  INSTANTIATE_SMALL_MATMUL_S(T, NAME, 1, true, small_matmul_glu)    \
  INSTANTIATE_SMALL_MATMUL_S(T, NAME, 2, true, small_matmul_glu)    \
  INSTANTIATE_SMALL_MATMUL_S(T, NAME, 4, true, small_matmul_glu)
FOR_FLOAT_TYPES(INSTANTIATE_SMALL_MATMUL)
