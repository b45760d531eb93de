// Per-row paged attention (decode rows, short prefills; split-KV merged in the kernel; for
// decode, optionally its input side: FusedInput) and the KV write.
#pragma once
#include "common.cuh"
#include "norm.cuh"

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

// The per-row kernel's optional input side (qkv == nullptr: q is given, normed and rotated, and
// the step's keys and values are in the pools already). Otherwise each block computes its
// GROUP q heads from the fused QKV projection's row [q heads | k heads | v heads] as
// qkv_norm_rope_write does (RMSNorm, RoPE with cos_sin's row, rounded to T), and one block of
// each (row, KV head) writes the row's key (normed, rotated) and value to pool slot
// new_slots[row] (skipped at or past `capacity`) before any block reads keys. Valid only when no
// row reads another row's new key: one query row per sequence, no cascade group (whose shared
// pass reads q before this kernel). It saves a launch and q's round trip through memory a layer.
template <typename T>
struct FusedInput {
  const T* qkv;
  const T* q_w;
  const T* k_w;
  const T* cos_sin;
  const uint32_t* new_slots;
  uint32_t capacity;
  float eps;
};

// Warp w of the block takes jobs w, w + WARPS, ...: jobs 0 .. GROUP - 1 the q heads (into
// q_out), GROUP the key and GROUP + 1 the value (by the writer only).
template <typename T, int GROUP, int PER>
__device__ void fused_input(const FusedInput<T>& in, uint32_t row, uint32_t kvh, uint32_t heads, uint32_t kv_heads,
                            uint32_t head_dim, bool writer, const T* k, const T* v, T* q_out, int warp, int lane) {
  if constexpr (PER >= 2) {  // RoPE pairs element j with j + head_dim / 2 in the same lane
    const T* src = in.qkv + (size_t)row * (heads + 2 * kv_heads) * head_dim;
    const T* cs = in.cos_sin + (size_t)row * head_dim;
    const uint32_t slot = writer ? in.new_slots[row] : in.capacity;
    const size_t at = ((size_t)slot * kv_heads + kvh) * head_dim;
    for (int job = warp; job < GROUP + 2; job += WARPS) {
      if (job < GROUP) {
        norm_rope_head<T, PER>(src + (kvh * GROUP + job) * head_dim, in.q_w, cs, q_out + job * head_dim, head_dim, in.eps, lane);
      } else if (slot < in.capacity) {
        // The pools are const for the key stream; here, before it, this block writes them.
        if (job == GROUP) {
          norm_rope_head<T, PER>(src + (heads + kvh) * head_dim, in.k_w, cs, const_cast<T*>(k) + at, head_dim, in.eps, lane);
        } else {
          const T* vs = src + (heads + kv_heads + kvh) * head_dim;
#pragma unroll
          for (int i = 0; i < PER; ++i) const_cast<T*>(v)[at + lane + 32 * i] = vs[lane + 32 * i];
        }
      }
    }
  }
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
                                uint32_t kv_heads, uint32_t head_dim, float scale, double theta, const FusedInput<T> in) {
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
  // Everything above reads only the step's metadata, which copies from the host write and no
  // kernel does: it runs while the kernel before (the one that writes this step's q and its new
  // keys and values, or its QKV rows) finishes. What follows reads what kernels write.
  pdl_enter();
  uint32_t issued = 0;  // passes issued to the ring so far
  // Fused input: this block's q heads, normed and rotated, in place of q.
  __shared__ __align__(16) T q_fused[GROUP * 32 * PER];
  if (in.qkv != nullptr) {
    // Passes wholly before the row's last key (which this kernel writes) are issued first:
    // their loads are in flight while the block makes its q heads and the new key.
    const uint32_t last = visible - 1;
    for (; issued + 1 < DEPTH && wb + (issued + 1) * KEYS_PER_PASS <= last; ++issued) issue(issued);
    // The block that attends the row's last key writes it (with its value): exactly one per
    // (row, KV head), the split whose share holds that key.
    const bool writer = split == (visible > skip ? (visible - 1 - skip) / share : 0u);
    fused_input<T, GROUP, PER>(in, row, kvh, heads, kv_heads, head_dim, writer, k, v, q_fused, warp, lane);
    __syncthreads();  // q_fused is written, and the new key and value are in the pools for the ring's copies
  }
  for (; issued + 1 < DEPTH; ++issued) issue(issued);
  float qv[GROUP][E], acc[GROUP][E], m[GROUP], l[GROUP];
#pragma unroll
  for (int g = 0; g < GROUP; ++g) {
    const T* qh = in.qkv != nullptr ? q_fused + g * head_dim : q + ((size_t)row * heads + kvh * GROUP + g) * head_dim;
#pragma unroll
    for (int c = 0; c < NC; ++c) load_f<CE>(qh + elem(c, 0), qv[g] + c * CE);
    // Scores are kept in log2 units while keys stream: fast_exp2 is one instruction, expf a
    // sequence of them, twice per key and query head.
#pragma unroll
    for (int i = 0; i < E; ++i) {
      qv[g][i] *= scale * LOG2E;
      acc[g][i] = 0.f;
    }
    m[g] = -INFINITY;
    l[g] = 0.f;
  }
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
      // Four partial sums: a chain of E / 4 dependent multiply-adds instead of E, on the
      // critical path of every pass.
      float part[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
      for (int i = 0; i < E; ++i) part[i % 4] = fmaf(qv[g][i], kf[i], part[i % 4]);
      float dot = (part[0] + part[1]) + (part[2] + part[3]);
      dot += __shfl_xor_sync(0xffffffffu, dot, 1);
      dot += __shfl_xor_sync(0xffffffffu, dot, 2);
      dot += __shfl_xor_sync(0xffffffffu, dot, 4);
      if (valid) {
        const float nm = fmaxf(m[g], dot);
        const float corr = fast_exp2(m[g] - nm), p = fast_exp2(dot - nm);
        l[g] = l[g] * corr + p;
#pragma unroll
        for (int i = 0; i < E; ++i) acc[g][i] = acc[g][i] * corr + p * vf[i];
        m[g] = nm;
      }
    }
  }
  cp_async_wait<0>();
  __syncthreads();  // every warp is done with its ring: the merge below reuses the memory
  // Back from log2 units to the natural ones of every partial merged with these.
#pragma unroll
  for (int g = 0; g < GROUP; ++g) m[g] *= LN2;
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
