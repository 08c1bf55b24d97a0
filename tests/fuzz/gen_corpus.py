#!/usr/bin/python3
"""gen_corpus.py - write the seed corpora of the three fuzz targets.

corpus/decode (fuzz_decode): each file is one MQTT control packet (the fuzzer decodes it as
  CONNECT, 3.1, 3.1.1 and 5.0), built from the figures of the MQTT 3.1.1 and 5.0
  specifications: every packet type of both versions, every v5 property, the short forms,
  and a set of packets that break one rule each so the error paths are seeded too.
corpus/conn (fuzz_conn): each file is one story of client connections to a broker (format
  in fuzz_conn.c): publish/subscribe at every QoS in both versions, takeover, offline queues,
  expiry, wills, authentication, ACLs, shared subscriptions, retained messages, limits,
  errors; plus the inputs that found bugs (named found_*).
corpus/config (fuzz_config): configuration files: the shipped etc/mqlite.conf, every key
  with a good and a bad value, and the file-level cases (comments, CRLF, BOM, NUL bytes,
  long lines, listener blocks).
Deterministic: running it again gives the same files. Files it does not write are kept.

Usage: tests/fuzz/gen_corpus.py [OUT_DIR]   (default: tests/fuzz/corpus next to it)
"""
import os
import struct
import sys


def vbi(n):
    out = bytearray()
    while True:
        b = n % 128
        n //= 128
        if n:
            b |= 0x80
        out.append(b)
        if not n:
            return bytes(out)


def u16(n):
    return struct.pack(">H", n)


def u32(n):
    return struct.pack(">I", n)


def s(x):
    if isinstance(x, str):
        x = x.encode()
    return u16(len(x)) + x


def frame(b0, body):
    return bytes([b0]) + vbi(len(body)) + body


def props(*items):
    body = b"".join(items)
    return vbi(len(body)) + body


# One encoded property per identifier (table 2-4).
P = {
    "payload_format": b"\x01\x01",
    "message_expiry": b"\x02" + u32(3600),
    "content_type": b"\x03" + s("text/plain"),
    "response_topic": b"\x08" + s("reply/to"),
    "correlation_data": b"\x09" + s(b"\x00\x01\xff"),
    "sub_id": b"\x0b" + vbi(268435455),
    "sub_id_small": b"\x0b" + vbi(1),
    "session_expiry": b"\x11" + u32(0xFFFFFFFF),
    "assigned_client_id": b"\x12" + s("auto-1"),
    "server_keep_alive": b"\x13" + u16(30),
    "auth_method": b"\x15" + s("SCRAM-SHA-1"),
    "auth_data": b"\x16" + s(b"\x01\x02\x03"),
    "request_problem_info": b"\x17\x00",
    "will_delay": b"\x18" + u32(10),
    "request_response_info": b"\x19\x01",
    "response_info": b"\x1a" + s("resp"),
    "server_reference": b"\x1c" + s("other:1883"),
    "reason_string": b"\x1f" + s("because"),
    "receive_maximum": b"\x21" + u16(20),
    "topic_alias_maximum": b"\x22" + u16(10),
    "topic_alias": b"\x23" + u16(1),
    "maximum_qos": b"\x24\x01",
    "retain_available": b"\x25\x00",
    "user": b"\x26" + s("key") + s("value"),
    "user2": b"\x26" + s("key") + s("other"),
    "maximum_packet_size": b"\x27" + u32(1 << 20),
    "wildcard_sub_available": b"\x28\x01",
    "sub_id_available": b"\x29\x00",
    "shared_sub_available": b"\x2a\x01",
}


def connect(level=4, name="MQTT", flags=0x02, keep_alive=60, cprops=None, client_id="client",
            will_props=None, will_topic=None, will_payload=None, user=None, password=None):
    body = s(name) + bytes([level, flags]) + u16(keep_alive)
    if level == 5:
        body += cprops if cprops is not None else props()
    body += s(client_id)
    if will_topic is not None:
        if level == 5:
            body += will_props if will_props is not None else props()
        body += s(will_topic) + s(will_payload or b"")
    if user is not None:
        body += s(user)
    if password is not None:
        body += s(password)
    return frame(0x10, body)


