// RMSNorm with RoPE (and the fused QKV write), residual add with RMSNorm, SwiGLU's gate.
#pragma once
#include "common.cuh"

// Per-head RMSNorm then RoPE (halves rotated) of one head by one warp: each lane holds
// PER = head_dim / 32 values (a template parameter, so they stay in registers).
template <typename T, int PER>
__device__ inline void norm_rope_head(const T* src, const T* w, const T* cos, T* dst, uint32_t head_dim, float eps, int lane) {
  const T* sin = cos + head_dim / 2;
  float v[PER];
  float ss = 0.f;
#pragma unroll
  for (int i = 0; i < PER; ++i) { v[i] = to_f(src[lane + 32 * i]); ss += v[i] * v[i]; }
  for (int off = 16; off > 0; off >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, off);
  const float r = rsqrtf(ss / head_dim + eps);
#pragma unroll
  for (int i = 0; i < PER; ++i) v[i] *= r * to_f(w[lane + 32 * i]);
  // Element j pairs with j + half; with half a multiple of 32 the partner sits in the same lane,
  // PER / 2 slots further on.
  constexpr int hp = PER / 2;
#pragma unroll
  for (int i = 0; i < hp; ++i) {
    const int j = lane + 32 * i;
    const float c = to_f(cos[j]), s = to_f(sin[j]);
    const float a = v[i], b = v[i + hp];
    dst[j] = from_f<T>(a * c - b * s);
    dst[j + head_dim / 2] = from_f<T>(a * s + b * c);
  }
}

// One warp per (token, head). x rows may be strided (a slice of a fused QKV projection).
template <typename T, int PER>
__device__ void rms_norm_rope(const T* x, const T* w, const T* cs, T* out, uint32_t tokens, uint32_t heads,
                              uint32_t head_dim, uint32_t x_row_stride, float eps) {
  const uint32_t t = blockIdx.x, h = blockIdx.y * (blockDim.x / 32) + (threadIdx.x >> 5);
  const int lane = threadIdx.x & 31;
  if (t >= tokens || h >= heads) return;
  norm_rope_head<T, PER>(x + (size_t)t * x_row_stride + (size_t)h * head_dim, w, cs + (size_t)t * head_dim,
                         out + ((size_t)t * heads + h) * head_dim, head_dim, eps, lane);
}

// The attention block's input side in one launch: one warp per (token, head) of a fused QKV row
// [q heads | k heads | v heads]: q heads are normed and rotated into q_out, k heads normed,
// rotated and written to their pool slot, v heads copied to theirs (slots at or beyond
// `capacity` are skipped, as in write_kv).
template <typename T, int PER>
__device__ void qkv_norm_rope_write(const T* qkv, const T* q_w, const T* k_w, const T* cs, T* q_out, T* k_pool,
                                    T* v_pool, const uint32_t* slots, uint32_t tokens, uint32_t heads,
                                    uint32_t kv_heads, uint32_t head_dim, uint32_t capacity, float eps) {
  const uint32_t t = blockIdx.x, h = blockIdx.y * (blockDim.x / 32) + (threadIdx.x >> 5);
  const int lane = threadIdx.x & 31;
  if (t >= tokens || h >= heads + 2 * kv_heads) return;
  const T* src = qkv + ((size_t)t * (heads + 2 * kv_heads) + h) * head_dim;
  const T* cos = cs + (size_t)t * head_dim;
  if (h < heads) {
    norm_rope_head<T, PER>(src, q_w, cos, q_out + ((size_t)t * heads + h) * head_dim, head_dim, eps, lane);
    return;
  }
  const uint32_t slot = slots[t];
  if (slot >= capacity) return;
  const uint32_t kvh = h - heads;
  if (kvh < kv_heads) {
    norm_rope_head<T, PER>(src, k_w, cos, k_pool + ((size_t)slot * kv_heads + kvh) * head_dim, head_dim, eps, lane);
  } else {
    T* dst = v_pool + ((size_t)slot * kv_heads + kvh - kv_heads) * head_dim;
#pragma unroll
    for (int i = 0; i < PER; ++i) dst[lane + 32 * i] = src[lane + 32 * i];
  }
}

#define INSTANTIATE_QKV_P(T, NAME, P)                                                                      \
  extern "C" __global__ void qkv_norm_rope_write_##NAME##_p##P(                                            \
      const T* qkv, const T* q_w, const T* k_w, const T* cs, T* q_out, T* k_pool, T* v_pool,               \
      const uint32_t* slots, uint32_t tokens, uint32_t heads, uint32_t kv_heads, uint32_t head_dim,         \
      uint32_t capacity, float eps) {                                                                      \
    pdl_enter();                                                                                           \
    qkv_norm_rope_write<T, P>(qkv, q_w, k_w, cs, q_out, k_pool, v_pool, slots, tokens, heads, kv_heads,    \
                              head_dim, capacity, eps);                                                    \
  }
