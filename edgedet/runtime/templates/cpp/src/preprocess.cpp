// edgedet pre-processing in C++: the one implementation behind edgedet::Detector::preprocess and the C entry point
// edgedet_preprocess (libedgedet_preprocess, which the Python runtime may load). Arithmetic follows
// edgedet/runtime/core.py step by step in float32 (the build turns off FMA contraction).
#include "edgedet/preprocess.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <new>

// x86-64 Linux with GCC or Clang: loops also compiled for AVX2 (function multi-versioning) and explicit AVX2 /
// AVX-512 kernels picked at run time from what the CPU has. Elsewhere (ARM, MSVC) the portable code only.
#if defined(__x86_64__) && defined(__linux__) && (defined(__GNUC__) || defined(__clang__)) && \
    !defined(EDGEDET_NO_MULTIVERSION)
#define EDGEDET_X86_DISPATCH 1
#include <immintrin.h>
#endif

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
#ifdef EDGEDET_X86_DISPATCH
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

std::atomic<int> g_max_level{2};

int cpu_level() {
#ifdef EDGEDET_X86_DISPATCH
    static const int level = __builtin_cpu_supports("avx512f") ? 2 : __builtin_cpu_supports("avx2") ? 1 : 0;
    return level;
#else
    return 0;
#endif
}

int active_level() { return std::min(cpu_level(), g_max_level.load(std::memory_order_relaxed)); }

#ifdef EDGEDET_X86_DISPATCH
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"  // GCC 12's false positive inside the AVX-512 headers
#endif
// The vector kernels. Per output row: the row pair is blended (float(u0) * wy0 + float(u1) * wy1, as blend_rows)
// and split into R, G, B planes; then per plane and block of outputs, the two (AVX-512: or four) vectors from the
// block's base hold every source column it needs; the left and right samples are permuted out of them and blended
// (l * wx0 + r * wx1).
// mul, mul, add as separate intrinsics, contraction off: the portable path's roundings exactly.

// The scalar edges of the vector kernels (same arithmetic): pixels [x, w) of a row pair into the planes, and
// outputs [from, to) of one plane row.
inline void planes_from(int x, int w, const uint8_t* row0, const uint8_t* row1, float wy0, float wy1, float* tc[3]) {
    for (; x < w; ++x)
        for (int c = 0; c < 3; ++c) tc[c][x] = float(row0[3 * x + c]) * wy0 + float(row1[3 * x + c]) * wy1;
}

inline void columns_from(const ResizeTables& m, const float* t, int from, int to, float* d) {
    for (int i = from; i < to; ++i) d[i] = t[m.x0[i] / 3] * m.wx0[i] + t[m.x1[i] / 3] * m.wx1[i];
}

// One output row of one plane from the blended plane row t. Wide: some blocks' sources span four vectors (the image
// is 2-4 times as wide as the output); kept out of the common two-vector loop, where the test costs ~10%.
template <bool Wide>
__attribute__((target("avx512f"))) inline void columns_avx512(const ResizeTables& m, const float* t, float* d) {
    const int r = m.resolution, blocks = static_cast<int>(m.base.size());
    for (int b = 0; b < blocks; ++b) {
        const int x0 = 16 * b;
        if (m.base[b] < 0) {
            columns_from(m, t, x0, x0 + 16, d);
            continue;
        }
        const float* src = t + m.base[b];
        const __m512i i0 = _mm512_loadu_si512(m.rel0.data() + x0), i1 = _mm512_loadu_si512(m.rel1.data() + x0);
        const __m512 v0 = _mm512_loadu_ps(src), v1 = _mm512_loadu_ps(src + 16);
        __m512 left = _mm512_permutex2var_ps(v0, i0, v1), right = _mm512_permutex2var_ps(v0, i1, v1);
        if (Wide && m.vectors[b] == 4) {  // indices from 32 on pick from the upper two vectors
            const __m512 v2 = _mm512_loadu_ps(src + 32), v3 = _mm512_loadu_ps(src + 48);
            const __m512i upper = _mm512_set1_epi32(32);
            left = _mm512_mask_blend_ps(_mm512_cmpge_epi32_mask(i0, upper), left, _mm512_permutex2var_ps(v2, i0, v3));
            right = _mm512_mask_blend_ps(_mm512_cmpge_epi32_mask(i1, upper), right,
                                         _mm512_permutex2var_ps(v2, i1, v3));
        }
        _mm512_storeu_ps(d + x0, _mm512_add_ps(_mm512_mul_ps(left, _mm512_loadu_ps(m.wx0.data() + x0)),
                                               _mm512_mul_ps(right, _mm512_loadu_ps(m.wx1.data() + x0))));
    }
    columns_from(m, t, 16 * blocks, r, d);
}

