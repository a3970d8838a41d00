# ONNX Runtime C/C++ SDK: an unpacked release (include/, lib/) given as ONNXRUNTIME_ROOT, or a system install.
# (The onnxruntime Python wheel has the library but not the headers.)
set(ONNXRUNTIME_ROOT "$ENV{ONNXRUNTIME_ROOT}" CACHE PATH "ONNX Runtime C/C++ SDK folder (include/, lib/)")
find_path(ONNXRUNTIME_INCLUDE_DIR onnxruntime_cxx_api.h HINTS ${ONNXRUNTIME_ROOT}/include
          PATH_SUFFIXES onnxruntime onnxruntime/core/session)
find_library(ONNXRUNTIME_LIBRARY onnxruntime HINTS ${ONNXRUNTIME_ROOT}/lib)
if(NOT ONNXRUNTIME_INCLUDE_DIR OR NOT ONNXRUNTIME_LIBRARY)
  message(FATAL_ERROR "ONNX Runtime C/C++ SDK not found (onnxruntime_cxx_api.h, libonnxruntime): unpack an "
                      "onnxruntime release and pass -DONNXRUNTIME_ROOT=<folder with include/ and lib/>")
endif()
target_include_directories(edgedet_detector PRIVATE ${ONNXRUNTIME_INCLUDE_DIR})
target_link_libraries(edgedet_detector PRIVATE ${ONNXRUNTIME_LIBRARY})
