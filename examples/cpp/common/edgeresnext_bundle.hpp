// edgeresnext bundle reader for C++ device apps (header-only, C++17, standard library only).
//
// What it does, so that a device app needs no JSON, image or crypto library:
//   * parses manifest.json (a small JSON reader: objects, arrays, strings, numbers, true/false/null);
//   * checks the sha256 and size of every file the manifest lists (a tampered or missing file is an error);
//   * reads PGM/PPM images (binary P5/P6, maxval 255);
//   * preprocesses exactly like edgeresnext.data.preprocess.Preprocess (Pillow): convert to L or RGB with
//     Pillow's integer formulas, resize the shorter side with Pillow's antialiased bilinear resampling
//     (fixed point, 22 fractional bits), center crop, x / 255, (x - mean) / std, HWC to NCHW float32;
//   * what a TensorRT engine was built for (TensorRT version, GPU, SM) and whether it can run here;
//   * softmax + top-k, best first (ties keep the lower class index, like the Python runtime);
//   * the samples' shared command line and output lines.
#pragma once

#include <algorithm>
#include <array>
#include <cctype>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <memory>
#include <numeric>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace edgeresnext {

struct BundleError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// ------------------------------------------------------------------------------------------------ JSON
struct Json {
  enum class Type { Null, Bool, Number, String, Array, Object } type = Type::Null;
  bool boolean = false;
  double number = 0.0;
  std::string string;
  std::vector<Json> array;
  std::map<std::string, Json> object;

  bool has(const std::string& key) const { return type == Type::Object && object.count(key) > 0; }
  const Json& operator[](const std::string& key) const {
    if (!has(key)) throw BundleError("manifest: missing key '" + key + "'");
    return object.at(key);
  }
  const Json& operator[](size_t index) const {
    if (type != Type::Array || index >= array.size()) throw BundleError("manifest: index out of range");
    return array[index];
  }
  const std::string& str() const {
    if (type != Type::String) throw BundleError("manifest: expected a string");
    return string;
  }
  double num() const {
    if (type != Type::Number) throw BundleError("manifest: expected a number");
    return number;
  }
  bool is_null() const { return type == Type::Null; }
};

class JsonParser {
 public:
  explicit JsonParser(const std::string& text) : s_(text) {}
  Json parse() {
    Json value = parse_value();
    skip_ws();
    if (pos_ != s_.size()) fail("trailing characters");
    return value;
  }

 private:
  const std::string& s_;
  size_t pos_ = 0;

