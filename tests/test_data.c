/*
 * Producers (IDX raw and gzip'ed, CSV, arrays, limits) and safetensors, with
 * their bad-input errors.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/resource.h>
#include <zlib.h>

#include "harmonics/harmonics.h"
#include "hm_test.h"

static char tmpdir[256];

static const char *path_of(const char *name) {
  static char buf[512];
  snprintf(buf, sizeof buf, "%s/%s", tmpdir, name);
  return buf;
}

static void write_bytes(const char *name, const void *data, size_t n, int gz) {
  const char *p = path_of(name);
  if (gz) {
    gzFile f = gzopen(p, "wb");
    gzwrite(f, data, (unsigned)n);
    gzclose(f);
  } else {
    FILE *f = fopen(p, "wb");
    fwrite(data, 1, n, f);
    fclose(f);
  }
}

static void write_text(const char *name, const char *text) { write_bytes(name, text, strlen(text), 0); }

/* IDX images 3 x 2 x 2 and labels {2, 0, 1}. */
static size_t idx_images(unsigned char *buf) {
  unsigned char h[] = {0, 0, 8, 3, 0, 0, 0, 3, 0, 0, 0, 2, 0, 0, 0, 2};
  memcpy(buf, h, sizeof h);
  for (int i = 0; i < 12; i++) buf[16 + i] = (unsigned char)(i * 20);
  return 28;
}

static void idx_files_load(void) {
  unsigned char img[64];
  size_t n = idx_images(img);
  unsigned char lab[] = {0, 0, 8, 1, 0, 0, 0, 3, 2, 0, 1};
  for (int gz = 0; gz < 2; gz++) {
    write_bytes("img.idx", img, n, gz);
    write_bytes("lab.idx", lab, sizeof lab, gz);
    hm_producer *p = NULL, *l = NULL;
    HM_CHECK_OK(hm_producer_open_idx(path_of("img.idx"), &p));
    HM_CHECK_OK(hm_producer_open_idx(path_of("lab.idx"), &l));
    hm_producer_info info;
    HM_CHECK_OK(hm_producer_info_get(p, &info));
    HM_CHECK_EQ(info.count, 3);
    HM_CHECK_EQ(info.width, 4);
    HM_CHECK_EQ(info.dtype, HM_ABI_DTYPE_U8);
    HM_CHECK_NEAR(info.scale, 1.0 / 255.0, 1e-9);
    unsigned char rows[12];
    size_t got = 0;
    HM_CHECK_OK(hm_producer_next_batch(p, 2, rows, &got));
    HM_CHECK_EQ(got, 2);
    HM_CHECK_EQ(rows[5], 100);
    HM_CHECK_OK(hm_producer_next_batch(p, 5, rows, &got));
    HM_CHECK_EQ(got, 1);
    HM_CHECK_EQ(rows[0], 160);
    HM_CHECK_OK(hm_producer_next_batch(p, 5, rows, &got));
    HM_CHECK_EQ(got, 0);
    HM_CHECK_OK(hm_producer_reset(p));
    HM_CHECK_OK(hm_producer_next_batch(p, 1, rows, &got));
    HM_CHECK_EQ(rows[1], 20);
    HM_CHECK_OK(hm_producer_info_get(l, &info));
    HM_CHECK_EQ(info.dtype, HM_ABI_DTYPE_I32);
    HM_CHECK_EQ(info.num_classes, 3);
    int32_t labels[3];
    HM_CHECK_OK(hm_producer_next_batch(l, 3, labels, &got));
    HM_CHECK(labels[0] == 2 && labels[1] == 0 && labels[2] == 1);
    /* A limit keeps the first samples. */
    hm_producer *lim = NULL;
    HM_CHECK_OK(hm_producer_limit(p, 2, &lim));
    HM_CHECK_OK(hm_producer_info_get(lim, &info));
    HM_CHECK_EQ(info.count, 2);
    hm_producer_free(lim);
    hm_producer_free(p);
    hm_producer_free(l);
  }
}

static void expect_idx_error(const void *data, size_t n, hm_status status, const char *needle) {
  write_bytes("bad.idx", data, n, 0);
  hm_producer *p = NULL;
  HM_CHECK_EQ(hm_producer_open_idx(path_of("bad.idx"), &p), status);
  HM_CHECK_STR_CONTAINS(hm_last_error(), needle);
  HM_CHECK_STR_CONTAINS(hm_last_error(), "bad.idx");
  HM_CHECK(p == NULL);
}

