/* Row kernels for the planner's stacked layers (fowm_core/model/native.py loads this file).

   Every hidden layer of the world model is Linear -> [LayerNorm -> affine] -> activation. The
   matmuls stay with torch (MKL); what is left is elementwise work over (blocks, rows, cols) that
   torch runs as five or six separate passes, each with a slow transcendental. Here one pass per row
   does bias, LayerNorm, affine and the activation while the row is in L1, and the reward/Q heads'
   last layer (512 -> 1) is a dot product in the same pass.

   Layout: x is (blocks, rows, cols) row-major float32; per-block parameters are (blocks, cols).
   Blocks [0, n_mish) use LayerNorm -> affine -> Mish; the others use
   ln_act:   LayerNorm -> affine -> tanh     (the Q heads' first layer)
   head_out: ELU without LayerNorm             (the Q heads' second layer)
   LayerNorm uses eps 1e-5 and the biased variance, as torch.nn.LayerNorm.

   exp is Cephes' single-precision polynomial (about 1 ulp on the range used), written so that the
   compiler vectorizes it; Mish and tanh go through exact one-exp identities:
       tanh(y) = 1 - 2 / (e^{2y} + 1),     mish(y) = y * n / (n + 2),  n = e^y (e^y + 2).
   Compiled without -ffast-math on purpose: that flag links crtfastmath.o, which would switch the
   whole process to flush-to-zero when this library is loaded. */

#include <math.h>
#include <stdint.h>
#include <string.h>

#define LN_EPS 1e-5f
#define MAX_COLS 8192

