// The backend interface behind edgedet::Detector: one implementation per runtime (src/engine_<backend>.cpp); a
// generated project compiles the one of its artifact.
#pragma once

#include <memory>
#include <string>

#include "edgedet/detector.hpp"

namespace edgedet {

class Engine {
  public:
    virtual ~Engine() = default;
    /// The model input [1,3,R,R] float32, owned by the engine; the same pointer for the engine's lifetime.
    virtual float* input() = 0;
    /// Run the model on input(); afterwards boxes() [1,Q,4] and logits() [1,Q,C] hold its outputs.
    virtual void run() = 0;
    virtual const float* boxes() const = 0;
    virtual const float* logits() const = 0;
    virtual std::string info() const = 0;
    /// The settings in effect as a JSON object, read back from the runtime where it can report them (the same keys
    /// as the Python runner's info()["settings"]).
    virtual std::string settings() const = 0;
};

/// Load the model at `path` with the settings of config.hpp (options.threads > 0 and options.device override the
/// thread count and device); checks that its input is [1,3,R,R] float32 (a batch > 1 or dynamic batch is
/// reshaped to 1 where the runtime allows) and its outputs `boxes` [1,Q,4] and `logits` [1,Q,C] match config.hpp.
std::unique_ptr<Engine> make_engine(const std::string& path, const Options& options);

}  // namespace edgedet
