/*
 * The WebSocket progress sink (harmonics/visualizer.h) over libwebsockets.
 *
 * Threads: the training thread only appends to a mutex-protected ring and,
 * when the ring was empty, wakes the service thread with lws_cancel_service
 * (the one lws call that is safe from another thread). The service thread
 * owns the lws context and every other lws call: it connects, writes one
 * frame per WRITEABLE callback, and schedules reconnects on a timer with
 * exponential backoff. A frame leaves the ring only after lws_write took it
 * whole, so a connection lost mid-run loses nothing that was queued.
 */
#include "harmonics/visualizer.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/base.h"

hm_visualizer_options hm_visualizer_options_default(void) {
  hm_visualizer_options o;
  memset(&o, 0, sizeof o);
  o.struct_size = sizeof o;
  o.queue_capacity = 65536;
  o.backoff_min_ms = 100;
  o.backoff_max_ms = 2000;
  o.flush_seconds = 2.0;
  return o;
}

enum { FRAME_BYTES = 32 };

/* One update as it goes on the wire: four little-endian float64. */
static void encode_frame(unsigned char out[FRAME_BYTES], size_t step, float norm, float loss, float lr) {
  double v[4] = {(double)step, (double)norm, (double)loss, (double)lr};
  for (int i = 0; i < 4; i++) {
    uint64_t u;
    memcpy(&u, &v[i], 8);
    for (int b = 0; b < 8; b++) out[i * 8 + b] = (unsigned char)(u >> (8 * b));
  }
}

#if HM_HAVE_WEBSOCKETS
#include <libwebsockets.h>

typedef struct visualizer {
  char host[256], path[512];
  char host_header[300]; /* "host:port", as a browser would send it */
  int port;
  hm_visualizer_options opts;
  pthread_t thread;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  /* The ring of frames (guarded by mu). */
  unsigned char *ring;
  size_t cap, head, count;
  uint64_t head_seq; /* number of frames ever removed from the ring (sent or dropped) */
  hm_visualizer_stats stats;
  atomic_int stop;
  int started, start_status;
  /* Service-thread state. */
  struct lws_context *ctx;
  struct lws *wsi;
  lws_sorted_usec_list_t sul;
  unsigned backoff_ms;
  unsigned backoff_before; /* the backoff when the current connection was made */
  unsigned char buf[LWS_PRE + FRAME_BYTES]; /* lws masks it in place */
} visualizer;

static void schedule_connect(visualizer *v, unsigned delay_ms);

static void connect_now(lws_sorted_usec_list_t *sul) {
  visualizer *v = lws_container_of(sul, visualizer, sul);
  if (v->stop || v->wsi) return;
  struct lws_client_connect_info ci;
  memset(&ci, 0, sizeof ci);
  ci.context = v->ctx;
  ci.address = v->host;
  ci.port = v->port;
  ci.path = v->path;
  ci.host = v->host_header;
  ci.origin = NULL; /* not a browser page: servers refuse foreign origins, and we have none */
  ci.local_protocol_name = "hm-progress";
  ci.pwsi = &v->wsi;
  if (!lws_client_connect_via_info(&ci)) {
    v->wsi = NULL;
    schedule_connect(v, v->backoff_ms);
  }
}

static void schedule_connect(visualizer *v, unsigned delay_ms) {
  if (v->stop) return;
  lws_sul_schedule(v->ctx, 0, &v->sul, connect_now, (lws_usec_t)delay_ms * LWS_US_PER_MS);
  unsigned next = v->backoff_ms * 2;
  v->backoff_ms = next > v->opts.backoff_max_ms ? v->opts.backoff_max_ms : next;
}

