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
    std::vector<float> row;                 // one source row pair blended over y: 3 * width floats
    // Recomputes the tables when the size or resolution changed (the only time this allocates).
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

#ifdef __cplusplus
}
#endif
#endif  // EDGEDET_PREPROCESS_H
