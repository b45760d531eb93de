// CUDA implementations of nanohost's ops. Each has a CPU twin in src/*.rs, which is its test
// oracle. Arithmetic is f32 whatever the storage type.
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

// Instantiation helpers: X(T, NAME) for each storage type; X(T, NAME, P) for each head_dim / 32
// the per-head kernels are built for (64, 128, 256).
#define FOR_FLOAT_TYPES(X) X(float, f32) X(__nv_bfloat16, bf16) X(__half, f16)
#define FOR_HEAD_PER(X, T, NAME) X(T, NAME, 2) X(T, NAME, 4) X(T, NAME, 8)

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
// kernel may only read what no kernel writes (weights); every block must call it, on every
// path, before it exits: the next kernel's wait covers this grid only, so it is this grid's wait
// that orders it after the one before. On cards before sm_90 both compile to nothing.
__device__ inline void pdl_enter() {
#if __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
}

// One warp merges the partials of one (row, query head) by log-sum-exp and writes its output:
// the shared pass's chunks [0, chunks) and the splits [max_chunks, parts). Partials are read
// past L1 (__ldcg): other blocks wrote them during this launch.
template <typename T, int PER>
__device__ void merge_row_head(T* out, const float* part_o, const float* part_ml, size_t id, uint32_t parts,
                               uint32_t chunks, uint32_t max_chunks, uint32_t head_dim, int lane) {
  const size_t part = id * parts;
  auto used = [&](uint32_t c) { return c < chunks || c >= max_chunks; };
  float M = -INFINITY;
  for (uint32_t c = 0; c < parts; ++c)
    if (used(c)) M = fmaxf(M, __ldcg(part_ml + 2 * (part + c)));
  float L = 0.f, o[PER];
#pragma unroll
  for (int i = 0; i < PER; ++i) o[i] = 0.f;
  for (uint32_t c = 0; c < parts; ++c) {
    const float mc = __ldcg(part_ml + 2 * (part + c));
    if (!used(c) || mc == -INFINITY) continue;
    const float f = expf(mc - M);
    L += __ldcg(part_ml + 2 * (part + c) + 1) * f;
#pragma unroll
    for (int i = 0; i < PER; ++i) o[i] += __ldcg(part_o + (part + c) * head_dim + lane * PER + i) * f;
  }
#pragma unroll
  for (int i = 0; i < PER; ++i) out[id * head_dim + lane * PER + i] = from_f<T>(o[i] / L);
}

// Per-row attention. One thread block per (query row, KV head, split): the block serves the
// GROUP query heads that share the KV head, so each key and value is read once for all of them
// (GQA). A key is held by LPK = 8 lanes, E = head_dim / 8 elements each (16 for head_dim 128),
// so a warp scores 32 / LPK = 4 keys per pass with 3 shuffles per dot. Each warp takes a
// contiguous quarter of the block's keys and streams it through its own ring of DEPTH passes in
// shared memory with cp.async: up to DEPTH - 1 passes are in flight while one is scored, and
// in-flight loads hold no registers (the register-staged version reached 1.9 TB/s at batch 64,
// bound by memory latency at 17% occupancy). Each lane copies exactly the bytes it later reads,
// so the ring needs no barrier, only the lane's own wait. Slot ids come 32 at a time, one per
// lane, a batch ahead, and reach the issuing lanes by shuffle. Each of a warp's 4 key subgroups
// runs its own online softmax; the subgroups are merged by shuffles, the warps in shared memory.
// GROUP, PER = head_dim / 32 and SHIFTED are template parameters, so every per-lane array is
// indexed by constants and stays in registers.
// The keys a row attends here are its own: the first row_skip[row] entries (a cascade group's
// shared prefix) were attended by cascade_shared, whose chunk partials sit at
// part[(row * heads + head) * parts + c] for c < chunks. With splits == 1 the block merges those
// and writes the output; with more (long rows and few blocks: split-KV) each block covers a
// contiguous share of the row's keys and leaves a partial at chunk max_chunks + split for
// the last of them to finish to merge. Sections of meta: see AttentionBatch in layout.rs.
constexpr int LPK = 8;                  // lanes per key
constexpr int KEYS_PER_PASS = 32 / LPK;  // keys a warp scores at once
constexpr int RING_BYTES_PER_WARP = 10240;

