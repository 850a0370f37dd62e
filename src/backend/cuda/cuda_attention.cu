/* Fused memory-efficient attention in f32 (FlashAttention's online softmax
 * on SIMT cores, no tensor cores yet): one thread block per (32 queries,
 * head) walks the keys in tiles of 32 held in shared memory; the scores of
 * a tile live in shared memory, each query row's running max and sum in
 * shared memory, and the output accumulator in registers. Nothing of size
 * q_len x kv_len ever exists.
 *
 * Thread roles (256 threads, 8 warps):
 * - scores: lane j of warp w computes S[w + 8r][j] for r < 4, so one key
 *   value feeds four queries;
 * - softmax: warp w updates rows w, w + 8, ... with warp shuffles (lane =
 *   key), in a fixed butterfly order;
 * - P.V: thread t owns output column c = t % d of rows t / d + r * (256 / d),
 *   so one value feeds up to 32 rows.
 * Every sum runs in a fixed order, so the bits depend only on the shapes.
 * head_dim is at most 256 (one column per thread). */
#include <math.h>

#include "backend/cuda/cuda_kernels.h"

namespace {

const int BQ = 32;  /* queries per block */
const int BK = 32;  /* keys per tile (= warp size: the softmax lane is the key) */
const int NT = 256; /* threads */
const int NW = NT / 32;
const int MAX_D = NT;
const int ROWS_PER_WARP = BQ / NW; /* 4 */
const float LOG2E = 1.4426950408889634f;

static_assert(BK == 32, "the softmax maps keys onto lanes");
static_assert(BQ % NW == 0, "score rows per warp");

struct smem_layout {
    int64_t dp;                      /* padded row of Q and K: d + 1, conflict-free columns */
    int64_t q, k, v, s, m, l, a, end; /* offsets in floats */
};

__host__ __device__ smem_layout layout(int64_t d)
{
    smem_layout L;
    L.dp = d + 1;
    L.q = 0;
    L.k = L.q + BQ * L.dp;
    L.v = L.k + BK * L.dp;
    L.s = L.v + BK * d;
    L.m = L.s + BQ * (BK + 1);
    L.l = L.m + BQ;
    L.a = L.l + BQ;
    L.end = L.a + BQ;
    return L;
}

__device__ __forceinline__ float warp_max(float v)
{
    for (int o = 16; o > 0; o >>= 1) {
        const float w = __shfl_xor_sync(0xFFFFFFFFu, v, o);
        v = w > v ? w : v;
    }
    return v;
}

__device__ __forceinline__ float warp_sum(float v)
{
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xFFFFFFFFu, v, o);
    return v;
}

