/*
 * Every CPU op against the scalar reference (abi/reference), at 1 and 2
 * threads and at edge shapes; activation and loss gradients against finite
 * differences; optimizers against the single-step values of
 * reference/original-behaviour.md §3.3; program validation errors.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "hm_test.h"
#include "test_op_util.h"

#define F32_TOL 1e-9 /* numerics class F32 (SPEC.md §6) */

static const unsigned thread_counts[] = {1, 2};

static void check_outputs(const top_case *c, void *dev_out[4], void *ref_out[4], const char *what) {
  for (int i = 0; i < 4; i++) {
    if (!c->out[i].data) continue;
    size_t n = c->out[i].bytes / 4;
    double e = top_nmse(ref_out[i], dev_out[i], n);
    HM_CHECK_MSG(e <= F32_TOL, "%s out[%d]: nmse %.3g", what, i, e);
  }
}

static void run_and_compare(hm_device *dev, const top_case *c, const char *what) {
  void *d[4], *r[4];
  hm_status st = top_run(dev, c, d, r);
  HM_CHECK_MSG(st == HM_OK, "%s: %s", what, hm_last_error());
  if (st != HM_OK) return;
  check_outputs(c, d, r, what);
  top_free_outputs(d);
  top_free_outputs(r);
}

static void gemm_matches_reference(void) {
  static const size_t shapes[][3] = {{1, 1, 1},   {7, 13, 5},  {64, 128, 784}, {31, 17, 257},
                                     {128, 10, 64}, {3, 200, 2}, {257, 129, 33}, {1, 300, 70}, {1, 1000, 1100}};
  static const float ab[][2] = {{1.0f, 0.0f}, {0.5f, 1.5f}};
  for (size_t t = 0; t < 2; t++) {
    hm_device *dev = top_open_cpu(thread_counts[t]);
    HM_CHECK(dev != NULL);
    if (!dev) return;
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
      for (unsigned flags = 0; flags < 4; flags++)
        for (size_t k = 0; k < 2; k++) {
          size_t m = shapes[s][0], n = shapes[s][1], kk = shapes[s][2];
          float *a = top_random(m * kk, -1, 1, 1 + s), *b = top_random(kk * n, -1, 1, 2 + s),
                *cc = top_random(m * n, -1, 1, 3 + s);
          top_case c;
          memset(&c, 0, sizeof c);
          c.op = hm_op_init(HM_ABI_OP_GEMM);
          c.op.flags = flags;
          c.op.dims[0] = m;
          c.op.dims[1] = n;
          c.op.dims[2] = kk;
          c.op.params[0] = ab[k][0];
          c.op.params[1] = ab[k][1];
          c.in[0] = (top_operand){a, m * kk * 4};
          c.in[1] = (top_operand){b, kk * n * 4};
          c.out[0] = (top_operand){cc, m * n * 4};
          char what[96];
          snprintf(what, sizeof what, "gemm %zux%zux%zu flags %u ab %zu threads %u", m, n, kk, flags, k,
                   thread_counts[t]);
          run_and_compare(dev, &c, what);
          free(a);
          free(b);
          free(cc);
        }
    hm_device_close(dev);
  }
}

static void gemm_beta_zero_does_not_read_c(void) {
  hm_device *dev = top_open_cpu(2);
  if (!dev) return;
  size_t m = 40, n = 40, k = 40;
  float *a = top_random(m * k, -1, 1, 5), *b = top_random(k * n, -1, 1, 6), *cc = malloc(m * n * 4);
  for (size_t i = 0; i < m * n; i++) cc[i] = NAN;
  top_case c;
  memset(&c, 0, sizeof c);
  c.op = hm_op_init(HM_ABI_OP_GEMM);
  c.op.dims[0] = m;
  c.op.dims[1] = n;
  c.op.dims[2] = k;
  c.op.params[0] = 1.0f;
  c.in[0] = (top_operand){a, m * k * 4};
  c.in[1] = (top_operand){b, k * n * 4};
  c.out[0] = (top_operand){cc, m * n * 4};
  void *d[4], *r[4];
  HM_CHECK_OK(top_run(dev, &c, d, r));
  int nans = 0;
  for (size_t i = 0; d[0] && i < m * n; i++) nans += isnan(((float *)d[0])[i]);
  HM_CHECK_EQ(nans, 0);
  top_free_outputs(d);
  top_free_outputs(r);
  free(a);
  free(b);
  free(cc);
  hm_device_close(dev);
}

static const size_t act_shapes[][2] = {{1, 1}, {3, 7}, {65, 130}, {128, 10}};

static void activations_forward_match_reference(void) {
  for (size_t t = 0; t < 2; t++) {
    hm_device *dev = top_open_cpu(thread_counts[t]);
    if (!dev) return;
    for (uint32_t act = 0; act < HM_ABI_ACT_COUNT; act++)
      for (size_t s = 0; s < 4; s++) {
        size_t rows = act_shapes[s][0], cols = act_shapes[s][1];
        float *x = top_random(rows * cols, -4, 4, 10 + act), *y = calloc(rows * cols, 4);
        top_case c;
        memset(&c, 0, sizeof c);
        c.op = hm_op_init(HM_ABI_OP_ACT_FORWARD);
        c.op.variant = act;
        c.op.dims[0] = rows;
        c.op.dims[1] = cols;
        c.op.params[0] = hm_ref_activation_default_param((int)act);
        c.in[0] = (top_operand){x, rows * cols * 4};
        c.out[0] = (top_operand){y, rows * cols * 4};
        char what[96];
        snprintf(what, sizeof what, "%s forward %zux%zu threads %u", hm_activation_name(act), rows, cols,
                 thread_counts[t]);
        run_and_compare(dev, &c, what);
        free(x);
        free(y);
      }
    hm_device_close(dev);
  }
}

static void activations_backward_match_reference(void) {
  for (size_t t = 0; t < 2; t++) {
    hm_device *dev = top_open_cpu(thread_counts[t]);
    if (!dev) return;
    for (uint32_t act = 0; act < HM_ABI_ACT_COUNT; act++)
      for (size_t s = 0; s < 4; s++)
        for (int beta = 0; beta < 2; beta++) {
          size_t rows = act_shapes[s][0], cols = act_shapes[s][1], n = rows * cols;
          float param = hm_ref_activation_default_param((int)act);
          float *x = top_random(n, -4, 4, 20 + act), *y = malloc(n * 4), *dy = top_random(n, -1, 1, 30 + act),
                *dx = top_random(n, -1, 1, 40);
          hm_ref_act_forward((int)act, param, rows, cols, x, y);
          top_case c;
          memset(&c, 0, sizeof c);
          c.op = hm_op_init(HM_ABI_OP_ACT_BACKWARD);
          c.op.variant = act;
          c.op.dims[0] = rows;
          c.op.dims[1] = cols;
          c.op.params[0] = param;
          c.op.params[1] = beta ? 0.5f : 0.0f;
          c.in[0] = (top_operand){x, n * 4};
          c.in[1] = (top_operand){y, n * 4};
          c.in[2] = (top_operand){dy, n * 4};
          c.out[0] = (top_operand){dx, n * 4};
          char what[96];
          snprintf(what, sizeof what, "%s backward %zux%zu beta %d threads %u", hm_activation_name(act), rows, cols,
                   beta, thread_counts[t]);
          run_and_compare(dev, &c, what);
          free(x);
          free(y);
          free(dy);
          free(dx);
        }
    hm_device_close(dev);
  }
}

