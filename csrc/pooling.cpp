// Weighted sum over positions with precomputed fp32 weights, and its broadcast backward.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

#include "common.h"
#include "ops.h"

namespace fastunlearn {
namespace {

// Widest column block one task accumulates: its fp32 accumulator stays in L1 while the
// task streams down the T rows of hidden.
constexpr int64_t kMaxColumns = 2048;
// Narrowest block worth splitting D into to give every thread work when B is small.
constexpr int64_t kMinColumns = 256;

template <typename scalar_t>
void pool_forward_kernel(const scalar_t* hidden, const float* weights, scalar_t* out, int64_t rows,
                         int64_t positions, int64_t dim) {
  const int64_t for_threads =
      std::min(at::divup(at::get_num_threads(), std::max<int64_t>(rows, 1)), dim / kMinColumns);
  const int64_t blocks = std::max({int64_t{1}, at::divup(dim, kMaxColumns), for_threads});
  const int64_t width = std::min(dim, at::divup(at::divup(dim, blocks), int64_t{16}) * 16);
  at::parallel_for(0, rows * blocks, grain_for(positions * width), [&](int64_t begin, int64_t end) {
    std::vector<float> acc_storage(width);
    std::vector<int64_t> used(positions);
    float* acc = acc_storage.data();
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / blocks;
      const int64_t first = (task % blocks) * width;
      const int64_t count = std::min(width, dim - first);
      if (count <= 0) {
        continue;  // rounding the width up to 16 can leave the last of many blocks empty
      }
      // Padding (weight 0) is never read.
      const float* w = weights + b * positions;
      int64_t n_used = 0;
      for (int64_t t = 0; t < positions; ++t) {
        if (w[t] != 0.0f) {
          used[n_used++] = t;
        }
      }
      const scalar_t* h = hidden + b * positions * dim + first;
      std::fill(acc, acc + count, 0.0f);
      // Four rows per sweep of the accumulator: a quarter of the L1 loads and stores.
      int64_t i = 0;
      for (; i + 4 <= n_used; i += 4) {
        const float w0 = w[used[i]], w1 = w[used[i + 1]], w2 = w[used[i + 2]], w3 = w[used[i + 3]];
        const scalar_t* h0 = h + used[i] * dim;
        const scalar_t* h1 = h + used[i + 1] * dim;
        const scalar_t* h2 = h + used[i + 2] * dim;
        const scalar_t* h3 = h + used[i + 3] * dim;
#pragma omp simd
        for (int64_t d = 0; d < count; ++d) {
          acc[d] += (w0 * to_float(h0[d]) + w1 * to_float(h1[d])) + (w2 * to_float(h2[d]) + w3 * to_float(h3[d]));
        }
      }
      for (; i < n_used; ++i) {
        const float w0 = w[used[i]];
        const scalar_t* h0 = h + used[i] * dim;
#pragma omp simd
        for (int64_t d = 0; d < count; ++d) {
          acc[d] += w0 * to_float(h0[d]);
        }
      }
      scalar_t* o = out + b * dim + first;
#pragma omp simd
      for (int64_t d = 0; d < count; ++d) {
        o[d] = from_float<scalar_t>(acc[d]);
      }
    }
  });
}

template <typename scalar_t>
void pool_backward_kernel(const float* grad, const float* weights, scalar_t* out, int64_t rows, int64_t positions,
                          int64_t dim) {
  at::parallel_for(0, rows * positions, grain_for(dim), [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const float w = weights[row];
      const float* g = grad + (row / positions) * dim;
      scalar_t* o = out + row * dim;
#pragma omp simd
      for (int64_t d = 0; d < dim; ++d) {
        o[d] = from_float<scalar_t>(w * g[d]);
      }
    }
  });
}

void check_pool_shapes(const at::Tensor& weights, int64_t rows, int64_t positions) {
  TORCH_CHECK(weights.dim() == 2 && weights.size(0) == rows && weights.size(1) == positions,
              "fastunlearn pooling: weights must have shape [B, T] = [", rows, ", ", positions, "], got ",
              weights.sizes());
}

}  // namespace

at::Tensor pool_forward(const at::Tensor& hidden, const at::Tensor& weights) {
  TORCH_CHECK(hidden.dim() == 3, "fastunlearn pool_forward: hidden must be [B, T, D], got ", hidden.sizes());
  const int64_t rows = hidden.size(0), positions = hidden.size(1), dim = hidden.size(2);
  check_pool_shapes(weights, rows, positions);
  const at::Tensor h = hidden.contiguous();
  const at::Tensor w = weights.to(at::kFloat).contiguous();
  at::Tensor out = at::empty({rows, dim}, h.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, h.scalar_type(), "pool_forward", [&] {
    pool_forward_kernel<scalar_t>(h.const_data_ptr<scalar_t>(), w.const_data_ptr<float>(),
                                  out.mutable_data_ptr<scalar_t>(), rows, positions, dim);
  });
  return out;
}

at::Tensor pool_backward(const at::Tensor& grad_pooled, const at::Tensor& weights, at::ScalarType dtype) {
  TORCH_CHECK(grad_pooled.dim() == 2, "fastunlearn pool_backward: grad_pooled must be [B, D], got ",
              grad_pooled.sizes());
  const int64_t rows = grad_pooled.size(0), dim = grad_pooled.size(1);
  TORCH_CHECK(weights.dim() == 2, "fastunlearn pool_backward: weights must be [B, T], got ", weights.sizes());
  const int64_t positions = weights.size(1);
  check_pool_shapes(weights, rows, positions);
  const at::Tensor g = grad_pooled.to(at::kFloat).contiguous();
  const at::Tensor w = weights.to(at::kFloat).contiguous();
  at::Tensor out = at::empty({rows, positions, dim}, g.options().dtype(dtype));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, dtype, "pool_backward", [&] {
    pool_backward_kernel<scalar_t>(g.const_data_ptr<float>(), w.const_data_ptr<float>(),
                                   out.mutable_data_ptr<scalar_t>(), rows, positions, dim);
  });
  return out;
}

}  // namespace fastunlearn
