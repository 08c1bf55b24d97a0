/*
 * startup.h - what start-up reads from the configuration, turned into the platform's terms
 * (listen and dial options) and checked without starting (`mqlite --check`).
 */
#ifndef MQL_STARTUP_H
#define MQL_STARTUP_H

#include <stddef.h>

#include "config.h"
#include "err.h"
#include "platform/net.h"

/* mql_startup_listen_opts fills *out with the listen options of listener i of cfg: its URL
 * (written into url, cap bytes: "tcp://ADDR:PORT", "tls+tcp://...", "ws://ADDR:PORT/PATH",
 * "wss://..."), TLS files and modes, id i. out's strings point into cfg and url. Returns
 * MQL_OK, or MQL_E_CONFIG (errbuf says why) when TLS options are given without certfile. */
MQL_MUST_CHECK mql_err mql_startup_listen_opts(const mql_config *cfg, int i, char *url, size_t cap,
                                               mql_listen_opts *out, char *errbuf, size_t errlen);

/* mql_startup_dial_opts fills *out with the dial options of address k of bridge bc: its URL
 * (into url, ucap bytes: "tcp://HOST:PORT" or "tls+tcp://HOST:PORT" when a CA file or
 * directory is set), the TLS files, the server name (the address's host, written into host,
 * hcap bytes; none with bridge_insecure) and ALPN list. out's strings point into bc, url and
 * host. */
void mql_startup_dial_opts(const mql_bridge_conf *bc, int k, char *url, size_t ucap, char *host,
                           size_t hcap, mql_dial_opts *out);

/* mql_startup_check checks what start-up would read, without starting: every listener's
 * URL and TLS files (loaded, key matched to certificate), every bridge's TLS files, the
 * password file and the ACL file (loaded and parsed), the store directory (a writable
 * directory; an existing store file readable and writable), the directories of the pid
 * file and of the log files (writable), and the user to give root up to (exists). Ports
 * are not bound: one in use is still found only at start. Returns MQL_OK, or the first
 * problem's error with errbuf naming the option, the file and what is wrong. */
MQL_MUST_CHECK mql_err mql_startup_check(const mql_config *cfg, char *errbuf, size_t errlen);

#endif
