target_sources(mgpu PRIVATE
  ${CMAKE_CURRENT_LIST_DIR}/tokenizer.c
  ${CMAKE_CURRENT_LIST_DIR}/unicode.c
  ${CMAKE_CURRENT_LIST_DIR}/clip_bpe.c
  ${CMAKE_CURRENT_LIST_DIR}/t5_unigram.c
)
