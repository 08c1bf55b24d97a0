#!/usr/bin/python3
"""Keeps the man pages of docs/man/ true to the code.

- Every page renders with `groff -man -ww -z` without a single warning or error.
- mqlite.conf(5) has an entry for every option of the options[] table of broker/config.c,
  and no entry for an option that table lacks. An entry is a tagged paragraph whose tag
  starts with the option name in bold:

      .TP
      .BI max_keepalive " seconds"      (or .B name, .BR name ...)

  Each entry has a "Values:" line that starts with the table's description string (the
  phrase the parser's error messages use), a "Default:" line and a "Reload:" line.
  Every option of the mosquitto_only[] table is named in the section about refused options.
- The OPTIONS section of mqlite(8) lists exactly the options broker/main.c's main()
  compares its arguments with, and the OPTIONS section of mqlite-passwd(1) exactly those
  of broker/mqlite_passwd.c's main(). An option there is a tag (.TP or .TQ) like
  `.B \\-d` or `.BI \\-c " file"`.

The C sources are parsed as text (comments removed, string literals kept), so clang-format
reflowing a table does not matter. groff comes from Debian's groff-base package; without it
the test fails (it never passes unchecked).

Run: /usr/bin/python3 tests/docs/test_man.py     (last line: "N passed, M failed")
"""

import os
import re
import shutil
import subprocess
import sys
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MAN = os.path.join(ROOT, "docs", "man")
PAGES = ["mqlite.8", "mqlite.conf.5", "mqlite-passwd.1"]
CONFIG_C = os.path.join(ROOT, "broker", "config.c")
MAIN_C = os.path.join(ROOT, "broker", "main.c")
PASSWD_C = os.path.join(ROOT, "broker", "mqlite_passwd.c")


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


# ---- C source ------------------------------------------------------------------------

STRING = r'"(?:[^"\\\n]|\\.)*"'


def strip_c_comments(src):
    """Remove /* */ and // comments, keeping string and character literals intact."""
    out = []
    i, n = 0, len(src)
    while i < n:
        c = src[i]
        if c in "\"'":
            j = i + 1
            while j < n and src[j] != c:
                j += 2 if src[j] == "\\" else 1
            out.append(src[i:j + 1])
            i = j + 1
        elif src.startswith("/*", i):
            j = src.find("*/", i + 2)
            i = n if j < 0 else j + 2
            out.append(" ")
        elif src.startswith("//", i):
            j = src.find("\n", i)
            i = n if j < 0 else j
        else:
            out.append(c)
            i += 1
    return "".join(out)


def c_string_value(literals):
    """The value of one or more adjacent C string literals (simple escapes only)."""
    parts = re.findall(STRING, literals)
    text = "".join(p[1:-1] for p in parts)
    return re.sub(r"\\(.)", r"\1", text)


def c_initializer(src, array):
    """The text between the braces of `NAME[] = { ... };` (string literals may hold
    braces, so they are skipped while counting)."""
    m = re.search(r"\b" + re.escape(array) + r"\s*\[\s*\]\s*=\s*\{", src)
    if m is None:
        raise AssertionError("cannot find the array %s[] in the C source" % array)
    return balanced(src, m.end() - 1)


def balanced(src, open_at):
    """The text inside the braces that open at src[open_at]."""
    depth, i = 0, open_at
    while i < len(src):
        c = src[i]
        if c in "\"'":
            j = i + 1
            while j < len(src) and src[j] != c:
                j += 2 if src[j] == "\\" else 1
            i = j + 1
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return src[open_at + 1:i]
        i += 1
    raise AssertionError("unbalanced braces in the C source")


def config_options():
    """{name: description} of the options[] table of broker/config.c, in table order."""
    body = c_initializer(strip_c_comments(read(CONFIG_C)), "options")
    entry = re.compile(r"\{\s*(" + STRING + r")\s*,\s*[^,]+,\s*[^,]+,\s*((?:" + STRING +
                       r"\s*)+),", re.S)
    opts = {}
    for m in entry.finditer(body):
        opts[c_string_value(m.group(1))] = " ".join(c_string_value(m.group(2)).split())
    # every row starts with `{"`: if the pattern missed one, the table's shape changed
    rows = len(re.findall(r"\{\s*\"", body))
    if rows != len(opts) or len(opts) < 20:
        raise AssertionError("parsed %d options from %d rows of options[] in %s: the table's "
                             "shape changed, update config_options()" % (len(opts), rows,
                                                                         CONFIG_C))
    return opts


def mosquitto_only():
    body = c_initializer(strip_c_comments(read(CONFIG_C)), "mosquitto_only")
    names = [c_string_value(s) for s in re.findall(STRING, body)]
    if len(names) < 10:
        raise AssertionError("parsed only %d names of mosquitto_only[]" % len(names))
    return names


