/*
 * `harmonics dashboard`'s server (dashboard_server.h) over libwebsockets:
 * HTTP for the embedded page and WebSocket relay on one port. All lws calls
 * happen on the service thread; other threads only read counters and the
 * history under the mutex, and stop the loop with lws_cancel_service.
 */
#include "dashboard_server.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dashboard_assets.h"

enum { FRAME = 32, BATCH_FRAMES = 2048, HTTP_CHUNK = 4096 };

#if HM_HAVE_WEBSOCKETS
#include <libwebsockets.h>

struct dash_server {
  dash_server_options opts;
  pthread_t thread;
  pthread_mutex_t mu;
  atomic_int stop;
  struct lws_context *ctx;
  /* History: frames [base, total) live at ring[i % cap] (guarded by mu). */
  unsigned char *ring;
  uint64_t cap, base, total;
  dash_server_stats stats;
  unsigned char *out; /* LWS_PRE + one batch, used on the service thread only */
};

typedef struct session {
  int role; /* 0 HTTP, 1 trainer, 2 browser */
  uint64_t next;
  unsigned char partial[FRAME];
  size_t partial_len;
  const dash_asset *asset;
  size_t asset_sent;
} session;

static const dash_asset *find_asset(const char *uri) {
  if (!uri || !strcmp(uri, "/") || !*uri) uri = "/index.html";
  for (size_t i = 0; i < dash_n_assets; i++)
    if (!strcmp(dash_assets[i].path, uri)) return &dash_assets[i];
  return NULL;
}

static void append_frame(dash_server *s, const unsigned char *f) {
  pthread_mutex_lock(&s->mu);
  memcpy(s->ring + (s->total % s->cap) * FRAME, f, FRAME);
  s->total++;
  if (s->total - s->base > s->cap) s->base = s->total - s->cap;
  s->stats.frames++;
  pthread_mutex_unlock(&s->mu);
}

static int http_begin(struct lws *wsi, session *ss, const char *uri) {
  unsigned char buf[LWS_PRE + 1024], *start = buf + LWS_PRE, *p = start, *end = buf + sizeof buf - 1;
  ss->asset = find_asset(uri);
  if (!ss->asset) {
    if (lws_return_http_status(wsi, HTTP_STATUS_NOT_FOUND, NULL)) return -1;
    return lws_http_transaction_completed(wsi) ? -1 : 0;
  }
  ss->asset_sent = 0;
  if (lws_add_http_common_headers(wsi, HTTP_STATUS_OK, ss->asset->type, (lws_filepos_t)ss->asset->size, &p, end) ||
      lws_add_http_header_by_name(wsi, (const unsigned char *)"cache-control:", (const unsigned char *)"no-store", 8,
                                  &p, end) ||
      lws_finalize_write_http_header(wsi, start, &p, end))
    return 1;
  lws_callback_on_writable(wsi);
  return 0;
}

static int http_more(struct lws *wsi, session *ss) {
  if (!ss->asset) return 0;
  unsigned char buf[LWS_PRE + HTTP_CHUNK];
  size_t left = ss->asset->size - ss->asset_sent, n = left < HTTP_CHUNK ? left : HTTP_CHUNK;
  memcpy(buf + LWS_PRE, ss->asset->data + ss->asset_sent, n);
  int last = n == left;
  if (lws_write(wsi, buf + LWS_PRE, n, last ? LWS_WRITE_HTTP_FINAL : LWS_WRITE_HTTP) != (int)n) return 1;
  ss->asset_sent += n;
  if (last) {
    ss->asset = NULL;
    return lws_http_transaction_completed(wsi) ? -1 : 0;
  }
  lws_callback_on_writable(wsi);
  return 0;
}

static int browser_more(dash_server *s, struct lws *wsi, session *ss) {
  pthread_mutex_lock(&s->mu);
  if (ss->next < s->base) ss->next = s->base; /* older frames left the history */
  uint64_t avail = s->total - ss->next, n = avail < BATCH_FRAMES ? avail : BATCH_FRAMES;
  for (uint64_t i = 0; i < n; i++) memcpy(s->out + LWS_PRE + i * FRAME, s->ring + ((ss->next + i) % s->cap) * FRAME, FRAME);
  pthread_mutex_unlock(&s->mu);
  if (n == 0) return 0;
  if (lws_write(wsi, s->out + LWS_PRE, (size_t)n * FRAME, LWS_WRITE_BINARY) < (int)(n * FRAME)) return -1;
  ss->next += n;
  if (n == avail) return 0;
  lws_callback_on_writable(wsi);
  return 0;
}

