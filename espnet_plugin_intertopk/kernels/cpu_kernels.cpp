// Fused CPU kernels of the loss (``compile_kernels: true`` on CPU), built at first use
// by fused_cpu.py. Two modes: the dense path keeps each cosine's sub-center maximum and
// arg-max for the backward; the memory-bounded path (a class_chunk_size is set) keeps
// only a few numbers per row and the backward recomputes each tile.
//
// The eager and torch.compile paths run each matrix product over a block of thousands of
// classes and then pass over its (batch x block x K) result in memory. Here the classes
// are walked in tiles small enough that a tile's products stay in a core's L2 cache: each
// thread takes a contiguous range of tiles, runs single-threaded BLAS products on them
// (at::mm inside the parallel region) and does the element-wise work while the products
// are still in cache. Only what the backward needs leaves the tile: per row a few
// statistics and, in the dense mode, the sub-center maximum of each cosine and its
// arg-max, stored tile by tile.
//
// The maths is that of block_kernels.py (forward_block, backward_block, project_block);
// the tests hold both to the float64 reference.

#include <ATen/Parallel.h>
#include <torch/extension.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

namespace {

using at::Tensor;

constexpr float kNegInf = -std::numeric_limits<float>::infinity();
// Below this exp(x) is under the smallest normal float: returned as 0 (exp(-inf) = 0).
constexpr float kExpMin = -87.0f;

// exp for loops the compiler can vectorise (libm's expf is vectorised only under
// -ffast-math, which would also assume away the infinities this file relies on).
// x = n ln2 + r with |r| <= ln2 / 2, then a degree-7 Taylor polynomial in r (truncation
// error below 6e-9 relative) scaled by 2^n built in the exponent bits.
inline float exp_f32(float x) {
  const float xc = std::min(std::max(x, kExpMin), 88.0f);
  // Round to nearest by the 1.5 * 2^23 trick (vectorises, unlike nearbyint without
  // -ffast-math).
  const float big = 12582912.0f;
  const float n = (xc * 1.44269504088896341f + big) - big;
  float r = std::fma(n, -0.693359375f, xc);  // ln2 split in two (Cody and Waite)
  r = std::fma(n, 2.12194440e-4f, r);
  float p = 1.0f / 5040.0f;
  p = std::fma(p, r, 1.0f / 720.0f);
  p = std::fma(p, r, 1.0f / 120.0f);
  p = std::fma(p, r, 1.0f / 24.0f);
  p = std::fma(p, r, 1.0f / 6.0f);
  p = std::fma(p, r, 0.5f);
  p = std::fma(p, r, 1.0f);
  p = std::fma(p, r, 1.0f);
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float two_n;
  std::memcpy(&two_n, &bits, sizeof(two_n));
  return x < kExpMin ? 0.0f : p * two_n;
}

// The weight gradient, in the memory of `reuse` (the last step's gradient, kept by the
// loss module) when nothing but `reuse` references that memory any more, else fresh.
// A weight gradient must be a new tensor every step (autograd stores it as .grad, and
// the optimiser's zero_grad() drops it); a fresh 40 MB array is faulted in page by
// page, which took longer than computing it (9 ms vs 4 ms here). A gradient still held
// anywhere (weight.grad between accumulation steps, a user's variable, a view) shares
// the storage, so it is never overwritten.
Tensor weight_gradient(const c10::optional<Tensor>& reuse, at::IntArrayRef shape,
                       const at::TensorOptions& options) {
  if (reuse.has_value() && reuse->sizes() == shape && reuse->is_contiguous() &&
      reuse->scalar_type() == at::kFloat && reuse->device().is_cpu() &&
      reuse->storage().use_count() == 1) {
    return at::empty({0}, options)
        .set_(reuse->storage(), reuse->storage_offset(), shape,
              c10::contiguous_strides(shape));
  }
  return at::empty(shape, options);
}

// Maximum of v[0, n), vectorised through 16 independent lanes (a plain max reduction
// is vectorised by the compiler only when it may assume there are no NaNs and infs).
float row_maximum(const float* v, int64_t n) {
  constexpr int64_t L = 16;
  float lane[L];
  std::fill(lane, lane + L, kNegInf);
  int64_t j = 0;
  for (; j + L <= n; j += L) {
#pragma omp simd
    for (int64_t l = 0; l < L; ++l) lane[l] = v[j + l] > lane[l] ? v[j + l] : lane[l];
  }
  float m = kNegInf;
  for (int64_t l = 0; l < L; ++l) m = lane[l] > m ? lane[l] : m;
  for (; j < n; ++j) m = v[j] > m ? v[j] : m;
  return m;
}

// A row's k largest values so far, in descending order, earlier columns first among
// equals; `count` of them are filled (the caller initialises the rest to -inf, 0, 0).
struct RunningTopK {
  float* val;
  int64_t* idx;
  uint8_t* sub;
  int64_t* count;
  int64_t k;

