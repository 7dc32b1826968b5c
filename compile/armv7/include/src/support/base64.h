/*
 * edgecv: stand-in for TVM's private src/support/base64.h (not shipped in the apache-tvm wheel).
 * Written for edgecv: base64 streams built on tvm-ffi's own Base64Encode/Base64Decode.
 *
 *   Base64OutStream: binary written to it is buffered; Finish() appends its base64 text to the
 *                    wrapped stream.
 *   Base64InStream:  InitPosition() reads all base64 text from the wrapped stream and decodes it;
 *                    Read() then hands out the decoded bytes.
 */
#ifndef EDGECV_SUPPORT_BASE64_H_
#define EDGECV_SUPPORT_BASE64_H_

#include <tvm/ffi/error.h>
#include <tvm/ffi/extra/base64.h>
#include <tvm/ffi/string.h>
#include <tvm/support/io.h>

#include <cstring>
#include <string>

namespace tvm {
namespace support {

class Base64OutStream : public Stream {
 public:
  using Stream::Read;
  using Stream::Write;

  explicit Base64OutStream(Stream* sink) : sink_(sink) {}

  size_t Write(const void* src, size_t nbytes) override {
    pending_.append(static_cast<const char*>(src), nbytes);
    return nbytes;
  }

  size_t Read(void*, size_t) override {
    TVM_FFI_THROW(InternalError) << "Base64OutStream is write-only";
    return 0;
  }

  void Finish() {
    ffi::String text = ffi::Base64Encode(ffi::Bytes(pending_));
    sink_->Write(static_cast<const void*>(text.data()), text.size());
    pending_.clear();
  }

 private:
  Stream* sink_;
  std::string pending_;
};

class Base64InStream : public Stream {
 public:
  using Stream::Read;
  using Stream::Write;

  explicit Base64InStream(Stream* source) : source_(source) {}

  void InitPosition() {
    std::string text;
    char chunk[4096];
    for (size_t n; (n = source_->Read(chunk, sizeof(chunk))) != 0;) text.append(chunk, n);
    // tolerate whitespace around / inside the text
    std::string compact;
    compact.reserve(text.size());
    for (char c : text) {
      if (c != ' ' && c != '\n' && c != '\r' && c != '\t') compact.push_back(c);
    }
    ffi::Bytes raw = ffi::Base64Decode(ffi::String(compact));
    decoded_.assign(raw.data(), raw.size());
    pos_ = 0;
  }

  size_t Read(void* dst, size_t nbytes) override {
    size_t left = decoded_.size() - pos_;
    size_t n = nbytes < left ? nbytes : left;
    if (n) std::memcpy(dst, decoded_.data() + pos_, n);
    pos_ += n;
    return n;
  }

  size_t Write(const void*, size_t) override {
    TVM_FFI_THROW(InternalError) << "Base64InStream is read-only";
    return 0;
  }

 private:
  Stream* source_;
  std::string decoded_;
  size_t pos_ = 0;
};

}  // namespace support
}  // namespace tvm

#endif  // EDGECV_SUPPORT_BASE64_H_