  [[noreturn]] void fail(const std::string& what) const {
    throw BundleError("manifest.json: " + what + " at offset " + std::to_string(pos_));
  }
  void skip_ws() {
    while (pos_ < s_.size() && (s_[pos_] == ' ' || s_[pos_] == '\n' || s_[pos_] == '\r' || s_[pos_] == '\t')) ++pos_;
  }
  char peek() {
    skip_ws();
    if (pos_ >= s_.size()) fail("unexpected end");
    return s_[pos_];
  }
  void expect(char c) {
    if (peek() != c) fail(std::string("expected '") + c + "'");
    ++pos_;
  }
  bool literal(const char* word) {
    size_t n = std::char_traits<char>::length(word);
    if (s_.compare(pos_, n, word) == 0) {
      pos_ += n;
      return true;
    }
    return false;
  }
  static void append_utf8(std::string& out, uint32_t cp) {
    if (cp < 0x80) {
      out += static_cast<char>(cp);
    } else if (cp < 0x800) {
      out += static_cast<char>(0xC0 | (cp >> 6));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      out += static_cast<char>(0xE0 | (cp >> 12));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
      out += static_cast<char>(0xF0 | (cp >> 18));
      out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    }
  }
  uint32_t hex4() {
    if (pos_ + 4 > s_.size()) fail("short \\u escape");
    uint32_t value = static_cast<uint32_t>(std::stoul(s_.substr(pos_, 4), nullptr, 16));
    pos_ += 4;
    return value;
  }
  std::string parse_string() {
    expect('"');
    std::string out;
    while (true) {
      if (pos_ >= s_.size()) fail("unterminated string");
      char c = s_[pos_++];
      if (c == '"') break;
      if (c != '\\') {
        out += c;
        continue;
      }
      if (pos_ >= s_.size()) fail("unterminated escape");
      char e = s_[pos_++];
      switch (e) {
        case '"': out += '"'; break;
        case '\\': out += '\\'; break;
        case '/': out += '/'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          uint32_t cp = hex4();
          if (cp >= 0xD800 && cp < 0xDC00 && s_.compare(pos_, 2, "\\u") == 0) {  // surrogate pair
            pos_ += 2;
            uint32_t low = hex4();
            cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
          }
          append_utf8(out, cp);
          break;
        }
        default: fail("bad escape");
      }
    }
    return out;
  }
  // Comma-separated items up to `close` (the opening bracket is already read); `item` reads one.
  template <class Item>
  void parse_items(char close, Item&& item) {
    if (peek() == close) {
      ++pos_;
      return;
    }
    while (true) {
      item();
      if (peek() != ',') break;
      ++pos_;
    }
    expect(close);
  }
  Json parse_value() {
    Json v;
    char c = peek();
    if (c == '{') {
      ++pos_;
      v.type = Json::Type::Object;
      parse_items('}', [&] {
        std::string key = parse_string();
        expect(':');
        v.object[key] = parse_value();
      });
      return v;
    }
    if (c == '[') {
      ++pos_;
      v.type = Json::Type::Array;
      parse_items(']', [&] { v.array.push_back(parse_value()); });
      return v;
    }
    if (c == '"') {
      v.type = Json::Type::String;
      v.string = parse_string();
      return v;
    }
    if (literal("true")) {
      v.type = Json::Type::Bool;
      v.boolean = true;
      return v;
    }
    if (literal("false")) {
      v.type = Json::Type::Bool;
      return v;
    }
    if (literal("null")) return v;
    size_t end = pos_;
    while (end < s_.size() && std::string("+-0123456789.eE").find(s_[end]) != std::string::npos) ++end;
    if (end == pos_) fail("unexpected character");
    v.type = Json::Type::Number;
    v.number = std::stod(s_.substr(pos_, end - pos_));
    pos_ = end;
    return v;
  }
};

inline std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw BundleError(path + ": cannot open");
  std::ostringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

// ------------------------------------------------------------------------------------------------ SHA-256
class Sha256 {
 public:
  Sha256() { h_ = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19}; }
  void update(const unsigned char* data, size_t size) {
    for (size_t i = 0; i < size; ++i) {
      block_[fill_++] = data[i];
      if (fill_ == 64) {
        compress();
        fill_ = 0;
      }
    }
    bits_ += static_cast<uint64_t>(size) * 8;
  }
  std::string hexdigest() {
    uint64_t bits = bits_;
    unsigned char pad = 0x80;
    update(&pad, 1);
    unsigned char zero = 0;
    while (fill_ != 56) update(&zero, 1);
    unsigned char length[8];
    for (int i = 0; i < 8; ++i) length[i] = static_cast<unsigned char>(bits >> (56 - 8 * i));
    update(length, 8);
    static const char* digits = "0123456789abcdef";
    std::string out;
    for (uint32_t word : h_)
      for (int shift = 28; shift >= 0; shift -= 4) out += digits[(word >> shift) & 0xF];
    return out;
  }

 private:
  std::array<uint32_t, 8> h_;
  std::array<unsigned char, 64> block_{};
  size_t fill_ = 0;
  uint64_t bits_ = 0;

  static uint32_t rotr(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }
  void compress() {
    static const uint32_t k[64] = {
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
        0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
        0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
        0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
        0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
        0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
        0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};
    uint32_t w[64];
    for (int i = 0; i < 16; ++i)
      w[i] = (uint32_t(block_[4 * i]) << 24) | (uint32_t(block_[4 * i + 1]) << 16) |
             (uint32_t(block_[4 * i + 2]) << 8) | uint32_t(block_[4 * i + 3]);
    for (int i = 16; i < 64; ++i) {
      uint32_t s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
      uint32_t s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
      w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = h_[0], b = h_[1], c = h_[2], d = h_[3], e = h_[4], f = h_[5], g = h_[6], h = h_[7];
    for (int i = 0; i < 64; ++i) {
      uint32_t t1 = h + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + k[i] + w[i];
      uint32_t t2 = (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
      h = g;
      g = f;
      f = e;
      e = d + t1;
      d = c;
      c = b;
      b = a;
      a = t1 + t2;
    }
    h_[0] += a; h_[1] += b; h_[2] += c; h_[3] += d; h_[4] += e; h_[5] += f; h_[6] += g; h_[7] += h;
  }
};

inline std::string sha256_of_file(const std::string& path, uint64_t* size = nullptr) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw BundleError(path + ": missing");
  Sha256 digest;
  std::vector<char> buffer(1 << 16);
  uint64_t total = 0;
  while (in) {
    in.read(buffer.data(), static_cast<std::streamsize>(buffer.size()));
    std::streamsize got = in.gcount();
    digest.update(reinterpret_cast<const unsigned char*>(buffer.data()), static_cast<size_t>(got));
    total += static_cast<uint64_t>(got);
  }
  if (size) *size = total;
  return digest.hexdigest();
}

