"""What every ``fuzz/fuzz_*.py`` target shares: engines, run bounds, seeds, replay.

A target module defines ``load() -> (check, seeds)``: ``check(data)`` feeds arbitrary
bytes to the code under test and raises only for a real defect (the exceptions the code
may raise on purpose are caught inside ``check``); ``seeds`` are valid inputs the
mutations start from. ``load`` does its imports itself, so that atheris can instrument
aiodicom's modules as they are imported (coverage guidance).

Engines:

* ``atheris`` (coverage-guided libFuzzer, ``pip install atheris``; in the ``dev`` extra):
  the default when installed. Crashing inputs are written as ``crash-*`` files.
* ``hypothesis`` (the fallback, also selectable): random and mutated-seed inputs, a long
  profile (20,000 examples unless ``--runs`` says otherwise).

Options (the rest, e.g. ``-max_len=4096`` or corpus folders, go to libFuzzer):

``--runs N``        stop after N inputs (also spelled ``-atheris_runs=N``); 0 = no limit
                    with atheris (stop with Ctrl-C), 20,000 with hypothesis
``--seconds S``     stop after S seconds (libFuzzer ``-max_total_time``; hypothesis too)
``--engine E``      ``auto`` (default), ``atheris`` or ``hypothesis``
``--replay F...``   run the check once on each file (reproduce a crash) and exit
"""

from __future__ import annotations

import argparse
import importlib.util
import random
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

Check = Callable[[bytes], None]
Loader = Callable[[], tuple[Check, Sequence[bytes]]]

#: Examples the hypothesis fallback runs by default: its "long profile".
HYPOTHESIS_DEFAULT_RUNS = 20_000


def _parse(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(description="aiodicom fuzz target")
    parser.add_argument("--runs", type=int, default=None, help="inputs to try (0: no limit with atheris)")
    parser.add_argument("--seconds", type=float, default=None, help="stop after this many seconds")
    parser.add_argument("--engine", choices=("auto", "atheris", "hypothesis"), default="auto")
    parser.add_argument("--replay", nargs="+", type=Path, default=None, help="run once on these files")
    args, rest = parser.parse_known_args(list(argv))
    for item in list(rest):
        if item.startswith("-atheris_runs="):
            args.runs = int(item.split("=", 1)[1])
            rest.remove(item)
    return args, rest


def _engine(choice: str) -> str:
    if choice != "auto":
        return choice
    return "atheris" if importlib.util.find_spec("atheris") is not None else "hypothesis"


def main(load: Loader, argv: Sequence[str] | None = None) -> int:
    """Run the target ``load`` returns with the engine and bounds asked for on the command line."""
    args, rest = _parse(sys.argv[1:] if argv is None else argv)
    engine = _engine(args.engine)
    if args.replay:
        check, _ = load()
        for path in args.replay:
            check(path.read_bytes())
            print(f"{path}: no defect", flush=True)
        return 0
    if engine == "atheris":
        return _run_atheris(load, args, rest)
    return _run_hypothesis(load, args)


def _run_atheris(load: Loader, args: argparse.Namespace, rest: list[str]) -> int:
    import atheris

    with atheris.instrument_imports(include=["aiodicom"]):
        check, seeds = load()
    # One corpus folder per target, reused by every run (libFuzzer exits the process, so a
    # fresh temporary folder could never be removed): the seeds, plus what earlier runs
    # found when no folder of the user's comes first.
    seed_dir = Path(tempfile.gettempdir()) / f"aiodicom-fuzz-{Path(sys.argv[0]).stem}"
    seed_dir.mkdir(exist_ok=True)
    for index, seed in enumerate(seeds):
        (seed_dir / f"seed-{index:03d}").write_bytes(seed)
    libfuzzer = [sys.argv[0], *rest]
    if args.runs:
        libfuzzer.append(f"-atheris_runs={args.runs}")
    if args.seconds:
        libfuzzer.append(f"-max_total_time={max(1, round(args.seconds))}")
    # Folders the user named come first: libFuzzer adds new inputs to the first one.
    libfuzzer.append(str(seed_dir))
    print(f"atheris: {len(seeds)} seeds, runs={args.runs or 'unlimited'}", flush=True)
    atheris.Setup(libfuzzer, check)
    atheris.Fuzz()  # exits the process: 0 when the runs are done, non-zero on a defect
    return 0


def mutate(seed: bytes, rng: random.Random) -> bytes:
    """A few byte flips, insertions, deletions and a truncation of ``seed``."""
    data = bytearray(seed)
    for _ in range(rng.randint(1, 8)):
        kind = rng.randrange(4)
        at = rng.randrange(len(data) + 1)
        if kind == 0 and data:
            data[min(at, len(data) - 1)] = rng.randrange(256)
        elif kind == 1:
            data[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif kind == 2 and data:
            del data[at : at + rng.randint(1, 16)]
        else:
            data = data[:at]
    return bytes(data)


def _run_hypothesis(load: Loader, args: argparse.Namespace) -> int:
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import strategies as st

    check, seeds = load()
    for seed in seeds:
        check(seed)
    runs = args.runs or HYPOTHESIS_DEFAULT_RUNS
    deadline = time.monotonic() + args.seconds if args.seconds else None
    done = 0
    mutated = st.tuples(st.sampled_from(list(seeds)), st.randoms(use_true_random=False)).map(
        lambda pair: mutate(pair[0], pair[1])
    )

    @settings(
        max_examples=runs,
        deadline=None,
        database=None,
        phases=[Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
    )
    @given(st.one_of(mutated, st.binary(max_size=4096)))
    def fuzz(data: bytes) -> None:
        nonlocal done
        if deadline is not None and time.monotonic() > deadline:
            return
        done += 1
        check(data)

    print(f"hypothesis: {len(seeds)} seeds, up to {runs} examples", flush=True)
    fuzz()
    print(f"hypothesis: {done} examples, no defect", flush=True)
    return 0
