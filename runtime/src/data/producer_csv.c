/* CSV files of numbers, with an optional header row: a first row none of
 * whose fields is a number. Any other row with a field that is not a finite
 * number is an error naming its line and column. */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/fileio.h"
#include "data/data.h"
/* ===== CSV ===== */

static int parse_field(const char *s, size_t n, float *out) {
  while (n && isspace((unsigned char)*s)) s++, n--;
  while (n && isspace((unsigned char)s[n - 1])) n--;
  if (n == 0 || n > 63) return 0;
  char tmp[64];
  memcpy(tmp, s, n);
  tmp[n] = '\0';
  char *end;
  errno = 0;
  double v = strtod(tmp, &end);
  if (*end || errno == ERANGE || !isfinite(v) || fabs(v) > 3.4e38) return 0;
  *out = (float)v;
  return 1;
}

hm_status hm_producer_open_csv(const char *path, hm_producer **out) {
  if (!path || !out) return hm__fail(HM_STATUS_INVALID_ARGUMENT, "hm_producer_open_csv: NULL argument");
  char *text = NULL;
  size_t len = 0;
  HM_RETURN_IF_ERROR(hm__read_file(path, HM_MAX_DATASET_BYTES, &text, &len));
  float *values = NULL;
  size_t n_values = 0, cap = 0, width = 0, rows = 0;
  hm_status st = HM_OK;
  int line = 0;
  for (size_t pos = 0; pos < len && st == HM_OK;) {
    size_t end = pos;
    while (end < len && text[end] != '\n') end++;
    line++;
    size_t lend = end;
    if (lend > pos && text[lend - 1] == '\r') lend--;
    size_t k = pos;
    while (k < lend && isspace((unsigned char)text[k])) k++;
    if (k < lend) {
      /* Split the line. */
      size_t fields = 0, start = pos, numeric_fields = 0, bad_column = 0;
      int numeric = 1;
      char bad[24] = "";
      size_t mark = n_values;
      for (size_t i = pos; i <= lend && st == HM_OK; i++) {
        if (i < lend && text[i] != ',') continue;
        float v;
        if (!parse_field(text + start, i - start, &v)) {
          if (numeric) { /* the first bad field, for the message */
            bad_column = fields + 1;
            snprintf(bad, sizeof bad, "%.*s", (int)(i - start < 20 ? i - start : 20), text + start);
          }
          numeric = 0;
        } else {
          numeric_fields++;
          if (n_values == cap) {
            size_t ncap = cap ? cap * 2 : 1024;
            float *nv = hm__realloc(values, ncap * sizeof *nv);
            if (!nv) st = hm__fail(HM_STATUS_RESOURCE_EXHAUSTED, "out of memory reading %s", path);
            else {
              values = nv;
              cap = ncap;
            }
          }
          if (st == HM_OK) values[n_values++] = v;
        }
        fields++;
        start = i + 1;
      }
      if (st != HM_OK) break;
      if (!numeric) {
        n_values = mark;
        if (rows == 0 && width == 0 && numeric_fields == 0) {
          width = fields; /* a header line fixes the width too */
        } else {
          st = hm__fail(HM_STATUS_PARSE_ERROR, "%s:%d: column %zu ('%s') is not a finite number%s", path, line,
                        bad_column, bad,
                        rows == 0 && width == 0 ? " (a header row holds no numbers; this row mixes both)" : "");
          break;
        }
      } else {
        if (width && fields != width) {
          st = hm__fail(HM_STATUS_PARSE_ERROR, "%s:%d: expected %zu fields, got %zu", path, line, width, fields);
          break;
        }
        width = fields;
        rows++;
      }
    }
    pos = end + 1;
  }
  hm__free(text);
  if (st == HM_OK && rows == 0) st = hm__fail(HM_STATUS_PARSE_ERROR, "%s: no data rows", path);
  if (st == HM_OK && width > HM_MAX_WIDTH) st = hm__fail(HM_STATUS_OUT_OF_RANGE, "%s: %zu fields per row", path, width);
  if (st != HM_OK) {
    hm__free(values);
    return st;
  }
  hm_producer_info info = {width, rows, HM_ABI_DTYPE_F32, 1.0f, 0, {0, 0, 0}};
  return hm__producer_from_memory(info, values, out);
}