static void idx_bad_files(void) {
  unsigned char img[64];
  size_t n = idx_images(img);
  expect_idx_error(img, n - 3, HM_STATUS_DATA_LOSS, "truncated");
  unsigned char extra[80];
  memcpy(extra, img, n);
  extra[n] = 7;
  expect_idx_error(extra, n + 1, HM_STATUS_DATA_LOSS, "the file has more");
  unsigned char magic[64];
  memcpy(magic, img, n);
  magic[0] = 1;
  expect_idx_error(magic, n, HM_STATUS_DATA_LOSS, "not an IDX file");
  memcpy(magic, img, n);
  magic[2] = 0x0d;
  expect_idx_error(magic, n, HM_STATUS_UNIMPLEMENTED, "element type 0x0d");
  memcpy(magic, img, n);
  magic[3] = 9;
  expect_idx_error(magic, n, HM_STATUS_DATA_LOSS, "9 dimensions");
  /* A header that claims 2^32-1 samples of 255x255 values cannot allocate it. */
  unsigned char huge[] = {0, 0, 8, 3, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0xff, 0, 0, 0, 0xff, 1, 2, 3};
  expect_idx_error(huge, sizeof huge, HM_STATUS_DATA_LOSS, "exceed the");
  unsigned char zero[] = {0, 0, 8, 1, 0, 0, 0, 0};
  expect_idx_error(zero, sizeof zero, HM_STATUS_DATA_LOSS, "dimension 0 is zero");
  expect_idx_error(img, 2, HM_STATUS_DATA_LOSS, "truncated");
  /* A gzip bomb: a header for 10 labels, then 64 MiB of zeros (64 KiB
   * compressed). Inflation stops one byte past what the header needs: the
   * process does not grow by the bomb's size. */
  const char *bomb = path_of("bomb-idx1-ubyte.gz");
  gzFile gz = gzopen(bomb, "wb9");
  unsigned char head[8] = {0, 0, 8, 1, 0, 0, 0, 10}, *zeros = calloc(1, 1 << 20);
  gzwrite(gz, head, sizeof head);
  for (int i = 0; zeros && i < 64; i++) gzwrite(gz, zeros, 1 << 20);
  gzclose(gz);
  free(zeros);
  struct rusage before, after;
  getrusage(RUSAGE_SELF, &before);
  hm_producer *p = NULL;
  HM_CHECK_EQ(hm_producer_open_idx(bomb, &p), HM_STATUS_DATA_LOSS);
  HM_CHECK_STR_CONTAINS(hm_last_error(), "10 bytes of data expected after the header, but the file has more");
  getrusage(RUSAGE_SELF, &after);
  HM_CHECK_MSG(after.ru_maxrss - before.ru_maxrss < 16 * 1024, "opening the bomb grew the process by %ld KiB",
               after.ru_maxrss - before.ru_maxrss);
  HM_CHECK_EQ(hm_producer_open_idx("/nonexistent/train-images-idx3-ubyte.gz", &p), HM_STATUS_NOT_FOUND);
  HM_CHECK_STR_CONTAINS(hm_last_error(), "/nonexistent/train-images-idx3-ubyte.gz");
}

static void csv_files(void) {
  write_text("ok.csv", "a, b ,c\n1,2,3\r\n\n4.5,-5e-1,6\n");
  hm_producer *p = NULL;
  HM_CHECK_OK(hm_producer_open_csv(path_of("ok.csv"), &p));
  hm_producer_info info;
  HM_CHECK_OK(hm_producer_info_get(p, &info));
  HM_CHECK_EQ(info.count, 2);
  HM_CHECK_EQ(info.width, 3);
  float v[6];
  size_t got;
  HM_CHECK_OK(hm_producer_next_batch(p, 2, v, &got));
  HM_CHECK_NEAR(v[3], 4.5, 0);
  HM_CHECK_NEAR(v[4], -0.5, 0);
  hm_producer_free(p);
  p = NULL;
  write_text("ragged.csv", "1,2\n3\n");
  HM_CHECK_EQ(hm_producer_open_csv(path_of("ragged.csv"), &p), HM_STATUS_PARSE_ERROR);
  HM_CHECK_STR_CONTAINS(hm_last_error(), "ragged.csv:2: expected 2 fields, got 1");
  write_text("text.csv", "1,2\n3,x\n");
  HM_CHECK_EQ(hm_producer_open_csv(path_of("text.csv"), &p), HM_STATUS_PARSE_ERROR);
  HM_CHECK_STR_CONTAINS(hm_last_error(), "text.csv:2: column 2 ('x') is not a finite number");
  /* A first row with one bad field is not a header (it was taken as one and
   * dropped): a header holds no numbers at all. */
  write_text("typo.csv", "1,2,3x\n4,5,6\n");
  HM_CHECK_EQ(hm_producer_open_csv(path_of("typo.csv"), &p), HM_STATUS_PARSE_ERROR);
  HM_CHECK_STR_CONTAINS(hm_last_error(),
                        "typo.csv:1: column 3 ('3x') is not a finite number (a header row holds no numbers; this row "
                        "mixes both)");
  HM_CHECK(p == NULL);
  write_text("nan.csv", "1,nan\n");
  HM_CHECK_EQ(hm_producer_open_csv(path_of("nan.csv"), &p), HM_STATUS_PARSE_ERROR);
  write_text("empty.csv", "x,y\n");
  HM_CHECK_EQ(hm_producer_open_csv(path_of("empty.csv"), &p), HM_STATUS_PARSE_ERROR);
  HM_CHECK_STR_CONTAINS(hm_last_error(), "no data rows");
  HM_CHECK(p == NULL);
  /* Arrays validate their input. */
  int32_t bad[2] = {0, 5};
  HM_CHECK_EQ(hm_producer_from_labels(bad, 2, 3, &p), HM_STATUS_INVALID_ARGUMENT);
  HM_CHECK_STR_CONTAINS(hm_last_error(), "label 1 is 5, outside [0, 3)");
  HM_CHECK_EQ(hm_producer_from_floats(v, 0, 3, &p), HM_STATUS_INVALID_ARGUMENT);
}

