/*
 * startup.c - the configuration in the platform's terms, and `mqlite --check`.
 *
 * Start-up (broker.c, bridge.c) and --check (main.c) read the same files through the same
 * functions here, so a configuration that passes --check fails at start only for what can
 * change in between (a port taken, a file edited) or cannot be known without starting.
 * Locking: none (called before any thread, or by --check). Performance: not on any hot path.
 */
#include "startup.h"

#include <errno.h>
#include <limits.h>
#include <pwd.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "auth_acl.h"
#include "auth_passwd.h"

mql_err mql_startup_listen_opts(const mql_config *cfg, int i, char *url, size_t cap,
                                mql_listen_opts *out, char *errbuf, size_t errlen)
{
    const mql_listener_conf *l = &cfg->listeners[i];
    const char *addr = l->address[0] ? l->address : "0.0.0.0";
    bool tls = l->certfile[0] != '\0';
    bool ws = l->protocol == MQL_LISTENER_WEBSOCKETS;
    const char *scheme = ws ? (tls ? "wss" : "ws") : (tls ? "tls+tcp" : "tcp");
    const char *path = ws ? (l->websockets_path[0] ? l->websockets_path : "/mqtt") : "";
    if (strchr(addr, ':') != NULL)
        snprintf(url, cap, "%s://[%s]:%u%s", scheme, addr, l->port, path);
    else
        snprintf(url, cap, "%s://%s:%u%s", scheme, addr, l->port, path);
    *out = (mql_listen_opts){
        .id = i,
        .url = url,
        .certfile = tls ? l->certfile : NULL,
        .keyfile = l->keyfile[0] ? l->keyfile : NULL,
        .keypass = l->keyfile_password[0] ? l->keyfile_password : NULL,
        .cafile = l->cafile[0] ? l->cafile : NULL,
        .require_certificate = l->require_certificate,
        .identity_username = l->use_identity_as_username,
    };
    if (!tls &&
        (l->keyfile[0] || l->cafile[0] || l->require_certificate || l->use_identity_as_username)) {
        snprintf(errbuf, errlen,
                 "listener %u (line %d): keyfile/cafile/require_certificate/"
                 "use_identity_as_username need certfile",
                 l->port, l->line);
        return MQL_E_CONFIG;
    }
    return MQL_OK;
}

void mql_startup_dial_opts(const mql_bridge_conf *bc, int k, char *url, size_t ucap, char *host,
                           size_t hcap, mql_dial_opts *out)
{
    bool tls = bc->cafile[0] != '\0' || bc->capath[0] != '\0';
    snprintf(url, ucap, "%s://%s", tls ? "tls+tcp" : "tcp", bc->addresses[k]);
    snprintf(host, hcap, "%s", bc->addresses[k]);
    char *colon = strrchr(host, ':');
    if (colon != NULL)
        *colon = '\0';
    *out = (mql_dial_opts){
        .url = url,
        .cafile = bc->cafile[0] ? bc->cafile : NULL,
        .capath = bc->capath[0] ? bc->capath : NULL,
        .certfile = bc->certfile[0] ? bc->certfile : NULL,
        .keyfile = bc->keyfile[0] ? bc->keyfile : NULL,
        .server_name = bc->insecure ? NULL : host,
        .alpn = bc->alpn[0] ? bc->alpn : NULL,
    };
}

/* The directory part of path ("." for a bare name). OUT: dir. */
static void dir_of(const char *path, char *dir, size_t cap)
{
    const char *slash = strrchr(path, '/');
    if (slash == NULL)
        snprintf(dir, cap, ".");
    else if (slash == path)
        snprintf(dir, cap, "/");
    else
        snprintf(dir, cap, "%.*s", (int)(slash - path), path);
}

/* A file the broker creates or appends to (pid file, log file): it is writable, or its
 * directory is a directory we may create it in. */
static mql_err check_writable_file(const char *what, const char *path, char *errbuf, size_t errlen)
{
    if (access(path, F_OK) == 0) {
        if (access(path, W_OK) != 0) {
            snprintf(errbuf, errlen, "%s %s: not writable: %s", what, path, strerror(errno));
            return MQL_E_IO;
        }
        return MQL_OK;
    }
    char dir[PATH_MAX];
    dir_of(path, dir, sizeof(dir));
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        snprintf(errbuf, errlen, "%s %s: the directory %s does not exist", what, path, dir);
        return MQL_E_IO;
    }
    if (access(dir, W_OK | X_OK) != 0) {
        snprintf(errbuf, errlen, "%s %s: cannot create it in %s: %s", what, path, dir,
                 strerror(errno));
        return MQL_E_IO;
    }
    return MQL_OK;
}

