/*
 * Precision policies (DESIGN.md §5): parsing and validation; the per-layer
 * plan against plugins that declare different capabilities (the caps_proxy
 * test plugins, which refuse anything they do not declare); the lowering of
 * packed matmuls checked against the scalar reference (forward values and
 * the straight-through SGD step); packed inference and its weight bytes.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harmonics/harmonics.h"
#include "hm_reference.h"
#include "hm_test.h"

static hm_graph *parse(const char *text) {
  hm_graph *g = NULL;
  if (hm_graph_parse(text, strlen(text), "t.hmx", &g) != HM_OK) fprintf(stderr, "  parse: %s\n", hm_last_error());
  return g;
}

static hm_device *open_backend(const char *name) {
  hm_device *d = NULL;
  hm_device_options o = hm_device_options_default();
  o.threads = 2;
  /* A device that does not open fails the case: the checks below run only
   * on devices that exist, so a missing plugin must not pass silently. */
  hm_status st = hm_device_open(name, &o, &d);
  HM_CHECK_MSG(st == HM_OK, "open %s: %s", name, hm_last_error());
  return d;
}

/* The separable 2-class problem of test_training, with held-out data. */
typedef struct problem {
  hm_graph *g;
  hm_producer *px, *pt, *ex, *et;
} problem;

static problem separable(void) {
  problem p = {parse("producer x {2}; producer t {2}; consumer y; layer h {8}; layer o;"
                     " cycle { x -(tanh)-> h -> o; o <-(cross_entropy)- t; o -(softmax)-> y; }"),
               NULL, NULL, NULL, NULL};
  static float x[400 * 2];
  static int32_t lab[400];
  unsigned long long seed = 1;
  for (int i = 0; i < 400; i++) {
    x[2 * i] = hm_test_uniform(&seed, -1, 1);
    x[2 * i + 1] = hm_test_uniform(&seed, -1, 1);
    lab[i] = x[2 * i] + x[2 * i + 1] > 0;
  }
  HM_CHECK_OK(hm_producer_from_floats(x, 300, 2, &p.px));
  HM_CHECK_OK(hm_producer_from_labels(lab, 300, 2, &p.pt));
  HM_CHECK_OK(hm_producer_from_floats(x + 600, 100, 2, &p.ex));
  HM_CHECK_OK(hm_producer_from_labels(lab + 300, 100, 2, &p.et));
  HM_CHECK_OK(hm_graph_bind_producer(p.g, "x", p.px));
  HM_CHECK_OK(hm_graph_bind_producer(p.g, "t", p.pt));
  HM_CHECK_OK(hm_graph_bind_eval(p.g, "x", p.ex));
  HM_CHECK_OK(hm_graph_bind_eval(p.g, "t", p.et));
  return p;
}

static void problem_free(problem *p) {
  hm_graph_free(p->g);
  hm_producer_free(p->px);
  hm_producer_free(p->pt);
  hm_producer_free(p->ex);
  hm_producer_free(p->et);
}

/* Trains the separable problem under |pol| on |dev|; checks the per-layer
 * precision and kernel, and returns the state. */
static hm_cycle_state *train(hm_device *dev, const hm_policy *pol, const char *p0, const char *k0, const char *p1,
                             const char *k1, problem *out_problem) {
  problem p = separable();
  hm_fit_options o = hm_fit_options_default();
  o.optimizer = HM_OPTIMIZER_ADAM;
  o.learning_rate = 0.05f;
  o.batch_size = 32;
  o.device = dev;
  hm_cycle_state *st = NULL;
  hm_status s = hm_graph_fit(p.g, 20, pol, &o, &st);
  HM_CHECK_MSG(s == HM_OK, "fit: %s", hm_last_error());
  if (s == HM_OK) {
    HM_CHECK_EQ(hm_cycle_state_layer_count(st), 2);
    const char *layer, *prec, *kernel;
    HM_CHECK_OK(hm_cycle_state_layer_precision(st, 0, &layer, &prec, &kernel));
    HM_CHECK_MSG(strcmp(prec, p0) == 0 && strcmp(kernel, k0) == 0, "layer 0: %s/%s, expected %s/%s", prec, kernel, p0, k0);
    HM_CHECK_OK(hm_cycle_state_layer_precision(st, 1, &layer, &prec, &kernel));
    HM_CHECK_MSG(strcmp(prec, p1) == 0 && strcmp(kernel, k1) == 0, "layer 1: %s/%s, expected %s/%s", prec, kernel, p1, k1);
    HM_CHECK_MSG(hm_cycle_state_eval_accuracy(st) >= 0.9f, "accuracy %.3f", hm_cycle_state_eval_accuracy(st));
  }
  if (out_problem) *out_problem = p;
  else problem_free(&p);
  return st;
}

