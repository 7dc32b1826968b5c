// edgecv: run one exported TVM 0.27 Relax VM library on the CPU, with no Python.
//
//   run_artifact LIB.so INPUT.bin OUTPUT_PREFIX --shape 1,3,H,W [--params PARAMS.bin]
//                [--entry main] [--repeat N]
//
// INPUT.bin is the raw little-endian float32 NCHW input.  PARAMS.bin (optional) holds weights that
// `main` takes after the input, in TVM's param-dict format (tvm.runtime.save_param_dict_to_file);
// they are passed in sorted-name order, like edge/runtime.py passes an artifact's params.npz.  Every output tensor of the entry
// function (a single tensor, or a possibly nested tuple of tensors, flattened in order) is written
// as OUTPUT_PREFIX.<i>.bin (its raw bytes, row-major), and OUTPUT_PREFIX.json lists their shapes
// and dtypes.  Exit code 0 on success; on failure one "run_artifact: error: ..." line on stderr
// (plus TVM's message) and exit code 1 (2 for bad usage).
//
// Uses only the tvm-ffi C++ API.  Link with -Wl,--no-as-needed -ltvm_runtime -ltvm_ffi: nothing
// here references libtvm_runtime directly, but it must be loaded because it registers the
// Relax VM executable loader ("relax.VMExecutable") when the library is opened.
//
// The VM API used (TVM 0.27, src/runtime/vm/executable.cc and vm.cc):
//   ffi::Module::LoadFromFile(lib)                     -> the relax.VMExecutable module
//   exec["vm_load_executable"]()                       -> a relax.VirtualMachine module
//   vm["vm_initialization"](device_type, device_id, allocator_type, ...)  (per device; 2 = pooled)
//   vm["main"](inputs...)                              -> Tensor or Array of outputs

#include <tvm/ffi/container/array.h>
#include <tvm/ffi/container/shape.h>
#include <tvm/ffi/container/tensor.h>
#include <tvm/ffi/dtype.h>
#include <tvm/ffi/error.h>
#include <tvm/ffi/extra/module.h>
#include <tvm/ffi/function.h>

#include <cerrno>
#include <algorithm>
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace ffi = tvm::ffi;

namespace {

constexpr int kPooledAllocator = 2;  // tvm::runtime::memory::AllocatorType::kPooled

struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct AlignedCPUAlloc {
  void AllocData(DLTensor* t) {
    size_t n = ffi::GetDataSize(*t);
    void* p = nullptr;
    if (posix_memalign(&p, 64, n ? n : 1) != 0) throw std::runtime_error("out of memory");
    t->data = p;
  }
  void FreeData(DLTensor* t) { std::free(t->data); }
};

std::vector<int64_t> ParseShape(const std::string& text) {
  std::vector<int64_t> dims;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    char* end = nullptr;
    long long v = std::strtoll(item.c_str(), &end, 10);
    if (item.empty() || *end != '\0' || v <= 0) throw UsageError("bad --shape '" + text + "'");
    dims.push_back(v);
  }
  if (dims.empty()) throw UsageError("bad --shape '" + text + "'");
  return dims;
}

std::string ReadFile(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("cannot open input " + path);
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

void WriteFile(const std::string& path, const void* data, size_t n) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(static_cast<const char*>(data), static_cast<std::streamsize>(n));
  if (!f) throw std::runtime_error("cannot write " + path);
}

ffi::Function Lookup(const ffi::Module& mod, const char* name, const char* what) {
  ffi::Optional<ffi::Function> f = mod->GetFunction(name, /*query_imports=*/true);
  if (!f.has_value()) throw std::runtime_error(std::string(what) + " has no function '" + name + "'");
  return f.value();
}

// A JSON string literal.
std::string Quote(const std::string& text) {
  std::string q = "\"";
  for (unsigned char c : text) {
    if (c == '"' || c == '\\') {
      q += '\\';
      q += static_cast<char>(c);
    } else if (c < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "\\u%04x", c);
      q += buf;
    } else {
      q += static_cast<char>(c);
    }
  }
  return q + "\"";
}

// Flatten a result (tensor or nested tuple of tensors) into `out`.
void Flatten(const ffi::Any& value, std::vector<ffi::Tensor>* out) {
  if (auto t = value.as<ffi::Tensor>()) {
    out->push_back(t.value());
  } else if (auto arr = value.as<ffi::Array<ffi::Any>>()) {
    for (const ffi::Any& item : arr.value()) Flatten(item, out);
  } else {
    throw std::runtime_error("unsupported output type " + value.GetTypeKey() +
                             " (expected tensors or tuples of tensors)");
  }
}

