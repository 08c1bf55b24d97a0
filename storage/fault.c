/*
 * fault.c - test-only fault injection for the store's file I/O (see fault.h).
 *
 * Why an environment variable and a control file: the integration tests run the real
 * broker binary, as root in CI, so chmod cannot take the store's directory away from it and
 * a real full disk needs privileges a test run may not have. The shim VFS in store.c sees
 * every write and sync SQLite makes; asking this file first lets a test make them fail from
 * any moment, and succeed again, without a special build. Nothing changes when the variable
 * is not set: the environment is read once, and every call then returns at the first test.
 *
 * Cost when enabled: one open/read/close of the control file per write or sync. Tests
 * only.
 */
#include "storage/fault.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sqlite3.h>

#include "platform/log.h"

static pthread_once_t once = PTHREAD_ONCE_INIT;
static const char *control; /* the control file, or NULL: set once */
static atomic_bool warned;  /* an unknown word was logged */

static void read_env(void)
{
    const char *v = getenv(MQL_FAULT_ENV);
    control = v != NULL && v[0] != '\0' ? v : NULL;
}

const char *mql_fault_control(void)
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
                      MQL_FAULT_ENV, control, buf);
    }
    errno = saved;
    return f;
}

int mql_fault_write(void)
{
    if (mql_fault_control() == NULL)
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

int mql_fault_sync(void)
{
    if (mql_fault_control() == NULL)
        return SQLITE_OK;
    if (current() == F_IOERR) {
        errno = EIO;
        return SQLITE_IOERR_FSYNC;
    }
    return SQLITE_OK;
}