template <typename T, int GROUP, int PER, bool SHIFTED>
__device__ void paged_attention(const T* q, const T* k, const T* v, T* out, const uint32_t* row_list, const uint32_t* row_seq,
                                const uint32_t* row_visible, const uint32_t* row_skip,
                                const uint32_t* seq_start, const uint32_t* all_slots,
                                const uint32_t* all_shifts, float* part_o, float* part_ml,
                                uint32_t* split_done, uint32_t max_chunks, uint32_t splits, uint32_t chunk, uint32_t heads,
                                uint32_t kv_heads, uint32_t head_dim, float scale, double theta) {
  constexpr int E = 4 * PER;                   // head_dim / LPK
  constexpr int BYTES = E * sizeof(T);         // one lane's part of one key (or value)
  constexpr int CB = BYTES < 16 ? BYTES : 16;  // bytes per copy
  constexpr int NC = BYTES / CB;               // copies per lane per key
  constexpr int CE = CB / sizeof(T);           // elements per copy
  constexpr int PASS_BYTES = 2 * 32 * BYTES;   // a warp's keys and values of one pass
  constexpr int DEPTH = RING_BYTES_PER_WARP / PASS_BYTES < 1 ? 1
                        : RING_BYTES_PER_WARP / PASS_BYTES > 8 ? 8 : RING_BYTES_PER_WARP / PASS_BYTES;
  constexpr int RING = WARPS * DEPTH * PASS_BYTES, SACC = WARPS * GROUP * 32 * PER * 4;
  __shared__ __align__(16) unsigned char smem[RING > SACC ? RING : SACC];
  // Rows of tiled prefill (prefill_tiles) are not launched here: with any, the grid runs over
  // row_list; without, over every row.
  const uint32_t row = row_list ? row_list[blockIdx.x] : blockIdx.x, kvh = blockIdx.y, split = blockIdx.z;
  const uint32_t* slots = all_slots + seq_start[row_seq[row]];
  const uint32_t visible = row_visible[row], skip = row_skip[row];
  const uint32_t share = (visible - skip + splits - 1) / splits;
  const uint32_t begin = skip + split * share, end = min(begin + share, visible);
  const uint32_t parts = max_chunks + splits;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  // This lane's key subgroup, and its elements of a head: CE at lk * CE of each LPK * CE
  // stretch, so that the LPK lanes of a key copy whole 32-byte sectors together (lanes holding
  // contiguous E elements would touch each sector twice, from L2, since cp.async.cg skips L1).
  const int sub = lane / LPK, lk = lane % LPK;
  auto elem = [&](int c, int i) { return c * LPK * CE + lk * CE + i; };
  float qv[GROUP][E], acc[GROUP][E], m[GROUP], l[GROUP];
#pragma unroll
  for (int g = 0; g < GROUP; ++g) {
#pragma unroll
    for (int c = 0; c < NC; ++c) load_f<CE>(q + ((size_t)row * heads + kvh * GROUP + g) * head_dim + elem(c, 0), qv[g] + c * CE);
#pragma unroll
    for (int i = 0; i < E; ++i) {
      qv[g][i] *= scale;
      acc[g][i] = 0.f;
    }
    m[g] = -INFINITY;
    l[g] = 0.f;
  }
  // Keys of a shifted span (stored rotated for another position) are rotated by the shift as
  // they are loaded; see rope_shift.rs. cos/sin are recomputed only when the shift changes.
  const uint32_t* shifts = SHIFTED ? all_shifts + seq_start[row_seq[row]] : nullptr;
  int32_t rot_shift = 0;
  float rot_cos[SHIFTED ? E : 1], rot_sin[SHIFTED ? E : 1];
  const size_t kv_row = (size_t)kv_heads * head_dim, head_at = (size_t)kvh * head_dim;
  // This warp's keys: [wb, we), a whole number of passes except at the very end.
  const uint32_t n_keys = end > begin ? end - begin : 0;
  const uint32_t wshare = (n_keys + WARPS * KEYS_PER_PASS - 1) / (WARPS * KEYS_PER_PASS) * KEYS_PER_PASS;
  const uint32_t wb = begin + min(warp * wshare, n_keys), we = begin + min((warp + 1) * wshare, n_keys);
  const uint32_t passes = (we - wb + KEYS_PER_PASS - 1) / KEYS_PER_PASS;
  unsigned char* ring = smem + warp * DEPTH * PASS_BYTES;
  // Slot ids of keys wb + 32 b + lane: batch b in `cur` while its passes are issued, b + 1 in `nxt`.
  uint32_t cur = wb + lane < we ? slots[wb + lane] : 0u;
  uint32_t nxt = wb + 32 + lane < we ? slots[wb + 32 + lane] : 0u;
  constexpr uint32_t PASSES_PER_BATCH = 32 / KEYS_PER_PASS;
  // Copies pass p (if any) into ring entry p % DEPTH and commits a group either way, so that
  // "all but DEPTH - 1 groups done" always means "pass p - DEPTH + 1 has landed".
  auto issue = [&](uint32_t p) {
    if (p < passes) {
      if (p % PASSES_PER_BATCH == 0 && p > 0) {
        cur = nxt;
        const uint32_t j = wb + (p / PASSES_PER_BATCH + 1) * 32 + lane;
        nxt = j < we ? slots[j] : 0u;
      }
      const uint32_t slot = __shfl_sync(0xffffffffu, cur, (p % PASSES_PER_BATCH) * KEYS_PER_PASS + sub);
      if (wb + p * KEYS_PER_PASS + sub < we) {
        const size_t base = (size_t)slot * kv_row + head_at;
        unsigned char* dst = ring + (p % DEPTH) * PASS_BYTES;
#pragma unroll
        for (int c = 0; c < NC; ++c) {
          cp_async<CB>(dst + (c * 32 + lane) * CB, k + base + elem(c, 0));
          cp_async<CB>(dst + 32 * BYTES + (c * 32 + lane) * CB, v + base + elem(c, 0));
        }
      }
    }
    cp_async_commit();
  };
#pragma unroll
  for (int p = 0; p + 1 < DEPTH; ++p) issue(p);
  for (uint32_t p = 0; p < passes; ++p) {
    issue(p + DEPTH - 1);
    cp_async_wait<DEPTH - 1>();
    const uint32_t j = wb + p * KEYS_PER_PASS + sub;
    const bool valid = j < we;  // the same for the 8 lanes of a key
    const unsigned char* src = ring + (p % DEPTH) * PASS_BYTES;
    float kf[E], vf[E];
#pragma unroll
    for (int c = 0; c < NC; ++c) {
      load_f<CE>(reinterpret_cast<const T*>(src + (c * 32 + lane) * CB), kf + c * CE);
      load_f<CE>(reinterpret_cast<const T*>(src + 32 * BYTES + (c * 32 + lane) * CB), vf + c * CE);
    }
    if constexpr (SHIFTED) {
      const int32_t sh = valid ? (int32_t)shifts[j] : 0;
      if (sh != 0 && sh != rot_shift) {
        // Element e pairs with e +- head_dim/2 (see below), at frequency e mod head_dim/2, as
        // the model's tables: f32 frequencies, angle in f64.
#pragma unroll
        for (int i = 0; i < E; ++i) {
          const int f = elem(i / CE, i % CE) % (int)(head_dim / 2);
          const float inv_freq = (float)(1.0 / pow(theta, (double)(2 * f) / head_dim));
          double sn, cs;
          sincos((double)sh * (double)inv_freq, &sn, &cs);
          rot_cos[i] = (float)cs;
          rot_sin[i] = (float)sn;
        }
        rot_shift = sh;
      }
      // With one copy per lane (NC == 1) the partner is lane ^ 4 of the same key subgroup;
      // with more, the same lane's copy NC / 2 further on (or back).
      float rotated[E];
#pragma unroll
      for (int i = 0; i < E; ++i) {
        const int c = i / CE;
        const bool first_half = NC == 1 ? lk < LPK / 2 : c < NC / 2;
        const float partner = NC == 1 ? __shfl_xor_sync(0xffffffffu, kf[i], LPK / 2)
                                      : kf[(c < NC / 2 ? c + NC / 2 : c - NC / 2) * CE + i % CE];
        const float cs = sh ? rot_cos[i] : 1.f, sn = sh ? rot_sin[i] : 0.f;
        rotated[i] = first_half ? kf[i] * cs - partner * sn : kf[i] * cs + partner * sn;
      }
#pragma unroll
      for (int i = 0; i < E; ++i) kf[i] = rotated[i];
    }
#pragma unroll
    for (int g = 0; g < GROUP; ++g) {
      float dot = 0.f;
#pragma unroll
      for (int i = 0; i < E; ++i) dot += qv[g][i] * kf[i];
      dot += __shfl_xor_sync(0xffffffffu, dot, 1);
      dot += __shfl_xor_sync(0xffffffffu, dot, 2);
      dot += __shfl_xor_sync(0xffffffffu, dot, 4);
      if (valid) {
        const float nm = fmaxf(m[g], dot);
        const float corr = expf(m[g] - nm), p = expf(dot - nm);
        l[g] = l[g] * corr + p;
#pragma unroll
        for (int i = 0; i < E; ++i) acc[g][i] = acc[g][i] * corr + p * vf[i];
        m[g] = nm;
      }
    }
  }
  cp_async_wait<0>();
  __syncthreads();  // every warp is done with its ring: the merge below reuses the memory
  // The warp's 4 key subgroups merged by log-sum-exp (lanes l, l^8, l^16, l^24 hold the same
  // elements); a subgroup that saw no key has m = -inf and weighs 0.
#pragma unroll
  for (int g = 0; g < GROUP; ++g) {
    float M = fmaxf(m[g], __shfl_xor_sync(0xffffffffu, m[g], 8));
    M = fmaxf(M, __shfl_xor_sync(0xffffffffu, M, 16));
    const float c = m[g] == -INFINITY ? 0.f : expf(m[g] - M);
    float L = l[g] * c;
    L += __shfl_xor_sync(0xffffffffu, L, 8);
    L += __shfl_xor_sync(0xffffffffu, L, 16);
#pragma unroll
    for (int i = 0; i < E; ++i) {
      float a = acc[g][i] * c;
      a += __shfl_xor_sync(0xffffffffu, a, 8);
      a += __shfl_xor_sync(0xffffffffu, a, 16);
      acc[g][i] = a;
    }
    m[g] = M;
    l[g] = L;
  }
  __shared__ float sm[WARPS][GROUP], sl[WARPS][GROUP];
  auto sacc = reinterpret_cast<float(*)[GROUP][32 * PER]>(smem);
  if (lane < LPK) {
#pragma unroll
    for (int g = 0; g < GROUP; ++g) {
      if (lane == 0) { sm[warp][g] = m[g]; sl[warp][g] = l[g]; }
#pragma unroll
      for (int i = 0; i < E; ++i) sacc[warp][g][elem(i / CE, i % CE)] = acc[g][i];
    }
  }
  __syncthreads();
  const uint32_t chunks = splits == 1 ? (skip + chunk - 1) / chunk : 0;
  for (int g = warp; g < GROUP; g += WARPS) {
    const size_t part = ((size_t)row * heads + kvh * GROUP + g) * parts;
    float M = -INFINITY;
    for (int w = 0; w < WARPS; ++w) M = fmaxf(M, sm[w][g]);
    // The shared pass's chunks, 32 at a time: lane c reads chunk c's (max, sum), so the loads
    // are issued together rather than one after another.
    for (uint32_t base = 0; base < chunks; base += 32) {
      float mc = base + lane < chunks ? part_ml[2 * (part + base + lane)] : -INFINITY;
      for (int off = 16; off > 0; off >>= 1) mc = fmaxf(mc, __shfl_xor_sync(0xffffffffu, mc, off));
      M = fmaxf(M, mc);
    }
    float L = 0.f, o[PER];
#pragma unroll
    for (int i = 0; i < PER; ++i) o[i] = 0.f;
    if (M != -INFINITY) {
      for (int w = 0; w < WARPS; ++w) {
        if (sm[w][g] == -INFINITY) continue;
        const float c = expf(sm[w][g] - M);
        L += sl[w][g] * c;
#pragma unroll
        for (int i = 0; i < PER; ++i) o[i] += sacc[w][g][lane * PER + i] * c;
      }
      for (uint32_t base = 0; base < chunks; base += 32) {
        const uint32_t n = min(32u, chunks - base);
        float f = 0.f, lsum = 0.f;
        if (lane < n) {
          f = expf(part_ml[2 * (part + base + lane)] - M);
          lsum = part_ml[2 * (part + base + lane) + 1] * f;
        }
        for (int off = 16; off > 0; off >>= 1) lsum += __shfl_xor_sync(0xffffffffu, lsum, off);
        L += lsum;
#pragma unroll 4
        for (uint32_t c = 0; c < n; ++c) {
          const float fc = __shfl_sync(0xffffffffu, f, c);
          float x[PER];
          load_f<PER>(part_o + (part + base + c) * head_dim + lane * PER, x);
#pragma unroll
          for (int i = 0; i < PER; ++i) o[i] += x[i] * fc;
        }
      }
    }
    if (splits == 1) {
      T* orow = out + ((size_t)row * heads + kvh * GROUP + g) * head_dim + lane * PER;
#pragma unroll
      for (int i = 0; i < PER; ++i) orow[i] = from_f<T>(o[i] / L);
    } else {
      const size_t at = part + max_chunks + split;
#pragma unroll
      for (int i = 0; i < PER; ++i) part_o[at * head_dim + lane * PER + i] = o[i];
      if (lane == 0) { part_ml[2 * at] = M; part_ml[2 * at + 1] = L; }
    }
  }
  if (splits == 1) return;
  // Split-KV: the last of the row's split blocks to finish merges them all (no merge launch).
  // Each writer fences its partial before the block counts itself done; the counter is left at
  // zero for the next launch (and the next replay of a CUDA graph).
  __shared__ bool last;
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) {
    uint32_t* c = split_done + (size_t)blockIdx.x * kv_heads + kvh;
    last = atomicAdd(c, 1u) == splits - 1;
    if (last) *c = 0u;
  }
  __syncthreads();
  if (!last) return;
  __threadfence();
  const uint32_t shared_chunks = (skip + chunk - 1) / chunk;
  for (int g = warp; g < GROUP; g += WARPS)
    merge_row_head<T, PER>(out, part_o, part_ml, (size_t)row * heads + kvh * GROUP + g, parts, shared_chunks, max_chunks, head_dim, lane);
}

