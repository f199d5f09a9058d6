/*
 * The scalar reference of the window ops and dropout (SPEC.md §7.5): direct
 * loops over the definition, accumulated in double, no im2col and no tricks.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "hm_reference.h"

/* Index of input row |o| * stride - pad + k * dilation, or -1 in the padding. */
static long in_at(uint32_t o, uint32_t stride, uint32_t pad, uint32_t k, uint32_t dil, uint32_t size) {
  long i = (long)o * stride - (long)pad + (long)k * dil;
  return i >= 0 && i < (long)size ? i : -1;
}

void hm_ref_conv2d(const hm_abi_window *g, const float *x, const float *wt, const float *bias, float *y) {
  uint32_t cig = g->c_in / g->groups, cog = g->c_out / g->groups;
  for (uint32_t n = 0; n < g->n; n++)
    for (uint32_t co = 0; co < g->c_out; co++) {
      uint32_t grp = co / cog;
      for (uint32_t oh = 0; oh < g->ho; oh++)
        for (uint32_t ow = 0; ow < g->wo; ow++) {
          double acc = bias ? bias[co] : 0.0;
          for (uint32_t ci = 0; ci < cig; ci++)
            for (uint32_t kh = 0; kh < g->kh; kh++) {
              long ih = in_at(oh, g->sh, g->ph, kh, g->dh, g->h);
              if (ih < 0) continue;
              for (uint32_t kw = 0; kw < g->kw; kw++) {
                long iw = in_at(ow, g->sw, g->pw, kw, g->dw, g->w);
                if (iw < 0) continue;
                size_t xi = (((size_t)n * g->c_in + grp * cig + ci) * g->h + (size_t)ih) * g->w + (size_t)iw;
                size_t wi = (((size_t)co * cig + ci) * g->kh + kh) * g->kw + kw;
                acc += (double)x[xi] * (double)wt[wi];
              }
            }
          y[(((size_t)n * g->c_out + co) * g->ho + oh) * g->wo + ow] = (float)acc;
        }
    }
}

void hm_ref_im2col(const hm_abi_window *g, const float *x, float *cols) {
  size_t k = (size_t)g->c_in * g->kh * g->kw, row = 0;
  for (uint32_t n = 0; n < g->n; n++)
    for (uint32_t oh = 0; oh < g->ho; oh++)
      for (uint32_t ow = 0; ow < g->wo; ow++, row++)
        for (uint32_t ci = 0; ci < g->c_in; ci++)
          for (uint32_t kh = 0; kh < g->kh; kh++)
            for (uint32_t kw = 0; kw < g->kw; kw++) {
              long ih = in_at(oh, g->sh, g->ph, kh, g->dh, g->h), iw = in_at(ow, g->sw, g->pw, kw, g->dw, g->w);
              size_t xi = (((size_t)n * g->c_in + ci) * g->h + (size_t)ih) * g->w + (size_t)iw;
              cols[row * k + ((size_t)ci * g->kh + kh) * g->kw + kw] = ih < 0 || iw < 0 ? 0.0f : x[xi];
            }
}

void hm_ref_conv2d_bwd_data(const hm_abi_window *g, int accumulate, const float *dy, const float *wt, float *dx) {
  uint32_t cig = g->c_in / g->groups, cog = g->c_out / g->groups;
  size_t nx = (size_t)g->n * g->c_in * g->h * g->w;
  double *acc = calloc(nx ? nx : 1, sizeof *acc);
  if (!acc) return;
  for (uint32_t n = 0; n < g->n; n++)
    for (uint32_t co = 0; co < g->c_out; co++) {
      uint32_t grp = co / cog;
      for (uint32_t oh = 0; oh < g->ho; oh++)
        for (uint32_t ow = 0; ow < g->wo; ow++) {
          double d = dy[(((size_t)n * g->c_out + co) * g->ho + oh) * g->wo + ow];
          for (uint32_t ci = 0; ci < cig; ci++)
            for (uint32_t kh = 0; kh < g->kh; kh++) {
              long ih = in_at(oh, g->sh, g->ph, kh, g->dh, g->h);
              if (ih < 0) continue;
              for (uint32_t kw = 0; kw < g->kw; kw++) {
                long iw = in_at(ow, g->sw, g->pw, kw, g->dw, g->w);
                if (iw < 0) continue;
                size_t xi = (((size_t)n * g->c_in + grp * cig + ci) * g->h + (size_t)ih) * g->w + (size_t)iw;
                acc[xi] += d * wt[(((size_t)co * cig + ci) * g->kh + kh) * g->kw + kw];
              }
            }
        }
    }
  for (size_t i = 0; i < nx; i++) dx[i] = (float)((accumulate ? (double)dx[i] : 0.0) + acc[i]);
  free(acc);
}