// ------------------------------------------------------------------------------------------------ bundle
struct Preprocess {
  std::string channels = "RGB";  // "L" or "RGB"
  int resize = 0;                // shorter side; 0 = keep
  int crop = 0;                  // center crop; 0 = keep
  std::vector<float> mean, std;
};

struct Bundle {
  std::string dir;
  Json manifest;
  std::vector<std::string> labels;
  Preprocess preprocess;
  std::vector<int64_t> input_shape;  // NCHW, -1 = dynamic
  std::string input_name, output_name, precision;

  std::string path(const std::string& relative) const { return dir + "/" + relative; }

  // The first artifact of ``backend`` (and one of ``kinds``); returns its bundle-relative path.
  const Json& artifact(const std::string& backend, const std::vector<std::string>& kinds) const {
    for (const Json& a : manifest["artifacts"].array)
      if (a["backend"].str() == backend && std::find(kinds.begin(), kinds.end(), a["kind"].str()) != kinds.end())
        return a;
    throw BundleError(dir + ": the bundle has no " + backend + " artifact");
  }
};

inline bool safe_relative(const std::string& p) {
  if (p.empty() || p[0] == '/' || p.find('\\') != std::string::npos) return false;
  std::stringstream parts(p);
  std::string part;
  while (std::getline(parts, part, '/'))
    if (part == "..") return false;
  return true;
}

// Reads manifest.json and labels.txt; with ``verify`` checks every listed file's size and sha256 first.
inline Bundle load_bundle(const std::string& dir, bool verify = true) {
  Bundle b;
  b.dir = dir;
  b.manifest = JsonParser(read_file(dir + "/manifest.json")).parse();
  const Json& m = b.manifest;
  if (m["format"].str() != "edgeresnext-bundle") throw BundleError(dir + ": not an edgeresnext bundle");
  if (m["schema_version"].num() != 1)
    throw BundleError(dir + ": manifest schema_version " + std::to_string(int(m["schema_version"].num())) +
                      " is not the version 1 this sample reads");
  if (verify) {
    std::string problems;
    for (const Json& entry : m["files"].array) {
      const std::string& name = entry["path"].str();
      if (!safe_relative(name)) throw BundleError(dir + ": file path '" + name + "' leaves the bundle");
      uint64_t size = 0;
      std::string digest;
      try {
        digest = sha256_of_file(b.path(name), &size);
      } catch (const BundleError&) {
        problems += " " + name + ": missing;";
        continue;
      }
      if (size != static_cast<uint64_t>(entry["bytes"].num()) || digest != entry["sha256"].str())
        problems += " " + name + ": sha256 differs from the manifest;";
    }
    if (!problems.empty()) throw BundleError(dir + ": bundle does not match its manifest:" + problems);
  }
  std::istringstream labels(read_file(b.path(m["labels"].str())));
  for (std::string line; std::getline(labels, line);) b.labels.push_back(line);
  const Json& pre = m["preprocess"];
  b.preprocess.channels = pre["channels"].str();
  b.preprocess.resize = pre["resize"].is_null() ? 0 : int(pre["resize"].num());
  b.preprocess.crop = pre["crop"].is_null() ? 0 : int(pre["crop"].num());
  for (const Json& v : pre["mean"].array) b.preprocess.mean.push_back(float(v.num()));
  for (const Json& v : pre["std"].array) b.preprocess.std.push_back(float(v.num()));
  for (const Json& v : m["input"]["shape"].array) b.input_shape.push_back(int64_t(v.num()));
  b.input_name = m["input"]["name"].str();
  b.output_name = m["output"]["name"].str();
  b.precision = m["precision"].str();
  return b;
}

