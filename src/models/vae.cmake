# The FLUX autoencoder.
target_sources(mgpu PRIVATE ${CMAKE_CURRENT_LIST_DIR}/vae.c)
