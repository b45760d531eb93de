// L2 prefetch of weights: a decode step at small batch is a chain of short kernels, and between
// the matmuls (norms, attention, activations) the memory system idles. Asking L2 for the next
// matmul's weight while the chain works keeps DRAM busy and lets that matmul read from L2.
#pragma once
#include "common.cuh"

// Asks L2 for share `part` of `parts` equal shares of [p, p + bytes): a hint that nothing waits
// for (cp.async.bulk.prefetch, sm_90 and later; nothing on older cards). p and bytes are
// multiples of 16. Weights are never written by a kernel, so this may run before pdl_enter.
__device__ inline void l2_prefetch_share(const void* p, uint64_t bytes, uint64_t part, uint64_t parts) {
#if __CUDA_ARCH__ >= 900
  const uint64_t share = (bytes / 16 + parts - 1) / parts * 16;
  const uint64_t start = part * share, end = min(bytes, start + share);
  for (uint64_t at = start; at < end; at += 32768) {
    const uint32_t len = (uint32_t)min((uint64_t)32768, end - at);
    asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;\n" ::"l"((const char*)p + at), "r"(len) : "memory");
  }
#endif
}

// The prefetch alone, for weights read by kernels that are not nanohost's (cuBLAS): launched a
// kernel or two ahead of the matmul, it costs one short node in the chain.
extern "C" __global__ void l2_prefetch(const char* p, uint64_t bytes) {
  l2_prefetch_share(p, bytes, (uint64_t)blockIdx.x * blockDim.x + threadIdx.x, (uint64_t)gridDim.x * blockDim.x);
  pdl_enter();
}
