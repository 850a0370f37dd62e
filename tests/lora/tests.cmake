# LoRA files: opening, resolving onto FLUX.1 / CLIP-L / T5 weights, deltas.
mgpu_test(test_lora lora/test_lora.c LIBS mgpu_synthlib)
mgpu_test(test_lora_apply lora/test_lora_apply.c LIBS mgpu_synthlib)