void hm_ref_conv2d_bwd_filter(const hm_abi_window *g, int accumulate, const float *x, const float *dy, float *dw,
                              float *db) {
  uint32_t cig = g->c_in / g->groups, cog = g->c_out / g->groups;
  for (uint32_t co = 0; co < g->c_out; co++) {
    uint32_t grp = co / cog;
    for (uint32_t ci = 0; ci < cig; ci++)
      for (uint32_t kh = 0; kh < g->kh; kh++)
        for (uint32_t kw = 0; kw < g->kw; kw++) {
          double acc = 0.0;
          for (uint32_t n = 0; n < g->n; n++)
            for (uint32_t oh = 0; oh < g->ho; oh++) {
              long ih = in_at(oh, g->sh, g->ph, kh, g->dh, g->h);
              if (ih < 0) continue;
              for (uint32_t ow = 0; ow < g->wo; ow++) {
                long iw = in_at(ow, g->sw, g->pw, kw, g->dw, g->w);
                if (iw < 0) continue;
                acc += (double)x[(((size_t)n * g->c_in + grp * cig + ci) * g->h + (size_t)ih) * g->w + (size_t)iw] *
                       dy[(((size_t)n * g->c_out + co) * g->ho + oh) * g->wo + ow];
              }
            }
          float *out = &dw[(((size_t)co * cig + ci) * g->kh + kh) * g->kw + kw];
          *out = (float)((accumulate ? (double)*out : 0.0) + acc);
        }
    if (!db) continue;
    double acc = 0.0;
    for (uint32_t n = 0; n < g->n; n++)
      for (size_t i = 0; i < (size_t)g->ho * g->wo; i++) acc += dy[((size_t)n * g->c_out + co) * g->ho * g->wo + i];
    db[co] = (float)((accumulate ? (double)db[co] : 0.0) + acc);
  }
}

/* The window of output (oh, ow): the max's index in the input plane (first
 * in row-major scan order; a NaN wins and stays), or the average over the
 * whole window, padding counted. */
static double pool_window(int variant, const hm_abi_window *g, const float *plane, uint32_t oh, uint32_t ow,
                          int32_t *argmax) {
  double sum = 0.0;
  long best = -1;
  for (uint32_t kh = 0; kh < g->kh; kh++) {
    long ih = in_at(oh, g->sh, g->ph, kh, 1, g->h);
    if (ih < 0) continue;
    for (uint32_t kw = 0; kw < g->kw; kw++) {
      long iw = in_at(ow, g->sw, g->pw, kw, 1, g->w);
      if (iw < 0) continue;
      long at = ih * (long)g->w + iw;
      float v = plane[at];
      sum += v;
      if (best < 0 || (!isnan(plane[best]) && (v > plane[best] || isnan(v)))) best = at;
    }
  }
  if (variant == HM_ABI_POOL_AVG) return sum / ((double)g->kh * g->kw);
  *argmax = (int32_t)best;
  return plane[best];
}

void hm_ref_pool2d(int variant, const hm_abi_window *g, const float *x, float *y, int32_t *argmax) {
  size_t plane = (size_t)g->h * g->w, oplane = (size_t)g->ho * g->wo;
  for (size_t nc = 0; nc < (size_t)g->n * g->c_in; nc++)
    for (uint32_t oh = 0; oh < g->ho; oh++)
      for (uint32_t ow = 0; ow < g->wo; ow++) {
        size_t o = nc * oplane + (size_t)oh * g->wo + ow;
        int32_t am = 0;
        y[o] = (float)pool_window(variant, g, x + nc * plane, oh, ow, &am);
        if (argmax && variant == HM_ABI_POOL_MAX) argmax[o] = am;
      }
}