static void parsing_and_validation(void) {
  hm_policy p;
  char text[64];
  HM_CHECK_OK(hm_policy_parse("connections:8,4,3", &p));
  HM_CHECK_EQ(p.kind, HM_POLICY_CONNECTION_BITS);
  HM_CHECK_EQ(p.n_connection_bits, 3);
  HM_CHECK_EQ(p.connection_bits[2], 3);
  hm_policy_format(&p, text, sizeof text);
  HM_CHECK(strcmp(text, "connections:8,4,3") == 0);
  /* DESIGN.md's spelling is the same policy. */
  HM_CHECK_OK(hm_policy_parse("layers:8,4", &p));
  HM_CHECK_EQ(p.kind, HM_POLICY_CONNECTION_BITS);
  HM_CHECK_EQ(p.n_connection_bits, 2);
  HM_CHECK_EQ(hm_policy_parse("connections:", &p), HM_STATUS_PARSE_ERROR);
  HM_CHECK_EQ(hm_policy_parse("connections:8,,3", &p), HM_STATUS_PARSE_ERROR);
  HM_CHECK_OK(hm_policy_parse("bits:3", &p));
  HM_CHECK_EQ(p.bits, 3);
  HM_CHECK_EQ(hm_policy_parse("bits:x", &p), HM_STATUS_PARSE_ERROR);
  HM_CHECK_EQ(hm_policy_parse("fast", &p), HM_STATUS_PARSE_ERROR);
  /* Widths without kernels are refused before anything runs. */
  problem pr = separable();
  hm_fit_options o = hm_fit_options_default();
  hm_cycle_state *st = NULL;
  hm_policy five = hm_make_max_bits_policy(5);
  HM_CHECK_EQ(hm_graph_fit(pr.g, 1, &five, &o, &st), HM_STATUS_INVALID_ARGUMENT);
  HM_CHECK_STR_CONTAINS(hm_last_error(), "bits:5");
  int bad[2] = {8, 16};
  hm_policy layers = hm_make_layer_bits_policy(bad, 2);
  HM_CHECK_EQ(hm_graph_fit(pr.g, 1, &layers, &o, &st), HM_STATUS_INVALID_ARGUMENT);
  HM_CHECK_STR_CONTAINS(hm_last_error(), "entry 2 is 16 bits");
  HM_CHECK(st == NULL);
  /* One width per connection with weights (x->h, h->o): a list of another
   * length is refused with the connections it should cover, for fit and
   * for inference, instead of repeating the last entry or ignoring extras. */
  int one[1] = {3}, three[3] = {8, 4, 3};
  hm_policy short_list = hm_make_connection_bits_policy(one, 1), long_list = hm_make_connection_bits_policy(three, 3);
  HM_CHECK_EQ(hm_graph_fit(pr.g, 1, &short_list, &o, &st), HM_STATUS_INVALID_ARGUMENT);
  HM_CHECK_STR_CONTAINS(hm_last_error(),
                        "policy connections:3 gives 1 bit width but graph 'graph' has 2 connections with weights (x->h, "
                        "h->o); give one width per connection, in this order");
  HM_CHECK(st == NULL);
  HM_CHECK_EQ(hm_graph_fit(pr.g, 1, &long_list, &o, &st), HM_STATUS_INVALID_ARGUMENT);
  HM_CHECK_STR_CONTAINS(hm_last_error(), "policy connections:8,4,3 gives 3 bit widths but graph 'graph' has 2");
  hm_eval_result r;
  HM_CHECK_EQ(hm_graph_inference(pr.g, &long_list, &o, 1, &r), HM_STATUS_INVALID_ARGUMENT);
  HM_CHECK_STR_CONTAINS(hm_last_error(), "gives 3 bit widths");
  /* More entries than a policy holds are refused, not dropped. */
  int many[HM_POLICY_MAX_CONNECTIONS + 1];
  for (size_t i = 0; i < HM_POLICY_MAX_CONNECTIONS + 1; i++) many[i] = 8;
  hm_policy too_many = hm_make_connection_bits_policy(many, HM_POLICY_MAX_CONNECTIONS + 1);
  HM_CHECK_EQ(hm_graph_fit(pr.g, 1, &too_many, &o, &st), HM_STATUS_INVALID_ARGUMENT);
  HM_CHECK_STR_CONTAINS(hm_last_error(), "65 bit widths; give 1 to 64");
  problem_free(&pr);
}

/* The cost of a packed weight, as docs/precision.md states it: 8.25, 4.25 or
 * 3.25 bits times the padding factor 64 * ceil(k / 64) / k of the k inputs. */
