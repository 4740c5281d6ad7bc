"""Entry point run by ``.venv-peers/bin/python``: one peer measurement per process.

Usage: ``python benchmarks/peers/runner.py '{"peer": "pipefunc", "workload": "chain",
"params": {...}}'``. It prints one line ``@@BENCH-RESULT@@ {json}`` with either
``{"status": "ok", "raw": {...}, "note": ...}`` or ``{"status": "na", "note": reason}``
or ``{"status": "error", "note": ...}``. Given a JSON *list* of specs (``--quick`` batches
them to save interpreter start-ups) it prints one such line per spec, each with its
``"index"`` in the list. Run it by path (never ``-m`` from the repo
root): the peers venv has hypernodes 0.4.8, which would otherwise be shadowed by this
repository's ``hypernodes`` package.
"""

from __future__ import annotations

import importlib
import json
import sys
import traceback
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from peer_common import MARKER, NotAvailable  # noqa: E402


def run(spec: dict[str, Any]) -> dict[str, Any]:
    """One spec's result (never raises)."""
    try:
        module = importlib.import_module(f"peer_{spec['peer']}")
        workload = module.WORKLOADS.get(spec["workload"])
        if workload is None:
            result = {"status": "na", "note": f"no {spec['workload']} implementation"}
        else:
            out = workload(**spec.get("params", {}))
            result = {"status": "ok", "raw": out["raw"], "note": out.get("note", "")}
    except NotAvailable as exc:
        result = {"status": "na", "note": str(exc)}
    except Exception as exc:
        tb = traceback.format_exc(limit=3)
        print(tb, file=sys.stderr)
        result = {"status": "error", "note": f"{type(exc).__name__}: {exc}"[:300]}
    return result


def main() -> None:
    spec = json.loads(sys.argv[1])
    if isinstance(spec, dict):
        result = run(spec)
        sys.stdout.flush()
        print(MARKER + json.dumps(result), flush=True)
        return
    for index, one in enumerate(spec):
        result = run(one)
        sys.stdout.flush()
        print(MARKER + json.dumps({"index": index, **result}), flush=True)


if __name__ == "__main__":
    main()