// ------------------------------------------------------------------------------------------------ TensorRT engines
// What a TensorRT engine artifact was built for: the manifest's "engine" section (an engine built on the device and
// recorded in the bundle by `edgeresnext bundle build-engine` or the kit's build_engine.sh), else what its builder
// recorded in "info" (an engine built on the build host). Unknown fields stay empty.
struct EngineRecord {
  std::string tensorrt_version, gpu_name, gpu_sm, build_mode, onnx_path, onnx_sha256;
};

inline EngineRecord engine_record(const Json& artifact) {
  EngineRecord r;
  const Json* source = artifact.has("engine") ? &artifact["engine"] : artifact.has("info") ? &artifact["info"] : nullptr;
  if (source == nullptr) return r;
  auto text = [](const Json& object, const char* key) {
    return object.has(key) && object[key].type == Json::Type::String ? object[key].string : std::string();
  };
  r.tensorrt_version = text(*source, "tensorrt_version");
  r.gpu_name = text(*source, "gpu_name");
  r.gpu_sm = text(*source, "gpu_sm");
  r.build_mode = text(*source, "build_mode");
  if (source->has("onnx") && (*source)["onnx"].type == Json::Type::Object) {
    r.onnx_path = text((*source)["onnx"], "path");
    r.onnx_sha256 = text((*source)["onnx"], "sha256");
  } else {
    r.onnx_path = text(*source, "onnx");
    r.onnx_sha256 = text(*source, "onnx_sha256");
  }
  return r;
}

// (major, minor, patch) of a version string: "10.3.0.30" and "10.3" compare as 10.3.0; no leading number: all -1.
inline std::array<long, 3> release(const std::string& version) {
  std::array<long, 3> parts{-1, -1, -1};
  std::stringstream in(version);
  std::string part;
  for (size_t i = 0; i < parts.size() && std::getline(in, part, '.'); ++i) {
    size_t digits = 0;
    while (digits < part.size() && std::isdigit(static_cast<unsigned char>(part[digits]))) ++digits;
    if (digits == 0) break;
    parts[i] = std::stol(part.substr(0, digits));
  }
  if (parts[0] < 0 || parts[1] < 0) return {-1, -1, -1};
  if (parts[2] < 0) parts[2] = 0;
  return parts;
}

// Empty if an engine built as `record` says can run with TensorRT `version` on a GPU of compute capability `sm`
// ("8.7"); else what differs. Engines run only with the TensorRT version and SM that built them: check this before
// deserialising, so the message can say what to do. A field the record or the caller does not know is not held
// against the engine (TensorRT still refuses what it cannot run).
inline std::string engine_mismatch(const EngineRecord& r, const std::string& version, const std::string& sm,
                                   const std::string& gpu = "") {
  std::vector<std::string> differs;
  if (!r.tensorrt_version.empty() && !version.empty() && release(r.tensorrt_version) != release(version))
    differs.push_back("the TensorRT version");
  if (!r.gpu_sm.empty() && !sm.empty() && r.gpu_sm != sm) differs.push_back("the GPU's SM");
  if (differs.empty()) return "";
  auto known = [](const std::string& value) { return value.empty() ? std::string("?") : value; };
  std::string what = differs.size() == 2 ? differs[0] + " and " + differs[1] + " differ" : differs[0] + " differs";
  return "built with TensorRT " + known(r.tensorrt_version) + " for " + known(r.gpu_name) + " (SM " +
         known(r.gpu_sm) + "), but this device runs TensorRT " + known(version) + " on " + known(gpu) + " (SM " +
         known(sm) + "): " + what;
}

// The device check of an engine built on the device (the engine run on the bundle's check set after the build and
// compared with the build host; recorded in the engine record by the device step): status "checked", "failed" or
// "unchecked" (no check recorded, or it could not run), and what it said. Empty status: not an engine built on the
// device. The sample refuses a failed engine (its predictions disagree with what the host validated) and warns on
// an unchecked one; see the README's Jetson section.
struct DeviceCheck {
  std::string status, message;
};

