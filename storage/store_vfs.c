/*
 * store_vfs.c - the store's shim VFS: it wraps SQLite's default ("unix") VFS for one store,
 * counts what reaches the disk, and makes writes and syncs fail on demand for tests.
 *
 * Counters. The shim counts the bytes passed to xWrite (database, WAL, temporary files)
 * and the xSync calls (one fsync/fdatasync each; the directory fsync the unix VFS adds
 * when a file is created is not counted) exactly; they become mql_store_stats'
 * bytes_written and fsyncs. Every other method is passed through unchanged, and the shim
 * claims no io_methods version the wrapped file lacks.
 *
 * Fault injection, two ways. In-process, mql_store_test_fail_writes makes the next n
 * writes fail with SQLITE_IOERR_WRITE (the counter in mql_store_vfs). For the real binary,
 * the environment variable MQLITE_TEST_STORE_FAULTS names a control file, read once when
 * the first store is opened. While it is set, every write and sync first reads that file;
 * its first word says which failure to report instead of doing the I/O, as the unix VFS
 * would report it:
 *
 *   full      writes fail with SQLITE_FULL, errno ENOSPC (the disk is full)
 *   readonly  writes fail with SQLITE_IOERR_WRITE, errno EROFS (remounted read-only)
 *   ioerr     syncs fail with SQLITE_IOERR_FSYNC, errno EIO (flash I/O error)
 *   busy      writes fail with SQLITE_BUSY
 *
 * A missing or empty file, or "off", means no fault, so a test switches faults on and off
 * at any moment by (atomically) replacing the file. An unknown word is logged once and
 * treated as "off". Why a control file: the integration tests run the real broker binary,
 * as root in CI, so chmod cannot take the store's directory away from it and a real full
 * disk needs privileges a test run may not have; this makes the I/O fail from any moment,
 * and succeed again, without a special build. The store logs a warning at open when it is
 * enabled.
 *
 * Locking: none of its own. SQLite calls a file's methods from the thread using the
 * connection (serialised by the store's db_mu); the counters are atomics, the environment
 * is read under pthread_once. Performance: one indirect call per I/O and two relaxed
 * atomic adds; when fault injection is off every check returns at its first test. When it
 * is on, one open/read/close of the control file per write or sync: tests only.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sqlite3.h>

#include "platform/log.h"
#include "storage/store_int.h"

/* ---- fault injection through MQLITE_TEST_STORE_FAULTS ---- */

static pthread_once_t once = PTHREAD_ONCE_INIT;
static const char *control; /* the control file, or NULL: set once */
static atomic_bool warned;  /* an unknown word was logged */

static void read_env(void)
{
    const char *v = getenv(MQL_STORE_FAULT_ENV);
    control = v != NULL && v[0] != '\0' ? v : NULL;
}

const char *mql_store_vfs_fault_control(void)
{
    pthread_once(&once, read_env);
    return control;
}

enum fault { F_OFF, F_FULL, F_READONLY, F_IOERR, F_BUSY };

/* The fault the control file asks for now. errno is preserved. */
static enum fault current(void)
{
    int saved = errno;
    enum fault f = F_OFF;
    char buf[32];
    ssize_t n = -1;
    int fd = open(control, O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        n = read(fd, buf, sizeof(buf) - 1);
        close(fd);
    }
    if (n > 0) {
        buf[n] = '\0';
        buf[strcspn(buf, " \t\r\n")] = '\0';
        if (strcmp(buf, "full") == 0)
            f = F_FULL;
        else if (strcmp(buf, "readonly") == 0)
            f = F_READONLY;
        else if (strcmp(buf, "ioerr") == 0)
            f = F_IOERR;
        else if (strcmp(buf, "busy") == 0)
            f = F_BUSY;
        else if (buf[0] != '\0' && strcmp(buf, "off") != 0 && !atomic_exchange(&warned, true))
            mql_error("store.fault",
                      "%s %s: unknown fault \"%s\" (full, readonly, ioerr, busy "
                      "or off); injecting none",
                      MQL_STORE_FAULT_ENV, control, buf);
    }
    errno = saved;
    return f;
}

/* For xWrite: SQLITE_OK to do the I/O, or the SQLite result code to return instead (errno is
 * set as the failing system call would have set it). */
static int fault_write(void)
{
    if (mql_store_vfs_fault_control() == NULL)
        return SQLITE_OK;
    switch (current()) {
    case F_FULL:
        errno = ENOSPC;
        return SQLITE_FULL;
    case F_READONLY:
        errno = EROFS;
        return SQLITE_IOERR_WRITE;
    case F_BUSY:
        return SQLITE_BUSY;
    default:
        return SQLITE_OK;
    }
}

/* For xSync: as fault_write. */
static int fault_sync(void)
{
    if (mql_store_vfs_fault_control() == NULL)
        return SQLITE_OK;
    if (current() == F_IOERR) {
        errno = EIO;
        return SQLITE_IOERR_FSYNC;
    }
    return SQLITE_OK;
}

/* ---- the shim ---- */

static void count(_Atomic uint64_t *c, uint64_t n)
{
    atomic_fetch_add_explicit(c, n, memory_order_relaxed);
}

