// Registers the kernels as torch.ops.fastunlearn.* and makes the library importable as
// fastunlearn._C: importing it runs the static registrations below.
#include <Python.h>
#include <torch/library.h>

#include "ops.h"

TORCH_LIBRARY(fastunlearn, m) {
  m.def("pool_forward(Tensor hidden, Tensor weights) -> Tensor");
  m.def("pool_backward(Tensor grad_pooled, Tensor weights, ScalarType dtype) -> Tensor");
  m.def("npair_forward(Tensor anchor, Tensor cand, Tensor cand_mask, float inv_temperature, bool cosine, "
        "float eps) -> (Tensor, Tensor)");
  m.def("npair_backward(Tensor grad_loss, Tensor anchor, Tensor cand, Tensor cand_mask, Tensor logits, "
        "float inv_temperature, bool cosine, float eps) -> (Tensor, Tensor)");
  m.def("linear_nll_fused(Tensor x, Tensor weight, Tensor? bias, Tensor labels, Tensor coef, int chunk_size, "
        "bool[3] needs_grad) -> (Tensor, Tensor?, Tensor?, Tensor?)");
}

TORCH_LIBRARY_IMPL(fastunlearn, CPU, m) {
  m.impl("pool_forward", &fastunlearn::pool_forward);
  m.impl("pool_backward", &fastunlearn::pool_backward);
  m.impl("npair_forward", &fastunlearn::npair_forward);
  m.impl("npair_backward", &fastunlearn::npair_backward);
  m.impl("linear_nll_fused", &fastunlearn::linear_nll_fused);
}

// A bare module: everything is reached through torch.ops.fastunlearn.
PyMODINIT_FUNC PyInit__C(void) {
  static PyModuleDef module = {PyModuleDef_HEAD_INIT, "fastunlearn._C", nullptr, -1, nullptr};
  return PyModule_Create(&module);
}
