# The CUDA backend: the loader (always part of libmgpu) and, when a CUDA
# toolkit is found, the plugin libmgpu-cuda.so next to the mgpu binary.
# Without CUDA nothing else changes: mgpu_backend_cuda_create then reports
# that the plugin is not built.
target_sources(mgpu PRIVATE ${CMAKE_CURRENT_LIST_DIR}/../cuda_loader.c)

option(MGPU_CUDA "Build the CUDA backend plugin when a CUDA toolkit is found" ON)
set(MGPU_CUDA_ARCHITECTURES "80-real;90" CACHE STRING
    "GPU architectures for the CUDA plugin (sm_80 code also runs on sm_86/89; 90 adds PTX for newer GPUs)")

if(MGPU_CUDA)
  include(CheckLanguage)
  # nvcc is often not on PATH; the toolkit's default location is.
  if(NOT DEFINED CMAKE_CUDA_COMPILER AND NOT DEFINED ENV{CUDACXX})
    find_program(MGPU_NVCC nvcc)
    if(NOT MGPU_NVCC AND EXISTS /usr/local/cuda/bin/nvcc)
      set(CMAKE_CUDA_COMPILER /usr/local/cuda/bin/nvcc)
    endif()
  endif()
  check_language(CUDA)
endif()

if(MGPU_CUDA AND CMAKE_CUDA_COMPILER)
  enable_language(CUDA)
  find_package(CUDAToolkit)
endif()

if(MGPU_CUDA AND CMAKE_CUDA_COMPILER AND CUDAToolkit_FOUND AND TARGET CUDA::cublas
   AND TARGET CUDA::cublasLt)
  set(dir ${CMAKE_CURRENT_LIST_DIR})
  add_library(mgpu_cuda MODULE
    ${dir}/cuda_backend.c
    ${dir}/cuda_fp8.c
    ${dir}/cuda_pool.c
    ${dir}/cuda_dequant.cu
    ${dir}/cuda_ops.cu
    ${dir}/cuda_attention.cu)
  set_target_properties(mgpu_cuda PROPERTIES
    OUTPUT_NAME mgpu-cuda
    LIBRARY_OUTPUT_DIRECTORY ${PROJECT_BINARY_DIR}
    CUDA_ARCHITECTURES "${MGPU_CUDA_ARCHITECTURES}"
    CUDA_STANDARD 17
    CUDA_STANDARD_REQUIRED ON
    C_VISIBILITY_PRESET hidden
    CUDA_VISIBILITY_PRESET hidden
    POSITION_INDEPENDENT_CODE ON
    # The project-wide options (sanitizers, libFuzzer coverage, -Wpedantic)
    # are not nvcc options, and the CUDA runtime and cuBLAS it calls are
    # not instrumented anyway: the plugin sets its own below, for every
    # build flavour (gcc or clang, with or without MGPU_SANITIZE/MGPU_FUZZ).
    COMPILE_OPTIONS ""
    LINK_OPTIONS "")
  set(c_warn -Wall -Wextra -Wpedantic)
  set(cu_warn -Xcompiler=-Wall,-Wextra)
  if(MGPU_WERROR)
    list(APPEND c_warn -Werror)
    list(APPEND cu_warn -Werror=all-warnings -Xcompiler=-Werror)
  endif()
  target_compile_options(mgpu_cuda PRIVATE
    $<$<COMPILE_LANGUAGE:C>:${c_warn}>
    $<$<COMPILE_LANGUAGE:CUDA>:${cu_warn}>)
  # No fused multiply-add in the decoders and elementwise kernels: they
  # match the CPU's (uncontracted) arithmetic bit for bit. Attention's dot
  # products are compared with a tolerance anyway and keep their FMAs.
  set_source_files_properties(${dir}/cuda_dequant.cu ${dir}/cuda_ops.cu
                              PROPERTIES COMPILE_OPTIONS --fmad=false)
  target_include_directories(mgpu_cuda PRIVATE ${PROJECT_SOURCE_DIR}/include ${PROJECT_SOURCE_DIR}/src)
  if(TARGET CUDA::cudart_static)
    set(cudart CUDA::cudart_static)
  else()
    set(cudart CUDA::cudart)
  endif()
  target_link_libraries(mgpu_cuda PRIVATE ${cudart} CUDA::cublas CUDA::cublasLt Threads::Threads)
  message(STATUS "mgpu: CUDA plugin enabled (CUDA ${CUDAToolkit_VERSION}, architectures ${MGPU_CUDA_ARCHITECTURES})")
else()
  message(STATUS "mgpu: CUDA plugin not built (MGPU_CUDA=${MGPU_CUDA}, nvcc: ${CMAKE_CUDA_COMPILER})")
endif()
