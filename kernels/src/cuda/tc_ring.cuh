// Decode's matmuls at 17-64 rows on tensor cores (sm_90 and later): the weight streamed through
// a ring of shared-memory stages, so that a block multiplies one stage while the next ones land.
#pragma once
#include "tc_matmul.cuh"

// out[r][n] = sum_k x[r][k] w[n][k] for rows <= 64. Why not tc_matmul.cuh's kernel at these rows:
// it copies a block's whole slice of k before multiplying any of it, and its 64 weight rows per
// cluster make every cluster copy all of x as well (at 64 rows as many bytes as its weight); it
// ran 1.2-2.3x slower than cuBLAS there (results/gpu-h200-2026-11-28-async-launch/call1/).
//
// A cluster of C blocks computes BM weight rows (BM / 2 outputs under GLU: its gate rows, then
// its up rows) for every row of x; block c of it takes the c-th slice of k, in chunks of 64.
// Chunk i of the weight and of x lands in stage i % STAGES; a block keeps STAGES - 1 chunks in
// flight while it multiplies one, and copies the weight of its first chunks before pdl_enter
// (weights depend on no kernel). Its 8 warps split the tile: BM / 32 along the weight (32 rows,
// two mma A fragments, a warp) times 8 / (BM / 32) along x (8 TT rows a warp). k is permuted
// inside each 32 of a chunk as in tc_matmul.cuh; a stage's rows are 128 bytes, and odd rows
// keep their two 64-byte halves swapped, so that the 8 lanes of a quarter warp (two rows, four
// 16-byte pieces each) read 8 distinct bank groups. The partial tiles are summed across the
// cluster by cluster_sum_store.
constexpr int RING_STAGES = 4;
constexpr int RING_KC = 64;       // k per chunk
constexpr int RING_XROWS = 64;    // rows of x a stage holds
constexpr int RING_THREADS = 256;

// Element offset of 16-byte piece `p` (0-7) of row `r` of a stage's operand.
__device__ inline uint32_t ring_at(uint32_t r, uint32_t p) { return r * RING_KC + ((p ^ ((r & 1) << 2)) << 3); }

