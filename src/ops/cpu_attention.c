/* Scaled dot-product attention on the CPU, FlashAttention-style: for one
 * block of query rows at a time the keys are visited in blocks; each
 * block's scores come from a small GEMM, an online softmax keeps each row's
 * running max and sum, and the output rows, which double as the
 * accumulator, are rescaled whenever the max grows. The L x L score matrix
 * never exists; the scratch is a fixed 32 KiB on the stack of the thread
 * that runs a chunk, whatever the shapes, so nothing is allocated and
 * nothing can fail.
 *
 * Inside a query block the layout is transposed, with the query rows as the
 * vector lanes: the packed queries are Qt[c][i], the scores and then the
 * probabilities S[j][i], P.V is PV[c][i]. The softmax then runs across the
 * QB lanes, so each row's max and sum are lane-wise operations in a fixed
 * order, not horizontal reductions, and both GEMMs have the same form,
 * C[r][i] (+)= sum_p A(r, p) * B[p][i], with A = K or V^T read in place.
 *
 * The GEMMs are OpenBLAS's cblas_sgemm, called from our pool's threads.
 * Measured on a Zen 4 core at FLUX shapes it ran them 2.5x faster than the
 * register-blocked SSE2 kernels below (its AVX-512 kernels against
 * baseline x86-64). Every call is kept to m * n * k <= QB * KB * DC =
 * 2^18, which OpenBLAS (0.3.x: 65536 * GEMM_MULTITHREAD_THRESHOLD, default
 * 4) runs on the calling thread: it never starts its own threads here, so
 * concurrent calls neither oversubscribe nor depend on its thread count.
 * Building with -DMGPU_ATT_NO_BLAS uses our kernels instead.
 *
 * Scores are kept unscaled; the softmax takes exp2((s - max) * scale *
 * log2(e)), subtracting before scaling so the large scores of a sharp
 * softmax lose nothing to the scale's rounding. A negative scale is folded
 * into the packed queries (an exact sign flip).
 *
 * Vector code uses GCC/Clang generic vectors of 4 floats (SSE2 width, no
 * intrinsics). Plain loops were tried first: GCC keeps a 4 x 8 accumulator
 * tile in registers at -O2, but at -O3 turns the reduction loop into an
 * emulated in-order vector reduction that ran 5x slower; generic vectors
 * give the same code at every level. Other compilers get a lane-array
 * fallback with the same arithmetic.
 *
 * Determinism: the pool splits (head, query block) pairs; every output row
 * belongs to exactly one pair, and a pair's arithmetic depends only on the
 * shapes, never on the thread that runs it. */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#ifndef MGPU_ATT_NO_BLAS
#include <cblas.h>
#endif

#include "ops/cpu_ops.h"

/* Query rows per block (lanes), keys per block, and the width of the
 * head_dim slices the packed queries and the P.V tile are cut into. QB must
 * be a multiple of 8, KB and DC of 4. With OpenBLAS, QB * KB * DC must stay
 * <= 2^18 (see above). Block sizes from 16 to 64 lanes and 64 to 256 keys
 * measured within 5% of each other; these keep the scratch at 32 KiB. */
#ifndef MGPU_ATT_QB
#define MGPU_ATT_QB 32
#endif
#ifndef MGPU_ATT_KB
#define MGPU_ATT_KB 128
#endif
#ifndef MGPU_ATT_DC
#define MGPU_ATT_DC 64
#endif
enum { QB = MGPU_ATT_QB, KB = MGPU_ATT_KB, DC = MGPU_ATT_DC };
_Static_assert(QB % 8 == 0 && KB % 4 == 0 && DC % 4 == 0, "attention block sizes");
#ifndef MGPU_ATT_NO_BLAS
_Static_assert((int64_t)QB * KB * DC <= 262144, "OpenBLAS would thread the block GEMMs");
#endif

/* exp2 is evaluated as 2^n * p(f), n = round(x), f = x - n in [-0.5, 0.5],
 * with Cephes' exp2f polynomial (relative error < 2e-7). Inputs are clamped
 * to [-127, 0]: softmax arguments are never positive, and 2^-127 lands on
 * an exponent field of 0, i.e. exactly 0. NaN passes through. */