static int callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in, size_t len) {
  (void)in;
  (void)len;
  struct lws_context *ctx = lws_get_context(wsi);
  visualizer *v = ctx ? lws_context_user(ctx) : NULL;
  int more = 0;
  (void)user;
  if (!v) return 0;
  switch (reason) {
    case LWS_CALLBACK_CLIENT_ESTABLISHED:
      pthread_mutex_lock(&v->mu);
      v->stats.connected = 1;
      v->stats.connects++;
      more = v->count > 0;
      pthread_mutex_unlock(&v->mu);
      v->backoff_before = v->backoff_ms;
      v->backoff_ms = v->opts.backoff_min_ms;
      hm__log(HM_LOG_TRAIN, "visualizer: connected to ws://%s:%d%s", v->host, v->port, v->path);
      if (more) lws_callback_on_writable(wsi);
      break;
    case LWS_CALLBACK_CLIENT_RECEIVE:
      /* The protocol only sends: any data from the server is a violation,
       * so the first receive buffer of it closes the connection and a
       * hostile server cannot make training parse an endless stream. (Not
       * reading at all, with rx flow control, would also hide the server's
       * close, and the next frames would go into a dead socket.) */
      hm__log(HM_LOG_TRAIN, "visualizer: the server sent %zu bytes; closing (trainers only send)", len);
      /* Such a server does not earn a fresh backoff: keep growing it. */
      v->backoff_ms = v->backoff_before;
      return -1;
    case LWS_CALLBACK_CLIENT_WRITEABLE: {
      pthread_mutex_lock(&v->mu);
      int have = v->count > 0;
      uint64_t seq = v->head_seq;
      if (have) memcpy(v->buf + LWS_PRE, v->ring + v->head * FRAME_BYTES, FRAME_BYTES);
      pthread_mutex_unlock(&v->mu);
      if (!have) break;
      if (lws_write(wsi, v->buf + LWS_PRE, FRAME_BYTES, LWS_WRITE_BINARY) < FRAME_BYTES) return -1;
      pthread_mutex_lock(&v->mu);
      /* Unless the queue overflowed meanwhile and dropped this very frame,
       * it is still the head: it leaves the ring now that it is sent. */
      if (v->head_seq == seq) {
        v->head = (v->head + 1) % v->cap;
        v->count--;
        v->head_seq++;
      }
      v->stats.written++;
      more = v->count > 0;
      if (!more) pthread_cond_broadcast(&v->cv);
      pthread_mutex_unlock(&v->mu);
      if (more) lws_callback_on_writable(wsi);
      break;
    }
    case LWS_CALLBACK_CLIENT_CONNECTION_ERROR:
    case LWS_CALLBACK_CLIENT_CLOSED:
      pthread_mutex_lock(&v->mu);
      if (reason == LWS_CALLBACK_CLIENT_CLOSED) v->stats.disconnects++;
      v->stats.connected = 0;
      pthread_cond_broadcast(&v->cv);
      pthread_mutex_unlock(&v->mu);
      hm__log(HM_LOG_TRAIN, "visualizer: %s; retrying in %u ms",
              reason == LWS_CALLBACK_CLIENT_CLOSED ? "connection closed" : "cannot connect", v->backoff_ms);
      if (v->wsi == wsi) v->wsi = NULL;
      schedule_connect(v, v->backoff_ms);
      break;
    case LWS_CALLBACK_EVENT_WAIT_CANCELLED:
      /* Raised once per protocol; the frame handling is idempotent. */
      if (v->wsi && v->stats.connected) lws_callback_on_writable(v->wsi);
      break;
    default: break;
  }
  return 0;
}

static const struct lws_protocols protocols[] = {
    {"hm-progress", callback, 0, 0, 0, NULL, 0},
    {NULL, NULL, 0, 0, 0, NULL, 0},
};

static void lws_log_to_debug(int level, const char *line) {
  (void)level;
  hm__log(HM_LOG_TRAIN, "libwebsockets: %.*s", (int)strcspn(line, "\n"), line);
}

static void *service_main(void *arg) {
  visualizer *v = arg;
  /* A peer that goes away must not kill the process: no SIGPIPE here. */
  sigset_t pipe_set;
  sigemptyset(&pipe_set);
  sigaddset(&pipe_set, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &pipe_set, NULL);
  lws_set_log_level(LLL_ERR | LLL_WARN, lws_log_to_debug);
  struct lws_context_creation_info info;
  memset(&info, 0, sizeof info);
  info.port = CONTEXT_PORT_NO_LISTEN;
  info.protocols = protocols;
  info.user = v;
  info.gid = -1;
  info.uid = -1;
  v->ctx = lws_create_context(&info);
  pthread_mutex_lock(&v->mu);
  v->started = 1;
  v->start_status = v->ctx ? 0 : -1;
  pthread_cond_broadcast(&v->cv);
  pthread_mutex_unlock(&v->mu);
  if (!v->ctx) return NULL;
  v->backoff_ms = v->opts.backoff_min_ms;
  schedule_connect(v, 0);
  v->backoff_ms = v->opts.backoff_min_ms;
  while (!v->stop)
    if (lws_service(v->ctx, 0) < 0) break;
  lws_sul_cancel(&v->sul);
  lws_context_destroy(v->ctx);
  return NULL;
}