static void bits_per_weight_follow_the_block_rule(void) {
  HM_CHECK_EQ(hm_policy_matrix_bytes(3, 1, 64), 26);
  HM_CHECK_EQ(hm_policy_matrix_bytes(4, 1, 64), 34);
  HM_CHECK_EQ(hm_policy_matrix_bytes(8, 1, 64), 66);
  HM_CHECK_EQ(hm_policy_matrix_bytes(32, 2, 3), 24);
  HM_CHECK_EQ(hm_policy_matrix_bytes(5, 1, 64), 0);
  HM_CHECK_EQ(hm_policy_matrix_bytes(16, 1, 64), 0);
  /* 65 inputs take two blocks: 6.4 bits per weight, not "at most 3.5". */
  HM_CHECK_EQ(hm_policy_matrix_bytes(3, 1, 65), 52);
  /* The Fashion-MNIST example: 784 inputs padded to 832 (13 blocks). */
  HM_CHECK_EQ(hm_policy_matrix_bytes(3, 128, 784), 128 * 13 * 26);
  HM_CHECK_EQ(hm_policy_matrix_bytes(3, 10, 128), 10 * 2 * 26);
  /* The documented rule: int3 stays at or under 3.5 bits per weight exactly
   * when k >= 208 * ceil(k / 64) / 3.5, which holds for every k >= 773 and
   * for a multiple of 64; k = 772 (13 blocks for 772 values) costs 3.503. */
  for (size_t k = 1; k <= 4096; k++) {
    size_t blocks = (k + 63) / 64;
    double bits = 8.0 * (double)hm_policy_matrix_bytes(3, 1, k) / (double)k;
    HM_CHECK_NEAR(bits, 3.25 * 64.0 * (double)blocks / (double)k, 1e-12);
    HM_CHECK_NEAR(8.0 * (double)hm_policy_matrix_bytes(4, 1, k) / (double)k, 4.25 * 64.0 * (double)blocks / (double)k,
                  1e-12);
    HM_CHECK_NEAR(8.0 * (double)hm_policy_matrix_bytes(8, 1, k) / (double)k, 8.25 * 64.0 * (double)blocks / (double)k,
                  1e-12);
    if (k >= 773 || k % 64 == 0) HM_CHECK_MSG(bits <= 3.5, "k = %zu costs %.4f bits", k, bits);
  }
  HM_CHECK(8.0 * (double)hm_policy_matrix_bytes(3, 1, 772) / 772.0 > 3.5);
  HM_CHECK(8.0 * (double)hm_policy_matrix_bytes(3, 1, 832) / 832.0 == 3.25);
}

static void cpu_runs_every_width(void) {
  hm_device *dev = open_backend("cpu");
  if (!dev) return;
  hm_policy hw = hm_make_hardware_policy(), au = hm_make_auto_policy();
  hm_policy b8 = hm_make_max_bits_policy(8), b4 = hm_make_max_bits_policy(4), b3 = hm_make_max_bits_policy(3);
  int mix[2] = {8, 3};
  hm_policy lb = hm_make_layer_bits_policy(mix, 2); /* DESIGN.md's name */
  hm_cycle_state_free(train(dev, &hw, "f32", "gemm", "f32", "gemm", NULL));
  hm_cycle_state_free(train(dev, &b8, "int8", "int8_matmul", "int8", "int8_matmul", NULL));
  hm_cycle_state_free(train(dev, &b4, "int4", "int4_matmul", "int4", "int4_matmul", NULL));
  hm_cycle_state *st = train(dev, &b3, "int3", "int3_matmul", "int3", "int3_matmul", NULL);
  HM_CHECK(strcmp(hm_cycle_state_layer_note(st, 0), "") == 0);
  hm_cycle_state_free(st);
  hm_cycle_state_free(train(dev, &lb, "int8", "int8_matmul", "int3", "int3_matmul", NULL));
  /* The CPU declares bf16 GEMM slower than f32, so auto stays at f32 and says why. */
  st = train(dev, &au, "f32", "gemm", "f32", "gemm", NULL);
  HM_CHECK_STR_CONTAINS(hm_cycle_state_layer_note(st, 0), "declares no 16-bit GEMM faster than f32");
  hm_cycle_state_free(st);
  hm_device_close(dev);
}

/* Devices that lack kernels: the policy picks the nearest wider width they
 * declare and says so; the proxies refuse anything undeclared, so training
 * succeeding proves nothing else ran. */
static void devices_without_kernels(void) {
  hm_policy b3 = hm_make_max_bits_policy(3), au = hm_make_auto_policy();
  hm_device *d = open_backend("cp_no_q3");
  if (d) {
    hm_cycle_state *st = train(d, &b3, "int4", "int4_matmul", "int4", "int4_matmul", NULL);
    HM_CHECK_STR_CONTAINS(hm_cycle_state_layer_note(st, 0), "cp_no_q3 declares no QUANTIZE for 3-bit; using int4");
    hm_cycle_state_free(st);
    hm_device_close(d);
  }
  d = open_backend("cp_no_packed");
  if (d) {
    hm_cycle_state *st = train(d, &b3, "f32", "gemm", "f32", "gemm", NULL);
    HM_CHECK_STR_CONTAINS(hm_cycle_state_layer_note(st, 1), "declares no QUANTIZE for 3-bit; using f32");
    hm_cycle_state_free(st);
    hm_device_close(d);
  }
  d = open_backend("cp_no_dequant_q3");
  if (d) {
    /* Training needs DEQUANTIZE for the backward pass: int4. Inference does
     * not: it runs int3. */
    problem p;
    hm_cycle_state *st = train(d, &b3, "int4", "int4_matmul", "int4", "int4_matmul", &p);
    HM_CHECK_STR_CONTAINS(hm_cycle_state_layer_note(st, 0), "declares no DEQUANTIZE for 3-bit");
    hm_fit_options o = hm_fit_options_default();
    o.device = d;
    hm_eval_result r;
    HM_CHECK_OK(hm_graph_inference(p.g, &b3, &o, 1, &r));
    HM_CHECK_STR_CONTAINS(r.precision, "x->h int3/int3_matmul; h->o int3/int3_matmul");
    hm_cycle_state_free(st);
    problem_free(&p);
    hm_device_close(d);
  }
  d = open_backend("cp_fast_bf16");
  if (d) {
    hm_cycle_state *st = train(d, &au, "bf16", "gemm_bf16", "bf16", "gemm_bf16", NULL);
    HM_CHECK_STR_CONTAINS(hm_cycle_state_layer_note(st, 0), "declares bf16 GEMM at 4 vs f32 1");
    hm_cycle_state_free(st);
    hm_device_close(d);
  }
}