typedef struct cfile {
    sqlite3_file base;
    mql_store_vfs *v;
    sqlite3_file *real; /* the wrapped file, allocated right after this struct */
} cfile;

#define REAL(f) (((cfile *)(f))->real)

static int c_close(sqlite3_file *f)
{
    return REAL(f)->pMethods->xClose(REAL(f));
}

static int c_read(sqlite3_file *f, void *buf, int n, sqlite3_int64 off)
{
    return REAL(f)->pMethods->xRead(REAL(f), buf, n, off);
}

static int c_write(sqlite3_file *f, const void *buf, int n, sqlite3_int64 off)
{
    mql_store_vfs *v = ((cfile *)f)->v;
    int left = atomic_load(&v->fail_writes);
    while (left > 0 && !atomic_compare_exchange_weak(&v->fail_writes, &left, left - 1))
        ;
    if (left > 0)
        return SQLITE_IOERR_WRITE;
    int rc = fault_write(); /* SQLITE_OK unless a test asks for a fault */
    if (rc != SQLITE_OK)
        return rc;
    rc = REAL(f)->pMethods->xWrite(REAL(f), buf, n, off);
    if (rc == SQLITE_OK)
        count(&v->bytes_written, (uint64_t)n);
    return rc;
}

static int c_truncate(sqlite3_file *f, sqlite3_int64 size)
{
    return REAL(f)->pMethods->xTruncate(REAL(f), size);
}

static int c_sync(sqlite3_file *f, int flags)
{
    int rc = fault_sync();
    if (rc != SQLITE_OK)
        return rc;
    count(&((cfile *)f)->v->fsyncs, 1);
    return REAL(f)->pMethods->xSync(REAL(f), flags);
}

static int c_file_size(sqlite3_file *f, sqlite3_int64 *size)
{
    return REAL(f)->pMethods->xFileSize(REAL(f), size);
}

static int c_lock(sqlite3_file *f, int level)
{
    return REAL(f)->pMethods->xLock(REAL(f), level);
}

static int c_unlock(sqlite3_file *f, int level)
{
    return REAL(f)->pMethods->xUnlock(REAL(f), level);
}

static int c_check_reserved(sqlite3_file *f, int *out)
{
    return REAL(f)->pMethods->xCheckReservedLock(REAL(f), out);
}

static int c_file_control(sqlite3_file *f, int op, void *arg)
{
    return REAL(f)->pMethods->xFileControl(REAL(f), op, arg);
}

static int c_sector_size(sqlite3_file *f)
{
    return REAL(f)->pMethods->xSectorSize(REAL(f));
}

static int c_device_characteristics(sqlite3_file *f)
{
    return REAL(f)->pMethods->xDeviceCharacteristics(REAL(f));
}

static int c_shm_map(sqlite3_file *f, int pg, int pgsz, int extend, void volatile **pp)
{
    return REAL(f)->pMethods->xShmMap(REAL(f), pg, pgsz, extend, pp);
}

static int c_shm_lock(sqlite3_file *f, int offset, int n, int flags)
{
    return REAL(f)->pMethods->xShmLock(REAL(f), offset, n, flags);
}

static void c_shm_barrier(sqlite3_file *f)
{
    REAL(f)->pMethods->xShmBarrier(REAL(f));
}

static int c_shm_unmap(sqlite3_file *f, int delete_flag)
{
    return REAL(f)->pMethods->xShmUnmap(REAL(f), delete_flag);
}

static int c_fetch(sqlite3_file *f, sqlite3_int64 off, int n, void **pp)
{
    return REAL(f)->pMethods->xFetch(REAL(f), off, n, pp);
}

static int c_unfetch(sqlite3_file *f, sqlite3_int64 off, void *p)
{
    return REAL(f)->pMethods->xUnfetch(REAL(f), off, p);
}

/* One method table per io_methods version, so that we never claim methods the wrapped
 * file lacks. */
#define C_METHODS(v, shm_map, shm_lock, shm_barrier, shm_unmap, fetch, unfetch)                    \
    {                                                                                              \
        v, c_close, c_read, c_write, c_truncate, c_sync, c_file_size, c_lock, c_unlock,            \
            c_check_reserved, c_file_control, c_sector_size, c_device_characteristics, shm_map,    \
            shm_lock, shm_barrier, shm_unmap, fetch, unfetch                                       \
    }
static const sqlite3_io_methods c_methods[3] = {
    C_METHODS(1, NULL, NULL, NULL, NULL, NULL, NULL),
    C_METHODS(2, c_shm_map, c_shm_lock, c_shm_barrier, c_shm_unmap, NULL, NULL),
    C_METHODS(3, c_shm_map, c_shm_lock, c_shm_barrier, c_shm_unmap, c_fetch, c_unfetch),
};

#define ROOT(vfs) (((mql_store_vfs *)(vfs)->pAppData)->root)

