"""METEOR through the standard Java scorer (Denkowski & Lavie 2014, meteor-1.5.jar), driven as coco-caption's
`pycocoevalcap/meteor/meteor.py` drives it: `java -jar -Xmx2G meteor-1.5.jar - - -stdio -l en -norm`, one
`SCORE ||| ref 1 ||| ... ||| ref n ||| hypothesis` line per image (answered by its statistics), then one
`EVAL ||| stats 1 ||| ... ||| stats N` line (answered by each image's score and the corpus score, the number reported).

The jar (with its paraphrase data beside it, as coco-caption ships it) is found through $ATELIER_METEOR_JAR; without
java on PATH or without the jar, `meteor_unavailable` says why and nothing is approximated.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Mapping, Sequence

JAR_VARIABLE = "ATELIER_METEOR_JAR"


def meteor_unavailable() -> str | None:
    """Why the Java METEOR scorer cannot run here (no java on PATH, $ATELIER_METEOR_JAR unset or not a file), or None."""
    if shutil.which("java") is None:
        return "METEOR needs Java: no `java` on PATH (install a JRE and set ATELIER_METEOR_JAR to meteor-1.5.jar)"
    jar = os.environ.get(JAR_VARIABLE, "")
    if not jar:
        return f"METEOR needs the standard scorer: set {JAR_VARIABLE} to coco-caption's meteor-1.5.jar"
    if not Path(jar).is_file():
        return f"{JAR_VARIABLE}={jar} is not a file; point it at coco-caption's meteor-1.5.jar"
    return None


def _clean(text: str) -> str:
    """A caption as one METEOR field: no field separator, single spaces (coco-caption removes '|||' likewise)."""
    return " ".join(text.replace("|||", " ").split())


def _run(jar: Path, lines: list[str]) -> list[str]:
    """The scorer's answer lines to `lines` (stdin closed after them); RuntimeError with its first error line."""
    command = ["java", "-jar", "-Xmx2G", str(jar), "-", "-", "-stdio", "-l", "en", "-norm"]
    done = subprocess.run(command, input="\n".join(lines) + "\n", capture_output=True, text=True, encoding="utf-8",
                          cwd=jar.parent, check=False)
    answers = done.stdout.splitlines()
    if done.returncode != 0 or len(answers) < len(lines):
        reason = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[0][:200]
        raise RuntimeError(f"the METEOR scorer {jar} failed ({reason})")
    return answers


def meteor(hypotheses: Mapping[str, str], references: Mapping[str, Sequence[str]], jar: str | os.PathLike) -> float:
    """Corpus METEOR in [0, 1] of {id: caption} against {id: [references]} (the same ids), from the Java scorer at
    `jar`. RuntimeError when the scorer fails or answers something that is not a number."""
    ids = sorted(hypotheses)
    jar = Path(jar)
    score_lines = [" ||| ".join(["SCORE", *(_clean(r) for r in references[i]), _clean(hypotheses[i])]) for i in ids]
    stats = [line.strip() for line in _run(jar, score_lines)[: len(ids)]]
    answers = _run(jar, [" ||| ".join(["EVAL", *stats])])
    try:
        return float(answers[len(ids)].strip())
    except (IndexError, ValueError):
        raise RuntimeError(f"the METEOR scorer {jar} answered {answers[-1:]!r}; expected a score per image and then "
                           "the corpus score") from None
