// Decode's matmuls on tensor cores, for up to 64 rows (sm_90 and later).
#pragma once
#include "common.cuh"
#if __CUDA_ARCH__ >= 900
#include <cooperative_groups.h>
#endif

// out[r][n] = sum_k x[r][k] w[n][k] for rows <= 8 * NT. Decode at batch 3-64 is still a stream
// of the weights, but too many rows for one accumulator per row per lane (small_matmul.cuh), and
// cuBLAS's kernels for 64 rows streamed Qwen3-0.6B's o_proj and down_proj at 0.77-0.88 TB/s on an
// H200, and do not launch early under PDL (results/gpu-h200-2026-11-28-chain/, -timeline/).
// Measured in a chain (results/gpu-h200-2026-11-28-tc-matmul/): faster than both at 4 rows
// (qkv_proj 4.0 us, cuBLAS 4.9, few-row 7.1) and mostly at 16; slower than cuBLAS at 64 (8.5 vs
// 5.0), where a block's load and its multiply do not overlap and shared memory allows 3 blocks a
// SM; the model uses it up to 16 rows (qwen3.rs).
//
// A cluster of C blocks computes 64 output columns; block c of it takes the c-th slice of k.
// Each block copies its 64 weight rows' slice into shared memory with cp.async (issued before
// pdl_enter: weights depend on no kernel, so they stream while the kernel before finishes), then
// its slice of x, then each of its 4 WK warps multiplies 16 weight rows by every row of x over
// one of WK runs of the slice with mma.m16n8k16 (the weight as A, x as B, f32 accumulators).
// The WK partial tiles of a block are summed in its shared memory, then the C blocks' tiles
// through distributed shared memory, each block summing and writing 1/C of the outputs, in a
// fixed order (deterministic). Nothing is left in global memory between blocks. WK is 2 from
// 4 tiles of x (17-64 rows): with one warp of 16 rows per scheduler (WK = 1) the multiply at 64
// rows was latency-bound (ncu: 6.5 cycles between a warp's instructions,
// results/gpu-h200-2026-11-28-tc-matmul/call5/), and two warps a scheduler took 6-14% off
// o_proj, gate_up and down at 64 rows (7.06 -> 6.66, 15.5 -> 13.3, 9.20 -> 8.26 us in a chain);
// four (WK = 4, one block a SM by registers), and 32 weight rows a warp, were slower
// (results/gpu-h200-2026-11-28-async-launch/call1/).
//
// k is permuted inside each 32-wide chunk (a sum does not care about order, as long as A and B
// agree): lane (g, t) takes k = 8t .. 8t+7 of its rows as one 16-byte read, the first two
// pairs for the chunk's first mma and the last two for its second. Shared-memory rows are
// (slice + 32) elements long, 64 bytes off a multiple of 128, so the 8 lanes of each quarter warp
// (two rows, four 16-byte pieces each) read 8 distinct bank groups.
constexpr int TC_COLS = 64;         // output columns per cluster: 4 warps x 16
constexpr int TC_PAD = 32;          // elements after each shared-memory row
constexpr int TC_PART_STRIDE = 68;  // floats per row of the partial tile: (8t + g) distinct banks

template <typename T>
__device__ inline void mma_16816(float (&c)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0, uint32_t b1);
#if __CUDA_ARCH__ >= 900
template <>
__device__ inline void mma_16816<__nv_bfloat16>(float (&c)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0, uint32_t b1) {
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
               : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
               : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}
template <>
__device__ inline void mma_16816<__half>(float (&c)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0, uint32_t b1) {
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
               : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
               : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}
#endif

