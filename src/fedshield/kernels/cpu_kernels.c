/* fedshield's CPU kernels (docs/performance.md, "Kernels"). float32, NHWC (channels_last) memory.
 *
 * pool_relu_fwd:   out = relu(max_pool2d(x, 2)) and code = which element of each 2 x 2 window is the first maximum
 *                  (0..3, row-major, NaN counting as a maximum, as in torch's max_pool2d), or 4 where relu
 *                  passes no gradient (max <= 0). One byte per output instead of torch's int64 index.
 * pool_relu_bwd:   the input gradient of the same: the output gradient goes to the element named by code.
 * conv_pool_dgrad: the input gradient of relu(max_pool2d(conv2d(x, w), 2)) from the pooled gradient and the codes:
 *                  each pooled output adds g * w[co] to the patch under its window's selected element. For
 *                  lenet's conv2: 25.6 M multiply-adds at most, against 102 M for a GEMM of the unpooled gradient
 *                  (three quarters zeros) and 230 M for oneDNN's convolution over the zero-padded gradient.
 * conv_pool_wgrad: the weight and bias gradients of the same for a first layer, from the pooled gradient and the
 *                  codes, without the unpooled gradient (AVX-512 where the compiler targets it).
 *
 * Exactness: pool_relu_fwd/bwd give torch.relu(torch.max_pool2d(x, 2)) and its gradient bit for bit (the same
 * comparisons, the same tie rule); conv_pool_dgrad/wgrad sum in another order than oneDNN, so those gradients
 * differ by float32 rounding (relative 1e-7 .. 2e-6 against float64, as oneDNN's).
 */
#include <stdint.h>
#include <string.h>

static inline void pool_rows(const float* restrict x, float* restrict out, uint8_t* restrict code,
                             long rows, long H, long W, long C) {
  long Ho = H / 2, Wo = W / 2;
  for (long r = 0; r < rows; r++) { /* r = n * Ho + i */
    long n = r / Ho, i = r % Ho;
    const float* row0 = x + (n * H + 2 * i) * W * C;
    const float* row1 = row0 + W * C;
    float* restrict o = out + r * Wo * C;
    uint8_t* restrict k = code + r * Wo * C;
    for (long j = 0; j < Wo; j++, o += C, k += C) {
      const float* p00 = row0 + 2 * j * C;
      const float* p01 = p00 + C;
      const float* p10 = row1 + 2 * j * C;
      const float* p11 = p10 + C;
      for (long c = 0; c < C; c++) {
        float m = p00[c], a = 0.0f, v;
        int s;
        v = p01[c]; s = (v > m) | (v != v); m = s ? v : m; a = s ? 1.0f : a;
        v = p10[c]; s = (v > m) | (v != v); m = s ? v : m; a = s ? 2.0f : a;
        v = p11[c]; s = (v > m) | (v != v); m = s ? v : m; a = s ? 3.0f : a;
        o[c] = (m < 0.0f) ? 0.0f : m;  /* relu; keeps NaN and -0.0 as torch.relu does */
        k[c] = (uint8_t)(int)((m <= 0.0f) ? 4.0f : a);
      }
    }
  }
}

/* Channel counts known at compile time vectorise without a remainder loop per window. */
static void pool_rows_c16(const float* x, float* o, uint8_t* k, long r, long H, long W) { pool_rows(x, o, k, r, H, W, 16); }
static void pool_rows_c20(const float* x, float* o, uint8_t* k, long r, long H, long W) { pool_rows(x, o, k, r, H, W, 20); }
static void pool_rows_c32(const float* x, float* o, uint8_t* k, long r, long H, long W) { pool_rows(x, o, k, r, H, W, 32); }
static void pool_rows_c50(const float* x, float* o, uint8_t* k, long r, long H, long W) { pool_rows(x, o, k, r, H, W, 50); }
static void pool_rows_c64(const float* x, float* o, uint8_t* k, long r, long H, long W) { pool_rows(x, o, k, r, H, W, 64); }

void pool_relu_fwd(const float* restrict x, float* restrict out, uint8_t* restrict code, long N, long H, long W, long C) {
  long rows = N * (H / 2);
  switch (C) {
    case 16: pool_rows_c16(x, out, code, rows, H, W); break;
    case 20: pool_rows_c20(x, out, code, rows, H, W); break;
    case 32: pool_rows_c32(x, out, code, rows, H, W); break;
    case 50: pool_rows_c50(x, out, code, rows, H, W); break;
    case 64: pool_rows_c64(x, out, code, rows, H, W); break;
    default: pool_rows(x, out, code, rows, H, W, C);
  }
}

