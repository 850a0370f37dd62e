# The backend tests: the CUDA plugin's host logic (no GPU needed) and the
# cross-backend op test (every op on every available backend against a
# double-precision reference and against the CPU backend; the CUDA part is
# skipped, saying so, where there is no GPU).
mgpu_test(test_cuda_host backend/test_cuda_host.c ${PROJECT_SOURCE_DIR}/src/backend/cuda/cuda_pool.c)
mgpu_test(test_backend_cross backend/test_backend_cross.c)
if(TARGET mgpu_cuda)
  # The device decoders compiled for the host (C++) against core/quant.c.
  include(CheckLanguage)
  check_language(CXX)
  # only with the C compiler's own C++ sibling: the shared compile options
  # (sanitizers, -fsanitize=fuzzer-no-link) are the C compiler's
  if(CMAKE_CXX_COMPILER)
    enable_language(CXX)
  endif()
  if(CMAKE_CXX_COMPILER AND CMAKE_CXX_COMPILER_ID STREQUAL CMAKE_C_COMPILER_ID AND NOT MGPU_FUZZ)
    add_executable(test_cuda_decode backend/test_cuda_decode.cc)
    set_target_properties(test_cuda_decode PROPERTIES CXX_STANDARD 17 CXX_EXTENSIONS OFF)
    target_link_libraries(test_cuda_decode PRIVATE mgpu)
    target_include_directories(test_cuda_decode PRIVATE ${PROJECT_SOURCE_DIR}/src)
    add_test(NAME test_cuda_decode COMMAND test_cuda_decode)
  endif()
  # the test binary is not next to the plugin: point the loader at it
  set_property(TEST test_backend_cross APPEND PROPERTY
               ENVIRONMENT "MGPU_CUDA_PLUGIN=$<TARGET_FILE:mgpu_cuda>")
  add_dependencies(test_backend_cross mgpu_cuda)
  # GPU-machine benchmark (tests/gpu/run.sh): our copies and linear against
  # the CUDA runtime and cuBLAS called directly.
  find_package(CUDAToolkit QUIET)
  if(TARGET CUDA::cudart AND TARGET CUDA::cublas)
    add_executable(bench_cuda ${PROJECT_SOURCE_DIR}/tests/gpu/bench_cuda.c)
    target_link_libraries(bench_cuda PRIVATE mgpu CUDA::cudart CUDA::cublas m)
    target_include_directories(bench_cuda PRIVATE ${PROJECT_SOURCE_DIR}/src)
    add_dependencies(bench_cuda mgpu_cuda)
  endif()
endif()
