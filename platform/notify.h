/*
 * notify.h - the service manager's readiness protocol (systemd's sd_notify), without
 * libsystemd: a few lines over a Unix datagram socket.
 */
#ifndef MQL_NOTIFY_H
#define MQL_NOTIFY_H

/* mql_notify sends `state` (newline-separated "KEY=VALUE" lines, e.g. "READY=1") as one
 * datagram to the socket named by $NOTIFY_SOCKET: a path, or an abstract socket when the
 * name starts with '@'. With $NOTIFY_SOCKET unset or empty (not started by systemd with
 * Type=notify) it does nothing and returns 0. Returns 0 when sent, or a negative errno
 * (-EINVAL for a name that does not fit a socket address). Never blocks: the socket is
 * non-blocking and a full queue is an error (-EAGAIN) the caller may ignore. Safe from any
 * thread; not async-signal-safe. */
int mql_notify(const char *state);

/* mql_notify_reloading sends "RELOADING=1" with MONOTONIC_USEC (the CLOCK_MONOTONIC time,
 * which Type=notify-reload managers want with it); see mql_notify for the result. */
int mql_notify_reloading(void);

#endif