/* The reference's analytic derivatives against central differences. */
static void activation_gradients_match_finite_differences(void) {
  const double h = 1e-5;
  for (uint32_t act = 0; act < HM_ABI_ACT_COUNT; act++) {
    if (act == HM_ABI_ACT_SOFTMAX) continue; /* below */
    double param = hm_ref_activation_default_param((int)act);
    for (double x = -3.9; x < 4.0; x += 0.37) {
      if (fabs(x) < 1e-3) continue; /* kinks of relu/leaky/elu/selu at 0 */
      double fd = (hm_ref_activation((int)act, x + h, param) - hm_ref_activation((int)act, x - h, param)) / (2 * h);
      double an = hm_ref_activation_grad((int)act, x, param);
      HM_CHECK_MSG(fabs(fd - an) <= 1e-6 * (1 + fabs(an)), "%s'(%g): analytic %.9g, numeric %.9g",
                   hm_activation_name(act), x, an, fd);
    }
  }
  /* Softmax: d(sum_j w_j y_j)/dx_i against the backward op formula. */
  hm_device *dev = top_open_cpu(1);
  if (!dev) return;
  const size_t cols = 6;
  float x[6] = {0.3f, -1.2f, 2.0f, 0.0f, 0.7f, -0.4f}, w[6] = {0.5f, -1.0f, 0.25f, 2.0f, -0.3f, 1.0f};
  float y[6], dx[6] = {0};
  hm_ref_act_forward(HM_ABI_ACT_SOFTMAX, 0, 1, cols, x, y);
  top_case c;
  memset(&c, 0, sizeof c);
  c.op = hm_op_init(HM_ABI_OP_ACT_BACKWARD);
  c.op.variant = HM_ABI_ACT_SOFTMAX;
  c.op.dims[0] = 1;
  c.op.dims[1] = cols;
  c.in[1] = (top_operand){y, sizeof y};
  c.in[2] = (top_operand){w, sizeof w};
  c.out[0] = (top_operand){dx, sizeof dx};
  void *d[4], *r[4];
  HM_CHECK_OK(top_run(dev, &c, d, r));
  for (size_t i = 0; d[0] && i < cols; i++) {
    double plus = 0, minus = 0, e[6];
    double xm = -INFINITY;
    for (int pass = 0; pass < 2; pass++) {
      double s = 0, acc = 0;
      xm = -INFINITY;
      for (size_t j = 0; j < cols; j++) {
        double v = x[j] + (j == i ? (pass ? -h : h) : 0);
        e[j] = v;
        if (v > xm) xm = v;
      }
      for (size_t j = 0; j < cols; j++) s += exp(e[j] - xm);
      for (size_t j = 0; j < cols; j++) acc += w[j] * exp(e[j] - xm) / s;
      if (pass) minus = acc;
      else plus = acc;
    }
    double fd = (plus - minus) / (2 * h);
    HM_CHECK_NEAR(((float *)d[0])[i], fd, 1e-5);
  }
  top_free_outputs(d);
  top_free_outputs(r);
  hm_device_close(dev);
}

/* Mean loss in double, for finite differences. */
static double loss_value(uint32_t loss, int ci, double delta, size_t rows, size_t cols, const double *p,
                         const float *tf, const int32_t *ti) {
  double total = 0;
  for (size_t r = 0; r < rows; r++) {
    if (loss == HM_ABI_LOSS_CROSS_ENTROPY) {
      double mx = -INFINITY, s = 0;
      for (size_t c = 0; c < cols; c++) mx = fmax(mx, p[r * cols + c]);
      for (size_t c = 0; c < cols; c++) s += exp(p[r * cols + c] - mx);
      double lse = mx + log(s);
      if (ci) {
        if (ti[r] >= 0 && (size_t)ti[r] < cols) total += lse - p[r * cols + (size_t)ti[r]];
      } else {
        for (size_t c = 0; c < cols; c++) total += tf[r * cols + c] * (lse - p[r * cols + c]);
      }
      continue;
    }
    for (size_t c = 0; c < cols; c++) {
      double x = p[r * cols + c], t = tf[r * cols + c], e = x - t;
      switch (loss) {
        case HM_ABI_LOSS_MSE: total += e * e; break;
        case HM_ABI_LOSS_MAE: total += fabs(e); break;
        case HM_ABI_LOSS_BCE: total += fmax(x, 0) - x * t + log1p(exp(-fabs(x))); break;
        default: total += fabs(e) <= delta ? 0.5 * e * e : delta * (fabs(e) - 0.5 * delta); break;
      }
    }
  }
  return total / (loss == HM_ABI_LOSS_CROSS_ENTROPY ? (double)rows : (double)rows * cols);
}

static void losses_match_reference_and_finite_differences(void) {
  static const size_t shapes[][2] = {{1, 1}, {4, 10}, {64, 10}, {33, 7}};
  for (size_t t = 0; t < 2; t++) {
    hm_device *dev = top_open_cpu(thread_counts[t]);
    if (!dev) return;
    for (uint32_t loss = 0; loss < HM_ABI_LOSS_COUNT; loss++)
      for (int ci = 0; ci < (loss == HM_ABI_LOSS_CROSS_ENTROPY ? 2 : 1); ci++)
        for (size_t s = 0; s < 4; s++) {
          size_t rows = shapes[s][0], cols = shapes[s][1], n = rows * cols;
          float *p = top_random(n, -3, 3, 50 + loss + s);
          float *tf = top_random(n, loss == HM_ABI_LOSS_BCE ? 0 : -2, loss == HM_ABI_LOSS_BCE ? 1 : 2, 60 + s);
          int32_t *ti = malloc(rows * 4);
          unsigned long long seed = 70 + s;
          for (size_t r = 0; r < rows; r++) ti[r] = (int32_t)(hm_test_rand_u64(&seed) % cols);
          if (loss == HM_ABI_LOSS_CROSS_ENTROPY && !ci) /* one-hot-ish soft targets summing to 1 */
            for (size_t r = 0; r < rows; r++) {
              double sum = 0;
              for (size_t c = 0; c < cols; c++) sum += (tf[r * cols + c] = fabsf(tf[r * cols + c]));
              for (size_t c = 0; c < cols; c++) tf[r * cols + c] = (float)(tf[r * cols + c] / sum);
            }
          float lossv = 0.25f, *g = top_random(n, -1, 1, 80);
          top_case c;
          memset(&c, 0, sizeof c);
          c.op = hm_op_init(HM_ABI_OP_LOSS);
          c.op.variant = loss;
          c.op.flags = ci ? HM_ABI_OP_FLAG_CLASS_INDEX : 0;
          c.op.dims[0] = rows;
          c.op.dims[1] = cols;
          c.op.params[0] = 1.0f;  /* gradient scale */
          c.op.params[1] = 1.0f;  /* huber delta */
          c.op.params[2] = 0.0f;  /* loss beta */
          c.op.params[3] = 0.0f;  /* grad beta */
          c.in[0] = (top_operand){p, n * 4};
          c.in[1] = ci ? (top_operand){ti, rows * 4} : (top_operand){tf, n * 4};
          c.out[0] = (top_operand){&lossv, 4};
          c.out[1] = (top_operand){g, n * 4};
          char what[96];
          snprintf(what, sizeof what, "%s%s %zux%zu threads %u", hm_loss_name(loss), ci ? "(index)" : "", rows,
                   cols, thread_counts[t]);
          void *d[4], *r[4];
          hm_status st = top_run(dev, &c, d, r);
          HM_CHECK_MSG(st == HM_OK, "%s: %s", what, hm_last_error());
          if (st == HM_OK) {
            check_outputs(&c, d, r, what);
            /* Loss value and gradient against a double-precision loss. */
            double *pd = malloc(n * sizeof *pd);
            for (size_t i = 0; i < n; i++) pd[i] = p[i];
            double l = loss_value(loss, ci, 1.0, rows, cols, pd, tf, ti);
            HM_CHECK_MSG(fabs(l - *(float *)d[0]) <= 1e-5 * (1 + fabs(l)), "%s: loss %.9g vs %.9g", what,
                         *(float *)d[0], l);
            for (size_t i = 0; i < n; i += (n > 40 ? 7 : 1)) {
              double h = 1e-6, keep = pd[i];
              if ((loss == HM_ABI_LOSS_MAE || loss == HM_ABI_LOSS_HUBER) &&
                  (fabs(p[i] - tf[i]) < 1e-3 || fabs(fabs(p[i] - tf[i]) - 1.0) < 1e-3))
                continue;
              pd[i] = keep + h;
              double lp = loss_value(loss, ci, 1.0, rows, cols, pd, tf, ti);
              pd[i] = keep - h;
              double lm = loss_value(loss, ci, 1.0, rows, cols, pd, tf, ti);
              pd[i] = keep;
              double fd = (lp - lm) / (2 * h), an = ((float *)d[1])[i];
              HM_CHECK_MSG(fabs(fd - an) <= 1e-5 * (1 + fabs(fd)), "%s: dL/dp[%zu] %.9g vs numeric %.9g", what, i,
                           an, fd);
            }
            free(pd);
            top_free_outputs(d);
            top_free_outputs(r);
          }
          free(p);
          free(tf);
          free(ti);
          free(g);
        }
    hm_device_close(dev);
  }
}

