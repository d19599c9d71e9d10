/* libFuzzer target of the native apply core: arbitrary operations, nothing written outside.
 *
 *     scripts/fuzz-native.sh SECONDS
 *
 * A sandbox holds the replicated directory ("root") and a sentinel folder beside it; the root
 * holds bait: symlinks to the sentinel, to the sandbox, to "..", and a FIFO (opening it for a
 * write would block: libFuzzer's timeout catches that). Each input is decoded (here, not in the
 * core) into a few operations with arbitrary opcodes, integers, paths, times and data, applied to
 * one long-lived core. After every input the sentinel, the sandbox and the bait's targets must be
 * exactly as before, or the target aborts ("no write outside the directory"). AddressSanitizer
 * catches memory errors. The tree is wiped and re-baited now and then, so it stays small.
 */
#define _GNU_SOURCE
#include "../hm_apply.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define RESET_EVERY 2000

static char sandbox[512], root[600], outside[600], secret[700];
static int root_fd = -1;
static struct hm_applier *core;
static struct stat before_sandbox, before_outside, before_secret;
static unsigned long runs;

static void die(const char *what)
{
    fprintf(stderr, "fuzz_apply: %s: %s\n", what, strerror(errno));
    abort();
}

/* Remove everything beneath dir_fd (not following symlinks). */
static void wipe(int dir_fd)
{
    DIR *d = fdopendir(dup(dir_fd));
    if (d == NULL)
        die("fdopendir");
    rewinddir(d); /* the descriptor shares its offset with the one wiped last time */
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        if (unlinkat(dir_fd, de->d_name, 0) == 0)
            continue;
        int sub = openat(dir_fd, de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
        if (sub >= 0) {
            fchmod(sub, 0700);
            wipe(sub);
            close(sub);
        }
        unlinkat(dir_fd, de->d_name, AT_REMOVEDIR);
    }
    closedir(d);
}

static void bait(void)
{
    if (symlinkat(outside, root_fd, "evil") || symlinkat(sandbox, root_fd, "abs")
        || symlinkat("..", root_fd, "up") || symlinkat("../outside/secret", root_fd, "evilfile")
        || mkfifoat(root_fd, "fifo", 0600) || mkdirat(root_fd, "d", 0755))
        die("bait");
}

static void snapshot(struct stat *sb, struct stat *so, struct stat *ss)
{
    if (lstat(sandbox, sb) || lstat(outside, so) || lstat(secret, ss))
        die("sentinel missing");
}

static int same(const struct stat *a, const struct stat *b)
{
    return a->st_ino == b->st_ino && a->st_mode == b->st_mode && a->st_uid == b->st_uid
        && a->st_gid == b->st_gid && a->st_size == b->st_size && a->st_nlink == b->st_nlink
        && a->st_mtim.tv_sec == b->st_mtim.tv_sec && a->st_mtim.tv_nsec == b->st_mtim.tv_nsec
        && a->st_ctim.tv_sec == b->st_ctim.tv_sec && a->st_ctim.tv_nsec == b->st_ctim.tv_nsec;
}

static void setup(void)
{
    const char *base = getenv("HM_FUZZ_DIR");
    snprintf(sandbox, sizeof sandbox, "%s/hm-fuzz-XXXXXX", base ? base : "/tmp");
    if (mkdtemp(sandbox) == NULL)
        die("mkdtemp");
    snprintf(root, sizeof root, "%s/root", sandbox);
    snprintf(outside, sizeof outside, "%s/outside", sandbox);
    snprintf(secret, sizeof secret, "%s/secret", outside);
    if (mkdir(root, 0755) || mkdir(outside, 0755))
        die("mkdir");
    int fd = open(secret, O_CREAT | O_WRONLY, 0644);
    if (fd < 0 || write(fd, "secret", 6) != 6 || close(fd))
        die("secret");
    root_fd = open(root, O_RDONLY | O_DIRECTORY);
    if (root_fd < 0)
        die("root");
    bait();
    core = hm_new(root_fd);
    if (core == NULL)
        die("hm_new");
    snapshot(&before_sandbox, &before_outside, &before_secret);
}

/* input decoding --------------------------------------------------------------------------- */

struct input {
    const uint8_t *p;
    size_t left;
};

static uint8_t byte(struct input *in)
{
    if (in->left == 0)
        return 0;
    in->left--;
    return *in->p++;
}