// One thread block per new token: copy its [kv_heads * head_dim] row (rows of src may be
// strided) into its pool slot.
template <typename T>
__device__ void write_kv(T* pool, const T* src, const uint32_t* slots, uint32_t row, uint32_t src_stride, uint32_t capacity) {
  const uint32_t t = blockIdx.x, slot = slots[t];
  if (slot >= capacity) return;  // the host validated slots; never write out of bounds
  for (uint32_t e = threadIdx.x; e < row; e += blockDim.x) pool[(size_t)slot * row + e] = src[(size_t)t * src_stride + e];
}

// ---- Tiled attention: cascade's shared pass, prefill ------------------------------------------
// A block attends a tile of 64 query vectors (rows times the GQA heads of one KV head); each of
// its 4 warps owns 16. Keys and values come through shared memory KEY_TILE at a time, so each is
// read from global memory once per tile instead of once per row. Per key tile a warp computes
// scores S = Q K^T, updates its rows' online softmax, rescales its output rows and adds P V. For
// 16-bit storage both products run on tensor cores (WMMA, f32 accumulation; P is rounded to the
// storage type as in FlashAttention); f32 storage runs the same steps on CUDA cores.
constexpr int CASCADE_WARPS = 4;
constexpr int QV_PER_WARP = 16;
constexpr int QV_TILE = CASCADE_WARPS * QV_PER_WARP;
constexpr int KEY_TILE = 64;
// Shared-memory row strides are padded (16 bytes past a multiple of 128) so that the rows a
// fragment load or a lane pair touches fall in different banks: unpadded, every row of a
// 16x16 fragment started in the same bank and the pass was bound by bank conflicts.
constexpr int S_LD = KEY_TILE + 4;  // scores, f32
constexpr int P_LD = KEY_TILE + 8;  // probabilities, T
__host__ __device__ constexpr int row_ld(int d) { return d + 8; }      // Q, K, V rows, T
__host__ __device__ constexpr int out_ld(int d) { return d + 4; }      // output rows, f32

