// edgedet::Detector: pre- and post-processing of edgedet/runtime/core.py in C++, around a backend Engine.
// Arithmetic follows core.py step by step in float32 (the build turns off FMA contraction), so the input tensor
// equals numpy's and detections match the Python runtime up to the backend's own differences. The resize itself is
// src/preprocess.cpp (also built as libedgedet_preprocess for the Python runtime).
#include "edgedet/detector.hpp"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <numeric>
#include <sstream>

#include "edgedet/config.hpp"
#include "edgedet/preprocess.h"
#include "engine.hpp"

namespace edgedet {

namespace {

std::string read_file(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    if (!f) return std::string();
    std::ostringstream s;
    s << f.rdbuf();
    return s.str();
}

bool contains_field(const std::string& json, const char* key, const char* value) {
    return json.find(std::string("\"") + key + "\": \"" + value + "\"") != std::string::npos;
}

}  // namespace

struct Detector::Impl {
    std::unique_ptr<Engine> engine;
    float threshold = config::kThreshold;
    int topk = config::kTopK;
    ResizeTables resize;             // tables of the last frame size (src/preprocess.cpp)
    std::vector<int> order;          // [Q*C] flat indices, partially sorted per frame
    std::vector<Detection> out;      // capacity topk
};

Detector::Detector(const std::string& artifact_dir, const Options& options) : impl_(new Impl) {
    const std::string dir = artifact_dir.empty() ? std::string(".") : artifact_dir;
    const std::string json = read_file(dir + "/artifact.json");
    if (json.empty())
        throw Error(dir + ": not an edgedet artifact folder (no readable artifact.json)");
    if (!contains_field(json, "subnet", config::kSubnet) || !contains_field(json, "backend", config::kBackend) ||
        !contains_field(json, "precision", config::kPrecision))
        throw Error(dir + ": artifact.json describes another artifact than this project was generated for (" +
                    config::kSubnet + ", " + config::kBackend + " " + config::kPrecision +
                    "); use the runtime/cpp project written next to that artifact");
    const std::string model = dir + "/" + config::kModelFile;
    if (!std::ifstream(model).good())
        throw Error(model + " not found" + std::string(config::kModelHint));
    if (options.topk < 0) throw InvalidInput("edgedet::Options::topk must be >= 0 (0: the default)");
    if (options.threads < 0) throw InvalidInput("edgedet::Options::threads must be >= 0 (0: the default)");
    Impl& m = *impl_;
    m.threshold = options.threshold < 0 ? config::kThreshold : options.threshold;
    m.topk = options.topk == 0 ? config::kTopK : options.topk;
    Options effective = options;  // the artifact's recorded thread count unless the caller sets one
    if (effective.threads == 0) effective.threads = config::kThreads;
    m.engine = make_engine(model, effective);
    m.order.resize(static_cast<size_t>(config::kNumQueries) * config::kNumClasses);
    m.out.reserve(std::min<size_t>(m.topk, m.order.size()));
}

Detector::~Detector() = default;

Detector::Impl& Detector::impl() const {
    if (!impl_) throw Error("edgedet::Detector used after being moved from");
    return *impl_;
}
Detector::Detector(Detector&&) noexcept = default;
Detector& Detector::operator=(Detector&&) noexcept = default;

void Detector::preprocess(const uint8_t* rgb, int width, int height, int stride) {
    Impl& m = impl();
    if (rgb == nullptr) throw InvalidInput("edgedet::Detector::detect: rgb is a null pointer");
    if (width <= 0 || height <= 0)
        throw InvalidInput("edgedet::Detector::detect: image size " + std::to_string(width) + " x " +
                           std::to_string(height) + " is not positive");
    if (static_cast<int64_t>(stride) < 3 * static_cast<int64_t>(width))
        throw InvalidInput("edgedet::Detector::detect: stride " + std::to_string(stride) +
                           " bytes is shorter than one RGB row (3 * width = " +
                           std::to_string(3 * static_cast<int64_t>(width)) + ")");
    m.resize.update(width, height, config::kResolution);  // allocates only when the frame size changes
    resize_rgb(m.resize, rgb, stride, m.engine->input());
}

void Detector::infer() {
    impl().engine->run();
}

const std::vector<Detection>& Detector::postprocess(int width, int height) {
    Impl& m = impl();
    const float* logits = m.engine->logits();
    const float* boxes = m.engine->boxes();
    const int c = config::kNumClasses;
    const int n = static_cast<int>(m.order.size());
    const int k = std::min(m.topk, n);
    std::iota(m.order.begin(), m.order.end(), 0);
    // numpy argsort(-logits, kind="stable"): descending logit, ties by lower index, NaN last
    std::partial_sort(m.order.begin(), m.order.begin() + k, m.order.end(), [logits](int i, int j) {
        const float a = logits[i], b = logits[j];
        const bool na = std::isnan(a), nb = std::isnan(b);
        if (na != nb) return nb;
        if (!na && a != b) return a > b;
        return i < j;
    });
    m.out.clear();
    const float w = static_cast<float>(width), h = static_cast<float>(height);
    auto clip = [](float v, float hi) { return std::min(std::max(v, 0.0f), hi); };
    for (int i = 0; i < k; ++i) {
        const int f = m.order[i];
        const float score = 1.0f / (1.0f + std::exp(-logits[f]));
        if (m.threshold > 0 && !(score > m.threshold)) continue;
        const int q = f / c;
        const float* b = boxes + static_cast<size_t>(q) * 4;
        const float cx = b[0], cy = b[1], bw = b[2], bh = b[3];
        Detection d;
        d.x1 = clip((cx - 0.5f * bw) * w, w);
        d.y1 = clip((cy - 0.5f * bh) * h, h);
        d.x2 = clip((cx + 0.5f * bw) * w, w);
        d.y2 = clip((cy + 0.5f * bh) * h, h);
        d.score = score;
        d.label = f % c;
        d.query = q;
        d.category_id = config::kHasCategoryIds ? config::kCategoryIds[d.label] : -1;
        m.out.push_back(d);
    }
    return m.out;
}

const std::vector<Detection>& Detector::detect(const uint8_t* rgb, int width, int height, int stride) {
    preprocess(rgb, width, height, stride);
    infer();
    return postprocess(width, height);
}

const float* Detector::input() const { return impl().engine->input(); }
const float* Detector::boxes() const { return impl().engine->boxes(); }
const float* Detector::logits() const { return impl().engine->logits(); }
int Detector::resolution() const { return config::kResolution; }
int Detector::num_queries() const { return config::kNumQueries; }
int Detector::num_classes() const { return config::kNumClasses; }
float Detector::threshold() const { return impl().threshold; }
int Detector::topk() const { return impl().topk; }

std::string_view Detector::class_name(int label) const {
    return label >= 0 && label < config::kNumClassNames ? config::kClassNames[label] : std::string_view();
}

std::string Detector::backend_info() const { return impl().engine->info(); }
std::string Detector::settings() const { return impl().engine->settings(); }

}  // namespace edgedet
