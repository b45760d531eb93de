// CUDA implementations of nanohost's ops. Each has a CPU twin in src/*.rs, which is its test
// oracle. Arithmetic is f32 whatever the storage type.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

__device__ inline float to_f(float x) { return x; }
__device__ inline float to_f(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ inline float to_f(__half x) { return __half2float(x); }
template <typename T> __device__ inline T from_f(float x);
template <> __device__ inline float from_f<float>(float x) { return x; }
template <> __device__ inline __nv_bfloat16 from_f<__nv_bfloat16>(float x) { return __float2bfloat16(x); }
template <> __device__ inline __half from_f<__half>(float x) { return __float2half(x); }

constexpr int WARPS = 4;
constexpr int MAX_PER_LANE = 8;  // head_dim up to 256, a multiple of 32

// One thread block per (query row, KV head): the block serves the GROUP query heads that share
// the KV head, so each key and value is read once for all of them (GQA). Each warp runs an
// online softmax over every WARPS-th visible key (a key's head_dim values are read by the 32
// lanes together, coalesced); the warps' partial (max, sum, acc) are merged at the end.
// meta: see AttentionBatch in layout.rs.
template <typename T, int GROUP>
__device__ void paged_attention(const T* q, const T* k, const T* v, T* out, const uint32_t* meta,
                                uint32_t rows, uint32_t num_seqs, uint32_t heads, uint32_t kv_heads,
                                uint32_t head_dim, float scale) {
  const uint32_t row = blockIdx.x, kvh = blockIdx.y;
  const uint32_t* row_seq = meta;
  const uint32_t* row_visible = meta + rows;
  const uint32_t* seq_start = meta + 2 * rows;
  const uint32_t* all_slots = seq_start + num_seqs + 1;
  const uint32_t* slots = all_slots + seq_start[row_seq[row]];
  const uint32_t visible = row_visible[row];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int per = head_dim / 32;
  float qv[GROUP][MAX_PER_LANE], acc[GROUP][MAX_PER_LANE], m[GROUP], l[GROUP];
#pragma unroll
  for (int g = 0; g < GROUP; ++g) {
    const T* qrow = q + ((size_t)row * heads + kvh * GROUP + g) * head_dim;
#pragma unroll
    for (int i = 0; i < MAX_PER_LANE; ++i) {
      qv[g][i] = i < per ? to_f(qrow[lane + 32 * i]) * scale : 0.f;
      acc[g][i] = 0.f;
    }
    m[g] = -INFINITY;
    l[g] = 0.f;
  }
  const size_t kv_row = (size_t)kv_heads * head_dim;
  for (uint32_t j = warp; j < visible; j += WARPS) {
    const size_t base = (size_t)slots[j] * kv_row + (size_t)kvh * head_dim;
    float kf[MAX_PER_LANE], vf[MAX_PER_LANE];
#pragma unroll
    for (int i = 0; i < MAX_PER_LANE; ++i) {
      kf[i] = i < per ? to_f(k[base + lane + 32 * i]) : 0.f;
      vf[i] = i < per ? to_f(v[base + lane + 32 * i]) : 0.f;
    }
#pragma unroll
    for (int g = 0; g < GROUP; ++g) {
      float dot = 0.f;
#pragma unroll
      for (int i = 0; i < MAX_PER_LANE; ++i) dot += qv[g][i] * kf[i];
      for (int off = 16; off > 0; off >>= 1) dot += __shfl_xor_sync(0xffffffffu, dot, off);
      const float nm = fmaxf(m[g], dot);
      const float corr = expf(m[g] - nm), p = expf(dot - nm);
      l[g] = l[g] * corr + p;
#pragma unroll
      for (int i = 0; i < MAX_PER_LANE; ++i) acc[g][i] = acc[g][i] * corr + p * vf[i];
      m[g] = nm;
    }
  }
  __shared__ float sm[WARPS][GROUP], sl[WARPS][GROUP];
  __shared__ float sacc[WARPS][GROUP][32 * MAX_PER_LANE];
#pragma unroll
  for (int g = 0; g < GROUP; ++g) {
    if (lane == 0) { sm[warp][g] = m[g]; sl[warp][g] = l[g]; }
    for (int i = 0; i < per; ++i) sacc[warp][g][lane + 32 * i] = acc[g][i];
  }
  __syncthreads();
  for (int g = warp; g < GROUP; g += WARPS) {
    float M = -INFINITY;
    for (int w = 0; w < WARPS; ++w) M = fmaxf(M, sm[w][g]);
    float L = 0.f, o[MAX_PER_LANE];
    for (int i = 0; i < per; ++i) o[i] = 0.f;
    for (int w = 0; w < WARPS; ++w) {
      if (sm[w][g] == -INFINITY) continue;
      const float c = expf(sm[w][g] - M);
      L += sl[w][g] * c;
      for (int i = 0; i < per; ++i) o[i] += sacc[w][g][lane + 32 * i] * c;
    }
    T* orow = out + ((size_t)row * heads + kvh * GROUP + g) * head_dim;
    for (int i = 0; i < per; ++i) orow[lane + 32 * i] = from_f<T>(o[i] / L);
  }
}

// One thread block per new token: copy its [kv_heads * head_dim] row (rows of src may be
// strided) into its pool slot.
template <typename T>
__device__ void write_kv(T* pool, const T* src, const uint32_t* slots, uint32_t row, uint32_t src_stride, uint32_t capacity) {
  const uint32_t t = blockIdx.x, slot = slots[t];
  if (slot >= capacity) return;  // the host validated slots; never write out of bounds
  for (uint32_t e = threadIdx.x; e < row; e += blockDim.x) pool[(size_t)slot * row + e] = src[(size_t)t * src_stride + e];
}

#define INSTANTIATE_ATTENTION(T, NAME, G)                                                              \
  extern "C" __global__ void paged_attention_##NAME##_g##G(const T* q, const T* k, const T* v, T* out, \
                                                           const uint32_t* meta, uint32_t rows,       \
                                                           uint32_t num_seqs, uint32_t heads,         \
                                                           uint32_t kv_heads, uint32_t head_dim,      \
                                                           float scale) {                             \
    paged_attention<T, G>(q, k, v, out, meta, rows, num_seqs, heads, kv_heads, head_dim, scale);     \
  }