// S[16][KEY_TILE] = Q[16][D] . K[KEY_TILE][D]^T, f32 on CUDA cores: lane j scores keys j, j+32; the
// head-dim loop starts at a different element per lane so shared-memory reads do not collide.
__device__ inline void warp_scores(const float* Qw, const float* Ks, float* Sw, int D, int lane) {
  const int ld = row_ld(D);
  for (int j = lane; j < KEY_TILE; j += 32)
    for (int i = 0; i < QV_PER_WARP; ++i) {
      float s = 0.f;
      for (int d = 0; d < D; ++d) {
        int dd = d + lane;
        if (dd >= D) dd -= D;
        s += Qw[i * ld + dd] * Ks[j * ld + dd];
      }
      Sw[i * S_LD + j] = s;
    }
}

template <typename T>
__device__ inline void warp_scores(const T* Qw, const T* Ks, float* Sw, int D, int /*lane*/) {
  using namespace nvcuda;
  const int ld = row_ld(D);
  for (int n = 0; n < KEY_TILE / 16; ++n) {
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
    wmma::fill_fragment(acc, 0.f);
    for (int kk = 0; kk < D; kk += 16) {
      wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> a;
      wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major> b;
      wmma::load_matrix_sync(a, Qw + kk, ld);
      wmma::load_matrix_sync(b, Ks + n * 16 * ld + kk, ld);
      wmma::mma_sync(acc, a, b, acc);
    }
    wmma::store_matrix_sync(Sw + n * 16, acc, S_LD, wmma::mem_row_major);
  }
}

// O[16][D] += P[16][KEY_TILE] . V[KEY_TILE][D].
__device__ inline void warp_pv(const float* Pw, const float* Vs, float* Ow, int D, int lane) {
  const int ld = row_ld(D), ol = out_ld(D);
  for (int i = 0; i < QV_PER_WARP; ++i)
    for (int c = lane; c < D; c += 32) {
      float a = Ow[i * ol + c];
      for (int j = 0; j < KEY_TILE; ++j) a += Pw[i * P_LD + j] * Vs[j * ld + c];
      Ow[i * ol + c] = a;
    }
}

template <typename T>
__device__ inline void warp_pv(const T* Pw, const T* Vs, float* Ow, int D, int /*lane*/) {
  using namespace nvcuda;
  const int ld = row_ld(D), ol = out_ld(D);
  for (int n = 0; n < D; n += 16) {
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
    wmma::load_matrix_sync(acc, Ow + n, ol, wmma::mem_row_major);
    for (int kk = 0; kk < KEY_TILE; kk += 16) {
      wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> a;
      wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::row_major> b;
      wmma::load_matrix_sync(a, Pw + kk, P_LD);
      wmma::load_matrix_sync(b, Vs + kk * ld + n, ld);
      wmma::mma_sync(acc, a, b, acc);
    }
    wmma::store_matrix_sync(Ow + n, acc, ol, wmma::mem_row_major);
  }
}

