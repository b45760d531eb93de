// CUDA implementations of nanohost's ops. Each has a CPU twin in src/*.rs, which is its test
// oracle. Arithmetic is f32 whatever the storage type.
// nvcc builds this one translation unit into the PTX module that cuda.rs loads; the kernels
// live in the headers below, one family each.
#include "common.cuh"
#include "paged_attention.cuh"
#include "tiled_attention.cuh"
#include "sample.cuh"
#include "norm.cuh"
#include "small_matmul.cuh"
#include "tc_matmul.cuh"
#include "stage.cuh"
