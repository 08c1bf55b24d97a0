#!/usr/bin/python3
"""Stand in for `src/mosquitto` in mosquitto's test tree and start mqlite instead.

mosquitto's broker tests start the broker as `../../src/mosquitto [-v] -c FILE` or
`../../src/mosquitto [-v] -p PORT`. mqlite takes the same options and reads mosquitto's
configuration syntax, so almost everything passes through unchanged. What is mapped:

- `port N` (deprecated in mosquitto 2.0, not supported by mqlite): mosquitto's default
  listener on port N of every interface, whose settings are the lines above the first
  `listener`. mqlite's lines above the first `listener` are the defaults of every listener,
  so `listener N` appended at the end means the same.
- `maximum_qos N`: mosquitto's other spelling of `max_qos`, which mqlite reads.
- `persistence_file NAME`: mosquitto keeps its store in one file NAME (inside
  `persistence_location`); mqlite keeps a directory with its SQLite files and has no
  file-name option. The tests give every broker its own file name so that parallel tests
  do not share a store; we keep that by giving every NAME its own directory, NAME.mqlite.d,
  next to where mosquitto would have put the file.

The configuration is rewritten only when something had to be mapped (to FILE.mqlite-conf,
next to FILE), then this process becomes mqlite (exec), so the test's signals and pipes
reach the broker itself.

Usage (written into src/mosquitto by run.py): shim.py MQLITE_BINARY [mosquitto options]
"""

import os
import sys


def map_config(path):
    """Return the path of the configuration mqlite should read for mosquitto's file path."""
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError:
        return path  # mqlite reports the missing file itself, in its own words
    location = "."
    for line in lines:
        words = line.split()
        if len(words) >= 2 and words[0] == "persistence_location":
            location = words[1]
    out = []
    tail = []
    mapped = False
    for line in lines:
        words = line.split()
        if len(words) == 2 and words[0] == "port":
            out.append("# " + line + "   (mapped to a listener at the end)")
            tail.append("listener " + words[1])
            mapped = True
        elif len(words) == 2 and words[0] == "maximum_qos":
            out.append("max_qos " + words[1])
            mapped = True
        elif len(words) >= 2 and words[0] == "persistence_file":
            store_dir = os.path.join(location, words[1] + ".mqlite.d")
            os.makedirs(store_dir, exist_ok=True)
            out.append("persistence_location " + store_dir)
            mapped = True
        elif len(words) >= 2 and words[0] == "persistence_location":
            out.append("# " + line + "   (mapped with persistence_file below)")
        else:
            out.append(line)
    if not mapped:
        return path
    new_path = path + ".mqlite-conf"
    with open(new_path, "w") as f:
        f.write("\n".join(out + tail) + "\n")
    return new_path


def main():
    if len(sys.argv) < 2:
        sys.exit("usage: shim.py MQLITE_BINARY [mosquitto options]")
    binary, args = sys.argv[1], sys.argv[2:]
    argv = [binary]
    i = 0
    while i < len(args):
        if args[i] == "-c" and i + 1 < len(args):
            argv += ["-c", map_config(args[i + 1])]
            i += 2
        else:
            argv.append(args[i])
            i += 1
    os.execv(binary, argv)


if __name__ == "__main__":
    main()