def main_options(path):
    """The command-line options the program of path compares its arguments with: the string
    literals starting with '-' in strcmp()/strncmp() calls anywhere in the file (main() or
    the function it parses its command line with)."""
    src = strip_c_comments(read(path))
    if re.search(r"\bint\s+main\s*\([^)]*\)\s*\{", src) is None:
        raise AssertionError("no main() in %s" % path)
    opts = set()
    for call in re.finditer(r"\bstrn?cmp\s*\(([^;]*?)\)", src, re.S):
        for lit in re.findall(STRING, call.group(1)):
            value = c_string_value(lit)
            if value.startswith("-") and len(value) > 1:
                opts.add(value)
    if not opts:
        raise AssertionError("found no option comparisons in %s" % path)
    return opts


# ---- man pages -----------------------------------------------------------------------

def roff_args(text):
    """Split a macro line's arguments as troff does: spaces separate, double quotes group."""
    args, cur, i, quoted, have = [], [], 0, False, False
    while i < len(text):
        c = text[i]
        if quoted:
            if c == '"':
                if text[i + 1:i + 2] == '"':
                    cur.append('"')
                    i += 1
                else:
                    quoted = False
            else:
                cur.append(c)
        elif c == '"' and not cur:
            quoted, have = True, True
        elif c in " \t":
            if cur or have:
                args.append("".join(cur))
            cur, have = [], False
        else:
            cur.append(c)
        i += 1
    if cur or have:
        args.append("".join(cur))
    return args


ESCAPES = {r"\-": "-", r"\e": "\\", r"\&": "", r"\(aq": "'", r"\(dq": '"', r"\(bu": "*",
           r"\ ": " ", r"\~": " ", r"\|": "", r"\^": ""}


def plain(text):
    """Text of a roff fragment without font changes and with the common escapes resolved."""
    text = re.sub(r"\\f(\[[^\]]*\]|\(..|.)", "", text)
    return re.sub(r"\\\(..|\\.", lambda m: ESCAPES.get(m.group(0), m.group(0)), text)


def macro_text(line):
    """The words a text or font macro line prints (.B a b -> "a b", .BI a " b" -> "a b")."""
    if not line.startswith("."):
        return plain(line)
    m = re.match(r"\.(B|I|BI|IB|BR|RB|IR|RI|SM|SB)\s*(.*)$", line)
    if m is None:
        return ""
    args = roff_args(m.group(2))
    joiner = " " if m.group(1) in ("B", "I", "SM", "SB") else ""
    return plain(joiner.join(args))


class Page:
    """A man page as sections of tagged paragraphs: for each .TP/.TQ tag, its first word
    (the first argument of a bold macro) and the lines of its body."""

    def __init__(self, name):
        self.name = name
        self.path = os.path.join(MAN, name)
        self.lines = [ln for ln in read(self.path).split("\n")
                      if not re.match(r"^\.?\s*\\\"", ln) and not ln.startswith("'\\\"")]
        self.entries = []  # (section, tag word, tag line, body lines)
        section, i = None, 0
        while i < len(self.lines):
            ln = self.lines[i]
            if re.match(r"\.S[HS]\b", ln):
                section = " ".join(plain(a) for a in roff_args(ln[3:].strip()))
            elif re.match(r"\.T[PQ]\b", ln) and i + 1 < len(self.lines):
                tag = self.lines[i + 1]
                body, j = [], i + 2
                while j < len(self.lines) and not re.match(r"\.(T[PQ]|S[HS]|PP|LP|P)\b",
                                                           self.lines[j]):
                    body.append(self.lines[j])
                    j += 1
                self.entries.append((section, self.tag_word(tag), tag, body))
                i += 1
            i += 1

    @staticmethod
    def tag_word(tag):
        """The option a tag line names: the first argument of .B/.BI/.BR, else None."""
        m = re.match(r"\.(B|BI|BR)\s+(.*)$", tag)
        if m is None:
            return None
        args = roff_args(m.group(2))
        return plain(args[0]) if args else None

    def section_entries(self, section):
        return [e for e in self.entries if e[0] == section]

    def section_text(self, section):
        out, inside = [], False
        for ln in self.lines:
            if re.match(r"\.S[HS]\b", ln):
                inside = " ".join(plain(a) for a in roff_args(ln[3:].strip())) == section
            elif inside:
                out.append(macro_text(ln))
        return " ".join(out)


def body_field(body, label):
    """The text of the body line starting with label (e.g. "Values:"), continued up to the
    next .br, or None."""
    for k, ln in enumerate(body):
        if ln.startswith(label):
            words = [ln[len(label):]]
            for more in body[k + 1:]:
                if more.startswith(".br"):
                    break
                words.append(macro_text(more))
            return " ".join(" ".join(plain(w) for w in words).split())
    return None


