// edgedet C++ runtime example: detections in image files (binary PPM, P6), a timing mode and self-checks.
//
//   edgedet_example [--artifact DIR] [--threshold T] [--topk K] [--threads N] IMAGE.ppm...   JSON line per detection
//   edgedet_example --info IMAGE.ppm...                    first a line with the runtime settings in effect
//   edgedet_example --time 200 [--warmup 20] IMAGE.ppm     p50/p90 of detect() and of inference alone (ms)
//   edgedet_example --instances 2 IMAGE.ppm...             one Detector per thread, same detections as one
//   edgedet_example --selftest IMAGE.ppm                   bad input throws; strided rows; no per-frame allocation
//   edgedet_example --dump DIR IMAGE.ppm                   also writes the last image's input/boxes/logits (.f32)
//
// Convert other formats to PPM first, e.g. `convert in.jpg out.ppm` or PIL's Image.save("out.ppm").
// Exit codes: 0 done, 2 bad input (an argument, an image, an artifact that cannot be loaded), 1 a failed self-check or
// a runtime failure.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cctype>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <new>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "edgedet/config.hpp"
#include "edgedet/detector.hpp"
#include "edgedet/preprocess.h"

#ifndef EDGEDET_DEFAULT_ARTIFACT
#define EDGEDET_DEFAULT_ARTIFACT "../.."
#endif

