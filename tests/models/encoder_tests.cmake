# The text encoders against the double-precision reference.
mgpu_test(test_clip models/test_clip.c models/encoder_reference.c LIBS mgpu_synthlib)
mgpu_test(test_t5 models/test_t5.c models/encoder_reference.c LIBS mgpu_synthlib)
