"""The bash completion and the man page of `pcapwatch`, generated from its argparse parsers:
`PYTHONPATH=. python scripts/cli_docs.py` from the repository.

Both are committed, generated, under share/ (share/bash-completion/completions/pcapwatch,
share/man/man1/pcapwatch.1) and installed by `pip install` at those paths under the prefix (setup.cfg's
data_files); `python scripts/cli_docs.py` rewrites them after a change of the command line, and a test
holds the committed files to what this produces. The man page is the --help of the command and of each
subcommand, at a fixed width, so it says exactly what --help says.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from watcher import version
from watcher.cli import build_parser

COMPLETION = Path("share/bash-completion/completions/pcapwatch")
MAN_PAGE = Path("share/man/man1/pcapwatch.1")
HELP_WIDTH = 80
# Metavars of values that are paths: completed as files, or directories.
FILE_METAVARS = ("FILE", "OUT")
DIR_METAVARS = ("DIR",)


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _case_for(parser: argparse.ArgumentParser) -> tuple[list[str], list[str], bool]:
    """(bash `case` arms for the word after an option, the option words, whether positionals are files)."""
    arms: list[str] = []
    words: list[str] = []
    files = False
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            continue
        if not action.option_strings:
            files = files or action.metavar in FILE_METAVARS
            continue
        words += action.option_strings
        if action.nargs == 0:
            continue
        pattern = "|".join(action.option_strings)
        if action.choices:
            arms.append(f"{pattern}) COMPREPLY=($(compgen -W \"{' '.join(map(str, action.choices))}\" -- \"$cur\")); "
                        "return;;")
        elif action.metavar in FILE_METAVARS:
            arms.append(f"{pattern}) COMPREPLY=($(compgen -f -- \"$cur\")); return;;")
        elif action.metavar in DIR_METAVARS:
            arms.append(f"{pattern}) COMPREPLY=($(compgen -d -- \"$cur\")); return;;")
        else:
            arms.append(f"{pattern}) return;;")
    return arms, words, files


def bash_completion(parser: argparse.ArgumentParser | None = None) -> str:
    """A bash completion script for `pcapwatch`: subcommands, each one's options, the values of
    options with choices, and file or directory names where a path is expected."""
    parser = parser or build_parser()
    subs = _subparsers(parser)
    _, top_words, _ = _case_for(parser)
    out = [
        "# bash completion for pcapwatch. Generated from its argparse parsers by `python scripts/cli_docs.py`:",
        "# do not edit. Installed as PREFIX/share/bash-completion/completions/pcapwatch.",
        "_pcapwatch() {",
        "    local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]} cmd='' opts='' files='' i",
        "    for ((i = 1; i < COMP_CWORD; i++)); do",
        "        case ${COMP_WORDS[i]} in",
        f"            {'|'.join(subs)}) cmd=${{COMP_WORDS[i]}}; break;;",
        "        esac",
        "    done",
        "    case $cmd in",
        f"        '') opts=\"{' '.join([*top_words, *subs])}\";;",
    ]
    for name, sub in subs.items():
        arms, words, files = _case_for(sub)
        out.append(f"        {name})")
        if arms:
            out.append("            case $prev in")
            out += [f"                {arm}" for arm in arms]
            out.append("            esac")
        out.append(f"            opts=\"{' '.join(words)}\"" + ("; files=1;;" if files else ";;"))
    out += [
        "    esac",
        "    if [[ -n $files && $cur != -* ]]; then",
        "        COMPREPLY=($(compgen -f -- \"$cur\"))",
        "    else",
        "        COMPREPLY=($(compgen -W \"$opts\" -- \"$cur\"))",
        "    fi",
        "}",
        "complete -o filenames -o bashdefault -F _pcapwatch pcapwatch",
        "",
    ]
    return "\n".join(out)


def _help(parser: argparse.ArgumentParser) -> str:
    """`parser`'s --help at HELP_WIDTH columns, whatever the terminal."""
    saved = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(HELP_WIDTH)
    try:
        return parser.format_help()
    finally:
        if saved is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = saved


def _roff(text: str) -> str:
    """Plain text as roff lines shown as they are (inside .nf): backslashes and hyphens escaped,
    a leading . or ' made literal."""
    lines = []
    for line in text.rstrip("\n").split("\n"):
        line = line.replace("\\", "\\e").replace("-", "\\-")
        lines.append("\\&" + line if line.startswith((".", "'")) else line)
    return "\n".join(lines)


def man_page(parser: argparse.ArgumentParser | None = None) -> str:
    """pcapwatch(1): NAME, SYNOPSIS, then the --help of the command and of each subcommand."""
    parser = parser or build_parser()
    subs = _subparsers(parser)
    out = [
        '.\\" pcapwatch(1). Generated from --help by `python scripts/cli_docs.py`: do not edit.',
        f'.TH PCAPWATCH 1 "" "pcapwatch {version()}" "User Commands"',
        ".SH NAME",
        "pcapwatch \\- HTTP transaction records from tcpdump capture files",
        ".SH SYNOPSIS",
        ".nf",
        *[f"\\fBpcapwatch {name}\\fR [\\fIoptions\\fR]" for name in subs],
        ".fi",
        ".SH DESCRIPTION",
        ".nf",
        _roff(_help(parser)),
        ".fi",
    ]
    for name, sub in subs.items():
        out += [f".SH PCAPWATCH {name.upper()}", ".nf", _roff(_help(sub)), ".fi"]
    out += [".SH SEE ALSO", "tcpdump(8), pcap\\-filter(7)", ""]
    return "\n".join(out)


def main(root: Path = Path(".")) -> int:
    """Rewrite the committed files under `root` (the repository)."""
    for path, text in ((COMPLETION, bash_completion()), (MAN_PAGE, man_page())):
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text)
        sys.stderr.write(f"wrote {root / path}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(__file__).resolve().parents[1]))
