/* The apply core's descriptor caches and path resolution (see hm_core.h, docs/native.md).
 *
 * A parent directory is opened once, beneath the root in one openat2(RESOLVE_BENEATH |
 * RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS) (or one component at a time with O_NOFOLLOW on
 * kernels without it), and kept; every path is checked again here (relative, no "", "." or ".."
 * component, bounded), and a file is opened for its data only once an O_PATH descriptor showed
 * it is a regular file (a FIFO would block, a device node would reach outside the directory).
 */
#define _GNU_SOURCE
#include "hm_core.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

int fail(char *err, size_t err_len, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, err_len, fmt, ap);
    va_end(ap);
    return code;
}

int fail_errno(char *err, size_t err_len, int code)
{
    return fail(err, err_len, code, "%s", strerror(code));
}

/* cache ------------------------------------------------------------------------------------ */

void cache_init(struct cache *c)
{
    for (int i = 0; i < CACHE_SIZE; i++) {
        c->e[i].path = NULL;
        c->e[i].fd = -1;
    }
}

static void entry_drop(struct entry *e)
{
    if (e->fd >= 0)
        close(e->fd);
    free(e->path);
    e->path = NULL;
    e->fd = -1;
}

void cache_clear(struct cache *c)
{
    for (int i = 0; i < CACHE_SIZE; i++)
        entry_drop(&c->e[i]);
}

struct entry *cache_find(struct hm_applier *a, struct cache *c, const char *path, size_t len)
{
    for (int i = 0; i < CACHE_SIZE; i++) {
        struct entry *e = &c->e[i];
        if (e->fd >= 0 && e->len == len && memcmp(e->path, path, len) == 0) {
            e->used = ++a->clock;
            return e;
        }
    }
    return NULL;
}

/* Keep fd under path: the cache owns it from now on (NULL: no memory left, fd closed). */
struct entry *cache_put(struct hm_applier *a, struct cache *c, const char *path, size_t len,
                               int fd)
{
    struct entry *victim = &c->e[0];
    for (int i = 0; i < CACHE_SIZE; i++) {
        struct entry *e = &c->e[i];
        if (e->fd < 0) {
            victim = e;
            break;
        }
        if (e->used < victim->used)
            victim = e;
    }
    entry_drop(victim);
    victim->path = malloc(len + 1);
    if (victim->path == NULL) {
        close(fd);
        return NULL;
    }
    memcpy(victim->path, path, len);
    victim->path[len] = '\0';
    victim->len = len;
    victim->fd = fd;
    victim->synced = 0;
    victim->used = ++a->clock;
    return victim;
}

/* Drop the entry for path and, with below, every entry beneath it. */
void cache_forget(struct cache *c, const char *path, size_t len, int below)
{
    for (int i = 0; i < CACHE_SIZE; i++) {
        struct entry *e = &c->e[i];
        if (e->fd < 0 || e->len < len || memcmp(e->path, path, len) != 0)
            continue;
        if (e->len == len || (below && e->path[len] == '/'))
            entry_drop(e);
    }
}

/* paths ------------------------------------------------------------------------------------ */

/* The rules of protocol.check_path that keep a path inside the directory ("." is the root). */
int check_path(const char *path, size_t len)
{
    if (len == 1 && path[0] == '.')
        return 0;
    if (len == 0 || len > HM_PATH_MAX || memchr(path, '\0', len) != NULL)
        return EINVAL;
    size_t start = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i < len && path[i] != '/')
            continue;
        size_t n = i - start;
        if (n == 0 || n > HM_NAME_MAX || (n == 1 && path[start] == '.')
            || (n == 2 && path[start] == '.' && path[start + 1] == '.'))
            return EINVAL;
        start = i + 1;
    }
    return 0;
}

