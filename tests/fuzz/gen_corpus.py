#!/usr/bin/python3
"""gen_corpus.py - write the seed corpus of the fuzz_decode target.

Each file is one MQTT control packet (the fuzzer decodes it as CONNECT, 3.1, 3.1.1 and 5.0),
built from the figures of the MQTT 3.1.1 and 5.0 specifications: every packet type of both
versions, every v5 property, the short forms, and a set of packets that break one rule each
so the error paths are seeded too. Deterministic: running it again gives the same files.

Usage: tests/fuzz/gen_corpus.py [OUT_DIR]   (default: tests/fuzz/corpus/decode next to it)
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


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "corpus", "decode")
    os.makedirs(out, exist_ok=True)
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

    for name, data in sorted(seeds.items()):
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)
    print(f"wrote {len(seeds)} seeds to {out}")


if __name__ == "__main__":
    main()
