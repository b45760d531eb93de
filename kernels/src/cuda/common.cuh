// Shared by every kernel file: storage-type conversions, vector loads, cp.async, programmatic
// dependent launch, and the instantiation helpers.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <mma.h>
#include <stdint.h>

__device__ inline float to_f(float x) { return x; }
__device__ inline float to_f(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ inline float to_f(__half x) { return __half2float(x); }
template <typename T> __device__ inline T from_f(float x);
template <> __device__ inline float from_f<float>(float x) { return x; }
template <> __device__ inline __nv_bfloat16 from_f<__nv_bfloat16>(float x) { return __float2bfloat16(x); }
template <> __device__ inline __half from_f<__half>(float x) { return __float2half(x); }

constexpr int WARPS = 4;

// The SwiGLU gate, silu(g) * u, in f32: silu_mul and the matmuls that end in it.
__device__ inline float silu_times(float g, float u) { return g / (1.f + expf(-g)) * u; }

// Instantiation helpers: X(T, NAME) for each storage type; X(T, NAME, P) for each head_dim / 32
// the per-head kernels are built for (64, 128, 256).
#define FOR_FLOAT_TYPES(X) X(float, f32) X(__nv_bfloat16, bf16) X(__half, f16)
#define FOR_HEAD_PER(X, T, NAME) X(T, NAME, 2) X(T, NAME, 4) X(T, NAME, 8)

// exp(x) = exp2(x * LOG2E), and a log2-unit value times LN2 is back in natural units.
constexpr float LOG2E = 1.4426950408889634f, LN2 = 0.6931471805599453f;
// 2^x: one MUFU.EX2 (relative error about 2^-22; results below 2^-126 flush to 0, which a sum of
// softmax weights, the largest of them 1, never misses). ex2(-inf) = 0.
__device__ inline float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

template <typename T, int N>
struct alignas(sizeof(T) * N) Pack {
  T v[N];
};

// out[0..PER) = p[0..PER) as f32 in one vector load (p is aligned to it: rows are multiples of
// 32 elements). PER is a compile-time constant so that `out` stays in registers.
template <int PER, typename T>
__device__ inline void load_f(const T* p, float* out) {
  const Pack<T, PER> x = *reinterpret_cast<const Pack<T, PER>*>(p);
#pragma unroll
  for (int i = 0; i < PER; ++i) out[i] = to_f(x.v[i]);
}

// cp.async: global -> shared copies that hold no register while in flight, so a warp can keep
// many keys' worth of loads outstanding (sm_80 and later; older cards copy synchronously).
// "memory" keeps the compiler from moving them across the shared-memory reads of a ring slot.
template <int BYTES>
__device__ inline void cp_async(void* dst, const void* src) {
#if __CUDA_ARCH__ >= 800
  const uint32_t s = (uint32_t)__cvta_generic_to_shared(dst);
  if constexpr (BYTES == 16) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(s), "l"(src) : "memory");
  } else {
    asm volatile("cp.async.ca.shared.global [%0], [%1], %2;\n" ::"r"(s), "l"(src), "n"(BYTES) : "memory");
  }
#else
  *reinterpret_cast<Pack<unsigned char, BYTES>*>(dst) = *reinterpret_cast<const Pack<unsigned char, BYTES>*>(src);
#endif
}
__device__ inline void cp_async_commit() {
#if __CUDA_ARCH__ >= 800
  asm volatile("cp.async.commit_group;\n" ::: "memory");
#endif
}
// Waits until at most N of this thread's committed groups are still in flight.
template <int N>
__device__ inline void cp_async_wait() {
#if __CUDA_ARCH__ >= 800
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
#endif
}

// Programmatic dependent launch (cuda/launch.rs): every kernel here may be launched while the
// kernel before it in the stream still runs. pdl_enter waits until that kernel has finished and
// its writes are visible, then lets the next kernel launch: the next one's blocks are placed
// while this one works, and load what does not depend on it. Triggering after the wait keeps
// that lookahead at one kernel (triggering first would let a chain of small kernels launch far
// ahead and park waiting blocks on the SMs; not measured against this). Before pdl_enter a
// kernel may only read what no kernel writes: weights, and a step's metadata (slot ids, row
// lengths), which only copies from the host write; every block must call it, on every
// path, before it exits: the next kernel's wait covers this grid only, so it is this grid's wait
// that orders it after the one before. On cards before sm_90 both compile to nothing.
__device__ inline void pdl_enter() {
#if __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
}
