# Image output (PNG via libpng, float -> RGB8) and the sampling pieces of
# the text-to-image pipeline (flow-matching schedule, seeded noise).
# GLOBAL so tests (another directory) can link PkgConfig::PNG too.
pkg_check_modules(PNG REQUIRED IMPORTED_TARGET GLOBAL libpng)
target_sources(mgpu PRIVATE
  ${CMAKE_CURRENT_LIST_DIR}/image.c
  ${CMAKE_CURRENT_LIST_DIR}/png_write.c
  ${CMAKE_CURRENT_LIST_DIR}/../sample/flow.c
  ${CMAKE_CURRENT_LIST_DIR}/../sample/noise.c)
target_link_libraries(mgpu PRIVATE PkgConfig::PNG)
