// kpr_bpf.cc — thin N-API binding over libbpf (Debian libbpf 1.1) for kpr.
//
// Scope: object open/load/pin, raw map ops (single + batch), links for cgroup
// sock_addr hooks, tc (clsact via bpf_tc_*) and tcx attach, prog test runs,
// BPF iterator reads (optionally from inside another network namespace).
// There is deliberately no service logic here: Buffers go in and out, and
// every failure becomes a JS Error carrying { errno, code, op } so the
// TypeScript side can branch on `code` instead of parsing messages.

#include <napi.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <linux/bpf.h>

#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <sched.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstdarg>
#include <cstdio>
#include <deque>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_set>
#include <vector>

namespace {

// Constants newer than the installed (6.1) uapi header.
constexpr int kTcxIngress = 46;  // BPF_TCX_INGRESS
constexpr int kTcxEgress = 47;   // BPF_TCX_EGRESS
constexpr uint32_t kLinkTypeTcx = 11;     // BPF_LINK_TYPE_TCX
constexpr uint32_t kLinkTypeNetkit = 13;  // BPF_LINK_TYPE_NETKIT
// Kernel-internal errno leaked to userspace when a map type lacks batch ops.
constexpr int kENOTSUPP = 524;

// libbpf "opts" structs must be fully zeroed (including padding) and carry
// their size; LIBBPF_OPTS relies on C compound literals, so do it by hand.
#define KPR_OPTS(TYPE, NAME) \
  struct TYPE NAME;          \
  memset(&NAME, 0, sizeof(NAME)); \
  NAME.sz = sizeof(NAME)

// ---------------------------------------------------------------------------
// libbpf log capture: libbpf prints warnings (including the verifier log on a
// failed load) through a global callback. Keep the last lines in a bounded
// ring so open/load errors can show *why* they failed.

class LogRing {
 public:
  void Clear() {
    std::lock_guard<std::mutex> lock(mu_);
    lines_.clear();
    partial_.clear();
  }
  void Append(const std::string& text) {
    std::lock_guard<std::mutex> lock(mu_);
    for (char c : text) {
      if (c == '\n') {
        Push(std::move(partial_));
        partial_.clear();
      } else if (partial_.size() < kMaxLineLen) {
        partial_.push_back(c);
      }
    }
  }
  std::vector<std::string> Snapshot() {
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<std::string> out(lines_.begin(), lines_.end());
    if (!partial_.empty()) out.push_back(partial_);
    return out;
  }

