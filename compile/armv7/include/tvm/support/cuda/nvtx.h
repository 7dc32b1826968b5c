/*
 * edgecv: stand-in for <tvm/support/cuda/nvtx.h> (missing from the apache-tvm wheel).
 * edgecv's ARM runtime has no CUDA, so the NVTX profiling ranges are no-ops.
 */
#ifndef EDGECV_TVM_SUPPORT_CUDA_NVTX_H_
#define EDGECV_TVM_SUPPORT_CUDA_NVTX_H_

#include <string>

namespace tvm {
namespace support {

// RAII profiling range; does nothing in this build.
class NVTXScopedRange {
 public:
  explicit NVTXScopedRange(const char*) {}
  explicit NVTXScopedRange(const std::string&) {}
  NVTXScopedRange(const NVTXScopedRange&) = delete;
  NVTXScopedRange& operator=(const NVTXScopedRange&) = delete;
};

}  // namespace support
}  // namespace tvm

#define TVM_NVTX_FUNC_SCOPE()

#endif  // EDGECV_TVM_SUPPORT_CUDA_NVTX_H_