#define EXP2_MAGIC 12582912.0f /* 1.5 * 2^23: adding it rounds to an integer */
#define EXP2_P0 1.535336188319500e-4f
#define EXP2_P1 1.339887440266574e-3f
#define EXP2_P2 9.618437357674640e-3f
#define EXP2_P3 5.550332471162809e-2f
#define EXP2_P4 2.402264791363012e-1f
#define EXP2_P5 6.931472028550421e-1f

/* ------------------------------------------------------------ 4-lane vectors */

#if (defined(__GNUC__) || defined(__clang__)) && !defined(MGPU_ATT_SCALAR)

typedef float v4f __attribute__((vector_size(16)));
typedef uint32_t v4u __attribute__((vector_size(16)));

static inline v4f vload(const float *p)
{
    v4f v;
    memcpy(&v, p, sizeof v);
    return v;
}
static inline void vstore(float *p, v4f v) { memcpy(p, &v, sizeof v); }
static inline v4f vsplat(float s) { return (v4f){s, s, s, s}; }
static inline v4f vadd(v4f a, v4f b) { return a + b; }
static inline v4f vsub(v4f a, v4f b) { return a - b; }
static inline v4f vmul(v4f a, v4f b) { return a * b; }
#ifdef MGPU_ATT_NO_BLAS
/* acc + s * b, s broadcast */
static inline v4f vmacs(v4f acc, float s, v4f b) { return acc + s * b; }
#endif
/* a < b ? b : a per lane, so a NaN in a survives */
static inline v4f vmax(v4f a, v4f b)
{
    v4u lt = (v4u)(a < b);
    return (v4f)((lt & (v4u)b) | (~lt & (v4u)a));
}
static inline v4f vmin(v4f a, v4f b)
{
    v4u gt = (v4u)(a > b);
    return (v4f)((gt & (v4u)b) | (~gt & (v4u)a));
}
static inline v4f vexp2(v4f x)
{
    x = vmin(vmax(x, vsplat(-127.0f)), vsplat(0.0f));
    v4f t = x + EXP2_MAGIC;
    v4f f = x - (t - EXP2_MAGIC);
    v4f p = vsplat(EXP2_P0);
    p = p * f + EXP2_P1;
    p = p * f + EXP2_P2;
    p = p * f + EXP2_P3;
    p = p * f + EXP2_P4;
    p = p * f + EXP2_P5;
    p = p * f + 1.0f;
    /* t's low mantissa bits hold n + 2^22; unsigned, so NaN bits wrap */
    v4u bits = (v4u)t - (v4u)vsplat(EXP2_MAGIC);
    return p * (v4f)((bits + 127u) << 23);
}

#else /* lane arrays: the same operations, one float at a time */

typedef struct v4f {
    float x[4];
} v4f;

static inline v4f vload(const float *p)
{
    v4f v;
    memcpy(v.x, p, sizeof v.x);
    return v;
}
static inline void vstore(float *p, v4f v) { memcpy(p, v.x, sizeof v.x); }
static inline v4f vsplat(float s) { return (v4f){{s, s, s, s}}; }
#define V4_LANEWISE(name, expr)                                                                    \
    static inline v4f name(v4f a, v4f b)                                                           \
    {                                                                                              \
        v4f r;                                                                                     \
        for (int l = 0; l < 4; l++)                                                                \
            r.x[l] = (expr);                                                                       \
        return r;                                                                                  \
    }
V4_LANEWISE(vadd, a.x[l] + b.x[l])
V4_LANEWISE(vsub, a.x[l] - b.x[l])
V4_LANEWISE(vmul, a.x[l] * b.x[l])
V4_LANEWISE(vmax, a.x[l] < b.x[l] ? b.x[l] : a.x[l])
#undef V4_LANEWISE
#ifdef MGPU_ATT_NO_BLAS
static inline v4f vmacs(v4f acc, float s, v4f b)
{
    for (int l = 0; l < 4; l++)
        acc.x[l] += s * b.x[l];
    return acc;
}
#endif
static inline v4f vexp2(v4f v)
{
    for (int l = 0; l < 4; l++) {
        float x = v.x[l];
        x = x < -127.0f ? -127.0f : x;
        x = x > 0.0f ? 0.0f : x;
        float t = x + EXP2_MAGIC;
        float f = x - (t - EXP2_MAGIC);
        float p = EXP2_P0;
        p = p * f + EXP2_P1;
        p = p * f + EXP2_P2;
        p = p * f + EXP2_P3;
        p = p * f + EXP2_P4;
        p = p * f + EXP2_P5;
        p = p * f + 1.0f;
        uint32_t tb, mb;
        float magic = EXP2_MAGIC, scale;
        memcpy(&tb, &t, sizeof tb);
        memcpy(&mb, &magic, sizeof mb);
        tb = (tb - mb + 127u) << 23;
        memcpy(&scale, &tb, sizeof scale);
        v.x[l] = p * scale;
    }
    return v;
}