// One block attends QV_TILE query vectors over keys [k0, k1) of `slots` (tensor cores for
// 16-bit storage, CUDA cores for f32): the shared pass of cascade attention and the tiled
// prefill share it. Query vector i (< nq) is qv_at(i); it sees the keys before visible_of(i)
// (causal masking; past the end of a tile's keys for cascade); at the end sink(i, O, m, l)
// receives its unnormalised output row O (f32, shared memory), running max and sum.
// Dynamic shared memory, in bytes (the host computes the same sum): Q [QV_TILE][row_ld], K and
// V [KEY_TILE][row_ld], P [QV_TILE][P_LD] in T; S [QV_TILE][S_LD], O [QV_TILE][out_ld] and the
// per-row rescale factors [QV_TILE] in f32.
template <typename T, typename QvAt, typename VisibleOf, typename Sink>
__device__ void attend_tile(const T* k, const T* v, const uint32_t* slots, uint32_t k0, uint32_t k1, uint32_t nq,
                            uint32_t kvh, uint32_t kv_heads, uint32_t head_dim, float scale, QvAt qv_at,
                            VisibleOf visible_of, Sink sink) {
  const int D = head_dim, tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int ld = row_ld(D), ol = out_ld(D);
  extern __shared__ __align__(128) unsigned char smem[];
  T* Qs = reinterpret_cast<T*>(smem);
  T* Ks = Qs + QV_TILE * ld;
  T* Vs = Ks + KEY_TILE * ld;
  T* Ps = Vs + KEY_TILE * ld;
  float* Ss = reinterpret_cast<float*>(Ps + QV_TILE * P_LD);
  float* Os = Ss + QV_TILE * S_LD;
  float* corr = Os + QV_TILE * ol;
  // 16-byte vectors: rows are multiples of 32 elements, so every row start is aligned.
  constexpr int VEC = 16 / sizeof(T);
  typedef Pack<T, VEC> V16;
  V16 zero;
#pragma unroll
  for (int i = 0; i < VEC; ++i) zero.v[i] = from_f<T>(0.f);
  // D and D / VEC are powers of two: shifts and masks instead of divisions in the loops.
  const int vpr = D / VEC, vshift = __ffs(vpr) - 1, dshift = __ffs(D) - 1;
#pragma unroll 4
  for (int e = tid; e < QV_TILE * vpr; e += blockDim.x) {
    const uint32_t i = e >> vshift, col = (e & (vpr - 1)) * VEC;
    V16 x = zero;
    if (i < nq) x = *reinterpret_cast<const V16*>(qv_at(i) + col);
    *reinterpret_cast<V16*>(Qs + i * ld + col) = x;
  }
  for (int e = tid; e < QV_TILE * D; e += blockDim.x) Os[(e >> dshift) * ol + (e & (D - 1))] = 0.f;
  __shared__ uint32_t tile_slots[KEY_TILE];
  T* Pw = Ps + warp * QV_PER_WARP * P_LD;
  float* Sw = Ss + warp * QV_PER_WARP * S_LD;
  float* Ow = Os + warp * QV_PER_WARP * ol;
  const T* Qw = Qs + warp * QV_PER_WARP * ld;
  // Two lanes per query vector: lanes 2i and 2i+1 hold the state of row i and take alternate
  // columns of the tile (so a lane pair's reads fall in different banks).
  const int mine = lane >> 1, half = lane & 1;
  const uint32_t my_qv = warp * QV_PER_WARP + mine;
  // Past nq nothing is masked: those rows stay finite and are never written.
  const uint32_t visible = my_qv < nq ? visible_of(my_qv) : 0xffffffffu;
  float m = -INFINITY, l = 0.f;
  const size_t kv_row = (size_t)kv_heads * D;
  for (uint32_t kt = k0; kt < k1; kt += KEY_TILE) {
    __syncthreads();  // the previous tile is consumed (and Q, O are initialised)
    const uint32_t nk = min((uint32_t)KEY_TILE, k1 - kt);
    if (tid < KEY_TILE) tile_slots[tid] = tid < (int)nk ? slots[kt + tid] : 0xffffffffu;
    __syncthreads();
#pragma unroll 4
    for (int e = tid; e < KEY_TILE * vpr; e += blockDim.x) {
      const uint32_t j = e >> vshift, col = (e & (vpr - 1)) * VEC;
      V16 kx = zero, vx = zero;
      if (tile_slots[j] != 0xffffffffu) {
        const size_t at = (size_t)tile_slots[j] * kv_row + (size_t)kvh * D + col;
        kx = *reinterpret_cast<const V16*>(k + at);
        vx = *reinterpret_cast<const V16*>(v + at);
      }
      *reinterpret_cast<V16*>(Ks + j * ld + col) = kx;
      *reinterpret_cast<V16*>(Vs + j * ld + col) = vx;
    }
    __syncthreads();
    warp_scores(Qw, Ks, Sw, D, lane);
    __syncwarp();
    float* srow = Sw + mine * S_LD;
    float mx = -INFINITY;
    for (int j = half; j < KEY_TILE; j += 2) {
      const float s = j < (int)nk && kt + j < visible ? srow[j] * scale : -INFINITY;
      srow[j] = s;
      mx = fmaxf(mx, s);
    }
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
    // A row sees at least its first key, so m is finite after its first tile; a later tile
    // masked whole leaves it (p = 0 everywhere).
    const float nm = fmaxf(m, mx);
    const float cr = m == -INFINITY ? 1.f : expf(m - nm);  // O and l are still 0 on the first tile
    float sum = 0.f;
    for (int j = half; j < KEY_TILE; j += 2) {
      const float p = srow[j] == -INFINITY ? 0.f : expf(srow[j] - nm);
      Pw[mine * P_LD + j] = from_f<T>(p);
      sum += p;
    }
    sum += __shfl_xor_sync(0xffffffffu, sum, 1);
    l = l * cr + sum;
    m = nm;
    if (half == 0) corr[warp * QV_PER_WARP + mine] = cr;
    __syncwarp();
    // Rescale the output rows whose maximum moved (after the first tiles, rarely any).
    if (!__all_sync(0xffffffffu, cr == 1.f)) {
      for (int i = 0; i < QV_PER_WARP; ++i) {
        const float f = corr[warp * QV_PER_WARP + i];
        if (f != 1.f)
          for (int col = lane; col < D; col += 32) Ow[i * ol + col] *= f;
      }
    }
    __syncwarp();
    warp_pv(Pw, Vs, Ow, D, lane);
  }
  __syncwarp();
  // Each query vector's (m, l) from its lane pair, then the warp writes its rows out.
  float* ml = Ss + warp * QV_PER_WARP * S_LD;  // the warp's scores are consumed
  if (half == 0) { ml[2 * mine] = m; ml[2 * mine + 1] = l; }
  __syncwarp();
  for (int i = 0; i < QV_PER_WARP; ++i) {
    const uint32_t qv = warp * QV_PER_WARP + i;
    if (qv < nq) sink(qv, Ow + i * ol, ml[2 * i], ml[2 * i + 1], lane);
  }
}