void hm_ref_pool2d_bwd(int variant, const hm_abi_window *g, int accumulate, const float *dy, const int32_t *argmax,
                       float *dx) {
  size_t plane = (size_t)g->h * g->w, oplane = (size_t)g->ho * g->wo;
  double *acc = calloc(plane ? plane : 1, sizeof *acc);
  if (!acc) return;
  double area = (double)g->kh * g->kw;
  for (size_t nc = 0; nc < (size_t)g->n * g->c_in; nc++) {
    memset(acc, 0, plane * sizeof *acc);
    for (uint32_t oh = 0; oh < g->ho; oh++)
      for (uint32_t ow = 0; ow < g->wo; ow++) {
        size_t o = nc * oplane + (size_t)oh * g->wo + ow;
        if (variant == HM_ABI_POOL_MAX) {
          int32_t at = argmax[o];
          if (at >= 0 && (size_t)at < plane) acc[at] += dy[o];
          continue;
        }
        for (uint32_t kh = 0; kh < g->kh; kh++) {
          long ih = in_at(oh, g->sh, g->ph, kh, 1, g->h);
          if (ih < 0) continue;
          for (uint32_t kw = 0; kw < g->kw; kw++) {
            long iw = in_at(ow, g->sw, g->pw, kw, 1, g->w);
            if (iw >= 0) acc[ih * (long)g->w + iw] += dy[o] / area;
          }
        }
      }
    for (size_t i = 0; i < plane; i++)
      dx[nc * plane + i] = (float)((accumulate ? (double)dx[nc * plane + i] : 0.0) + acc[i]);
  }
  free(acc);
}

/* lowbias32 (Chris Wellons' integer hash): a bijection on 32-bit words. */
uint32_t hm_ref_hash32(uint32_t x) {
  x ^= x >> 16;
  x *= 0x7feb352du;
  x ^= x >> 15;
  x *= 0x846ca68bu;
  x ^= x >> 16;
  return x;
}

int hm_ref_dropout_keep(uint64_t seed, uint32_t step, uint32_t index, float rate) {
  uint32_t key = hm_ref_hash32((uint32_t)seed ^ hm_ref_hash32((uint32_t)(seed >> 32) ^ 0x9e3779b9u));
  uint32_t h = hm_ref_hash32(hm_ref_hash32(key ^ step) ^ index);
  uint32_t threshold = (uint32_t)(rate * 16777216.0f);
  return (h >> 8) >= threshold;
}

void hm_ref_dropout(size_t n, uint64_t seed, uint32_t step, float rate, float scale, const float *x, float *y) {
  for (size_t i = 0; i < n; i++) y[i] = hm_ref_dropout_keep(seed, step, (uint32_t)i, rate) ? x[i] * scale : 0.0f;
}

/* ===== Normalization ===== */

/* Mean and biased variance of |count| values at stride: channel c of
 * [N, C, S] (batch norm) or row r of [N, D] (layer norm). */
static void moments(const float *x, size_t n, size_t c_stride, size_t inner, size_t outer_stride, double *mean,
                    double *var) {
  double s = 0.0, q = 0.0;
  for (size_t i = 0; i < n; i++)
    for (size_t j = 0; j < inner; j++) s += x[i * outer_stride + j * c_stride];
  double m = s / (double)(n * inner);
  for (size_t i = 0; i < n; i++)
    for (size_t j = 0; j < inner; j++) {
      double d = x[i * outer_stride + j * c_stride] - m;
      q += d * d;
    }
  *mean = m;
  *var = q / (double)(n * inner);
}

void hm_ref_batch_norm(int mode, size_t n, size_t c, size_t s, float eps, float momentum, const float *x,
                       const float *gamma, const float *beta, float *y, float *running) {
  size_t m = n * s;
  for (size_t ch = 0; ch < c; ch++) {
    double mean, var;
    if (mode == HM_ABI_NORM_EVAL) {
      mean = running[ch];
      var = running[c + ch];
    } else {
      moments(x + ch * s, n, 1, s, c * s, &mean, &var);
    }
    double inv = 1.0 / sqrt(var + (double)eps);
    for (size_t i = 0; i < n; i++)
      for (size_t j = 0; j < s; j++) {
        size_t at = (i * c + ch) * s + j;
        y[at] = (float)((x[at] - mean) * inv * gamma[ch] + beta[ch]);
      }
    if (mode == HM_ABI_NORM_EVAL || !running) continue;
    double unbiased = m > 1 ? var * (double)m / (double)(m - 1) : var;
    running[ch] = (float)((1.0 - momentum) * running[ch] + momentum * mean);
    running[c + ch] = (float)((1.0 - momentum) * running[c + ch] + momentum * unbiased);
  }
}

