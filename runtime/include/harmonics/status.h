/*
 * Status codes and the thread-local last error.
 *
 * Every fallible Harmonics call returns an hm_status; HM_OK (0) is success.
 * On failure hm_last_error() holds one sentence that names what failed and
 * where (file:line:column, tensor, plugin, field). Outputs are left untouched
 * on failure. Compare codes, never message text.
 */
#ifndef HARMONICS_STATUS_H_
#define HARMONICS_STATUS_H_

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#define HM_API __declspec(dllexport)
#else
#define HM_API __attribute__((visibility("default")))
#endif
#define HM_MUST_USE __attribute__((warn_unused_result))

/* The codes 0-10 have the same numbers as the plugin ABI's (abi/SPEC.md);
 * runtime/src/base/status.c asserts it. */
typedef enum hm_status {
  HM_OK = 0,
  HM_STATUS_INVALID_ARGUMENT = 1,   /* the same call will fail again */
  HM_STATUS_OUT_OF_RANGE = 2,       /* an index, size or offset is out of range */
  HM_STATUS_FAILED_PRECONDITION = 3,/* the object's state does not allow the call */
  HM_STATUS_UNAVAILABLE = 4,        /* a backend, device or server is absent; retrying may help */
  HM_STATUS_UNIMPLEMENTED = 5,      /* not supported (by us or by the chosen backend) */
  HM_STATUS_RESOURCE_EXHAUSTED = 6, /* out of memory or another limit */
  HM_STATUS_DATA_LOSS = 7,          /* a file or stream is corrupt or truncated */
  HM_STATUS_INCOMPATIBLE = 8,       /* ABI or file-format versions do not agree */
  HM_STATUS_INTERNAL = 9,           /* a bug: please report it */
  HM_STATUS_NOT_FOUND = 10,         /* a named file, tensor, node or backend does not exist */
  HM_STATUS_IO_ERROR = 11,          /* the operating system refused a read or write */
  HM_STATUS_PARSE_ERROR = 12,       /* a DSL, CSV, JSON or config text is malformed */
  HM_STATUS_CANCELLED = 13,         /* stopped on request */
  HM_STATUS_DIVERGED = 14           /* training produced a non-finite loss or gradient norm */
} hm_status;

/* The last error of the calling thread: valid until the next failing call on
 * this thread. Never NULL ("" when there was none). */
HM_API const char *hm_last_error(void);
/* The code's name, e.g. "INVALID_ARGUMENT". Static storage. */
HM_API const char *hm_status_name(hm_status status);
/* Clears the calling thread's last error. */
HM_API void hm_clear_error(void);
/* Records a formatted sentence as the calling thread's last error and
 * returns |status|: for code that implements one of the library's
 * interfaces (a collectives backend, a producer) to report what failed. */
HM_API hm_status hm_set_error(hm_status status, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

#ifdef __cplusplus
}
#endif
#endif /* HARMONICS_STATUS_H_ */
