/*
 * Runs a fuzz harness over files without libFuzzer: the seed corpus and the
 * regression inputs are checked this way by CTest in every build (including
 * the sanitizer build), so a crash once found stays fixed.
 *   replay_<target> FILE_OR_DIR...
 */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int run_file(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    fprintf(stderr, "replay: cannot open %s\n", path);
    return 1;
  }
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  uint8_t *d = malloc(n > 0 ? (size_t)n : 1);
  size_t got = n > 0 ? fread(d, 1, (size_t)n, f) : 0;
  fclose(f);
  LLVMFuzzerTestOneInput(d, got);
  free(d);
  return 0;
}

int main(int argc, char **argv) {
  int files = 0, rc = 0;
  for (int i = 1; i < argc; i++) {
    struct stat st;
    if (stat(argv[i], &st) != 0) continue; /* an absent regression directory is fine */
    if (!S_ISDIR(st.st_mode)) {
      rc |= run_file(argv[i]);
      files++;
      continue;
    }
    DIR *d = opendir(argv[i]);
    struct dirent *e;
    while (d && (e = readdir(d)) != NULL) {
      if (e->d_name[0] == '.') continue;
      char path[4096];
      snprintf(path, sizeof path, "%s/%s", argv[i], e->d_name);
      rc |= run_file(path);
      files++;
    }
    if (d) closedir(d);
  }
  printf("replayed %d input(s)\n", files);
  return rc || files == 0;
}