#define INSTANTIATE_QKV(T, NAME) FOR_HEAD_PER(INSTANTIATE_QKV_P, T, NAME)
FOR_FLOAT_TYPES(INSTANTIATE_QKV)

// One row of add_rms_norm and embed_rms_norm_rope, by one block: `load(col)` gives the row's V
// values from column col (called after the wait), which are written to x_out and, as the row's
// RMSNorm times w, to h_out. Each thread takes two 16-byte vectors of the row (blockDim.x =
// hidden / (2 V) rounded up to a warp, so Qwen3-0.6B's 1,024 take 64 threads); the norm weight
// is loaded before the wait, the values stay in registers, one barrier.
template <typename T, typename Load>
__device__ inline void norm_row(const T* w, T* x_out, T* h_out, uint32_t hidden, float eps, Load&& load) {
  constexpr int V = 16 / sizeof(T);
  using P = Pack<T, V>;
  const uint32_t cols[2] = {threadIdx.x * V, (threadIdx.x + blockDim.x) * V};
  P wv[2];
#pragma unroll
  for (int j = 0; j < 2; ++j)
    if (cols[j] < hidden) wv[j] = *reinterpret_cast<const P*>(w + cols[j]);
  pdl_enter();
  float v[2][V];
  float ss = 0.f;
#pragma unroll
  for (int j = 0; j < 2; ++j) {
    if (cols[j] >= hidden) continue;
    const P xv = load(cols[j]);
#pragma unroll
    for (int e = 0; e < V; ++e) {
      v[j][e] = to_f(xv.v[e]);
      ss += v[j][e] * v[j][e];
    }
    *reinterpret_cast<P*>(x_out + cols[j]) = xv;
  }
  __shared__ float partial[32];
  for (int off = 16; off > 0; off >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, off);
  const int lane = threadIdx.x & 31, warps = blockDim.x >> 5;
  if (lane == 0) partial[threadIdx.x >> 5] = ss;
  __syncthreads();
  ss = lane < warps ? partial[lane] : 0.f;
  for (int off = 16; off > 0; off >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, off);
  const float r = rsqrtf(ss / hidden + eps);
#pragma unroll
  for (int j = 0; j < 2; ++j) {
    if (cols[j] >= hidden) continue;
    P nv;
#pragma unroll
    for (int e = 0; e < V; ++e) nv.v[e] = from_f<T>(v[j][e] * r * to_f(wv[j].v[e]));
    *reinterpret_cast<P*>(h_out + cols[j]) = nv;
  }
}

// x + delta (rounded to T, as a separate add would store it), then RMSNorm of that sum times w:
// out rows [0, tokens) hold the sums, rows [tokens, 2 * tokens) the normed rows. One block per
// row (norm_row); the norm reads the rounded sums, so the result equals add-then-norm. On an
// H200 the one-element-per-thread version cost 2.4 us a launch in a replayed chain at batch 1,
// against 0.84 for an empty kernel (results/gpu-h200-2026-11-28-chain/).
template <typename T>
__device__ void add_rms_norm(const T* x, const T* delta, const T* w, T* out, uint32_t tokens, uint32_t hidden, float eps) {
  using P = Pack<T, 16 / sizeof(T)>;
  const size_t row = (size_t)blockIdx.x * hidden;
  norm_row<T>(w, out + row, out + (size_t)tokens * hidden + row, hidden, eps, [&](uint32_t c) {
    const P xv = *reinterpret_cast<const P*>(x + row + c), dv = *reinterpret_cast<const P*>(delta + row + c);
    P sv;
#pragma unroll
    for (int e = 0; e < 16 / (int)sizeof(T); ++e) sv.v[e] = from_f<T>(to_f(xv.v[e]) + to_f(dv.v[e]));
    return sv;
  });
}

// A step's first kernel: out rows [0, tokens) are embed[ids[t]], rows [tokens, 2 tokens) their
// RMSNorm times w (the first layer's input norm), and after those 2 tokens rows of hidden,
// [tokens, head_dim] rows of the RoPE table at positions[t] (ids_pos: the tokens' ids, then
// their positions). Blocks and threads as add_rms_norm; the ids and positions are read after the
// wait (the kernel before, the step's staging, writes them). An id or position out of range
// (the host never sends one) reads as a row of zeros rather than past the table.
template <typename T>
__device__ void embed_rms_norm_rope(const T* embed, const uint32_t* ids_pos, const T* w, const T* table, T* out, uint32_t tokens,
                                    uint32_t hidden, uint32_t vocab, uint32_t head_dim, uint32_t positions, float eps) {
  using P = Pack<T, 16 / sizeof(T)>;
  const uint32_t t = blockIdx.x;
  const size_t row = (size_t)t * hidden;
  norm_row<T>(w, out + row, out + (size_t)tokens * hidden + row, hidden, eps, [&](uint32_t c) {
    const uint32_t id = ids_pos[t];
    P xv;
    if (id < vocab) {
      xv = *reinterpret_cast<const P*>(embed + (size_t)id * hidden + c);
    } else {
#pragma unroll
      for (int e = 0; e < 16 / (int)sizeof(T); ++e) xv.v[e] = from_f<T>(0.f);
    }
    return xv;
  });
  const uint32_t pos = ids_pos[tokens + t];
  T* rope = out + 2 * (size_t)tokens * hidden + (size_t)t * head_dim;
  for (uint32_t c = threadIdx.x; c < head_dim; c += blockDim.x) rope[c] = pos < positions ? table[(size_t)pos * head_dim + c] : from_f<T>(0.f);
}

