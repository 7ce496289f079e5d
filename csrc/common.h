// Helpers shared by the CPU kernels: fp32 loads/stores of every input dtype and a
// vectorisable exp. All kernels accumulate in fp32 (docs/ops.md).
#pragma once

#include <ATen/ATen.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cstdint>

namespace fastunlearn {

// Written as plain bit manipulation so that GCC vectorises loops over bf16 (c10's own
// narrowing conversion branches on NaN and keeps loops scalar).
inline float to_float(float v) { return v; }
inline float to_float(double v) { return static_cast<float>(v); }
inline float to_float(c10::Half v) { return static_cast<float>(v); }
inline float to_float(c10::BFloat16 v) {
  return __builtin_bit_cast(float, static_cast<uint32_t>(v.x) << 16);
}

template <typename T>
inline T from_float(float v) {
  return static_cast<T>(v);
}
template <>
inline c10::BFloat16 from_float<c10::BFloat16>(float v) {
  const uint32_t bits = __builtin_bit_cast(uint32_t, v);
  const uint32_t nearest_even = (bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16;
  const bool nan = (bits & 0x7FFFFFFFu) > 0x7F800000u;
  return c10::BFloat16(static_cast<uint16_t>(nan ? 0x7FC0u : nearest_even), c10::BFloat16::from_bits());
}

// exp(x) for the x <= 0 of a max-shifted softmax, branch-free so that row loops vectorise
// (std::exp is a library call that stops GCC). Cephes expf: x = n ln2 + r, a degree-6
// polynomial in r, and 2^n written into the exponent bits; about 2 ulp. Arguments below -87
// give ~1e-38 instead of denormals or 0, negligible next to a softmax sum >= 1.
inline float exp_nonpositive(float x) {
  x = x < -87.0f ? -87.0f : x;
  const float shifter = 12582912.0f;  // 1.5 * 2^23: the sum holds round(x / ln2) in its low bits
  const float t = x * 1.44269504088896341f + shifter;
  const float n = t - shifter;
  const int32_t n_int = __builtin_bit_cast(int32_t, t) - __builtin_bit_cast(int32_t, shifter);
  float r = x - n * 0.693359375f;
  r = r + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float y = p * r * r + r + 1.0f;
  return y * __builtin_bit_cast(float, (n_int + 127) << 23);
}

// Ranges of at most this many elements run on the calling thread: below it, waking the
// thread pool costs more than the work.
constexpr int64_t kSerialWork = 1 << 15;

inline int64_t grain_for(int64_t work_per_item) {
  return std::max<int64_t>(1, kSerialWork / std::max<int64_t>(1, work_per_item));
}

}  // namespace fastunlearn
