#!/usr/bin/env python3
"""Coverage-guided fuzzing of fastelf by hand (not run by pytest or CI).

    pip install atheris
    python tests/fuzz_atheris.py elf   [libFuzzer options] [corpus dirs]
    python tests/fuzz_atheris.py wheel [libFuzzer options] [corpus dirs]
    python tests/fuzz_atheris.py member [libFuzzer options] [corpus dirs]

Targets:
  elf     bytes -> fastelf._elf.parse, whole and by the prefix protocol
          (the verdicts must agree); seeds: tests/corpus/seeds
  wheel   bytes -> audit_wheel(verify_record=True) and reading every member
  member  bytes -> an ELF member (deflated) of a wheel -> audit_wheel

Examples:
  python tests/fuzz_atheris.py elf -max_total_time=600 /tmp/elf-corpus tests/corpus/seeds
  python tests/fuzz_atheris.py wheel -runs=200000 /tmp/wheel-corpus

Only ElfError / WheelError / LimitError may escape; anything else is raised
and libFuzzer saves the input as crash-<sha1>.  Minimise it, put it in
tests/corpus/ with an entry in test_fuzz.CORPUS, and fix the bug.

Coverage of the C core needs the extension built with clang's coverage
instrumentation (and ASan), in a copy of the sources, run with atheris's
runtime preloaded (Debian: apt install clang libclang-rt-14-dev):

    cp -r cext setup.py pyproject.toml src /tmp/fz && cd /tmp/fz
    CC=clang LDSHARED="clang -shared" CFLAGS="-fsanitize=address,fuzzer-no-link -g -O1" \
        python setup.py build_ext --inplace
    LD_PRELOAD=$(python -c "import atheris; print(atheris.path())")/asan_with_fuzzer.so \
        ASAN_OPTIONS=detect_leaks=0 PYTHONPATH=/tmp/fz/src \
        python /path/to/tests/fuzz_atheris.py elf -max_total_time=600

Without atheris installed, a plain random-mutation loop over the seeds runs
instead (``--iterations N``, ``--seed S``), saving failures to
./fuzz-failure-*.bin.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import sys
import traceback
import zipfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hostile_support as hs  # noqa: E402

try:
    import atheris
except ImportError:  # pragma: no cover - optional
    atheris = None

if atheris is not None:
    with atheris.instrument_imports():
        from fastelf._elf import ElfError, ElfNeedMore, parse
        from fastelf.audit import audit_wheel
        from fastelf.errors import WheelError
        from fastelf.report import show_text
        from fastelf.wheel import WheelReader
else:
    from fastelf._elf import ElfError, ElfNeedMore, parse
    from fastelf.audit import audit_wheel
    from fastelf.errors import WheelError
    from fastelf.report import show_text
    from fastelf.wheel import WheelReader

EXPORTS = ("PyInit_seed", "initseed")


def _facts(fn):
    try:
        e = fn()
        return ("ok", e.needed, e.soname, e.rpath, e.runpath, e.interpreter, e.imports,
                e.exports, e.version_needs, e.version_defs, e.isa_needed, e.segments, e.dynamic)
    except ElfNeedMore as e:
        return ("more", e.needed)
    except ElfError as e:
        return ("error", str(e))


def target_elf(data: bytes):
    whole = _facts(lambda: parse(data, exports=EXPORTS))
    if whole[0] == "more":
        raise AssertionError("ElfNeedMore without file_size")
    _facts(lambda: parse(data, exports=None))
    if not data:
        return
    k = min(len(data), 1 + (data[-1] * 64))
    for rounds in range(64):
        got = _facts(lambda: parse(memoryview(data)[:k], len(data), exports=EXPORTS))
        if got[0] != "more":
            break
        if not k < got[1] <= len(data):
            raise AssertionError(f"bad ElfNeedMore({got[1]}) at {k}/{len(data)}")
        # exactly what is asked at first, then at least double (as elfscan does)
        k = got[1] if rounds < 8 else max(got[1], min(len(data), 2 * k))
    else:
        raise AssertionError("prefix protocol does not converge")
    if got != whole:
        raise AssertionError(f"prefix verdict {got[:2]} != whole {whole[:2]}")


def target_wheel(data: bytes):
    try:
        r = audit_wheel(data, filename=hs.WHEEL_NAME, verify_record=True)
        r.to_dict()
        show_text(r)
    except (ElfError, WheelError):
        pass
    try:
        with WheelReader(data) as rd:
            for m in rd.members:
                try:
                    rd.read(m)
                except WheelError:
                    pass
    except WheelError:
        pass


def target_member(data: bytes):
    w = hs.make_wheel({"demo/seed.cpython-311-x86_64-linux-gnu.so": data},
                      compression=zipfile.ZIP_DEFLATED if data[:1] != b"S" else zipfile.ZIP_STORED)
    try:
        audit_wheel(w, filename=hs.WHEEL_NAME).to_dict()
    except (ElfError, WheelError):
        pass


TARGETS = {"elf": target_elf, "wheel": target_wheel, "member": target_member}


def _seeds(target):
    if target == "wheel":
        return list(hs.seed_wheels().values())
    return list(hs.seed_elfs().values())


def random_loop(target, iterations, seed):
    """The fallback without atheris: mutate seeds at random (field-aware)."""
    rng = random.Random(seed)
    fn = TARGETS[target]
    seeds = _seeds(target)
    maps = [hs.zip_fields(s) if target == "wheel" else hs.elf_fields(s) for s in seeds]
    for i in range(iterations):
        k = rng.randrange(len(seeds))
        data, fields = seeds[k], maps[k]
        ops = []
        for _ in range(rng.randint(1, 6)):
            r = rng.random()
            if r < 0.5 and fields:
                mode = rng.choice(["set", "set", "add", "len"])
                value = rng.choice(hs.INTERESTING) if mode == "set" else rng.randint(-64, 64)
                ops.append(("field", rng.randrange(len(fields)), mode, value))
            elif r < 0.7:
                ops.append(("flip", rng.randrange(len(data)), rng.randrange(8)))
            elif r < 0.8:
                ops.append(("byte", rng.randrange(len(data)), rng.randrange(256)))
            elif r < 0.9:
                ops.append(("trunc", rng.randrange(len(data))))
            else:
                ops.append(("dup", rng.randrange(len(data)), rng.randrange(len(data)),
                            rng.randrange(1, 128)))
        endian = "<" if target == "wheel" else hs._endian(data)
        case = hs.mutate(data, ops, fields, endian)
        try:
            fn(case)
        except Exception:
            name = f"fuzz-failure-{hashlib.sha1(case).hexdigest()[:12]}.bin"
            with open(name, "wb") as f:
                f.write(case)
            traceback.print_exc()
            print(f"iteration {i}: failure saved to {name} (ops {ops})", file=sys.stderr)
            return 1
        if i and i % 10000 == 0:
            print(f"{i} iterations", file=sys.stderr)
    print(f"{iterations} iterations, no failure", file=sys.stderr)
    return 0


def main():
    if len(sys.argv) < 2 or sys.argv[1] not in TARGETS:
        print(__doc__, file=sys.stderr)
        return 2
    target = sys.argv[1]
    if atheris is None or "--iterations" in sys.argv:
        p = argparse.ArgumentParser()
        p.add_argument("target")
        p.add_argument("--iterations", type=int, default=100_000)
        p.add_argument("--seed", type=int, default=0)
        args = p.parse_args()
        return random_loop(target, args.iterations, args.seed)
    fn = TARGETS[target]
    argv = [sys.argv[0]] + sys.argv[2:]
    if not any(not a.startswith("-") for a in sys.argv[2:]):
        # no corpus directory given: start from the seeds, in a scratch directory
        d = os.path.abspath(f"fuzz-corpus-{target}")
        os.makedirs(d, exist_ok=True)
        for s in _seeds(target):
            with open(os.path.join(d, hashlib.sha1(s).hexdigest()), "wb") as f:
                f.write(s)
        argv.append(d)
    atheris.Setup(argv, fn)
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main())