def decode_seeds():
    """fuzz_decode: one control packet per file."""
    seeds = {}

    # ---- CONNECT ----
    seeds["v311_connect_min"] = connect()
    seeds["v311_connect_full"] = connect(flags=0xEE, will_topic="will/t", will_payload=b"bye",
                                         user="u", password=b"pw")
    seeds["v311_connect_empty_id"] = connect(client_id="")
    seeds["v31_connect_mqisdp"] = connect(level=3, name="MQIsdp", client_id="old")
    seeds["v5_connect_min"] = connect(level=5)
    seeds["v5_connect_full"] = connect(
        level=5, flags=0xF6,
        cprops=props(P["session_expiry"], P["auth_method"], P["auth_data"],
                     P["request_problem_info"], P["request_response_info"],
                     P["receive_maximum"], P["topic_alias_maximum"],
                     P["maximum_packet_size"], P["user"], P["user2"]),
        will_props=props(P["payload_format"], P["message_expiry"], P["content_type"],
                         P["response_topic"], P["correlation_data"], P["will_delay"],
                         P["user"]),
        will_topic="will/t", will_payload=b"\x00\xff", user="u", password=b"p")
    seeds["v5_connect_password_only"] = connect(level=5, flags=0x42, password=b"secret")
    seeds["bad_connect_name"] = connect(name="MQTX")
    seeds["bad_connect_level"] = connect(level=6)
    seeds["bad_connect_reserved"] = connect(flags=0x03)
    seeds["bad_connect_will_qos3"] = connect(flags=0x1E, will_topic="t", will_payload=b"x")
    seeds["bad_connect_will_qos_no_will"] = connect(flags=0x0A)
    seeds["bad_connect_pw_no_user"] = connect(flags=0x42, password=b"p")
    seeds["bad_connect_will_topic_wild"] = connect(flags=0x06, will_topic="a/#", will_payload=b"")
    seeds["bad_v5_connect_dup_prop"] = connect(
        level=5, cprops=props(P["session_expiry"], P["session_expiry"]))
    seeds["bad_v5_connect_wrong_prop"] = connect(level=5, cprops=props(P["topic_alias"]))
    seeds["bad_v5_connect_rm0"] = connect(level=5, cprops=props(b"\x21" + u16(0)))
    seeds["bad_v5_connect_auth_data_only"] = connect(level=5, cprops=props(P["auth_data"]))
    seeds["bad_connect_truncated"] = connect()[:-2]

    # ---- CONNACK ----
    seeds["v311_connack"] = frame(0x20, b"\x01\x00")
    seeds["v311_connack_refused"] = frame(0x20, b"\x00\x05")
    seeds["v5_connack_min"] = frame(0x20, b"\x00\x00\x00")
    seeds["v5_connack_full"] = frame(0x20, b"\x00\x00" + props(
        P["session_expiry"], P["assigned_client_id"], P["server_keep_alive"], P["auth_method"],
        P["auth_data"], P["response_info"], P["server_reference"], P["reason_string"],
        P["receive_maximum"], P["topic_alias_maximum"], P["maximum_qos"],
        P["retain_available"], P["maximum_packet_size"], P["wildcard_sub_available"],
        P["sub_id_available"], P["shared_sub_available"], P["user"]))
    seeds["bad_connack_flags"] = frame(0x20, b"\x02\x00")
    seeds["bad_v5_connack_maxqos2"] = frame(0x20, b"\x00\x00" + props(b"\x24\x02"))

    # ---- PUBLISH ----
    seeds["v311_publish_qos0"] = frame(0x30, s("a/b") + b"hello")
    seeds["v311_publish_qos1"] = frame(0x32, s("a/b") + u16(1) + b"x")
    seeds["v311_publish_qos2_dup_retain"] = frame(0x3D, s("sensors/t") + u16(0xFFFF) + b"21.5")
    seeds["v5_publish_qos0"] = frame(0x30, s("a/b") + props() + b"hello")
    seeds["v5_publish_full"] = frame(0x3B, s("a/b") + u16(7) + props(
        P["payload_format"], P["message_expiry"], P["content_type"], P["response_topic"],
        P["correlation_data"], P["sub_id"], P["sub_id_small"], P["topic_alias"], P["user"],
        P["user2"]) + b"payload")
    seeds["v5_publish_alias_only"] = frame(0x30, s("") + props(P["topic_alias"]) + b"x")
    seeds["v5_publish_utf8"] = frame(0x31, s("caf\u00e9/\U0002a6d4".encode()) + props() + b"")
    big = frame(0x30, s("big") + props() + bytes(range(256)) * 70)
    seeds["v5_publish_big"] = big
    seeds["bad_publish_qos3"] = frame(0x36, s("t") + u16(1))
    seeds["bad_publish_dup_qos0"] = frame(0x38, s("t"))
    seeds["bad_publish_wildcard"] = frame(0x30, s("a/+"))
    seeds["bad_publish_pid0"] = frame(0x32, s("t") + u16(0))
    seeds["bad_publish_utf8_surrogate"] = frame(0x30, s(b"\xed\xa0\x80"))
    seeds["bad_publish_nul"] = frame(0x30, s(b"a\x00"))
    seeds["bad_v5_publish_empty_topic"] = frame(0x30, s("") + props())
    seeds["bad_v5_publish_alias0"] = frame(0x30, s("t") + props(b"\x23" + u16(0)))
    seeds["bad_v5_publish_subid0"] = frame(0x30, s("t") + props(b"\x0b\x00"))
    seeds["bad_v5_publish_vbi_nonminimal"] = frame(0x30, s("t") + props(b"\x0b\x81\x00"))
    seeds["bad_v5_publish_unknown_prop"] = frame(0x30, s("t") + props(b"\x04\x00"))
    seeds["bad_v5_publish_response_wild"] = frame(0x30, s("t") + props(b"\x08" + s("r/#")))
    seeds["bad_v5_publish_pfi2"] = frame(0x30, s("t") + props(b"\x01\x02"))
    seeds["bad_v5_publish_proplen"] = frame(0x30, s("t") + b"\x10\x01\x01")

    # ---- PUBACK PUBREC PUBREL PUBCOMP ----
    for name, b0, rc in (("puback", 0x40, 0x10), ("pubrec", 0x50, 0x80),
                         ("pubrel", 0x62, 0x92), ("pubcomp", 0x70, 0x92)):
        seeds[f"v311_{name}"] = frame(b0, u16(1))
        seeds[f"v5_{name}_rc"] = frame(b0, u16(2) + bytes([rc]))
        seeds[f"v5_{name}_props"] = frame(b0, u16(3) + bytes([rc]) +
                                          props(P["reason_string"], P["user"]))
        seeds[f"v5_{name}_empty_props"] = frame(b0, u16(4) + b"\x00\x00")
        seeds[f"bad_{name}_flags"] = frame(b0 ^ 0x01, u16(1))
        seeds[f"bad_{name}_pid0"] = frame(b0, u16(0))
    seeds["bad_v5_puback_rc"] = frame(0x40, u16(1) + b"\x05")
    seeds["bad_v5_puback_dup_reason"] = frame(0x40, u16(1) + b"\x00" +
                                              props(P["reason_string"], P["reason_string"]))

    # ---- SUBSCRIBE / SUBACK ----
    seeds["v311_subscribe"] = frame(0x82, u16(1) + s("a/+") + b"\x01" + s("#") + b"\x02")
    seeds["v5_subscribe"] = frame(0x82, u16(10) + props(P["sub_id_small"], P["user"]) +
                                  s("a/+") + b"\x2d" + s("#") + b"\x00" +
                                  s("$share/g/t") + b"\x12")
    seeds["v5_subscribe_many"] = frame(0x82, u16(11) + props() + b"".join(
        s(f"t/{i}/+") + bytes([i % 3]) for i in range(40)))
    seeds["bad_subscribe_empty"] = frame(0x82, u16(1))
    seeds["bad_v311_subscribe_qos_bits"] = frame(0x82, u16(1) + s("#") + b"\x04")
    seeds["bad_v5_subscribe_reserved"] = frame(0x82, u16(1) + props() + s("#") + b"\xc0")
    seeds["bad_v5_subscribe_rh3"] = frame(0x82, u16(1) + props() + s("#") + b"\x30")
    seeds["bad_v5_subscribe_nolocal_shared"] = frame(0x82, u16(1) + props() +
                                                     s("$share/g/t") + b"\x04")
    seeds["bad_v5_subscribe_two_subids"] = frame(0x82, u16(1) + props(P["sub_id"], P["sub_id"]) +
                                                 s("#") + b"\x00")
    seeds["v311_suback"] = frame(0x90, u16(1) + b"\x00\x01\x02\x80")
    seeds["v5_suback"] = frame(0x90, u16(1) + props(P["reason_string"], P["user"]) +
                               b"\x00\x01\x02\x80\x83\x87\x8f\x91\x97\x9e\xa1\xa2")
    seeds["bad_suback_code"] = frame(0x90, u16(1) + b"\x03")

    # ---- UNSUBSCRIBE / UNSUBACK ----
    seeds["v311_unsubscribe"] = frame(0xA2, u16(2) + s("a/b") + s("#"))
    seeds["v5_unsubscribe"] = frame(0xA2, u16(2) + props(P["user"]) + s("a/b") + s("#"))
    seeds["bad_unsubscribe_empty"] = frame(0xA2, u16(2))
    seeds["v311_unsuback"] = frame(0xB0, u16(2))
    seeds["v5_unsuback"] = frame(0xB0, u16(2) + props(P["reason_string"]) + b"\x00\x11\x80\x8f")

    # ---- PINGREQ PINGRESP DISCONNECT AUTH ----
    seeds["pingreq"] = frame(0xC0, b"")
    seeds["pingresp"] = frame(0xD0, b"")
    seeds["disconnect"] = frame(0xE0, b"")
    seeds["v5_disconnect_rc"] = frame(0xE0, b"\x8e")
    seeds["v5_disconnect_full"] = frame(0xE0, b"\x04" + props(
        P["session_expiry"], P["server_reference"], P["reason_string"], P["user"]))
    seeds["bad_disconnect_flags"] = frame(0xE2, b"")
    seeds["auth_short"] = frame(0xF0, b"")
    seeds["v5_auth_full"] = frame(0xF0, b"\x18" + props(
        P["auth_method"], P["auth_data"], P["reason_string"], P["user"]))
    seeds["bad_v5_auth_no_method"] = frame(0xF0, b"\x19\x00")

    # ---- framing ----
    seeds["bad_type0"] = frame(0x00, b"")
    seeds["bad_rl_5_bytes"] = b"\x30\xff\xff\xff\xff\x01"
    seeds["bad_rl_nonminimal"] = b"\xc0\x80\x00"
    seeds["two_frames"] = frame(0xC0, b"") + frame(0xD0, b"")
    seeds["partial_frame"] = frame(0x30, s("a/b") + b"hello")[:6]

    return seeds