int Run(int argc, char** argv) {
  std::vector<std::string> pos;
  std::string shape_text, params_path, entry = "main";
  int repeat = 1;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw UsageError(a + " needs a value");
      return argv[++i];
    };
    if (a == "--shape") shape_text = value();
    else if (a == "--entry") entry = value();
    else if (a == "--params") params_path = value();
    else if (a == "--repeat") repeat = std::atoi(value().c_str());
    else if (a.rfind("--", 0) == 0) throw UsageError("unknown option " + a);
    else pos.push_back(a);
  }
  if (pos.size() != 3 || shape_text.empty() || repeat < 1) {
    throw UsageError("usage: run_artifact LIB.so INPUT.bin OUTPUT_PREFIX --shape 1,3,H,W "
                     "[--params PARAMS.bin] [--entry main] [--repeat N]");
  }
  const std::string input_path = pos[1], prefix = pos[2];
  // dlopen() searches the library path for names without a '/': make the path explicit.
  std::string lib = pos[0];
  if (char* real = realpath(pos[0].c_str(), nullptr)) {
    lib = real;
    std::free(real);
  } else {
    throw std::runtime_error("cannot open library " + pos[0] + ": " + std::strerror(errno));
  }
  std::vector<int64_t> shape = ParseShape(shape_text);

  // Input tensor.
  DLDevice cpu{kDLCPU, 0};
  DLDataType f32{kDLFloat, 32, 1};
  ffi::Tensor input = ffi::Tensor::FromNDAlloc(AlignedCPUAlloc(), ffi::ShapeView(shape.data(), shape.size()), f32, cpu);
  std::string bytes = ReadFile(input_path);
  size_t expect = ffi::GetDataSize(*input.GetDLTensorPtr());
  if (bytes.size() != expect) {
    throw std::runtime_error(input_path + " has " + std::to_string(bytes.size()) + " bytes, shape " +
                             shape_text + " float32 needs " + std::to_string(expect));
  }
  std::memcpy(input.data_ptr(), bytes.data(), expect);

  // Library -> VM executable -> VM on the CPU.
  auto t0 = std::chrono::steady_clock::now();
  ffi::Module exec = ffi::Module::LoadFromFile(lib);
  ffi::Module vm = Lookup(exec, "vm_load_executable", lib.c_str())().cast<ffi::Module>();
  Lookup(vm, "vm_initialization", "the VM")(static_cast<int>(kDLCPU), 0, kPooledAllocator);
  ffi::Function fn = Lookup(vm, entry.c_str(), "the VM");

  std::vector<ffi::Any> args{input};
  if (!params_path.empty()) {
    std::optional<ffi::Function> load = ffi::Function::GetGlobal("runtime.LoadParamsFromFile");
    if (!load) throw std::runtime_error("runtime.LoadParamsFromFile is not registered");
    auto params = (*load)(params_path).cast<ffi::Map<ffi::String, ffi::Any>>();
    std::vector<std::string> names;
    for (const auto& kv : params) names.push_back(kv.first);
    std::sort(names.begin(), names.end());
    for (const std::string& name : names) args.push_back(params.at(name));
  }
  std::vector<ffi::AnyView> views(args.begin(), args.end());
  auto t1 = std::chrono::steady_clock::now();

  ffi::Any result;
  double best_ms = 1e300;
  for (int r = 0; r < repeat; ++r) {
    auto s = std::chrono::steady_clock::now();
    fn.CallPacked(views.data(), static_cast<int32_t>(views.size()), &result);
    double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - s).count();
    if (ms < best_ms) best_ms = ms;
  }

  std::vector<ffi::Tensor> outputs;
  Flatten(result, &outputs);

  std::ostringstream json;
  json << "{\n  \"library\": " << Quote(lib) << ",\n  \"entry\": " << Quote(entry) << ",\n"
       << "  \"load_ms\": " << std::chrono::duration<double, std::milli>(t1 - t0).count() << ",\n"
       << "  \"run_ms\": " << best_ms << ",\n  \"repeat\": " << repeat << ",\n  \"num_params\": " << (args.size() - 1)
       << ",\n  \"outputs\": [";
  for (size_t i = 0; i < outputs.size(); ++i) {
    const DLTensor* t = outputs[i].GetDLTensorPtr();
    if (t->device.device_type != kDLCPU) throw std::runtime_error("output " + std::to_string(i) + " is not on the CPU");
    if (!ffi::IsContiguous(*t)) throw std::runtime_error("output " + std::to_string(i) + " is not contiguous");
    std::string file = prefix + "." + std::to_string(i) + ".bin";
    WriteFile(file, static_cast<const char*>(t->data) + t->byte_offset, ffi::GetDataSize(*t));
    json << (i ? "," : "") << "\n    {\"index\": " << i << ", \"file\": " << Quote(file)
         << ", \"dtype\": " << Quote(std::string(ffi::DLDataTypeToString(t->dtype))) << ", \"shape\": [";
    for (int d = 0; d < t->ndim; ++d) json << (d ? ", " : "") << t->shape[d];
    json << "]}";
  }
  json << "\n  ]\n}\n";
  std::string js = json.str();
  WriteFile(prefix + ".json", js.data(), js.size());
  std::cout << "run_artifact: " << outputs.size() << " output(s) -> " << prefix << ".json (load "
            << std::chrono::duration<double, std::milli>(t1 - t0).count() << " ms, run " << best_ms
            << " ms)" << std::endl;
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return Run(argc, argv);
  } catch (const UsageError& e) {
    std::cerr << "run_artifact: error: " << e.what() << std::endl;
    return 2;
  } catch (const ffi::Error& e) {
    std::cerr << "run_artifact: error: TVM " << e.kind() << ": " << e.message() << std::endl;
    std::cerr << e.FullMessage() << std::endl;
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "run_artifact: error: " << e.what() << std::endl;
    return 1;
  }
}
