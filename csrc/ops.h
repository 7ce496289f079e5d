// The CPU kernels behind torch.ops.fastunlearn (contract: fastunlearn/ops/torch_kernels.py).
#pragma once

#include <ATen/ATen.h>

#include <array>
#include <optional>
#include <tuple>

namespace fastunlearn {

at::Tensor pool_forward(const at::Tensor& hidden, const at::Tensor& weights);
at::Tensor pool_backward(const at::Tensor& grad_pooled, const at::Tensor& weights, at::ScalarType dtype);

std::tuple<at::Tensor, at::Tensor> npair_forward(const at::Tensor& anchor, const at::Tensor& cand,
                                                 const at::Tensor& cand_mask, double inv_temperature,
                                                 bool cosine, double eps);
std::tuple<at::Tensor, at::Tensor> npair_backward(const at::Tensor& grad_loss, const at::Tensor& anchor,
                                                  const at::Tensor& cand, const at::Tensor& cand_mask,
                                                  const at::Tensor& logits, double inv_temperature,
                                                  bool cosine, double eps);

std::tuple<at::Tensor, std::optional<at::Tensor>, std::optional<at::Tensor>, std::optional<at::Tensor>>
linear_nll_fused(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                 const at::Tensor& labels, const at::Tensor& coef, int64_t chunk_size,
                 std::array<bool, 3> needs_grad);

}  // namespace fastunlearn
