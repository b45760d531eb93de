// Sampling on the device.
#pragma once
#include "common.cuh"

// One thread block (1024 threads) per row of logits (any storage type: the model's own, so no
// f32 copy of [rows, vocab] is made). Greedy when inv_temp == 0: the first
// index of the maximum. Otherwise the inverse CDF of softmax(logits * inv_temp) at u[row]: each
// thread sums exp over a contiguous chunk, the chunk sums are scanned, and the thread whose
// chunk holds the target walks it.
template <typename T>
__device__ void sample_rows(const T* logits, const float* u, uint32_t* out, uint32_t vocab, float inv_temp) {
  const uint32_t row = blockIdx.x, t = threadIdx.x, n = blockDim.x;
  const T* xr = logits + (size_t)row * vocab;
  auto x = [&](uint32_t i) { return to_f(xr[i]); };
  __shared__ float sval[1024];
  __shared__ uint32_t sidx[1024];
  __shared__ double ssum[1024];
  float best = -INFINITY;
  uint32_t bi = 0xffffffffu;
  const uint32_t chunk = (vocab + n - 1) / n, lo = min(t * chunk, vocab), hi = min(lo + chunk, vocab);
  for (uint32_t i = lo; i < hi; ++i)
    if (x(i) > best) { best = x(i); bi = i; }
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
  for (uint32_t i = lo; i < hi; ++i) local += exp(((double)x(i) - mx) * inv_temp);
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
      c += exp(((double)x(i) - mx) * inv_temp);
      if (target < c) { out[row] = i; return; }
    }
    out[row] = hi - 1;
  }
}

#define INSTANTIATE_SAMPLE(T, NAME)                                                                   \
  extern "C" __global__ void sample_rows_##NAME(const T* logits, const float* u, uint32_t* out,      \
                                                uint32_t vocab, float inv_temp) {                    \
    pdl_enter();                                                                                     \
    sample_rows<T>(logits, u, out, vocab, inv_temp);                                                 \
  }
FOR_FLOAT_TYPES(INSTANTIATE_SAMPLE)
