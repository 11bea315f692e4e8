"""Builds the Cython extensions (cext/): the ELF core as fastelf._elf and the deflate-stream
walker as fastelf._deflateblocks (not part of the core); metadata is in pyproject.toml."""
import os

from Cython.Build import cythonize
from setuptools import Extension, setup

macros = []
cflags = ["-O2"]
if os.environ.get("FASTELF_SANITIZE"):
    # An ASan/UBSan build for the hostile-input tests (see tests/test_hostile.py).
    cflags = ["-O1", "-g", "-fno-omit-frame-pointer", "-fsanitize=address,undefined"]

extensions = [
    Extension(
        name,
        [f"cext/fastelf/{name.split('.')[1]}.pyx"],
        extra_compile_args=cflags,
        extra_link_args=cflags if os.environ.get("FASTELF_SANITIZE") else [],
        define_macros=macros,
    )
    for name in ("fastelf._elf", "fastelf._deflateblocks")
]

setup(
    ext_modules=cythonize(
        extensions,
        include_path=["cext"],
        compiler_directives={"language_level": 3},
    ),
)