#define INSTANTIATE_ADD_NORM(T, NAME)                                                                  \
  extern "C" __global__ void add_rms_norm_##NAME(const T* x, const T* delta, const T* w, T* out,     \
                                                 uint32_t tokens, uint32_t hidden, float eps) {       \
    add_rms_norm<T>(x, delta, w, out, tokens, hidden, eps);                                          \
  }
FOR_FLOAT_TYPES(INSTANTIATE_ADD_NORM)

#define INSTANTIATE_EMBED_NORM(T, NAME)                                                                           \
  extern "C" __global__ void embed_rms_norm_rope_##NAME(const T* embed, const uint32_t* ids_pos, const T* w,     \
                                                        const T* table, T* out, uint32_t tokens, uint32_t hidden, \
                                                        uint32_t vocab, uint32_t head_dim, uint32_t positions,    \
                                                        float eps) {                                              \
    embed_rms_norm_rope<T>(embed, ids_pos, w, table, out, tokens, hidden, vocab, head_dim, positions, eps);       \
  }
FOR_FLOAT_TYPES(INSTANTIATE_EMBED_NORM)

#define INSTANTIATE_NORM_ROPE_P(T, NAME, P)                                                    \
  extern "C" __global__ void rms_norm_rope_##NAME##_p##P(                                      \
      const T* x, const T* w, const T* cs, T* out, uint32_t tokens, uint32_t heads,             \
      uint32_t head_dim, uint32_t x_row_stride, float eps) {                                    \
    pdl_enter();                                                                                \
    rms_norm_rope<T, P>(x, w, cs, out, tokens, heads, head_dim, x_row_stride, eps);             \
  }
#define INSTANTIATE_NORM_ROPE(T, NAME) FOR_HEAD_PER(INSTANTIATE_NORM_ROPE_P, T, NAME)
FOR_FLOAT_TYPES(INSTANTIATE_NORM_ROPE)

// silu(gate) * up over [tokens, 2 * width] rows (gate columns, then up columns). With `vec`
// (width a multiple of V = 16 / sizeof(T), rows on 16 bytes) each thread makes V outputs from one
// 16-byte load of each half, else one: at batch 64 the one-output version launched 768 blocks
// of 2-byte loads, 1.86 us a launch in a replayed step on an H200
// (results/gpu-h200-2026-11-29-sampling/). tokens * width < 2^32 (the host checks).
template <typename T>
__device__ void silu_mul(const T* x, T* out, uint32_t tokens, uint32_t width, bool vec) {
  constexpr uint32_t V = 16 / sizeof(T);
  using P = Pack<T, V>;
  const uint32_t per = vec ? V : 1, groups = width / per, n = tokens * groups;
  for (uint32_t e = blockIdx.x * blockDim.x + threadIdx.x; e < n; e += gridDim.x * blockDim.x) {
    const uint32_t t = e / groups, c = e % groups * per;
    const T* g = x + (size_t)t * 2 * width + c;
    T* o = out + (size_t)t * width + c;
    if (vec) {
      const P gv = *reinterpret_cast<const P*>(g), uv = *reinterpret_cast<const P*>(g + width);
      P ov;
#pragma unroll
      for (uint32_t j = 0; j < V; ++j) ov.v[j] = from_f<T>(silu_times(to_f(gv.v[j]), to_f(uv.v[j])));
      *reinterpret_cast<P*>(o) = ov;
    } else {
      *o = from_f<T>(silu_times(to_f(g[0]), to_f(g[width])));
    }
  }
}

#define INSTANTIATE_SILU_MUL(T, NAME)                                                                            \
  extern "C" __global__ void silu_mul_##NAME(const T* x, T* out, uint32_t tokens, uint32_t width, uint32_t vec) { \
    pdl_enter();                                                                                               \
    silu_mul<T>(x, out, tokens, width, vec != 0);                                                              \
  }
FOR_FLOAT_TYPES(INSTANTIATE_SILU_MUL)
