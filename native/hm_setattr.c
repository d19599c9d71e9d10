/* setattr: served by Python, but for the kernel's own mtime in barrier mode (see deferred).
 *
 * Split from hm_fuse_py.c, whose helpers (hm_call, hm_call_held, the GIL) it uses.
 */
#define _GNU_SOURCE
#include "hm_fuse.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

/* The times of a setattr as utimensat wants them: UTIME_OMIT for what is not set. */
static void setattr_times(const struct stat *attr, int to_set, struct timespec tv[2])
{
    tv[0].tv_sec = tv[1].tv_sec = 0;
    tv[0].tv_nsec = tv[1].tv_nsec = UTIME_OMIT;
    if (to_set & FUSE_SET_ATTR_ATIME_NOW)
        tv[0].tv_nsec = UTIME_NOW;
    else if (to_set & FUSE_SET_ATTR_ATIME)
        tv[0] = attr->st_atim;
    if (to_set & FUSE_SET_ATTR_MTIME_NOW)
        tv[1].tv_nsec = UTIME_NOW;
    else if (to_set & FUSE_SET_ATTR_MTIME)
        tv[1] = attr->st_mtim;
}

/* A file unlinked while open has no name on either side: its handle is changed here, nothing is
 * sent (as Interception.write does for path None). The kernel's writeback sends it its mtime. */
static int setattr_unlinked(int fd, const struct stat *attr, int to_set)
{
    struct timespec tv[2];
    setattr_times(attr, to_set, tv);
    if ((to_set & FUSE_SET_ATTR_MODE) && fchmod(fd, attr->st_mode & 07777) != 0)
        return errno;
    if ((to_set & (FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID)) &&
        fchown(fd, (to_set & FUSE_SET_ATTR_UID) ? attr->st_uid : (uid_t)-1,
               (to_set & FUSE_SET_ATTR_GID) ? attr->st_gid : (gid_t)-1) != 0)
        return errno;
    if ((to_set & FUSE_SET_ATTR_SIZE) && ftruncate(fd, attr->st_size) != 0)
        return errno;
    if ((to_set & (FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_MTIME)) && futimens(fd, tv) != 0)
        return errno;
    return 0;
}

/* Does this setattr ask us to clear the set-ID bits (hm_killpriv.h)? A truncate says so with its
 * kill bit (the caller lacks CAP_FSETID). A setattr that changes nothing (ctime aside) is the
 * kernel's own kill request, which v2 empties of its mode: file_remove_privs sends it when the
 * caller lacks CAP_FSETID and the file has a set-ID bit (before a fallocate, which has no kill
 * bit of its own; before a write too, whose WRITE then carries the bit), when a capability was
 * just removed (root may then lose set-ID bits it would have kept: the safe side), and for a
 * chown that changes no owner (ext4 clears them there as well). A chown's kills are the lower
 * file system's own, on both sides: it clears set-user-ID on any chown, root's too. */
static int kill_request(fuse_req_t req, int to_set)
{
    const int changes = FUSE_SET_ATTR_MODE | FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID | FUSE_SET_ATTR_SIZE |
                        FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_MTIME | FUSE_SET_ATTR_ATIME_NOW | FUSE_SET_ATTR_MTIME_NOW;
    if (!hm_killpriv_active(&hm_engine_of(req)->killpriv))
        return 0;
    return ((to_set & FUSE_SET_ATTR_SIZE) && (hm_kill_flags & HM_KILL_SUIDGID)) || !(to_set & changes);
}

/* The kernel's own mtime, which the writeback cache sends before a barrier (a close's FLUSH,
 * an FSYNC) and after writing pages back: times only, through an open handle of a regular file. */
static int writeback_times(struct hm_engine *e, int to_set, const struct fuse_file_info *fi)
{
    return e->writeback && fi != NULL && (to_set & FUSE_SET_ATTR_MTIME) &&
           !(to_set & ~(FUSE_SET_ATTR_MTIME | FUSE_SET_ATTR_CTIME));
}

/* Answered here, its mtime kept on the node and applied later, locally and for the peer in one
 * change (hm_apply_mtime_held), by the node's next close, full fsync, setattr or release (not by
 * an fdatasync: times are not its to cover): both copies keep the previous mtime until then
 * (docs/performance.md, "Barrier mode's commits"). The kernel keeps its own mtime of a file it
 * caches for writeback (it ignores ours), so the application sees no difference meanwhile.
 * 0 if it was not such a file (the caller serves the request as any). */
static int deferred(fuse_req_t req, fuse_ino_t ino, const struct stat *attr, const struct fuse_file_info *fi)
{
    struct hm_engine *e = hm_engine_of(req);
    struct stat st;
    if (fstat((int)fi->fh, &st) != 0 || !S_ISREG(st.st_mode))
        return 0;
    hm_table_defer_mtime(&e->table, ino, &attr->st_mtim);
    st.st_mtim = attr->st_mtim;
    hm_kernel_times(e, &st);
    fuse_reply_attr(req, &st, HM_TIMEOUT);
    return 1;
}