#endif

/* ------------------------------------------------------------ block GEMMs */

#ifdef MGPU_ATT_NO_BLAS

/* C[r][0..8) = (accumulate ? C[r][0..8) : 0) + sum_{p < np} A(r, p) * B[p][0..8)
 * for r < 4, where A(r, p) = a[r * rs + p * ps], B rows are QB apart and C
 * rows QB apart. The sum runs over p in order whichever kernel is used, so
 * an element's value does not depend on how rows were grouped. */
static void kernel_4x8(const float *a, ptrdiff_t rs, ptrdiff_t ps, const float *b, int64_t np,
                       float *c, int accumulate)
{
    v4f z = vsplat(0.0f);
    v4f c0a = z, c0b = z, c1a = z, c1b = z, c2a = z, c2b = z, c3a = z, c3b = z;
    if (accumulate) {
        c0a = vload(c), c0b = vload(c + 4);
        c1a = vload(c + QB), c1b = vload(c + QB + 4);
        c2a = vload(c + 2 * QB), c2b = vload(c + 2 * QB + 4);
        c3a = vload(c + 3 * QB), c3b = vload(c + 3 * QB + 4);
    }
    for (int64_t p = 0; p < np; p++) {
        const float *ap = a + p * ps;
        v4f ba = vload(b + p * QB), bb = vload(b + p * QB + 4);
        float a0 = ap[0], a1 = ap[rs], a2 = ap[2 * rs], a3 = ap[3 * rs];
        c0a = vmacs(c0a, a0, ba), c0b = vmacs(c0b, a0, bb);
        c1a = vmacs(c1a, a1, ba), c1b = vmacs(c1b, a1, bb);
        c2a = vmacs(c2a, a2, ba), c2b = vmacs(c2b, a2, bb);
        c3a = vmacs(c3a, a3, ba), c3b = vmacs(c3b, a3, bb);
    }
    vstore(c, c0a), vstore(c + 4, c0b);
    vstore(c + QB, c1a), vstore(c + QB + 4, c1b);
    vstore(c + 2 * QB, c2a), vstore(c + 2 * QB + 4, c2b);
    vstore(c + 3 * QB, c3a), vstore(c + 3 * QB + 4, c3b);
}

/* The same for one row of A (the rows left over after groups of 4). */
static void kernel_1x8(const float *a, ptrdiff_t ps, const float *b, int64_t np, float *c,
                       int accumulate)
{
    v4f ca = vsplat(0.0f), cb = vsplat(0.0f);
    if (accumulate)
        ca = vload(c), cb = vload(c + 4);
    for (int64_t p = 0; p < np; p++) {
        float ap = a[p * ps];
        ca = vmacs(ca, ap, vload(b + p * QB));
        cb = vmacs(cb, ap, vload(b + p * QB + 4));
    }
    vstore(c, ca), vstore(c + 4, cb);
}

/* C[r][0..QB) for r < rows, as kernel_4x8 describes, A rows rs apart. */
static void gemm_block(const float *a, ptrdiff_t rs, ptrdiff_t ps, int64_t rows, const float *b,
                       int64_t np, float *c, int accumulate)
{
    int64_t r = 0;
    for (; r + 4 <= rows; r += 4)
        for (int i = 0; i < QB; i += 8)
            kernel_4x8(a + r * rs, rs, ps, b + i, np, c + r * QB + i, accumulate);
    for (; r < rows; r++)
        for (int i = 0; i < QB; i += 8)
            kernel_1x8(a + r * rs, ps, b + i, np, c + r * QB + i, accumulate);
}

#endif

/* S[j][i] (+)= sum_{c < dc} K[j][c] * Qt[c][i] for j < keys; k rows are d
 * apart. */
