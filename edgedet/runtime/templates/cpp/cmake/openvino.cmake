# OpenVINO: the Python wheel ships the headers and OpenVINOConfig.cmake
#   -DOpenVINO_DIR=$(python3 -c "import openvino.utils as u; print(u.get_cmake_path())")
find_package(OpenVINO QUIET COMPONENTS Runtime)
if(NOT OpenVINO_FOUND)
  message(FATAL_ERROR "OpenVINO SDK not found: pip install openvino and pass -DOpenVINO_DIR=$(python3 -c "
                      "\"import openvino.utils as u; print(u.get_cmake_path())\"), or install an OpenVINO archive")
endif()
target_link_libraries(edgedet_detector PRIVATE openvino::runtime)