static int open_dir_by_components(struct hm_applier *a, const char *dir)
{
    int fd = a->root_fd;
    char part[HM_NAME_MAX + 1];
    const char *p = dir;
    while (*p) {
        const char *slash = strchr(p, '/');
        size_t n = slash ? (size_t)(slash - p) : strlen(p);
        memcpy(part, p, n);
        part[n] = '\0';
        int next = openat(fd, part, O_PATH | O_NOFOLLOW | O_DIRECTORY | O_CLOEXEC);
        int saved = errno;
        struct stat st;
        if (next < 0 && saved == ENOTDIR && fstatat(fd, part, &st, AT_SYMLINK_NOFOLLOW) == 0
            && S_ISLNK(st.st_mode))
            saved = ELOOP;
        if (fd != a->root_fd)
            close(fd);
        if (next < 0) {
            errno = saved;
            return -1;
        }
        fd = next;
        p += n;
        if (*p == '/')
            p++;
    }
    return fd;
}

/* The directory at relative path dir (NUL-terminated, checked), beneath the root, crossing no
 * symlink (ELOOP) and no magic link. */
static int open_dir_beneath(struct hm_applier *a, const char *dir)
{
    if (a->use_openat2) {
        struct open_how how = {
            .flags = O_PATH | O_DIRECTORY | O_CLOEXEC,
            .resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
        };
        long fd = syscall(SYS_openat2, a->root_fd, dir, &how, sizeof how);
        if (fd >= 0 || (errno != ENOSYS && errno != EPERM))
            return (int)fd;
        a->use_openat2 = 0; /* an old kernel, or a seccomp filter that refuses it */
    }
    return open_dir_by_components(a, dir);
}

int resolve_error(char *err, size_t err_len, int code)
{
    if (code == ELOOP || code == EXDEV)
        return fail(err, err_len, ELOOP, "path crosses a symlink on the secondary");
    return fail_errno(err, err_len, code);
}

/* The directory holding path's last component, and that component (path "." gives root, "."). */
int resolve(struct hm_applier *a, const char *path, size_t len, struct where *w,
                   char *err, size_t err_len)
{
    const char *slash = memrchr(path, '/', len);
    size_t name_len = slash ? len - (size_t)(slash - path) - 1 : len;
    memcpy(w->name, path + len - name_len, name_len);
    w->name[name_len] = '\0';
    if (slash == NULL) {
        w->dir_fd = a->root_fd;
        return 0;
    }
    size_t dir_len = (size_t)(slash - path);
    struct entry *e = cache_find(a, &a->dirs, path, dir_len);
    if (e != NULL) {
        w->dir_fd = e->fd;
        return 0;
    }
    char dir[HM_PATH_MAX + 1];
    memcpy(dir, path, dir_len);
    dir[dir_len] = '\0';
    int fd = open_dir_beneath(a, dir);
    if (fd < 0)
        return resolve_error(err, err_len, errno);
    e = cache_put(a, &a->dirs, path, dir_len, fd);
    if (e == NULL)
        return fail_errno(err, err_len, ENOMEM);
    w->dir_fd = e->fd;
    return 0;
}

/* Open name for its data only if it is a regular file (or a directory, with directory_ok):
 * pinned with O_PATH, checked, then reopened through /proc (the only race-free way). */
int open_data(int dir_fd, const char *name, int flags, int directory_ok, char *err,
                     size_t err_len, int *out)
{
    int pinned = openat(dir_fd, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
    if (pinned < 0)
        return fail_errno(err, err_len, errno);
    struct stat st;
    int rc = 0;
    if (fstat(pinned, &st) != 0) {
        rc = fail_errno(err, err_len, errno);
    } else if (S_ISLNK(st.st_mode)) {
        rc = fail(err, err_len, ELOOP, "path is a symlink on the secondary");
    } else if (!(S_ISREG(st.st_mode) || (directory_ok && S_ISDIR(st.st_mode)))) {
        rc = fail(err, err_len, EINVAL, "not a regular file on the secondary");
    } else {
        char proc[64];
        snprintf(proc, sizeof proc, "/proc/self/fd/%d", pinned);
        *out = open(proc, flags | O_CLOEXEC);
        if (*out < 0)
            rc = fail_errno(err, err_len, errno);
    }
    close(pinned);
    return rc;
}