void pool_relu_bwd(const float* restrict g, const uint8_t* restrict code, float* restrict gin, long N, long H, long W, long C) {
  long Ho = H / 2, Wo = W / 2;
  long off[4] = {0, C, W * C, W * C + C};
  memset(gin, 0, sizeof(float) * N * H * W * C);
  for (long r = 0; r < N * Ho; r++) {
    long n = r / Ho, i = r % Ho;
    float* restrict row0 = gin + (n * H + 2 * i) * W * C;
    const float* gg = g + r * Wo * C;
    const uint8_t* k = code + r * Wo * C;
    for (long j = 0; j < Wo; j++, gg += C, k += C) {
      float* restrict q = row0 + 2 * j * C;
      for (long c = 0; c < C; c++) {
        uint8_t a = k[c];
        if (a < 4) q[off[a] + c] = gg[c];
      }
    }
  }
}

/* conv_pool_wgrad: the weight and bias gradients of relu(max_pool2d(conv2d(x, w, b), 2)) for a first layer (no
 * input gradient), straight from the pooled output's gradient g (N, Hp, Wp, Co) and the window codes, without the
 * unpooled gradient: each pooled output takes the patch of the window element its code names. x (N, H, W, Ci),
 * acc (K*K*Ci, Co) and gb (Co) are added to. The four candidates' products are summed with the three others'
 * gradients 0, so the sum is the selected product; only the order of the sums over positions differs from
 * oneDNN's (float rounding). */
static inline void cpw_run(const float* restrict x, const float* restrict g, const uint8_t* restrict code,
                           float* restrict acc, float* restrict gb, long N, long H, long W, long Ci, long K,
                           long Co) {
  long Hp = (H - K + 1) / 2, Wp = (W - K + 1) / 2;
  float gd0[Co], gd1[Co], gd2[Co], gd3[Co];
  for (long n = 0; n < N; n++)
    for (long i = 0; i < Hp; i++)
      for (long j = 0; j < Wp; j++) {
        long p = (n * Hp + i) * Wp + j;
        const float* gg = g + p * Co;
        const uint8_t* cc = code + p * Co;
        for (long co = 0; co < Co; co++) {
          uint8_t a = cc[co];
          float v = gg[co];
          gd0[co] = a == 0 ? v : 0.0f;
          gd1[co] = a == 1 ? v : 0.0f;
          gd2[co] = a == 2 ? v : 0.0f;
          gd3[co] = a == 3 ? v : 0.0f;
          gb[co] += a < 4 ? v : 0.0f;
        }
        const float* x0 = x + ((n * H + 2 * i) * W + 2 * j) * Ci;
        float* restrict ak = acc;
        for (long kh = 0; kh < K; kh++)
          for (long kw = 0; kw < K; kw++)
            for (long ci = 0; ci < Ci; ci++, ak += Co) {
              const float* q = x0 + (kh * W + kw) * Ci + ci;
              float s0 = q[0], s1 = q[Ci], s2 = q[W * Ci], s3 = q[W * Ci + Ci];
              for (long co = 0; co < Co; co++) ak[co] += gd0[co] * s0 + gd1[co] * s1 + gd2[co] * s2 + gd3[co] * s3;
            }
      }
}

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)
#include <immintrin.h>
/* The same sums with AVX-512: 16 output channels per pass (a mask for the last), the per-tap accumulators and the
 * four masked gradients of a window in vector registers, the candidates' inputs broadcast from memory. */