 private:
  static constexpr size_t kMaxLines = 400;
  static constexpr size_t kMaxLineLen = 1024;
  void Push(std::string line) {
    if (line.empty()) return;
    lines_.push_back(std::move(line));
    while (lines_.size() > kMaxLines) lines_.pop_front();
  }
  std::mutex mu_;
  std::deque<std::string> lines_;
  std::string partial_;
};

LogRing g_log;

int LibbpfPrint(enum libbpf_print_level level, const char* fmt, va_list args) {
  if (level == LIBBPF_DEBUG) return 0;  // debug output is far too chatty
  char stackbuf[1024];
  va_list copy;
  va_copy(copy, args);
  int n = vsnprintf(stackbuf, sizeof(stackbuf), fmt, copy);
  va_end(copy);
  if (n < 0) return 0;
  if (static_cast<size_t>(n) < sizeof(stackbuf)) {
    g_log.Append(std::string(stackbuf, n));
  } else {
    // Verifier logs arrive as one huge string; format it in full.
    std::string big(static_cast<size_t>(n) + 1, '\0');
    vsnprintf(&big[0], big.size(), fmt, args);
    big.resize(n);
    g_log.Append(big);
  }
  return 0;
}

// ---------------------------------------------------------------------------
// Errors

std::string ErrnoName(int e) {
  if (e == kENOTSUPP) return "ENOTSUPP";
  const char* name = strerrorname_np(e);
  return name ? name : "ERRNO_" + std::to_string(e);
}

std::string ErrnoText(int e) {
  if (e == kENOTSUPP) return "Operation not supported (kernel ENOTSUPP)";
  return strerror(e);
}

// libbpf 1.x returns -errno from every API and also sets errno.
int ErrOf(long ret) { return ret < 0 ? static_cast<int>(-ret) : errno; }

Napi::Error MakeError(Napi::Env env, const std::string& op, int err,
                      const std::string& ctx) {
  if (err <= 0) err = EIO;
  std::string code = ErrnoName(err);
  std::string msg = op + "(" + ctx + "): " + ErrnoText(err) + " [" + code + "]";
  Napi::Error e = Napi::Error::New(env, msg);
  Napi::Object o = e.Value();
  o.Set("errno", Napi::Number::New(env, err));
  o.Set("code", Napi::String::New(env, code));
  o.Set("op", Napi::String::New(env, op));
  return e;
}

// Same as MakeError, plus the captured libbpf output (tail in the message,
// everything captured in `libbpfLog`).
Napi::Error MakeLogError(Napi::Env env, const std::string& op, int err,
                         const std::string& ctx) {
  std::vector<std::string> lines = g_log.Snapshot();
  Napi::Error e = MakeError(env, op, err, ctx);
  Napi::Object o = e.Value();
  if (!lines.empty()) {
    constexpr size_t kTail = 30;
    size_t from = lines.size() > kTail ? lines.size() - kTail : 0;
    std::string msg = o.Get("message").As<Napi::String>().Utf8Value();
    msg += "\nlibbpf log (last " + std::to_string(lines.size() - from) + " lines):";
    for (size_t i = from; i < lines.size(); i++) msg += "\n  " + lines[i];
    o.Set("message", Napi::String::New(env, msg));
  }
  Napi::Array arr = Napi::Array::New(env, lines.size());
  for (size_t i = 0; i < lines.size(); i++) arr.Set(i, Napi::String::New(env, lines[i]));
  o.Set("libbpfLog", arr);
  return e;
}

// Argument/validation errors: TypeError/RangeError, still with errno/code/op
// so callers can treat every addon error uniformly.
template <typename ErrT>
ErrT ArgError(Napi::Env env, const std::string& op, const std::string& msg) {
  ErrT e = ErrT::New(env, op + ": " + msg);
  Napi::Object o = e.Value();
  o.Set("errno", Napi::Number::New(env, EINVAL));
  o.Set("code", Napi::String::New(env, "EINVAL"));
  o.Set("op", Napi::String::New(env, op));
  return e;
}

// ---------------------------------------------------------------------------
// Argument helpers

struct Bytes {
  const uint8_t* data;
  size_t len;
};

// A JavaScript number that must be an integer within [lo, hi].
int64_t ArgInteger(const Napi::CallbackInfo& info, size_t i, const char* op, const char* what, int64_t lo,
                   int64_t hi) {
  if (i >= info.Length() || !info[i].IsNumber())
    throw ArgError<Napi::TypeError>(info.Env(), op, std::string(what) + " must be a number");
  double d = info[i].As<Napi::Number>().DoubleValue();
  if (d != static_cast<double>(static_cast<int64_t>(d)) || d < static_cast<double>(lo) || d > static_cast<double>(hi))
    throw ArgError<Napi::RangeError>(info.Env(), op,
                                     std::string(what) + " must be an integer from " + std::to_string(lo) + " to " +
                                         std::to_string(hi));
  return static_cast<int64_t>(d);
}

// A C int: an fd, an ifindex, an errno.
int ArgInt(const Napi::CallbackInfo& info, size_t i, const char* op, const char* what) {
  return static_cast<int>(ArgInteger(info, i, op, what, INT32_MIN, INT32_MAX));
}

// A __u32 of the kernel's API: flags, ids, sizes, counts, a tc handle or priority.
uint32_t ArgU32(const Napi::CallbackInfo& info, size_t i, const char* op, const char* what) {
  return static_cast<uint32_t>(ArgInteger(info, i, op, what, 0, UINT32_MAX));
}

int ArgFd(const Napi::CallbackInfo& info, size_t i, const char* op, const char* what = "fd") {
  int fd = ArgInt(info, i, op, what);
  if (fd < 0) throw ArgError<Napi::RangeError>(info.Env(), op, std::string(what) + " must be >= 0");
  return fd;
}

bool ArgAbsent(const Napi::CallbackInfo& info, size_t i) {
  return i >= info.Length() || info[i].IsUndefined() || info[i].IsNull();
}

// Optional trailing integers (undefined/null → default).
int ArgOptInt(const Napi::CallbackInfo& info, size_t i, const char* op, const char* what, int dflt) {
  return ArgAbsent(info, i) ? dflt : ArgInt(info, i, op, what);
}

uint32_t ArgOptU32(const Napi::CallbackInfo& info, size_t i, const char* op, const char* what, uint32_t dflt) {
  return ArgAbsent(info, i) ? dflt : ArgU32(info, i, op, what);
}

std::string ArgStr(const Napi::CallbackInfo& info, size_t i, const char* op, const char* what) {
  if (i >= info.Length() || !info[i].IsString())
    throw ArgError<Napi::TypeError>(info.Env(), op, std::string(what) + " must be a string");
  return info[i].As<Napi::String>().Utf8Value();
}

Bytes ToBytes(Napi::Env env, Napi::Value v, const char* op, const char* what) {
  if (v.IsTypedArray()) {
    Napi::TypedArray ta = v.As<Napi::TypedArray>();
    if (ta.TypedArrayType() == napi_uint8_array) {
      Napi::Uint8Array u8 = v.As<Napi::Uint8Array>();
      return {u8.Data(), u8.ByteLength()};
    }
  }
  throw ArgError<Napi::TypeError>(env, op, std::string(what) + " must be a Buffer/Uint8Array");
}

Bytes ArgBytes(const Napi::CallbackInfo& info, size_t i, const char* op, const char* what) {
  if (i >= info.Length())
    throw ArgError<Napi::TypeError>(info.Env(), op, std::string(what) + " is required");
  return ToBytes(info.Env(), info[i], op, what);
}

Napi::Buffer<uint8_t> CopyBuf(Napi::Env env, const uint8_t* p, size_t n) {
  return Napi::Buffer<uint8_t>::Copy(env, p, n);
}

// ---------------------------------------------------------------------------
// Map metadata. Sizes are queried per call rather than cached per fd: fd
// numbers get reused after close, and a stale cache would silently validate
// against the wrong map. One extra syscall is cheap next to the map op.

bool IsPerCpu(uint32_t type) {
  return type == BPF_MAP_TYPE_PERCPU_HASH || type == BPF_MAP_TYPE_PERCPU_ARRAY ||
         type == BPF_MAP_TYPE_LRU_PERCPU_HASH || type == BPF_MAP_TYPE_PERCPU_CGROUP_STORAGE;
}

struct MapMeta {
  int fd;
  bpf_map_info info;
  size_t keySize;
  size_t valueSize;  // per-CPU maps: round_up(value_size, 8) * possible CPUs
  std::string Ctx() const {
    return "map '" + std::string(info.name) + "' id " + std::to_string(info.id) + " fd " +
           std::to_string(fd);
  }
};

MapMeta GetMapMeta(Napi::Env env, int fd) {
  MapMeta m;
  m.fd = fd;
  memset(&m.info, 0, sizeof(m.info));
  __u32 len = sizeof(m.info);
  int r = bpf_obj_get_info_by_fd(fd, &m.info, &len);
  if (r) throw MakeError(env, "bpf_obj_get_info_by_fd", ErrOf(r), "fd " + std::to_string(fd));
  m.keySize = m.info.key_size;
  m.valueSize = m.info.value_size;
  if (IsPerCpu(m.info.type)) {
    int ncpu = libbpf_num_possible_cpus();
    if (ncpu < 0) throw MakeError(env, "libbpf_num_possible_cpus", -ncpu, m.Ctx());
    m.valueSize = ((m.valueSize + 7) / 8) * 8 * static_cast<size_t>(ncpu);
  }
  return m;
}

void CheckLen(Napi::Env env, const MapMeta& m, const char* op, const char* what, size_t got,
              size_t want) {
  if (got == want) return;
  throw ArgError<Napi::RangeError>(env, op,
                                   m.Ctx() + ": " + what + " is " + std::to_string(got) +
                                       " bytes but the map expects " + std::to_string(want));
}

bool Unsupported(int e) { return e == kENOTSUPP || e == EOPNOTSUPP || e == EINVAL; }

// When a batch command fails before the per-element loop (ENOTSUPP, bad
// flags) the kernel never writes batch.count back, so libbpf hands us our own
// input count. No element can have been processed in that case.
__u32 BatchDone(__u32 reported, __u32 requested) { return reported >= requested ? 0 : reported; }

// get_next_key + lookup walk; used by mapDump and as the batch fallback.
// When a key vanishes mid-walk, hash/LPM get_next_key restarts from the first
// key, so remember what we already emitted and bound total steps.
template <typename Fn>
void IterateMap(Napi::Env env, const MapMeta& m, Fn&& emit) {
  std::vector<uint8_t> cur(std::max<size_t>(m.keySize, 1)), next(cur.size()), val(m.valueSize);
  std::unordered_set<std::string> seen;
  bool first = true;
  size_t budget = static_cast<size_t>(m.info.max_entries) * 4 + 1024;
  for (;;) {
    int r = bpf_map_get_next_key(m.fd, first ? nullptr : cur.data(), next.data());
    if (r) {
      int e = ErrOf(r);
      if (e == ENOENT) return;  // end of map
      throw MakeError(env, "bpf_map_get_next_key", e, m.Ctx());
    }
    if (budget-- == 0)
      throw MakeError(env, "bpf_map_get_next_key", EAGAIN, m.Ctx() + ": map kept changing during iteration");
    first = false;
    cur.swap(next);
    std::string k(reinterpret_cast<const char*>(cur.data()), m.keySize);
    if (seen.count(k)) continue;
    r = bpf_map_lookup_elem(m.fd, cur.data(), val.data());
    if (r) {
      int e = ErrOf(r);
      if (e == ENOENT) continue;  // deleted between next_key and lookup
      throw MakeError(env, "bpf_map_lookup_elem", e, m.Ctx());
    }
    seen.insert(std::move(k));
    emit(cur.data(), val.data());
  }
}

// ---------------------------------------------------------------------------
// BpfObject: owns a bpf_object*. Map/prog fds returned by its methods belong to
// the object and are closed by close() (or when the handle is GC'd).

struct AddonData {
  Napi::FunctionReference bpfObjectCtor;
};

class BpfObject : public Napi::ObjectWrap<BpfObject> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "BpfObject",
                       {
                           InstanceMethod<&BpfObject::MapFd>("mapFd"),
                           InstanceMethod<&BpfObject::ProgFd>("progFd"),
                           InstanceMethod<&BpfObject::Maps>("maps"),
                           InstanceMethod<&BpfObject::Programs>("programs"),
                           InstanceMethod<&BpfObject::Close>("close"),
                           InstanceAccessor<&BpfObject::Path>("path"),
                       });
  }

  explicit BpfObject(const Napi::CallbackInfo& info) : Napi::ObjectWrap<BpfObject>(info) {
    // Only openObject() may construct: it passes (External<bpf_object>, path).
    if (info.Length() < 2 || !info[0].IsExternal())
      throw ArgError<Napi::TypeError>(info.Env(), "BpfObject", "use openObject() to create BPF objects");
    obj_ = info[0].As<Napi::External<bpf_object>>().Data();
    path_ = info[1].As<Napi::String>().Utf8Value();
  }

  ~BpfObject() override {
    if (obj_) bpf_object__close(obj_);
  }

 private:
  bpf_object* Live(Napi::Env env, const char* op) {
    if (!obj_) throw MakeError(env, op, EBADF, "object '" + path_ + "' is closed");
    return obj_;
  }

  Napi::Value MapFd(const Napi::CallbackInfo& info) {
    bpf_object* obj = Live(info.Env(), "bpf_object__find_map_by_name");
    std::string name = ArgStr(info, 0, "bpf_object__find_map_by_name", "name");
    bpf_map* map = bpf_object__find_map_by_name(obj, name.c_str());
    if (!map)
      throw MakeError(info.Env(), "bpf_object__find_map_by_name", ENOENT,
                      "object '" + path_ + "' has no map '" + name + "'");
    return Napi::Number::New(info.Env(), bpf_map__fd(map));
  }

  Napi::Value ProgFd(const Napi::CallbackInfo& info) {
    bpf_object* obj = Live(info.Env(), "bpf_object__find_program_by_name");
    std::string name = ArgStr(info, 0, "bpf_object__find_program_by_name", "name");
    bpf_program* prog = bpf_object__find_program_by_name(obj, name.c_str());
    if (!prog)
      throw MakeError(info.Env(), "bpf_object__find_program_by_name", ENOENT,
                      "object '" + path_ + "' has no program '" + name + "'");
    return Napi::Number::New(info.Env(), bpf_program__fd(prog));
  }

  Napi::Value Maps(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    bpf_object* obj = Live(env, "bpf_object__next_map");
    Napi::Array out = Napi::Array::New(env);
    bpf_map* map;
    uint32_t i = 0;
    bpf_object__for_each_map(map, obj) {
      Napi::Object o = Napi::Object::New(env);
      o.Set("name", bpf_map__name(map));
      o.Set("fd", bpf_map__fd(map));
      out.Set(i++, o);
    }
    return out;
  }

  Napi::Value Programs(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    bpf_object* obj = Live(env, "bpf_object__next_program");
    Napi::Array out = Napi::Array::New(env);
    bpf_program* prog;
    uint32_t i = 0;
    bpf_object__for_each_program(prog, obj) {
      Napi::Object o = Napi::Object::New(env);
      o.Set("name", bpf_program__name(prog));
      o.Set("fd", bpf_program__fd(prog));
      o.Set("sectionName", bpf_program__section_name(prog));
      out.Set(i++, o);
    }
    return out;
  }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    bpf_object* obj = Live(info.Env(), "bpf_object__close");
    bpf_object__close(obj);
    obj_ = nullptr;
    return info.Env().Undefined();
  }

  Napi::Value Path(const Napi::CallbackInfo& info) { return Napi::String::New(info.Env(), path_); }

  bpf_object* obj_ = nullptr;
  std::string path_;
};

