"""How Slurm 22.05's `sbatch` reads a batch script's header, reproduced rule for rule.

The validator must see exactly the options `sbatch` will apply, or a forbidden option or an
over-limit value slips past it in a spelling only one of the two understands. References are
to Slurm 22.05.8, src/sbatch/opt.c and src/common/slurm_opt.c:

- `_opt_batch_script`: a directive is a line starting with `#SBATCH` or `#SLURM` (case
  matters, nothing may precede it, nothing need follow it: `#SBATCH--wait` counts). Lines
  that are blank or whose first non-space character is `#` are skipped; the first other line
  ends the header. "Space" is C `isspace` in the C locale: space, \\t, \\n, \\v, \\f, \\r.
  A line starting (after the magic word) with `hetjob`/`packjob` starts another component.
- `get_argument`: words split at `isspace`; `"` and `'` group (and vanish); a backslash makes
  the next character literal and vanishes, but an escaped space still ends the word; an
  unquoted, unescaped `#` ends the line, even inside a word; a word that comes out empty ends
  the line; a word starting with `hetjob`/`packjob` ends the line; one starting with `:`
  and an unmatched quote are fatal.
- All directive words of all lines form one argv for `getopt_long` with the option table of
  `slurm_option_table_create` and an option string starting with `+` (stop at the first
  non-option, which sbatch then rejects). So a value may come from the next line, long
  options may be abbreviated to any unambiguous prefix, and short flags combine (`-HW`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from bridge.jobfile.problems import Problem

C_SPACE = frozenset(" \t\n\v\f\r")
MAGIC_WORDS = ("#SBATCH", "#SLURM")

NO, REQUIRED, OPTIONAL = 0, 1, 2
# sbatch 22.05's getopt_long table, in table order (order decides abbreviation ties):
# (long name, has_arg, short letter or "").
_TABLE: tuple[tuple[str, int, str], ...] = (
    ("account", 1, "A"), ("acctg-freq", 1, ""), ("array", 1, "a"), ("batch", 1, ""), ("begin", 1, "b"),
    ("bb", 1, ""), ("bbf", 1, ""), ("cluster-constraint", 1, ""), ("chdir", 1, "D"), ("cluster", 1, ""),
    ("clusters", 1, "M"), ("comment", 1, ""), ("container", 1, ""), ("context", 1, ""), ("contiguous", 0, ""),
    ("constraint", 1, "C"), ("core-spec", 1, "S"), ("cores-per-socket", 1, ""), ("cpu-freq", 1, ""),
    ("cpus-per-gpu", 1, ""), ("cpus-per-task", 1, "c"), ("deadline", 1, ""), ("delay-boot", 1, ""),
    ("dependency", 1, "d"), ("distribution", 1, "m"), ("error", 1, "e"), ("exclude", 1, "x"),
    ("exclusive", 2, ""), ("export", 1, ""), ("export-file", 1, ""), ("extra-node-info", 1, "B"),
    ("get-user-env", 2, ""), ("gid", 1, ""), ("gpu-bind", 1, ""), ("gpu-freq", 1, ""), ("gpus", 1, "G"),
    ("gpus-per-node", 1, ""), ("gpus-per-socket", 1, ""), ("gpus-per-task", 1, ""), ("gres", 1, ""),
    ("gres-flags", 1, ""), ("help", 0, "h"), ("hint", 1, ""), ("hold", 0, "H"), ("ignore-pbs", 0, ""),
    ("input", 1, "i"), ("job-name", 1, "J"), ("kill-on-invalid-dep", 1, ""), ("licenses", 1, "L"),
    ("mail-type", 1, ""), ("mail-user", 1, ""), ("mcs-label", 1, ""), ("mem", 1, ""), ("mem-bind", 1, ""),
    ("mem-per-cpu", 1, ""), ("mem-per-gpu", 1, ""), ("mincpus", 1, ""), ("network", 1, ""), ("nice", 2, ""),
    ("no-kill", 2, "k"), ("no-requeue", 0, ""), ("nodefile", 1, "F"), ("nodelist", 1, "w"), ("nodes", 1, "N"),
    ("ntasks", 1, "n"), ("ntasks-per-core", 1, ""), ("ntasks-per-gpu", 1, ""), ("ntasks-per-node", 1, ""),
    ("ntasks-per-socket", 1, ""), ("ntasks-per-tres", 1, ""), ("open-mode", 1, ""), ("output", 1, "o"),
    ("overcommit", 0, "O"), ("oversubscribe", 0, "s"), ("parsable", 0, ""), ("partition", 1, "p"),
    ("power", 1, ""), ("prefer", 1, ""), ("priority", 1, ""), ("profile", 1, ""), ("propagate", 2, ""),
    ("qos", 1, "q"), ("quiet", 0, "Q"), ("reboot", 0, ""), ("requeue", 0, ""), ("reservation", 1, ""),
    ("signal", 1, ""), ("sockets-per-node", 1, ""), ("spread-job", 0, ""), ("switches", 1, ""),
    ("tasks-per-node", 1, ""), ("test-only", 0, ""), ("thread-spec", 1, ""), ("threads-per-core", 1, ""),
    ("time", 1, "t"), ("time-min", 1, ""), ("tmp", 1, ""), ("uid", 1, ""), ("use-min-nodes", 0, ""),
    ("verbose", 0, "v"), ("version", 0, "V"), ("usage", 0, ""), ("wait", 0, "W"), ("wait-all-nodes", 1, ""),
    ("wckey", 1, ""), ("wrap", 1, ""),
)
# Two names for one option (same getopt value): the checks see the first.
_ALIASES = {"tasks-per-node": "ntasks-per-node"}
LONG_OPTIONS: dict[str, int] = {name: has_arg for name, has_arg, _ in _TABLE}
SHORT_OPTIONS: dict[str, tuple[str, int]] = {short: (name, has_arg) for name, has_arg, short in _TABLE if short}
# Options sbatch handles only on its command line; in a script it reads them (a value is
# consumed) and then ignores them. The policy may still refuse them: stricter is safe.
EARLY_PASS_ONLY = frozenset({"help", "quiet", "usage", "verbose", "version", "wrap"})


@dataclass(frozen=True)
class Word:
    text: str
    line: int


@dataclass(frozen=True)
class Option:
    """One option as sbatch applies it: canonical long name, its argument, where it came from."""

    name: str
    value: str | None
    line: int
    spelled: str  # as written, e.g. "--wai" or "-W", for messages


@dataclass(frozen=True)
class Header:
    options: list[Option]
    problems: list[Problem]
    end: int  # 0-based index of the first command line (len(lines) when there is none)
    directive_lines: frozenset[int]  # 1-based numbers of the lines sbatch read as directives


def c_isspace(char: str) -> bool:
    return char in C_SPACE


def first_non_space(line: str) -> str:
    """The first character that is not C whitespace, or "" for a blank line."""
    for char in line:
        if char not in C_SPACE:
            return char
    return ""


def magic_word(line: str) -> str | None:
    return next((word for word in MAGIC_WORDS if line.startswith(word)), None)


def _syntax(line: int, message: str, fix: str, expected: str = "#SBATCH --option=value") -> Problem:
    return Problem(line=line, code="sbatch-syntax", message=message, expected=expected, fix=fix)


def _unknown(line: int, message: str) -> Problem:
    return Problem(line=line, code="unknown-option", message=message + ": sbatch would refuse the script",
                   expected="an sbatch option spelled in full, e.g. --time=1:00:00",
                   fix="write the option's full name, or remove it")


def _missing(line: int, spelled: str) -> Problem:
    return Problem(line=line, code="option-value", message=f"{spelled} needs a value", expected=f"{spelled} VALUE",
                   fix=f"give a value, e.g. #SBATCH {spelled}=..." if spelled.startswith("--") else
                   f"give a value, e.g. #SBATCH {spelled} ...")


def _is_het_separator(text: str, at: int) -> bool:
    for word in ("packjob", "hetjob"):
        end = at + len(word)
        if text[at:end].lower() == word and (end == len(text) or text[end] in C_SPACE):
            return True
    return False


def split_words(text: str, line: int) -> tuple[list[str], Problem | None]:
    """The words `get_argument` takes from the rest of one directive line."""
    words: list[str] = []
    pos, size = 0, len(text)
    while True:
        while pos < size and text[pos] in C_SPACE:
            pos += 1
        if _is_het_separator(text, pos):
            # sbatch blanks the word, then finds no argument: the rest of the line is dropped.
            return words, _syntax(line, f"{text[pos:pos + 7].strip()!r} separates heterogeneous job components",
                                  "remove it: a bridge job is one Pod, one component")
        if pos < size and text[pos] == ":":
            return words, _syntax(line, "a word starting with ':' makes sbatch stop with an error",
                                  "remove the ':'")
        word: list[str] = []
        quote = ""
        escaped = False
        while pos < size and (quote or text[pos] not in C_SPACE):
            char = text[pos]
            pos += 1
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
                continue
            elif quote:
                if char == quote:
                    quote = ""
                    continue
            elif char in "\"'":
                quote = char
                continue
            elif char == "#":
                pos -= 1  # a comment: the next scan finds it and yields nothing
                break
            word.append(char)
        if quote:
            return words, _syntax(line, f"unmatched {quote} on this #SBATCH line", "close the quote or remove it",
                                  "#SBATCH --option=value with balanced quotes")
        if not word:
            return words, None
        words.append("".join(word))


def scan_header(lines: list[str]) -> tuple[list[Word], list[Problem], int, frozenset[int]]:
    """The directive words in order, as `_opt_batch_script` collects them, and where the header ends."""
    words: list[Word] = []
    problems: list[Problem] = []
    seen: set[int] = set()
    second_component = False
    for index, full in enumerate(lines):
        raw = full.split("\x00", 1)[0]  # C strings end at NUL
        number = index + 1
        magic = magic_word(raw)
        if magic is None:
            first = first_non_space(raw)
            if first and first != "#":
                return words, problems, index, frozenset(seen)
            continue
        seen.add(number)
        rest = raw[len(magic):]
        start = len(rest) - len(rest.lstrip("".join(C_SPACE)))
        if _is_het_separator(rest, start) and not second_component:
            # sbatch reads the lines after this one as another job component: refuse the file.
            second_component = True
            problems.append(_syntax(number, "this line starts a second heterogeneous job component",
                                    "remove it: a bridge job is one Pod, one component"))
        if second_component:
            continue
        found, problem = split_words(rest, number)
        words.extend(Word(text, number) for text in found)
        if problem is not None:
            problems.append(problem)
    return words, problems, len(lines), frozenset(seen)


def _long_option(body: str) -> tuple[str, int] | Literal["ambiguous"] | None:
    """glibc's `process_long_option` lookup: exact name, else a prefix shared by one option only."""
    if body in LONG_OPTIONS:
        return body, LONG_OPTIONS[body]
    found: tuple[str, int] | None = None
    for name, has_arg, _ in _TABLE:
        if name.startswith(body):
            if found is None:
                found = (name, has_arg)
            elif _ALIASES.get(name, name) != _ALIASES.get(found[0], found[0]) or has_arg != found[1]:
                return "ambiguous"
    return found


