/*
 * auth_acl.h - who may publish and subscribe where: the ACL file and its decisions.
 *
 * Pure: no locks, no global state, no logging. A check only reads its object, so several
 * threads may check at once as long as nobody frees the object meanwhile (SIGHUP: load a
 * new one, swap the pointer under the broker's lock, free the old one when no check uses
 * it). A failed load leaves nothing behind and reports "FILE:LINE: what is wrong".
 *
 * The file (mosquitto syntax):
 *
 *     # comment
 *     topic [read|write|readwrite|deny] FILTER     (before any `user` line: anonymous clients)
 *     user NAME                                    (starts NAME's section; may repeat)
 *     topic [read|write|readwrite|deny] FILTER     (in a section: that user)
 *     pattern [read|write|readwrite|deny] FILTER   (anywhere: every client, %u %c substituted)
 *
 * As in mosquitto, NAME and FILTER are the rest of the line (they may contain spaces), and
 * `topic FILTER` without an access word means readwrite (so `topic read` grants readwrite
 * on the topic "read", as mosquitto does). FILTER must be a valid MQTT topic filter and not
 * a `$share/` filter (rules apply to the filter inside a shared subscription). Unknown
 * keywords, unknown access words and bad filters are errors with FILE:LINE. Leading and
 * trailing white space of a line are ignored.
 *
 * Which rules apply to a client:
 * - user == NULL (anonymous): the `topic` lines before the first `user` line, and patterns.
 * - user != NULL: the `topic` lines of every `user` section with exactly that name (empty
 *   set when there is none), and patterns. Anonymous rules never apply to a named user.
 * - Patterns: "%u" is replaced by the user name and "%c" by the client id, anywhere in the
 *   filter (other '%' are literal, as in mosquitto). A pattern that needs %u is skipped for
 *   anonymous clients (mosquitto does the same), one that needs %c is skipped when
 *   client_id is NULL. Hardening beyond mosquitto: a value containing '/', '+' or '#' could
 *   reach other clients' topics (client id "a/b" against `devices/%c/#` would get
 *   devices/a/b/#, inside client "a"'s tree), so a granting pattern is skipped when a value
 *   it substitutes contains one of them; a deny pattern is still applied with the value
 *   inserted literally (a "+" or "#" level then widens the denial: fail closed).
 *
 * Decision (the order of lines does not matter):
 *   1. If any applicable `deny` rule matches, access is refused ("deny wins").
 *   2. Else access is granted when an applicable rule with the access matches
 *      (read: read|readwrite; write: write|readwrite).
 *   3. Else refused: with an ACL file loaded, nothing is allowed unless a rule grants it.
 * Matching a topic name against a rule filter follows MQTT 4.7: '+' is one level (possibly
 * empty), '#' the parent level and everything below, and a rule starting with a wildcard
 * never matches a topic starting with '$' [MQTT-4.7.2-1]. So `$SYS/...` is readable only
 * through a rule whose first level is a literal `$SYS` (no implicit access, `#` is not
 * enough).
 *
 * SUBSCRIBE (mql_acl_can_subscribe): the filter is allowed only when every topic it could
 * match is readable. Precisely:
 *   a. no applicable deny rule intersects the filter (some topic matches both), and
 *   b. one applicable read rule covers the filter (every topic the filter matches, the rule
 *      matches too): rule `sensors/#` covers `sensors/+/temp`, `sensors/#` and `sensors`;
 *      rule `sensors/+/temp` does not cover `sensors/#`; rule `#` covers `+/x` but not
 *      `$SYS/#`; rule `$SYS/#` covers `$SYS/broker/uptime`.
 * This differs from mosquitto, which checks the filter text against the rule as if it were
 * a topic and filters each message again at delivery. Consequence: with `topic read #` and
 * `topic deny secret/#`, subscribing to `#` is refused here (it would match secret/x); the
 * client must subscribe to narrower filters. Coverage is decided per rule: a filter covered
 * only by the union of two rules (rules `a` and `a/+/#` against filter `a/#`) is refused.
 * Because of (a) and (b), every message routed to an allowed subscription is readable at
 * the time of the SUBSCRIBE; the broker should still call mql_acl_can_read at delivery,
 * because the ACL may be reloaded while the subscription lives.
 * A `$share/GROUP/FILTER` subscription is checked as FILTER.
 */
#ifndef MQL_AUTH_ACL_H
#define MQL_AUTH_ACL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "codec.h"
#include "err.h"

/* mql_acl: a loaded ACL (opaque); checks only read it. */
typedef struct mql_acl mql_acl;

/*
 * mql_acl_load: load the ACL file at path (syntax and semantics above). On success *out owns the
 * rules; free with mql_acl_free. Returns MQL_OK, MQL_E_CONFIG ("FILE:LINE: why" in errbuf),
 * MQL_E_IO
 * ("FILE: strerror") or MQL_E_NOMEM. OUT: *out is NULL on error; errbuf is "" on success.
 */
MQL_MUST_CHECK mql_err mql_acl_load(mql_acl **out, const char *path, char *errbuf, size_t errlen);

/* mql_acl_parse: the same from len bytes of text in memory; `name` is the FILE of messages. */
MQL_MUST_CHECK mql_err mql_acl_parse(mql_acl **out, const char *text, size_t len, const char *name,
                                     char *errbuf, size_t errlen);

/* mql_acl_free: free an ACL object. NULL is allowed. */
void mql_acl_free(mql_acl *acl);

/* mql_acl_rule_count: number of rules (topic and pattern lines) in acl (0 for NULL). */
size_t mql_acl_rule_count(const mql_acl *acl);

/*
 * mql_acl_can_read: may this client receive a message published on topic (a topic name, no
 * wildcards)? user: the authenticated user name, NULL for anonymous. client_id: the ClientID (NUL-
 * terminated; NULL only when unknown). acl == NULL means no ACL file is configured:
 * everything is allowed. A topic with '+' or '#' or an empty topic is refused.
 * Returns false too when memory for a pattern substitution cannot be had (fail closed).
 */
bool mql_acl_can_read(const mql_acl *acl, const char *user, const char *client_id, mql_bytes topic);

/* mql_acl_can_write: may this client publish on topic? Same contract as mql_acl_can_read. */
bool mql_acl_can_write(const mql_acl *acl, const char *user, const char *client_id,
                       mql_bytes topic);

/*
 * mql_acl_can_subscribe: may this client subscribe to filter (rules a and b above; `$share/GROUP/`
 * is stripped)? An invalid filter is refused. acl == NULL: true for any valid filter.
 */
bool mql_acl_can_subscribe(const mql_acl *acl, const char *user, const char *client_id,
                           mql_bytes filter);

#endif