/* A device without LAYER_NORM_BWD: training a layer-norm graph is refused at
 * planning, naming the op and the connection; evaluation (forward only) runs. */
static void planner_refuses_an_undeclared_op(void) {
  hm_device *d = open_backend("cp_no_layer_norm_bwd");
  if (!d) return;
  problem p = {parse("producer x {2}; producer t {2}; layer h {8}; layer n; layer o;\n"
                     "cycle { x -(tanh)-> h -[layer_norm]-> n -> o; o <-(cross_entropy)- t; }"),
               NULL, NULL, NULL, NULL};
  float x[8 * 2] = {0};
  int32_t lab[8] = {0, 1, 0, 1, 0, 1, 0, 1};
  for (int i = 0; i < 16; i++) x[i] = (float)(i % 5) - 2.0f;
  HM_CHECK_OK(hm_producer_from_floats(x, 8, 2, &p.px));
  HM_CHECK_OK(hm_producer_from_labels(lab, 8, 2, &p.pt));
  HM_CHECK_OK(hm_graph_bind_producer(p.g, "x", p.px));
  HM_CHECK_OK(hm_graph_bind_producer(p.g, "t", p.pt));
  hm_fit_options o = hm_fit_options_default();
  o.batch_size = 4;
  o.device = d;
  hm_policy hw = hm_make_hardware_policy();
  hm_cycle_state *st = NULL;
  HM_CHECK_EQ(hm_graph_fit(p.g, 1, &hw, &o, &st), HM_STATUS_UNIMPLEMENTED);
  HM_CHECK_STR_CONTAINS(hm_last_error(), "t.hmx:2:23: backend 'cp_no_layer_norm_bwd' does not declare "
                                         "layer_norm_backward (ABI 1.1), which the layer_norm connection h -> n needs");
  HM_CHECK(st == NULL);
  hm_eval_result r;
  HM_CHECK_OK(hm_graph_inference(p.g, &hw, &o, 0, &r));
  hm_cycle_state_free(st);
  problem_free(&p);
  hm_device_close(d);
}

/* The apply phase of a training step is one op per step over the parameter
 * arena (W 15, b 5, W 10, b 2 floats, each padded to 16: 64 floats), except
 * LAMB's step, which is per tensor (its trust ratio is per tensor) at the
 * tensors' arena offsets. The cp_record proxy writes the ops of every program
 * it is given; the training program is the one with a SUM_SQUARES. */
static void apply_phase_is_one_op_over_the_arena(void) {
  const hm_optimizer opts[2] = {HM_OPTIMIZER_ADAM, HM_OPTIMIZER_LAMB};
  for (int oi = 0; oi < 2; oi++) {
    char path[] = "/tmp/hm_record_XXXXXX";
    int fd = mkstemp(path);
    HM_CHECK(fd >= 0);
    if (fd < 0) return;
    close(fd);
    setenv("CP_RECORD_PATH", path, 1);
    hm_device *d = open_backend("cp_record");
    if (!d) return;
    problem p = {parse("producer x {3}; producer t {2}; layer h {5}; layer o;"
                       " cycle { x -(tanh)-> h -> o; o <-(mse)- t; }"),
                 NULL, NULL, NULL, NULL};
    float x[8 * 3], t[8 * 2];
    for (int i = 0; i < 24; i++) x[i] = (float)(i % 7) * 0.25f - 0.75f;
    for (int i = 0; i < 16; i++) t[i] = (float)(i % 3) - 1.0f;
    HM_CHECK_OK(hm_producer_from_floats(x, 8, 3, &p.px));
    HM_CHECK_OK(hm_producer_from_floats(t, 8, 2, &p.pt));
    HM_CHECK_OK(hm_graph_bind_producer(p.g, "x", p.px));
    HM_CHECK_OK(hm_graph_bind_producer(p.g, "t", p.pt));
    hm_fit_options o = hm_fit_options_default();
    o.optimizer = opts[oi];
    o.batch_size = 4;
    o.grad_clip = 0.5f;
    o.device = d;
    hm_cycle_state *st = NULL;
    HM_CHECK_OK(hm_graph_fit(p.g, 1, NULL, &o, &st));
    hm_cycle_state_free(st);
    problem_free(&p);
    hm_device_close(d);
    unsetenv("CP_RECORD_PATH");
    FILE *f = fopen(path, "r");
    HM_CHECK(f != NULL);
    if (!f) return;
    /* Per training program: the SUM_SQUARES, CLIP and optimizer ops. */
    unsigned code, n_ops, programs = 0;
    unsigned long long dim, off;
    char line[128];
    int in_program = 0, sq = 0, clip = 0, steps = 0;
    unsigned long long step_dims[8], step_offsets[8];
    while (fgets(line, sizeof line, f)) {
      if (sscanf(line, "program %u", &n_ops) == 1) {
        in_program = 1;
        continue;
      }
      if (!in_program || sscanf(line, "%u %llu %llu", &code, &dim, &off) != 3) continue;
      if (code == HM_ABI_OP_SUM_SQUARES) {
        programs += sq == 0;
        sq++;
        HM_CHECK_EQ(dim, 64);
      } else if (code == HM_ABI_OP_CLIP) {
        clip++;
        HM_CHECK_EQ(dim, 64);
      } else if (code == HM_ABI_OP_ADAM || code == HM_ABI_OP_LAMB) {
        HM_CHECK_EQ(code, oi == 0 ? (unsigned)HM_ABI_OP_ADAM : (unsigned)HM_ABI_OP_LAMB);
        if (steps < 8) step_dims[steps] = dim, step_offsets[steps] = off;
        steps++;
      }
    }
    fclose(f);
    remove(path);
    /* One training program (8 samples in batches of 4: no partial batch). */
    HM_CHECK_EQ(programs, 1);
    HM_CHECK_EQ(sq, 1);
    HM_CHECK_EQ(clip, 1);
    if (oi == 0) {
      HM_CHECK_EQ(steps, 1);
      HM_CHECK_EQ(step_dims[0], 64);
      HM_CHECK_EQ(step_offsets[0], 0);
      continue;
    }
    HM_CHECK_EQ(steps, 4);
    const unsigned long long counts[4] = {15, 5, 10, 2};
    for (int k = 0; k < 4 && steps == 4; k++) {
      HM_CHECK_EQ(step_dims[k], counts[k]);
      HM_CHECK_EQ(step_offsets[k], 64ull * (unsigned long long)k);
    }
  }
}