static void cross_entropy_ignores_invalid_labels(void) {
  hm_device *dev = top_open_cpu(1);
  if (!dev) return;
  float p[6] = {1, 2, 3, 4, 5, 6}, loss = 0, g[6] = {0};
  int32_t labels[2] = {2, 7}; /* 7 is out of range for 3 classes */
  top_case c;
  memset(&c, 0, sizeof c);
  c.op = hm_op_init(HM_ABI_OP_LOSS);
  c.op.variant = HM_ABI_LOSS_CROSS_ENTROPY;
  c.op.flags = HM_ABI_OP_FLAG_CLASS_INDEX;
  c.op.dims[0] = 2;
  c.op.dims[1] = 3;
  c.op.params[0] = 1.0f;
  c.in[0] = (top_operand){p, sizeof p};
  c.in[1] = (top_operand){labels, sizeof labels};
  c.out[0] = (top_operand){&loss, 4};
  c.out[1] = (top_operand){g, sizeof g};
  void *d[4], *r[4];
  HM_CHECK_OK(top_run(dev, &c, d, r));
  if (d[0]) {
    double lse = 3 + log(exp(-2.0) + exp(-1.0) + 1.0);
    HM_CHECK_NEAR(*(float *)d[0], (lse - 3) / 2, 1e-6);
    for (int i = 3; i < 6; i++) HM_CHECK_NEAR(((float *)d[1])[i], 0.0, 0.0);
  }
  top_free_outputs(d);
  top_free_outputs(r);
  hm_device_close(dev);
}

static void reductions_and_elementwise_match_reference(void) {
  static const size_t shapes[][2] = {{1, 1}, {64, 128}, {7, 3000}, {1000, 3}};
  for (size_t t = 0; t < 2; t++) {
    hm_device *dev = top_open_cpu(thread_counts[t]);
    if (!dev) return;
    for (size_t s = 0; s < 4; s++) {
      size_t rows = shapes[s][0], cols = shapes[s][1], n = rows * cols;
      float *x = top_random(n, -2, 2, 90 + s), *yr = top_random(cols, -1, 1, 91), *yc = top_random(rows, -1, 1, 92);
      float *big = top_random(n, -2, 2, 93), sq = 3.0f;
      const uint32_t codes[] = {HM_ABI_OP_REDUCE_ROWS, HM_ABI_OP_REDUCE_COLS, HM_ABI_OP_SUM_SQUARES,
                                HM_ABI_OP_BIAS_ADD,    HM_ABI_OP_CLIP,        HM_ABI_OP_SCALE,
                                HM_ABI_OP_AXPY};
      for (size_t k = 0; k < sizeof codes / sizeof codes[0]; k++) {
        top_case c;
        memset(&c, 0, sizeof c);
        c.op = hm_op_init(codes[k]);
        c.op.dims[0] = codes[k] >= HM_ABI_OP_SUM_SQUARES && codes[k] != HM_ABI_OP_BIAS_ADD ? n : rows;
        c.op.dims[1] = cols;
        c.op.params[0] = 0.75f;
        c.op.params[1] = 0.5f;
        switch (codes[k]) {
          case HM_ABI_OP_REDUCE_ROWS:
            c.in[0] = (top_operand){x, n * 4};
            c.out[0] = (top_operand){yr, cols * 4};
            break;
          case HM_ABI_OP_REDUCE_COLS:
            c.in[0] = (top_operand){x, n * 4};
            c.out[0] = (top_operand){yc, rows * 4};
            break;
          case HM_ABI_OP_SUM_SQUARES:
            c.in[0] = (top_operand){x, n * 4};
            c.out[0] = (top_operand){&sq, 4};
            break;
          case HM_ABI_OP_BIAS_ADD:
            c.in[0] = (top_operand){yr, cols * 4};
            c.out[0] = (top_operand){big, n * 4};
            break;
          case HM_ABI_OP_CLIP:
          case HM_ABI_OP_SCALE: c.out[0] = (top_operand){big, n * 4}; break;
          default:
            c.in[0] = (top_operand){x, n * 4};
            c.out[0] = (top_operand){big, n * 4};
            break;
        }
        char what[96];
        snprintf(what, sizeof what, "%s %zux%zu threads %u", hm_op_name(codes[k]), rows, cols, thread_counts[t]);
        run_and_compare(dev, &c, what);
      }
      free(x);
      free(yr);
      free(yc);
      free(big);
    }
    hm_device_close(dev);
  }
}

static void clip_propagates_nan_and_saturates(void) {
  hm_device *dev = top_open_cpu(1);
  if (!dev) return;
  float x[5] = {NAN, INFINITY, -INFINITY, 0.5f, -3.0f};
  top_case c;
  memset(&c, 0, sizeof c);
  c.op = hm_op_init(HM_ABI_OP_CLIP);
  c.op.dims[0] = 5;
  c.op.params[0] = 1.0f;
  c.out[0] = (top_operand){x, sizeof x};
  void *d[4], *r[4];
  HM_CHECK_OK(top_run(dev, &c, d, r));
  if (d[0]) {
    float *y = d[0];
    HM_CHECK(isnan(y[0]));
    HM_CHECK_NEAR(y[1], 1.0, 0);
    HM_CHECK_NEAR(y[2], -1.0, 0);
    HM_CHECK_NEAR(y[3], 0.5, 0);
    HM_CHECK_NEAR(y[4], -1.0, 0);
  }
  top_free_outputs(d);
  top_free_outputs(r);
  hm_device_close(dev);
}