/* persistence_location: a writable directory; a store already there readable and writable. */
static mql_err check_store(const mql_config *cfg, char *errbuf, size_t errlen)
{
    const char *dir = cfg->persistence_location[0] ? cfg->persistence_location : ".";
    struct stat st;
    if (stat(dir, &st) != 0) {
        snprintf(errbuf, errlen, "persistence_location %s: %s", dir, strerror(errno));
        return MQL_E_IO;
    }
    if (!S_ISDIR(st.st_mode)) {
        snprintf(errbuf, errlen, "persistence_location %s: not a directory", dir);
        return MQL_E_IO;
    }
    if (access(dir, W_OK | X_OK) != 0) {
        snprintf(errbuf, errlen, "persistence_location %s: not writable: %s", dir, strerror(errno));
        return MQL_E_IO;
    }
    char db[PATH_MAX];
    snprintf(db, sizeof(db), "%s/mqlite.db", dir);
    if (access(db, F_OK) == 0 && access(db, R_OK | W_OK) != 0) {
        snprintf(errbuf, errlen,
                 "persistence_location %s: the store %s is not readable and "
                 "writable: %s",
                 dir, db, strerror(errno));
        return MQL_E_IO;
    }
    return MQL_OK;
}

static mql_err check_auth(const mql_config *cfg, char *errbuf, size_t errlen)
{
    if (cfg->password_file[0] != '\0') {
        mql_passwd *pw = NULL;
        mql_err err = mql_passwd_load(&pw, cfg->password_file, errbuf, errlen);
        mql_passwd_free(pw);
        if (err != MQL_OK)
            return err;
    }
    if (cfg->acl_file[0] != '\0') {
        mql_acl *acl = NULL;
        mql_err err = mql_acl_load(&acl, cfg->acl_file, errbuf, errlen);
        mql_acl_free(acl);
        if (err != MQL_OK)
            return err;
    }
    return MQL_OK;
}

static mql_err check_tls(const mql_config *cfg, char *errbuf, size_t errlen)
{
    char why[512];
    for (int i = 0; i < cfg->n_listeners; i++) {
        char url[300];
        mql_listen_opts lo;
        mql_err err = mql_startup_listen_opts(cfg, i, url, sizeof(url), &lo, errbuf, errlen);
        if (err == MQL_OK && (err = mql_net_check_listen(&lo, why, sizeof(why))) != MQL_OK)
            snprintf(errbuf, errlen, "listener %u (line %d): %s", cfg->listeners[i].port,
                     cfg->listeners[i].line, why);
        if (err != MQL_OK)
            return err;
    }
    for (int j = 0; j < cfg->n_bridges; j++) {
        const mql_bridge_conf *bc = &cfg->bridges[j];
        for (int k = 0; k < bc->n_addresses; k++) {
            char url[200], host[128];
            mql_dial_opts o;
            mql_startup_dial_opts(bc, k, url, sizeof(url), host, sizeof(host), &o);
            mql_err err = mql_net_check_dial(&o, why, sizeof(why));
            if (err != MQL_OK) {
                snprintf(errbuf, errlen, "bridge %s (line %d): %s", bc->name, bc->line, why);
                return err;
            }
        }
    }
    return MQL_OK;
}

/* Started as root, the user to give root up to must exist (see main.c drop_privileges). */
static mql_err check_user(const mql_config *cfg, char *errbuf, size_t errlen)
{
    if (geteuid() != 0 || strcmp(cfg->user, "root") == 0)
        return MQL_OK;
    if (cfg->user[0] != '\0') {
        if (getpwnam(cfg->user) == NULL) {
            snprintf(errbuf, errlen, "user %s: no such user", cfg->user);
            return MQL_E_CONFIG;
        }
    } else if (getpwnam("mqlite") == NULL && getpwnam("nobody") == NULL) {
        snprintf(errbuf, errlen,
                 "started as root with no 'user' line, and neither user "
                 "'mqlite' nor 'nobody' exists to drop root to");
        return MQL_E_CONFIG;
    }
    return MQL_OK;
}

mql_err mql_startup_check(const mql_config *cfg, char *errbuf, size_t errlen)
{
    mql_err err = check_tls(cfg, errbuf, errlen);
    if (err == MQL_OK)
        err = check_auth(cfg, errbuf, errlen);
    if (err == MQL_OK && cfg->persistence)
        err = check_store(cfg, errbuf, errlen);
    if (err == MQL_OK && cfg->pid_file[0] != '\0')
        err = check_writable_file("pid_file", cfg->pid_file, errbuf, errlen);
    for (int i = 0; err == MQL_OK && i < cfg->n_log_files; i++)
        err = check_writable_file("log_dest file", cfg->log_files[i].path, errbuf, errlen);
    if (err == MQL_OK)
        err = check_user(cfg, errbuf, errlen);
    return err;
}
