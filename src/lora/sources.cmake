# LoRA files: reading, mapping onto FLUX.1 / CLIP-L / T5 weights, the delta.
target_sources(mgpu PRIVATE
  ${CMAKE_CURRENT_LIST_DIR}/lora.c
  ${CMAKE_CURRENT_LIST_DIR}/lora_apply.c
  ${CMAKE_CURRENT_LIST_DIR}/lora_map.c)