// ------------------------------------------------------------ operator new counter (for the allocation check)
static std::atomic<long> g_news{0};
void* operator new(std::size_t n) {
    g_news.fetch_add(1, std::memory_order_relaxed);
    if (void* p = std::malloc(n ? n : 1)) return p;
    throw std::bad_alloc();
}
void* operator new[](std::size_t n) { return operator new(n); }
void* operator new(std::size_t n, const std::nothrow_t&) noexcept {
    g_news.fetch_add(1, std::memory_order_relaxed);
    return std::malloc(n ? n : 1);
}
void* operator new[](std::size_t n, const std::nothrow_t& t) noexcept { return operator new(n, t); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { std::free(p); }

namespace {

struct Image {
    int width = 0, height = 0;
    std::vector<uint8_t> rgb;  // tightly packed rows
};

// A bad image or argument: "error: ..." and exit code 2.
struct BadInput : std::runtime_error {
    using std::runtime_error::runtime_error;
};

constexpr int64_t kMaxPixels = int64_t(1) << 26;  // the Python runtime's limit too

// Binary PGM/PPM (P5/P6), maxval 1..65535 (16-bit samples big-endian), scaled to 0..255 as the Python runtime does:
// (v * 255 + maxval / 2) / maxval. The header is parsed within its first 1 KiB and checked against the file size
// before anything is allocated.
Image read_ppm(const std::string& path) {
    std::ifstream f(path, std::ios::binary | std::ios::ate);
    if (!f) throw BadInput(path + ": cannot open");
    const int64_t size = int64_t(f.tellg());
    f.seekg(0);
    if (size <= 0) throw BadInput(path + ": empty file or not a regular file");
    char head[1024];
    f.read(head, std::streamsize(std::min<int64_t>(size, sizeof head)));
    const int64_t n = int64_t(f.gcount());
    if (n < 2 || head[0] != 'P' || (head[1] != '5' && head[1] != '6'))
        throw BadInput(path + ": not a binary PPM/PGM (P6/P5); convert it first, e.g. `convert in.jpg out.ppm`");
    int64_t fields[3], pos = 2;
    for (int k = 0; k < 3;) {
        while (pos < n && std::isspace(static_cast<unsigned char>(head[pos]))) ++pos;
        if (pos < n && head[pos] == '#') {
            while (pos < n && head[pos] != '\n') ++pos;
            continue;
        }
        int64_t v = 0, digits = 0;
        while (pos < n && digits < 10 && std::isdigit(static_cast<unsigned char>(head[pos])))
            v = v * 10 + (head[pos++] - '0'), ++digits;
        if (digits == 0 || pos >= n || !std::isspace(static_cast<unsigned char>(head[pos])))
            throw BadInput(path + ": bad PPM header (width, height and maxval must be decimal numbers)");
        fields[k++] = v;
    }
    const int64_t w = fields[0], h = fields[1], maxval = fields[2];
    if (w <= 0 || h <= 0 || w * h > kMaxPixels || maxval <= 0 || maxval > 65535)
        throw BadInput(path + ": PPM header says " + std::to_string(w) + " x " + std::to_string(h) + ", maxval " +
                       std::to_string(maxval) + " (at most " + std::to_string(kMaxPixels) +
                       " pixels, maxval 1..65535)");
    ++pos;  // the single whitespace after maxval
    const int channels = head[1] == '6' ? 3 : 1, sample = maxval < 256 ? 1 : 2;
    const int64_t need = w * h * channels * sample;
    if (size - pos < need)
        throw BadInput(path + ": truncated: the header says " + std::to_string(w) + " x " + std::to_string(h) + " (" +
                       std::to_string(need) + " bytes of pixels), the file has " + std::to_string(size - pos));
    std::vector<uint8_t> raw(static_cast<size_t>(need));
    f.clear();
    f.seekg(pos);
    if (!f.read(reinterpret_cast<char*>(raw.data()), std::streamsize(need)))
        throw BadInput(path + ": truncated PPM data");
    Image im;
    im.width = int(w);
    im.height = int(h);
    im.rgb.resize(size_t(w) * size_t(h) * 3);
    const uint32_t mv = uint32_t(maxval);
    for (size_t i = 0, npx = size_t(w) * size_t(h); i < npx; ++i)
        for (int c = 0; c < 3; ++c) {
            const size_t j = i * channels + (channels == 3 ? c : 0);
            uint32_t v = sample == 1 ? raw[j] : (uint32_t(raw[2 * j]) << 8) | raw[2 * j + 1];
            if (mv != 255) v = (v * 255 + mv / 2) / mv;
            im.rgb[i * 3 + c] = uint8_t(std::min<uint32_t>(v, 255));
        }
    return im;
}

std::string json_str(std::string_view s) {
    std::string o = "\"";
    for (const char ch : s) {
        const unsigned char c = static_cast<unsigned char>(ch);
        if (c == '"' || c == '\\') {
            o += '\\';
            o += char(c);
        } else if (c < 0x20 || c == 0x7f) {
            char buf[8];
            std::snprintf(buf, sizeof buf, "\\u%04x", c);
            o += buf;
        } else {
            o += char(c);
        }
    }
    return o + "\"";
}

void print_detections(const edgedet::Detector& det, const std::string& image,
                      const std::vector<edgedet::Detection>& ds) {
    for (const auto& d : ds) {
        const std::string_view name = det.class_name(d.label);
        const std::string label = std::to_string(d.label);
        std::printf("{\"image\": %s, \"box\": [%.2f, %.2f, %.2f, %.2f], \"score\": %.4f, \"label\": %d, "
                    "\"name\": %s",
                    json_str(image).c_str(), d.x1, d.y1, d.x2, d.y2, d.score, d.label,
                    json_str(d.label < edgedet::config::kNumClassNames ? name : std::string_view(label)).c_str());
        if (edgedet::config::kHasCategoryIds) std::printf(", \"category_id\": %d", d.category_id);
        std::printf("}\n");
    }
}

double percentile(std::vector<double> v, double q) {  // numpy's default (linear) percentile
    std::sort(v.begin(), v.end());
    const double pos = q / 100.0 * (v.size() - 1);
    const size_t lo = size_t(std::floor(pos)), hi = std::min(lo + 1, v.size() - 1);
    return v[lo] + (v[hi] - v[lo]) * (pos - lo);
}

double ms_since(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

constexpr const char* kResizeCodePaths[] = {"portable", "avx2", "avx512"};  // edgedet_preprocess_level

// detect() and inference alone, interleaved so that both see the same machine noise.
int time_mode(edgedet::Detector& det, const Image& im, int runs, int warmup, int threads) {
    const int stride = im.width * 3;
    for (int i = 0; i < warmup; ++i) det.detect(im.rgb.data(), im.width, im.height, stride);
    std::vector<double> t_detect, t_infer, t_pre, t_post;
    for (auto* v : {&t_detect, &t_infer, &t_pre, &t_post}) v->reserve(runs);
    long news_detect = 0, news_infer = 0;
    for (int i = 0; i < runs; ++i) {
        // detect() as a whole, then its three steps timed one by one (inference sees the same cache state)
        const long n0 = g_news.load();
        auto t0 = std::chrono::steady_clock::now();
        det.detect(im.rgb.data(), im.width, im.height, stride);
        t_detect.push_back(ms_since(t0));
        const long n1 = g_news.load();
        t0 = std::chrono::steady_clock::now();
        det.preprocess(im.rgb.data(), im.width, im.height, stride);
        t_pre.push_back(ms_since(t0));
        const long n2 = g_news.load();
        t0 = std::chrono::steady_clock::now();
        det.infer();
        t_infer.push_back(ms_since(t0));
        const long n3 = g_news.load();
        t0 = std::chrono::steady_clock::now();
        det.postprocess(im.width, im.height);
        t_post.push_back(ms_since(t0));
        news_detect += n1 - n0;
        news_infer += n3 - n2;
    }
    std::printf("{\"runs\": %d, \"warmup\": %d, \"threads\": %d, \"image\": [%d, %d], \"resolution\": %d, "
                "\"detect_p50_ms\": %.4f, \"detect_p90_ms\": %.4f, \"infer_p50_ms\": %.4f, \"infer_p90_ms\": %.4f, "
                "\"preprocess_p50_ms\": %.4f, \"postprocess_p50_ms\": %.4f, \"new_calls_per_detect\": %.2f, "
                "\"new_calls_per_infer\": %.2f, \"resize_code_path\": \"%s\", \"backend\": %s}\n",
                runs, warmup, threads, im.width, im.height, det.resolution(), percentile(t_detect, 50),
                percentile(t_detect, 90), percentile(t_infer, 50), percentile(t_infer, 90), percentile(t_pre, 50),
                percentile(t_post, 50), double(news_detect) / runs, double(news_infer) / runs,
                kResizeCodePaths[std::clamp(edgedet_preprocess_level(-1), 0, 2)],
                json_str(det.backend_info().c_str()).c_str());
    return 0;
}

bool same(const std::vector<edgedet::Detection>& a, const std::vector<edgedet::Detection>& b, float tol) {
    if (a.size() != b.size()) return false;
    for (size_t i = 0; i < a.size(); ++i) {
        const auto &x = a[i], &y = b[i];
        if (x.label != y.label || x.query != y.query || std::fabs(x.score - y.score) > tol ||
            std::fabs(x.x1 - y.x1) > tol || std::fabs(x.y1 - y.y1) > tol || std::fabs(x.x2 - y.x2) > tol ||
            std::fabs(x.y2 - y.y2) > tol)
            return false;
    }
    return true;
}

// One Detector per thread, each running every image `repeat` times: all must agree with a single instance.
int instances_mode(const std::string& dir, const edgedet::Options& opt, const std::vector<Image>& images, int k,
                   int repeat) {
    std::vector<std::vector<edgedet::Detection>> ref;
    {
        edgedet::Detector det(dir, opt);
        for (const auto& im : images) ref.push_back(det.detect(im.rgb.data(), im.width, im.height, im.width * 3));
    }
    std::vector<int> ok(k, 0);
    std::vector<std::string> err(k);
    std::vector<std::thread> pool;
    for (int t = 0; t < k; ++t)
        pool.emplace_back([&, t] {
            try {
                edgedet::Detector det(dir, opt);
                bool all = true;
                for (int r = 0; r < repeat; ++r)
                    for (size_t i = 0; i < images.size(); ++i)
                        all = same(det.detect(images[i].rgb.data(), images[i].width, images[i].height,
                                              images[i].width * 3), ref[i], 1e-4f) && all;
                ok[t] = all;
            } catch (const std::exception& e) {
                err[t] = e.what();
            }
        });
    for (auto& th : pool) th.join();
    const bool all = std::all_of(ok.begin(), ok.end(), [](int v) { return v != 0; });
    std::printf("{\"instances\": %d, \"images\": %zu, \"repeat\": %d, \"identical\": %s", k, images.size(), repeat,
                all ? "true" : "false");
    for (int t = 0; t < k; ++t)
        if (!err[t].empty()) std::printf(", \"error_%d\": %s", t, json_str(err[t].c_str()).c_str());
    std::printf("}\n");
    return all ? 0 : 1;
}

template <class Ex, class F>
bool throws(F f, const char* what, std::string& message) {
    try {
        f();
    } catch (const Ex& e) {
        message = e.what();
        return std::strstr(e.what(), what) != nullptr;
    } catch (const std::exception& e) {
        message = std::string("wrong exception type: ") + e.what();
        return false;
    }
    message = "no exception";
    return false;
}

int selftest_mode(const std::string& dir, const edgedet::Options& opt, const Image& im) {
    int failed = 0;
    auto report = [&failed](const char* name, bool ok, const std::string& detail) {
        failed += !ok;
        std::printf("{\"check\": \"%s\", \"ok\": %s, \"detail\": %s}\n", name, ok ? "true" : "false",
                    json_str(detail.c_str()).c_str());
    };
    edgedet::Options all = opt;
    all.threshold = 0.0f;  // every top-k detection, so that the comparisons below compare something
    edgedet::Detector det(dir, all);
    const uint8_t* p = im.rgb.data();
    const int w = im.width, h = im.height;
    std::string msg;
    using edgedet::InvalidInput;
    report("null image throws", throws<InvalidInput>([&] { det.detect(nullptr, w, h, 3 * w); }, "null", msg), msg);
    report("zero width throws", throws<InvalidInput>([&] { det.detect(p, 0, h, 3 * w); }, "not positive", msg), msg);
    report("negative height throws", throws<InvalidInput>([&] { det.detect(p, w, -1, 3 * w); }, "not positive", msg),
           msg);
    report("short stride throws", throws<InvalidInput>([&] { det.detect(p, w, h, 3 * w - 1); }, "stride", msg), msg);
    report("missing artifact throws",
           throws<edgedet::Error>([&] { edgedet::Detector bad(dir + "/no-such-dir", opt); }, "artifact", msg), msg);
    {
        edgedet::Detector moved(std::move(det));
        report("moved-from detector throws",
               throws<edgedet::Error>([&] { det.detect(p, w, h, 3 * w); }, "moved from", msg), msg);
        det = std::move(moved);
    }
    const std::vector<edgedet::Detection> tight = det.detect(p, w, h, 3 * w);
    // the same image with padded rows (stride > 3 * width), e.g. a camera buffer or a crop of a larger frame
    const int stride = 3 * w + 37;
    std::vector<uint8_t> padded(size_t(stride) * h, 0xAB);
    for (int y = 0; y < h; ++y) std::memcpy(&padded[size_t(y) * stride], p + size_t(y) * 3 * w, size_t(3) * w);
    report("padded stride gives the same detections", same(det.detect(padded.data(), w, h, stride), tight, 0.f),
           std::to_string(tight.size()) + " detections, stride " + std::to_string(stride));
    // a top-down crop through a pointer offset: rows of the crop are `stride` apart in the big buffer
    const int cw = std::max(1, w / 2), ch = std::max(1, h / 2);
    std::vector<uint8_t> crop(size_t(cw) * ch * 3);
    for (int y = 0; y < ch; ++y)
        std::memcpy(&crop[size_t(y) * cw * 3], p + (size_t(y + h - ch) * w + (w - cw)) * 3, size_t(cw) * 3);
    const std::vector<edgedet::Detection> crop_ref = det.detect(crop.data(), cw, ch, cw * 3);
    report("crop by pointer and stride gives the same detections",
           same(det.detect(p + (size_t(h - ch) * w + (w - cw)) * 3, cw, ch, 3 * w), crop_ref, 0.f),
           std::to_string(cw) + " x " + std::to_string(ch));
    // allocations: detect() on frames of one size calls operator new no more often than inference alone
    det.detect(p, w, h, 3 * w);
    const int runs = 20;
    long n0 = g_news.load();
    for (int i = 0; i < runs; ++i) det.detect(p, w, h, 3 * w);
    long n1 = g_news.load();
    for (int i = 0; i < runs; ++i) det.infer();
    long n2 = g_news.load();
    for (int i = 0; i < runs; ++i) {
        det.preprocess(p, w, h, 3 * w);
        det.postprocess(w, h);
    }
    long n3 = g_news.load();
    report("no allocation in pre/post-processing", n3 == n2,
           "operator new calls in " + std::to_string(runs) + " runs: detect " + std::to_string(n1 - n0) +
               ", inference alone " + std::to_string(n2 - n1) + ", pre+post-processing " + std::to_string(n3 - n2));
    report("detect allocates no more than inference", n1 - n0 <= n2 - n1, "");
    std::printf("{\"selftest\": \"%s\", \"failed\": %d}\n", failed ? "failed" : "passed", failed);
    return failed ? 1 : 0;
}

void dump(const edgedet::Detector& det, const std::string& dir) {
    const int r = det.resolution(), q = det.num_queries(), c = det.num_classes();
    const struct {
        const char* name;
        const float* data;
        size_t n;
    } arrays[] = {{"input.f32", det.input(), size_t(3) * r * r},
                  {"boxes.f32", det.boxes(), size_t(q) * 4},
                  {"logits.f32", det.logits(), size_t(q) * c}};
    for (const auto& a : arrays) {
        std::ofstream f(dir + "/" + a.name, std::ios::binary);
        if (!f.write(reinterpret_cast<const char*>(a.data), std::streamsize(a.n * sizeof(float))))
            throw std::runtime_error(dir + "/" + a.name + ": cannot write");
    }
}

int usage() {
    std::fprintf(stderr,
                 "usage: edgedet_example [--artifact DIR] [--threshold T] [--topk K] [--threads N] [--info] "
                 "[--time RUNS] [--warmup N] [--instances K] [--repeat N] [--selftest] [--dump DIR] IMAGE.ppm...\n"
                 "%s on %s (%s), %d x %d input; artifact default: %s\n",
                 edgedet::config::kSubnet, edgedet::config::kBackend, edgedet::config::kPrecision,
                 edgedet::config::kResolution, edgedet::config::kResolution, EDGEDET_DEFAULT_ARTIFACT);
    return 2;
}

}  // namespace

int main(int argc, char** argv) {
    std::string dir = EDGEDET_DEFAULT_ARTIFACT, dump_dir;
    edgedet::Options opt;
    int time_runs = 0, warmup = 20, instances = 0, repeat = 3;
    bool selftest = false, info = false;
    std::vector<std::string> paths;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        auto value = [&]() -> const char* {
            if (i + 1 >= argc) {
                std::fprintf(stderr, "error: %s needs a value\n", a.c_str());
                std::exit(2);
            }
            return argv[++i];
        };
        if (a == "--artifact") dir = value();
        else if (a == "--threshold") opt.threshold = float(std::atof(value()));
        else if (a == "--threads") opt.threads = std::atoi(value());
        else if (a == "--topk") opt.topk = std::atoi(value());
        else if (a == "--device") opt.device = value();
        else if (a == "--time") time_runs = std::atoi(value());
        else if (a == "--warmup") warmup = std::atoi(value());
        else if (a == "--instances") instances = std::atoi(value());
        else if (a == "--repeat") repeat = std::atoi(value());
        else if (a == "--selftest") selftest = true;
        else if (a == "--info") info = true;
        else if (a == "--dump") dump_dir = value();
        else if (a == "-h" || a == "--help") return usage();
        else if (!a.empty() && a[0] == '-') {
            std::fprintf(stderr, "error: unknown option %s\n", a.c_str());
            return usage();
        } else paths.push_back(a);
    }
    if (paths.empty()) return usage();
    try {
        std::vector<Image> images;
        for (const auto& p : paths) images.push_back(read_ppm(p));
        if (selftest) return selftest_mode(dir, opt, images[0]);
        if (instances > 0) return instances_mode(dir, opt, images, instances, repeat);
        edgedet::Detector det(dir, opt);
        if (info)
            std::printf("{\"info\": {\"backend\": %s, \"precision\": %s, \"settings\": %s}}\n",
                        json_str(det.backend_info()).c_str(), json_str(edgedet::config::kPrecision).c_str(),
                        det.settings().c_str());
        if (time_runs > 0) return time_mode(det, images[0], time_runs, warmup, opt.threads);
        for (size_t i = 0; i < images.size(); ++i)
            print_detections(det, paths[i], det.detect(images[i].rgb.data(), images[i].width, images[i].height,
                                                       images[i].width * 3));
        if (!dump_dir.empty()) dump(det, dump_dir);
    } catch (const BadInput& e) {
        std::fprintf(stderr, "error: %s\n", e.what());
        return 2;
    } catch (const edgedet::InvalidInput& e) {
        std::fprintf(stderr, "error: %s\n", e.what());
        return 2;
    } catch (const edgedet::Error& e) {
        std::fprintf(stderr, "error: %s\n", e.what());
        return 2;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "error: %s\n", e.what());
        return 1;
    }
    return 0;
}
