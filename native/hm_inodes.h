/* The request loop's inode table (docs/native.md, "The request loop").
 *
 * One kernel node per backing FILE, keyed by its (st_dev, st_ino), not one per name as libfuse's
 * high-level API gives: every name of a hard-linked file is one kernel inode, with one attribute
 * and page cache. Each node keeps the kernel's lookup count and the names it is known by
 * (parent node + name); its path is one known name walked up to the root. A name holds a
 * reference on its parent, so a parent lives as long as a name below it is remembered.
 *
 * Thread-safe: one mutex, never held while calling Python.
 */
#ifndef HM_INODES_H
#define HM_INODES_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>

#define HM_ROOT_ID 1   /* FUSE_ROOT_ID */

struct hm_inode;

struct hm_name {
    struct hm_name *next;
    struct hm_inode *parent;
    char name[];
};

struct hm_inode {
    struct hm_inode *hnext;   /* hash chain */
    dev_t dev;
    ino_t ino;
    uint64_t nlookup;         /* the kernel's references (lookup, create, mknod, link...) */
    uint64_t refs;            /* names of other nodes whose parent is this one */
    struct hm_name *names;    /* newest first: the path uses the first */
    char *hint;               /* no known name left but other links: one found by a search ("/a/b") */
    struct timespec mtime;    /* the kernel's mtime, not yet applied (hm_setattr.c), if ``deferred`` */
    int deferred;
};

struct hm_table {
    pthread_mutex_t lock;
    struct hm_inode root;
    struct hm_inode **buckets;
    size_t nbuckets;
    size_t count;
};

int hm_table_init(struct hm_table *t, const struct stat *root);
void hm_table_destroy(struct hm_table *t);

/* The node id the kernel knows for ``inode`` and back. */
uint64_t hm_nodeid(struct hm_table *t, struct hm_inode *inode);

/* A lookup (or an entry-creating reply) of ``name`` in ``parent`` found ``st``: the node for
 * that file, with one more kernel reference and ``name`` among its names. 0 on no memory. */
uint64_t hm_table_learn(struct hm_table *t, uint64_t parent, const char *name, const struct stat *st);

/* The kernel dropped ``n`` references to ``nodeid`` (forget). */
void hm_table_forget(struct hm_table *t, uint64_t nodeid, uint64_t n);

/* Path of ``nodeid`` as "/a/b" ("/" for the root) into buf: 0, -ENOENT when it has no name left
 * (unlinked while open), -ENAMETOOLONG, -ELOOP. */
int hm_table_path(struct hm_table *t, uint64_t nodeid, char *buf, size_t size);

/* Path of ``name`` inside ``parent``, "/a/b" form; errors as hm_table_path. */
int hm_table_child_path(struct hm_table *t, uint64_t parent, const char *name, char *buf, size_t size);

/* ``name`` in ``parent`` no longer names the file (dev, ino) (unlink, rmdir). */
void hm_table_unlinked(struct hm_table *t, uint64_t parent, const char *name, dev_t dev, ino_t ino);

/* A rename of (op, oname) -> (np, nname) moved the file src; dst is what the new name named
 * before (have_dst 0 when nothing); exchange: the two swapped names. */
void hm_table_renamed(struct hm_table *t, uint64_t op, const char *oname, uint64_t np, const char *nname,
                      const struct stat *src, const struct stat *dst, int have_dst, int exchange);

/* Remember ``path`` ("/a/b", or NULL to forget) as where the file (dev, ino) is still linked. */
void hm_table_set_hint(struct hm_table *t, dev_t dev, ino_t ino, const char *path);

/* For a node with no known name: its hint into buf and its (dev, ino); -ENOENT without one. */
int hm_table_hint(struct hm_table *t, uint64_t nodeid, char *buf, size_t size, dev_t *dev, ino_t *ino);

/* Whether the node of (dev, ino) has no known name left (an unknown name may still exist). */
int hm_table_nameless(struct hm_table *t, dev_t dev, ino_t ino);

/* The kernel's mtime for ``nodeid``, to apply later (replacing one deferred before); and the
 * deferred one taken off the node: 1 and *mtime, or 0 when none (hm_setattr.c). */
void hm_table_defer_mtime(struct hm_table *t, uint64_t nodeid, const struct timespec *mtime);
int hm_table_take_mtime(struct hm_table *t, uint64_t nodeid, struct timespec *mtime);

/* Number of nodes held (the root excepted), for tests: lookup counts must not leak. */
size_t hm_table_count(struct hm_table *t);

#endif