// openObject(path, { pinRoot?, maxEntries?, pinPaths? }) → BpfObject
// pinPaths overrides where a pinned map lives (a versioned pin name): the
// map is reused from, or created and pinned at, that path instead of
// <pinRoot>/<map name>.
Napi::Value OpenObject(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path = ArgStr(info, 0, "bpf_object__open_file", "path");
  std::string pinRoot;
  Napi::Object maxEntries;
  bool haveMax = false;
  Napi::Object pinPaths;
  bool havePins = false;
  if (info.Length() > 1 && info[1].IsObject()) {
    Napi::Object opts = info[1].As<Napi::Object>();
    Napi::Value pr = opts.Get("pinRoot");
    if (!pr.IsUndefined() && !pr.IsNull()) {
      if (!pr.IsString()) throw ArgError<Napi::TypeError>(env, "bpf_object__open_file", "opts.pinRoot must be a string");
      pinRoot = pr.As<Napi::String>().Utf8Value();
    }
    Napi::Value me = opts.Get("maxEntries");
    if (!me.IsUndefined() && !me.IsNull()) {
      if (!me.IsObject()) throw ArgError<Napi::TypeError>(env, "bpf_map__set_max_entries", "opts.maxEntries must be an object");
      maxEntries = me.As<Napi::Object>();
      haveMax = true;
    }
    Napi::Value pp = opts.Get("pinPaths");
    if (!pp.IsUndefined() && !pp.IsNull()) {
      if (!pp.IsObject()) throw ArgError<Napi::TypeError>(env, "bpf_map__set_pin_path", "opts.pinPaths must be an object");
      pinPaths = pp.As<Napi::Object>();
      havePins = true;
    }
  }

  g_log.Clear();  // the error we may throw should show only this call's output
  KPR_OPTS(bpf_object_open_opts, oo);
  oo.pin_root_path = pinRoot.empty() ? nullptr : pinRoot.c_str();
  bpf_object* obj = bpf_object__open_file(path.c_str(), &oo);
  if (!obj) throw MakeLogError(env, "bpf_object__open_file", errno, "path '" + path + "'");

  // Until the object is handed to a BpfObject, close it on any error.
  struct Guard {
    bpf_object* o;
    ~Guard() { if (o) bpf_object__close(o); }
  } guard{obj};

  if (haveMax) {
    Napi::Array names = maxEntries.GetPropertyNames();
    for (uint32_t i = 0; i < names.Length(); i++) {
      std::string name = names.Get(i).ToString().Utf8Value();
      Napi::Value v = maxEntries.Get(name);
      double d = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : -1;
      if (d < 1 || d > UINT32_MAX || d != static_cast<double>(static_cast<uint64_t>(d)))
        throw ArgError<Napi::RangeError>(env, "bpf_map__set_max_entries",
                                         "maxEntries['" + name + "'] must be a positive 32-bit integer");
      bpf_map* map = bpf_object__find_map_by_name(obj, name.c_str());
      if (!map)
        throw MakeError(env, "bpf_object__find_map_by_name", ENOENT,
                        "object '" + path + "' has no map '" + name + "' (maxEntries)");
      int r = bpf_map__set_max_entries(map, static_cast<uint32_t>(d));
      if (r) throw MakeError(env, "bpf_map__set_max_entries", ErrOf(r), "map '" + name + "'");
    }
  }

  if (havePins) {
    Napi::Array names = pinPaths.GetPropertyNames();
    for (uint32_t i = 0; i < names.Length(); i++) {
      std::string name = names.Get(i).ToString().Utf8Value();
      Napi::Value v = pinPaths.Get(name);
      if (!v.IsString())
        throw ArgError<Napi::TypeError>(env, "bpf_map__set_pin_path", "pinPaths['" + name + "'] must be a string");
      // An object that does not declare this map has nothing to re-pin.
      bpf_map* map = bpf_object__find_map_by_name(obj, name.c_str());
      if (!map) continue;
      std::string pin = v.As<Napi::String>().Utf8Value();
      int r = bpf_map__set_pin_path(map, pin.c_str());
      if (r) throw MakeError(env, "bpf_map__set_pin_path", ErrOf(r), "map '" + name + "' at '" + pin + "'");
    }
  }

  int r = bpf_object__load(obj);
  if (r) throw MakeLogError(env, "bpf_object__load", ErrOf(r), "path '" + path + "'");

  AddonData* data = env.GetInstanceData<AddonData>();
  Napi::Object handle = data->bpfObjectCtor.New(
      {Napi::External<bpf_object>::New(env, obj), Napi::String::New(env, path)});
  guard.o = nullptr;  // ownership moved to the BpfObject
  return handle;
}

