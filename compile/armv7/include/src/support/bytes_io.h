/*
 * edgecv: stand-in for TVM's private src/support/bytes_io.h (not shipped in the apache-tvm wheel;
 * build_runtime.sh places this file at <build>/src/support/).  Written for edgecv.
 *
 *   BytesInStream  reads sequentially from a borrowed memory range (the caller keeps it alive)
 *   BytesOutStream appends to a caller-owned std::string
 */
#ifndef EDGECV_SUPPORT_BYTES_IO_H_
#define EDGECV_SUPPORT_BYTES_IO_H_

#include <tvm/ffi/error.h>
#include <tvm/ffi/string.h>
#include <tvm/support/io.h>

#include <cstring>
#include <string>

namespace tvm {
namespace support {

class BytesInStream : public Stream {
 public:
  using Stream::Read;
  using Stream::Write;

  BytesInStream(const void* data, size_t size) : begin_(static_cast<const char*>(data)), end_(begin_ + size), cur_(begin_) {}
  explicit BytesInStream(const ffi::Bytes& bytes) : BytesInStream(bytes.data(), bytes.size()) {}
  explicit BytesInStream(const std::string& text) : BytesInStream(text.data(), text.size()) {}

  size_t Read(void* dst, size_t nbytes) override {
    size_t left = static_cast<size_t>(end_ - cur_);
    size_t n = nbytes < left ? nbytes : left;
    if (n) std::memcpy(dst, cur_, n);
    cur_ += n;
    return n;
  }

  size_t Write(const void*, size_t) override {
    TVM_FFI_THROW(InternalError) << "BytesInStream is read-only";
    return 0;
  }

 private:
  const char* begin_;
  const char* end_;
  const char* cur_;
};

class BytesOutStream : public Stream {
 public:
  using Stream::Read;
  using Stream::Write;

  explicit BytesOutStream(std::string* sink) : sink_(sink) {}

  size_t Write(const void* src, size_t nbytes) override {
    sink_->append(static_cast<const char*>(src), nbytes);
    return nbytes;
  }

  size_t Read(void*, size_t) override {
    TVM_FFI_THROW(InternalError) << "BytesOutStream is write-only";
    return 0;
  }

 private:
  std::string* sink_;
};

}  // namespace support
}  // namespace tvm

#endif  // EDGECV_SUPPORT_BYTES_IO_H_
