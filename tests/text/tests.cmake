mgpu_test(test_tokenizers text/test_tokenizers.c LIBS mgpu_synthlib)