#define INSTANTIATE(T, NAME)                                                                          \
  INSTANTIATE_ATTENTION(T, NAME, 1)                                                                   \
  INSTANTIATE_ATTENTION(T, NAME, 2)                                                                   \
  INSTANTIATE_ATTENTION(T, NAME, 4)                                                                   \
  INSTANTIATE_ATTENTION(T, NAME, 8)                                                                   \
  extern "C" __global__ void write_kv_##NAME(T* pool, const T* src, const uint32_t* slots,           \
                                             uint32_t row, uint32_t src_stride, uint32_t capacity) { \
    write_kv<T>(pool, src, slots, row, src_stride, capacity);                                         \
  }

INSTANTIATE(float, f32)
INSTANTIATE(__nv_bfloat16, bf16)
INSTANTIATE(__half, f16)

// One thread block (1024 threads) per row of f32 logits. Greedy when inv_temp == 0: the first
// index of the maximum. Otherwise the inverse CDF of softmax(logits * inv_temp) at u[row]: each
// thread sums exp over a contiguous chunk, the chunk sums are scanned, and the thread whose
// chunk holds the target walks it.
extern "C" __global__ void sample_rows(const float* logits, const float* u, uint32_t* out, uint32_t vocab,
                                       float inv_temp) {
  const uint32_t row = blockIdx.x, t = threadIdx.x, n = blockDim.x;
  const float* x = logits + (size_t)row * vocab;
  __shared__ float sval[1024];
  __shared__ uint32_t sidx[1024];
  __shared__ double ssum[1024];
  float best = -INFINITY;
  uint32_t bi = 0xffffffffu;
  const uint32_t chunk = (vocab + n - 1) / n, lo = min(t * chunk, vocab), hi = min(lo + chunk, vocab);
  for (uint32_t i = lo; i < hi; ++i)
    if (x[i] > best) { best = x[i]; bi = i; }
  sval[t] = best; sidx[t] = bi;
  __syncthreads();
  for (uint32_t s = n / 2; s > 0; s >>= 1) {
    if (t < s) {
      const bool take = sval[t + s] > sval[t] || (sval[t + s] == sval[t] && sidx[t + s] < sidx[t]);
      if (take) { sval[t] = sval[t + s]; sidx[t] = sidx[t + s]; }
    }
    __syncthreads();
  }
  __shared__ float smax;
  __shared__ uint32_t sarg;
  __shared__ double stotal;
  if (t == 0) { smax = sval[0]; sarg = sidx[0]; }
  __syncthreads();
  if (inv_temp == 0.f) {
    if (t == 0) out[row] = sarg;
    return;
  }
  const float mx = smax;
  double local = 0.0;
  for (uint32_t i = lo; i < hi; ++i) local += exp(((double)x[i] - mx) * inv_temp);
  ssum[t] = local;
  __syncthreads();
  if (t == 0) {  // exclusive scan; 1024 additions are cheap next to the exp pass
    double acc = 0.0;
    for (uint32_t i = 0; i < n; ++i) { const double s = ssum[i]; ssum[i] = acc; acc += s; }
    stotal = acc;
    out[row] = sarg;  // fallback if rounding leaves the target past the end
  }
  __syncthreads();
  const double target = (double)u[row] * stotal, start = ssum[t];
  if (local > 0.0 && target >= start && target < start + local) {
    double c = start;
    for (uint32_t i = lo; i < hi; ++i) {
      c += exp(((double)x[i] - mx) * inv_temp);
      if (target < c) { out[row] = i; return; }
    }
    out[row] = hi - 1;
  }
}