inline DeviceCheck device_check(const Json& artifact) {
  DeviceCheck c;
  if (!artifact.has("engine") || artifact["kind"].str() != "engine") return c;
  const Json& engine = artifact["engine"];
  c.status = "unchecked";
  c.message = "no device check recorded";
  if (!engine.has("device_check") || engine["device_check"].type != Json::Type::Object) return c;
  const Json& check = engine["device_check"];
  if (check.has("status") && check["status"].type == Json::Type::String) c.status = check["status"].string;
  if (check.has("reason") && check["reason"].type == Json::Type::String) {
    c.message = check["reason"].string;
  } else if (check.has("gate") && check["gate"].has("message") && check["gate"]["message"].type == Json::Type::String) {
    c.message = check["gate"]["message"].string;
  }
  return c;
}

// How to rebuild a bundle's engine on this device (the bundle carries the TensorRT build kit).
inline std::string rebuild_hint(const std::string& bundle_dir, const Json& manifest) {
  for (const Json& a : manifest["artifacts"].array)
    if (a["backend"].str() == "tensorrt" && a["kind"].str() == "kit")
      return "rebuild it on this device: edgeresnext bundle build-engine " + bundle_dir + " (or " + bundle_dir + "/" +
             a["path"].str() + "/build_engine.sh without edgeresnext)";
  return "rebuild it on this device from the bundle's Q/DQ ONNX";
}

// ------------------------------------------------------------------------------------------------ images
struct Image {
  int width = 0, height = 0, channels = 0;  // channels 1 (L) or 3 (RGB), interleaved
  std::vector<uint8_t> pixels;
};

// Binary PGM (P5) or PPM (P6) with maxval 255.
inline Image read_pnm(const std::string& path) {
  std::string data = read_file(path);
  size_t pos = 0;
  auto token = [&]() {
    while (pos < data.size()) {
      if (data[pos] == '#') {
        while (pos < data.size() && data[pos] != '\n') ++pos;
      } else if (std::isspace(static_cast<unsigned char>(data[pos]))) {
        ++pos;
      } else {
        break;
      }
    }
    size_t start = pos;
    while (pos < data.size() && !std::isspace(static_cast<unsigned char>(data[pos]))) ++pos;
    return data.substr(start, pos - start);
  };
  std::string magic = token();
  if (magic != "P5" && magic != "P6") throw BundleError(path + ": not a binary PGM (P5) or PPM (P6) image");
  Image img;
  img.channels = magic == "P5" ? 1 : 3;
  try {
    img.width = std::stoi(token());
    img.height = std::stoi(token());
  } catch (const std::exception&) {
    throw BundleError(path + ": bad PNM header");
  }
  int maxval = std::stoi(token());
  if (maxval != 255) throw BundleError(path + ": maxval " + std::to_string(maxval) + "; this reader takes 255 only");
  ++pos;  // the single whitespace after maxval
  size_t need = size_t(img.width) * img.height * img.channels;
  if (img.width <= 0 || img.height <= 0 || data.size() < pos + need) throw BundleError(path + ": truncated image");
  img.pixels.assign(data.begin() + static_cast<std::ptrdiff_t>(pos),
                    data.begin() + static_cast<std::ptrdiff_t>(pos + need));
  return img;
}

// Pillow's conversions: RGB -> L is ITU-R 601-2 luma in 16.16 fixed point; L -> RGB copies the channel.
inline Image to_mode(const Image& in, int channels) {
  if (in.channels == channels) return in;
  Image out{in.width, in.height, channels, std::vector<uint8_t>(size_t(in.width) * in.height * channels)};
  size_t n = size_t(in.width) * in.height;
  for (size_t i = 0; i < n; ++i) {
    if (channels == 1) {
      const uint8_t* p = &in.pixels[3 * i];
      out.pixels[i] = uint8_t((p[0] * 19595u + p[1] * 38470u + p[2] * 7471u + 0x8000u) >> 16);
    } else {
      out.pixels[3 * i] = out.pixels[3 * i + 1] = out.pixels[3 * i + 2] = in.pixels[i];
    }
  }
  return out;
}

