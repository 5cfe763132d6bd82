"""gitignore rules as the studio applies them to a snapshot, in the standard library only.

The studio reads a snapshot's root `.amlignore` (or else `.gitignore`) with pathspec's `GitIgnoreSpec` (gitwildmatch
patterns). This module translates each line to the same regular expression pathspec 0.12 builds and combines the
matches with the same rule (`GitIgnoreSpec._match_file`: the last match wins, except that a match through a folder
pattern never undoes a file's own match), so the client leaves out exactly the files the studio would. A test
(tests/runs/test_snapshot_sync.py) compares both over a large corpus of patterns and paths.

    rules = IgnoreRules.parse(content_bytes, ".amlignore")
    rules.ignores("data/train.csv")      # a file's path relative to the folder, '/' between names
    rules.ignores_folder("data")         # True only when every path under the folder is left out (safe to skip)

What the rules mean (git's documentation, as pathspec reads it): blank lines and `#` comments do nothing; `!` re-includes;
a leading `/` (or a `/` inside the pattern) anchors it to the folder's root, otherwise it matches at any depth; a
trailing `/` matches folders only (the files under them); `*` and `?` never cross `/`; `**` spans folders; `[...]`
is a character class (`[!...]` or `[^...]` negated); `\\` escapes the next character; trailing spaces are dropped
unless escaped. Unlike git, a file under an ignored folder can be re-included (`build/` then `!build/keep.txt`).
"""

from __future__ import annotations

import re
import warnings

DIR_MARK = "ps_d"


class IgnoreError(ValueError):
    """A line of the ignore file is not a pattern; the message names it."""


class Rule:
    """One compiled line: `include` True leaves matching files out, False brings them back (`!`)."""

    __slots__ = ("folder_regex", "include", "line", "regex")

    def __init__(self, line: str, include: bool, regex: str, folder_regex: str):
        self.line = line
        self.include = include
        with warnings.catch_warnings():  # '[[' in a class: re warns of a future meaning, as it does on the studio
            warnings.simplefilter("ignore", FutureWarning)
            self.regex = re.compile(regex)
            # Matches a folder every path under which the rule matches (None: no folder is covered that way).
            self.folder_regex = re.compile(folder_regex) if folder_regex else None


def compile_line(line: str) -> Rule | None:
    """The rule of one line, or None for a blank line or a comment. IgnoreError for a line that is not a pattern.

    Follows `pathspec.patterns.gitwildmatch.GitWildMatchPattern.pattern_to_regex` (pathspec 0.12) step by step."""
    original = line
    pattern = line.lstrip() if line.endswith("\\ ") else line.strip()
    if pattern.startswith("#") or pattern == "/" or not pattern:
        return None
    include = True
    if pattern.startswith("!"):
        include = False
        pattern = pattern[1:]
    segments = pattern.split("/")
    is_dir_pattern = not segments[-1]
    for index in range(len(segments) - 1, 0, -1):  # collapse runs of '**'
        if segments[index - 1] == "**" and segments[index] == "**":
            del segments[index]
    if len(segments) == 2 and segments[0] == "**" and not segments[1]:
        # '**/' matches everything except files at the root.
        return Rule(original, include, f"^.+(?P<{DIR_MARK}>/).*$", "^.+$")
    if not segments[0]:
        del segments[0]  # anchored to the root
    elif (len(segments) == 1 or (len(segments) == 2 and not segments[1])) and segments[0] != "**":
        segments.insert(0, "**")  # a bare name (or 'name/') matches at any depth
    if not segments:
        raise IgnoreError(f"{original!r} is not a valid pattern")
    if not segments[-1] and len(segments) > 1:
        segments[-1] = "**"  # 'dir/' matches what is under dir
    output = ["^"]
    folder_prefix = ""
    need_slash = False
    end = len(segments) - 1
    for index, segment in enumerate(segments):
        if segment == "**":
            if index == 0 and index == end:
                output.append("[^/]+(?:/.*)?")  # '**' alone matches every path
                folder_prefix = ".+"
            elif index == 0:
                output.append("(?:.+/)?")
                need_slash = False
            elif index == end:
                folder_prefix = "".join(output)[1:]
                output.append(f"(?P<{DIR_MARK}>/).*" if is_dir_pattern else "/.*")
            else:
                output.append("(?:/.+)?")
                need_slash = True
        elif segment == "*":
            if need_slash:
                output.append("/")
            output.append("[^/]+")
            if index == end:
                folder_prefix = "".join(output)[1:]
                output.append(f"(?:(?P<{DIR_MARK}>/).*)?")
            need_slash = True
        else:
            if need_slash:
                output.append("/")
            try:
                output.append(translate_segment(segment))
            except ValueError as error:
                raise IgnoreError(f"{original!r} is not a valid pattern ({error})") from None
            if index == end:
                folder_prefix = "".join(output)[1:]
                output.append(f"(?:(?P<{DIR_MARK}>/).*)?")
            need_slash = True
    output.append("$")
    try:
        return Rule(original, include, "".join(output), f"^{folder_prefix}$" if folder_prefix else "")
    except re.error as error:
        raise IgnoreError(f"{original!r} is not a valid pattern ({error})") from None


