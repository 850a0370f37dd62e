/* compare_out A.safetensors B.safetensors [TOLERANCE]: the largest
 * difference of the tensors named `out` in A and B relative to B's largest
 * magnitude; exit 1 above TOLERANCE (default 0: bit identity), 2 on bad
 * files. For tests/gpu/run.sh: GPU output against the CPU's, and GPU
 * placements against each other. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mgpu/safetensors.h"

static float *load(const char *path, uint64_t *n)
{
    mgpu_safetensors *st;
    mgpu_error err = {0};
    if (mgpu_safetensors_open(path, &st, &err) != MGPU_OK) {
        fprintf(stderr, "compare_out: %s\n", err.message);
        return NULL;
    }
    const mgpu_tensor_info *t = mgpu_safetensors_find(st, "out");
    float *v = t ? malloc((size_t)(t->n_elems ? t->n_elems : 1) * sizeof(float)) : NULL;
    if (!v || mgpu_dequantize(t->dtype, t->data, v, t->n_elems) != MGPU_OK) {
        fprintf(stderr, "compare_out: %s: no readable tensor 'out'\n", path);
        free(v);
        v = NULL;
    } else {
        *n = t->n_elems;
    }
    mgpu_safetensors_close(st);
    return v;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: compare_out A.safetensors B.safetensors [TOLERANCE]\n");
        return 2;
    }
    double tol = argc > 3 ? atof(argv[3]) : 0.0;
    uint64_t na = 0, nb = 0;
    float *a = load(argv[1], &na), *b = load(argv[2], &nb);
    int rc = 2;
    if (a && b && na == nb) {
        double diff = 0, mag = 0;
        int same = memcmp(a, b, (size_t)na * sizeof(float)) == 0;
        for (uint64_t i = 0; i < na; i++) {
            double d = fabs((double)a[i] - b[i]);
            diff = d > diff || isnan(d) ? d : diff;
            mag = fabs(b[i]) > mag ? fabs(b[i]) : mag;
        }
        double rel = mag > 0 ? diff / mag : diff;
        printf("%s: max|a-b|/max|b| = %.3g\n", same ? "identical" : "differ", rel);
        rc = (tol == 0.0 ? same : rel <= tol) ? 0 : 1;
    } else if (a && b) {
        fprintf(stderr, "compare_out: %llu values against %llu\n", (unsigned long long)na,
                (unsigned long long)nb);
    }
    free(a);
    free(b);
    return rc;
}