__attribute__((target("avx512f"))) void resize_avx512(ResizeTables& m, const uint8_t* rgb, int stride, float* dst) {
    const int r = m.resolution, w = m.width;
    const size_t plane = static_cast<size_t>(r) * r, pw = m.planes.size() / 3;
    float* tc[3] = {m.planes.data(), m.planes.data() + pw, m.planes.data() + 2 * pw};
    // channel c of 16 interleaved pixels (positions 3k + c of 48 floats in v0, v1, v2): two-source permutes, first
    // the positions below 32 (v0, v1), then the rest from v2
    __m512i first[3], second[3];
    for (int c = 0; c < 3; ++c) {
        alignas(64) int a[16], b[16];
        for (int k = 0; k < 16; ++k) {
            const int pos = 3 * k + c;
            a[k] = pos < 32 ? pos : 0;
            b[k] = pos < 32 ? k : 16 + (pos - 32);
        }
        first[c] = _mm512_load_si512(a);
        second[c] = _mm512_load_si512(b);
    }
    const bool wide = std::find(m.vectors.begin(), m.vectors.end(), 4) != m.vectors.end();
    for (int y = 0; y < r; ++y) {
        const uint8_t* row0 = rgb + static_cast<size_t>(m.y0[y]) * stride;
        const uint8_t* row1 = rgb + static_cast<size_t>(m.y1[y]) * stride;
        const float wy0 = m.wy0[y], wy1 = m.wy1[y];
        const __m512 w0 = _mm512_set1_ps(wy0), w1 = _mm512_set1_ps(wy1);
        int x = 0;
        for (; x + 16 <= w; x += 16) {
            __m512 v[3];
            for (int k = 0; k < 3; ++k) {
                const __m512 a = _mm512_cvtepi32_ps(
                    _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row0 + 3 * x + 16 * k))));
                const __m512 b = _mm512_cvtepi32_ps(
                    _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row1 + 3 * x + 16 * k))));
                v[k] = _mm512_add_ps(_mm512_mul_ps(a, w0), _mm512_mul_ps(b, w1));
            }
            for (int c = 0; c < 3; ++c)
                _mm512_storeu_ps(tc[c] + x,
                                 _mm512_permutex2var_ps(_mm512_permutex2var_ps(v[0], first[c], v[1]), second[c], v[2]));
        }
        planes_from(x, w, row0, row1, wy0, wy1, tc);
        for (int c = 0; c < 3; ++c) {
            float* d = dst + c * plane + static_cast<size_t>(y) * r;
            if (wide)
                columns_avx512<true>(m, tc[c], d);
            else
                columns_avx512<false>(m, tc[c], d);
        }
    }
}

