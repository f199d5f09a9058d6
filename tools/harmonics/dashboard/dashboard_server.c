/*
 * `harmonics dashboard`'s server (dashboard_server.h) over libwebsockets:
 * HTTP for the embedded page and WebSocket relay on one port. All lws calls
 * happen on the service thread; other threads only read counters and the
 * history under the mutex, and stop the loop with lws_cancel_service.
 */
#include "dashboard_server.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>
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
  char address[INET6_ADDRSTRLEN]; /* numeric, what the listening socket is bound to */
  char token[130];
  /* Host header values that name this server (with and without the port). */
  char hosts[12][300];
  size_t n_hosts;
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

/* ===== Who may talk to the server ===== */

static void allow_host(dash_server *s, const char *name) {
  if (!name || !*name || s->n_hosts + 2 > sizeof s->hosts / sizeof s->hosts[0]) return;
  int v6 = strchr(name, ':') != NULL && name[0] != '[';
  snprintf(s->hosts[s->n_hosts++], sizeof s->hosts[0], v6 ? "[%s]" : "%s", name);
  snprintf(s->hosts[s->n_hosts++], sizeof s->hosts[0], v6 ? "[%s]:%d" : "%s:%d", name, s->opts.port);
}

static int is_loopback(const char *address) { return !strcmp(address, "127.0.0.1") || !strcmp(address, "::1"); }

/* The Host header names this server: a page under another name (DNS
 * rebinding) gets nothing. */
static int host_ok(dash_server *s, struct lws *wsi, char *host, size_t cap) {
  host[0] = '\0';
  if (lws_hdr_total_length(wsi, WSI_TOKEN_HOST) >= (int)cap || lws_hdr_copy(wsi, host, (int)cap, WSI_TOKEN_HOST) <= 0)
    return 0;
  for (size_t i = 0; i < s->n_hosts; i++)
    if (!strcasecmp(host, s->hosts[i])) return 1;
  return 0;
}

/* A WebSocket upgrade: a browser (it always sends Origin) only from our own
 * page under one of our names; a trainer (no Origin) needs the token when
 * there is one. */
