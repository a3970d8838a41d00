// edgedet::Detector: pre- and post-processing of edgedet/runtime/core.py in C++, around a backend Engine.
// Arithmetic follows core.py step by step in float32 (the build turns off FMA contraction), so the input tensor
// equals numpy's and detections match the Python runtime up to the backend's own differences.
#include "edgedet/detector.hpp"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <numeric>
#include <sstream>

#include "edgedet/config.hpp"
#include "engine.hpp"

namespace edgedet {

namespace {

// core._axis_weights: source index pairs and weights of one axis (half-pixel centres, clamped at the border).
void axis_weights(int n_out, int n_in, std::vector<int>& i0, std::vector<int>& i1, std::vector<float>& w0,
                  std::vector<float>& w1) {
    i0.resize(n_out);
    i1.resize(n_out);
    w0.resize(n_out);
    w1.resize(n_out);
    const double scale = static_cast<double>(n_in) / n_out;
    for (int i = 0; i < n_out; ++i) {
        double x = (i + 0.5) * scale - 0.5;
        if (x < 0) x = 0;
        const int a = std::min(static_cast<int>(std::floor(x)), n_in - 1);
        i0[i] = a;
        i1[i] = std::min(a + 1, n_in - 1);
        w1[i] = static_cast<float>(x - a);
        w0[i] = 1.0f - w1[i];
    }
}

// t[j] = row0[j] * w0 + row1[j] * w1 in float32 (separate roundings: the build has -ffp-contract=off); restrict: the
// float output never aliases the uint8 rows, so the loop vectorises without run-time overlap checks
void blend_rows(const uint8_t* __restrict row0, const uint8_t* __restrict row1, float w0, float w1,
                float* __restrict t, size_t n) {
    for (size_t j = 0; j < n; ++j) t[j] = float(row0[j]) * w0 + float(row1[j]) * w1;
}

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
    // resize tables for the last frame size (x indices premultiplied by 3: byte offsets in an RGB row)
    int table_w = -1, table_h = -1;
    std::vector<int> x0, x1, y0, y1;
    std::vector<float> wx0, wx1, wy0, wy1;  // wx already divided by 255 (core.preprocess folds it in too)
    std::vector<float> rows;                // one source row blended over y (3 * width floats)
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
    const int r = config::kResolution;
    for (auto* v : {&m.x0, &m.x1, &m.y0, &m.y1}) v->reserve(r);
    for (auto* v : {&m.wx0, &m.wx1, &m.wy0, &m.wy1}) v->reserve(r);
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
    const int r = config::kResolution;
    if (width != m.table_w || height != m.table_h) {
        axis_weights(r, width, m.x0, m.x1, m.wx0, m.wx1);
        axis_weights(r, height, m.y0, m.y1, m.wy0, m.wy1);
        for (int i = 0; i < r; ++i) {
            m.x0[i] *= 3;
            m.x1[i] *= 3;
            m.wx0[i] /= 255.0f;
            m.wx1[i] /= 255.0f;
        }
        m.table_w = width;
        m.table_h = height;
    }
    float* dst = m.engine->input();
    const size_t plane = static_cast<size_t>(r) * r;
    const size_t row_len = static_cast<size_t>(width) * 3;
    if (m.rows.size() < row_len) m.rows.resize(row_len);  // once per frame size (selftest: no allocation per frame)
    float* t = m.rows.data();
    // core.preprocess: rows first (y, pixel values 0..255), then columns (x, weights / 255). The row blend is
    // computed once per source byte of the row (a contiguous loop the compiler vectorises), or, when the image is
    // more than twice as wide as the output, only at the columns the output samples.
    const bool sparse = width > 2 * r;
    for (int y = 0; y < r; ++y) {
        const uint8_t* row0 = rgb + static_cast<size_t>(m.y0[y]) * stride;
        const uint8_t* row1 = rgb + static_cast<size_t>(m.y1[y]) * stride;
        const float wy0 = m.wy0[y], wy1 = m.wy1[y];
        if (sparse) {
            for (int x = 0; x < r; ++x) {
                for (const int a : {m.x0[x], m.x1[x]})
                    for (int c = 0; c < 3; ++c) t[a + c] = float(row0[a + c]) * wy0 + float(row1[a + c]) * wy1;
            }
        } else {
            blend_rows(row0, row1, wy0, wy1, t, row_len);
        }
        float* d = dst + static_cast<size_t>(y) * r;
        for (int x = 0; x < r; ++x) {
            const float* left = t + m.x0[x];
            const float* right = t + m.x1[x];
            const float wx0 = m.wx0[x], wx1 = m.wx1[x];
            d[x] = left[0] * wx0 + right[0] * wx1;
            d[plane + x] = left[1] * wx0 + right[1] * wx1;
            d[2 * plane + x] = left[2] * wx0 + right[2] * wx1;
        }
    }
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