// ---------------------------------------------------------------------------
// Single-element map ops

Napi::Value MapInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  MapMeta m = GetMapMeta(env, ArgFd(info, 0, "bpf_obj_get_info_by_fd"));
  Napi::Object o = Napi::Object::New(env);
  o.Set("id", m.info.id);
  o.Set("name", m.info.name);
  o.Set("type", m.info.type);
  o.Set("keySize", m.info.key_size);
  o.Set("valueSize", m.info.value_size);
  o.Set("maxEntries", m.info.max_entries);
  o.Set("flags", m.info.map_flags);
  return o;
}

Napi::Value MapLookup(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* op = "bpf_map_lookup_elem";
  MapMeta m = GetMapMeta(env, ArgFd(info, 0, op));
  Bytes key = ArgBytes(info, 1, op, "key");
  CheckLen(env, m, op, "key", key.len, m.keySize);
  std::vector<uint8_t> val(m.valueSize);
  int r = bpf_map_lookup_elem(m.fd, key.data, val.data());
  if (r) {
    int e = ErrOf(r);
    if (e == ENOENT) return env.Null();
    throw MakeError(env, op, e, m.Ctx());
  }
  return CopyBuf(env, val.data(), val.size());
}

Napi::Value MapUpdate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* op = "bpf_map_update_elem";
  MapMeta m = GetMapMeta(env, ArgFd(info, 0, op));
  Bytes key = ArgBytes(info, 1, op, "key");
  Bytes val = ArgBytes(info, 2, op, "value");
  uint32_t flags = ArgOptU32(info, 3, op, "flags", BPF_ANY);
  CheckLen(env, m, op, "key", key.len, m.keySize);
  CheckLen(env, m, op, "value", val.len, m.valueSize);
  int r = bpf_map_update_elem(m.fd, key.data, val.data, static_cast<__u64>(flags));
  if (r) throw MakeError(env, op, ErrOf(r), m.Ctx());
  return env.Undefined();
}

Napi::Value MapDelete(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* op = "bpf_map_delete_elem";
  MapMeta m = GetMapMeta(env, ArgFd(info, 0, op));
  Bytes key = ArgBytes(info, 1, op, "key");
  CheckLen(env, m, op, "key", key.len, m.keySize);
  int r = bpf_map_delete_elem(m.fd, key.data);
  if (r) {
    int e = ErrOf(r);
    if (e == ENOENT) return Napi::Boolean::New(env, false);
    throw MakeError(env, op, e, m.Ctx());
  }
  return Napi::Boolean::New(env, true);
}

Napi::Value MapDump(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  MapMeta m = GetMapMeta(env, ArgFd(info, 0, "bpf_map_get_next_key"));
  Napi::Array out = Napi::Array::New(env);
  uint32_t i = 0;
  IterateMap(env, m, [&](const uint8_t* k, const uint8_t* v) {
    Napi::Array pair = Napi::Array::New(env, 2);
    pair.Set(0u, CopyBuf(env, k, m.keySize));
    pair.Set(1u, CopyBuf(env, v, m.valueSize));
    out.Set(i++, pair);
  });
  return out;
}

// ---------------------------------------------------------------------------
// Batch map ops. Semantics: return the number of elements processed; on error
// throw with `processed` = how many the kernel (or fallback loop) completed.

Napi::Error WithProcessed(Napi::Error e, uint32_t processed) {
  e.Value().Set("processed", Napi::Number::New(e.Env(), processed));
  return e;
}

uint32_t ArgCount(const Napi::CallbackInfo& info, size_t i, const char* op) {
  return ArgU32(info, i, op, "count");
}

Napi::Value MapUpdateBatch(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* op = "bpf_map_update_batch";
  MapMeta m = GetMapMeta(env, ArgFd(info, 0, op));
  Bytes keys = ArgBytes(info, 1, op, "keys");
  Bytes vals = ArgBytes(info, 2, op, "values");
  uint32_t count = ArgCount(info, 3, op);
  uint32_t flags = ArgOptU32(info, 4, op, "flags", BPF_ANY);
  CheckLen(env, m, op, "keys", keys.len, count * m.keySize);
  CheckLen(env, m, op, "values", vals.len, count * m.valueSize);
  if (count == 0) return Napi::Number::New(env, 0);

  uint32_t start = 0;
  // The kernel's generic batch update only accepts BPF_F_LOCK in elem_flags;
  // NOEXIST/EXIST need the per-element path to keep their meaning.
  if ((static_cast<__u64>(flags) & ~static_cast<__u64>(BPF_F_LOCK)) == 0) {
    KPR_OPTS(bpf_map_batch_opts, bo);
    bo.elem_flags = static_cast<__u64>(flags);
    __u32 n = count;
    int r = bpf_map_update_batch(m.fd, keys.data, vals.data, &n, &bo);
    if (r == 0) return Napi::Number::New(env, n);
    int e = ErrOf(r);
    n = BatchDone(n, count);
    // Map types without batch ops (devmap, cpumap, ... on 6.18) fail with
    // ENOTSUPP before touching anything; anything else is a real failure.
    if (!(Unsupported(e) && n == 0)) throw WithProcessed(MakeError(env, op, e, m.Ctx()), n);
  }
  for (uint32_t i = start; i < count; i++) {
    int r = bpf_map_update_elem(m.fd, keys.data + i * m.keySize, vals.data + i * m.valueSize,
                                static_cast<__u64>(flags));
    if (r)
      throw WithProcessed(MakeError(env, "bpf_map_update_elem", ErrOf(r),
                                    m.Ctx() + " element " + std::to_string(i)),
                          i);
  }
  return Napi::Number::New(env, count);
}

Napi::Value MapDeleteBatch(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* op = "bpf_map_delete_batch";
  MapMeta m = GetMapMeta(env, ArgFd(info, 0, op));
  Bytes keys = ArgBytes(info, 1, op, "keys");
  uint32_t count = ArgCount(info, 2, op);
  CheckLen(env, m, op, "keys", keys.len, count * m.keySize);
  if (count == 0) return Napi::Number::New(env, 0);

  KPR_OPTS(bpf_map_batch_opts, bo);
  __u32 n = count;
  int r = bpf_map_delete_batch(m.fd, keys.data, &n, &bo);
  if (r == 0) return Napi::Number::New(env, n);
  int e = ErrOf(r);
  n = BatchDone(n, count);
  uint32_t start;
  if (e == ENOENT) {
    // The batch stops at the first missing key (index n). Already-gone keys
    // are fine for us: continue element by element from there.
    start = n;
  } else if (Unsupported(e) && n == 0) {
    start = 0;
  } else {
    throw WithProcessed(MakeError(env, op, e, m.Ctx()), n);
  }
  for (uint32_t i = start; i < count; i++) {
    int rr = bpf_map_delete_elem(m.fd, keys.data + i * m.keySize);
    if (rr && ErrOf(rr) != ENOENT)
      throw WithProcessed(MakeError(env, "bpf_map_delete_elem", ErrOf(rr),
                                    m.Ctx() + " element " + std::to_string(i)),
                          i);
  }
  return Napi::Number::New(env, count);
}

// One bpf_map_lookup_batch call. A hash bucket larger than the buffers gives
// ENOSPC with nothing copied: grow them (chunk) and call again. err is 0,
// ENOENT (end of map; the n entries returned with it are valid) or a failure
// after n entries.
struct BatchStep {
  int err;
  __u32 n;
};

