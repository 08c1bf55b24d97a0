/*
 * main.c - the mqlite command line.
 *
 *   mqlite [-c FILE] [-p PORT] [-v] [--check] [--help] [--version]
 *
 * Runs in the foreground (what busybox init and supervisors expect). Signals are blocked
 * in every thread and taken synchronously by the main thread with sigwait(), so no broker
 * code runs in a signal handler: SIGTERM/SIGINT shut down cleanly, SIGHUP re-reads the
 * configuration file for what can change at run time (log_type).
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "broker.h"
#include "config.h"
#include "platform/log.h"

#ifndef MQL_VERSION
#define MQL_VERSION "0.0.0"
#endif

static void usage(FILE *f)
{
    fprintf(f, "usage: mqlite [-c FILE] [-p PORT] [-v] [--check]\n"
               "  -c FILE     read the configuration file (mosquitto.conf syntax)\n"
               "  -p PORT     listen on 127.0.0.1:PORT (in addition to configured listeners)\n"
               "  -v          verbose: log everything (log_type all)\n"
               "  --check     validate the configuration and exit (0 valid, 1 not)\n"
               "  --version   print the version and exit\n"
               "  --help      this text\n");
}

static bool parse_port(const char *s, uint16_t *out)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (*s == '\0' || *end != '\0' || v < 1 || v > 65535)
        return false;
    *out = (uint16_t)v;
    return true;
}

int main(int argc, char **argv)
{
    const char *conf_path = NULL;
    uint16_t port = 0;
    bool check = false, verbose = false;
    char err[512];

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-c") == 0 && i + 1 < argc) {
            conf_path = argv[++i];
        } else if (strcmp(a, "-p") == 0 && i + 1 < argc) {
            if (!parse_port(argv[++i], &port)) {
                fprintf(stderr, "mqlite: -p: '%s' is not a port number from 1 to 65535\n", argv[i]);
                return 1;
            }
        } else if (strcmp(a, "-v") == 0) {
            verbose = true;
        } else if (strcmp(a, "--check") == 0) {
            check = true;
        } else if (strcmp(a, "--version") == 0) {
            printf("mqlite %s\n", MQL_VERSION);
            return 0;
        } else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return 0;
        } else {
            fprintf(stderr, "mqlite: unknown argument '%s'\n", a);
            usage(stderr);
            return 1;
        }
    }

    mql_config cfg;
    mql_config_defaults(&cfg);
    if (conf_path != NULL && mql_config_load(&cfg, conf_path, err, sizeof(err)) != MQL_OK) {
        fprintf(stderr, "mqlite: %s\n", err);
        return 1;
    }
    if (port != 0) {
        if (cfg.n_listeners >= MQL_MAX_LISTENERS) {
            fprintf(stderr, "mqlite: -p: too many listeners\n");
            return 1;
        }
        mql_listener_conf *l = &cfg.listeners[cfg.n_listeners++];
        memset(l, 0, sizeof(*l));
        l->port = port;
        snprintf(l->address, sizeof(l->address), "127.0.0.1");
    }
    if (cfg.n_listeners == 0) {
        fprintf(stderr, "mqlite: no listener configured (use -p PORT or a 'listener' line%s%s)\n",
                conf_path ? " in " : "", conf_path ? conf_path : "");
        return 1;
    }
    if (check) {
        printf("%s: configuration is valid\n", conf_path ? conf_path : "(defaults)");
        return 0;
    }
    if (verbose)
        cfg.log_types = 0x1f;
    mql_log_set_types(cfg.log_types);

    /* Block the signals we handle before any thread exists, so every thread inherits it. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    mql_broker *b;
    if (mql_broker_alloc(&b, &cfg) != MQL_OK) {
        fprintf(stderr, "mqlite: out of memory\n");
        return 1;
    }
    if (mql_broker_start(b, err, sizeof(err)) != MQL_OK) {
        mql_error("broker.start", "%s", err);
        mql_broker_shutdown(b);
        mql_broker_free(b);
        return 1;
    }
    mql_notice("broker.start", "mqlite %s running (pid %ld)", MQL_VERSION, (long)getpid());

    for (;;) {
        int sig = 0;
        if (sigwait(&sigs, &sig) != 0)
            continue;
        if (sig == SIGHUP) {
            if (conf_path == NULL) {
                mql_notice("broker.reload", "SIGHUP: no configuration file to reload");
                continue;
            }
            mql_config fresh;
            mql_config_defaults(&fresh);
            if (mql_config_load(&fresh, conf_path, err, sizeof(err)) != MQL_OK) {
                mql_error("broker.reload", "SIGHUP: keeping the running configuration: %s", err);
                continue;
            }
            mql_log_set_types(verbose ? 0x1f : fresh.log_types);
            mql_notice("broker.reload", "SIGHUP: reloaded log_type from %s", conf_path);
            continue;
        }
        mql_notice("broker.stop", "%s received, shutting down",
                   sig == SIGTERM ? "SIGTERM" : "SIGINT");
        break;
    }
    mql_broker_shutdown(b);
    mql_broker_free(b);
    mql_notice("broker.stop", "mqlite stopped");
    return 0;
}
