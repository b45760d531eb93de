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
// Measured in a chain (results/gpu-h200-2026-11-28-tc-matmul/), its first version (weights
// staged in shared memory) was faster than both at 4 rows (qkv_proj 4.0 us, cuBLAS 4.9, few-row
// 7.1) and mostly at 16, slower than cuBLAS at 64 (8.5 vs 5.0).
//
// A cluster of C blocks computes 64 output columns; block c of it takes the c-th slice of k.
// Each of a block's 4 warps loads its 16 weight rows' slice into registers (issued before
// pdl_enter: weights depend on no kernel, so they stream while the kernel before finishes),
// then the block copies its slice of x into shared memory, and each warp multiplies its rows by
// every row of x with mma.m16n8k16 (the weight as A, x as B, f32 accumulators). The C partial
// tiles are summed through distributed shared memory, each block summing and writing 1/C of the
// outputs, in a fixed order (deterministic). Nothing is left in global memory between blocks.
//
// k is permuted inside each 32-wide chunk (a sum does not care about order, as long as A and B
// agree): lane (g, t) takes k = 8t .. 8t+7 of its rows as one 16-byte read, the first two
// pairs for the chunk's first mma and the last two for its second. x's shared-memory rows are
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

// Grid (C, n / 64) in clusters of (C, 1, 1), 128 threads, max(8 NT (k / C + 32) elements,
// 8 NT 68 floats) of dynamic shared memory. n % 64 == 0, k % (64 C) == 0, k / C <= 32 CH,
// rows <= 8 NT (tc_matmul.rs checks).
// GLU: the weight is [2n, k], gate rows then up rows, and out = silu(gate) * up, [rows, n]; a
// cluster takes 32 outputs (its 64 weight rows: their 32 gate rows, then their 32 up rows), so
// the grid is (C, n / 32) and n % 32 == 0.
template <typename T, int NT, int CH, bool GLU>
__device__ void tc_matmul(const T* x, const T* w, T* out, uint32_t rows, uint32_t n, uint32_t k) {
#if __CUDA_ARCH__ >= 900
  namespace cg = cooperative_groups;
  cg::cluster_group cluster = cg::this_cluster();
  constexpr int V = 16 / sizeof(T);
  const uint32_t parts = cluster.num_blocks(), part = cluster.block_rank();
  const uint32_t ks = k / parts, k0 = part * ks, stride = ks + TC_PAD, vecs = ks / V, chunks = ks / 32;
  constexpr uint32_t OUTS = GLU ? TC_COLS / 2 : TC_COLS;  // outputs per cluster
  const uint32_t n0 = blockIdx.y * OUTS;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  extern __shared__ __align__(16) unsigned char tc_smem[];
  T* xs = reinterpret_cast<T*>(tc_smem);  // [8 NT][stride]

  // The warp's 16 weight rows (under GLU, 16 gate or 16 up rows) go straight into registers:
  // lane (g, t) holds rows g and g + 8 at k = 8t .. 8t+7 of each 32-wide chunk, the A fragments
  // of every mma it will issue. Issued before pdl_enter and waited on only at the first mma, so
  // the whole weight streams while the kernel before finishes; shared memory holds only x (a
  // first version staged the weight there too: 3 blocks a SM at 64 rows, and its load and
  // multiply did not overlap; results/engine-speed-versions.md).
  const uint32_t wrow = warp * 16 + g;  // of the cluster's 64 weight rows
  const uint32_t grow = GLU ? (wrow < OUTS ? n0 + wrow : n + n0 + wrow - OUTS) : n0 + wrow;
  const T* wp = w + (size_t)grow * k + k0 + 8 * t;
  uint4 lo[CH], hi[CH];
#pragma unroll
  for (int c = 0; c < CH; ++c) {
    if (c < chunks) {
      lo[c] = __ldg(reinterpret_cast<const uint4*>(wp + c * 32));
      hi[c] = __ldg(reinterpret_cast<const uint4*>(wp + (size_t)8 * k + c * 32));
    }
  }
  pdl_enter();
  // x's slice, 16-byte copies, thread i taking pieces i, i + 128, ... in row order; its (row,
  // piece) steps by additions, not a division per copy.
  for (uint32_t r = threadIdx.x / vecs, c = threadIdx.x % vecs; r < rows;) {
    cp_async<16>(xs + r * stride + c * V, x + (size_t)r * k + k0 + c * V);
    r += blockDim.x / vecs, c += blockDim.x % vecs;
    if (c >= vecs) c -= vecs, ++r;
  }
  cp_async_commit();
  cp_async_wait<0>();
  __syncthreads();

  const int tiles = (rows + 7) >> 3;  // tiles of 8 rows of x; a last partial one reads rows no
                                      // one wrote, which only reach outputs never written
  float acc[NT][4];
#pragma unroll
  for (int j = 0; j < NT; ++j) acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.f;
  const T* xb = xs + g * stride + 8 * t;
#pragma unroll
  for (int c = 0; c < CH; ++c) {
    if (c < chunks) {
#pragma unroll
      for (int j = 0; j < NT; ++j) {
        if (j < tiles) {
          const uint4 b = *reinterpret_cast<const uint4*>(xb + j * 8 * stride + c * 32);
          mma_16816<T>(acc[j], lo[c].x, hi[c].x, lo[c].y, hi[c].y, b.x, b.y);
          mma_16816<T>(acc[j], lo[c].z, hi[c].z, lo[c].w, hi[c].w, b.z, b.w);
        }
      }
    }
  }
  __syncthreads();  // every warp is done with xs: the partial tile takes its place
  float* tile = reinterpret_cast<float*>(tc_smem);  // [8 NT][TC_PART_STRIDE]
  const int col = warp * 16 + g;
#pragma unroll
  for (int j = 0; j < NT; ++j) {
    if (j < tiles) {
      const int r = j * 8 + 2 * t;
      tile[r * TC_PART_STRIDE + col] = acc[j][0];
      tile[(r + 1) * TC_PART_STRIDE + col] = acc[j][1];
      tile[r * TC_PART_STRIDE + col + 8] = acc[j][2];
      tile[(r + 1) * TC_PART_STRIDE + col + 8] = acc[j][3];
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

// tc_matmul_<type>_t<tiles>_c<chunks> and tc_matmul_glu_..., for slices of k of up to 256
// (chunks 8: 64 registers of weight a lane) and up to 512 (16: 128 registers).
#define INSTANTIATE_TC_MATMUL_NT_CH(T, NAME, NT, CH)                                                                         \
  extern "C" __global__ void __launch_bounds__(128) tc_matmul_##NAME##_t##NT##_c##CH(const T* x, const T* w, T* out,         \
                                                                                      uint32_t rows, uint32_t n, uint32_t k) { \
    tc_matmul<T, NT, CH, false>(x, w, out, rows, n, k);                                                                      \
  }                                                                                                                          \
  extern "C" __global__ void __launch_bounds__(128) tc_matmul_glu_##NAME##_t##NT##_c##CH(const T* x, const T* w, T* out,     \
                                                                                          uint32_t rows, uint32_t n, uint32_t k) { \
    tc_matmul<T, NT, CH, true>(x, w, out, rows, n, k);                                                                       \
  }
#define INSTANTIATE_TC_MATMUL_NT(T, NAME, NT) \
  INSTANTIATE_TC_MATMUL_NT_CH(T, NAME, NT, 8) \
  INSTANTIATE_TC_MATMUL_NT_CH(T, NAME, NT, 16)
#define INSTANTIATE_TC_MATMUL(T, NAME) \
  INSTANTIATE_TC_MATMUL_NT(T, NAME, 1) \
  INSTANTIATE_TC_MATMUL_NT(T, NAME, 2) \
  INSTANTIATE_TC_MATMUL_NT(T, NAME, 4) \
  INSTANTIATE_TC_MATMUL_NT(T, NAME, 8)
INSTANTIATE_TC_MATMUL(__nv_bfloat16, bf16)
INSTANTIATE_TC_MATMUL(__half, f16)
