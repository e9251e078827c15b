// edgeresnext TensorRT device-app sample: verify a bundle, deserialize its engine, preprocess a PGM/PPM image as
// training did, run one inference with the TensorRT 10/11 API (name-based I/O, enqueueV3), print the top-k.
//
//   edgeresnext_trt_classify <bundle_dir> <image.pgm|image.ppm> [--top-k 5] [--no-verify] [--allow-failed-check]
//
// Engines run only with the TensorRT version and GPU (SM) that built them: build the engine on the device, into the
// bundle (`edgeresnext bundle build-engine <bundle>` or `<bundle>/kit/build_engine.sh`); the sample compares what the
// manifest records with the running TensorRT and GPU first. Output: "<rank>\t<class index>\t<probability>\t<label>".
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include <NvInfer.h>
#include <cuda_runtime_api.h>

#include "edgeresnext_bundle.hpp"

namespace {

class Logger : public nvinfer1::ILogger {
  void log(Severity severity, const char* msg) noexcept override {
    if (severity <= Severity::kWARNING) std::cerr << "TensorRT: " << msg << "\n";
  }
};

void cuda_check(cudaError_t status, const char* what) {
  if (status != cudaSuccess) throw edgeresnext::BundleError(std::string(what) + ": " + cudaGetErrorString(status));
}

struct DeviceBuffer {
  void* ptr = nullptr;
  explicit DeviceBuffer(size_t bytes) { cuda_check(cudaMalloc(&ptr, bytes), "cudaMalloc"); }
  ~DeviceBuffer() { cudaFree(ptr); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
};

int usage() {
  std::cerr << "usage: edgeresnext_trt_classify <bundle_dir> <image.pgm|image.ppm> [--top-k N] [--no-verify] "
               "[--allow-failed-check]\n";
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  // --allow-failed-check (this sample's own flag) runs an engine whose device check failed.
  bool allow_failed_check = false;
  std::vector<char*> rest;
  for (int i = 0; i < argc; ++i) {
    if (std::string(argv[i]) == "--allow-failed-check")
      allow_failed_check = true;
    else
      rest.push_back(argv[i]);
  }
  edgeresnext::Args args;  // no --device: the engine runs on the GPU that built it
  if (!edgeresnext::parse_args(static_cast<int>(rest.size()), rest.data(), args)) return usage();
  try {
    edgeresnext::Bundle bundle = edgeresnext::load_bundle(args.bundle_dir, args.verify);
    const edgeresnext::Json& artifact = bundle.artifact("tensorrt", {"engine"});
    const edgeresnext::DeviceCheck check = edgeresnext::device_check(artifact);
    if (check.status == "failed" && !allow_failed_check)
      throw edgeresnext::BundleError(bundle.path(artifact["path"].str()) + ": this engine FAILED its device check (" +
                                     check.message + "); it is refused (--allow-failed-check runs it anyway); " +
                                     edgeresnext::rebuild_hint(args.bundle_dir, bundle.manifest));
    if (check.status == "unchecked")
      std::cerr << "edgeresnext_trt_classify: warning: this engine is UNCHECKED on the device (" << check.message
                << ")\n";
    // Before deserialising: an engine runs only with the TensorRT version and SM that built it (TensorRT refuses a
    // foreign one too, but cannot say what to do). getInferLibVersion() is major * 10000 + minor * 100 + patch.
    const int version = getInferLibVersion();
    const std::string running = std::to_string(version / 10000) + "." + std::to_string(version / 100 % 100) + "." +
                                std::to_string(version % 100);
    int device = 0;
    cudaDeviceProp props{};
    cuda_check(cudaGetDevice(&device), "cudaGetDevice");
    cuda_check(cudaGetDeviceProperties(&props, device), "cudaGetDeviceProperties");
    const std::string sm = std::to_string(props.major) + "." + std::to_string(props.minor);
    const std::string mismatch = edgeresnext::engine_mismatch(edgeresnext::engine_record(artifact), running, sm,
                                                              props.name);
    if (!mismatch.empty())
      throw edgeresnext::BundleError(bundle.path(artifact["path"].str()) + ": this engine cannot run here: " +
                                     mismatch + "; " + edgeresnext::rebuild_hint(args.bundle_dir, bundle.manifest));

    Logger logger;
    std::unique_ptr<nvinfer1::IRuntime> runtime(nvinfer1::createInferRuntime(logger));
    std::string plan = edgeresnext::read_file(bundle.path(artifact["path"].str()));
    std::unique_ptr<nvinfer1::ICudaEngine> engine(runtime->deserializeCudaEngine(plan.data(), plan.size()));
    if (!engine)
      throw edgeresnext::BundleError("could not deserialize the engine (see the TensorRT log); " +
                                     edgeresnext::rebuild_hint(args.bundle_dir, bundle.manifest));
    std::unique_ptr<nvinfer1::IExecutionContext> context(engine->createExecutionContext());

    std::string input_name, output_name;
    for (int i = 0; i < engine->getNbIOTensors(); ++i) {
      const char* name = engine->getIOTensorName(i);
      if (engine->getTensorIOMode(name) == nvinfer1::TensorIOMode::kINPUT)
        input_name = name;
      else
        output_name = name;
    }
    if (engine->getTensorDataType(input_name.c_str()) != nvinfer1::DataType::kFLOAT ||
        engine->getTensorDataType(output_name.c_str()) != nvinfer1::DataType::kFLOAT)
      throw edgeresnext::BundleError("expected float32 input and output tensors (the FP16 variant keeps FP32 I/O)");

    const auto& shape = bundle.input_shape;  // N, C, H, W
    std::vector<float> input = edgeresnext::preprocess(edgeresnext::read_pnm(args.image_path), bundle.preprocess,
                                                       static_cast<int>(shape[2]), static_cast<int>(shape[3]));
    nvinfer1::Dims4 dims{1, shape[1], shape[2], shape[3]};
    if (!context->setInputShape(input_name.c_str(), dims))
      throw edgeresnext::BundleError("batch 1 is outside the engine's optimisation profile");
    nvinfer1::Dims out_dims = context->getTensorShape(output_name.c_str());
    size_t classes = 1;
    for (int i = 0; i < out_dims.nbDims; ++i) classes *= static_cast<size_t>(out_dims.d[i]);

    cudaStream_t stream;
    cuda_check(cudaStreamCreate(&stream), "cudaStreamCreate");
    DeviceBuffer d_input(input.size() * sizeof(float)), d_output(classes * sizeof(float));
    std::vector<float> logits(classes);
    cuda_check(cudaMemcpyAsync(d_input.ptr, input.data(), input.size() * sizeof(float), cudaMemcpyHostToDevice,
                               stream), "cudaMemcpyAsync");
    context->setTensorAddress(input_name.c_str(), d_input.ptr);
    context->setTensorAddress(output_name.c_str(), d_output.ptr);
    if (!context->enqueueV3(stream)) throw edgeresnext::BundleError("enqueueV3 failed (see the TensorRT log)");
    cuda_check(cudaMemcpyAsync(logits.data(), d_output.ptr, classes * sizeof(float), cudaMemcpyDeviceToHost, stream),
               "cudaMemcpyAsync");
    cuda_check(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
    cudaStreamDestroy(stream);

    edgeresnext::print_top_k(bundle, logits.data(), classes, args.k);
  } catch (const std::exception& err) {
    std::cerr << "edgeresnext_trt_classify: error: " << err.what() << "\n";
    return 1;
  }
  return 0;
}
