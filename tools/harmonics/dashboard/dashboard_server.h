/*
 * The dashboard server of `harmonics dashboard`: one libwebsockets context
 * serving the page (HTTP) and relaying trainer frames (WebSocket path
 * /trainer, or the seed's /metrics) to browsers (path /browser) on one port,
 * with the same history replay as examples/training_dashboard/server.js. It
 * binds exactly the address asked for (checked with getsockname), answers
 * only requests that name it (Host) and WebSocket upgrades from its own page
 * (Origin) or from non-browser trainers. It runs on its own thread so tests
 * can start, stop and restart it.
 */
#ifndef HM_DASHBOARD_SERVER_H_
#define HM_DASHBOARD_SERVER_H_

#include <stddef.h>
#include <stdint.h>

typedef struct dash_server dash_server;

typedef struct dash_server_options {
  const char *host;      /* address or name to bind: NULL = 127.0.0.1 (loopback only) */
  int port;              /* 8080 */
  size_t history_frames; /* frames kept for replay: 1,000,000 */
  /* Trainers must connect with ?token=TOKEN (/trainer or /metrics); NULL =
   * none needed. cmd_dashboard makes one whenever the host is not loopback. */
  const char *token;
} dash_server_options;

typedef struct dash_server_stats {
  uint64_t frames;  /* complete frames received from trainers */
  int trainers, browsers;
} dash_server_stats;

/* Starts serving; returns NULL with a reason in |err| on failure (port in
 * use, a host that does not resolve to an address of this machine, no
 * libwebsockets). */
dash_server *dash_server_start(const dash_server_options *o, char *err, size_t cap);
/* The numeric address it listens on ("127.0.0.1", "::1"). */
const char *dash_server_address(const dash_server *s);
void dash_server_stats_get(dash_server *s, dash_server_stats *out);
/* Copies up to |max| received frames (32 bytes each) starting at frame
 * |first| into |out|; returns how many. */
size_t dash_server_copy_frames(dash_server *s, size_t first, unsigned char *out, size_t max);
/* Stops serving, closes every connection and frees |s|. */
void dash_server_stop(dash_server *s);

#endif /* HM_DASHBOARD_SERVER_H_ */
