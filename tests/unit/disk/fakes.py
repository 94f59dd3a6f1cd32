"""A scripted stand-in for peagent.disk.tools.run_tool, and the captured outputs it serves."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from peagent.disk.tools import NOT_INSTALLED, ToolResult

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "erase"


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


Answer = ToolResult | Callable[[tuple[str, ...]], ToolResult]


class FakeRunner:
    """Answers commands by their leading words (the longest matching prefix wins); records calls.
    Unknown commands are "not installed", as on a PE that lacks the tool."""

    def __init__(self, answers: dict[tuple[str, ...], Answer] | None = None) -> None:
        self.answers = dict(answers or {})
        self.calls: list[tuple[str, ...]] = []

    def __call__(self, argv: Sequence[str], *, timeout: float | None = None) -> ToolResult:
        args = tuple(argv)
        self.calls.append(args)
        for n in range(len(args), 0, -1):
            answer = self.answers.get(args[:n])
            if answer is not None:
                return answer(args) if callable(answer) else ToolResult(args, answer.returncode,
                                                                        answer.stdout, answer.stderr)
        return ToolResult(args, NOT_INSTALLED, "", f"{args[0]}: command not found")

    def commands(self, *prefix: str) -> list[tuple[str, ...]]:
        return [c for c in self.calls if c[:len(prefix)] == prefix]


def ok(stdout: str = "", stderr: str = "") -> ToolResult:
    return ToolResult((), 0, stdout, stderr)


def fail(code: int, stderr: str = "") -> ToolResult:
    return ToolResult((), code, "", stderr)