static const int64_t EDGES[] = {0, 1, -1, 2, 4096, 0100644, 0100000, 040755, 010644, 0120777,
                                0104755, 0777, 07777, 0177777, 0200000, 65534, 0xfffffffe,
                                0xffffffff, INT64_C(1) << 32, INT64_C(1) << 62,
                                INT64_C(0x7fffffffffffffff), INT64_MIN, 256 * 1024, 1 << 20};

static int64_t integer(struct input *in)
{
    uint8_t sel = byte(in);
    if (sel < 200)
        return EDGES[sel % (sizeof EDGES / sizeof EDGES[0])];
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = (v << 8) | byte(in);
    return (int64_t)v;
}

static const char *WORDS[] = {"a", "b", "d", "evil", "abs", "up", "fifo", "evilfile", "..", ".",
                              "", "x", "outside", "secret", "root"};

/* A path: built from bait-aware words, or raw bytes (NUL and "/" included). */
static size_t path(struct input *in, char *buf, size_t cap)
{
    uint8_t sel = byte(in);
    size_t n = 0;
    if (sel < 0xC0) {
        int parts = 1 + sel % 4;
        for (int i = 0; i < parts; i++) {
            const char *w = WORDS[byte(in) % (sizeof WORDS / sizeof WORDS[0])];
            size_t wl = strlen(w);
            if (n + wl + 1 >= cap)
                break;
            if (i)
                buf[n++] = '/';
            memcpy(buf + n, w, wl);
            n += wl;
        }
        if (sel & 0x80) /* now and then a leading "/" */
            buf[0] = '/';
        return n;
    }
    size_t len = byte(in);
    while (n < len && n < cap && in->left)
        buf[n++] = (char)byte(in);
    return n;
}

static const int OPS[] = {HM_CREATE, HM_MKDIR, HM_UNLINK, HM_WRITE, HM_TRUNCATE, HM_FALLOCATE,
                          HM_UTIMENS, HM_FSYNC, HM_WRITE_FSYNC};

static void one(struct input *in)
{
    static char paths[1 + HM_MAX_TIMES + 1][512];
    static uint8_t data[4096];
    struct hm_time times[HM_MAX_TIMES + 1];
    struct hm_op op = {0};
    uint8_t sel = byte(in);
    if (sel == 0xFF) {
        hm_forget(core);
        return;
    }
    op.op = sel < 0xF0 ? OPS[sel % (sizeof OPS / sizeof OPS[0])] : (int)byte(in);
    op.n_ints = byte(in) % 6 == 5 ? byte(in) % 5 : -1; /* mostly the right count */
    for (int i = 0; i < 4; i++)
        op.ints[i] = integer(in);
    if (op.n_ints < 0) {
        int64_t none[4] = {0100644, 0, 0, 0};
        for (int n = 0; n <= 4; n++)
            if (hm_supported(op.op, op.op == HM_CREATE ? none : op.ints, n))
                op.n_ints = n;
        if (op.n_ints < 0)
            op.n_ints = 0;
    }
    /* Bounded sizes, so a run cannot fill the machine's disk (the tree is a small tmpfs too). */
    if (op.op == HM_FALLOCATE)
        op.ints[2] = op.ints[2] % (1 << 20);
    op.path = paths[0];
    op.path_len = path(in, paths[0], sizeof paths[0]);
    op.n_times = byte(in) % (HM_MAX_TIMES + 2); /* one too many now and then */
    for (int i = 0; i < op.n_times; i++) {
        times[i].path = paths[1 + i];
        times[i].len = path(in, paths[1 + i], sizeof paths[1 + i]);
        times[i].atime_ns = integer(in);
        times[i].mtime_ns = integer(in);
    }
    op.times = times;
    size_t len = byte(in) * 16;
    for (size_t i = 0; i < len; i++)
        data[i] = (uint8_t)i;
    op.data = len ? data : NULL;
    op.data_len = len;
    char err[256];
    hm_apply(core, &op, err, sizeof err);
    if (strlen(err) >= sizeof err)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *buf, size_t size)
{
    if (core == NULL)
        setup();
    struct input in = {buf, size};
    for (int i = 0; i < 16 && in.left; i++)
        one(&in);
    struct stat sb, so, ss;
    snapshot(&sb, &so, &ss);
    if (!same(&sb, &before_sandbox) || !same(&so, &before_outside) || !same(&ss, &before_secret)) {
        fprintf(stderr, "fuzz_apply: something outside the directory changed\n");
        abort();
    }
    if (++runs % RESET_EVERY == 0) {
        hm_forget(core);
        wipe(root_fd);
        bait();
        snapshot(&before_sandbox, &before_outside, &before_secret); /* root's own times changed */
    }
    return 0;
}
