// N-pair loss: per row, the similarities of the anchor with its K candidates, a softmax
// over them, and the gradient back through the (cosine or dot) similarity.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <cmath>
#include <limits>
#include <vector>

#include "common.h"
#include "ops.h"

namespace fastunlearn {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

template <typename scalar_t>
void load_row(const scalar_t* src, float* dst, int64_t dim) {
#pragma omp simd
  for (int64_t d = 0; d < dim; ++d) {
    dst[d] = to_float(src[d]);
  }
}

float squared_norm(const float* v, int64_t dim) {
  float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
  for (int64_t d = 0; d < dim; ++d) {
    sum += v[d] * v[d];
  }
  return sum;
}

// a . c and c . c in one pass over the candidate.
template <typename scalar_t>
void dot_and_norm(const float* a, const scalar_t* c, int64_t dim, float& dot, float& squared) {
  float ac = 0.0f, cc = 0.0f;
#pragma omp simd reduction(+ : ac, cc)
  for (int64_t d = 0; d < dim; ++d) {
    const float cv = to_float(c[d]);
    ac += a[d] * cv;
    cc += cv * cv;
  }
  dot = ac;
  squared = cc;
}

float row_max(const float* logits, int64_t count) {
  float top = kNegInf;
  for (int64_t k = 0; k < count; ++k) {
    top = std::max(top, logits[k]);
  }
  return top;
}

template <typename scalar_t>
void npair_forward_kernel(const scalar_t* anchor, const scalar_t* cand, const bool* mask, float* loss, float* logits,
                          int64_t rows, int64_t count, int64_t dim, float inv_temperature, bool cosine, float eps) {
  at::parallel_for(0, rows, grain_for((count + 1) * dim), [&](int64_t begin, int64_t end) {
    std::vector<float> a(dim);
    for (int64_t b = begin; b < end; ++b) {
      load_row(anchor + b * dim, a.data(), dim);
      const float a_norm = cosine ? std::max(std::sqrt(squared_norm(a.data(), dim)), eps) : 1.0f;
      float* row = logits + b * count;
      for (int64_t k = 0; k < count; ++k) {
        if (!mask[b * count + k]) {
          row[k] = kNegInf;
          continue;
        }
        float dot, squared;
        dot_and_norm(a.data(), cand + (b * count + k) * dim, dim, dot, squared);
        const float sim = cosine ? dot / (a_norm * std::max(std::sqrt(squared), eps)) : dot;
        row[k] = sim * inv_temperature;
      }
      const float top = row_max(row, count);
      float lse = kNegInf;
      if (top != kNegInf) {
        float sum = 0.0f;
        for (int64_t k = 0; k < count; ++k) {
          sum += std::exp(row[k] - top);
        }
        lse = top + std::log(sum);
      }
      loss[b] = lse - row[0];
    }
  });
}

template <typename scalar_t>
void npair_backward_kernel(const float* grad_loss, const scalar_t* anchor, const scalar_t* cand, const bool* mask,
                           const float* logits, scalar_t* grad_anchor, scalar_t* grad_cand, int64_t rows,
                           int64_t count, int64_t dim, float inv_temperature, bool cosine, float eps) {
  at::parallel_for(0, rows, grain_for((count + 1) * dim), [&](int64_t begin, int64_t end) {
    std::vector<float> a(dim), grad_a(dim), grad_sim(count), c_norm(count), cos_ac(count);
    for (int64_t b = begin; b < end; ++b) {
      load_row(anchor + b * dim, a.data(), dim);
      const float a_raw_norm = cosine ? std::sqrt(squared_norm(a.data(), dim)) : 1.0f;
      const float a_norm = cosine ? std::max(a_raw_norm, eps) : 1.0f;
      if (cosine) {
        // From here on `a` holds the unit anchor.
#pragma omp simd
        for (int64_t d = 0; d < dim; ++d) {
          a[d] /= a_norm;
        }
      }

      // dL/dsim_k = (softmax_k - [k == 0]) * grad_loss / tau; masked candidates get 0.
      const float* row = logits + b * count;
      const float top = row_max(row, count);
      float sum = 0.0f;
      for (int64_t k = 0; k < count; ++k) {
        grad_sim[k] = std::exp(row[k] - top);
        sum += grad_sim[k];
      }
      const float upstream = grad_loss[b] * inv_temperature;
      for (int64_t k = 0; k < count; ++k) {
        grad_sim[k] = (grad_sim[k] / sum - (k == 0 ? 1.0f : 0.0f)) * upstream;
      }

      std::fill(grad_a.begin(), grad_a.end(), 0.0f);
      for (int64_t k = 0; k < count; ++k) {
        const scalar_t* c = cand + (b * count + k) * dim;
        scalar_t* gc = grad_cand + (b * count + k) * dim;
        if (!mask[b * count + k]) {
          std::fill(gc, gc + dim, from_float<scalar_t>(0.0f));
          continue;
        }
        const float gs = grad_sim[k];
        if (!cosine) {
#pragma omp simd
          for (int64_t d = 0; d < dim; ++d) {
            grad_a[d] += gs * to_float(c[d]);
            gc[d] = from_float<scalar_t>(gs * a[d]);
          }
          continue;
        }
        float dot, squared;
        dot_and_norm(a.data(), c, dim, dot, squared);  // a is the unit anchor: dot = |c| cos
        const float raw_norm = std::sqrt(squared);
        const float norm = std::max(raw_norm, eps);
        // d(c / max(|c|, eps)): the radial part is projected out only where |c| > eps.
        const float radial = raw_norm > eps ? gs * (dot / norm) : 0.0f;
#pragma omp simd
        for (int64_t d = 0; d < dim; ++d) {
          const float unit = to_float(c[d]) / norm;
          grad_a[d] += gs * unit;
          gc[d] = from_float<scalar_t>((gs * a[d] - unit * radial) / norm);
        }
      }

      scalar_t* ga = grad_anchor + b * dim;
      if (cosine) {
        float radial = 0.0f;
        if (a_raw_norm > eps) {
#pragma omp simd reduction(+ : radial)
          for (int64_t d = 0; d < dim; ++d) {
            radial += a[d] * grad_a[d];
          }
        }
#pragma omp simd
        for (int64_t d = 0; d < dim; ++d) {
          ga[d] = from_float<scalar_t>((grad_a[d] - a[d] * radial) / a_norm);
        }
      } else {
#pragma omp simd
        for (int64_t d = 0; d < dim; ++d) {
          ga[d] = from_float<scalar_t>(grad_a[d]);
        }
      }
    }
  });
}

void check_npair_shapes(const at::Tensor& anchor, const at::Tensor& cand, const at::Tensor& cand_mask) {
  TORCH_CHECK(anchor.dim() == 2 && cand.dim() == 3 && cand.size(0) == anchor.size(0) &&
                  cand.size(2) == anchor.size(1),
              "fastunlearn npair: need anchor [B, D] and cand [B, K, D], got ", anchor.sizes(), " and ",
              cand.sizes());
  TORCH_CHECK(cand.scalar_type() == anchor.scalar_type(), "fastunlearn npair: anchor and cand dtypes differ");
  TORCH_CHECK(cand_mask.dim() == 2 && cand_mask.size(0) == cand.size(0) && cand_mask.size(1) == cand.size(1),
              "fastunlearn npair: cand_mask must be [B, K], got ", cand_mask.sizes());
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> npair_forward(const at::Tensor& anchor, const at::Tensor& cand,
                                                 const at::Tensor& cand_mask, double inv_temperature, bool cosine,
                                                 double eps) {
  check_npair_shapes(anchor, cand, cand_mask);
  const int64_t rows = cand.size(0), count = cand.size(1), dim = cand.size(2);
  const at::Tensor a = anchor.contiguous(), c = cand.contiguous();
  const at::Tensor mask = cand_mask.to(at::kBool).contiguous();
  const auto f32 = a.options().dtype(at::kFloat);
  at::Tensor loss = at::empty({rows}, f32);
  at::Tensor logits = at::empty({rows, count}, f32);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, a.scalar_type(), "npair_forward", [&] {
    npair_forward_kernel<scalar_t>(a.const_data_ptr<scalar_t>(), c.const_data_ptr<scalar_t>(),
                                   mask.const_data_ptr<bool>(), loss.mutable_data_ptr<float>(),
                                   logits.mutable_data_ptr<float>(), rows, count, dim,
                                   static_cast<float>(inv_temperature), cosine, static_cast<float>(eps));
  });
  return {loss, logits};
}

std::tuple<at::Tensor, at::Tensor> npair_backward(const at::Tensor& grad_loss, const at::Tensor& anchor,
                                                  const at::Tensor& cand, const at::Tensor& cand_mask,
                                                  const at::Tensor& logits, double inv_temperature, bool cosine,
                                                  double eps) {
  check_npair_shapes(anchor, cand, cand_mask);
  const int64_t rows = cand.size(0), count = cand.size(1), dim = cand.size(2);
  TORCH_CHECK(grad_loss.numel() == rows, "fastunlearn npair_backward: grad_loss must be [B]");
  TORCH_CHECK(logits.dim() == 2 && logits.size(0) == rows && logits.size(1) == count,
              "fastunlearn npair_backward: logits must be [B, K]");
  const at::Tensor a = anchor.contiguous(), c = cand.contiguous();
  const at::Tensor mask = cand_mask.to(at::kBool).contiguous();
  const at::Tensor g = grad_loss.to(at::kFloat).contiguous();
  const at::Tensor l = logits.to(at::kFloat).contiguous();
  at::Tensor grad_anchor = at::empty_like(a);
  at::Tensor grad_cand = at::empty_like(c);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, a.scalar_type(), "npair_backward", [&] {
    npair_backward_kernel<scalar_t>(g.const_data_ptr<float>(), a.const_data_ptr<scalar_t>(),
                                    c.const_data_ptr<scalar_t>(), mask.const_data_ptr<bool>(),
                                    l.const_data_ptr<float>(), grad_anchor.mutable_data_ptr<scalar_t>(),
                                    grad_cand.mutable_data_ptr<scalar_t>(), rows, count, dim,
                                    static_cast<float>(inv_temperature), cosine, static_cast<float>(eps));
  });
  return {grad_anchor, grad_cand};
}

}  // namespace fastunlearn
