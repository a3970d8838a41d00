// OpenVINO engine: the artifact's IR compiled with the settings of edgedet's OpenVINO runner (runners.OVRunner, from
// config.hpp: pinned INFERENCE_PRECISION_HINT, the recorded PERFORMANCE_HINT, one stream, threads, pinning, device).
// The input is written straight into the infer request's
// own tensor and the outputs are read from its tensors: no copies around inference.
#include <openvino/openvino.hpp>

#include <algorithm>
#include <sstream>

#include "edgedet/config.hpp"
#include "engine.hpp"

namespace edgedet {

namespace {

std::string shape_str(const ov::PartialShape& s) {
    std::ostringstream o;
    o << s;
    return o.str();
}

class OpenVINOEngine : public Engine {
  public:
    OpenVINOEngine(const std::string& path, const Options& options) : path_(path) {
        const int r = config::kResolution;
        try {
            std::shared_ptr<ov::Model> model = core_.read_model(path);
            const ov::PartialShape want{1, 3, r, r};
            if (model->input("images").get_partial_shape() != want)  // a static batch > 1: run batch 1
                model->reshape({{"images", want}});
            ov::AnyMap cfg{{"INFERENCE_PRECISION_HINT", std::string(config::kInferencePrecisionHint)},
                           {"PERFORMANCE_HINT", std::string(config::kOpenVINOHint)},
                           {"NUM_STREAMS", std::to_string(config::kNumStreams)}};
            if (options.threads > 0) cfg["INFERENCE_NUM_THREADS"] = options.threads;
            if (config::kCpuPinning) cfg["ENABLE_CPU_PINNING"] = true;
            device_ = options.device.empty() ? std::string(config::kOpenVINODevice) : options.device;
            compiled_ = core_.compile_model(model, device_, cfg);
            request_ = compiled_.create_infer_request();
            boxes_port_ = compiled_.output("boxes");
            logits_port_ = compiled_.output("logits");
            ov::Tensor in = request_.get_tensor(compiled_.input("images"));
            if (in.get_element_type() != ov::element::f32 || in.get_shape() != ov::Shape{1, 3, size_t(r), size_t(r)})
                throw Error(path + ": input 'images' is " + in.get_element_type().get_type_name() + " " +
                            shape_str(in.get_shape()) + ", expected f32 [1,3," + std::to_string(r) + "," +
                            std::to_string(r) + "]");
            input_ = in.data<float>();
            check(boxes_port_, "boxes", 4);
            check(logits_port_, "logits", config::kNumClasses);
            const ov::Version v = ov::get_openvino_version();
            info_ = std::string("openvino ") + v.buildNumber + " " + device_ + " " +
                    compiled_.get_property("INFERENCE_PRECISION_HINT").as<std::string>() + " threads " +
                    compiled_.get_property("INFERENCE_NUM_THREADS").as<std::string>() + " model " + path;
            std::string devices;
            for (const auto& d : compiled_.get_property(ov::execution_devices))
                devices += (devices.empty() ? "\"" : ", \"") + d + "\"";
            settings_ = "{\"INFERENCE_PRECISION_HINT\": \"" + property("INFERENCE_PRECISION_HINT") +
                        "\", \"PERFORMANCE_HINT\": \"" + property("PERFORMANCE_HINT") +
                        "\", \"NUM_STREAMS\": " + property("NUM_STREAMS") +
                        ", \"INFERENCE_NUM_THREADS\": " + property("INFERENCE_NUM_THREADS") +
                        ", \"ENABLE_CPU_PINNING\": " + property("ENABLE_CPU_PINNING") +
                        ", \"EXECUTION_DEVICES\": [" + devices + "]}";
        } catch (const Error&) {
            throw;
        } catch (const std::exception& e) {
            throw Error(path + ": OpenVINO could not load the model: " + e.what());
        }
        std::fill(input_, input_ + 3 * size_t(r) * r, 0.0f);
        run();  // first inference: lets the plugin finish its lazy setup, fixes the output pointers
    }

    float* input() override { return input_; }

    void run() override {
        try {
            request_.infer();
            boxes_ = request_.get_tensor(boxes_port_).data<const float>();
            logits_ = request_.get_tensor(logits_port_).data<const float>();
        } catch (const std::exception& e) {
            throw Error(std::string("OpenVINO inference failed: ") + e.what());
        }
    }

    const float* boxes() const override { return boxes_; }
    const float* logits() const override { return logits_; }
    std::string info() const override { return info_; }
    std::string settings() const override { return settings_; }

  private:
    // A compiled-model property as text (device names and hint values are plain identifiers; booleans as true/false)
    std::string property(const char* name) const {
        const ov::Any v = compiled_.get_property(name);
        if (v.is<bool>()) return v.as<bool>() ? "true" : "false";
        return v.as<std::string>();
    }

    void check(const ov::Output<const ov::Node>& port, const char* name, int last) {
        const ov::Shape want{1, size_t(config::kNumQueries), size_t(last)};
        if (port.get_element_type() != ov::element::f32 || port.get_partial_shape() != ov::PartialShape(want))
            throw Error(path_ + ": output '" + name + "' is " + port.get_element_type().get_type_name() + " " +
                        shape_str(port.get_partial_shape()) + ", expected f32 " + shape_str(want) +
                        " (queries and classes of config.hpp)");
    }

    std::string path_, device_, info_, settings_;
    ov::Core core_;
    ov::CompiledModel compiled_;
    ov::InferRequest request_;
    ov::Output<const ov::Node> boxes_port_, logits_port_;
    float* input_ = nullptr;
    const float* boxes_ = nullptr;
    const float* logits_ = nullptr;
};

}  // namespace

std::unique_ptr<Engine> make_engine(const std::string& path, const Options& options) {
    return std::unique_ptr<Engine>(new OpenVINOEngine(path, options));
}

}  // namespace edgedet
