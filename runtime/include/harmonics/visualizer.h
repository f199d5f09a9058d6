/*
 * The live training visualizer: a progress sink that streams every update to
 * a WebSocket server (the dashboards of examples/training_dashboard and
 * `harmonics dashboard`). Each update is one binary frame of four
 * little-endian float64 values: step, gradient L2 norm, loss, learning rate
 * (docs/formats.md).
 *
 * It never slows or breaks training: the sink only copies the update into a
 * bounded queue (the oldest frame is dropped when it is full, and counted); a
 * background thread owns the connection, reconnects with exponential backoff
 * when the server is absent or goes away, and sends what is queued once it is
 * back. Nothing in the training thread blocks on the network, and a broken
 * connection never raises SIGPIPE.
 */
#ifndef HARMONICS_VISUALIZER_H_
#define HARMONICS_VISUALIZER_H_

#include <stddef.h>
#include <stdint.h>

#include "harmonics/status.h"
#include "harmonics/training.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct hm_visualizer_options {
  size_t struct_size;
  size_t queue_capacity;   /* frames kept while the server is unreachable: 65536 */
  unsigned backoff_min_ms; /* first reconnect delay: 100, doubling ... */
  unsigned backoff_max_ms; /* ... up to 2000 */
  double flush_seconds;    /* _free waits this long for queued frames to go out: 2 */
  void *reserved[4];
} hm_visualizer_options;

HM_API hm_visualizer_options hm_visualizer_options_default(void);

/* Starts a visualizer that sends to ws://host:port/path and returns its sink
 * in |out| (assign it to hm_fit_options.progress). The server need not be
 * running. Free with hm_websocket_visualizer_free. UNIMPLEMENTED when this
 * build has no libwebsockets. */
HM_API HM_MUST_USE hm_status hm_websocket_visualizer_create(const char *host, int port, const char *path,
                                                            hm_progress_sink *out);
HM_API HM_MUST_USE hm_status hm_websocket_visualizer_create_ex(const char *host, int port, const char *path,
                                                               const hm_visualizer_options *options,
                                                               hm_progress_sink *out);
/* Parses "ws://HOST:PORT/PATH" (port default 80, path default "/") and
 * starts a visualizer for it. */
HM_API HM_MUST_USE hm_status hm_websocket_visualizer_open_url(const char *url, const hm_visualizer_options *options,
                                                              hm_progress_sink *out);

typedef struct hm_visualizer_stats {
  uint64_t queued;      /* updates given to the sink */
  /* Frames written to the connection's socket. The protocol has no
   * acknowledgement, so this is not proof of delivery: a server that closes
   * or never reads still counts here until the socket reports the failure. */
  uint64_t written;
  uint64_t dropped;     /* frames dropped because the queue was full */
  uint64_t pending;     /* frames waiting in the queue (never written) */
  uint64_t connects;    /* successful connections */
  uint64_t disconnects; /* connections lost */
  int connected;
} hm_visualizer_stats;

HM_API void hm_websocket_visualizer_stats(const hm_progress_sink *sink, hm_visualizer_stats *out);
/* Waits up to |seconds| for every queued frame to be sent. HM_OK when the
 * queue is empty; UNAVAILABLE (frames still queued) when no server took them
 * in time. Training is not affected either way. */
HM_API HM_MUST_USE hm_status hm_websocket_visualizer_flush(const hm_progress_sink *sink, double seconds);
/* Waits up to the flush time for queued frames to be sent, closes the
 * connection and frees the visualizer; clears |sink|. */
HM_API void hm_websocket_visualizer_free(hm_progress_sink *sink);

#ifdef __cplusplus
}
#endif
#endif /* HARMONICS_VISUALIZER_H_ */
