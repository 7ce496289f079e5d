// Linear + NLL in token chunks: per chunk one [chunk, V] fp32 logits block from the BLAS
// matmul, a fused row pass that turns it in place into per-token NLL and
// dL/dlogits = coef * (softmax - onehot), then matmuls folding it into the requested
// gradients. The full [N, V] logits never exist.
//
// Everything is computed in fp32, reduced-precision inputs included: without AVX512-BF16 or
// AMX, oneDNN's bf16/fp16 matmuls run several times slower than fp32 sgemm on CPU, so an
// fp32 copy of the weight (V x H) is cheaper than calling them, and more accurate.
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "common.h"
#include "ops.h"

namespace fastunlearn {
namespace {

// Overwrites a logits row with coef * (softmax - onehot(label)) when `gradient`, and
// returns its NLL. Three passes over a row that stays in L2: max, exp and sum, scale.
float nll_row(float* row, int64_t vocab, int64_t label, bool gradient, float coef) {
  const float target = row[label];
  float top = -std::numeric_limits<float>::infinity();
#pragma omp simd reduction(max : top)
  for (int64_t v = 0; v < vocab; ++v) {
    top = row[v] > top ? row[v] : top;  // std::max's reference return stops GCC vectorising
  }
  float sum = 0.0f;
  if (gradient) {
#pragma omp simd reduction(+ : sum)
    for (int64_t v = 0; v < vocab; ++v) {
      const float e = exp_nonpositive(row[v] - top);
      row[v] = e;
      sum += e;
    }
  } else {
#pragma omp simd reduction(+ : sum)
    for (int64_t v = 0; v < vocab; ++v) {
      sum += exp_nonpositive(row[v] - top);
    }
  }
  const float lse = top + std::log(sum);
  if (gradient) {
    const float label_prob = row[label] / sum;
    const float scale = coef / sum;
#pragma omp simd
    for (int64_t v = 0; v < vocab; ++v) {
      row[v] *= scale;
    }
    // (p - 1) * coef rather than p * coef - coef: exact subtraction for a confident p.
    row[label] = (label_prob - 1.0f) * coef;
  }
  return lse - target;
}

// out[v] (+)= sum over rows of block[r, v]; threads own column ranges and add rows in order,
// so the result does not depend on the thread count.
void add_column_sums(const float* block, int64_t rows, int64_t vocab, float* out, bool accumulate) {
  at::parallel_for(0, vocab, grain_for(rows), [&](int64_t begin, int64_t end) {
    if (!accumulate) {
      std::fill(out + begin, out + end, 0.0f);
    }
    for (int64_t r = 0; r < rows; ++r) {
      const float* src = block + r * vocab;
#pragma omp simd
      for (int64_t v = begin; v < end; ++v) {
        out[v] += src[v];
      }
    }
  });
}

}  // namespace

std::tuple<at::Tensor, std::optional<at::Tensor>, std::optional<at::Tensor>, std::optional<at::Tensor>>
linear_nll_fused(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                 const at::Tensor& labels, const at::Tensor& coef, int64_t chunk_size,
                 std::array<bool, 3> needs_grad) {
  TORCH_CHECK(x.dim() == 2 && weight.dim() == 2 && x.size(1) == weight.size(1),
              "fastunlearn linear_nll: need x [N, H] and weight [V, H], got ", x.sizes(), " and ", weight.sizes());
  const int64_t tokens = x.size(0), vocab = weight.size(0), hidden = weight.size(1);
  TORCH_CHECK(labels.numel() == tokens && coef.numel() == tokens,
              "fastunlearn linear_nll: labels and coef must have N = ", tokens, " elements");
  const bool has_bias = bias.has_value() && bias->defined();
  TORCH_CHECK(!has_bias || (bias->dim() == 1 && bias->size(0) == vocab),
              "fastunlearn linear_nll: bias must be [V] = [", vocab, "]");
  TORCH_CHECK(chunk_size >= 1, "fastunlearn linear_nll: chunk_size must be positive");
  const bool need_x = needs_grad[0], need_w = needs_grad[1], need_b = needs_grad[2] && has_bias;
  const bool gradient = need_x || need_w || need_b;

  const at::Tensor label = labels.to(at::kLong).contiguous();
  const at::Tensor coefficient = coef.to(at::kFloat).contiguous();
  const int64_t* label_ptr = label.const_data_ptr<int64_t>();
  const float* coef_ptr = coefficient.const_data_ptr<float>();

  // Ignored tokens contribute nothing: only counted ones go through the matmuls.
  std::vector<int64_t> counted;
  counted.reserve(tokens);
  for (int64_t t = 0; t < tokens; ++t) {
    if (label_ptr[t] >= 0 && label_ptr[t] < vocab) {
      counted.push_back(t);
    }
  }
  const int64_t active = static_cast<int64_t>(counted.size());
  const bool compacted = active < tokens;
  const auto f32 = x.options().dtype(at::kFloat);
  const at::Tensor counted_index =
      compacted ? at::from_blob(counted.data(), {active}, x.options().dtype(at::kLong)).clone() : at::Tensor();

  const at::Tensor x32 = (compacted ? x.index_select(0, counted_index) : x).to(at::kFloat).contiguous();
  const at::Tensor w32 = weight.to(at::kFloat).contiguous();
  const at::Tensor b32 = has_bias ? bias->to(at::kFloat).contiguous() : at::Tensor();

  at::Tensor nll = at::zeros({tokens}, f32);
  float* nll_ptr = nll.mutable_data_ptr<float>();
  at::Tensor grad_x32 = need_x ? at::empty({active, hidden}, f32) : at::Tensor();
  at::Tensor grad_w32 = need_w ? at::empty({vocab, hidden}, f32) : at::Tensor();
  at::Tensor grad_b32 = need_b ? at::empty({vocab}, f32) : at::Tensor();

  const int64_t chunk = std::min(chunk_size, active);
  at::Tensor logits_buffer = at::empty({chunk, vocab}, f32);
  for (int64_t start = 0; start < active; start += chunk) {
    const int64_t rows = std::min(chunk, active - start);
    at::Tensor logits = logits_buffer.narrow(0, 0, rows);
    const at::Tensor x_chunk = x32.narrow(0, start, rows);
    if (has_bias) {
      at::addmm_out(logits, b32, x_chunk, w32.t());
    } else {
      at::mm_out(logits, x_chunk, w32.t());
    }
    float* logits_ptr = logits.mutable_data_ptr<float>();
    at::parallel_for(0, rows, 1, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        const int64_t token = counted[start + r];
        nll_ptr[token] = nll_row(logits_ptr + r * vocab, vocab, label_ptr[token], gradient, coef_ptr[token]);
      }
    });
    if (!gradient) {
      continue;
    }
    const at::Tensor& grad_logits = logits;  // overwritten in place by nll_row
    const bool first = start == 0;
    if (need_x) {
      at::Tensor out = grad_x32.narrow(0, start, rows);
      at::mm_out(out, grad_logits, w32);
    }
    if (need_w) {
      // beta = 0 on the first chunk: the uninitialised accumulator is ignored, not read.
      grad_w32.addmm_(grad_logits.t(), x_chunk, first ? 0.0 : 1.0, 1.0);
    }
    if (need_b) {
      add_column_sums(logits_ptr, rows, vocab, grad_b32.mutable_data_ptr<float>(), !first);
    }
  }

  std::optional<at::Tensor> grad_x, grad_w, grad_b;
  if (need_x) {
    if (compacted) {
      grad_x = at::zeros({tokens, hidden}, x.options());
      grad_x->index_copy_(0, counted_index, grad_x32.to(x.scalar_type()));
    } else {
      grad_x = grad_x32.to(x.scalar_type());
    }
  }
  if (active == 0) {  // no chunk ran: nothing was written into the accumulators
    if (need_w) grad_w32.zero_();
    if (need_b) grad_b32.zero_();
  }
  if (need_w) grad_w = grad_w32.to(weight.scalar_type());
  if (need_b) grad_b = grad_b32.to(bias->scalar_type());
  return {nll, grad_x, grad_w, grad_b};
}

}  // namespace fastunlearn
