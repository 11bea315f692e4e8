#!/usr/bin/env bash
# Run the ELF-core, hostile-input and deflate-walker tests against an
# AddressSanitizer + UBSan build of the Cython extensions (the ELF core and
# fastelf._deflateblocks), and/or under valgrind memcheck.
#
#   tests/sanitize.sh                 # ASan/UBSan (the default)
#   tests/sanitize.sh --valgrind      # valgrind memcheck on the normal build instead
#   tests/sanitize.sh --both
#   tests/sanitize.sh -- -k corpus    # extra pytest arguments after --
#
# The sanitized extension is built (FASTELF_SANITIZE=1, see setup.py) from a
# copy of the sources in a temporary directory -- nothing in the checkout is
# written, not src/fastelf/*.so nor cext/fastelf/*.c -- and put first
# on PYTHONPATH.  Any ASan/UBSan report fails the run (halt_on_error); any
# valgrind error makes it exit 1.  FASTELF_FUZZ_EXAMPLES scales the fuzz tests
# (default 150 under ASan, 30 under valgrind).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
# the interpreter itself, not a wrapper script (pyenv shims): valgrind must see it
PY=$("$PY" -c 'import sys; print(sys.executable)')

mode=asan
pytest_args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --asan) mode=asan ;;
    --valgrind) mode=valgrind ;;
    --both) mode=both ;;
    --) shift; pytest_args=("$@"); break ;;
    *) echo "usage: $0 [--asan|--valgrind|--both] [-- pytest args]" >&2; exit 2 ;;
  esac
  shift
done

# The test files that feed the ELF core, the wheel reader and the deflate walker bad input.
TESTS=()
for t in tests/test_elf.py tests/test_elf_loader_exact.py tests/test_hostile.py tests/test_fuzz.py \
         tests/test_zip_differential.py tests/test_fuzz_graph_writer.py tests/test_deflating.py; do
  [ -f "$t" ] && TESTS+=("$t")
done

start=$(date +%s)
status=0

run_asan() {
  local work libasan libubsan rc
  work=$(mktemp -d "${TMPDIR:-/tmp}/fastelf-asan.XXXXXX")
  mkdir -p "$work/src"
  cp -r cext setup.py pyproject.toml "$work/"
  if [ -f README.md ]; then cp README.md "$work/"; fi
  cp -r src/fastelf "$work/src/"
  rm -f "$work"/src/fastelf/*.so
  echo "== building the ASan/UBSan extension in $work"
  if ! (cd "$work" && FASTELF_SANITIZE=1 "$PY" setup.py -q build_ext --inplace \
        >build.log 2>&1); then
    cat "$work/build.log"; echo "ASan build failed" >&2; rm -rf "$work"; return 1
  fi
  libasan=$(gcc -print-file-name=libasan.so)
  libubsan=$(gcc -print-file-name=libubsan.so)
  # detect_leaks=0: CPython "leaks" by design at exit.  PYTHONMALLOC=malloc:
  # Python's own allocations go through ASan too, so overruns into them show.
  local san=(env "LD_PRELOAD=$libasan $libubsan"
             "ASAN_OPTIONS=detect_leaks=0:halt_on_error=1:exitcode=86"
             "UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1:exitcode=87"
             "PYTHONMALLOC=malloc" "PYTHONPATH=$work/src")
  if ! "${san[@]}" "$PY" -c '
import sys, fastelf._elf, fastelf._deflateblocks
for e in (fastelf._elf, fastelf._deflateblocks):
    assert e.__file__.startswith(sys.argv[1]), "not the sanitized build: " + e.__file__
    print("== using", e.__file__)' "$work/src"; then
    echo "cannot load the sanitized build" >&2; rm -rf "$work"; return 1
  fi
  echo "== pytest under ASan/UBSan: ${TESTS[*]}"
  set +e
  "${san[@]}" "$PY" -m pytest -q -p no:cacheprovider -o addopts="" \
      "${TESTS[@]}" "${pytest_args[@]}" 2>&1 | tee "$work/pytest.log"
  rc=${PIPESTATUS[0]}
  set -e
  if grep -qE "ERROR: AddressSanitizer|runtime error:|LeakSanitizer" "$work/pytest.log"; then
    echo "sanitizer reports found" >&2
    rc=1
  fi
  rm -rf "$work"
  return "$rc"
}

run_valgrind() {
  command -v valgrind >/dev/null || { echo "valgrind is not installed" >&2; return 1; }
  if ! ls src/fastelf/_elf*.so >/dev/null 2>&1; then
    "$PY" setup.py -q build_ext --inplace >/dev/null 2>&1
  fi
  local log rc
  log=$(mktemp "${TMPDIR:-/tmp}/fastelf-valgrind.XXXXXX")
  echo "== pytest under valgrind memcheck ($PY): ${TESTS[*]}"
  # PYTHONMALLOC=malloc: no pymalloc arenas, so valgrind sees every block.
  # The interpreter's own noise is suppressed (tests/valgrind-python.supp);
  # an error with a frame in fastelf's extension always fails the run.
  set +e
  PYTHONMALLOC=malloc FASTELF_FUZZ_EXAMPLES=${FASTELF_FUZZ_EXAMPLES:-30} \
    valgrind --quiet --error-exitcode=1 --leak-check=no \
      --suppressions=tests/valgrind-python.supp --log-file="$log" \
      "$PY" -m pytest -q -p no:cacheprovider -o addopts="" "${TESTS[@]}" "${pytest_args[@]}"
  rc=$?
  set -e
  if [ -s "$log" ]; then
    echo "== valgrind reports:"; cat "$log"
    if grep -qE "_elf\.cpython|_deflateblocks\.cpython|fastelf" "$log"; then
      echo "valgrind reports an error in fastelf's extension" >&2
      rc=1
    fi
  fi
  rm -f "$log"
  return "$rc"
}

case $mode in
  asan) run_asan || status=$? ;;
  valgrind) run_valgrind || status=$? ;;
  both) run_asan || status=$?; run_valgrind || status=$? ;;
esac

echo "== sanitize.sh ($mode): exit $status after $(( $(date +%s) - start ))s"
exit "$status"