BatchStep LookupBatchOnce(const MapMeta& m, void* in, void* out, std::vector<uint8_t>& kbuf,
                          std::vector<uint8_t>& vbuf, __u32& chunk) {
  for (;;) {
    kbuf.resize(static_cast<size_t>(chunk) * m.keySize);
    vbuf.resize(static_cast<size_t>(chunk) * m.valueSize);
    KPR_OPTS(bpf_map_batch_opts, bo);
    __u32 n = chunk;
    int r = bpf_map_lookup_batch(m.fd, in, out, kbuf.data(), vbuf.data(), &n, &bo);
    int e = r ? ErrOf(r) : 0;
    if (e && e != ENOENT) {
      n = BatchDone(n, chunk);
      if (e == ENOSPC && n == 0 && chunk < (1u << 20)) {
        chunk *= 2;
        continue;
      }
    }
    return {e, n};
  }
}

// mapLookupBatch(fd, cursor, max): one step of a batch walk, so the caller
// can yield between steps. cursor is null to start, then the cursor the last
// step returned; the result's cursor is null once the map is exhausted.
Napi::Value MapLookupBatchStep(const Napi::CallbackInfo& info, const MapMeta& m) {
  Napi::Env env = info.Env();
  const char* op = "bpf_map_lookup_batch";
  std::vector<uint8_t> token(std::max<size_t>(m.keySize, 8));
  bool first = info[1].IsNull() || info[1].IsUndefined();
  if (!first) {
    if (!info[1].IsBuffer()) throw ArgError<Napi::TypeError>(env, op, "cursor must be a Buffer or null");
    auto b = info[1].As<Napi::Buffer<uint8_t>>();
    if (b.Length() != token.size()) throw ArgError<Napi::RangeError>(env, op, "cursor has the wrong size");
    std::copy(b.Data(), b.Data() + b.Length(), token.begin());
  }
  double want = info[2].IsNumber() ? info[2].As<Napi::Number>().DoubleValue() : 4096;
  __u32 chunk = want >= 1 && want <= (1u << 20) ? static_cast<__u32>(want) : 4096;
  std::vector<uint8_t> kbuf, vbuf, in(token);
  BatchStep s = LookupBatchOnce(m, first ? nullptr : in.data(), token.data(), kbuf, vbuf, chunk);
  if (s.err && s.err != ENOENT) throw MakeError(env, op, s.err, m.Ctx());
  Napi::Object o = Napi::Object::New(env);
  o.Set("keys", CopyBuf(env, kbuf.data(), static_cast<size_t>(s.n) * m.keySize));
  o.Set("values", CopyBuf(env, vbuf.data(), static_cast<size_t>(s.n) * m.valueSize));
  o.Set("count", Napi::Number::New(env, s.n));
  o.Set("cursor", s.err == ENOENT || s.n == 0 ? env.Null() : Napi::Value(CopyBuf(env, token.data(), token.size())));
  return o;
}

Napi::Value MapLookupBatch(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* op = "bpf_map_lookup_batch";
  MapMeta m = GetMapMeta(env, ArgFd(info, 0, op));
  if (info.Length() >= 2) return MapLookupBatchStep(info, m);
  std::vector<uint8_t> keys, vals;
  size_t total = 0;

  // Batch cursor: hash maps use a u32 bucket index, generic (array) batching
  // uses a key, so size it for both.
  std::vector<uint8_t> token(std::max<size_t>(m.keySize, 8));
  std::vector<uint8_t> kbuf, vbuf;
  __u32 chunk = 256;
  bool first = true;
  bool fallback = false;
  for (;;) {
    BatchStep s = LookupBatchOnce(m, first ? nullptr : token.data(), token.data(), kbuf, vbuf, chunk);
    if (s.err && s.err != ENOENT) {
      if (first && s.n == 0 && Unsupported(s.err)) {
        fallback = true;
        break;
      }
      throw WithProcessed(MakeError(env, op, s.err, m.Ctx()), static_cast<uint32_t>(total));
    }
    keys.insert(keys.end(), kbuf.begin(), kbuf.begin() + static_cast<size_t>(s.n) * m.keySize);
    vals.insert(vals.end(), vbuf.begin(), vbuf.begin() + static_cast<size_t>(s.n) * m.valueSize);
    total += s.n;
    if (s.err == ENOENT || s.n == 0) break;
    first = false;
  }
  if (fallback) {
    IterateMap(env, m, [&](const uint8_t* k, const uint8_t* v) {
      keys.insert(keys.end(), k, k + m.keySize);
      vals.insert(vals.end(), v, v + m.valueSize);
      total++;
    });
  }
  Napi::Object o = Napi::Object::New(env);
  o.Set("keys", CopyBuf(env, keys.data(), keys.size()));
  o.Set("values", CopyBuf(env, vals.data(), vals.size()));
  o.Set("count", Napi::Number::New(env, static_cast<double>(total)));
  return o;
}

// ---------------------------------------------------------------------------
// Map creation, for inner maps of a map-in-map that the controller fills
// completely before it swaps them into the outer map.

Napi::Value MapCreate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* op = "bpf_map_create";
  uint32_t type = ArgU32(info, 0, op, "type");
  uint32_t keySize = ArgU32(info, 1, op, "keySize");
  uint32_t valueSize = ArgU32(info, 2, op, "valueSize");
  uint32_t maxEntries = ArgU32(info, 3, op, "maxEntries");
  std::string name = info.Length() > 4 && info[4].IsString() ? info[4].As<Napi::String>().Utf8Value() : "";
  uint32_t flags = ArgOptU32(info, 5, op, "flags", 0);
  if (valueSize == 0 || maxEntries == 0)
    throw ArgError<Napi::RangeError>(env, op, "valueSize > 0 and maxEntries > 0 are required");
  if (name.size() >= BPF_OBJ_NAME_LEN)
    throw ArgError<Napi::RangeError>(env, op, "name must be shorter than 16 bytes");
  KPR_OPTS(bpf_map_create_opts, mo);
  mo.map_flags = flags;
  int fd = bpf_map_create(static_cast<bpf_map_type>(type), name.empty() ? nullptr : name.c_str(), keySize, valueSize,
                          maxEntries, &mo);
  if (fd < 0)
    throw MakeError(env, op, ErrOf(fd),
                    "type " + std::to_string(type) + " name '" + name + "' key " + std::to_string(keySize) +
                        " value " + std::to_string(valueSize) + " entries " + std::to_string(maxEntries));
  return Napi::Number::New(env, fd);
}

// An inner map by id (what a map-in-map lookup returns), to read it back.
Napi::Value MapGetFdById(const Napi::CallbackInfo& info) {
  const char* op = "bpf_map_get_fd_by_id";
  uint32_t id = ArgU32(info, 0, op, "id");
  int fd = bpf_map_get_fd_by_id(id);
  if (fd < 0) throw MakeError(info.Env(), op, ErrOf(fd), "map id " + std::to_string(id));
  return Napi::Number::New(info.Env(), fd);
}

// A program by id (what a link or tc filter reports running), to hold it
// while it is swapped out and put it back if the swap must be undone.
Napi::Value ProgGetFdById(const Napi::CallbackInfo& info) {
  const char* op = "bpf_prog_get_fd_by_id";
  uint32_t id = ArgU32(info, 0, op, "id");
  int fd = bpf_prog_get_fd_by_id(id);
  if (fd < 0) throw MakeError(info.Env(), op, ErrOf(fd), "prog id " + std::to_string(id));
  return Napi::Number::New(info.Env(), fd);
}