static void sink_fn(void *user, size_t step, float grad_norm, float loss, float lr) {
  visualizer *v = user;
  unsigned char frame[FRAME_BYTES];
  encode_frame(frame, step, grad_norm, loss, lr);
  pthread_mutex_lock(&v->mu);
  if (v->count == v->cap) { /* full: the oldest goes */
    v->head = (v->head + 1) % v->cap;
    v->count--;
    v->head_seq++;
    v->stats.dropped++;
  }
  memcpy(v->ring + ((v->head + v->count) % v->cap) * FRAME_BYTES, frame, FRAME_BYTES);
  v->count++;
  v->stats.queued++;
  int wake = v->count == 1;
  pthread_mutex_unlock(&v->mu);
  if (wake) lws_cancel_service(v->ctx);
}

static void visualizer_destroy(visualizer *v) {
  pthread_mutex_destroy(&v->mu);
  pthread_cond_destroy(&v->cv);
  hm__free(v->ring);
  hm__free(v);
}

hm_status hm_websocket_visualizer_create_ex(const char *host, int port, const char *path,
                                            const hm_visualizer_options *options, hm_progress_sink *out) {
  if (!host || !*host || !out) return hm__fail(HM_STATUS_INVALID_ARGUMENT, "visualizer: NULL or empty host");
  if (port < 1 || port > 65535) return hm__fail(HM_STATUS_INVALID_ARGUMENT, "visualizer: port %d is not in [1, 65535]", port);
  if (!path || !*path) path = "/";
  if (path[0] != '/') return hm__fail(HM_STATUS_INVALID_ARGUMENT, "visualizer: path '%s' must start with '/'", path);
  if (strlen(host) >= 256 || strlen(path) >= 512) return hm__fail(HM_STATUS_INVALID_ARGUMENT, "visualizer: host or path too long");
  hm_visualizer_options o = options ? *options : hm_visualizer_options_default();
  if (o.queue_capacity < 1 || o.queue_capacity > ((size_t)1 << 24))
    return hm__fail(HM_STATUS_INVALID_ARGUMENT, "visualizer: queue_capacity %zu is not in [1, 2^24]", o.queue_capacity);
  if (o.backoff_min_ms < 1 || o.backoff_max_ms < o.backoff_min_ms)
    return hm__fail(HM_STATUS_INVALID_ARGUMENT, "visualizer: backoff %u..%u ms is not a range", o.backoff_min_ms,
                    o.backoff_max_ms);
  if (!(o.flush_seconds >= 0.0 && o.flush_seconds <= 3600.0))
    return hm__fail(HM_STATUS_INVALID_ARGUMENT, "visualizer: flush_seconds must be in [0, 3600]");
  visualizer *v = hm__calloc(1, sizeof *v);
  if (!v) return hm__fail(HM_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  v->ring = hm__malloc(o.queue_capacity * FRAME_BYTES);
  if (!v->ring) {
    hm__free(v);
    return hm__fail(HM_STATUS_RESOURCE_EXHAUSTED, "visualizer: out of memory for %zu frames", o.queue_capacity);
  }
  snprintf(v->host, sizeof v->host, "%s", host);
  snprintf(v->path, sizeof v->path, "%s", path);
  snprintf(v->host_header, sizeof v->host_header, strchr(host, ':') ? "[%s]:%d" : "%s:%d", host, port);
  v->port = port;
  v->opts = o;
  v->cap = o.queue_capacity;
  pthread_mutex_init(&v->mu, NULL);
  pthread_cond_init(&v->cv, NULL);
  if (pthread_create(&v->thread, NULL, service_main, v) != 0) {
    visualizer_destroy(v);
    return hm__fail(HM_STATUS_RESOURCE_EXHAUSTED, "visualizer: cannot start its thread");
  }
  pthread_mutex_lock(&v->mu);
  while (!v->started) pthread_cond_wait(&v->cv, &v->mu);
  int st = v->start_status;
  pthread_mutex_unlock(&v->mu);
  if (st != 0) {
    pthread_join(v->thread, NULL);
    visualizer_destroy(v);
    return hm__fail(HM_STATUS_INTERNAL, "visualizer: libwebsockets could not create a context");
  }
  out->fn = sink_fn;
  out->user = v;
  return HM_OK;
}

void hm_websocket_visualizer_stats(const hm_progress_sink *sink, hm_visualizer_stats *out) {
  memset(out, 0, sizeof *out);
  if (!sink || sink->fn != sink_fn || !sink->user) return;
  visualizer *v = sink->user;
  pthread_mutex_lock(&v->mu);
  *out = v->stats;
  out->pending = v->count;
  pthread_mutex_unlock(&v->mu);
}

/* Waits until the queue is empty, the connection is down or |seconds| pass. */
static size_t wait_drained(visualizer *v, double seconds) {
  struct timespec deadline;
  clock_gettime(CLOCK_REALTIME, &deadline);
  if (!(seconds >= 0)) seconds = 0;
  if (seconds > 3600) seconds = 3600;
  time_t whole = (time_t)seconds;
  deadline.tv_sec += whole;
  deadline.tv_nsec += (long)((seconds - (double)whole) * 1e9);
  if (deadline.tv_nsec >= 1000000000L) {
    deadline.tv_sec++;
    deadline.tv_nsec -= 1000000000L;
  }
  pthread_mutex_lock(&v->mu);
  while (v->count > 0)
    if (pthread_cond_timedwait(&v->cv, &v->mu, &deadline) == ETIMEDOUT) break;
  size_t left = v->count;
  pthread_mutex_unlock(&v->mu);
  return left;
}

hm_status hm_websocket_visualizer_flush(const hm_progress_sink *sink, double seconds) {
  if (!sink || sink->fn != sink_fn || !sink->user)
    return hm__fail(HM_STATUS_INVALID_ARGUMENT, "visualizer: not a WebSocket visualizer sink");
  size_t left = wait_drained(sink->user, seconds);
  if (left) return hm__fail(HM_STATUS_UNAVAILABLE, "visualizer: %zu frames not written (is the server running?)", left);
  return HM_OK;
}

void hm_websocket_visualizer_free(hm_progress_sink *sink) {
  if (!sink || sink->fn != sink_fn || !sink->user) return;
  visualizer *v = sink->user;
  (void)wait_drained(v, v->opts.flush_seconds);
  v->stop = 1;
  lws_cancel_service(v->ctx);
  pthread_join(v->thread, NULL);
  visualizer_destroy(v);
  sink->fn = NULL;
  sink->user = NULL;
}

#else /* !HM_HAVE_WEBSOCKETS */

hm_status hm_websocket_visualizer_create_ex(const char *host, int port, const char *path,
                                            const hm_visualizer_options *options, hm_progress_sink *out) {
  (void)host, (void)port, (void)path, (void)options, (void)out;
  (void)encode_frame;
  return hm__fail(HM_STATUS_UNIMPLEMENTED, "visualizer: this build of Harmonics has no libwebsockets "
                                           "(install libwebsockets-dev and rebuild)");
}

void hm_websocket_visualizer_stats(const hm_progress_sink *sink, hm_visualizer_stats *out) {
  (void)sink;
  memset(out, 0, sizeof *out);
}

void hm_websocket_visualizer_free(hm_progress_sink *sink) { (void)sink; }

hm_status hm_websocket_visualizer_flush(const hm_progress_sink *sink, double seconds) {
  (void)sink, (void)seconds;
  return hm__fail(HM_STATUS_UNIMPLEMENTED, "visualizer: this build of Harmonics has no libwebsockets");
}

#endif

hm_status hm_websocket_visualizer_create(const char *host, int port, const char *path, hm_progress_sink *out) {
  return hm_websocket_visualizer_create_ex(host, port, path, NULL, out);
}

hm_status hm_websocket_visualizer_open_url(const char *url, const hm_visualizer_options *options, hm_progress_sink *out) {
  if (!url || strncmp(url, "ws://", 5) != 0)
    return hm__fail(HM_STATUS_INVALID_ARGUMENT, "dashboard URL '%s' must look like ws://HOST:PORT/PATH", url ? url : "");
  const char *p = url + 5;
  size_t hl = strcspn(p, ":/");
  if (hl == 0 || hl >= 256) return hm__fail(HM_STATUS_INVALID_ARGUMENT, "dashboard URL '%s': no host", url);
  char host[256];
  memcpy(host, p, hl);
  host[hl] = '\0';
  p += hl;
  long port = 80;
  if (*p == ':') {
    char *end;
    errno = 0;
    port = strtol(p + 1, &end, 10);
    if (errno || end == p + 1 || port < 1 || port > 65535 || (*end && *end != '/'))
      return hm__fail(HM_STATUS_INVALID_ARGUMENT, "dashboard URL '%s': bad port", url);
    p = end;
  }
  return hm_websocket_visualizer_create_ex(host, (int)port, *p ? p : "/", options, out);
}