/* x (4 x 70) -> o {3}, identity, MSE: the forward values of a packed matmul
 * and one SGD step equal what the reference computes by hand (QUANT.md Q7
 * forward; straight-through backward: dW = dz^T . dequant(quant(x))). */
static void lowering_matches_the_reference(void) {
  enum { B = 4, K = 70, N = 3 };
  hm_device *dev = open_backend("cpu");
  if (!dev) return;
  const int dtypes[3] = {HM_ABI_DTYPE_Q8, HM_ABI_DTYPE_Q4, HM_ABI_DTYPE_Q3};
  for (int di = 0; di < 3; di++) {
    int dt = dtypes[di], bits = dt == HM_ABI_DTYPE_Q8 ? 8 : dt == HM_ABI_DTYPE_Q4 ? 4 : 3;
    hm_graph *g = parse("producer x {70}; producer t {3}; consumer y; layer o {3};"
                        " cycle { x -> o; o <-(mse)- t; o -> y; }");
    unsigned long long seed = 5 + (unsigned long long)di;
    float x[B * K], t[B * N], w[N * K], b[N];
    for (int i = 0; i < B * K; i++) x[i] = hm_test_uniform(&seed, -1, 1);
    for (int i = 0; i < B * N; i++) t[i] = hm_test_uniform(&seed, -1, 1);
    for (int i = 0; i < N * K; i++) w[i] = hm_test_uniform(&seed, -0.3f, 0.3f);
    for (int i = 0; i < N; i++) b[i] = hm_test_uniform(&seed, -0.1f, 0.1f);
    hm_weights *ws = NULL;
    uint64_t ws_shape[2] = {N, K}, bs_shape[1] = {N};
    HM_CHECK_OK(hm_weights_create(&ws));
    HM_CHECK_OK(hm_weights_set(ws, "x->o.weight", HM_ABI_DTYPE_F32, 2, ws_shape, w));
    HM_CHECK_OK(hm_weights_set(ws, "x->o.bias", HM_ABI_DTYPE_F32, 1, bs_shape, b));
    HM_CHECK_OK(hm_graph_set_weights(g, ws));
    hm_producer *px = NULL, *pt = NULL;
    HM_CHECK_OK(hm_producer_from_floats(x, B, K, &px));
    HM_CHECK_OK(hm_producer_from_floats(t, B, N, &pt));
    HM_CHECK_OK(hm_graph_bind_producer(g, "x", px));
    HM_CHECK_OK(hm_graph_bind_producer(g, "t", pt));
    hm_consumer *c = NULL;
    HM_CHECK_OK(hm_consumer_create_array(&c));
    HM_CHECK_OK(hm_graph_bind_consumer(g, "y", c));
    /* The reference: packed rows, integer matmul, bias. */
    size_t rb = hm_ref_q_row_bytes(dt, K);
    uint8_t qx[B * 256], qw[N * 256];
    float z[B * N], xd[B * K];
    for (int i = 0; i < B; i++) hm_ref_quantize_row(dt, K, x + i * K, qx + i * rb);
    for (int i = 0; i < N; i++) hm_ref_quantize_row(dt, K, w + i * K, qw + i * rb);
    hm_ref_gemm_q(dt, B, N, K, qx, qw, z);
    for (int i = 0; i < B * N; i++) z[i] += b[i % N];
    for (int i = 0; i < B; i++) hm_ref_dequantize_row(dt, K, qx + i * rb, xd + i * K);
    /* Forward: inference from packed weights. */
    hm_policy pol = hm_make_max_bits_policy(bits);
    hm_fit_options o = hm_fit_options_default();
    o.device = dev;
    o.eval_batch_size = B;
    hm_eval_result r;
    HM_CHECK_OK(hm_graph_inference(g, &pol, &o, 0, &r));
    const float *y;
    size_t rows, width;
    HM_CHECK_OK(hm_consumer_array_values(c, &y, &rows, &width));
    HM_CHECK(rows == B && width == N);
    if (rows == B && width == N)
      for (int i = 0; i < B * N; i++) HM_CHECK_MSG(y[i] == z[i], "bits %d y[%d] %.9g vs reference %.9g", bits, i, (double)y[i], (double)z[i]);
    HM_CHECK_EQ(r.weight_bytes, N * rb);
    HM_CHECK_EQ(r.bias_bytes, N * 4);
    HM_CHECK_EQ(r.weight_count, N * K);
    /* One SGD step, lr 0.5, batch B: dz = 2 (z - t) / (B N). */
    o.optimizer = HM_OPTIMIZER_SGD;
    o.learning_rate = 0.5f;
    o.batch_size = B;
    o.shuffle = 0;
    hm_cycle_state *st = NULL;
    HM_CHECK_OK(hm_graph_fit(g, 1, &pol, &o, &st));
    hm_tensor tw;
    HM_CHECK_OK(hm_weights_find(hm_graph_weights(g), "x->o.weight", &tw));
    const float *w1 = tw.data;
    double worst = 0;
    for (int n = 0; n < N; n++)
      for (int k = 0; k < K; k++) {
        double dw = 0;
        for (int i = 0; i < B; i++) dw += 2.0 * ((double)z[i * N + n] - t[i * N + n]) / (B * N) * xd[i * K + k];
        double expect = w[n * K + k] - 0.5 * dw, err = fabs(expect - w1[n * K + k]);
        worst = err > worst ? err : worst;
      }
    HM_CHECK_MSG(worst < 1e-6, "bits %d: SGD step differs from the straight-through reference by %g", bits, worst);
    hm_cycle_state_free(st);
    hm_weights_free(ws);
    hm_consumer_free(c);
    hm_producer_free(px);
    hm_producer_free(pt);
    hm_graph_free(g);
  }
  hm_device_close(dev);
}