static void gather_fill_copy_match_reference(void) {
  hm_device *dev = top_open_cpu(2);
  if (!dev) return;
  const size_t rows_src = 50, cols = 784, rows_out = 17;
  uint8_t *u8 = malloc(rows_src * cols);
  unsigned long long seed = 99;
  for (size_t i = 0; i < rows_src * cols; i++) u8[i] = (uint8_t)hm_test_rand_u64(&seed);
  float *f = top_random(rows_src * cols, -1, 1, 100);
  int32_t *i32 = malloc(rows_src * 4), idx[17];
  for (size_t i = 0; i < rows_src; i++) i32[i] = (int32_t)(i * 3 + 1);
  for (size_t i = 0; i < rows_out; i++) idx[i] = (int32_t)((i * 7) % rows_src);
  idx[3] = -1; /* out of range: zero row */
  idx[9] = (int32_t)rows_src;
  float *out = calloc(rows_out * cols, 4);
  int32_t out_i[17];
  const uint32_t dtypes[] = {HM_ABI_DTYPE_U8, HM_ABI_DTYPE_F32, HM_ABI_DTYPE_I32};
  for (size_t k = 0; k < 3; k++) {
    top_case c;
    memset(&c, 0, sizeof c);
    c.op = hm_op_init(HM_ABI_OP_GATHER_ROWS);
    c.op.dtype_in = dtypes[k];
    c.op.dtype_out = dtypes[k] == HM_ABI_DTYPE_I32 ? HM_ABI_DTYPE_I32 : HM_ABI_DTYPE_F32;
    size_t w = dtypes[k] == HM_ABI_DTYPE_I32 ? 1 : cols;
    c.op.dims[0] = rows_out;
    c.op.dims[1] = w;
    c.op.dims[2] = rows_src;
    c.op.params[0] = 1.0f / 255.0f;
    void *src = dtypes[k] == HM_ABI_DTYPE_U8 ? (void *)u8 : dtypes[k] == HM_ABI_DTYPE_F32 ? (void *)f : (void *)i32;
    size_t es = dtypes[k] == HM_ABI_DTYPE_U8 ? 1 : 4;
    c.in[0] = (top_operand){src, rows_src * w * es};
    c.in[1] = (top_operand){idx, sizeof idx};
    c.out[0] = dtypes[k] == HM_ABI_DTYPE_I32 ? (top_operand){out_i, sizeof out_i} : (top_operand){out, rows_out * cols * 4};
    void *d[4], *r[4];
    HM_CHECK_OK(top_run(dev, &c, d, r));
    if (d[0]) {
      HM_CHECK_MSG(memcmp(d[0], r[0], c.out[0].bytes) == 0, "gather %s differs from reference",
                   hm_dtype_name(dtypes[k]));
      if (dtypes[k] == HM_ABI_DTYPE_I32) {
        HM_CHECK_EQ(((int32_t *)d[0])[3], 0);
        HM_CHECK_EQ(((int32_t *)d[0])[1], i32[7]);
      } else {
        HM_CHECK_NEAR(((float *)d[0])[3 * cols + 5], 0.0, 0);
        HM_CHECK_NEAR(((float *)d[0])[9 * cols + 5], 0.0, 0);
      }
    }
    top_free_outputs(d);
    top_free_outputs(r);
  }
  /* fill f32 and i32, copy */
  top_case c;
  memset(&c, 0, sizeof c);
  c.op = hm_op_init(HM_ABI_OP_FILL);
  c.op.dtype_out = HM_ABI_DTYPE_I32;
  c.op.dims[0] = rows_src;
  c.op.params[0] = -7.0f;
  c.out[0] = (top_operand){i32, rows_src * 4};
  void *d[4], *r[4];
  HM_CHECK_OK(top_run(dev, &c, d, r));
  if (d[0]) HM_CHECK(memcmp(d[0], r[0], rows_src * 4) == 0 && ((int32_t *)d[0])[4] == -7);
  top_free_outputs(d);
  top_free_outputs(r);
  memset(&c, 0, sizeof c);
  c.op = hm_op_init(HM_ABI_OP_COPY);
  c.op.dtype_in = HM_ABI_DTYPE_U8;
  c.op.dtype_out = HM_ABI_DTYPE_U8;
  c.op.dims[0] = 1001;
  c.in[0] = (top_operand){u8, 1001};
  c.out[0] = (top_operand){out, 1001};
  HM_CHECK_OK(top_run(dev, &c, d, r));
  if (d[0]) HM_CHECK(memcmp(d[0], u8, 1001) == 0);
  top_free_outputs(d);
  top_free_outputs(r);
  free(u8);
  free(f);
  free(i32);
  free(out);
  hm_device_close(dev);
}

/* One optimizer step of p=[1,2,3,4], g=0.1, lr=0.01 (original-behaviour §3.3). */
static void run_opt(hm_device *dev, uint32_t code, size_t n, const float *p0, float g0, float lr, float wd,
                    float *out_p) {
  float p[4], g[4], m[4] = {0}, v[4] = {0};
  for (size_t i = 0; i < n; i++) {
    p[i] = p0[i];
    g[i] = g0;
  }
  top_case c;
  memset(&c, 0, sizeof c);
  c.op = hm_op_init(code);
  c.op.dims[0] = n;
  c.op.params[0] = lr;
  if (code == HM_ABI_OP_RMSPROP) {
    c.op.params[1] = 0.9f;
    c.op.params[2] = 1e-8f;
  } else if (code != HM_ABI_OP_SGD) {
    c.op.params[1] = 1.0f - 0.9f;   /* bc1 at t = 1 */
    c.op.params[2] = 1.0f - 0.999f; /* bc2 at t = 1 */
    c.op.params[3] = 0.9f;
    c.op.params[4] = 0.999f;
    c.op.params[5] = 1e-8f;
    c.op.params[6] = wd;
  }
  c.in[0] = (top_operand){g, n * 4};
  c.out[0] = (top_operand){p, n * 4};
  if (code != HM_ABI_OP_SGD) c.out[1] = (top_operand){m, n * 4};
  if (code == HM_ABI_OP_ADAM || code == HM_ABI_OP_ADAMW || code == HM_ABI_OP_LAMB) c.out[2] = (top_operand){v, n * 4};
  void *d[4], *r[4];
  HM_CHECK_OK(top_run(dev, &c, d, r));
  if (d[0]) memcpy(out_p, d[0], n * 4);
  top_free_outputs(d);
  top_free_outputs(r);
}

