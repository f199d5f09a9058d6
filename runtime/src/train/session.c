/*
 * Sessions: device buffers for a graph, data upload, weights in and out,
 * one step, evaluation. Program construction lives in lower.c.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "train/session.h"

#include "weights/weights.h"

/* Every device buffer of the session comes from here, so its footprint is known. */
static hm_status alloc_buffer(hm_session *s, size_t bytes, hm_abi_buffer **out) {
  bytes = bytes ? bytes : 4;
  HM_RETURN_IF_ERROR(hm_device_buffer_alloc(s->dev, bytes, out));
  s->device_bytes += bytes;
  if (s->device_bytes > s->peak_device_bytes) s->peak_device_bytes = s->device_bytes;
  return HM_OK;
}

static hm_status alloc_zeroed(hm_session *s, size_t bytes, hm_abi_buffer **out) {
  HM_RETURN_IF_ERROR(alloc_buffer(s, bytes, out));
  void *zeros = hm__calloc(1, bytes ? bytes : 4);
  if (!zeros) return hm__fail(HM_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  hm_status st = hm_device_buffer_write(s->dev, *out, 0, zeros, bytes ? bytes : 4);
  hm__free(zeros);
  return st;
}

static hm_status upload_data(hm_session *s, size_t node, int which) {
  hm_node_buffers *nb = &s->bufs.nodes[node];
  hm_bound_data *d = &s->host[which][node];
  hm_producer *p = which == DATA_EVAL ? s->g->nodes[node].eval : s->g->nodes[node].train;
  HM_RETURN_IF_ERROR(hm__producer_read_all(p, s->g->nodes[node].name, d));
  nb->info[which] = d->info;
  size_t bytes = d->info.count * d->info.width * hm__dtype_size(d->info.dtype);
  HM_RETURN_IF_ERROR(alloc_buffer(s, bytes, &nb->data[which]));
  return hm_device_buffer_write(s->dev, nb->data[which], 0, d->values, bytes);
}

/* All producers of one data set must hold the same number of samples. */
static hm_status check_counts(hm_session *s, int which, size_t *out) {
  size_t count = 0;
  const char *first = NULL;
  for (size_t i = 0; i < s->g->n_nodes; i++) {
    const hm_bound_data *d = &s->host[which][i];
    if (!d->info.count) continue;
    if (first && d->info.count != count)
      return hm__fail(HM_STATUS_INVALID_ARGUMENT,
                      "%s data: producers '%s' (%zu samples) and '%s' (%zu samples) must have the same number of samples",
                      which == DATA_EVAL ? "evaluation" : "training", first, count, s->g->nodes[i].name, d->info.count);
    first = s->g->nodes[i].name;
    count = d->info.count;
  }
  *out = count;
  return HM_OK;
}

static hm_status open_device(hm_session *s, const hm_fit_options *o) {
  if (o->device) {
    s->dev = o->device;
    return HM_OK;
  }
  hm_device_options d = hm_device_options_default();
  d.threads = o->threads;
  HM_RETURN_IF_ERROR(hm_device_open(o->backend, &d, &s->dev));
  s->owns_device = 1;
  return HM_OK;
}

/* Uploads the data of every producer the plan reads. */
static hm_status upload_all_data(hm_session *s, int train, int eval) {
  const hm_graph *g = s->g;
  hm_status st = HM_OK;
  for (size_t i = 0; i < g->n_nodes && st == HM_OK; i++) {
    if (g->nodes[i].kind != HM_NODE_PRODUCER || !hm__plan_reads_data(s->plan, i)) continue;
    if (train || (!eval && g->nodes[i].train)) {
      if (!g->nodes[i].train) {
        char where[300];
        hm__graph_where(g, g->nodes[i].line, g->nodes[i].col, where, sizeof where);
        st = hm__fail(HM_STATUS_FAILED_PRECONDITION, "%sproducer '%s' is not bound to training data", where,
                      g->nodes[i].name);
      } else {
        st = upload_data(s, i, DATA_TRAIN);
      }
    }
    if (st == HM_OK && eval && g->nodes[i].eval) st = upload_data(s, i, DATA_EVAL);
  }
  if (st == HM_OK) st = check_counts(s, DATA_TRAIN, &s->train_count);
  if (st == HM_OK) st = check_counts(s, DATA_EVAL, &s->eval_count);
  if (st == HM_OK && eval) {
    /* Evaluation needs every input producer; targets are optional (no loss then). */
    for (size_t e = 0; e < g->n_edges && st == HM_OK; e++) {
      size_t src = g->edges[e].src;
      if (g->nodes[src].kind == HM_NODE_PRODUCER && !s->plan->nodes[src].boundary_in &&
          !s->bufs.nodes[src].data[DATA_EVAL] && s->eval_count)
        st = hm__fail(HM_STATUS_FAILED_PRECONDITION, "producer '%s' has no evaluation data while others do",
                      g->nodes[src].name);
    }
  }
  return st;
}

/* Batches and values of the nodes (|batch| rows each), gradients
 * (|grad_rows| rows). */
static hm_status alloc_node_buffers(hm_session *s, size_t batch, size_t grad_rows, int train) {
  const hm_graph *g = s->g;
  hm_status st = HM_OK;
  for (size_t i = 0; i < g->n_nodes && st == HM_OK; i++) {
    const hm_plan_node *pn = &s->plan->nodes[i];
    hm_node_buffers *nb = &s->bufs.nodes[i];
    size_t rowbytes = pn->width * 4;
    if (g->nodes[i].kind == HM_NODE_PRODUCER) {
      if (nb->data[DATA_TRAIN] || nb->data[DATA_EVAL]) {
        const hm_producer_info *d = nb->data[DATA_TRAIN] ? &nb->info[DATA_TRAIN] : &nb->info[DATA_EVAL];
        st = alloc_buffer(s, batch * (d->dtype == HM_ABI_DTYPE_I32 ? 4 : d->width * 4), &nb->batch);
      } else if (pn->boundary_in) {
        st = alloc_buffer(s, batch * rowbytes, &nb->batch);
        if (st == HM_OK && train && pn->needs_grad) st = alloc_buffer(s, grad_rows * rowbytes, &nb->grad);
      }
      continue;
    }
    if (g->nodes[i].kind == HM_NODE_CONSUMER) {
      if (!pn->boundary_out) st = alloc_buffer(s, batch * rowbytes, &nb->batch); /* the host reads a boundary's source */
      continue;
    }
    if (pn->n_inputs > 1) st = alloc_buffer(s, batch * rowbytes, &nb->sum);
    if (st == HM_OK && train && pn->needs_grad) st = alloc_buffer(s, grad_rows * rowbytes, &nb->grad);
  }
  return st;
}

/* Points each trained tensor's parameter, gradient and two optimizer-state
 * operands at its offset in the |role| buffers (in that order); returns the
 * arena's length in floats. */
static size_t place_in_arena(hm_session *s, hm_abi_buffer *const role[4]) {
  const hm_graph *g = s->g;
  size_t at = 0;
  for (size_t e = 0; e < g->n_edges; e++) {
    if (!s->plan->edges[e].trainable) continue;
    hm_edge_buffers *es = &s->bufs.edges[e];
    hm_param_desc pd[2];
    size_t n_params = hm__edge_params(g, e, pd);
    hm_abi_operand *tensors[2][4] = {{&es->w, &es->dw, &es->s1w, &es->s2w}, {&es->b, &es->db, &es->s1b, &es->s2b}};
    for (size_t k = 0; k < n_params; k++) {
      for (int r = 0; r < 4; r++) *tensors[k][r] = (hm_abi_operand){role[r], (uint64_t)at * 4};
      at += (pd[k].count + HM_ARENA_ALIGN - 1) / HM_ARENA_ALIGN * HM_ARENA_ALIGN;
    }
  }
  return at;
}

/* Gives every trainable connection's parameters their place in the arena
 * (lower.h), then allocates it: parameters, gradients and the optimizer's
 * state, zeroed, so the padding stays zero. */
static hm_status alloc_param_arena(hm_session *s) {
  hm_param_arena *ar = &s->bufs.arena;
  hm_abi_buffer *const none[4] = {NULL, NULL, NULL, NULL};
  size_t floats = place_in_arena(s, none);
  if (!floats) return HM_OK;
  hm_optimizer o = s->opts.optimizer;
  int two = o == HM_OPTIMIZER_ADAM || o == HM_OPTIMIZER_ADAMW || o == HM_OPTIMIZER_LAMB;
  int one = two || o == HM_OPTIMIZER_RMSPROP || (o == HM_OPTIMIZER_SGD && s->opts.momentum != 0.0f);
  ar->floats = floats;
  hm_status st = alloc_zeroed(s, floats * 4, &ar->params);
  if (st == HM_OK) st = alloc_zeroed(s, floats * 4, &ar->grads);
  if (st == HM_OK && one) st = alloc_zeroed(s, floats * 4, &ar->state[0]);
  if (st == HM_OK && two) st = alloc_zeroed(s, floats * 4, &ar->state[1]);
  hm_abi_buffer *const role[4] = {ar->params, ar->grads, ar->state[0], ar->state[1]};
  if (st == HM_OK) place_in_arena(s, role);
  return st;
}

/* Parameters (of connections that are not trained; the arena holds the
 * others'), activations (|batch| rows), packed copies and gradients
 * (|grad_rows| rows) of the connections. */
static hm_status alloc_edge_buffers(hm_session *s, size_t batch, size_t grad_rows) {
  const hm_graph *g = s->g;
  hm_status st = HM_OK;
  for (size_t e = 0; e < g->n_edges && st == HM_OK; e++) {
    const hm_edge *ed = &g->edges[e];
    const hm_plan_edge *pe = &s->plan->edges[e];
    hm_edge_buffers *es = &s->bufs.edges[e];
    if (!pe->into_layer) continue;
    size_t outw = s->plan->nodes[ed->dst].width;
    hm_param_desc pd[2];
    size_t n_params = hm__edge_params(g, e, pd);
    size_t n_w = n_params ? pd[0].count : 0, n_b = n_params > 1 ? pd[1].count : 0;
    if (!pe->trainable && n_w) st = alloc_buffer(s, n_w * 4, &es->w.buffer);
    if (!pe->trainable && st == HM_OK && n_b) st = alloc_buffer(s, n_b * 4, &es->b.buffer);
    if (st == HM_OK) st = alloc_buffer(s, batch * outw * 4, &es->z);
    if (st == HM_OK) {
      if (ed->activation == HM_ABI_ACT_IDENTITY) es->a = es->z;
      else st = alloc_buffer(s, batch * outw * 4, &es->a);
    }
    if (st == HM_OK && pe->backprop && ed->spec.kind == HM_CONNECTION_MAX_POOL)
      st = alloc_buffer(s, grad_rows * outw * 4, &es->argmax);
    if (st == HM_OK && ed->spec.kind == HM_CONNECTION_BATCH_NORM) {
      size_t c = hm__norm_channels(&g->nodes[ed->src]);
      st = alloc_buffer(s, 2 * c * 4, &es->running);
    }
    uint32_t q = pe->prec.dtype;
    if (st == HM_OK && hm__precision_is_packed(q)) {
      size_t rows, k, pos;
      hm__edge_matrix(g, e, &rows, &k, &pos);
      st = alloc_buffer(s, hm__packed_bytes(q, rows, k), &es->wq);
      if (st == HM_OK) st = alloc_buffer(s, batch * hm__packed_stride(q, pos, k), &es->xq);
      if (st == HM_OK && pe->trainable) st = alloc_buffer(s, rows * k * 4, &es->wdq);
      if (st == HM_OK && pe->trainable) st = alloc_buffer(s, grad_rows * pos * k * 4, &es->xdq);
      if (st == HM_OK && ed->spec.kind == HM_CONNECTION_CONV2D) {
        size_t rb = batch > grad_rows ? batch : grad_rows;
        st = alloc_buffer(s, rb * pos * k * 4, &es->cols);
        if (st == HM_OK) st = alloc_buffer(s, (pos > rb ? pos : rb) * 4, &es->ones);
        if (st == HM_OK) st = alloc_buffer(s, (pos > rb ? pos : rb) * rows * 4, &es->conv_tmp);
      }
    }
    if (st != HM_OK || !pe->backprop) continue;
    if (st == HM_OK) { /* dropout masks the gradient into a buffer of its own */
      if (ed->activation == HM_ABI_ACT_IDENTITY && ed->spec.kind != HM_CONNECTION_DROPOUT)
        es->dz = s->bufs.nodes[ed->dst].grad;
      else st = alloc_buffer(s, grad_rows * outw * 4, &es->dz);
    }
  }
  return st == HM_OK ? alloc_param_arena(s) : st;
}

/* The activations of slot |k| (k >= 1): its own copies of the buffers a
 * micro-batch's forward pass writes and its backward pass reads, |rows| rows
 * each; the rest is slot 0's. */
static hm_status alloc_slot(hm_session *s, size_t k, size_t rows) {
  const hm_graph *g = s->g;
  hm_step_buffers *sb = &s->slot_bufs[k];
  *sb = s->bufs;
  sb->nodes = hm__calloc(g->n_nodes ? g->n_nodes : 1, sizeof *sb->nodes);
  sb->edges = hm__calloc(g->n_edges ? g->n_edges : 1, sizeof *sb->edges);
  if (!sb->nodes || !sb->edges) return hm__fail(HM_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  memcpy(sb->nodes, s->bufs.nodes, g->n_nodes * sizeof *sb->nodes);
  memcpy(sb->edges, s->bufs.edges, g->n_edges * sizeof *sb->edges);
  hm_status st = HM_OK;
  for (size_t i = 0; i < g->n_nodes && st == HM_OK; i++) {
    hm_node_buffers *nb = &sb->nodes[i];
    size_t rowbytes = s->plan->nodes[i].width * 4;
    nb->batch = nb->sum = NULL;
    if (g->nodes[i].kind == HM_NODE_PRODUCER && s->bufs.nodes[i].batch) {
      const hm_node_buffers *n0 = &s->bufs.nodes[i];
      const hm_producer_info *d = n0->data[DATA_TRAIN] ? &n0->info[DATA_TRAIN] : NULL;
      st = alloc_buffer(s, rows * (d ? (d->dtype == HM_ABI_DTYPE_I32 ? 4 : d->width * 4) : rowbytes), &nb->batch);
    }
    if (st == HM_OK && s->bufs.nodes[i].sum) st = alloc_buffer(s, rows * rowbytes, &nb->sum);
  }
  for (size_t e = 0; e < g->n_edges && st == HM_OK; e++) {
    hm_edge_buffers *es = &sb->edges[e];
    const hm_edge_buffers *e0 = &s->bufs.edges[e];
    if (!e0->z) continue;
    size_t outw = s->plan->nodes[g->edges[e].dst].width, mrows, kin, pos;
    hm__edge_matrix(g, e, &mrows, &kin, &pos);
    uint32_t q = s->plan->edges[e].prec.dtype;
    es->z = es->a = es->xq = es->xdq = es->argmax = NULL;
    st = alloc_buffer(s, rows * outw * 4, &es->z);
    if (st == HM_OK && e0->argmax) st = alloc_buffer(s, rows * outw * 4, &es->argmax);
    if (st == HM_OK) {
      if (e0->a == e0->z) es->a = es->z;
      else st = alloc_buffer(s, rows * outw * 4, &es->a);
    }
    if (st == HM_OK && e0->xq) st = alloc_buffer(s, rows * hm__packed_stride(q, pos, kin), &es->xq);
    if (st == HM_OK && e0->xdq) st = alloc_buffer(s, rows * pos * kin * 4, &es->xdq);
  }
  return st;
}

static void free_slot(hm_session *s, hm_step_buffers *sb) {
  for (size_t i = 0; sb->nodes && i < s->g->n_nodes; i++) {
    hm_device_buffer_free(s->dev, sb->nodes[i].batch);
    hm_device_buffer_free(s->dev, sb->nodes[i].sum);
  }
  for (size_t e = 0; sb->edges && e < s->g->n_edges; e++) {
    hm_edge_buffers *es = &sb->edges[e];
    hm_abi_buffer *bufs[] = {es->z, es->xq, es->xdq, es->argmax};
    for (size_t k = 0; k < sizeof bufs / sizeof bufs[0]; k++) hm_device_buffer_free(s->dev, bufs[k]);
    if (es->a != es->z) hm_device_buffer_free(s->dev, es->a);
  }
  hm__free(sb->nodes);
  hm__free(sb->edges);
}

hm_status hm__session_create(hm_graph *g, const hm_fit_options *opts, const hm_policy *policy, int train, int eval,
                             hm_session **out) {
  hm_session_spec spec = {train, eval, NULL, 1, 0};
  return hm__session_open(g, opts, policy, &spec, out);
}

hm_status hm__session_open(hm_graph *g, const hm_fit_options *opts, const hm_policy *policy,
                           const hm_session_spec *spec, hm_session **out) {
  int train = spec->train, eval = spec->eval;
  const hm_plan_boundaries *bounds = spec->bounds;
  int sized_by_options = bounds || spec->no_data; /* a count of 0 may mean the data is elsewhere */
  hm_session *s = hm__calloc(1, sizeof *s);
  if (!s) return hm__fail(HM_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  s->n_slots = spec->slots ? spec->slots : 1;
  s->g = g;
  s->opts = *opts;
  s->with_optimizer = train;
  size_t n_nodes = g->n_nodes ? g->n_nodes : 1;
  s->bufs.nodes = hm__calloc(n_nodes, sizeof *s->bufs.nodes);
  s->bufs.edges = hm__calloc(g->n_edges ? g->n_edges : 1, sizeof *s->bufs.edges);
  s->host[DATA_TRAIN] = hm__calloc(n_nodes, sizeof *s->host[DATA_TRAIN]);
  s->host[DATA_EVAL] = hm__calloc(n_nodes, sizeof *s->host[DATA_EVAL]);
  s->slot_bufs = hm__calloc(s->n_slots, sizeof *s->slot_bufs);
  s->programs = hm__calloc(PROG_KINDS * s->n_slots * 2, sizeof *s->programs);
  hm_status st = HM_OK;
  if (!s->bufs.nodes || !s->bufs.edges || !s->host[DATA_TRAIN] || !s->host[DATA_EVAL] || !s->slot_bufs ||
      !s->programs)
    st = hm__fail(HM_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  if (st == HM_OK) st = open_device(s, opts);
  if (st == HM_OK) st = hm__plan_create(g, policy, s->dev, train, bounds, &s->plan);
  if (st == HM_OK && !spec->no_data) st = upload_all_data(s, train, eval);
  /* Rows as used: training steps take batch_size rows (gradients only those),
   * evaluation eval_batch_size, neither more than the data holds. A stage
   * without data of its own learns the counts from the first stage later. */
  size_t train_rows = 0, eval_rows = 0;
  if (st == HM_OK && train)
    train_rows = opts->batch_size < s->train_count || (sized_by_options && !s->train_count) ? opts->batch_size
                                                                                          : s->train_count;
  if (st == HM_OK) {
    size_t count = train ? s->eval_count : eval ? s->eval_count : s->train_count;
    eval_rows = opts->eval_batch_size < count || (bounds && !count) ? opts->eval_batch_size : count;
  }
  size_t batch = train_rows > eval_rows ? train_rows : eval_rows;
  batch = batch ? batch : 1;
  s->max_batch = batch;
  s->train_rows = train_rows;
  if (st == HM_OK) st = alloc_buffer(s, batch * 4, &s->bufs.idx);
  if (st == HM_OK) st = alloc_zeroed(s, 16, &s->bufs.stats);
  if (st == HM_OK && !(s->idx_host = hm__malloc(batch * sizeof *s->idx_host)))
    st = hm__fail(HM_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  if (st == HM_OK) st = alloc_node_buffers(s, batch, train_rows, train);
  if (st == HM_OK) st = alloc_edge_buffers(s, batch, train_rows);
  if (s->slot_bufs) s->slot_bufs[0] = s->bufs;
  for (size_t k = 1; k < s->n_slots && st == HM_OK; k++) st = alloc_slot(s, k, train_rows);
  /* Host copies are only kept for the accuracy tap's targets. */
  for (size_t i = 0; s->host[DATA_EVAL] && s->plan && i < g->n_nodes; i++) {
    int keep = s->plan->accuracy_tap >= 0 && g->taps[s->plan->accuracy_tap].target == i;
    for (int w = 0; w < 2 && !keep; w++) {
      hm__free(s->host[w][i].values);
      s->host[w][i].values = NULL;
    }
  }
  if (st != HM_OK) {
    hm__session_free(s);
    return st;
  }
  *out = s;
  return HM_OK;
}

void hm__session_free(hm_session *s) {
  if (!s) return;
  for (size_t k = 0; s->programs && k < PROG_KINDS * s->n_slots * 2; k++)
    hm_device_program_free(s->dev, s->programs[k].prog);
  for (size_t k = 1; s->slot_bufs && k < s->n_slots; k++) free_slot(s, &s->slot_bufs[k]);
  for (size_t i = 0; s->bufs.nodes && i < s->g->n_nodes; i++) {
    hm_node_buffers *nb = &s->bufs.nodes[i];
    hm_abi_buffer *bufs[] = {nb->data[DATA_TRAIN], nb->data[DATA_EVAL], nb->batch, nb->sum, nb->grad};
    for (size_t k = 0; k < sizeof bufs / sizeof bufs[0]; k++) hm_device_buffer_free(s->dev, bufs[k]);
  }
  for (size_t e = 0; s->bufs.edges && e < s->g->n_edges; e++) {
    hm_edge_buffers *es = &s->bufs.edges[e];
    /* A trained connection's parameters are the arena's. */
    int own = !s->plan || !s->plan->edges[e].trainable;
    hm_abi_buffer *bufs[] = {own ? es->w.buffer : NULL, own ? es->b.buffer : NULL, es->z, es->wq, es->xq, es->wdq,
                             es->xdq, es->argmax, es->running, es->cols, es->ones, es->conv_tmp};
    for (size_t k = 0; k < sizeof bufs / sizeof bufs[0]; k++) hm_device_buffer_free(s->dev, bufs[k]);
    if (es->a != es->z) hm_device_buffer_free(s->dev, es->a);
    if (es->dz && es->dz != s->bufs.nodes[s->g->edges[e].dst].grad) hm_device_buffer_free(s->dev, es->dz);
  }
  for (int w = 0; w < 2; w++)
    for (size_t i = 0; s->host[w] && i < s->g->n_nodes; i++) hm__free(s->host[w][i].values);
  hm_device_buffer_free(s->dev, s->bufs.idx);
  hm_device_buffer_free(s->dev, s->bufs.stats);
  hm_abi_buffer *arena[] = {s->bufs.arena.params, s->bufs.arena.grads, s->bufs.arena.state[0], s->bufs.arena.state[1]};
  for (size_t k = 0; k < sizeof arena / sizeof arena[0]; k++) hm_device_buffer_free(s->dev, arena[k]);
  if (s->owns_device) hm_device_close(s->dev);
  hm__plan_free(s->plan);
  hm__free(s->idx_host);
  hm__free(s->bufs.nodes);
  hm__free(s->bufs.edges);
  hm__free(s->host[DATA_TRAIN]);
  hm__free(s->host[DATA_EVAL]);
  hm__free(s->slot_bufs);
  hm__free(s->programs);
  hm__free(s);
}

hm_status hm__session_program(hm_session *s, program_kind kind, size_t slot, size_t batch, hm_abi_program **out) {
  if (slot >= s->n_slots) return hm__fail(HM_STATUS_INTERNAL, "activation slot %zu of %zu", slot, s->n_slots);
  struct hm_session_program *progs = &s->programs[((size_t)kind * s->n_slots + slot) * 2];
  for (int j = 0; j < 2; j++)
    if (progs[j].prog && progs[j].batch == batch) {
      *out = progs[j].prog;
      return HM_OK;
    }
  int full = kind == PROG_EVAL || kind == PROG_INFER;
  size_t rows = full ? s->max_batch : s->train_rows;
  if (batch > rows) return hm__fail(HM_STATUS_INTERNAL, "batch %zu exceeds the session's %zu rows", batch, rows);
  hm_abi_op *ops = NULL;
  size_t n = 0;
  HM_RETURN_IF_ERROR(hm__lower_step(s->plan, &s->slot_bufs[slot], &s->opts, kind, batch, &ops, &n));
  hm_abi_program *p = NULL;
  hm_status st = n > UINT32_MAX ? hm__fail(HM_STATUS_OUT_OF_RANGE, "program too large")
                                : hm_device_program_create(s->dev, ops, (uint32_t)n, N_SLOTS, &p);
  hm__free(ops);
  if (st != HM_OK) return st;
  /* Two sizes per kind cover a full batch and the last partial one. */
  int j = progs[0].prog ? 1 : 0;
  hm_device_program_free(s->dev, progs[j].prog);
  progs[j].prog = p;
  progs[j].batch = batch;
  *out = p;
  return HM_OK;
}

hm_status hm__session_pack_weights(hm_session *s) {
  const hm_graph *g = s->g;
  hm_abi_op *ops = hm__calloc(g->n_edges ? g->n_edges : 1, sizeof *ops);
  if (!ops) return hm__fail(HM_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  uint32_t n = 0;
  for (size_t e = 0; e < g->n_edges; e++) {
    hm_edge_buffers *es = &s->bufs.edges[e];
    if (!es->wq || !es->w.buffer) continue;
    hm_abi_op *op = &ops[n++];
    *op = hm_op_init(HM_ABI_OP_QUANTIZE);
    op->dtype_in = HM_ABI_DTYPE_F32;
    op->dtype_out = s->plan->edges[e].prec.dtype;
    size_t rows, k, pos;
    hm__edge_matrix(g, e, &rows, &k, &pos);
    op->dims[0] = rows;
    op->dims[1] = k;
    op->in[0] = es->w;
    op->out[0].buffer = es->wq;
  }
  hm_abi_program *p = NULL;
  hm_status st = n ? hm_device_program_create(s->dev, ops, n, 0, &p) : HM_OK;
  if (st == HM_OK && n) st = hm_device_program_run(s->dev, p, NULL, 0);
  hm_device_program_free(s->dev, p);
  hm__free(ops);
  if (st != HM_OK) return st;
  for (size_t e = 0; e < g->n_edges; e++) {
    hm_edge_buffers *es = &s->bufs.edges[e];
    if (!es->wq || !es->w.buffer || s->plan->edges[e].trainable) continue;
    hm_device_buffer_free(s->dev, es->w.buffer); /* only the packed weights remain */
    es->w.buffer = NULL;
    size_t rows, k, pos;
    hm__edge_matrix(g, e, &rows, &k, &pos);
    s->device_bytes -= rows * k * 4;
  }
  return HM_OK;
}

void hm__session_weight_costs(const hm_session *s, hm_eval_result *out) {
  const hm_graph *g = s->g;
  out->weight_bytes = out->bias_bytes = out->weight_count = out->n_connections = 0;
  for (size_t e = 0; e < g->n_edges; e++) {
    if (!s->plan->edges[e].prec.matmul) continue;
    size_t in, out_w, pos; /* a convolution's matrix: C_out rows of C_in * KH * KW */
    hm__edge_matrix(g, e, &out_w, &in, &pos);
    uint32_t dtype = s->plan->edges[e].prec.dtype;
    hm_param_desc pd[2];
    size_t n_params = hm__edge_params(g, e, pd);
    size_t bytes = hm__matrix_bytes(dtype, out_w, in);
    out->weight_bytes += bytes;
    out->bias_bytes += n_params > 1 ? pd[1].count * 4 : 0;
    out->weight_count += pd[0].count;
    size_t i = out->n_connections++;
    if (i >= HM_POLICY_MAX_CONNECTIONS) continue;
    hm_connection_cost *c = &out->connections[i];
    memset(c, 0, sizeof *c);
    c->connection = e;
    snprintf(c->precision, sizeof c->precision, "%s", hm__precision_name(dtype));
    c->inputs = in;
    c->weights = pd[0].count;
    c->outputs = out_w;
    c->weight_bytes = bytes;
  }
}

hm_status hm__session_upload_weights(hm_session *s) {
  hm_graph *g = s->g;
  if (!g->weights) HM_RETURN_IF_ERROR(hm_graph_init_weights(g, s->opts.seed));
  HM_RETURN_IF_ERROR(hm__graph_check_weights(g, g->weights, "the graph's weights"));
  return hm__session_write_weights(s, g->weights);
}

hm_status hm__session_write_weights(hm_session *s, const hm_weights *w) {
  hm_graph *g = s->g;
  for (size_t e = 0; e < g->n_edges; e++) {
    hm_param_desc pd[2];
    size_t n_params = hm__edge_params(g, e, pd);
    hm_abi_operand at[2] = {s->bufs.edges[e].w, s->bufs.edges[e].b};
    for (size_t k = 0; k < n_params; k++) {
      hm_tensor t;
      HM_RETURN_IF_ERROR(hm_weights_find(w, pd[k].name, &t));
      HM_RETURN_IF_ERROR(hm_device_buffer_write(s->dev, at[k].buffer, at[k].offset, t.data, t.bytes));
    }
    size_t n_state = hm__edge_state(g, e, pd);
    for (size_t k = 0; k < n_state; k++) { /* running mean, then variance, in one buffer */
      hm_tensor t;
      HM_RETURN_IF_ERROR(hm_weights_find(w, pd[k].name, &t));
      HM_RETURN_IF_ERROR(hm_device_buffer_write(s->dev, s->bufs.edges[e].running, k * t.bytes, t.data, t.bytes));
    }
  }
  return HM_OK;
}

static hm_status download_at(hm_session *s, hm_weights *w, const char *name, hm_abi_buffer *buf, uint64_t offset,
                              uint32_t rank, const uint64_t *shape) {
  HM_RETURN_IF_ERROR(hm_weights_set(w, name, HM_ABI_DTYPE_F32, rank, shape, NULL));
  hm_tensor t;
  HM_RETURN_IF_ERROR(hm_weights_find(w, name, &t));
  return hm_device_buffer_read(s->dev, buf, offset, t.data, t.bytes);
}

static hm_status download_tensor(hm_session *s, hm_weights *w, const char *name, hm_abi_operand at, uint32_t rank,
                                 const uint64_t *shape) {
  return download_at(s, w, name, at.buffer, at.offset, rank, shape);
}


static const char *state_suffix(hm_optimizer o, int second) {
  if (o == HM_OPTIMIZER_SGD) return "velocity";
  if (o == HM_OPTIMIZER_RMSPROP) return "s";
  return second ? "v" : "m";
}

hm_status hm__session_upload_opt_state(hm_session *s, const hm_weights *state) {
  hm_graph *g = s->g;
  for (size_t e = 0; e < g->n_edges; e++) {
    const hm_edge *ed = &g->edges[e];
    const hm_edge_buffers *es = &s->bufs.edges[e];
    if (!s->plan->edges[e].trainable) continue;
    (void)ed;
    char name[700];
    hm_param_desc pd[2];
    size_t n_params = hm__edge_params(g, e, pd);
    hm_abi_operand at[4] = {es->s1w, es->s2w, es->s1b, es->s2b};
    size_t count[4] = {pd[0].count, pd[0].count, n_params > 1 ? pd[1].count : 0, n_params > 1 ? pd[1].count : 0};
    for (int k = 0; k < 4; k++) {
      if (!at[k].buffer || !count[k]) continue;
      snprintf(name, sizeof name, "%s.%s", pd[k / 2].name, state_suffix(s->opts.optimizer, k % 2));
      hm_tensor t;
      if (hm_weights_find(state, name, &t) != HM_OK)
        return hm__fail(HM_STATUS_INVALID_ARGUMENT, "resume: the optimizer state has no tensor '%s'", name);
      if (t.dtype != HM_ABI_DTYPE_F32 || t.bytes != count[k] * 4)
        return hm__fail(HM_STATUS_INVALID_ARGUMENT, "resume: optimizer state '%s' has the wrong shape or dtype", name);
      HM_RETURN_IF_ERROR(hm_device_buffer_write(s->dev, at[k].buffer, at[k].offset, t.data, t.bytes));
    }
  }
  return HM_OK;
}

hm_status hm__session_download(hm_session *s, hm_weights **params, hm_weights **opt_state) {
  hm_graph *g = s->g;
  hm_weights *p = NULL, *o = NULL;
  hm_status st = hm_weights_create(&p);
  if (st == HM_OK && opt_state) st = hm_weights_create(&o);
  for (size_t e = 0; e < g->n_edges && st == HM_OK; e++) {
    const hm_edge *ed = &g->edges[e];
    const hm_edge_buffers *es = &s->bufs.edges[e];
    (void)ed;
    char name[700];
    hm_param_desc pd[2];
    size_t n_params = hm__edge_params(g, e, pd);
    if (!n_params) continue;
    if (!es->w.buffer) {
      st = hm__fail(HM_STATUS_FAILED_PRECONDITION, "'%s' is held only in packed form on the device", pd[0].name);
      break;
    }
    st = download_tensor(s, p, pd[0].name, es->w, pd[0].rank, pd[0].shape);
    if (st == HM_OK && n_params > 1) st = download_tensor(s, p, pd[1].name, es->b, pd[1].rank, pd[1].shape);
    hm_param_desc sd[2];
    size_t n_state = hm__edge_state(g, e, sd);
    for (size_t k = 0; k < n_state && st == HM_OK; k++)
      st = download_at(s, p, sd[k].name, es->running, k * sd[k].count * 4, sd[k].rank, sd[k].shape);
    if (!o || st != HM_OK) continue;
    hm_abi_operand at[4] = {es->s1w, es->s2w, es->s1b, es->s2b};
    for (int k = 0; k < 4 && st == HM_OK; k++) {
      if (!at[k].buffer || (size_t)(k / 2) >= n_params) continue;
      snprintf(name, sizeof name, "%s.%s", pd[k / 2].name, state_suffix(s->opts.optimizer, k % 2));
      st = download_tensor(s, o, name, at[k], pd[k / 2].rank, pd[k / 2].shape);
    }
  }
  if (st != HM_OK) {
    hm_weights_free(p);
    hm_weights_free(o);
    return st;
  }
  *params = p;
  if (opt_state) *opt_state = o;
  return HM_OK;
}

hm_status hm__session_step(hm_session *s, program_kind kind, const int32_t *indices, size_t n,
                           const double scalars[N_SLOTS], float *loss, float *sumsq) {
  return hm__session_step_slot(s, kind, 0, indices, n, scalars, loss, sumsq);
}

hm_status hm__session_step_slot(hm_session *s, program_kind kind, size_t slot, const int32_t *indices, size_t n,
                                const double scalars[N_SLOTS], float *loss, float *sumsq) {
  hm_abi_program *prog = NULL;
  HM_RETURN_IF_ERROR(hm__session_program(s, kind, slot, n, &prog));
  if (indices) HM_RETURN_IF_ERROR(hm_device_buffer_write(s->dev, s->bufs.idx, 0, indices, n * sizeof *indices));
  HM_RETURN_IF_ERROR(hm_device_program_run(s->dev, prog, scalars, N_SLOTS));
  if (!loss && !sumsq) return HM_OK;
  float stats[2];
  HM_RETURN_IF_ERROR(hm_device_buffer_read(s->dev, s->bufs.stats, 0, stats, sizeof stats));
  if (loss) *loss = stats[0];
  if (sumsq) *sumsq = stats[1];
  return HM_OK;
}

/* The label of sample |i| of the accuracy tap's target. */
static long target_class(const hm_bound_data *d, size_t i) {
  if (d->info.dtype == HM_ABI_DTYPE_I32) return ((const int32_t *)d->values)[i];
  const float *row = (const float *)d->values + i * d->info.width;
  size_t best = 0;
  for (size_t c = 1; c < d->info.width; c++)
    if (row[c] > row[best]) best = c;
  return (long)best;
}

hm_status hm__session_evaluate(hm_session *s, int use_eval, int push, hm_eval_result *out) {
  size_t count = use_eval ? s->eval_count : s->train_count;
  out->samples = count;
  out->loss = NAN;
  out->accuracy = NAN;
  if (count == 0) return hm__fail(HM_STATUS_FAILED_PRECONDITION, "no %s data is bound", use_eval ? "evaluation" : "input");
  hm_eval_sums sums;
  HM_RETURN_IF_ERROR(hm__session_evaluate_range(s, use_eval, push, 0, count, &sums));
  if (sums.has_loss) out->loss = (float)(sums.loss_sum / (double)count);
  if (sums.has_accuracy) out->accuracy = (float)((double)sums.correct / (double)count);
  return HM_OK;
}

hm_status hm__session_evaluate_range(hm_session *s, int use_eval, int push, size_t begin, size_t end,
                                     hm_eval_sums *out) {
  return hm__session_evaluate_hooked(s, use_eval, push, begin, end, NULL, NULL, out);
}

hm_status hm__session_evaluate_hooked(hm_session *s, int use_eval, int push, size_t begin, size_t end,
                                      hm_eval_batch_hook hook, void *ctx, hm_eval_sums *out) {
  hm_graph *g = s->g;
  program_kind kind = use_eval ? PROG_EVAL : PROG_INFER;
  memset(out, 0, sizeof *out);
  int has_targets = g->n_taps > 0;
  for (size_t t = 0; t < g->n_taps; t++) {
    size_t target = g->taps[t].target;
    if (!s->bufs.nodes[target].data[use_eval ? DATA_EVAL : DATA_TRAIN]) has_targets = 0;
  }
  const hm_bound_data *acc_data = NULL;
  size_t acc_width = 0;
  float *logits = NULL;
  if (has_targets && s->plan->accuracy_tap >= 0) {
    size_t target = g->taps[s->plan->accuracy_tap].target;
    acc_data = &s->host[use_eval ? DATA_EVAL : DATA_TRAIN][target];
    acc_width = s->plan->nodes[g->taps[s->plan->accuracy_tap].layer].width;
    if (!acc_data->values) acc_data = NULL;
    else if (!(logits = hm__malloc(s->opts.eval_batch_size * acc_width * sizeof *logits)))
      return hm__fail(HM_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  }
  float *outbuf = NULL;
  double loss_sum = 0.0;
  size_t correct = 0;
  hm_status st = HM_OK;
  double scalars[N_SLOTS] = {0, 1, 1, 1, 1, 0};
  for (size_t pos = begin; pos < end && st == HM_OK; pos += s->opts.eval_batch_size) {
    size_t b = end - pos < s->opts.eval_batch_size ? end - pos : s->opts.eval_batch_size;
    for (size_t i = 0; i < b; i++) s->idx_host[i] = (int32_t)(pos + i);
    float loss = 0;
    size_t batch_index = (pos - begin) / s->opts.eval_batch_size;
    if (hook) st = hook(ctx, 0, batch_index, b);
    if (st == HM_OK) st = hm__session_step(s, kind, s->idx_host, b, scalars, has_targets ? &loss : NULL, NULL);
    if (st == HM_OK && hook) st = hook(ctx, 1, batch_index, b);
    if (st != HM_OK) break;
    loss_sum += (double)loss * (double)b;
    if (acc_data) {
      hm_abi_buffer *v = hm__session_value(s, g->taps[s->plan->accuracy_tap].layer);
      st = hm_device_buffer_read(s->dev, v, 0, logits, b * acc_width * sizeof *logits);
      for (size_t i = 0; i < b && st == HM_OK; i++) {
        const float *row = logits + i * acc_width;
        size_t best = 0;
        for (size_t c = 1; c < acc_width; c++)
          if (row[c] > row[best]) best = c;
        correct += (long)best == target_class(acc_data, pos + i);
      }
    }
    for (size_t i = 0; push && i < g->n_nodes && st == HM_OK; i++) {
      if (g->nodes[i].kind != HM_NODE_CONSUMER || !g->nodes[i].consumer) continue;
      size_t w = s->plan->nodes[i].width;
      float *nb = hm__realloc(outbuf, b * w * sizeof *outbuf);
      if (!nb) {
        st = hm__fail(HM_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        break;
      }
      outbuf = nb;
      st = hm_device_buffer_read(s->dev, s->bufs.nodes[i].batch, 0, outbuf, b * w * sizeof *outbuf);
      if (st == HM_OK) st = hm_consumer_push(g->nodes[i].consumer, outbuf, b, w);
      if (st != HM_OK) hm__error_prefix("consumer '%s': ", g->nodes[i].name);
    }
  }
  hm__free(logits);
  hm__free(outbuf);
  if (st != HM_OK) return st;
  out->has_loss = has_targets;
  out->has_accuracy = acc_data != NULL;
  out->loss_sum = loss_sum;
  out->correct = correct;
  return HM_OK;
}

size_t hm__session_grad_count(const hm_session *s) {
  const hm_graph *g = s->g;
  size_t n = 0;
  for (size_t e = 0; e < g->n_edges; e++)
    if (s->plan->edges[e].trainable) {
      hm_param_desc pd[2];
      size_t n_params = hm__edge_params(g, e, pd);
      for (size_t k = 0; k < n_params; k++) n += pd[k].count;
    }
  return n;
}

/* The arena's tensors in order: per trainable connection dW, then db. */
static hm_status grads_transfer(hm_session *s, float *arena, int write) {
  const hm_graph *g = s->g;
  size_t at = 0;
  for (size_t e = 0; e < g->n_edges; e++) {
    if (!s->plan->edges[e].trainable) continue;
    const hm_edge_buffers *es = &s->bufs.edges[e];
    hm_param_desc pd[2];
    size_t n_params = hm__edge_params(g, e, pd), n[2] = {pd[0].count, n_params > 1 ? pd[1].count : 0};
    hm_abi_operand grads[2] = {es->dw, es->db};
    for (size_t k = 0; k < n_params; k++) {
      hm_abi_buffer *buf = grads[k].buffer;
      uint64_t off = grads[k].offset;
      hm_status st = write ? hm_device_buffer_write(s->dev, buf, off, arena + at, n[k] * sizeof *arena)
                           : hm_device_buffer_read(s->dev, buf, off, arena + at, n[k] * sizeof *arena);
      if (st != HM_OK) return st;
      at += n[k];
    }
  }
  return HM_OK;
}

hm_status hm__session_grads_read(hm_session *s, float *arena) { return grads_transfer(s, arena, 0); }

hm_status hm__session_grads_write(hm_session *s, const float *arena) {
  return grads_transfer(s, (float *)arena, 1); /* only read from when writing */
}

void hm__session_precision_summary(const hm_session *s, char *buf, size_t cap) {
  const hm_graph *g = s->g;
  hm_strbuf b;
  hm__sb_init(&b);
  for (size_t e = 0; e < g->n_edges; e++) {
    const hm_edge_precision *p = &s->plan->edges[e].prec;
    if (!p->matmul) continue;
    hm__sb_printf(&b, "%s%s->%s %s/%s", b.len ? "; " : "", g->nodes[g->edges[e].src].name,
                  g->nodes[g->edges[e].dst].name, hm__precision_name(p->dtype),
                  g->edges[e].spec.kind == HM_CONNECTION_DENSE ? hm__precision_kernel(p->dtype)
                                                               : hm__connection_kind_name(g->edges[e].spec.kind));
    if (p->note[0]) hm__sb_printf(&b, " (%s)", p->note);
  }
  const char *text = b.data && !b.failed ? b.data : "";
  if (strlen(text) < cap) {
    snprintf(buf, cap, "%s", text);
  } else if (cap > 4) {
    snprintf(buf, cap, "%.*s...", (int)(cap - 4), text);
  }
  hm__sb_free(&b);
}