__attribute__((target("avx2"))) void resize_avx2(ResizeTables& m, const uint8_t* rgb, int stride, float* dst) {
    const int r = m.resolution, w = m.width;
    const size_t plane = static_cast<size_t>(r) * r, pw = m.planes.size() / 3;
    float* tc[3] = {m.planes.data(), m.planes.data() + pw, m.planes.data() + 2 * pw};
    // channel c of 8 interleaved pixels (positions 3k + c of 24 floats in v0, v1, v2) sits in lanes no two of the
    // three vectors share: blend the three by those lanes, then one permute puts them in order
    __m256i order[3];
    for (int c = 0; c < 3; ++c) {
        alignas(32) int o[8];
        for (int k = 0; k < 8; ++k) o[k] = (3 * k + c) % 8;
        order[c] = _mm256_load_si256(reinterpret_cast<const __m256i*>(o));
    }
    const int blocks = static_cast<int>(m.base.size());
    for (int y = 0; y < r; ++y) {
        const uint8_t* row0 = rgb + static_cast<size_t>(m.y0[y]) * stride;
        const uint8_t* row1 = rgb + static_cast<size_t>(m.y1[y]) * stride;
        const float wy0 = m.wy0[y], wy1 = m.wy1[y];
        const __m256 w0 = _mm256_set1_ps(wy0), w1 = _mm256_set1_ps(wy1);
        int x = 0;
        for (; x + 8 <= w; x += 8) {
            __m256 v[3];
            for (int k = 0; k < 3; ++k) {
                const __m256 a = _mm256_cvtepi32_ps(
                    _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(row0 + 3 * x + 8 * k))));
                const __m256 b = _mm256_cvtepi32_ps(
                    _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(row1 + 3 * x + 8 * k))));
                v[k] = _mm256_add_ps(_mm256_mul_ps(a, w0), _mm256_mul_ps(b, w1));
            }
            // lanes of channel 0 in v1: 1, 4, 7 (0x92); in v2: 2, 5 (0x24); channels 1 and 2 rotate these
            const __m256 c0 = _mm256_blend_ps(_mm256_blend_ps(v[0], v[1], 0x92), v[2], 0x24);
            const __m256 c1 = _mm256_blend_ps(_mm256_blend_ps(v[0], v[1], 0x24), v[2], 0x49);
            const __m256 c2 = _mm256_blend_ps(_mm256_blend_ps(v[0], v[1], 0x49), v[2], 0x92);
            _mm256_storeu_ps(tc[0] + x, _mm256_permutevar8x32_ps(c0, order[0]));
            _mm256_storeu_ps(tc[1] + x, _mm256_permutevar8x32_ps(c1, order[1]));
            _mm256_storeu_ps(tc[2] + x, _mm256_permutevar8x32_ps(c2, order[2]));
        }
        planes_from(x, w, row0, row1, wy0, wy1, tc);
        const __m256i seven = _mm256_set1_epi32(7);
        for (int c = 0; c < 3; ++c) {
            const float* t = tc[c];
            float* d = dst + c * plane + static_cast<size_t>(y) * r;
            for (int b = 0; b < blocks; ++b) {
                const int x0 = 8 * b;
                if (m.base[b] < 0) {
                    columns_from(m, t, x0, x0 + 8, d);
                    continue;
                }
                const __m256 lo = _mm256_loadu_ps(t + m.base[b]), hi = _mm256_loadu_ps(t + m.base[b] + 8);
                const __m256i i0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(m.rel0.data() + x0));
                const __m256i i1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(m.rel1.data() + x0));
                const __m256 left = _mm256_blendv_ps(_mm256_permutevar8x32_ps(lo, i0), _mm256_permutevar8x32_ps(hi, i0),
                                                     _mm256_castsi256_ps(_mm256_cmpgt_epi32(i0, seven)));
                const __m256 right = _mm256_blendv_ps(_mm256_permutevar8x32_ps(lo, i1),
                                                      _mm256_permutevar8x32_ps(hi, i1),
                                                      _mm256_castsi256_ps(_mm256_cmpgt_epi32(i1, seven)));
                _mm256_storeu_ps(d + x0, _mm256_add_ps(_mm256_mul_ps(left, _mm256_loadu_ps(m.wx0.data() + x0)),
                                                       _mm256_mul_ps(right, _mm256_loadu_ps(m.wx1.data() + x0))));
            }
            columns_from(m, t, 8 * blocks, r, d);
        }
    }
}
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
#endif

}  // namespace

void ResizeTables::update(int w, int h, int r) {
    // the vector paths blend whole rows; where the image is more than twice (AVX2) or four times (AVX-512) as wide
    // as the output, the portable path blends only the sampled columns instead
    int lv = active_level();
    if (w > (lv == 2 ? 4 : 2) * r) lv = 0;
    if (w == width && h == height && r == resolution && lv == level) return;
    axis_weights(r, w, x0, x1, wx0, wx1);
    axis_weights(r, h, y0, y1, wy0, wy1);
    for (int i = 0; i < r; ++i) {
        x0[i] *= 3;
        x1[i] *= 3;
        wx0[i] /= 255.0f;
        wx1[i] /= 255.0f;
    }
    row.resize(lv ? 0 : static_cast<size_t>(w) * 3);  // the portable path's interleaved row; planes otherwise
    block = lv == 2 ? 16 : lv == 1 ? 8 : 0;
    base.assign(block ? r / block : 0, -1);
    vectors.assign(base.size(), 0);
    rel0.assign(r, 0);
    rel1.assign(r, 0);
    for (size_t b = 0; b < base.size(); ++b) {
        const int first = x0[b * block] / 3, last = x1[b * block + block - 1] / 3;  // columns rise with x
        const int span = last - first + 1;
        if (span > (lv == 2 ? 4 : 2) * block) continue;
        base[b] = first;
        vectors[b] = span > 2 * block ? 4 : 2;
        for (int i = 0; i < block; ++i) {
            rel0[b * block + i] = x0[b * block + i] / 3 - first;
            rel1[b * block + i] = x1[b * block + i] / 3 - first;
        }
    }
    planes.assign(block ? 3 * (static_cast<size_t>(w) + 4 * block) : 0, 0.0f);  // vector loads past the row
    width = w;
    height = h;
    resolution = r;
    level = lv;
}

void resize_rgb(ResizeTables& m, const uint8_t* rgb, int stride, float* dst) {
#ifdef EDGEDET_X86_DISPATCH
    if (m.level == 2) return resize_avx512(m, rgb, stride, dst);
    if (m.level == 1) return resize_avx2(m, rgb, stride, dst);
#endif
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

extern "C" int edgedet_preprocess_level(int max_level) {
    if (max_level >= 0) edgedet::g_max_level.store(max_level, std::memory_order_relaxed);
    return edgedet::active_level();
}
