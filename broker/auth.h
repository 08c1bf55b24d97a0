/*
 * auth.h - who may log in (password file), who may publish and subscribe where (ACL file),
 * and how often a peer address may fail to log in (rate limiter).
 *
 * This module decides; the broker asks. It is pure: no locks, no global state, no logging.
 * The password and ACL checks only read their object, so several threads may call them at
 * once as long as nobody frees or replaces the object meanwhile (SIGHUP: load the new one,
 * swap the pointer under the broker's lock, free the old one when no check uses it). The
 * rate limiter changes its table: the broker serialises calls on one limiter. Loading
 * reads one file and reports the first problem as one line "FILE:LINE: what is wrong"; a
 * failed load leaves nothing behind, so on SIGHUP the broker keeps the objects it has.
 *
 * This header is an umbrella: the password file is in auth_passwd.h, the ACL in
 * auth_acl.h, the rate limiter in ratelimit.h (each with its file format and contracts).
 */
#ifndef MQL_AUTH_H
#define MQL_AUTH_H

#include "auth_acl.h"
#include "auth_passwd.h"
#include "ratelimit.h"

#endif