static void optimizers_match_single_step_reference_values(void) {
  hm_device *dev = top_open_cpu(1);
  if (!dev) return;
  const float p0[4] = {1, 2, 3, 4};
  float out[4];
  run_opt(dev, HM_ABI_OP_SGD, 4, p0, 0.1f, 0.01f, 0, out);
  const float sgd[4] = {0.999f, 1.999f, 2.999f, 3.999f};
  for (int i = 0; i < 4; i++) HM_CHECK_NEAR(out[i], sgd[i], 1e-7);
  run_opt(dev, HM_ABI_OP_ADAM, 4, p0, 0.1f, 0.01f, 0, out);
  const float adam[4] = {0.99000007f, 1.99f, 2.99f, 3.99f};
  for (int i = 0; i < 4; i++) HM_CHECK_NEAR(out[i], adam[i], 2e-7);
  run_opt(dev, HM_ABI_OP_RMSPROP, 4, p0, 0.1f, 0.01f, 0, out);
  const float rms[4] = {0.9683772f, 1.9683772f, 2.9683771f, 3.9683771f};
  for (int i = 0; i < 4; i++) HM_CHECK_NEAR(out[i], rms[i], 3e-7);
  run_opt(dev, HM_ABI_OP_LAMB, 4, p0, 0.1f, 0.01f, 0, out);
  const float lamb[4] = {0.97261387f, 1.97261393f, 2.97261381f, 3.97261381f};
  for (int i = 0; i < 4; i++) HM_CHECK_NEAR(out[i], lamb[i], 3e-7);
  const float one[1] = {1};
  run_opt(dev, HM_ABI_OP_ADAMW, 1, one, 0.1f, 0.01f, 0.1f, out);
  HM_CHECK_NEAR(out[0], 0.98900008f, 2e-7);
  hm_device_close(dev);
}

/* Many steps with dynamic lr and bias corrections, against the reference. */
static void optimizers_multi_step_match_reference(void) {
  for (size_t t = 0; t < 2; t++) {
    hm_device *dev = top_open_cpu(thread_counts[t]);
    if (!dev) return;
    const uint32_t codes[] = {HM_ABI_OP_SGD, HM_ABI_OP_ADAM, HM_ABI_OP_RMSPROP, HM_ABI_OP_ADAMW, HM_ABI_OP_LAMB};
    const size_t n = 40000;
    for (size_t k = 0; k < 5; k++) {
      float *p = top_random(n, -1, 1, 200), *m = calloc(n, 4), *v = calloc(n, 4);
      float *rp = malloc(n * 4), *rm = calloc(n, 4), *rv = calloc(n, 4);
      memcpy(rp, p, n * 4);
      for (int step = 1; step <= 12; step++) {
        float *g = top_random(n, -0.5f, 0.5f, 300 + (unsigned long long)step);
        double scalars[3] = {0.01 / step, 1.0 - pow(0.9, step), 1.0 - pow(0.999, step)};
        top_case c;
        memset(&c, 0, sizeof c);
        c.op = hm_op_init(codes[k]);
        c.op.dims[0] = n;
        c.op.dyn[0] = 0;
        if (codes[k] == HM_ABI_OP_SGD) {
          c.op.params[1] = 0.9f; /* momentum */
        } else if (codes[k] == HM_ABI_OP_RMSPROP) {
          c.op.params[1] = 0.9f;
          c.op.params[2] = 1e-8f;
        } else {
          c.op.dyn[1] = 1;
          c.op.dyn[2] = 2;
          c.op.params[3] = 0.9f;
          c.op.params[4] = 0.999f;
          c.op.params[5] = 1e-8f;
          c.op.params[6] = 0.01f;
        }
        c.scalars = scalars;
        c.n_scalars = 3;
        c.in[0] = (top_operand){g, n * 4};
        c.out[0] = (top_operand){p, n * 4};
        c.out[1] = (top_operand){m, n * 4};
        if (codes[k] != HM_ABI_OP_SGD && codes[k] != HM_ABI_OP_RMSPROP) c.out[2] = (top_operand){v, n * 4};
        void *d[4], *r[4];
        hm_status st = top_run(dev, &c, d, r);
        HM_CHECK_OK(st);
        if (st != HM_OK) break;
        memcpy(p, d[0], n * 4);
        memcpy(m, d[1], n * 4);
        if (d[2]) memcpy(v, d[2], n * 4);
        /* Advance an independent reference trajectory too. */
        hm_abi_op op = c.op;
        switch (codes[k]) {
          case HM_ABI_OP_SGD: hm_ref_sgd(n, (float)scalars[0], 0.9f, g, rp, rm); break;
          case HM_ABI_OP_RMSPROP: hm_ref_rmsprop(n, (float)scalars[0], 0.9f, 1e-8f, g, rp, rm); break;
          case HM_ABI_OP_ADAM:
            hm_ref_adam(n, (float)scalars[0], 0.9f, 0.999f, 1e-8f, (float)scalars[1], (float)scalars[2], g, rp, rm, rv);
            break;
          case HM_ABI_OP_ADAMW:
            hm_ref_adamw(n, (float)scalars[0], 0.9f, 0.999f, 1e-8f, (float)scalars[1], (float)scalars[2], 0.01f, g,
                         rp, rm, rv);
            break;
          default:
            hm_ref_lamb(n, (float)scalars[0], 0.9f, 0.999f, 1e-8f, (float)scalars[1], (float)scalars[2], 0.01f, g, rp,
                        rm, rv);
        }
        (void)op;
        top_free_outputs(d);
        top_free_outputs(r);
        free(g);
      }
      double e = top_nmse(rp, p, n);
      HM_CHECK_MSG(e <= F32_TOL, "%s after 12 steps, threads %u: nmse %.3g", hm_op_name(codes[k]),
                   thread_counts[t], e);
      free(p);
      free(m);
      free(v);
      free(rp);
      free(rm);
      free(rv);
    }
    hm_device_close(dev);
  }
}

/* The same program run twice with 2 threads gives identical bits. */
static void programs_are_deterministic_for_fixed_threads(void) {
  hm_device *dev = top_open_cpu(2);
  if (!dev) return;
  const size_t m = 64, n = 128, k = 784;
  float *a = top_random(m * k, -1, 1, 7), *b = top_random(k * n, -1, 1, 8);
  float results[2][2];
  for (int run = 0; run < 2; run++) {
    top_case c;
    memset(&c, 0, sizeof c);
    float *cc = calloc(m * n, 4), sq = 0;
    c.op = hm_op_init(HM_ABI_OP_GEMM);
    c.op.dims[0] = m;
    c.op.dims[1] = n;
    c.op.dims[2] = k;
    c.op.params[0] = 1;
    c.in[0] = (top_operand){a, m * k * 4};
    c.in[1] = (top_operand){b, k * n * 4};
    c.out[0] = (top_operand){cc, m * n * 4};
    void *d[4], *r[4];
    HM_CHECK_OK(top_run(dev, &c, d, r));
    float *prod = d[0];
    memset(&c, 0, sizeof c);
    c.op = hm_op_init(HM_ABI_OP_SUM_SQUARES);
    c.op.dims[0] = m * n;
    c.op.params[0] = 1;
    c.in[0] = (top_operand){prod, m * n * 4};
    c.out[0] = (top_operand){&sq, 4};
    void *d2[4], *r2[4];
    HM_CHECK_OK(top_run(dev, &c, d2, r2));
    results[run][0] = prod ? prod[1234] : 0;
    results[run][1] = d2[0] ? *(float *)d2[0] : 0;
    top_free_outputs(d);
    top_free_outputs(r);
    top_free_outputs(d2);
    top_free_outputs(r2);
    free(cc);
  }
  HM_CHECK(memcmp(results[0], results[1], sizeof results[0]) == 0);
  free(a);
  free(b);
  hm_device_close(dev);
}