namespace detail {
constexpr int kPrecisionBits = 32 - 8 - 2;  // Pillow's fixed point for 8-bit resampling

// Pillow's precompute_coeffs + normalize_coeffs_8bpc for the bilinear (triangle) filter, support 1.
inline void resample_coeffs(int in_size, int out_size, std::vector<int>& bounds, std::vector<int32_t>& kk, int& ksize) {
  double scale = double(in_size) / out_size;
  double filterscale = std::max(scale, 1.0);
  double support = 1.0 * filterscale;
  ksize = int(std::ceil(support)) * 2 + 1;
  bounds.assign(size_t(out_size) * 2, 0);
  kk.assign(size_t(out_size) * ksize, 0);
  std::vector<double> k(ksize);
  for (int xx = 0; xx < out_size; ++xx) {
    double center = (xx + 0.5) * scale;
    double ss = 1.0 / filterscale;
    int xmin = std::max(int(center - support + 0.5), 0);
    int xmax = std::min(int(center + support + 0.5), in_size) - xmin;
    double ww = 0.0;
    for (int x = 0; x < xmax; ++x) {
      double t = std::fabs((x + xmin - center + 0.5) * ss);
      k[x] = t < 1.0 ? 1.0 - t : 0.0;
      ww += k[x];
    }
    for (int x = 0; x < xmax; ++x) {
      double w = ww != 0.0 ? k[x] / ww : 0.0;
      kk[size_t(xx) * ksize + x] = int32_t(w < 0 ? w * (1 << kPrecisionBits) - 0.5 : w * (1 << kPrecisionBits) + 0.5);
    }
    bounds[2 * xx] = xmin;
    bounds[2 * xx + 1] = xmax;
  }
}

inline uint8_t clip8(int64_t v) {
  v >>= kPrecisionBits;
  return uint8_t(v < 0 ? 0 : v > 255 ? 255 : v);
}
}  // namespace detail

// Pillow's Image.resize(size, Image.BILINEAR): horizontal pass, then vertical pass, 8-bit between them.
inline Image resize_bilinear(const Image& in, int out_w, int out_h) {
  Image cur = in;
  if (out_w != cur.width) {
    std::vector<int> bounds;
    std::vector<int32_t> kk;
    int ksize;
    detail::resample_coeffs(cur.width, out_w, bounds, kk, ksize);
    Image out{out_w, cur.height, cur.channels, std::vector<uint8_t>(size_t(out_w) * cur.height * cur.channels)};
    for (int y = 0; y < cur.height; ++y)
      for (int xx = 0; xx < out_w; ++xx)
        for (int c = 0; c < cur.channels; ++c) {
          int64_t ss = int64_t(1) << (detail::kPrecisionBits - 1);
          for (int x = 0; x < bounds[2 * xx + 1]; ++x)
            ss += int64_t(cur.pixels[(size_t(y) * cur.width + x + bounds[2 * xx]) * cur.channels + c]) *
                  kk[size_t(xx) * ksize + x];
          out.pixels[(size_t(y) * out_w + xx) * cur.channels + c] = detail::clip8(ss);
        }
    cur = std::move(out);
  }
  if (out_h != cur.height) {
    std::vector<int> bounds;
    std::vector<int32_t> kk;
    int ksize;
    detail::resample_coeffs(cur.height, out_h, bounds, kk, ksize);
    Image out{cur.width, out_h, cur.channels, std::vector<uint8_t>(size_t(cur.width) * out_h * cur.channels)};
    for (int yy = 0; yy < out_h; ++yy)
      for (int x = 0; x < cur.width; ++x)
        for (int c = 0; c < cur.channels; ++c) {
          int64_t ss = int64_t(1) << (detail::kPrecisionBits - 1);
          for (int y = 0; y < bounds[2 * yy + 1]; ++y)
            ss += int64_t(cur.pixels[(size_t(y + bounds[2 * yy]) * cur.width + x) * cur.channels + c]) *
                  kk[size_t(yy) * ksize + y];
          out.pixels[(size_t(yy) * cur.width + x) * cur.channels + c] = detail::clip8(ss);
        }
    cur = std::move(out);
  }
  return cur;
}

