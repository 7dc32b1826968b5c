/*
 * edgecv: stand-in for <tvm/support/serializer.h> (missing from the apache-tvm wheel).
 * Written for edgecv from what the runtime sources serialise; not TVM code.
 *
 * Wire format (must stay byte-compatible with what the TVM compiler writes into exported
 * libraries, e.g. the Relax VM executable and its constant tensors):
 *   - integers / floats / enums: fixed width, little-endian (enums as their underlying type)
 *   - std::string, ffi::String:  uint64 byte count, then the bytes
 *   - std::vector<T>, ffi::Array<T>: uint64 element count, then each element
 *   - std::pair<A,B>: A then B;  std::unordered_map<K,V>, ffi::Map<K,V>: uint64 count, then K,V pairs
 *   - DLDataType: uint8 code, uint8 bits, uint16 lanes;  DLDevice: int32 type, int32 id
 */
#ifndef EDGECV_TVM_SUPPORT_SERIALIZER_H_
#define EDGECV_TVM_SUPPORT_SERIALIZER_H_

#include <dlpack/dlpack.h>
#include <tvm/ffi/container/array.h>
#include <tvm/ffi/container/map.h>
#include <tvm/ffi/endian.h>
#include <tvm/ffi/string.h>
#include <tvm/support/io.h>

#include <cstdint>
#include <string>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

