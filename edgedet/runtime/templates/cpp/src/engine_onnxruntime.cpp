// ONNX Runtime engine (C++ API, CPU execution provider), with the session settings of edgedet's ONNX Runtime
// runner (runners.OrtRunner, from config.hpp: sequential execution, intra-op threads, kInterOpThreads inter-op).
// Input and outputs are tensors over buffers allocated once here; Run writes into them.
#include <onnxruntime_cxx_api.h>

#include <string>
#include <vector>

#include "edgedet/config.hpp"
#include "engine.hpp"

namespace edgedet {

namespace {

std::string dims_str(const std::vector<int64_t>& s) {
    std::string o = "[";
    for (size_t i = 0; i < s.size(); ++i) o += (i ? "," : "") + std::to_string(s[i]);
    return o + "]";
}

// A model dimension fits when it is equal or dynamic (-1, or a named batch dimension).
bool fits(const std::vector<int64_t>& got, const std::vector<int64_t>& want) {
    if (got.size() != want.size()) return false;
    for (size_t i = 0; i < got.size(); ++i)
        if (got[i] >= 0 && got[i] != want[i]) return false;
    return true;
}

class OrtEngine : public Engine {
  public:
    OrtEngine(const std::string& path, const Options& options)
        : env_(ORT_LOGGING_LEVEL_WARNING, "edgedet"),
          memory_(Ort::MemoryInfo::CreateCpu(OrtArenaAllocator, OrtMemTypeDefault)) {
        const int64_t r = config::kResolution, q = config::kNumQueries, c = config::kNumClasses;
        in_shape_ = {1, 3, r, r};
        boxes_shape_ = {1, q, 4};
        logits_shape_ = {1, q, c};
        input_.assign(size_t(3 * r * r), 0.0f);
        boxes_.assign(size_t(q * 4), 0.0f);
        logits_.assign(size_t(q * c), 0.0f);
        try {
            Ort::SessionOptions so;
            so.SetLogSeverityLevel(3);
            so.SetExecutionMode(ORT_SEQUENTIAL);
            so.SetGraphOptimizationLevel(GraphOptimizationLevel::ORT_ENABLE_ALL);
            so.SetIntraOpNumThreads(options.threads > 0 ? options.threads : 0);
            so.SetInterOpNumThreads(config::kInterOpThreads);
            session_ = Ort::Session(env_, path.c_str(), so);
            check_io(path);
            values_.push_back(Ort::Value::CreateTensor<float>(memory_, input_.data(), input_.size(), in_shape_.data(),
                                                              in_shape_.size()));
            values_.push_back(Ort::Value::CreateTensor<float>(memory_, boxes_.data(), boxes_.size(),
                                                              boxes_shape_.data(), boxes_shape_.size()));
            values_.push_back(Ort::Value::CreateTensor<float>(memory_, logits_.data(), logits_.size(),
                                                              logits_shape_.data(), logits_shape_.size()));
        } catch (const Error&) {
            throw;
        } catch (const std::exception& e) {
            throw Error(path + ": ONNX Runtime could not load the model: " + e.what());
        }
        info_ = std::string("onnxruntime ") + OrtGetApiBase()->GetVersionString() + " CPUExecutionProvider threads " +
                std::to_string(options.threads) + " model " + path;
        // the C++ API cannot read session options back: these are the values set above
        settings_ = "{\"execution_mode\": \"ORT_SEQUENTIAL\", \"intra_op_num_threads\": " +
                    std::to_string(options.threads > 0 ? options.threads : 0) +
                    ", \"inter_op_num_threads\": " + std::to_string(config::kInterOpThreads) +
                    ", \"log_severity_level\": 3}";
        run();
    }

    float* input() override { return input_.data(); }

    void run() override {
        static const char* const in_names[] = {"images"};
        static const char* const out_names[] = {"boxes", "logits"};
        try {
            session_.Run(run_options_, in_names, &values_[0], 1, out_names, &values_[1], 2);
        } catch (const std::exception& e) {
            throw Error(std::string("ONNX Runtime inference failed: ") + e.what());
        }
    }

    const float* boxes() const override { return boxes_.data(); }
    const float* logits() const override { return logits_.data(); }
    std::string info() const override { return info_; }
    std::string settings() const override { return settings_; }

  private:
    void check_io(const std::string& path) {
        Ort::AllocatorWithDefaultOptions alloc;
        auto expect = [&](bool input, const char* name, const std::vector<int64_t>& want) {
            const size_t n = input ? session_.GetInputCount() : session_.GetOutputCount();
            for (size_t i = 0; i < n; ++i) {
                auto got_name =
                    input ? session_.GetInputNameAllocated(i, alloc) : session_.GetOutputNameAllocated(i, alloc);
                if (std::string(got_name.get()) != name) continue;
                Ort::TypeInfo type = input ? session_.GetInputTypeInfo(i) : session_.GetOutputTypeInfo(i);
                auto info = type.GetTensorTypeAndShapeInfo();
                const std::vector<int64_t> shape = info.GetShape();
                if (info.GetElementType() != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT || !fits(shape, want))
                    throw Error(path + ": '" + name + "' is " + dims_str(shape) + " (element type " +
                                std::to_string(int(info.GetElementType())) + "), expected float " + dims_str(want) +
                                " (config.hpp)");
                return;
            }
            throw Error(path + ": the model has no " + (input ? "input" : "output") + " named '" + name + "'");
        };
        expect(true, "images", in_shape_);
        expect(false, "boxes", boxes_shape_);
        expect(false, "logits", logits_shape_);
    }

    Ort::Env env_;
    Ort::MemoryInfo memory_;
    Ort::Session session_{nullptr};
    Ort::RunOptions run_options_;
    std::vector<int64_t> in_shape_, boxes_shape_, logits_shape_;
    std::vector<float> input_, boxes_, logits_;
    std::vector<Ort::Value> values_;  // input, boxes, logits over the buffers above
    std::string info_, settings_;
};

}  // namespace

std::unique_ptr<Engine> make_engine(const std::string& path, const Options& options) {
    return std::unique_ptr<Engine>(new OrtEngine(path, options));
}

}  // namespace edgedet
