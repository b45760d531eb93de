// Tiled attention on tensor cores (cascade's shared pass, prefill), and the instantiation of
// every attention kernel.
#pragma once
#include "paged_attention.cuh"

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

// The rotation by `shift` positions at each of the D / 2 frequencies, as the per-row kernel and
// the model's tables compute it: f32 frequencies, angle in f64.
__device__ inline void rope_table(int32_t shift, double theta, int D, float* cs, float* sn, int tid) {
  for (int f = tid; f < D / 2; f += blockDim.x) {
    const float inv_freq = (float)(1.0 / pow(theta, (double)(2 * f) / D));
    double s, c;
    sincos((double)shift * (double)inv_freq, &s, &c);
    cs[f] = (float)c;
    sn[f] = (float)s;
  }
}

// Rotates each key of the tile by its shift (NeoX pairs: element f with f + D/2), in place in
// shared memory, in f32 and rounded back to T. Keys of the cached shift use the table; a key of
// another shift (a tile that straddles two chunks) computes its own.
template <typename T>
__device__ inline void rotate_tile(T* Ks, const int32_t* tile_shift, int32_t cached, const float* cs, const float* sn,
                                   double theta, int D, int ld, int tid) {
  const int half = D / 2;
  for (int e = tid; e < KEY_TILE * half; e += blockDim.x) {
    const int j = e / half, f = e - j * half;
    const int32_t sh = tile_shift[j];
    if (sh == 0) continue;
    float c, s;
    if (sh == cached) {
      c = cs[f];
      s = sn[f];
    } else {
      const float inv_freq = (float)(1.0 / pow(theta, (double)(2 * f) / D));
      double sd, cd;
      sincos((double)sh * (double)inv_freq, &sd, &cd);
      c = (float)cd;
      s = (float)sd;
    }
    const float a = to_f(Ks[j * ld + f]), b = to_f(Ks[j * ld + f + half]);
    Ks[j * ld + f] = from_f<T>(a * c - b * s);
    Ks[j * ld + f + half] = from_f<T>(b * c + a * s);
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
// `shifts` (parallel to `slots`, or null): key i was stored rotated for another position, and is
// rotated by shifts[i] positions as it lands in shared memory (see rotate_tile).
template <typename T, typename QvAt, typename VisibleOf, typename Sink>
__device__ void attend_tile(const T* k, const T* v, const uint32_t* slots, const uint32_t* shifts, double theta,
                            uint32_t k0, uint32_t k1, uint32_t nq, uint32_t kvh, uint32_t kv_heads,
                            uint32_t head_dim, float scale, QvAt qv_at, VisibleOf visible_of, Sink sink) {
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
  __shared__ int32_t tile_shift[KEY_TILE];
  // cos and sin of the rotation by `cached_shift` positions, one pair per frequency.
  __shared__ float rot_cs[128], rot_sn[128];
  __shared__ int32_t cached_shift;
  if (tid == 0) cached_shift = 0;
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
    if (tid < KEY_TILE) {
      tile_slots[tid] = tid < (int)nk ? slots[kt + tid] : 0xffffffffu;
      if (shifts) tile_shift[tid] = tid < (int)nk ? (int32_t)shifts[kt + tid] : 0;
    }
    __syncthreads();
    // The tile's first shift, if new, gets its cos/sin table (a chunk's keys share one shift,
    // so a table serves many tiles).
    if (shifts && tile_shift[0] != 0 && tile_shift[0] != cached_shift) {
      rope_table(tile_shift[0], theta, D, rot_cs, rot_sn, tid);
      __syncthreads();
      if (tid == 0) cached_shift = tile_shift[0];
    }
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
    if (shifts) {
      rotate_tile(Ks, tile_shift, cached_shift, rot_cs, rot_sn, theta, D, ld, tid);
      __syncthreads();
    }
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
      k, v, all_slots + seq_start[group_seq[g]], nullptr, 0.0, k0, k1, nq, kvh, kv_heads, head_dim, scale,
      [&](uint32_t i) { return q + head_of(i) * head_dim; }, [](uint32_t) { return 0xffffffffu; },
      [&](uint32_t i, const float* o, float m, float l, int lane) {
        const size_t part = head_of(i) * parts + c;
        for (uint32_t col = lane; col < head_dim; col += 32) part_o[part * head_dim + col] = o[col];
        if (lane == 0) { part_ml[2 * part] = m; part_ml[2 * part + 1] = l; }
      });
}

// Prefill attention, tiled: one block per (tiled sequence, tile of QV_TILE / gqa of its rows,
// KV head). tiled[3 t..3 t + 3) = (sequence, first row, rows) of sequences the host chose
// (enough rows, no cascade group; see layout.rs): each key is read once per tile of rows
// instead of once per row, and scores run on tensor cores. Row r sees the first
// row_visible[r] keys (causal), so a tile attends keys up to its last row's. Keys of shifted
// spans (reused chunks; `all_shifts` non-null) are re-rotated in shared memory.
template <typename T>
__device__ void prefill_tiles(const T* q, const T* k, const T* v, T* out, const uint32_t* row_visible,
                              const uint32_t* seq_start, const uint32_t* all_slots, const uint32_t* all_shifts,
                              const uint32_t* tiled, uint32_t heads, uint32_t kv_heads, uint32_t head_dim,
                              uint32_t gqa, float scale, double theta) {
  const uint32_t seq = tiled[3 * blockIdx.x], first = tiled[3 * blockIdx.x + 1], n = tiled[3 * blockIdx.x + 2];
  const uint32_t tile_rows = QV_TILE / gqa, r0 = first + blockIdx.y * tile_rows, kvh = blockIdx.z;
  if (r0 >= first + n) return;
  const uint32_t rows = min(tile_rows, first + n - r0), nq = rows * gqa;
  auto head_of = [&](uint32_t i) { return ((size_t)r0 + i / gqa) * heads + kvh * gqa + i % gqa; };
  attend_tile<T>(
      k, v, all_slots + seq_start[seq], all_shifts ? all_shifts + seq_start[seq] : nullptr, theta, 0,
      row_visible[r0 + rows - 1], nq, kvh, kv_heads, head_dim, scale,
      [&](uint32_t i) { return q + head_of(i) * head_dim; }, [&](uint32_t i) { return row_visible[r0 + i / gqa]; },
      [&](uint32_t i, const float* o, float, float l, int lane) {
        T* dst = out + head_of(i) * head_dim;
        const float inv = 1.f / l;
        for (uint32_t col = lane; col < head_dim; col += 32) dst[col] = from_f<T>(o[col] * inv);
      });
}

// Bounded to 4 blocks per SM (128 registers; GQA 2 at head_dim 128 needs 127 and no spill),
// which kv_splits in cuda/attention.rs counts on (ATTENTION_BLOCKS_PER_SM).
#define INSTANTIATE_ATTENTION_S(T, NAME, G, P, SH, SFX)                                            \
  extern "C" __global__ void __launch_bounds__(128, 4) paged_attention_##NAME##_g##G##_p##P##SFX(  \
      const T* q, const T* k, const T* v, T* out, const uint32_t* row_list, const uint32_t* row_seq,  \
      const uint32_t* row_visible, const uint32_t* row_skip, const uint32_t* seq_start,           \
      const uint32_t* slots, const uint32_t* shifts, float* part_o, float* part_ml,               \
      uint32_t* split_done, uint32_t max_chunks, uint32_t splits, uint32_t chunk, uint32_t heads, \
      uint32_t kv_heads, uint32_t head_dim, float scale, double theta, const T* qkv, const T* q_w, \
      const T* k_w, const T* cos_sin, const uint32_t* new_slots, uint32_t capacity, float eps) {  \
    paged_attention<T, G, P, SH>(q, k, v, out, row_list, row_seq, row_visible, row_skip, seq_start, slots,  \
                                 shifts, part_o, part_ml, split_done, max_chunks, splits, chunk,  \
                                 heads, kv_heads, head_dim, scale, theta,                         \
                                 FusedInput<T>{qkv, q_w, k_w, cos_sin, new_slots, capacity, eps}); \
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
      const uint32_t* seq_start, const uint32_t* slots, const uint32_t* shifts, const uint32_t* tiled, \
      uint32_t heads, uint32_t kv_heads, uint32_t head_dim, uint32_t gqa, float scale, double theta) { \
    pdl_enter();                                                                                      \
    prefill_tiles<T>(q, k, v, out, row_visible, seq_start, slots, shifts, tiled, heads, kv_heads,     \
                     head_dim, gqa, scale, theta);                                                    \
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