def getopt(words: list[Word]) -> Iterator[Option | Problem]:
    """Options in the order sbatch applies them (the last of a kind wins), or why sbatch fails."""
    index = 0
    while index < len(words):
        word = words[index]
        text = word.text
        index += 1
        if text == "--":
            if index < len(words):
                yield _syntax(word.line, "'--' ends the options; sbatch rejects the words after it", "remove '--'")
            return
        if not text.startswith("-") or text == "-":
            yield _syntax(word.line, f"{text!r} is not an sbatch option, and sbatch rejects the script",
                          "start each option with -- (long) or - (short), or quote a value containing spaces")
            return
        if text.startswith("--"):
            body, equals, value = text[2:].partition("=")
            found = _long_option(body)
            if found is None or found == "ambiguous":
                what = "matches several options" if found == "ambiguous" else "is not an sbatch option"
                yield _unknown(word.line, f"--{body} {what}")
                return
            name, has_arg = found
            if equals and has_arg == NO:
                yield _syntax(word.line, f"--{name} takes no value", f"write --{name} alone")
                return
            given: str | None = value if equals else None
            if not equals and has_arg == REQUIRED:
                if index >= len(words):
                    yield _missing(word.line, f"--{name}")
                    return
                given = words[index].text
                index += 1
            yield Option(_ALIASES.get(name, name), given, word.line, text.partition("=")[0])
            continue
        at = 1
        while at < len(text):
            letter = text[at]
            at += 1
            if letter not in SHORT_OPTIONS:
                yield _unknown(word.line, f"-{letter} is not an sbatch option")
                return
            name, has_arg = SHORT_OPTIONS[letter]
            if has_arg == NO:
                yield Option(name, None, word.line, f"-{letter}")
                continue
            given = text[at:] or None
            if given is None and has_arg == REQUIRED:
                if index >= len(words):
                    yield _missing(word.line, f"-{letter}")
                    return
                given = words[index].text
                index += 1
            yield Option(name, given, word.line, f"-{letter}")
            break


def read_header(lines: list[str]) -> Header:
    """Everything sbatch takes from the script's header."""
    words, problems, end, seen = scan_header(lines)
    options: list[Option] = []
    for item in getopt(words):
        if isinstance(item, Problem):
            problems.append(item)
        else:
            options.append(item)
    return Header(options=options, problems=problems, end=end, directive_lines=seen)