/* The CPU plugin links a training step's convolution ops
 * (cpu_kernels_window.c): the activation after a convolution runs inside it,
 * and the filter gradient multiplies the patches the forward kept — unless an
 * op in between overwrote the input, when it gathers them again. Every output
 * must be the reference's, for the input as it is when each op runs. */
static void conv_program_matches_reference(hm_abi_window g) {
  size_t nx = (size_t)g.n * g.c_in * g.h * g.w, nw = (size_t)g.c_out * (g.c_in / g.groups) * g.kh * g.kw;
  size_t ny = (size_t)g.n * g.c_out * g.ho * g.wo;
  float *x = top_random(nx, -1, 1, 21), *x2 = top_random(nx, -1, 1, 22), *w = top_random(nw, -1, 1, 23);
  float *bias = top_random(g.c_out, -1, 1, 24), *dy = top_random(ny, -1, 1, 25);
  float *ref_y = malloc(ny * 4), *ref_dw = malloc(nw * 4), *ref_db = malloc(g.c_out * 4);
  float *got_y = malloc(ny * 4), *got_dw = malloc(nw * 4), *got_db = malloc(g.c_out * 4);
  float *ref_a = malloc(ny * 4), *got_a = malloc(ny * 4), *ref_dx = malloc(nx * 4), *got_dx = malloc(nx * 4);
  hm_abi_window pw = {g.n, g.c_out, g.c_out, g.ho, g.wo, 2, 2, 2, 2, 0, 0, 1, 1, 1, g.ho / 2, g.wo / 2};
  size_t np = (size_t)g.n * g.c_out * pw.ho * pw.wo;
  float *ref_pool = malloc(np * 4), *got_pool = malloc(np * 4);
  int32_t *ref_am = malloc(np * 4), *got_am = malloc(np * 4);
  for (size_t ti = 0; ti < sizeof thread_counts / sizeof thread_counts[0]; ti++)
    for (int overwrite = 0; overwrite < 2; overwrite++) {
      hm_device *dev = top_open_cpu(thread_counts[ti]);
      if (!dev) continue;
      enum { X, X2, W, B, Y, A, PY, AM, DY, DW, DB, DX, NBUF };
      const float *host[NBUF] = {x, x2, w, bias, NULL, NULL, NULL, NULL, dy, NULL, NULL, NULL};
      size_t bytes[NBUF] = {nx * 4, nx * 4, nw * 4, g.c_out * 4, ny * 4, ny * 4,
                            np * 4, np * 4, ny * 4, nw * 4, g.c_out * 4, nx * 4};
      hm_abi_buffer *buf[NBUF] = {0};
      for (int i = 0; i < NBUF; i++) {
        HM_CHECK_OK(hm_device_buffer_alloc(dev, bytes[i], &buf[i]));
        if (host[i]) HM_CHECK_OK(hm_device_buffer_write(dev, buf[i], 0, host[i], bytes[i]));
      }
      hm_abi_op ops[6];
      uint32_t n_ops = 0;
      hm_abi_op conv = hm_op_init(HM_ABI_OP_CONV2D);
      conv.dims[0] = g.n;
      conv.dims[1] = HM_ABI_PACK2(g.c_in, g.c_out);
      conv.dims[2] = HM_ABI_PACK2(g.h, g.w);
      conv.dims[3] = g.groups;
      const float geometry[8] = {3, 3, 1, 1, 1, 1, 1, 1};
      memcpy(conv.params, geometry, sizeof geometry);
      hm_abi_op filter = conv;
      conv.in[0] = (hm_abi_operand){buf[X], 0};
      conv.in[1] = (hm_abi_operand){buf[W], 0};
      conv.in[2] = (hm_abi_operand){buf[B], 0};
      conv.out[0] = (hm_abi_operand){buf[Y], 0};
      ops[n_ops++] = conv;
      hm_abi_op act = hm_op_init(HM_ABI_OP_ACT_FORWARD);
      act.variant = HM_ABI_ACT_LEAKY_RELU;
      act.dims[0] = g.n;
      act.dims[1] = ny / g.n;
      act.params[0] = 0.1f;
      act.in[0] = (hm_abi_operand){buf[Y], 0};
      act.out[0] = (hm_abi_operand){buf[A], 0};
      ops[n_ops++] = act;
      hm_abi_op pool = hm_op_init(HM_ABI_OP_POOL2D);
      pool.variant = HM_ABI_POOL_MAX;
      pool.dims[0] = g.n;
      pool.dims[1] = g.c_out;
      pool.dims[2] = HM_ABI_PACK2(g.ho, g.wo);
      const float pool_geometry[6] = {2, 2, 2, 2, 0, 0};
      memcpy(pool.params, pool_geometry, sizeof pool_geometry);
      pool.in[0] = (hm_abi_operand){buf[A], 0};
      pool.out[0] = (hm_abi_operand){buf[PY], 0};
      pool.out[1] = (hm_abi_operand){buf[AM], 0};
      ops[n_ops++] = pool;
      if (overwrite) {
        hm_abi_op copy = hm_op_init(HM_ABI_OP_COPY);
        copy.dims[0] = nx;
        copy.in[0] = (hm_abi_operand){buf[X2], 0};
        copy.out[0] = (hm_abi_operand){buf[X], 0};
        ops[n_ops++] = copy;
      }
      filter.code = HM_ABI_OP_CONV2D_BWD_FILTER;
      filter.in[0] = (hm_abi_operand){buf[X], 0};
      filter.in[1] = (hm_abi_operand){buf[DY], 0};
      filter.out[0] = (hm_abi_operand){buf[DW], 0};
      filter.out[1] = (hm_abi_operand){buf[DB], 0};
      ops[n_ops++] = filter;
      hm_abi_op data = filter;
      data.code = HM_ABI_OP_CONV2D_BWD_DATA;
      data.in[0] = (hm_abi_operand){buf[DY], 0};
      data.in[1] = (hm_abi_operand){buf[W], 0};
      data.out[0] = (hm_abi_operand){buf[DX], 0};
      data.out[1] = (hm_abi_operand){0};
      ops[n_ops++] = data;
      hm_abi_program *p = NULL;
      HM_CHECK_OK(hm_device_program_create(dev, ops, n_ops, 0, &p));
      for (int run = 0; run < 2 && p; run++) { /* the second run starts from kept patches */
        HM_CHECK_OK(hm_device_program_run(dev, p, NULL, 0));
        HM_CHECK_OK(hm_device_buffer_read(dev, buf[Y], 0, got_y, ny * 4));
        HM_CHECK_OK(hm_device_buffer_read(dev, buf[A], 0, got_a, ny * 4));
        HM_CHECK_OK(hm_device_buffer_read(dev, buf[PY], 0, got_pool, np * 4));
        HM_CHECK_OK(hm_device_buffer_read(dev, buf[AM], 0, got_am, np * 4));
        HM_CHECK_OK(hm_device_buffer_read(dev, buf[DW], 0, got_dw, nw * 4));
        HM_CHECK_OK(hm_device_buffer_read(dev, buf[DB], 0, got_db, g.c_out * 4));
        HM_CHECK_OK(hm_device_buffer_read(dev, buf[DX], 0, got_dx, nx * 4));
        hm_ref_conv2d_bwd_data(&g, 0, dy, w, ref_dx);
        HM_CHECK_MSG(top_nmse(ref_dx, got_dx, nx) <= F32_TOL, "threads %u: dX", thread_counts[ti]);
        hm_ref_conv2d(&g, x, w, bias, ref_y);
        for (size_t i = 0; i < ny; i++) ref_a[i] = ref_y[i] > 0 ? ref_y[i] : 0.1f * ref_y[i];
        hm_ref_pool2d(HM_ABI_POOL_MAX, &pw, ref_a, ref_pool, ref_am);
        hm_ref_conv2d_bwd_filter(&g, 0, overwrite ? x2 : x, dy, ref_dw, ref_db);
        HM_CHECK_MSG(top_nmse(ref_y, got_y, ny) <= F32_TOL, "threads %u overwrite %d: y", thread_counts[ti], overwrite);
        HM_CHECK_MSG(top_nmse(ref_a, got_a, ny) <= F32_TOL, "threads %u overwrite %d: leaky relu", thread_counts[ti],
                     overwrite);
        HM_CHECK_MSG(top_nmse(ref_pool, got_pool, np) <= F32_TOL && memcmp(ref_am, got_am, np * 4) == 0,
                     "threads %u: max pooling", thread_counts[ti]);
        double e = top_nmse(ref_dw, got_dw, nw);
        HM_CHECK_MSG(e <= F32_TOL, "threads %u overwrite %d run %d: dW nmse %.3g", thread_counts[ti], overwrite, run,
                     e);
        HM_CHECK_MSG(top_nmse(ref_db, got_db, g.c_out) <= F32_TOL, "threads %u: db", thread_counts[ti]);
        if (overwrite) HM_CHECK_OK(hm_device_buffer_write(dev, buf[X], 0, x, nx * 4)); /* the copy runs again */
      }
      hm_device_program_free(dev, p);
      for (int i = 0; i < NBUF; i++) hm_device_buffer_free(dev, buf[i]);
      hm_device_close(dev);
    }
  free(x), free(x2), free(w), free(bias), free(dy);
  free(ref_y), free(ref_dw), free(ref_db), free(got_y), free(got_dw), free(got_db), free(ref_a), free(got_a), free(ref_dx), free(got_dx);
  free(ref_pool), free(got_pool), free(ref_am), free(got_am);
}

