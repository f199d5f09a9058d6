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