// Per-head RMSNorm then RoPE (halves rotated), fused. One warp per (token, head); each lane
// holds head_dim / 32 values. x rows may be strided (a slice of a fused QKV projection).
template <typename T>
__device__ void rms_norm_rope(const T* x, const T* w, const T* cs, T* out, uint32_t tokens, uint32_t heads,
                              uint32_t head_dim, uint32_t x_row_stride, float eps) {
  const uint32_t t = blockIdx.x, h = blockIdx.y * (blockDim.x / 32) + (threadIdx.x >> 5);
  const int lane = threadIdx.x & 31;
  if (t >= tokens || h >= heads) return;
  const T* src = x + (size_t)t * x_row_stride + (size_t)h * head_dim;
  const T* cos = cs + (size_t)t * head_dim;
  const T* sin = cos + head_dim / 2;
  const int per = head_dim / 32;
  float v[MAX_PER_LANE];
  float ss = 0.f;
  for (int i = 0; i < per; ++i) { v[i] = to_f(src[lane + 32 * i]); ss += v[i] * v[i]; }
  for (int off = 16; off > 0; off >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, off);
  const float r = rsqrtf(ss / head_dim + eps);
  for (int i = 0; i < per; ++i) v[i] *= r * to_f(w[lane + 32 * i]);
  // Element j pairs with j + half; with half a multiple of 32 the partner sits in the same lane,
  // per / 2 slots further on.
  const int hp = per / 2;
  T* dst = out + ((size_t)t * heads + h) * head_dim;
  for (int i = 0; i < hp; ++i) {
    const int j = lane + 32 * i;
    const float c = to_f(cos[j]), s = to_f(sin[j]);
    const float a = v[i], b = v[i + hp];
    dst[j] = from_f<T>(a * c - b * s);
    dst[j + head_dim / 2] = from_f<T>(a * s + b * c);
  }
}

#define INSTANTIATE_NORM_ROPE(T, NAME)                                                                  \
  extern "C" __global__ void rms_norm_rope_##NAME(const T* x, const T* w, const T* cs, T* out,          \
                                                  uint32_t tokens, uint32_t heads, uint32_t head_dim,  \
                                                  uint32_t x_row_stride, float eps) {                   \
    rms_norm_rope<T>(x, w, cs, out, tokens, heads, head_dim, x_row_stride, eps);                      \
  }
INSTANTIATE_NORM_ROPE(float, f32)
INSTANTIATE_NORM_ROPE(__nv_bfloat16, bf16)
INSTANTIATE_NORM_ROPE(__half, f16)

// silu(gate) * up over [tokens, 2 * width] rows (gate columns, then up columns).
template <typename T>
__device__ void silu_mul(const T* x, T* out, uint32_t tokens, uint32_t width) {
  const size_t n = (size_t)tokens * width;
  for (size_t e = (size_t)blockIdx.x * blockDim.x + threadIdx.x; e < n; e += (size_t)gridDim.x * blockDim.x) {
    const size_t t = e / width, c = e % width;
    const float g = to_f(x[t * 2 * width + c]), u = to_f(x[t * 2 * width + width + c]);
    out[e] = from_f<T>(g / (1.f + expf(-g)) * u);
  }
}

#define INSTANTIATE_SILU_MUL(T, NAME)                                                                  \
  extern "C" __global__ void silu_mul_##NAME(const T* x, T* out, uint32_t tokens, uint32_t width) {   \
    silu_mul<T>(x, out, tokens, width);                                                              \
  }
INSTANTIATE_SILU_MUL(float, f32)
INSTANTIATE_SILU_MUL(__nv_bfloat16, bf16)
INSTANTIATE_SILU_MUL(__half, f16)