static void gemm_scores(const float *k, int64_t d, int64_t keys, const float *qt, int64_t dc,
                        float *s, int accumulate)
{
#ifdef MGPU_ATT_NO_BLAS
    gemm_block(k, d, 1, keys, qt, dc, s, accumulate);
#else
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)keys, QB, (int)dc, 1.0f, k, (int)d,
                qt, QB, accumulate ? 1.0f : 0.0f, s, QB);
#endif
}

/* PV[c][i] = sum_{j < keys} V[j][c] * P[j][i] for c < dc; v rows are d
 * apart. */
static void gemm_values(const float *v, int64_t d, int64_t dc, const float *p, int64_t keys,
                        float *pv)
{
#ifdef MGPU_ATT_NO_BLAS
    gemm_block(v, 1, d, dc, p, keys, pv, 0);
#else
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)dc, QB, (int)keys, 1.0f, v, (int)d, p,
                QB, 0.0f, pv, QB);
#endif
}

/* ------------------------------------------------------------ one query block */

typedef struct attention_job {
    const float *q, *k, *v;
    float *out;
    int64_t heads, q_len, kv_len, d;
    int64_t q_blocks; /* per head */
    float sign;       /* of scale, folded into the packed queries */
    float c;          /* |scale| * log2(e) */
    const float *bias; /* [heads][q_len][kv_len] or NULL */
    int causal;
} attention_job;

typedef struct scratch {
    float qt[DC * QB];   /* a head_dim slice of the query block, transposed */
    float s[KB * QB];    /* scores, then probabilities, [key][lane] */
    float pv[DC * QB];   /* a head_dim slice of P.V, [dim][lane] */
    float m[QB], l[QB];  /* running max (unscaled score) and sum per lane */
    float alpha[QB];     /* rescale factor of this key block per lane */
} scratch;

/* Qt[c][i] = sign * q[i][c0 + c] for c < dc; lanes past rows are 0. */
static void pack_queries(const attention_job *jb, const float *q, int64_t rows, int64_t c0,
                         int64_t dc, float *qt)
{
    memset(qt, 0, sizeof(float) * (size_t)(dc * QB));
    for (int64_t i = 0; i < rows; i++)
        for (int64_t c = 0; c < dc; c++)
            qt[c * QB + i] = jb->sign * q[i * jb->d + c0 + c];
}