# ---- fuzz_conn: whole connections (the input format is described in fuzz_conn.c) ----

FEED, PACKET, CONNECT, CLOSE, TIME, BACKLOG, TRICKLE = 0, 2, 3, 4, 5, 6, 7
# The tables of fuzz_conn.c's builders, in the same order.
CIDS = ["a", "b", "", "dev-1", "a", "c", "x/y", "b"]
TOPICS = ["a/b", "a/c", "a/secret", "$SYS/broker/uptime", "dev/a/x", "secret/x", "out/u/x", "w/a"]
USERS = ["u", "v", "x"]
PASSWORDS = ["p", "q", "wrong", ""]


def cfg(no_anon=False, acl=False, max_qos=2, no_retain=False, no_shared=False, no_subid=False,
        no_wildcard=False, inflight=20, queued=1000, max_packet_64=False, reject_new=False,
        max_keepalive_10=False, sys_1s=False, alias=10, alias_broker=10, queued_bytes_100=False,
        session_expiry_5=False, max_conn_2=False, sync_off=False):
    """The three configuration bytes (make_config in fuzz_conn.c)."""
    alias_idx = {10: 0, 0: 1, 1: 2, 65535: 3}
    c0 = (no_anon | acl << 1 | {2: 0, 1: 1, 0: 2}[max_qos] << 2 | no_retain << 4 |
          no_shared << 5 | no_subid << 6 | no_wildcard << 7)
    c1 = ({20: 0, 1: 1, 2: 2, 0: 3}[inflight] | {1000: 0, 1: 1, 3: 2, 0: 3}[queued] << 2 |
          max_packet_64 << 4 | reject_new << 5 | max_keepalive_10 << 6 | sys_1s << 7)
    c2 = (alias_idx[alias] | alias_idx[alias_broker] << 2 | queued_bytes_100 << 4 |
          session_expiry_5 << 5 | max_conn_2 << 6 | sync_off << 7)
    return bytes([c0, c1, c2])


