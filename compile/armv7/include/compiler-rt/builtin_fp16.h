/*
 * edgecv: stand-in for TVM's 3rdparty/compiler-rt/builtin_fp16.h (not shipped in the apache-tvm
 * wheel).  The runtime's builtin_fp16.cc instantiates these two templates to export the fp16
 * conversion helpers (__gnu_f2h_ieee, __gnu_h2f_ieee, __truncdfhf2).  Written for edgecv:
 * generic IEEE-754 binary conversions between formats given by their bit layout.
 *
 *   __truncXfYf2__<SrcT, SrcBits, SRC_MANT, DstT, DstBits, DST_MANT>(a)   wide -> narrow,
 *        round to nearest, ties to even; overflow gives +-inf; NaN stays (quiet) NaN.
 *   __extendXfYf2__<...>(a)  narrow -> wide, exact (subnormals of the source are normalised).
 * SrcT/DstT are the value types (float, double, or uint16_t for raw half bits); *Bits are unsigned
 * integers of the same width; *_MANT are the explicit mantissa widths (23 float, 52 double, 10 half).
 */
#ifndef EDGECV_COMPILER_RT_BUILTIN_FP16_H_
#define EDGECV_COMPILER_RT_BUILTIN_FP16_H_

#include <cstdint>
#include <cstring>

namespace edgecv_fp {

template <typename Bits, int MANT>
struct Layout {
  static constexpr int kWidth = static_cast<int>(sizeof(Bits) * 8);
  static constexpr int kExpBits = kWidth - MANT - 1;
  static constexpr int kExpMax = (1 << kExpBits) - 1;  // all-ones exponent: inf / NaN
  static constexpr int kBias = (1 << (kExpBits - 1)) - 1;
  static constexpr Bits kMantMask = (Bits(1) << MANT) - 1;
  static constexpr Bits kHidden = Bits(1) << MANT;
  static constexpr Bits kQuiet = Bits(1) << (MANT - 1);
};

// sig >> shift, rounded to nearest with ties to even (shift >= 1).
template <typename Bits>
inline Bits ShiftRoundEven(Bits sig, int shift) {
  if (shift >= static_cast<int>(sizeof(Bits) * 8)) return 0;  // everything is below half an ulp
  Bits kept = sig >> shift;
  Bits dropped = sig & ((Bits(1) << shift) - 1);
  Bits half = Bits(1) << (shift - 1);
  if (dropped > half || (dropped == half && (kept & 1))) ++kept;
  return kept;
}

}  // namespace edgecv_fp

template <typename SrcT, typename SrcBits, int SRC_MANT, typename DstT, typename DstBits, int DST_MANT>
static inline DstT __truncXfYf2__(SrcT a) {
  using S = edgecv_fp::Layout<SrcBits, SRC_MANT>;
  using D = edgecv_fp::Layout<DstBits, DST_MANT>;
  static_assert(sizeof(SrcT) == sizeof(SrcBits) && sizeof(DstT) == sizeof(DstBits), "layout");
  static_assert(SRC_MANT > DST_MANT && S::kExpBits > D::kExpBits, "truncation goes from the wider format");

  SrcBits in;
  std::memcpy(&in, &a, sizeof(in));
  const DstBits sign = static_cast<DstBits>(in >> (S::kWidth - 1)) << (D::kWidth - 1);
  const int exp = static_cast<int>((in >> SRC_MANT) & SrcBits(S::kExpMax));
  const SrcBits mant = in & S::kMantMask;
  DstBits out;

  if (exp == S::kExpMax) {  // inf or NaN
    out = DstBits(D::kExpMax) << DST_MANT;
    if (mant != 0) {
      out |= D::kQuiet | static_cast<DstBits>((mant >> (SRC_MANT - DST_MANT)) & D::kMantMask);
    }
  } else {
    // value = sig * 2^(e2 - SRC_MANT), sig including the hidden bit for normal numbers
    const SrcBits sig = exp ? (mant | S::kHidden) : mant;
    const int e2 = (exp ? exp : 1) - S::kBias;
    const int dexp = e2 + D::kBias;  // destination biased exponent if normal
    if (sig == 0) {
      out = 0;
    } else if (dexp >= D::kExpMax) {
      out = DstBits(D::kExpMax) << DST_MANT;  // overflow -> inf
    } else if (dexp >= 1) {
      // Normal result.  The rounded significand carries the hidden bit at DST_MANT; adding it on
      // top of (dexp - 1) << DST_MANT yields the right exponent, and a rounding carry (or an
      // overflow to inf) propagates into the exponent field by itself.
      // (Only normal sources get here: a source subnormal lies far below the destination's
      // normal range because the destination has fewer exponent bits.)
      SrcBits r = edgecv_fp::ShiftRoundEven<SrcBits>(sig, SRC_MANT - DST_MANT);
      out = (static_cast<DstBits>(dexp - 1) << DST_MANT) + static_cast<DstBits>(r);
    } else {
      // Subnormal (or zero) result: scale to units of the destination's smallest subnormal.
      const int shift = (SRC_MANT - DST_MANT) + (1 - dexp);
      out = static_cast<DstBits>(edgecv_fp::ShiftRoundEven<SrcBits>(sig, shift));
    }
  }
  out |= sign;
  DstT result;
  std::memcpy(&result, &out, sizeof(result));
  return result;
}

template <typename SrcT, typename SrcBits, int SRC_MANT, typename DstT, typename DstBits, int DST_MANT>
static inline DstT __extendXfYf2__(SrcT a) {
  using S = edgecv_fp::Layout<SrcBits, SRC_MANT>;
  using D = edgecv_fp::Layout<DstBits, DST_MANT>;
  static_assert(sizeof(SrcT) == sizeof(SrcBits) && sizeof(DstT) == sizeof(DstBits), "layout");
  static_assert(DST_MANT > SRC_MANT && D::kExpBits >= S::kExpBits, "extension goes to the wider format");

  SrcBits in;
  std::memcpy(&in, &a, sizeof(in));
  const DstBits sign = static_cast<DstBits>(in >> (S::kWidth - 1)) << (D::kWidth - 1);
  const int exp = static_cast<int>((in >> SRC_MANT) & SrcBits(S::kExpMax));
  DstBits mant = static_cast<DstBits>(in & S::kMantMask);
  DstBits out;

  if (exp == S::kExpMax) {  // inf or NaN (NaN payload kept, made quiet)
    out = (DstBits(D::kExpMax) << DST_MANT) | (mant << (DST_MANT - SRC_MANT));
    if (mant != 0) out |= D::kQuiet;
  } else if (exp == 0 && mant == 0) {
    out = 0;
  } else {
    int e2 = (exp ? exp : 1) - S::kBias;
    if (exp == 0) {  // normalise a source subnormal
      while (!(mant & (DstBits(1) << SRC_MANT))) {
        mant <<= 1;
        --e2;
      }
      mant &= (DstBits(1) << SRC_MANT) - 1;
    }
    out = (static_cast<DstBits>(e2 + D::kBias) << DST_MANT) | (mant << (DST_MANT - SRC_MANT));
  }
  out |= sign;
  DstT result;
  std::memcpy(&result, &out, sizeof(result));
  return result;
}

#endif  // EDGECV_COMPILER_RT_BUILTIN_FP16_H_