// Grid (C, n / 64) in clusters of (C, 1, 1), 128 WK threads, the larger of (64 + 8 NT) x (k / C +
// 32) elements and WK partial tiles of dynamic shared memory. n % 64 == 0, k % (64 C) == 0, rows <= 8 NT (tc_matmul.rs checks).
// GLU: the weight is [2n, k], gate rows then up rows, and out = silu(gate) * up, [rows, n]; a
// cluster takes 32 outputs (its 64 weight rows: their 32 gate rows, then their 32 up rows), so
// the grid is (C, n / 32) and n % 32 == 0.
template <typename T, int NT, int WK, bool GLU>
__device__ void tc_matmul(const T* x, const T* w, T* out, uint32_t rows, uint32_t n, uint32_t k) {
#if __CUDA_ARCH__ >= 900
  namespace cg = cooperative_groups;
  cg::cluster_group cluster = cg::this_cluster();
  constexpr int V = 16 / sizeof(T);
  const uint32_t parts = cluster.num_blocks(), part = cluster.block_rank();
  const uint32_t ks = k / parts, k0 = part * ks, stride = ks + TC_PAD, vecs = ks / V;
  constexpr uint32_t OUTS = GLU ? TC_COLS / 2 : TC_COLS;  // outputs per cluster
  const uint32_t n0 = blockIdx.y * OUTS;
  extern __shared__ __align__(16) unsigned char tc_smem[];
  T* ws = reinterpret_cast<T*>(tc_smem);  // [TC_COLS][stride]
  T* xs = ws + TC_COLS * stride;          // [8 NT][stride]
  // 16-byte copies of the rows' slices, thread i taking pieces i, i + 128, ... in row order;
  // its (row, piece) steps by additions, not a division per copy (which changed little when
  // removed: qkv_proj at 64 rows 8.7 -> 8.5 us). One bulk copy a row (cp.async.bulk, an
  // mbarrier) was slower: 4.0 -> 5.4 us for qkv_proj at 4 rows in a chain.
  const uint32_t first_r = threadIdx.x / vecs, first_c = threadIdx.x % vecs;
  const uint32_t dr = blockDim.x / vecs, dc = blockDim.x % vecs;
  auto copy_rows = [&](T* dst, const T* src, uint32_t n_rows) {
    for (uint32_t r = first_r, c = first_c; r < n_rows;) {
      cp_async<16>(dst + r * stride + c * V, src + (size_t)r * k + c * V);
      r += dr, c += dc;
      if (c >= vecs) c -= vecs, ++r;
    }
  };
  if constexpr (GLU) {
    copy_rows(ws, w + (size_t)n0 * k + k0, OUTS);
    copy_rows(ws + OUTS * stride, w + (size_t)(n + n0) * k + k0, OUTS);
  } else {
    copy_rows(ws, w + (size_t)n0 * k + k0, TC_COLS);
  }
  cp_async_commit();
  pdl_enter();
  copy_rows(xs, x + k0, rows);
  cp_async_commit();
  cp_async_wait<0>();
  __syncthreads();

  // Warp (wn, wk): weight rows 16 wn .. 16 wn + 15, over the wk-th of WK runs of the slice.
  const int warp = threadIdx.x >> 5, wn = warp & 3, wk = warp >> 2, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const int tiles = (rows + 7) >> 3;  // tiles of 8 rows of x; a last partial one reads rows no
                                      // one wrote, which only reach outputs never written
  float acc[NT][4];
#pragma unroll
  for (int j = 0; j < NT; ++j) acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.f;
  const T* wa = ws + (wn * 16 + g) * stride + 8 * t;
  const T* xb = xs + g * stride + 8 * t;
  const uint32_t run = ks / WK;  // a multiple of 32: ks is one of 64, WK at most 2
#pragma unroll 2
  for (uint32_t c = wk * run; c < (wk + 1) * run; c += 32) {
    const uint4 lo = *reinterpret_cast<const uint4*>(wa + c), hi = *reinterpret_cast<const uint4*>(wa + 8 * stride + c);
#pragma unroll
    for (int j = 0; j < NT; ++j) {
      if (j < tiles) {
        const uint4 b = *reinterpret_cast<const uint4*>(xb + j * 8 * stride + c);
        mma_16816<T>(acc[j], lo.x, hi.x, lo.y, hi.y, b.x, b.y);
        mma_16816<T>(acc[j], lo.z, hi.z, lo.w, hi.w, b.z, b.w);
      }
    }
  }
  __syncthreads();  // every warp is done with ws and xs: the partial tiles take their place
  constexpr int TILE = 8 * NT * TC_PART_STRIDE;
  float* tile = reinterpret_cast<float*>(tc_smem);  // [WK][8 NT][TC_PART_STRIDE]
  float* mine = tile + wk * TILE;
  const int col = wn * 16 + g;
#pragma unroll
  for (int j = 0; j < NT; ++j) {
    if (j < tiles) {
      const int r = j * 8 + 2 * t;
      mine[r * TC_PART_STRIDE + col] = acc[j][0];
      mine[(r + 1) * TC_PART_STRIDE + col] = acc[j][1];
      mine[r * TC_PART_STRIDE + col + 8] = acc[j][2];
      mine[(r + 1) * TC_PART_STRIDE + col + 8] = acc[j][3];
    }
  }
  if constexpr (WK > 1) {  // the block's runs summed into the first tile, in a fixed order
    __syncthreads();
    for (uint32_t e = threadIdx.x; e < rows * TC_COLS; e += blockDim.x) {
      const uint32_t at = e / TC_COLS * TC_PART_STRIDE + e % TC_COLS;
      float s = tile[at];
#pragma unroll
      for (int h = 1; h < WK; ++h) s += tile[h * TILE + at];
      tile[at] = s;
    }
  }
  cluster.sync();  // every block's tile is written and visible to the cluster
  // This block's share of the rows x 16 groups of 4 columns, each summed over the C tiles.
  const uint32_t quads = rows * (OUTS / 4), share = (quads + parts - 1) / parts;
  const uint32_t e1 = min(quads, (part + 1) * share);
  for (uint32_t e = part * share + threadIdx.x; e < e1; e += blockDim.x) {
    const uint32_t r = e / (OUTS / 4), q = e % (OUTS / 4) * 4;
    float s[4] = {0.f, 0.f, 0.f, 0.f}, u[4] = {0.f, 0.f, 0.f, 0.f};
    for (uint32_t p = 0; p < parts; ++p) {
      const float* src = cluster.map_shared_rank(tile, p) + r * TC_PART_STRIDE + q;
      const float4 v = *reinterpret_cast<const float4*>(src);
      s[0] += v.x, s[1] += v.y, s[2] += v.z, s[3] += v.w;
      if constexpr (GLU) {
        const float4 vu = *reinterpret_cast<const float4*>(src + OUTS);
        u[0] += vu.x, u[1] += vu.y, u[2] += vu.z, u[3] += vu.w;
      }
    }
    Pack<T, 4> o;
#pragma unroll
    for (int i = 0; i < 4; ++i) o.v[i] = from_f<T>(GLU ? silu_times(s[i], u[i]) : s[i]);
    *reinterpret_cast<Pack<T, 4>*>(out + (size_t)r * n + n0 + q) = o;
  }
  cluster.sync();  // no block leaves while another may still read its tile
#endif
}

