// TensorRT engine (TensorRT 10 API: named I/O tensors, enqueueV3): deserializes ARTIFACT/model.engine, which
// build_engine.py writes on the device. The input is staged in pinned host memory, copied to the GPU, and the
// outputs are copied back on the engine's own CUDA stream; all buffers are allocated here, once.
// Verified only on a device with TensorRT and CUDA (edgedet's own machines have neither).
#include <NvInfer.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <vector>

#include "edgedet/config.hpp"
#include "engine.hpp"

namespace edgedet {

namespace {

void cuda_check(cudaError_t rc, const char* what) {
    if (rc != cudaSuccess) throw Error(std::string(what) + ": CUDA error " + cudaGetErrorString(rc));
}

class Logger : public nvinfer1::ILogger {
  public:
    void log(Severity severity, const char* msg) noexcept override {
        if (severity <= Severity::kWARNING) std::fprintf(stderr, "[TensorRT] %s\n", msg);
    }
};

std::string dims_str(const nvinfer1::Dims& d) {
    std::string o = "[";
    for (int i = 0; i < d.nbDims; ++i) o += (i ? "," : "") + std::to_string(d.d[i]);
    return o + "]";
}

class TrtEngine : public Engine {
  public:
    TrtEngine(const std::string& path, const Options& options) : path_(path) {
        const int r = config::kResolution, q = config::kNumQueries, c = config::kNumClasses;
        int device = 0;
        try {
            device = options.device.empty() ? 0 : std::stoi(options.device);
        } catch (const std::exception&) {
            throw InvalidInput("edgedet::Options::device: TensorRT takes a CUDA device index, got '" +
                               options.device + "'");
        }
        cuda_check(cudaSetDevice(device), "cudaSetDevice");
        std::ifstream f(path, std::ios::binary);
        const std::vector<char> blob((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
        if (blob.empty()) throw Error(path + ": empty or unreadable engine file");
        runtime_.reset(nvinfer1::createInferRuntime(logger_));
        if (!runtime_) throw Error("TensorRT: createInferRuntime failed");
        engine_.reset(runtime_->deserializeCudaEngine(blob.data(), blob.size()));
        if (!engine_)
            throw Error(path + ": TensorRT could not deserialize the engine (built by another TensorRT version or "
                               "GPU? rebuild it here: python3 build_engine.py)");
        context_.reset(engine_->createExecutionContext());
        if (!context_) throw Error("TensorRT: createExecutionContext failed");
        nvinfer1::Dims in{};
        in.nbDims = 4;
        in.d[0] = 1;
        in.d[1] = 3;
        in.d[2] = r;
        in.d[3] = r;
        expect("images", nvinfer1::TensorIOMode::kINPUT);
        if (!context_->setInputShape("images", in))
            throw Error(path + ": the engine does not accept images " + dims_str(in) + " (its profile's batch "
                               "range must include 1)");
        expect_shape("boxes", {1, q, 4});
        expect_shape("logits", {1, q, c});
        sizes_[0] = size_t(3) * r * r;
        sizes_[1] = size_t(q) * 4;
        sizes_[2] = size_t(q) * c;
        const char* names[3] = {"images", "boxes", "logits"};
        cuda_check(cudaStreamCreate(&stream_), "cudaStreamCreate");
        for (int i = 0; i < 3; ++i) {
            cuda_check(cudaMalloc(&device_[i], sizes_[i] * sizeof(float)), "cudaMalloc");
            cuda_check(cudaMallocHost(reinterpret_cast<void**>(&host_[i]), sizes_[i] * sizeof(float)),
                       "cudaMallocHost");
            if (!context_->setTensorAddress(names[i], device_[i]))
                throw Error(path + ": setTensorAddress failed for " + names[i]);
        }
        std::fill(host_[0], host_[0] + sizes_[0], 0.0f);
        info_ = "tensorrt " + std::to_string(getInferLibVersion()) + " cuda device " + std::to_string(device) +
                " model " + path;
        run();
    }

    ~TrtEngine() override {
        for (int i = 0; i < 3; ++i) {
            if (device_[i]) cudaFree(device_[i]);
            if (host_[i]) cudaFreeHost(host_[i]);
        }
        if (stream_) cudaStreamDestroy(stream_);
    }

    float* input() override { return host_[0]; }

    void run() override {
        cuda_check(cudaMemcpyAsync(device_[0], host_[0], sizes_[0] * sizeof(float), cudaMemcpyHostToDevice, stream_),
                   "cudaMemcpyAsync (input)");
        if (!context_->enqueueV3(stream_)) throw Error("TensorRT: enqueueV3 failed");
        for (int i = 1; i < 3; ++i)
            cuda_check(cudaMemcpyAsync(host_[i], device_[i], sizes_[i] * sizeof(float), cudaMemcpyDeviceToHost,
                                       stream_),
                       "cudaMemcpyAsync (output)");
        cuda_check(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
    }

    const float* boxes() const override { return host_[1]; }
    const float* logits() const override { return host_[2]; }
    std::string info() const override { return info_; }
    std::string settings() const override { return "{\"batch\": 1}"; }

  private:
    void expect(const char* name, nvinfer1::TensorIOMode mode) {
        for (int i = 0; i < engine_->getNbIOTensors(); ++i)
            if (std::string(engine_->getIOTensorName(i)) == name) {
                if (engine_->getTensorIOMode(name) != mode ||
                    engine_->getTensorDataType(name) != nvinfer1::DataType::kFLOAT)
                    throw Error(path_ + ": engine tensor '" + name + "' is not a float " +
                                (mode == nvinfer1::TensorIOMode::kINPUT ? "input" : "output"));
                return;
            }
        throw Error(path_ + ": the engine has no tensor named '" + name + "'");
    }

    void expect_shape(const char* name, const std::vector<int>& want) {
        expect(name, nvinfer1::TensorIOMode::kOUTPUT);
        const nvinfer1::Dims d = context_->getTensorShape(name);
        bool ok = d.nbDims == int(want.size());
        for (int i = 0; ok && i < d.nbDims; ++i) ok = d.d[i] == want[i];
        if (!ok)
            throw Error(path_ + ": engine output '" + name + "' is " + dims_str(d) +
                        ", expected the queries and classes of config.hpp");
    }

    std::string path_, info_;
    Logger logger_;
    std::unique_ptr<nvinfer1::IRuntime> runtime_;
    std::unique_ptr<nvinfer1::ICudaEngine> engine_;
    std::unique_ptr<nvinfer1::IExecutionContext> context_;
    cudaStream_t stream_ = nullptr;
    void* device_[3] = {nullptr, nullptr, nullptr};
    float* host_[3] = {nullptr, nullptr, nullptr};
    size_t sizes_[3] = {0, 0, 0};
};

}  // namespace

std::unique_ptr<Engine> make_engine(const std::string& path, const Options& options) {
    return std::unique_ptr<Engine>(new TrtEngine(path, options));
}

}  // namespace edgedet