static void attend_block(const attention_job *jb, int64_t head, int64_t qblock, scratch *sc)
{
    const int64_t d = jb->d;
    const int64_t q0 = qblock * QB;
    const int64_t rows = jb->q_len - q0 < QB ? jb->q_len - q0 : QB;
    const float *q = jb->q + (head * jb->q_len + q0) * d;
    const float *k = jb->k + head * jb->kv_len * d;
    const float *v = jb->v + head * jb->kv_len * d;
    float *out = jb->out + (head * jb->q_len + q0) * d;
    const float *bias = jb->bias ? jb->bias + (head * jb->q_len + q0) * jb->kv_len : NULL;
    const int logits = bias || jb->causal;
    /* With a bias or a mask the scores become log2-domain logits before the
     * softmax, which then runs with a unit scale. */
    const v4f cv = vsplat(logits ? 1.0f : jb->c);
    const int single_slice = d <= DC;

    if (single_slice)
        pack_queries(jb, q, rows, 0, d, sc->qt);
    for (int64_t kb0 = 0; kb0 < jb->kv_len; kb0 += KB) {
        const int64_t keys = jb->kv_len - kb0 < KB ? jb->kv_len - kb0 : KB;
        const int first = kb0 == 0;

        /* S[j][i] = sum_c K[j][c] * Qt[c][i], slice by slice in c order */
        for (int64_t c0 = 0; c0 < d; c0 += DC) {
            const int64_t dc = d - c0 < DC ? d - c0 : DC;
            if (!single_slice)
                pack_queries(jb, q, rows, c0, dc, sc->qt);
            gemm_scores(k + kb0 * d + c0, d, keys, sc->qt, dc, sc->s, c0 > 0);
        }

        if (logits)
            for (int64_t j = 0; j < keys; j++) {
                float *sj = sc->s + j * QB;
                for (int64_t i = 0; i < QB; i++) {
                    if (i >= rows) {
                        sj[i] = 0.0f; /* padding lanes: finite, discarded */
                        continue;
                    }
                    float v = sj[i] * jb->c;
                    if (bias)
                        v += bias[i * jb->kv_len + kb0 + j] * 1.4426950408889634f;
                    if (jb->causal && kb0 + j > q0 + i)
                        v = -INFINITY;
                    sj[i] = v;
                }
            }

        /* online softmax, lane-wise: new max, rescale factor, probabilities
         * and their sum, each key in order */
        for (int i = 0; i < QB; i += 4) {
            v4f bm = vload(sc->s + i);
            for (int64_t j = 1; j < keys; j++)
                bm = vmax(bm, vload(sc->s + j * QB + i));
            v4f m = first ? bm : vmax(vload(sc->m + i), bm);
            v4f alpha = first ? vsplat(0.0f) : vexp2(vmul(vsub(vload(sc->m + i), m), cv));
            v4f sum = vsplat(0.0f);
            for (int64_t j = 0; j < keys; j++) {
                v4f p = vexp2(vmul(vsub(vload(sc->s + j * QB + i), m), cv));
                vstore(sc->s + j * QB + i, p);
                sum = vadd(sum, p);
            }
            vstore(sc->m + i, m);
            vstore(sc->alpha + i, alpha);
            vstore(sc->l + i, first ? sum : vadd(vmul(vload(sc->l + i), alpha), sum));
        }

        /* out = out * alpha + P.V, one head_dim slice at a time; out rows
         * are the accumulator (garbage before the first block, so assigned
         * then, never scaled) */
        for (int64_t c0 = 0; c0 < d; c0 += DC) {
            const int64_t dc = d - c0 < DC ? d - c0 : DC;
            gemm_values(v + kb0 * d + c0, d, dc, sc->s, keys, sc->pv);
            for (int64_t i = 0; i < rows; i++) {
                float *o = out + i * d + c0;
                const float *pv = sc->pv + i;
                if (first) {
                    for (int64_t c = 0; c < dc; c++)
                        o[c] = pv[c * QB];
                } else {
                    const float a = sc->alpha[i];
                    for (int64_t c = 0; c < dc; c++)
                        o[c] = o[c] * a + pv[c * QB];
                }
            }
        }
    }

    for (int64_t i = 0; i < rows; i++) {
        const float l = sc->l[i];
        for (int64_t c = 0; c < d; c++)
            out[i * d + c] /= l;
    }
}

static void attention_chunk(void *ctx, int64_t begin, int64_t end)
{
    const attention_job *jb = ctx;
    scratch sc; /* once per chunk; every block fully rewrites what it reads */
    for (int64_t t = begin; t < end; t++)
        attend_block(jb, t / jb->q_blocks, t % jb->q_blocks, &sc);
}

/* out must not overlap q, k or v: its rows hold the running accumulator
 * while the queries are still being read. */
void mgpu_cpu_attention(const float *q, const float *k, const float *v, float *out, int64_t heads,
                        int64_t q_len, int64_t kv_len, int64_t head_dim, float scale,
                        mgpu_threadpool *pool)
{
    mgpu_cpu_attention_ex(q, k, v, out, heads, q_len, kv_len, head_dim, scale, NULL, 0, pool);
}

void mgpu_cpu_attention_ex(const float *q, const float *k, const float *v, float *out,
                           int64_t heads, int64_t q_len, int64_t kv_len, int64_t head_dim,
                           float scale, const float *bias, int causal, mgpu_threadpool *pool)
{
    if (heads <= 0 || q_len <= 0 || head_dim <= 0)
        return;
    if (kv_len <= 0) {
        /* a softmax over no keys: the empty sum, 0 */
        memset(out, 0, sizeof(float) * (size_t)(heads * q_len * head_dim));
        return;
    }
    attention_job jb = {
        .q = q,
        .k = k,
        .v = v,
        .out = out,
        .heads = heads,
        .q_len = q_len,
        .kv_len = kv_len,
        .d = head_dim,
        .q_blocks = (q_len + QB - 1) / QB,
        .sign = scale < 0.0f ? -1.0f : 1.0f,
        .c = (float)((scale < 0.0f ? -(double)scale : (double)scale) * 1.4426950408889634),
        .bias = bias,
        .causal = causal,
    };
    mgpu_threadpool_run(pool, attention_chunk, &jb, heads * jb.q_blocks, 1);
}
