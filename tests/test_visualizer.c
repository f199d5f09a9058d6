/*
 * The WebSocket progress sink against the C dashboard server (the one
 * `harmonics dashboard` runs): frame layout and order, start without a
 * server, server killed and restarted, queue bound with drop-oldest, and that
 * the sink never blocks the caller.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "dashboard_server.h"
#include "harmonics/harmonics.h"
#include "hm_test.h"

static int port;

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static dash_server *start_server(void) {
  dash_server_options o = {"127.0.0.1", port, 100000, NULL};
  char err[256];
  dash_server *s = NULL;
  for (int tries = 0; tries < 50 && !s; tries++) { /* the port may linger a moment after a stop */
    s = dash_server_start(&o, err, sizeof err);
    if (!s) usleep(100000);
  }
  if (!s) fprintf(stderr, "  server: %s\n", err);
  return s;
}

static double f64le(const unsigned char *p) {
  uint64_t u = 0;
  for (int b = 7; b >= 0; b--) u = (u << 8) | p[b];
  double d;
  memcpy(&d, &u, 8);
  return d;
}

/* Pushes steps [first, last] and returns the slowest call in seconds. */
static double push(hm_progress_sink *s, size_t first, size_t last) {
  double worst = 0;
  for (size_t step = first; step <= last; step++) {
    double t = now();
    s->fn(s->user, step, 0.5f * (float)step, 2.0f / (float)step, 0.001f);
    t = now() - t;
    if (t > worst) worst = t;
  }
  return worst;
}

/* The server holds exactly steps [first, last] from frame |at| on. */
static void expect_frames(dash_server *srv, size_t at, size_t first, size_t last) {
  size_t n = last - first + 1;
  unsigned char *buf = malloc(32 * (n + 1));
  size_t got = dash_server_copy_frames(srv, at, buf, n + 1);
  HM_CHECK_EQ(got, n);
  for (size_t i = 0; i < got && i < n; i++) {
    double step = f64le(buf + 32 * i), norm = f64le(buf + 32 * i + 8), loss = f64le(buf + 32 * i + 16),
           lr = f64le(buf + 32 * i + 24);
    size_t want = first + i;
    if (step != (double)want || norm != (double)(0.5f * (float)want) || loss != (double)(2.0f / (float)want) ||
        lr != (double)0.001f) {
      HM_CHECK_MSG(0, "frame %zu: %g %g %g %g, expected step %zu", at + i, step, norm, loss, lr, want);
      break;
    }
  }
  free(buf);
}

static int wait_for(int (*cond)(const hm_progress_sink *), const hm_progress_sink *s, double seconds) {
  double end = now() + seconds;
  while (now() < end) {
    if (cond(s)) return 1;
    usleep(10000);
  }
  return cond(s);
}

static int disconnected(const hm_progress_sink *s) {
  hm_visualizer_stats st;
  hm_websocket_visualizer_stats(s, &st);
  return !st.connected;
}

static void frames_in_order(void) {
  dash_server *srv = start_server();
  if (!srv) return;
  hm_progress_sink s;
  HM_CHECK_OK(hm_websocket_visualizer_create("127.0.0.1", port, "/trainer", &s));
  push(&s, 1, 1000);
  HM_CHECK_OK(hm_websocket_visualizer_flush(&s, 10.0));
  hm_visualizer_stats st;
  hm_websocket_visualizer_stats(&s, &st);
  HM_CHECK_EQ(st.queued, 1000);
  HM_CHECK_EQ(st.written, 1000);
  HM_CHECK_EQ(st.dropped, 0);
  HM_CHECK_EQ(st.connects, 1);
  /* Sent means written to the socket; give the server a moment to read. */
  dash_server_stats ss;
  for (int i = 0; i < 200; i++) {
    dash_server_stats_get(srv, &ss);
    if (ss.frames >= 1000) break;
    usleep(10000);
  }
  expect_frames(srv, 0, 1, 1000);
  hm_websocket_visualizer_free(&s);
  HM_CHECK(s.fn == NULL);
  dash_server_stop(srv);
}