def rec(kind, slot, data=b""):
    assert len(data) <= 255
    return bytes([kind << 2 | slot, len(data)]) + data


def feed(slot, *packets):
    """Raw bytes to a link, in records of at most 255 bytes."""
    data = b"".join(packets)
    return b"".join(rec(FEED, slot, data[i:i + 255]) for i in range(0, len(data), 255))


def trickle(slot, data):
    return rec(TRICKLE, slot, data)


def close(slot):
    return rec(CLOSE, slot)


def wait(seconds):
    """TIME: d0 quarter seconds (plus one) and d1 minutes."""
    minutes, rest = divmod(seconds, 60)
    return rec(TIME, 0, bytes([max(0, int(rest * 4) - 1), int(minutes)]))


def backlog(slot, full):
    return rec(BACKLOG, slot, bytes([1 if full else 0]))


def idx(value, table):
    return 0 if value is None else table.index(value)


def cconnect(slot, version=4, clean=True, will=None, will_qos=0, will_retain=False, cid="a",
             user=None, password=None, keepalive=60, expiry=None, recv_max=None,
             max_packet=None, alias_max=None, no_problem_info=False, response_info=False,
             will_delay=None, user_prop=False):
    """CONNECT record: a new link in slot and a valid CONNECT (build_connect in fuzz_conn.c)."""
    d0 = ({4: 0, 5: 1, 3: 2}[version] | clean << 2 | (will is not None) << 3 | will_qos << 4 |
          will_retain << 6 | (user is not None) << 7)
    d1 = (CIDS.index(cid) | USERS.index(user or "u") << 3 |
          PASSWORDS.index(password or "p") << 5 | (user is not None and password is None) << 7)
    d3 = ((expiry is not None) | (recv_max is not None) << 1 | (max_packet is not None) << 2 |
          (alias_max is not None) << 3 | no_problem_info << 4 | response_info << 5 |
          (will_delay is not None) << 6 | user_prop << 7)
    d4 = (idx(expiry, [0, 1, 60, 0xFFFFFFFF]) | idx(recv_max, [1, 2, 3, 65535]) << 2 |
          idx(max_packet, [30, 64, 300, 1 << 20]) << 4 | idx(alias_max, [0, 1, 2, 10]) << 6)
    d5 = idx(will_delay, [0, 1, 5, 3600]) | (TOPICS.index(will) if will else 0) << 2
    return rec(CONNECT, slot, bytes([d0, d1, keepalive, d3, d4, d5]))


def cpublish(slot, topic="a/b", qos=0, retain=False, alias=None, alias_only=False, pfi=False,
             expiry=None, response=False, pid=1, words=1, payload=b""):
    """PACKET record for a PUBLISH (build_packet in fuzz_conn.c); words * 4 payload bytes."""
    d0 = 0 | qos << 4 | retain << 6
    d1 = (TOPICS.index(topic) | (alias is not None) << 3 | alias_only << 4 | pfi << 5 |
          (expiry is not None) << 6 | response << 7)
    d2 = (alias or 0) | (expiry or 0) << 4
    return rec(PACKET, slot, bytes([d0, d1, d2, pid >> 8, pid & 0xFF, words]) + payload)


# Raw packets for FEED records.
def publish(topic, payload=b"", qos=0, pid=1, retain=False, dup=False, v5=False, pr=()):
    body = s(topic) + (u16(pid) if qos else b"") + (props(*pr) if v5 else b"") + payload
    return frame(0x30 | dup << 3 | qos << 1 | retain, body)


def subscribe(pid, entries, v5=False, pr=()):
    body = u16(pid) + (props(*pr) if v5 else b"")
    return frame(0x82, body + b"".join(s(f) + bytes([o]) for f, o in entries))


def unsubscribe(pid, filters, v5=False):
    return frame(0xA2, u16(pid) + (props() if v5 else b"") + b"".join(s(f) for f in filters))


def ack(kind, pid, rc=None):
    b0 = {"puback": 0x40, "pubrec": 0x50, "pubrel": 0x62, "pubcomp": 0x70}[kind]
    return frame(b0, u16(pid) + (bytes([rc]) if rc is not None else b""))


def disconnect(v5=False, rc=0, pr=None):
    if not v5:
        return frame(0xE0, b"")
    return frame(0xE0, bytes([rc]) + (props(*pr) if pr is not None else b""))