static void conv_programs_fuse_activation_and_reuse_patches(void) {
  /* groups 2, padding 1: planes of 72 go through the block's rows, planes of
   * 320 are multiplied in place (per_image in cpu_kernels_window.c) */
  conv_program_matches_reference((hm_abi_window){5, 4, 6, 9, 8, 3, 3, 1, 1, 1, 1, 1, 1, 2, 9, 8});
  conv_program_matches_reference((hm_abi_window){3, 4, 6, 20, 16, 3, 3, 1, 1, 1, 1, 1, 1, 2, 20, 16});
  /* more than 64K floats of patches per image: the data gradient takes one
   * image per block (block_images), with planes of 576 and of 144 */
  conv_program_matches_reference((hm_abi_window){3, 16, 8, 24, 24, 3, 3, 1, 1, 1, 1, 1, 1, 1, 24, 24});
  conv_program_matches_reference((hm_abi_window){3, 64, 8, 12, 12, 3, 3, 1, 1, 1, 1, 1, 1, 1, 12, 12});
}

/* A pooling's gradient followed by an activation's (the example CNN's
 * backward pass) runs as one op on the CPU, the activation applied to each
 * plane after its scatter; both must equal the reference's two ops, for max
 * and average pooling and with the activation gradient added (beta 1). */
static void pool_gradient_fuses_the_activation_gradient(void) {
  hm_abi_window g = {3, 5, 5, 12, 10, 2, 2, 2, 2, 0, 0, 1, 1, 1, 6, 5};
  size_t nx = (size_t)g.n * g.c_in * g.h * g.w, ny = (size_t)g.n * g.c_in * g.ho * g.wo;
  float *z = top_random(nx, -1, 1, 31), *dy = top_random(ny, -1, 1, 32), *dz0 = top_random(nx, -1, 1, 33);
  float *a = malloc(nx * 4), *pooled = malloc(ny * 4), *ref_dx = malloc(nx * 4), *ref_dz = malloc(nx * 4);
  float *got_dz = malloc(nx * 4);
  int32_t *argmax = malloc(ny * 4);
  hm_ref_act_forward(HM_ABI_ACT_LEAKY_RELU, 0.1f, g.n, nx / g.n, z, a);
  for (size_t ti = 0; ti < sizeof thread_counts / sizeof thread_counts[0]; ti++)
    for (int variant = HM_ABI_POOL_MAX; variant <= HM_ABI_POOL_AVG; variant++)
      for (int beta = 0; beta < 2; beta++) {
        hm_device *dev = top_open_cpu(thread_counts[ti]);
        if (!dev) continue;
        hm_ref_pool2d(variant, &g, a, pooled, argmax);
        enum { Z, A, DY, AM, DX, DZ, NBUF };
        const void *host[NBUF] = {z, a, dy, argmax, NULL, dz0};
        size_t bytes[NBUF] = {nx * 4, nx * 4, ny * 4, ny * 4, nx * 4, nx * 4};
        hm_abi_buffer *buf[NBUF] = {0};
        for (int i = 0; i < NBUF; i++) {
          HM_CHECK_OK(hm_device_buffer_alloc(dev, bytes[i], &buf[i]));
          if (host[i]) HM_CHECK_OK(hm_device_buffer_write(dev, buf[i], 0, host[i], bytes[i]));
        }
        hm_abi_op ops[2];
        ops[0] = hm_op_init(HM_ABI_OP_POOL2D_BWD);
        ops[0].variant = (uint32_t)variant;
        ops[0].dims[0] = g.n;
        ops[0].dims[1] = g.c_in;
        ops[0].dims[2] = HM_ABI_PACK2(g.h, g.w);
        const float geometry[6] = {2, 2, 2, 2, 0, 0};
        memcpy(ops[0].params, geometry, sizeof geometry);
        ops[0].in[0] = (hm_abi_operand){buf[DY], 0};
        if (variant == HM_ABI_POOL_MAX) ops[0].in[1] = (hm_abi_operand){buf[AM], 0};
        ops[0].out[0] = (hm_abi_operand){buf[DX], 0};
        ops[1] = hm_op_init(HM_ABI_OP_ACT_BACKWARD);
        ops[1].variant = HM_ABI_ACT_LEAKY_RELU;
        ops[1].dims[0] = g.n;
        ops[1].dims[1] = nx / g.n;
        ops[1].params[0] = 0.1f;
        ops[1].params[1] = (float)beta;
        ops[1].in[0] = (hm_abi_operand){buf[Z], 0};
        ops[1].in[1] = (hm_abi_operand){buf[A], 0};
        ops[1].in[2] = (hm_abi_operand){buf[DX], 0};
        ops[1].out[0] = (hm_abi_operand){buf[DZ], 0};
        hm_abi_program *p = NULL;
        HM_CHECK_OK(hm_device_program_create(dev, ops, 2, 0, &p));
        if (p) HM_CHECK_OK(hm_device_program_run(dev, p, NULL, 0));
        HM_CHECK_OK(hm_device_buffer_read(dev, buf[DZ], 0, got_dz, nx * 4));
        hm_ref_pool2d_bwd(variant, &g, 0, dy, argmax, ref_dx);
        memcpy(ref_dz, dz0, nx * 4);
        hm_ref_act_backward(HM_ABI_ACT_LEAKY_RELU, 0.1f, (float)beta, g.n, nx / g.n, z, a, ref_dx, ref_dz);
        double e = top_nmse(ref_dz, got_dz, nx);
        HM_CHECK_MSG(e <= F32_TOL, "threads %u variant %d beta %d: nmse %.3g", thread_counts[ti], variant, beta, e);
        hm_device_program_free(dev, p);
        for (int i = 0; i < NBUF; i++) hm_device_buffer_free(dev, buf[i]);
        hm_device_close(dev);
      }
  free(z), free(dy), free(dz0), free(a), free(pooled), free(ref_dx), free(ref_dz), free(got_dz), free(argmax);
}