static int upgrade_ok(dash_server *s, struct lws *wsi) {
  char uri[128] = "", origin[320] = "", host[300] = "";
  if (lws_hdr_copy(wsi, uri, sizeof uri, WSI_TOKEN_GET_URI) <= 0) return 0;
  int trainer = !strcmp(uri, "/trainer") || !strcmp(uri, "/metrics");
  if (!trainer && strcmp(uri, "/browser") != 0) return 0;
  if (lws_hdr_total_length(wsi, WSI_TOKEN_ORIGIN) > 0) {
    if (lws_hdr_total_length(wsi, WSI_TOKEN_ORIGIN) >= (int)sizeof origin ||
        lws_hdr_copy(wsi, origin, sizeof origin, WSI_TOKEN_ORIGIN) <= 0 || !host_ok(s, wsi, host, sizeof host))
      return 0;
    char own[320];
    snprintf(own, sizeof own, "http://%s", host);
    if (strcasecmp(origin, own) != 0) return 0;
  }
  if (trainer && s->token[0]) {
    char buf[200];
    const char *t = lws_get_urlarg_by_name(wsi, "token=", buf, sizeof buf);
    if (!t || strcmp(t, s->token) != 0) return 0;
  }
  return 1;
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
    case LWS_CALLBACK_HTTP: {
      char host[300];
      if (!host_ok(s, wsi, host, sizeof host)) {
        if (lws_return_http_status(wsi, HTTP_STATUS_FORBIDDEN, NULL)) return -1;
        return lws_http_transaction_completed(wsi) ? -1 : 0;
      }
      return http_begin(wsi, ss, in);
    }
    case LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION: return upgrade_ok(s, wsi) ? 0 : 1;
    case LWS_CALLBACK_HTTP_WRITEABLE: return http_more(wsi, ss);
    case LWS_CALLBACK_ESTABLISHED: {
      char uri[128] = "";
      if (lws_hdr_copy(wsi, uri, sizeof uri, WSI_TOKEN_GET_URI) < 0) uri[0] = '\0';
      memset(ss, 0, sizeof *ss);
      if (!strcmp(uri, "/trainer") || !strcmp(uri, "/metrics")) ss->role = 1;
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

/* The numeric address |host| (an address or a name) stands for. */
static int resolve_host(const char *host, char *out, size_t out_cap, int *family, char *err, size_t cap) {
  struct addrinfo hints, *res = NULL;
  memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_ADDRCONFIG;
  int rc = getaddrinfo(host, NULL, &hints, &res);
  if (rc != 0 || !res) {
    snprintf(err, cap, "--host '%s' does not resolve: %s", host, rc ? gai_strerror(rc) : "no address");
    return 1;
  }
  /* A name with both families: the first, as a client would pick. */
  rc = getnameinfo(res->ai_addr, res->ai_addrlen, out, (socklen_t)out_cap, NULL, 0, NI_NUMERICHOST);
  *family = res->ai_family;
  freeaddrinfo(res);
  if (rc != 0) {
    snprintf(err, cap, "--host '%s': %s", host, gai_strerror(rc));
    return 1;
  }
  return 0;
}

/* Reads back what the listening socket of our port is bound to: exactly the
 * address asked for, or the start fails (never a wildcard by surprise). */
static int check_bound(dash_server *s, char *err, size_t cap) {
  DIR *d = opendir("/proc/self/fd");
  if (!d) {
    snprintf(err, cap, "cannot check the listening socket: /proc/self/fd: unreadable");
    return 1;
  }
  int found = 0;
  char wrong[INET6_ADDRSTRLEN] = "";
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    int fd = atoi(e->d_name), listening = 0;
    socklen_t len = sizeof listening;
    if (e->d_name[0] == '.' || fd == dirfd(d)) continue;
    if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) != 0 || !listening) continue;
    struct sockaddr_storage sa;
    socklen_t sl = sizeof sa;
    if (getsockname(fd, (struct sockaddr *)&sa, &sl) != 0) continue;
    int port = sa.ss_family == AF_INET    ? ntohs(((struct sockaddr_in *)&sa)->sin_port)
               : sa.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&sa)->sin6_port)
                                          : -1;
    if (port != s->opts.port) continue;
    char addr[INET6_ADDRSTRLEN] = "";
    if (getnameinfo((struct sockaddr *)&sa, sl, addr, sizeof addr, NULL, 0, NI_NUMERICHOST) != 0) continue;
    found++;
    if (strcmp(addr, s->address) != 0) snprintf(wrong, sizeof wrong, "%s", addr);
  }
  closedir(d);
  if (!found) snprintf(err, cap, "listening on %s:%d failed: no listening socket", s->address, s->opts.port);
  else if (wrong[0])
    snprintf(err, cap, "asked to listen on %s:%d but the socket is bound to %s", s->address, s->opts.port, wrong);
  return !found || wrong[0];
}

const char *dash_server_address(const dash_server *s) { return s->address; }

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
  int family = 0;
  if (resolve_host(o->host ? o->host : "127.0.0.1", s->address, sizeof s->address, &family, err, cap)) {
    dash_server_stop(s);
    return NULL;
  }
  snprintf(s->token, sizeof s->token, "%s", o->token ? o->token : "");
  allow_host(s, "localhost");
  allow_host(s, "127.0.0.1");
  allow_host(s, "::1");
  allow_host(s, s->address);
  allow_host(s, o->host);
  if (!is_loopback(s->address)) {
    char name[256];
    if (gethostname(name, sizeof name) == 0) allow_host(s, name);
  }
  lws_set_log_level(LLL_ERR, quiet_log);
  struct lws_context_creation_info info;
  memset(&info, 0, sizeof info);
  info.port = o->port;
  info.iface = s->address;
  info.protocols = protocols;
  info.user = s;
  info.gid = -1;
  info.uid = -1;
  /* The page's scripts and styles are files, so the strict headers fit. */
  info.options = LWS_SERVER_OPTION_HTTP_HEADERS_SECURITY_BEST_PRACTICES_ENFORCE;
  /* lws binds the IPv6 wildcard for an IPv4 address unless told not to. */
  if (family == AF_INET) info.options |= LWS_SERVER_OPTION_DISABLE_IPV6;
  s->ctx = lws_create_context(&info);
  if (!s->ctx) {
    snprintf(err, cap, "cannot listen on %s:%d (in use, or not an address of this host)", s->address, o->port);
    dash_server_stop(s);
    return NULL;
  }
  if (check_bound(s, err, cap)) {
    lws_context_destroy(s->ctx);
    s->ctx = NULL;
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
const char *dash_server_address(const dash_server *s) {
  (void)s;
  return "";
}

#endif