static void safetensors_round_trip(void) {
  hm_weights *w = NULL;
  HM_CHECK_OK(hm_weights_create(&w));
  uint64_t s2[2] = {3, 2}, s1[1] = {5}, s0[1] = {0};
  float a[6] = {1, -2, 3.5f, 4, 5, 6};
  int32_t b[5] = {1, 2, 3, -4, 5};
  HM_CHECK_OK(hm_weights_set(w, "a->b.weight", HM_ABI_DTYPE_F32, 2, s2, a));
  HM_CHECK_OK(hm_weights_set(w, "count\"quoted\\", HM_ABI_DTYPE_I32, 1, s1, b));
  HM_CHECK_OK(hm_weights_set(w, "empty", HM_ABI_DTYPE_F32, 1, s0, NULL));
  HM_CHECK_OK(hm_weights_save_safetensors(w, path_of("w.safetensors")));
  hm_weights *r = NULL;
  HM_CHECK_OK(hm_weights_load_safetensors(path_of("w.safetensors"), &r));
  HM_CHECK_EQ(hm_weights_count(r), 3);
  hm_tensor t;
  HM_CHECK_OK(hm_weights_find(r, "a->b.weight", &t));
  HM_CHECK(t.rank == 2 && t.shape[0] == 3 && t.shape[1] == 2 && memcmp(t.data, a, sizeof a) == 0);
  HM_CHECK_OK(hm_weights_find(r, "count\"quoted\\", &t));
  HM_CHECK(t.dtype == HM_ABI_DTYPE_I32 && memcmp(t.data, b, sizeof b) == 0);
  HM_CHECK_OK(hm_weights_at(r, 0, &t)); /* header order is kept */
  HM_CHECK(strcmp(t.name, "a->b.weight") == 0);
  /* The header is padded to 8 bytes and the data follows it. */
  FILE *f = fopen(path_of("w.safetensors"), "rb");
  unsigned char len8[8];
  HM_CHECK(fread(len8, 1, 8, f) == 8);
  fclose(f);
  HM_CHECK_EQ(len8[0] % 8, 0);
  hm_weights_free(w);
  hm_weights_free(r);
}

/* A file laid out the way Python's safetensors writes one: compact JSON,
 * header padded with spaces to 8 bytes, tensors sorted by dtype then name. */
static void safetensors_python_layout(void) {
  const char *json = "{\"__metadata__\":{\"format\":\"pt\"},\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                     "\"a\":{\"dtype\":\"BF16\",\"shape\":[1,2],\"data_offsets\":[8,12]}}";
  size_t hl = strlen(json), padded = (hl + 7) / 8 * 8;
  unsigned char buf[512];
  memset(buf, 0, sizeof buf);
  for (int i = 0; i < 8; i++) buf[i] = (unsigned char)((uint64_t)padded >> (8 * i));
  memcpy(buf + 8, json, hl);
  memset(buf + 8 + hl, ' ', padded - hl);
  float two[2] = {1.5f, -2.0f};
  memcpy(buf + 8 + padded, two, 8);
  unsigned char bf[4] = {0x80, 0x3f, 0x00, 0x40}; /* 1.0, 2.0 in bf16 */
  memcpy(buf + 16 + padded, bf, 4);
  write_bytes("py.safetensors", buf, 8 + padded + 12, 0);
  hm_weights *r = NULL;
  HM_CHECK_OK(hm_weights_load_safetensors(path_of("py.safetensors"), &r));
  hm_tensor t;
  HM_CHECK_OK(hm_weights_find(r, "a", &t));
  HM_CHECK(t.dtype == HM_ABI_DTYPE_BF16 && t.bytes == 4 && memcmp(t.data, bf, 4) == 0);
  HM_CHECK_OK(hm_weights_find(r, "b", &t));
  HM_CHECK_NEAR(((float *)t.data)[1], -2.0, 0);
  hm_weights_free(r);
}