// Cascade attention, shared pass: one block per (work item = (group, chunk of shared entries),
// KV head, tile of QV_TILE query vectors). A group's query vectors are its rows times the GQA
// heads of the KV head; each key tile is read once per query tile instead of once per row. The
// partial (max, sum, unnormalised output) of each query vector and chunk goes to part_ml /
// part_o (stride `parts` per query head), merged by the per-row pass.
template <typename T>
__device__ void cascade_shared(const T* q, const T* k, const T* v, float* part_o, float* part_ml,
                               const uint32_t* seq_start, const uint32_t* all_slots,
                               const uint32_t* group_row_start, const uint32_t* group_seq,
                               const uint32_t* group_len, const uint32_t* items,
                               const uint32_t* group_rows, uint32_t parts, uint32_t chunk,
                               uint32_t heads, uint32_t kv_heads, uint32_t head_dim, uint32_t gqa,
                               float scale) {
  const uint32_t g = items[2 * blockIdx.x], c = items[2 * blockIdx.x + 1];
  const uint32_t kvh = blockIdx.y, q0 = blockIdx.z * QV_TILE;
  const uint32_t r0 = group_row_start[g], nq_all = (group_row_start[g + 1] - r0) * gqa;
  if (q0 >= nq_all) return;
  const uint32_t nq = min((uint32_t)QV_TILE, nq_all - q0);
  const uint32_t k0 = c * chunk, k1 = min(k0 + chunk, group_len[g]);
  auto head_of = [&](uint32_t i) { return (size_t)group_rows[r0 + (q0 + i) / gqa] * heads + kvh * gqa + (q0 + i) % gqa; };
  attend_tile<T>(
      k, v, all_slots + seq_start[group_seq[g]], k0, k1, nq, kvh, kv_heads, head_dim, scale,
      [&](uint32_t i) { return q + head_of(i) * head_dim; }, [](uint32_t) { return 0xffffffffu; },
      [&](uint32_t i, const float* o, float m, float l, int lane) {
        const size_t part = head_of(i) * parts + c;
        for (uint32_t col = lane; col < head_dim; col += 32) part_o[part * head_dim + col] = o[col];
        if (lane == 0) { part_ml[2 * part] = m; part_ml[2 * part + 1] = l; }
      });
}

// Prefill attention, tiled: one block per (tiled sequence, tile of QV_TILE / gqa of its rows,
// KV head). tiled[3 t..3 t + 3) = (sequence, first row, rows) of sequences the host chose
// (enough rows, no shifted span, no cascade group; see layout.rs): each key is read once per
// tile of rows instead of once per row, and scores run on tensor cores. Row r sees the first
// row_visible[r] keys (causal), so a tile attends keys up to its last row's.
template <typename T>
__device__ void prefill_tiles(const T* q, const T* k, const T* v, T* out, const uint32_t* row_visible,
                              const uint32_t* seq_start, const uint32_t* all_slots, const uint32_t* tiled,
                              uint32_t heads, uint32_t kv_heads, uint32_t head_dim, uint32_t gqa, float scale) {
  const uint32_t seq = tiled[3 * blockIdx.x], first = tiled[3 * blockIdx.x + 1], n = tiled[3 * blockIdx.x + 2];
  const uint32_t tile_rows = QV_TILE / gqa, r0 = first + blockIdx.y * tile_rows, kvh = blockIdx.z;
  if (r0 >= first + n) return;
  const uint32_t rows = min(tile_rows, first + n - r0), nq = rows * gqa;
  auto head_of = [&](uint32_t i) { return ((size_t)r0 + i / gqa) * heads + kvh * gqa + i % gqa; };
  attend_tile<T>(
      k, v, all_slots + seq_start[seq], 0, row_visible[r0 + rows - 1], nq, kvh, kv_heads, head_dim, scale,
      [&](uint32_t i) { return q + head_of(i) * head_dim; }, [&](uint32_t i) { return row_visible[r0 + i / gqa]; },
      [&](uint32_t i, const float* o, float, float l, int lane) {
        T* dst = out + head_of(i) * head_dim;
        const float inv = 1.f / l;
        for (uint32_t col = lane; col < head_dim; col += 32) dst[col] = from_f<T>(o[col] * inv);
      });
}

