# TensorRT 10+ and CUDA, built on the device: JetPack installs both (/usr/include/aarch64-linux-gnu, /usr/local/cuda);
# elsewhere pass -DTENSORRT_ROOT=<TensorRT tar folder> and -DCUDAToolkit_ROOT=<CUDA folder>.
set(TENSORRT_ROOT "$ENV{TENSORRT_ROOT}" CACHE PATH "TensorRT folder (include/, lib/)")
find_path(TENSORRT_INCLUDE_DIR NvInfer.h HINTS ${TENSORRT_ROOT}/include
          PATH_SUFFIXES x86_64-linux-gnu aarch64-linux-gnu)
find_library(NVINFER_LIBRARY nvinfer HINTS ${TENSORRT_ROOT}/lib PATH_SUFFIXES x86_64-linux-gnu aarch64-linux-gnu)
if(NOT TENSORRT_INCLUDE_DIR OR NOT NVINFER_LIBRARY)
  message(FATAL_ERROR "TensorRT not found (NvInfer.h, libnvinfer): build on the device (JetPack), or pass "
                      "-DTENSORRT_ROOT=<folder with include/ and lib/>")
endif()
find_package(CUDAToolkit REQUIRED)
target_include_directories(edgedet_detector PRIVATE ${TENSORRT_INCLUDE_DIR})
target_link_libraries(edgedet_detector PRIVATE ${NVINFER_LIBRARY} CUDA::cudart)