  // Offers v[0, n) at columns base + j. A row whose maximum v_max is not above the k-th
  // value is skipped whole: after the first few tiles that is nearly every row.
  void offer(const float* v, const uint8_t* s, int64_t n, int64_t base, float v_max) const {
    if (*count == k && !(v_max > val[k - 1])) return;
    for (int64_t j = 0; j < n; ++j) {
      const float x = v[j];
      if (*count == k && !(x > val[k - 1])) continue;
      int64_t p = *count < k ? (*count)++ : k - 1;
      for (; p > 0 && val[p - 1] < x; --p) {
        val[p] = val[p - 1];
        idx[p] = idx[p - 1];
        sub[p] = sub[p - 1];
      }
      val[p] = x;
      idx[p] = base + j;
      sub[p] = s[j];
    }
  }
};

// (rows, D) weight rows -> 1 / max(|w|, eps) into inv (rows,), like F.normalize.
void inverse_norms(const float* w, int64_t rows, int64_t D, float* inv) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = w + r * D;
    float sq = 0.0f;
#pragma omp simd reduction(+ : sq)
    for (int64_t d = 0; d < D; ++d) sq += row[d] * row[d];
    inv[r] = 1.0f / std::max(std::sqrt(sq), 1e-12f);
  }
}

struct Tiling {
  int64_t B, D, K, C, tile, tiles;
  Tiling(const Tensor& xn, const Tensor& weight, int64_t K_, int64_t tile_)
      : B(xn.size(0)), D(xn.size(1)), K(K_), C(weight.size(0) / K_), tile(tile_),
        tiles((weight.size(0) / K_ + tile_ - 1) / tile_) {}
  int64_t start(int64_t t) const { return t * tile; }
  int64_t width(int64_t t) const { return std::min(C, start(t) + tile) - start(t); }
};

void check_inputs(const Tensor& xn, const Tensor& weight, int64_t K, int64_t tile) {
  TORCH_CHECK(xn.device().is_cpu() && weight.device().is_cpu(), "CPU tensors expected");
  TORCH_CHECK(xn.scalar_type() == at::kFloat && weight.scalar_type() == at::kFloat,
              "float32 tensors expected");
  TORCH_CHECK(xn.dim() == 2 && weight.dim() == 2 && xn.size(1) == weight.size(1),
              "xn (B, D) and weight (K*C, D) expected");
  TORCH_CHECK(xn.is_contiguous() && weight.is_contiguous(), "contiguous tensors expected");
  TORCH_CHECK(K >= 1 && K <= 256 && weight.size(0) % K == 0, "K must divide the rows");
  TORCH_CHECK(tile >= 1, "tile must be >= 1");
}

// The tile's K products into cos (K, B, tile): embeddings times the raw weight rows of
// sub-center k of classes [c0, c0 + n), one single-threaded BLAS call each.
void tile_products(Tensor& cos, const Tensor& xn, const Tensor& w3, int64_t c0, int64_t n) {
  for (int64_t k = 0; k < cos.size(0); ++k) {
    Tensor out = cos.select(0, k).narrow(1, 0, n);
    at::mm_out(out, xn, w3.narrow(0, c0, n).select(1, k).t());
  }
}

