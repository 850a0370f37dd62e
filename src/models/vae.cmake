# The image kernels and the FLUX autoencoder.
target_sources(mgpu PRIVATE ${CMAKE_CURRENT_LIST_DIR}/../ops/cpu_image.c)
target_sources(mgpu PRIVATE ${CMAKE_CURRENT_LIST_DIR}/vae.c)