static void program_validation_rejects_bad_ops(void) {
  hm_device *dev = top_open_cpu(1);
  if (!dev) return;
  hm_abi_buffer *b = NULL, *small = NULL;
  HM_CHECK_OK(hm_device_buffer_alloc(dev, 1024, &b));
  HM_CHECK_OK(hm_device_buffer_alloc(dev, 16, &small));
  hm_abi_program *p = NULL;
  /* Operand past the end of its buffer. */
  hm_abi_op op = hm_op_init(HM_ABI_OP_FILL);
  op.dims[0] = 5;
  op.out[0].buffer = small;
  HM_CHECK_EQ(hm_device_program_create(dev, &op, 1, 0, &p), HM_STATUS_OUT_OF_RANGE);
  HM_CHECK_STR_CONTAINS(hm_last_error(), "needs 20 bytes at offset 0 but the buffer has 16");
  op.dims[0] = 4;
  op.out[0].offset = 8;
  HM_CHECK_EQ(hm_device_program_create(dev, &op, 1, 0, &p), HM_STATUS_OUT_OF_RANGE);
  /* Size overflow. */
  op.dims[0] = UINT64_MAX / 2;
  op.out[0].offset = 0;
  HM_CHECK_EQ(hm_device_program_create(dev, &op, 1, 0, &p), HM_STATUS_OUT_OF_RANGE);
  /* Missing operand. */
  op = hm_op_init(HM_ABI_OP_GEMM);
  op.dims[0] = op.dims[1] = op.dims[2] = 2;
  op.out[0].buffer = b;
  HM_CHECK_EQ(hm_device_program_create(dev, &op, 1, 0, &p), HM_STATUS_INVALID_ARGUMENT);
  HM_CHECK_STR_CONTAINS(hm_last_error(), "operand in[0] is required");
  /* GEMM writing over its input. */
  op.in[0].buffer = b;
  op.in[1].buffer = b;
  op.in[1].offset = 64;
  op.out[0].offset = 8;
  HM_CHECK_EQ(hm_device_program_create(dev, &op, 1, 0, &p), HM_STATUS_INVALID_ARGUMENT);
  /* Undeclared precision and unknown op. */
  op.out[0].offset = 512;
  op.dtype_in = HM_ABI_DTYPE_Q3;
  HM_CHECK_EQ(hm_device_program_create(dev, &op, 1, 0, &p), HM_STATUS_UNIMPLEMENTED);
  op = hm_op_init(999);
  HM_CHECK_EQ(hm_device_program_create(dev, &op, 1, 0, &p), HM_STATUS_UNIMPLEMENTED);
  /* A dynamic slot beyond the program's scalars; wrong scalar count at run. */
  op = hm_op_init(HM_ABI_OP_SCALE);
  op.dims[0] = 4;
  op.out[0].buffer = b;
  op.dyn[0] = 2;
  HM_CHECK_EQ(hm_device_program_create(dev, &op, 1, 2, &p), HM_STATUS_OUT_OF_RANGE);
  op.dyn[0] = 1;
  HM_CHECK_OK(hm_device_program_create(dev, &op, 1, 2, &p));
  double s[2] = {0, 2};
  HM_CHECK_EQ(hm_device_program_run(dev, p, s, 1), HM_STATUS_INVALID_ARGUMENT);
  HM_CHECK_OK(hm_device_program_run(dev, p, s, 2));
  hm_device_program_free(dev, p);
  /* Bad variant, struct_size. */
  op = hm_op_init(HM_ABI_OP_ACT_FORWARD);
  op.variant = 77;
  op.dims[0] = op.dims[1] = 1;
  op.in[0].buffer = b;
  op.out[0].buffer = b;
  HM_CHECK_EQ(hm_device_program_create(dev, &op, 1, 0, &p), HM_STATUS_INVALID_ARGUMENT);
  op.variant = 0;
  op.struct_size = 100;
  HM_CHECK_EQ(hm_device_program_create(dev, &op, 1, 0, &p), HM_STATUS_INVALID_ARGUMENT);
  /* Buffers: zero size, absurd size, out-of-range reads and writes. */
  hm_abi_buffer *x = NULL;
  HM_CHECK_EQ(hm_device_buffer_alloc(dev, 0, &x), HM_STATUS_INVALID_ARGUMENT);
  HM_CHECK_EQ(hm_device_buffer_alloc(dev, UINT64_MAX / 2, &x), HM_STATUS_RESOURCE_EXHAUSTED);
  HM_CHECK(x == NULL);
  char tmp[32];
  HM_CHECK_EQ(hm_device_buffer_read(dev, small, 8, tmp, 16), HM_STATUS_OUT_OF_RANGE);
  HM_CHECK_EQ(hm_device_buffer_write(dev, small, UINT64_MAX, tmp, 1), HM_STATUS_OUT_OF_RANGE);
  HM_CHECK_EQ(hm_device_buffer_read(dev, NULL, 0, tmp, 1), HM_STATUS_INVALID_ARGUMENT);
  hm_device_buffer_free(dev, b);
  hm_device_buffer_free(dev, small);
  hm_device_close(dev);
}

static const hm_test_case cases[] = {
    HM_TEST_CASE(gemm_matches_reference),
    HM_TEST_CASE(gemm_beta_zero_does_not_read_c),
    HM_TEST_CASE(activations_forward_match_reference),
    HM_TEST_CASE(activations_backward_match_reference),
    HM_TEST_CASE(activation_gradients_match_finite_differences),
    HM_TEST_CASE(losses_match_reference_and_finite_differences),
    HM_TEST_CASE(cross_entropy_ignores_invalid_labels),
    HM_TEST_CASE(reductions_and_elementwise_match_reference),
    HM_TEST_CASE(clip_propagates_nan_and_saturates),
    HM_TEST_CASE(gather_fill_copy_match_reference),
    HM_TEST_CASE(optimizers_match_single_step_reference_values),
    HM_TEST_CASE(optimizers_multi_step_match_reference),
    HM_TEST_CASE(programs_are_deterministic_for_fixed_threads),
    HM_TEST_CASE(conv_programs_fuse_activation_and_reuse_patches),
    HM_TEST_CASE(pool_gradient_fuses_the_activation_gradient),
    HM_TEST_CASE(program_validation_rejects_bad_ops),
};
HM_TEST_MAIN(cases)
