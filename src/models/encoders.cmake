# The text encoders: CLIP (CLIP-L) and T5 v1.1 / UMT5.
target_sources(mgpu PRIVATE ${CMAKE_CURRENT_LIST_DIR}/clip.c ${CMAKE_CURRENT_LIST_DIR}/t5.c)