def translate_segment(pattern: str) -> str:
    """One path segment's glob as a regular expression (`GitWildMatchPattern._translate_segment_glob`)."""
    escape = False
    regex = ""
    index, end = 0, len(pattern)
    while index < end:
        char = pattern[index]
        index += 1
        if escape:
            escape = False
            regex += re.escape(char)
        elif char == "\\":
            escape = True
        elif char == "*":
            regex += "[^/]*"
        elif char == "?":
            regex += "[^/]"
        elif char == "[":
            close = index
            if close < end and pattern[close] in "!^":
                close += 1
            if close < end and pattern[close] == "]":
                close += 1
            while close < end and pattern[close] != "]":
                close += 1
            if close < end:
                close += 1
                expression = "["
                if pattern[index] in "!^":
                    expression += "^"
                    index += 1
                expression += pattern[index:close].replace("\\", "\\\\")
                regex += expression
                index = close
            else:
                regex += "\\["
        else:
            regex += re.escape(char)
    if escape:
        raise ValueError(f"escape character found with no next character to escape: {pattern!r}")
    return regex


class IgnoreRules:
    """The rules of one ignore file, in order."""

    def __init__(self, rules: list[Rule]):
        self.rules = rules
        last_negation = max((index for index, rule in enumerate(rules) if not rule.include), default=-1)
        # A rule that leaves a folder out whole is safe to act on only when no '!' rule comes after it.
        self._folder_rules = [rule for rule in rules[last_negation + 1:] if rule.folder_regex is not None]

    @classmethod
    def parse(cls, content: bytes, name: str) -> IgnoreRules:
        """The rules of an ignore file's bytes, read as the studio reads them: UTF-8 with an optional BOM, undecodable
        bytes replaced, split with `str.splitlines`. IgnoreError names the first line that is not a pattern."""
        rules = []
        for number, line in enumerate(content.decode("utf-8-sig", errors="replace").splitlines(), 1):
            try:
                rule = compile_line(line)
            except IgnoreError as error:
                raise IgnoreError(f"Line {number} of {name} is not a valid pattern ({error}); fix it or remove it "
                                  "(escape a trailing backslash as \\\\, write ranges low to high).") from None
            if rule is not None:
                rules.append(rule)
        return cls(rules)

    def ignores(self, path: str) -> bool:
        """Whether the file at `path` (relative, '/' between names) is left out."""
        result = None
        priority = 0
        for rule in self.rules:
            found = rule.regex.match(path)
            if found is None:
                continue
            through_folder = found.groupdict().get(DIR_MARK)
            rank = 1 if through_folder else 2
            # A file's own match outranks a match through its folder, except that an ignoring folder match
            # always applies (pathspec's GitIgnoreSpec._match_file).
            if (rule.include and through_folder) or rank >= priority:
                result, priority = rule.include, rank
        return bool(result)

    def ignores_folder(self, folder: str) -> bool:
        """True when every file under `folder` is certainly left out, so the walk need not enter it: a rule matches
        everything below it and no `!` rule follows. False means "look inside", not "kept"."""
        return any(rule.folder_regex.match(folder) for rule in self._folder_rules)