// ---------------------------------------------------------------------------
// Pinning and fds

Napi::Value ObjGet(const Napi::CallbackInfo& info) {
  std::string path = ArgStr(info, 0, "bpf_obj_get", "path");
  int fd = bpf_obj_get(path.c_str());
  if (fd < 0) throw MakeError(info.Env(), "bpf_obj_get", ErrOf(fd), "path '" + path + "'");
  return Napi::Number::New(info.Env(), fd);
}

Napi::Value ObjPin(const Napi::CallbackInfo& info) {
  int fd = ArgFd(info, 0, "bpf_obj_pin");
  std::string path = ArgStr(info, 1, "bpf_obj_pin", "path");
  int r = bpf_obj_pin(fd, path.c_str());
  if (r)
    throw MakeError(info.Env(), "bpf_obj_pin", ErrOf(r),
                    "fd " + std::to_string(fd) + " → '" + path + "'");
  return info.Env().Undefined();
}

Napi::Value CloseFd(const Napi::CallbackInfo& info) {
  int fd = ArgFd(info, 0, "close");
  if (close(fd) != 0) throw MakeError(info.Env(), "close", errno, "fd " + std::to_string(fd));
  return info.Env().Undefined();
}

// ---------------------------------------------------------------------------
// cgroup links

struct AttachName {
  const char* name;
  bpf_attach_type type;
};
const AttachName kCgroupAttach[] = {
    {"connect4", BPF_CGROUP_INET4_CONNECT},         {"sendmsg4", BPF_CGROUP_UDP4_SENDMSG},
    {"recvmsg4", BPF_CGROUP_UDP4_RECVMSG},          {"getpeername4", BPF_CGROUP_INET4_GETPEERNAME},
    {"connect6", BPF_CGROUP_INET6_CONNECT},         {"sendmsg6", BPF_CGROUP_UDP6_SENDMSG},
    {"recvmsg6", BPF_CGROUP_UDP6_RECVMSG},          {"getpeername6", BPF_CGROUP_INET6_GETPEERNAME},
    {"sock_create", BPF_CGROUP_INET_SOCK_CREATE},
};

bpf_attach_type CgroupAttachType(Napi::Env env, const std::string& s, const char* op) {
  for (const auto& a : kCgroupAttach)
    if (s == a.name) return a.type;
  throw ArgError<Napi::TypeError>(env, op, "unknown cgroup attach type '" + s + "'");
}

int OpenCgroup(Napi::Env env, const std::string& path) {
  int fd = open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) throw MakeError(env, "open", errno, "cgroup '" + path + "'");
  return fd;
}

Napi::Value ProgAttachCgroup(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* op = "bpf_link_create";
  int progFd = ArgFd(info, 0, op, "progFd");
  std::string cg = ArgStr(info, 1, op, "cgroupPath");
  std::string at = ArgStr(info, 2, op, "attachType");
  bpf_attach_type type = CgroupAttachType(env, at, op);
  int cgFd = OpenCgroup(env, cg);
  KPR_OPTS(bpf_link_create_opts, lo);
  int link = bpf_link_create(progFd, cgFd, type, &lo);
  int e = link < 0 ? ErrOf(link) : 0;
  close(cgFd);  // the link keeps its own reference on the cgroup
  if (link < 0)
    throw MakeError(env, op, e, "prog fd " + std::to_string(progFd) + " → cgroup '" + cg + "' " + at);
  return Napi::Number::New(env, link);
}

Napi::Value LinkUpdate(const Napi::CallbackInfo& info) {
  const char* op = "bpf_link_update";
  int linkFd = ArgFd(info, 0, op, "linkFd");
  int progFd = ArgFd(info, 1, op, "newProgFd");
  int oldFd = ArgOptInt(info, 2, op, "expectedOldProgFd", -1);
  KPR_OPTS(bpf_link_update_opts, uo);
  if (oldFd >= 0) {  // compare-and-swap: fail with EPERM if someone else swapped first
    uo.flags = BPF_F_REPLACE;
    uo.old_prog_fd = static_cast<__u32>(oldFd);
  }
  int r = bpf_link_update(linkFd, progFd, &uo);
  if (r)
    throw MakeError(info.Env(), op, ErrOf(r),
                    "link fd " + std::to_string(linkFd) + " → prog fd " + std::to_string(progFd));
  return info.Env().Undefined();
}

Napi::Value LinkDetach(const Napi::CallbackInfo& info) {
  int linkFd = ArgFd(info, 0, "bpf_link_detach", "linkFd");
  int r = bpf_link_detach(linkFd);
  if (r) throw MakeError(info.Env(), "bpf_link_detach", ErrOf(r), "link fd " + std::to_string(linkFd));
  return info.Env().Undefined();
}

Napi::Value LinkInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0, "bpf_obj_get_info_by_fd", "linkFd");
  bpf_link_info li;
  memset(&li, 0, sizeof(li));
  __u32 len = sizeof(li);
  int r = bpf_obj_get_info_by_fd(fd, &li, &len);
  if (r) throw MakeError(env, "bpf_obj_get_info_by_fd", ErrOf(r), "link fd " + std::to_string(fd));
  Napi::Object o = Napi::Object::New(env);
  o.Set("id", li.id);
  o.Set("progId", li.prog_id);
  o.Set("type", li.type);
  if (li.type == BPF_LINK_TYPE_CGROUP) {
    o.Set("cgroupId", Napi::Number::New(env, static_cast<double>(li.cgroup.cgroup_id)));
    o.Set("attachType", li.cgroup.attach_type);
  } else if (li.type == BPF_LINK_TYPE_XDP) {
    o.Set("ifindex", li.xdp.ifindex);
  } else if (li.type == kLinkTypeTcx || li.type == kLinkTypeNetkit) {
    // Newer union member { __u32 ifindex; __u32 attach_type; } at union start.
    uint32_t words[2];
    memcpy(words, &li.xdp, sizeof(words));
    o.Set("ifindex", words[0]);
    o.Set("attachType", words[1]);
  }
  return o;
}

Napi::Value ProgInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0, "bpf_obj_get_info_by_fd", "progFd");
  bpf_prog_info pi;
  memset(&pi, 0, sizeof(pi));
  __u32 len = sizeof(pi);
  int r = bpf_obj_get_info_by_fd(fd, &pi, &len);
  if (r) throw MakeError(env, "bpf_obj_get_info_by_fd", ErrOf(r), "prog fd " + std::to_string(fd));
  char tag[2 * BPF_TAG_SIZE + 1];
  for (int i = 0; i < BPF_TAG_SIZE; i++) snprintf(tag + 2 * i, 3, "%02x", pi.tag[i]);
  Napi::Object o = Napi::Object::New(env);
  o.Set("id", pi.id);
  o.Set("name", pi.name);
  o.Set("type", pi.type);
  o.Set("tag", tag);
  return o;
}

Napi::Value CgroupQuery(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* op = "bpf_prog_query_opts";
  std::string cg = ArgStr(info, 0, op, "cgroupPath");
  std::string at = ArgStr(info, 1, op, "attachType");
  bpf_attach_type type = CgroupAttachType(env, at, op);
  int cgFd = OpenCgroup(env, cg);
  std::vector<__u32> ids(64);
  int e = 0;
  for (;;) {
    KPR_OPTS(bpf_prog_query_opts, qo);
    qo.prog_ids = ids.data();
    qo.prog_cnt = static_cast<__u32>(ids.size());
    int r = bpf_prog_query_opts(cgFd, type, &qo);
    if (r == 0) {
      ids.resize(qo.prog_cnt);
      break;
    }
    e = ErrOf(r);
    if (e == ENOSPC && qo.prog_cnt > ids.size()) {  // more attached than we had room for
      ids.resize(qo.prog_cnt);
      e = 0;
      continue;
    }
    break;
  }
  close(cgFd);
  if (e) throw MakeError(env, op, e, "cgroup '" + cg + "' " + at);
  Napi::Array out = Napi::Array::New(env, ids.size());
  for (size_t i = 0; i < ids.size(); i++) out.Set(i, ids[i]);
  return out;
}

