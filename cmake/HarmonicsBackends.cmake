# Detects the optional GPU toolchains. Each HM_WITH_<X> defaults to ON when its
# toolchain is found and to OFF, with a one-line reason, when it is not.
# Forcing an option ON without the toolchain is a configure error.

find_package(Vulkan QUIET COMPONENTS glslc)
if(Vulkan_FOUND AND TARGET Vulkan::glslc)
  set(_hm_vulkan_default ON)
else()
  set(_hm_vulkan_default OFF)
  message(STATUS "Harmonics: Vulkan backend OFF (Vulkan headers/loader or glslc not found)")
endif()
option(HM_WITH_VULKAN "Build the Vulkan backend plugin" ${_hm_vulkan_default})

find_package(OpenCL QUIET)
if(OpenCL_FOUND)
  set(_hm_opencl_default ON)
else()
  set(_hm_opencl_default OFF)
  message(STATUS "Harmonics: OpenCL backend OFF (OpenCL headers/ICD loader not found)")
endif()
option(HM_WITH_OPENCL "Build the OpenCL backend plugin" ${_hm_opencl_default})

include(CheckLanguage)
check_language(CUDA)
if(CMAKE_CUDA_COMPILER)
  set(_hm_cuda_default ON)
else()
  set(_hm_cuda_default OFF)
  message(STATUS "Harmonics: CUDA backend OFF (nvcc not found)")
endif()
option(HM_WITH_CUDA "Build the CUDA backend plugin" ${_hm_cuda_default})

if(HM_WITH_VULKAN AND NOT (Vulkan_FOUND AND TARGET Vulkan::glslc))
  message(FATAL_ERROR "HM_WITH_VULKAN=ON but Vulkan or glslc was not found")
endif()
if(HM_WITH_OPENCL AND NOT OpenCL_FOUND)
  message(FATAL_ERROR "HM_WITH_OPENCL=ON but OpenCL was not found")
endif()
if(HM_WITH_CUDA AND NOT CMAKE_CUDA_COMPILER)
  message(FATAL_ERROR "HM_WITH_CUDA=ON but nvcc was not found")
endif()

if(HM_WITH_CUDA)
  if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
    # Machine code for every GPU generation CUDA 13 supports — Turing 75, Ampere
    # 80/86 (86 also runs on 87/88), Ada 89, Hopper 90, Blackwell 100 (and 103),
    # Thor 110, Blackwell 120 (and 121) — plus compute_120 PTX that newer GPUs
    # JIT. About 14 s of nvcc on 2 cores instead of 4 s for one architecture;
    # -DCMAKE_CUDA_ARCHITECTURES=90 (or native) builds only what you need.
    set(CMAKE_CUDA_ARCHITECTURES 75-real 80-real 86-real 89-real 90-real 100-real 110-real 120)
    set(HM_CUDA_DEFAULT_ARCHITECTURES ON) # tests/cli/test_cuda_architectures.sh checks the plugin holds them
  endif()
  enable_language(CUDA)
endif()