PINGREQ = frame(0xC0, b"")


def conn_seeds():
    """fuzz_conn: one story per file, each aimed at one area of the broker."""
    D = cfg()
    seeds = {}
    v5c = lambda cid="a", **kw: connect(level=5, client_id=cid, **kw)  # noqa: E731

    # 3.1.1: subscribe, publish to itself at every QoS, complete both directions' flows.
    seeds["v311_pubsub_self"] = D + cconnect(0) + feed(
        0, subscribe(1, [("a/#", 2)]), publish("a/b", b"q0"), publish("a/b", b"q1", 1, 1),
        publish("a/b", b"q2", 2, 2), ack("puback", 1), ack("pubrec", 2), ack("pubrel", 2),
        ack("pubcomp", 2), PINGREQ, unsubscribe(3, ["a/#"]), disconnect())
    # The same bytes one at a time, and a 3.1 (MQIsdp) client.
    seeds["v311_trickle"] = D + trickle(0, connect(client_id="a") + subscribe(1, [("a/b", 1)]) +
                                        publish("a/b", b"x", 1, 7) + ack("puback", 1) + PINGREQ)
    seeds["v31_client"] = D + cconnect(0, version=3) + feed(
        0, subscribe(1, [("a/+", 1)]), publish("a/c", b"x", 1, 1), ack("puback", 1))
    # MQTT 5: properties on the way in and out, Subscription Identifiers, No Local,
    # Retain As Published, user properties, response topic, payload format, expiry.
    seeds["v5_pubsub_props"] = D + cconnect(0, version=5, alias_max=10, response_info=True,
                                            user_prop=True) + feed(
        0, subscribe(1, [("a/#", 0x2E), ("a/b", 0x01)], v5=True, pr=(P["sub_id_small"],)),
        subscribe(2, [("+/b", 0x04)], v5=True, pr=(b"\x0b" + vbi(300),)),
        publish("a/b", b"hello", 1, 1, retain=True, v5=True,
                pr=(P["payload_format"], P["message_expiry"], P["content_type"],
                    P["response_topic"], P["correlation_data"], P["user"])),
        ack("puback", 1), ack("puback", 2), publish("a/b", b"", 0, v5=True, retain=True),
        disconnect(v5=True, rc=0))
    # Two clients: one subscribes, the other publishes; acks with v5 reason codes.
    seeds["two_clients"] = D + cconnect(0, version=5, cid="b") + feed(
        0, subscribe(1, [("a/#", 2)], v5=True)) + cconnect(1, cid="c") + feed(
        1, publish("a/b", b"1", 1, 10), publish("a/c", b"2", 2, 11), ack("pubrel", 11),
        publish("a/b", b"3", 0)) + feed(
        0, ack("puback", 1), ack("pubrec", 2, 0x00), ack("pubcomp", 2), ack("pubrec", 9, 0x80))
    # Topic aliases both ways.
    seeds["v5_topic_alias"] = cfg(alias=1) + cconnect(0, version=5, alias_max=2) + feed(
        0, subscribe(1, [("#", 0)], v5=True),
        publish("a/b", b"1", v5=True, pr=(P["topic_alias"],)),
        publish("", b"2", v5=True, pr=(P["topic_alias"],)),
        publish("a/c", b"3", v5=True), publish("w/a", b"4", v5=True),
        publish("a/c", b"5", v5=True), publish("", b"6", v5=True, pr=(b"\x23" + u16(2),)))
    seeds["v5_topic_alias_packets"] = D + cconnect(0, version=5, alias_max=1) + feed(
        0, subscribe(1, [("#", 1)], v5=True)) + cpublish(0, "a/b", alias=1) + cpublish(
        0, "a/b", alias=1, alias_only=True) + cpublish(0, "a/c", qos=1, pid=5, pfi=True,
                                                       expiry=3, response=True, words=3)
    # Takeover: 3.1.1 and v5, with a persistent session and a will; reject_new refuses.
    seeds["takeover_v311"] = D + cconnect(0, clean=False, will="w/a") + feed(
        0, subscribe(1, [("a/#", 1)])) + cconnect(1, clean=False) + feed(
        1, PINGREQ) + cconnect(2, clean=True) + wait(1)
    seeds["takeover_v5"] = D + cconnect(3, version=5, cid="b") + feed(
        3, subscribe(1, [("w/#", 0)], v5=True)) + cconnect(
        0, version=5, expiry=60, will="w/a", will_delay=5) + cconnect(
        1, version=5, expiry=60, clean=False) + wait(6) + cconnect(2, version=5) + wait(1)
    seeds["takeover_rejected"] = cfg(reject_new=True) + cconnect(0) + cconnect(
        1) + cconnect(2, version=5) + feed(0, PINGREQ)
    # A persistent session collects QoS 1/2 while offline, then resumes (DUP re-sends).
    seeds["offline_queue_resume"] = D + cconnect(0, version=5, cid="b", expiry=60) + feed(
        0, subscribe(1, [("a/#", 2)], v5=True), publish("a/b", b"x", 1, 1, v5=True)) + close(
        0) + cconnect(1, cid="c") + feed(
        1, publish("a/b", b"1", 1, 1), publish("a/c", b"2", 2, 2), ack("pubrel", 2),
        publish("a/b", b"3", 0)) + wait(2) + cconnect(
        0, version=5, cid="b", expiry=60, clean=False) + feed(
        0, ack("puback", 1), ack("pubrec", 2), ack("pubcomp", 2), ack("puback", 3))
    seeds["queue_limits"] = cfg(inflight=1, queued=1, queued_bytes_100=True) + cconnect(
        0, cid="b", clean=False) + feed(0, subscribe(1, [("a/#", 1)])) + cconnect(
        1, cid="c") + feed(1, *(publish("a/b", bytes(40), 1, i) for i in range(1, 6))) + feed(
        0, ack("puback", 1), ack("puback", 2))
    # Message expiry while queued; session expiry; will delay; keepalive; CONNECT timeout.
    seeds["expiry"] = D + cconnect(0, version=5, cid="b", expiry=1) + feed(
        0, subscribe(1, [("a/#", 1)], v5=True)) + close(0) + cconnect(
        1, version=5, cid="c") + feed(
        1, publish("a/b", b"x", 1, 1, v5=True, pr=(b"\x02" + u32(1),))) + wait(2) + wait(
        120) + cconnect(0, version=5, cid="b", expiry=1, clean=False)
    seeds["will_delay"] = D + cconnect(1, version=5, cid="c") + feed(
        1, subscribe(1, [("#", 2)], v5=True)) + cconnect(
        0, version=5, expiry=60, will="a/b", will_qos=1, will_retain=True, will_delay=1,
        user_prop=True) + close(0) + wait(2) + cconnect(
        2, version=5, expiry=60, will="a/c", will_delay=3600) + feed(
        2, disconnect(v5=True, rc=4, pr=(b"\x11" + u32(0),))) + wait(1)
    seeds["keepalive_timeout"] = cfg(max_keepalive_10=True) + cconnect(
        0, keepalive=1, will="a/b") + cconnect(1, version=5, keepalive=60) + rec(
        FEED, 2, b"\x10") + wait(2) + wait(11)
    # Authentication (password file: u/p, v/q) and the login rate limiter; the ACL.
    seeds["auth"] = cfg(no_anon=True) + cconnect(0, user="u", password="p") + cconnect(
        1, version=5, user="v", password="q", cid="b") + cconnect(
        2, user="u", password="wrong", cid="c") + cconnect(2, user="x", cid="c") + cconnect(
        2, cid="c") + b"".join(cconnect(3, version=5, user="u", password="wrong", cid="c")
                               for _ in range(7))
    seeds["acl"] = cfg(no_anon=True, acl=True) + cconnect(
        0, user="u", password="p", cid="dev-1") + feed(
        0, subscribe(1, [("#", 1), ("secret/#", 0), ("dev/dev-1/#", 1), ("$SYS/#", 0)]),
        publish("secret/x", b"no", 1, 1), publish("a/b", b"ok", 1, 2),
        publish("out/u/x", b"ok")) + cconnect(1, version=5, user="v", password="q", cid="b") + feed(
        1, subscribe(1, [("a/#", 1), ("w/#", 1)], v5=True),
        publish("w/a", b"ok", 1, 1, v5=True), publish("a/b", b"no", 2, 2, v5=True))
    seeds["acl_anonymous"] = cfg(acl=True) + cconnect(0, cid="x/y") + feed(
        0, subscribe(1, [("a/#", 0), ("a/secret", 0), ("dev/x/y/#", 0)]),
        publish("a/secret", b"no"), publish("a/b", b"ok", 1, 1))
    # Shared subscriptions: two members, one leaves with messages in flight.
    seeds["shared"] = D + cconnect(0, version=5, cid="b", expiry=60) + cconnect(
        1, cid="c") + feed(0, subscribe(1, [("$share/g/a/#", 1)], v5=True)) + feed(
        1, subscribe(1, [("$share/g/a/#", 2), ("$share/h/#", 0)])) + cconnect(
        2, cid="dev-1") + feed(2, *(publish("a/b", b"m", 1, i) for i in range(1, 7))) + close(
        0) + feed(1, ack("puback", 1), ack("puback", 2)) + wait(70)
    # Retained messages and Retain Handling 0/1/2.
    seeds["retained"] = D + cconnect(0) + feed(
        0, publish("a/b", b"r1", 1, 1, retain=True), publish("a/c", b"r2", 2, 2, retain=True),
        ack("pubrel", 2), publish("a/c", b"", 0, retain=True)) + cconnect(
        1, version=5, cid="b") + feed(
        1, subscribe(1, [("a/#", 0x01)], v5=True), subscribe(2, [("a/#", 0x11)], v5=True),
        subscribe(3, [("a/+", 0x22)], v5=True), ack("puback", 1))
    # What the server does not support: QoS, retain, shared, identifiers, wildcards.
    seeds["features_off"] = cfg(max_qos=1, no_retain=True, no_shared=True, no_subid=True,
                                no_wildcard=True) + cconnect(0, version=5) + feed(
        0, subscribe(1, [("a/#", 2), ("$share/g/a", 1), ("a/b", 2)], v5=True),
        subscribe(2, [("a/b", 0)], v5=True, pr=(P["sub_id_small"],))) + cconnect(
        1, version=5, cid="b", will="a/b", will_qos=2) + cconnect(
        2, version=5, cid="c", will="a/b", will_retain=True) + cconnect(3) + feed(
        3, publish("a/b", b"x", 2, 1))
    seeds["qos0_server"] = cfg(max_qos=0) + cconnect(0, version=5) + feed(
        0, subscribe(1, [("a/#", 2)], v5=True), publish("a/b", b"x", 1, 1, v5=True))
    # Packet size limits: the broker's max_packet_size and the client's Maximum Packet Size.
    seeds["packet_size"] = cfg(max_packet_64=True) + cconnect(
        0, version=5, max_packet=30, response_info=True) + cconnect(
        1, version=5, cid="b", max_packet=64) + feed(
        1, subscribe(1, [("#", 0)], v5=True), publish("a/b", bytes(50), v5=True),
        publish("a/b", bytes(10), v5=True), publish("a/b", bytes(100), v5=True))
    seeds["big_publish"] = D + cconnect(0) + feed(
        0, subscribe(1, [("a/b", 0)]), publish("a/b", bytes(range(256)) * 12))
    # QoS 0 to a client with a send backlog is dropped.
    seeds["backlog"] = D + cconnect(0) + feed(0, subscribe(1, [("a/#", 0)])) + backlog(
        0, True) + cconnect(1, cid="b") + feed(1, publish("a/b", b"drop")) + backlog(
        0, False) + feed(1, publish("a/b", b"keep"))
    # $SYS every second.
    seeds["sys"] = cfg(sys_1s=True) + cconnect(0) + feed(0, subscribe(1, [("$SYS/#", 0)])) + wait(
        1) + wait(2)
    # Errors after CONNECT, each on its own link: malformed, protocol errors, server-only types.
    seeds["errors_v311"] = D + cconnect(0) + feed(0, frame(0x32, s("a/b") + u16(0))) + cconnect(
        1, cid="b") + feed(1, connect(client_id="b")) + cconnect(2, cid="c") + feed(
        2, frame(0x20, b"\x00\x00")) + cconnect(3, cid="dev-1") + feed(
        3, subscribe(1, [("a/#/b", 0)]))
    seeds["errors_v5"] = D + cconnect(0, version=5) + feed(
        0, publish("a/b", b"x", v5=True, pr=(b"\x23" + u16(11),))) + cconnect(
        1, version=5, cid="b") + feed(1, frame(0xF0, b"\x18" + props(P["auth_method"]))) + cconnect(
        2, version=5, cid="c", no_problem_info=True) + feed(
        2, publish("a/b", b"\xff", 0, v5=True, pr=(P["payload_format"],))) + cconnect(
        3, version=5, cid="dev-1") + feed(
        3, publish("a/b", b"x", v5=True, pr=(P["sub_id_small"],)), PINGREQ)
    seeds["receive_maximum"] = cfg(inflight=2) + cconnect(0, version=5) + feed(
        0, *(publish("a/b", b"x", 2, i, v5=True) for i in range(1, 5)))
    seeds["disconnect_expiry"] = D + cconnect(0, version=5, expiry=0) + feed(
        0, disconnect(v5=True, pr=(b"\x11" + u32(10),))) + cconnect(
        1, version=5, cid="b", expiry=1) + feed(
        1, disconnect(v5=True, pr=(b"\x11" + u32(0xFFFFFFFF),))) + wait(5)
    # Before CONNECT: garbage, a bad protocol level, a packet that is not CONNECT, too large.
    seeds["pre_connect"] = D + feed(0, b"\x10\xff\xff\xff\xff\x7f") + feed(
        1, connect(level=6)) + feed(2, PINGREQ) + feed(3, connect(level=5)[:5]) + wait(11)
    seeds["pre_connect_bad_v5"] = D + feed(0, connect(level=5, flags=0x03)) + feed(
        1, connect(level=5, cprops=props(P["auth_method"]))) + feed(
        2, connect(level=4, flags=0x00, client_id="")) + feed(
        3, v5c("", cprops=props(P["session_expiry"])), subscribe(1, [("#", 0)], v5=True))
    seeds["max_connections"] = cfg(max_conn_2=True) + cconnect(0) + cconnect(
        1, cid="b") + cconnect(2, cid="c") + close(0) + cconnect(3, cid="dev-1")
    seeds["max_session_expiry"] = cfg(session_expiry_5=True) + cconnect(
        0, clean=False, cid="b") + feed(0, subscribe(1, [("a/#", 1)])) + close(0) + wait(6)
    seeds["shutdown_with_sessions"] = D + cconnect(0, version=5, expiry=0xFFFFFFFF,
                                                   will="a/b", will_delay=3600) + feed(
        0, subscribe(1, [("a/#", 2)], v5=True)) + cconnect(1, cid="b") + feed(
        1, publish("a/b", b"x", 2, 1))
    # Regressions, found by this fuzzer (see the commits that fixed them):
    # a v5 Will QoS above max_qos / a Will Retain without retain support must be refused;
    seeds["found_will_qos_retain_refused"] = cfg(max_qos=1, no_retain=True) + cconnect(
        0, version=5, will="a/b", will_qos=2) + cconnect(
        1, version=5, cid="b", will="a/b", will_retain=True) + cconnect(
        2, version=5, cid="c", will="a/b", will_qos=1)
    # a CONNACK larger than the client's Maximum Packet Size must not be dropped silently.
    seeds["found_connack_too_large"] = D + cconnect(
        0, version=5, max_packet=30, response_info=True, alias_max=10) + feed(
        0, subscribe(1, [("a/#", 0)], v5=True), unsubscribe(2, ["a/#"], v5=True))
    # a second CONNECT that does not decode gets DISCONNECT 0x82, not the CONNACK-only 0x84.
    seeds["found_second_connect_bad_level"] = D + cconnect(0, version=5) + feed(
        0, connect(level=6)) + cconnect(1, cid="b") + feed(1, connect(level=6, client_id="b"))
    return seeds