static int v_open(sqlite3_vfs *vfs, const char *name, sqlite3_file *f, int flags, int *out_flags)
{
    cfile *cf = (cfile *)f;
    cf->v = vfs->pAppData;
    cf->real = (sqlite3_file *)(cf + 1);
    cf->real->pMethods = NULL;
    int rc = ROOT(vfs)->xOpen(ROOT(vfs), name, cf->real, flags, out_flags);
    const sqlite3_io_methods *m = cf->real->pMethods;
    if (m == NULL) {
        cf->base.pMethods = NULL;
    } else {
        int v = m->iVersion < 1 ? 1 : (m->iVersion > 3 ? 3 : m->iVersion);
        cf->base.pMethods = &c_methods[v - 1];
    }
    return rc;
}

static int v_delete(sqlite3_vfs *vfs, const char *name, int sync_dir)
{
    return ROOT(vfs)->xDelete(ROOT(vfs), name, sync_dir);
}

static int v_access(sqlite3_vfs *vfs, const char *name, int flags, int *out)
{
    return ROOT(vfs)->xAccess(ROOT(vfs), name, flags, out);
}

static int v_full_pathname(sqlite3_vfs *vfs, const char *name, int n, char *out)
{
    return ROOT(vfs)->xFullPathname(ROOT(vfs), name, n, out);
}

static void *v_dlopen(sqlite3_vfs *vfs, const char *name)
{
    return ROOT(vfs)->xDlOpen(ROOT(vfs), name);
}

static void v_dlerror(sqlite3_vfs *vfs, int n, char *msg)
{
    ROOT(vfs)->xDlError(ROOT(vfs), n, msg);
}

static void (*v_dlsym(sqlite3_vfs *vfs, void *h, const char *sym))(void)
{
    return ROOT(vfs)->xDlSym(ROOT(vfs), h, sym);
}

static void v_dlclose(sqlite3_vfs *vfs, void *h)
{
    ROOT(vfs)->xDlClose(ROOT(vfs), h);
}

static int v_randomness(sqlite3_vfs *vfs, int n, char *out)
{
    return ROOT(vfs)->xRandomness(ROOT(vfs), n, out);
}

static int v_sleep(sqlite3_vfs *vfs, int us)
{
    return ROOT(vfs)->xSleep(ROOT(vfs), us);
}

static int v_current_time(sqlite3_vfs *vfs, double *out)
{
    return ROOT(vfs)->xCurrentTime(ROOT(vfs), out);
}

static int v_get_last_error(sqlite3_vfs *vfs, int n, char *out)
{
    return ROOT(vfs)->xGetLastError ? ROOT(vfs)->xGetLastError(ROOT(vfs), n, out) : 0;
}

static int v_current_time_int64(sqlite3_vfs *vfs, sqlite3_int64 *out)
{
    return ROOT(vfs)->xCurrentTimeInt64(ROOT(vfs), out);
}

static int v_set_system_call(sqlite3_vfs *vfs, const char *name, sqlite3_syscall_ptr p)
{
    return ROOT(vfs)->xSetSystemCall(ROOT(vfs), name, p);
}

static sqlite3_syscall_ptr v_get_system_call(sqlite3_vfs *vfs, const char *name)
{
    return ROOT(vfs)->xGetSystemCall(ROOT(vfs), name);
}

static const char *v_next_system_call(sqlite3_vfs *vfs, const char *name)
{
    return ROOT(vfs)->xNextSystemCall(ROOT(vfs), name);
}

int mql_store_vfs_register(mql_store_vfs *sv)
{
    sqlite3_vfs *root = sqlite3_vfs_find(NULL);
    if (root == NULL)
        return SQLITE_ERROR;
    sv->root = root;
    snprintf(sv->name, sizeof(sv->name), "mqlite-%p", (void *)sv);
    sqlite3_vfs *v = &sv->vfs;
    memset(v, 0, sizeof(*v));
    v->iVersion = root->iVersion > 3 ? 3 : root->iVersion;
    v->szOsFile = (int)sizeof(cfile) + root->szOsFile;
    v->mxPathname = root->mxPathname;
    v->zName = sv->name;
    v->pAppData = sv;
    v->xOpen = v_open;
    v->xDelete = v_delete;
    v->xAccess = v_access;
    v->xFullPathname = v_full_pathname;
    v->xDlOpen = v_dlopen;
    v->xDlError = v_dlerror;
    v->xDlSym = v_dlsym;
    v->xDlClose = v_dlclose;
    v->xRandomness = v_randomness;
    v->xSleep = v_sleep;
    v->xCurrentTime = v_current_time;
    v->xGetLastError = v_get_last_error;
    if (v->iVersion >= 2)
        v->xCurrentTimeInt64 = v_current_time_int64;
    if (v->iVersion >= 3) {
        v->xSetSystemCall = v_set_system_call;
        v->xGetSystemCall = v_get_system_call;
        v->xNextSystemCall = v_next_system_call;
    }
    int rc = sqlite3_vfs_register(v, 0);
    if (rc == SQLITE_OK)
        sv->registered = true;
    return rc;
}

void mql_store_vfs_unregister(mql_store_vfs *sv)
{
    if (sv->registered)
        (void)sqlite3_vfs_unregister(&sv->vfs); /* only fails for a VFS never registered */
    sv->registered = false;
}
