/*
 * topic.h - the topic tree: subscriptions (with + and #) and retained messages.
 *
 * One tree holds both: subscription filters are paths whose levels may be "+" or "#",
 * retained messages hang on the nodes of their topic names. Matching follows MQTT 3.1.1
 * and 5.0 section 4.7: '#' matches the parent level and any number of levels below, '+'
 * exactly one level (including an empty one), and a topic whose first level starts with
 * '$' is not matched by a filter starting with a wildcard [MQTT-4.7.2-1].
 *
 * Subscriptions point to sessions, never to connections, so a takeover changes nothing
 * here. Each mql_sub is linked both into its node and (by the caller, through snext/sprev)
 * into its session's list, so ending a session removes its subscriptions without searching.
 *
 * Locking: none inside. The caller (the broker core) serialises every call.
 */
#ifndef MQL_TOPIC_H
#define MQL_TOPIC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "codec.h"
#include "msg.h"

struct mql_session;
struct tnode;
struct mql_sub;

/* A shared subscription group ($share/NAME/FILTER) [MQTT-4.8.2]: its members are
 * subscriptions of different sessions on the same filter; each matching message goes to one
 * of them. `refs` counts members plus queued messages that remember the group (to re-deliver
 * them to another member when a session ends); the group is freed when it reaches 0. */
typedef struct mql_share {
    struct mql_share *next; /* in the node */
    struct tnode *node;     /* NULL once the last member left */
    struct mql_sub *members;
    uint32_t nmembers;
    uint32_t refs;
    uint32_t rr; /* round-robin cursor */
    uint32_t name_len;
    char name[];
} mql_share;

typedef struct mql_sub {
    struct mql_session *session;
    struct tnode *node;
    mql_share *share;      /* the group for $share/ filters, else NULL */
    struct mql_sub *next;  /* in the node, or in the share group */
    struct mql_sub *snext; /* in the session (caller-managed) */
    struct mql_sub *sprev;
    uint32_t sub_id; /* v5 Subscription Identifier, 0 = none */
    uint8_t qos;
    bool no_local;
    bool retain_as_published;
    uint8_t retain_handling;
    uint32_t filter_len;
    char filter[]; /* NUL-terminated copy of the filter */
} mql_sub;

/*
 * mql_topic_matches: true when the topic name `topic` is matched by the topic filter `filter`
 * (MQTT 4.7): levels are separated by '/', '+' matches exactly one level (also an empty
 * one), '#' matches its parent level and any number of levels below it, other levels match
 * byte for byte (case-sensitive), and a filter starting with a wildcard never matches a
 * topic starting with '$' [MQTT-4.7.2-1]. Both are borrowed; an empty slice counts as one
 * empty level. Expects a valid filter (mql_topic_filter_valid) and a topic without
 * wildcards; anything else gives a defined but meaningless answer, never an overread.
 */
bool mql_topic_matches(mql_bytes filter, mql_bytes topic);
/*
 * mql_topic_matches_levels: mql_topic_matches without the '$' rule [MQTT-4.7.2-1], for a
 * topic that is what follows a prefix (a bridge's topic mapping: the rule's pattern against
 * the topic after its local or remote prefix), whose first level is not a topic name's
 * first. Same expectations and guarantees otherwise.
 */
bool mql_topic_matches_levels(mql_bytes filter, mql_bytes topic);

/*
 * mql_topic_covers: true when `rule` matches every topic name that `filter` matches (both
 * valid, non-shared filters): "a/#" covers "a/+/b", "a/#" and "a"; "a/+/b" does not cover
 * "a/#"; "#" covers "+/x" but not "$SYS/#". Decided on the two filters alone.
 */
bool mql_topic_covers(mql_bytes rule, mql_bytes filter);

/*
 * mql_topic_intersects: true when some topic name is matched by both filters a and b
 * (valid, non-shared): "a/+" and "+/b" intersect (on "a/b"); "#" and "$SYS/x" do not.
 */
bool mql_topic_intersects(mql_bytes a, mql_bytes b);

typedef struct mql_topics mql_topics;

MQL_MUST_CHECK mql_err mql_topics_alloc(mql_topics **out);

/* Free the tree, its subscriptions and its references to retained messages. */
void mql_topics_free(mql_topics *t);

/*
 * Add session's subscription to a valid filter (a "$share/GROUP/FILTER" filter joins the
 * group GROUP on FILTER), or update it when the session already has
 * one on the same filter [MQTT-3.8.4-3]: *existed says which. The options are copied from
 * tmpl (session, qos, no_local, retain_as_published, retain_handling, sub_id).
 * Returns the subscription, or NULL when out of memory.
 */
mql_sub *mql_topics_subscribe(mql_topics *t, mql_bytes filter, const mql_sub *tmpl, bool *existed);

/* The session's subscription on exactly this filter, or NULL. */
mql_sub *mql_topics_find(mql_topics *t, mql_bytes filter, const struct mql_session *s);

/* Remove and free one subscription (the caller unlinks it from its session first). */
void mql_topics_remove(mql_topics *t, mql_sub *sub);

/* Call cb for every non-shared subscription whose filter matches the topic name (a session
 * with several matching filters is reported once per filter), and group_cb (may be NULL)
 * once for every shared subscription group whose filter matches. */
typedef void (*mql_sub_cb)(void *arg, const mql_sub *sub);
typedef void (*mql_share_cb)(void *arg, mql_share *group);
void mql_topics_match(mql_topics *t, mql_bytes topic, mql_sub_cb cb, mql_share_cb group_cb,
                      void *arg);

/* Take or drop a reference to a share group (for messages that remember it). */
void mql_share_ref(mql_share *g);
void mql_share_unref(mql_share *g);

/* Store msg as the retained message of its topic, replacing any previous one; msg with an
 * empty payload (or NULL) removes it [MQTT-3.3.1-10] [MQTT-3.3.1-11]. Takes a new reference
 * to msg when it is stored. Returns MQL_E_NOMEM when a node cannot be made. */
MQL_MUST_CHECK mql_err mql_topics_retain(mql_topics *t, mql_bytes topic, mql_msg *msg);

/* Call cb for every retained message whose topic matches filter. */
typedef void (*mql_retained_cb)(void *arg, mql_msg *msg);
void mql_topics_retained(mql_topics *t, mql_bytes filter, mql_retained_cb cb, void *arg);

/* Counts, for statistics. */
size_t mql_topics_sub_count(const mql_topics *t);
size_t mql_topics_retained_count(const mql_topics *t);

#endif
