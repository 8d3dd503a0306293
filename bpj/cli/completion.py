"""``bpj completion bash|zsh``: a shell completion script, written from the command's own parser, so it
names every command, action and flag there is and nothing else.

    eval "$(bpj completion bash)"        # in ~/.bashrc
    eval "$(bpj completion zsh)"         # in ~/.zshrc (through bashcompinit)
"""

from __future__ import annotations

import argparse
import shlex
from typing import Any


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:  # argparse keeps its subparsers here, and nowhere public
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _flags(parser: argparse.ArgumentParser) -> list[str]:
    return sorted(
        option
        for action in parser._actions
        if not isinstance(action, argparse._SubParsersAction)
        for option in action.option_strings
        if action.help != argparse.SUPPRESS
    )


def words(root: argparse.ArgumentParser) -> dict[str, list[str]]:
    """What completes after each command path: ``""`` (the first word), ``"jobs"``, ``"jobs create"``..."""
    out = {"": sorted(_subcommands(root)) + _flags(root)}
    for name, command in _subcommands(root).items():
        actions = _subcommands(command)
        out[name] = sorted(actions) + _flags(command)
        for action, parser in actions.items():
            out[f"{name} {action}"] = _flags(parser)
    return out


def script(root: argparse.ArgumentParser, shell: str) -> str:
    cases = "\n".join(
        f"        {shlex.quote(path or '_')}) echo {shlex.quote(' '.join(found))} ;;"
        for path, found in sorted(words(root).items())
    )
    # The words before the cursor that name a command or an action make the path; flags and their values
    # are passed over (a value is never taken for a command: only known paths count).
    body = f"""_bpj_words() {{
    case "$1" in
{cases}
        *) return 1 ;;
    esac
}}
_bpj_complete() {{
    local cur=${{COMP_WORDS[COMP_CWORD]}} path="" i w next
    for ((i = 1; i < COMP_CWORD; i++)); do
        w=${{COMP_WORDS[i]}}
        [[ $w == -* ]] && continue
        next=${{path:+$path }}$w
        _bpj_words "$next" >/dev/null && path=$next
    done
    COMPREPLY=($(compgen -W "$(_bpj_words "${{path:-_}}")" -- "$cur"))
}}
complete -o default -F _bpj_complete bpj
"""
    if shell == "zsh":
        return "autoload -U +X bashcompinit && bashcompinit\n" + body
    return body


def completion(args: Any) -> int:
    from bpj.cli import parser

    print(script(parser(), args.shell), end="")
    return 0


def add_completion(sub: Any) -> None:
    p = sub.add_parser("completion", help='a shell completion script: eval "$(bpj completion bash)"')
    p.add_argument("shell", choices=("bash", "zsh"))
    p.set_defaults(run=completion)