static inline void cpw_avx512(const float* restrict x, const float* restrict g, const uint8_t* restrict code,
                              float* restrict acc, float* restrict gb, long N, long H, long W, long Ci, long K,
                              long Co) {
  long Hp = (H - K + 1) / 2, Wp = (W - K + 1) / 2, KKC = K * K * Ci;
  for (long cb = 0; cb < Co; cb += 16) {
    long L = Co - cb < 16 ? Co - cb : 16;
    __mmask16 m = (__mmask16)((1u << L) - 1u);
    __m512 a[KKC];
    for (long k = 0; k < KKC; k++) a[k] = _mm512_setzero_ps();
    __m512 bs = _mm512_setzero_ps();
    const __m128i four = _mm_set1_epi8(4);
    for (long n = 0; n < N; n++)
      for (long i = 0; i < Hp; i++)
        for (long j = 0; j < Wp; j++) {
          long p = (n * Hp + i) * Wp + j;
          __m512 v = _mm512_maskz_loadu_ps(m, g + p * Co + cb);
          __m512i c = _mm512_cvtepu8_epi32(_mm_mask_loadu_epi8(four, m, code + p * Co + cb));
          __mmask16 k0 = _mm512_cmpeq_epi32_mask(c, _mm512_set1_epi32(0));
          __mmask16 k1 = _mm512_cmpeq_epi32_mask(c, _mm512_set1_epi32(1));
          __mmask16 k2 = _mm512_cmpeq_epi32_mask(c, _mm512_set1_epi32(2));
          __mmask16 k3 = _mm512_cmpeq_epi32_mask(c, _mm512_set1_epi32(3));
          __m512 d0 = _mm512_maskz_mov_ps(k0, v), d1 = _mm512_maskz_mov_ps(k1, v);
          __m512 d2 = _mm512_maskz_mov_ps(k2, v), d3 = _mm512_maskz_mov_ps(k3, v);
          bs = _mm512_add_ps(bs, _mm512_maskz_mov_ps(k0 | k1 | k2 | k3, v));
          const float* x0 = x + ((n * H + 2 * i) * W + 2 * j) * Ci;
          long k = 0;
          for (long kh = 0; kh < K; kh++)
            for (long kw = 0; kw < K; kw++)
              for (long ci = 0; ci < Ci; ci++, k++) {
                const float* q = x0 + (kh * W + kw) * Ci + ci;
                __m512 t = _mm512_fmadd_ps(d0, _mm512_set1_ps(q[0]), a[k]);
                t = _mm512_fmadd_ps(d1, _mm512_set1_ps(q[Ci]), t);
                t = _mm512_fmadd_ps(d2, _mm512_set1_ps(q[W * Ci]), t);
                a[k] = _mm512_fmadd_ps(d3, _mm512_set1_ps(q[W * Ci + Ci]), t);
              }
        }
    for (long k = 0; k < KKC; k++) {
      float t[16];
      _mm512_storeu_ps(t, a[k]);
      for (long l = 0; l < L; l++) acc[k * Co + cb + l] += t[l];
    }
    float t[16];
    _mm512_storeu_ps(t, bs);
    for (long l = 0; l < L; l++) gb[cb + l] += t[l];
  }
}
#define CPW cpw_avx512
#else
#define CPW cpw_run
#endif

void conv_pool_wgrad(const float* restrict x, const float* restrict g, const uint8_t* restrict code,
                     float* restrict acc, float* restrict gb, long N, long H, long W, long Ci, long K, long Co) {
  if (Ci == 1 && K == 5) CPW(x, g, code, acc, gb, N, H, W, 1, 5, Co); /* lenet's and SmallCNN's conv1 */
  else if (Ci == 3 && K == 5) CPW(x, g, code, acc, gb, N, H, W, 3, 5, Co);
  else CPW(x, g, code, acc, gb, N, H, W, Ci, K, Co);
}

/* conv_pool_dgrad: the input gradient of relu(max_pool2d(conv2d(x, w, b), 2)) from the pooled gradient g
 * (N, Hp, Wp, Co) and the window codes: each pooled output with a code < 4 adds g * w[co] to the K x K x Ci patch
 * under the window element its code names. The dense route (a GEMM of the unpooled gradient, three quarters of it
 * zeros, then col2im) does four times the multiply-adds. w is (Co, K, K, Ci); gin (N, H, W, Ci) is added to. */
static inline void cpd_run(const float* restrict g, const uint8_t* restrict code, const float* restrict w,
                           float* restrict gin, long N, long H, long W, long Ci, long K, long Co, long KC) {
  long Hp = (H - K + 1) / 2, Wp = (W - K + 1) / 2;
  for (long n = 0; n < N; n++)
    for (long i = 0; i < Hp; i++)
      for (long j = 0; j < Wp; j++) {
        long p = (n * Hp + i) * Wp + j;
        const float* gg = g + p * Co;
        const uint8_t* cc = code + p * Co;
        for (long co = 0; co < Co; co++) {
          uint8_t a = cc[co];
          if (a >= 4) continue;
          float v = gg[co];
          float* restrict dst = gin + ((n * H + 2 * i + (a >> 1)) * W + 2 * j + (a & 1)) * Ci;
          const float* restrict wr = w + co * K * KC;
          for (long kh = 0; kh < K; kh++, dst += W * Ci, wr += KC)
            for (long t = 0; t < KC; t++) dst[t] += v * wr[t];
        }
      }
}

void conv_pool_dgrad(const float* restrict g, const uint8_t* restrict code, const float* restrict w,
                     float* restrict gin, long N, long H, long W, long Ci, long K, long Co) {
  switch (K * Ci) {
    case 100: cpd_run(g, code, w, gin, N, H, W, Ci, K, Co, 100); break; /* lenet's conv2: 5 x 5, 20 channels */
    case 80: cpd_run(g, code, w, gin, N, H, W, Ci, K, Co, 80); break;   /* SmallCNN's conv2: 5 x 5, 16 channels */
    default: cpd_run(g, code, w, gin, N, H, W, Ci, K, Co, K * Ci);
  }
}
