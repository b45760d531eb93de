// A decode step's inputs into a CUDA graph's fixed buffer, in one kernel (stage.rs says why).
#pragma once
#include "common.cuh"

constexpr int STAGE_PER = 8;  // elements a thread copies

// dst[0, len) = image[0, len), the first n_tokens taken from `tokens` instead (the sampled
// tokens lead the buffer); `back` (if any) gets the tokens too. `image` and `back` are
// page-locked host memory mapped into the device's address space: the image is read over the
// bus, and only before pdl_enter, since the host wrote it before the launch and no kernel
// does. Grid: ceil(len / (256 STAGE_PER)) blocks of 256.
extern "C" __global__ void stage_step(uint32_t* dst, const uint32_t* image, uint32_t len, const uint32_t* tokens, uint32_t n_tokens,
                                      uint32_t* back) {
  const uint32_t i0 = blockIdx.x * blockDim.x + threadIdx.x, stride = gridDim.x * blockDim.x;
  uint32_t v[STAGE_PER];
#pragma unroll
  for (int j = 0; j < STAGE_PER; ++j) {
    const uint32_t i = i0 + j * stride;
    v[j] = i < len && i >= n_tokens ? image[i] : 0u;
  }
  pdl_enter();  // the tokens are the kernel before's output
#pragma unroll
  for (int j = 0; j < STAGE_PER; ++j) {
    const uint32_t i = i0 + j * stride;
    if (i < len) dst[i] = i < n_tokens ? tokens[i] : v[j];
  }
  if (back != nullptr)
    for (uint32_t i = i0; i < n_tokens; i += stride) back[i] = tokens[i];
}
