"""A pinned corpus of real Linux wheels for benchmarking fastelf against auditwheel.

Every entry names an exact release and the exact wheel file that
``pip download --no-deps --only-binary=:all: --platform P --python-version 3.11``
selects for it, so the corpus is the same on every machine.  The mix covers
small and large wheels, manylinux (x86_64 and aarch64) and musllinux, and
several auditwheel-repaired wheels that carry grafted libraries in
``<dist>.libs`` (numpy, scipy, pillow, pyarrow, lxml, ...).

Wheels are cached in ``$FASTELF_BENCH_CACHE`` (default
``~/.cache/fastelf-bench``).  Fetching is idempotent: a wheel already in the
cache is not looked up again.

    python benchmarks/corpus.py            # fetch what is missing, print the corpus
    python benchmarks/corpus.py --check    # print only; exit 1 if something is missing
    python benchmarks/corpus.py --verify   # also recheck every cached wheel's sha256
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

PYTHON_VERSION = "3.11"


@dataclass(frozen=True)
class Entry:
    project: str
    version: str
    platform: str        # the --platform given to pip
    filename: str        # the wheel pip selects for it (pinned)
    sha256: str          # of that file, checked after every download

    @property
    def requirement(self):
        return f"{self.project}=={self.version}"


_M2014_X = "manylinux2014_x86_64"
_M228_X = "manylinux_2_28_x86_64"
_M2014_A = "manylinux2014_aarch64"
_M228_A = "manylinux_2_28_aarch64"
_MUSL_X = "musllinux_1_2_x86_64"
_MUSL11_X = "musllinux_1_1_x86_64"
_MUSL_A = "musllinux_1_2_aarch64"

CORPUS = (
    # --- manylinux x86_64: large, repaired (.libs)
    Entry("scipy", "1.14.1", _M2014_X,
          "scipy-1.14.1-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
          "fef8c87f8abfb884dac04e97824b61299880c43f4ce675dd2cbeadd3c9b466d2"),
    Entry("pyarrow", "18.0.0", _M228_X,
          "pyarrow-18.0.0-cp311-cp311-manylinux_2_28_x86_64.whl",
          "320ae9bd45ad7ecc12ec858b3e8e462578de060832b98fc4d671dee9f10d9954"),
    Entry("numpy", "2.1.3", _M2014_X,
          "numpy-2.1.3-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
          "bc6f24b3d1ecc1eebfbf5d6051faa49af40b03be1aaa781ebdadcbc090b4539b"),
    Entry("pandas", "2.2.3", _M2014_X,
          "pandas-2.2.3-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
          "c124333816c3a9b03fbeef3a9f230ba9a737e9e5bb4060aa2107a86cc0a497fc"),
    Entry("grpcio", "1.67.1", _M2014_X,
          "grpcio-1.67.1-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
          "f9fff78ba10d4250bfc07a01bd6254a6d87dc67f9627adece85c0b2ed754fa96"),
    Entry("lxml", "5.3.0", _M228_X,
          "lxml-5.3.0-cp311-cp311-manylinux_2_28_x86_64.whl",
          "eec1bb8cdbba2925bedc887bc0609a80e599c75b12d87ae42ac23fd199445654"),
    Entry("pillow", "11.0.0", _M228_X,
          "pillow-11.0.0-cp311-cp311-manylinux_2_28_x86_64.whl",
          "45c566eb10b8967d71bf1ab8e4a525e5a93519e29ea071459ce517f6b903d7fa"),
    Entry("cryptography", "43.0.3", _M228_X,
          "cryptography-43.0.3-cp39-abi3-manylinux_2_28_x86_64.whl",
          "c2e6fc39c4ab499049df3bdf567f768a723a5e8464816e8f009f121a5a9f4405"),
    # --- manylinux x86_64: small
    Entry("pyyaml", "6.0.2", _M2014_X,
          "PyYAML-6.0.2-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
          "3ad2a3decf9aaba3d29c8f537ac4b243e36bef957511b4766cb0057d32b0be85"),
    Entry("msgpack", "1.1.0", _M2014_X,
          "msgpack-1.1.0-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
          "5e1da8f11a3dd397f0a32c76165cf0c4eb95b31013a94f6ecc0b280c05c91b59"),
    Entry("orjson", "3.10.11", _M2014_X,
          "orjson-3.10.11-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
          "03246774131701de8e7059b2e382597da43144a9a7400f178b2a32feafc54bd5"),
    Entry("markupsafe", "3.0.2", _M2014_X,
          "MarkupSafe-3.0.2-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
          "a123e330ef0853c6e822384873bef7507557d8e4a082961e1defa947aa59ba84"),
    Entry("psutil", "6.1.0", _M2014_X,
          "psutil-6.1.0-cp36-abi3-manylinux_2_12_x86_64.manylinux2010_x86_64."
          "manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
          "498c6979f9c6637ebc3a73b3f87f9eb1ec24e1ce53a7c5173b8508981614a90b"),
    # --- manylinux aarch64
    Entry("scipy", "1.14.1", _M2014_A,
          "scipy-1.14.1-cp311-cp311-manylinux_2_17_aarch64.manylinux2014_aarch64.whl",
          "278266012eb69f4a720827bdd2dc54b2271c97d84255b2faaa8f161a158c3b37"),
    Entry("numpy", "2.1.3", _M2014_A,
          "numpy-2.1.3-cp311-cp311-manylinux_2_17_aarch64.manylinux2014_aarch64.whl",
          "762479be47a4863e261a840e8e01608d124ee1361e48b96916f38b119cfda04a"),
    Entry("pillow", "11.0.0", _M228_A,
          "pillow-11.0.0-cp311-cp311-manylinux_2_28_aarch64.whl",
          "5ddbfd761ee00c12ee1be86c9c0683ecf5bb14c9772ddbd782085779a63dd55b"),
    Entry("orjson", "3.10.11", _M2014_A,
          "orjson-3.10.11-cp311-cp311-manylinux_2_17_aarch64.manylinux2014_aarch64.whl",
          "cdec57fe3b4bdebcc08a946db3365630332dbe575125ff3d80a3272ebd0ddafe"),
    Entry("msgpack", "1.1.0", _M2014_A,
          "msgpack-1.1.0-cp311-cp311-manylinux_2_17_aarch64.manylinux2014_aarch64.whl",
          "8e59bca908d9ca0de3dc8684f21ebf9a690fe47b6be93236eb40b99af28b6ea6"),
    # --- musllinux x86_64 and aarch64
    Entry("numpy", "2.1.3", _MUSL11_X,
          "numpy-2.1.3-cp311-cp311-musllinux_1_1_x86_64.whl",
          "17ee83a1f4fef3c94d16dc1802b998668b5419362c8a4f4e8a491de1b41cc3ee"),
    Entry("pillow", "11.0.0", _MUSL_X,
          "pillow-11.0.0-cp311-cp311-musllinux_1_2_x86_64.whl",
          "cb929ca942d0ec4fac404cbf520ee6cac37bf35be479b970c4ffadf2b6a1cad9"),
    Entry("lxml", "5.3.0", _MUSL_X,
          "lxml-5.3.0-cp311-cp311-musllinux_1_2_x86_64.whl",
          "62f7fdb0d1ed2065451f086519865b4c90aa19aed51081979ecd05a21eb4d1be"),
    Entry("pyyaml", "6.0.2", _MUSL11_X,
          "PyYAML-6.0.2-cp311-cp311-musllinux_1_1_x86_64.whl",
          "797b4f722ffa07cc8d62053e4cff1486fa6dc094105d13fea7b1de7d8bf71c9e"),
    Entry("orjson", "3.10.11", _MUSL_X,
          "orjson-3.10.11-cp311-cp311-musllinux_1_2_x86_64.whl",
          "677f23e32491520eebb19c99bb34675daf5410c449c13416f7f0d93e2cf5f981"),
    Entry("markupsafe", "3.0.2", _MUSL_X,
          "MarkupSafe-3.0.2-cp311-cp311-musllinux_1_2_x86_64.whl",
          "0bff5e0ae4ef2e1ae4fdf2dfd5b76c75e5c2fa4132d05fc1b0dabcd20c7e28c4"),
    Entry("numpy", "2.1.3", _MUSL_A,
          "numpy-2.1.3-cp311-cp311-musllinux_1_2_aarch64.whl",
          "15cb89f39fa6d0bdfb600ea24b250e5f1a3df23f901f51c8debaa6a5d122b2f0"),
    Entry("msgpack", "1.1.0", _MUSL_A,
          "msgpack-1.1.0-cp311-cp311-musllinux_1_2_aarch64.whl",
          "8da4bf6d54ceed70e8861f833f83ce0814a2b72102e890cbdfe4b34764cdd66e"),
)


def cache_dir() -> Path:
    env = os.environ.get("FASTELF_BENCH_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "fastelf-bench"


def path_of(entry: Entry, cache: Path | None = None) -> Path:
    return (cache or cache_dir()) / entry.filename


def available(cache: Path | None = None) -> list:
    """The corpus wheels already in the cache, as paths, in corpus order."""
    return [p for p in (path_of(e, cache) for e in CORPUS) if p.is_file()]


def missing(cache: Path | None = None) -> list:
    return [e for e in CORPUS if not path_of(e, cache).is_file()]


def fetch(entry: Entry, cache: Path | None = None, quiet: bool = True) -> Path:
    """Download one wheel unless it is cached; return its path."""
    cache = cache or cache_dir()
    target = path_of(entry, cache)
    if target.is_file():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    tmp = cache / ".incoming"
    tmp.mkdir(exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--platform", entry.platform, "--python-version", PYTHON_VERSION,
           "-d", str(tmp), entry.requirement]
    if quiet:
        cmd.insert(4, "-q")
    subprocess.run(cmd, check=True)
    got = tmp / entry.filename
    if not got.is_file():
        found = sorted(p.name for p in tmp.glob("*.whl"))
        raise RuntimeError(f"pip did not fetch the pinned {entry.filename} for "
                           f"{entry.requirement} ({entry.platform}); it has: {found}")
    digest = sha256_of(got)
    if digest != entry.sha256:
        got.unlink()
        raise RuntimeError(f"{entry.filename}: sha256 {digest} does not match the pinned "
                           f"{entry.sha256}")
    os.replace(got, target)          # atomic: a cached file is always complete and verified
    return target


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verify(cache: Path | None = None) -> list:
    """Cached corpus wheels whose sha256 differs from the pin (should be empty)."""
    return [e for e in CORPUS
            if path_of(e, cache).is_file() and sha256_of(path_of(e, cache)) != e.sha256]


def fetch_all(cache: Path | None = None, quiet: bool = True) -> list:
    return [fetch(e, cache, quiet) for e in CORPUS]


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} GB"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true",
                    help="do not download; exit 1 if some wheel is missing")
    ap.add_argument("--verify", action="store_true",
                    help="also recheck the sha256 of every cached wheel")
    ap.add_argument("-v", "--verbose", action="store_true", help="show pip's output")
    args = ap.parse_args(argv)
    cache = cache_dir()
    if not args.check:
        for e in missing(cache):
            print(f"fetching {e.requirement} ({e.platform}) ...", file=sys.stderr)
            fetch(e, cache, quiet=not args.verbose)
    total = 0
    absent = 0
    print(f"cache: {cache}")
    for e in CORPUS:
        p = path_of(e, cache)
        if p.is_file():
            size = p.stat().st_size
            total += size
            print(f"{_human(size):>10}  {e.filename}")
        else:
            absent += 1
            print(f"{'missing':>10}  {e.filename}")
    print(f"{len(CORPUS) - absent} of {len(CORPUS)} wheels, {_human(total)}")
    if args.verify:
        bad = verify(cache)
        for e in bad:
            print(f"sha256 mismatch: {path_of(e, cache)}", file=sys.stderr)
        if bad:
            return 1
        print("sha256: all cached wheels match their pins")
    return 1 if absent else 0


if __name__ == "__main__":
    sys.exit(main())