/* x {2x5x6} -[conv 3 3x3 padding 1]-> o, MSE: a packed convolution's forward
 * values equal the reference's patches (IM2COL) quantized by rows times the
 * quantized weights, bit for bit, and one SGD step follows the
 * straight-through gradient dW = Σ dz · dequant(quant(patches)). */
static void packed_convolution_matches_the_reference(void) {
  enum { B = 3, C = 2, H = 5, CO = 3, KS = 3, K = C * KS * KS, MAXP = H * 6 };
  hm_device *dev = open_backend("cpu");
  if (!dev) return;
  const int dtypes[3] = {HM_ABI_DTYPE_Q8, HM_ABI_DTYPE_Q4, HM_ABI_DTYPE_Q3};
  for (int di = 0; di < 3; di++) {
    int dt = dtypes[di], bits = dt == HM_ABI_DTYPE_Q8 ? 8 : dt == HM_ABI_DTYPE_Q4 ? 4 : 3;
    /* 5x6 images pack to whole 4-byte words; 5x5 ones (25 rows of 66, 34 or
     * 26 bytes) do not, so the host packs them image by image. */
    const int W = di == 0 ? 6 : 5, P = H * W, NY = CO * P;
    char text[200];
    snprintf(text, sizeof text, "producer x {2x5x%d}; producer t {%d}; consumer y; layer o;"
             " cycle { x -[conv 3 3x3 padding 1]-> o; o <-(mse)- t; o -> y; }", W, NY);
    hm_graph *g = parse(text);
    unsigned long long seed = 11 + (unsigned long long)di;
    static float x[B * C * MAXP], t[B * CO * MAXP], w[CO * K], b[CO], cols[B * MAXP * K], xd[B * MAXP * K],
        z[B * CO * MAXP];
    static uint8_t qc[B * MAXP * 66], qw[CO * 66];
    for (int i = 0; i < B * C * H * W; i++) x[i] = hm_test_uniform(&seed, -1, 1);
    for (int i = 0; i < B * NY; i++) t[i] = hm_test_uniform(&seed, -1, 1);
    for (int i = 0; i < CO * K; i++) w[i] = hm_test_uniform(&seed, -0.3f, 0.3f);
    for (int i = 0; i < CO; i++) b[i] = hm_test_uniform(&seed, -0.1f, 0.1f);
    hm_weights *ws = NULL;
    uint64_t ws_shape[4] = {CO, C, KS, KS}, bs_shape[1] = {CO};
    HM_CHECK_OK(hm_weights_create(&ws));
    HM_CHECK_OK(hm_weights_set(ws, "x->o.weight", HM_ABI_DTYPE_F32, 4, ws_shape, w));
    HM_CHECK_OK(hm_weights_set(ws, "x->o.bias", HM_ABI_DTYPE_F32, 1, bs_shape, b));
    HM_CHECK_OK(hm_graph_set_weights(g, ws));
    hm_producer *px = NULL, *pt = NULL;
    HM_CHECK_OK(hm_producer_from_floats(x, B, C * H * W, &px));
    HM_CHECK_OK(hm_producer_from_floats(t, B, NY, &pt));
    HM_CHECK_OK(hm_graph_bind_producer(g, "x", px));
    HM_CHECK_OK(hm_graph_bind_producer(g, "t", pt));
    hm_consumer *c = NULL;
    HM_CHECK_OK(hm_consumer_create_array(&c));
    HM_CHECK_OK(hm_graph_bind_consumer(g, "y", c));
    /* The reference: patches, packed rows, one integer matmul per image, bias. */
    hm_abi_window geo = {B, C, CO, H, W, KS, KS, 1, 1, 1, 1, 1, 1, 1, H, W};
    hm_ref_im2col(&geo, x, cols);
    size_t rb = hm_ref_q_row_bytes(dt, K);
    for (int i = 0; i < B * P; i++) hm_ref_quantize_row(dt, K, cols + i * K, qc + i * rb);
    for (int i = 0; i < CO; i++) hm_ref_quantize_row(dt, K, w + i * K, qw + i * rb);
    for (int n = 0; n < B; n++) hm_ref_gemm_q(dt, CO, P, K, qw, qc + (size_t)n * P * rb, z + n * NY);
    for (int i = 0; i < B * NY; i++) z[i] += b[(i / P) % CO];
    for (int i = 0; i < B * P; i++) hm_ref_dequantize_row(dt, K, qc + i * rb, xd + i * K);
    hm_policy pol = hm_make_max_bits_policy(bits);
    hm_fit_options o = hm_fit_options_default();
    o.device = dev;
    o.eval_batch_size = B;
    hm_eval_result r;
    HM_CHECK_OK(hm_graph_inference(g, &pol, &o, 0, &r));
    const float *y;
    size_t rows, width;
    HM_CHECK_OK(hm_consumer_array_values(c, &y, &rows, &width));
    HM_CHECK(rows == B && width == (size_t)NY);
    int wrong = 0;
    if (rows == B && width == (size_t)NY)
      for (int i = 0; i < B * NY && wrong < 3; i++)
        if (y[i] != z[i]) {
          wrong++;
          HM_CHECK_MSG(0, "bits %d y[%d] %.9g vs reference %.9g", bits, i, (double)y[i], (double)z[i]);
        }
    HM_CHECK_EQ(r.weight_bytes, CO * rb);
    HM_CHECK_EQ(r.weight_count, CO * K);
    HM_CHECK_EQ(r.connections[0].inputs, K);
    HM_CHECK_EQ(r.connections[0].outputs, CO);
    /* One SGD step, lr 0.5, batch B: dz = 2 (z - t) / (B * NY). */
    o.optimizer = HM_OPTIMIZER_SGD;
    o.learning_rate = 0.5f;
    o.batch_size = B;
    o.shuffle = 0;
    hm_cycle_state *st = NULL;
    HM_CHECK_OK(hm_graph_fit(g, 1, &pol, &o, &st));
    const char *layer, *prec, *kernel;
    HM_CHECK_OK(hm_cycle_state_layer_precision(st, 0, &layer, &prec, &kernel));
    HM_CHECK_STR_CONTAINS(kernel, bits == 8 ? "int8_matmul" : bits == 4 ? "int4_matmul" : "int3_matmul");
    hm_tensor tw, tb;
    HM_CHECK_OK(hm_weights_find(hm_graph_weights(g), "x->o.weight", &tw));
    HM_CHECK_OK(hm_weights_find(hm_graph_weights(g), "x->o.bias", &tb));
    const float *w1 = tw.data, *b1 = tb.data;
    double worst = 0;
    for (int co = 0; co < CO; co++) {
      double db = 0;
      for (int k = 0; k < K; k++) {
        double dw = 0;
        for (int n = 0; n < B; n++)
          for (int p = 0; p < P; p++) {
            double dz = 2.0 * ((double)z[n * NY + co * P + p] - t[n * NY + co * P + p]) / (B * NY);
            dw += dz * xd[((size_t)n * P + p) * K + k];
            if (k == 0) db += dz;
          }
        double err = fabs(w[co * K + k] - 0.5 * dw - w1[co * K + k]);
        worst = err > worst ? err : worst;
      }
      double err = fabs(b[co] - 0.5 * db - b1[co]);
      worst = err > worst ? err : worst;
    }
    HM_CHECK_MSG(worst < 1e-6, "bits %d: SGD step differs from the straight-through reference by %g", bits, worst);
    hm_cycle_state_free(st);
    hm_weights_free(ws);
    hm_consumer_free(c);
    hm_producer_free(px);
    hm_producer_free(pt);
    hm_graph_free(g);
  }
  /* Packed widths serve one-group convolutions only: a grouped one is refused. */
  hm_graph *g = parse("producer x {2x5x6}; producer t {60}; layer o;"
                      " cycle { x -[conv 2 3x3 padding 1 groups 2]-> o; o <-(mse)- t; }");
  hm_producer *px = NULL, *pt = NULL;
  static float x0[2 * 60], t0[2 * 60];
  HM_CHECK_OK(hm_producer_from_floats(x0, 2, 60, &px));
  HM_CHECK_OK(hm_producer_from_floats(t0, 2, 60, &pt));
  HM_CHECK_OK(hm_graph_bind_producer(g, "x", px));
  HM_CHECK_OK(hm_graph_bind_producer(g, "t", pt));
  hm_policy b4 = hm_make_max_bits_policy(4);
  hm_fit_options o = hm_fit_options_default();
  o.device = dev;
  hm_cycle_state *st = NULL;
  HM_CHECK_EQ(hm_graph_fit(g, 1, &b4, &o, &st), HM_STATUS_UNIMPLEMENTED);
  HM_CHECK_STR_CONTAINS(hm_last_error(), "connection x -> o is a grouped convolution (groups 2): packed widths serve "
                                         "convolutions with one group only");
  hm_cycle_state_free(st);
  hm_producer_free(px);
  hm_producer_free(pt);
  hm_graph_free(g);
  hm_device_close(dev);
}

