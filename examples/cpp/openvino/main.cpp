// edgeresnext OpenVINO device-app sample: verify a bundle, preprocess a PGM/PPM image exactly as training did,
// run the bundle's OpenVINO IR, print the top-k classes.
//
//   edgeresnext_ov_classify <bundle_dir> <image.pgm|image.ppm> [--top-k 5] [--device CPU] [--no-verify]
//
// Output: one line per class, best first: "<rank>\t<class index>\t<probability>\t<label>".
#include <cctype>
#include <cstdlib>
#include <iostream>
#include <string>
#include <vector>

#include <openvino/openvino.hpp>

#include "edgeresnext_bundle.hpp"

namespace {

int usage() {
  std::cerr << "usage: edgeresnext_ov_classify <bundle_dir> <image.pgm|image.ppm> [--top-k N] [--device CPU] "
               "[--no-verify]\n";
  return 2;
}

// f32 inference precision: the CPU plugin would otherwise pick bf16 on CPUs that have it, while the bundle was
// validated in f32. The performance hint and thread count are the target's, recorded in the artifact's info.
ov::AnyMap compile_config(const edgeresnext::Json& artifact) {
  ov::AnyMap config{{ov::hint::performance_mode.name(), std::string("LATENCY")},
                    {ov::hint::inference_precision.name(), std::string("f32")}};
  if (!artifact.has("info")) return config;
  const edgeresnext::Json& info = artifact["info"];
  if (info.has("hint") && info["hint"].type == edgeresnext::Json::Type::String) {
    std::string hint = info["hint"].string;
    for (char& c : hint) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    config[ov::hint::performance_mode.name()] = hint;
  }
  if (info.has("threads") && info["threads"].type == edgeresnext::Json::Type::Number)
    config[ov::inference_num_threads.name()] = static_cast<int>(info["threads"].number);
  return config;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) return usage();
  std::string bundle_dir = argv[1], image_path = argv[2], device = "CPU";
  size_t k = 5;
  bool verify = true;
  for (int i = 3; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--top-k" && i + 1 < argc) {
      k = static_cast<size_t>(std::atoi(argv[++i]));
    } else if (arg == "--device" && i + 1 < argc) {
      device = argv[++i];
    } else if (arg == "--no-verify") {
      verify = false;
    } else {
      return usage();
    }
  }
  try {
    edgeresnext::Bundle bundle = edgeresnext::load_bundle(bundle_dir, verify);
    const edgeresnext::Json& artifact = bundle.artifact("openvino", {"ir", "onnx"});
    const auto& shape = bundle.input_shape;  // N, C, H, W
    std::vector<float> input = edgeresnext::preprocess(edgeresnext::read_pnm(image_path), bundle.preprocess,
                                                       static_cast<int>(shape[2]), static_cast<int>(shape[3]));

    ov::Core core;
    std::shared_ptr<ov::Model> model = core.read_model(bundle.path(artifact["path"].str()));
    ov::CompiledModel compiled = core.compile_model(model, device, compile_config(artifact));
    ov::InferRequest request = compiled.create_infer_request();
    // Batch of one: the input tensor wraps our buffer (no copy); a static batch > 1 would need padding.
    ov::Tensor tensor(ov::element::f32, ov::Shape{1, size_t(shape[1]), size_t(shape[2]), size_t(shape[3])},
                      input.data());
    request.set_input_tensor(tensor);
    request.infer();
    ov::Tensor output = request.get_output_tensor();
    if (output.get_element_type() != ov::element::f32) throw edgeresnext::BundleError("expected float32 logits");
    size_t classes = output.get_size();
    if (classes != bundle.labels.size())
      throw edgeresnext::BundleError("model gives " + std::to_string(classes) + " logits for " +
                                     std::to_string(bundle.labels.size()) + " labels");
    auto best = edgeresnext::top_k(output.data<float>(), classes, k);
    for (size_t rank = 0; rank < best.size(); ++rank) {
      std::printf("%zu\t%d\t%.9g\t%s\n", rank + 1, best[rank].index, best[rank].score,
                  bundle.labels[size_t(best[rank].index)].c_str());
    }
  } catch (const std::exception& err) {
    std::cerr << "edgeresnext_ov_classify: error: " << err.what() << "\n";
    return 1;
  }
  return 0;
}
