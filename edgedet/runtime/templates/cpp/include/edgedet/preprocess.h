// edgedet pre-processing (core.preprocess of the Python runtime, in C++): uint8 RGB -> float32 [1,3,R,R] in [0,1],
// bilinear stretch with half-pixel centres, rows first (pixel values 0..255) then columns (weights / 255), in
// float32 and in that order, so the tensor equals numpy's bit for bit. Used by edgedet::Detector, and exported from
// the shared library edgedet_preprocess for the Python runtime (Detector(preprocess_library=...)).
#ifndef EDGEDET_PREPROCESS_H
#define EDGEDET_PREPROCESS_H

#ifdef __cplusplus
#include <cstddef>
#include <cstdint>
#include <vector>

namespace edgedet {

// Index and weight tables of one (image size, resolution), and the row scratch the resize needs.
struct ResizeTables {
    int width = -1, height = -1, resolution = -1;
    std::vector<int> x0, x1, y0, y1;        // x as byte offsets into an RGB row (3 * column)
    std::vector<float> wx0, wx1, wy0, wy1;  // wx already divided by 255
    std::vector<float> row;                 // portable path: one source row pair blended over y, 3 * width floats
    // The vector code paths (x86-64: AVX2, AVX-512): the blended row pair is kept as three planes and the columns
    // of `block` outputs (8 or 16) are picked by permutes from the two (AVX-512: two or four) vectors of a plane
    // that hold all of that block's sources. Same float32 operations in the same order as the portable path.
    int level = -1;                         // code path the tables are laid out for: 0 portable, 1 AVX2, 2 AVX-512
    int block = 0;                          // outputs per block (vector paths)
    std::vector<int> base;                  // per block: its first source column, or -1 (block done one by one)
    std::vector<int> vectors;               // per block: how many vectors its sources span (2 or 4)
    std::vector<int> rel0, rel1;            // per output x: source column (x0, x1) minus its block's base
    std::vector<float> planes;              // 3 planes of width + 4 * block floats
    // Recomputes the tables when the size, resolution or code path changed (the only time this allocates).
    void update(int width, int height, int resolution);
};

// rgb: height rows of width RGB pixels, `stride` bytes apart -> dst [3, R, R] (R = tables.resolution).
void resize_rgb(ResizeTables& tables, const uint8_t* rgb, int stride, float* dst);

}  // namespace edgedet
extern "C" {
#else
#include <stdint.h>
#endif

// The C entry point of libedgedet_preprocess: 0 done; 1 bad arguments (null pointer, size <= 0, stride shorter than
// 3 * width, resolution outside 1..8192); 2 out of memory. dst must hold 3 * resolution * resolution floats.
// Thread-safe: the tables are kept per thread.
int edgedet_preprocess(const uint8_t* rgb, int width, int height, int stride, int resolution, float* dst);

// The code path the resize uses: 0 portable C++, 1 AVX2, 2 AVX-512 (x86-64 Linux builds pick the widest the CPU
// has). max_level >= 0 caps it for the whole process (tests run every path on one machine); -1 only asks. Returns
// the level in effect. Every level gives the same tensor bit for bit.
int edgedet_preprocess_level(int max_level);

#ifdef __cplusplus
}
#endif
#endif  // EDGEDET_PREPROCESS_H
