// The few-row matmul of small-batch decode.
#pragma once
#include "common.cuh"

// out[r][n] = sum_k x[r][k] w[n][k] for rows <= MR (decode at small batch): the weight is
// streamed once with 16-byte loads (CH per lane in flight, kept packed until used, so they cost
// half the registers), each chunk of x (from cache) serving all rows. S warps share a column,
// each taking a contiguous 1/S of k (split-K), reduced in shared memory: a projection with few
// columns (1,024 for Qwen3-0.6B's o_proj and down_proj) would otherwise run one warp per column
// on a GPU that wants several thousand warps to keep enough loads in flight.
template <typename T, int MR, int S>
__device__ void small_matmul(const T* x, const T* w, T* out, uint32_t rows, uint32_t n, uint32_t k) {
  constexpr int V = 16 / sizeof(T);  // elements per 16-byte load
  constexpr int CH = 8;               // loads per lane in flight
  constexpr int BLOCK_WARPS = 8, COLS = BLOCK_WARPS / S;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, part = warp % S;
  const uint32_t col = blockIdx.x * COLS + warp / S;
  const uint32_t kc = (k / V + S - 1) / S * V;  // this warp's share of k, whole 16-byte loads
  const uint32_t k0 = part * kc, k1 = min(k, k0 + kc);
  float acc[MR];
#pragma unroll
  for (int r = 0; r < MR; ++r) acc[r] = 0.f;
  const T* wr = w + (size_t)col * k;
  Pack<T, V> wp[CH];
  auto load_weights = [&](uint32_t c0) {
#pragma unroll
    for (int u = 0; u < CH; ++u) {
      const uint32_t c = c0 + u * 32 * V;
      if (c < k1) wp[u] = *reinterpret_cast<const Pack<T, V>*>(wr + c);
    }
  };
  // The first CH loads of the weight (all of it for k up to 32 * V * CH) depend on no kernel:
  // they are issued before waiting for the one before, and land while it finishes.
  const uint32_t first = k0 + lane * V;
  if (col < n) load_weights(first);
  pdl_enter();
  if (col < n) {
    for (uint32_t c0 = first; c0 < k1; c0 += 32 * V * CH) {
      if (c0 != first) load_weights(c0);
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
          for (int i = 0; i < V; ++i) acc[r] += xf[i] * to_f(wp[u].v[i]);
        }
      }
    }
  }
#pragma unroll
  for (int r = 0; r < MR; ++r)
    for (int off = 16; off > 0; off >>= 1) acc[r] += __shfl_xor_sync(0xffffffffu, acc[r], off);
  if constexpr (S == 1) {
    if (lane == 0 && col < n)
#pragma unroll
      for (int r = 0; r < MR; ++r)
        if (r < (int)rows) out[(size_t)r * n + col] = from_f<T>(acc[r]);
  } else {
    __shared__ float partial[BLOCK_WARPS][MR];
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
  }
}

#define INSTANTIATE_SMALL_MATMUL_M(T, NAME, M, S)                                                     \
  extern "C" __global__ void small_matmul_##NAME##_m##M##_s##S(const T* x, const T* w, T* out,       \
                                                               uint32_t rows, uint32_t n, uint32_t k) { \
    small_matmul<T, M, S>(x, w, out, rows, n, k);                                                    \
  }
#define INSTANTIATE_SMALL_MATMUL_S(T, NAME, S) \
  INSTANTIATE_SMALL_MATMUL_M(T, NAME, 1, S)    \
  INSTANTIATE_SMALL_MATMUL_M(T, NAME, 2, S)    \
  INSTANTIATE_SMALL_MATMUL_M(T, NAME, 4, S)    \
  INSTANTIATE_SMALL_MATMUL_M(T, NAME, 8, S)
#define INSTANTIATE_SMALL_MATMUL(T, NAME) \
  INSTANTIATE_SMALL_MATMUL_S(T, NAME, 1)  \
  INSTANTIATE_SMALL_MATMUL_S(T, NAME, 2)  \
  INSTANTIATE_SMALL_MATMUL_S(T, NAME, 4)  \
  INSTANTIATE_SMALL_MATMUL_S(T, NAME, 8)
FOR_FLOAT_TYPES(INSTANTIATE_SMALL_MATMUL)