static void expect_st_error(const char *json, size_t data_bytes, uint64_t header_len_override, const char *needle) {
  size_t hl = strlen(json);
  unsigned char *buf = calloc(1, 8 + hl + data_bytes + 8);
  uint64_t len = header_len_override ? header_len_override : hl;
  for (int i = 0; i < 8; i++) buf[i] = (unsigned char)(len >> (8 * i));
  memcpy(buf + 8, json, hl);
  write_bytes("bad.safetensors", buf, 8 + hl + data_bytes, 0);
  free(buf);
  hm_weights *r = NULL;
  HM_CHECK_EQ(hm_weights_load_safetensors(path_of("bad.safetensors"), &r), HM_STATUS_DATA_LOSS);
  HM_CHECK_STR_CONTAINS(hm_last_error(), needle);
  HM_CHECK_STR_CONTAINS(hm_last_error(), "bad.safetensors");
  HM_CHECK(r == NULL);
}

static void safetensors_hostile_files(void) {
  const char *ok = "{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}";
  expect_st_error(ok, 4, 0, "tensor 'x' data_offsets lie outside the 4-byte data area");
  expect_st_error(ok, 8, 1ull << 40, "header length 1099511627776");
  expect_st_error("{\"x\":", 0, 0, "header is not valid JSON");
  expect_st_error("[1,2]", 0, 0, "header is not a JSON object");
  expect_st_error("{\"x\":{\"dtype\":\"Q9\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, 0, "dtype 'Q9'");
  expect_st_error("{\"x\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8, 0,
                  "shape and dtype do not match the size");
  expect_st_error("{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                  "\"y\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
                  8, 0, "overlaps another or leaves a hole");
  expect_st_error(ok, 12, 0, "4 bytes after the last tensor");
  expect_st_error("{\"x\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", 8, 0, "invalid dimension");
  expect_st_error("{\"x\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1],\"data_offsets\":[0,4]}}", 4, 0, "more than 4 dimensions");
  expect_st_error("{\"x\":{\"dtype\":\"F32\"}}", 0, 0, "needs dtype, shape and data_offsets");
  expect_st_error("{\"__metadata__\":{\"k\":1}}", 0, 0, "__metadata__ value 'k' is not a string");
  /* Deep nesting and garbage never crash. */
  char deep[300];
  memset(deep, '[', sizeof deep - 1);
  deep[sizeof deep - 1] = '\0';
  expect_st_error(deep, 0, 0, "nesting too deep");
  write_bytes("short.safetensors", "abc", 3, 0);
  hm_weights *r = NULL;
  HM_CHECK_EQ(hm_weights_load_safetensors(path_of("short.safetensors"), &r), HM_STATUS_DATA_LOSS);
  HM_CHECK_STR_CONTAINS(hm_last_error(), "truncated");
  HM_CHECK_EQ(hm_weights_load_safetensors("/nonexistent.safetensors", &r), HM_STATUS_NOT_FOUND);
}

static void setup_dir(void) {
  if (tmpdir[0]) return;
  snprintf(tmpdir, sizeof tmpdir, "/tmp/hm_test_data_XXXXXX");
  if (!mkdtemp(tmpdir)) perror("mkdtemp");
}

#define WRAP(name) \
  static void run_##name(void) { setup_dir(); name(); }
WRAP(idx_files_load)
WRAP(idx_bad_files)
WRAP(csv_files)
WRAP(safetensors_round_trip)
WRAP(safetensors_python_layout)
WRAP(safetensors_hostile_files)

static const hm_test_case cases[] = {
    HM_TEST_CASE_P(run_, idx_files_load),
    HM_TEST_CASE_P(run_, idx_bad_files),
    HM_TEST_CASE_P(run_, csv_files),
    HM_TEST_CASE_P(run_, safetensors_round_trip),
    HM_TEST_CASE_P(run_, safetensors_python_layout),
    HM_TEST_CASE_P(run_, safetensors_hostile_files),
};

/* Each case's process removes the directory it made. */
static void remove_tmpdir(void) {
  if (!tmpdir[0]) return;
  char cmd[300];
  snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
  if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
  tmpdir[0] = '\0';
}

int main(int argc, char **argv) {
  hm_test_cleanup = remove_tmpdir;
  return hm_test_main(argc, argv, cases, sizeof cases / sizeof cases[0]);
}
