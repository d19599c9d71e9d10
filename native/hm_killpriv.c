/* FUSE_HANDLE_KILLPRIV_V2 on libfuse 3.14: see hm_killpriv.h.
 *
 * The requests come from the kernel, whose lengths are checked all the same: a request too
 * short for what is read from it is left alone (libfuse answers it as it would anyway).
 */
#define _GNU_SOURCE
#include "hm_fuse.h"

#include <errno.h>
#include <linux/fuse.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#define CAPABILITY_XATTR "security.capability"

__thread unsigned hm_kill_flags;

/* The op-specific part of a request, if the request holds at least ``size`` bytes of it. */
static const void *body(const void *buf, size_t len, size_t size)
{
    return len >= sizeof(struct fuse_in_header) + size ? (const char *)buf + sizeof(struct fuse_in_header) : NULL;
}

void hm_killpriv_seen(struct hm_killpriv *k, const void *buf, size_t len)
{
    unsigned flags = 0;
    if (len < sizeof(struct fuse_in_header)) {
        hm_kill_flags = 0;
        return;
    }
    const struct fuse_in_header *in = buf;
    const void *arg;
    switch (in->opcode) {
    case FUSE_INIT:
        /* flags sits at the same place in every version of fuse_init_in */
        if ((arg = body(buf, len, offsetof(struct fuse_init_in, flags) + sizeof(uint32_t))) != NULL) {
            k->offered = ((const struct fuse_init_in *)arg)->flags;
            __atomic_store_n(&k->init_unique, in->unique, __ATOMIC_RELEASE);
        }
        break;
    case FUSE_WRITE:
        /* write_flags is within FUSE_COMPAT_WRITE_IN_SIZE (24): every version has it */
        if ((arg = body(buf, len, offsetof(struct fuse_write_in, write_flags) + sizeof(uint32_t))) != NULL &&
            (((const struct fuse_write_in *)arg)->write_flags & FUSE_WRITE_KILL_SUIDGID))
            flags = HM_KILL_SUIDGID;
        break;
    case FUSE_SETATTR:
        if ((arg = body(buf, len, sizeof(struct fuse_setattr_in))) != NULL &&
            (((const struct fuse_setattr_in *)arg)->valid & FATTR_KILL_SUIDGID))
            flags = HM_KILL_SUIDGID;
        break;
    case FUSE_OPEN:
        if ((arg = body(buf, len, sizeof(struct fuse_open_in))) != NULL &&
            (((const struct fuse_open_in *)arg)->open_flags & FUSE_OPEN_KILL_SUIDGID))
            flags = HM_KILL_SUIDGID;
        break;
    default:
        break;
    }
    hm_kill_flags = __atomic_load_n(&k->active, __ATOMIC_RELAXED) ? flags : 0;
}

ssize_t hm_killpriv_writev(struct hm_killpriv *k, int fd, const struct iovec *iov, int count)
{
    const struct fuse_out_header *out = iov[0].iov_base;
    struct fuse_init_out init;
    uint64_t init_unique = __atomic_load_n(&k->init_unique, __ATOMIC_ACQUIRE);
    if (init_unique == 0 || count != 2 || iov[0].iov_len != sizeof(*out) || out->unique != init_unique)
        return writev(fd, iov, count);
    __atomic_store_n(&k->init_unique, 0, __ATOMIC_RELEASE);   /* one INIT per session */
    if (out->error != 0 || !(k->offered & FUSE_HANDLE_KILLPRIV_V2) ||
        iov[1].iov_len < offsetof(struct fuse_init_out, flags) + sizeof(uint32_t) || iov[1].iov_len > sizeof(init))
        return writev(fd, iov, count);
    /* libfuse's reply is its own stack variable: change a copy (without v1, as ll_init asks). */
    memcpy(&init, iov[1].iov_base, iov[1].iov_len);
    init.flags = (init.flags & ~(uint32_t)FUSE_HANDLE_KILLPRIV) | FUSE_HANDLE_KILLPRIV_V2;
    struct iovec patched[2] = {iov[0], {.iov_base = &init, .iov_len = iov[1].iov_len}};
    ssize_t r = writev(fd, patched, 2);
    if (r >= 0)
        __atomic_store_n(&k->active, 1, __ATOMIC_RELEASE);
    return r;
}

unsigned hm_killpriv_needed(int fd, unsigned flags)
{
    unsigned needed = 0;
    struct stat st;
    if ((flags & HM_KILL_SUIDGID) && fstat(fd, &st) == 0 && (st.st_mode & (S_ISUID | S_ISGID)))
        needed |= HM_KILL_SUIDGID;
    if (fgetxattr(fd, CAPABILITY_XATTR, NULL, 0) >= 0 || errno == ERANGE)
        needed |= HM_KILL_CAPABILITY;
    return needed;
}

/* The session's I/O (fuse_session_custom_io); userdata is the engine (fuse_session_new). */
static ssize_t io_read(int fd, void *buf, size_t len, void *userdata)
{
    ssize_t n = read(fd, buf, len);
    if (n > 0)
        hm_killpriv_seen(&((struct hm_engine *)userdata)->killpriv, buf, (size_t)n);
    return n;
}

static ssize_t io_writev(int fd, struct iovec *iov, int count, void *userdata)
{
    return hm_killpriv_writev(&((struct hm_engine *)userdata)->killpriv, fd, iov, count);
}

int hm_killpriv_install(struct fuse_session *se)
{
    static const struct fuse_custom_io io = {.read = io_read, .writev = io_writev};
    return fuse_session_custom_io(se, &io, fuse_session_fd(se));
}
