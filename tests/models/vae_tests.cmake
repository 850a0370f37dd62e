# The image kernels (src/ops/cpu_image.c) and the FLUX autoencoder
# (src/models/vae.c, against the double-precision tests/models/vae_reference.c).
mgpu_test(test_cpu_image ${CMAKE_CURRENT_LIST_DIR}/../ops/test_cpu_image.c)
mgpu_test(test_vae ${CMAKE_CURRENT_LIST_DIR}/test_vae.c ${CMAKE_CURRENT_LIST_DIR}/vae_reference.c
          LIBS mgpu_synthlib)