__global__ void __launch_bounds__(NT) attention_kernel(const float *q, const float *k,
                                                       const float *v, float *out, int64_t q_len,
                                                       int64_t kv_len, int64_t d, float scale,
                                                       const float *bias, bool causal)
{
    extern __shared__ float sm[];
    const smem_layout L = layout(d);
    float *Qs = sm + L.q, *Ks = sm + L.k, *Vs = sm + L.v, *S = sm + L.s;
    float *Ms = sm + L.m, *Ls = sm + L.l, *As = sm + L.a;
    const int64_t dp = L.dp;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int64_t h = blockIdx.y;
    const int64_t i0 = (int64_t)blockIdx.x * BQ;
    const int64_t rows = q_len - i0 < BQ ? q_len - i0 : BQ;
    const float *qh = q + h * q_len * d;
    const float *kh = k + h * kv_len * d;
    const float *vh = v + h * kv_len * d;
    float *oh = out + h * q_len * d;
    const float *bh = bias ? bias + h * q_len * kv_len : nullptr;

    for (int64_t e = tid; e < BQ * d; e += NT) {
        const int64_t i = e / d, c = e - i * d;
        Qs[i * dp + c] = i < rows ? qh[(i0 + i) * d + c] : 0.0f;
    }
    if (tid < BQ) {
        Ms[tid] = -INFINITY;
        Ls[tid] = 0.0f;
    }
    /* P.V ownership: column c of rows g, g + groups, ... */
    const int groups = (int)(NT / d);
    const int g = (int)(tid / d);
    const int64_t c = tid - (int64_t)g * d;
    const bool pv_active = g < groups;
    float acc[BQ];
#pragma unroll
    for (int r = 0; r < BQ; r++)
        acc[r] = 0.0f;

    /* causal: query i sees keys j <= i, so the block needs keys below i0 + rows */
    const int64_t kv_end = causal && i0 + rows < kv_len ? i0 + rows : kv_len;
    __syncthreads();

    for (int64_t j0 = 0; j0 < kv_end; j0 += BK) {
        const int64_t nk = kv_end - j0 < BK ? kv_end - j0 : BK;
        for (int64_t e = tid; e < BK * d; e += NT) {
            const int64_t j = e / d, cc = e - j * d;
            const bool ok = j < nk;
            Ks[j * dp + cc] = ok ? kh[(j0 + j) * d + cc] : 0.0f;
            Vs[j * d + cc] = ok ? vh[(j0 + j) * d + cc] : 0.0f;
        }
        __syncthreads();

        /* scores, in log2 units: (q.k * scale + bias) * log2(e) */
        {
            float s[ROWS_PER_WARP];
#pragma unroll
            for (int r = 0; r < ROWS_PER_WARP; r++)
                s[r] = 0.0f;
            const float *kr = Ks + lane * dp;
            for (int64_t cc = 0; cc < d; cc++) {
                const float kv = kr[cc];
#pragma unroll
                for (int r = 0; r < ROWS_PER_WARP; r++)
                    s[r] = fmaf(Qs[(warp + NW * r) * dp + cc], kv, s[r]);
            }
#pragma unroll
            for (int r = 0; r < ROWS_PER_WARP; r++) {
                const int i = warp + NW * r;
                const int64_t qi = i0 + i, kj = j0 + lane;
                float z;
                if (i >= rows || lane >= nk || (causal && kj > qi)) {
                    z = -INFINITY;
                } else {
                    z = s[r] * scale;
                    if (bh)
                        z += bh[qi * kv_len + kj];
                    z *= LOG2E;
                }
                S[i * (BK + 1) + lane] = z;
            }
        }
        __syncthreads();

        /* online softmax: row i's new max, the factor its old sums shrink
         * by, and this tile's probabilities */
        for (int i = warp; i < BQ; i += NW) {
            const float z = S[i * (BK + 1) + lane];
            const float m_old = Ms[i];
            const float mx = warp_max(z);
            const float m_new = mx > m_old ? mx : m_old;
            float p = 0.0f, alpha = 1.0f;
            if (m_new != -INFINITY) { /* else every key so far is hidden */
                p = exp2f(z - m_new);
                alpha = exp2f(m_old - m_new);
            }
            const float sum = warp_sum(p);
            S[i * (BK + 1) + lane] = p;
            __syncwarp();
            if (lane == 0) {
                Ms[i] = m_new;
                Ls[i] = Ls[i] * alpha + sum;
                As[i] = alpha;
            }
        }
        __syncthreads();

        if (pv_active) {
#pragma unroll
            for (int r = 0; r < BQ; r++) {
                const int i = g + groups * r;
                if (i < BQ) {
                    float a = acc[r] * As[i];
                    const float *pr = S + i * (BK + 1);
                    for (int64_t j = 0; j < nk; j++)
                        a = fmaf(pr[j], Vs[j * d + c], a);
                    acc[r] = a;
                }
            }
        }
        __syncthreads(); /* before the next tile overwrites K, V and S */
    }

    if (pv_active) {
#pragma unroll
        for (int r = 0; r < BQ; r++) {
            const int i = g + groups * r;
            if (i < rows)
                oh[(i0 + i) * d + c] = acc[r] / Ls[i];
        }
    }
}

} // namespace

extern "C" size_t mgpu_cuda_attention_smem(int64_t head_dim)
{
    if (head_dim <= 0 || head_dim > MAX_D)
        return SIZE_MAX;
    return (size_t)layout(head_dim).end * sizeof(float);
}

extern "C" cudaError_t mgpu_cuda_attention(cudaStream_t s, const float *q, const float *k,
                                           const float *v, float *out, int64_t heads,
                                           int64_t q_len, int64_t kv_len, int64_t head_dim,
                                           float scale, const float *bias, bool causal)
{
    const size_t smem = mgpu_cuda_attention_smem(head_dim);
    if (smem == SIZE_MAX || heads > 65535)
        return cudaErrorInvalidValue;
    /* per device and process, cheap: keep it next to the launch */
    cudaError_t e = cudaFuncSetAttribute(attention_kernel,
                                         cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
    if (e != cudaSuccess)
        return e;
    const int64_t blocks = (q_len + BQ - 1) / BQ;
    attention_kernel<<<dim3((unsigned)blocks, (unsigned)heads), NT, smem, s>>>(
        q, k, v, out, q_len, kv_len, head_dim, scale, bias, causal);
    return cudaGetLastError();
}