// The model input (CHW float32) for one image, exactly as Preprocess.image_to_array computes it.
inline std::vector<float> preprocess(const Image& image, const Preprocess& p, int expect_h, int expect_w) {
  Image img = to_mode(image, p.channels == "L" ? 1 : 3);
  if (p.resize > 0) {
    int short_side = std::min(img.width, img.height);
    if (short_side != p.resize) {
      double scale = double(p.resize) / short_side;
      // Python's round(): halves go to the even neighbour, as std::nearbyint does by default.
      int w = std::max(1, int(std::nearbyint(img.width * scale)));
      int h = std::max(1, int(std::nearbyint(img.height * scale)));
      img = resize_bilinear(img, w, h);
    }
  }
  if (p.crop > 0) {
    if (img.width < p.crop || img.height < p.crop)
      throw BundleError("image of " + std::to_string(img.width) + "x" + std::to_string(img.height) +
                        " is smaller than the crop " + std::to_string(p.crop));
    int left = (img.width - p.crop) / 2, top = (img.height - p.crop) / 2;
    Image out{p.crop, p.crop, img.channels, std::vector<uint8_t>(size_t(p.crop) * p.crop * img.channels)};
    for (int y = 0; y < p.crop; ++y)
      std::copy_n(&img.pixels[(size_t(y + top) * img.width + left) * img.channels], size_t(p.crop) * img.channels,
                  &out.pixels[size_t(y) * p.crop * img.channels]);
    img = std::move(out);
  }
  if (img.height != expect_h || img.width != expect_w)
    throw BundleError("preprocessed image is " + std::to_string(img.width) + "x" + std::to_string(img.height) +
                      ", the model takes " + std::to_string(expect_w) + "x" + std::to_string(expect_h));
  std::vector<float> chw(size_t(img.channels) * img.height * img.width);
  size_t plane = size_t(img.height) * img.width;
  for (size_t i = 0; i < plane; ++i)
    for (int c = 0; c < img.channels; ++c) {
      float x = float(img.pixels[i * img.channels + c]) / 255.0f;  // float32 steps, as numpy does
      chw[size_t(c) * plane + i] = (x - p.mean[size_t(c)]) / p.std[size_t(c)];
    }
  return chw;
}

// ------------------------------------------------------------------------------------------------ top-k
struct Scored {
  int index;
  double score;
};

inline std::vector<Scored> top_k(const float* logits, size_t n, size_t k) {
  double peak = *std::max_element(logits, logits + n);
  std::vector<double> probs(n);
  double sum = 0.0;
  for (size_t i = 0; i < n; ++i) sum += probs[i] = std::exp(double(logits[i]) - peak);
  std::vector<int> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return probs[size_t(a)] > probs[size_t(b)]; });
  std::vector<Scored> out;
  for (size_t i = 0; i < std::min(k, n); ++i) out.push_back({order[i], probs[size_t(order[i])] / sum});
  return out;
}

// Prints the top-k classes of `logits` (one image), best first: "<rank>\t<class index>\t<probability>\t<label>".
inline void print_top_k(const Bundle& bundle, const float* logits, size_t classes, size_t k) {
  if (classes != bundle.labels.size())
    throw BundleError("the model gives " + std::to_string(classes) + " logits for " +
                      std::to_string(bundle.labels.size()) + " labels");
  std::vector<Scored> best = top_k(logits, classes, k);
  for (size_t rank = 0; rank < best.size(); ++rank)
    std::printf("%zu\t%d\t%.9g\t%s\n", rank + 1, best[rank].index, best[rank].score,
                bundle.labels[size_t(best[rank].index)].c_str());
}

// ------------------------------------------------------------------------------------------------ command line
// <bundle_dir> <image.pgm|image.ppm> [--top-k N] [--device NAME] [--no-verify]
struct Args {
  std::string bundle_dir, image_path;
  std::string device;  // empty: the sample takes no --device
  size_t k = 5;
  bool verify = true;
};

// Reads the command line into `args` (whose `device` holds the default, or is empty when the sample has no
// device to choose); false when it is malformed.
inline bool parse_args(int argc, char** argv, Args& args) {
  if (argc < 3) return false;
  args.bundle_dir = argv[1];
  args.image_path = argv[2];
  for (int i = 3; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--top-k" && i + 1 < argc) {
      args.k = static_cast<size_t>(std::atoi(argv[++i]));
    } else if (arg == "--device" && i + 1 < argc && !args.device.empty()) {
      args.device = argv[++i];
    } else if (arg == "--no-verify") {
      args.verify = false;
    } else {
      return false;
    }
  }
  return true;
}

}  // namespace edgeresnext