// Row b of a tile: sub-center maximum of the cosine into brow[0, n) (-inf at the
// target column, `target` < 0 or >= n if elsewhere) and the winning sub-center into
// arow (the first on ties). cos as filled by tile_products; the tile's inverse norms of
// sub-center k start at inv + k * inv_stride.
void tile_row_maximum(const float* cos, int64_t B, int64_t tile, int64_t K, int64_t b,
                      int64_t n, const float* inv, int64_t inv_stride, int64_t target,
                      float* brow, uint8_t* arow) {
  const float* c_0 = cos + b * tile;
  const float* i_0 = inv;
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) {
    brow[j] = c_0[j] * i_0[j];
    arow[j] = 0;
  }
  for (int64_t k = 1; k < K; ++k) {
    const float* c_k = cos + (k * B + b) * tile;
    const float* i_k = inv + k * inv_stride;
    const uint8_t kb = static_cast<uint8_t>(k);
#pragma omp simd
    for (int64_t j = 0; j < n; ++j) {
      const float v = c_k[j] * i_k[j];
      const bool better = v > brow[j];
      brow[j] = better ? v : brow[j];
      arow[j] = better ? kb : arow[j];
    }
  }
  if (target >= 0 && target < n) brow[target] = kNegInf;
}

}  // namespace

// Forward pass.
//
// Args: xn (B, D) unit embeddings, weight (K*C, D) raw class-major weight, label (B,)
// int64, K, scale, k_top, tile (classes per tile), keep (keep best and arg for the
// backward; if not, they are empty and the backward recomputes each tile).
// Returns, with T tiles, P threads and kc = k_top:
//   best (T, B, tile): sub-center maximum of the cosine, -inf in the target column;
//   arg (T, B, tile) uint8: the sub-center that won it (the first on ties);
//   inv_norm (C, K): 1 / |w| per weight row;
//   row_best, row_idx (B, P): each thread's row maximum of best and its class (the
//     lowest class on ties; threads take increasing class ranges);
//   row_max, row_sum (B, T): per tile, scale * (its row maximum) floored at -1e30, and
//     the sum of exp(scale * best - row_max);
//   cand_val, cand_idx, cand_sub (B, P * kc): each thread's kc largest best per row,
//     their classes and winning sub-centers (-inf at class 0 where a thread saw fewer).
std::vector<Tensor> forward_tiles(const Tensor& xn_in, const Tensor& weight_in,
                                  const Tensor& label, int64_t K, double scale_d,
                                  int64_t k_top, int64_t tile, bool keep) {
  check_inputs(xn_in, weight_in, K, tile);
  // Detached: grad mode is thread-local and the worker threads of the parallel region
  // do not inherit the caller's no-grad state; out= products refuse inputs that
  // require grad.
  const Tensor xn = xn_in.detach(), weight = weight_in.detach();
  TORCH_CHECK(label.scalar_type() == at::kLong && label.numel() == xn.size(0),
              "label (B,) int64 expected");
  const Tiling g(xn, weight, K, tile);
  const int64_t B = g.B, C = g.C, T = g.tiles, kc = k_top;
  const float scale = static_cast<float>(scale_d);
  const auto f32 = xn.options();
  Tensor best = at::empty({keep ? T : 0, B, tile}, f32);
  Tensor arg = at::empty({keep ? T : 0, B, tile}, f32.dtype(at::kByte));
  Tensor inv_kc = at::empty({K, C}, f32);
  Tensor inv_ck = at::empty({C, K}, f32);
  const int64_t P = at::get_num_threads();
  Tensor row_best = at::full({B, P}, kNegInf, f32);
  Tensor row_idx = at::zeros({B, P}, f32.dtype(at::kLong));
  Tensor row_max = at::empty({B, T}, f32);
  Tensor row_sum = at::empty({B, T}, f32);
  Tensor cand_val = at::full({B, P * kc}, kNegInf, f32);
  Tensor cand_idx = at::zeros({B, P * kc}, f32.dtype(at::kLong));
  Tensor cand_sub = at::zeros({B, P * kc}, f32.dtype(at::kByte));
  std::vector<int64_t> cand_count(B * P, 0);
  const Tensor lab = label.contiguous();
  const int64_t* labp = lab.data_ptr<int64_t>();
  const float* wp = weight.data_ptr<float>();
  float* bestp = best.data_ptr<float>();
  uint8_t* argp = arg.data_ptr<uint8_t>();
  float* ikc = inv_kc.data_ptr<float>();
  float* ickp = inv_ck.data_ptr<float>();
  const Tensor w3 = weight.view({C, K, g.D});

  at::parallel_for(0, T, 1, [&](int64_t t0, int64_t t1) {
    const int64_t p = at::get_thread_num();
    Tensor cos = at::empty({K, B, tile}, f32);
    std::vector<float> inv_row(tile * K), row_best_tmp(keep ? 0 : tile);
    std::vector<uint8_t> row_arg_tmp(keep ? 0 : tile);
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t c0 = g.start(t), n = g.width(t);
      // Norms first: the tile's weight rows are then in cache for the products.
      inverse_norms(wp + c0 * K * g.D, n * K, g.D, inv_row.data());
      float* ick = ickp + c0 * K;
      for (int64_t j = 0; j < n; ++j) {
        for (int64_t k = 0; k < K; ++k) {
          ikc[k * C + c0 + j] = inv_row[j * K + k];
          ick[j * K + k] = inv_row[j * K + k];
        }
      }
      tile_products(cos, xn, w3, c0, n);
      const float* cp = cos.data_ptr<float>();
      for (int64_t b = 0; b < B; ++b) {
        float* brow = keep ? bestp + (t * B + b) * tile : row_best_tmp.data();
        uint8_t* arow = keep ? argp + (t * B + b) * tile : row_arg_tmp.data();
        tile_row_maximum(cp, B, tile, K, b, n, ikc + c0, C, labp[b] - c0, brow, arow);
        const float m = row_maximum(brow, n);
        const int64_t s = b * P + p;
        float* run_best = row_best.data_ptr<float>() + s;
        if (m > *run_best) {
          int64_t j = 0;
          while (j < n - 1 && !(brow[j] == m)) ++j;
          *run_best = m;
          row_idx.data_ptr<int64_t>()[s] = c0 + j;
        }
        // A finite floor instead of -inf keeps the merge of the tiles' sums free of
        // inf - inf (as in block_kernels.forward_block).
        const float shift = std::max(m * scale, -1e30f);
        float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
        for (int64_t j = 0; j < n; ++j) sum += exp_f32(brow[j] * scale - shift);
        row_max.data_ptr<float>()[b * T + t] = shift;
        row_sum.data_ptr<float>()[b * T + t] = sum;
        if (kc > 0) {
          const RunningTopK top{cand_val.data_ptr<float>() + s * kc,
                                cand_idx.data_ptr<int64_t>() + s * kc,
                                cand_sub.data_ptr<uint8_t>() + s * kc, &cand_count[s], kc};
          top.offer(brow, arow, n, c0, m);
        }
      }
    }
  });
  return {best, arg, inv_ck, row_best, row_idx, row_max, row_sum, cand_val, cand_idx,
          cand_sub};
}

