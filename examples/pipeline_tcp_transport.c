/*
 * A pipeline transport of your own: two stages in two processes that talk
 * over one TCP connection (docs/distributed.md "A transport of your own").
 *
 *   pipeline_tcp_transport 0 PORT MODEL.hmx CUT X.csv Y.csv             (listens on 127.0.0.1:PORT)
 *   pipeline_tcp_transport 1 PORT MODEL.hmx CUT X.csv Y.csv OUT.st      (connects, saves the weights)
 *
 * MODEL's producers x and y read X.csv and Y.csv; the model is cut after
 * layer CUT. Both processes train 3 epochs (or EPOCHS, an 8th argument),
 * updates of 16 rows in 4 micro-batches, Adam lr 0.01, seed 1: the weights
 * stage 1 saves are byte for byte those of `harmonics train MODEL --data
 * x=csv:X.csv --data y=csv:Y.csv --batch 4 --accumulate 4 --optimizer adam
 * --lr 0.01 --seed 1 --epochs 3 --threads 1` in one process.
 *
 * The transport (the first part of this file) sends the 64-byte header of
 * hm_boundary_header_encode and then the payload; a reader thread drains
 * the socket into a queue, so a send never waits for the peer to be ready.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "harmonics/harmonics.h"

/* ===== The transport: one connection to the one other stage ===== */

typedef struct message {
  hm_boundary_header h;
  unsigned char *payload;
  struct message *next;
} message;

typedef struct tcp_link {
  hm_pipeline_transport t;
  int fd;
  size_t peer;
  pthread_t reader;
  pthread_mutex_t lock;
  pthread_cond_t arrived;
  message *head, *tail;
  int closed; /* the peer hung up or sent garbage: why */
  char why[256];
} tcp_link;

static int io_all(int fd, void *buf, size_t n, int writing) {
  for (unsigned char *p = buf; n;) {
    ssize_t k = writing ? send(fd, p, n, MSG_NOSIGNAL) : recv(fd, p, n, 0);
    if (k <= 0) return -1;
    p += k, n -= (size_t)k;
  }
  return 0;
}

static void *reader_main(void *arg) {
  tcp_link *l = arg;
  for (;;) {
    unsigned char wire[HM_BOUNDARY_HEADER_BYTES];
    message *m = calloc(1, sizeof *m);
    const char *why = "closed the connection";
    if (!m || io_all(l->fd, wire, sizeof wire, 0)) goto closed;
    if (hm_boundary_header_decode(wire, &m->h) != HM_OK) {
      why = hm_last_error();
      goto closed;
    }
    if (m->h.bytes > ((uint64_t)1 << 32) || !(m->payload = malloc(m->h.bytes + 1))) goto closed;
    if (io_all(l->fd, m->payload, (size_t)m->h.bytes, 0)) goto closed;
    pthread_mutex_lock(&l->lock);
    if (l->tail) l->tail->next = m;
    else l->head = m;
    l->tail = m;
    pthread_cond_broadcast(&l->arrived);
    pthread_mutex_unlock(&l->lock);
    continue;
  closed:
    if (m) free(m->payload);
    free(m);
    pthread_mutex_lock(&l->lock);
    l->closed = 1;
    snprintf(l->why, sizeof l->why, "stage %zu %s", l->peer, why);
    pthread_cond_broadcast(&l->arrived);
    pthread_mutex_unlock(&l->lock);
    return NULL;
  }
}

static hm_status tcp_send(void *self, size_t to, const hm_boundary_header *h, const void *payload, double timeout) {
  tcp_link *l = self;
  unsigned char wire[HM_BOUNDARY_HEADER_BYTES];
  (void)timeout, (void)to; /* the reader on the other side keeps the socket drained */
  hm_boundary_header_encode(h, wire);
  if (io_all(l->fd, wire, sizeof wire, 1) || io_all(l->fd, (void *)payload, (size_t)h->bytes, 1))
    return hm_set_error(HM_STATUS_UNAVAILABLE, "stage %zu is gone (the connection broke)", l->peer);
  return HM_OK;
}

static hm_status tcp_recv(void *self, size_t from, hm_boundary_header *h, void *payload, size_t capacity,
                          double timeout) {
  tcp_link *l = self;
  struct timespec deadline;
  clock_gettime(CLOCK_REALTIME, &deadline);
  deadline.tv_sec += (time_t)timeout;
  (void)from;
  pthread_mutex_lock(&l->lock);
  int rc = 0;
  while (!l->head && !l->closed && rc == 0) rc = pthread_cond_timedwait(&l->arrived, &l->lock, &deadline);
  message *m = l->head;
  if (m && !(l->head = m->next)) l->tail = NULL;
  pthread_mutex_unlock(&l->lock);
  if (!m && l->closed) return hm_set_error(HM_STATUS_UNAVAILABLE, "%s", l->why);
  if (!m) return hm_set_error(HM_STATUS_UNAVAILABLE, "no message from stage %zu within %g s", l->peer, timeout);
  *h = m->h;
  hm_status st = HM_OK;
  if (m->h.bytes > capacity) st = hm_set_error(HM_STATUS_OUT_OF_RANGE, "a message larger than expected");
  else memcpy(payload, m->payload, (size_t)m->h.bytes);
  free(m->payload);
  free(m);
  return st;
}