// Grid (C, weight rows / BM) in clusters of (C, 1, 1), 256 threads, the larger of STAGES x (BM +
// 64) x 64 elements and 64 x (BM + 4) floats of dynamic shared memory; k % (64 C) == 0, rows <=
// 64, the weight's rows (2 n under GLU) a multiple of BM (tc_matmul.rs checks).
template <typename T, int BM, bool GLU>
__device__ void tc_ring(const T* x, const T* w, T* out, uint32_t rows, uint32_t n, uint32_t k) {
#if __CUDA_ARCH__ >= 900
  namespace cg = cooperative_groups;
  constexpr int WN = BM / 32, WT = 8 / WN, TT = 8 / WT;  // warps along the weight, along x; x tiles a warp
  constexpr uint32_t OUTS = GLU ? BM / 2 : BM, STAGE = (BM + RING_XROWS) * RING_KC, STRIDE = BM + 4;
  cg::cluster_group cluster = cg::this_cluster();
  const uint32_t parts = cluster.num_blocks(), part = cluster.block_rank();
  const uint32_t ks = k / parts, k0 = part * ks, chunks = ks / RING_KC;
  const uint32_t n0 = blockIdx.y * OUTS;
  extern __shared__ __align__(16) unsigned char tc_smem[];
  T* ring = reinterpret_cast<T*>(tc_smem);  // [STAGES][BM + 64][64], swizzled
  // Weight row r of the tile: under GLU the first half are gate rows n0.., the second up rows.
  auto w_row = [&](uint32_t r) { return w + (size_t)(GLU && r >= OUTS ? n + n0 + r - OUTS : n0 + r) * k + k0; };
  auto copy_w = [&](uint32_t c) {
    T* s = ring + (c % RING_STAGES) * STAGE;
#pragma unroll
    for (int j = 0; j < BM * 8 / RING_THREADS; ++j) {
      const uint32_t i = threadIdx.x + j * RING_THREADS;
      cp_async<16>(s + ring_at(i / 8, i % 8), w_row(i / 8) + c * RING_KC + i % 8 * 8);
    }
  };
  auto copy_x = [&](uint32_t c) {
    T* s = ring + (c % RING_STAGES) * STAGE + BM * RING_KC;
#pragma unroll
    for (int j = 0; j < RING_XROWS * 8 / RING_THREADS; ++j) {
      const uint32_t i = threadIdx.x + j * RING_THREADS;
      if (i / 8 < rows) cp_async<16>(s + ring_at(i / 8, i % 8), x + (size_t)(i / 8) * k + k0 + c * RING_KC + i % 8 * 8);
    }
  };
  // Groups: the first holds the weight of chunks 0..STAGES-2 and x of chunk 0, then one a chunk
  // (possibly empty), so that "all but STAGES - 2 groups done" at chunk i means chunk i landed.
  for (uint32_t c = 0; c + 1 < RING_STAGES; ++c)
    if (c < chunks) copy_w(c);
  pdl_enter();
  for (uint32_t c = 0; c + 1 < RING_STAGES; ++c) {
    if (c < chunks) copy_x(c);
    cp_async_commit();
  }

  const int warp = threadIdx.x >> 5, wn = warp % WN, wt = warp / WN, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const int tiles = (rows + 7) >> 3;  // tiles of 8 rows of x; rows past `rows` hold stale data,
                                      // which reaches only outputs never written
  float acc[2][TT][4];
#pragma unroll
  for (int f = 0; f < 2; ++f)
#pragma unroll
    for (int j = 0; j < TT; ++j) acc[f][j][0] = acc[f][j][1] = acc[f][j][2] = acc[f][j][3] = 0.f;
  for (uint32_t c = 0; c < chunks; ++c) {
    cp_async_wait<RING_STAGES - 2>();
    __syncthreads();  // chunk c is visible to every warp, and every warp is done with chunk c - 1
    if (c + RING_STAGES - 1 < chunks) {
      copy_w(c + RING_STAGES - 1);
      copy_x(c + RING_STAGES - 1);
    }
    cp_async_commit();
    const T* ws = ring + (c % RING_STAGES) * STAGE;
    const T* xs = ws + BM * RING_KC;
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const uint32_t p = half * 4 + t;
      uint4 lo[2], hi[2];
#pragma unroll
      for (int f = 0; f < 2; ++f) {
        const uint32_t r = wn * 32 + f * 16 + g;
        lo[f] = *reinterpret_cast<const uint4*>(ws + ring_at(r, p));
        hi[f] = *reinterpret_cast<const uint4*>(ws + ring_at(r + 8, p));
      }
#pragma unroll
      for (int j = 0; j < TT; ++j) {
        if (wt * TT + j < tiles) {
          const uint4 b = *reinterpret_cast<const uint4*>(xs + ring_at((wt * TT + j) * 8 + g, p));
#pragma unroll
          for (int f = 0; f < 2; ++f) {
            mma_16816<T>(acc[f][j], lo[f].x, hi[f].x, lo[f].y, hi[f].y, b.x, b.y);
            mma_16816<T>(acc[f][j], lo[f].z, hi[f].z, lo[f].w, hi[f].w, b.z, b.w);
          }
        }
      }
    }
  }
  cp_async_wait<0>();
  __syncthreads();  // every warp is done with the ring: the partial tile takes its place
  float* tile = reinterpret_cast<float*>(tc_smem);  // [64][STRIDE]: (8t + g) distinct banks
#pragma unroll
  for (int f = 0; f < 2; ++f) {
    const int col = wn * 32 + f * 16 + g;
#pragma unroll
    for (int j = 0; j < TT; ++j) {
      if (wt * TT + j < tiles) {
        const int r = (wt * TT + j) * 8 + 2 * t;
        tile[r * STRIDE + col] = acc[f][j][0];
        tile[(r + 1) * STRIDE + col] = acc[f][j][1];
        tile[r * STRIDE + col + 8] = acc[f][j][2];
        tile[(r + 1) * STRIDE + col + 8] = acc[f][j][3];
      }
    }
  }
  cluster_sum_store<T, GLU>(tile, STRIDE, OUTS, rows, out, n, n0);
#endif
}

// tc_ring_<type>_m<BM> and tc_ring_glu_<type>_m<BM>.
#define INSTANTIATE_TC_RING_BM(T, NAME, BM)                                                                                     \
  extern "C" __global__ void __launch_bounds__(RING_THREADS, 2) tc_ring_##NAME##_m##BM(const T* x, const T* w, T* out,          \
                                                                                        uint32_t rows, uint32_t n, uint32_t k) { \
    tc_ring<T, BM, false>(x, w, out, rows, n, k);                                                                               \
  }                                                                                                                             \
  extern "C" __global__ void __launch_bounds__(RING_THREADS, 2) tc_ring_glu_##NAME##_m##BM(const T* x, const T* w, T* out,      \
                                                                                            uint32_t rows, uint32_t n, uint32_t k) { \
    tc_ring<T, BM, true>(x, w, out, rows, n, k);                                                                                \
  }
#define INSTANTIATE_TC_RING(T, NAME) INSTANTIATE_TC_RING_BM(T, NAME, 64) INSTANTIATE_TC_RING_BM(T, NAME, 128)
INSTANTIATE_TC_RING(__nv_bfloat16, bf16)
INSTANTIATE_TC_RING(__half, f16)
