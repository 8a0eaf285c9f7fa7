"""Check Istio objects against Istio's own schemas, two independent ways.

* :func:`closed_schema_errors` - the pydantic models of ``cloudcoil-models-istio``
  (PyPI; generated from Istio's CRDs for networking.istio.io/v1). Validating
  and dumping back must give the input unchanged: a field the models do not
  know is dropped and a value of the wrong type is coerced, and either shows
  up as a difference at its path. This is the "no field Istio does not know"
  check (a structural schema's closed objects, as the API server enforces
  under ``fieldValidation=Strict``).
* :func:`crd_schema_errors` - ``@kubernetes-models/istio`` (npm; validators
  compiled from Istio 1.29's ``crd-all.gen.yaml``), run by node: types, enums,
  required fields, ``oneOf`` alternatives and bounds of the current Istio
  release. Its validators do not reject unknown fields, hence the first check.

``make test`` installs both (pip test extra; ``npm ci`` in tests/istio_schemas).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

SCHEMAS_DIR = Path(__file__).parent / "istio_schemas"


def closed_schema_errors(obj: dict[str, Any]) -> list[str]:
    """Problems of one VirtualService/DestinationRule against Istio's models, closed to unknown fields."""
    from cloudcoil.models.istio.networking import v1
    from pydantic import ValidationError

    model = {"VirtualService": v1.VirtualService, "DestinationRule": v1.DestinationRule}.get(obj.get("kind"))
    if model is None:
        return [f"kind: no Istio model for {obj.get('kind')!r}"]
    try:
        parsed = model.model_validate(obj)
    except ValidationError as exc:
        return [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors(include_url=False)]
    return _differences(obj, parsed.model_dump(by_alias=True, exclude_unset=True, mode="json"), "")


def _differences(given: Any, kept: Any, path: str) -> list[str]:
    if isinstance(given, dict):
        if not isinstance(kept, dict):
            return [f"{path or '<root>'}: became {kept!r}"]
        out = []
        for key, value in given.items():
            where = f"{path}.{key}" if path else str(key)
            if key not in kept:
                out.append(f"{where}: unknown field (Istio's schema has no such field)")
            else:
                out += _differences(value, kept[key], where)
        return out
    if isinstance(given, list):
        if not isinstance(kept, list) or len(kept) != len(given):
            return [f"{path}: became {kept!r}"]
        return [e for i, (g, k) in enumerate(zip(given, kept)) for e in _differences(g, k, f"{path}[{i}]")]
    if type(given) is not type(kept) and not (isinstance(given, (int, float)) and isinstance(kept, (int, float))):
        return [f"{path}: {given!r} was coerced to {kept!r} (wrong type)"]
    return [] if given == kept else [f"{path}: {given!r} became {kept!r}"]


def crd_validator_ready() -> bool:
    return shutil.which("node") is not None and (SCHEMAS_DIR / "node_modules" / "@kubernetes-models" / "istio").is_dir()


def crd_schema_errors(objects: list[dict[str, Any]]) -> list[list[str]]:
    """Problems of each object against Istio's CRD schemas (one node process for the whole batch)."""
    proc = subprocess.run(
        ["node", str(SCHEMAS_DIR / "validate.mjs")],
        input=json.dumps(objects), capture_output=True, text=True, timeout=120, cwd=SCHEMAS_DIR,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"node validate.mjs failed: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout)


CRD_VALIDATOR_MISSING = "node and tests/istio_schemas/node_modules (make test runs npm ci there)"