// ---------------------------------------------------------------------------
// tc (clsact + direct-action cls_bpf filter) and tcx links

bpf_tc_attach_point TcDirection(const Napi::CallbackInfo& info, size_t i, const char* op) {
  std::string d = ArgStr(info, i, op, "direction");
  if (d == "ingress") return BPF_TC_INGRESS;
  if (d == "egress") return BPF_TC_EGRESS;
  throw ArgError<Napi::TypeError>(info.Env(), op, "direction must be 'ingress' or 'egress'");
}

// Detach/query need an exact filter identity; validate it here so that a
// kernel EINVAL can only mean "no clsact qdisc on this device" (tc replies
// "Parent Qdisc doesn't exists" with EINVAL), which we treat as "not attached".
void TcCheckIdent(const Napi::CallbackInfo& info, const char* op, int ifindex, uint32_t handle,
                  uint32_t prio) {
  if (ifindex <= 0 || handle == 0 || prio == 0 || prio > 0xffff)
    throw ArgError<Napi::RangeError>(info.Env(), op,
                                     "need ifindex > 0, handle > 0 and 0 < priority <= 65535");
}

std::string TcCtx(int ifindex, bpf_tc_attach_point dir, uint32_t handle, uint32_t prio) {
  return "ifindex " + std::to_string(ifindex) + (dir == BPF_TC_INGRESS ? " ingress" : " egress") +
         " handle " + std::to_string(handle) + " priority " + std::to_string(prio);
}

Napi::Value TcAttach(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int ifindex = ArgInt(info, 0, "bpf_tc_attach", "ifindex");
  bpf_tc_attach_point dir = TcDirection(info, 1, "bpf_tc_attach");
  int progFd = ArgFd(info, 2, "bpf_tc_attach", "progFd");
  // Fixed default handle/priority so that re-attaching replaces our filter
  // instead of stacking a second one.
  uint32_t handle = 1, prio = 1;
  if (info.Length() > 3 && info[3].IsObject()) {
    Napi::Object o = info[3].As<Napi::Object>();
    Napi::Value h = o.Get("handle"), p = o.Get("priority");
    if (h.IsNumber()) handle = h.As<Napi::Number>().Uint32Value();
    if (p.IsNumber()) prio = p.As<Napi::Number>().Uint32Value();
  }
  TcCheckIdent(info, "bpf_tc_attach", ifindex, handle, prio);
  KPR_OPTS(bpf_tc_hook, hook);
  hook.ifindex = ifindex;
  hook.attach_point = dir;
  int r = bpf_tc_hook_create(&hook);  // adds the clsact qdisc if missing
  if (r && ErrOf(r) != EEXIST)
    throw MakeError(env, "bpf_tc_hook_create", ErrOf(r), TcCtx(ifindex, dir, handle, prio));
  KPR_OPTS(bpf_tc_opts, to);
  to.prog_fd = progFd;
  to.flags = BPF_TC_F_REPLACE;
  to.handle = handle;
  to.priority = prio;
  r = bpf_tc_attach(&hook, &to);
  if (r) throw MakeError(env, "bpf_tc_attach", ErrOf(r), TcCtx(ifindex, dir, handle, prio));
  Napi::Object out = Napi::Object::New(env);
  out.Set("handle", to.handle);
  out.Set("priority", to.priority);
  return out;
}

// The (device, direction, handle, priority) of one filter: the arguments
// tcDetach and tcQuery share, checked.
struct TcFilter {
  int ifindex;
  bpf_tc_attach_point dir;
  uint32_t handle, prio;
  std::string Ctx() const { return TcCtx(ifindex, dir, handle, prio); }
};

TcFilter ArgTcFilter(const Napi::CallbackInfo& info, const char* op) {
  TcFilter f{ArgInt(info, 0, op, "ifindex"), TcDirection(info, 1, op), ArgU32(info, 2, op, "handle"),
             ArgU32(info, 3, op, "priority")};
  TcCheckIdent(info, op, f.ifindex, f.handle, f.prio);
  return f;
}

// Runs bpf_tc_detach or bpf_tc_query on one filter. ENOENT (no such filter)
// and EINVAL (no clsact qdisc, see TcCheckIdent) are returned, not thrown.
int TcFilterOp(const Napi::CallbackInfo& info, const char* op, int (*call)(const bpf_tc_hook*, bpf_tc_opts*),
               bpf_tc_opts* to) {
  TcFilter f = ArgTcFilter(info, op);
  KPR_OPTS(bpf_tc_hook, hook);
  hook.ifindex = f.ifindex;
  hook.attach_point = f.dir;
  to->handle = f.handle;
  to->priority = f.prio;
  int r = call(&hook, to);
  if (r && ErrOf(r) != ENOENT && ErrOf(r) != EINVAL) throw MakeError(info.Env(), op, ErrOf(r), f.Ctx());
  return r;
}

Napi::Value TcDetach(const Napi::CallbackInfo& info) {
  KPR_OPTS(bpf_tc_opts, to);
  TcFilterOp(info, "bpf_tc_detach", [](const bpf_tc_hook* h, bpf_tc_opts* o) { return bpf_tc_detach(h, o); }, &to);
  return info.Env().Undefined();
}

Napi::Value TcQuery(const Napi::CallbackInfo& info) {
  KPR_OPTS(bpf_tc_opts, to);
  if (TcFilterOp(info, "bpf_tc_query", bpf_tc_query, &to)) return info.Env().Null();
  return Napi::Number::New(info.Env(), to.prog_id);
}

Napi::Value TcxAttach(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* op = "bpf_link_create";
  int ifindex = ArgInt(info, 0, op, "ifindex");
  bpf_tc_attach_point dir = TcDirection(info, 1, op);
  int progFd = ArgFd(info, 2, op, "progFd");
  // libbpf 1.1 has no tcx helpers; for tcx the link target_fd is the ifindex.
  auto type = static_cast<bpf_attach_type>(dir == BPF_TC_INGRESS ? kTcxIngress : kTcxEgress);
  KPR_OPTS(bpf_link_create_opts, lo);
  int link = bpf_link_create(progFd, ifindex, type, &lo);
  if (link < 0)
    throw MakeError(env, op, ErrOf(link),
                    "tcx prog fd " + std::to_string(progFd) + " → ifindex " + std::to_string(ifindex) +
                        (dir == BPF_TC_INGRESS ? " ingress" : " egress"));
  return Napi::Number::New(env, link);
}

// ---------------------------------------------------------------------------
// BPF_PROG_TEST_RUN