/* The normalization backward over one group of M values (a channel or a
 * row), its statistics recomputed from x: dxhat = dy * gamma;
 * dx = inv/M (M dxhat - sum dxhat - xhat sum dxhat xhat). */
void hm_ref_batch_norm_bwd(size_t n, size_t c, size_t s, float eps, float beta_dx, float beta_params, const float *x,
                           const float *dy, const float *gamma, float *dx, float *dgamma, float *dbeta) {
  double m = (double)(n * s);
  for (size_t ch = 0; ch < c; ch++) {
    double mean, var, sdy = 0.0, sdyx = 0.0;
    moments(x + ch * s, n, 1, s, c * s, &mean, &var);
    double inv = 1.0 / sqrt(var + (double)eps);
    for (size_t i = 0; i < n; i++)
      for (size_t j = 0; j < s; j++) {
        size_t at = (i * c + ch) * s + j;
        sdy += dy[at];
        sdyx += dy[at] * (x[at] - mean) * inv;
      }
    if (dgamma) dgamma[ch] = (float)((beta_params != 0.0f ? beta_params * (double)dgamma[ch] : 0.0) + sdyx);
    if (dbeta) dbeta[ch] = (float)((beta_params != 0.0f ? beta_params * (double)dbeta[ch] : 0.0) + sdy);
    if (!dx) continue;
    for (size_t i = 0; i < n; i++)
      for (size_t j = 0; j < s; j++) {
        size_t at = (i * c + ch) * s + j;
        double xhat = (x[at] - mean) * inv;
        double g = gamma[ch] * inv / m * (m * dy[at] - sdy - xhat * sdyx);
        dx[at] = (float)((beta_dx != 0.0f ? beta_dx * (double)dx[at] : 0.0) + g);
      }
  }
}

void hm_ref_layer_norm(size_t n, size_t d, float eps, const float *x, const float *gamma, const float *beta, float *y) {
  for (size_t r = 0; r < n; r++) {
    double mean, var;
    moments(x + r * d, 1, 1, d, 0, &mean, &var);
    double inv = 1.0 / sqrt(var + (double)eps);
    for (size_t j = 0; j < d; j++) y[r * d + j] = (float)((x[r * d + j] - mean) * inv * gamma[j] + beta[j]);
  }
}

void hm_ref_layer_norm_bwd(size_t n, size_t d, float eps, float beta_dx, float beta_params, const float *x,
                           const float *dy, const float *gamma, float *dx, float *dgamma, float *dbeta) {
  double *dg = calloc(d ? d : 1, sizeof *dg), *db = calloc(d ? d : 1, sizeof *db);
  if (!dg || !db) {
    free(dg);
    free(db);
    return;
  }
  for (size_t r = 0; r < n; r++) {
    double mean, var, sg = 0.0, sgx = 0.0;
    moments(x + r * d, 1, 1, d, 0, &mean, &var);
    double inv = 1.0 / sqrt(var + (double)eps);
    for (size_t j = 0; j < d; j++) {
      double xhat = (x[r * d + j] - mean) * inv, g = (double)dy[r * d + j] * gamma[j];
      sg += g;
      sgx += g * xhat;
      dg[j] += dy[r * d + j] * xhat;
      db[j] += dy[r * d + j];
    }
    if (!dx) continue;
    for (size_t j = 0; j < d; j++) {
      double xhat = (x[r * d + j] - mean) * inv, g = (double)dy[r * d + j] * gamma[j];
      double v = inv / (double)d * ((double)d * g - sg - xhat * sgx);
      dx[r * d + j] = (float)((beta_dx != 0.0f ? beta_dx * (double)dx[r * d + j] : 0.0) + v);
    }
  }
  for (size_t j = 0; j < d; j++) {
    if (dgamma) dgamma[j] = (float)((beta_params != 0.0f ? beta_params * (double)dgamma[j] : 0.0) + dg[j]);
    if (dbeta) dbeta[j] = (float)((beta_params != 0.0f ? beta_params * (double)dbeta[j] : 0.0) + db[j]);
  }
  free(dg);
  free(db);
}