static void server_absent_killed_and_restarted(void) {
  hm_progress_sink s;
  hm_visualizer_options o = hm_visualizer_options_default();
  o.backoff_min_ms = 20;
  o.backoff_max_ms = 200;
  HM_CHECK_OK(hm_websocket_visualizer_create_ex("127.0.0.1", port, "/trainer", &o, &s));
  /* No server yet: the calls return at once and the frames wait. */
  double worst = push(&s, 1, 100);
  HM_CHECK_MSG(worst < 0.05, "a push took %.3f s without a server", worst);
  hm_visualizer_stats st;
  hm_websocket_visualizer_stats(&s, &st);
  HM_CHECK_EQ(st.connected, 0);
  HM_CHECK_EQ(st.pending, 100);
  HM_CHECK_EQ(hm_websocket_visualizer_flush(&s, 0.2), HM_STATUS_UNAVAILABLE);
  HM_CHECK_STR_CONTAINS(hm_last_error(), "100 frames not written");
  /* The server comes up: everything queued arrives, in order. */
  dash_server *srv = start_server();
  if (!srv) return;
  HM_CHECK_OK(hm_websocket_visualizer_flush(&s, 10.0));
  usleep(100000);
  expect_frames(srv, 0, 1, 100);
  /* Killed mid-run: the sink notices, queues, and delivers after a restart. */
  dash_server_stop(srv);
  HM_CHECK(wait_for(disconnected, &s, 10.0));
  worst = push(&s, 101, 150);
  HM_CHECK_MSG(worst < 0.05, "a push took %.3f s with the server gone", worst);
  srv = start_server();
  if (!srv) return;
  HM_CHECK_OK(hm_websocket_visualizer_flush(&s, 10.0));
  usleep(100000);
  expect_frames(srv, 0, 101, 150);
  hm_websocket_visualizer_stats(&s, &st);
  HM_CHECK_EQ(st.connects, 2);
  HM_CHECK(st.disconnects >= 1);
  HM_CHECK_EQ(st.written, 150);
  HM_CHECK_EQ(st.dropped, 0);
  hm_websocket_visualizer_free(&s);
  dash_server_stop(srv);
}

static void queue_keeps_the_newest(void) {
  hm_progress_sink s;
  hm_visualizer_options o = hm_visualizer_options_default();
  o.queue_capacity = 16;
  o.backoff_min_ms = 20;
  o.backoff_max_ms = 100;
  HM_CHECK_OK(hm_websocket_visualizer_create_ex("127.0.0.1", port, "/trainer", &o, &s));
  push(&s, 1, 100);
  hm_visualizer_stats st;
  hm_websocket_visualizer_stats(&s, &st);
  HM_CHECK_EQ(st.queued, 100);
  HM_CHECK_EQ(st.dropped, 84);
  HM_CHECK_EQ(st.pending, 16);
  dash_server *srv = start_server();
  if (!srv) return;
  HM_CHECK_OK(hm_websocket_visualizer_flush(&s, 10.0));
  usleep(100000);
  expect_frames(srv, 0, 85, 100);
  hm_websocket_visualizer_free(&s);
  dash_server_stop(srv);
}

static void bad_arguments(void) {
  hm_progress_sink s;
  HM_CHECK_EQ(hm_websocket_visualizer_create("127.0.0.1", 0, "/trainer", &s), HM_STATUS_INVALID_ARGUMENT);
  HM_CHECK_EQ(hm_websocket_visualizer_create("", 80, "/trainer", &s), HM_STATUS_INVALID_ARGUMENT);
  HM_CHECK_EQ(hm_websocket_visualizer_create("127.0.0.1", 80, "trainer", &s), HM_STATUS_INVALID_ARGUMENT);
  HM_CHECK_EQ(hm_websocket_visualizer_open_url("http://127.0.0.1:80/x", NULL, &s), HM_STATUS_INVALID_ARGUMENT);
  HM_CHECK_STR_CONTAINS(hm_last_error(), "must look like ws://HOST:PORT/PATH");
  HM_CHECK_EQ(hm_websocket_visualizer_open_url("ws://127.0.0.1:99999/x", NULL, &s), HM_STATUS_INVALID_ARGUMENT);
  HM_CHECK_EQ(hm_websocket_visualizer_open_url("ws://:80/x", NULL, &s), HM_STATUS_INVALID_ARGUMENT);
  hm_visualizer_options o = hm_visualizer_options_default();
  o.queue_capacity = 0;
  HM_CHECK_EQ(hm_websocket_visualizer_create_ex("127.0.0.1", 80, "/", &o, &s), HM_STATUS_INVALID_ARGUMENT);
  /* A URL is parsed into host, port and path (nothing listens there). */
  char url[64];
  snprintf(url, sizeof url, "ws://127.0.0.1:%d/trainer", port);
  hm_visualizer_options quick = hm_visualizer_options_default();
  quick.flush_seconds = 0;
  HM_CHECK_OK(hm_websocket_visualizer_open_url(url, &quick, &s));
  s.fn(s.user, 1, 1, 1, 1);
  double t = now();
  hm_websocket_visualizer_free(&s); /* nothing listens: no wait with flush_seconds 0 */
  HM_CHECK(now() - t < 1.0);
}

int main(int argc, char **argv) {
  hm_progress_sink probe;
  hm_status st = hm_websocket_visualizer_create("127.0.0.1", 9, "/", &probe);
  if (st == HM_STATUS_UNIMPLEMENTED) {
    printf("built without libwebsockets: %s\n", hm_last_error());
    return 77;
  }
  if (st == HM_OK) hm_websocket_visualizer_free(&probe);
  port = 20000 + (int)(getpid() % 20000);
  static const hm_test_case cases[] = {
      HM_TEST_CASE(frames_in_order),
      HM_TEST_CASE(server_absent_killed_and_restarted),
      HM_TEST_CASE(queue_keeps_the_newest),
      HM_TEST_CASE(bad_arguments),
  };
  return hm_test_main(argc, argv, cases, sizeof cases / sizeof cases[0]);
}
