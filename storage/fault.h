/*
 * fault.h - fault injection for the store's file I/O, for tests of the real binary.
 *
 * Off unless the environment variable MQLITE_TEST_STORE_FAULTS names a control file when
 * the first store is opened. While it is set, every write and sync that the store's shim
 * VFS (store.c) passes to SQLite first reads that file; its first word says which failure
 * to report instead of doing the I/O, as the unix VFS would report it:
 *
 *   full      writes fail with SQLITE_FULL, errno ENOSPC (the disk is full)
 *   readonly  writes fail with SQLITE_IOERR_WRITE, errno EROFS (remounted read-only)
 *   ioerr     syncs fail with SQLITE_IOERR_FSYNC, errno EIO (flash I/O error)
 *   busy      writes fail with SQLITE_BUSY
 *
 * A missing or empty file, or "off", means no fault, so a test switches faults on and off
 * at any moment by (atomically) replacing the file. An unknown word is logged once and
 * treated as "off". Reading a file on every write is slow: this is for tests only, and
 * the store logs a warning at open when it is enabled. Thread-safe.
 */
#ifndef MQL_STORE_FAULT_H
#define MQL_STORE_FAULT_H

#define MQL_FAULT_ENV "MQLITE_TEST_STORE_FAULTS"

/* The control file when fault injection is enabled, else NULL (read once per process). */
const char *mql_fault_control(void);

/* For the shim's xWrite / xSync: SQLITE_OK to do the I/O, or the SQLite result code to
 * return instead (errno is set as the failing system call would have set it). */
int mql_fault_write(void);
int mql_fault_sync(void);

#endif
