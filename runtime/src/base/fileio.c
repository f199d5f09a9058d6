/* Crash-safe file replacement and bounded reads. */
#include "base/fileio.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/base.h"

hm_status hm__fwrite_all(FILE *f, const void *data, size_t n, const char *path) {
  if (n && fwrite(data, 1, n, f) != n)
    return hm__fail(HM_STATUS_IO_ERROR, "%s: write failed: %s", path, strerror(errno));
  return HM_OK;
}

hm_status hm__atomic_write(const char *path, hm_write_fn write, void *ctx) {
  char *tmpl = hm__asprintf("%s.tmp.XXXXXX", path);
  if (!tmpl) return hm__fail(HM_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  int fd = mkstemp(tmpl);
  if (fd < 0) {
    hm_status st = hm__fail(HM_STATUS_IO_ERROR, "%s: cannot create a temporary file: %s", path, strerror(errno));
    free(tmpl);
    return st;
  }
  FILE *f = fdopen(fd, "wb");
  if (!f) {
    close(fd);
    unlink(tmpl);
    free(tmpl);
    return hm__fail(HM_STATUS_IO_ERROR, "%s: fdopen failed", path);
  }
  hm_status st = write(f, ctx);
  if (st == HM_OK && fflush(f) != 0) st = hm__fail(HM_STATUS_IO_ERROR, "%s: flush failed: %s", path, strerror(errno));
  if (st == HM_OK && fsync(fileno(f)) != 0)
    st = hm__fail(HM_STATUS_IO_ERROR, "%s: fsync failed: %s", path, strerror(errno));
  if (fclose(f) != 0 && st == HM_OK) st = hm__fail(HM_STATUS_IO_ERROR, "%s: close failed: %s", path, strerror(errno));
  /* mkstemp creates 0600; give the file the usual permissions. */
  if (st == HM_OK) {
    mode_t mask = umask(0);
    umask(mask);
    chmod(tmpl, 0666 & ~mask);
  }
  if (st == HM_OK && rename(tmpl, path) != 0)
    st = hm__fail(HM_STATUS_IO_ERROR, "%s: cannot rename the temporary file into place: %s", path, strerror(errno));
  if (st != HM_OK) unlink(tmpl);
  if (st == HM_OK) {
    /* Make the rename itself durable. */
    char *dcopy = hm__strdup(path);
    if (dcopy) {
      int dfd = open(dirname(dcopy), O_RDONLY | O_DIRECTORY);
      if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
      }
      free(dcopy);
    }
  }
  free(tmpl);
  return st;
}

hm_status hm__read_file(const char *path, size_t max_bytes, char **out, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f)
    return hm__fail(errno == ENOENT ? HM_STATUS_NOT_FOUND : HM_STATUS_IO_ERROR, "cannot open %s: %s", path,
                    strerror(errno));
  struct stat st;
  if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
    fclose(f);
    return hm__fail(HM_STATUS_IO_ERROR, "%s is not a regular file", path);
  }
  if ((unsigned long long)st.st_size > max_bytes) {
    fclose(f);
    return hm__fail(HM_STATUS_OUT_OF_RANGE, "%s is %lld bytes; the limit is %zu", path, (long long)st.st_size,
                    max_bytes);
  }
  size_t n = (size_t)st.st_size;
  char *buf = malloc(n + 1);
  if (!buf) {
    fclose(f);
    return hm__fail(HM_STATUS_RESOURCE_EXHAUSTED, "out of memory reading %s", path);
  }
  size_t got = fread(buf, 1, n, f);
  int err = ferror(f);
  fclose(f);
  if (got != n || err) {
    free(buf);
    return hm__fail(HM_STATUS_IO_ERROR, "%s: read %zu of %zu bytes", path, got, n);
  }
  buf[n] = '\0';
  *out = buf;
  *len = n;
  return HM_OK;
}
