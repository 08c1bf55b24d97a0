/*
 * test_notify.c - platform/notify.c against a real Unix datagram socket, as systemd listens
 * for Type=notify services.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "platform/notify.h"

/* A datagram socket bound to `name` (a path, or "@..." for the abstract namespace). */
static int listen_at(const char *name)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    size_t len = strlen(name);
    cr_assert(len < sizeof(sa.sun_path));
    memcpy(sa.sun_path, name, len);
    if (name[0] == '@')
        sa.sun_path[0] = '\0';
    int fd = socket(AF_UNIX, SOCK_DGRAM, 0);
    cr_assert(fd >= 0);
    struct timeval tv = {.tv_sec = 5};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    cr_assert(bind(fd, (struct sockaddr *)&sa,
                   (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len)) == 0,
              "bind %s: %s", name, strerror(errno));
    return fd;
}

static void expect(int fd, const char *want_prefix)
{
    char buf[256];
    ssize_t n = recv(fd, buf, sizeof(buf) - 1, 0);
    cr_assert(n > 0, "no datagram: %s", strerror(errno));
    buf[n] = '\0';
    cr_assert(strncmp(buf, want_prefix, strlen(want_prefix)) == 0, "got '%s', want '%s...'", buf,
              want_prefix);
}

Test(notify, path_socket)
{
    char path[] = "/tmp/mqlite-notify-XXXXXX";
    cr_assert(mkdtemp(path) != NULL);
    char name[128];
    snprintf(name, sizeof(name), "%s/notify", path);
    int fd = listen_at(name);
    setenv("NOTIFY_SOCKET", name, 1);
    cr_assert_eq(mql_notify("READY=1"), 0);
    expect(fd, "READY=1");
    cr_assert_eq(mql_notify_reloading(), 0);
    expect(fd, "RELOADING=1\nMONOTONIC_USEC=");
    cr_assert_eq(mql_notify("STOPPING=1"), 0);
    expect(fd, "STOPPING=1");
    close(fd);
    unlink(name);
    rmdir(path);
}

Test(notify, abstract_socket)
{
    char name[64];
    snprintf(name, sizeof(name), "@mqlite-notify-test-%ld", (long)getpid());
    int fd = listen_at(name);
    setenv("NOTIFY_SOCKET", name, 1);
    cr_assert_eq(mql_notify("READY=1"), 0);
    expect(fd, "READY=1");
    close(fd);
}

Test(notify, not_under_a_service_manager)
{
    unsetenv("NOTIFY_SOCKET");
    cr_assert_eq(mql_notify("READY=1"), 0);
    setenv("NOTIFY_SOCKET", "", 1);
    cr_assert_eq(mql_notify("READY=1"), 0);
}

Test(notify, bad_socket_names)
{
    setenv("NOTIFY_SOCKET", "relative/path", 1);
    cr_assert_eq(mql_notify("READY=1"), -EINVAL);
    char longname[200];
    memset(longname, 'a', sizeof(longname) - 1);
    longname[0] = '/';
    longname[sizeof(longname) - 1] = '\0';
    setenv("NOTIFY_SOCKET", longname, 1);
    cr_assert_eq(mql_notify("READY=1"), -EINVAL);
    setenv("NOTIFY_SOCKET", "/nonexistent/dir/notify", 1);
    cr_assert_lt(mql_notify("READY=1"), 0);
}
