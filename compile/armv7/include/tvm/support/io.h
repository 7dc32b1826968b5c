/*
 * edgecv: stand-in for <tvm/support/io.h>, which the apache-tvm wheel's runtime sources include
 * but the wheel does not ship.  Written for edgecv from what those sources call; not TVM code.
 *
 * support::Stream is an abstract byte stream (two virtual raw-byte methods) plus typed helpers
 * that dispatch to support::Serializer<T> (see serializer.h for the wire format).
 */
#ifndef EDGECV_TVM_SUPPORT_IO_H_
#define EDGECV_TVM_SUPPORT_IO_H_

#include <cstddef>
#include <cstdint>

namespace tvm {
namespace support {

// Per-type binary codec.  Specialisations set `enabled = true` and provide
//   static void Write(Stream*, const T&);   static bool Read(Stream*, T*);
// The second parameter is a hook for enable_if-based partial specialisations.
template <typename T, typename Enable = void>
struct Serializer {
  static constexpr bool enabled = false;
};

class Stream {
 public:
  virtual ~Stream() = default;

  // Raw bytes.  Both return the number of bytes actually transferred.
  virtual size_t Read(void* dst, size_t nbytes) = 0;
  virtual size_t Write(const void* src, size_t nbytes) = 0;

  // Typed values.
  template <typename T>
  void Write(const T& value) {
    static_assert(Serializer<T>::enabled, "support::Stream: type has no Serializer");
    Serializer<T>::Write(this, value);
  }
  template <typename T>
  bool Read(T* value) {
    static_assert(Serializer<T>::enabled, "support::Stream: type has no Serializer");
    return Serializer<T>::Read(this, value);
  }

  // A C array of typed values, one after another, without a length prefix.
  template <typename T>
  void WriteArray(const T* values, size_t count) {
    for (const T* p = values; p != values + count; ++p) Write<T>(*p);
  }
  template <typename T>
  bool ReadArray(T* values, size_t count) {
    for (T* p = values; p != values + count; ++p) {
      if (!Read<T>(p)) return false;
    }
    return true;
  }
};

}  // namespace support
}  // namespace tvm

#endif  // EDGECV_TVM_SUPPORT_IO_H_
