"""Mutation testing of the pure core (``make mutate``): does the suite notice when the code changes?

One campaign per module, each with the module's own tests and a few nearby
ones. A campaign runs mutmut (``pip install -e '.[mutate]'``) in a scratch
directory of its own, ``build/mutate/<campaign>/``, whose ``pyproject.toml``
names that module and those tests; mutmut copies the sources there, mutates
one function at a time behind a trampoline and, per mutant, runs only the
selected tests that call the mutated function (``-x``: the first failure
kills it). The work tree is never modified.

``--sample N`` (``MUTATE_SAMPLE``) runs a random sample of N mutants per
module, drawn with ``--seed`` (``MUTATE_SEED``) from the sorted list of all
mutants, so the same seed on the same source runs the same mutants; 0 runs
them all. The report (``bench/mutation-report.md``) gives per module the
mutants killed / tried, the excluded equivalent mutants (:data:`EQUIVALENT`,
each with the reason it cannot be told apart from the original), and every
mutant that survived with its diff.

Mutants are named by mutmut after their function and a number
(``policies.units.x_parse_duration__mutmut_7``). An exclusion records the
mutated line as well; when the source changes and the number points at
another mutation, the report says the exclusion is stale instead of applying it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRATCH = ROOT / "build" / "mutate"
PACKAGES = ["control_plane", "policies", "analysis", "xds", "devtools"]
#: Not copied into a campaign's tests/ (15 MB of npm packages none of the selected tests use).
TESTS_SKIP = {"istio_schemas", "__pycache__", "e2e"}


@dataclasses.dataclass(frozen=True)
class Campaign:
    name: str
    path: str  # the module, relative to the repository
    tests: tuple[str, ...]  # the module's own tests first, then nearby ones

    @property
    def module(self) -> str:
        return self.path[:-3].replace("/", ".")


CAMPAIGNS = [
    Campaign("machine", "control_plane/rollouts/machine.py",
             ("tests/test_machine.py", "tests/test_machine_properties.py", "tests/test_engine.py")),
    Campaign("rules", "policies/rules.py",
             ("tests/test_policies_rules.py", "tests/test_policies.py", "tests/test_policies_errors.py",
              "tests/test_policy_hardening.py")),
    Campaign("units", "policies/units.py",
             ("tests/test_policies_units.py", "tests/test_policies.py", "tests/test_policies_errors.py")),
    Campaign("sequential", "analysis/sequential.py",
             ("tests/test_analysis_sequential.py", "tests/test_analysis_exact.py", "tests/test_analysis_start_mixture.py",
              "tests/test_analysis_state.py", "tests/test_analysis_judges.py", "tests/test_analysis_changepoint.py")),
    Campaign("streams", "xds/streams.py",
             ("tests/test_streams.py", "tests/test_xds_malformed.py")),
]

#: Equivalent mutants: name -> (the mutated line as mutmut writes it, why no test can tell it from the original).
#: Filled from the surviving mutants of full campaigns; see bench/mutation-report.md.
EQUIVALENT: dict[str, tuple[str, str]] = {
    "policies.units.x_parse_duration__mutmut_21": (
        "last_rank = -2",
        "a unit's rank is its index in h, m, s, ms (0-3): any start below 0 lets every unit come first, as -1 does"),
    "control_plane.rollouts.machine.xǁRolloutMachineǁon_verdict__mutmut_15": (
        "nxt = 0 if rollout.step == -2 else rollout.step + 1",
        "the shadow phase is step -1 and -1 + 1 is 0: both branches give the first step (no rollout has step -2)"),
    "analysis.sequential.x_halfnormal_boundary__mutmut_60": (
        "math.log(2 / math.pi)",
        "Newton's root does not depend on the derivative: one off by a constant factor only converges more slowly; "
        "over r in [1e-8, 1e8] and thresholds log 2 to log 1e6 the boundaries agree to 3e-11 (relative)"),
    "analysis.sequential.x_halfnormal_boundary__mutmut_77": (
        "if np.all(np.abs(step) <= 1e-10):",
        "the stopping rule of the Newton loop: < or <= 1e-10 differ only when a step is exactly 1e-10, and then by one "
        "more step of less than 1e-10"),
    "analysis.sequential.x_hypergeom_log_mgf__mutmut_92": (
        "step = j[:, :-1] <= w[:, None]",
        "one more pmf ratio past the support: its numerator (n_a - x)(k - x) is 0 there, so the extra point has "
        "log-probability -inf and adds nothing (identical results over 15,000 random blocks; numpy warns of log(0))"),
    "analysis.sequential.x_block_log_lr__mutmut_5": (
        "lp = np.asarray(log_psi, )",
        "hypergeom_log_mgf converts log_psi to float64 itself, and x_a (float64) times an integer or float log_psi is "
        "the same float64 product; every caller passes float bets"),
    "analysis.sequential.x_count_log_terms__mutmut_32": (
        "x_c = np.asarray(x_c, )[..., None]",
        "counts arrive as ints, bools or floats: times the float64 log-factors each is the same float64 value (exact "
        "below 2**53 events)"),
    "analysis.sequential.x_sketch_quantile__mutmut_18": (
        "b = int(np.searchsorted(cum, target, ))",
        "side='left' is numpy's default for searchsorted"),
    "analysis.sequential.x_start_mixture__mutmut_3": (
        "inc = np.asarray(inc, dtype=None)",
        "callers pass float64 factors; an integer array would only make the running sum integer, and every value it "
        "enters (the keys, the result) is float64 with the same numbers"),
    "analysis.sequential.x_start_mixture_best__mutmut_15": (
        "return np.asarray(best0, dtype=np.float64).copy(), np.full(B, -1, dtype=None)",
        "np.full infers int64 (numpy's default integer) from the fill value -1: the same array"),
    "analysis.sequential.x__per_bet__mutmut_3": (
        "ln = np.asarray(log_new, dtype=None)",
        "the start masses come from start_log_mass, float64 already; broadcasting keeps the dtype"),
    "analysis.sequential.x_count_fail_increments__mutmut_35": (
        "xo = np.asarray(d_other, dtype=None)[:, None] if margin != 0.0 else 0.0",
        "request counts (ints or floats) times the float64 log-factor: the same float64 values"),
    "analysis.sequential.x_mixture_log_value__mutmut_10": (
        "t = np.asarray(v, dtype=np.float64) + np.asarray(log_weights, )",
        "v is float64 already, so the sum is float64 whatever the weights' array type (bet_log_weights: float64)"),
    "analysis.sequential.x_start_mixture__mutmut_12": (
        "return np.zeros((0, B)), np.asarray(v0, dtype=None).copy()",
        "an empty batch returns the values it was given; callers hold them as float64"),
    "analysis.sequential.xǁQuantileBlocksǁ_adaptive__mutmut_108": (
        "lpsi = np.clip(np.nan_to_num(lor, nan=0.0, posinf=0.0, ), 0.0, cap[None, :])",
        "-inf becomes the most negative float instead of 0, and the clip at 0 makes both 0"),
    "analysis.sequential.xǁQuantileBlocksǁprocess__mutmut_52": (
        "j = 1",
        "`lo` of bisect_left is only where the search starts: every look up to j has cum <= base < base + block, so "
        "searching from 1 instead of j + 1 finds the same index"),
    "xds.streams.xǁAdsStreamǁ_final__mutmut_5": (
        "names = st.names if (st is not None and type_url in NAMED_TYPES) or True else None",
        "a SotW stream sets `names` only for the named types (EDS, RDS); for CDS and LDS it stays None (wildcard), "
        "so the type check changes nothing (Delta streams do not use _final)"),
    "xds.streams.xǁSotwStreamǁ_holds_exactly__mutmut_2": (
        "st = self.types.get(None)",
        "_holds_exactly is a constant-time shortcut that may answer None (unknown); callers then compare resource by "
        "resource, with the same answer (the shortcut's own test is the push-cost benchmark, bench/stream_cost.py)"),
}

KILLED = {"killed", "timeout", "caught by type check"}


# -- one campaign's scratch directory ---------------------------------------------------------------


def _pyproject(c: Campaign, seed: int) -> str:
    text = (ROOT / "pyproject.toml").read_text()
    text = re.sub(r"(?ms)^\[tool\.mutmut\].*?(?=^\[|\Z)", "", text)
    tests = [t for t in c.tests if (ROOT / t).exists()]
    cfg = {
        "source_paths": PACKAGES,
        "only_mutate": [c.path],
        "pytest_add_cli_args": ["-p", "no:cacheprovider", f"--hypothesis-seed={seed}"],
        "pytest_add_cli_args_test_selection": tests,
        # git-based change detection would look at the enclosing work tree, not this scratch copy
        "use_git_change_detection": False,
    }
    lines = ["", "[tool.mutmut]"] + [f"{k} = {json.dumps(v)}" for k, v in cfg.items()]
    return text + "\n".join(lines) + "\n"


def prepare(c: Campaign, seed: int) -> Path:
    """A fresh scratch directory: links to the packages and tests, a pyproject naming this campaign."""
    work = SCRATCH / c.name
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    for pkg in PACKAGES:
        (work / pkg).symlink_to(ROOT / pkg, target_is_directory=True)
    tests = work / "tests"
    tests.mkdir()
    for entry in sorted((ROOT / "tests").iterdir()):
        if entry.name not in TESTS_SKIP:
            (tests / entry.name).symlink_to(entry, target_is_directory=entry.is_dir())
    (work / "pyproject.toml").write_text(_pyproject(c, seed))
    return work


_GENERATE = """
import json, sys
from mutmut.__main__ import copy_src_dir, copy_also_copy_files, setup_source_paths, create_mutants
from mutmut.mutation.trampoline import set_mutant_under_test
set_mutant_under_test("mutant_generation")
copy_src_dir(); copy_also_copy_files(); setup_source_paths(); create_mutants(1)
"""


def generate(work: Path, c: Campaign) -> list[str]:
    """Generate the campaign's mutants (mutmut's first step) and list their names, sorted."""
    subprocess.run([sys.executable, "-c", _GENERATE], cwd=work, check=True, stdout=subprocess.DEVNULL)
    meta = json.loads((work / "mutants" / (c.path + ".meta")).read_text())
    return sorted(meta["exit_code_by_key"], key=_natural)


def _natural(name: str):
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name)]


def results(work: Path, c: Campaign) -> dict[str, str]:
    from mutmut.stats import status_by_exit_code

    meta = json.loads((work / "mutants" / (c.path + ".meta")).read_text())
    return {k: status_by_exit_code[v] for k, v in meta["exit_code_by_key"].items()}


def diff_of(work: Path, name: str) -> str:
    out = subprocess.run([_mutmut(), "show", name], cwd=work, capture_output=True, text=True).stdout
    lines = [ln for ln in out.splitlines() if ln[:1] in "+-" and not ln.startswith(("+++", "---"))]
    return "\n".join(lines)


def _mutmut() -> str:
    return str(Path(sys.executable).with_name("mutmut"))


# -- the run --------------------------------------------------------------------------------------------


def run_campaign(c: Campaign, sample: int, seed: int, max_children: int) -> dict:
    t0 = time.monotonic()
    work = prepare(c, seed)
    names = generate(work, c)
    chosen = sorted(random.Random(f"{seed}:{c.name}").sample(names, sample), key=_natural) if 0 < sample < len(names) else names
    print(f"[mutate] {c.name}: {len(names)} mutants, running {len(chosen)}", file=sys.stderr, flush=True)
    log = work / "mutmut.log"
    with open(log, "w") as fh:
        subprocess.run([_mutmut(), "run", "--max-children", str(max_children), *chosen], cwd=work, stdout=fh,
                       stderr=subprocess.STDOUT, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    status = results(work, c)
    missing = [n for n in chosen if status.get(n) in (None, "not checked")]
    if missing:
        raise SystemExit(f"[mutate] {c.name}: {len(missing)} mutants were not run; see {log}")
    rows = []
    for name in chosen:
        st = status[name]
        row = {"name": name, "status": st}
        if st not in KILLED:
            row["diff"] = diff_of(work, name)
            eq = EQUIVALENT.get(name)
            if eq is not None:
                line, why = eq
                if line.strip() in row["diff"]:
                    row["equivalent"] = why
                else:
                    row["stale_exclusion"] = why
        rows.append(row)
    tried = [r for r in rows if "equivalent" not in r]
    killed = sum(r["status"] in KILLED for r in tried)
    return {"campaign": c.name, "module": c.path, "tests": [t for t in c.tests if (ROOT / t).exists()],
            "mutants": len(names), "sampled": len(chosen), "equivalent": len(rows) - len(tried),
            "tried": len(tried), "killed": killed, "rows": rows, "seconds": round(time.monotonic() - t0)}


def report(runs: list[dict], sample: int, seed: int, baseline: list[dict] | None = None) -> str:
    before = {r["campaign"]: r for r in baseline or []}
    out = ["# Mutation testing of the pure core", "",
           f"`make mutate MUTATE_SAMPLE={sample} MUTATE_SEED={seed}` (mutmut, devtools/mutate.py), "
           f"{time.strftime('%Y-%m-%d')}. Per module: mutants killed / tried (equivalent mutants excluded); "
           "each mutant ran the tests of its campaign that call the mutated function.", "",
           "| module | mutants | sampled | equivalent | killed / tried | score |"
           + (" before |" if before else "") + " tests | time |",
           "|---|---|---|---|---|---|" + ("---|" if before else "") + "---|---|"]
    for r in runs:
        score = f"{100.0 * r['killed'] / r['tried']:.0f}%" if r["tried"] else "-"
        tests = ", ".join(Path(t).name for t in r["tests"])
        was = ""
        if before:
            b = before.get(r["campaign"])
            eq = {x["name"] for x in r["rows"] if "equivalent" in x}
            if b:
                rows = [x for x in b["rows"] if x["name"] not in eq]
                k = sum(x["status"] in KILLED for x in rows)
                was = f" {k} / {len(rows)} ({100.0 * k / max(len(rows), 1):.0f}%) |"
            else:
                was = " - |"
        out.append(f"| `{r['module']}` | {r['mutants']} | {r['sampled']} | {r['equivalent']} | "
                   f"{r['killed']} / {r['tried']} | {score} |{was} {tests} | {r['seconds']} s |")
    if before:
        out += ["", "*before*: the same sample (same seed, same source) with the tests as they were before issue 15, "
                "killed / tried with the same equivalent mutants excluded."]
    for r in runs:
        eq = [x for x in r["rows"] if "equivalent" in x]
        alive = [x for x in r["rows"] if x["status"] not in KILLED and "equivalent" not in x]
        if not eq and not alive:
            continue
        out += ["", f"## `{r['module']}`"]
        if eq:
            out += ["", "Equivalent (excluded):", ""]
            for x in eq:
                out.append(f"- `{x['name']}`: {x['equivalent']}")
                out += ["  ```diff", *("  " + ln for ln in x["diff"].splitlines()), "  ```"]
        if alive:
            out += ["", "Not killed:", ""]
            for x in alive:
                note = f" (stale exclusion: {x['stale_exclusion']})" if "stale_exclusion" in x else ""
                out.append(f"- `{x['name']}` {x['status']}{note}")
                out += ["  ```diff", *("  " + ln for ln in x["diff"].splitlines()), "  ```"]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sample", type=int, default=int(os.environ.get("MUTATE_SAMPLE", "60")),
                    help="mutants per module, drawn at random (0: all)")
    ap.add_argument("--seed", type=int, default=int(os.environ.get("MUTATE_SEED", "15")))
    ap.add_argument("--modules", default=os.environ.get("MUTATE_MODULES", ""),
                    help="comma-separated campaigns (default: all): " + ", ".join(c.name for c in CAMPAIGNS))
    ap.add_argument("--max-children", type=int, default=int(os.environ.get("MUTATE_JOBS", "2")))
    ap.add_argument("--report", default=os.environ.get("MUTATE_REPORT", str(ROOT / "bench" / "mutation-report.md")))
    ap.add_argument("--json", default=None, help="also write the raw results here")
    ap.add_argument("--baseline", default=None, help="the --json of an earlier run, shown as a 'before' column")
    args = ap.parse_args(argv)
    wanted = {m for m in args.modules.split(",") if m}
    unknown = wanted - {c.name for c in CAMPAIGNS}
    if unknown:
        ap.error(f"unknown campaigns: {', '.join(sorted(unknown))}")
    runs = [run_campaign(c, args.sample, args.seed, args.max_children) for c in CAMPAIGNS if not wanted or c.name in wanted]
    baseline = json.loads(Path(args.baseline).read_text()) if args.baseline else None
    Path(args.report).write_text(report(runs, args.sample, args.seed, baseline))
    if args.json:
        Path(args.json).write_text(json.dumps(runs, indent=1))
    for r in runs:
        print(f"{r['campaign']}: {r['killed']} / {r['tried']} killed ({r['equivalent']} equivalent excluded)")
    print(f"report: {args.report}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