Napi::Value ProgTestRun(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* op = "bpf_prog_test_run_opts";
  int progFd = ArgFd(info, 0, op, "progFd");
  Bytes data = ArgBytes(info, 1, op, "data");
  int repeat = 1;
  size_t outSize = data.len + 256;  // room for programs that grow the packet
  Bytes ctxIn{nullptr, 0};
  if (info.Length() > 2 && info[2].IsObject()) {
    Napi::Object o = info[2].As<Napi::Object>();
    Napi::Value rep = o.Get("repeat"), ctx = o.Get("ctxIn"), dso = o.Get("dataSizeOut");
    if (rep.IsNumber()) repeat = rep.As<Napi::Number>().Int32Value();
    if (dso.IsNumber()) outSize = dso.As<Napi::Number>().Uint32Value();
    if (!ctx.IsUndefined() && !ctx.IsNull()) ctxIn = ToBytes(env, ctx, op, "opts.ctxIn");
  }
  std::vector<uint8_t> out(outSize), ctxOut(ctxIn.len);
  KPR_OPTS(bpf_test_run_opts, ro);
  ro.data_in = data.data;
  ro.data_size_in = static_cast<__u32>(data.len);
  ro.data_out = outSize ? out.data() : nullptr;
  ro.data_size_out = static_cast<__u32>(outSize);
  if (ctxIn.len) {
    ro.ctx_in = ctxIn.data;
    ro.ctx_size_in = static_cast<__u32>(ctxIn.len);
    ro.ctx_out = ctxOut.data();
    ro.ctx_size_out = static_cast<__u32>(ctxOut.size());
  }
  ro.repeat = repeat;
  int r = bpf_prog_test_run_opts(progFd, &ro);
  if (r) throw MakeError(env, op, ErrOf(r), "prog fd " + std::to_string(progFd));
  Napi::Object res = Napi::Object::New(env);
  res.Set("retval", Napi::Number::New(env, static_cast<int32_t>(ro.retval)));
  res.Set("data", CopyBuf(env, out.data(), std::min<size_t>(ro.data_size_out, outSize)));
  res.Set("durationNs", ro.duration);
  if (ctxIn.len)
    res.Set("ctxOut", CopyBuf(env, ctxOut.data(), std::min<size_t>(ro.ctx_size_out, ctxOut.size())));
  return res;
}

// ---------------------------------------------------------------------------
// Misc

// ---------------------------------------------------------------------------
// BPF iterators

struct IterRun {
  int err = 0;
  std::string op;
  std::string out;
};

// Runs on its own thread: setns() changes only the calling thread's network
// namespace, and the thread (with that namespace) ends when the read is done,
// so Node's threads never leave the namespace they started in.
void IterReadIn(int linkFd, const std::string& netns, IterRun* r) {
  if (!netns.empty()) {
    int nsFd = open(netns.c_str(), O_RDONLY | O_CLOEXEC);
    if (nsFd < 0) {
      r->err = errno;
      r->op = "open";
      return;
    }
    int rc = setns(nsFd, CLONE_NEWNET);
    int e = errno;
    close(nsFd);
    if (rc != 0) {
      r->err = e;
      r->op = "setns";
      return;
    }
  }
  // The socket iterators walk the namespace of the thread that opens them.
  int it = bpf_iter_create(linkFd);
  if (it < 0) {
    r->err = ErrOf(it);
    r->op = "bpf_iter_create";
    return;
  }
  char buf[4096];
  for (;;) {
    ssize_t n = read(it, buf, sizeof(buf));
    if (n == 0) break;
    if (n < 0) {
      if (errno == EINTR) continue;
      r->err = errno;
      r->op = "read";
      break;
    }
    r->out.append(buf, static_cast<size_t>(n));
  }
  close(it);
}

// iterRead(progFd, netnsPath?): attach an iterator program, read it to the
// end (in the given network namespace) and return what it wrote.
Napi::Value IterRead(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int progFd = ArgFd(info, 0, "bpf_link_create", "progFd");
  std::string netns;
  if (info.Length() > 1 && !info[1].IsUndefined() && !info[1].IsNull())
    netns = ArgStr(info, 1, "setns", "netnsPath");
  KPR_OPTS(bpf_link_create_opts, lo);
  int link = bpf_link_create(progFd, 0, BPF_TRACE_ITER, &lo);
  if (link < 0)
    throw MakeError(env, "bpf_link_create", ErrOf(link), "iterator prog fd " + std::to_string(progFd));
  IterRun r;
  std::thread t(IterReadIn, link, netns, &r);
  t.join();
  close(link);
  if (r.err)
    throw MakeError(env, r.op, r.err,
                    "iterator prog fd " + std::to_string(progFd) + (netns.empty() ? "" : " in netns '" + netns + "'"));
  return CopyBuf(env, reinterpret_cast<const uint8_t*>(r.out.data()), r.out.size());
}

#ifndef SO_NETNS_COOKIE
#define SO_NETNS_COOKIE 71
#endif

// netnsCookie(): the cookie of the caller's network namespace, the value
// bpf_get_netns_cookie() gives for sockets in it (Linux 5.14+).
Napi::Value NetnsCookie(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw MakeError(env, "socket", errno, "AF_UNIX socket for SO_NETNS_COOKIE");
  uint64_t cookie = 0;
  socklen_t len = sizeof(cookie);
  int rc = getsockopt(fd, SOL_SOCKET, SO_NETNS_COOKIE, &cookie, &len);
  int e = errno;
  close(fd);
  if (rc != 0) throw MakeError(env, "getsockopt", e, "SO_NETNS_COOKIE");
  return Napi::BigInt::New(env, cookie);
}

Napi::Value IfNameToIndex(const Napi::CallbackInfo& info) {
  std::string name = ArgStr(info, 0, "if_nametoindex", "name");
  unsigned idx = if_nametoindex(name.c_str());
  if (idx == 0) {
    int e = errno ? errno : ENODEV;
    throw MakeError(info.Env(), "if_nametoindex", e, "interface '" + name + "'");
  }
  return Napi::Number::New(info.Env(), idx);
}

Napi::Value ErrnoNameJs(const Napi::CallbackInfo& info) {
  return Napi::String::New(info.Env(), ErrnoName(ArgInt(info, 0, "errnoName", "errno")));
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  libbpf_set_print(LibbpfPrint);  // process-global; idempotent across envs
  auto* data = new AddonData();
  data->bpfObjectCtor = Napi::Persistent(BpfObject::Define(env));
  env.SetInstanceData<AddonData>(data);

  exports.Set("BpfObject", data->bpfObjectCtor.Value());
  struct Fn {
    const char* name;
    Napi::Value (*fn)(const Napi::CallbackInfo&);
  };
  const Fn fns[] = {
      {"openObject", OpenObject},         {"mapInfo", MapInfo},
      {"mapLookup", MapLookup},           {"mapUpdate", MapUpdate},
      {"mapDelete", MapDelete},           {"mapDump", MapDump},
      {"mapUpdateBatch", MapUpdateBatch}, {"mapDeleteBatch", MapDeleteBatch},
      {"mapLookupBatch", MapLookupBatch}, {"objGet", ObjGet},
      {"objPin", ObjPin},                 {"closeFd", CloseFd},
      {"progAttachCgroup", ProgAttachCgroup}, {"linkUpdate", LinkUpdate},
      {"linkDetach", LinkDetach},         {"linkInfo", LinkInfo},
      {"progInfo", ProgInfo},             {"cgroupQuery", CgroupQuery},
      {"tcAttach", TcAttach},             {"tcDetach", TcDetach},
      {"tcQuery", TcQuery},               {"tcxAttach", TcxAttach},
      {"progTestRun", ProgTestRun},       {"ifNameToIndex", IfNameToIndex},
      {"errnoName", ErrnoNameJs},         {"iterRead", IterRead},
      {"mapCreate", MapCreate},           {"mapGetFdById", MapGetFdById},
      {"netnsCookie", NetnsCookie},       {"progGetFdById", ProgGetFdById},
  };
  for (const Fn& f : fns) exports.Set(f.name, Napi::Function::New(env, f.fn, f.name));
  return exports;
}

}  // namespace

NODE_API_MODULE(kpr_bpf, Init)