// Backward pass: the plain softmax gradient of every class, routed to the sub-center
// that won its maximum, through the two products and the normalisation backward of the
// weight rows. The target column gets zero (best is -inf there); the caller adds the
// margin terms of the target and the hard negatives.
//
// Args: xn, weight, label as in forward_tiles; best, arg from forward_tiles(keep=true),
// or None to recompute each tile's products and maximum here (the memory-bounded
// mode); inv_norm (C, K); lse (B,) each row's log-sum-exp with margins; coef: d loss /
// d logit per unit softmax; scale; tile (as in forward_tiles); reuse: the last weight
// gradient or None (see weight_gradient).
// Returns grad_x (B, D) and grad_w (K*C, D).
std::vector<Tensor> backward_tiles(const Tensor& xn_in, const Tensor& weight_in,
                                   const Tensor& label, const c10::optional<Tensor>& best,
                                   const c10::optional<Tensor>& arg,
                                   const Tensor& inv_norm, const Tensor& lse,
                                   double coef_d, double scale_d, int64_t tile,
                                   const c10::optional<Tensor>& reuse) {
  const int64_t K = inv_norm.size(1);
  check_inputs(xn_in, weight_in, K, tile);
  const Tensor xn = xn_in.detach(), weight = weight_in.detach();  // as in forward_tiles
  const Tiling g(xn, weight, K, tile);
  const int64_t B = g.B, C = g.C, D = g.D, T = g.tiles;
  const bool kept = best.has_value();
  TORCH_CHECK(kept == arg.has_value(), "best and arg: both or neither");
  TORCH_CHECK(!kept || (best->numel() == T * B * tile && arg->numel() == T * B * tile),
              "best and arg must come from forward_tiles(keep=true) with the same tile");
  const float scale = static_cast<float>(scale_d);
  const float coef = static_cast<float>(coef_d);
  const auto f32 = xn.options();
  Tensor grad_w = weight_gradient(reuse, {K * C, D}, f32);
  const int threads = at::get_num_threads();
  Tensor partial_x = at::zeros({threads, B, D}, f32);
  const Tensor inv_kc = inv_norm.t().contiguous();
  const Tensor lse_c = lse.contiguous(), lab = label.contiguous();
  const float* ikc = inv_kc.data_ptr<float>();
  const float* lsep = lse_c.data_ptr<float>();
  const int64_t* labp = lab.data_ptr<int64_t>();
  const float* bestp = kept ? best->data_ptr<float>() : nullptr;
  const uint8_t* argp = kept ? arg->data_ptr<uint8_t>() : nullptr;
  const Tensor w3 = weight.view({C, K, D});
  const Tensor gw3 = grad_w.view({C, K, D});

  at::parallel_for(0, T, 1, [&](int64_t t0, int64_t t1) {
    // The tile's products (when recomputing), overwritten row by row by its gradient.
    Tensor grad = at::empty({K, B, tile}, f32);
    std::vector<float> e(tile), row_best(kept ? 0 : tile);
    std::vector<uint8_t> row_arg(kept ? 0 : tile);
    Tensor gx = partial_x.select(0, at::get_thread_num());
    float* gp = grad.data_ptr<float>();
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t c0 = g.start(t), n = g.width(t);
      if (!kept) tile_products(grad, xn, w3, c0, n);
      for (int64_t b = 0; b < B; ++b) {
        const float* brow = kept ? bestp + (t * B + b) * tile : row_best.data();
        const uint8_t* arow = kept ? argp + (t * B + b) * tile : row_arg.data();
        if (!kept) {
          tile_row_maximum(gp, B, tile, K, b, n, ikc + c0, C, labp[b] - c0,
                           row_best.data(), row_arg.data());
        }
        const float l = lsep[b];
        float* ep = e.data();
#pragma omp simd
        for (int64_t j = 0; j < n; ++j) ep[j] = exp_f32(brow[j] * scale - l) * coef;
        for (int64_t k = 0; k < K; ++k) {
          float* g_k = gp + (k * B + b) * tile;
          const float* i_k = ikc + k * C + c0;
          const uint8_t kb = static_cast<uint8_t>(k);
#pragma omp simd
          for (int64_t j = 0; j < n; ++j) g_k[j] = arow[j] == kb ? ep[j] * i_k[j] : 0.0f;
        }
      }
      for (int64_t k = 0; k < K; ++k) {
        const Tensor g_k = grad.select(0, k).narrow(1, 0, n);
        const Tensor w_k = w3.narrow(0, c0, n).select(1, k);
        Tensor out = gw3.narrow(0, c0, n).select(1, k);
        at::mm_out(out, g_k.t(), xn);
        gx.addmm_(g_k, w_k);
      }
      // Normalisation backward of the tile's rows while they are in cache:
      // g - w (g . w) / |w|^2 (g is already divided by |w|).
      float* gwp = grad_w.data_ptr<float>() + c0 * K * D;
      const float* wp = weight.data_ptr<float>() + c0 * K * D;
      for (int64_t r = 0; r < n * K; ++r) {
        float* gr = gwp + r * D;
        const float* wr = wp + r * D;
        float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
        for (int64_t d = 0; d < D; ++d) dot += gr[d] * wr[d];
        const float inv = ikc[(r % K) * C + c0 + r / K];
        const float f = dot * inv * inv;
#pragma omp simd
        for (int64_t d = 0; d < D; ++d) gr[d] -= wr[d] * f;
      }
    }
  });
  return {partial_x.sum(0), grad_w};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward_tiles", &forward_tiles, "Forward pass (see cpu_kernels.cpp)");
  m.def("backward_tiles", &backward_tiles, "Backward pass (see cpu_kernels.cpp)");
}