/* Packed inference of the separable problem: bytes as QUANT.md says. */
static void packed_inference_bytes(void) {
  hm_device *dev = open_backend("cpu");
  if (!dev) return;
  hm_policy b3 = hm_make_max_bits_policy(3);
  problem p;
  hm_cycle_state *st = train(dev, &b3, "int3", "int3_matmul", "int3", "int3_matmul", &p);
  /* The training state reports the packed matrices its matmuls read. */
  size_t bytes = 0, count = 0;
  HM_CHECK_OK(hm_cycle_state_layer_weight_bytes(st, 0, &bytes, &count));
  HM_CHECK_EQ(bytes, 8 * 26);
  HM_CHECK_EQ(count, 16);
  HM_CHECK_OK(hm_cycle_state_layer_weight_bytes(st, 1, &bytes, &count));
  HM_CHECK_EQ(bytes, 2 * 26);
  HM_CHECK_EQ(count, 16);
  HM_CHECK_EQ(hm_cycle_state_layer_weight_bytes(st, 2, &bytes, &count), HM_STATUS_OUT_OF_RANGE);
  hm_cycle_state_free(st);
  hm_fit_options o = hm_fit_options_default();
  o.device = dev;
  hm_eval_result r;
  HM_CHECK_OK(hm_graph_inference(p.g, &b3, &o, 1, &r));
  /* x->h: 8 rows of one 26-byte block; h->o: 2 rows. */
  HM_CHECK_EQ(r.weight_bytes, (8 + 2) * 26);
  HM_CHECK_EQ(r.weight_count, 2 * 8 + 8 * 2);
  HM_CHECK_EQ(r.bias_bytes, (8 + 2) * 4);
  HM_CHECK(r.accuracy >= 0.9f);
  /* Per connection with weights: x->h (connection 0) and h->o (1); o->y
   * feeds a consumer and has none. */
  HM_CHECK_EQ(r.n_connections, 2);
  HM_CHECK_EQ(r.connections[0].connection, 0);
  HM_CHECK(strcmp(r.connections[0].precision, "int3") == 0);
  HM_CHECK_EQ(r.connections[0].inputs, 2);
  HM_CHECK_EQ(r.connections[0].outputs, 8);
  HM_CHECK_EQ(r.connections[0].weight_bytes, 8 * 26);
  HM_CHECK_EQ(r.connections[1].connection, 1);
  HM_CHECK_EQ(r.connections[1].inputs, 8);
  HM_CHECK_EQ(r.connections[1].outputs, 2);
  HM_CHECK_EQ(r.connections[1].weight_bytes, 2 * 26);
  /* Mixed widths per connection: int8 then f32. */
  int mix[2] = {8, 32};
  hm_policy per = hm_make_connection_bits_policy(mix, 2);
  HM_CHECK_OK(hm_graph_inference(p.g, &per, &o, 1, &r));
  HM_CHECK(strcmp(r.connections[0].precision, "int8") == 0);
  HM_CHECK_EQ(r.connections[0].weight_bytes, 8 * 66);
  HM_CHECK(strcmp(r.connections[1].precision, "f32") == 0);
  HM_CHECK_EQ(r.connections[1].weight_bytes, 8 * 2 * 4);
  HM_CHECK_EQ(r.weight_bytes, 8 * 66 + 8 * 2 * 4);
  hm_policy hw = hm_make_hardware_policy();
  HM_CHECK_OK(hm_graph_inference(p.g, &hw, &o, 1, &r));
  HM_CHECK_EQ(r.weight_bytes, (2 * 8 + 8 * 2) * 4);
  HM_CHECK(strcmp(r.precision, "x->h f32/gemm; h->o f32/gemm") == 0);
  problem_free(&p);
  hm_device_close(dev);
}

static void setup(void) {
  static const char *paths[1] = {HM_BINARY_DIR "/tests/caps_plugins"};
  hm_registry_options o = hm_registry_options_default();
  o.plugin_paths = paths;
  o.n_plugin_paths = 1;
  o.use_environment = 0;
  if (hm_registry_init(&o) != HM_OK) fprintf(stderr, "registry: %s\n", hm_last_error());
}

int main(int argc, char **argv) {
  setup();
  static const hm_test_case cases[] = {
      HM_TEST_CASE(parsing_and_validation),
      HM_TEST_CASE(bits_per_weight_follow_the_block_rule),
      HM_TEST_CASE(cpu_runs_every_width),
      HM_TEST_CASE(devices_without_kernels),
      HM_TEST_CASE(planner_refuses_an_undeclared_op),
      HM_TEST_CASE(apply_phase_is_one_op_over_the_arena),
      HM_TEST_CASE(lowering_matches_the_reference),
      HM_TEST_CASE(packed_convolution_matches_the_reference),
      HM_TEST_CASE(packed_inference_bytes),
  };
  int rc = hm_test_main(argc, argv, cases, sizeof cases / sizeof cases[0]);
  hm_registry_shutdown();
  return rc;
}
