// edgedet pre-processing in C++: the one implementation behind edgedet::Detector::preprocess and the C entry point
// edgedet_preprocess (libedgedet_preprocess, which the Python runtime may load). Arithmetic follows
// edgedet/runtime/core.py step by step in float32 (the build turns off FMA contraction).
#include "edgedet/preprocess.h"

#include <algorithm>
#include <cmath>
#include <new>

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

// On x86-64 with GCC or Clang the two loops are also compiled for AVX2 and the wider code is picked at run time
// (function multi-versioning); the arithmetic is the same (no FMA: contraction is off), so is the result.
#if defined(__x86_64__) && defined(__linux__) && (defined(__GNUC__) || defined(__clang__)) && \
    !defined(EDGEDET_NO_MULTIVERSION)
#define EDGEDET_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define EDGEDET_CLONES
#endif

// t[j] = row0[j] * w0 + row1[j] * w1 in float32 (separate roundings); restrict: the float output never aliases the
// uint8 rows, so the loop vectorises without run-time overlap checks
EDGEDET_CLONES void blend_rows(const uint8_t* __restrict row0, const uint8_t* __restrict row1, float w0, float w1,
                float* __restrict t, size_t n) {
    for (size_t j = 0; j < n; ++j) t[j] = float(row0[j]) * w0 + float(row1[j]) * w1;
}

// one output row: d[c * plane + x] = t[x0[x] + c] * wx0[x] + t[x1[x] + c] * wx1[x]
EDGEDET_CLONES void blend_columns(const float* __restrict t, const int* __restrict x0, const int* __restrict x1,
                                  const float* __restrict wx0, const float* __restrict wx1, int r, size_t plane,
                                  float* __restrict d) {
    for (int x = 0; x < r; ++x) {
        const float* left = t + x0[x];
        const float* right = t + x1[x];
        d[x] = left[0] * wx0[x] + right[0] * wx1[x];
        d[plane + x] = left[1] * wx0[x] + right[1] * wx1[x];
        d[2 * plane + x] = left[2] * wx0[x] + right[2] * wx1[x];
    }
}

}  // namespace

void ResizeTables::update(int w, int h, int r) {
    if (w == width && h == height && r == resolution) return;
    axis_weights(r, w, x0, x1, wx0, wx1);
    axis_weights(r, h, y0, y1, wy0, wy1);
    for (int i = 0; i < r; ++i) {
        x0[i] *= 3;
        x1[i] *= 3;
        wx0[i] /= 255.0f;
        wx1[i] /= 255.0f;
    }
    row.resize(static_cast<size_t>(w) * 3);
    width = w;
    height = h;
    resolution = r;
}

void resize_rgb(ResizeTables& m, const uint8_t* rgb, int stride, float* dst) {
    const int r = m.resolution;
    const size_t plane = static_cast<size_t>(r) * r;
    const size_t row_len = static_cast<size_t>(m.width) * 3;
    float* t = m.row.data();
    // core.preprocess: rows first (y, pixel values 0..255), then columns (x, weights / 255). The row blend is
    // computed once per source byte of the row (a contiguous loop the compiler vectorises), or, when the image is
    // more than twice as wide as the output, only at the columns the output samples.
    const bool sparse = m.width > 2 * r;
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
        blend_columns(t, m.x0.data(), m.x1.data(), m.wx0.data(), m.wx1.data(), r, plane,
                      dst + static_cast<size_t>(y) * r);
    }
}

}  // namespace edgedet

extern "C" int edgedet_preprocess(const uint8_t* rgb, int width, int height, int stride, int resolution,
                                  float* dst) {
    if (rgb == nullptr || dst == nullptr || width <= 0 || height <= 0 || resolution <= 0 || resolution > 8192 ||
        static_cast<int64_t>(stride) < 3 * static_cast<int64_t>(width))
        return 1;
    thread_local edgedet::ResizeTables tables;
    try {
        tables.update(width, height, resolution);
    } catch (const std::bad_alloc&) {
        tables = edgedet::ResizeTables();
        return 2;
    }
    edgedet::resize_rgb(tables, rgb, stride, dst);
    return 0;
}