int hm_apply_mtime_held(struct hm_engine *e, const char *path, const struct fuse_file_info *fi,
                        const struct timespec *mtime)
{
    if (path == NULL) {   /* unlinked while open: ours only, as Interception.write */
        struct timespec tv[2] = {{0, UTIME_OMIT}, *mtime};
        return fi != NULL && futimens((int)fi->fh, tv) != 0 ? errno : 0;
    }
    return hm_call_held(e, "kernel_mtime", NULL, "(O&O&LL)", hm_pypath, path, hm_pyfh, fi,
                        (long long)mtime->tv_sec, (long long)mtime->tv_nsec);
}

/* Barrier mode: the kernel changes its own mtime with a truncate only when the size changes, and
 * then sends it with the size (FUSE_SET_ATTR_MTIME); one that leaves the size as the kernel knows
 * it comes without a time, and the kernel keeps showing the mtime it had. ext4 stamps even that
 * truncate, so both copies would keep a time the application never saw until the kernel forgets
 * the inode: such a truncate puts the file's mtime back, on both copies. 1 with ``before``. */
static int kernel_keeps_mtime(struct hm_engine *e, const char *path, int to_set, const struct fuse_file_info *fi,
                              struct stat *before)
{
    if (!e->writeback || (to_set & (FUSE_SET_ATTR_MTIME | FUSE_SET_ATTR_MTIME_NOW)))
        return 0;
    int r = fi != NULL ? fstat((int)fi->fh, before) : fstatat(e->root_fd, hm_rel(path), before, AT_SYMLINK_NOFOLLOW);
    return r == 0 && S_ISREG(before->st_mode);
}

/* As libfuse's high-level fuse_lib_setattr: chmod, chown, truncate (with the handle when given),
 * utimens with UTIME_NOW / UTIME_OMIT for what is not set; then the attributes. A deferred mtime
 * is applied first: what this request sets comes after it, as the kernel sent them. */
void hm_py_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set, struct fuse_file_info *fi)
{
    struct hm_engine *e = hm_engine_of(req);
    char buf[HM_PATH];
    const char *path;
    struct timespec mtime;
    int err = hm_path_or_none(req, ino, buf, &path);
    if (err == 0 && path != NULL && writeback_times(e, to_set, fi) && deferred(req, ino, attr, fi))
        return;
    int have_mtime = err == 0 && hm_table_take_mtime(&e->table, ino, &mtime);
    if (err == 0 && kill_request(req, to_set))
        err = hm_call(req, "kill_privileges", NULL, "(O&O&i)", hm_pypath, path, hm_pyfh, fi, HM_KILL_SUIDGID);
    if (err == 0 && path == NULL) {
        if (have_mtime)
            err = hm_apply_mtime_held(e, NULL, fi, &mtime);   /* no Python: the GIL is not needed */
        if (err == 0)
            err = fi != NULL ? setattr_unlinked((int)fi->fh, attr, to_set) : ESTALE;
    } else if (err == 0) {
        hm_python_enter(req);
        if (have_mtime)
            err = hm_apply_mtime_held(e, path, fi, &mtime);
        if (!err && (to_set & FUSE_SET_ATTR_MODE))
            err = hm_call_held(e, "chmod", NULL, "(O&I)", hm_pypath, path, (unsigned)attr->st_mode);
        if (!err && (to_set & (FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID)))
            err = hm_call_held(e, "chown", NULL, "(O&ii)", hm_pypath, path,
                            (to_set & FUSE_SET_ATTR_UID) ? (int)attr->st_uid : -1,
                            (to_set & FUSE_SET_ATTR_GID) ? (int)attr->st_gid : -1);
        if (!err && (to_set & FUSE_SET_ATTR_SIZE)) {
            struct stat before;
            int keep_mtime = kernel_keeps_mtime(e, path, to_set, fi, &before);
            if (fi != NULL)
                err = hm_call_held(e, "truncate", NULL, "(O&LK)", hm_pypath, path, (long long)attr->st_size, fi->fh);
            else
                err = hm_call_held(e, "truncate", NULL, "(O&L)", hm_pypath, path, (long long)attr->st_size);
            if (!err && keep_mtime)
                err = hm_call_held(e, "utimens", NULL, "(O&((LL)(LL)))", hm_pypath, path, 0LL, (long long)UTIME_OMIT,
                                   (long long)before.st_mtim.tv_sec, (long long)before.st_mtim.tv_nsec);
        }
        if (!err && (to_set & (FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_MTIME))) {
            struct timespec tv[2];
            setattr_times(attr, to_set, tv);
            err = hm_call_held(e, "utimens", NULL, "(O&((LL)(LL)))", hm_pypath, path,
                            (long long)tv[0].tv_sec, (long long)tv[0].tv_nsec,
                            (long long)tv[1].tv_sec, (long long)tv[1].tv_nsec);
        }
        hm_python_leave();
    }
    if (err != 0) {
        fuse_reply_err(req, err);
        return;
    }
    struct stat st;
    if (fi != NULL ? fstat((int)fi->fh, &st) != 0
                   : fstatat(e->root_fd, hm_rel(path), &st, AT_SYMLINK_NOFOLLOW) != 0)
        fuse_reply_err(req, errno);
    else {
        hm_kernel_times(e, &st);
        fuse_reply_attr(req, &st, HM_TIMEOUT);
    }
}

