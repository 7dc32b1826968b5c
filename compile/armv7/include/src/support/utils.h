/*
 * edgecv: stand-in for TVM's private src/support/utils.h (not shipped in the apache-tvm wheel).
 * Only what the compiled runtime sources use: IsNumber (thread_pool.cc, for TVM_BIND_THREADS-style
 * CPU id lists).  Written for edgecv.
 */
#ifndef EDGECV_SUPPORT_UTILS_H_
#define EDGECV_SUPPORT_UTILS_H_

#include <string>

namespace tvm {
namespace support {

// True when `text` is a non-empty run of decimal digits.
inline bool IsNumber(const std::string& text) {
  if (text.empty()) return false;
  for (char c : text) {
    if (c < '0' || c > '9') return false;
  }
  return true;
}

}  // namespace support
}  // namespace tvm

#endif  // EDGECV_SUPPORT_UTILS_H_