namespace tvm {
namespace support {
namespace edgecv_detail {

// Scalars travel little-endian; swap only on big-endian hosts.
template <typename T>
inline void PutScalar(Stream* s, T v) {
  if (!TVM_FFI_IO_NO_ENDIAN_SWAP) ffi::ByteSwap(&v, sizeof(T), 1);
  s->Write(static_cast<const void*>(&v), sizeof(T));
}

template <typename T>
inline bool GetScalar(Stream* s, T* v) {
  if (s->Read(static_cast<void*>(v), sizeof(T)) != sizeof(T)) return false;
  if (!TVM_FFI_IO_NO_ENDIAN_SWAP) ffi::ByteSwap(v, sizeof(T), 1);
  return true;
}

inline void PutCount(Stream* s, size_t n) { PutScalar<uint64_t>(s, static_cast<uint64_t>(n)); }

inline bool GetCount(Stream* s, size_t* n) {
  uint64_t v = 0;
  if (!GetScalar<uint64_t>(s, &v)) return false;
  *n = static_cast<size_t>(v);
  return static_cast<uint64_t>(*n) == v;  // refuse counts a 32-bit size_t cannot hold
}

inline void PutText(Stream* s, const char* data, size_t n) {
  PutCount(s, n);
  if (n) s->Write(static_cast<const void*>(data), n);
}

inline bool GetText(Stream* s, std::string* out) {
  size_t n = 0;
  if (!GetCount(s, &n)) return false;
  out->assign(n, '\0');
  return n == 0 || s->Read(static_cast<void*>(&(*out)[0]), n) == n;
}

}  // namespace edgecv_detail

template <typename T>
struct Serializer<T, std::enable_if_t<std::is_arithmetic_v<T>>> {
  static constexpr bool enabled = true;
  static void Write(Stream* s, const T& v) { edgecv_detail::PutScalar<T>(s, v); }
  static bool Read(Stream* s, T* v) { return edgecv_detail::GetScalar<T>(s, v); }
};

template <typename T>
struct Serializer<T, std::enable_if_t<std::is_enum_v<T>>> {
  static constexpr bool enabled = true;
  using Raw = std::underlying_type_t<T>;
  static void Write(Stream* s, const T& v) { edgecv_detail::PutScalar<Raw>(s, static_cast<Raw>(v)); }
  static bool Read(Stream* s, T* v) {
    Raw raw{};
    if (!edgecv_detail::GetScalar<Raw>(s, &raw)) return false;
    *v = static_cast<T>(raw);
    return true;
  }
};

template <>
struct Serializer<std::string> {
  static constexpr bool enabled = true;
  static void Write(Stream* s, const std::string& v) { edgecv_detail::PutText(s, v.data(), v.size()); }
  static bool Read(Stream* s, std::string* v) { return edgecv_detail::GetText(s, v); }
};

template <>
struct Serializer<ffi::String> {
  static constexpr bool enabled = true;
  static void Write(Stream* s, const ffi::String& v) { edgecv_detail::PutText(s, v.data(), v.size()); }
  static bool Read(Stream* s, ffi::String* v) {
    std::string text;
    if (!edgecv_detail::GetText(s, &text)) return false;
    *v = ffi::String(std::move(text));
    return true;
  }
};

template <typename T>
struct Serializer<std::vector<T>> {
  static constexpr bool enabled = true;
  static void Write(Stream* s, const std::vector<T>& v) {
    edgecv_detail::PutCount(s, v.size());
    for (const T& item : v) Serializer<T>::Write(s, item);
  }
  static bool Read(Stream* s, std::vector<T>* v) {
    size_t n = 0;
    if (!edgecv_detail::GetCount(s, &n)) return false;
    v->clear();
    v->resize(n);
    for (T& item : *v) {
      if (!Serializer<T>::Read(s, &item)) return false;
    }
    return true;
  }
};

template <typename T>
struct Serializer<ffi::Array<T>> {
  static constexpr bool enabled = true;
  static void Write(Stream* s, const ffi::Array<T>& v) {
    edgecv_detail::PutCount(s, v.size());
    for (const T& item : v) Serializer<T>::Write(s, item);
  }
  static bool Read(Stream* s, ffi::Array<T>* v) {
    size_t n = 0;
    if (!edgecv_detail::GetCount(s, &n)) return false;
    std::vector<T> items(n);
    for (T& item : items) {
      if (!Serializer<T>::Read(s, &item)) return false;
    }
    *v = ffi::Array<T>(items.begin(), items.end());
    return true;
  }
};

template <typename A, typename B>
struct Serializer<std::pair<A, B>> {
  static constexpr bool enabled = true;
  static void Write(Stream* s, const std::pair<A, B>& v) {
    Serializer<A>::Write(s, v.first);
    Serializer<B>::Write(s, v.second);
  }
  static bool Read(Stream* s, std::pair<A, B>* v) {
    return Serializer<A>::Read(s, &v->first) && Serializer<B>::Read(s, &v->second);
  }
};

template <typename K, typename V>
struct Serializer<std::unordered_map<K, V>> {
  static constexpr bool enabled = true;
  static void Write(Stream* s, const std::unordered_map<K, V>& m) {
    edgecv_detail::PutCount(s, m.size());
    for (const auto& kv : m) {
      Serializer<K>::Write(s, kv.first);
      Serializer<V>::Write(s, kv.second);
    }
  }
  static bool Read(Stream* s, std::unordered_map<K, V>* m) {
    size_t n = 0;
    if (!edgecv_detail::GetCount(s, &n)) return false;
    m->clear();
    for (size_t i = 0; i < n; ++i) {
      K key{};
      V value{};
      if (!Serializer<K>::Read(s, &key) || !Serializer<V>::Read(s, &value)) return false;
      (*m)[std::move(key)] = std::move(value);
    }
    return true;
  }
};

template <typename K, typename V>
struct Serializer<ffi::Map<K, V>> {
  static constexpr bool enabled = true;
  static void Write(Stream* s, const ffi::Map<K, V>& m) {
    edgecv_detail::PutCount(s, m.size());
    for (const auto& kv : m) {
      Serializer<K>::Write(s, kv.first);
      Serializer<V>::Write(s, kv.second);
    }
  }
  static bool Read(Stream* s, ffi::Map<K, V>* m) {
    size_t n = 0;
    if (!edgecv_detail::GetCount(s, &n)) return false;
    ffi::Map<K, V> result;
    for (size_t i = 0; i < n; ++i) {
      K key;
      V value;
      if (!Serializer<K>::Read(s, &key) || !Serializer<V>::Read(s, &value)) return false;
      result.Set(key, value);
    }
    *m = std::move(result);
    return true;
  }
};

template <>
struct Serializer<DLDataType> {
  static constexpr bool enabled = true;
  static void Write(Stream* s, const DLDataType& t) {
    edgecv_detail::PutScalar<uint8_t>(s, t.code);
    edgecv_detail::PutScalar<uint8_t>(s, t.bits);
    edgecv_detail::PutScalar<uint16_t>(s, t.lanes);
  }
  static bool Read(Stream* s, DLDataType* t) {
    return edgecv_detail::GetScalar<uint8_t>(s, &t->code) &&
           edgecv_detail::GetScalar<uint8_t>(s, &t->bits) &&
           edgecv_detail::GetScalar<uint16_t>(s, &t->lanes);
  }
};

template <>
struct Serializer<DLDevice> {
  static constexpr bool enabled = true;
  static void Write(Stream* s, const DLDevice& d) {
    edgecv_detail::PutScalar<int32_t>(s, static_cast<int32_t>(d.device_type));
    edgecv_detail::PutScalar<int32_t>(s, static_cast<int32_t>(d.device_id));
  }
  static bool Read(Stream* s, DLDevice* d) {
    int32_t type = 0, id = 0;
    if (!edgecv_detail::GetScalar<int32_t>(s, &type) || !edgecv_detail::GetScalar<int32_t>(s, &id)) {
      return false;
    }
    d->device_type = static_cast<DLDeviceType>(type);
    d->device_id = id;
    return true;
  }
};

}  // namespace support
}  // namespace tvm

#endif  // EDGECV_TVM_SUPPORT_SERIALIZER_H_