static void tcp_fail(void *self, const char *why) {
  (void)why;
  shutdown(((tcp_link *)self)->fd, SHUT_RDWR); /* the peer's reader sees the end at once */
}

/* Stage 0 listens, stage 1 connects (retrying for 10 s while 0 starts). */
static int tcp_open(tcp_link *l, size_t stage, int port) {
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  int one = 1, s = -1;
  if (stage == 0) {
    s = socket(AF_INET, SOCK_STREAM, 0);
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(s, (struct sockaddr *)&a, sizeof a) || listen(s, 1)) return -1;
    l->fd = accept(s, NULL, NULL);
    close(s);
  } else {
    for (int tries = 0; tries < 100 && l->fd <= 0; tries++) {
      s = socket(AF_INET, SOCK_STREAM, 0);
      if (connect(s, (struct sockaddr *)&a, sizeof a) == 0) l->fd = s;
      else close(s), nanosleep(&(struct timespec){0, 100000000}, NULL);
    }
  }
  if (l->fd <= 0) return -1;
  setsockopt(l->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  l->peer = 1 - stage;
  pthread_mutex_init(&l->lock, NULL);
  pthread_cond_init(&l->arrived, NULL);
  l->t = (hm_pipeline_transport){sizeof l->t, l, tcp_send, tcp_recv, tcp_fail};
  return pthread_create(&l->reader, NULL, reader_main, l);
}

static void tcp_close(tcp_link *l) {
  shutdown(l->fd, SHUT_RDWR);
  pthread_join(l->reader, NULL);
  close(l->fd);
  while (l->head) {
    message *m = l->head;
    l->head = m->next;
    free(m->payload);
    free(m);
  }
}

/* ===== A stage of a training run ===== */

static int fail(const char *what) {
  fprintf(stderr, "pipeline_tcp_transport: %s: %s\n", what, hm_last_error());
  return 1;
}

int main(int argc, char **argv) {
  if (argc < 7 || (argv[1][0] != '0' && argv[1][0] != '1') || argv[1][1]) {
    fprintf(stderr, "usage: %s 0|1 PORT MODEL.hmx CUT X.csv Y.csv [OUT.safetensors|- [EPOCHS]]\n", argv[0]);
    return 2;
  }
  size_t stage = (size_t)(argv[1][0] - '0');
  hm_graph *g = NULL;
  hm_producer *x = NULL, *y = NULL;
  hm_partition *p = NULL;
  const char *cuts[1] = {argv[4]};
  if (hm_graph_load_dsl(argv[3], &g) || hm_producer_open_csv(argv[5], &x) || hm_producer_open_csv(argv[6], &y) ||
      hm_graph_bind_producer(g, "x", x) || hm_graph_bind_producer(g, "y", y) ||
      hm_graph_partition_by_layer(g, cuts, 1, &p))
    return fail("setting up");
  if (hm_partition_stage_count(p) != 2) return fail("this example runs two stages");
  tcp_link link;
  memset(&link, 0, sizeof link);
  if (tcp_open(&link, stage, atoi(argv[2]))) {
    perror("pipeline_tcp_transport: connecting the stages");
    return 1;
  }
  hm_pipeline_stage ps = hm_pipeline_stage_default();
  ps.partition = p;
  ps.stage = stage;
  ps.transport = &link.t;
  ps.timeout_seconds = 30;
  hm_fit_options o = hm_fit_options_default();
  o.optimizer = HM_OPTIMIZER_ADAM;
  o.learning_rate = 0.01f;
  o.batch_size = 4;       /* rows per micro-batch */
  o.accumulate_steps = 4; /* micro-batches per update */
  o.seed = 1;
  o.threads = 1;
  o.pipeline = &ps;
  hm_cycle_state *st = NULL;
  hm_weights *whole = NULL;
  int rc = 0;
  size_t epochs = argc > 8 ? (size_t)atol(argv[8]) : 3;
  if (hm_graph_fit(hm_partition_stage(p, stage), epochs, NULL, &o, &st)) rc = fail("training");
  else if (hm_pipeline_gather_weights(&ps, hm_cycle_state_weights(st), &whole)) rc = fail("gathering the weights");
  else if (whole && argc > 7 && strcmp(argv[7], "-") && hm_weights_save_safetensors(whole, argv[7])) rc = fail("saving");
  else if (stage == 1) printf("stage 1: %zu updates, last loss %.4f\n", hm_cycle_state_step(st), hm_cycle_state_loss(st));
  tcp_close(&link);
  hm_weights_free(whole);
  hm_cycle_state_free(st);
  hm_partition_free(p);
  hm_graph_free(g);
  hm_producer_free(x);
  hm_producer_free(y);
  return rc;
}