// Bounded to 4 blocks per SM (128 registers; GQA 2 at head_dim 128 needs 127 and no spill),
// which kv_splits in cuda.rs counts on (ATTENTION_BLOCKS_PER_SM).
#define INSTANTIATE_ATTENTION_S(T, NAME, G, P, SH, SFX)                                            \
  extern "C" __global__ void __launch_bounds__(128, 4) paged_attention_##NAME##_g##G##_p##P##SFX(  \
      const T* q, const T* k, const T* v, T* out, const uint32_t* row_list, const uint32_t* row_seq,  \
      const uint32_t* row_visible, const uint32_t* row_skip, const uint32_t* seq_start,           \
      const uint32_t* slots, const uint32_t* shifts, float* part_o, float* part_ml,               \
      uint32_t* split_done, uint32_t max_chunks, uint32_t splits, uint32_t chunk, uint32_t heads, \
      uint32_t kv_heads, uint32_t head_dim, float scale, double theta) {                          \
    pdl_enter();                                                                                            \
    paged_attention<T, G, P, SH>(q, k, v, out, row_list, row_seq, row_visible, row_skip, seq_start, slots,  \
                                 shifts, part_o, part_ml, split_done, max_chunks, splits, chunk,  \
                                 heads, kv_heads, head_dim, scale, theta);                        \
  }
#define INSTANTIATE_ATTENTION(T, NAME, G, P)         \
  INSTANTIATE_ATTENTION_S(T, NAME, G, P, false, )    \
  INSTANTIATE_ATTENTION_S(T, NAME, G, P, true, _shifted)
#define INSTANTIATE_ATTENTION_G(T, NAME, G)                                                      \
  INSTANTIATE_ATTENTION(T, NAME, G, 1)                                                           \
  INSTANTIATE_ATTENTION(T, NAME, G, 2)                                                           \
  INSTANTIATE_ATTENTION(T, NAME, G, 4)                                                           \
  INSTANTIATE_ATTENTION(T, NAME, G, 8)

#define INSTANTIATE(T, NAME)                                                                          \
  INSTANTIATE_ATTENTION_G(T, NAME, 1)                                                                 \
  INSTANTIATE_ATTENTION_G(T, NAME, 2)                                                                 \
  INSTANTIATE_ATTENTION_G(T, NAME, 4)                                                                 \
  INSTANTIATE_ATTENTION_G(T, NAME, 8)                                                                 \
  extern "C" __global__ void write_kv_##NAME(T* pool, const T* src, const uint32_t* slots,           \
                                             uint32_t row, uint32_t src_stride, uint32_t capacity) { \
    pdl_enter();                                                                                      \
    write_kv<T>(pool, src, slots, row, src_stride, capacity);                                         \
  }                                                                                                   \
  extern "C" __global__ void prefill_tiles_##NAME(                                                    \
      const T* q, const T* k, const T* v, T* out, const uint32_t* row_visible,                        \
      const uint32_t* seq_start, const uint32_t* slots, const uint32_t* tiled, uint32_t heads,        \
      uint32_t kv_heads, uint32_t head_dim, uint32_t gqa, float scale) {                              \
    pdl_enter();                                                                                      \
    prefill_tiles<T>(q, k, v, out, row_visible, seq_start, slots, tiled, heads, kv_heads, head_dim,   \
                     gqa, scale);                                                                     \
  }                                                                                                   \
  extern "C" __global__ void cascade_shared_##NAME(                                                   \
      const T* q, const T* k, const T* v, float* part_o, float* part_ml, const uint32_t* seq_start,   \
      const uint32_t* slots, const uint32_t* group_row_start, const uint32_t* group_seq,              \
      const uint32_t* group_len, const uint32_t* items, const uint32_t* group_rows,                   \
      uint32_t parts, uint32_t chunk, uint32_t heads, uint32_t kv_heads, uint32_t head_dim,           \
      uint32_t gqa, float scale) {                                                                    \
    pdl_enter();                                                                                      \
    cascade_shared<T>(q, k, v, part_o, part_ml, seq_start, slots, group_row_start, group_seq,         \
                      group_len, items, group_rows, parts, chunk, heads, kv_heads, head_dim,          \
                      gqa, scale);                                                                    \
  }

FOR_FLOAT_TYPES(INSTANTIATE)

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

// x + delta (rounded to T, as a separate add would store it), then RMSNorm of that sum times w:
// out rows [0, tokens) hold the sums, rows [tokens, 2 * tokens) the normed rows. One block per
// row; the norm reads the rounded sums so the result equals add-then-norm.
template <typename T>
__device__ void add_rms_norm(const T* x, const T* delta, const T* w, T* out, uint32_t tokens, uint32_t hidden, float eps) {
  const uint32_t t = blockIdx.x;
  const T* xr = x + (size_t)t * hidden;
  const T* dr = delta + (size_t)t * hidden;
  T* sum = out + (size_t)t * hidden;
  T* normed = out + ((size_t)tokens + t) * hidden;
  float ss = 0.f;
  for (uint32_t c = threadIdx.x; c < hidden; c += blockDim.x) {
    const T s = from_f<T>(to_f(xr[c]) + to_f(dr[c]));
    sum[c] = s;
    const float f = to_f(s);
    ss += f * f;
  }
  __shared__ float partial[32];
  for (int off = 16; off > 0; off >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, off);
  if ((threadIdx.x & 31) == 0) partial[threadIdx.x >> 5] = ss;
  __syncthreads();
  if (threadIdx.x < 32) {
    float p = threadIdx.x < blockDim.x / 32 ? partial[threadIdx.x] : 0.f;
    for (int off = 16; off > 0; off >>= 1) p += __shfl_xor_sync(0xffffffffu, p, off);
    if (threadIdx.x == 0) partial[0] = p;
  }
  __syncthreads();
  const float r = rsqrtf(partial[0] / hidden + eps);
  // Each thread reads back the sums it wrote itself: no barrier needed for them.
  for (uint32_t c = threadIdx.x; c < hidden; c += blockDim.x) normed[c] = from_f<T>(to_f(sum[c]) * r * to_f(w[c]));
}

#define INSTANTIATE_ADD_NORM(T, NAME)                                                                  \
  extern "C" __global__ void add_rms_norm_##NAME(const T* x, const T* delta, const T* w, T* out,     \
                                                 uint32_t tokens, uint32_t hidden, float eps) {       \
    pdl_enter();                                                                                     \
    add_rms_norm<T>(x, delta, w, out, tokens, hidden, eps);                                          \
  }
