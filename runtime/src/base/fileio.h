/*
 * File helpers: crash-safe replacement of a file and bounded reads.
 */
#ifndef HM_FILEIO_H_
#define HM_FILEIO_H_

#include <stdio.h>

#include "harmonics/status.h"

/* Writes |path| atomically: |write| fills a temporary file in the same
 * directory, which is flushed, fsync'ed and renamed over |path|. A crash at
 * any point leaves either the old file or the new one, never a mix. */
typedef hm_status (*hm_write_fn)(FILE *f, void *ctx);
hm_status hm__atomic_write(const char *path, hm_write_fn write, void *ctx);

/* Reads a whole file of at most |max_bytes| bytes (caller frees *out). */
hm_status hm__read_file(const char *path, size_t max_bytes, char **out, size_t *len);

/* fwrite that reports failures as IO_ERROR naming |path|. */
hm_status hm__fwrite_all(FILE *f, const void *data, size_t n, const char *path);

#endif /* HM_FILEIO_H_ */
