/* Internals of the receiver's apply core shared by its two files: hm_apply.c (the operations)
 * and hm_resolve.c (the descriptor caches and the resolution of paths beneath the root, where
 * the rules that keep every write inside the directory live). Not an interface: see hm_apply.h.
 */
#ifndef HM_CORE_H
#define HM_CORE_H

#include "hm_apply.h"

#include <stdint.h>
#include <sys/types.h>

#ifndef HM_USE_OPENAT2
#define HM_USE_OPENAT2 1 /* 0 builds the component-by-component path alone (kernels before 5.6) */
#endif
#define CACHE_SIZE 64
#define HM_INTERNAL __attribute__((visibility("hidden")))

struct entry {
    char *path;         /* malloc'd, NUL-terminated */
    size_t len;
    int fd;             /* -1: free */
    int synced;         /* files: last synced through this descriptor by an FSYNC, so its writes start writeback */
    uint64_t used;      /* for least-recently-used eviction */
};

struct cache {
    struct entry e[CACHE_SIZE];
};

struct hm_applier {
    int root_fd;
    int use_openat2;    /* cleared once the kernel says ENOSYS */
    int allocate_ahead; /* large writes allocated first: the root is on ext4 (hamirror/syscalls.py) */
    uint64_t clock;
    struct cache dirs;  /* parent directories (O_PATH or O_RDONLY), keyed by relative path */
    struct cache files; /* regular files open O_WRONLY, keyed by relative path */
    int wb_fd;          /* a cached descriptor whose writeback hm_start_writeback() starts, or -1 */
    off_t wb_off;
    size_t wb_len;
};

struct where {
    int dir_fd;                       /* borrowed from the cache or the root */
    char name[HM_NAME_MAX + 1];
};

/* An errno value with its message in err (always NUL-terminated). */
HM_INTERNAL int fail(char *err, size_t err_len, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
HM_INTERNAL int fail_errno(char *err, size_t err_len, int code);

HM_INTERNAL void cache_init(struct cache *c);
HM_INTERNAL void cache_clear(struct cache *c);
HM_INTERNAL struct entry *cache_find(struct hm_applier *a, struct cache *c, const char *path, size_t len);
/* Keep fd under path: the cache owns it from now on (NULL: no memory left, fd closed). */
HM_INTERNAL struct entry *cache_put(struct hm_applier *a, struct cache *c, const char *path, size_t len,
                                    int fd);
/* Drop the entry for path and, with below, every entry beneath it. */
HM_INTERNAL void cache_forget(struct cache *c, const char *path, size_t len, int below);

/* 0 if path stays inside the directory (the rules of protocol.check_path), else EINVAL. */
HM_INTERNAL int check_path(const char *path, size_t len);
HM_INTERNAL int resolve_error(char *err, size_t err_len, int code);
/* The directory holding path's last component, and that component (path "." gives root, "."). */
HM_INTERNAL int resolve(struct hm_applier *a, const char *path, size_t len, struct where *w,
                        char *err, size_t err_len);
/* Open name for its data only if it is a regular file (or a directory, with directory_ok). */
HM_INTERNAL int open_data(int dir_fd, const char *name, int flags, int directory_ok, char *err,
                          size_t err_len, int *out);

#endif
