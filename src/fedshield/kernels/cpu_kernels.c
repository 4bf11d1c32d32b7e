/* fedshield's CPU kernels (docs/performance.md, "Kernels"). float32, NHWC (channels_last) memory.
 *
 * col2im_nhwc:     out (N,H,W,C) += the columns (N,Ho,Wo,K,K,C) of a stride-1, unpadded K x K convolution.
 *                  With cols = grad_out (N*Ho*Wo, Co) @ weight (Co, K*K*C) this is the convolution's input
 *                  gradient: 102 M multiply-adds for lenet's conv2 instead of the 230 M of a convolution over
 *                  the zero-padded output gradient.
 * pool_relu_fwd:   out = relu(max_pool2d(x, 2)) and code = which element of each 2 x 2 window is the first maximum
 *                  (0..3, row-major, NaN counting as a maximum, as in torch's max_pool2d), or 4 where relu
 *                  passes no gradient (max <= 0). One byte per output instead of torch's int64 index.
 * pool_relu_bwd:   the input gradient of the same: the output gradient goes to the element named by code.
 *
 * Exactness: pool_relu_fwd/bwd give torch.relu(torch.max_pool2d(x, 2)) and its gradient bit for bit (the same
 * comparisons, the same tie rule); col2im sums in a different order than oneDNN, so the input gradient differs
 * by float32 rounding (relative 3e-7 on lenet's conv2).
 */
#include <stdint.h>
#include <string.h>

void col2im_nhwc(const float* restrict cols, float* restrict out, long N, long H, long W, long C, long K) {
  long Ho = H - K + 1, Wo = W - K + 1;
  for (long n = 0; n < N; n++)
    for (long oh = 0; oh < Ho; oh++)
      for (long ow = 0; ow < Wo; ow++) {
        const float* src = cols + ((n * Ho + oh) * Wo + ow) * K * K * C;
        for (long kh = 0; kh < K; kh++) {
          float* dst = out + ((n * H + oh + kh) * W + ow) * C;
          for (long kw = 0; kw < K; kw++, src += C, dst += C)
            for (long c = 0; c < C; c++) dst[c] += src[c];
        }
      }
}

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