static inline float exp_poly(float x) {
    x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
    float k = rintf(x * 1.44269504088896341f);
    float f = x - k * 0.693359375f + k * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * f + 1.3981999507e-3f;
    p = p * f + 8.3334519073e-3f;
    p = p * f + 4.1665795894e-2f;
    p = p * f + 1.6666665459e-1f;
    p = p * f + 5.0000001201e-1f;
    p = p * f * f + f + 1.0f;
    int32_t bits = ((int32_t)k + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

static inline float mish(float y) {
    /* Past y = 20, n / (n + 2) is 1 in float32. */
    float e = exp_poly(y > 20.0f ? 20.0f : y);
    float n = e * (e + 2.0f);
    return y > 20.0f ? y : y * n / (n + 2.0f);
}

static inline float tanh_exp(float y) { return 1.0f - 2.0f / (exp_poly(2.0f * y) + 1.0f); }

static inline float elu(float y) { return y > 0.0f ? y : exp_poly(y) - 1.0f; }

/* v += bias, then the LayerNorm statistics of v: returns the mean, writes 1/std. */
static inline float add_bias_stats(float *restrict v, const float *restrict bias, long cols,
                                   float *rstd) {
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (long c = 0; c < cols; c++) {
        v[c] += bias[c];
        sum += v[c];
    }
    float mean = sum / (float)cols, sq = 0.0f;
#pragma omp simd reduction(+ : sq)
    for (long c = 0; c < cols; c++) {
        float d = v[c] - mean;
        sq += d * d;
    }
    *rstd = 1.0f / sqrtf(sq / (float)cols + LN_EPS);
    return mean;
}

/* In place: x = act(LayerNorm(x + bias) * ln_w + ln_b). */
void fowm_ln_act(float *x, long blocks, long rows, long cols, const float *bias,
                 const float *ln_w, const float *ln_b, long n_mish, int threads) {
#pragma omp parallel for num_threads(threads) schedule(static)
    for (long i = 0; i < blocks * rows; i++) {
        long blk = i / rows;
        float *restrict v = x + i * cols;
        const float *restrict g = ln_w + blk * cols, *restrict b = ln_b + blk * cols;
        float rstd, mean = add_bias_stats(v, bias + blk * cols, cols, &rstd);
        if (blk < n_mish) {
#pragma omp simd
            for (long c = 0; c < cols; c++) v[c] = mish((v[c] - mean) * rstd * g[c] + b[c]);
        } else {
#pragma omp simd
            for (long c = 0; c < cols; c++) v[c] = tanh_exp((v[c] - mean) * rstd * g[c] + b[c]);
        }
    }
}

/* Scalar heads: out[blk, r] = w3[blk] . act(x[blk, r] + bias[blk]) + b3[blk], where act is
   LayerNorm -> affine -> Mish for blk < n_mish (ln_w/ln_b hold those blocks only) and ELU for the
   rest. x is not modified. */
void fowm_head_out(const float *x, long blocks, long rows, long cols, const float *bias,
                   const float *ln_w, const float *ln_b, long n_mish, const float *w3,
                   const float *b3, float *out, int threads) {
#pragma omp parallel for num_threads(threads) schedule(static)
    for (long i = 0; i < blocks * rows; i++) {
        long blk = i / rows;
        const float *restrict w = w3 + blk * cols, *restrict src = x + i * cols;
        float acc = 0.0f;
        if (blk < n_mish) {
            float v[MAX_COLS];   /* LayerNorm needs the biased row twice; keep x intact */
            memcpy(v, src, (size_t)cols * sizeof(float));
            const float *restrict g = ln_w + blk * cols, *restrict b = ln_b + blk * cols;
            float rstd, mean = add_bias_stats(v, bias + blk * cols, cols, &rstd);
#pragma omp simd reduction(+ : acc)
            for (long c = 0; c < cols; c++) acc += w[c] * mish((v[c] - mean) * rstd * g[c] + b[c]);
        } else {
            const float *restrict bb = bias + blk * cols;
#pragma omp simd reduction(+ : acc)
            for (long c = 0; c < cols; c++) acc += w[c] * elu(src[c] + bb[c]);
        }
        out[i] = acc + b3[blk];
    }
}

/* -- one imagined step's blocks in one call ------------------------------------------------------
   The matmuls are torch's own BLAS sgemm (Fortran interface, 32-bit ints), handed over once by
   fowm_set_sgemm; without it native.py keeps the block loop in Python. Block b of the stacks: first
   layer x (n, k) @ w1[b] (k, m) + bias1[b] → LayerNorm → affine → Mish (b < 2) or tanh; second layer
   @ w2[b]; then b == 0 (dynamics): + b2 → LayerNorm → affine → Mish into dyn_out (n, m); otherwise the
   scalar head (reward b == 1: LayerNorm → Mish, Q: ELU) · w3[b - 1] + b3[b - 1] into the next (n,)
   slot of out. */
typedef void (*sgemm_fn)(const char *, const char *, const int *, const int *, const int *,
                         const float *, const float *, const int *, const float *, const int *,
                         const float *, float *, const int *);
static sgemm_fn g_sgemm = 0;

void fowm_set_sgemm(void *fn) { g_sgemm = (sgemm_fn)fn; }

/* Row-major c (n, m) = a (n, k) @ b (k, m): column-major c^T = b^T a^T. */
static void mm_rows(const float *a, const float *b, float *c, int n, int k, int m) {
    const float one = 1.0f, zero = 0.0f;
    g_sgemm("N", "N", &m, &n, &k, &one, b, &m, a, &k, &zero, c, &m);
}

int fowm_mm(const float *a, const float *b, float *c, long n, long k, long m) {
    if (!g_sgemm) return -1;
    mm_rows(a, b, c, (int)n, (int)k, (int)m);
    return 0;
}

int fowm_blocks(const float *x, long n, long k, long m, const long *blocks, long count,
                const float *w1, const float *bias1, const float *ln1_w, const float *ln1_b,
                const float *w2, const float *b2, const float *ln2_w, const float *ln2_b,
                const float *w3, const float *b3, float *h1, float *h2, float *dyn_out,
                float *out, int threads) {
    if (!g_sgemm) return -1;
    long slot = 0;
    for (long i = 0; i < count; i++) {
        long b = blocks[i];
        mm_rows(x, w1 + b * k * m, h1, (int)n, (int)k, (int)m);
        fowm_ln_act(h1, 1, n, m, bias1 + b * m, ln1_w + b * m, ln1_b + b * m, b < 2, threads);
        float *second = b == 0 ? dyn_out : h2;
        mm_rows(h1, w2 + b * m * m, second, (int)n, (int)m, (int)m);
        if (b == 0) {
            fowm_ln_act(dyn_out, 1, n, m, b2, ln2_w, ln2_b, 1, threads);
        } else {
            fowm_head_out(h2, 1, n, m, b2 + b * m, ln2_w + m, ln2_b + m, b == 1,
                          w3 + (b - 1) * m, b3 + (b - 1), out + slot * n, threads);
            slot++;
        }
    }
    return 0;
}