FOR_FLOAT_TYPES(INSTANTIATE_ADD_NORM)

#define INSTANTIATE_NORM_ROPE_P(T, NAME, P)                                                    \
  extern "C" __global__ void rms_norm_rope_##NAME##_p##P(                                      \
      const T* x, const T* w, const T* cs, T* out, uint32_t tokens, uint32_t heads,             \
      uint32_t head_dim, uint32_t x_row_stride, float eps) {                                    \
    pdl_enter();                                                                                \
    rms_norm_rope<T, P>(x, w, cs, out, tokens, heads, head_dim, x_row_stride, eps);             \
  }
#define INSTANTIATE_NORM_ROPE(T, NAME) FOR_HEAD_PER(INSTANTIATE_NORM_ROPE_P, T, NAME)
FOR_FLOAT_TYPES(INSTANTIATE_NORM_ROPE)

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
    pdl_enter();                                                                                     \
    silu_mul<T>(x, out, tokens, width);                                                              \
  }
FOR_FLOAT_TYPES(INSTANTIATE_SILU_MUL)

// out[r][n] = sum_k x[r][k] w[n][k] for rows <= MR (decode at small batch): the weight is
// streamed once with 16-byte loads (CH per lane in flight, kept packed until used, so they cost
// half the registers), each chunk of x (from cache) serving all rows. S warps share a column,
// each taking a contiguous 1/S of k (split-K), reduced in shared memory: a projection with few
// columns (1,024 for Qwen3-0.6B's o_proj and down_proj) would otherwise run one warp per column
// on a GPU that wants several thousand warps to keep enough loads in flight.
template <typename T, int MR, int S>
__device__ void small_matmul(const T* x, const T* w, T* out, uint32_t rows, uint32_t n, uint32_t k) {
  constexpr int V = 16 / sizeof(T);  // elements per 16-byte load
  constexpr int CH = 8;               // loads per lane in flight
  constexpr int BLOCK_WARPS = 8, COLS = BLOCK_WARPS / S;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, part = warp % S;
  const uint32_t col = blockIdx.x * COLS + warp / S;
  const uint32_t kc = (k / V + S - 1) / S * V;  // this warp's share of k, whole 16-byte loads
  const uint32_t k0 = part * kc, k1 = min(k, k0 + kc);
  float acc[MR];
#pragma unroll
  for (int r = 0; r < MR; ++r) acc[r] = 0.f;
  const T* wr = w + (size_t)col * k;
  Pack<T, V> wp[CH];
  auto load_weights = [&](uint32_t c0) {
#pragma unroll
    for (int u = 0; u < CH; ++u) {
      const uint32_t c = c0 + u * 32 * V;
      if (c < k1) wp[u] = *reinterpret_cast<const Pack<T, V>*>(wr + c);
    }
  };
  // The first CH loads of the weight (all of it for k up to 32 * V * CH) depend on no kernel:
  // they are issued before waiting for the one before, and land while it finishes.
  const uint32_t first = k0 + lane * V;
  if (col < n) load_weights(first);
  pdl_enter();
  if (col < n) {
    for (uint32_t c0 = first; c0 < k1; c0 += 32 * V * CH) {
      if (c0 != first) load_weights(c0);
#pragma unroll
      for (int u = 0; u < CH; ++u) {
        const uint32_t c = c0 + u * 32 * V;
        if (c >= k1) break;
#pragma unroll
        for (int r = 0; r < MR; ++r) {
          if (r >= (int)rows) break;
          float xf[V];
          load_f<V>(x + (size_t)r * k + c, xf);
#pragma unroll
          for (int i = 0; i < V; ++i) acc[r] += xf[i] * to_f(wp[u].v[i]);
        }
      }
    }
  }
#pragma unroll
  for (int r = 0; r < MR; ++r)
    for (int off = 16; off > 0; off >>= 1) acc[r] += __shfl_xor_sync(0xffffffffu, acc[r], off);
  if constexpr (S == 1) {
    if (lane == 0 && col < n)
#pragma unroll
      for (int r = 0; r < MR; ++r)
        if (r < (int)rows) out[(size_t)r * n + col] = from_f<T>(acc[r]);
  } else {
    __shared__ float partial[BLOCK_WARPS][MR];
    if (lane == 0)
#pragma unroll
      for (int r = 0; r < MR; ++r) partial[warp][r] = acc[r];
    __syncthreads();
    if (part == 0 && lane < MR && lane < (int)rows && col < n) {
      float a = 0.f;
#pragma unroll
      for (int p = 0; p < S; ++p) a += partial[warp + p][lane];
      out[(size_t)lane * n + col] = from_f<T>(a);
    }
  }
}

#define INSTANTIATE_SMALL_MATMUL_M(T, NAME, M, S)                                                     \
  extern "C" __global__ void small_matmul_##NAME##_m##M##_s##S(const T* x, const T* w, T* out,       \
                                                               uint32_t rows, uint32_t n, uint32_t k) { \
    small_matmul<T, M, S>(x, w, out, rows, n, k);                                                    \
  }
#define INSTANTIATE_SMALL_MATMUL_S(T, NAME, S) \
  INSTANTIATE_SMALL_MATMUL_M(T, NAME, 1, S)    \
  INSTANTIATE_SMALL_MATMUL_M(T, NAME, 2, S)    \
  INSTANTIATE_SMALL_MATMUL_M(T, NAME, 4, S)    \
  INSTANTIATE_SMALL_MATMUL_M(T, NAME, 8, S)
#define INSTANTIATE_SMALL_MATMUL(T, NAME) \
  INSTANTIATE_SMALL_MATMUL_S(T, NAME, 1)  \
  INSTANTIATE_SMALL_MATMUL_S(T, NAME, 2)  \
  INSTANTIATE_SMALL_MATMUL_S(T, NAME, 4)  \
  INSTANTIATE_SMALL_MATMUL_S(T, NAME, 8)
FOR_FLOAT_TYPES(INSTANTIATE_SMALL_MATMUL)
