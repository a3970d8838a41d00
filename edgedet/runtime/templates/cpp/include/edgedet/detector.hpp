// edgedet C++ runtime: the detector of one compiled edgedet artifact.
//
// Written by edgedet next to the artifact (ARTIFACT/runtime/cpp); the constants (resolution, class names,
// threshold, top-k, the runtime options it was measured with) are in edgedet/config.hpp, generated from the same
// artifact.json the Python runtime reads.
//
//   edgedet::Detector det("path/to/ARTIFACT");            // loads the model once
//   for (const auto& d : det.detect(rgb, width, height, stride))
//       std::cout << det.class_name(d.label) << " " << d.score << " " << d.x1 << " " << d.y1 << "\n";
//
// Pre-processing and post-processing are those of edgedet/runtime/core.py: the RGB image is stretched (not
// letterboxed) to R x R with bilinear sampling (half-pixel centres, no antialias), scaled to [0,1] and laid out as
// NCHW float; the top-k (query, class) pairs by logit (ties: lower flat index q*C+c first) become detections with
// sigmoid scores above the threshold and xyxy boxes in pixels of the input image, clipped to it.
//
// Threads: a Detector is not shareable; use one instance per thread (instances share nothing). A moved-from
// Detector throws edgedet::Error when used.
// Memory: buffers are allocated at construction and on the first frame of a new size; detect() on frames of the
// same size allocates nothing in edgedet's code.
#pragma once

#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace edgedet {

/// Loading problems: missing files, a model that does not match this project, the backend refusing the model.
class Error : public std::runtime_error {
  public:
    using std::runtime_error::runtime_error;
};

/// A bad argument to detect() (null image, non-positive size, stride shorter than a row).
class InvalidInput : public std::invalid_argument {
  public:
    using std::invalid_argument::invalid_argument;
};

/// One detection: box corners in pixels of the input image (x right, y down), clipped to it.
struct Detection {
    float x1, y1, x2, y2;
    float score;  // sigmoid of the logit, in (0, 1)
    int label;    // class id in [0, num_classes)
    int query;    // the decoder query it came from
    int category_id;  // the dataset's category id of `label` when the artifact records them, else -1
};

struct Options {
    int threads = 0;         // inference threads; 0: the artifact's (config::kThreads, what it was measured with)
    float threshold = -1.f;  // keep scores > threshold; < 0: config::kThreshold
    int topk = 0;            // at most this many detections; 0: config::kTopK
    std::string device;      // OpenVINO device ("CPU", "GPU"...); empty: config::kOpenVINODevice. TensorRT: CUDA
                             // device index ("0")
};

class Engine;  // the backend (src/engine_<backend>.cpp)

class Detector {
  public:
    /// Load ARTIFACT_DIR/<model file> (the folder edgedet compile wrote). Throws edgedet::Error.
    explicit Detector(const std::string& artifact_dir, const Options& options = Options());
    ~Detector();
    Detector(Detector&&) noexcept;
    Detector& operator=(Detector&&) noexcept;
    Detector(const Detector&) = delete;
    Detector& operator=(const Detector&) = delete;

    /// Detections in one RGB image: `rgb` points at `height` rows of `width` RGB8 pixels, rows `stride` bytes
    /// apart (stride >= 3 * width). Best first. The reference stays valid until the next call on this instance.
    /// Throws InvalidInput for bad arguments, Error when the backend fails.
    const std::vector<Detection>& detect(const uint8_t* rgb, int width, int height, int stride);

    // The three steps of detect(), public for timing and for callers that want the raw outputs.
    void preprocess(const uint8_t* rgb, int width, int height, int stride);  // -> input() [1,3,R,R]
    void infer();                                                            // input() -> boxes(), logits()
    const std::vector<Detection>& postprocess(int width, int height);        // boxes(), logits() -> detections

    const float* input() const;   // [1,3,R,R] RGB in [0,1]
    const float* boxes() const;   // [1,Q,4] normalised cxcywh
    const float* logits() const;  // [1,Q,C]
    int resolution() const;
    int num_queries() const;
    int num_classes() const;
    float threshold() const;
    int topk() const;
    std::string_view class_name(int label) const;  // "" for an id out of range (names may hold any byte)
    std::string backend_info() const;              // backend name and version, model path
    std::string settings() const;  // the runtime settings in effect, read back from the runtime (a JSON object)

  private:
    struct Impl;
    Impl& impl() const;  // throws Error on a moved-from Detector
    std::unique_ptr<Impl> impl_;
};

}  // namespace edgedet