// tc_matmul_<type>_t<tiles> and tc_matmul_glu_<type>_t<tiles>: 128 threads up to 2 tiles, 256 from 4.
#define INSTANTIATE_TC_MATMUL_NT(T, NAME, NT, WK)                                                                     \
  extern "C" __global__ void __launch_bounds__(128 * WK) tc_matmul_##NAME##_t##NT(const T* x, const T* w, T* out,     \
                                                                                   uint32_t rows, uint32_t n, uint32_t k) { \
    tc_matmul<T, NT, WK, false>(x, w, out, rows, n, k);                                                               \
  }                                                                                                                   \
  extern "C" __global__ void __launch_bounds__(128 * WK) tc_matmul_glu_##NAME##_t##NT(const T* x, const T* w, T* out, \
                                                                                       uint32_t rows, uint32_t n, uint32_t k) { \
    tc_matmul<T, NT, WK, true>(x, w, out, rows, n, k);                                                                \
  }
#define INSTANTIATE_TC_MATMUL(T, NAME)       \
  INSTANTIATE_TC_MATMUL_NT(T, NAME, 1, 1)    \
  INSTANTIATE_TC_MATMUL_NT(T, NAME, 2, 1)    \
  INSTANTIATE_TC_MATMUL_NT(T, NAME, 4, 2)    \
  INSTANTIATE_TC_MATMUL_NT(T, NAME, 8, 2)
INSTANTIATE_TC_MATMUL(__nv_bfloat16, bf16)
INSTANTIATE_TC_MATMUL(__half, f16)