# ---- fuzz_config: configuration files ----

def config_seeds(here):
    """fuzz_config: configuration files, good and bad, covering every key."""
    seeds = {}
    with open(os.path.join(here, "..", "..", "etc", "mqlite.conf"), "rb") as f:
        seeds["etc_mqlite_conf"] = f.read()
    good = {
        "listener": "1883", "protocol": "websockets", "certfile": "/etc/c.pem",
        "keyfile": "/etc/k.pem", "keyfile_password": "pw", "cafile": "/etc/ca.pem",
        "require_certificate": "true", "websockets_path": "/mqtt",
        "password_file": "/etc/passwd", "acl_file": "/etc/acl", "sys_interval": "10",
        "allow_anonymous": "false", "max_keepalive": "65535", "max_packet_size": "20",
        "max_inflight_messages": "0", "max_queued_messages": "4294967295",
        "max_queued_bytes": "9007199254740991", "max_connections": "-1",
        "retain_available": "false", "shared_subscriptions": "false",
        "subscription_identifiers": "false", "wildcard_subscriptions": "false", "max_qos": "1",
        "log_type": "all", "max_session_expiry": "3600", "client_id_conflict": "reject_new",
        "persistence": "true", "persistence_location": "/var/lib/mqlite/",
        "store_sync": "normal", "store_commit_window_ms": "10000",
        "store_max_bytes": "1048576", "max_topic_alias": "65535",
        "max_topic_alias_broker": "0", "log_dest": "syslog", "pid_file": "/run/mqlite.pid",
        "user": "mqlite", "include_dir": "/nonexistent/mqlite.d",
    }
    bad = {
        "listener": "65536", "protocol": "http", "certfile": "", "require_certificate": "yes",
        "sys_interval": "86401", "allow_anonymous": "1", "max_keepalive": "-1",
        "max_packet_size": "19", "max_inflight_messages": "65536",
        "max_queued_messages": "4294967296", "max_queued_bytes": "9007199254740992",
        "max_connections": "-2", "max_qos": "3", "log_type": "websockets",
        "max_session_expiry": "1e3", "client_id_conflict": "both", "store_sync": "fast",
        "store_commit_window_ms": "0x10", "max_topic_alias": "65536", "log_dest": "topic",
        "user": "root;x", "persistence_location": "a" * 300,
    }
    for key, val in good.items():
        pre = "listener 1883\n" if key in ("protocol", "certfile", "keyfile", "keyfile_password",
                                           "cafile", "require_certificate",
                                           "websockets_path") else ""
        seeds[f"good_{key}"] = f"{pre}{key} {val}\n".encode()
    for key, val in bad.items():
        pre = "listener 1883\n" if key in ("protocol", "certfile", "require_certificate") else ""
        seeds[f"bad_{key}"] = f"{pre}{key} {val}\n".encode()
    seeds["listeners"] = (b"# two listeners\nlistener 1883 127.0.0.1\nprotocol mqtt\n"
                          b"listener 8883 ::1\ncertfile c.pem\nkeyfile k.pem\n"
                          b"listener 9001\nprotocol websockets\nwebsockets_path /ws\n")
    seeds["too_many_listeners"] = b"".join(b"listener %d\n" % (1000 + i) for i in range(17))
    seeds["duplicate_listener"] = b"listener 1883\nlistener 1883\n"
    seeds["protocol_before_listener"] = b"protocol mqtt\n"
    seeds["log_dests"] = (b"log_dest stderr\nlog_dest stdout\nlog_dest file /tmp/a.log\n"
                          b"log_dest file /tmp/b.log\nlog_dest none\nlog_type error\n"
                          b"log_type debug\nlog_type none\n")
    seeds["log_dest_file_twice"] = b"log_dest file /tmp/a.log\nlog_dest file /tmp/a.log\n"
    seeds["log_dest_file_no_path"] = b"log_dest file\n"
    seeds["comments_blanks_crlf"] = (b"\xef\xbb\xbf# comment\r\n\r\n   \t\r\n"
                                     b"  max_qos\t1  \r\n#max_qos 3\n")
    seeds["trailing_comment"] = b"max_qos 1 # one\n"
    seeds["nul_byte"] = b"max_qos 1\nmax\x00_qos 2\n"
    seeds["long_line"] = b"user " + b"x" * 1100 + b"\n"
    seeds["many_tokens"] = b"listener 1 2 3 4 5 6 7 8 9 10\n"
    seeds["missing_value"] = b"max_qos\n"
    seeds["unknown_key"] = b"lisener 1883\n"
    seeds["mosquitto_only"] = b"autosave_interval 10\nplugin_opt_x y\n"
    seeds["no_newline_at_end"] = b"allow_anonymous true"
    seeds["empty"] = b""
    return seeds


def write(out, seeds):
    os.makedirs(out, exist_ok=True)
    for name, data in sorted(seeds.items()):
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)
    print(f"wrote {len(seeds)} seeds to {out}")


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "corpus")
    write(os.path.join(root, "decode"), decode_seeds())
    write(os.path.join(root, "conn"), conn_seeds())
    write(os.path.join(root, "config"), config_seeds(here))


if __name__ == "__main__":
    main()