static int callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in, size_t len) {
  struct lws_context *ctx = lws_get_context(wsi);
  dash_server *s = ctx ? lws_context_user(ctx) : NULL;
  session *ss = user;
  switch (reason) {
    case LWS_CALLBACK_HTTP: return http_begin(wsi, ss, in);
    case LWS_CALLBACK_HTTP_WRITEABLE: return http_more(wsi, ss);
    case LWS_CALLBACK_ESTABLISHED: {
      char uri[128] = "";
      if (lws_hdr_copy(wsi, uri, sizeof uri, WSI_TOKEN_GET_URI) < 0) uri[0] = '\0';
      memset(ss, 0, sizeof *ss);
      if (!strcmp(uri, "/trainer")) ss->role = 1;
      else if (!strcmp(uri, "/browser")) ss->role = 2;
      else return -1; /* trainers and browsers are told apart by path */
      pthread_mutex_lock(&s->mu);
      if (ss->role == 1) s->stats.trainers++;
      else s->stats.browsers++;
      ss->next = s->base; /* a browser starts with the whole history */
      pthread_mutex_unlock(&s->mu);
      if (ss->role == 2) lws_callback_on_writable(wsi);
      return 0;
    }
    case LWS_CALLBACK_RECEIVE: {
      if (ss->role != 1 || !lws_frame_is_binary(wsi)) return 0;
      const unsigned char *p = in;
      size_t got = 0;
      while (got < len) {
        size_t take = FRAME - ss->partial_len < len - got ? FRAME - ss->partial_len : len - got;
        memcpy(ss->partial + ss->partial_len, p + got, take);
        ss->partial_len += take;
        got += take;
        if (ss->partial_len == FRAME) {
          append_frame(s, ss->partial);
          ss->partial_len = 0;
        }
      }
      lws_callback_on_writable_all_protocol(ctx, lws_get_protocol(wsi));
      return 0;
    }
    case LWS_CALLBACK_SERVER_WRITEABLE: return ss->role == 2 ? browser_more(s, wsi, ss) : 0;
    case LWS_CALLBACK_CLOSED:
      pthread_mutex_lock(&s->mu);
      if (ss->role == 1) s->stats.trainers--;
      if (ss->role == 2) s->stats.browsers--;
      pthread_mutex_unlock(&s->mu);
      return 0;
    default: break;
  }
  return lws_callback_http_dummy(wsi, reason, user, in, len);
}

static const struct lws_protocols protocols[] = {
    {"hm-dashboard", callback, sizeof(session), 65536, 0, NULL, 0},
    {NULL, NULL, 0, 0, 0, NULL, 0},
};

static void quiet_log(int level, const char *line) {
  if (level & LLL_ERR) fprintf(stderr, "dashboard: %s", line);
}

static void *service_main(void *arg) {
  dash_server *s = arg;
  sigset_t pipe_set;
  sigemptyset(&pipe_set);
  sigaddset(&pipe_set, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &pipe_set, NULL);
  while (!s->stop)
    if (lws_service(s->ctx, 0) < 0) break;
  return NULL;
}

dash_server *dash_server_start(const dash_server_options *o, char *err, size_t cap) {
  dash_server *s = calloc(1, sizeof *s);
  if (!s) {
    snprintf(err, cap, "out of memory");
    return NULL;
  }
  s->opts = *o;
  s->cap = o->history_frames ? o->history_frames : 1000000;
  s->ring = malloc((size_t)s->cap * FRAME);
  s->out = malloc(LWS_PRE + (size_t)BATCH_FRAMES * FRAME);
  pthread_mutex_init(&s->mu, NULL);
  if (!s->ring || !s->out) {
    snprintf(err, cap, "out of memory for %llu frames of history", (unsigned long long)s->cap);
    dash_server_stop(s);
    return NULL;
  }
  lws_set_log_level(LLL_ERR, quiet_log);
  struct lws_context_creation_info info;
  memset(&info, 0, sizeof info);
  info.port = o->port;
  info.iface = o->host;
  info.protocols = protocols;
  info.user = s;
  info.gid = -1;
  info.uid = -1;
  /* The page's scripts and styles are files, so the strict headers fit. */
  info.options = LWS_SERVER_OPTION_HTTP_HEADERS_SECURITY_BEST_PRACTICES_ENFORCE;
  s->ctx = lws_create_context(&info);
  if (!s->ctx) {
    snprintf(err, cap, "cannot listen on %s:%d (in use, or not an address of this host)", o->host ? o->host : "*",
             o->port);
    dash_server_stop(s);
    return NULL;
  }
  if (pthread_create(&s->thread, NULL, service_main, s) != 0) {
    snprintf(err, cap, "cannot start the server thread");
    lws_context_destroy(s->ctx);
    s->ctx = NULL;
    dash_server_stop(s);
    return NULL;
  }
  return s;
}

void dash_server_stats_get(dash_server *s, dash_server_stats *out) {
  pthread_mutex_lock(&s->mu);
  *out = s->stats;
  pthread_mutex_unlock(&s->mu);
}

size_t dash_server_copy_frames(dash_server *s, size_t first, unsigned char *out, size_t max) {
  pthread_mutex_lock(&s->mu);
  size_t n = 0;
  for (uint64_t i = first; i < s->total && n < max; i++)
    if (i >= s->base) memcpy(out + FRAME * n++, s->ring + (i % s->cap) * FRAME, FRAME);
  pthread_mutex_unlock(&s->mu);
  return n;
}

void dash_server_stop(dash_server *s) {
  if (!s) return;
  if (s->ctx) {
    s->stop = 1;
    lws_cancel_service(s->ctx);
    pthread_join(s->thread, NULL);
    lws_context_destroy(s->ctx);
  }
  pthread_mutex_destroy(&s->mu);
  free(s->ring);
  free(s->out);
  free(s);
}

#else

dash_server *dash_server_start(const dash_server_options *o, char *err, size_t cap) {
  (void)o;
  snprintf(err, cap, "this build of Harmonics has no libwebsockets (install libwebsockets-dev and rebuild)");
  return NULL;
}
void dash_server_stats_get(dash_server *s, dash_server_stats *out) {
  (void)s;
  memset(out, 0, sizeof *out);
}
size_t dash_server_copy_frames(dash_server *s, size_t first, unsigned char *out, size_t max) {
  (void)s, (void)first, (void)out, (void)max;
  return 0;
}
void dash_server_stop(dash_server *s) { (void)s; }

#endif
