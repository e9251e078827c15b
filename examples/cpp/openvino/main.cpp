// edgeresnext OpenVINO device-app sample: verify a bundle, preprocess a PGM/PPM image exactly as training did,
// run the bundle's OpenVINO IR, print the top-k classes.
//
//   edgeresnext_ov_classify <bundle_dir> <image.pgm|image.ppm> [--top-k 5] [--device CPU] [--no-verify]
//
// Output: one line per class, best first: "<rank>\t<class index>\t<probability>\t<label>".
#include <cctype>
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
  edgeresnext::Args args;
  args.device = "CPU";
  if (!edgeresnext::parse_args(argc, argv, args)) return usage();
  try {
    edgeresnext::Bundle bundle = edgeresnext::load_bundle(args.bundle_dir, args.verify);
    const edgeresnext::Json& artifact = bundle.artifact("openvino", {"ir", "onnx"});
    const auto& shape = bundle.input_shape;  // N, C, H, W
    std::vector<float> input = edgeresnext::preprocess(edgeresnext::read_pnm(args.image_path), bundle.preprocess,
                                                       static_cast<int>(shape[2]), static_cast<int>(shape[3]));

    ov::Core core;
    std::shared_ptr<ov::Model> model = core.read_model(bundle.path(artifact["path"].str()));
    ov::CompiledModel compiled = core.compile_model(model, args.device, compile_config(artifact));
    ov::InferRequest request = compiled.create_infer_request();
    // Batch of one: the input tensor wraps our buffer (no copy); a static batch > 1 would need padding.
    ov::Tensor tensor(ov::element::f32, ov::Shape{1, size_t(shape[1]), size_t(shape[2]), size_t(shape[3])},
                      input.data());
    request.set_input_tensor(tensor);
    request.infer();
    ov::Tensor output = request.get_output_tensor();
    if (output.get_element_type() != ov::element::f32) throw edgeresnext::BundleError("expected float32 logits");
    edgeresnext::print_top_k(bundle, output.data<float>(), output.get_size(), args.k);
  } catch (const std::exception& err) {
    std::cerr << "edgeresnext_ov_classify: error: " << err.what() << "\n";
    return 1;
  }
  return 0;
}