class Render(unittest.TestCase):

    def test_groff_renders_every_page_without_warnings(self):
        groff = shutil.which("groff")
        self.assertIsNotNone(groff, "groff is not installed: it comes with the Debian package "
                             "groff-base (apt-get install groff-base); the man pages cannot be "
                             "checked without it")
        env = dict(os.environ, LC_ALL="C.UTF-8")
        problems = []
        for name in PAGES:
            r = subprocess.run([groff, "-man", "-ww", "-z", os.path.join(MAN, name)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                               timeout=60)
            out = r.stdout.decode("utf-8", "replace").strip()
            if r.returncode != 0 or out:
                problems.append("%s (groff exit %d):\n%s" % (name, r.returncode, out))
        self.assertEqual(problems, [], "\n".join(problems))

    def test_th_names_the_page_and_section(self):
        for name in PAGES:
            title, section = name.rsplit(".", 1)
            th = [ln for ln in Page(name).lines if ln.startswith(".TH ")]
            self.assertEqual(len(th), 1, "%s: expected one .TH line" % name)
            args = [plain(a) for a in roff_args(th[0][4:])]
            self.assertEqual(args[:2], [title.upper(), section], "%s: %s" % (name, th[0]))


class ConfPage(unittest.TestCase):
    """mqlite.conf(5) against the options[] and mosquitto_only[] tables of config.c."""

    NOT_OPTIONS = ("FILES",)  # sections whose tags are not options

    @classmethod
    def setUpClass(cls):
        cls.opts = config_options()
        cls.page = Page("mqlite.conf.5")
        cls.entries = {}
        cls.dup = []
        for section, word, tag, body in cls.page.entries:
            if section in cls.NOT_OPTIONS:
                continue
            if word in cls.entries:
                cls.dup.append(word)
            cls.entries[word] = (section, tag, body)

    def test_every_option_has_an_entry(self):
        missing = [o for o in self.opts if o not in self.entries]
        self.assertEqual(missing, [], "options of broker/config.c's options[] without an entry "
                         "(.TP then .B/.BI NAME) in docs/man/mqlite.conf.5: " +
                         ", ".join(missing))

    def test_every_entry_is_an_option(self):
        extra = sorted(str(w) for w in self.entries if w not in self.opts)
        self.assertEqual(extra, [], "entries of docs/man/mqlite.conf.5 that are not in "
                         "broker/config.c's options[] (a renamed or removed option, or a tag "
                         "that is not .B/.BI/.BR NAME): " + ", ".join(extra))
        self.assertEqual(self.dup, [], "options with two entries: " + ", ".join(self.dup))

    def test_values_match_the_table(self):
        wrong = []
        for name, expect in self.opts.items():
            if name not in self.entries:
                continue  # reported by test_every_option_has_an_entry
            got = body_field(self.entries[name][2], "Values:")
            if got is None or not got.startswith(expect):
                wrong.append("%s: the page says %r, config.c accepts %r" % (name, got, expect))
        self.assertEqual(wrong, [], "\n".join(wrong))

    def test_every_entry_states_its_default_and_reload(self):
        lacking = []
        for name in self.opts:
            if name not in self.entries:
                continue
            body = self.entries[name][2]
            for label in ("Default:", "Reload:"):
                text = body_field(body, label)
                if not text:
                    lacking.append("%s: no %s line" % (name, label))
                elif label == "Reload:" and "SIGHUP" not in text and "restart" not in text:
                    lacking.append("%s: Reload: says neither SIGHUP nor restart" % name)
        self.assertEqual(lacking, [], "\n".join(lacking))

    def test_refused_mosquitto_options_are_listed(self):
        text = self.page.section_text("MOSQUITTO OPTIONS THAT ARE REFUSED")
        words = set(re.findall(r"[A-Za-z0-9_.]+", text))
        missing = [n for n in mosquitto_only() if n not in words]
        self.assertEqual(missing, [], "mosquitto_only[] names missing from the section MOSQUITTO "
                         "OPTIONS THAT ARE REFUSED: " + ", ".join(missing))


class CommandLines(unittest.TestCase):
    """The OPTIONS sections of mqlite(8) and mqlite-passwd(1) against main()."""

    def check(self, page_name, source):
        page = Page(page_name)
        documented = {w for _, w, _, _ in page.section_entries("OPTIONS") if w}
        self.assertTrue(documented, "%s: no options found in its OPTIONS section" % page_name)
        parsed = main_options(source)
        rel = os.path.relpath(source, ROOT)
        self.assertEqual(sorted(parsed - documented), [],
                         "options %s accepts but docs/man/%s does not document" % (rel, page_name))
        self.assertEqual(sorted(documented - parsed), [],
                         "options docs/man/%s documents but %s does not accept" % (page_name, rel))

    def test_mqlite_options_match_main_c(self):
        self.check("mqlite.8", MAIN_C)

    def test_mqlite_passwd_options_match_its_source(self):
        self.check("mqlite-passwd.1", PASSWD_C)


def run():
    suite = unittest.defaultTestLoader.loadTestsFromModule(sys.modules[__name__])
    result = unittest.TextTestRunner(verbosity=2, stream=sys.stdout).run(suite)
    failed = len(result.failures) + len(result.errors) + len(result.unexpectedSuccesses)
    passed = result.testsRun - failed - len(result.skipped) - len(result.expectedFailures)
    print("%d passed, %d failed" % (passed, failed))
    sys.stdout.flush()
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    run()
