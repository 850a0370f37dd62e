mgpu_test(test_png image/test_png.c LIBS PkgConfig::PNG)
mgpu_test(test_flow image/test_flow.c)
mgpu_test(test_noise image/test_noise.c)
