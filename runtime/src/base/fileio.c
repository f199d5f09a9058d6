/* Crash-safe file replacement and bounded reads. */
#include "base/fileio.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <signal.h>
#include <stdatomic.h>
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

/* Temporaries are named "<target>.tmp.<pid>.<n>" so a later save can tell a
 * dead writer's debris (its pid is gone) from a live writer's file. */
static atomic_uint temp_counter;

/* Removes "<base>.tmp.<pid>.<n>" files in |dir| left by processes that no
 * longer exist (a writer killed mid-save). */
static void remove_stale_temporaries(const char *dir, const char *base) {
  DIR *d = opendir(dir);
  if (!d) return;
  size_t blen = strlen(base);
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    const char *n = e->d_name;
    if (strncmp(n, base, blen) != 0 || strncmp(n + blen, ".tmp.", 5) != 0) continue;
    char *end = NULL;
    long pid = strtol(n + blen + 5, &end, 10);
    if (pid <= 0 || !end || *end != '.') continue;
    if (kill((pid_t)pid, 0) == 0 || errno != ESRCH) continue; /* alive, or not ours to judge */
    char *full = hm__asprintf("%s/%s", dir, n);
    if (full) unlink(full);
    hm__free(full);
  }
  closedir(d);
}

/* Creates the temporary file for |path|: unnamed (O_TMPFILE) where the file
 * system supports it, so a kill leaves nothing; else named. The kernel
 * applies the umask to the 0666 mode, so no umask is read or changed. */
static int open_temporary(const char *dir, const char *tmpname, int *unnamed) {
#ifdef O_TMPFILE
  int fd = open(dir, O_TMPFILE | O_WRONLY | O_CLOEXEC, 0666);
  if (fd >= 0) {
    *unnamed = 1;
    return fd;
  }
#endif
  *unnamed = 0;
  return open(tmpname, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0666);
}

hm_status hm__atomic_write(const char *path, hm_write_fn write, void *ctx) {
  char *dcopy = hm__strdup(path), *bcopy = hm__strdup(path);
  char *tmpname = hm__asprintf("%s.tmp.%ld.%u", path, (long)getpid(), atomic_fetch_add(&temp_counter, 1));
  if (!dcopy || !bcopy || !tmpname) {
    hm__free(dcopy);
    hm__free(bcopy);
    hm__free(tmpname);
    return hm__fail(HM_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  }
  const char *dir = dirname(dcopy), *base = basename(bcopy);
  remove_stale_temporaries(dir, base);
  int unnamed = 0, linked = 0;
  int fd = open_temporary(dir, tmpname, &unnamed);
  hm_status st = HM_OK;
  FILE *f = NULL;
  if (fd < 0) st = hm__fail(HM_STATUS_IO_ERROR, "%s: cannot create a temporary file: %s", path, strerror(errno));
  else if (!(f = fdopen(fd, "wb"))) {
    st = hm__fail(HM_STATUS_IO_ERROR, "%s: fdopen failed: %s", path, strerror(errno));
    close(fd);
  }
  if (f) {
    st = write(f, ctx);
    if (st == HM_OK && fflush(f) != 0) st = hm__fail(HM_STATUS_IO_ERROR, "%s: flush failed: %s", path, strerror(errno));
    if (st == HM_OK && fsync(fileno(f)) != 0)
      st = hm__fail(HM_STATUS_IO_ERROR, "%s: fsync failed: %s", path, strerror(errno));
    if (st == HM_OK && unnamed) {
      /* Give the finished file a name, then move it into place. */
      char proc[64];
      snprintf(proc, sizeof proc, "/proc/self/fd/%d", fileno(f));
      if (linkat(AT_FDCWD, proc, AT_FDCWD, tmpname, AT_SYMLINK_FOLLOW) != 0)
        st = hm__fail(HM_STATUS_IO_ERROR, "%s: cannot link the temporary file: %s", path, strerror(errno));
    }
    linked = st == HM_OK || !unnamed;
    if (fclose(f) != 0 && st == HM_OK) st = hm__fail(HM_STATUS_IO_ERROR, "%s: close failed: %s", path, strerror(errno));
  }
  if (st == HM_OK && rename(tmpname, path) != 0)
    st = hm__fail(HM_STATUS_IO_ERROR, "%s: cannot rename the temporary file into place: %s", path, strerror(errno));
  if (st != HM_OK && fd >= 0 && linked) unlink(tmpname);
  if (st == HM_OK) {
    /* Make the rename itself durable (EINVAL: the file system cannot sync a directory). */
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0) st = hm__fail(HM_STATUS_IO_ERROR, "%s: cannot open its directory to sync it: %s", path, strerror(errno));
    else {
      if (fsync(dfd) != 0 && errno != EINVAL)
        st = hm__fail(HM_STATUS_IO_ERROR, "%s: syncing its directory failed: %s", path, strerror(errno));
      close(dfd);
    }
  }
  hm__free(dcopy);
  hm__free(bcopy);
  hm__free(tmpname);
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
  char *buf = hm__malloc(n + 1);
  if (!buf) {
    fclose(f);
    return hm__fail(HM_STATUS_RESOURCE_EXHAUSTED, "out of memory reading %s", path);
  }
  size_t got = fread(buf, 1, n, f);
  int err = ferror(f);
  fclose(f);
  if (got != n || err) {
    hm__free(buf);
    return hm__fail(HM_STATUS_IO_ERROR, "%s: read %zu of %zu bytes", path, got, n);
  }
  buf[n] = '\0';
  *out = buf;
  *len = n;
  return HM_OK;
}
